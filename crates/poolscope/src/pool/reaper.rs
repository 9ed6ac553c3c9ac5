//! The idle reaper: a background task that closes expired idle connections.
//!
//! It is spawned when the first connection goes idle and a timeout is configured, and sleeps
//! until the next expiry. When nothing is idle but connections are in use it sleeps a full
//! timeout instead of exiting (a connection going idle later cannot expire sooner, unless its
//! max lifetime is near, and then the pool wakes it early), so a busy pool keeps one reaper
//! instead of spawning one each time its idle list refills. It exits when the pool has no
//! connections or is closed; it holds only a `Weak` reference to the pool while it waits.
//! It runs on the current tokio runtime and sleeps on the pool's timer (`timer.rs`); without
//! either, no reaper runs, and expired connections are still dropped at checkout.

use std::sync::{Arc, Weak};

use tokio::sync::Notify;

use super::inner::{ReaperNext, Shared};
use super::Poolable;

pub(super) fn spawn<T: Poolable>(shared: &Arc<Shared<T>>) {
    let weak = Arc::downgrade(shared);
    let wake = shared.reaper_wake.clone();
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if shared.timers.available() => {
            // The guard goes with the task from the start: a task dropped before its first
            // poll still tells the pool.
            let stopped = Stopped(Some(weak.clone()));
            handle.spawn(run(weak, wake, stopped));
        }
        _ => {
            // Nowhere to run or nothing to sleep on: the pool goes on without a reaper.
            let mut locked = shared.lock();
            locked.reaper_stopped();
            locked.finish(shared);
        }
    }
}

async fn run<T: Poolable>(weak: Weak<Shared<T>>, wake: Arc<Notify>, mut stopped: Stopped<T>) {
    loop {
        let (next, sleep) = {
            let Some(shared) = weak.upgrade() else { return };
            let mut locked = shared.lock();
            let next = locked.reap();
            locked.finish(&shared);
            let sleep = match next {
                ReaperNext::Sleep(at) => shared.timers.sleep_until(at),
                ReaperNext::Exit => None,
            };
            (next, sleep)
        };
        match (next, sleep) {
            (ReaperNext::Sleep(_), Some(sleep)) => {
                tokio::select! {
                    _ = sleep => {}
                    _ = wake.notified() => {}
                }
            }
            (ReaperNext::Sleep(_), None) => {
                // The timer went away (the task moved to a runtime without one): `stopped`
                // tells the pool that no reaper runs.
                return;
            }
            (ReaperNext::Exit, _) => {
                // `reap` already recorded that no reaper runs.
                stopped.0 = None;
                return;
            }
        }
    }
}

/// Dropped with the reaper's task when that ends other than by `reap`'s choice (its runtime
/// shut down, or it panicked): the pool learns that no reaper runs, so the next connection
/// going idle spawns one on whatever runtime is current then.
struct Stopped<T: Poolable>(Option<Weak<Shared<T>>>);

impl<T: Poolable> Drop for Stopped<T> {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take().and_then(|w| w.upgrade()) {
            let mut locked = shared.lock();
            locked.reaper_stopped();
            locked.finish(&shared);
        }
    }
}
