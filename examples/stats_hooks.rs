//! Transport-level hooks on a client: 20 concurrent requests against a per-host cap of 4.
//! The hooks show the cap being hit (with the pool at that moment), how long requests waited
//! for a connection, and connections handed straight from one request to the next.
//!
//! `cargo run -p examples --example stats_hooks`

mod local_server;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioExecutor;
use poolscope::{Client, Stats};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let addr = local_server::start().await;
    let first_hit = Arc::new(Mutex::new(None));
    let handed_over = Arc::new(AtomicUsize::new(0));
    let waits = Arc::new(Mutex::new(Vec::new()));
    let stats = {
        let (first_hit, handed_over, waits) =
            (first_hit.clone(), handed_over.clone(), waits.clone());
        Stats::builder()
            .on_max_conns_per_host_hit(move |snap| {
                first_hit
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| snap.to_string());
            })
            .on_conn_reused(move |_| {
                handed_over.fetch_add(1, Ordering::Relaxed);
            })
            .on_idle_conn_wait_out(move |e| waits.lock().unwrap().push(e.waited))
            .on_conn_opened(|e| println!("opened {} to {} in {:?}", e.conn_id, e.key, e.dial_time))
            .build()
    };
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_conns_per_host(4)
        .telemetry()
        .stats(stats)
        .build_http();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (client, uri) = (client.clone(), format!("http://{addr}/slow/25").parse()?);
        tasks.push(tokio::spawn(async move {
            let resp = client.get(uri).await?;
            resp.into_body().collect().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    println!(
        "\npool at the first max_conns_per_host hit:\n{}",
        first_hit
            .lock()
            .unwrap()
            .as_deref()
            .unwrap_or("(never hit)")
    );
    let waits = waits.lock().unwrap();
    let longest = waits.iter().max().copied().unwrap_or_default();
    println!(
        "\n{} requests waited for a connection, the longest {longest:?}",
        waits.len()
    );
    println!(
        "{} connections handed straight to a waiting request",
        handed_over.load(Ordering::Relaxed)
    );
    println!("\nfinal pool:\n{}", client.pool_snapshot());
    Ok(())
}
