//! HTTP/2 (h2c prior knowledge, h2 over TLS) and the order of per-request trace events.

mod support;

use bytes::Bytes;
use http::{StatusCode, Version};
use http_body_util::Empty;
use hyper_util::rt::TokioExecutor;
use poolscope::connect::HttpsConnector;
use poolscope::{Client, ClientTrace};
use support::events::TraceLog;
use support::server::{tls_pair, Options, TestServer};
use support::{body, eventually};

/// Go's order of events for a request served by a connection already in the pool.
const REUSED_CONNECTION_EVENTS: [&str; 8] = [
    "get_conn",
    "got_conn",
    "wrote_headers",
    "wrote_request",
    "got_first_response_byte",
    "put_idle_conn",
    "response_body_done",
    "request_done",
];

#[tokio::test]
async fn h2c_with_prior_knowledge_multiplexes_concurrent_requests_on_one_connection() {
    let server = TestServer::start().await;
    let c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, url) = (c.clone(), server.url("/slow/30"));
        tasks.push(tokio::spawn(async move {
            let resp = c.get(url).await.unwrap();
            assert_eq!(resp.version(), Version::HTTP_2);
            body(resp).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "slow");
    }
    assert_eq!(server.counters.connections(), 1, "one shared h2 connection");
    let snap = c.pool_snapshot();
    assert_eq!(
        (snap.total_idle(), snap.total_active(), snap.total_waiters()),
        (1, 0, 0),
        "{snap}"
    );
}

fn https_client(
    trace: ClientTrace,
    http1: bool,
) -> (TestServer, Client<HttpsConnector, Empty<Bytes>>) {
    let (server_cfg, roots) = tls_pair();
    let server = futures_block(TestServer::with(Options {
        tls: Some(server_cfg),
        ..Options::default()
    }));
    let mut connector = HttpsConnector::with_roots(roots);
    if http1 {
        connector = connector.http1_only();
    }
    let c = Client::builder(TokioExecutor::new())
        .telemetry()
        .trace(trace)
        .build(connector);
    (server, c)
}

fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

