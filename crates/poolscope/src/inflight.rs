//! The in-flight registry: which requests the client is servicing now, for how long, in
//! which phase, and (optionally) the stack that started each.
//!
//! An entry lives from [`Client::request`](crate::Client::request) until the response body
//! reaches its end, fails or is dropped, or the request fails. Entries sit in 32 shards, each
//! a small mutex-guarded slab picked by the request id, so registering and removing never
//! takes a global lock; phase, connection and byte counts are atomics the request updates.
//!
//! Stacks are captured as raw return addresses, and only the top [`CAPTURE_DEPTH`] frames:
//! the unwinder stops there instead of walking the runtime's frames down to the thread's
//! start. Addresses are resolved only when a report is rendered, each once per registry
//! (resolved frames are cached by address). Frames of poolscope, tokio, hyper, futures and
//! std are left out so the caller's frames come first.
//!
//! [`InFlightReport`]'s `Display` follows the shape of the Go tracker this is modelled on:
//!
//! ```text
//! In-flight HTTP requests:
//!   servicing GET "http://host1:8484/.cbfs/blob/[oid]" for 56.705274ms
//!     - my_app::fetch::run() - src/fetch.rs:64
//! ```
//!
//! URLs never show userinfo; [`Builder::redact_url`](crate::Builder::redact_url) rewrites
//! them further (ids, tokens in queries).

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crate::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use http::{Method, Uri};
use serde::Serialize;
use slab::Slab;

use crate::key::ConnId;

const SHARDS: usize = 32;

/// The phase of an in-flight request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Waiting for a connection from the pool.
    WaitingForConnection,
    /// Waiting for a connection this request is dialing.
    Connecting,
    /// Writing the request.
    Sending,
    /// The request is written; waiting for the response head.
    AwaitingResponse,
    /// The response head arrived; the body is being read.
    ReadingBody,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Connecting,
            2 => Phase::Sending,
            3 => Phase::AwaitingResponse,
            4 => Phase::ReadingBody,
            _ => Phase::WaitingForConnection,
        }
    }

    /// `waiting_for_connection`, `connecting`, `sending`, `awaiting_response`, `reading_body`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::WaitingForConnection => "waiting_for_connection",
            Phase::Connecting => "connecting",
            Phase::Sending => "sending",
            Phase::AwaitingResponse => "awaiting_response",
            Phase::ReadingBody => "reading_body",
        }
    }
}

/// Rewrites a URL (already without userinfo) for reports.
pub(crate) type Redact = Arc<dyn Fn(&Uri) -> String + Send + Sync>;

/// One request's live state, shared by the request and the registry.
pub(crate) struct Entry {
    id: u64,
    method: Method,
    /// As given (a cheap clone); userinfo is stripped and `redact_url` applied at report time.
    uri: Uri,
    started: Instant,
    phase: AtomicU8,
    /// 0 until a connection is known.
    conn_id: AtomicU64,
    bytes: AtomicU64,
    /// Where the request was issued (`#[track_caller]`): known even without stacks.
    caller: &'static std::panic::Location<'static>,
    stack: Option<RawStack>,
}

/// How many frames a registration unwinds. The client captures in `Client::request` itself, so
/// the machinery above the caller is the unwinder's own frame and `request` (with `get`
/// inlined into it): 2 frames in a release build, 5 in a debug build (where nothing is
/// inlined). This reaches the caller's frame and the one that called it in a release build (5
/// in a debug build); the runtime's frames further down, often dozens, are never walked. The
/// caller's exact line is known without a stack (`#[track_caller]`); the stack adds whose code
/// that is and who called it. Each frame costs libgcc's unwinder about 1,900 instructions (and
/// one more frame's worth to start), so the depth is what stack capture costs: 4 frames are
/// ~9.5k instructions per request, 5 were ~11.4k.
pub const CAPTURE_DEPTH: usize = if cfg!(debug_assertions) { 10 } else { 4 };

/// The return addresses of the top frames of a stack, unresolved.
pub(crate) struct RawStack {
    ips: [usize; CAPTURE_DEPTH],
    len: usize,
}

