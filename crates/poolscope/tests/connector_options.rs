//! `HttpConnector`'s hyper-util options, observed on the wire against loopback listeners the
//! tests start: local addresses (the peer address the listener sees), interface binding, a
//! custom resolver (with DNS events, pins, literal IPs, ports and errors), and happy eyeballs
//! without a stagger. Socket options that only the client's socket shows (keepalive, buffers,
//! `TCP_NODELAY`, ...) are read back in the unit tests of `connect::http` and `connect::tcp`.
//! Tests that need Linux (`127.0.0.2` on loopback, `SO_BINDTODEVICE`, the Linux-only setters)
//! are marked so.
#![cfg_attr(
    not(target_os = "linux"),
    allow(dead_code, unused_imports, unused_macros)
)]

mod support;

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::{ready, Ready};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use poolscope::connect::{ConnectError, ConnectPhase, HttpConnector, Stream};
use poolscope::Client;
use support::closed_port;
use support::server::TestServer;
use tokio::net::TcpListener;
use tower_service::Service;

/// Calls `http` as a `tower_service::Service<Uri>`, bounded by 10 s.
async fn connect<S>(mut http: S, uri: &str) -> Result<Stream, ConnectError>
where
    S: Service<Uri, Response = Stream, Error = ConnectError>,
{
    std::future::poll_fn(|cx| http.poll_ready(cx)).await?;
    let uri: Uri = uri.parse().unwrap();
    tokio::time::timeout(Duration::from_secs(10), http.call(uri))
        .await
        .expect("the dial ends")
}

/// The peer address of the next connection `listener` accepts, within 5 s.
async fn accepted(listener: &TcpListener) -> SocketAddr {
    let (_, peer) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("a connection arrives")
        .unwrap();
    peer
}

/// Whether nothing has arrived at `listener` (within 100 ms).
async fn nothing_arrived(listener: &TcpListener) -> bool {
    tokio::time::timeout(Duration::from_millis(100), listener.accept())
        .await
        .is_err()
}

async fn v4_listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// A listener on `[::1]`, where IPv6 loopback exists.
async fn v6_listener() -> Option<(TcpListener, u16)> {
    let l = TcpListener::bind("[::1]:0").await.ok()?;
    let port = l.local_addr().unwrap().port();
    Some((l, port))
}

/// The `io::Error` somewhere in `err`'s source chain.
fn io_cause<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a std::io::Error> {
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = e.source();
    }
    None
}

/// `err` and its sources, as text.
fn chain(err: &(dyn StdError + 'static)) -> Vec<String> {
    let mut out = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        out.push(e.to_string());
        source = e.source();
    }
    out
}

// ---- local addresses ------------------------------------------------------------------------

