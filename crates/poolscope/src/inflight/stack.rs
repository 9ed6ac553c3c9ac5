//! Stack capture and resolution: [`RawStack`] (the top [`CAPTURE_DEPTH`] return addresses,
//! captured in `Client::request`), their symbols resolved when a report is rendered (cached
//! per registry by address), and the filter that leaves the machinery's frames out.

use std::sync::Arc;

use super::report::StackFrame;
use super::Registry;

/// How many physical frames a registration unwinds. The client captures in `Client::request`
/// itself, so the machinery above the caller is the unwinder's own frame and `request`: 2
/// frames in a release build. An async fn chain inlined into its task's poll is one physical
/// frame however many fns it holds (each is shown), so 12 reach from the caller through its
/// task's callers in the usual service; the runtime's frames further down are not walked.
/// framehop with a per-thread rule cache (`stack-capture`) costs about 180 instructions a
/// frame (libgcc's DWARF interpreter took 1.9k), measured in `docs/benchmarks.md`.
pub const CAPTURE_DEPTH: usize = if cfg!(debug_assertions) { 24 } else { 12 };

/// The return addresses of the top frames of a stack, unresolved.
pub(crate) struct RawStack {
    ips: [usize; CAPTURE_DEPTH],
    len: usize,
}

impl RawStack {
    /// The calling thread's stack, down to [`CAPTURE_DEPTH`] frames, taking no lock.
    /// Inlined into its caller, so that it adds no frame to unwind.
    #[inline(always)]
    pub(crate) fn capture() -> RawStack {
        let mut stack = RawStack {
            ips: [0; CAPTURE_DEPTH],
            len: 0,
        };
        // No process-wide lock (`stack-capture`): a report resolving symbols on another
        // thread never holds up a request.
        stack_capture::trace(|ip| {
            if let Some(slot) = stack.ips.get_mut(stack.len) {
                *slot = ip;
                stack.len += 1;
            }
            stack.len < CAPTURE_DEPTH
        });
        stack
    }

    fn ips(&self) -> &[usize] {
        &self.ips[..self.len]
    }
}

/// One symbol an address resolved to (an address of inlined code has several).
#[derive(Clone)]
pub(super) struct Symbol {
    pub(super) name: String,
    pub(super) file: Option<std::path::PathBuf>,
    pub(super) line: Option<u32>,
}

/// Crates whose frames are left out of a stack: the machinery between the caller and here.
const HIDDEN: &[&str] = &[
    "backtrace::",
    "stack_capture::",
    // poolscope's own modules (a binary crate named `poolscope` keeps its frames).
    "poolscope::client::",
    "poolscope::pool::",
    "poolscope::inflight::",
    "poolscope::connect::",
    "poolscope::trace::",
    "poolscope::stats::",
    "poolscope::history::",
    "poolscope::debug::",
    "poolscope::metrics::",
    "tokio::",
    "hyper::",
    "hyper_util::",
    "futures_util::",
    "futures_core::",
    "std::",
    "core::",
    "alloc::",
    "test::",
    "__rust",
    "rust_begin",
];

/// Thread and process entry points of the C library, below every stack.
const LIBC: &[&str] = &[
    "start_thread",
    "clone3",
    "clone",
    "__clone",
    "__libc_start_main",
    "__libc_start_call_main",
    "_start",
    "main",
];

fn hidden(name: &str) -> bool {
    let name = name.trim_start_matches('<');
    HIDDEN.iter().any(|p| name.starts_with(p)) || name.starts_with("F as ") || LIBC.contains(&name)
}

/// How many frames a report shows per request, innermost first, machinery left out.
pub const MAX_FRAMES: usize = 16;

/// Whether `file` is machinery rather than the caller's code: a dependency in cargo's
/// registry or git checkouts (poolscope itself too, when it comes from crates.io), the Rust
/// standard library (`/rustc/…`), or poolscope's own source or `stack-capture`'s. Judged by
/// the file, not by the name: in release builds with line tables, inlined frames have short
/// names without their module path.
fn machinery_file(file: &std::path::Path) -> bool {
    let f = file.to_string_lossy();
    f.contains("/registry/src/")
        || f.contains("/git/checkouts/")
        || f.starts_with("/rustc/")
        || f.starts_with(concat!(env!("CARGO_MANIFEST_DIR"), "/src/"))
        || f.starts_with(stack_capture::SOURCE_DIR)
}

