//! Metrics through the `metrics` facade, checked with metrics-util's debugging recorder.
#![cfg(feature = "metrics")]

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioExecutor;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::CompositeKey;

/// A snapshot taken once (the debugging recorder's counters are deltas per snapshot).
type Snap = Vec<(
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;
use poolscope::Client;
use support::closed_port;
use support::server::TestServer;

/// Runs `f` on a current-thread runtime with a local debugging recorder (everything the
/// client records lands in it); `f` takes the snapshot while its client is alive.
fn with_recorder<F: std::future::Future<Output = (Snap, String)>>(
    f: impl FnOnce(Snapshotter) -> F,
) -> (Snap, String) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f(snapshotter))
    })
}

/// The value of metric `name` whose labels include all of `labels`, summed over series.
fn value(snap: &Snap, name: &str, labels: &[(&str, &str)]) -> Option<DebugValue> {
    let mut found: Option<DebugValue> = None;
    for (key, _, _, v) in snap {
        let v = match v {
            DebugValue::Counter(n) => DebugValue::Counter(*n),
            DebugValue::Gauge(g) => DebugValue::Gauge(*g),
            DebugValue::Histogram(h) => DebugValue::Histogram(h.clone()),
        };
        let k = key.key();
        if k.name() != name {
            continue;
        }
        let ok = labels
            .iter()
            .all(|(lk, lv)| k.labels().any(|l| l.key() == *lk && l.value() == *lv));
        if !ok {
            continue;
        }
        found = Some(match (found, v) {
            (None, v) => v,
            (Some(DebugValue::Counter(a)), DebugValue::Counter(b)) => DebugValue::Counter(a + b),
            (Some(DebugValue::Histogram(mut a)), DebugValue::Histogram(b)) => {
                a.extend(b);
                DebugValue::Histogram(a)
            }
            (Some(_), v) => v,
        });
    }
    found
}

fn counter(snap: &Snap, name: &str, labels: &[(&str, &str)]) -> u64 {
    match value(snap, name, labels) {
        Some(DebugValue::Counter(n)) => n,
        other => panic!("{name}: {other:?}"),
    }
}

fn gauge(snap: &Snap, name: &str, labels: &[(&str, &str)]) -> f64 {
    match value(snap, name, labels) {
        Some(DebugValue::Gauge(g)) => g.into_inner(),
        other => panic!("{name}: {other:?}"),
    }
}

fn histogram_count(snap: &Snap, name: &str, labels: &[(&str, &str)]) -> usize {
    match value(snap, name, labels) {
        Some(DebugValue::Histogram(h)) => h.len(),
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn ten_requests_on_one_connection_give_exact_counts() {
    let (snap, port) = with_recorder(|snapshotter| async move {
        let server = TestServer::start().await;
        let port = server.addr.port().to_string();
        let c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .metrics(true)
            .build_http();
        for _ in 0..10 {
            let resp = c.get(server.url("/")).await.unwrap();
            resp.into_body().collect().await.unwrap();
        }
        // Let the last connection's return settle.
        tokio::task::yield_now().await;
        (snapshotter.snapshot().into_vec(), port)
    });
    let key = [
        ("scheme", "http"),
        ("host", "127.0.0.1"),
        ("port", port.as_str()),
    ];
    assert_eq!(
        counter(&snap, "http_client_connections_opened_total", &key),
        1
    );
    assert_eq!(
        counter(&snap, "http_client_connections_reused_total", &key),
        9
    );
    assert_eq!(gauge(&snap, "http_client_active_requests", &key), 0.0);
    let idle = [key[0], key[1], key[2], ("state", "idle")];
    let active = [key[0], key[1], key[2], ("state", "active")];
    assert_eq!(gauge(&snap, "http_client_open_connections", &idle), 1.0);
    assert_eq!(gauge(&snap, "http_client_open_connections", &active), 0.0);
    let ok = [("method", "GET"), ("status_class", "2xx")];
    assert_eq!(
        histogram_count(&snap, "http_client_request_duration_seconds", &ok),
        10
    );
    assert_eq!(
        histogram_count(&snap, "http_client_request_time_in_queue_seconds", &key),
        10
    );
    assert_eq!(
        histogram_count(&snap, "http_client_connect_duration_seconds", &key),
        1
    );
}

#[test]
fn limit_hits_waiting_requests_and_errors_are_counted_with_bounded_labels() {
    let (snap, port) = with_recorder(|snapshotter| async move {
        let server = TestServer::start().await;
        let port = server.addr.port().to_string();
        let c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .metrics(true)
            .pool_max_conns_per_host(1)
            .build_http();
        let mut tasks = Vec::new();
        for i in 0..4 {
            let (c, url) = (c.clone(), server.url(&format!("/slow/20?secret-{i}")));
            tasks.push(tokio::spawn(async move {
                let resp = c.get(url).await.unwrap();
                resp.into_body().collect().await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // A refused connection: an error type, no status.
        let refused = closed_port();
        let req = http::Request::builder()
            .method("PURGE")
            .uri(format!("http://127.0.0.1:{refused}/x"))
            .body(Empty::new())
            .unwrap();
        assert!(c.request(req).await.is_err());
        (snapshotter.snapshot().into_vec(), port)
    });
    assert_eq!(
        counter(
            &snap,
            "http_client_pool_limit_hits_total",
            &[("limit", "max_conns_per_host")]
        ),
        3
    );
    let key = [("host", "127.0.0.1"), ("port", port.as_str())];
    assert_eq!(
        gauge(
            &snap,
            "http_client_pool_waiting_requests",
            &[key[0], key[1], ("queue", "conns_per_host")]
        ),
        0.0
    );
    let failed = [("method", "_OTHER"), ("error_type", "connect")];
    assert_eq!(
        histogram_count(&snap, "http_client_request_duration_seconds", &failed),
        1
    );
    // No label anywhere carries a path or a query.
    for (k, _, _, _) in &snap {
        for l in k.key().labels() {
            assert!(
                !l.value().contains('/') && !l.value().contains("secret"),
                "{l:?}"
            );
        }
    }
}
