//! The pool's timers: where its deadlines (the idle reaper's next pass, a waiting checkout's
//! timeout) become wake-ups. The engine only computes deadlines; a [`hyper::rt::Timer`] turns
//! them into sleeps.
//!
//! The timer is the one given ([`Pool::with_timer`](super::Pool::with_timer), the client's
//! `Builder::pool_timer`) or, by default, tokio's, when the pool runs inside a tokio runtime
//! whose time driver is enabled. Without a timer (no runtime, a runtime built without
//! `enable_time`), the pool runs on the time its operations read: no reaper runs (an expired
//! idle connection is dropped when a checkout finds it, as hyper-util does without a
//! `pool_timer`), and a checkout's wait timeout is checked each time it is polled.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::rt::{Sleep, Timer};
use tokio::time::Instant;

/// A timer the pool's sleeps come from.
pub type PoolTimer = Arc<dyn Timer + Send + Sync>;

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

/// The pool's source of sleeps.
pub(super) struct Timers {
    given: Option<PoolTimer>,
    /// Whether tokio's time driver was found (per pool: `UNKNOWN` until first needed).
    tokio: AtomicU8,
}

impl Timers {
    pub(super) fn new(given: Option<PoolTimer>) -> Timers {
        Timers {
            given,
            tokio: AtomicU8::new(UNKNOWN),
        }
    }

    /// A sleep until `at`, or `None` where the pool has no timer (then the caller checks the
    /// deadline itself, whenever it runs).
    pub(super) fn sleep_until(&self, at: Instant) -> Option<PoolSleep> {
        match &self.given {
            Some(timer) => Some(PoolSleep::Given(timer.sleep_until(at.into_std()))),
            None => self
                .tokio_available()
                .then(|| PoolSleep::Tokio(Box::pin(tokio::time::sleep_until(at)))),
        }
    }

    /// Whether sleeps can be had here (a given timer, or tokio's, where it works).
    pub(super) fn available(&self) -> bool {
        self.given.is_some() || self.tokio_available()
    }

    /// Whether the current runtime is tokio's with its time driver on. tokio has no way to
    /// ask that but to make a timer, which panics when it is off: with [`PoolSleep::poll`],
    /// the one place the pool catches a panic of tokio's making, once per pool, and never
    /// for a timer it was given.
    fn tokio_available(&self) -> bool {
        match self.tokio.load(Ordering::Relaxed) {
            YES => return tokio::runtime::Handle::try_current().is_ok(),
            NO => return false,
            _ => {}
        }
        if tokio::runtime::Handle::try_current().is_err() {
            // No runtime here: ask again from the next one.
            return false;
        }
        let works = std::panic::catch_unwind(|| {
            drop(tokio::time::sleep(std::time::Duration::ZERO));
        })
        .is_ok();
        self.tokio
            .store(if works { YES } else { NO }, Ordering::Relaxed);
        works
    }
}

/// A sleep of the pool's timer.
pub(crate) enum PoolSleep {
    Given(Pin<Box<dyn Sleep>>),
    Tokio(Pin<Box<tokio::time::Sleep>>),
    /// A tokio sleep whose runtime shut down: it never ends; the caller's deadline does.
    Gone,
}

impl PoolSleep {
    /// Whether this sleep can still end (else its owner checks the deadline when it runs).
    pub(super) fn is_gone(&self) -> bool {
        matches!(self, PoolSleep::Gone)
    }
}

impl Future for PoolSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut *self {
            PoolSleep::Given(sleep) => sleep.as_mut().poll(cx),
            PoolSleep::Tokio(sleep) => {
                // Polling a tokio sleep whose runtime shut down panics (a checkout that armed
                // its timer on one runtime and is polled on another).
                let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    sleep.as_mut().poll(cx)
                }));
                polled.unwrap_or_else(|_| {
                    *self = PoolSleep::Gone;
                    Poll::Pending
                })
            }
            PoolSleep::Gone => Poll::Pending,
        }
    }
}
