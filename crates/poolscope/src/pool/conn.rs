//! What the pool holds: the [`Poolable`] trait, connection ids, and the [`Pooled`] lease a
//! request gets.
//!
//! A `Pooled` goes back to the pool when it is dropped or [`released`](Pooled::release);
//! [`discard`](Pooled::discard) closes it instead. This module does not decide where a
//! returned connection goes — that is `inner/idle.rs` (`put`).

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::inner::Shared;
use super::{ConnId, ConnectKey, Describe};
use crate::stats::CloseReason;

/// A connection the pool can hold: it knows whether it is still open, and whether it can be
/// shared by concurrent requests (HTTP/2).
///
/// The pool gives every connection its [`ConnId`] when the dial that makes it starts; the
/// connection itself does not need to carry one.
///
/// [`is_open`](Poolable::is_open), [`share`](Poolable::share),
/// [`max_concurrent`](Poolable::max_concurrent) and [`describe`](Poolable::describe) run while
/// the pool's lock is held (they decide what the locked operation does, or hand over what
/// describes the connection), so they must be quick and must not use the pool. Dropping a
/// connection or a handle never happens under the lock.
///
/// # Examples
///
/// ```
/// use poolscope::pool::Poolable;
/// use std::sync::{atomic::{AtomicBool, Ordering}, Arc};
///
/// #[derive(Clone)]
/// struct H2 { open: Arc<AtomicBool> }
///
/// impl Poolable for H2 {
///     fn is_open(&self) -> bool { self.open.load(Ordering::Acquire) }
///     // A multiplexed connection hands out another handle to itself.
///     fn share(&self) -> Option<Self> { Some(self.clone()) }
/// }
/// ```
pub trait Poolable: Send + Sized + 'static {
    /// Whether the connection can still carry a request. Called at checkout and return, with
    /// the pool lock held: it must be cheap and must not block or call back into the pool.
    fn is_open(&self) -> bool;

    /// For a multiplexed connection, another handle to the same connection; `None` for a
    /// connection that serves one request at a time (HTTP/1). Called with the pool lock held,
    /// under the same rules as [`is_open`](Poolable::is_open).
    fn share(&self) -> Option<Self>;

    /// For a multiplexed connection, how many requests it may carry at once right now (for
    /// HTTP/2, the peer's `SETTINGS_MAX_CONCURRENT_STREAMS`); `None` for no limit. The pool
    /// leases a shared connection to at most this many requests and, when all of a key's
    /// shared connections are full, dials another (within `max_conns_per_host`) or queues the
    /// request until a lease comes back. Called with the pool lock held, under the same rules
    /// as [`is_open`](Poolable::is_open). Default: `None`.
    fn max_concurrent(&self) -> Option<usize> {
        None
    }

    /// What can describe this connection in a [`PoolSnapshot`](crate::stats::PoolSnapshot)
    /// for as long as it lives, beyond what the pool counts (addresses, the kernel's view of
    /// its socket). Asked once, when the connection's dial ends (with the pool lock held,
    /// under the same rules as [`is_open`](Poolable::is_open)); the pool keeps it until the
    /// connection closes, so that a connection leased out (which the pool does not hold) is
    /// described too. Default: `None`.
    fn describe(&self) -> Option<Arc<dyn Describe>> {
        None
    }
}

/// How a request got its connection: what Go's `httptrace.GotConnInfo` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseInfo {
    /// The connection.
    pub conn_id: ConnId,
    /// The connection served an earlier request.
    pub reused: bool,
    /// The connection came from the idle list (or an idle HTTP/2 connection).
    pub was_idle: bool,
    /// How long it was idle, if `was_idle`.
    pub idle_time: Duration,
    /// How long the request waited in the pool's queues (zero when served at once).
    pub waited: Duration,
    /// The connection is shared with concurrent requests (HTTP/2).
    pub shared: bool,
}

/// Bookkeeping that travels with a connection through the pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnMeta {
    pub(crate) id: ConnId,
    pub(crate) created: Instant,
    /// Requests served, the current one included while leased.
    pub(crate) requests: u64,
}

/// A connection leased by the pool, as the pool hands it over before it becomes a `Pooled`.
pub(crate) struct Lease<T> {
    pub(crate) conn: T,
    pub(crate) meta: ConnMeta,
    pub(crate) info: LeaseInfo,
}

