//! The pool's state and every rule that changes it, all under one mutex.
//!
//! Each `Locked` method runs with the pool lock held (the guard lives in `Locked`). Hooks,
//! wakers and connection drops are collected in [`Effects`] and run by [`Locked::finish`]
//! after the guard is released. The only user code called under the lock is `Poolable`'s
//! `is_open`, `share` and `max_concurrent`, always through [`Guarded`], which catches a panic
//! so that the locked operation completes.
//!
//! # Panics in user code
//!
//! The rule: the pool's state is consistent before any user code runs, and a panic in user
//! code never skips the pool's own work. Concretely:
//! - `Poolable` calls under the lock are caught ([`Guarded`]): the call counts as "closed",
//!   "not shareable" or "no room", and the operation completes.
//! - [`Locked::finish`] releases the lock, then spawns/wakes the reaper, drops connections,
//!   runs hooks and wakes waiters, each piece of user code caught; the first panic is raised
//!   again at the end (not while the thread is already unwinding), so it reaches the task
//!   whose operation ran the hook.
//! - Whatever a panic unwinds through owns its part of the pool: a `Checkout` owns its
//!   waiter before any hook runs (its `Drop` cancels it), a lease taken from a waiter is held
//!   by a guard that gives it back, a dial permit ends as abandoned when dropped.
//! - A tokio timer that cannot be created or polled (no time driver, runtime shut down) is
//!   replaced by the deadline, checked when the checkout is polled.
//!
//! # Implementation details
//!
//! Per key ([`Host`]): an idle list (oldest first, taken from the back: most recently used
//! first), shared HTTP/2 connections, and two FIFO queues of waiter references. A waiter is an
//! entry in the `waiters` slab that the [`Checkout`](super::Checkout) future owns; queues hold
//! `(index, id)` references and skip dead ones lazily, compacting when they are mostly dead.
//! Delivering to a waiter stores the result in its slab entry and wakes it; a checkout that is
//! dropped with a result waiting puts the connection back, so nothing is lost in the race.
//!
//! `Host::total` counts dialing + active + idle connections of the key. It goes up when a dial
//! is granted and comes down exactly once per connection, in [`Locked::release_slot`], which
//! first offers the slot to the oldest live request waiting for permission to dial.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use slab::Slab;

pub(super) use idle::ReaperNext;
use idle_list::IdleList;

mod dial;
mod idle;
mod idle_list;
use tokio::time::Instant;

use super::conn::{ConnMeta, Lease, LeaseInfo, Returned};
use super::error::{BoxError, Error, Kind};
use super::key::BuildKeyHasher;
use super::{Config, ConnId, ConnectKey, Poolable};
use crate::stats::{
    CloseReason, Event, HostSnapshot, IdleOutReason, Limit, PoolLimits, PoolSnapshot, Stats,
    WaitIn, WaitOut, WaitOutcome,
};

/// The state shared by every handle of one pool.
pub(crate) struct Shared<T> {
    state: Mutex<State<T>>,
    pub(super) config: Config,
    pub(super) stats: Stats,
    /// Live `Pool` handles; the pool closes when it reaches zero.
    pub(super) handles: AtomicUsize,
    /// Closes the pool (`Locked::close_pool`), for `Pool`'s bound-free `Drop`.
    pub(super) close: fn(&Arc<Shared<T>>),
    /// Has the reaper pass before its due time (see `State::reaper_due`). Its own `Arc`, so
    /// the reaper can wait on it while holding only a weak reference to the pool.
    pub(super) reaper_wake: Arc<tokio::sync::Notify>,
    /// Creating a tokio timer failed here once (a runtime without its time driver): waiting
    /// checkouts check their deadline when polled instead.
    pub(super) no_timers: std::sync::atomic::AtomicBool,
}

