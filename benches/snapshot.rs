//! What a pool snapshot costs per connection, through the real client: N idle keep-alive
//! connections to a loopback server, `Client::pool_snapshot()` with and without
//! `snapshot_tcp_info` (one `getsockopt(TCP_INFO)` per connection).
//!
//! `cargo bench -p benches --bench snapshot`

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use poolscope::connect::HttpConnector;
use poolscope::Client;
use tokio::sync::Barrier;

/// A loopback server that answers once `n` requests are in (so that `n` requests at once
/// make `n` connections).
async fn server(n: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let barrier = Arc::new(Barrier::new(n));
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let barrier = barrier.clone();
                    async move {
                        barrier.wait().await;
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

async fn with_connections(n: usize, tcp_info: bool) -> Client<HttpConnector, Empty<Bytes>> {
    let addr = server(n).await;
    let mut b = Client::builder(TokioExecutor::new());
    b.telemetry().snapshot_tcp_info(tcp_info);
    let client: Client<_, Empty<Bytes>> = b.build_http();
    let url: http::Uri = format!("http://{addr}/").parse().unwrap();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (c, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let resp = c.get(url).await.unwrap();
                resp.into_body().collect().await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for _ in 0..100 {
        if client.pool_snapshot().total_idle() == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(client.pool_snapshot().total_idle(), n);
    client
}

fn snapshot(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("snapshot");
    for n in [1usize, 16, 256] {
        for tcp_info in [false, true] {
            let client = rt.block_on(with_connections(n, tcp_info));
            g.throughput(Throughput::Elements(n as u64));
            let name = if tcp_info { "tcp_info" } else { "rows" };
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| black_box(client.pool_snapshot()))
            });
            drop(client);
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = snapshot
}
criterion_main!(benches);
