//! The fast path on x86_64 Linux: framehop over the loaded objects' `.eh_frame`, with a
//! per-thread cache of unwind rules. Every `unsafe` of the crate's fast path is here.

use std::cell::{Cell, RefCell};
use std::ops::Range;
use std::sync::OnceLock;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder};

/// Section data, copied out of the loaded objects when the unwinder is built: a library
/// `dlclose`d later takes its mapping with it, never these bytes.
type Data = Box<[u8]>;

/// The unwinder over the objects loaded when the first stack was captured (`None`: none
/// could be read, and the caller falls back to libgcc). Objects `dlopen`ed later are
/// unwound through frame pointers where they have them.
static UNWINDER: OnceLock<Option<UnwinderX86_64<Data>>> = OnceLock::new();

thread_local! {
    static CACHE: RefCell<CacheX86_64> = RefCell::new(CacheX86_64::new());
    /// The end (highest address) of this thread's stack; 0 until asked.
    static STACK_END: Cell<u64> = const { Cell::new(0) };
}

/// Walks the calling thread's stack; `false` if the fast path is not available.
#[inline(never)]
pub(crate) fn trace(f: &mut dyn FnMut(usize) -> bool) -> bool {
    let Some(unwinder) = UNWINDER.get_or_init(load).as_ref() else {
        return false;
    };
    let Some(end) = stack_end() else {
        return false;
    };
    let (pc, sp, bp): (u64, u64, u64);
    // SAFETY: reads three registers into outputs; touches no memory, no stack, no flags.
    unsafe {
        std::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags),
        );
    }
    // Only this thread's stack above the captured `sp` is read: this frame and its
    // callers', which stay untouched while this function runs (the unwinder's own frames
    // lie below `sp`).
    let mut read_stack = |addr: u64| -> Result<u64, ()> {
        if addr < sp || addr % 8 != 0 || addr.checked_add(8).is_none_or(|e| e > end) {
            return Err(());
        }
        // SAFETY: `addr` is 8-aligned and within [sp, end), the live part of this thread's
        // own stack (bounds from pthread_getattr_np), so it is mapped and initialized.
        Ok(unsafe { (addr as *const u64).read() })
    };
    CACHE.with(|cache| {
        let Ok(mut cache) = cache.try_borrow_mut() else {
            return;
        };
        let regs = UnwindRegsX86_64::new(pc, sp, bp);
        let mut frames = unwinder.iter_frames(pc, regs, &mut cache, &mut read_stack);
        while let Ok(Some(frame)) = frames.next() {
            let ip = match frame {
                FrameAddress::InstructionPointer(ip) => ip,
                FrameAddress::ReturnAddress(ra) => ra.get(),
            };
            if !f(ip as usize) {
                break;
            }
        }
    });
    true
}

/// The end of the calling thread's stack, asked of pthreads once per thread.
fn stack_end() -> Option<u64> {
    let known = STACK_END.with(Cell::get);
    if known != 0 {
        return Some(known);
    }
    // SAFETY: `attr` is initialized by pthread_getattr_np before it is read and destroyed
    // once; the out-pointers point at locals.
    let end = unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        if !ok {
            return None;
        }
        (addr as u64).checked_add(size as u64)?
    };
    STACK_END.with(|c| c.set(end));
    Some(end)
}

/// One loaded object, as `dl_iterate_phdr` describes it.
struct Object {
    name: String,
    bias: u64,
    loads: Vec<Range<u64>>,
    text: Option<Range<u64>>,
    eh_frame_hdr: Option<Range<u64>>,
}

