//! In-flight registry: the cost of registering and removing a request.
//!
//! `cargo bench -p benches --bench inflight`
//!
//! Target: register + remove < 150 ns without stacks. With stacks, the cost of capturing an
//! unresolved backtrace is what the table records.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use poolscope::inflight::Registry;

fn register_remove(c: &mut Criterion) {
    let mut g = c.benchmark_group("inflight/register_remove");
    let uri: http::Uri = "http://api.example.com:8080/v1/objects/1234?x=1"
        .parse()
        .unwrap();
    for (name, stacks) in [("stacks=off", false), ("stacks=on", true)] {
        let reg = Arc::new(Registry::new(stacks));
        let id = AtomicU64::new(0);
        g.bench_function(name, |b| {
            b.iter(|| {
                let n = id.fetch_add(1, Ordering::Relaxed);
                black_box(reg.register(n, &http::Method::GET, &uri));
            })
        });
    }
    // Two threads registering at once: shards keep them apart.
    let reg = Arc::new(Registry::new(false));
    let id = AtomicU64::new(0);
    g.bench_function("stacks=off/threads=2", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for _ in 0..iters {
                            let n = id.fetch_add(1, Ordering::Relaxed);
                            black_box(reg.register(n, &http::Method::GET, &uri));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = register_remove
}
criterion_main!(benches);
