//! A fault-injecting HTTP server for tests, on 127.0.0.1 and an ephemeral port.
//!
//! HTTP/1.1 is spoken by hand, so each fault happens exactly where it should: close an idle
//! keep-alive connection after a delay, close after N requests (nginx's `keepalive_requests`),
//! `Connection: close`, reset (RST) mid-body, stop after the headers, never respond, a slow
//! body, a malformed status line or header, a `408` on an idle connection, refuse TLS (close
//! right after the client hello), huge headers, an endless body. h2c is served by hyper with
//! the faults that apply to it.
//!
//! The fault can be changed while the server runs ([`FaultServer::set_fault`]); counters tell
//! what the server saw: connections accepted and open, requests by method, and the ids
//! (header `x-request-id`) of requests received, to prove a request was never received twice.
//!
//! [`h2frames`] is a second server, HTTP/2 written frame by frame: a test scripts what it
//! does with each stream (answer, refuse with `REFUSED_STREAM`, reset after reading the body)
//! and when it sends GOAWAY with which last-stream-id.
//!
//! [`proxies`] starts real proxies (tinyproxy, microsocks) on loopback for tests.
//!
//! It only ever binds 127.0.0.1.

#![deny(missing_docs)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod h2;
pub mod h2frames;
pub mod proxies;

/// What the server does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: `200` with body `hello`, keep-alive.
    None,
    /// Close a keep-alive connection once it has been idle this long.
    CloseIdleAfter(Duration),
    /// Close after N responses; the Nth says `Connection: close` (nginx).
    CloseAfter(usize),
    /// Every response says `Connection: close`, and the connection closes.
    ConnectionClose,
    /// Send the head and part of the body, then reset the connection (RST).
    ResetMidBody,
    /// Send the head, then nothing more (the connection stays open).
    StallAfterHeaders,
    /// Read the request, never answer.
    NeverRespond,
    /// Send the body one byte at a time, this far apart.
    SlowBody(Duration),
    /// Answer with a malformed status line.
    MalformedStatus,
    /// Answer with a malformed header line.
    MalformedHeaders,
    /// On a connection idle this long, send `408 Request Timeout` and close.
    Idle408(Duration),
    /// Close every connection right after reading its first bytes (a TLS client hello).
    RefuseTls,
    /// A response head larger than any client should buffer (1 MiB of headers).
    HugeHeaders,
    /// A chunked body that never ends.
    EndlessBody,
    /// Not a fault: a chunked `hello` followed by a trailer field, keep-alive.
    Trailers,
}

/// What the server saw.
#[derive(Debug, Default)]
pub struct Counters {
    accepted: AtomicUsize,
    open: AtomicUsize,
    requests: Mutex<HashMap<String, usize>>,
    ids: Mutex<Vec<String>>,
}

