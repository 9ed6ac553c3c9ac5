//! The pool engine: Go `net/http` Transport semantics, generic over the connection, with no
//! sockets.
//!
//! [`Pool`] holds connections of any [`Poolable`] type under [`ConnectKey`]s. It does not
//! dial, read or write: a [`Checkout`] tells its caller when to dial ([`Step::Dial`]) and the
//! caller hands the result back through [`Connecting::finish`]. That keeps every rule below
//! testable deterministically, with paused time and no network.
//!
//! # The rules
//!
//! 1. **Keys** `[keys]`. Connections are pooled per [`ConnectKey`] (scheme, lower-cased host,
//!    port, and the proxy with its credentials' identity): the same origin through two
//!    proxies, or through one proxy with two sets of credentials, is two keys.
//! 2. **Idle list, LIFO** `[idle-lifo]`. A checkout takes the most recently returned idle
//!    connection of its key. Connections found expired (idle timeout, max lifetime) or closed
//!    are dropped on the way (`IdleConnOut` with the reason, then `ConnClosed`).
//! 3. **Two FIFO wait queues per key** `[queues]`. A request that finds nothing idle waits in
//!    the idle-wait queue. If the key has fewer than `max_conns_per_host` connections
//!    (dialing, active and idle) it may dial at once; otherwise it also waits in the conns-per-host
//!    queue for permission to dial. Whichever delivers first wins: a returned connection, or
//!    its own dial.
//! 4. **Returns** `[returns]`. A returned connection goes to the oldest live waiter of its key
//!    (`ConnReused`), else into the idle list — unless the key already has `max_idle_per_host`
//!    idle connections (the incoming one is closed, `MaxIdleConnsPerHostHit`). If the pool
//!    then holds more than `max_idle` idle connections, the least recently used one anywhere
//!    is closed (`MaxIdleConnsHit`).
//! 5. **Slots** `[slots]`. When a connection closes or a dial fails, its slot passes straight
//!    to the oldest live request waiting for permission to dial; only if there is none does
//!    the key's count come down. Exactly one release per connection.
//! 6. **One-shot waiters** `[one-shot]`. A waiter whose checkout is dropped (or times out)
//!    while a connection is delivered to it gives the connection back to the pool; a dial
//!    permission it never used is passed on. Nothing is lost in the race.
//! 7. **Late dials** `[late-dial]`. A dial that finishes after its requester left serves the
//!    oldest waiter, or goes idle.
//! 8. **HTTP/2** `[http2]`. A connection whose [`Poolable::share`] returns handles is shared:
//!    it stays in the pool while in use and serves every waiter of its key at once, up to its
//!    [`Poolable::max_concurrent`] (rule 12). Requests that expect a shared connection
//!    ([`Pool::checkout_shared`]: HTTP/2 prior knowledge, or https where ALPN may choose h2)
//!    and arrive while such a dial is in progress wait for it instead of dialing, so a cold
//!    burst makes one connection. If that dial brings a connection that cannot be shared (ALPN
//!    chose HTTP/1.1), every request that waited for it dials, and requests to the key stop
//!    waiting for each other's dials. If it fails, every request that waited for it fails with
//!    its error at once (Go's dial call). A shared connection from a raced dial that nobody
//!    needs, while the key has a shared connection with room, is closed
//!    (`CloseReason::Redundant`, Go's `addConnIfNeeded`). Shared connections are not subject
//!    to the idle caps, only to rule 11.
//! 9. **Timeouts** `[timeouts]`. Idle timeout (default 90 s), optional max lifetime, and an
//!    optional pool-wait timeout whose error carries a
//!    [`PoolSnapshot`]. The engine computes deadlines; a background reaper sleeps on the
//!    pool's timer ([`Pool::with_timer`]) until the next expiry while something is idle, a
//!    full timeout while connections are in use but none is idle, and exits when the pool has
//!    no connections or is dropped. Without a timer no reaper runs: an expired connection is
//!    dropped when a checkout finds it (rule 2), and a wait timeout is checked when polled.
//! 10. **Closing** `[closing]`. Dropping the last [`Pool`] handle closes idle connections and
//!     fails every waiter; connections in use close when they come back.
//! 11. **No reuse** `[no-reuse]`. `max_idle_per_host = Some(0)` turns reuse off, as
//!     hyper-util's `pool_max_idle_per_host(0)` does: every request dials its own connection,
//!     a returned connection closes even when requests wait (their slots pass on by rule 5),
//!     and HTTP/2 connections are not shared.
//! 12. **Stream limits** `[stream-limits]`. A shared connection is leased to at most
//!     [`Poolable::max_concurrent`] requests at once (HTTP/2: the peer's
//!     `SETTINGS_MAX_CONCURRENT_STREAMS`, read at each decision, so a lowered limit holds at
//!     once). When every shared connection of a key is full, a request dials another within
//!     `max_conns_per_host`, or waits in the key's queues (`ConnsPerHostWaitIn` at the cap); a
//!     lease that comes back passes straight to the oldest waiting request while the
//!     connection has room. This is Go's default (`StrictMaxConcurrentStreams` false).
//! 13. **Retiring** `[retiring]`. [`Pooled::retire`] on a shared connection (the server sent
//!     GOAWAY) stops new leases at once; the requests on it go on, and it closes for the given
//!     reason when the last one comes back. Closed, expired (idle timeout, max lifetime) and
//!     retired shared connections nobody uses are dropped at checkout.
//!
//! Every rule's event is a [`Stats`] hook, called after the pool lock is released
//! (`[events]`). The tag of each rule is cited at the function that implements it and in its
//! test (`tests/pool_rules_{queues,returns,http2,timeouts}.rs`, by tag). Where the rules
//! are implemented: `inner/waiters.rs` (the waiter's states and queues: `[queues]`,
//! `[slots]`, `[one-shot]`), `inner/mod.rs` (`[keys]`, `[idle-lifo]`), `inner/idle.rs` (`[returns]`, `[timeouts]`, `[closing]`),
//! `inner/dial.rs` (`[late-dial]`, `[http2]`, `[stream-limits]`, `[retiring]`),
//! `inner/effects.rs` (what runs after the lock, and panics in user code), `Config::verdict`
//! (why a connection may not serve another request).
//!
//! # Defaults
//!
//! [`Config::default`] equals hyper-util's legacy client: no connection cap, no idle caps,
//! 90 s idle timeout. Go's `http.DefaultTransport` is a recipe:
//!
//! ```
//! use std::time::Duration;
//! use poolscope::pool::Config;
//!
//! let go_like = Config {
//!     max_idle: Some(100),
//!     max_idle_per_host: Some(2),
//!     max_conns_per_host: None,
//!     idle_timeout: Some(Duration::from_secs(90)),
//!     ..Config::default()
//! };
//! # let _ = go_like;
//! ```
//!
//! # Examples
//!
//! ```
//! use poolscope::pool::{Config, ConnectKey, Pool, Poolable, Step};
//!
//! struct Conn;
//! impl Poolable for Conn {
//!     fn is_open(&self) -> bool { true }
//!     fn share(&self) -> Option<Self> { None }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let pool = Pool::<Conn>::new(Config::default());
//! let key = ConnectKey::new("http", "example.com", 80);
//!
//! let mut checkout = pool.checkout(key.clone());
//! let conn = loop {
//!     match checkout.step().await? {
//!         Step::Dial(permit) => permit.finish(Ok(Conn)), // dial here, then finish
//!         Step::Ready(conn) => break conn,
//!     }
//! };
//! assert!(!conn.info().reused);
//! drop(conn); // back to the idle list
//!
//! let again = pool.checkout(key).step().await?;
//! assert!(matches!(again, Step::Ready(c) if c.info().reused && c.info().was_idle));
//! # Ok(())
//! # }
//! ```

