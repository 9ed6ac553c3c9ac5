//! The pool engine on its own, with Stats hooks: four requests share a per-host cap of two
//! connections, and the hooks show who waited, for how long, and what the pool looked like
//! when the cap was hit.
//!
//! `cargo run -p examples --example pool_stats`

use std::time::Duration;

use poolscope::pool::{Config, ConnectKey, Pool, Poolable};
use poolscope::Stats;

/// A stand-in connection: the engine does not care what it is.
struct FakeConn;

impl Poolable for FakeConn {
    fn is_open(&self) -> bool {
        true
    }
    fn share(&self) -> Option<Self> {
        None
    }
}

#[tokio::main]
async fn main() {
    let stats = Stats::builder()
        .on_max_conns_per_host_hit(|snap| println!("max_conns_per_host hit:\n{snap}\n"))
        .on_conns_per_host_wait_out(|e| {
            println!(
                "{}: left the dial queue after {:?} ({})",
                e.key,
                e.waited,
                e.outcome.as_str()
            )
        })
        .on_idle_conn_wait_out(|e| {
            println!(
                "{}: got a connection after {:?} ({})",
                e.key,
                e.waited,
                e.outcome.as_str()
            )
        })
        .on_conn_reused(|e| {
            println!(
                "{}: connection {} handed straight to a waiter",
                e.key, e.conn_id
            )
        })
        .on_conn_opened(|e| println!("{}: connection {} opened", e.key, e.conn_id))
        .build();
    let pool = Pool::with_stats(
        Config {
            max_conns_per_host: Some(2),
            ..Config::default()
        },
        stats,
    );
    let key = ConnectKey::new("http", "example.internal", 80);

    let mut tasks = Vec::new();
    for i in 0..4u64 {
        let (pool, key) = (pool.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let conn = pool
                .checkout(key)
                .connect_with(|_id| async {
                    tokio::time::sleep(Duration::from_millis(20)).await; // "dialing"
                    Ok(FakeConn)
                })
                .await?;
            tokio::time::sleep(Duration::from_millis(50 + 10 * i)).await; // "the request"
            drop(conn);
            Ok::<_, poolscope::pool::Error>(())
        }));
    }
    for t in tasks {
        t.await.expect("task panicked").expect("checkout failed");
    }
    println!("\nfinal pool:\n{}", pool.snapshot());
}
