//! Pool engine micro-benchmarks: checkout + return of an idle connection.
//!
//! `cargo bench -p benches --bench pool`
//!
//! - `uncontended/keys=1` and `keys=10000`: one thread, one idle connection per key, keys
//!   visited round-robin. The target is < 200 ns and flat across key counts.
//! - `hooks=counting`: the same with every Stats hook registered (counting into atomics).
//! - `contended/threads=2`: two threads hammering the same key (two idle connections).
//! - `scale`: per-operation cost at scale, flat when the engine does no O(n) work under its
//!   lock: `waiters=N` (a connection's slot passing to the oldest of N requests waiting to
//!   dial, then its dial finishing), `evict_closed/idle=N` (a server closing N idle
//!   connections of one key at once, which the client learns one connection task at a time:
//!   one `evict_closed` each),
//!   `wait_timeout/keys=N` (a request timing out while N other keys are busy: its error's
//!   snapshot).
//! - `floor`: the primitives a checkout + return cannot avoid (two clock readings, two
//!   lock/unlock pairs, reference counts), measured on the machine at hand, so the pool's
//!   figure can be read against what the machine charges for them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use poolscope::pool::{Config, ConnectKey, Pool, Poolable, Step};
use poolscope::Stats;

struct Conn;

impl Poolable for Conn {
    fn is_open(&self) -> bool {
        true
    }
    fn share(&self) -> Option<Self> {
        None
    }
}

fn step(pool: &Pool<Conn>, key: &ConnectKey) -> Step<Conn> {
    let mut c = pool.checkout(key.clone());
    let mut cx = Context::from_waker(Waker::noop());
    match c.poll_step(&mut cx) {
        Poll::Ready(Ok(step)) => step,
        _ => panic!("benchmark pool should always have a ready step"),
    }
}

/// A pool with one idle connection per key (`per_key` of them).
fn filled(n_keys: usize, per_key: usize, stats: Stats) -> (Pool<Conn>, Vec<ConnectKey>) {
    let pool = Pool::with_stats(Config::default(), stats);
    let keys: Vec<ConnectKey> = (0..n_keys)
        .map(|i| ConnectKey::new("http", &format!("host-{i}.example"), 80))
        .collect();
    for key in &keys {
        let mut held = Vec::new();
        for _ in 0..per_key {
            let mut c = pool.checkout(key.clone());
            let mut cx = Context::from_waker(Waker::noop());
            loop {
                match c.poll_step(&mut cx) {
                    Poll::Ready(Ok(Step::Dial(p))) => p.finish(Ok(Conn)),
                    Poll::Ready(Ok(Step::Ready(conn))) => {
                        held.push(conn);
                        break;
                    }
                    _ => panic!("fill failed"),
                }
            }
        }
    }
    (pool, keys)
}

fn c<E>(n: &Arc<AtomicU64>) -> impl Fn(&E) + Send + Sync + 'static {
    let n = n.clone();
    move |_: &E| {
        n.fetch_add(1, Ordering::Relaxed);
    }
}

fn counting_stats() -> (Stats, Arc<AtomicU64>) {
    let n = Arc::new(AtomicU64::new(0));
    let stats = Stats::builder()
        .on_idle_conn_in(c(&n))
        .on_idle_conn_out(c(&n))
        .on_idle_conn_wait_in(c(&n))
        .on_idle_conn_wait_out(c(&n))
        .on_conn_reused(c(&n))
        .on_conn_opened(c(&n))
        .on_conn_closed(c(&n))
        .build();
    (stats, n)
}

/// Benchmarks run inside a tokio runtime, as a client does (the idle reaper can run).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn uncontended(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("checkout_return/uncontended");
    for n_keys in [1usize, 10_000] {
        let (pool, keys) = filled(n_keys, 1, Stats::default());
        let mut i = 0;
        g.bench_with_input(BenchmarkId::new("keys", n_keys), &n_keys, |b, _| {
            b.iter(|| {
                let key = &keys[i % keys.len()];
                i += 1;
                black_box(step(&pool, key));
            })
        });
    }
    let (stats, count) = counting_stats();
    let (pool, keys) = filled(1, 1, stats);
    g.bench_function("hooks=counting/keys=1", |b| {
        b.iter(|| black_box(step(&pool, &keys[0])))
    });
    assert!(count.load(Ordering::Relaxed) > 0);
    g.finish();
}

fn contended(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("checkout_return/contended");
    let (pool, keys) = filled(1, 2, Stats::default());
    g.bench_function("threads=2/same_key", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for _ in 0..iters {
                            black_box(step(&pool, &keys[0]));
                        }
                    });
                }
            });
            // Per operation of one thread: what each caller sees.
            start.elapsed()
        })
    });
    g.finish();
}

/// A connection whose peer the benchmark can close.
struct Closable(Arc<std::sync::atomic::AtomicBool>);