fn load() -> Option<UnwinderX86_64<Data>> {
    let mut modules: Vec<Module<Data>> = Vec::new();
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid `dl_phdr_info` for the duration of the call, and
        // `data` is the `Vec<Module<Data>>` passed to dl_iterate_phdr below.
        let (info, modules) = unsafe { (&*info, &mut *(data as *mut Vec<Module<Data>>)) };
        let phdrs: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() {
            &[]
        } else {
            // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers.
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
        };
        let bias = info.dlpi_addr;
        let mut object = Object {
            name: if info.dlpi_name.is_null() {
                String::new()
            } else {
                // SAFETY: a NUL-terminated string owned by the loader.
                unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }
                    .to_string_lossy()
                    .into_owned()
            },
            bias,
            loads: Vec::new(),
            text: None,
            eh_frame_hdr: None,
        };
        for ph in phdrs {
            let range = bias + ph.p_vaddr..bias + ph.p_vaddr + ph.p_memsz;
            match ph.p_type {
                libc::PT_LOAD => {
                    if ph.p_flags & libc::PF_X != 0 {
                        object.text = Some(range.clone());
                    }
                    object.loads.push(range);
                }
                libc::PT_GNU_EH_FRAME => object.eh_frame_hdr = Some(range),
                _ => {}
            }
        }
        // Copied now, while the loader's lock (held across this callback) keeps the object
        // from being unloaded.
        if let Some(m) = module(object) {
            modules.push(m);
        }
        0
    }
    // SAFETY: `each` matches the callback's signature and only reads what it is given.
    unsafe {
        libc::dl_iterate_phdr(
            Some(each),
            &mut modules as *mut Vec<Module<Data>> as *mut libc::c_void,
        );
    }
    let mut unwinder = UnwinderX86_64::new();
    let added = modules.len();
    for m in modules {
        unwinder.add_module(m);
    }
    (added > 0).then_some(unwinder)
}

/// A module for framehop: `.eh_frame_hdr` and `.eh_frame`, copied out of the mapping.
fn module(o: Object) -> Option<Module<Data>> {
    let hdr = o.eh_frame_hdr.clone()?;
    let text = o.text.clone()?;
    let start = o.loads.iter().map(|r| r.start).min()?;
    let end = o.loads.iter().map(|r| r.end).max()?;
    let within = |r: &Range<u64>| {
        o.loads
            .iter()
            .find(|l| l.start <= r.start && r.end <= l.end)
    };
    within(&hdr)?;
    // SAFETY: the range lies inside a PT_LOAD segment of an object dl_iterate_phdr is
    // reporting: mapped, and kept so by the loader's lock for the duration of the callback
    // this runs in; the bytes are copied before it returns.
    let hdr_bytes: Data = unsafe {
        std::slice::from_raw_parts(hdr.start as *const u8, (hdr.end - hdr.start) as usize)
    }
    .into();
    // `.eh_frame_hdr`: version 1, then the encoding of `eh_frame_ptr` (0x1b: pc-relative
    // signed 4 bytes, what linkers write; 0x03: absolute unsigned 4 bytes).
    if hdr_bytes.len() < 8 || hdr_bytes[0] != 1 {
        return None;
    }
    let field = i64::from(i32::from_le_bytes(hdr_bytes[4..8].try_into().ok()?));
    let eh_frame_start = match hdr_bytes[1] {
        0x1b => (hdr.start as i64 + 4 + field) as u64,
        0x03 => (field as u32 as u64).checked_add(o.bias)?,
        _ => return None,
    };
    let seg = o
        .loads
        .iter()
        .find(|l| l.start <= eh_frame_start && eh_frame_start < l.end)?;
    let eh_frame = eh_frame_start..seg.end;
    // SAFETY: as above: inside a mapped PT_LOAD segment, up to its end; copied at once.
    let eh_frame_bytes: Data = unsafe {
        std::slice::from_raw_parts(
            eh_frame.start as *const u8,
            (eh_frame.end - eh_frame.start) as usize,
        )
    }
    .into();
    let svma = |r: &Range<u64>| r.start - o.bias..r.end - o.bias;
    let info = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: Some(svma(&text)),
        eh_frame_svma: Some(svma(&eh_frame)),
        eh_frame: Some(eh_frame_bytes),
        eh_frame_hdr_svma: Some(svma(&hdr)),
        eh_frame_hdr: Some(hdr_bytes),
        ..Default::default()
    };
    Some(Module::new(o.name, start..end, o.bias, info))
}