fn url(server: &TestServer, path: &str) -> http::Uri {
    format!("https://localhost:{}{}", server.addr.port(), path)
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_negotiates_h2_and_reports_tls_details() {
    let log = TraceLog::default();
    let (server, c) = https_client(log.trace(), false);
    let resp = c.get(url(&server, "/")).await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(body(resp).await, "hello");
    let got = &log.got()[0];
    assert_eq!(got.version, Version::HTTP_2);
    let tls = got.tls.as_ref().expect("tls info");
    assert_eq!(tls.alpn.as_deref(), Some("h2"));
    assert!(tls.version.starts_with("TLSv1."), "{}", tls.version);
    assert!(!tls.cipher.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_https_request_reports_events_in_gos_order_and_a_reused_one_skips_the_dial() {
    let log = TraceLog::default();
    let (server, c) = https_client(log.trace(), true);
    let resp = c.get(url(&server, "/")).await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_11);
    body(resp).await;
    eventually("the first request_done", || {
        log.done.lock().unwrap().len() == 1
    })
    .await;
    let names = log.take();
    // localhost resolves to 127.0.0.1 and ::1; only 127.0.0.1 listens, and happy eyeballs may
    // start the second attempt, so compare the sequence with connect attempts collapsed.
    let mut collapsed: Vec<String> = Vec::new();
    for n in names {
        if (n == "connect_start" || n == "connect_done") && collapsed.last() == Some(&n) {
            continue;
        }
        collapsed.push(n);
    }
    let expected = [
        "get_conn",
        "dns_start",
        "dns_done",
        "connect_start",
        "connect_done",
        "tls_handshake_start",
        "tls_handshake_done",
        "got_conn",
        "wrote_headers",
        "wrote_request",
        "got_first_response_byte",
        "put_idle_conn",
        "response_body_done",
        "request_done",
    ];
    let filtered: Vec<&str> = collapsed
        .iter()
        .map(String::as_str)
        .filter(|n| !matches!(*n, "connect_start" | "connect_done"))
        .collect();
    let expected_filtered: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|n| !matches!(*n, "connect_start" | "connect_done"))
        .collect();
    assert_eq!(filtered, expected_filtered, "full sequence: {collapsed:?}");
    let first_connect = collapsed.iter().position(|n| n == "connect_start").unwrap();
    let tls_start = collapsed
        .iter()
        .position(|n| n == "tls_handshake_start")
        .unwrap();
    let dns_done = collapsed.iter().position(|n| n == "dns_done").unwrap();
    assert!(
        dns_done < first_connect && first_connect < tls_start,
        "{collapsed:?}"
    );

    let resp = c.get(url(&server, "/")).await.unwrap();
    body(resp).await;
    eventually("the second request_done", || {
        log.done.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(log.take(), REUSED_CONNECTION_EVENTS);
    let done = log.done.lock().unwrap().clone();
    let first = &done[0].timings;
    assert!(
        first.dns.is_some() && first.connect.is_some() && first.tls.is_some(),
        "{first:?}"
    );
    assert!(first.first_byte.is_some() && first.total >= first.first_byte.unwrap());
    let second = &done[1].timings;
    assert!(second.dns.is_none() && second.tls.is_none(), "{second:?}");
    assert_eq!(done[1].status, Some(StatusCode::OK));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_the_tls_phase() {
    let (server_cfg, _roots) = tls_pair();
    let server = TestServer::with(Options {
        tls: Some(server_cfg),
        ..Options::default()
    })
    .await;
    // Default roots (webpki) do not trust the self-signed certificate.
    let c: Client<_, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpsConnector::new());
    let err = c
        .get(url(&server, "/"))
        .await
        .expect_err("untrusted certificate");
    assert!(err.is_connect());
    assert_eq!(
        err.connect_phase(),
        Some(poolscope::connect::ConnectPhase::Tls)
    );
    assert!(err.to_string().starts_with("tls error"), "{err}");
    // The name matches (a `localhost` certificate for `localhost`): the issuer is the fault.
    let mut chain = Vec::new();
    let mut cause: Option<&dyn std::error::Error> = Some(&err);
    while let Some(e) = cause {
        chain.push(e.to_string());
        cause = e.source();
    }
    assert!(
        chain.iter().any(|m| m.contains("UnknownIssuer")),
        "{chain:?}"
    );
}

#[tokio::test]
async fn a_trace_in_the_request_extensions_runs_with_the_client_wide_one() {
    let server = TestServer::start().await;
    let global = TraceLog::default();
    let own = TraceLog::default();
    let c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .telemetry()
        .trace(global.trace())
        .build_http();
    let mut req = http::Request::new(Empty::new());
    *req.uri_mut() = server.url("/");
    req.extensions_mut().insert(own.trace());
    body(c.request(req).await.unwrap()).await;
    body(c.get(server.url("/")).await.unwrap()).await;
    assert_eq!(global.got().len(), 2);
    assert_eq!(own.got().len(), 1);
}

#[tokio::test]
async fn an_http2_request_without_a_body_reports_its_write_and_its_timings() {
    let server = TestServer::start().await;
    let log = TraceLog::default();
    let c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .telemetry()
        .trace(log.trace())
        .build_http();
    for _ in 0..2 {
        body(c.get(server.url("/")).await.unwrap()).await;
    }
    let names = log.take();
    // The second request runs on the shared connection: no dial events.
    let second = &names[names.iter().rposition(|n| n == "get_conn").unwrap()..];
    assert_eq!(second, REUSED_CONNECTION_EVENTS);
    assert_eq!(
        names.iter().filter(|n| *n == "wrote_request").count(),
        2,
        "once per request: {names:?}"
    );
    for done in log.done.lock().unwrap().iter() {
        let t = &done.timings;
        assert!(t.send.is_some() && t.wait.is_some(), "{t:?}");
        assert!(t.got_conn.unwrap() <= t.first_byte.unwrap() && t.first_byte.unwrap() <= t.total);
    }
}

/// A request body of one data frame and a trailer field.
struct WithTrailers(u8);

impl http_body::Body for WithTrailers {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0 += 1;
        std::task::Poll::Ready(match self.0 {
            1 => Some(Ok(http_body::Frame::data(Bytes::from_static(b"payload")))),
            2 => {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("x-checksum", http::HeaderValue::from_static("7"));
                Some(Ok(http_body::Frame::trailers(trailers)))
            }
            _ => None,
        })
    }
}

#[tokio::test]
async fn a_request_body_that_ends_with_trailers_reports_its_write() {
    let server = TestServer::start().await;
    for http2 in [false, true] {
        let log = TraceLog::default();
        let c: Client<_, WithTrailers> = Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .telemetry()
            .trace(log.trace())
            .build_http();
        let req = http::Request::builder()
            .method("POST")
            .uri(server.url("/"))
            .header("te", "trailers")
            .body(WithTrailers(0))
            .unwrap();
        let resp = c.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        body(resp).await;
        // HTTP/1's `request_done` may come from the task that returns the connection.
        support::eventually("request_done", || !log.done.lock().unwrap().is_empty()).await;
        let names = log.take();
        assert!(
            names.iter().any(|n| n == "wrote_request"),
            "http2={http2}: {names:?}"
        );
        let done = log.done.lock().unwrap().clone();
        assert!(
            done[0].timings.send.is_some(),
            "http2={http2}: {:?}",
            done[0].timings
        );
    }
}