/// `name` as `module::function`: without generic parameters, the trait of a trait method
/// (`<T as Trait>::f` is `T::f`), or closure and async-block segments. A frame that is only
/// a closure or an async block is named so.
fn tidy(name: &str) -> String {
    let unqualified = name
        .strip_prefix('<')
        .and_then(split_qualified)
        .map(|(ty, rest)| format!("{ty}{rest}"));
    let name = unqualified.as_deref().unwrap_or(name);
    let mut plain = String::with_capacity(name.len());
    let mut depth = 0usize;
    for c in name.chars() {
        match c {
            '<' => depth += 1,
            '>' if depth > 0 => depth -= 1,
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let segments: Vec<&str> = plain
        .split("::")
        .filter(|s| !s.is_empty() && !s.starts_with('{'))
        .collect();
    match segments.is_empty() {
        true if name.contains("async") => "(async block)".to_owned(),
        true => "(closure)".to_owned(),
        false => segments.join("::"),
    }
}

/// `T as Trait>::rest` (after the opening `<`): `T` and `::rest`.
fn split_qualified(inner: &str) -> Option<(&str, &str)> {
    let mut depth = 0usize;
    let mut as_at = None;
    for (i, c) in inner.char_indices() {
        match c {
            '<' => depth += 1,
            '>' if depth > 0 => depth -= 1,
            '>' => return Some((&inner[..as_at.unwrap_or(i)], &inner[i + 1..])),
            ' ' if depth == 0 && as_at.is_none() && inner[i..].starts_with(" as ") => {
                as_at = Some(i)
            }
            _ => {}
        }
    }
    None
}

impl Registry {
    /// The symbols of `ip`, from the cache or resolved now (outside the cache's lock: reading
    /// debug info can take milliseconds the first time).
    fn symbols(&self, ip: usize) -> Arc<[Symbol]> {
        if let Some(s) = self.symbols.lock().get(&ip) {
            return s.clone();
        }
        // The executable's own frames from its DWARF (which names async fns); the rest
        // (the C library, other objects) through `backtrace`.
        let found: Arc<[Symbol]> = super::dwarf::frames(ip)
            .unwrap_or_else(|| {
                let mut found = Vec::new();
                backtrace::resolve(ip as *mut std::ffi::c_void, |sym| {
                    if let Some(name) = sym.name() {
                        found.push(Symbol {
                            name: format!("{name:#}"),
                            file: sym.filename().map(|f| f.to_path_buf()),
                            line: sym.lineno(),
                        });
                    }
                });
                found
            })
            .into();
        self.symbols.lock().insert(ip, found.clone());
        found
    }

    /// The frames a report shows of `stack`: the caller's first, machinery left out.
    pub(super) fn resolve(&self, stack: &RawStack) -> Vec<StackFrame> {
        let cwd = std::env::current_dir().ok();
        let mut frames: Vec<StackFrame> = Vec::new();
        for &ip in stack.ips() {
            for sym in self.symbols(ip).iter() {
                // A frame without a file is not the caller's (entry points, stripped code).
                let Some(path) = &sym.file else { continue };
                if machinery_file(path) || hidden(&sym.name) {
                    continue;
                }
                let file = cwd
                    .as_ref()
                    .and_then(|c| path.strip_prefix(c).ok())
                    .unwrap_or(path)
                    .display()
                    .to_string();
                frames.push(StackFrame {
                    function: tidy(&sym.name),
                    file: Some(file),
                    line: sym.line,
                });
            }
        }
        // The same function appears once per closure level of an async fn: keep the first.
        // Frames left unnamed (`(async block)`) are told apart by their lines.
        frames.dedup_by(|a, b| {
            a.function == b.function && a.file == b.file && !a.function.starts_with('(')
        });
        frames.truncate(MAX_FRAMES);
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_generics_traits_and_closures() {
        for (raw, tidy_name) in [
            ("my_app::fetch::run::{{closure}}", "my_app::fetch::run"),
            (
                "<my_app::Fetcher<T> as tower_service::Service<http::Request<B>>>::call",
                "my_app::Fetcher::call",
            ),
            (
                "get<poolscope::connect::http::HttpConnector, Empty<Bytes>>",
                "get",
            ),
            ("{async_block#0}", "(async block)"),
            ("{closure#0}", "(closure)"),
            ("<my_app::Job>::go", "my_app::Job::go"),
        ] {
            assert_eq!(tidy(raw), tidy_name, "{raw}");
        }
    }
}
