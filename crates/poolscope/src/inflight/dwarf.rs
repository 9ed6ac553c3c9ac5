//! Names for the frames of async fns and closures, from the executable's DWARF.
//!
//! With line tables only (the workspace's release profile), an inlined frame's name is the
//! DWARF name of its function alone: an `async fn`'s body is `{async_fn#0}` and a closure
//! `{closure#0}`, which says nothing. The function they belong to is the DWARF namespace
//! that encloses them (`inner` in `my_app::inner::{async_fn#0}`). `backtrace` (through
//! `addr2line`) does not read namespaces, so this module resolves the executable's own
//! addresses itself: `addr2line` for the frames and their lines, and one pass over a unit's
//! DIEs (the first time an address in it is resolved) for the namespaces enclosing its
//! `{…}` functions. Other objects (the C library, a `dlopen`ed library) go to `backtrace`.
//!
//! Measured (rustc 1.95): with `debug = "line-tables-only"` the DWARF has no namespaces at
//! all (every subprogram sits flat under its unit, named `{async_fn#0}`, `fmt`, `poll<…>`,
//! without a linkage name), and an async fn inlined into its caller has no symbol of its
//! own. There the enclosing function is read from the source file, when it is readable.
//!
//! Loading reads the executable's debug sections into memory once per process, on the
//! thread that first resolves a report; requests never come here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use gimli::EndianArcSlice;
use gimli::{Reader as _, RunTimeEndian};
use object::{Object, ObjectSection, ObjectSegment};

use super::stack::Symbol;
use crate::sync::Mutex;

type Reader = EndianArcSlice<RunTimeEndian>;

struct Exe {
    ctx: addr2line::Context<Reader>,
    /// Where the executable is loaded, minus where it says it is (0 unless PIE).
    bias: u64,
    /// Per unit (by its offset in `.debug_info`): the function enclosing each `{…}`
    /// subprogram DIE.
    enclosing: HashMap<usize, HashMap<usize, String>>,
    /// Source files read to name `{…}` frames that the DWARF leaves unnamed, by path
    /// (`None`: not readable).
    sources: HashMap<PathBuf, Option<Vec<String>>>,
}

static EXE: OnceLock<Option<Mutex<Exe>>> = OnceLock::new();

/// The frames at return address `ip` if it is in the executable and its DWARF has them.
/// (An address in inlined code has several, innermost first.)
pub(super) fn frames(ip: usize) -> Option<Vec<Symbol>> {
    let exe = EXE.get_or_init(|| Exe::load().map(Mutex::new)).as_ref()?;
    exe.lock().frames(ip)
}

impl Exe {
    fn load() -> Option<Exe> {
        let path = std::fs::read_link("/proc/self/exe").ok()?;
        let data = std::fs::read(&path).ok()?;
        let file = object::File::parse(&*data).ok()?;
        let endian = if file.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        let dwarf = gimli::Dwarf::load(|id| -> Result<Reader, ()> {
            let bytes: Arc<[u8]> = file
                .section_by_name(id.name())
                .and_then(|s| s.uncompressed_data().ok())
                .map(|d| Arc::from(&*d))
                .unwrap_or_else(|| Arc::from(&[][..]));
            Ok(EndianArcSlice::new(bytes, endian))
        })
        .ok()?;
        let bias = load_bias(&file, &path)?;
        let ctx = addr2line::Context::from_dwarf(dwarf).ok()?;
        Some(Exe {
            ctx,
            bias,
            enclosing: HashMap::new(),
            sources: HashMap::new(),
        })
    }

    fn frames(&mut self, ip: usize) -> Option<Vec<Symbol>> {
        let Exe {
            ctx,
            bias,
            enclosing,
            sources,
        } = self;
        // A return address: the call is the instruction before it.
        let probe = (ip as u64).checked_sub(1)?.checked_sub(*bias)?;
        let unit = ctx.find_dwarf_and_unit(probe).skip_all_loads();
        let mut iter = ctx.find_frames(probe).skip_all_loads().ok()?;
        let mut out = Vec::new();
        while let Ok(Some(frame)) = iter.next() {
            let Some(mut name) = frame
                .function
                .as_ref()
                .and_then(|f| f.demangle().ok())
                .map(|n| n.into_owned())
            else {
                continue;
            };
            let (file, line) = match &frame.location {
                Some(l) => (l.file.map(PathBuf::from), l.line),
                None => (None, None),
            };
            if name.starts_with('{') {
                let owner = unit
                    .zip(frame.dw_die_offset)
                    .and_then(|(unit, offset)| enclosing_fn(enclosing, unit, offset))
                    .or_else(|| enclosing_fn_in_source(sources, file.as_deref()?, line?));
                if let Some(owner) = owner {
                    name = format!("{owner}::{name}");
                }
            }
            out.push(Symbol { name, file, line });
        }
        (!out.is_empty()).then_some(out)
    }
}

