//! What a locked operation leaves to do after the lock: [`Effects`], [`Locked::finish`],
//! and the guard around user code that runs under the lock ([`Guarded`]).

use std::cell::Cell;
use std::sync::Arc;
use std::task::Waker;

use tokio::time::Instant;

use super::{Locked, Shared};
use crate::pool::error::Error;
use crate::pool::Poolable;
use crate::stats::Event;

/// Work collected under the lock and done after it is released.
pub(super) struct Effects<T> {
    /// Whether events are built at all (some hook is registered).
    pub(super) record: bool,
    /// The time of this locked operation, read from the clock on first use (one read per
    /// operation: every rule in it sees the same instant; paths that need no time read none).
    pub(super) now: Cell<Option<Instant>>,
    pub(super) events: Vec<Event>,
    /// The limit-hit snapshots among `events` (by index), to describe after the lock.
    pub(super) describe: Vec<(usize, super::snapshot::Pending)>,
    pub(super) wakers: Vec<Waker>,
    /// Connections leaving the pool; dropping them closes them.
    pub(super) drops: Vec<T>,
    /// What the operation took out and whose drop is foreign code: dropped after the lock.
    pub(super) leftovers: Leftovers,
    pub(super) spawn_reaper: bool,
    pub(super) wake_reaper: bool,
}

impl<T> Effects<T> {
    pub(super) fn push(&mut self, ev: impl FnOnce() -> Event) {
        if self.record {
            self.events.push(ev());
        }
    }

    /// Keeps `waker` to drop after the lock (dropping a waker is foreign code).
    pub(super) fn drop_later(&mut self, waker: Option<Waker>) {
        if let Some(w) = waker {
            match self.leftovers.waker {
                None => self.leftovers.waker = Some(w),
                Some(_) => self.leftovers.more.push(Leftover::Waker(w)),
            }
        }
    }

    /// Keeps an error left in a removed waiter (a connector's) to drop after the lock.
    pub(super) fn drop_error_later(&mut self, error: Error) {
        self.leftovers.more.push(Leftover::Error(error));
    }

    /// Keeps a closed connection's describer (`Poolable::describe`) to drop after the lock.
    pub(super) fn drop_describer_later(&mut self, describer: Arc<dyn crate::pool::Describe>) {
        self.leftovers.more.push(Leftover::Describer(describer));
    }
}

/// Values a locked operation removed whose drop runs foreign code: a waker replaced or left
/// behind by a waiter (most operations drop at most one, kept without a `Vec`), and any more.
#[derive(Default)]
pub(super) struct Leftovers {
    waker: Option<Waker>,
    more: Vec<Leftover>,
}

impl Leftovers {
    fn is_empty(&self) -> bool {
        self.waker.is_none() && self.more.is_empty()
    }
}

/// One of [`Leftovers`]' further values (held only to be dropped after the lock).
#[allow(dead_code)]
enum Leftover {
    Waker(Waker),
    Error(Error),
    Describer(Arc<dyn crate::pool::Describe>),
}

