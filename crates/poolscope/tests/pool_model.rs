//! Randomized model test of the pool engine (proptest): random sequences of checkout,
//! return, discard, peer close, cancel, dial finish/fail/abandon, poll and time advance over
//! several keys. After every step the caps hold and no request waits while an idle connection
//! of its key exists; after every settle step the snapshot's counts equal the driver's own
//! bookkeeping; at the end every Stats pair balances and every count is zero.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use poolscope::pool::{Checkout, Config, Connecting, Pool, Pooled, Step};
use poolscope::stats::ConnState;
use proptest::prelude::*;
use support::*;

#[derive(Debug, Clone)]
enum Op {
    Checkout {
        key: usize,
        h2: bool,
    },
    Poll(usize),
    Settle,
    Finish(usize),
    Fail(usize),
    Abandon(usize),
    Return(usize),
    Discard(usize),
    PeerClose(usize),
    Cancel(usize),
    Advance(u64),
    CloseIdle,
    /// The next operation's first Stats hook panics.
    PanicHook,
    /// A connection's `is_open` / `share` / `max_concurrent` panic during the next operation.
    PanicConn(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..3usize, prop::bool::weighted(0.2)).prop_map(|(key, h2)| Op::Checkout { key, h2 }),
        4 => any::<usize>().prop_map(Op::Poll),
        2 => Just(Op::Settle),
        4 => any::<usize>().prop_map(Op::Finish),
        1 => any::<usize>().prop_map(Op::Fail),
        1 => any::<usize>().prop_map(Op::Abandon),
        4 => any::<usize>().prop_map(Op::Return),
        1 => any::<usize>().prop_map(Op::Discard),
        1 => any::<usize>().prop_map(Op::PeerClose),
        2 => any::<usize>().prop_map(Op::Cancel),
        1 => (1..120u64).prop_map(Op::Advance),
        1 => Just(Op::CloseIdle),
        1 => Just(Op::PanicHook),
        1 => any::<usize>().prop_map(Op::PanicConn),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (
        prop::option::of(1..4usize),
        prop::option::of(0..3usize),
        prop::option::of(0..4usize),
        prop::option::of(10..100u64),
        prop::option::of(50..300u64),
    )
        .prop_map(|(cap, per_host, max_idle, idle, life)| Config {
            max_conns_per_host: cap,
            max_idle_per_host: per_host,
            max_idle,
            idle_timeout: idle.map(Duration::from_secs),
            max_lifetime: life.map(Duration::from_secs),
            wait_timeout: None,
        })
}

struct Driver {
    pool: Pool<TestConn>,
    cfg: Config,
    /// Checkouts still waiting (some have a dial in progress).
    pending: Vec<(usize, bool, Checkout<TestConn>)>,
    /// Dials in progress: key index, whether the connection will be HTTP/2.
    dials: Vec<(usize, bool, Connecting<TestConn>)>,
    held: Vec<Pooled<TestConn>>,
    conns: Vec<TestConn>,
    /// The ids of the HTTP/1 (unshared) connections dialed so far.
    h1_ids: HashSet<u64>,
    rec: Recorder,
}

const KEYS: [&str; 3] = ["a", "b", "c"];

impl Driver {
    fn poll_one(&mut self, i: usize) {
        if self.pending.is_empty() {
            return;
        }
        let i = i % self.pending.len();
        match poll(&mut self.pending[i].2) {
            Poll::Pending => {}
            Poll::Ready(Ok(Step::Dial(p))) => {
                let (k, h2, _) = &self.pending[i];
                self.dials.push((*k, *h2, p));
            }
            Poll::Ready(Ok(Step::Ready(c))) => {
                self.pending.remove(i);
                self.held.push(c);
            }
            Poll::Ready(Err(e)) => {
                assert!(e.is_dial(), "unexpected checkout error: {e}");
                self.pending.remove(i);
            }
        }
    }

    fn settle(&mut self) {
        // Poll every checkout until none makes progress.
        loop {
            let before = (self.pending.len(), self.dials.len(), self.held.len());
            for i in (0..self.pending.len()).rev() {
                self.poll_one(i);
            }
            if before == (self.pending.len(), self.dials.len(), self.held.len()) {
                break;
            }
        }
    }

