//! `PoolSnapshot`: what the pool looked like at one moment, per key and per connection.
//!
//! The counts and the connection rows are taken under the pool lock in one pass, so they are
//! consistent with each other; what only the connection knows (addresses, the kernel's
//! `TCP_INFO`) is asked of it after the lock is released. Rendered by `Display` as tables.

mod display;
mod json;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Version;

use crate::key::{ConnId, ConnectKey};

/// The pool's configured limits, as carried by a [`PoolSnapshot`]. `None` is "no limit".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PoolLimits {
    /// Idle connections kept across all keys.
    pub max_idle: Option<usize>,
    /// Idle connections kept per key.
    pub max_idle_per_host: Option<usize>,
    /// Connections (dialing, active and idle) per key.
    pub max_conns_per_host: Option<usize>,
    /// How long a connection may stay idle.
    pub idle_timeout: Option<Duration>,
    /// How long a connection may live.
    pub max_lifetime: Option<Duration>,
}

/// One key's line of a [`PoolSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostSnapshot {
    /// The key.
    pub key: ConnectKey,
    /// Idle connections (HTTP/1 in the idle list, HTTP/2 with no stream in use).
    pub idle: usize,
    /// Connections in use by a request.
    pub active: usize,
    /// Dials in progress.
    pub connecting: usize,
    /// Connections counted against `max_conns_per_host`: idle + active + connecting.
    pub total: usize,
    /// Requests waiting for an idle connection (every waiting request is in this queue).
    pub idle_conn_waiters: usize,
    /// Requests waiting for permission to dial (`max_conns_per_host` reached).
    pub conns_per_host_waiters: usize,
    /// How long the oldest waiting request has waited.
    pub oldest_wait: Option<Duration>,
    /// One row per live connection (idle or active), oldest first; dials in progress are
    /// counted in `connecting` only.
    pub connections: Vec<ConnSnapshot>,
}

/// What a connection is doing when the snapshot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnState {
    /// No request uses it: in the idle list, or an HTTP/2 connection with no stream.
    Idle,
    /// At least one request uses it.
    Active,
}

impl ConnState {
    /// `idle` or `active`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Idle => "idle",
            ConnState::Active => "active",
        }
    }
}

/// One live connection in a [`HostSnapshot`].
///
/// The pool fills what it counts (state, age, requests, streams); the connection itself
/// ([`Poolable::describe`](crate::pool::Poolable::describe)) fills the rest: poolscope's
/// client gives its version, addresses, how its dial went and, with
/// `TelemetryBuilder::snapshot_tcp_info(true)`, the kernel's [`TcpInfo`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnSnapshot {
    /// The connection.
    pub id: ConnId,
    /// Idle or active.
    pub state: ConnState,
    /// The HTTP version it speaks.
    pub version: Version,
    /// How long ago it was established.
    pub age: Duration,
    /// How long it has been idle, when it is.
    pub idle_for: Option<Duration>,
    /// Requests it has carried, the ones on it now included.
    pub requests: u64,
    /// Requests on it now (0 or 1 for HTTP/1).
    pub streams: usize,
    /// For HTTP/2, the peer's `SETTINGS_MAX_CONCURRENT_STREAMS` as the pool applies it.
    pub max_streams: Option<usize>,
    /// Our address.
    pub local_addr: Option<SocketAddr>,
    /// The address it is connected to: the resolved address it dialled (or the proxy's).
    pub peer_addr: Option<SocketAddr>,
    /// How its dial chose `peer_addr`.
    pub dial: Option<DialSummary>,
    /// The kernel's view of its TCP socket, read when the snapshot was taken.
    pub tcp: Option<TcpInfo>,
}

impl ConnSnapshot {
    /// A row with what the pool knows; the connection describes the rest.
    /// A row as the pool knows it: `version` is its guess until the connection describes
    /// itself (a shared connection is HTTP/2).
    pub(crate) fn new(
        id: ConnId,
        state: ConnState,
        version: Version,
        age: Duration,
    ) -> ConnSnapshot {
        ConnSnapshot {
            id,
            state,
            version,
            age,
            idle_for: None,
            requests: 0,
            streams: 0,
            max_streams: None,
            local_addr: None,
            peer_addr: None,
            dial: None,
            tcp: None,
        }
    }
}

/// How a dial picked the address it connected to (happy eyeballs, RFC 8305).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DialSummary {
    /// Addresses the name resolved to.
    pub resolved: usize,
    /// Connection attempts started, the winning one included.
    pub attempts: usize,
    /// The winning address is not of the family the resolver listed first: the preferred
    /// family failed or was slower than the fallback delay.
    pub fallback: bool,
}

impl DialSummary {
    /// Creates a summary (for `Describe` implementations).
    pub fn new(resolved: usize, attempts: usize, fallback: bool) -> DialSummary {
        DialSummary {
            resolved,
            attempts,
            fallback,
        }
    }
}