mod checkout;
mod conn;
mod error;
mod inner;
mod reaper;
mod timer;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use crate::key::{ConnId, ConnectKey, InvalidKey};
pub use crate::stats::snapshot::Describe;
pub use checkout::{Checkout, Connecting, Step};
pub use conn::{LeaseInfo, Poolable, Pooled, Returned};
pub use error::{BoxError, Error};
pub use timer::PoolTimer;

pub(crate) use crate::key::default_port;

use crate::stats::{CloseReason, IdleOutReason, PoolSnapshot, Stats};
use inner::Shared;

/// The pool's limits and timeouts. `None` means "no limit" (or "never").
///
/// Build it with struct-update syntax from [`Config::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Idle connections kept across all keys; the least recently used is closed beyond it.
    /// Default: `None`. `Some(0)` means no limit, as Go's `MaxIdleConns = 0` does.
    pub max_idle: Option<usize>,
    /// Idle connections kept per key; a returned connection beyond it is closed. `Some(0)`
    /// turns reuse off (rule 11). Default: `None` (hyper-util: `usize::MAX`; Go: 2).
    pub max_idle_per_host: Option<usize>,
    /// Connections per key, counting dialing, active and idle ones; requests beyond it wait.
    /// Default: `None`. `Some(0)` means no limit, as Go's zero does (a cap of zero
    /// connections could serve no request).
    pub max_conns_per_host: Option<usize>,
    /// How long a connection may stay idle. Default: 90 s.
    pub idle_timeout: Option<Duration>,
    /// How long a connection may live; it is closed when found older. Default: `None`.
    pub max_lifetime: Option<Duration>,
    /// How long a request may wait in the pool's queues before failing with
    /// [`Error::is_timeout`]. The pool's timer wakes the waiting checkout at the deadline;
    /// without one (see [`Pool::with_timer`]), the deadline is checked whenever it is polled.
    /// Default: `None`.
    pub wait_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_idle: None,
            max_idle_per_host: None,
            max_conns_per_host: None,
            idle_timeout: Some(Duration::from_secs(90)),
            max_lifetime: None,
            wait_timeout: None,
        }
    }
}