pub(super) struct State<T> {
    /// Boxed, so the table itself stays small (a key and a pointer per entry) and its probe
    /// stays in cache with many keys; each lookup then touches one `Host` allocation
    /// (measured: 10,000 keys 171–225 ns inline, 163–179 ns boxed; docs/benchmarks.md).
    hosts: HashMap<ConnectKey, Box<Host<T>>, BuildKeyHasher>,
    /// Requests waiting in this pool. Owned by their `Checkout`: only it removes an entry.
    waiters: Slab<Waiter<T>>,
    /// HTTP/1 idle connections across all keys.
    idle_total: usize,
    /// Global idle order for `max_idle` (oldest first), only kept when `max_idle` is set.
    /// Entries whose connection already left the idle list are skipped lazily.
    idle_order: VecDeque<(u64, ConnectKey)>,
    next_seq: u64,
    next_conn: u64,
    next_waiter: u64,
    /// A reaper task is running (or about to be spawned).
    reaper_running: bool,
    /// When the running reaper passes next (`None`: it is about to, or none runs). While
    /// connections are in use and none is idle it sleeps a full timeout rather than exiting,
    /// so a busy pool does not spawn a reaper each time a connection goes idle.
    reaper_due: Option<Instant>,
    /// Set once, when the last handle is dropped; nothing is pooled after.
    closed: bool,
    /// `close_idle_connections` was called and no checkout started since: connections that
    /// come back are closed (Go's `closeIdle`).
    closing_idle: bool,
}

/// One key's connections and queues.
///
/// `repr(C)` keeps the fields an uncontended checkout and return touch (the idle list, the
/// counts, the shared list's length) together at the front of its allocation, so that with
/// many keys they cost as few cache misses as possible; the wait queues come last.
#[repr(C)]
struct Host<T> {
    /// HTTP/1 idle connections, oldest first (increasing `seq`).
    idle: IdleList<T>,
    /// Dialing + active + idle connections; bounded by `max_conns_per_host`.
    total: usize,
    /// Live entries of `idle_waitq` (it may hold dead references too).
    idle_waiting: usize,
    /// Live entries of `dial_waitq`.
    dial_waiting: usize,
    /// Multiplexed connections; they stay here while in use.
    shared: Vec<SharedConn<T>>,
    /// Dials granted and not finished.
    connecting: usize,
    /// Of `connecting`, dials expected to produce a shared connection: new requests that
    /// expect HTTP/2 wait for them instead of dialing.
    shared_dialing: usize,
    /// A dial expected to be shared produced an HTTP/1 connection (ALPN chose http/1.1):
    /// requests to this key no longer wait for each other's dials.
    h1_seen: bool,
    /// Requests that wait for a shared dial in progress without dialing themselves, oldest
    /// first (dead or no longer stranded references are skipped lazily), so that the ones to
    /// kick when that dial does not serve them are found without scanning every waiter.
    stranded: VecDeque<WaiterRef>,
    /// Live entries of `stranded`.
    stranded_live: usize,
    /// `evict_closed` calls since the key's idle connections were last checked: they are
    /// checked once these reach half their number, so that a server closing all of them at
    /// once costs O(1) amortized per connection rather than a scan each.
    closed_hint: usize,
    /// Requests waiting for a connection; every waiting request is here.
    idle_waitq: VecDeque<WaiterRef>,
    /// Requests waiting for permission to dial (`max_conns_per_host` reached).
    dial_waitq: VecDeque<WaiterRef>,
}

struct Idle<T> {
    conn: T,
    meta: ConnMeta,
    seq: u64,
    since: Instant,
}

struct SharedConn<T> {
    conn: T,
    meta: ConnMeta,
    /// Requests using it now.
    leases: usize,
    /// When `leases` last dropped to zero (valid while `leases == 0`).
    idle_since: Instant,
    /// Retired while leased (found closed, past its lifetime, the server sent GOAWAY): no new
    /// leases; it closes for this reason when the last one returns.
    dead: Option<CloseReason>,
}