impl<T: Poolable> Locked<'_, T> {
    /// Releases the lock, then does what the locked operation left to do: spawn or wake the
    /// reaper, drop the connections that left (their `Drop` may be the user's), call hooks,
    /// wake waiters. Each piece of user code is caught: a panic in any of it (or one caught in
    /// a `Poolable` call under the lock) is raised again only after everything else ran, so
    /// the pool is consistent and no wake-up is lost; never while the thread is already
    /// unwinding.
    pub(in crate::pool) fn finish(self, shared: &Arc<Shared<T>>) {
        #[cfg(debug_assertions)]
        self.check_waiters();
        let Locked { st, fx, stats, .. } = self;
        drop(st); // release the lock before running any foreign code
        let Effects {
            record,
            events,
            describe,
            wakers,
            drops,
            spawn_reaper,
            wake_reaper,
            leftovers,
            ..
        } = fx;
        if spawn_reaper {
            crate::pool::reaper::spawn(shared);
        }
        if wake_reaper {
            shared.reaper_wake.notify_one();
        }
        for conn in drops {
            caught::guard(|| drop(conn), ());
        }
        if !leftovers.is_empty() {
            caught::guard(|| drop(leftovers), ());
        }
        // Hooks before wake-ups, so that a request woken by this operation finds its events
        // (a connection opened, a wait ended) already reported; each hook is caught, so a
        // panicking one skips no wake-up.
        if record {
            let mut events = events;
            for (i, pending) in describe {
                if let Some(Event::LimitHit(_, Some(snap))) = events.get_mut(i) {
                    pending.describe(snap);
                }
            }
            for ev in &events {
                caught::guard(|| stats.dispatch(ev), ());
            }
            event_buffer::give_back(events);
        }
        for w in wakers {
            caught::guard(|| w.wake(), ());
        }
        if let Some(panic) = caught::take() {
            if !std::thread::panicking() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// The pool's calls into [`Poolable`] (user code, run under the lock): a panic in one is
/// caught, the call counts as "closed" / "not shareable" / "no room", and the panic is raised
/// again by [`Locked::finish`] once the lock is released and the state is consistent.
pub(super) trait Guarded: Poolable {
    fn open(&self) -> bool {
        caught::guard(|| self.is_open(), false)
    }

    fn handle(&self) -> Option<Self> {
        caught::guard(|| self.share(), None)
    }

    fn limit(&self) -> Option<usize> {
        caught::guard(|| self.max_concurrent(), Some(0))
    }

    fn describer(&self) -> Option<Arc<dyn crate::pool::Describe>> {
        caught::guard(|| self.describe(), None)
    }
}

impl<T: Poolable> Guarded for T {}

/// The first panic caught in user code during this thread's current locked operation.
pub(super) mod caught {
    use std::any::Any;
    use std::cell::RefCell;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    type Payload = Box<dyn Any + Send>;

    thread_local! {
        static CAUGHT: RefCell<Option<Payload>> = const { RefCell::new(None) };
    }

    /// Runs `f`, or on a panic keeps the panic and returns `fallback`.
    pub(in crate::pool) fn guard<R>(f: impl FnOnce() -> R, fallback: R) -> R {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => r,
            Err(p) => {
                keep(p);
                fallback
            }
        }
    }

    /// Keeps `p` unless an earlier panic is kept.
    pub(in crate::pool) fn keep(p: Payload) {
        let _ = CAUGHT.try_with(|c| {
            let mut c = c.borrow_mut();
            if c.is_none() {
                *c = Some(p);
            }
        });
    }

    /// Takes the kept panic, if any.
    pub(in crate::pool) fn take() -> Option<Payload> {
        CAUGHT.try_with(|c| c.borrow_mut().take()).ok().flatten()
    }
}

/// A per-thread spare `Vec` for the events of one locked operation, so that recording
/// events does not allocate on every checkout and return.
pub(super) mod event_buffer {
    use std::cell::Cell;

    use crate::stats::Event;

    /// Buffers larger than this (after a burst, e.g. closing a big pool) are not kept.
    const KEEP: usize = 64;

    thread_local! {
        static SPARE: Cell<Vec<Event>> = const { Cell::new(Vec::new()) };
    }

    /// The spare buffer (empty), or a new one if it is in use (a hook running on this thread
    /// went back into a pool) or the thread is exiting.
    pub(in crate::pool) fn take() -> Vec<Event> {
        SPARE.try_with(Cell::take).unwrap_or_default()
    }

    /// Returns a buffer after its events were dispatched.
    pub(in crate::pool) fn give_back(mut events: Vec<Event>) {
        if events.capacity() == 0 || events.capacity() > KEEP {
            return;
        }
        events.clear();
        let _ = SPARE.try_with(|s| s.set(events));
    }
}