impl Config {
    /// Rule `[timeouts]`: why a connection may not serve another request, or `None`. The
    /// one place that decides it: at checkout (rule `[idle-lifo]`, and HTTP/2 leases), on
    /// return, and in the reaper's pass. `idle_for` (how long it has been idle at `now`) is
    /// given for a connection idle now; `open` is asked last, and only if nothing else
    /// applies (it runs user code).
    pub(crate) fn verdict(
        &self,
        created: Instant,
        idle_for: Option<Duration>,
        now: Instant,
        open: impl FnOnce() -> bool,
    ) -> Option<CloseReason> {
        if idle_for.is_some_and(|idle| self.idle_timeout.is_some_and(|t| idle >= t)) {
            Some(CloseReason::IdleTimeout)
        } else if self.lifetime_over(created, now) {
            Some(CloseReason::MaxLifetime)
        } else if !open() {
            Some(CloseReason::Broken)
        } else {
            None
        }
    }

    /// Rule `[no-reuse]`: no connection serves a second request.
    fn reuse_off(&self) -> bool {
        self.max_idle_per_host == Some(0)
    }

    fn lifetime_over(&self, created: Instant, now: Instant) -> bool {
        self.max_lifetime
            .is_some_and(|t| now.saturating_duration_since(created) >= t)
    }
}

/// A connection pool: idle lists and wait queues per key, with Go Transport semantics.
///
/// Cloning gives another handle to the same pool. When the last handle is dropped the pool
/// closes: idle connections are dropped, waiting checkouts fail with
/// [`Error::is_closed`], and connections in use are closed when they come back.
pub struct Pool<T> {
    shared: Arc<Shared<T>>,
}

impl<T: Poolable> Pool<T> {
    /// A pool with `config` and no hooks.
    pub fn new(config: Config) -> Pool<T> {
        Pool::with_stats(config, Stats::default())
    }

    /// A pool with `config` that reports to `stats`, on tokio's timer (see
    /// [`with_timer`](Pool::with_timer)).
    pub fn with_stats(config: Config, stats: Stats) -> Pool<T> {
        Pool::with_timer(config, stats, None)
    }

