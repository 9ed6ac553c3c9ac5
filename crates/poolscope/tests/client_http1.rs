//! The client against a real hyper server on 127.0.0.1: keep-alive, reuse, the per-host cap,
//! stale connections and retries, body handling, `Connection: close`, dropping the client.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioExecutor;
use poolscope::stats::CloseReason;
use poolscope::Client;
use support::events::TraceLog;
use support::server::{Options, TestServer};
use support::{body, client, closed_port, eventually, Ev, Recorder};

type Http = poolscope::connect::HttpConnector;

#[tokio::test]
async fn sequential_requests_reuse_the_idle_connection_instead_of_dialing() {
    let server = TestServer::start().await;
    let log = TraceLog::default();
    let rec = Recorder::default();
    let c = client(|b| {
        b.telemetry().trace(log.trace()).stats(rec.stats());
    });
    for _ in 0..3 {
        let resp = c.get(server.url("/")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(body(resp).await, "hello");
    }
    let got = log.got();
    assert_eq!(got.len(), 3);
    assert!(!got[0].reused && !got[0].was_idle);
    for g in &got[1..] {
        assert!(g.reused && g.was_idle, "{g:?}");
        assert_eq!(g.conn_id, got[0].conn_id);
        assert_eq!(g.remote_addr, Some(server.addr));
    }
    // One dial in all: the later requests found the idle connection and never connected.
    assert_eq!(rec.count(|e| matches!(e, Ev::Opened(..))), 1);
    assert_eq!(server.counters.connections(), 1);
    let snap = c.pool_snapshot();
    assert_eq!((snap.total_idle(), snap.total_active()), (1, 0));
}

#[tokio::test]
async fn a_cap_of_one_serves_ten_concurrent_requests_on_one_connection() {
    let server = TestServer::start().await;
    let rec = Recorder::default();
    let c = client(|b| {
        b.pool_max_conns_per_host(1).telemetry().stats(rec.stats());
    });
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (c, url) = (c.clone(), server.url("/slow/20"));
        tasks.push(tokio::spawn(async move {
            let resp = c.get(url).await?;
            let status = resp.status();
            resp.into_body()
                .collect()
                .await
                .map_err(|_| "body")
                .unwrap();
            Ok::<_, poolscope::Error>(status)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), StatusCode::OK);
    }
    assert_eq!(server.counters.connections(), 1);
    assert!(rec.count(|e| matches!(e, Ev::MaxConnsPerHostHit(_))) >= 1);
    assert!(rec.count(|e| matches!(e, Ev::Reused(..))) >= 1);
    let snap = c.pool_snapshot();
    assert_eq!(
        snap.total_waiters() + snap.total_active() + snap.total_connecting(),
        0,
        "{snap}"
    );
    drop(c);
    eventually("connection closed", || server.counters.open() == 0).await;
    rec.assert_balanced();
}

#[tokio::test]
async fn a_get_on_a_connection_the_server_dropped_is_retried_on_a_new_one() {
    let server = TestServer::with(Options {
        drop_second_request: true,
        ..Options::default()
    })
    .await;
    let log = TraceLog::default();
    let c = client(|b| {
        b.telemetry().trace(log.trace());
    });
    assert_eq!(body(c.get(server.url("/")).await.unwrap()).await, "hello");
    // The server takes the second request on that connection and closes it unanswered.
    let resp = c.get(server.url("/")).await.expect("retried");
    assert_eq!(body(resp).await, "hello");
    assert_eq!(server.counters.connections(), 2);
    assert_eq!(server.counters.requests("GET"), 3);
    let got = log.got();
    assert_eq!(got.len(), 3, "three attempts got a connection");
    assert!(got[1].reused && !got[2].reused);
}

#[tokio::test]
async fn a_post_is_never_sent_twice() {
    let server = TestServer::with(Options {
        drop_second_request: true,
        ..Options::default()
    })
    .await;
    let c: Client<Http, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let post = || {
        Request::builder()
            .method(Method::POST)
            .uri(server.url("/"))
            .body(Full::from("payload"))
            .unwrap()
    };
    let resp = c.request(post()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.unwrap();
    let err = c.request(post()).await.expect_err("not retried");
    assert!(!err.is_connect());
    assert!(err.to_string().contains("sending request"), "{err}");
    assert_eq!(server.counters.requests("POST"), 2);
    assert_eq!(server.counters.connections(), 1);
}

#[tokio::test]
async fn a_post_with_an_idempotency_key_and_empty_body_is_retried() {
    let server = TestServer::with(Options {
        drop_second_request: true,
        ..Options::default()
    })
    .await;
    let c = client(|_| {});
    let post = || {
        Request::builder()
            .method(Method::POST)
            .uri(server.url("/"))
            .header("idempotency-key", "k1")
            .body(Empty::new())
            .unwrap()
    };
    assert_eq!(body(c.request(post()).await.unwrap()).await, "hello");
    assert_eq!(body(c.request(post()).await.unwrap()).await, "hello");
    assert_eq!(server.counters.requests("POST"), 3);
    assert_eq!(server.counters.connections(), 2);
}

#[tokio::test]
async fn a_body_read_to_its_end_returns_the_connection_and_a_dropped_one_closes_it() {
    let server = TestServer::start().await;
    let c = client(|_| {});
    let resp = c.get(server.url("/bytes/100000")).await.unwrap();
    assert_eq!(body(resp).await.len(), 100_000);
    eventually("connection idle", || c.pool_snapshot().total_idle() == 1).await;

    let resp = c.get(server.url("/bytes/1000000")).await.unwrap();
    let mut b = resp.into_body();
    let first = b.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(b);
    let snap = c.pool_snapshot();
    assert_eq!((snap.total_idle(), snap.total_active()), (0, 0), "{snap}");
    eventually("server saw the close", || server.counters.open() == 0).await;
    // The next request needs a new connection.
    body(c.get(server.url("/")).await.unwrap()).await;
    assert_eq!(server.counters.connections(), 2);
}

#[tokio::test]
async fn connection_close_from_the_server_is_honoured() {
    let server = TestServer::start().await;
    let c = client(|_| {});
    assert_eq!(
        body(c.get(server.url("/close")).await.unwrap()).await,
        "bye"
    );
    assert_eq!(c.pool_snapshot().total_idle(), 0);
    body(c.get(server.url("/")).await.unwrap()).await;
    assert_eq!(server.counters.connections(), 2);
}

#[tokio::test]
async fn dropping_the_client_closes_idle_connections() {
    let server = TestServer::start().await;
    let c = client(|_| {});
    body(c.get(server.url("/")).await.unwrap()).await;
    assert_eq!(server.counters.open(), 1);
    drop(c);
    eventually("idle connection closed", || server.counters.open() == 0).await;
}

#[tokio::test]
async fn dropping_the_response_future_while_queued_or_mid_body_leaks_nothing() {
    let server = TestServer::start().await;
    let rec = Recorder::default();
    let c = client(|b| {
        b.pool_max_conns_per_host(1).telemetry().stats(rec.stats());
    });
    // One request holds the only slot; another queues behind it and is dropped.
    let holder = tokio::spawn(c.get(server.url("/slow/200")));
    eventually("the holder has the slot", || {
        c.pool_snapshot().total_active() == 1
    })
    .await;
    let mut queued = Box::pin(c.get(server.url("/")));
    assert!(futures_poll_once(&mut queued).await.is_none());
    let snap = c.pool_snapshot();
    assert_eq!(snap.total_waiters(), 1, "the request queued: {snap}");
    drop(queued);
    let snap = c.pool_snapshot();
    assert_eq!(
        snap.total_waiters(),
        0,
        "the dropped request left the queue: {snap}"
    );
    // The holder finishes; its body is dropped mid-way: the slot frees.
    let resp = holder.await.unwrap().unwrap();
    drop(resp);
    eventually("slot free", || {
        c.pool_snapshot().hosts.iter().all(|h| h.total == 0)
    })
    .await;
    // The slot serves the next request.
    assert_eq!(body(c.get(server.url("/")).await.unwrap()).await, "hello");
    let snap = c.pool_snapshot();
    assert_eq!(snap.total_waiters() + snap.total_active(), 0, "{snap}");
    drop(c);
    eventually("every connection closed", || server.counters.open() == 0).await;
    rec.assert_balanced();
}

#[tokio::test]
async fn dropping_the_response_future_while_dialing_leaks_nothing() {
    let server = TestServer::start().await;
    let rec = Recorder::default();
    let c = client(|b| {
        b.pool_max_conns_per_host(1).telemetry().stats(rec.stats());
    });
    // Poll once: the dial is spawned; then drop the request.
    let mut fut = Box::pin(c.get(server.url("/")));
    assert!(futures_poll_once(&mut fut).await.is_none());
    drop(fut);
    // The dial finishes and parks its connection idle.
    eventually("dialed connection parked idle", || {
        c.pool_snapshot().total_idle() == 1
    })
    .await;
    assert_eq!(body(c.get(server.url("/")).await.unwrap()).await, "hello");
    assert_eq!(server.counters.connections(), 1);
    drop(c);
    eventually("every connection closed", || server.counters.open() == 0).await;
    rec.assert_balanced();
}

async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *f).poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

#[tokio::test]
async fn hyper_utils_own_connector_works_and_responses_carry_its_http_info() {
    let server = TestServer::start().await;
    let log = TraceLog::default();
    let c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .telemetry()
        .trace(log.trace())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    for _ in 0..2 {
        let resp = c.get(server.url("/")).await.unwrap();
        // hyper-util's connector attaches `HttpInfo`, as with hyper-util's client.
        let info = resp
            .extensions()
            .get::<hyper_util::client::legacy::connect::HttpInfo>()
            .expect("HttpInfo in the response extensions");
        assert_eq!(info.remote_addr(), server.addr);
        assert_eq!(body(resp).await, "hello");
    }
    let got = log.got();
    assert_eq!(got[0].remote_addr, Some(server.addr), "HttpInfo is read");
    assert!(got[1].reused);
}

#[tokio::test]
async fn a_refused_port_is_a_connect_error_naming_the_phase() {
    let addr = format!("127.0.0.1:{}", closed_port());
    let c = client(|_| {});
    let err = c
        .get(format!("http://{addr}/").parse().unwrap())
        .await
        .expect_err("refused");
    assert!(err.is_connect(), "{err:?}");
    assert_eq!(
        err.connect_phase(),
        Some(poolscope::connect::ConnectPhase::Tcp)
    );
    assert_eq!(err.to_string(), format!("connect error ({addr})"));
    assert!(c.pool_snapshot().hosts.is_empty());
}

#[tokio::test]
async fn userinfo_never_reaches_errors() {
    // Events, reports and metric labels: `security.rs`.
    let port = closed_port();
    let c = client(|_| {});
    let err = c
        .get(
            format!("http://user:s3cret@127.0.0.1:{port}/path?q=1")
                .parse()
                .unwrap(),
        )
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("user"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_malformed_status_line_is_an_error_receiving_the_response() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = tcp.read(&mut buf).await;
        let _ = tcp.write_all(b"HTTP/1.1 abc nonsense\r\n\r\n").await;
    });
    let c = client(|_| {});
    let err = c
        .get(format!("http://{addr}/").parse().unwrap())
        .await
        .expect_err("malformed");
    assert!(
        err.to_string().starts_with("error receiving response"),
        "{err:?}"
    );
    assert!(!err.is_connect());
}