impl<T: Poolable> SharedConn<T> {
    /// It can take another request now: alive and below its concurrency limit.
    fn has_room(&self) -> bool {
        self.dead.is_none() && self.conn.limit().is_none_or(|max| self.leases < max)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WaiterRef {
    idx: usize,
    id: u64,
}

struct Waiter<T> {
    id: u64,
    key: ConnectKey,
    since: Instant,
    wants_shared: bool,
    in_idle_queue: bool,
    in_dial_queue: bool,
    /// A dial for this request is granted or in progress.
    dialing: bool,
    /// It waits for a shared dial in progress without dialing (it is in `Host::stranded`).
    stranded: bool,
    /// Permission to dial, granted but not yet picked up by the checkout.
    grant: Option<ConnId>,
    /// What was delivered; the checkout takes it.
    result: Option<Result<Lease<T>, Error>>,
    waker: Option<Waker>,
}

/// Which queues a waiter is leaving, taken from it in one step.
struct Leaving {
    key: ConnectKey,
    since: Instant,
    in_idle: bool,
    in_dial: bool,
    stranded: bool,
}

impl<T> Waiter<T> {
    /// Takes the waiter out of both queues' bookkeeping; the caller emits the events.
    fn leave(&mut self) -> Leaving {
        let l = Leaving {
            key: self.key.clone(),
            since: self.since,
            in_idle: self.in_idle_queue,
            in_dial: self.in_dial_queue,
            stranded: self.stranded,
        };
        self.in_idle_queue = false;
        self.in_dial_queue = false;
        self.stranded = false;
        l
    }
}

/// What a checkout found when it started.
pub(super) enum Start<T> {
    Ready(Lease<T>),
    Wait(WaiterRef),
}

/// What a waiting checkout finds when polled.
pub(super) enum Poll<T> {
    Done(Result<Lease<T>, Error>),
    /// Dial connection `ConnId`; whether it is expected to be shared; the concurrency hint
    /// (see `Connecting::concurrency_hint`).
    Dial(ConnId, bool, Option<usize>),
    Pending,
}

/// Work collected under the lock and done after it is released.
pub(super) struct Effects<T> {
    /// Whether events are built at all (some hook is registered).
    record: bool,
    /// The time of this locked operation, read from the clock on first use (one read per
    /// operation: every rule in it sees the same instant; paths that need no time read none).
    now: Cell<Option<Instant>>,
    events: Vec<Event>,
    wakers: Vec<Waker>,
    /// Connections leaving the pool; dropping them closes them.
    drops: Vec<T>,
    spawn_reaper: bool,
    wake_reaper: bool,
}

/// The pool lock and what to do after it.
pub(super) struct Locked<'a, T> {
    st: MutexGuard<'a, State<T>>,
    cfg: &'a Config,
    stats: &'a Stats,
    fx: Effects<T>,
}

impl<T> Host<T> {
    fn new() -> Host<T> {
        Host {
            idle: IdleList::default(),
            shared: Vec::new(),
            idle_waitq: VecDeque::new(),
            dial_waitq: VecDeque::new(),
            idle_waiting: 0,
            dial_waiting: 0,
            total: 0,
            connecting: 0,
            shared_dialing: 0,
            h1_seen: false,
            stranded: VecDeque::new(),
            stranded_live: 0,
            closed_hint: 0,
        }
    }

    /// Idle connections: HTTP/1 in the idle list and shared ones nobody uses.
    fn idle_count(&self) -> usize {
        self.idle.len() + self.shared_idle()
    }

    fn shared_idle(&self) -> usize {
        self.shared.iter().filter(|s| s.leases == 0).count()
    }

    fn is_unused(&self) -> bool {
        self.total == 0 && self.idle_waiting == 0 && self.dial_waiting == 0
    }

