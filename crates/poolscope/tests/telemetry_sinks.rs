//! Every sink sees every event: one fixed workload (ten reused requests, a body dropped
//! early, a refused connect, a request canceled in flight, an invalid URI), and the count of
//! each event in each sink — Stats hooks, a ClientTrace, the event history, the metrics, the
//! in-flight registry. A request canceled in flight (its future dropped) ends its trace with
//! `request_done` and an error, as every other request does.
#![cfg(feature = "metrics")]

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use poolscope::{ClientTrace, Stats};
use support::server::TestServer;
use support::{closed_port, settle};

type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

fn bump(counts: &Counts, name: &str) {
    *counts.lock().unwrap().entry(name.to_owned()).or_default() += 1;
}

fn stats(counts: &Counts) -> Stats {
    macro_rules! count {
        ($name:expr) => {{
            let c = counts.clone();
            move |_: &_| bump(&c, concat!("stats.", $name))
        }};
    }
    Stats::builder()
        .on_idle_conn_wait_in(count!("idle_conn_wait_in"))
        .on_idle_conn_wait_out(count!("idle_conn_wait_out"))
        .on_conns_per_host_wait_in(count!("conns_per_host_wait_in"))
        .on_conns_per_host_wait_out(count!("conns_per_host_wait_out"))
        .on_idle_conn_in(count!("idle_conn_in"))
        .on_idle_conn_out(count!("idle_conn_out"))
        .on_conn_reused(count!("conn_reused"))
        .on_max_idle_conns_hit(count!("max_idle_conns_hit"))
        .on_max_idle_conns_per_host_hit(count!("max_idle_conns_per_host_hit"))
        .on_max_conns_per_host_hit(count!("max_conns_per_host_hit"))
        .on_conn_opened(count!("conn_opened"))
        .on_conn_closed(count!("conn_closed"))
        .build()
}

fn trace(counts: &Counts) -> ClientTrace {
    macro_rules! count {
        ($name:expr) => {{
            let c = counts.clone();
            move |_: &_| bump(&c, concat!("trace.", $name))
        }};
    }
    let c = counts.clone();
    ClientTrace::builder()
        .on_get_conn(count!("get_conn"))
        .on_got_conn(count!("got_conn"))
        .on_put_idle_conn(count!("put_idle_conn"))
        .on_dns_start(count!("dns_start"))
        .on_dns_done(count!("dns_done"))
        .on_connect_start(count!("connect_start"))
        .on_connect_done(count!("connect_done"))
        .on_wrote_headers(count!("wrote_headers"))
        .on_wrote_request(count!("wrote_request"))
        .on_got_first_response_byte(count!("got_first_response_byte"))
        .on_response_body_done(count!("response_body_done"))
        .on_retry(count!("retry"))
        .on_request_done(move |i| {
            bump(&c, "trace.request_done");
            if i.error.is_some() {
                bump(&c, "trace.request_done with error");
            }
        })
        .build()
}

