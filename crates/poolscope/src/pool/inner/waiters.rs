//! Waiting requests: the waiter's states, the three per-key queues that reference it, and
//! every transition between states (Go's `wantConn`).
//!
//! A waiter is a slab entry owned by its `Checkout`; the queues hold `(index, id)` references
//! and skip dead ones lazily. Its [`Wait`] state says which queues it is in:
//!
//! | state | idle-wait queue | dial-wait queue | stranded queue | counted in `connecting` |
//! |---|---|---|---|---|
//! | `Stranded` | yes | no | yes | no |
//! | `Queued` | yes | yes | no | no |
//! | `Granted(id)` | yes | no | no | yes |
//! | `Dialing` | yes | no | no | yes (until its dial ends) |
//! | `Done(..)` | no | no | no | no |
//!
//! Transitions: a new waiter is `Stranded` (a shared dial it can wait for is in progress) or
//! goes through [`queue_for_dial`](Locked::queue_for_dial) to `Granted` or `Queued`;
//! `Queued` → `Granted` when a slot passes to it (rule `[slots]`); `Stranded` → `Granted` or
//! `Queued` when kicked; `Granted` → `Dialing` when its checkout picks the permit up;
//! `Dialing` → `Stranded` when its dial ends (then a delivery makes it `Done`, or, if the
//! new shared connection had no room for it, it is kicked to dial again); any live state →
//! `Done` by a delivery (rule `[one-shot]`): a grant not picked up is released then.

use std::collections::VecDeque;
use std::task::Waker;

use slab::Slab;
use tokio::time::Instant;

use super::{DialGrant, Found, Guarded, Host, Locked, State};
use crate::pool::conn::Lease;
use crate::pool::error::{Error, Kind};
use crate::pool::{ConnId, ConnectKey, Poolable};
use crate::stats::{Event, Limit, WaitIn, WaitOut, WaitOutcome};

/// A reference to a waiter: its slab index and its id (indexes are reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::pool) struct WaiterRef {
    pub(super) idx: usize,
    pub(super) id: u64,
}

/// One waiting request.
pub(super) struct Waiter<T> {
    pub(super) id: u64,
    pub(super) key: ConnectKey,
    /// When it started waiting (its `waited` times are measured from here).
    pub(super) since: Instant,
    /// It expects a shared (HTTP/2) connection: it waits for a shared dial in progress.
    pub(super) wants_shared: bool,
    pub(super) state: Wait<T>,
    waker: Option<Waker>,
}

/// Where a waiting request is; see the module's table.
pub(super) enum Wait<T> {
    /// Waits for a shared dial another request started, without dialing.
    Stranded,
    /// Waits for permission to dial (`max_conns_per_host` reached).
    Queued,
    /// May dial: its slot is counted; the checkout has not picked the permit up.
    Granted(ConnId),
    /// Its dial runs.
    Dialing,
    /// Delivered: the checkout takes it.
    Done(Result<Lease<T>, Error>),
}

/// Which of a key's two FIFO queues.
#[derive(Clone, Copy)]
enum Queue {
    /// Every waiting request (`IdleConnWait`).
    Idle,
    /// Requests waiting for permission to dial (`ConnsPerHostWait`).
    Dial,
}

impl<T> Waiter<T> {
    pub(super) fn waiting(&self) -> bool {
        !matches!(self.state, Wait::Done(_))
    }

    fn in_queue(&self, q: Queue) -> bool {
        match q {
            Queue::Idle => self.waiting(),
            Queue::Dial => matches!(self.state, Wait::Queued),
        }
    }

    fn stranded(&self) -> bool {
        matches!(self.state, Wait::Stranded)
    }
}

/// The queues a waiter is in, taken from it before its state changes.
struct Leaving {
    key: ConnectKey,
    since: Instant,
    in_idle: bool,
    in_dial: bool,
    stranded: bool,
}

impl<T> Waiter<T> {
    fn leaving(&self) -> Leaving {
        Leaving {
            key: self.key.clone(),
            since: self.since,
            in_idle: self.in_queue(Queue::Idle),
            in_dial: self.in_queue(Queue::Dial),
            stranded: self.stranded(),
        }
    }
}

