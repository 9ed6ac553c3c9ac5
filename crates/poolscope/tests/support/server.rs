//! A loopback hyper server for client tests: HTTP/1.1 and h2c on one port (or h2 over TLS
//! with an rcgen certificate), counting connections and requests. Paths choose behaviour:
//!
//! - `/` (and any other path) → 200 "hello"
//! - `/slow/MS` → 200 "slow" after MS milliseconds
//! - `/close` → 200 "bye" with `Connection: close`
//! - `/bytes/N` → 200 with N bytes
//! - `/status/N` → status N, empty body
//! - `/authority` → 200 "AUTHORITY HOST": the request's `:authority` (or `-`) and `Host`
//! - `/header/NAME` → 200 with the request's header NAME (empty when it has none)
//! - `/upgrade` → 101, then the connection echoes what it reads
//! - `CONNECT` (any target) → 200 with `x-target` (the request target the server saw), then
//!   the connection echoes
//!
//! With `drop_second_request`, the second request on each connection is read and the
//! connection is closed without a response: a keep-alive connection the server gave up on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

#[derive(Default)]
pub struct Counters {
    pub connections: AtomicUsize,
    pub open: AtomicUsize,
    pub requests: Mutex<HashMap<String, usize>>,
}

impl Counters {
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    pub fn requests(&self, method: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .get(method)
            .copied()
            .unwrap_or(0)
    }
}

#[derive(Clone, Default)]
pub struct Options {
    pub drop_second_request: bool,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub http1_only: bool,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    _task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with(Options::default()).await
    }

    pub async fn with(opts: Options) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                c.connections.fetch_add(1, Ordering::SeqCst);
                c.open.fetch_add(1, Ordering::SeqCst);
                let (c, opts) = (c.clone(), opts.clone());
                tokio::spawn(async move {
                    serve_conn(tcp, c.clone(), opts).await;
                    c.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        TestServer {
            addr,
            counters,
            _task: task,
        }
    }

    pub fn url(&self, path: &str) -> http::Uri {
        format!("http://{}{}", self.addr, path).parse().unwrap()
    }
}

async fn serve_conn(tcp: tokio::net::TcpStream, c: Arc<Counters>, opts: Options) {
    let per_conn = Arc::new(AtomicUsize::new(0));
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (c, per_conn, drop_second) = (c.clone(), per_conn.clone(), opts.drop_second_request);
        async move {
            *c.requests
                .lock()
                .unwrap()
                .entry(req.method().to_string())
                .or_default() += 1;
            let n = per_conn.fetch_add(1, Ordering::SeqCst);
            if drop_second && n == 1 {
                return Err("dropping the connection".to_string());
            }
            Ok::<_, String>(respond(req).await)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if opts.http1_only {
        builder = builder.http1_only();
    }
    match opts.tls {
        Some(cfg) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                .await;
        }
        None => {
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                .await;
        }
    }
}

/// CONNECT (answered 200) and `GET /upgrade` (answered 101): the connection then echoes.
fn upgrade_and_echo(mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let target = req.uri().to_string();
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on.await {
            let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    if req.method() == http::Method::CONNECT {
        // A 2xx to CONNECT has no body: a header says which request target the server saw.
        Response::builder()
            .header("x-target", target)
            .body(Full::default())
            .unwrap()
    } else {
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(http::header::CONNECTION, "upgrade")
            .header(http::header::UPGRADE, "echo")
            .body(Full::default())
            .unwrap()
    }
}

async fn respond(req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() == http::Method::CONNECT || req.uri().path() == "/upgrade" {
        return upgrade_and_echo(req);
    }
    let path = req.uri().path().to_owned();
    if let Some(name) = path.strip_prefix("/header/") {
        let value = req
            .headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        return Response::new(Full::from(value));
    }
    if path == "/authority" {
        // What the server was told the request is for: `:authority` (HTTP/2) and `Host`.
        let authority = req.uri().authority().map_or("-", |a| a.as_str()).to_owned();
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        return Response::new(Full::from(format!("{authority} {host}")));
    }
    let _ = req.into_body().collect().await;
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next()) {
        (Some("slow"), Some(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            Response::new(Full::from("slow"))
        }
        (Some("close"), _) => Response::builder()
            .header("connection", "close")
            .body(Full::from("bye"))
            .unwrap(),
        (Some("bytes"), Some(n)) => Response::new(Full::from(vec![b'x'; n.parse().unwrap_or(0)])),
        (Some("status"), Some(code)) => Response::builder()
            .status(StatusCode::from_bytes(code.as_bytes()).unwrap_or(StatusCode::OK))
            .body(Full::default())
            .unwrap(),
        _ => Response::new(Full::from("hello")),
    }
}

/// A self-signed certificate for `localhost` and the client roots that trust it.
pub fn tls_pair() -> (Arc<rustls::ServerConfig>, rustls::RootCertStore) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![der.clone()], key)
    .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    (Arc::new(server), roots)
}