/// The kernel's `TCP_INFO` for a connection's socket (Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpInfo {
    /// The TCP state.
    pub state: TcpState,
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Round-trip time variance.
    pub rtt_var: Duration,
    /// The smallest round-trip time seen (kernel 4.6+).
    pub min_rtt: Option<Duration>,
    /// Segments retransmitted over the connection's life.
    pub retransmits: u32,
    /// Segments the kernel considers lost now.
    pub lost: u32,
    /// Segments sent and not yet acknowledged.
    pub unacked: u32,
    /// Congestion window, in segments.
    pub cwnd: u32,
    /// Bytes the peer acknowledged (kernel 4.1+).
    pub bytes_acked: Option<u64>,
    /// Bytes received (kernel 4.1+).
    pub bytes_received: Option<u64>,
    /// The latest delivery rate estimate, bytes per second (kernel 4.9+).
    pub delivery_rate: Option<u64>,
}

/// A TCP connection's state, as the kernel names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    /// The peer closed its side; we have not yet.
    CloseWait,
    LastAck,
    Listen,
    Closing,
    /// A state this version does not know, by its number.
    Other(u8),
}

impl TcpState {
    /// The state the kernel numbers `v` (`TCP_ESTABLISHED` = 1 …).
    pub(crate) fn from_kernel(v: u8) -> TcpState {
        match v {
            1 => TcpState::Established,
            2 => TcpState::SynSent,
            3 => TcpState::SynRecv,
            4 => TcpState::FinWait1,
            5 => TcpState::FinWait2,
            6 => TcpState::TimeWait,
            7 => TcpState::Close,
            8 => TcpState::CloseWait,
            9 => TcpState::LastAck,
            10 => TcpState::Listen,
            11 => TcpState::Closing,
            v => TcpState::Other(v),
        }
    }

    /// The kernel's name: `ESTABLISHED`, `CLOSE_WAIT`, …
    pub fn as_str(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
            TcpState::Other(_) => "UNKNOWN",
        }
    }
}

/// Describes one connection in a snapshot: see [`Poolable::describe`](crate::pool::Poolable::describe).
///
/// Called when a snapshot is taken (by `Pool::snapshot`, or at a limit hit for a hook that
/// wants one), once per connection, after the pool lock is released, on the thread that took
/// the snapshot. It may make a system call (poolscope's client reads `TCP_INFO` here) but
/// should not block. A panic is caught: the row keeps what the pool filled.
pub trait Describe: Send + Sync + 'static {
    /// Fills the connection's facts into `row` (its version, addresses, dial, `tcp`,
    /// `max_streams`). The pool's own counts in it (state, age, requests, streams) are kept
    /// whatever this writes.
    fn describe(&self, row: &mut ConnSnapshot);
}

/// The state of the whole pool at one moment: limits and one [`HostSnapshot`] per key.
///
/// Keys are sorted, and each key's connections by id. Taking a snapshot costs one pass over
/// the keys and their connections under the pool lock; the connections describe themselves
/// ([`Poolable::describe`](crate::pool::Poolable::describe)) after it is released.
///
/// # Examples
///
/// ```
/// use poolscope::pool::{Config, Pool, Poolable};
///
/// struct Conn;
/// impl Poolable for Conn {
///     fn is_open(&self) -> bool { true }
///     fn share(&self) -> Option<Self> { None }
/// }
///
/// let pool: Pool<Conn> = Pool::new(Config::default());
/// let snap = pool.snapshot();
/// assert!(snap.hosts.is_empty());
/// assert_eq!(snap.total_waiters(), 0);
/// println!("{snap}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolSnapshot {
    /// When the snapshot was taken.
    pub taken_at: Instant,
    /// The pool's limits.
    pub limits: PoolLimits,
    /// One entry per key with any connection or waiter, sorted by key.
    pub hosts: Vec<HostSnapshot>,
}

impl PoolSnapshot {
    /// Every connection row, with its key.
    pub fn connections(&self) -> impl Iterator<Item = (&ConnectKey, &ConnSnapshot)> {
        self.hosts
            .iter()
            .flat_map(|h| h.connections.iter().map(move |c| (&h.key, c)))
    }

    /// The entry for `key`, if the pool has anything for it.
    pub fn host(&self, key: &ConnectKey) -> Option<&HostSnapshot> {
        self.hosts.iter().find(|h| &h.key == key)
    }

    /// Idle connections across all keys.
    pub fn total_idle(&self) -> usize {
        self.hosts.iter().map(|h| h.idle).sum()
    }

    /// Active connections across all keys.
    pub fn total_active(&self) -> usize {
        self.hosts.iter().map(|h| h.active).sum()
    }

    /// Dials in progress across all keys.
    pub fn total_connecting(&self) -> usize {
        self.hosts.iter().map(|h| h.connecting).sum()
    }

    /// Waiting requests across all keys (each counted once).
    pub fn total_waiters(&self) -> usize {
        self.hosts.iter().map(|h| h.idle_conn_waiters).sum()
    }
}
