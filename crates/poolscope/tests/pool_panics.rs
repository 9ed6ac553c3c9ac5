//! User code may panic anywhere (Stats hooks, `Poolable`, timers), and the pool stays
//! consistent: the operation whose user code panicked raises the panic, every other and every
//! later request is served, no slot or connection is lost, waits stay balanced. One test per
//! place where user code runs (see `pool/inner/mod.rs`, "Panics in user code").

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use poolscope::pool::{Config, Pool, Step};
use poolscope::Stats;
use support::*;

fn cap(n: usize) -> Config {
    Config {
        max_conns_per_host: Some(n),
        ..Config::default()
    }
}

/// A hook that panics the first time it runs after `armed` is set.
fn once(armed: &Arc<AtomicBool>) -> impl Fn() + Send + Sync + 'static {
    let armed = armed.clone();
    move || {
        if armed.swap(false, Ordering::AcqRel) {
            panic!("a hook panicked");
        }
    }
}

struct Counting(AtomicUsize);

impl Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Every waiter and connection accounted for: nothing waits, nothing is in use.
fn settled(pool: &Pool<TestConn>) {
    let snap = pool.snapshot();
    for h in &snap.hosts {
        assert_eq!(
            (h.idle_conn_waiters, h.conns_per_host_waiters, h.connecting),
            (0, 0, 0),
            "{snap}"
        );
        assert_eq!(h.active, 0, "{snap}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_hook_that_panics_at_checkout_leaves_no_ghost_waiter() {
    let armed = Arc::new(AtomicBool::new(true));
    let hook = once(&armed);
    let stats = Stats::builder()
        .on_idle_conn_wait_in(move |_| hook())
        .build();
    let pool = Pool::with_stats(cap(1), stats);
    let panicked = catch_unwind(AssertUnwindSafe(|| pool.checkout(key("a"))));
    assert!(panicked.is_err(), "the panic reaches the caller");
    // The ghost would hold the only dial slot: the next request must get it.
    let mut b = pool.checkout(key("a"));
    let permit = expect_dial(&mut b);
    assert_eq!(pool.snapshot().hosts[0].idle_conn_waiters, 1);
    permit.finish(Ok(TestConn::new()));
    drop(expect_ready(&mut b));
    drop(b);
    settled(&pool);
}

#[tokio::test(start_paused = true)]
async fn a_hook_that_panics_as_a_connection_is_handed_over_still_wakes_the_waiter() {
    let armed = Arc::new(AtomicBool::new(false));
    let hook = once(&armed);
    let stats = Stats::builder().on_conn_reused(move |_| hook()).build();
    let pool = Pool::with_stats(cap(1), stats);
    let mut a = pool.checkout(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::new()));
    let conn = expect_ready(&mut a);
    // The connection serves a second request, so its hand-over is a reuse.
    drop(conn);
    let mut a2 = pool.checkout(key("a"));
    let conn = expect_ready(&mut a2);
    let mut b = pool.checkout(key("a"));
    let waker = Arc::new(Counting(AtomicUsize::new(0)));
    let w = Waker::from(waker.clone());
    assert!(b.poll_step(&mut Context::from_waker(&w)).is_pending());
    armed.store(true, Ordering::Release);
    let panicked = catch_unwind(AssertUnwindSafe(|| drop(conn)));
    assert!(panicked.is_err(), "the hook's panic reaches the dropper");
    assert_eq!(waker.0.load(Ordering::SeqCst), 1, "the waiter was woken");
    let got = expect_ready(&mut b);
    assert!(got.info().reused);
    drop(got);
    drop((a, a2, b));
    settled(&pool);
}

#[tokio::test(start_paused = true)]
async fn a_hook_that_panics_as_a_connection_goes_idle_does_not_stop_the_reaper() {
    let armed = Arc::new(AtomicBool::new(true));
    let hook = once(&armed);
    let stats = Stats::builder().on_idle_conn_in(move |_| hook()).build();
    let pool = Pool::with_stats(
        Config {
            idle_timeout: Some(Duration::from_secs(1)),
            ..Config::default()
        },
        stats,
    );
    let mut a = pool.checkout(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::new()));
    let conn = expect_ready(&mut a);
    assert!(catch_unwind(AssertUnwindSafe(|| drop(conn))).is_err());
    assert_eq!(pool.snapshot().total_idle(), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pool.snapshot().total_idle(), 0, "the reaper still ran");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_is_open_counts_as_closed_and_the_pool_goes_on() {
    let closed = Arc::new(AtomicUsize::new(0));
    let seen = closed.clone();
    let stats = Stats::builder()
        .on_conn_closed(move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    let pool = Pool::with_stats(cap(1), stats);
    let mut a = pool.checkout(key("a"));
    let conn = TestConn::new();
    let explode = conn.explode.clone();
    expect_dial(&mut a).finish(Ok(conn));
    drop(expect_ready(&mut a)); // idle
    explode.store(true, Ordering::Release);
    // The checkout finds it, `is_open` panics: it counts as closed, its slot is freed, and the
    // panic reaches this caller once the pool is consistent.
    let panicked = catch_unwind(AssertUnwindSafe(|| pool.checkout(key("a"))));
    assert!(panicked.is_err());
    assert_eq!(closed.load(Ordering::SeqCst), 1, "closed, not lost");
    let mut b = pool.checkout(key("a"));
    expect_dial(&mut b).finish(Ok(TestConn::new()));
    drop(expect_ready(&mut b));
    drop((a, b));
    settled(&pool);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_share_counts_as_not_shareable() {
    let pool = Pool::new(cap(2));
    let mut a = pool.checkout_shared(key("a"));
    let conn = TestConn::h2();
    let explode = conn.explode.clone();
    expect_dial(&mut a).finish(Ok(conn));
    let first = expect_ready(&mut a);
    explode.store(true, Ordering::Release);
    // The checkout looks at the shared connection; its `is_open`/`share` panic: it counts
    // as closed, the request dials instead, and the panic reaches this caller after the
    // checkout owns its waiter.
    let b = catch_unwind(AssertUnwindSafe(|| pool.checkout_shared(key("a"))));
    assert!(b.is_err(), "the panic reaches the caller");
    explode.store(false, Ordering::Release);
    let mut c = pool.checkout_shared(key("a"));
    let permit = expect_dial(&mut c);
    permit.finish(Ok(TestConn::h2()));
    let second = expect_ready(&mut c);
    assert_ne!(
        second.id(),
        first.id(),
        "the broken connection takes no new request"
    );
    drop((first, second));
    drop(b);
    drop((a, c));
    settled(&pool);
}

#[test]
fn a_wait_timeout_on_a_runtime_without_timers_still_times_out() {
    // A tokio runtime built without `enable_time`: creating a timer panics there.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = Pool::new(Config {
            max_conns_per_host: Some(1),
            wait_timeout: Some(Duration::from_millis(30)),
            ..Config::default()
        });
        let mut a = pool.checkout(key("a"));
        let _permit = expect_dial(&mut a);
        let mut b = pool.checkout(key("a"));
        expect_pending(&mut b);
        expect_pending(&mut b);
        std::thread::sleep(Duration::from_millis(50));
        let err = expect_err(&mut b);
        assert!(err.is_timeout(), "{err}");
        let snap = err.snapshot().expect("a snapshot of the key");
        assert_eq!(snap.hosts.len(), 1);
    });
}

