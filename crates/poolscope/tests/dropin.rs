//! The behaviours hyper-util's legacy client guarantees and its users depend on, held
//! against poolscope's `Client`: connection capture and poisoning, the cause of a
//! connection's failure, upgrades that give back the connector's own stream, and the
//! connection facts every response carries.

mod support;

use std::error::Error as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Empty;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use poolscope::client::{capture_connection, ConnectionInfo};
use poolscope::stats::CloseReason;
use poolscope::{Client, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use support::server::TestServer;

fn get(uri: Uri) -> Request<Empty<Bytes>> {
    let mut req = Request::new(Empty::new());
    *req.uri_mut() = uri;
    req
}

#[tokio::test]
async fn a_captured_connection_is_known_once_the_request_has_it() {
    let server = TestServer::start().await;
    let client = support::client(|_| {});
    let mut req = get(server.url("/"));
    let captured = capture_connection(&mut req);
    assert!(captured.connection_metadata().is_none(), "not before");
    let resp = client.request(req).await.unwrap();
    let info = captured
        .connection_metadata()
        .as_ref()
        .cloned()
        .expect("captured once the request had its connection");
    assert!(!info.is_reused() && !info.is_proxied() && !info.is_negotiated_h2());
    assert_eq!(info.remote_addr(), Some(server.addr));
    // The response says the same.
    let on_resp = resp.extensions().get::<ConnectionInfo>().unwrap();
    assert_eq!(on_resp.id(), info.id());
    support::body(resp).await;
}

#[tokio::test]
async fn capture_works_over_hyper_utils_connector_too() {
    let server = TestServer::start().await;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let mut req = get(server.url("/"));
    let mut captured = capture_connection(&mut req);
    let resp = client.request(req).await.unwrap();
    let info = captured.wait_for_connection_metadata().await;
    let info = info.as_ref().expect("captured");
    // hyper-util's `HttpInfo` gives the addresses.
    assert_eq!(info.remote_addr(), Some(server.addr));
    assert!(resp
        .extensions()
        .get::<hyper_util::client::legacy::connect::HttpInfo>()
        .is_some());
    support::body(resp).await;
}

#[tokio::test]
async fn a_poisoned_connection_is_closed_and_the_next_request_dials_anew() {
    let server = TestServer::start().await;
    let closed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = closed.clone();
    let stats = Stats::builder()
        .on_conn_closed(move |e| seen.lock().unwrap().push(e.reason))
        .build();
    let client = support::client(|b| {
        b.telemetry().stats(stats);
    });
    // A first request: its connection goes idle and would be reused.
    support::body(client.get(server.url("/")).await.unwrap()).await;
    let mut req = get(server.url("/"));
    let captured = capture_connection(&mut req);
    let resp = client.request(req).await.unwrap();
    assert!(resp
        .extensions()
        .get::<ConnectionInfo>()
        .unwrap()
        .is_reused());
    captured.connection_metadata().as_ref().unwrap().poison();
    support::body(resp).await;
    support::eventually("the poisoned connection closed", || {
        closed.lock().unwrap().contains(&CloseReason::Poisoned)
    })
    .await;
    let resp = client.get(server.url("/")).await.unwrap();
    let info = resp.extensions().get::<ConnectionInfo>().unwrap().clone();
    support::body(resp).await;
    assert!(!info.is_reused(), "a new connection");
    assert_eq!(server.counters.connections(), 2);
}

#[tokio::test]
async fn poisoning_from_the_response_works_as_from_the_capture() {
    let server = TestServer::start().await;
    let client = support::client(|_| {});
    let resp = client.get(server.url("/")).await.unwrap();
    resp.extensions().get::<ConnectionInfo>().unwrap().poison();
    support::body(resp).await;
    let resp = client.get(server.url("/")).await.unwrap();
    assert!(!resp
        .extensions()
        .get::<ConnectionInfo>()
        .unwrap()
        .is_reused());
    support::body(resp).await;
    assert_eq!(server.counters.connections(), 2);
}

/// A connection whose IO fails (`fail`), or ends at once (`None`).
struct MockIo {
    fail: Option<&'static str>,
}

impl Connection for MockIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for MockIo {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(match self.fail {
            Some(msg) => Err(std::io::Error::other(msg)),
            None => Ok(()),
        })
    }
}

