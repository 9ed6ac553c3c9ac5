//! The client's spans through the real OpenTelemetry SDK: `tracing-opentelemetry` exporting
//! to `opentelemetry_sdk`'s in-memory exporter. A fresh request, a reused one, a 404 and a
//! refused connect; a request that queued; a dial that serves another request than the one
//! that started it; W3C `traceparent` injection; and the pool's events as `tracing` events.
//! Run with `cargo test -p poolscope --features tracing --test tracing_otel` (`.ci/run`
//! does).
#![cfg(feature = "tracing")]

mod support;

use opentelemetry::trace::{SpanKind, Status, TracerProvider as _};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use support::closed_port;
use support::server::TestServer;
use tracing_subscriber::layer::SubscriberExt;

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn int(span: &SpanData, key: &str) -> Option<i64> {
    match attr(span, key)? {
        Value::I64(n) => Some(*n),
        other => panic!("{key} is not an integer: {other:?}"),
    }
}

fn text(span: &SpanData, key: &str) -> Option<String> {
    attr(span, key).map(|v| v.as_str().into_owned())
}

/// A subscriber exporting to an in-memory exporter: run `f` under it, then get the spans.
fn exported<T>(f: impl FnOnce() -> T) -> (T, Vec<SpanData>) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("poolscope-test")));
    let out = tracing::subscriber::with_default(subscriber, f);
    provider.force_flush().unwrap();
    (out, exporter.get_finished_spans().unwrap())
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The spans whose parent is `parent`.
fn children<'a>(spans: &'a [SpanData], parent: &SpanData) -> Vec<&'a SpanData> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_context.span_id())
        .collect()
}

/// The spans `span` links to.
fn linked<'a>(spans: &'a [SpanData], span: &SpanData) -> Vec<&'a SpanData> {
    span.links
        .iter()
        .filter_map(|l| {
            spans
                .iter()
                .find(|s| s.span_context.span_id() == l.span_context.span_id())
        })
        .collect()
}

fn float(span: &SpanData, key: &str) -> Option<f64> {
    match attr(span, key)? {
        Value::F64(n) => Some(*n),
        other => panic!("{key} is not a float: {other:?}"),
    }
}

