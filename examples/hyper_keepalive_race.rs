//! A standalone reproduction, with hyper alone (`hyper::client::conn::http1`), of the
//! keep-alive close race that made requests hang forever (`docs/reliability.md`).
//!
//! A loopback server closes each connection 100 ms after its last response (a keep-alive
//! timeout). `LOOPS` threads each keep one connection and send one GET after another,
//! pausing about 100 ms on the thread before each, so the request goes out about when the
//! server closes. When `SendRequest::ready` says the connection can take a request and the
//! connection task ends at that moment, hyper's dispatcher queue (a tokio mpsc channel) is
//! dropped while the request is being put in it; the drain stops at the slot being written,
//! the request stays in the queue, and its response future waits forever (the handle keeps
//! the queue alive). Here a request waiting 5 s counts as hung.
//!
//! ```text
//! cargo run --release -p examples --example hyper_keepalive_race -- [requests per thread]
//! ```
//!
//! Seen on a 2-core VM (`-- 400`: 20,000 requests a run): 1 hung request in each of three
//! runs. poolscope's own client, whose `Gate` closes this race, hangs none
//! (`tests/close_races.rs`).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LOOPS: usize = 50;
const KEEPALIVE: Duration = Duration::from_millis(100);

/// A server that answers every request `ok` and closes a connection idle for `KEEPALIVE`.
async fn server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    let read = tokio::time::timeout(KEEPALIVE, tcp.read(&mut chunk)).await;
                    match read {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        // Idle for the keep-alive timeout, EOF or an error: close.
                        _ => return,
                    }
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if tcp.write_all(resp).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: std::net::SocketAddr) -> Sender {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

fn main() {
    let per_loop: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(server());
    let threads: Vec<_> = (0..LOOPS)
        .map(|l| {
            let handle = rt.handle().clone();
            std::thread::spawn(move || {
                let (mut sent, mut hung, mut failed) = (0u64, 0u64, 0u64);
                let mut tx = handle.block_on(connect(addr));
                for i in 0..per_loop {
                    let spread = ((i * 7919 + l * 104_729) % 2000) as u64;
                    std::thread::sleep(
                        KEEPALIVE + Duration::from_micros(spread) - Duration::from_micros(1500),
                    );
                    let outcome = handle.block_on(async {
                        if tx.ready().await.is_err() {
                            // Closed while idle, seen in time: a new connection.
                            tx = connect(addr).await;
                        }
                        let req = http::Request::get("/").body(Empty::new()).unwrap();
                        tokio::time::timeout(Duration::from_secs(5), async {
                            let resp = tx.send_request(req).await?;
                            resp.into_body().collect().await.map(|_| ())
                        })
                        .await
                    });
                    sent += 1;
                    match outcome {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => {
                            failed += 1;
                            tx = handle.block_on(connect(addr));
                        }
                        Err(_) => {
                            hung += 1;
                            tx = handle.block_on(connect(addr));
                        }
                    }
                }
                (sent, hung, failed)
            })
        })
        .collect();
    let (mut sent, mut hung, mut failed) = (0, 0, 0);
    for t in threads {
        let (s, h, f) = t.join().unwrap();
        sent += s;
        hung += h;
        failed += f;
    }
    println!("{sent} requests: {hung} hung (no answer, no error, for 5 s), {failed} failed");
}
