//! The idle reaper: a background task that closes expired idle connections.
//!
//! It runs only while something is idle and a timeout is configured: it is spawned when the
//! first connection goes idle, sleeps until the next expiry, and stops when nothing is idle or
//! the pool is gone (it holds only a `Weak` reference while it sleeps). Without a tokio runtime
//! no reaper runs, and expired connections are still dropped at checkout.

use std::sync::{Arc, Weak};

use super::inner::Shared;
use super::Poolable;

pub(super) fn spawn<T: Poolable>(shared: &Arc<Shared<T>>) {
    let weak = Arc::downgrade(shared);
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(run(weak));
        }
        Err(_) => {
            let mut locked = shared.lock();
            locked.reaper_stopped();
            locked.finish(shared);
        }
    }
}

async fn run<T: Poolable>(weak: Weak<Shared<T>>) {
    loop {
        let next = {
            let Some(shared) = weak.upgrade() else { return };
            let mut locked = shared.lock();
            let next = locked.reap();
            locked.finish(&shared);
            next
        };
        match next {
            Some(at) => tokio::time::sleep_until(at).await,
            None => return,
        }
    }
}