#[test]
fn request_spans_carry_the_http_client_conventions() {
    let ((port, refused_port), spans) = exported(|| {
        block_on(async {
            let server = TestServer::start().await;
            let c = support::client(|b| {
                b.telemetry()
                    .redact_url(|u| u.to_string().replace("secret", "[redacted]"));
            });
            let url = format!("http://user:pw@127.0.0.1:{}/secret", server.addr.port());
            support::body(c.get(url.parse().unwrap()).await.unwrap()).await;
            support::body(c.get(server.url("/")).await.unwrap()).await;
            support::body(c.get(server.url("/status/404")).await.unwrap()).await;
            let refused = closed_port();
            let bad = format!("http://127.0.0.1:{refused}/");
            assert!(c.get(bad.parse().unwrap()).await.is_err());
            (server.addr.port(), refused)
        })
    });
    let requests: Vec<&SpanData> = spans
        .iter()
        .filter(|s| attr(s, "http.request.method").is_some())
        .collect();
    assert_eq!(requests.len(), 4, "one span per request: {spans:#?}");
    // Ended in order: the spans end when each response body ends.
    let (fresh, reused, not_found, failed) = (requests[0], requests[1], requests[2], requests[3]);
    for s in &requests {
        assert_eq!(s.name, "GET");
        assert_eq!(s.span_kind, SpanKind::Client);
        assert_eq!(text(s, "url.scheme").as_deref(), Some("http"));
        assert_eq!(text(s, "server.address").as_deref(), Some("127.0.0.1"));
    }
    assert_eq!(int(fresh, "server.port"), Some(i64::from(port)));
    assert_eq!(
        text(fresh, "url.full").as_deref(),
        Some(format!("http://127.0.0.1:{port}/[redacted]").as_str()),
        "no userinfo, through redact_url"
    );
    assert_eq!(int(fresh, "http.response.status_code"), Some(200));
    assert_eq!(
        text(fresh, "network.protocol.version").as_deref(),
        Some("1.1")
    );
    assert_eq!(
        text(fresh, "network.peer.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(int(fresh, "network.peer.port"), Some(i64::from(port)));
    assert_eq!(
        attr(fresh, "poolscope.connection.reused"),
        Some(&Value::Bool(false))
    );
    assert_eq!(fresh.status, Status::Unset);
    assert_eq!(attr(fresh, "error.type"), None);
    assert_eq!(
        attr(reused, "poolscope.connection.reused"),
        Some(&Value::Bool(true))
    );
    assert_eq!(
        int(reused, "poolscope.connection.id"),
        int(fresh, "poolscope.connection.id")
    );
    assert_eq!(int(not_found, "http.response.status_code"), Some(404));
    assert_eq!(text(not_found, "error.type").as_deref(), Some("404"));
    assert!(
        matches!(not_found.status, Status::Error { .. }),
        "{:?}",
        not_found.status
    );
    assert_eq!(int(failed, "server.port"), Some(i64::from(refused_port)));
    assert_eq!(text(failed, "error.type").as_deref(), Some("connect"));
    assert!(
        matches!(failed.status, Status::Error { .. }),
        "{:?}",
        failed.status
    );
    assert_eq!(attr(failed, "http.response.status_code"), None);

    // The fresh request waited for its own dial, in a child span; the reused one did not.
    let waits = children(&spans, fresh);
    assert_eq!(waits.len(), 1, "{spans:#?}");
    assert_eq!(waits[0].name, "wait_for_connection");
    assert_eq!(
        waits[0].span_context.trace_id(),
        fresh.span_context.trace_id()
    );
    assert!(children(&spans, reused).is_empty());
    assert!(children(&spans, not_found).is_empty());
    // It links to its connection's setup: a root span of its own trace.
    let setups = linked(&spans, fresh);
    assert_eq!(setups.len(), 1, "{:#?}", fresh.links);
    let setup = setups[0];
    assert_eq!(setup.name, "connection_setup");
    assert_eq!(setup.parent_span_id, opentelemetry::trace::SpanId::INVALID);
    assert_ne!(setup.span_context.trace_id(), fresh.span_context.trace_id());
    assert_eq!(int(setup, "server.port"), Some(i64::from(port)));
    assert_eq!(
        int(setup, "poolscope.connection.id"),
        int(fresh, "poolscope.connection.id")
    );
    assert_eq!(
        text(setup, "network.peer.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        text(setup, "network.protocol.version").as_deref(),
        Some("1.1")
    );
    assert!(float(setup, "poolscope.connect_s").unwrap() > 0.0);
    assert!(reused.links.is_empty() && not_found.links.is_empty());
    // The refused dial has a setup span too, failed; the request waited for it.
    assert_eq!(children(&spans, failed).len(), 1);
    let failed_setup = spans
        .iter()
        .find(|s| {
            s.name == "connection_setup" && int(s, "server.port") == Some(i64::from(refused_port))
        })
        .expect("the refused dial's span");
    assert_eq!(text(failed_setup, "error.type").as_deref(), Some("connect"));
    assert!(matches!(failed_setup.status, Status::Error { .. }));
    assert_eq!(
        spans
            .iter()
            .filter(|s| s.name == "connection_setup")
            .count(),
        2,
        "one per dial"
    );
}

#[test]
fn a_request_that_queued_has_a_wait_for_connection_span_as_long_as_its_wait() {
    let (_, spans) = exported(|| {
        block_on(async {
            let server = TestServer::start().await;
            let c = support::client(|b| {
                b.pool_max_conns_per_host(1);
            });
            let slow = c.get(server.url("/slow/150"));
            let first = tokio::spawn(async move { support::body(slow.await.unwrap()).await });
            // The slow request holds the one slot: the next one queues.
            support::eventually("the slow request on its connection", || {
                c.pool_snapshot().total_active() == 1
            })
            .await;
            support::body(c.get(server.url("/queued")).await.unwrap()).await;
            first.await.unwrap();
        })
    });
    let queued = spans
        .iter()
        .find(|s| text(s, "url.full").is_some_and(|u| u.ends_with("/queued")))
        .expect("the queued request's span");
    let waits = children(&spans, queued);
    assert_eq!(waits.len(), 1, "{spans:#?}");
    let wait = waits[0];
    assert_eq!(wait.name, "wait_for_connection");
    let waited = wait.end_time.duration_since(wait.start_time).unwrap();
    assert!(
        waited >= std::time::Duration::from_millis(80),
        "it waited for the slow request to end: {waited:?}"
    );
    let in_queue = float(queued, "poolscope.time_in_queue_s").unwrap();
    assert!(
        (in_queue - waited.as_secs_f64()).abs() < 0.05,
        "{in_queue} vs {waited:?}"
    );
    assert!(wait.start_time >= queued.start_time && wait.end_time <= queued.end_time);
    // It got the connection the slow request made: reused, no setup to link to.
    assert_eq!(
        attr(queued, "poolscope.connection.reused"),
        Some(&Value::Bool(true))
    );
    assert!(queued.links.is_empty());
}

/// A resolver that answers 127.0.0.1 after 250 ms.
#[derive(Clone)]
struct SlowResolver;

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for SlowResolver {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        Box::pin(async {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            Ok(vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0))].into_iter())
        })
    }
}

