//! The pool's events, as the [`Stats`](super::Stats) hooks receive them.

use std::time::{Duration, Instant};

use crate::key::{ConnId, ConnectKey};

/// A request entered a wait queue of its key (idle-wait or conns-per-host).
///
/// Passed to [`StatsBuilder::on_idle_conn_wait_in`](super::StatsBuilder::on_idle_conn_wait_in) and
/// [`StatsBuilder::on_conns_per_host_wait_in`](super::StatsBuilder::on_conns_per_host_wait_in).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WaitIn {
    /// The queue's key.
    pub key: ConnectKey,
    /// When the request entered the queue.
    pub at: Instant,
    /// Live waiters in this queue after the event, this one included.
    pub waiters: usize,
}

/// A request left a wait queue of its key.
///
/// Passed to [`StatsBuilder::on_idle_conn_wait_out`](super::StatsBuilder::on_idle_conn_wait_out) and
/// [`StatsBuilder::on_conns_per_host_wait_out`](super::StatsBuilder::on_conns_per_host_wait_out).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WaitOut {
    /// The queue's key.
    pub key: ConnectKey,
    /// When the request left the queue.
    pub at: Instant,
    /// Live waiters left in this queue after the event.
    pub waiters: usize,
    /// How long the request was in this queue.
    pub waited: Duration,
    /// Why it left.
    pub outcome: WaitOutcome,
}

/// The idle-wait queue event of [`StatsBuilder::on_idle_conn_wait_in`](super::StatsBuilder::on_idle_conn_wait_in).
pub type IdleConnWaitIn = WaitIn;
/// The idle-wait queue event of [`StatsBuilder::on_idle_conn_wait_out`](super::StatsBuilder::on_idle_conn_wait_out).
pub type IdleConnWaitOut = WaitOut;
/// The dial-permission queue event of [`StatsBuilder::on_conns_per_host_wait_in`](super::StatsBuilder::on_conns_per_host_wait_in).
pub type ConnsPerHostWaitIn = WaitIn;
/// The dial-permission queue event of [`StatsBuilder::on_conns_per_host_wait_out`](super::StatsBuilder::on_conns_per_host_wait_out).
pub type ConnsPerHostWaitOut = WaitOut;

/// Why a request left a wait queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WaitOutcome {
    /// The request was given a connection (from either queue's side: a returned connection,
    /// a finished dial, or a shared HTTP/2 connection).
    Delivered,
    /// Conns-per-host queue only: the request was given permission to dial. It stays in the
    /// idle-wait queue while it dials; whichever delivers first wins.
    DialPermitted,
    /// The dial this request started failed; the request fails with that error.
    DialFailed,
    /// The request's future was dropped.
    Canceled,
    /// The pool-wait timeout elapsed.
    TimedOut,
    /// The pool was closed (every handle dropped) while the request waited.
    PoolClosed,
}

impl WaitOutcome {
    /// A short, stable name (`delivered`, `dial_permitted`, ...), suitable as a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            WaitOutcome::Delivered => "delivered",
            WaitOutcome::DialPermitted => "dial_permitted",
            WaitOutcome::DialFailed => "dial_failed",
            WaitOutcome::Canceled => "canceled",
            WaitOutcome::TimedOut => "timed_out",
            WaitOutcome::PoolClosed => "pool_closed",
        }
    }
}

/// A connection entered its key's idle list. Passed to [`StatsBuilder::on_idle_conn_in`](super::StatsBuilder::on_idle_conn_in).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IdleConnIn {
    /// The connection's key.
    pub key: ConnectKey,
    /// The connection.
    pub conn_id: ConnId,
    /// When it became idle.
    pub at: Instant,
    /// Idle connections of this key after the event.
    pub idle: usize,
}

/// A connection left its key's idle list. Passed to [`StatsBuilder::on_idle_conn_out`](super::StatsBuilder::on_idle_conn_out).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IdleConnOut {
    /// The connection's key.
    pub key: ConnectKey,
    /// The connection.
    pub conn_id: ConnId,
    /// When it left.
    pub at: Instant,
    /// Idle connections of this key after the event.
    pub idle: usize,
    /// How long it was idle.
    pub idle_time: Duration,
    /// Why it left.
    pub reason: IdleOutReason,
}

