//! The pool's timers: where its deadlines (the idle reaper's next pass, a waiting checkout's
//! timeout, the client's pause between retries) become wake-ups. The engine only computes deadlines; a [`hyper::rt::Timer`] turns
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
    /// deadline itself, whenever it runs). A sleep may end early (tokio's, when its runtime
    /// is gone): its owner checks the time.
    pub(super) fn sleep_until(&self, at: Instant) -> Option<Pin<Box<dyn Sleep>>> {
        match &self.given {
            Some(timer) => Some(timer.sleep_until(at.into_std())),
            None => self.tokio_available().then(|| {
                Box::pin(TokioSleep {
                    sleep: tokio::time::sleep_until(at),
                }) as Pin<Box<dyn Sleep>>
            }),
        }
    }

    /// Whether sleeps can be had here (a given timer, or tokio's, where it works).
    pub(super) fn available(&self) -> bool {
        self.given.is_some() || self.tokio_available()
    }

    /// Whether the current runtime is tokio's with its time driver on. tokio has no way to
    /// ask that but to make a timer, which panics when it is off: with `TokioSleep::poll`,
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

pin_project_lite::pin_project! {
    /// tokio's sleep as a `hyper::rt::Sleep`. Polling a tokio sleep whose runtime shut down
    /// panics (a checkout that armed its timer on one runtime and is polled on another): that
    /// is caught, and the sleep ends, so that its owner checks its deadline itself and asks
    /// for a new sleep on the runtime it runs on now.
    struct TokioSleep {
        #[pin]
        sleep: tokio::time::Sleep,
    }
}

impl Future for TokioSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let sleep = self.project().sleep;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sleep.poll(cx)))
            .unwrap_or(Poll::Ready(()))
    }
}

impl Sleep for TokioSleep {}