    /// A pool with `config` that reports to `stats`, whose deadlines (the idle reaper's
    /// passes, the wait timeout) sleep on `timer`. `None`: tokio's timer, where the pool runs
    /// in a tokio runtime with its time driver; elsewhere no timer at all (no reaper runs,
    /// and a wait timeout is checked when the checkout is polled).
    pub fn with_timer(config: Config, stats: Stats, timer: Option<PoolTimer>) -> Pool<T> {
        // Zero caps mean "no limit", as in Go (`MaxConnsPerHost = 0`, `MaxIdleConns = 0`):
        // a cap of zero connections could serve nothing, and zero idle connections across
        // the pool would turn keep-alive off everywhere. (`max_idle_per_host = Some(0)` keeps
        // hyper-util's meaning: no reuse, rule 11.)
        let config = Config {
            max_conns_per_host: config.max_conns_per_host.filter(|&n| n > 0),
            max_idle: config.max_idle.filter(|&n| n > 0),
            ..config
        };
        Pool {
            shared: Arc::new(Shared::new(config, stats, timer)),
        }
    }

    /// Starts a request's checkout for `key`: an idle connection at once if there is one,
    /// else a place in the queues (and perhaps permission to dial).
    pub fn checkout(&self, key: ConnectKey) -> Checkout<T> {
        Checkout::new(self.shared.clone(), key, false)
    }

    /// Like [`checkout`](Pool::checkout), for a request that expects a shared (HTTP/2)
    /// connection: if such a dial is already in progress for `key`, it waits for it instead of
    /// dialing.
    pub fn checkout_shared(&self, key: ConnectKey) -> Checkout<T> {
        Checkout::new(self.shared.clone(), key, true)
    }

    /// A sleep of `pause` on the pool's timer, or `None` where it has none.
    pub(crate) fn sleep(
        &self,
        pause: Duration,
    ) -> Option<std::pin::Pin<Box<dyn hyper::rt::Sleep>>> {
        self.shared.timers.sleep_until(Instant::now() + pause)
    }

    /// The pool as it is now.
    pub fn snapshot(&self) -> PoolSnapshot {
        let unfinished = {
            let locked = self.shared.lock();
            locked.snapshot()
        };
        unfinished.finish()
    }

    /// Closes every idle connection now, and, as Go's `CloseIdleConnections` does, the
    /// connections in use as they come back, until the next checkout starts (a drain before
    /// shutdown or rotation). Requests in flight are unaffected.
    pub fn close_idle_connections(&self) {
        let mut locked = self.shared.lock();
        locked.close_idle(IdleOutReason::CloseIdle, CloseReason::CloseIdle);
        locked.close_returning();
        locked.finish(&self.shared);
    }
}

impl<T: Poolable> Pool<T> {
    /// A handle that does not keep the pool open, for a connection's own task to report that
    /// the connection closed.
    pub fn downgrade(&self) -> WeakPool<T> {
        WeakPool {
            shared: Arc::downgrade(&self.shared),
        }
    }
}

/// A handle to a pool that does not keep it open; see [`Pool::downgrade`].
pub struct WeakPool<T> {
    shared: std::sync::Weak<Shared<T>>,
}

impl<T: Poolable> WeakPool<T> {
    /// Drops the idle connections of `key` that are no longer open (call it when a
    /// connection's task ends, so a dead connection leaves the idle list at once rather than
    /// at the next checkout).
    pub fn evict_closed(&self, key: &ConnectKey) {
        if let Some(shared) = self.shared.upgrade() {
            let mut locked = shared.lock();
            locked.evict_closed(key);
            locked.finish(&shared);
        }
    }
}

impl<T> Clone for WeakPool<T> {
    fn clone(&self) -> Self {
        WeakPool {
            shared: self.shared.clone(),
        }
    }
}

impl<T> fmt::Debug for WeakPool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WeakPool")
    }
}

impl<T> Pool<T> {
    /// The pool's configuration as normalized when it was made: zero caps
    /// (`max_conns_per_host`, `max_idle`) are `None`, "no limit", as in Go.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }
}

