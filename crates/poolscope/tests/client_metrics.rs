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

/// The labels of every series of metric `name`, each as sorted `key=value` pairs.
fn series(snap: &Snap, name: &str) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = snap
        .iter()
        .filter(|(k, ..)| k.key().name() == name)
        .map(|(k, ..)| {
            let mut l: Vec<String> = k
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            l.sort();
            l
        })
        .collect();
    out.sort();
    out
}

#[test]
fn ten_requests_on_one_connection_give_exact_counts() {
    let (snap, port) = with_recorder(|snapshotter| async move {
        let server = TestServer::start().await;
        let port = server.addr.port().to_string();
        let c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .telemetry()
            .metrics(true)
            .build_http();
        for _ in 0..10 {
            let resp = c.get(server.url("/")).await.unwrap();
            resp.into_body().collect().await.unwrap();
        }
        let resp = c.get(server.url("/status/404")).await.unwrap();
        resp.into_body().collect().await.unwrap();
        // Let the last connection's return settle.
        tokio::task::yield_now().await;
        (snapshotter.snapshot().into_vec(), port)
    });
    let key = [
        ("url.scheme", "http"),
        ("server.address", "127.0.0.1"),
        ("server.port", port.as_str()),
    ];
    assert_eq!(counter(&snap, "poolscope.connection.created", &key), 1);
    assert_eq!(counter(&snap, "poolscope.connection.reused", &key), 10);
    assert_eq!(gauge(&snap, "http.client.active_requests", &key), 0.0);
    let idle = [key[0], key[1], key[2], ("http.connection.state", "idle")];
    let active = [key[0], key[1], key[2], ("http.connection.state", "active")];
    assert_eq!(gauge(&snap, "http.client.open_connections", &idle), 1.0);
    assert_eq!(gauge(&snap, "http.client.open_connections", &active), 0.0);
    // The durations' series carry exactly OpenTelemetry's attributes: a 404 has its code as
    // `error.type` too.
    let p = format!("server.port={port}");
    let base = |extra: &[&str]| {
        let mut v: Vec<String> = [
            "http.request.method=GET",
            "network.protocol.version=1.1",
            "server.address=127.0.0.1",
            p.as_str(),
            "url.scheme=http",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        v.sort();
        v
    };
    assert_eq!(series(&snap, "http.client.request.duration"), {
        let mut v = vec![
            base(&["http.response.status_code=200"]),
            base(&["http.response.status_code=404", "error.type=404"]),
        ];
        v.sort();
        v
    });
    let ok = [
        ("http.request.method", "GET"),
        ("http.response.status_code", "200"),
    ];
    assert_eq!(
        histogram_count(&snap, "http.client.request.duration", &ok),
        10
    );
    // Only the first request waited (for its own dial); the ten that found the connection
    // idle record no time in queue at all, rather than a zero.
    assert_eq!(
        histogram_count(&snap, "http.client.request.time_in_queue", &key),
        1
    );
    assert_eq!(
        histogram_count(&snap, "poolscope.connect.duration", &key),
        1
    );
    assert_eq!(
        histogram_count(&snap, "poolscope.connection.create_time", &key),
        1
    );
    // Units and descriptions are registered (Prometheus's HELP lines and `_seconds`).
    let (_, unit, desc, _) = snap
        .iter()
        .find(|(k, ..)| k.key().name() == "http.client.request.duration")
        .unwrap();
    assert_eq!(*unit, Some(metrics::Unit::Seconds));
    assert!(desc.is_some());
}

#[test]
fn limit_hits_waiting_requests_and_errors_are_counted_with_bounded_labels() {
    let (snap, port) = with_recorder(|snapshotter| async move {
        let server = TestServer::start().await;
        let port = server.addr.port().to_string();
        let c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_conns_per_host(1)
            .telemetry()
            .metrics(true)
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
        // A refused connection: an error type, no status, no version.
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
            "poolscope.connection.limit_hits",
            &[("poolscope.limit", "max_conns_per_host")]
        ),
        3
    );
    let key = [
        ("server.address", "127.0.0.1"),
        ("server.port", port.as_str()),
    ];
    assert_eq!(
        gauge(
            &snap,
            "poolscope.connection.pending_requests",
            &[key[0], key[1], ("poolscope.queue", "conns_per_host")]
        ),
        0.0
    );
    // All four waited: one for its dial, three for the connection it made.
    assert_eq!(
        histogram_count(&snap, "http.client.request.time_in_queue", &key),
        4
    );
    let failed = [("http.request.method", "_OTHER"), ("error.type", "connect")];
    assert_eq!(
        histogram_count(&snap, "http.client.request.duration", &failed),
        1
    );
    let series = series(&snap, "http.client.request.duration");
    let failed = series
        .iter()
        .find(|s| s.contains(&"error.type=connect".to_owned()))
        .unwrap();
    assert!(
        !failed
            .iter()
            .any(|l| l.starts_with("network.protocol.version")
                || l.starts_with("http.response.status_code")),
        "{failed:?}"
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

#[test]
fn a_known_methods_list_of_ones_own_names_its_methods() {
    let (snap, _) = with_recorder(|snapshotter| async move {
        let server = TestServer::start().await;
        let c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .telemetry()
            .metrics(true)
            .known_methods([
                http::Method::GET,
                http::Method::from_bytes(b"PURGE").unwrap(),
            ])
            .build_http();
        for m in ["PURGE", "POST"] {
            let req = http::Request::builder()
                .method(m)
                .uri(server.url("/"))
                .body(Empty::new())
                .unwrap();
            c.request(req)
                .await
                .unwrap()
                .into_body()
                .collect()
                .await
                .unwrap();
        }
        (snapshotter.snapshot().into_vec(), String::new())
    });
    for (m, n) in [("PURGE", 1), ("_OTHER", 1), ("POST", 0)] {
        let got = value(
            &snap,
            "http.client.request.duration",
            &[("http.request.method", m)],
        );
        let count = match got {
            Some(DebugValue::Histogram(h)) => h.len(),
            None => 0,
            other => panic!("{other:?}"),
        };
        assert_eq!(count, n, "{m}");
    }
}

/// A name server on loopback UDP: `A 127.0.0.1` for `ok.test.`, NXDOMAIN for any other name
/// (and no data for other types). Enough of RFC 1035 for hickory's queries.
async fn tiny_dns() -> u16 {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let q = &buf[..n];
            // The question: labels up to the root, then type and class.
            let mut i = 12;
            let mut name = String::new();
            while i < n && q[i] != 0 {
                let len = usize::from(q[i]);
                name.push_str(&String::from_utf8_lossy(&q[i + 1..i + 1 + len]).to_lowercase());
                name.push('.');
                i += 1 + len;
            }
            let end = i + 5;
            let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
            let known = name == "ok.test.";
            let answer = known && qtype == 1;
            let mut r = Vec::from(&q[..2]);
            // QR, opcode 0, RD copied; RA; RCODE 3 (NXDOMAIN) for unknown names.
            r.push(0x80 | (q[2] & 0x01));
            r.push(0x80 | if known { 0 } else { 3 });
            r.extend([0, 1, 0, u8::from(answer), 0, 0, 0, 0]);
            r.extend(&q[12..end]);
            if answer {
                r.extend([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
            }
            let _ = sock.send_to(&r, from).await;
        }
    });
    port
}

#[test]
fn dns_lookups_are_timed_by_name_and_a_missing_name_is_host_not_found() {
    let (snap, _) = with_recorder(|snapshotter| async move {
        let server = TestServer::start().await;
        let dns = tiny_dns().await;
        let mut http = poolscope::connect::HttpConnector::new();
        http.set_nameservers(&[std::net::IpAddr::from([127, 0, 0, 1])], dns);
        let c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .telemetry()
            .metrics(true)
            .build(http);
        let port = server.addr.port();
        let resp = c
            .get(format!("http://ok.test:{port}/").parse().unwrap())
            .await
            .unwrap();
        resp.into_body().collect().await.unwrap();
        let err = c
            .get(format!("http://missing.test:{port}/").parse().unwrap())
            .await
            .expect_err("NXDOMAIN");
        assert_eq!(
            err.connect_phase(),
            Some(poolscope::connect::ConnectPhase::Dns)
        );
        (snapshotter.snapshot().into_vec(), String::new())
    });
    assert_eq!(
        series(&snap, "dns.lookup.duration"),
        [
            vec![
                "dns.question.name=missing.test".to_owned(),
                "error.type=host_not_found".to_owned()
            ],
            vec!["dns.question.name=ok.test".to_owned()],
        ]
    );
    let ok = [("dns.question.name", "ok.test")];
    assert_eq!(histogram_count(&snap, "dns.lookup.duration", &ok), 1);
    let failed = [("dns.question.name", "missing.test")];
    assert_eq!(histogram_count(&snap, "dns.lookup.duration", &failed), 1);
}
