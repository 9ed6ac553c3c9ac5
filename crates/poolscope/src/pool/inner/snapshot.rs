//! Snapshots of the pool (taken under the lock, one pass) and limit-hit events.

use tokio::time::Instant;

use std::collections::HashSet;
use std::sync::Arc;

use super::{Guarded, Host, Locked};
use crate::pool::{ConnId, ConnectKey, Describe, Poolable};
use crate::stats::{ConnSnapshot, ConnState, Event, HostSnapshot, Limit, PoolLimits, PoolSnapshot};

/// The connections of a snapshot taken under the lock, to describe once it is released:
/// (host, row, describer).
#[derive(Default)]
pub(in crate::pool) struct Pending(Vec<(usize, usize, Arc<dyn Describe>)>);

impl Pending {
    /// Asks each connection to describe itself (addresses, TCP_INFO) into its row of `snap`:
    /// outside the pool lock, since that is the connection's own code and may make a system
    /// call. A describer that panics leaves its row as the pool filled it.
    pub(in crate::pool) fn describe(self, snap: &mut PoolSnapshot) {
        for (h, c, d) in self.0 {
            let Some(row) = snap.hosts.get_mut(h).and_then(|h| h.connections.get_mut(c)) else {
                continue;
            };
            let mut filled = row.clone();
            let described =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.describe(&mut filled)));
            if described.is_ok() {
                // What the pool counted stays the pool's.
                filled.id = row.id;
                filled.state = row.state;
                filled.age = row.age;
                filled.idle_for = row.idle_for;
                filled.requests = row.requests;
                filled.streams = row.streams;
                *row = filled;
            }
        }
    }
}

/// A snapshot taken under the lock; [`finish`](Unfinished::finish) it after the lock.
#[must_use = "a snapshot is finished after the lock"]
pub(in crate::pool) struct Unfinished(PoolSnapshot, Pending);

impl Unfinished {
    /// The snapshot, its connections described. Call it with the lock released.
    pub(in crate::pool) fn finish(self) -> PoolSnapshot {
        let Unfinished(mut snap, pending) = self;
        pending.describe(&mut snap);
        snap
    }
}

/// What describes each connection row (by its index in the key's rows).
type Describers = Vec<(usize, Arc<dyn Describe>)>;

/// One key's row and what describes its connections.
type HostRows = (HostSnapshot, Describers);