impl Write for MockIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(match self.fail {
            Some(msg) => Err(std::io::Error::other(msg)),
            None => Ok(buf.len()),
        })
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[derive(Clone)]
struct MockConnector {
    fail: Option<&'static str>,
    dials: Arc<AtomicUsize>,
}

impl tower_service::Service<Uri> for MockConnector {
    type Response = MockIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<MockIo, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        self.dials.fetch_add(1, Ordering::SeqCst);
        let fail = self.fail;
        Box::pin(async move { Ok(MockIo { fail }) })
    }
}

fn mock_client(fail: Option<&'static str>) -> Client<MockConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(MockConnector {
            fail,
            dials: Arc::default(),
        })
}

/// The chain below `err`, as strings, for the assertion messages.
fn chain(err: &dyn std::error::Error) -> Vec<String> {
    let mut out = vec![format!("{err}")];
    let mut src = err.source();
    while let Some(e) = src {
        out.push(format!("{e}"));
        src = e.source();
    }
    out
}

#[tokio::test]
async fn a_connection_failure_is_the_requests_cause_not_a_cancellation() {
    let client = mock_client(Some("mock connection failure"));
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        client.get("http://mocked/".parse().unwrap()),
    )
    .await
    .expect("fails, does not hang")
    .expect_err("the connection fails");
    assert!(
        !err.is_canceled(),
        "a network failure is not a cancellation: {err:?}"
    );
    let hyper_err = err
        .source()
        .and_then(|e| e.downcast_ref::<hyper::Error>())
        .unwrap_or_else(|| panic!("a hyper::Error as the source: {:?}", chain(&err)));
    let io = hyper_err
        .source()
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .unwrap_or_else(|| panic!("the io::Error below it: {:?}", chain(&err)));
    assert_eq!(io.to_string(), "mock connection failure");
}

#[tokio::test]
async fn a_connection_that_ends_at_once_is_an_incomplete_message() {
    let client = mock_client(None);
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        client.get("http://mocked/".parse().unwrap()),
    )
    .await
    .expect("fails, does not hang")
    .expect_err("no response");
    let hyper_err = err
        .source()
        .and_then(|e| e.downcast_ref::<hyper::Error>())
        .unwrap_or_else(|| panic!("a hyper::Error as the source: {:?}", chain(&err)));
    assert!(
        hyper_err.is_incomplete_message(),
        "an incomplete message, not a closed channel: {:?}",
        chain(&err)
    );
}

/// A server that answers one request with `101 Switching Protocols` and `foobar=ready` in the
/// same write, then expects `foo=bar` and answers `bar=foo`.
async fn upgrade_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = sock.read(&mut buf).await.unwrap();
        sock.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foobar\r\n\r\nfoobar=ready")
            .await
            .unwrap();
        let n = sock.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"foo=bar");
        sock.write_all(b"bar=foo").await.unwrap();
    });
    (addr, task)
}

async fn finish_upgrade<T>(parts: hyper::upgrade::Parts<T>)
where
    T: Read + Write + Unpin,
{
    assert_eq!(&parts.read_buf[..], b"foobar=ready");
    let mut io = TokioIo::new(parts.io);
    io.write_all(b"foo=bar").await.unwrap();
    let mut got = Vec::new();
    io.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"bar=foo");
}