#[test]
fn a_checkout_polled_after_its_timers_runtime_is_gone_falls_back_to_the_deadline() {
    let timeout = Duration::from_secs(1);
    let pool = Pool::new(Config {
        max_conns_per_host: Some(1),
        wait_timeout: Some(timeout),
        ..Config::default()
    });
    let mut a = pool.checkout(key("a"));
    let _permit = expect_dial(&mut a);
    let mut b = pool.checkout(key("a"));
    let started = std::time::Instant::now();
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    first.block_on(async { expect_pending(&mut b) }); // arms a timer on `first`
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    second.block_on(async {
        // Polling the dead runtime's timer panics inside the pool; it falls back to the
        // deadline, and the checkout waits on until then.
        expect_pending(&mut b);
        let polled_at = started.elapsed();
        std::thread::sleep(timeout.saturating_sub(started.elapsed()));
        assert!(expect_err(&mut b).is_timeout());
        // Not a check of the pool: this test's first half means nothing if it ran late.
        assert!(
            polled_at < timeout,
            "the pending poll came after the deadline"
        );
    });
}

#[tokio::test(start_paused = true)]
async fn a_panicking_dialer_ends_its_dial_and_the_slot_passes_on() {
    let pool = Pool::new(cap(1));
    let mut a = pool.checkout(key("a"));
    let permit = expect_dial(&mut a);
    let mut b = pool.checkout(key("a"));
    expect_pending(&mut b);
    // The dialer's task panics with the permit in hand.
    let _ = catch_unwind(AssertUnwindSafe(move || {
        let _permit = permit;
        panic!("the connector panicked");
    }));
    let err = expect_err(&mut a);
    assert!(err.is_dial(), "{err}");
    // The slot went to the next waiter.
    expect_dial(&mut b).finish(Ok(TestConn::new()));
    drop(expect_ready(&mut b));
    drop((a, b));
    settled(&pool);
}