impl<T> Clone for Pool<T> {
    fn clone(&self) -> Pool<T> {
        self.shared.add_handle();
        Pool {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Pool<T> {
    fn drop(&mut self) {
        if self.shared.drop_handle() {
            // `Shared::close` was set by the constructor, where `T: Poolable` is known; the
            // struct itself has no bounds so that types holding a `Pool` need none either.
            (self.shared.close)(&self.shared);
        }
    }
}

impl<T> fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.shared.config)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll, Waker};

    use super::*;

    struct Conn;

    impl Poolable for Conn {
        fn is_open(&self) -> bool {
            true
        }
        fn share(&self) -> Option<Self> {
            None
        }
    }

    fn step(c: &mut Checkout<Conn>) -> Poll<Result<Step<Conn>, Error>> {
        c.poll_step(&mut Context::from_waker(Waker::noop()))
    }

    fn tracked_keys(pool: &Pool<Conn>) -> usize {
        pool.shared.lock().tracked_keys()
    }

    #[test]
    fn a_per_host_cap_of_zero_means_no_cap() {
        let pool = Pool::new(Config {
            max_conns_per_host: Some(0),
            ..Config::default()
        });
        assert_eq!(pool.config().max_conns_per_host, None);
        let mut c = pool.checkout(ConnectKey::new("http", "a", 80));
        assert!(matches!(step(&mut c), Poll::Ready(Ok(Step::Dial(_)))));
    }

    #[test]
    fn a_wait_timeout_outside_a_runtime_is_checked_when_polled() {
        let pool = Pool::new(Config {
            max_conns_per_host: Some(1),
            wait_timeout: Some(std::time::Duration::from_millis(20)),
            ..Config::default()
        });
        let key = ConnectKey::new("http", "a", 80);
        let mut first = pool.checkout(key.clone());
        let Poll::Ready(Ok(Step::Dial(_permit))) = step(&mut first) else {
            panic!("expected a dial permit");
        };
        // No tokio runtime here: creating the waiting checkout must not need one.
        let mut second = pool.checkout(key);
        assert!(step(&mut second).is_pending());
        std::thread::sleep(std::time::Duration::from_millis(40));
        assert!(matches!(step(&mut second), Poll::Ready(Err(e)) if e.is_timeout()));
    }

    #[test]
    fn a_reaper_lost_with_its_runtime_is_spawned_again_on_the_next() {
        let pool = Pool::new(Config {
            idle_timeout: Some(std::time::Duration::from_secs(1)),
            ..Config::default()
        });
        let key = ConnectKey::new("http", "a", 80);
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap()
        };
        let first = runtime();
        first.block_on(async {
            let mut c = pool.checkout(key.clone());
            let Poll::Ready(Ok(Step::Dial(permit))) = step(&mut c) else {
                panic!("expected a dial permit");
            };
            permit.finish(Ok(Conn));
            let Poll::Ready(Ok(Step::Ready(conn))) = step(&mut c) else {
                panic!("expected the connection");
            };
            drop(conn); // idle: a reaper is spawned on this runtime
        });
        drop(first); // and dropped with it
        runtime().block_on(async {
            let mut c = pool.checkout(key.clone());
            let Poll::Ready(Ok(Step::Ready(conn))) = step(&mut c) else {
                panic!("expected the idle connection");
            };
            drop(conn); // idle again: a reaper must run here
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            assert_eq!(
                pool.snapshot().total_idle(),
                0,
                "the idle timeout closed it"
            );
        });
    }

    #[test]
    fn a_key_whose_only_dial_failed_is_forgotten() {
        let pool = Pool::new(Config::default());
        for i in 0..3 {
            let mut c = pool.checkout(ConnectKey::new("http", &format!("down-{i}"), 80));
            let Poll::Ready(Ok(Step::Dial(permit))) = step(&mut c) else {
                panic!("expected a dial permit");
            };
            permit.finish(Err("connection refused".into()));
            assert!(matches!(step(&mut c), Poll::Ready(Err(e)) if e.is_dial()));
        }
        assert_eq!(tracked_keys(&pool), 0, "failed keys must not accumulate");
    }
}