/// Whether `r` still names a live waiter.
pub(super) fn live<T>(waiters: &Slab<Waiter<T>>, r: WaiterRef) -> bool {
    waiters.get(r.idx).is_some_and(|w| w.id == r.id)
}

/// Drops dead references at the front, and compacts the queue when most of it is dead.
fn clean_queue<T>(
    q: &mut VecDeque<WaiterRef>,
    live_count: usize,
    waiters: &Slab<Waiter<T>>,
    alive: impl Fn(&Waiter<T>) -> bool,
) {
    let alive = |r: &WaiterRef| waiters.get(r.idx).is_some_and(|w| w.id == r.id && alive(w));
    while q.front().is_some_and(|r| !alive(r)) {
        q.pop_front();
    }
    if q.len() > 2 * live_count + 16 {
        q.retain(alive);
    }
}

impl<T: Poolable> Locked<'_, T> {
    /// A new waiter for `key`, in the idle-wait queue (`IdleConnWaitIn`); the caller then
    /// strands it or queues it for a dial.
    pub(super) fn new_waiter(
        &mut self,
        key: &ConnectKey,
        now: Instant,
        wants_shared: bool,
    ) -> WaiterRef {
        let id = self.st.next_waiter;
        self.st.next_waiter += 1;
        let idx = self.st.waiters.insert(Waiter {
            id,
            key: key.clone(),
            since: now,
            wants_shared,
            // Transient: `strand` or `queue_for_dial` sets the real state next.
            state: Wait::Dialing,
            waker: None,
        });
        let wref = WaiterRef { idx, id };
        let State { hosts, waiters, .. } = &mut *self.st;
        let host = hosts
            .entry(key.clone())
            .or_insert_with(|| Box::new(Host::new()));
        clean_queue(
            &mut host.idle_waitq,
            host.idle_waiting,
            waiters,
            Waiter::waiting,
        );
        host.idle_waitq.push_back(wref);
        host.idle_waiting += 1;
        let waiting = host.idle_waiting;
        self.fx.push(|| {
            Event::IdleConnWaitIn(WaitIn {
                key: key.clone(),
                at: now.into_std(),
                waiters: waiting,
            })
        });
        wref
    }

    /// Makes `wref` wait for a shared dial in progress, without dialing.
    pub(super) fn strand(&mut self, key: &ConnectKey, wref: WaiterRef) {
        let State { hosts, waiters, .. } = &mut *self.st;
        let (Some(host), Some(w)) = (hosts.get_mut(key), waiters.get_mut(wref.idx)) else {
            return;
        };
        w.state = Wait::Stranded;
        clean_queue(
            &mut host.stranded,
            host.stranded_live,
            waiters,
            Waiter::stranded,
        );
        host.stranded.push_back(wref);
        host.stranded_live += 1;
    }

    /// Rule `[queues]` (Go's `queueForDial`): grants `wref` permission to dial if the
    /// per-host cap allows, else queues it for a slot (`ConnsPerHostWaitIn`, limit hit).
    pub(super) fn queue_for_dial(&mut self, key: &ConnectKey, wref: WaiterRef) {
        let cap = self.cfg.max_conns_per_host;
        let now = self.now();
        let State { hosts, waiters, .. } = &mut *self.st;
        let host = hosts
            .entry(key.clone())
            .or_insert_with(|| Box::new(Host::new()));
        if waiters.get(wref.idx).is_some_and(Waiter::stranded) {
            host.stranded_live -= 1;
        }
        if cap.is_none_or(|cap| host.total < cap) {
            host.total += 1;
            self.grant(key, wref);
            return;
        }
        clean_queue(&mut host.dial_waitq, host.dial_waiting, waiters, |w| {
            w.in_queue(Queue::Dial)
        });
        host.dial_waitq.push_back(wref);
        host.dial_waiting += 1;
        let waiting = host.dial_waiting;
        if let Some(w) = waiters.get_mut(wref.idx) {
            w.state = Wait::Queued;
        }
        self.fx.push(|| {
            Event::ConnsPerHostWaitIn(WaitIn {
                key: key.clone(),
                at: now.into_std(),
                waiters: waiting,
            })
        });
        self.limit_hit(Limit::MaxConnsPerHost);
    }

    /// Gives `wref` a dial slot already counted in `total`.
    fn grant(&mut self, key: &ConnectKey, wref: WaiterRef) {
        let conn_id = ConnId(self.st.next_conn + 1);
        self.st.next_conn += 1;
        let Some(w) = self.st.waiters.get_mut(wref.idx) else {
            return;
        };
        w.state = Wait::Granted(conn_id);
        let wants_shared = w.wants_shared;
        if let Some(waker) = w.waker.take() {
            self.fx.wakers.push(waker);
        }
        let host = self.host(key);
        host.connecting += 1;
        if wants_shared {
            host.shared_dialing += 1;
        }
    }

    /// What a waiting checkout finds: a result, a grant to pick up, or nothing yet (then its
    /// waker is stored; a replaced waker is dropped after the lock).
    pub(in crate::pool) fn poll_waiter(&mut self, wref: WaiterRef, waker: &Waker) -> Found<T> {
        let Some(w) = self
            .st
            .waiters
            .get_mut(wref.idx)
            .filter(|w| w.id == wref.id)
        else {
            return Found::Done(Err(Error::new(Kind::PolledAfterCompletion)));
        };
        match w.state {
            Wait::Done(_) => {
                let w = self.st.waiters.remove(wref.idx);
                let Wait::Done(result) = w.state else {
                    unreachable!("matched above")
                };
                self.fx.drop_later(w.waker);
                return Found::Done(result);
            }
            Wait::Granted(id) => {
                w.state = Wait::Dialing;
                let wants_shared = w.wants_shared;
                let key = w.key.clone();
                // What the key's live shared connections allow at once: a new connection to
                // the same server most likely gets the same limit.
                let hint = self.st.hosts.get(&key).and_then(|h| {
                    h.shared
                        .iter()
                        .filter(|s| s.dead.is_none())
                        .filter_map(|s| s.conn.limit())
                        .min()
                });
                return Found::Dial(DialGrant {
                    id,
                    shared_hint: wants_shared,
                    concurrency_hint: hint,
                });
            }
            Wait::Stranded | Wait::Queued | Wait::Dialing => {}
        }
        match &mut w.waker {
            Some(old) if old.will_wake(waker) => {}
            slot => {
                self.fx.drop_later(slot.replace(waker.clone()));
            }
        }
        Found::Pending
    }

    /// Rule `[one-shot]`: removes a waiter whose checkout is dropped or timed out. A lease
    /// already delivered to it goes back to the pool; a grant it never used frees its slot.
    /// Its leftovers (waker, a delivered error) are dropped after the lock.
    pub(in crate::pool) fn cancel_waiter(&mut self, wref: WaiterRef, outcome: WaitOutcome) {
        if !live(&self.st.waiters, wref) {
            return;
        }
        let mut w = self.st.waiters.remove(wref.idx);
        let key = w.key.clone();
        self.leave_queues(&w.leaving(), outcome);
        self.fx.drop_later(w.waker.take());
        match w.state {
            Wait::Granted(_) => self.drop_grant(&key, w.wants_shared),
            Wait::Done(Ok(lease)) => {
                // Delivered but never used: not a request served.
                self.put_unused(&key, lease);
            }
            // The error (the user's connector's, perhaps) is dropped after the lock.
            Wait::Done(Err(e)) => self.fx.drop_error_later(e),
            Wait::Stranded | Wait::Queued | Wait::Dialing => {}
        }
        self.forget_host_if_unused(&key);
    }

    /// Emits one `*_wait_out` for each queue a waiter was in, and updates the live counts.
    /// The caller changes its state (or has removed it).
    fn leave_queues(&mut self, l: &Leaving, outcome: WaitOutcome) {
        let now = self.now();
        let waited = now - l.since;
        let Some(host) = self.st.hosts.get_mut(&l.key) else {
            return;
        };
        let key = &l.key;
        if l.stranded {
            host.stranded_live -= 1;
        }
        for (in_queue, q) in [(l.in_idle, Queue::Idle), (l.in_dial, Queue::Dial)] {
            if !in_queue {
                continue;
            }
            let (count, event): (&mut usize, fn(WaitOut) -> Event) = match q {
                Queue::Idle => (&mut host.idle_waiting, Event::IdleConnWaitOut),
                Queue::Dial => (&mut host.dial_waiting, Event::ConnsPerHostWaitOut),
            };
            *count -= 1;
            let waiters = *count;
            self.fx.push(|| {
                event(WaitOut {
                    key: key.clone(),
                    at: now.into_std(),
                    waiters,
                    waited,
                    outcome,
                })
            });
        }
    }

    /// A grant that will never be used: the dial slot is released.
    fn drop_grant(&mut self, key: &ConnectKey, wants_shared: bool) {
        let host = self.host(key);
        host.connecting -= 1;
        if wants_shared {
            host.shared_dialing -= 1;
        }
        self.release_slot(key);
        self.kick_stranded(key, super::dial::Stranded::One);
    }

    /// Rule `[one-shot]`: stores `result` in a live waiter, takes it out of its queues and
    /// wakes it; `outcome` is its wait's end (delivered, dial failed, pool closed). A grant it
    /// had not picked up yet is released: a connection now beats a dial later.
    pub(super) fn deliver(
        &mut self,
        wref: WaiterRef,
        result: Result<Lease<T>, Error>,
        outcome: WaitOutcome,
    ) {
        let now = self.now();
        let Some(w) = self
            .st
            .waiters
            .get_mut(wref.idx)
            .filter(|w| w.id == wref.id && w.waiting())
        else {
            return;
        };
        let mut result = result;
        if let Ok(lease) = &mut result {
            lease.info.waited = now - w.since;
        }
        if let Some(waker) = w.waker.take() {
            self.fx.wakers.push(waker);
        }
        let leaving = w.leaving();
        let granted = matches!(w.state, Wait::Granted(_));
        let wants_shared = w.wants_shared;
        w.state = Wait::Done(result);
        self.leave_queues(&leaving, outcome);
        if granted {
            self.drop_grant(&leaving.key, wants_shared);
        }
        // A failed dial's slot was released while its owner still waited: the key may be
        // unused only now.
        self.forget_host_if_unused(&leaving.key);
    }

    /// The oldest live request in `key`'s queue `q`, taken off the queue.
    fn pop_waiter(&mut self, key: &ConnectKey, q: Queue) -> Option<WaiterRef> {
        let State { hosts, waiters, .. } = &mut *self.st;
        let host = hosts.get_mut(key)?;
        let (queue, live_count) = match q {
            Queue::Idle => (&mut host.idle_waitq, host.idle_waiting),
            Queue::Dial => (&mut host.dial_waitq, host.dial_waiting),
        };
        if live_count == 0 {
            // Only dead references can be queued; `clean_queue` drops them later.
            return None;
        }
        while let Some(r) = queue.pop_front() {
            if waiters
                .get(r.idx)
                .is_some_and(|w| w.id == r.id && w.in_queue(q))
            {
                return Some(r);
            }
        }
        None
    }

    /// The oldest live request waiting for a connection of `key`.
    pub(super) fn pop_idle_waiter(&mut self, key: &ConnectKey) -> Option<WaiterRef> {
        self.pop_waiter(key, Queue::Idle)
    }

    /// Rule `[slots]`: a connection of `key` is gone (or a dial failed): its slot goes to the
    /// oldest live request waiting for permission to dial (`ConnsPerHostWaitOut`, outcome
    /// `DialPermitted`; it stays in the idle-wait queue while it dials), else `total` comes
    /// down. Called exactly once per connection or failed dial.
    pub(super) fn release_slot(&mut self, key: &ConnectKey) {
        if !self.st.closed {
            if let Some(r) = self.pop_waiter(key, Queue::Dial) {
                let now = self.now();
                let State { hosts, waiters, .. } = &mut *self.st;
                if let (Some(host), Some(w)) = (hosts.get_mut(key), waiters.get(r.idx)) {
                    host.dial_waiting -= 1;
                    let (waiters, waited) = (host.dial_waiting, now - w.since);
                    self.fx.push(|| {
                        Event::ConnsPerHostWaitOut(WaitOut {
                            key: key.clone(),
                            at: now.into_std(),
                            waiters,
                            waited,
                            outcome: WaitOutcome::DialPermitted,
                        })
                    });
                    self.grant(key, r);
                    return;
                }
            }
        }
        let Some(host) = self.st.hosts.get_mut(key) else {
            debug_assert!(false, "release_slot for a key with no connections");
            return;
        };
        host.total -= 1;
        self.forget_host_if_unused(key);
    }

    /// The owner of a dial that ended is waiting again (for the delivery that follows, or
    /// to be kicked if the new connection had no room for it). Returns whether it still
    /// waits (it may have been served meanwhile, or gone).
    pub(super) fn dial_ended_for(&mut self, owner: WaiterRef) -> bool {
        let dialing = self
            .st
            .waiters
            .get(owner.idx)
            .is_some_and(|w| w.id == owner.id && matches!(w.state, Wait::Dialing));
        if dialing {
            if let Some(key) = self.st.waiters.get(owner.idx).map(|w| w.key.clone()) {
                self.strand(&key, owner);
            }
        }
        dialing
    }

    /// Up to `n` of `key`'s stranded requests, oldest first, taken off the stranded queue:
    /// the caller makes each dial, queue or fail. O(n) amortized, whatever the number of
    /// other waiters.
    pub(super) fn stranded(&mut self, key: &ConnectKey, n: usize) -> Vec<WaiterRef> {
        let State { hosts, waiters, .. } = &mut *self.st;
        let Some(host) = hosts.get_mut(key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while out.len() < n && host.stranded_live > out.len() {
            let Some(r) = host.stranded.pop_front() else {
                break;
            };
            if waiters
                .get(r.idx)
                .is_some_and(|w| w.id == r.id && w.stranded())
            {
                out.push(r);
            }
        }
        out
    }

    /// Rule `[closing]`: every request still waiting fails with "pool closed".
    pub(super) fn fail_all_waiters(&mut self) {
        let refs: Vec<WaiterRef> = self
            .st
            .waiters
            .iter()
            .filter(|(_, w)| w.waiting())
            .map(|(idx, w)| WaiterRef { idx, id: w.id })
            .collect();
        for r in refs {
            self.deliver(
                r,
                Err(Error::new(Kind::PoolClosed)),
                WaitOutcome::PoolClosed,
            );
        }
    }

    /// Debug builds: the counts each host keeps agree with its waiters' states.
    #[cfg(debug_assertions)]
    pub(super) fn check_waiters(&self) {
        let mut by_key: std::collections::HashMap<&ConnectKey, [usize; 3]> = Default::default();
        for (_, w) in self.st.waiters.iter() {
            let c = by_key.entry(&w.key).or_default();
            if w.waiting() {
                c[0] += 1;
            }
            if w.in_queue(Queue::Dial) {
                c[1] += 1;
            }
            if w.stranded() {
                c[2] += 1;
            }
        }
        for (key, host) in &self.st.hosts {
            let c = by_key.get(key).copied().unwrap_or_default();
            debug_assert_eq!(host.idle_waiting, c[0], "idle-wait count of {key}");
            debug_assert_eq!(host.dial_waiting, c[1], "dial-wait count of {key}");
            debug_assert_eq!(host.stranded_live, c[2], "stranded count of {key}");
            debug_assert!(
                host.connecting <= host.total,
                "connecting within total of {key}"
            );
            debug_assert!(
                host.idle.len() + host.shared.len() + host.connecting <= host.total,
                "idle + shared + connecting within total of {key}"
            );
        }
    }
}
