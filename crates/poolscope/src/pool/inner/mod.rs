//! The pool's state and every rule that changes it, all under one mutex.
//!
//! Each `Locked` method runs with the pool lock held (the guard lives in `Locked`). Hooks,
//! wakers and connection drops are collected in [`Effects`] and run by [`Locked::finish`]
//! after the guard is released. The only user code called under the lock is `Poolable`'s
//! `is_open`, `share`, `max_concurrent` and `describe` (once per connection, when its dial
//! ends), always through [`Guarded`], which catches a panic so that the locked operation
//! completes.
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
use std::sync::Arc;

use crate::sync::{Mutex, MutexGuard};
use std::time::Duration;

use slab::Slab;

pub(super) use idle::ReaperNext;
use idle_list::IdleList;

mod dial;
mod effects;
mod idle;
mod idle_list;
mod snapshot;
mod waiters;

use effects::{event_buffer, Effects, Guarded, Leftovers};

use tokio::time::Instant;
use waiters::Waiter;
pub(super) use waiters::WaiterRef;

use super::conn::{ConnMeta, Lease, LeaseInfo, Returned};
use super::error::{BoxError, Error, Kind};
use super::{Config, ConnId, ConnectKey, Poolable};
use crate::key::BuildKeyHasher;
use crate::stats::{CloseReason, IdleOutReason, Stats};

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
    /// Where the reaper's and the waiting checkouts' sleeps come from.
    pub(in crate::pool) timers: super::timer::Timers,
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
    /// Every live connection of the key (idle, shared or leased out), for snapshots: the
    /// only place a leased HTTP/1 connection is known. Entered when a dial ends, left in
    /// [`Locked::close`]. (Keyed by id rather than by a slab index kept in `ConnMeta`, which
    /// would grow every lease, and with it every request future; `docs/benchmarks.md` has the
    /// measurement.)
    conns: HashMap<ConnId, ConnRecord, foldhash::fast::RandomState>,
}

/// What the pool keeps of a live connection for snapshots.
struct ConnRecord {
    created: Instant,
    /// Requests it carried as of its latest lease (an HTTP/1 connection leased out is counted
    /// from here; idle and shared ones from their own `ConnMeta`).
    requests: u64,
    describe: Option<Arc<dyn crate::pool::Describe>>,
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

/// What a checkout found when it started.
pub(super) enum Start<T> {
    Ready(Lease<T>),
    Wait(WaiterRef),
}

/// What a waiting checkout finds when polled.
pub(super) enum Found<T> {
    Done(Result<Lease<T>, Error>),
    /// It may dial.
    Dial(DialGrant),
    Pending,
}

/// A waiter's permission to dial, as the lock hands it over.
pub(in crate::pool) struct DialGrant {
    /// The connection the dial makes.
    pub(in crate::pool) id: ConnId,
    /// The dial is expected to bring a shared (HTTP/2) connection.
    pub(in crate::pool) shared_hint: bool,
    /// The key's known stream limit (see `Connecting::concurrency_hint`).
    pub(in crate::pool) concurrency_hint: Option<usize>,
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
            conns: HashMap::default(),
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
        let unused = self.total == 0 && self.idle_waiting == 0 && self.dial_waiting == 0;
        debug_assert!(
            !unused || self.conns.is_empty(),
            "a closed connection kept its record"
        );
        unused
    }

    /// Counts `requests` on HTTP/1 connection `id` as it is leased.
    fn leased(&mut self, id: ConnId, requests: u64) {
        if let Some(r) = self.conns.get_mut(&id) {
            r.requests = requests;
        }
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

impl<T: Poolable> Shared<T> {
    pub(super) fn new(
        config: Config,
        stats: Stats,
        timer: Option<super::timer::PoolTimer>,
    ) -> Shared<T> {
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
            timers: super::timer::Timers::new(timer),
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
        let st = self.state.lock();
        // A panic kept by an operation that never reached `finish` is not this one's.
        drop(effects::caught::take());
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
                describe: Vec::new(),
                wakers: Vec::new(),
                drops: Vec::new(),
                leftovers: Leftovers::default(),
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

impl<'a, T: Poolable> Locked<'a, T> {
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
        // One lookup (a key clone is a reference count).
        self.st
            .hosts
            .entry(key.clone())
            .or_insert_with(|| Box::new(Host::new()))
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

    /// Drops `key`'s entry if nothing uses it; if the pool is then empty, the reaper passes
    /// now, and exits.
    fn forget_host_if_unused(&mut self, key: &ConnectKey) {
        self.remove_host_if_unused(key);
        if self.st.hosts.is_empty() {
            self.wake_reaper();
        }
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
        let wref = self.new_waiter(key, now, wants_shared);
        let host = self.host(key);
        let expect_shared_dial = wants_shared && host.shared_dialing > 0 && !self.cfg.reuse_off();
        if expect_shared_dial {
            self.strand(key, wref);
        } else {
            self.queue_for_dial(key, wref);
        }
        Ok(Start::Wait(wref))
    }

    /// Rule `[idle-lifo]`: Pops the most recently used idle connection of `key`, closing expired
    /// or broken ones.
    fn take_idle(&mut self, key: &ConnectKey) -> Option<Lease<T>> {
        loop {
            let host = self.st.hosts.get_mut(key)?;
            let idle = host.idle.pop_back()?;
            // Counted as leased now (if it turns out closed, its record goes with it).
            host.leased(idle.meta.id, idle.meta.requests + 1);
            self.st.idle_total -= 1;
            let now = self.now();
            // One subtraction serves the expiry check and the lease's idle time.
            let idle_time = now.saturating_duration_since(idle.since);
            let verdict = self
                .cfg
                .verdict(idle.meta.created, Some(idle_time), now, || idle.conn.open());
            if let Some(close) = verdict {
                self.idle_out(key, idle.meta.id, idle_time, idle_out_reason(close));
                self.close(key, idle.conn, idle.meta, close);
                continue;
            }
            let mut meta = idle.meta;
            let reused = meta.requests > 0;
            meta.requests += 1;
            self.idle_out(key, idle.meta.id, idle_time, IdleOutReason::Reused);
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
}

/// How a connection closed for `reason` while idle leaves the idle set.
pub(super) fn idle_out_reason(reason: CloseReason) -> IdleOutReason {
    match reason {
        CloseReason::MaxLifetime => IdleOutReason::LifetimeExceeded,
        CloseReason::IdleTimeout => IdleOutReason::Expired,
        CloseReason::PoolClosed => IdleOutReason::PoolClosed,
        CloseReason::CloseIdle => IdleOutReason::CloseIdle,
        _ => IdleOutReason::Broken,
    }
}

/// A failed dial's error for its owner.
pub(super) fn dial_error(err: BoxError) -> Error {
    Error::new(Kind::Dial).with(err)
}
