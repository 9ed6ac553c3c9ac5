//! `Stats`: transport-level hooks, registered once on the pool and called for every request.
//!
//! This is the Go proposal "net/http: transport-level Stats" (golang/go#56241) made real:
//! where `httptrace` sees one request, these hooks see the pool itself — requests entering and
//! leaving the two wait queues, connections entering and leaving the idle list, connections
//! handed straight to a waiter, and the moments a limit is reached, with a [`PoolSnapshot`] of
//! the whole pool taken at that moment.
//!
//! | hook | fires when |
//! |---|---|
//! | [`on_idle_conn_wait_in`] / [`on_idle_conn_wait_out`] | a request enters / leaves a key's idle-wait queue |
//! | [`on_conns_per_host_wait_in`] / [`on_conns_per_host_wait_out`] | a request enters / leaves the queue for permission to dial (`max_conns_per_host`) |
//! | [`on_idle_conn_in`] / [`on_idle_conn_out`] | a connection enters / leaves the idle list |
//! | [`on_conn_reused`] | a returned connection is handed straight to a waiter |
//! | [`on_max_idle_conns_hit`], [`on_max_idle_conns_per_host_hit`], [`on_max_conns_per_host_hit`] | a cap is reached |
//! | [`on_conn_opened`] / [`on_conn_closed`] | a dial succeeds / a connection leaves the pool for good |
//!
//! Pairs always balance: every `*_in` gets exactly one `*_out` and every opened connection is
//! closed once, including on cancellation, timeouts and when the pool is dropped.
//!
//! What this module does not do: it never calls a hook while a pool lock is held (events are
//! collected under the lock and delivered after it is released), and it keeps no counters of
//! its own — counting is the hooks' business, or use [`PoolSnapshot`] for a point-in-time view.
//! Hooks run on the task that caused the event, so they should be quick. Hooks of two
//! concurrent operations may interleave.
//!
//! Events carry a [`ConnectKey`](crate::pool::ConnectKey) (scheme, host, port): never a path,
//! query or userinfo.
//!
//! # Vocabulary
//!
//! The names are Go's where Go has one, so "reused" says three related things in three places:
//! [`on_conn_reused`] (the proposal's `ConnReused`) is a connection handed from one request
//! straight to a waiting one, skipping the idle list; `LeaseInfo::reused` (httptrace's
//! `GotConnInfo.Reused`) is a request served by a connection that served an earlier request,
//! whichever way it came; `IdleOutReason::Reused` is a connection leaving the idle list to
//! serve a request. A request's wait in the pool is `LeaseInfo::waited` (and the trace's
//! `queued_for` / `RequestTimings::queued`, the metric `http.client.request.time_in_queue`,
//! the span's `poolscope.time_in_queue_s`): one duration, from an attempt's checkout to
//! its connection, its own dial included (zero when served at once). A limit has Go's name
//! in the hooks, the events and the close reasons (`max_idle_conns_per_host`), and
//! hyper-util's in the builder (`pool_max_idle_per_host`).
//!
//! # Examples
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use poolscope::Stats;
//!
//! let hits = Arc::new(AtomicUsize::new(0));
//! let h = hits.clone();
//! let stats = Stats::builder()
//!     .on_max_conns_per_host_hit(move |snap| {
//!         h.fetch_add(1, Ordering::Relaxed);
//!         eprintln!("limit hit:\n{snap}");
//!     })
//!     .on_conns_per_host_wait_out(|ev| eprintln!("{} waited {:?}", ev.key, ev.waited))
//!     .build();
//! assert!(!stats.is_empty());
//! ```
//!
//! [`on_idle_conn_wait_in`]: StatsBuilder::on_idle_conn_wait_in
//! [`on_idle_conn_wait_out`]: StatsBuilder::on_idle_conn_wait_out
//! [`on_conns_per_host_wait_in`]: StatsBuilder::on_conns_per_host_wait_in
//! [`on_conns_per_host_wait_out`]: StatsBuilder::on_conns_per_host_wait_out
//! [`on_idle_conn_in`]: StatsBuilder::on_idle_conn_in
//! [`on_idle_conn_out`]: StatsBuilder::on_idle_conn_out
//! [`on_conn_reused`]: StatsBuilder::on_conn_reused
//! [`on_max_idle_conns_hit`]: StatsBuilder::on_max_idle_conns_hit
//! [`on_max_idle_conns_per_host_hit`]: StatsBuilder::on_max_idle_conns_per_host_hit
//! [`on_max_conns_per_host_hit`]: StatsBuilder::on_max_conns_per_host_hit
//! [`on_conn_opened`]: StatsBuilder::on_conn_opened
//! [`on_conn_closed`]: StatsBuilder::on_conn_closed

