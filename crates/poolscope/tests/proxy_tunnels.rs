//! HTTP and HTTPS through real proxies started on loopback (tinyproxy for forward proxying
//! and CONNECT, microsocks for SOCKS5) to a real nginx with a test CA: the client's own
//! proxy choice (`Builder::proxy`: the proxy in the pool key, its events and timing, typed
//! refusals, credentials shown nowhere), and hyper-util's `Tunnel` and `SocksV5` composed
//! under `HttpsConnector` by hand. Each test skips (with a message) where the proxy or nginx
//! is not installed, and fails instead under CI, which installs them (`.ci/run`).

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::proxy::{SocksV5, Tunnel};
use hyper_util::rt::TokioExecutor;
use poolscope::connect::{HttpConnector, HttpsConnector};
use poolscope::{Client, Stats};

use faultserver::proxies;
use support::nginx::{self, Nginx, NginxOptions};

fn skip(what: &str, name: &str) -> bool {
    proxies::skip_unless(
        proxies::installed(what) && nginx::available(),
        &format!("{what} or nginx"),
        name,
    )
}

/// `n` GETs at concurrency `c` through `client`; every one must be 200 "ok\n".
async fn load<C: poolscope::connect::Connect>(
    client: &Client<C, Empty<Bytes>>,
    url: http::Uri,
    n: usize,
    c: usize,
) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < n as u64 {
                let resp = client
                    .get(url.clone())
                    .await
                    .unwrap_or_else(|e| panic!("{e:?}"));
                assert_eq!(resp.status(), 200);
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(&body[..], b"ok\n");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn counted() -> (Stats, Arc<AtomicU64>) {
    support::counting_opened()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_through_an_http_proxy_tunnel_reuses_its_connections() {
    if skip("tinyproxy", "https_through_an_http_proxy_tunnel") {
        return;
    }
    let run = async {
        let nginx = Nginx::start(NginxOptions {
            keepalive_requests: 1000,
            http2: false,
            ..Default::default()
        });
        let proxy = proxies::tinyproxy("");
        let proxy_uri: http::Uri = format!("http://127.0.0.1:{}", proxy.port).parse().unwrap();
        let https = HttpsConnector::with_roots(nginx.roots())
            .wrap(Tunnel::new(proxy_uri, HttpConnector::new()));
        let (stats, opened) = counted();
        // With no cap, a request that waits dials at once, as Go's Transport does, and slow
        // dials (CONNECT, then TLS) that lose to a returned connection go idle: the cap makes
        // the count exact here.
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_conns_per_host(8)
            .telemetry()
            .stats(stats)
            .build(https);
        load(&client, nginx.url("/"), 200, 8).await;
        // Dials the burst started may still be in their CONNECT: counted by the proxy, not
        // yet by `on_conn_opened`.
        support::settle(&client).await;
        let opened = opened.load(Ordering::SeqCst);
        // Every connection the pool opened is one CONNECT at the proxy, and reused after.
        let log = proxy.log();
        let connects = log.matches("CONNECT localhost:").count();
        eprintln!("tunnel: {opened} connections opened, tinyproxy logged {connects} CONNECTs");
        assert!((1..=8).contains(&opened), "{opened} connections for c=8");
        assert_eq!(
            connects as u64, opened,
            "one CONNECT per pooled connection:\n{log}"
        );
        assert_eq!(
            nginx.access_log(200).await.len(),
            200,
            "nginx served every request once"
        );
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_through_a_socks5_proxy_reuses_its_connections() {
    if skip("microsocks", "https_through_a_socks5_proxy") {
        return;
    }
    let run = async {
        let nginx = Nginx::start(NginxOptions {
            keepalive_requests: 1000,
            http2: true,
            ..Default::default()
        });
        let proxy = proxies::microsocks();
        let proxy_uri: http::Uri = format!("socks5://127.0.0.1:{}", proxy.port)
            .parse()
            .unwrap();
        // Remote DNS (socks5h): the proxy resolves `localhost`. The connector beneath dials
        // the proxy's `socks5://` URI, so it must not insist on `http://`.
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let socks = SocksV5::new(proxy_uri, http).local_dns(false);
        let https = HttpsConnector::with_roots(nginx.roots()).wrap(socks);
        let (stats, opened) = counted();
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .telemetry()
            .stats(stats)
            .build(https);
        load(&client, nginx.url("/"), 200, 8).await;
        // Dials the burst started may still be in their CONNECT: counted by the proxy, not
        // yet by `on_conn_opened`.
        support::settle(&client).await;
        let opened = opened.load(Ordering::SeqCst);
        // HTTP/2 over the SOCKS tunnel (ALPN h2): one connection, and nginx saw only the
        // proxy's connections, as many as the pool opened.
        let accepts = nginx.accepts().await;
        eprintln!("socks5: {opened} connections opened, nginx accepted {accepts}");
        assert_eq!(opened, 1, "a cold burst over ALPN h2 makes one connection");
        assert_eq!(accepts, opened);
        assert_eq!(
            nginx
                .access_log(200)
                .await
                .iter()
                .filter(|l| l.uri == "/")
                .count(),
            200
        );
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("bounded");
}

/// Proxy credentials go to the proxy (`Proxy-Authorization` on the CONNECT) and appear in
/// nothing the client reports: errors, the event history, the in-flight report, snapshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_credentials_reach_the_proxy_and_nothing_else() {
    if skip(
        "tinyproxy",
        "proxy_credentials_reach_the_proxy_and_nothing_else",
    ) {
        return;
    }
    const SECRET: &str = "s3cr3t-pw";
    let run = async {
        let nginx = Nginx::start(NginxOptions {
            keepalive_requests: 1000,
            http2: false,
            ..Default::default()
        });
        let proxy = proxies::tinyproxy(&format!("BasicAuth alice {SECRET}"));
        let proxy_uri: http::Uri = format!("http://127.0.0.1:{}", proxy.port).parse().unwrap();
        let client_with = |auth: Option<&str>| {
            let mut tunnel = Tunnel::new(proxy_uri.clone(), HttpConnector::new());
            if let Some(auth) = auth {
                use base64_free::encode;
                let value = format!("Basic {}", encode(auth.as_bytes()));
                tunnel = tunnel.with_auth(value.parse().unwrap());
            }
            let https = HttpsConnector::with_roots(nginx.roots()).wrap(tunnel);
            let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
                .telemetry()
                .event_history(256)
                .build(https);
            client
        };
        // With the credentials: through.
        let good = client_with(Some(&format!("alice:{SECRET}")));
        load(&good, nginx.url("/"), 20, 2).await;
        // With wrong ones: the proxy refuses (407), the request fails in the connect phase.
        let bad = client_with(Some(&format!("alice:not-{SECRET}")));
        let err = bad
            .get(nginx.url("/"))
            .await
            .expect_err("the proxy refuses");
        assert!(err.is_connect(), "{err:?}");
        let mut seen = vec![format!("{err}"), format!("{err:?}")];
        let mut src = std::error::Error::source(&err);
        while let Some(e) = src {
            seen.push(format!("{e} {e:?}"));
            src = e.source();
        }
        for c in [&good, &bad] {
            seen.push(format!("{}", c.pool_snapshot()));
            seen.push(format!("{}", c.in_flight()));
            seen.extend(c.recent_events().iter().map(|e| format!("{e:?}")));
        }
        let header = base64_free::encode(format!("alice:{SECRET}").as_bytes());
        for s in &seen {
            assert!(!s.contains(SECRET), "the proxy password leaked: {s}");
            assert!(!s.contains(&header), "the proxy credentials leaked: {s}");
        }
        eprintln!("refused by the proxy: {}", seen[0]);
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("bounded");
}

/// Base64 for a `Basic` header, without a dependency for one test.
mod base64_free {
    pub fn encode(input: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

/// `http://` through a forward proxy: absolute-form requests on connections to the proxy,
/// with the proxy URI's credentials as `Proxy-Authorization`; a wrong password gets the
/// proxy's refusal, and the password appears in nothing the client reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_through_a_forward_proxy_with_credentials() {
    if skip("tinyproxy", "http_through_a_forward_proxy_with_credentials") {
        return;
    }
    const SECRET: &str = "f0rward-pw";
    let run = async {
        let origin = support::server::TestServer::start().await;
        let proxy = proxies::tinyproxy(&format!("BasicAuth bob {SECRET}"));
        let client_for = |password: &str| {
            let proxy_uri: http::Uri = format!("http://bob:{password}@127.0.0.1:{}", proxy.port)
                .parse()
                .unwrap();
            let (stats, opened) = counted();
            let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
                .telemetry()
                .stats(stats)
                .event_history(256)
                .build(poolscope::connect::ForwardProxy::new(
                    proxy_uri,
                    HttpConnector::new(),
                ));
            (client, opened)
        };
        let (good, opened) = client_for(SECRET);
        for _ in 0..20 {
            let resp = good.get(origin.url("/")).await.unwrap();
            assert_eq!(resp.status(), 200);
            support::body(resp).await;
        }
        assert_eq!(
            origin.counters.requests("GET"),
            20,
            "the origin saw every request"
        );
        let log = proxy.log();
        // tinyproxy closes a client connection after each forwarded request (it answers with
        // `Connection: close`), so every request has its own connection: as many as the
        // proxy accepted (less the one readiness probe of `listening`).
        let accepted = log.matches("Connect (file descriptor").count() as u64 - 1;
        assert_eq!(
            opened.load(Ordering::SeqCst),
            accepted,
            "connections to the proxy:\n{log}"
        );
        let absolute = log
            .matches(&format!(
                "GET http://127.0.0.1:{}/ HTTP/1.1",
                origin.addr.port()
            ))
            .count();
        assert_eq!(absolute, 20, "absolute-form requests at the proxy:\n{log}");
        // A wrong password: the proxy refuses itself (tinyproxy 1.11 answers 401, where
        // RFC 9110 says 407).
        let (bad, _) = client_for("wrong");
        let resp = bad.get(origin.url("/")).await.unwrap();
        assert!(
            matches!(resp.status().as_u16(), 401 | 407),
            "{}",
            resp.status()
        );
        support::body(resp).await;
        assert_eq!(
            origin.counters.requests("GET"),
            20,
            "nothing more reached the origin"
        );
        let header = base64_free::encode(format!("bob:{SECRET}").as_bytes());
        let mut seen = Vec::new();
        for c in [&good, &bad] {
            seen.push(format!("{}", c.pool_snapshot()));
            seen.push(format!("{}", c.in_flight()));
            seen.extend(c.recent_events().iter().map(|e| format!("{e:?}")));
        }
        for s in &seen {
            assert!(
                !s.contains(SECRET) && !s.contains(&header),
                "credentials leaked: {s}"
            );
        }
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("bounded");
}

// ----- Builder::proxy: the client chooses the proxy, poolscope's connectors go through it --

/// What the proxy events of a client's trace saw: (protocol, error) per `proxy_done`, and the
/// `proxy` timing of each request that has one.
#[derive(Clone, Default)]
struct ProxyEvents(Arc<std::sync::Mutex<Seen>>);

/// `proxy_done` events as (protocol, error), and the `proxy` timings of requests.
#[derive(Default)]
struct Seen(Vec<(String, Option<String>)>, Vec<Duration>);

impl ProxyEvents {
    fn trace(&self) -> poolscope::ClientTrace {
        let (a, b) = (self.clone(), self.clone());
        poolscope::ClientTrace::builder()
            .on_proxy_done(move |i| {
                a.0.lock()
                    .unwrap()
                    .0
                    .push((i.protocol.to_owned(), i.error.clone()))
            })
            .on_request_done(move |i| {
                if let Some(p) = i.timings.proxy {
                    b.0.lock().unwrap().1.push(p);
                }
            })
            .build()
    }

    fn done(&self) -> Vec<(String, Option<String>)> {
        self.0.lock().unwrap().0.clone()
    }

    fn timed(&self) -> usize {
        self.0.lock().unwrap().1.len()
    }
}

fn proxy_all(uri: &str) -> poolscope::connect::Proxy {
    poolscope::connect::Proxy::builder()
        .all(uri)
        .build()
        .expect("valid proxy")
}

/// `Builder::proxy` with an HTTP proxy: `https://` goes through a CONNECT tunnel made by
/// `HttpsConnector` itself (no connector composed by hand), each pooled connection is one
/// CONNECT, the key names the proxy, and each dial reports its CONNECT and times it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_proxy_tunnels_https_through_an_http_proxy() {
    if skip("tinyproxy", "builder_proxy_tunnels_https") {
        return;
    }
    let run = async {
        let nginx = Nginx::start(NginxOptions {
            keepalive_requests: 1000,
            http2: false,
            ..Default::default()
        });
        let proxy = proxies::tinyproxy("");
        let events = ProxyEvents::default();
        let (stats, opened) = counted();
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_conns_per_host(8)
            .proxy(proxy_all(&format!("http://127.0.0.1:{}", proxy.port)))
            .telemetry()
            .stats(stats)
            .trace(events.trace())
            .build(HttpsConnector::with_roots(nginx.roots()));
        // The first request waits for the dial it started: its timings have the CONNECT.
        let resp = client.get(nginx.url("/")).await.unwrap();
        support::body(resp).await;
        // (`request_done` comes when the connection is back in the pool, just after the body.)
        support::eventually("the first request times its CONNECT", || {
            events.timed() == 1
        })
        .await;
        load(&client, nginx.url("/"), 199, 8).await;
        // Dials the burst started may still be in their CONNECT: counted by the proxy, not
        // yet by `on_conn_opened`.
        support::settle(&client).await;
        let opened = opened.load(Ordering::SeqCst);
        let log = proxy.log();
        let connects = log.matches("CONNECT localhost:").count() as u64;
        let done = events.done();
        eprintln!(
            "builder proxy: {opened} connections, {connects} CONNECTs, {} proxy_done, {} timed",
            done.len(),
            events.timed()
        );
        assert!((1..=8).contains(&opened), "{opened} connections for c=8");
        assert_eq!(
            connects, opened,
            "one CONNECT per pooled connection:\n{log}"
        );
        assert_eq!(done.len() as u64, opened, "one proxy_done per dial");
        assert!(
            done.iter().all(|(p, e)| p == "CONNECT" && e.is_none()),
            "{done:?}"
        );
        // Later dials belong to requests that may have got another connection first (then
        // their timings have no dial): at most one timing per dial.
        assert!(events.timed() as u64 <= opened);
        let shown = client.pool_snapshot().to_string();
        assert!(
            shown.contains(&format!("via 127.0.0.1:{}", proxy.port)),
            "the key names the proxy:\n{shown}"
        );
        assert_eq!(nginx.access_log(200).await.len(), 200);
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("bounded");
}

/// `Builder::proxy` for `http://`: forward proxying (absolute form at the proxy), and a host
/// in the no-proxy list goes direct, never through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_proxy_forwards_http_and_skips_no_proxy_hosts() {
    if skip("tinyproxy", "builder_proxy_forwards_http") {
        return;
    }
    let run = async {
        let origin = support::server::TestServer::start().await;
        let proxy = proxies::tinyproxy("");
        let p = poolscope::connect::Proxy::builder()
            .all(format!("http://127.0.0.1:{}", proxy.port))
            .no_proxy("localhost")
            .build()
            .unwrap();
        let keys = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let k = keys.clone();
        let trace = poolscope::ClientTrace::builder()
            .on_get_conn(move |i| {
                k.lock().unwrap().insert(i.key.to_string());
            })
            .build();
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .proxy(p)
            .telemetry()
            .trace(trace)
            .build(HttpConnector::new());
        let port = origin.addr.port();
        for host in ["127.0.0.1", "localhost"] {
            for _ in 0..5 {
                let url: http::Uri = format!("http://{host}:{port}/").parse().unwrap();
                let resp = client.get(url).await.unwrap();
                assert_eq!(resp.status(), 200);
                support::body(resp).await;
            }
        }
        assert_eq!(origin.counters.requests("GET"), 10, "the origin saw all");
        let log = proxy.log();
        let via = log
            .matches(&format!("GET http://127.0.0.1:{port}/ HTTP/1.1"))
            .count();
        assert_eq!(
            via, 5,
            "127.0.0.1 through the proxy, in absolute form:\n{log}"
        );
        assert!(
            !log.contains("localhost"),
            "a no-proxy host went through the proxy:\n{log}"
        );
        // The pool keys the requests were queued under: the proxy is in one, not the other.
        let keys = keys.lock().unwrap().clone();
        assert_eq!(
            keys,
            [
                format!("http://127.0.0.1:{port} via 127.0.0.1:{}", proxy.port),
                format!("http://localhost:{port}"),
            ]
            .into_iter()
            .collect(),
        );
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("bounded");
}

/// `Builder::proxy` with SOCKS5, the proxy resolving names (`socks5h`) and the client doing
/// it (`socks5`): HTTP/2 over the tunnel, one connection for a burst, one SOCKS5 exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_proxy_through_socks5_and_socks5h() {
    if skip("microsocks", "builder_proxy_through_socks5") {
        return;
    }
    let run = async {
        let nginx = Nginx::start(NginxOptions {
            keepalive_requests: 1000,
            http2: true,
            ..Default::default()
        });
        let proxy = proxies::microsocks();
        for scheme in ["socks5h", "socks5"] {
            let events = ProxyEvents::default();
            let (stats, opened) = counted();
            let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
                .proxy(proxy_all(&format!("{scheme}://127.0.0.1:{}", proxy.port)))
                .telemetry()
                .stats(stats)
                .trace(events.trace())
                .build(HttpsConnector::with_roots(nginx.roots()));
            load(&client, nginx.url("/"), 200, 8).await;
            let opened = opened.load(Ordering::SeqCst);
            assert_eq!(
                opened, 1,
                "{scheme}: a burst over ALPN h2 is one connection"
            );
            let done = events.done();
            assert_eq!(done.len(), 1, "{scheme}: {done:?}");
            assert_eq!(done[0], ("SOCKS5".to_owned(), None), "{scheme}");
            support::eventually("the dialing request timed it", || events.timed() == 1).await;
        }
        let accepts = nginx.accepts().await;
        assert_eq!(
            accepts, 2,
            "nginx saw one connection per client, from the proxy"
        );
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("bounded");
}

/// A proxy that refuses fails the request with a typed `proxy` error naming the proxy and
/// its status: 407 without the right credentials, 403 for a port it does not tunnel to. The
/// credentials (right and wrong) appear in nothing the client reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_proxy_fails_with_its_status_and_shows_no_credentials() {
    if skip("tinyproxy", "a_refusing_proxy_fails_with_its_status") {
        return;
    }
    const SECRET: &str = "r1ght-pw";
    const WRONG: &str = "wr0ng-pw";
    let run = async {
        let nginx = Nginx::start(NginxOptions {
            keepalive_requests: 1000,
            http2: false,
            ..Default::default()
        });
        let strict = proxies::tinyproxy(&format!("BasicAuth alice {SECRET}"));
        let ports = proxies::tinyproxy("ConnectPort 443");
        let events = ProxyEvents::default();
        let client_via = |uri: String| {
            let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
                .proxy(proxy_all(&uri))
                .telemetry()
                .event_history(256)
                .trace(events.trace())
                .build(HttpsConnector::with_roots(nginx.roots()));
            client
        };
        let good = client_via(format!("http://alice:{SECRET}@127.0.0.1:{}", strict.port));
        load(&good, nginx.url("/"), 10, 2).await;
        let anonymous = client_via(format!("http://127.0.0.1:{}", strict.port));
        let bad = client_via(format!("http://alice:{WRONG}@127.0.0.1:{}", strict.port));
        let denied = client_via(format!("http://127.0.0.1:{}", ports.port));
        let mut seen = Vec::new();
        // tinyproxy 1.11 answers wrong credentials with 401 (RFC 9110 says 407, which it
        // sends when there are none).
        for (client, status, proxy) in [
            (&anonymous, 407, strict.port),
            (&bad, 401, strict.port),
            (&denied, 403, ports.port),
        ] {
            let err = client.get(nginx.url("/")).await.expect_err("refused");
            assert_eq!(
                err.connect_phase(),
                Some(poolscope::connect::ConnectPhase::Proxy),
                "{err:?}"
            );
            assert_eq!(
                err.proxy_status().map(|s| s.as_u16()),
                Some(status),
                "{err:?}"
            );
            let text = poolscope_error_text(&err);
            assert!(
                text.contains(&format!("127.0.0.1:{proxy}")) && text.contains(&status.to_string()),
                "the error names the proxy and its status: {text}"
            );
            eprintln!("refused: {text}");
            seen.push(text);
            seen.push(format!("{err:?}"));
        }
        for c in [&good, &anonymous, &bad, &denied] {
            seen.push(c.pool_snapshot().to_string());
            seen.push(c.in_flight().to_string());
            seen.extend(c.recent_events().iter().map(|e| format!("{e:?}")));
        }
        seen.extend(events.done().iter().map(|e| format!("{e:?}")));
        seen.push(format!(
            "{:?}",
            proxy_all(&format!("http://alice:{SECRET}@127.0.0.1:1"))
        ));
        for pw in [SECRET, WRONG] {
            let header = base64_free::encode(format!("alice:{pw}").as_bytes());
            for s in &seen {
                assert!(!s.contains(pw), "a proxy password leaked: {s}");
                assert!(!s.contains(&header), "proxy credentials leaked: {s}");
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("bounded");
}

/// The error and its causes on one line.
fn poolscope_error_text(err: &poolscope::Error) -> String {
    let mut s = err.to_string();
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// With `Builder::proxy`, a connector that cannot go through proxies (hyper-util's) fails
/// the dial instead of reaching the origin directly.
#[tokio::test]
async fn builder_proxy_refuses_a_connector_that_would_go_direct() {
    let origin = support::server::TestServer::start().await;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .proxy(proxy_all("http://127.0.0.1:9"))
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let err = client.get(origin.url("/")).await.expect_err("refused");
    assert_eq!(
        err.connect_phase(),
        Some(poolscope::connect::ConnectPhase::Proxy),
        "{err:?}"
    );
    assert!(
        poolscope_error_text(&err).contains("does not route through proxies"),
        "{err:?}"
    );
    assert_eq!(
        origin.counters.requests("GET"),
        0,
        "nothing reached the origin"
    );
}
