//! Dials and shared (HTTP/2) connections: what happens when a dial ends, how a shared
//! connection serves every waiter of its key, and how requests that waited for a shared dial
//! get to dial themselves when it did not serve them.

use std::time::Duration;

use tokio::time::Instant;

use super::{idle_out_reason, ConnRecord, Guarded, Locked, SharedConn, WaiterRef};
use crate::pool::conn::{ConnMeta, Lease, LeaseInfo};
use crate::pool::error::Error;
use crate::pool::{ConnId, ConnectKey, Poolable};
use crate::stats::{CloseReason, ConnOpened, Event, IdleConnIn, IdleOutReason, Limit, WaitOutcome};

/// How many of the requests stranded by a shared dial get to dial ([`Locked::kick_stranded`]).
#[derive(Clone, Copy)]
pub(super) enum Stranded {
    /// One: another shared dial may follow and serve the rest.
    One,
    /// All: the key's connections turned out not to be shareable.
    All,
}

impl<T: Poolable> Locked<'_, T> {
    /// Rule `[stream-limits]`: Leases a shared connection of `key` that has room for another
    /// request, dropping
    /// closed, expired and retired ones that nobody uses.
    pub(super) fn take_shared(&mut self, key: &ConnectKey) -> Option<Lease<T>> {
        if self.cfg.reuse_off() {
            return None;
        }
        // Read first (once per locked operation; the idle path after this one reads the same
        // instant), so that the key's state is looked up once.
        let now = self.now();
        let cfg = self.cfg;
        let host = self.st.hosts.get_mut(key)?;
        if host.shared.is_empty() {
            return None;
        }
        let mut i = 0;
        let mut closed = Vec::new();
        let mut found = None;
        while i < host.shared.len() {
            let s = &mut host.shared[i];
            if s.dead.is_none() {
                let idle_for = (s.leases == 0).then(|| now.saturating_duration_since(s.idle_since));
                let conn = &s.conn;
                s.dead = cfg.verdict(s.meta.created, idle_for, now, || conn.open());
            }
            if let Some(reason) = s.dead {
                if s.leases == 0 {
                    closed.push((host.shared.swap_remove(i), reason));
                    continue;
                }
            } else if s.has_room() {
                if let Some(conn) = s.conn.handle() {
                    found = Some((i, conn));
                    break;
                }
            }
            i += 1;
        }
        for (s, reason) in closed {
            self.idle_out(key, s.meta.id, now - s.idle_since, idle_out_reason(reason));
            self.close(key, s.conn, s.meta, reason);
        }
        let (i, conn) = found?;
        Some(self.lease_shared(key, i, conn, true))
    }

    /// Counts a new lease of `key`'s shared connection `i`, whose handle is `conn`. With
    /// `from_idle`, a connection nobody uses leaves the idle set (else it never entered it:
    /// its last lease is coming back and passes straight on).
    fn lease_shared(&mut self, key: &ConnectKey, i: usize, conn: T, from_idle: bool) -> Lease<T> {
        let now = self.now();
        let s = match self.st.hosts.get_mut(key) {
            Some(host) => &mut host.shared[i],
            None => unreachable!("the caller found the connection"),
        };
        let was_idle = from_idle && s.leases == 0;
        let idle_time = if was_idle {
            now - s.idle_since
        } else {
            Duration::ZERO
        };
        s.leases += 1;
        s.meta.requests += 1;
        let meta = s.meta;
        if was_idle {
            self.idle_out(key, meta.id, idle_time, IdleOutReason::Reused);
        }
        Lease {
            conn,
            meta,
            info: LeaseInfo {
                conn_id: meta.id,
                // A request that arrives while another is on the connection shares it too.
                reused: meta.requests > 1,
                was_idle,
                idle_time,
                waited: Duration::ZERO,
                shared: true,
            },
        }
    }

    /// Rule `[stream-limits]`: A lease of shared connection `id` came back (or its limit rose):
    /// the requests waiting
    /// for `key` get leases while it has room.
    pub(super) fn lend_shared(&mut self, key: &ConnectKey, id: ConnId) {
        loop {
            let Some(host) = self.st.hosts.get(key) else {
                return;
            };
            if host.idle_waiting == 0 || self.st.closed || self.cfg.reuse_off() {
                return;
            }
            let Some(i) = host.shared.iter().position(|s| s.meta.id == id) else {
                return;
            };
            if !host.shared[i].has_room() {
                return;
            }
            let Some(r) = self.pop_idle_waiter(key) else {
                return;
            };
            let Some(host) = self.st.hosts.get_mut(key) else {
                return;
            };
            let Some(conn) = host.shared[i].conn.handle() else {
                host.idle_waitq.push_front(r);
                return;
            };
            let lease = self.lease_shared(key, i, conn, false);
            self.deliver(r, Ok(lease), WaitOutcome::Delivered);
        }
    }

    /// After a shared dial ended without serving everyone, requests that were waiting for it
    /// without dialing themselves get to dial: one if another shared dial may follow, all if
    /// the connection turned out not to be shareable.
    pub(super) fn kick_stranded(&mut self, key: &ConnectKey, how_many: Stranded) {
        if self.st.hosts.get(key).is_none_or(|h| h.stranded_live == 0)
            || !self.no_shared_source(key)
        {
            return;
        }
        let n = match how_many {
            Stranded::One => 1,
            Stranded::All => usize::MAX,
        };
        for r in self.stranded(key, n) {
            self.queue_for_dial(key, r);
        }
    }

    /// No shared dial is in progress for `key` (and the pool is open): nothing will serve
    /// the requests that wait without dialing unless they dial.
    fn no_shared_source(&self, key: &ConnectKey) -> bool {
        !self.st.closed
            && self
                .st
                .hosts
                .get(key)
                .is_some_and(|h| h.shared_dialing == 0)
    }

    // ----- dials ----------------------------------------------------------------------

    /// Rule `[late-dial]`: A dial granted to `owner` ended. A connection goes to its owner if it
    /// still waits, else
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
        let owner_live = self.dial_ended_for(owner);
        let conn = match result {
            Ok(conn) => conn,
            Err(err) => {
                self.release_slot(key);
                let others = if shared_hint && self.no_shared_source(key) {
                    self.stranded(key, usize::MAX)
                } else {
                    Vec::new()
                };
                if others.is_empty() {
                    if owner_live {
                        self.deliver(owner, Err(err), WaitOutcome::DialFailed);
                    }
                    self.kick_stranded(key, Stranded::One);
                } else {
                    // Everyone who waited for this HTTP/2 dial fails with its error at once,
                    // as Go's dial call does, instead of dialing one after another.
                    let err = err.shared();
                    if owner_live {
                        self.deliver(owner, Err(err.clone_shared()), WaitOutcome::DialFailed);
                    }
                    for r in others {
                        self.deliver(r, Err(err.clone_shared()), WaitOutcome::DialFailed);
                    }
                }
                return;
            }
        };
        let first_share = conn.handle();
        let describe = conn.describer();
        self.host(key).conns.insert(
            id,
            ConnRecord {
                created: now,
                // An HTTP/1 connection goes to a request first (if nobody takes it, `put` makes
                // it idle, where its own count is read).
                requests: u64::from(first_share.is_none()),
                describe,
            },
        );
        let meta = ConnMeta {
            id,
            created: now,
            requests: 0,
        };
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
                if shared_hint {
                    // ALPN chose HTTP/1.1: requests to this key stop waiting for dials.
                    self.host(key).h1_seen = true;
                }
                if owner_live {
                    self.deliver(owner, Ok(lease), WaitOutcome::Delivered);
                } else {
                    let mut lease = lease;
                    lease.meta.requests = 0;
                    self.put(key, lease, None);
                }
                self.kick_stranded(key, Stranded::All);
            }
        }
    }

    /// Rule `[http2]`: A new shared connection serves its owner and every request waiting for
    /// `key`.
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
            self.close(key, conn, meta, CloseReason::MaxIdleConnsPerHost);
            self.kick_stranded(key, Stranded::One);
            return;
        }
        let redundant = targets.is_empty()
            && self
                .st
                .hosts
                .get(key)
                .is_some_and(|h| h.shared.iter().any(|s| s.has_room() && s.conn.open()));
        if redundant {
            // Go's `addConnIfNeeded`: a raced dial whose connection nobody needs is closed,
            // not kept idle against the cap.
            self.fx.drops.push(first);
            self.close(key, conn, meta, CloseReason::Redundant);
            self.kick_stranded(key, Stranded::One);
            return;
        }
        let max = conn.limit();
        let mut meta = meta;
        let mut first = Some(first);
        let mut leases = 0;
        let mut targets = targets.into_iter();
        let mut declined = None;
        for r in targets.by_ref() {
            let room = max.is_none_or(|max| leases < max);
            let Some(handle) = room
                .then(|| first.take().or_else(|| conn.handle()))
                .flatten()
            else {
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
                WaitOutcome::Delivered,
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
            dead: None,
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
        self.kick_stranded(key, Stranded::One);
    }
}