/// The function whose namespace encloses the `{…}` function of the DIE at `offset` (an
/// inlined instance points at it with `DW_AT_abstract_origin`).
fn enclosing_fn(
    cache: &mut HashMap<usize, HashMap<usize, String>>,
    unit: gimli::UnitRef<'_, Reader>,
    offset: gimli::UnitOffset<usize>,
) -> Option<String> {
    let key = unit.unit.header.offset().0;
    let index = cache.entry(key).or_insert_with(|| index_unit(unit));
    let die = unit.entry(offset).ok()?;
    let target = match die
        .attr_value(gimli::DW_AT_abstract_origin)
        .or_else(|| die.attr_value(gimli::DW_AT_specification))
    {
        Some(gimli::AttributeValue::UnitRef(o)) => o,
        _ => offset,
    };
    index.get(&target.0).cloned()
}

/// One pass over a unit's DIEs: for each subprogram named `{…}`, the nearest enclosing
/// namespace or subprogram whose name is not `{…}` itself.
fn index_unit(unit: gimli::UnitRef<'_, Reader>) -> HashMap<usize, String> {
    let mut index = HashMap::new();
    let mut scopes: Vec<(isize, String)> = Vec::new();
    let mut cursor = unit.entries();
    while let Ok(Some(die)) = cursor.next_dfs() {
        let depth = die.depth();
        while scopes.last().is_some_and(|(d, _)| *d >= depth) {
            scopes.pop();
        }
        let tag = die.tag();
        if tag != gimli::DW_TAG_namespace && tag != gimli::DW_TAG_subprogram {
            continue;
        }
        let Some(name) = die
            .attr_value(gimli::DW_AT_name)
            .and_then(|v| unit.attr_string(v).ok())
            .and_then(|r| r.to_string_lossy().ok().map(|c| c.into_owned()))
        else {
            continue;
        };
        if tag == gimli::DW_TAG_subprogram && name.starts_with('{') {
            if let Some((_, owner)) = scopes.iter().rev().find(|(_, n)| !n.starts_with('{')) {
                index.insert(die.offset().0, owner.clone());
            }
        }
        scopes.push((depth, name));
    }
    index
}

/// The function a `{…}` frame's line belongs to, read from the source file when it is
/// there (a developer's machine, CI): with line tables only, the DWARF has no namespaces and
/// an inlined async fn's body is `{async_fn#0}` and nothing more. The innermost enclosing
/// scope above `line` (by indentation, as rustfmt lays code out) that declares a `fn`.
fn enclosing_fn_in_source(
    sources: &mut HashMap<PathBuf, Option<Vec<String>>>,
    path: &Path,
    line: u32,
) -> Option<String> {
    let lines = sources
        .entry(path.to_path_buf())
        .or_insert_with(|| {
            let text = std::fs::read_to_string(path).ok()?;
            Some(text.lines().map(str::to_owned).collect())
        })
        .as_ref()?;
    let at = usize::try_from(line).ok()?.checked_sub(1)?;
    let indent = |l: &str| l.len() - l.trim_start().len();
    // Climb out scope by scope: each line indented less than the last one climbed to opens
    // an enclosing scope; the first of those that declares a `fn` owns the line.
    let mut limit = indent(lines.get(at)?);
    for l in lines[..at].iter().rev() {
        if l.trim().is_empty() || indent(l) >= limit {
            continue;
        }
        if let Some(name) = declared_fn(l) {
            return Some(name);
        }
        // The end of a signature laid over several lines (`) -> bool {`, `where`): its
        // `fn` line is as indented as it is.
        let t = l.trim_start();
        let continues = t.starts_with(')') || t.starts_with('>') || t.starts_with("where");
        limit = indent(l) + usize::from(continues);
    }
    None
}