/// What happened to a connection given back with [`Pooled::release`]: Go's `PutIdleConn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Returned {
    /// It went into the idle list.
    Idle,
    /// It went straight to a waiting request.
    HandedOver,
    /// It is a shared (HTTP/2) connection; other requests may still use it.
    Shared,
    /// It was closed.
    Closed(CloseReason),
}

/// A connection checked out of the pool. Derefs to the connection.
///
/// # Drop behavior
///
/// Dropping a `Pooled` returns the connection to the pool (as [`release`](Pooled::release)
/// does, unless [`close_on_drop`](Pooled::close_on_drop) is set): it goes to the oldest waiting
/// request of its key, or into the idle list, or is
/// closed if it is no longer open or a limit says so. If the pool was closed (every
/// handle dropped), it is closed.
pub struct Pooled<T: Poolable> {
    /// `Some` until the connection is returned or discarded.
    conn: Option<T>,
    key: ConnectKey,
    meta: ConnMeta,
    info: LeaseInfo,
    /// Dropping closes the connection instead of returning it (its state is unknown).
    close_on_drop: bool,
    /// Keeps the pool's state alive (not the pool open: that is the handles' count), so a
    /// connection in use can always be given back.
    pool: Arc<Shared<T>>,
}

impl<T: Poolable> Pooled<T> {
    pub(crate) fn new(lease: Lease<T>, key: ConnectKey, pool: Arc<Shared<T>>) -> Pooled<T> {
        Pooled {
            conn: Some(lease.conn),
            key,
            meta: lease.meta,
            info: lease.info,
            close_on_drop: false,
            pool,
        }
    }

    /// Whether dropping this lease closes the connection instead of returning it. Set it
    /// while the connection is in a state another request must not inherit (an HTTP/1
    /// request in flight); [`release`](Pooled::release) and [`discard`](Pooled::discard)
    /// are not affected.
    pub fn close_on_drop(&mut self, close: bool) {
        self.close_on_drop = close;
    }

    /// The key the connection belongs to.
    pub fn key(&self) -> &ConnectKey {
        &self.key
    }

    /// The connection's id.
    pub fn id(&self) -> ConnId {
        self.meta.id
    }

    /// How this request got the connection.
    pub fn info(&self) -> &LeaseInfo {
        &self.info
    }

    /// Requests the connection has carried, this one included.
    pub(crate) fn served(&self) -> u64 {
        self.meta.requests
    }

    /// Gives the connection back to the pool and says where it went.
    pub fn release(mut self) -> Returned {
        self.give_back(None)
    }

    /// Closes the connection instead of returning it (it cannot carry another request), and
    /// frees its slot for the next request waiting to dial.
    pub fn discard(mut self) {
        self.give_back(Some(CloseReason::NotReusable));
    }

    /// Closes the connection for `reason`. A shared (HTTP/2) connection takes no new requests
    /// from now on and closes when its last lease comes back; the requests on it go on.
    pub fn retire(mut self, reason: CloseReason) -> Returned {
        self.give_back(Some(reason))
    }

    fn give_back(&mut self, close: Option<CloseReason>) -> Returned {
        let Some(conn) = self.conn.take() else {
            return Returned::Closed(CloseReason::NotReusable);
        };
        let lease = Lease {
            conn,
            meta: self.meta,
            info: self.info,
        };
        self.pool.put(&self.key, lease, close)
    }
}

impl<T: Poolable> Deref for Pooled<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // Invariant: `conn` is `Some` until `give_back`, which only runs from `release`,
        // `discard` (both consume `self`) and `drop`.
        match &self.conn {
            Some(conn) => conn,
            None => unreachable!("Pooled used after it was returned"),
        }
    }
}

impl<T: Poolable> DerefMut for Pooled<T> {
    fn deref_mut(&mut self) -> &mut T {
        match &mut self.conn {
            Some(conn) => conn,
            None => unreachable!("Pooled used after it was returned"),
        }
    }
}

impl<T: Poolable> Drop for Pooled<T> {
    fn drop(&mut self) {
        let close = self.close_on_drop.then_some(CloseReason::NotReusable);
        self.give_back(close);
    }
}

impl<T: Poolable> fmt::Debug for Pooled<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pooled")
            .field("key", &self.key)
            .field("info", &self.info)
            .finish()
    }
}
