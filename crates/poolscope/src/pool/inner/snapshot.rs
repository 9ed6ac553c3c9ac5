//! Snapshots of the pool (taken under the lock, one pass) and limit-hit events.

use tokio::time::Instant;

use super::{Host, Locked};
use crate::pool::{ConnectKey, Poolable};
use crate::stats::{Event, HostSnapshot, Limit, PoolLimits, PoolSnapshot};

impl<T: Poolable> Locked<'_, T> {
    pub(super) fn limit_hit(&mut self, limit: Limit) {
        if self.fx.record {
            let snap = self
                .stats
                .wants_snapshot(limit)
                .then(|| Box::new(self.snapshot()));
            self.fx.events.push(Event::LimitHit(limit, snap));
        }
    }

    /// The pool as it is now, only the row of `key` (the limits are the pool's).
    pub(in crate::pool) fn snapshot_of(&self, key: &ConnectKey) -> PoolSnapshot {
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

    /// One key's row.
    fn host_snapshot(&self, key: &ConnectKey, h: &Host<T>, now: Instant) -> HostSnapshot {
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
        HostSnapshot {
            key: key.clone(),
            idle,
            active: h.total - h.connecting - idle,
            connecting: h.connecting,
            total: h.total,
            idle_conn_waiters: h.idle_waiting,
            conns_per_host_waiters: h.dial_waiting,
            oldest_wait,
        }
    }

    fn snapshot_with(&self, hosts: Vec<HostSnapshot>, now: Instant) -> PoolSnapshot {
        PoolSnapshot {
            taken_at: now.into_std(),
            limits: PoolLimits {
                max_idle: self.cfg.max_idle,
                max_idle_per_host: self.cfg.max_idle_per_host,
                max_conns_per_host: self.cfg.max_conns_per_host,
                idle_timeout: self.cfg.idle_timeout,
                max_lifetime: self.cfg.max_lifetime,
            },
            hosts,
        }
    }

    /// The pool as it is now, one line per key, sorted.
    pub(in crate::pool) fn snapshot(&self) -> PoolSnapshot {
        let now = self.now();
        let mut hosts: Vec<HostSnapshot> = self
            .st
            .hosts
            .iter()
            .filter(|(_, h)| !h.is_unused())
            .map(|(key, h)| self.host_snapshot(key, h, now))
            .collect();
        hosts.sort_by(|a, b| a.key.cmp(&b.key));
        self.snapshot_with(hosts, now)
    }
}
