//! Dials and shared (HTTP/2) connections: what happens when a dial ends, how a shared
//! connection serves every waiter of its key, and how requests that waited for a shared dial
//! get to dial themselves when it did not serve them.

use std::time::Duration;

use tokio::time::Instant;

use super::{Locked, SharedConn, WaiterRef};
use crate::pool::conn::{ConnMeta, Lease, LeaseInfo};
use crate::pool::error::Error;
use crate::pool::{ConnId, ConnectKey, Poolable};
use crate::stats::{CloseReason, ConnOpened, Event, IdleConnIn, IdleOutReason, Limit};

impl<T: Poolable> Locked<'_, T> {
    /// Leases a shared connection of `key`, dropping closed ones that nobody uses.
    pub(super) fn take_shared(&mut self, key: &ConnectKey) -> Option<Lease<T>> {
        if self.cfg.reuse_off() {
            return None;
        }
        let host = self.st.hosts.get_mut(key)?;
        if host.shared.is_empty() {
            return None;
        }
        let now = self.now();
        let host = self.st.hosts.get_mut(key)?;
        let mut i = 0;
        let mut closed = Vec::new();
        let mut found = None;
        while i < host.shared.len() {
            let s = &mut host.shared[i];
            if s.dead || !s.conn.is_open() || self.cfg.lifetime_over(s.meta.created, now) {
                s.dead = true;
                if s.leases == 0 {
                    closed.push(host.shared.swap_remove(i));
                    continue;
                }
            } else if let Some(conn) = s.conn.share() {
                found = Some((i, conn));
                break;
            }
            i += 1;
        }
        for s in closed {
            let reason = if self.cfg.lifetime_over(s.meta.created, now) {
                (IdleOutReason::LifetimeExceeded, CloseReason::MaxLifetime)
            } else {
                (IdleOutReason::Broken, CloseReason::Broken)
            };
            self.idle_out(key, s.meta.id, now - s.idle_since, reason.0);
            self.close(key, s.conn, s.meta, reason.1);
        }
        let (i, conn) = found?;
        let host = self.st.hosts.get_mut(key)?;
        let s = &mut host.shared[i];
        let was_idle = s.leases == 0;
        let idle_time = if was_idle {
            now - s.idle_since
        } else {
            Duration::ZERO
        };
        let reused = s.meta.requests > 0;
        s.leases += 1;
        s.meta.requests += 1;
        let meta = s.meta;
        if was_idle {
            self.idle_out(key, meta.id, idle_time, IdleOutReason::Reused);
        }
        Some(Lease {
            conn,
            meta,
            info: LeaseInfo {
                conn_id: meta.id,
                reused,
                was_idle,
                idle_time,
                waited: Duration::ZERO,
                shared: true,
            },
        })
    }

    /// After a shared dial ended without serving everyone, requests that were waiting for it
    /// without dialing themselves get to dial: one if another shared dial may follow, all if
    /// the connection turned out not to be shareable.
    pub(super) fn kick_stranded(&mut self, key: &ConnectKey, all: bool) {
        let Some(host) = self.st.hosts.get(key) else {
            return;
        };
        if host.shared_dialing > 0 || self.st.closed {
            return;
        }
        let stranded: Vec<WaiterRef> = host
            .idle_waitq
            .iter()
            .copied()
            .filter(|r| {
                self.st.waiters.get(r.idx).is_some_and(|w| {
                    w.id == r.id && w.in_idle_queue && !w.dialing && !w.in_dial_queue
                })
            })
            .take(if all { usize::MAX } else { 1 })
            .collect();
        for r in stranded {
            self.queue_for_dial(key, r);
        }
    }

    // ----- dials ----------------------------------------------------------------------

    /// A dial granted to `owner` ended. A connection goes to its owner if it still waits, else
    /// to the oldest waiter, else idle; a failure goes to the owner and frees the slot.
    pub(in crate::pool) fn finish_dial(
        &mut self,
        key: &ConnectKey,
        id: ConnId,
        owner: WaiterRef,
        shared_hint: bool,
        started: Instant,
        result: Result<T, Error>,
    ) {
        let now = self.now();
        let host = self.host(key);
        host.connecting -= 1;
        if shared_hint {
            host.shared_dialing -= 1;
        }
        let owner_live = match self.st.waiters.get_mut(owner.idx) {
            Some(w) if w.id == owner.id => {
                w.dialing = false;
                w.result.is_none()
            }
            _ => false,
        };
        let conn = match result {
            Ok(conn) => conn,
            Err(err) => {
                self.release_slot(key);
                if owner_live {
                    self.deliver(owner, Err(err));
                }
                self.kick_stranded(key, false);
                return;
            }
        };
        let meta = ConnMeta {
            id,
            created: now,
            requests: 0,
        };
        let first_share = conn.share();
        let shared = first_share.is_some();
        self.fx.push(|| {
            Event::ConnOpened(ConnOpened {
                key: key.clone(),
                conn_id: id,
                at: now.into_std(),
                dial_time: now - started,
                shared,
            })
        });
        if self.st.closed {
            self.fx.drops.extend(first_share);
            self.close(key, conn, meta, CloseReason::PoolClosed);
            return;
        }
        match first_share {
            Some(first) => self.add_shared(key, conn, meta, owner, owner_live, first),
            None => {
                let lease = Lease {
                    conn,
                    meta: ConnMeta {
                        requests: 1,
                        ..meta
                    },
                    info: LeaseInfo {
                        conn_id: id,
                        reused: false,
                        was_idle: false,
                        idle_time: Duration::ZERO,
                        waited: Duration::ZERO,
                        shared: false,
                    },
                };
                if owner_live {
                    self.deliver(owner, Ok(lease));
                } else {
                    let mut lease = lease;
                    lease.meta.requests = 0;
                    self.put(key, lease, None);
                }
                self.kick_stranded(key, true);
            }
        }
    }

    /// A new shared connection serves its owner and every request waiting for `key`.
    pub(super) fn add_shared(
        &mut self,
        key: &ConnectKey,
        conn: T,
        meta: ConnMeta,
        owner: WaiterRef,
        owner_live: bool,
        first: T,
    ) {
        let now = self.now();
        let mut targets = Vec::new();
        if owner_live {
            targets.push(owner);
        }
        // Rule 11: with reuse off, the connection serves its owner only.
        let serve_waiters = !self.cfg.reuse_off();
        if serve_waiters {
            while let Some(r) = self.pop_idle_waiter(key) {
                if r != owner {
                    targets.push(r);
                }
            }
        }
        if targets.is_empty() && !serve_waiters {
            // Rule 11: nobody will ever be served by it; it does not go idle.
            self.limit_hit(Limit::MaxIdleConnsPerHost);
            self.fx.drops.push(first);
            self.close(key, conn, meta, CloseReason::MaxIdlePerHost);
            self.kick_stranded(key, false);
            return;
        }
        let mut meta = meta;
        let mut first = Some(first);
        let mut leases = 0;
        let mut targets = targets.into_iter();
        let mut declined = None;
        for r in targets.by_ref() {
            let Some(handle) = first.take().or_else(|| conn.share()) else {
                declined = Some(r);
                break;
            };
            leases += 1;
            let lease_meta = ConnMeta {
                requests: meta.requests + 1,
                ..meta
            };
            meta.requests += 1;
            self.deliver(
                r,
                Ok(Lease {
                    conn: handle,
                    meta: lease_meta,
                    info: LeaseInfo {
                        conn_id: meta.id,
                        reused: lease_meta.requests > 1,
                        was_idle: false,
                        idle_time: Duration::ZERO,
                        waited: Duration::ZERO,
                        shared: true,
                    },
                }),
            );
        }
        self.fx.drops.extend(first);
        let host = self.host(key);
        // The connection took no more streams: the requests it could not serve keep their
        // place at the front of the queue (and may dial, below).
        for r in declined.into_iter().chain(targets).rev() {
            host.idle_waitq.push_front(r);
        }
        host.shared.push(SharedConn {
            conn,
            meta,
            leases,
            idle_since: now,
            dead: false,
        });
        if leases == 0 {
            let idle = host.idle.len() + host.shared_idle();
            self.fx.push(|| {
                Event::IdleConnIn(IdleConnIn {
                    key: key.clone(),
                    conn_id: meta.id,
                    at: now.into_std(),
                    idle,
                })
            });
            self.want_reaper(meta.created);
        }
        self.kick_stranded(key, false);
    }
}
