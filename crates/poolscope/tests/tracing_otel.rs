//! The request span through the real OpenTelemetry SDK: `tracing-opentelemetry` exporting to
//! `opentelemetry_sdk`'s in-memory exporter, for a fresh request, a reused one, a 404 and a
//! refused connect. Run with `cargo test -p poolscope --features tracing --test tracing_otel`
//! (`.ci/run` does).
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

#[test]
fn request_spans_carry_the_http_client_conventions() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("poolscope-test")));
    let (port, refused_port) = tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let server = TestServer::start().await;
                let c = support::client(|b| {
                    b.redact_url(|u| u.to_string().replace("secret", "[redacted]"));
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
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
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
}