mod dispatch;
mod events;
pub(crate) mod snapshot;

use std::fmt;
use std::sync::Arc;

pub(crate) use self::dispatch::{Event, Limit};
pub use self::events::*;
pub use snapshot::{
    ConnSnapshot, ConnState, DialSummary, HostSnapshot, PoolLimits, PoolSnapshot, TcpInfo, TcpState,
};

type Hook<E> = Option<Arc<dyn Fn(&E) + Send + Sync + 'static>>;

#[derive(Default)]
struct Hooks {
    idle_conn_wait_in: Hook<WaitIn>,
    idle_conn_wait_out: Hook<WaitOut>,
    conns_per_host_wait_in: Hook<WaitIn>,
    conns_per_host_wait_out: Hook<WaitOut>,
    idle_conn_in: Hook<IdleConnIn>,
    idle_conn_out: Hook<IdleConnOut>,
    conn_reused: Hook<ConnReused>,
    max_idle_conns_hit: Hook<PoolSnapshot>,
    max_idle_conns_per_host_hit: Hook<PoolSnapshot>,
    max_conns_per_host_hit: Hook<PoolSnapshot>,
    conn_opened: Hook<ConnOpened>,
    conn_closed: Hook<ConnClosed>,
}

/// Transport-level hooks, built with [`Stats::builder`] and registered once on the pool (or
/// the client's builder). Cloning is cheap.
///
/// An empty `Stats` (the default) costs the pool one branch per operation: no event is built.
#[derive(Clone, Default)]
pub struct Stats {
    hooks: Option<Arc<Hooks>>,
    /// poolscope's own listeners (the event history, the metrics, the spans' pool events),
    /// called after the user's hooks.
    sinks: Vec<Arc<dyn EventSink>>,
}

/// An internal listener of pool events (the event ring, metrics).
pub(crate) trait EventSink: Send + Sync {
    /// Called after the pool lock is released, like a hook.
    fn on_pool_event(&self, event: &Event);

    /// Whether it wants events now (the pool builds none when nothing does).
    fn active(&self) -> bool {
        true
    }

    /// Whether `*_hit` events should carry a snapshot for this sink.
    fn wants_snapshots(&self) -> bool {
        false
    }
}

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stats")
            .field("registered", &!self.is_empty())
            .finish()
    }
}

/// Builds a [`Stats`]; each `on_*` method registers one hook (a later call for the same hook
/// replaces the earlier one). A hook takes a reference to its own event type ([`WaitIn`],
/// [`WaitOut`], [`IdleConnIn`], …; the `*_hit` hooks a [`PoolSnapshot`]) and must be
/// `Send + Sync + 'static`.
#[derive(Default)]
pub struct StatsBuilder {
    hooks: Hooks,
}