/// Why a connection left the idle list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdleOutReason {
    /// Taken by a request.
    Reused,
    /// Idle for longer than the idle timeout.
    Expired,
    /// Older than the maximum lifetime.
    LifetimeExceeded,
    /// Evicted as the least recently used idle connection because `max_idle` was reached.
    EvictedMaxIdle,
    /// Found closed by the peer (or broken) when checked.
    Broken,
    /// Closed by `close_idle_connections()`.
    CloseIdle,
    /// The pool was closed.
    PoolClosed,
}

impl IdleOutReason {
    /// A short, stable name, suitable as a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            IdleOutReason::Reused => "reused",
            IdleOutReason::Expired => "expired",
            IdleOutReason::LifetimeExceeded => "lifetime_exceeded",
            IdleOutReason::EvictedMaxIdle => "evicted_max_idle",
            IdleOutReason::Broken => "broken",
            IdleOutReason::CloseIdle => "close_idle",
            IdleOutReason::PoolClosed => "pool_closed",
        }
    }
}

/// A returned connection was handed straight to a waiting request, skipping the idle list.
/// Passed to [`StatsBuilder::on_conn_reused`](super::StatsBuilder::on_conn_reused).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnReused {
    /// The connection's key.
    pub key: ConnectKey,
    /// The connection.
    pub conn_id: ConnId,
    /// When it was handed over.
    pub at: Instant,
}

/// A dial succeeded and its connection joined the pool. Passed to
/// [`StatsBuilder::on_conn_opened`](super::StatsBuilder::on_conn_opened).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnOpened {
    /// The connection's key.
    pub key: ConnectKey,
    /// The connection.
    pub conn_id: ConnId,
    /// When the dial finished.
    pub at: Instant,
    /// How long the dial took.
    pub dial_time: Duration,
    /// Whether the connection is multiplexed (HTTP/2) and shared by concurrent requests.
    pub shared: bool,
}

/// A connection left the pool for good. Passed to [`StatsBuilder::on_conn_closed`](super::StatsBuilder::on_conn_closed).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnClosed {
    /// The connection's key.
    pub key: ConnectKey,
    /// The connection.
    pub conn_id: ConnId,
    /// When it was closed.
    pub at: Instant,
    /// Why.
    pub reason: CloseReason,
    /// Time since it opened.
    pub lifetime: Duration,
    /// Requests it served.
    pub requests: u64,
}

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// Idle for longer than the idle timeout.
    IdleTimeout,
    /// Older than the maximum lifetime.
    MaxLifetime,
    /// Evicted because `max_idle` idle connections already existed in the pool.
    MaxIdleConns,
    /// Not kept because `max_idle_per_host` idle connections already existed for its key.
    MaxIdleConnsPerHost,
    /// Found closed by the peer or broken.
    Broken,
    /// The user of the connection said it cannot be reused (an error, `Connection: close`,
    /// a body that was not read to its end).
    NotReusable,
    /// Closed by `close_idle_connections()`.
    CloseIdle,
    /// The server sent HTTP/2 GOAWAY: the connection took no new requests and closed once
    /// its streams ended.
    GoAway,
    /// A dial raced another for an HTTP/2 origin and its connection was not needed (Go's
    /// `addConnIfNeeded`): closed unused.
    Redundant,
    /// Poisoned by its user (`ConnectionInfo::poison`): closed instead of reused.
    Poisoned,
    /// The pool was closed.
    PoolClosed,
}

impl CloseReason {
    /// A short, stable name, suitable as a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::MaxLifetime => "max_lifetime",
            CloseReason::MaxIdleConns => "max_idle_conns",
            CloseReason::MaxIdleConnsPerHost => "max_idle_conns_per_host",
            CloseReason::Broken => "broken",
            CloseReason::NotReusable => "not_reusable",
            CloseReason::CloseIdle => "close_idle",
            CloseReason::GoAway => "goaway",
            CloseReason::Redundant => "redundant",
            CloseReason::Poisoned => "poisoned",
            CloseReason::PoolClosed => "pool_closed",
        }
    }
}
