//! The fault matrix: each fault of the fault server × {HTTP/1.1, h2c where it applies} ×
//! {no cap, `pool_max_conns_per_host(2)`}. Every request ends in a success or a typed error
//! naming the phase (or the test's own timeout, never a hang); each test checks the outcomes
//! its fault must have (replayable requests survive stale connections, a reset is an error, a
//! stall hits the caller's timeout, …) and a POST is never received twice; afterwards the pool
//! has no waiter and nothing active, counts exactly the sockets the server has open, every
//! Stats pair balances, and the next request succeeds.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use faultserver::{Fault, FaultServer, Proto};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use poolscope::Client;
use support::{eventually_within, Recorder};

type C = Client<poolscope::connect::HttpConnector, Full<Bytes>>;

#[derive(Debug, Default)]
struct Outcomes {
    ok: usize,
    errors: Vec<String>,
    timeouts: usize,
}

/// What one cell's requests came to: six GETs (two waves of three), then three POSTs.
#[derive(Debug, Default)]
struct Cell {
    gets: Outcomes,
    posts: Outcomes,
}

/// The faults' own time to settle: longer than `support::eventually`'s 2 s.
const SETTLE: Duration = Duration::from_secs(3);

async fn eventually(what: &str, f: impl Fn() -> bool) {
    eventually_within(what, SETTLE, f).await;
}

/// The kinds of failure a request to a faulty server may end with (`Error::error_type`).
const KINDS: &[&str] = &[
    "connect",
    "dns",
    "tls",
    "handshake",
    "pool_timeout",
    "send",
    "receive",
    "canceled",
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
                    KINDS.contains(&e.error_type()),
                    "unexpected kind {}: {shown}",
                    e.error_type()
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

/// Runs one cell of the matrix; `check` asserts what the fault must do to its requests.
async fn cell(proto: Proto, fault: Fault, cap: Option<usize>, check: fn(&str, &Cell)) {
    let label = format!("{fault:?} {proto:?} cap={cap:?}");
    let server = FaultServer::start(proto, fault).await;
    let rec = Recorder::default();
    let mut b = Client::builder(TokioExecutor::new());
    b.http2_only(proto == Proto::H2c)
        .telemetry()
        .stats(rec.stats());
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
    check(
        &label,
        &Cell {
            gets: out,
            posts: post,
        },
    );
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

async fn matrix(fault: Fault, h2: bool, check: fn(&str, &Cell)) {
    for cap in [None, Some(2)] {
        cell(Proto::Http1, fault, cap, check).await;
        if h2 {
            cell(Proto::H2c, fault, cap, check).await;
        }
    }
}

/// A fault that only makes connections stale: every GET survives it.
fn every_get_succeeds(label: &str, cell: &Cell) {
    assert_eq!(
        cell.gets.ok, 6,
        "{label}: every GET survives a stale connection: {cell:?}"
    );
}

/// Every request, GET or POST, ends in an error (no success, no caller's timeout) whose
/// message starts with one of `prefixes`.
fn every_request_fails_with(prefixes: &[&str], label: &str, cell: &Cell) {
    for (what, o, n) in [("GET", &cell.gets, 6), ("POST", &cell.posts, 3)] {
        assert_eq!(o.errors.len(), n, "{label}: every {what} fails: {cell:?}");
        for e in &o.errors {
            assert!(
                prefixes.iter().any(|p| e.starts_with(p)),
                "{label}: {what}: {e:?} does not start with one of {prefixes:?}"
            );
        }
    }
}

/// Every request, GET or POST, succeeds.
fn every_request_succeeds(label: &str, cell: &Cell) {
    assert_eq!(
        (cell.gets.ok, cell.posts.ok),
        (6, 3),
        "{label}: every request succeeds: {cell:?}"
    );
}

#[tokio::test]
async fn an_idle_connection_closed_by_the_server_is_survived() {
    let fault = Fault::CloseIdleAfter(Duration::from_millis(30));
    matrix(fault, true, every_get_succeeds).await;
}

#[tokio::test]
async fn close_after_n_requests_is_survived() {
    matrix(Fault::CloseAfter(2), true, every_get_succeeds).await;
}

#[tokio::test]
async fn connection_close_on_every_response_is_survived() {
    matrix(Fault::ConnectionClose, false, every_get_succeeds).await;
}

#[tokio::test]
async fn a_408_on_an_idle_connection_is_survived() {
    let fault = Fault::Idle408(Duration::from_millis(30));
    matrix(fault, false, every_get_succeeds).await;
}

#[tokio::test]
async fn a_reset_mid_body_is_an_error_and_leaks_nothing() {
    matrix(Fault::ResetMidBody, true, |label, cell| {
        // The head arrived, so the body fails; or the reset beat the head.
        every_request_fails_with(&["body error", "error receiving response"], label, cell)
    })
    .await;
}

#[tokio::test]
async fn a_stall_after_headers_is_bounded_by_the_caller_and_leaks_nothing() {
    matrix(Fault::StallAfterHeaders, true, |label, cell| {
        for (what, o, n) in [("GET", &cell.gets, 6), ("POST", &cell.posts, 3)] {
            assert_eq!(
                o.timeouts, n,
                "{label}: every {what} ends at the caller's timeout: {cell:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_server_that_never_responds_leaks_nothing() {
    matrix(Fault::NeverRespond, true, |label, cell| {
        for (what, o, n) in [("GET", &cell.gets, 6), ("POST", &cell.posts, 3)] {
            // Each ends at the caller's timeout (or, queued behind a cap, the pool's).
            assert_eq!(o.ok, 0, "{label}: no {what} succeeds: {cell:?}");
            assert_eq!(
                o.timeouts + o.errors.len(),
                n,
                "{label}: every {what} ends: {cell:?}"
            );
            for e in &o.errors {
                assert!(
                    e.starts_with("pool wait timed out"),
                    "{label}: {what}: {e:?}"
                );
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_slow_body_succeeds() {
    let fault = Fault::SlowBody(Duration::from_millis(3));
    matrix(fault, true, every_request_succeeds).await;
}

#[tokio::test]
async fn malformed_status_and_headers_are_receive_errors() {
    let receive_error = |label: &str, cell: &Cell| {
        every_request_fails_with(&["error receiving response"], label, cell)
    };
    matrix(Fault::MalformedStatus, false, receive_error).await;
    matrix(Fault::MalformedHeaders, false, receive_error).await;
}