#[tokio::test(start_paused = true)]
async fn a_hook_that_panics_as_a_dial_delivers_still_wakes_its_owner() {
    let armed = Arc::new(AtomicBool::new(false));
    let hook = once(&armed);
    let stats = Stats::builder().on_conn_opened(move |_| hook()).build();
    let pool = Pool::with_stats(cap(1), stats);
    let mut a = pool.checkout(key("a"));
    let permit = expect_dial(&mut a);
    let waker = Arc::new(Counting(AtomicUsize::new(0)));
    let w = Waker::from(waker.clone());
    assert!(a.poll_step(&mut Context::from_waker(&w)).is_pending());
    armed.store(true, Ordering::Release);
    // The dialer's `finish` runs the hook, which panics after the connection was delivered.
    assert!(catch_unwind(AssertUnwindSafe(|| permit.finish(Ok(TestConn::new())))).is_err());
    assert_eq!(waker.0.load(Ordering::SeqCst), 1, "the owner was woken");
    let conn = expect_ready(&mut a);
    drop(conn);
    drop(a);
    let mut b = pool.checkout(key("a"));
    assert!(matches!(poll(&mut b), Poll::Ready(Ok(Step::Ready(_)))));
    drop(b);
    settled(&pool);
}

/// A connection whose `describe` (under the lock) or whose describer (after it) panics.
struct Described {
    panic_in_describe: bool,
}

struct PanickingDescriber;

impl poolscope::pool::Describe for PanickingDescriber {
    fn describe(&self, row: &mut poolscope::stats::ConnSnapshot) {
        row.requests = 1000;
        panic!("a describer panicked");
    }
}

impl poolscope::pool::Poolable for Described {
    fn is_open(&self) -> bool {
        true
    }

    fn share(&self) -> Option<Self> {
        None
    }

    fn describe(&self) -> Option<Arc<dyn poolscope::pool::Describe>> {
        assert!(!self.panic_in_describe, "describe panicked");
        Some(Arc::new(PanickingDescriber))
    }
}

#[tokio::test(start_paused = true)]
async fn a_describer_that_panics_leaves_the_row_as_the_pool_counted_it() {
    let pool: Pool<Described> = Pool::new(Config::default());
    let mut c = pool.checkout(key("a"));
    let Poll::Ready(Ok(Step::Dial(permit))) = poll_any(&mut c) else {
        panic!("expected a dial");
    };
    permit.finish(Ok(Described {
        panic_in_describe: false,
    }));
    let Poll::Ready(Ok(Step::Ready(conn))) = poll_any(&mut c) else {
        panic!("expected the connection");
    };
    // The snapshot is taken; the describer's panic stays inside it.
    let snap = pool.snapshot();
    let row = &snap.hosts[0].connections[0];
    assert_eq!(
        row.requests, 1,
        "the pool's count, not the describer's: {snap}"
    );
    assert_eq!(row.state, poolscope::stats::ConnState::Active);
    drop(conn);
    assert_eq!(pool.snapshot().hosts[0].idle, 1);
}

#[tokio::test(start_paused = true)]
async fn a_describe_that_panics_as_the_dial_ends_still_delivers_the_connection() {
    let pool: Pool<Described> = Pool::new(Config::default());
    let mut c = pool.checkout(key("a"));
    let Poll::Ready(Ok(Step::Dial(permit))) = poll_any(&mut c) else {
        panic!("expected a dial");
    };
    let finished = catch_unwind(AssertUnwindSafe(|| {
        permit.finish(Ok(Described {
            panic_in_describe: true,
        }))
    }));
    assert!(finished.is_err(), "the panic reaches the caller");
    let Poll::Ready(Ok(Step::Ready(conn))) = poll_any(&mut c) else {
        panic!("the connection is delivered all the same");
    };
    let snap = pool.snapshot();
    assert_eq!(snap.hosts[0].connections.len(), 1, "{snap}");
    drop(conn);
    drop(c);
    let snap = pool.snapshot();
    assert_eq!(
        (snap.hosts[0].idle, snap.hosts[0].connections.len()),
        (1, 1),
        "{snap}"
    );
}

fn poll_any<T: poolscope::pool::Poolable>(
    c: &mut poolscope::pool::Checkout<T>,
) -> Poll<Result<Step<T>, poolscope::pool::Error>> {
    let mut cx = Context::from_waker(Waker::noop());
    c.poll_step(&mut cx)
}