    fn apply(&mut self, op: Op) -> Option<u64> {
        match op {
            Op::Checkout { key: k, h2 } => {
                let c = if h2 {
                    self.pool.checkout_shared(key(KEYS[k]))
                } else {
                    self.pool.checkout(key(KEYS[k]))
                };
                self.pending.push((k, h2, c));
            }
            Op::Poll(i) => self.poll_one(i),
            Op::Settle => self.settle(),
            Op::Finish(i) if !self.dials.is_empty() => {
                let (_, h2, p) = self.dials.remove(i % self.dials.len());
                let conn = if h2 { TestConn::h2() } else { TestConn::new() };
                if !h2 {
                    self.h1_ids.insert(p.id().get());
                }
                self.conns.push(conn.clone());
                p.finish(Ok(conn));
            }
            Op::Fail(i) if !self.dials.is_empty() => {
                let (_, _, p) = self.dials.remove(i % self.dials.len());
                p.finish(Err("refused".into()));
            }
            Op::Abandon(i) if !self.dials.is_empty() => {
                drop(self.dials.remove(i % self.dials.len()));
            }
            Op::Return(i) if !self.held.is_empty() => {
                let c = self.held.swap_remove(i % self.held.len());
                c.release();
            }
            Op::Discard(i) if !self.held.is_empty() => {
                self.held.swap_remove(i % self.held.len()).discard();
            }
            Op::PeerClose(i) if !self.conns.is_empty() => {
                self.conns[i % self.conns.len()].close();
            }
            Op::Cancel(i) if !self.pending.is_empty() => {
                drop(self.pending.remove(i % self.pending.len()));
            }
            Op::Advance(s) => return Some(s),
            Op::CloseIdle => self.pool.close_idle_connections(),
            Op::PanicHook => self.rec.panic_next.store(true, Ordering::Release),
            Op::PanicConn(i) if !self.conns.is_empty() => {
                self.conns[i % self.conns.len()]
                    .explode
                    .store(true, Ordering::Release);
            }
            _ => {}
        }
        None
    }

    /// No more panics in user code.
    fn disarm(&self) {
        self.rec.panic_next.store(false, Ordering::Release);
        for c in &self.conns {
            c.explode.store(false, Ordering::Release);
        }
    }

    fn check_invariants(&self) {
        let snap = self.pool.snapshot();
        let h1_idle = self.h1_idle();
        assert!(
            h1_idle <= snap.total_idle(),
            "{h1_idle} idle HTTP/1: {snap}"
        );
        // The pool's own config: `max_idle = Some(0)` means no limit there, as in Go.
        if let Some(max) = self.pool.config().max_idle {
            // Shared connections are exempt from the idle caps.
            assert!(
                h1_idle <= max,
                "max_idle exceeded: {h1_idle} idle HTTP/1 connections: {snap}"
            );
        }
        for h in &snap.hosts {
            if let Some(cap) = self.cfg.max_conns_per_host {
                assert!(h.total <= cap, "max_conns_per_host exceeded: {snap}");
            }
            assert_eq!(h.total, h.idle + h.active + h.connecting, "{snap}");
            assert!(
                h.idle == 0 || h.idle_conn_waiters == 0,
                "a request waits while an idle connection exists: {snap}"
            );
            assert!(h.conns_per_host_waiters <= h.idle_conn_waiters, "{snap}");
            // One row per live connection, in the states the counts say.
            let rows = |state| h.connections.iter().filter(|c| c.state == state).count();
            assert_eq!(rows(ConnState::Idle), h.idle, "idle rows: {snap}");
            assert_eq!(rows(ConnState::Active), h.active, "active rows: {snap}");
            assert!(
                h.connections.windows(2).all(|w| w[0].id < w[1].id),
                "{snap}"
            );
            for c in &h.connections {
                assert_eq!(c.idle_for.is_some(), c.state == ConnState::Idle, "{snap}");
                assert_eq!(c.streams > 0, c.state == ConnState::Active, "{snap}");
            }
        }
    }

    /// The HTTP/1 connections idle now (the ones `max_idle` counts): those whose latest
    /// idle event is `IdleIn`. Hooks run before each pool call returns, so the events are
    /// up to date after every step.
    fn h1_idle(&self) -> usize {
        let mut idle = HashSet::new();
        for e in self.rec.all() {
            match e {
                Ev::IdleIn(_, id) if self.h1_ids.contains(&id) => {
                    idle.insert(id);
                }
                Ev::IdleOut(_, id, _) => {
                    idle.remove(&id);
                }
                _ => {}
            }
        }
        idle.len()
    }