#[cfg(target_os = "linux")]
#[tokio::test]
async fn set_local_address_is_the_peer_address_the_listener_sees() {
    let (listener, port) = v4_listener().await;
    let mut http = HttpConnector::new();
    http.set_local_address(Some(IpAddr::from([127, 0, 0, 2])));
    let stream = connect(http, &format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap();
    let peer = accepted(&listener).await;
    assert_eq!(peer.ip(), IpAddr::from([127, 0, 0, 2]));
    assert_eq!(stream.info().local_addr, peer);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_local_address_the_host_does_not_have_fails_in_the_connect_phase() {
    let (listener, port) = v4_listener().await;
    let mut http = HttpConnector::new();
    // TEST-NET-1: not an address of this machine.
    http.set_local_address(Some(IpAddr::from([192, 0, 2, 1])));
    let err = connect(http, &format!("http://127.0.0.1:{port}/"))
        .await
        .expect_err("cannot bind");
    assert_eq!(err.phase(), ConnectPhase::Tcp, "{err}");
    let io = io_cause(&err).expect("the bind's io::Error is the cause");
    assert_eq!(io.kind(), std::io::ErrorKind::AddrNotAvailable, "{err}");
    assert!(
        err.to_string()
            .contains("binding to local address 192.0.2.1"),
        "{err}"
    );
    assert!(nothing_arrived(&listener).await);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn set_local_addresses_gives_each_family_its_own() {
    let (listener, port) = v4_listener().await;
    let mut http = HttpConnector::new();
    // The IPv6 address is not this machine's: were it used for IPv4 dials (or the IPv4 one
    // for IPv6 dials), they would fail.
    let unassigned_v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
    http.set_local_addresses(Ipv4Addr::new(127, 0, 0, 2), unassigned_v6);
    let stream = connect(http.clone(), &format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap();
    assert_eq!(accepted(&listener).await.ip(), IpAddr::from([127, 0, 0, 2]));
    assert_eq!(stream.info().local_addr.ip(), IpAddr::from([127, 0, 0, 2]));

    let Some((listener6, port6)) = v6_listener().await else {
        eprintln!("no IPv6 loopback: IPv6 half skipped");
        return;
    };
    let err = connect(http, &format!("http://[::1]:{port6}/"))
        .await
        .expect_err("IPv6 sockets bind the IPv6 address");
    assert_eq!(err.phase(), ConnectPhase::Tcp, "{err}");
    assert!(
        err.to_string()
            .contains("binding to local address 2001:db8::1"),
        "{err}"
    );
    assert!(nothing_arrived(&listener6).await);

    let mut http = HttpConnector::new();
    http.set_local_addresses(Ipv4Addr::new(127, 0, 0, 2), Ipv6Addr::LOCALHOST);
    connect(http, &format!("http://[::1]:{port6}/"))
        .await
        .unwrap();
    assert_eq!(
        accepted(&listener6).await.ip(),
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    );
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_local_address_of_one_family_dials_only_that_family() {
    let Some((listener6, port6)) = v6_listener().await else {
        eprintln!("no IPv6 loopback: skipped");
        return;
    };
    let (listener4, port4) = v4_listener().await;
    // IPv6 first: without a local address, happy eyeballs dials it first, and it answers.
    let resolver = Fixed::new(vec![
        SocketAddr::from((Ipv6Addr::LOCALHOST, port6)),
        SocketAddr::from((Ipv4Addr::LOCALHOST, port4)),
    ]);
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.set_local_address(Some(IpAddr::from([127, 0, 0, 2])));
    // No port in the URI: the resolver's ports are used.
    let stream = connect(http, "http://dual.test/").await.unwrap();
    assert_eq!(
        accepted(&listener4).await.ip(),
        IpAddr::from([127, 0, 0, 2])
    );
    assert_eq!(stream.info().remote_addr.port(), port4);
    assert!(nothing_arrived(&listener6).await, "IPv6 is not dialed");
}

// ---- interface --------------------------------------------------------------------------

#[cfg(target_os = "linux")]
#[tokio::test]
async fn set_interface_lo_reaches_loopback() {
    let (listener, port) = v4_listener().await;
    let mut http = HttpConnector::new();
    http.set_interface("lo");
    let stream = connect(http, &format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap();
    assert_eq!(accepted(&listener).await, stream.info().local_addr);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn an_unknown_interface_fails_in_the_connect_phase_with_the_io_error() {
    let (listener, port) = v4_listener().await;
    let mut http = HttpConnector::new();
    http.set_interface("nosuchif0");
    let err = connect(http, &format!("http://127.0.0.1:{port}/"))
        .await
        .expect_err("no such interface");
    assert_eq!(err.phase(), ConnectPhase::Tcp, "{err}");
    let io = err
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .expect("the source is the io::Error");
    assert_eq!(io.raw_os_error(), Some(19), "ENODEV: {io}");
    assert!(
        err.to_string()
            .contains("binding to interface \"nosuchif0\""),
        "{err}"
    );
    assert!(nothing_arrived(&listener).await);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn bound_to_another_interface_loopback_is_out_of_reach() {
    let Some(other) = std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n != "lo")
    else {
        eprintln!("no interface besides lo: skipped");
        return;
    };
    let (listener, port) = v4_listener().await;
    let mut http = HttpConnector::new();
    http.set_interface(other.clone());
    http.set_connect_timeout(Some(Duration::from_millis(500)));
    let err = connect(http, &format!("http://127.0.0.1:{port}/"))
        .await
        .expect_err("127.0.0.1 is not reachable through {other}");
    assert_eq!(err.phase(), ConnectPhase::Tcp, "{other}: {err}");
    assert!(nothing_arrived(&listener).await);
}

// ---- custom resolver --------------------------------------------------------------------

/// A resolver that answers every name with `addrs`, and records the names it was asked.
#[derive(Clone)]
struct Fixed {
    addrs: Vec<SocketAddr>,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Fixed {
    fn new(addrs: Vec<SocketAddr>) -> Fixed {
        Fixed {
            addrs,
            asked: Arc::default(),
        }
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Service<Name> for Fixed {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        self.asked.lock().unwrap().push(name.as_str().to_owned());
        ready(Ok(self.addrs.clone().into_iter()))
    }
}

/// A resolver whose every lookup fails with "resolver says no", counting lookups.
#[derive(Clone, Default)]
struct Refusing {
    calls: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("resolver says no")
    }
}

impl StdError for Refused {}

impl Service<Name> for Refusing {
    type Response = std::iter::Empty<SocketAddr>;
    type Error = Refused;
    type Future = Ready<Result<Self::Response, Refused>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Refused>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Name) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        ready(Err(Refused))
    }
}

/// DNS events, as text.
#[derive(Clone, Default)]
struct DnsLog(Arc<Mutex<Vec<String>>>);

impl DnsLog {
    fn trace(&self) -> poolscope::ClientTrace {
        let (a, b) = (self.0.clone(), self.0.clone());
        poolscope::ClientTrace::builder()
            .on_dns_start(move |i| a.lock().unwrap().push(format!("dns_start {}", i.host)))
            .on_dns_done(move |i| {
                b.lock().unwrap().push(match &i.error {
                    None => format!("dns_done {:?}", i.addrs),
                    Some(e) => format!("dns_done error: {e}"),
                })
            })
            .build()
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[tokio::test]
async fn a_custom_resolver_sends_a_made_up_name_to_the_listener() {
    let (listener, port) = v4_listener().await;
    let resolver = Fixed::new(vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))]);
    let http = HttpConnector::new_with_resolver(resolver.clone());
    let stream = connect(http, &format!("http://made-up.test:{port}/"))
        .await
        .unwrap();
    assert_eq!(accepted(&listener).await, stream.info().local_addr);
    assert_eq!(
        stream.info().remote_addr,
        SocketAddr::from(([127, 0, 0, 1], port))
    );
    assert_eq!(resolver.asked(), ["made-up.test"]);
}

#[tokio::test]
async fn a_custom_resolvers_lookups_report_dns_events() {
    let server = TestServer::start().await;
    let port = server.addr.port();
    // Port 0: the URI's port applies.
    let resolver = Fixed::new(vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))]);
    let log = DnsLog::default();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .telemetry()
        .trace(log.trace())
        .build(HttpConnector::new_with_resolver(resolver.clone()));
    let resp = client
        .get(format!("http://made-up.test:{port}/").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(support::body(resp).await, "hello");
    assert_eq!(server.counters.connections(), 1);
    assert_eq!(resolver.asked(), ["made-up.test"]);
    assert_eq!(
        log.take(),
        ["dns_start made-up.test", "dns_done [127.0.0.1]"]
    );
}

#[tokio::test]
async fn an_explicit_uri_port_overrides_the_resolvers_port_and_otherwise_it_is_kept() {
    let (listener, port) = v4_listener().await;
    let closed = closed_port();
    // The resolver's port is wrong; the URI names the right one.
    let http = HttpConnector::new_with_resolver(Fixed::new(vec![SocketAddr::from((
        Ipv4Addr::LOCALHOST,
        closed,
    ))]));
    connect(http, &format!("http://made-up.test:{port}/"))
        .await
        .unwrap();
    accepted(&listener).await;
    // No port in the URI: the resolver's (non-zero) port, not 80.
    let http = HttpConnector::new_with_resolver(Fixed::new(vec![SocketAddr::from((
        Ipv4Addr::LOCALHOST,
        port,
    ))]));
    let stream = connect(http, "http://made-up.test/").await.unwrap();
    assert_eq!(stream.info().remote_addr.port(), port);
    accepted(&listener).await;
}

#[tokio::test]
async fn literal_ips_and_pins_do_not_reach_the_custom_resolver() {
    let (listener, port) = v4_listener().await;
    let resolver = Fixed::new(vec![]);
    let mut http = HttpConnector::new_with_resolver(resolver.clone());
    http.resolve_to("pinned.test", port, IpAddr::from([127, 0, 0, 1]));
    connect(http.clone(), &format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap();
    accepted(&listener).await;
    connect(http.clone(), &format!("http://pinned.test:{port}/"))
        .await
        .unwrap();
    accepted(&listener).await;
    assert!(resolver.asked().is_empty(), "{:?}", resolver.asked());
    // Another name does reach it; its empty answer is a DNS error.
    let err = connect(http, &format!("http://other.test:{port}/"))
        .await
        .expect_err("no addresses");
    assert_eq!(err.phase(), ConnectPhase::Dns, "{err}");
    assert_eq!(resolver.asked(), ["other.test"]);
}

#[tokio::test]
async fn a_failing_resolver_is_a_dns_error_caused_by_the_resolvers_error() {
    let (listener, port) = v4_listener().await;
    let resolver = Refusing::default();
    let http = HttpConnector::new_with_resolver(resolver.clone());
    let err = connect(http.clone(), &format!("http://made-up.test:{port}/"))
        .await
        .expect_err("the resolver fails");
    assert_eq!(err.phase(), ConnectPhase::Dns, "{err}");
    assert!(!err.is_timeout());
    let source = err.source().expect("the resolver's error is the source");
    assert!(source.downcast_ref::<Refused>().is_some(), "{source:?}");
    assert!(
        chain(&err).iter().any(|m| m == "resolver says no"),
        "{:?}",
        chain(&err)
    );
    assert!(nothing_arrived(&listener).await);

    // Through the client: a DNS-phase error, and `dns_done` reports it.
    let log = DnsLog::default();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .telemetry()
        .trace(log.trace())
        .build(http);
    let err = client
        .get(format!("http://made-up.test:{port}/").parse().unwrap())
        .await
        .expect_err("the resolver fails");
    assert_eq!(err.connect_phase(), Some(ConnectPhase::Dns), "{err:?}");
    assert!(
        chain(&err).iter().any(|m| m.contains("resolver says no")),
        "{:?}",
        chain(&err)
    );
    let events = log.take();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0], "dns_start made-up.test");
    assert!(events[1].contains("resolver says no"), "{events:?}");
    assert_eq!(resolver.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn hyper_utils_gai_resolver_works_as_a_custom_resolver() {
    let (listener, port) = v4_listener().await;
    let resolver = hyper_util::client::legacy::connect::dns::GaiResolver::new();
    let mut http = HttpConnector::new_with_resolver(resolver);
    // `localhost` may resolve to ::1 first, where nothing listens: fall through at once.
    http.set_happy_eyeballs_timeout(Some(Duration::from_millis(10)));
    let stream = connect(http, &format!("http://localhost:{port}/"))
        .await
        .unwrap();
    assert_eq!(accepted(&listener).await, stream.info().local_addr);
}

// ---- happy eyeballs ---------------------------------------------------------------------

#[tokio::test]
async fn without_a_happy_eyeballs_timeout_addresses_are_tried_one_at_a_time() {
    let (hang, _sock, _fillers) = support::hanging_addr().await;
    let (listener, port) = v4_listener().await;
    let good = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let resolver = Fixed::new(vec![hang, good]);

    let mut http = HttpConnector::new_with_resolver(resolver);
    http.set_connect_timeout(Some(Duration::from_millis(700)));
    http.set_happy_eyeballs_timeout(Some(Duration::from_millis(50)));
    let stream = connect(http.clone(), "http://two.test/").await.unwrap();
    assert_eq!(
        stream.info().remote_addr,
        good,
        "the second started alongside"
    );
    accepted(&listener).await;

    http.set_happy_eyeballs_timeout(None);
    let err = connect(http, "http://two.test/")
        .await
        .expect_err("the first attempt hangs until the connect timeout");
    assert!(
        err.is_timeout() && err.phase() == ConnectPhase::Tcp,
        "{err}"
    );
    assert!(
        nothing_arrived(&listener).await,
        "the second was never tried"
    );
}

// ---- drop-in: hyper-util code compiles unchanged ----------------------------------------

/// Configuration code written for hyper-util's `HttpConnector`, compiled against both
/// connectors: setters used as statements, as tail expressions (which needs them to return
/// `()` as hyper-util's do) and chained where hyper-util returns `&mut Self`.
macro_rules! configure_like_hyper_util {
    ($name:ident, $connector:ty) => {
        #[allow(dead_code)]
        fn $name(c: &mut $connector, on: bool) {
            c.enforce_http(false);
            c.set_keepalive(Some(Duration::from_secs(60)));
            c.set_keepalive_interval(Some(Duration::from_secs(5)));
            c.set_keepalive_retries(Some(3));
            c.set_send_buffer_size(Some(1 << 16));
            c.set_recv_buffer_size(None);
            c.set_local_address(Some(IpAddr::from([127, 0, 0, 1])));
            c.set_local_addresses(Ipv4Addr::LOCALHOST, Ipv6Addr::LOCALHOST);
            c.set_happy_eyeballs_timeout(Some(Duration::from_millis(300)));
            c.set_tcp_user_timeout(Some(Duration::from_secs(10)));
            c.set_mark(None);
            c.set_reuse_address(true).set_interface("lo");
            if on {
                c.set_nodelay(true)
            }
            c.set_connect_timeout(Some(Duration::from_secs(1)))
        }
    };
}

#[cfg(target_os = "linux")]
configure_like_hyper_util!(
    configure_hyper_util,
    hyper_util::client::legacy::connect::HttpConnector
);
#[cfg(target_os = "linux")]
configure_like_hyper_util!(configure_poolscope, HttpConnector);
#[cfg(target_os = "linux")]
configure_like_hyper_util!(configure_poolscope_with_resolver, HttpConnector<Fixed>);

#[cfg(target_os = "linux")]
#[test]
fn hyper_util_style_construction_compiles() {
    let gai = hyper_util::client::legacy::connect::dns::GaiResolver::new();
    let mut a = hyper_util::client::legacy::connect::HttpConnector::new_with_resolver(gai.clone());
    let mut b = HttpConnector::new_with_resolver(gai);
    configure_hyper_util(&mut a, true);
    configure_poolscope_with_gai(&mut b, true);
    let mut c: HttpConnector = HttpConnector::new();
    configure_poolscope(&mut c, false);
}

#[cfg(target_os = "linux")]
configure_like_hyper_util!(
    configure_poolscope_with_gai,
    HttpConnector<hyper_util::client::legacy::connect::dns::GaiResolver>
);
