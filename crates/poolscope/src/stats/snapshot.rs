//! `PoolSnapshot`: what the pool looked like at one moment, per key.
//!
//! Taken under the pool lock in one pass over the keys (no connection is touched), so its
//! numbers are consistent with each other. Rendered by `Display` as a table.

use std::fmt;
use std::time::{Duration, Instant};

use crate::pool::ConnectKey;

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
}

/// The state of the whole pool at one moment: limits and one [`HostSnapshot`] per key.
///
/// Keys are sorted. Taking a snapshot costs one pass over the keys under the pool lock.
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
    /// The snapshot as JSON: limits and one object per key (`key`, `idle`, `active`,
    /// `connecting`, `total`, `idle_conn_waiters`, `conns_per_host_waiters`,
    /// `oldest_wait_seconds`).
    pub fn to_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Limits {
            max_idle: Option<usize>,
            max_idle_per_host: Option<usize>,
            max_conns_per_host: Option<usize>,
            idle_timeout_seconds: Option<f64>,
            max_lifetime_seconds: Option<f64>,
        }
        #[derive(serde::Serialize)]
        struct Host {
            key: String,
            idle: usize,
            active: usize,
            connecting: usize,
            total: usize,
            idle_conn_waiters: usize,
            conns_per_host_waiters: usize,
            oldest_wait_seconds: Option<f64>,
        }
        #[derive(serde::Serialize)]
        struct Snap {
            limits: Limits,
            hosts: Vec<Host>,
        }
        let l = &self.limits;
        let snap = Snap {
            limits: Limits {
                max_idle: l.max_idle,
                max_idle_per_host: l.max_idle_per_host,
                max_conns_per_host: l.max_conns_per_host,
                idle_timeout_seconds: l.idle_timeout.map(|d| d.as_secs_f64()),
                max_lifetime_seconds: l.max_lifetime.map(|d| d.as_secs_f64()),
            },
            hosts: self
                .hosts
                .iter()
                .map(|h| Host {
                    key: h.key.to_string(),
                    idle: h.idle,
                    active: h.active,
                    connecting: h.connecting,
                    total: h.total,
                    idle_conn_waiters: h.idle_conn_waiters,
                    conns_per_host_waiters: h.conns_per_host_waiters,
                    oldest_wait_seconds: h.oldest_wait.map(|d| d.as_secs_f64()),
                })
                .collect(),
        };
        serde_json::to_string(&snap).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
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

fn limit(v: Option<usize>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

/// One line of the table: the key left-aligned, counts right-aligned.
fn row(f: &mut fmt::Formatter<'_>, width: usize, c: [String; 8]) -> fmt::Result {
    writeln!(
        f,
        "  {:<width$}  {:>5} {:>6} {:>10} {:>5}  {:>10} {:>10}  {}",
        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
    )
}

impl fmt::Display for PoolSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.limits;
        writeln!(
            f,
            "pool: max_idle={} max_idle_per_host={} max_conns_per_host={}",
            limit(l.max_idle),
            limit(l.max_idle_per_host),
            limit(l.max_conns_per_host)
        )?;
        let width = self
            .hosts
            .iter()
            .map(|h| h.key.to_string().len())
            .max()
            .unwrap_or(0)
            .max("key".len());
        row(
            f,
            width,
            [
                "key",
                "idle",
                "active",
                "connecting",
                "total",
                "wait(idle)",
                "wait(dial)",
                "oldest wait",
            ]
            .map(str::to_owned),
        )?;
        for h in &self.hosts {
            let oldest = h
                .oldest_wait
                .map_or_else(|| "-".to_owned(), |d| format!("{d:?}"));
            row(
                f,
                width,
                [
                    h.key.to_string(),
                    h.idle.to_string(),
                    h.active.to_string(),
                    h.connecting.to_string(),
                    h.total.to_string(),
                    h.idle_conn_waiters.to_string(),
                    h.conns_per_host_waiters.to_string(),
                    oldest,
                ],
            )?;
        }
        write!(
            f,
            "  total: {} idle, {} active, {} connecting, {} waiting",
            self.total_idle(),
            self.total_active(),
            self.total_connecting(),
            self.total_waiters()
        )
    }
}
