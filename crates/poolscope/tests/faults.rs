//! The fault matrix: each fault of the fault server × {HTTP/1.1, h2c where it applies} ×
//! {no cap, `pool_max_conns_per_host(2)`}. Every request ends in a success or a typed error
//! naming the phase (or the test's own timeout, never a hang); replayable requests survive
//! stale connections and a POST is never received twice; afterwards the pool has no waiter
//! and nothing active, counts exactly the sockets the server has open, every Stats pair
//! balances, and the next request succeeds.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use faultserver::{Fault, FaultServer, Proto};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use poolscope::Client;
use support::Recorder;

type C = Client<poolscope::connect::HttpConnector, Full<Bytes>>;

#[derive(Debug, Default)]
struct Outcomes {
    ok: usize,
    errors: Vec<String>,
    timeouts: usize,
}

/// The phases an error may name: the start of `Display`.
const PHASES: &[&str] = &[
    "connect error",
    "dns error",
    "tls error",
    "connection handshake failed",
    "pool wait timed out",
    "error sending request",
    "error receiving response",
    "request canceled before it was sent",
];

async fn one(c: &C, url: &str, method: Method, id: String, limit: Duration, out: &mut Outcomes) {
    // GETs carry no body (replayable); POSTs carry one.
    let body = if method == Method::POST {
        Bytes::from_static(b"payload")
    } else {
        Bytes::new()
    };
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("x-request-id", id)
        .body(Full::new(body))
        .unwrap();
    let fut = async {
        match c.request(req).await {
            Ok(resp) => match resp.into_body().collect().await.map(|b| b.to_bytes()) {
                Ok(body) if body == "hello" => Ok(()),
                Ok(body) => Err(format!("wrong body {body:?}")),
                Err(e) => Err(format!("body error: {e}")),
            },
            Err(e) => {
                let shown = e.to_string();
                assert!(
                    PHASES.iter().any(|p| shown.starts_with(p)),
                    "untyped error: {shown}"
                );
                Err(shown)
            }
        }
    };
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(())) => out.ok += 1,
        Ok(Err(e)) => out.errors.push(e),
        Err(_) => out.timeouts += 1,
    }
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Runs one cell of the matrix; `stale` faults must leave every GET successful.
async fn cell(proto: Proto, fault: Fault, cap: Option<usize>, stale: bool) {
    let label = format!("{fault:?} {proto:?} cap={cap:?}");
    let server = FaultServer::start(proto, fault).await;
    let rec = Recorder::default();
    let mut b = Client::builder(TokioExecutor::new());
    b.stats(rec.stats()).http2_only(proto == Proto::H2c);
    if let Some(cap) = cap {
        b.pool_max_conns_per_host(cap);
    }
    let c: C = b.build_http();
    let url = server.url("/");
    let limit = Duration::from_millis(700);
    let mut out = Outcomes::default();
    // Two waves of three concurrent GETs, an idle gap between them, then POSTs in turn.
    let mut n = 0;
    for _ in 0..2 {
        let mut wave = Vec::new();
        for _ in 0..3 {
            n += 1;
            let (c, url) = (c.clone(), url.clone());
            wave.push(tokio::spawn(async move {
                let mut o = Outcomes::default();
                one(&c, &url, Method::GET, format!("get-{n}"), limit, &mut o).await;
                o
            }));
        }
        for w in wave {
            let o = w.await.unwrap();
            out.ok += o.ok;
            out.timeouts += o.timeouts;
            out.errors.extend(o.errors);
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    let mut post = Outcomes::default();
    for i in 0..3 {
        one(
            &c,
            &url,
            Method::POST,
            format!("post-{i}"),
            limit,
            &mut post,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    if stale {
        assert_eq!(
            out.ok, 6,
            "{label}: every GET survives a stale connection: {out:?}"
        );
    }
    // A POST is never received twice.
    let ids = server.counters().ids();
    let posts: Vec<&String> = ids.iter().filter(|i| i.starts_with("post-")).collect();
    let unique: HashSet<&&String> = posts.iter().collect();
    assert_eq!(
        posts.len(),
        unique.len(),
        "{label}: a POST was received twice: {ids:?}"
    );

    // Settle: nothing waits, nothing is active, the pool counts what the server has open.
    server.set_fault(Fault::None);
    eventually(&format!("{label}: no waiter, nothing active"), || {
        let s = c.pool_snapshot();
        s.total_waiters() == 0 && s.total_active() == 0 && s.total_connecting() == 0
    })
    .await;
    eventually(
        &format!("{label}: pool count == server's open sockets"),
        || {
            let total: usize = c.pool_snapshot().hosts.iter().map(|h| h.total).sum();
            total == server.counters().open()
        },
    )
    .await;
    // The next request succeeds.
    let mut next = Outcomes::default();
    one(
        &c,
        &url,
        Method::GET,
        "next".into(),
        Duration::from_secs(5),
        &mut next,
    )
    .await;
    assert_eq!(next.ok, 1, "{label}: the next request: {next:?}");
    drop(c);
    eventually(&format!("{label}: every connection closed"), || {
        server.counters().open() == 0
    })
    .await;
    rec.assert_balanced();
}

async fn matrix(fault: Fault, h2: bool, stale: bool) {
    for cap in [None, Some(2)] {
        cell(Proto::Http1, fault, cap, stale).await;
        if h2 {
            cell(Proto::H2c, fault, cap, stale).await;
        }
    }
}

#[tokio::test]
async fn an_idle_connection_closed_by_the_server_is_survived() {
    matrix(Fault::CloseIdleAfter(Duration::from_millis(30)), true, true).await;
}

#[tokio::test]
async fn close_after_n_requests_is_survived() {
    matrix(Fault::CloseAfter(2), true, true).await;
}

#[tokio::test]
async fn connection_close_on_every_response_is_survived() {
    matrix(Fault::ConnectionClose, false, true).await;
}

#[tokio::test]
async fn a_408_on_an_idle_connection_is_survived() {
    matrix(Fault::Idle408(Duration::from_millis(30)), false, true).await;
}

#[tokio::test]
async fn a_reset_mid_body_is_an_error_and_leaks_nothing() {
    matrix(Fault::ResetMidBody, true, false).await;
}

#[tokio::test]
async fn a_stall_after_headers_is_bounded_by_the_caller_and_leaks_nothing() {
    matrix(Fault::StallAfterHeaders, true, false).await;
}

#[tokio::test]
async fn a_server_that_never_responds_leaks_nothing() {
    matrix(Fault::NeverRespond, true, false).await;
}

#[tokio::test]
async fn a_slow_body_succeeds() {
    matrix(Fault::SlowBody(Duration::from_millis(3)), true, true).await;
}

#[tokio::test]
async fn malformed_status_and_headers_are_receive_errors() {
    matrix(Fault::MalformedStatus, false, false).await;
    matrix(Fault::MalformedHeaders, false, false).await;
}