    /// Whether `evict_closed` should check the idle connections now (see `closed_hint`).
    fn due_for_closed_check(&mut self) -> bool {
        self.closed_hint += 1;
        let idle = self.idle.len() + self.shared.len();
        if idle <= 8 || self.closed_hint * 2 >= idle {
            self.closed_hint = 0;
            return true;
        }
        false
    }
}

/// Whether `r` still names a live waiter.
fn live<T>(waiters: &Slab<Waiter<T>>, r: WaiterRef) -> bool {
    waiters.get(r.idx).is_some_and(|w| w.id == r.id)
}

/// Drops dead references at the front, and compacts the queue when most of it is dead.
fn clean_queue<T>(
    q: &mut VecDeque<WaiterRef>,
    live_count: usize,
    waiters: &Slab<Waiter<T>>,
    in_queue: fn(&Waiter<T>) -> bool,
) {
    let alive = |r: &WaiterRef| {
        waiters
            .get(r.idx)
            .is_some_and(|w| w.id == r.id && in_queue(w))
    };
    while q.front().is_some_and(|r| !alive(r)) {
        q.pop_front();
    }
    if q.len() > 2 * live_count + 16 {
        q.retain(alive);
    }
}

fn in_idle_queue<T>(w: &Waiter<T>) -> bool {
    w.in_idle_queue
}

fn in_dial_queue<T>(w: &Waiter<T>) -> bool {
    w.in_dial_queue
}

fn is_stranded<T>(w: &Waiter<T>) -> bool {
    w.stranded
}

impl<T: Poolable> Shared<T> {
    pub(super) fn new(config: Config, stats: Stats) -> Shared<T> {
        Shared {
            state: Mutex::new(State {
                hosts: HashMap::default(),
                waiters: Slab::new(),
                idle_total: 0,
                idle_order: VecDeque::new(),
                next_seq: 0,
                next_conn: 0,
                next_waiter: 0,
                reaper_running: false,
                reaper_due: None,
                closed: false,
                closing_idle: false,
            }),
            config,
            stats,
            handles: AtomicUsize::new(1),
            reaper_wake: Arc::new(tokio::sync::Notify::new()),
            no_timers: std::sync::atomic::AtomicBool::new(false),
            close: |shared| {
                let mut locked = shared.lock();
                locked.close_pool();
                locked.finish(shared);
            },
        }
    }

    /// Takes the pool lock. A poisoned lock is used as is: no foreign code runs under the lock
    /// except `Poolable`'s methods, whose panics are caught (see [`Guarded`]), so no invariant
    /// is left half-updated.
    pub(super) fn lock(&self) -> Locked<'_, T> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // A panic kept by an operation that never reached `finish` is not this one's.
        drop(caught::take());
        let record = self.stats.records();
        Locked {
            st,
            cfg: &self.config,
            stats: &self.stats,
            fx: Effects {
                record,
                now: Cell::new(None),
                events: if record {
                    event_buffer::take()
                } else {
                    Vec::new()
                },
                wakers: Vec::new(),
                drops: Vec::new(),
                spawn_reaper: false,
                wake_reaper: false,
            },
        }
    }

    /// Returns a lease that was never used (see [`Locked::put_unused`]).
    pub(crate) fn put_unused(self: &Arc<Self>, key: &ConnectKey, lease: Lease<T>) -> Returned {
        let mut locked = self.lock();
        let out = locked.put_unused(key, lease);
        locked.finish(self);
        out
    }

    /// Returns a leased connection (see [`Locked::put`]).
    pub(crate) fn put(
        self: &Arc<Self>,
        key: &ConnectKey,
        lease: Lease<T>,
        close: Option<CloseReason>,
    ) -> Returned {
        let mut locked = self.lock();
        let out = locked.put(key, lease, close);
        locked.finish(self);
        out
    }
}

impl<T> Shared<T> {
    pub(super) fn add_handle(&self) {
        self.handles.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops a handle; returns true if it was the last one.
    pub(super) fn drop_handle(&self) -> bool {
        self.handles.fetch_sub(1, Ordering::AcqRel) == 1
    }
}

impl<T> Effects<T> {
    fn push(&mut self, ev: impl FnOnce() -> Event) {
        if self.record {
            self.events.push(ev());
        }
    }
}

impl<'a, T: Poolable> Locked<'a, T> {
    /// Releases the lock, then does what the locked operation left to do: spawn or wake the
    /// reaper, drop the connections that left (their `Drop` may be the user's), call hooks,
    /// wake waiters. Each piece of user code is caught: a panic in any of it (or one caught in
    /// a `Poolable` call under the lock) is raised again only after everything else ran, so
    /// the pool is consistent and no wake-up is lost; never while the thread is already
    /// unwinding.
    pub(super) fn finish(self, shared: &Arc<Shared<T>>) {
        let Locked { st, fx, stats, .. } = self;
        drop(st); // release the lock before running any foreign code
        let Effects {
            record,
            events,
            wakers,
            drops,
            spawn_reaper,
            wake_reaper,
            ..
        } = fx;
        if spawn_reaper {
            super::reaper::spawn(shared);
        }
        if wake_reaper {
            shared.reaper_wake.notify_one();
        }
        for conn in drops {
            caught::guard(|| drop(conn), ());
        }
        // Hooks before wake-ups, so that a request woken by this operation finds its events
        // (a connection opened, a wait ended) already reported; each hook is caught, so a
        // panicking one skips no wake-up.
        if record {
            for ev in &events {
                caught::guard(|| stats.dispatch(ev), ());
            }
            event_buffer::give_back(events);
        }
        for w in wakers {
            caught::guard(|| w.wake(), ());
        }
        if let Some(panic) = caught::take() {
            if !std::thread::panicking() {
                std::panic::resume_unwind(panic);
            }
        }
    }