#[tokio::test]
async fn an_upgrade_gives_back_poolscopes_stream() {
    let (addr, server) = upgrade_server().await;
    let client = support::client(|b| {
        // A trace, so that the connection's IO events are on.
        b.telemetry().trace(
            poolscope::ClientTrace::builder()
                .on_wrote_request(|_| {})
                .build(),
        );
    });
    let mut req = get(format!("http://{addr}/up").parse().unwrap());
    req.headers_mut()
        .insert(http::header::UPGRADE, "foobar".parse().unwrap());
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    let upgraded = hyper::upgrade::on(resp).await.unwrap();
    let parts = upgraded
        .downcast::<poolscope::connect::Stream>()
        .unwrap_or_else(|_| panic!("the upgraded IO is the connector's Stream"));
    finish_upgrade(parts).await;
    server.await.unwrap();
}

#[tokio::test]
async fn an_upgrade_gives_back_hyper_utils_stream() {
    let (addr, server) = upgrade_server().await;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let resp = client
        .request(get(format!("http://{addr}/up").parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    let upgraded = hyper::upgrade::on(resp).await.unwrap();
    let parts = upgraded
        .downcast::<TokioIo<tokio::net::TcpStream>>()
        .unwrap_or_else(|_| panic!("the upgraded IO is hyper-util's TokioIo<TcpStream>"));
    finish_upgrade(parts).await;
    server.await.unwrap();
}

#[tokio::test]
async fn every_response_says_which_connection_carried_it() {
    let server = TestServer::start().await;
    let client = support::client(|_| {});
    let first = client.get(server.url("/")).await.unwrap();
    let a = first.extensions().get::<ConnectionInfo>().unwrap().clone();
    support::body(first).await;
    let second = client.get(server.url("/")).await.unwrap();
    let b = second.extensions().get::<ConnectionInfo>().unwrap().clone();
    support::body(second).await;
    assert_eq!(a.id(), b.id());
    assert!(!a.is_reused() && !a.was_idle());
    assert!(b.is_reused() && b.was_idle());
    assert_eq!(a.version(), http::Version::HTTP_11);
    assert_eq!(a.remote_addr(), Some(server.addr));
    let local = a.local_addr().expect("a local address");
    assert!(local.ip().is_loopback() && local.port() != 0);
}

#[test]
fn the_response_future_is_send_and_sync_as_hyper_utils() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<poolscope::ResponseFuture>();
    send_sync::<poolscope::Error>();
}

#[tokio::test]
async fn an_error_on_a_connection_says_which_connection() {
    // A server that reads the request and closes without answering.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = sock.read(&mut buf).await;
    });
    let client = support::client(|_| {});
    let err = client
        .get(format!("http://{addr}/").parse().unwrap())
        .await
        .expect_err("no response");
    let conn = err.connect_info().expect("the request had a connection");
    assert_eq!(conn.remote_addr(), Some(addr));
    assert!(!conn.is_reused());
    server.await.unwrap();
    // A failure before any connection has none.
    let refused = client
        .get(
            format!("http://127.0.0.1:{}/", support::closed_port())
                .parse()
                .unwrap(),
        )
        .await
        .expect_err("refused");
    assert!(refused.is_connect() && refused.connect_info().is_none());
}

#[tokio::test]
async fn a_reset_from_a_real_server_reaches_the_caller_as_its_io_error() {
    // A loopback server that reads the request and resets the connection (SO_LINGER 0).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = sock.read(&mut buf).await;
        socket2::SockRef::from(&sock)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(sock);
    });
    let client = support::client(|_| {});
    let err = client
        .get(format!("http://{addr}/").parse().unwrap())
        .await
        .expect_err("reset");
    assert!(!err.is_canceled(), "a reset is not a cancellation: {err:?}");
    let mut io = None;
    let mut src = err.source();
    while let Some(e) = src {
        if let Some(e) = e.downcast_ref::<std::io::Error>() {
            io = Some(e.kind());
        }
        src = e.source();
    }
    assert_eq!(
        io,
        Some(std::io::ErrorKind::ConnectionReset),
        "the io::Error is in the chain: {:?}",
        chain(&err)
    );
    server.await.unwrap();
}
