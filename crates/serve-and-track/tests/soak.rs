//! Soak: many requests against serve-and-track with metrics, tracing and in-flight tracking
//! on; resident memory is sampled at intervals and must stay flat.
//!
//! CI runs `soak_short` (30,000 requests). The full run is ignored by default:
//! `cargo test --release -p serve-and-track --test soak -- --ignored --nocapture`
//! (1,000,000 requests; its figures are in docs/benchmarks.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioExecutor;
use poolscope::{Client, ClientTrace, Stats};
use serve_and_track::{Config, LogSink, Server};

/// Runs `total` requests with 32 concurrent; returns (requests done, RSS samples in KiB).
fn soak(total: u64) -> (u64, Vec<(u64, u64)>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // A real Prometheus recorder receives the client's metrics.
        let prom = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_enable_unit_suffix(true)
            .install_recorder()
            .ok();
        // As an application must: upkeep drains histogram samples (the exporter's HTTP
        // listener would do this itself).
        if let Some(p) = prom.clone() {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    p.run_upkeep();
                }
            });
        }
        let server = Server::bind(
            Config {
                addr: "127.0.0.1:0".parse().unwrap(),
                ..Config::default()
            },
            LogSink::none(),
        )
        .await
        .unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(server.run(std::future::pending()));
        let events = Arc::new(AtomicU64::new(0));
        let e1 = events.clone();
        let e2 = events.clone();
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_conns_per_host(16)
            .telemetry()
            .metrics(true)
            .event_history(1024)
            .stats(
                Stats::builder()
                    .on_conn_opened(move |_| {
                        e1.fetch_add(1, Ordering::Relaxed);
                    })
                    .build(),
            )
            .trace(
                ClientTrace::builder()
                    .on_request_done(move |i| {
                        e2.fetch_add(i.timings.total.as_micros() as u64, Ordering::Relaxed);
                    })
                    .build(),
            )
            .build_http();
        let uri: http::Uri = format!("http://{addr}/track").parse().unwrap();
        let issued = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let mut samples = vec![(0, faultserver::rss_kib())];
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (client, uri, issued, done) =
                (client.clone(), uri.clone(), issued.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                while issued.fetch_add(1, Ordering::Relaxed) < total {
                    let resp = client.get(uri.clone()).await.expect("request");
                    resp.into_body().collect().await.expect("body");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let start = Instant::now();
        let step = (total / 10).max(1);
        let mut next = step;
        while done.load(Ordering::Relaxed) < total {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let d = done.load(Ordering::Relaxed);
            if d >= next {
                samples.push((d, faultserver::rss_kib()));
                next += step;
            }
            assert!(
                start.elapsed() < Duration::from_secs(3600),
                "soak took too long"
            );
        }
        for t in tasks {
            t.await.unwrap();
        }
        samples.push((total, faultserver::rss_kib()));
        if let Some(p) = prom {
            assert!(p.render().contains("http_client_request_duration_seconds"));
        }
        assert!(client.in_flight().is_empty());
        (done.load(Ordering::Relaxed), samples)
    })
}

fn flat(samples: &[(u64, u64)], slack_kib: u64) {
    for (n, kib) in samples {
        eprintln!("{n:>9} requests: RSS {kib} KiB");
    }
    // After warm-up (the second sample), memory must not keep growing.
    let warm = samples[1].1;
    let last = samples[samples.len() - 1].1;
    assert!(
        last <= warm + slack_kib,
        "RSS grew from {warm} KiB to {last} KiB"
    );
}

#[test]
fn soak_short() {
    let (done, samples) = soak(30_000);
    assert_eq!(done, 30_000);
    flat(&samples, 8 * 1024);
}

#[test]
#[ignore = "a million requests: run by hand, see docs/benchmarks.md"]
fn soak_million() {
    let (done, samples) = soak(1_000_000);
    assert_eq!(done, 1_000_000);
    flat(&samples, 8 * 1024);
}