    pub(super) fn now(&self) -> Instant {
        match self.fx.now.get() {
            Some(now) => now,
            None => {
                let now = Instant::now();
                self.fx.now.set(Some(now));
                now
            }
        }
    }

    fn host(&mut self, key: &ConnectKey) -> &mut Host<T> {
        if !self.st.hosts.contains_key(key) {
            self.st.hosts.insert(key.clone(), Box::new(Host::new()));
        }
        match self.st.hosts.get_mut(key) {
            Some(host) => host,
            None => unreachable!("inserted above"),
        }
    }

    /// Connections that come back are closed until the next checkout starts.
    pub(super) fn close_returning(&mut self) {
        self.st.closing_idle = true;
    }

    /// `close_idle_connections` is draining the pool.
    fn closing_idle(&self) -> bool {
        self.st.closing_idle
    }

    /// How many keys the pool tracks (tests: unused keys must not linger).
    #[cfg(test)]
    pub(super) fn tracked_keys(&self) -> usize {
        self.st.hosts.len()
    }

    fn remove_host_if_unused(&mut self, key: &ConnectKey) {
        if self.st.hosts.get(key).is_some_and(|h| h.is_unused()) {
            self.st.hosts.remove(key);
        }
    }

    // ----- checkout -------------------------------------------------------------------

