//! The calling thread's return addresses, captured without a process-wide lock.
//!
//! The `backtrace` crate's safe [`backtrace::trace`] takes one process-wide mutex, the same
//! one [`backtrace::resolve`] holds while it reads debug info (milliseconds, seconds the first
//! time in a large binary). A client that captures a stack per request would then wait, on
//! every runtime worker at once, for whoever is resolving symbols. The mutex exists for
//! platforms whose unwinder is not thread-safe (Windows' `dbghelp`); on Linux with glibc the
//! unwinder is libgcc's `_Unwind_Backtrace`, which is. So there this crate walks the stack
//! with [`backtrace::trace_unsynchronized`] and takes no lock; elsewhere it falls back to the
//! synchronized [`backtrace::trace`]. [`LOCK_FREE`] says which.
//!
//! This is the only `unsafe` the client needs for stacks; it lives here, alone, with its
//! reasoning and its tests.

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
mod framehop_unwind;

/// This crate's source directory: a release build's line tables name [`trace`], inlined
/// into its caller, by its short name and this file, so a report that hides machinery
/// frames recognizes it by the file.
pub const SOURCE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/");

/// Whether [`trace`] takes no process-wide lock on this platform.
pub const LOCK_FREE: bool = cfg!(all(target_os = "linux", target_env = "gnu"));

/// Calls `f` with the return address (instruction pointer) of each frame of the calling
/// thread's stack, innermost first, until `f` returns `false` or the stack ends.
///
/// Inlined into its caller, so it adds no frame of its own beyond the unwinder's. `f` must
/// not panic (a panic unwinding through the C unwinder aborts the process), and should only
/// record the address: symbols are resolved later, elsewhere.
#[inline(always)]
pub fn trace<F: FnMut(usize) -> bool>(mut f: F) {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
    if framehop_unwind::trace(&mut f) {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `trace_unsynchronized` is unsafe only because it does not take the crate's
    // global lock, which serializes unwinding on platforms whose unwinder is not
    // thread-safe. Under this `cfg` the unwinder is libgcc's `_Unwind_Backtrace`
    // (`backtrace`'s `libunwind.rs` backend): it keeps no state between calls and finds
    // unwind tables through glibc's `dl_iterate_phdr` / `_dl_find_object`, both safe to call
    // from any number of threads at once, and it does not touch the symbolizer's caches that
    // `backtrace::resolve` guards with the same lock. The callback only copies a `usize`.
    unsafe {
        backtrace::trace_unsynchronized(|frame| f(frame.ip() as usize))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    backtrace::trace(|frame| f(frame.ip() as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[inline(never)]
    fn capture(n: usize) -> Vec<usize> {
        let mut ips = Vec::new();
        trace(|ip| {
            ips.push(ip);
            ips.len() < n
        });
        ips
    }

    /// framehop's walk and libgcc's agree, frame for frame, from the caller down.
    #[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
    #[test]
    fn the_fast_walk_finds_the_same_frames_as_libgcc() {
        #[inline(never)]
        fn both() -> (Vec<usize>, Vec<usize>) {
            let mut fast = Vec::new();
            let used = framehop_unwind::trace(&mut |ip| {
                fast.push(ip);
                fast.len() < 64
            });
            assert!(used, "the fast path is not available");
            let mut slow = Vec::new();
            // SAFETY: see `trace`.
            unsafe {
                backtrace::trace_unsynchronized(|f| {
                    slow.push(f.ip() as usize);
                    slow.len() < 64
                })
            };
            (fast, slow)
        }
        let (fast, slow) = both();
        // The first frames are each unwinder's own; from the first address both saw (in
        // `both`), the two lists must be the same.
        let i = fast
            .iter()
            .position(|ip| slow.contains(ip))
            .expect("a common frame");
        let j = slow.iter().position(|ip| *ip == fast[i]).unwrap();
        let (a, b) = (&fast[i..], &slow[j..]);
        let n = a.len().min(b.len());
        assert!(n >= 5, "{fast:x?}\n{slow:x?}");
        assert_eq!(&a[..n], &b[..n], "\nframehop {fast:x?}\nlibgcc   {slow:x?}");
    }

    #[test]
    fn it_captures_the_callers_frames_and_stops_when_asked() {
        let all = capture(64);
        assert!(all.len() >= 3, "{all:x?}");
        assert!(all.iter().all(|&ip| ip != 0) || all.last() == Some(&0));
        assert_eq!(capture(2).len(), 2);
        // The frame of `capture` resolves to this file.
        let mut files = Vec::new();
        for &ip in &all[..4.min(all.len())] {
            backtrace::resolve(ip as *mut std::ffi::c_void, |s| {
                if let Some(f) = s.filename() {
                    files.push(f.display().to_string());
                }
            });
        }
        assert!(
            files
                .iter()
                .any(|f| f.ends_with("stack-capture/src/lib.rs")),
            "{files:?}"
        );
    }

    /// While another thread resolves symbols (holding `backtrace`'s global lock, as it does
    /// for as long as its callback runs), a capture still completes.
    #[test]
    fn a_capture_does_not_wait_for_a_resolution_in_progress() {
        if !LOCK_FREE {
            return;
        }
        let (holding_tx, holding_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let resolver = std::thread::spawn(move || {
            let here = capture(1)[0];
            let mut first = true;
            backtrace::resolve(here as *mut std::ffi::c_void, |_| {
                // Called once per symbol (inlined frames have several): hold on the first.
                if std::mem::take(&mut first) {
                    let _ = holding_tx.send(());
                    let _ = release_rx.recv_timeout(Duration::from_secs(30));
                }
            });
        });
        holding_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the resolver holds the lock");
        let (done_tx, done_rx) = mpsc::channel();
        let capturer = std::thread::spawn(move || {
            let _ = done_tx.send(capture(16).len());
        });
        let captured = done_rx.recv_timeout(Duration::from_secs(5));
        release_tx.send(()).unwrap();
        resolver.join().unwrap();
        capturer.join().unwrap();
        assert!(
            captured.is_ok_and(|n| n > 0),
            "the capture waited for the resolver's lock"
        );
    }
}