#[test]
fn a_dial_that_serves_another_request_is_linked_from_that_request() {
    let (_, spans) = exported(|| {
        block_on(async {
            let server = TestServer::start().await;
            let c: poolscope::Client<_, http_body_util::Empty<bytes::Bytes>> =
                poolscope::Client::builder(hyper_util::rt::TokioExecutor::new()).build(
                    poolscope::connect::HttpConnector::new_with_resolver(SlowResolver),
                );
            let port = server.addr.port();
            let url: http::Uri = format!("http://slow.test:{port}/first").parse().unwrap();
            // The first request gives up while its dial resolves; the dial goes on.
            let gave_up =
                tokio::time::timeout(std::time::Duration::from_millis(50), c.get(url)).await;
            assert!(gave_up.is_err());
            support::eventually("the dial to finish", || c.pool_snapshot().total_idle() == 1).await;
            let url: http::Uri = format!("http://slow.test:{port}/second").parse().unwrap();
            support::body(c.get(url).await.unwrap()).await;
        })
    });
    let request = |path: &str| {
        spans
            .iter()
            .find(|s| text(s, "url.full").is_some_and(|u| u.ends_with(path)))
            .unwrap_or_else(|| panic!("{path}: {spans:#?}"))
    };
    let (first, second) = (request("/first"), request("/second"));
    assert_eq!(text(first, "error.type").as_deref(), Some("canceled"));
    assert!(first.links.is_empty());
    // The second request got the connection the first one's dial made, fresh, and links to
    // that dial, whose span is neither's child.
    let setups = linked(&spans, second);
    assert_eq!(setups.len(), 1, "{:#?}", second.links);
    let setup = setups[0];
    assert_eq!(setup.name, "connection_setup");
    assert_eq!(setup.parent_span_id, opentelemetry::trace::SpanId::INVALID);
    for r in [first, second] {
        assert_ne!(setup.span_context.trace_id(), r.span_context.trace_id());
    }
    assert!(float(setup, "poolscope.dns_s").unwrap() >= 0.2);
    assert!(
        setup.start_time < second.start_time,
        "the dial began before the second request"
    );
    assert_eq!(
        attr(second, "poolscope.connection.reused"),
        Some(&Value::Bool(false))
    );
    assert!(
        children(&spans, second).is_empty(),
        "it found the connection idle"
    );
}

/// `HeaderMap` as an OpenTelemetry carrier.
struct Headers<'a>(&'a mut http::HeaderMap);

impl opentelemetry::propagation::Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

#[test]
fn the_request_spans_context_goes_out_as_traceparent() {
    use opentelemetry::propagation::TextMapPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let (sent, spans) = exported(|| {
        block_on(async {
            let server = TestServer::start().await;
            let c = support::client(|b| {
                b.telemetry().inject_trace_context(|span, headers| {
                    let propagator = opentelemetry_sdk::propagation::TraceContextPropagator::new();
                    propagator.inject_context(&span.context(), &mut Headers(headers));
                });
            });
            let resp = c.get(server.url("/header/traceparent")).await.unwrap();
            String::from_utf8(support::body(resp).await.to_vec()).unwrap()
        })
    });
    let span = spans
        .iter()
        .find(|s| attr(s, "http.request.method").is_some())
        .expect("the request span");
    let expected = format!(
        "00-{}-{}-01",
        span.span_context.trace_id(),
        span.span_context.span_id()
    );
    assert_eq!(sent, expected, "the server's parent is the CLIENT span");
}