    /// Go's `queueForIdleConn` then `queueForDial`: a shared connection, else the most
    /// recently used idle one, else the request waits, and dials if the per-host cap allows.
    pub(super) fn checkout(
        &mut self,
        key: &ConnectKey,
        wants_shared: bool,
    ) -> Result<Start<T>, Error> {
        if self.st.closed {
            return Err(Error::new(Kind::PoolClosed));
        }
        // A request starts: connections that come back are pooled again (Go resets
        // `closeIdle` in `queueForIdleConn`).
        self.st.closing_idle = false;
        if let Some(lease) = self.take_shared(key) {
            return Ok(Start::Ready(lease));
        }
        if let Some(lease) = self.take_idle(key) {
            return Ok(Start::Ready(lease));
        }
        let now = self.now();
        // An origin that answered HTTP/1 to a dial that hoped for HTTP/2 is not waited for.
        let wants_shared = wants_shared && !self.st.hosts.get(key).is_some_and(|h| h.h1_seen);
        let id = self.st.next_waiter;
        self.st.next_waiter += 1;
        let idx = self.st.waiters.insert(Waiter {
            id,
            key: key.clone(),
            since: now,
            wants_shared,
            in_idle_queue: true,
            in_dial_queue: false,
            dialing: false,
            stranded: false,
            grant: None,
            result: None,
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
            in_idle_queue,
        );
        host.idle_waitq.push_back(wref);
        host.idle_waiting += 1;
        let waiting = host.idle_waiting;
        let expect_shared_dial = wants_shared && host.shared_dialing > 0 && !self.cfg.reuse_off();
        self.fx.push(|| {
            Event::IdleConnWaitIn(WaitIn {
                key: key.clone(),
                at: now.into_std(),
                waiters: waiting,
            })
        });
        if expect_shared_dial {
            clean_queue(&mut host.stranded, host.stranded_live, waiters, is_stranded);
            host.stranded.push_back(wref);
            host.stranded_live += 1;
            if let Some(w) = waiters.get_mut(wref.idx) {
                w.stranded = true;
            }
        } else {
            self.queue_for_dial(key, wref);
        }
        Ok(Start::Wait(wref))
    }

    /// Pops the most recently used idle connection of `key`, closing expired or broken ones.
    fn take_idle(&mut self, key: &ConnectKey) -> Option<Lease<T>> {
        loop {
            let host = self.st.hosts.get_mut(key)?;
            let idle = host.idle.pop_back()?;
            self.st.idle_total -= 1;
            let now = self.now();
            // One subtraction serves the expiry check and the lease's idle time.
            let idle_time = now.saturating_duration_since(idle.since);
            let unusable = if self.cfg.idle_timeout.is_some_and(|t| idle_time >= t) {
                Some((IdleOutReason::Expired, CloseReason::IdleTimeout))
            } else if self.cfg.lifetime_over(idle.meta.created, now) {
                Some((IdleOutReason::LifetimeExceeded, CloseReason::MaxLifetime))
            } else if !idle.conn.open() {
                Some((IdleOutReason::Broken, CloseReason::Broken))
            } else {
                None
            };
            if let Some((out, close)) = unusable {
                self.idle_out(key, idle.meta.id, idle_time, out);
                self.close(key, idle.conn, idle.meta, close);
                continue;
            }
            self.idle_out(key, idle.meta.id, idle_time, IdleOutReason::Reused);
            let mut meta = idle.meta;
            let reused = meta.requests > 0;
            meta.requests += 1;
            return Some(Lease {
                conn: idle.conn,
                meta,
                info: LeaseInfo {
                    conn_id: meta.id,
                    reused,
                    was_idle: true,
                    idle_time,
                    waited: Duration::ZERO,
                    shared: false,
                },
            });
        }
    }

    /// Grants `w` permission to dial if the per-host cap allows, else queues it for a slot.
    fn queue_for_dial(&mut self, key: &ConnectKey, wref: WaiterRef) {
        let cap = self.cfg.max_conns_per_host;
        let now = self.now();
        let State { hosts, waiters, .. } = &mut *self.st;
        let host = hosts
            .entry(key.clone())
            .or_insert_with(|| Box::new(Host::new()));
        if let Some(w) = waiters.get_mut(wref.idx).filter(|w| w.stranded) {
            w.stranded = false;
            host.stranded_live -= 1;
        }
        if cap.is_none_or(|cap| host.total < cap) {
            host.total += 1;
            self.grant(key, wref);
            return;
        }
        clean_queue(
            &mut host.dial_waitq,
            host.dial_waiting,
            waiters,
            in_dial_queue,
        );
        host.dial_waitq.push_back(wref);
        host.dial_waiting += 1;
        let waiting = host.dial_waiting;
        if let Some(w) = waiters.get_mut(wref.idx) {
            w.in_dial_queue = true;
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

    /// Gives a waiter a dial slot already counted in `total`.
    fn grant(&mut self, key: &ConnectKey, wref: WaiterRef) {
        let conn_id = ConnId(self.st.next_conn + 1);
        self.st.next_conn += 1;
        let Some(w) = self.st.waiters.get_mut(wref.idx) else {
            return;
        };
        w.grant = Some(conn_id);
        w.dialing = true;
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
    /// waker is stored).
    pub(super) fn poll_waiter(&mut self, wref: WaiterRef, waker: &Waker) -> Poll<T> {
        let Some(w) = self
            .st
            .waiters
            .get_mut(wref.idx)
            .filter(|w| w.id == wref.id)
        else {
            return Poll::Done(Err(Error::new(Kind::PolledAfterCompletion)));
        };
        if let Some(result) = w.result.take() {
            self.st.waiters.remove(wref.idx);
            return Poll::Done(result);
        }
        if let Some(id) = w.grant.take() {
            let wants_shared = w.wants_shared;
            let key = w.key.clone();
            // What the key's live shared connections allow at once: a new connection to the
            // same server most likely gets the same limit.
            let hint = self.st.hosts.get(&key).and_then(|h| {
                h.shared
                    .iter()
                    .filter(|s| s.dead.is_none())
                    .filter_map(|s| s.conn.limit())
                    .min()
            });
            return Poll::Dial(id, wants_shared, hint);
        }
        match &mut w.waker {
            Some(old) if old.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
        Poll::Pending
    }

    /// Removes a waiter whose checkout is dropped or timed out. Anything already delivered to
    /// it goes back to the pool; a grant it never used frees its slot.
    pub(super) fn cancel_waiter(&mut self, wref: WaiterRef, outcome: WaitOutcome) {
        if !live(&self.st.waiters, wref) {
            return;
        }
        let mut w = self.st.waiters.remove(wref.idx);
        let key = w.key.clone();
        let leaving = w.leave();
        self.leave_queues(&leaving, outcome);
        if w.grant.is_some() {
            self.drop_grant(&key, w.wants_shared);
        }
        if let Some(Ok(lease)) = w.result {
            // Delivered but never used: not a request served.
            self.put_unused(&key, lease);
        }
        self.forget_host_if_unused(&key);
    }

    /// Emits one `*_wait_out` for each queue a waiter left and updates the live counts.
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
        if l.in_idle {
            host.idle_waiting -= 1;
            let waiters = host.idle_waiting;
            self.fx.push(|| {
                Event::IdleConnWaitOut(WaitOut {
                    key: key.clone(),
                    at: now.into_std(),
                    waiters,
                    waited,
                    outcome,
                })
            });
        }
        if l.in_dial {
            let Some(host) = self.st.hosts.get_mut(&l.key) else {
                return;
            };
            host.dial_waiting -= 1;
            let waiters = host.dial_waiting;
            self.fx.push(|| {
                Event::ConnsPerHostWaitOut(WaitOut {
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
        self.kick_stranded(key, false);
    }

    /// Stores `result` in a live waiter, takes it out of its queues and wakes it. A grant it
    /// had not picked up yet is released: a connection now beats a dial later.
    fn deliver(&mut self, wref: WaiterRef, result: Result<Lease<T>, Error>) {
        let outcome = if result.is_ok() {
            WaitOutcome::Delivered
        } else {
            WaitOutcome::DialFailed
        };
        let now = self.now();
        let Some(w) = self.st.waiters.get_mut(wref.idx) else {
            return;
        };
        let mut result = result;
        if let Ok(lease) = &mut result {
            lease.info.waited = now - w.since;
        }
        let leaving = w.leave();
        let grant = w.grant.take();
        let wants_shared = w.wants_shared;
        w.result = Some(result);
        if let Some(waker) = w.waker.take() {
            self.fx.wakers.push(waker);
        }
        self.leave_queues(&leaving, outcome);
        if grant.is_some() {
            self.drop_grant(&leaving.key, wants_shared);
        }
        // A failed dial's slot was released while its owner still waited: the key may be
        // unused only now.
        self.forget_host_if_unused(&leaving.key);
    }

    /// The oldest live request waiting for a connection of `key`.
    fn pop_idle_waiter(&mut self, key: &ConnectKey) -> Option<WaiterRef> {
        let State { hosts, waiters, .. } = &mut *self.st;
        let host = hosts.get_mut(key)?;
        if host.idle_waiting == 0 {
            // Only dead references can be queued; `clean_queue` drops them later.
            return None;
        }
        while let Some(r) = host.idle_waitq.pop_front() {
            if waiters
                .get(r.idx)
                .is_some_and(|w| w.id == r.id && w.in_idle_queue)
            {
                return Some(r);
            }
        }
        None
    }

    // ----- slots ----------------------------------------------------------------------

    /// A connection of `key` is gone (or a dial failed): its slot goes to the oldest live
    /// request waiting for permission to dial, else `total` comes down. Called exactly once
    /// per connection or failed dial.
    fn release_slot(&mut self, key: &ConnectKey) {
        if !self.st.closed {
            if let Some(r) = self.pop_dial_waiter(key) {
                if let Some(w) = self.st.waiters.get_mut(r.idx) {
                    let leaving = w.leave();
                    // It stays in the idle-wait queue while it dials.
                    w.in_idle_queue = leaving.in_idle;
                    let leaving = Leaving {
                        in_idle: false,
                        ..leaving
                    };
                    self.leave_queues(&leaving, WaitOutcome::DialPermitted);
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

    /// Drops `key`'s entry if nothing uses it; if the pool is then empty, the reaper passes
    /// now, and exits.
    fn forget_host_if_unused(&mut self, key: &ConnectKey) {
        self.remove_host_if_unused(key);
        if self.st.hosts.is_empty() {
            self.wake_reaper();
        }
    }

    /// The oldest live request waiting for permission to dial for `key`.
    fn pop_dial_waiter(&mut self, key: &ConnectKey) -> Option<WaiterRef> {
        let State { hosts, waiters, .. } = &mut *self.st;
        let host = hosts.get_mut(key)?;
        while let Some(r) = host.dial_waitq.pop_front() {
            if waiters
                .get(r.idx)
                .is_some_and(|w| w.id == r.id && w.in_dial_queue)
            {
                return Some(r);
            }
        }
        None
    }

    // ----- snapshots ------------------------------------------------------------------

    fn limit_hit(&mut self, limit: Limit) {
        if self.fx.record {
            let snap = self
                .stats
                .wants_snapshot(limit)
                .then(|| Box::new(self.snapshot()));
            self.fx.events.push(Event::LimitHit(limit, snap));
        }
    }

    /// The pool as it is now, only the row of `key` (the limits are the pool's).
    pub(super) fn snapshot_of(&self, key: &ConnectKey) -> PoolSnapshot {
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
                    .filter(|w| w.id == r.id && w.in_idle_queue)
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
    pub(super) fn snapshot(&self) -> PoolSnapshot {
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

/// The pool's calls into [`Poolable`] (user code, run under the lock): a panic in one is
/// caught, the call counts as "closed" / "not shareable" / "no room", and the panic is raised
/// again by [`Locked::finish`] once the lock is released and the state is consistent.
pub(super) trait Guarded: Poolable {
    fn open(&self) -> bool {
        caught::guard(|| self.is_open(), false)
    }

    fn handle(&self) -> Option<Self> {
        caught::guard(|| self.share(), None)
    }

    fn limit(&self) -> Option<usize> {
        caught::guard(|| self.max_concurrent(), Some(0))
    }
}

impl<T: Poolable> Guarded for T {}

/// The first panic caught in user code during this thread's current locked operation.
pub(super) mod caught {
    use std::any::Any;
    use std::cell::RefCell;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    type Payload = Box<dyn Any + Send>;

    thread_local! {
        static CAUGHT: RefCell<Option<Payload>> = const { RefCell::new(None) };
    }

    /// Runs `f`, or on a panic keeps the panic and returns `fallback`.
    pub(in crate::pool) fn guard<R>(f: impl FnOnce() -> R, fallback: R) -> R {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => r,
            Err(p) => {
                keep(p);
                fallback
            }
        }
    }

    /// Keeps `p` unless an earlier panic is kept.
    pub(in crate::pool) fn keep(p: Payload) {
        let _ = CAUGHT.try_with(|c| {
            let mut c = c.borrow_mut();
            if c.is_none() {
                *c = Some(p);
            }
        });
    }

    /// Takes the kept panic, if any.
    pub(in crate::pool) fn take() -> Option<Payload> {
        CAUGHT.try_with(|c| c.borrow_mut().take()).ok().flatten()
    }
}

/// A per-thread spare `Vec` for the events of one locked operation, so that recording
/// events does not allocate on every checkout and return.
mod event_buffer {
    use std::cell::Cell;

    use crate::stats::Event;

    /// Buffers larger than this (after a burst, e.g. closing a big pool) are not kept.
    const KEEP: usize = 64;

    thread_local! {
        static SPARE: Cell<Vec<Event>> = const { Cell::new(Vec::new()) };
    }

    /// The spare buffer (empty), or a new one if it is in use (a hook running on this thread
    /// went back into a pool) or the thread is exiting.
    pub(super) fn take() -> Vec<Event> {
        SPARE.try_with(Cell::take).unwrap_or_default()
    }

    /// Returns a buffer after its events were dispatched.
    pub(super) fn give_back(mut events: Vec<Event>) {
        if events.capacity() == 0 || events.capacity() > KEEP {
            return;
        }
        events.clear();
        let _ = SPARE.try_with(|s| s.set(events));
    }
}

/// A failed dial's error for its owner.
pub(super) fn dial_error(err: BoxError) -> Error {
    Error::new(Kind::Dial).with(err)
}