impl Counters {
    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Requests received with `method`.
    pub fn requests(&self, method: &str) -> usize {
        self.requests
            .lock()
            .map(|r| r.get(method).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// The `x-request-id` values received, in order (repeats included).
    pub fn ids(&self) -> Vec<String> {
        self.ids.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn saw(&self, method: &str, id: Option<String>) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry(method.to_owned()).or_default() += 1;
        }
        if let (Some(id), Ok(mut ids)) = (id, self.ids.lock()) {
            ids.push(id);
        }
    }
}

struct Open(Arc<Counters>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The server. Dropping it stops accepting (open connections end with their tasks).
pub struct FaultServer {
    addr: SocketAddr,
    counters: Arc<Counters>,
    fault: Arc<Mutex<Fault>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The protocol the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1, by hand.
    Http1,
    /// h2c (HTTP/2 with prior knowledge), by hyper.
    H2c,
}

impl FaultServer {
    /// Starts on 127.0.0.1 with `fault`, speaking `proto`.
    ///
    /// # Panics
    ///
    /// If 127.0.0.1 cannot be bound (a test environment problem).
    pub async fn start(proto: Proto, fault: Fault) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        let counters = Arc::new(Counters::default());
        let fault = Arc::new(Mutex::new(fault));
        let (c, f) = (counters.clone(), fault.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                c.accepted.fetch_add(1, Ordering::SeqCst);
                c.open.fetch_add(1, Ordering::SeqCst);
                let open = Open(c.clone());
                let (c, f) = (c.clone(), f.clone());
                tokio::spawn(async move {
                    let _open = open;
                    match proto {
                        Proto::Http1 => serve_http1(tcp, c, f).await,
                        Proto::H2c => h2::serve(tcp, c, f).await,
                    }
                });
            }
        });
        FaultServer {
            addr,
            counters,
            fault,
            task,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What it saw.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Changes the fault for requests and connections from now on.
    pub fn set_fault(&self, fault: Fault) {
        if let Ok(mut f) = self.fault.lock() {
            *f = fault;
        }
    }
}

pub(crate) fn current(f: &Mutex<Fault>) -> Fault {
    f.lock().map(|f| *f).unwrap_or(Fault::None)
}

/// Reads one request head and body; `None` when the peer closed or sent garbage.
async fn read_request(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Option<String>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut len = 0usize;
            let mut id = None;
            for line in head.lines().skip(1) {
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if k.eq_ignore_ascii_case("x-request-id") {
                        id = Some(v.trim().to_owned());
                    }
                }
            }
            let total = end + 4 + len;
            while buf.len() < total {
                let mut chunk = [0u8; 4096];
                let n = tcp.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let method = head.split(' ').next().unwrap_or("").to_owned();
            buf.drain(..total);
            return Some((method, id));
        }
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Waits for the next request's first bytes, or `idle` to pass (`false`).
async fn wait_readable(tcp: &TcpStream, idle: Duration) -> bool {
    tokio::time::timeout(idle, tcp.readable()).await.is_ok()
}

/// Says nothing more, but notices when the client gives up and closes.
async fn until_peer_closes(tcp: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    while let Ok(n) = tcp.read(&mut sink).await {
        if n == 0 {
            return;
        }
    }
}

fn reset(tcp: TcpStream) {
    // SO_LINGER 0: close sends RST instead of FIN.
    if let Ok(std) = tcp.into_std() {
        let sock = socket2::Socket::from(std);
        let _ = sock.set_linger(Some(Duration::ZERO));
        drop(sock);
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
const WITH_TRAILERS: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: 42\r\n\r\n";

async fn serve_http1(mut tcp: TcpStream, c: Arc<Counters>, f: Arc<Mutex<Fault>>) {
    let mut buf = Vec::new();
    let mut served = 0usize;
    loop {
        // Idle faults act between requests.
        let between = served > 0 && buf.is_empty();
        match current(&f) {
            Fault::CloseIdleAfter(d) if between && !wait_readable(&tcp, d).await => return,
            Fault::Idle408(d) if between && !wait_readable(&tcp, d).await => {
                let _ = tcp
                    .write_all(b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
                    .await;
                return;
            }
            Fault::RefuseTls => {
                let mut hello = [0u8; 512];
                let _ = tcp.read(&mut hello).await;
                return;
            }
            _ => {}
        }
        let Some((method, id)) = read_request(&mut tcp, &mut buf).await else {
            return;
        };
        c.saw(&method, id);
        served += 1;
        let fault = current(&f);
        let result = match fault {
            Fault::None | Fault::CloseIdleAfter(_) | Fault::Idle408(_) | Fault::RefuseTls => {
                tcp.write_all(OK).await
            }
            Fault::Trailers => tcp.write_all(WITH_TRAILERS).await,
            Fault::CloseAfter(n) => {
                if served >= n {
                    let _ = tcp
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello")
                        .await;
                    return;
                }
                tcp.write_all(OK).await
            }
            Fault::ConnectionClose => {
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                    )
                    .await;
                return;
            }
            Fault::ResetMidBody => {
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
                    .await;
                let _ = tcp.flush().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                reset(tcp);
                return;
            }
            Fault::StallAfterHeaders => {
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
                    .await;
                until_peer_closes(&mut tcp).await;
                return;
            }
            Fault::NeverRespond => {
                until_peer_closes(&mut tcp).await;
                return;
            }
            Fault::SlowBody(d) => {
                let mut r = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
                    .await;
                for b in b"hello" {
                    if r.is_err() {
                        break;
                    }
                    tokio::time::sleep(d).await;
                    r = tcp.write_all(&[*b]).await;
                }
                r
            }
            Fault::MalformedStatus => {
                let _ = tcp.write_all(b"HTTP/1.1 OK-ish\r\n\r\n").await;
                return;
            }
            Fault::MalformedHeaders => {
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\nthis is not a header\r\ncontent-length: 5\r\n\r\nhello")
                    .await;
                return;
            }
            Fault::HugeHeaders => {
                let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
                let line = format!("x-filler: {}\r\n", "a".repeat(1000));
                while head.len() < 1 << 20 {
                    head.extend_from_slice(line.as_bytes());
                }
                head.extend_from_slice(b"content-length: 0\r\n\r\n");
                let _ = tcp.write_all(&head).await;
                return;
            }
            Fault::EndlessBody => {
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                let chunk = format!("4000\r\n{}\r\n", "z".repeat(0x4000));
                while tcp.write_all(chunk.as_bytes()).await.is_ok() {}
                return;
            }
        };
        if result.is_err() {
            return;
        }
    }
}

/// This process's resident set size in KiB (`VmRSS` in `/proc/self/status`), 0 where there is
/// none: for the tests that bound memory.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}