#[tokio::test]
async fn a_100_continue_is_reported_as_a_1xx_response() {
    let server = TestServer::start().await;
    let log = TraceLog::default();
    let c: Client<Http, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .telemetry()
        .trace(log.trace())
        .build_http();
    let req = Request::builder()
        .method(Method::POST)
        .uri(server.url("/"))
        .header("expect", "100-continue")
        .body(Full::from("payload"))
        .unwrap();
    assert_eq!(body(c.request(req).await.unwrap()).await, "hello");
    let names = log.take();
    assert!(names.contains(&"got_1xx_response".to_string()), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timings_are_complete_when_only_request_done_is_registered() {
    // Only `on_request_done`: the connection stamps the write and first-byte moments
    // without handing the tracer to its IO; the timings must still have every phase.
    let server = TestServer::start().await;
    let done = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let d = done.clone();
    let trace = poolscope::ClientTrace::builder()
        .on_request_done(move |i| d.lock().unwrap().push(i.timings))
        .build();
    let c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .telemetry()
        .trace(trace)
        .build_http();
    for _ in 0..2 {
        let resp = c.get(server.url("/slow/40")).await.unwrap();
        body(resp).await;
    }
    eventually("two requests done", || done.lock().unwrap().len() == 2).await;
    for t in done.lock().unwrap().iter() {
        let (got_conn, first_byte) = (t.got_conn.unwrap(), t.first_byte.unwrap());
        let (send, wait) = (t.send.unwrap(), t.wait.unwrap());
        assert!(
            wait >= Duration::from_millis(35),
            "server took 40 ms: {t:?}"
        );
        assert!(got_conn <= first_byte && first_byte <= t.total, "{t:?}");
        assert!(send + wait <= first_byte, "{t:?}");
        assert!(t.transfer.is_some(), "{t:?}");
    }
}

async fn echoes(upgraded: hyper::upgrade::Upgraded) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut io = hyper_util::rt::TokioIo::new(upgraded);
    io.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn connect_in_authority_form_tunnels_and_the_connection_leaves_the_pool() {
    let server = TestServer::start().await;
    let rec = Recorder::default();
    let c = client(|b| {
        b.telemetry().stats(rec.stats());
    });
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(server.addr.to_string())
        .body(Empty::new())
        .unwrap();
    let mut resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // What the server saw: authority form, as hyper-util sends it.
    assert_eq!(resp.headers()["x-target"], server.addr.to_string().as_str());
    let upgrade = hyper::upgrade::on(&mut resp);
    drop(resp);
    echoes(upgrade.await.expect("the connection is handed over")).await;
    eventually("the tunnel is not pooled", || {
        c.pool_snapshot().total_idle() == 0 && c.pool_snapshot().total_active() == 0
    })
    .await;
    // The tunnel's end is not a broken connection: it was not reusable.
    assert!(
        rec.all()
            .iter()
            .any(|e| matches!(e, Ev::Closed(_, _, CloseReason::NotReusable))),
        "{:?}",
        rec.all()
    );
    // The next request dials a connection of its own.
    body(c.get(server.url("/")).await.unwrap()).await;
    assert_eq!(server.counters.connections(), 2);
}

#[tokio::test]
async fn a_101_response_hands_the_connection_to_hyper_upgrade() {
    let server = TestServer::start().await;
    let c = client(|_| {});
    let req = Request::builder()
        .uri(server.url("/upgrade"))
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(Empty::new())
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    echoes(hyper::upgrade::on(resp).await.expect("upgraded")).await;
}

/// `build_http` turns TCP keepalive on after the pool's idle timeout, as hyper-util does; the
/// kernel counts it in whole seconds and refuses 0: an idle timeout under a second must not
/// fail every connect (it did, `EINVAL` setting the keepalive).
#[tokio::test]
async fn an_idle_timeout_under_a_second_still_connects() {
    let server = TestServer::start().await;
    let c = client(|b| {
        b.pool_idle_timeout(Duration::from_millis(100));
    });
    let resp = c.get(server.url("/")).await.expect("connects");
    assert_eq!(resp.status(), StatusCode::OK);
    body(resp).await;
}
