//! A standalone reproduction, with hyper alone (`hyper::client::conn::http2`), of requests
//! failing with "dispatch task is gone: runtime dropped the dispatch task" when a server with
//! a small stream limit ends a connection with GOAWAY (`docs/reliability.md`).
//!
//! A loopback hyper server allows 4 concurrent streams per connection and shuts each
//! connection down gracefully (GOAWAY) after 50 requests, as nginx does with
//! `http2_max_concurrent_streams 4; keepalive_requests 50;`. 16 tasks share one
//! `SendRequest` and send GETs; when its connection ends they make a new one. hyper's HTTP/2
//! dispatcher holds a request it has opened a stream for while h2 waits for a free stream
//! (`ClientTask::fut_ctx`); when the GOAWAY arrives, the dispatcher returns at once and drops
//! that request's callback unanswered, without handing the request back. The request may or
//! may not have been sent: hyper cannot say.
//!
//! ```text
//! cargo run --release -p examples --example hyper_h2_dispatch_gone -- [requests]
//! ```
//!
//! Seen on a 2-core VM, two runs of 20,000: 234 and 223 requests failed "dispatch task is
//! gone" (the other failures it prints, GOAWAY, `REFUSED_STREAM` and requests handed back
//! unsent, are ones a client can retry: hyper says what happened to them).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A server: 4 streams per connection, GOAWAY after 50 requests.
async fn server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let served = Arc::new(AtomicUsize::new(0));
                let enough = Arc::new(tokio::sync::Notify::new());
                let (s, e) = (served.clone(), enough.clone());
                let svc = hyper::service::service_fn(move |_req| {
                    if s.fetch_add(1, Ordering::SeqCst) + 1 == 50 {
                        e.notify_one();
                    }
                    async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    }
                });
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(4)
                    .serve_connection(TokioIo::new(tcp), svc);
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = enough.notified() => conn.as_mut().graceful_shutdown(),
                }
                let _ = conn.await;
            });
        }
    });
    addr
}

type Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

async fn connect(addr: std::net::SocketAddr) -> Sender {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let addr = server().await;
    let current = Arc::new(tokio::sync::Mutex::new(connect(addr).await));
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (current, next, errors) = (current.clone(), next.clone(), errors.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::SeqCst) < total {
                    let mut tx = {
                        let mut cur = current.lock().await;
                        if cur.is_closed() {
                            *cur = connect(addr).await;
                        }
                        cur.clone()
                    };
                    let req = http::Request::get("http://localhost/")
                        .body(Empty::new())
                        .unwrap();
                    let res = async {
                        let resp = tx.send_request(req).await?;
                        resp.into_body().collect().await.map(|_| ())
                    }
                    .await;
                    if let Err(e) = res {
                        // The cause's text without stream ids.
                        let mut what = e.to_string();
                        if let Some(c) = std::error::Error::source(&e) {
                            what = format!("{what}: {c}");
                        }
                        *errors.lock().unwrap().entry(what).or_default() += 1;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    println!("{total} requests; failed:");
    for (what, n) in errors.lock().unwrap().iter() {
        println!("  {n:6}  {what}");
    }
}