    fn check_exact(&self) {
        let snap = self.pool.snapshot();
        let mut active: HashMap<String, HashSet<u64>> = HashMap::new();
        for c in &self.held {
            active
                .entry(c.key().to_string())
                .or_default()
                .insert(c.id().get());
        }
        let mut connecting: HashMap<String, usize> = HashMap::new();
        for (_, _, p) in &self.dials {
            *connecting.entry(p.key().to_string()).or_default() += 1;
        }
        let mut waiting: HashMap<String, usize> = HashMap::new();
        for (_, _, c) in &self.pending {
            let key = c.key().expect("a pending checkout has its key");
            *waiting.entry(key.to_string()).or_default() += 1;
        }
        for h in &snap.hosts {
            let k = h.key.to_string();
            // The connections leased out now are exactly the active rows, each with as many
            // streams as leases the driver holds.
            let mut leases: HashMap<u64, usize> = HashMap::new();
            for c in self.held.iter().filter(|c| c.key().to_string() == k) {
                *leases.entry(c.id().get()).or_default() += 1;
            }
            let rows: HashMap<u64, usize> = h
                .connections
                .iter()
                .filter(|c| c.state == ConnState::Active)
                .map(|c| (c.id.get(), c.streams))
                .collect();
            assert_eq!(rows, leases, "active rows {k}: {snap}");
            assert_eq!(
                h.active,
                active.get(&k).map_or(0, |s| s.len()),
                "active {k}: {snap}"
            );
            assert_eq!(
                h.connecting,
                connecting.get(&k).copied().unwrap_or(0),
                "connecting {k}: {snap}"
            );
            assert_eq!(
                h.idle_conn_waiters,
                waiting.get(&k).copied().unwrap_or(0),
                "waiters {k}: {snap}"
            );
        }
        let in_snap: HashSet<String> = snap.hosts.iter().map(|h| h.key.to_string()).collect();
        for k in active.keys().chain(connecting.keys()).chain(waiting.keys()) {
            assert!(in_snap.contains(k), "{k} missing from snapshot: {snap}");
        }
    }
}

fn run(cfg: Config, ops: Vec<Op>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let rec = Recorder::default();
        let mut d = Driver {
            pool: Pool::with_stats(cfg.clone(), rec.stats()),
            cfg,
            pending: Vec::new(),
            dials: Vec::new(),
            held: Vec::new(),
            conns: Vec::new(),
            h1_ids: HashSet::new(),
            rec: rec.clone(),
        };
        let mut armed = false;
        for op in ops {
            let settle = matches!(op, Op::Settle);
            let arming = matches!(op, Op::PanicHook | Op::PanicConn(_));
            // User code may panic anywhere: the operation's panic is caught here, and the
            // pool must be consistent after it (the engine's debug assertions check its
            // counts in every locked operation; the invariants below check the rest).
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.apply(op)));
            if armed && !arming {
                d.disarm();
            }
            armed = arming;
            if let Ok(Some(secs)) = applied {
                tokio::time::sleep(Duration::from_secs(secs)).await;
            }
            d.check_invariants();
            if settle && applied.is_ok() {
                d.check_exact();
            }
        }
        d.disarm();
        // Wind down: finish every dial, serve every waiter, return everything.
        for _ in 0..1000 {
            d.settle();
            if d.dials.is_empty() && d.pending.is_empty() {
                break;
            }
            for (_, h2, p) in std::mem::take(&mut d.dials) {
                p.finish(Ok(if h2 { TestConn::h2() } else { TestConn::new() }));
            }
            d.held.clear();
        }
        assert!(
            d.pending.is_empty() && d.dials.is_empty(),
            "requests left waiting"
        );
        d.held.clear();
        let snap = d.pool.snapshot();
        assert_eq!(
            snap.total_active() + snap.total_connecting() + snap.total_waiters(),
            0,
            "{snap}"
        );
        drop(d);
        rec.assert_balanced();
    });
}

proptest! {
    // 400 cases per run; `PROPTEST_CASES=4000` for a longer run by hand.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(400),
        ..ProptestConfig::default()
    })]

    #[test]
    fn pool_rules_hold_under_random_operations(cfg in config(), ops in prop::collection::vec(op(), 1..80)) {
        run(cfg, ops);
    }
}

/// The model's `max_idle` check counts HTTP/1 connections only: after an HTTP/2 connection
/// has come and gone, two idle HTTP/1 connections with `max_idle = 1` are still too many.
#[test]
fn max_idle_holds_after_an_http2_connection_has_closed() {
    let cfg = Config {
        max_idle: Some(1),
        ..Config::default()
    };
    run(
        cfg,
        vec![
            // An HTTP/2 connection on "a", returned, then closed while idle.
            Op::Checkout { key: 0, h2: true },
            Op::Poll(0),
            Op::Finish(0),
            Op::Settle,
            Op::Return(0),
            Op::CloseIdle,
            // Two HTTP/1 connections on "b", both returned: one of them must be evicted.
            Op::Checkout { key: 1, h2: false },
            Op::Checkout { key: 1, h2: false },
            Op::Settle,
            Op::Finish(0),
            Op::Finish(0),
            Op::Settle,
            Op::Return(0),
            Op::Return(0),
        ],
    );
}