impl RawStack {
    /// The calling thread's stack, down to [`CAPTURE_DEPTH`] frames. Inlined into its
    /// caller, so that it adds no frame to unwind.
    #[inline(always)]
    pub(crate) fn capture() -> RawStack {
        let mut stack = RawStack {
            ips: [0; CAPTURE_DEPTH],
            len: 0,
        };
        backtrace::trace(|frame| {
            if let Some(slot) = stack.ips.get_mut(stack.len) {
                *slot = frame.ip() as usize;
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
struct Symbol {
    name: String,
    file: Option<std::path::PathBuf>,
    line: Option<u32>,
}

impl Entry {
    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    pub(crate) fn set_conn(&self, id: ConnId) {
        self.conn_id.store(id.get(), Ordering::Relaxed);
    }

    pub(crate) fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
}

/// The registry of one client (also usable on its own, to track any kind of request).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use poolscope::inflight::Registry;
///
/// let registry = Arc::new(Registry::new(false));
/// let guard = registry.register(1, &http::Method::GET, &"http://u:pw@h/x".parse().unwrap());
/// assert!(registry.report().to_string().contains("servicing GET \"http://h/x\""));
/// drop(guard);
/// assert!(registry.report().is_empty());
/// ```
pub struct Registry {
    shards: Box<[Mutex<Slab<Arc<Entry>>>]>,
    capture_stacks: bool,
    redact: Option<Redact>,
    /// Addresses already resolved, with their symbols (innermost first).
    symbols: Mutex<std::collections::HashMap<usize, Arc<[Symbol]>>>,
}

/// A registered request; dropping it removes the entry.
pub struct Registration {
    registry: Arc<Registry>,
    slot: usize,
    /// The request's id (its shard).
    id: u64,
    /// The entry's address, to check the slot still holds it before removing it (only this
    /// registration removes its slot, so it does).
    entry: usize,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .finish()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("capture_stacks", &self.capture_stacks)
            .finish()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let shard = &self.registry.shards[self.id as usize % SHARDS];
        let mut slab = shard.lock();
        if slab
            .get(self.slot)
            .is_some_and(|e| Arc::as_ptr(e) as usize == self.entry)
        {
            slab.remove(self.slot);
        }
    }
}

/// `uri` without userinfo: `scheme://host[:port]/path?query`.
pub(crate) fn strip_userinfo(uri: &Uri) -> Uri {
    let Some(auth) = uri.authority() else {
        return uri.clone();
    };
    let hostport = auth.as_str().rsplit('@').next().unwrap_or("");
    if hostport.len() == auth.as_str().len() {
        return uri.clone();
    }
    let mut parts = http::uri::Parts::default();
    parts.scheme = uri.scheme().cloned();
    parts.authority = hostport.parse().ok();
    parts.path_and_query = uri.path_and_query().cloned();
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

impl Registry {
    /// A registry; with `capture_stacks`, each registration captures the caller's stack.
    pub fn new(capture_stacks: bool) -> Registry {
        Registry::with_redaction(capture_stacks, None)
    }

    pub(crate) fn with_redaction(capture_stacks: bool, redact: Option<Redact>) -> Registry {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(Slab::new())).collect(),
            capture_stacks,
            redact,
            symbols: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Registers a request (`id` is yours to choose; it orders equal ages), issued where
    /// this is called from (`#[track_caller]`: a function of yours marked so passes its own
    /// caller on). Captures the caller's stack if enabled: call it where the caller's frames
    /// are on the stack.
    #[track_caller]
    pub fn register(self: &Arc<Self>, id: u64, method: &Method, uri: &Uri) -> Registration {
        self.register_at(id, method, uri, std::panic::Location::caller())
    }

    /// As [`register`](Self::register), issued at `caller`.
    pub fn register_at(
        self: &Arc<Self>,
        id: u64,
        method: &Method,
        uri: &Uri,
        caller: &'static std::panic::Location<'static>,
    ) -> Registration {
        let stack = if self.capture_stacks {
            Some(RawStack::capture())
        } else {
            None
        };
        self.register_started(id, method, uri, caller, Instant::now(), stack)
            .0
    }

    /// Whether registrations carry the caller's stack.
    pub(crate) fn captures_stacks(&self) -> bool {
        self.capture_stacks
    }

    /// As [`register_at`](Self::register_at), for a request that started `started` (a
    /// clock reading its other sinks share), with the stack its caller captured (so that the
    /// registration adds no frame above the caller's). Returns the entry too, for the
    /// request's probe to update.
    pub(crate) fn register_started(
        self: &Arc<Self>,
        id: u64,
        method: &Method,
        uri: &Uri,
        caller: &'static std::panic::Location<'static>,
        started: Instant,
        stack: Option<RawStack>,
    ) -> (Registration, Arc<Entry>) {
        let entry = Arc::new(Entry {
            id,
            method: method.clone(),
            uri: uri.clone(),
            started,
            phase: AtomicU8::new(Phase::WaitingForConnection as u8),
            conn_id: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            caller,
            stack,
        });
        let shard = &self.shards[id as usize % SHARDS];
        let slot = shard.lock().insert(entry.clone());
        let registration = Registration {
            registry: self.clone(),
            slot,
            id,
            entry: Arc::as_ptr(&entry) as usize,
        };
        (registration, entry)
    }

    /// The requests in flight now, oldest first, stacks resolved.
    pub fn report(&self) -> InFlightReport {
        let mut live: Vec<Arc<Entry>> = Vec::new();
        for shard in self.shards.iter() {
            let slab = shard.lock();
            live.extend(slab.iter().map(|(_, e)| e.clone()));
        }
        // Resolve outside the shard locks: it reads debug info and can take milliseconds.
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut entries: Vec<InFlightEntry> = live
            .iter()
            .map(|e| InFlightEntry {
                id: e.id,
                method: e.method.to_string(),
                url: self.url(&e.uri),
                elapsed: now.saturating_duration_since(e.started),
                started_at: wall - now.saturating_duration_since(e.started),
                phase: Phase::from_u8(e.phase.load(Ordering::Relaxed)),
                conn_id: match e.conn_id.load(Ordering::Relaxed) {
                    0 => None,
                    n => Some(ConnId(n)),
                },
                bytes_received: e.bytes.load(Ordering::Relaxed),
                called_at: CallSite {
                    file: e.caller.file(),
                    line: e.caller.line(),
                    column: e.caller.column(),
                },
                stack: e
                    .stack
                    .as_ref()
                    .map(|s| self.resolve(s))
                    .unwrap_or_default(),
            })
            .collect();
        entries.sort_by(|a, b| b.elapsed.cmp(&a.elapsed).then(a.id.cmp(&b.id)));
        InFlightReport { entries }
    }

    /// The URL as reports show it: without userinfo, through `redact_url`.
    pub(crate) fn url(&self, uri: &Uri) -> String {
        let clean = strip_userinfo(uri);
        match &self.redact {
            Some(f) => f(&clean),
            None => clean.to_string(),
        }
    }

    /// How many requests are registered.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Whether no request is registered.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.lock().is_empty())
    }
}

/// Crates whose frames are left out of a stack: the machinery between the caller and here.
const HIDDEN: &[&str] = &[
    "backtrace::",
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

/// How many frames a report shows per request: the caller's, and a few below.
pub const MAX_FRAMES: usize = 6;

/// Whether `file` is machinery rather than the caller's code: a dependency in cargo's
/// registry or git checkouts (poolscope itself too, when it comes from crates.io), the Rust
/// standard library (`/rustc/…`), or poolscope's own source. Judged by the file, not by the
/// name: in release builds with line tables, inlined frames have short names without their
/// module path.
fn machinery_file(file: &std::path::Path) -> bool {
    let f = file.to_string_lossy();
    f.contains("/registry/src/")
        || f.contains("/git/checkouts/")
        || f.starts_with("/rustc/")
        || f.starts_with(concat!(env!("CARGO_MANIFEST_DIR"), "/src/"))
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
        let found: Arc<[Symbol]> = found.into();
        self.symbols.lock().insert(ip, found.clone());
        found
    }

    /// The frames a report shows of `stack`: the caller's first, machinery left out.
    fn resolve(&self, stack: &RawStack) -> Vec<StackFrame> {
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
        frames.dedup_by(|a, b| a.function == b.function && a.file == b.file);
        frames.truncate(MAX_FRAMES);
        frames
    }
}

/// One frame of the stack that started a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StackFrame {
    /// The function, e.g. `my_app::fetch::run`.
    pub function: String,
    /// Its source file, relative to the working directory when under it.
    pub file: Option<String>,
    /// The line.
    pub line: Option<u32>,
}

/// One request in flight.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct InFlightEntry {
    /// The request's id (the `request_id` of its trace events).
    pub id: u64,
    /// The method.
    pub method: String,
    /// The URL, without userinfo and as rewritten by `redact_url`.
    pub url: String,
    /// How long it has been in flight.
    #[serde(rename = "elapsed_seconds", serialize_with = "secs")]
    pub elapsed: Duration,
    /// When it started (wall clock).
    #[serde(serialize_with = "rfc3339")]
    pub started_at: SystemTime,
    /// Where it is.
    pub phase: Phase,
    /// Its connection, once it has one.
    #[serde(serialize_with = "conn")]
    pub conn_id: Option<ConnId>,
    /// Response body bytes received so far.
    pub bytes_received: u64,
    /// Where it was issued: the code that called `Client::request` / `get` / `call`.
    pub called_at: CallSite,
    /// The stack that started it (empty unless `capture_stacks`).
    pub stack: Vec<StackFrame>,
}

/// A place in the source: where a request was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CallSite {
    /// The file, as the compiler names it (relative to the crate's workspace, or a path).
    pub file: &'static str,
    /// 1-based.
    pub line: u32,
    /// 1-based.
    pub column: u32,
}

impl fmt::Display for CallSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_micros(*t))
}

