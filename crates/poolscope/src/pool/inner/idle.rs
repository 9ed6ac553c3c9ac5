//! Returning, idling and closing connections: Go's `tryPutIdleConn`, the idle caps, the
//! reaper's sweep and closing the pool.

use std::time::Duration;

use tokio::time::Instant;

use super::{Guarded, Host, Idle, Locked, State};
use crate::pool::conn::{ConnMeta, Lease, LeaseInfo, Returned};
use crate::pool::{ConnId, ConnectKey, Poolable};
use crate::stats::{
    CloseReason, ConnClosed, ConnReused, Event, IdleConnIn, IdleConnOut, IdleOutReason, Limit,
    WaitOutcome,
};

/// What the reaper does after a pass.
pub(in crate::pool) enum ReaperNext {
    /// Pass again at this instant, or earlier if woken (`Shared::reaper_wake`).
    Sleep(Instant),
    /// The pool is empty or closed.
    Exit,
}

impl<T: Poolable> Locked<'_, T> {
    // ----- returns --------------------------------------------------------------------

    /// Rule `[returns]`: Go's `tryPutIdleConn`: a returned connection goes to the oldest waiter,
    /// else into the
    /// idle list (within `max_idle_per_host` and `max_idle`), else it is closed.
    pub(in crate::pool) fn put(
        &mut self,
        key: &ConnectKey,
        lease: Lease<T>,
        close: Option<CloseReason>,
    ) -> Returned {
        if lease.info.shared {
            return self.put_shared(key, lease, close);
        }
        let now = self.now();
        let Lease { conn, meta, .. } = lease;
        let reason = if self.st.closed {
            Some(CloseReason::PoolClosed)
        } else if close.is_some() {
            close
        } else if let Some(reason) = self.cfg.verdict(meta.created, None, now, || conn.open()) {
            Some(reason)
        } else if self.cfg.reuse_off() {
            // Rule 11: not even a waiting request gets it.
            self.limit_hit(Limit::MaxIdleConnsPerHost);
            Some(CloseReason::MaxIdleConnsPerHost)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.close(key, conn, meta, reason);
            return Returned::Closed(reason);
        }
        if let Some(w) = self.pop_idle_waiter(key) {
            if meta.requests > 0 {
                self.fx.push(|| {
                    Event::ConnReused(ConnReused {
                        key: key.clone(),
                        conn_id: meta.id,
                        at: now.into_std(),
                    })
                });
            }
            let reused = meta.requests > 0;
            let meta = ConnMeta {
                requests: meta.requests + 1,
                ..meta
            };
            if let Some(host) = self.st.hosts.get_mut(key) {
                host.leased(meta.id, meta.requests);
            }
            let info = LeaseInfo {
                conn_id: meta.id,
                reused,
                was_idle: false,
                idle_time: Duration::ZERO,
                waited: Duration::ZERO,
                shared: false,
            };
            self.deliver(w, Ok(Lease { conn, meta, info }), WaitOutcome::Delivered);
            return Returned::HandedOver;
        }
        // Go's order: a waiting request gets it first; only going idle is refused.
        if self.closing_idle() {
            self.close(key, conn, meta, CloseReason::CloseIdle);
            return Returned::Closed(CloseReason::CloseIdle);
        }
        let cap = self.cfg.max_idle_per_host;
        let seq = self.st.next_seq;
        let host = self.host(key);
        if cap.is_some_and(|cap| host.idle.len() >= cap) {
            self.limit_hit(Limit::MaxIdleConnsPerHost);
            self.close(key, conn, meta, CloseReason::MaxIdleConnsPerHost);
            return Returned::Closed(CloseReason::MaxIdleConnsPerHost);
        }
        host.idle.push_back(Idle {
            conn,
            meta,
            seq,
            since: now,
        });
        let idle = host.idle_count();
        self.st.next_seq += 1;
        self.st.idle_total += 1;
        self.fx.push(|| {
            Event::IdleConnIn(IdleConnIn {
                key: key.clone(),
                conn_id: meta.id,
                at: now.into_std(),
                idle,
            })
        });
        if let Some(max) = self.cfg.max_idle {
            self.st.idle_order.push_back((seq, key.clone()));
            if self.st.idle_total > max {
                self.limit_hit(Limit::MaxIdleConns);
                self.evict_oldest_idle();
            }
            self.compact_idle_order();
        }
        self.want_reaper(meta.created);
        Returned::Idle
    }

    /// Returns a lease that was delivered but never used (its checkout was dropped first):
    /// it does not count as a request the connection served.
    pub(in crate::pool) fn put_unused(
        &mut self,
        key: &ConnectKey,
        mut lease: Lease<T>,
    ) -> Returned {
        lease.meta.requests = lease.meta.requests.saturating_sub(1);
        if lease.info.shared {
            let id = lease.meta.id;
            if let Some(s) = self
                .st
                .hosts
                .get_mut(key)
                .and_then(|h| h.shared.iter_mut().find(|s| s.meta.id == id))
            {
                s.meta.requests = s.meta.requests.saturating_sub(1);
            }
        }
        self.put(key, lease, None)
    }

    /// Rule `[retiring]`: A lease of a shared connection ends; the connection goes idle with its
    /// last lease.
    pub(super) fn put_shared(
        &mut self,
        key: &ConnectKey,
        lease: Lease<T>,
        close: Option<CloseReason>,
    ) -> Returned {
        self.fx.drops.push(lease.conn);
        let closed = self.st.closed;
        let closing_idle = self.st.closing_idle;
        let Some(host) = self.st.hosts.get_mut(key) else {
            return Returned::Closed(CloseReason::PoolClosed);
        };
        let Some(i) = host.shared.iter().position(|s| s.meta.id == lease.meta.id) else {
            return Returned::Closed(CloseReason::PoolClosed);
        };
        let s = &mut host.shared[i];
        s.leases -= 1;
        if s.dead.is_none() {
            if let Some(reason) = close {
                s.dead = Some(reason);
            } else if !s.conn.open() {
                s.dead = Some(CloseReason::Broken);
            }
        }
        let conn_id = s.meta.id;
        // Other streams are still open on it and nobody waits for one: nothing more to do
        // (the common return on a busy HTTP/2 connection: no clock, no second lookup).
        if s.leases > 0 && host.idle_waiting == 0 {
            return Returned::Shared;
        }
        let now = self.now();
        // A stream came free: the oldest waiting request takes it.
        self.lend_shared(key, conn_id);
        let Some(host) = self.st.hosts.get_mut(key) else {
            return Returned::Closed(CloseReason::PoolClosed);
        };
        let Some(i) = host.shared.iter().position(|s| s.meta.id == conn_id) else {
            return Returned::Closed(CloseReason::PoolClosed);
        };
        let s = &mut host.shared[i];
        if s.leases > 0 {
            return Returned::Shared;
        }
        let reason = if closed {
            Some(CloseReason::PoolClosed)
        } else if let Some(reason) = s.dead {
            Some(reason)
        } else if let Some(reason) = self.cfg.verdict(s.meta.created, None, now, || true) {
            // (`open` was asked above: a closed one is `dead`.)
            Some(reason)
        } else if closing_idle {
            Some(CloseReason::CloseIdle)
        } else if self.cfg.reuse_off() {
            Some(CloseReason::MaxIdleConnsPerHost)
        } else {
            None
        };
        if let Some(reason) = reason {
            let s = host.shared.swap_remove(i);
            if reason == CloseReason::MaxIdleConnsPerHost {
                self.limit_hit(Limit::MaxIdleConnsPerHost);
            }
            self.close(key, s.conn, s.meta, reason);
            return Returned::Closed(reason);
        }
        s.idle_since = now;
        let created = s.meta.created;
        let idle = host.idle.len() + host.shared_idle();
        self.fx.push(|| {
            Event::IdleConnIn(IdleConnIn {
                key: key.clone(),
                conn_id,
                at: now.into_std(),
                idle,
            })
        });
        self.want_reaper(created);
        Returned::Shared
    }

    /// Closes the least recently used idle connection of any key (`max_idle`).
    pub(super) fn evict_oldest_idle(&mut self) {
        let now = self.now();
        while let Some((seq, key)) = self.st.idle_order.pop_front() {
            let Some(host) = self.st.hosts.get_mut(&key) else {
                continue;
            };
            // The oldest idle connection still present is at the front of its key's list.
            if host.idle.front().is_none_or(|i| i.seq != seq) {
                continue;
            }
            let Some(idle) = host.idle.pop_front() else {
                continue;
            };
            self.st.idle_total -= 1;
            self.idle_out(
                &key,
                idle.meta.id,
                now - idle.since,
                IdleOutReason::EvictedMaxIdle,
            );
            self.close(&key, idle.conn, idle.meta, CloseReason::MaxIdleConns);
            return;
        }
    }

    /// Keeps `idle_order` within a constant factor of the idle connections it describes.
    pub(super) fn compact_idle_order(&mut self) {
        let State {
            idle_order,
            hosts,
            idle_total,
            ..
        } = &mut *self.st;
        if idle_order.len() <= 2 * *idle_total + 16 {
            return;
        }
        idle_order.retain(|(seq, key)| hosts.get(key).is_some_and(|h| h.idle.contains_seq(*seq)));
    }

    // ----- closing --------------------------------------------------------------------

    /// A connection leaves the pool for good: `ConnClosed`, its slot released, and the
    /// connection dropped after the lock.
    pub(super) fn close(&mut self, key: &ConnectKey, conn: T, meta: ConnMeta, reason: CloseReason) {
        let now = self.now();
        self.fx.drops.push(conn);
        if let Some(host) = self.st.hosts.get_mut(key) {
            if let Some(describe) = host.conns.remove(&meta.id).and_then(|r| r.describe) {
                // The describer may be the user's: dropped after the lock.
                self.fx.drop_describer_later(describe);
            }
        }
        self.fx.push(|| {
            Event::ConnClosed(ConnClosed {
                key: key.clone(),
                conn_id: meta.id,
                at: now.into_std(),
                reason,
                lifetime: now - meta.created,
                requests: meta.requests,
            })
        });
        self.release_slot(key);
    }

    pub(super) fn idle_out(
        &mut self,
        key: &ConnectKey,
        conn_id: ConnId,
        idle_time: Duration,
        reason: IdleOutReason,
    ) {
        let now = self.now();
        let st = &self.st;
        self.fx.push(|| {
            Event::IdleConnOut(IdleConnOut {
                key: key.clone(),
                conn_id,
                at: now.into_std(),
                idle: st.hosts.get(key).map_or(0, |h| h.idle_count()),
                idle_time,
                reason,
            })
        });
    }

    /// Drops `key`'s idle connections that are no longer open.
    ///
    /// Called once per connection whose task ended. With many idle connections the check
    /// runs once the calls reach half their number (`Host::closed_hint`): O(1) amortized per
    /// call when a server closes them all at once; until then a dead one found at checkout
    /// is dropped there, and a waiting request never depends on it (a key with waiters has
    /// no idle connection).
    pub(in crate::pool) fn evict_closed(&mut self, key: &ConnectKey) {
        if !self
            .st
            .hosts
            .get_mut(key)
            .is_some_and(|h| h.due_for_closed_check())
        {
            return;
        }
        self.sweep(Some(key), |_, _, _, open| {
            (!open).then_some((IdleOutReason::Broken, CloseReason::Broken))
        });
    }

    /// Closes every idle connection (HTTP/1 idle list, and shared connections nobody uses).
    pub(in crate::pool) fn close_idle(&mut self, out: IdleOutReason, reason: CloseReason) {
        self.sweep(None, |_, _, _, _| Some((out, reason)));
    }

    /// Closes the idle connections (of `only`, or of every key) that
    /// `verdict(meta, idle_since, now, open)` condemns. Visits each idle connection once and
    /// moves none that stays (no list is rebuilt, no key cloned unless something closes).
    pub(super) fn sweep(
        &mut self,
        only: Option<&ConnectKey>,
        verdict: impl Fn(&ConnMeta, Instant, Instant, bool) -> Option<(IdleOutReason, CloseReason)>,
    ) -> usize {
        let now = self.now();
        let mut doomed = Vec::new();
        let State {
            hosts, idle_total, ..
        } = &mut *self.st;
        let mut visit = |key: &ConnectKey, host: &mut Host<T>| {
            let before = doomed.len();
            host.idle.retain(
                |idle| match verdict(&idle.meta, idle.since, now, idle.conn.open()) {
                    Some(r) => Err(r),
                    None => Ok(()),
                },
                |idle, r| doomed.push((key.clone(), idle.conn, idle.meta, now - idle.since, r)),
            );
            *idle_total -= doomed.len() - before;
            let mut i = 0;
            while i < host.shared.len() {
                let s = &host.shared[i];
                let v = (s.leases == 0)
                    .then(|| verdict(&s.meta, s.idle_since, now, s.conn.open()))
                    .flatten();
                match v {
                    Some(r) => {
                        let s = host.shared.swap_remove(i);
                        doomed.push((key.clone(), s.conn, s.meta, now - s.idle_since, r));
                    }
                    None => i += 1,
                }
            }
        };
        match only {
            Some(key) => {
                if let Some(host) = hosts.get_mut(key) {
                    visit(key, host);
                }
            }
            None => {
                for (key, host) in hosts.iter_mut() {
                    visit(key, host);
                }
            }
        }
        let closed = doomed.len();
        for (key, conn, meta, idle_time, (out, reason)) in doomed {
            self.idle_out(&key, meta.id, idle_time, out);
            self.close(&key, conn, meta, reason);
        }
        closed
    }

    /// Rule `[timeouts]`: The reaper's pass: closes expired idle connections and says what the
    /// reaper does next:
    /// sleep until the next one expires, park while connections are in use but none is idle,
    /// or exit when the pool has no connections or is closed.
    pub(in crate::pool) fn reap(&mut self) -> ReaperNext {
        let cfg = self.cfg.clone();
        // The reaper expires; it does not probe: a closed connection leaves through
        // `evict_closed` or at checkout.
        let closed = self.sweep(None, |meta, since, now, _| {
            cfg.verdict(
                meta.created,
                Some(now.saturating_duration_since(since)),
                now,
                || true,
            )
            .map(|reason| (super::idle_out_reason(reason), reason))
        });
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for host in self.st.hosts.values() {
            let idles = host.idle.iter().map(|i| (i.meta.created, i.since));
            let shared = host
                .shared
                .iter()
                .filter(|s| s.leases == 0)
                .map(|s| (s.meta.created, s.idle_since));
            for (created, since) in idles.chain(shared) {
                if let Some(t) = cfg.idle_timeout {
                    consider(since + t);
                }
                if let Some(t) = cfg.max_lifetime {
                    consider(created + t);
                }
            }
        }
        // Nothing idle but connections in use: none of them can expire while idle before a
        // full timeout from now, unless one comes back close to its max lifetime, and then
        // `want_reaper` moves this pass forward.
        let shortest = match (cfg.idle_timeout, cfg.max_lifetime) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let now = self.now();
        // After a pass that closed something, the next is at least 1/16 of the shortest
        // timeout later: a pass visits every key, so connections expiring at spread-out
        // instants must not cost a pass each (that was O(keys) per connection). Such a
        // connection stays idle up to 1/16 past its timeout (5.6 s of 90 s); a checkout never
        // takes one past it (rule 2).
        let next = next.map(|at| match shortest {
            Some(t) if closed > 0 => at.max(now + t / 16),
            _ => at,
        });
        let next = next.or_else(|| {
            let busy = !self.st.closed && self.st.hosts.values().any(|h| h.total > 0);
            shortest.filter(|_| busy).map(|t| now + t)
        });
        self.st.reaper_due = next;
        match next {
            Some(at) => ReaperNext::Sleep(at),
            None => {
                self.st.reaper_running = false;
                ReaperNext::Exit
            }
        }
    }

    /// Has the reaper pass now, if one is running (it exits if the pool is empty or closed).
    pub(super) fn wake_reaper(&mut self) {
        if self.st.reaper_running && self.st.reaper_due.is_some() {
            self.st.reaper_due = None;
            self.fx.wake_reaper = true;
        }
    }

    pub(in crate::pool) fn reaper_stopped(&mut self) {
        self.st.reaper_running = false;
        self.st.reaper_due = None;
    }

    /// A connection created at `created` went idle now: make sure a reaper will pass by the
    /// time it expires (spawning one, or moving the running one's next pass forward).
    pub(super) fn want_reaper(&mut self, created: Instant) {
        let now = self.now();
        let expiry = [
            self.cfg.idle_timeout.map(|t| now + t),
            self.cfg.max_lifetime.map(|t| created + t),
        ]
        .into_iter()
        .flatten()
        .min();
        // No timeout configured, or closed: nothing to reap.
        let Some(expiry) = expiry.filter(|_| !self.st.closed) else {
            return;
        };
        if self.st.reaper_running {
            if self.st.reaper_due.is_some_and(|due| expiry < due) {
                self.wake_reaper();
            }
        } else if tokio::runtime::Handle::try_current().is_ok() {
            // Without a runtime no reaper can run; expired connections still go at checkout.
            self.st.reaper_running = true;
            self.fx.spawn_reaper = true;
        }
    }

    /// The last handle is gone: idle connections close and every waiter fails.
    pub(in crate::pool) fn close_pool(&mut self) {
        self.close_idle(IdleOutReason::PoolClosed, CloseReason::PoolClosed);
        self.st.closed = true;
        self.wake_reaper();
        self.fail_all_waiters();
    }
}