impl Poolable for Closable {
    fn is_open(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    fn share(&self) -> Option<Self> {
        None
    }
}

fn poll<T: Poolable>(c: &mut poolscope::pool::Checkout<T>) -> Poll<Step<T>> {
    let mut cx = Context::from_waker(Waker::noop());
    match c.poll_step(&mut cx) {
        Poll::Ready(Ok(step)) => Poll::Ready(step),
        Poll::Ready(Err(e)) => panic!("checkout failed: {e}"),
        Poll::Pending => Poll::Pending,
    }
}

fn scale(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("scale");
    let key = ConnectKey::new("http", "busy.example", 80);
    // A slot passing on: cap 1 and no reuse, so each returned connection closes and its slot
    // goes to the oldest of `n` requests waiting to dial, whose dial then finishes.
    for n in [1usize, 100, 10_000] {
        let pool = Pool::<Conn>::new(Config {
            max_conns_per_host: Some(1),
            max_idle_per_host: Some(0),
            ..Config::default()
        });
        let mut first = pool.checkout(key.clone());
        let Poll::Ready(Step::Dial(p)) = poll(&mut first) else {
            panic!("expected a dial")
        };
        p.finish(Ok(Conn));
        let Poll::Ready(Step::Ready(conn)) = poll(&mut first) else {
            panic!("expected the connection")
        };
        let mut held = Some(conn);
        let mut queue = std::collections::VecDeque::new();
        for _ in 0..n {
            let mut w = pool.checkout(key.clone());
            assert!(poll(&mut w).is_pending());
            queue.push_back(w);
        }
        g.bench_with_input(BenchmarkId::new("waiters", n), &n, |b, _| {
            b.iter(|| {
                // Closes (no reuse): the slot passes to the oldest waiter, which dials.
                drop(held.take());
                let Some(mut next) = queue.pop_front() else {
                    panic!("a waiter")
                };
                let Poll::Ready(Step::Dial(p)) = poll(&mut next) else {
                    panic!("the oldest waiter got the slot")
                };
                p.finish(Ok(Conn));
                let Poll::Ready(Step::Ready(conn)) = poll(&mut next) else {
                    panic!("expected its connection")
                };
                held = Some(conn);
                // Keep `n` waiting.
                let mut w = pool.checkout(key.clone());
                assert!(poll(&mut w).is_pending());
                queue.push_back(w);
            })
        });
    }
    // A server closing every idle connection of a key at once.
    for n in [1usize, 100, 10_000] {
        g.bench_with_input(BenchmarkId::new("evict_closed/idle", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0u64;
                while done < iters {
                    let pool = Pool::<Closable>::new(Config::default());
                    let flags: Vec<_> = (0..n)
                        .map(|_| Arc::new(std::sync::atomic::AtomicBool::new(true)))
                        .collect();
                    let mut held = Vec::new();
                    for f in &flags {
                        let mut c = pool.checkout(key.clone());
                        let Poll::Ready(Step::Dial(p)) = poll(&mut c) else {
                            panic!("expected a dial")
                        };
                        p.finish(Ok(Closable(f.clone())));
                        let Poll::Ready(Step::Ready(conn)) = poll(&mut c) else {
                            panic!("expected the connection")
                        };
                        held.push(conn);
                    }
                    drop(held); // all idle
                    let weak = pool.downgrade();
                    let calls = (iters - done).min(n as u64) as usize;
                    // The server closed them all; the client learns it one connection task at
                    // a time: each ends, then reports.
                    let start = Instant::now();
                    for f in &flags[..calls] {
                        f.store(false, Ordering::Relaxed);
                        weak.evict_closed(&key);
                    }
                    total += start.elapsed();
                    done += calls as u64;
                }
                total
            })
        });
    }
    // A request timing out while `n` other keys hold a connection each.
    for n in [1usize, 100, 10_000] {
        let pool = Pool::<Conn>::new(Config {
            max_conns_per_host: Some(1),
            wait_timeout: Some(Duration::ZERO),
            ..Config::default()
        });
        let mut held = Vec::new();
        for i in 0..n {
            let k = ConnectKey::new("http", &format!("host-{i}.example"), 80);
            let mut c = pool.checkout(k);
            let Poll::Ready(Step::Dial(p)) = poll(&mut c) else {
                panic!("expected a dial")
            };
            p.finish(Ok(Conn));
            let Poll::Ready(Step::Ready(conn)) = poll(&mut c) else {
                panic!("expected the connection")
            };
            held.push(conn);
        }
        let hot = ConnectKey::new("http", "host-0.example", 80);
        g.bench_with_input(BenchmarkId::new("wait_timeout/keys", n), &n, |b, _| {
            b.iter(|| {
                let mut c = pool.checkout(hot.clone());
                let mut cx = Context::from_waker(Waker::noop());
                match c.poll_step(&mut cx) {
                    Poll::Ready(Err(e)) => black_box(e),
                    _ => panic!("expected a timeout"),
                };
            })
        });
        drop(held);
    }
    g.finish();
}

fn floor(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("floor");
    g.bench_function("clock_read", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    // A TSC read, calibrated: what a cheaper clock than `Instant::now` would cost.
    let tsc = quanta::Clock::new();
    g.bench_function("clock_read_tsc", |b| b.iter(|| black_box(tsc.now())));
    let lock = std::sync::Mutex::new(0u64);
    g.bench_function("mutex_lock_unlock", |b| {
        b.iter(|| {
            let mut n = black_box(&lock).lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
        })
    });
    let shared = Arc::new(0u64);
    g.bench_function("arc_clone_drop", |b| {
        b.iter(|| black_box(Arc::clone(black_box(&shared))))
    });
    let counter = AtomicU64::new(0);
    g.bench_function("atomic_fetch_add", |b| {
        b.iter(|| black_box(&counter).fetch_add(1, Ordering::AcqRel))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = uncontended, contended, scale, floor
}
criterion_main!(benches);