/// The workload, and every sink's counts.
fn run() -> BTreeMap<String, u64> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let counts: Counts = Arc::default();
    let c2 = counts.clone();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let counts = c2;
                let server = TestServer::start().await;
                let client = support::client(|b| {
                    b.telemetry()
                        .stats(stats(&counts))
                        .trace(trace(&counts))
                        .metrics(true)
                        .event_history(1024)
                        .track_in_flight(true);
                });
                for _ in 0..10 {
                    support::body(client.get(server.url("/")).await.unwrap()).await;
                }
                // A body dropped before its end: the connection is closed.
                drop(client.get(server.url("/bytes/100000")).await.unwrap());
                // A refused connect.
                let refused = format!("http://127.0.0.1:{}/", closed_port());
                assert!(client.get(refused.parse().unwrap()).await.is_err());
                // Canceled while the server sleeps: the future is dropped.
                let slow = client.get(server.url("/slow/5000"));
                assert!(tokio::time::timeout(Duration::from_millis(200), slow)
                    .await
                    .is_err());
                // Refused before it starts: no pool key.
                assert!(client
                    .get("ftp://127.0.0.1/".parse().unwrap())
                    .await
                    .is_err());
                settle(&client).await;
                // Every request's trace has ended (an HTTP/1 response's last events come
                // from the task that returns its connection) and its entry left.
                let ended = || {
                    counts
                        .lock()
                        .unwrap()
                        .get("trace.request_done")
                        .copied()
                        .unwrap_or(0)
                };
                support::eventually("13 request_done", || ended() >= 13).await;
                support::eventually("no entry in flight", || client.in_flight().is_empty()).await;
                for e in client.recent_events() {
                    bump(&counts, &format!("history.{}", e.name));
                }
                let mut all = counts.lock().unwrap().clone();
                for (key, _, _, value) in snapshotter.snapshot().into_vec() {
                    let k = key.key();
                    let mut labels: Vec<String> = k
                        .labels()
                        .filter(|l| {
                            !matches!(l.key(), "url.scheme" | "server.address" | "server.port")
                        })
                        .map(|l| format!("{}={}", l.key(), l.value()))
                        .collect();
                    labels.sort();
                    let name = format!("metrics.{}{{{}}}", k.name(), labels.join(","));
                    // Counters and histograms that never moved are left out; gauges are
                    // kept at any value (they must come back to where they started).
                    let (n, keep) = match value {
                        DebugValue::Counter(n) => (n, n > 0),
                        DebugValue::Gauge(g) => (g.into_inner() as u64, true),
                        DebugValue::Histogram(h) => (h.len() as u64, !h.is_empty()),
                    };
                    if keep {
                        *all.entry(name).or_default() += n;
                    }
                }
                all
            })
    })
}

#[test]
fn every_sink_counts_every_event_of_a_fixed_workload() {
    let got = run();
    let text: String = got.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    eprintln!("{text}");
    let expected: &[(&str, u64)] = &[
        ("history.conn_closed", 2),
        ("history.conn_opened", 2),
        ("history.got_conn", 12),
        ("history.idle_conn_in", 10),
        ("history.idle_conn_out", 10),
        ("history.idle_conn_wait_in", 3),
        ("history.idle_conn_wait_out", 3),
        ("history.request_done", 10),
        ("history.request_failed", 4),
        ("history.request_started", 14),
        ("metrics.http.client.active_requests{http.request.method=GET}", 0),
        ("metrics.http.client.connection.duration{}", 2),
        (
            "metrics.http.client.open_connections{http.connection.state=active}",
            0,
        ),
        (
            "metrics.http.client.open_connections{http.connection.state=idle}",
            0,
        ),
        (
            "metrics.http.client.request.duration{error.type=canceled,http.request.method=GET,network.protocol.version=1.1}",
            1,
        ),
        (
            "metrics.http.client.request.duration{error.type=connect,http.request.method=GET}",
            1,
        ),
        (
            "metrics.http.client.request.duration{http.request.method=GET,http.response.status_code=200,network.protocol.version=1.1}",
            11,
        ),
        // The two requests that dialled; the ten served by an idle connection record none.
        ("metrics.http.client.request.time_in_queue{}", 2),
        ("metrics.poolscope.connect.duration{}", 2),
        (
            "metrics.poolscope.connection.closed{poolscope.close_reason=not_reusable}",
            2,
        ),
        ("metrics.poolscope.connection.create_time{}", 2),
        ("metrics.poolscope.connection.created{}", 2),
        (
            "metrics.poolscope.connection.pending_requests{poolscope.queue=conns_per_host}",
            0,
        ),
        (
            "metrics.poolscope.connection.pending_requests{poolscope.queue=idle}",
            0,
        ),
        ("metrics.poolscope.connection.reused{}", 10),
        ("stats.conn_closed", 2),
        ("stats.conn_opened", 2),
        ("stats.idle_conn_in", 10),
        ("stats.idle_conn_out", 10),
        ("stats.idle_conn_wait_in", 3),
        ("stats.idle_conn_wait_out", 3),
        ("trace.connect_done", 3),
        ("trace.connect_start", 3),
        ("trace.get_conn", 13),
        ("trace.got_conn", 12),
        ("trace.got_first_response_byte", 11),
        ("trace.put_idle_conn", 11),
        ("trace.request_done", 13),
        ("trace.request_done with error", 3),
        ("trace.response_body_done", 11),
        ("trace.wrote_headers", 12),
        ("trace.wrote_request", 12),
    ];
    let expected: BTreeMap<String, u64> =
        expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(got, expected, "counts:\n{text}");
}