fn conn<S: serde::Serializer>(c: &Option<ConnId>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => s.serialize_some(&c.get()),
        None => s.serialize_none(),
    }
}

/// The requests a client is servicing, oldest first. `Display` renders the Go tracker's
/// report; [`to_json`](InFlightReport::to_json) the same as JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InFlightReport {
    entries: Vec<InFlightEntry>,
}

impl InFlightReport {
    /// How many requests are in flight.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, oldest first.
    pub fn iter(&self) -> std::slice::Iter<'_, InFlightEntry> {
        self.entries.iter()
    }

    /// The report as JSON: `{"entries": [{"id", "method", "url", "elapsed_seconds", ...}]}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

impl<'a> IntoIterator for &'a InFlightReport {
    type Item = &'a InFlightEntry;
    type IntoIter = std::slice::Iter<'a, InFlightEntry>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

impl fmt::Display for InFlightReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "In-flight HTTP requests:")?;
        for e in &self.entries {
            writeln!(
                f,
                "  servicing {} {:?} for {:?}",
                e.method, e.url, e.elapsed
            )?;
            if e.stack.is_empty() {
                // Without stacks, the one frame known for free: where it was issued.
                writeln!(f, "    - issued at {}", e.called_at)?;
            }
            for fr in &e.stack {
                // `(async block)` and `(closure)` are not called by name.
                let call = if fr.function.starts_with('(') {
                    ""
                } else {
                    "()"
                };
                match (&fr.file, fr.line) {
                    (Some(file), Some(line)) => {
                        writeln!(f, "    - {}{call} - {file}:{line}", fr.function)?
                    }
                    (Some(file), None) => writeln!(f, "    - {}{call} - {file}", fr.function)?,
                    _ => writeln!(f, "    - {}{call}", fr.function)?,
                }
            }
        }
        Ok(())
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

    #[test]
    fn userinfo_is_stripped() {
        let u: Uri = "http://user:pw@h:81/a?b=c".parse().unwrap();
        assert_eq!(strip_userinfo(&u).to_string(), "http://h:81/a?b=c");
        let u: Uri = "http://h/a".parse().unwrap();
        assert_eq!(strip_userinfo(&u).to_string(), "http://h/a");
    }

    #[test]
    fn report_is_oldest_first_and_entries_leave_on_drop() {
        let reg = Arc::new(Registry::new(false));
        // The older request has the larger id: only the age can put it first.
        let at = Instant::now();
        let here = std::panic::Location::caller();
        let (older, older_entry) = reg.register_started(
            2,
            &Method::GET,
            &"http://h/a".parse().unwrap(),
            here,
            at,
            None,
        );
        // Spin (no sleep) until the clock has moved on, so the two ages differ.
        while Instant::now() <= at {}
        let newer = reg.register(1, &Method::POST, &"http://h/b".parse().unwrap());
        assert!(older_entry.started == at);
        let r = reg.report();
        assert_eq!(r.iter().map(|e| e.id).collect::<Vec<_>>(), vec![2, 1]);
        drop(older);
        assert_eq!(reg.len(), 1);
        assert!(!reg.is_empty());
        drop(newer);
        assert!(reg.is_empty());
        assert!(reg.report().is_empty());
    }

    #[test]
    fn display_matches_the_seed_shape() {
        let reg = Arc::new(Registry::new(false));
        let _a = reg.register(
            1,
            &Method::GET,
            &"http://host1:8484/.cbfs/blob/x".parse().unwrap(),
        );
        let text = reg.report().to_string();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("In-flight HTTP requests:"));
        let line = lines.next().unwrap();
        assert!(
            line.starts_with("  servicing GET \"http://host1:8484/.cbfs/blob/x\" for "),
            "{line}"
        );
    }
}