/// Every `poolscope::pool` event: its level and message.
#[derive(Clone, Default)]
struct PoolLog(std::sync::Arc<std::sync::Mutex<Vec<(tracing::Level, String)>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PoolLog {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        if event.metadata().target() == "poolscope::pool" {
            let mut m = Message(String::new());
            event.record(&mut m);
            self.0
                .lock()
                .unwrap()
                .push((*event.metadata().level(), m.0));
        }
    }
}

impl PoolLog {
    fn count(&self, level: tracing::Level, message: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, m)| *l == level && m == message)
            .count()
    }
}

#[test]
fn pool_events_are_tracing_events_as_many_as_the_stats_hooks_see() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use tracing::Level;
    let log = PoolLog::default();
    let subscriber = tracing_subscriber::registry().with(log.clone());
    let counts: std::sync::Arc<[AtomicUsize; 4]> = std::sync::Arc::default();
    let (a, b, d, e) = (
        counts.clone(),
        counts.clone(),
        counts.clone(),
        counts.clone(),
    );
    let stats = poolscope::Stats::builder()
        .on_conn_opened(move |_| {
            a[0].fetch_add(1, SeqCst);
        })
        .on_conns_per_host_wait_in(move |_| {
            b[1].fetch_add(1, SeqCst);
        })
        .on_idle_conn_in(move |_| {
            d[2].fetch_add(1, SeqCst);
        })
        .on_max_conns_per_host_hit(move |_| {
            e[3].fetch_add(1, SeqCst);
        })
        .build();
    tracing::subscriber::with_default(subscriber, || {
        block_on(async {
            let server = TestServer::start().await;
            let c = support::client(|b| {
                b.pool_max_conns_per_host(1)
                    .telemetry()
                    .pool_event_level(Level::INFO)
                    .stats(stats);
            });
            let mut tasks = Vec::new();
            for _ in 0..3 {
                let f = c.get(server.url("/slow/30"));
                tasks.push(tokio::spawn(async move {
                    support::body(f.await.unwrap()).await
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            support::settle(&c).await;
        })
    });
    let n = |i: usize| counts[i].load(SeqCst);
    assert_eq!(n(0), 1);
    assert_eq!(log.count(Level::INFO, "connection opened"), n(0));
    assert!(n(1) >= 1);
    assert_eq!(
        log.count(
            Level::INFO,
            "request waits for permission to dial (max_conns_per_host)"
        ),
        n(1)
    );
    assert_eq!(log.count(Level::INFO, "pool limit hit"), n(3));
    assert_eq!(log.count(Level::TRACE, "connection idle"), n(2));
    assert!(n(2) >= 1);
}

/// A dial through a SOCKS5 proxy to nginx over TLS: its `connection_setup` span times each
/// phase the dial went through (connect to the proxy, the SOCKS exchange, TLS).
#[test]
fn the_setup_span_times_each_phase_of_a_dial_through_a_proxy() {
    use faultserver::proxies;
    use support::nginx::{self, Nginx, NginxOptions};
    if proxies::skip_unless(
        proxies::installed("microsocks") && nginx::available(),
        "microsocks or nginx",
        "the_setup_span_times_each_phase_of_a_dial_through_a_proxy",
    ) {
        return;
    }
    let nginx = Nginx::start(NginxOptions::default());
    let proxy = proxies::microsocks();
    let (_, spans) = exported(|| {
        block_on(async {
            let client: poolscope::Client<_, http_body_util::Empty<bytes::Bytes>> =
                poolscope::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .proxy(
                        poolscope::connect::Proxy::builder()
                            .all(format!("socks5h://127.0.0.1:{}", proxy.port).as_str())
                            .build()
                            .expect("valid proxy"),
                    )
                    .build(poolscope::connect::HttpsConnector::with_roots(
                        nginx.roots(),
                    ));
            support::body(client.get(nginx.url("/")).await.unwrap()).await;
        })
    });
    let setup = spans
        .iter()
        .find(|s| s.name == "connection_setup")
        .expect("the dial's span");
    for phase in [
        "poolscope.connect_s",
        "poolscope.proxy_s",
        "poolscope.tls_s",
    ] {
        let took = float(setup, phase).unwrap_or_else(|| panic!("{phase}: {setup:#?}"));
        assert!(took > 0.0 && took < 10.0, "{phase}: {took}");
    }
    // The target's name went to the proxy (socks5h): no lookup here.
    assert_eq!(float(setup, "poolscope.dns_s"), None);
}