/// The name a line declares with `fn` (`pub async fn fetch(` gives `fetch`).
fn declared_fn(line: &str) -> Option<String> {
    let code = line.split("//").next()?;
    let mut words = code.split(|c: char| !(c.is_alphanumeric() || c == '_'));
    words.by_ref().find(|w| *w == "fn")?;
    let name = words.find(|w| !w.is_empty())?;
    Some(name.to_owned())
}

/// Where the executable is mapped minus the address its first loaded segment names: the
/// mapping of the file's offset 0 in `/proc/self/maps`.
fn load_bias(file: &object::File<'_>, path: &Path) -> Option<u64> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let path = path.to_str()?;
    let start = maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let range = fields.next()?;
        let _perms = fields.next()?;
        let offset = fields.next()?;
        let _dev = fields.next()?;
        let _inode = fields.next()?;
        let mapped = fields.next()?;
        (mapped == path && u64::from_str_radix(offset, 16).ok()? == 0)
            .then(|| u64::from_str_radix(range.split('-').next()?, 16).ok())
            .flatten()
    })?;
    let first = file.segments().find(|s| s.file_range().0 == 0)?;
    Some(start.wrapping_sub(first.address() & !0xfff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn here() -> usize {
        let mut ips = Vec::new();
        stack_capture::trace(|ip| {
            ips.push(ip);
            ips.len() < 8
        });
        // The first frame this file has: this function's call into the unwinder.
        ips.into_iter()
            .find(|&ip| {
                frames(ip).is_some_and(|f| {
                    f.iter().any(|f| {
                        f.file
                            .as_ref()
                            .is_some_and(|p| p.ends_with("inflight/dwarf.rs"))
                    })
                })
            })
            .unwrap_or(0)
    }

    #[test]
    fn the_executables_own_addresses_resolve_to_their_function_file_and_line() {
        let ip = here();
        assert_ne!(ip, 0, "no captured address resolved to this file");
        let f = frames(ip).unwrap();
        let mine = f
            .iter()
            .find(|f| {
                f.file
                    .as_ref()
                    .is_some_and(|p| p.ends_with("inflight/dwarf.rs"))
            })
            .unwrap();
        assert!(mine.name.contains("here"), "{}", mine.name);
        assert!(mine.line.is_some_and(|l| l > 200), "{:?}", mine.line);
    }

    #[test]
    fn a_line_declaring_a_fn_gives_its_name() {
        assert_eq!(
            declared_fn("pub async fn fetch_blob(c: &C) {").as_deref(),
            Some("fetch_blob")
        );
        assert_eq!(declared_fn("    fn go<T>(self)").as_deref(), Some("go"));
        assert_eq!(declared_fn("let f = |x| x; // fn not_this()"), None);
        assert_eq!(declared_fn("    let fnord = 1;"), None);
    }

    #[test]
    fn a_body_line_is_named_by_the_fn_indented_less_above_it() {
        let dir = std::env::temp_dir().join(format!("poolscope-src-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lib.rs");
        let src = "async fn outer() {\n    helper();\n    fn helper() {}\n    let x = async {\n        work().await\n    };\n}\n\npub async fn long(\n    a: u8,\n) -> bool {\n    let b = async {\n        go().await\n    };\n}\n";
        std::fs::write(&path, src).unwrap();
        let mut cache = HashMap::new();
        // Line 5 is inside the async block of `outer`; the nested `fn helper` above it is
        // indented as much as the block's own line, so it is not the owner.
        assert_eq!(
            enclosing_fn_in_source(&mut cache, &path, 5).as_deref(),
            Some("outer")
        );
        assert_eq!(
            enclosing_fn_in_source(&mut cache, &path, 2).as_deref(),
            Some("outer")
        );
        // A signature over several lines: line 13 is in `long`'s async block.
        assert_eq!(
            enclosing_fn_in_source(&mut cache, &path, 13).as_deref(),
            Some("long")
        );
        assert_eq!(
            enclosing_fn_in_source(&mut cache, &dir.join("missing.rs"), 2),
            None
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