macro_rules! hook_setters {
    ($( $(#[$doc:meta])* $name:ident => $field:ident : $ev:ty ),* $(,)?) => {
        impl StatsBuilder {
            $(
                $(#[$doc])*
                pub fn $name(mut self, f: impl Fn(&$ev) + Send + Sync + 'static) -> Self {
                    self.hooks.$field = Some(Arc::new(f));
                    self
                }
            )*
        }
    };
}

hook_setters! {
    /// A request entered its key's idle-wait queue (no idle connection was available).
    on_idle_conn_wait_in => idle_conn_wait_in: WaitIn,
    /// A request left its key's idle-wait queue; see [`WaitOut::outcome`].
    on_idle_conn_wait_out => idle_conn_wait_out: WaitOut,
    /// A request entered the queue for permission to dial (`max_conns_per_host` reached).
    on_conns_per_host_wait_in => conns_per_host_wait_in: WaitIn,
    /// A request left the queue for permission to dial.
    on_conns_per_host_wait_out => conns_per_host_wait_out: WaitOut,
    /// A connection entered the idle list (Go's `PutIdleConn`, seen from the pool).
    on_idle_conn_in => idle_conn_in: IdleConnIn,
    /// A connection left the idle list; see [`IdleConnOut::reason`].
    on_idle_conn_out => idle_conn_out: IdleConnOut,
    /// A returned connection was handed straight to a waiting request.
    on_conn_reused => conn_reused: ConnReused,
    /// `max_idle` was reached: the least recently used idle connection was evicted.
    on_max_idle_conns_hit => max_idle_conns_hit: PoolSnapshot,
    /// `max_idle_per_host` was reached: a returned connection was closed instead of kept.
    on_max_idle_conns_per_host_hit => max_idle_conns_per_host_hit: PoolSnapshot,
    /// `max_conns_per_host` was reached: a request has to wait for permission to dial.
    ///
    /// This fires for every request that queues, and each time the snapshot is taken under
    /// the pool lock (one pass over the keys and their connections, ~0.2 µs a connection,
    /// and with `snapshot_tcp_info` a `getsockopt` per connection after the lock): under
    /// sustained queueing that is the most expensive hook to register.
    on_max_conns_per_host_hit => max_conns_per_host_hit: PoolSnapshot,
    /// A dial succeeded and its connection joined the pool.
    on_conn_opened => conn_opened: ConnOpened,
    /// A connection left the pool for good; see [`ConnClosed::reason`].
    on_conn_closed => conn_closed: ConnClosed,
}

impl StatsBuilder {
    /// Finishes the builder.
    pub fn build(self) -> Stats {
        let h = &self.hooks;
        let any = h.idle_conn_wait_in.is_some()
            || h.idle_conn_wait_out.is_some()
            || h.conns_per_host_wait_in.is_some()
            || h.conns_per_host_wait_out.is_some()
            || h.idle_conn_in.is_some()
            || h.idle_conn_out.is_some()
            || h.conn_reused.is_some()
            || h.max_idle_conns_hit.is_some()
            || h.max_idle_conns_per_host_hit.is_some()
            || h.max_conns_per_host_hit.is_some()
            || h.conn_opened.is_some()
            || h.conn_closed.is_some();
        Stats {
            hooks: any.then(|| Arc::new(self.hooks)),
            sinks: Vec::new(),
        }
    }
}

impl Stats {
    /// Starts building a set of hooks.
    pub fn builder() -> StatsBuilder {
        StatsBuilder::default()
    }

    /// Whether no hook is registered.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_none()
    }

    /// Whether anything listens: the pool builds events only then.
    pub(crate) fn records(&self) -> bool {
        self.hooks.is_some() || self.sinks.iter().any(|s| s.active())
    }

    /// Adds an internal listener.
    pub(crate) fn with_sink(mut self, sink: Arc<dyn EventSink>) -> Stats {
        self.sinks.push(sink);
        self
    }

    /// Whether a `*_hit` event for `limit` should carry a snapshot (taken under the lock).
    pub(crate) fn wants_snapshot(&self, limit: Limit) -> bool {
        let hook = match &self.hooks {
            None => false,
            Some(h) => match limit {
                Limit::MaxIdleConns => h.max_idle_conns_hit.is_some(),
                Limit::MaxIdleConnsPerHost => h.max_idle_conns_per_host_hit.is_some(),
                Limit::MaxConnsPerHost => h.max_conns_per_host_hit.is_some(),
            },
        };
        hook || self.sinks.iter().any(|s| s.wants_snapshots())
    }

    /// Calls the hook registered for `event`, if any. Never called under a pool lock.
    pub(crate) fn dispatch(&self, event: &Event) {
        self.call_hooks(event);
        for sink in &self.sinks {
            sink.on_pool_event(event);
        }
    }

    fn call_hooks(&self, event: &Event) {
        let Some(h) = &self.hooks else { return };
        fn call<E>(hook: &Hook<E>, ev: &E) {
            if let Some(f) = hook {
                f(ev)
            }
        }
        match event {
            Event::IdleConnWaitIn(e) => call(&h.idle_conn_wait_in, e),
            Event::IdleConnWaitOut(e) => call(&h.idle_conn_wait_out, e),
            Event::ConnsPerHostWaitIn(e) => call(&h.conns_per_host_wait_in, e),
            Event::ConnsPerHostWaitOut(e) => call(&h.conns_per_host_wait_out, e),
            Event::IdleConnIn(e) => call(&h.idle_conn_in, e),
            Event::IdleConnOut(e) => call(&h.idle_conn_out, e),
            Event::ConnReused(e) => call(&h.conn_reused, e),
            Event::LimitHit(_, None) => {}
            Event::LimitHit(Limit::MaxIdleConns, Some(s)) => call(&h.max_idle_conns_hit, s),
            Event::LimitHit(Limit::MaxIdleConnsPerHost, Some(s)) => {
                call(&h.max_idle_conns_per_host_hit, s)
            }
            Event::LimitHit(Limit::MaxConnsPerHost, Some(s)) => call(&h.max_conns_per_host_hit, s),
            Event::ConnOpened(e) => call(&h.conn_opened, e),
            Event::ConnClosed(e) => call(&h.conn_closed, e),
        }
    }
}