impl<T: Poolable> Locked<'_, T> {
    pub(super) fn limit_hit(&mut self, limit: Limit) {
        if self.fx.record {
            if self.stats.wants_snapshot(limit) {
                let Unfinished(snap, pending) = self.snapshot();
                // Described after the lock, before the hooks see it (`Effects`).
                self.fx.describe.push((self.fx.events.len(), pending));
                self.fx
                    .events
                    .push(Event::LimitHit(limit, Some(Box::new(snap))));
            } else {
                self.fx.events.push(Event::LimitHit(limit, None));
            }
        }
    }

    /// The pool as it is now, only the row of `key` (the limits are the pool's).
    pub(in crate::pool) fn snapshot_of(&self, key: &ConnectKey) -> Unfinished {
        let now = self.now();
        let hosts = self
            .st
            .hosts
            .get_key_value(key)
            .filter(|(_, h)| !h.is_unused())
            .map(|(key, h)| self.host_snapshot(key, h, now))
            .into_iter()
            .collect();
        self.snapshot_with(hosts, now)
    }

    /// One row per live connection of `h`, oldest first, with what describes each. O(its
    /// connections), under the lock: the connections' own code runs later (see
    /// `Unfinished::finish`).
    fn conn_rows(&self, h: &Host<T>, now: Instant) -> (Vec<ConnSnapshot>, Describers) {
        let mut rows = Vec::with_capacity(h.conns.len());
        for idle in h.idle.iter() {
            let mut row = ConnSnapshot::new(
                idle.meta.id,
                ConnState::Idle,
                http::Version::HTTP_11,
                now.saturating_duration_since(idle.meta.created),
            );
            row.idle_for = Some(now.saturating_duration_since(idle.since));
            row.requests = idle.meta.requests;
            rows.push(row);
        }
        for s in &h.shared {
            let state = if s.leases == 0 {
                ConnState::Idle
            } else {
                ConnState::Active
            };
            let mut row = ConnSnapshot::new(
                s.meta.id,
                state,
                http::Version::HTTP_2,
                now.saturating_duration_since(s.meta.created),
            );
            row.idle_for = (s.leases == 0).then(|| now.saturating_duration_since(s.idle_since));
            row.requests = s.meta.requests;
            row.streams = s.leases;
            row.max_streams = s.conn.limit();
            rows.push(row);
        }
        let listed: HashSet<ConnId> = rows.iter().map(|r| r.id).collect();
        for (&id, r) in &h.conns {
            if !listed.contains(&id) {
                // Neither idle nor shared: an HTTP/1 connection leased to a request.
                let mut row = ConnSnapshot::new(
                    id,
                    ConnState::Active,
                    http::Version::HTTP_11,
                    now.saturating_duration_since(r.created),
                );
                row.requests = r.requests;
                row.streams = 1;
                rows.push(row);
            }
        }
        rows.sort_by_key(|row| row.id);
        let describers = rows
            .iter()
            .enumerate()
            .filter_map(|(i, row)| {
                let d = h.conns.get(&row.id)?.describe.as_ref()?;
                Some((i, d.clone()))
            })
            .collect();
        (rows, describers)
    }

    /// One key's row.
    fn host_snapshot(&self, key: &ConnectKey, h: &Host<T>, now: Instant) -> HostRows {
        let idle = h.idle.len() + h.shared_idle();
        let oldest_wait = h
            .idle_waitq
            .iter()
            .filter_map(|r| {
                self.st
                    .waiters
                    .get(r.idx)
                    .filter(|w| w.id == r.id && w.waiting())
            })
            .map(|w| now - w.since)
            .next();
        let (connections, describers) = self.conn_rows(h, now);
        let row = HostSnapshot {
            key: key.clone(),
            idle,
            active: h.total - h.connecting - idle,
            connecting: h.connecting,
            total: h.total,
            idle_conn_waiters: h.idle_waiting,
            conns_per_host_waiters: h.dial_waiting,
            oldest_wait,
            connections,
        };
        (row, describers)
    }

    fn snapshot_with(&self, hosts: Vec<HostRows>, now: Instant) -> Unfinished {
        let mut pending = Pending::default();
        let hosts = hosts
            .into_iter()
            .enumerate()
            .map(|(i, (host, describers))| {
                pending
                    .0
                    .extend(describers.into_iter().map(|(c, d)| (i, c, d)));
                host
            })
            .collect();
        let snap = PoolSnapshot {
            taken_at: now.into_std(),
            limits: PoolLimits {
                max_idle: self.cfg.max_idle,
                max_idle_per_host: self.cfg.max_idle_per_host,
                max_conns_per_host: self.cfg.max_conns_per_host,
                idle_timeout: self.cfg.idle_timeout,
                max_lifetime: self.cfg.max_lifetime,
            },
            hosts,
        };
        Unfinished(snap, pending)
    }

    /// The pool as it is now, one line per key, sorted. The connections are described by
    /// the caller, after the lock (`Unfinished::finish`).
    pub(in crate::pool) fn snapshot(&self) -> Unfinished {
        let now = self.now();
        let mut hosts: Vec<HostRows> = self
            .st
            .hosts
            .iter()
            .filter(|(_, h)| !h.is_unused())
            .map(|(key, h)| self.host_snapshot(key, h, now))
            .collect();
        hosts.sort_by(|a, b| a.0.key.cmp(&b.0.key));
        self.snapshot_with(hosts, now)
    }
}
