//! Failures outside the request/response exchange — DNS, refused, connect timeout, TLS name
//! mismatch — plus cancellation storms, a multi-threaded stress run with the pool's invariants
//! checked continuously, and memory bounds (huge headers, endless bodies). Loopback only.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use faultserver::{Fault, FaultServer, Proto};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioExecutor;
use poolscope::connect::{ConnectPhase, HttpConnector, HttpsConnector};
use poolscope::Client;
use support::{closed_port, Recorder};

type C = Client<HttpConnector, Empty<Bytes>>;

#[tokio::test]
async fn a_name_that_does_not_resolve_is_a_dns_error() {
    // The resolver asks a name server on loopback where nothing listens: no traffic leaves
    // the machine, and the lookup fails.
    let mut http = HttpConnector::new();
    http.set_nameservers(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], closed_port());
    let c: C = Client::builder(TokioExecutor::new()).build(http);
    let res = tokio::time::timeout(
        Duration::from_secs(30),
        c.get("http://no-such-host.invalid/".parse().unwrap()),
    )
    .await
    .expect("bounded");
    let err = res.expect_err("does not resolve");
    assert_eq!(err.connect_phase(), Some(ConnectPhase::Dns), "{err:?}");
    assert!(err.to_string().starts_with("dns error"), "{err}");
    assert!(c.pool_snapshot().hosts.is_empty());
}

#[tokio::test]
async fn a_full_accept_backlog_is_a_connect_timeout() {
    // A listener that never accepts, with a backlog of 1: once it is full, connects hang.
    let (addr, _sock, fillers) = support::hanging_addr().await;
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_millis(200)));
    let connects: Arc<std::sync::Mutex<Vec<Option<String>>>> = Arc::default();
    let (starts, dones) = (connects.clone(), connects.clone());
    let trace = poolscope::ClientTrace::builder()
        .on_connect_start(move |_| starts.lock().unwrap().push(None))
        .on_connect_done(move |i| {
            dones
                .lock()
                .unwrap()
                .push(Some(i.error.clone().unwrap_or_default()))
        })
        .build();
    let c: C = Client::builder(TokioExecutor::new())
        .telemetry()
        .trace(trace)
        .build(http);
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        c.get(format!("http://{addr}/").parse().unwrap()),
    )
    .await
    .expect("bounded by the connect timeout")
    .expect_err("the backlog is full");
    assert!(err.is_connect() && err.is_timeout(), "{err:?}");
    assert_eq!(err.connect_phase(), Some(ConnectPhase::Tcp));
    // The attempt the timeout dropped still reports its end.
    assert_eq!(
        *connects.lock().unwrap(),
        [None, Some("canceled".to_owned())],
        "connect_start, then connect_done"
    );
    drop(fillers);
}

#[tokio::test]
async fn a_server_that_never_answers_the_client_hello_is_a_tls_timeout() {
    // Accepts TCP connections and keeps them open without a byte of TLS.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            conns.push(tcp);
        }
    });
    let mut https = HttpsConnector::new();
    https.set_tls_handshake_timeout(Some(Duration::from_millis(200)));
    let c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        c.get(
            format!("https://localhost:{}/", addr.port())
                .parse()
                .unwrap(),
        ),
    )
    .await
    .expect("bounded by the handshake timeout")
    .expect_err("no TLS server there");
    assert!(err.is_connect() && err.is_timeout(), "{err:?}");
    assert_eq!(err.connect_phase(), Some(ConnectPhase::Tls));
    assert!(started.elapsed() < Duration::from_secs(5));
    held.abort();
}

#[tokio::test]
async fn a_certificate_for_another_name_fails_even_with_trusted_roots() {
    let (server_cfg, roots) = support::server::tls_pair(); // a certificate for "localhost"
    let server = support::server::TestServer::with(support::server::Options {
        tls: Some(server_cfg),
        ..Default::default()
    })
    .await;
    let c: Client<_, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpsConnector::with_roots(roots.clone()));
    // By IP: the name does not match the certificate.
    let err = c
        .get(
            format!("https://127.0.0.1:{}/", server.addr.port())
                .parse()
                .unwrap(),
        )
        .await
        .expect_err("name mismatch");
    assert_eq!(err.connect_phase(), Some(ConnectPhase::Tls), "{err:?}");
    // By name it works: verification is on and correct.
    let ok = c
        .get(
            format!("https://localhost:{}/", server.addr.port())
                .parse()
                .unwrap(),
        )
        .await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn a_server_refusing_tls_is_a_tls_error() {
    let server = FaultServer::start(Proto::Http1, Fault::RefuseTls).await;
    let (_, roots) = support::server::tls_pair();
    let c: Client<_, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpsConnector::with_roots(roots));
    let err = c
        .get(
            format!("https://localhost:{}/", server.addr().port())
                .parse()
                .unwrap(),
        )
        .await
        .expect_err("refused");
    assert_eq!(err.connect_phase(), Some(ConnectPhase::Tls), "{err:?}");
}

#[tokio::test]
async fn huge_headers_are_refused_not_buffered() {
    let server = FaultServer::start(Proto::Http1, Fault::HugeHeaders).await;
    let c: C = Client::builder(TokioExecutor::new()).build_http();
    let err = c
        .get(server.url("/").parse().unwrap())
        .await
        .expect_err("too large");
    assert!(
        err.to_string().starts_with("error receiving response"),
        "{err}"
    );
}

#[tokio::test]
async fn a_body_that_ends_with_trailers_ends_there_and_its_connection_is_reused() {
    let server = FaultServer::start(Proto::Http1, Fault::Trailers).await;
    let errors: Arc<std::sync::Mutex<Vec<Option<String>>>> = Arc::default();
    let seen = errors.clone();
    let trace = poolscope::ClientTrace::builder()
        .on_response_body_done(move |i| seen.lock().unwrap().push(i.error.clone()))
        .build();
    let c: C = Client::builder(TokioExecutor::new())
        .telemetry()
        .trace(trace)
        .build_http();
    for _ in 0..2 {
        let resp = c.get(server.url("/").parse().unwrap()).await.unwrap();
        let mut body = resp.into_body();
        let data = body.frame().await.unwrap().unwrap();
        assert_eq!(data.data_ref().map(|d| &d[..]), Some(&b"hello"[..]));
        let trailers = body.frame().await.unwrap().unwrap();
        assert_eq!(trailers.trailers_ref().unwrap()["x-checksum"], "42");
        assert!(http_body::Body::is_end_stream(&body));
        // Dropped right after its trailers, as hyper does with a body it forwards.
        drop(body);
    }
    let reason_free: Vec<Option<String>> = vec![None, None];
    assert_eq!(*errors.lock().unwrap(), reason_free, "both ended cleanly");
    support::eventually("the connection is idle in the pool", || {
        c.pool_snapshot().total_idle() == 1
    })
    .await;
    assert_eq!(server.counters().accepted(), 1, "one connection for both");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancellation_storm_leaks_nothing() {
    let server = FaultServer::start(Proto::Http1, Fault::SlowBody(Duration::from_millis(1))).await;
    let rec = Recorder::default();
    let c: C = Client::builder(TokioExecutor::new())
        .pool_max_conns_per_host(4)
        .telemetry()
        .stats(rec.stats())
        .build_http();
    let url: http::Uri = server.url("/").parse().unwrap();
    let mut tasks = Vec::new();
    for i in 0..2000u64 {
        let (c, url) = (c.clone(), url.clone());
        // Dropped at pseudo-random points: while queued, dialing, sending or reading.
        let after = Duration::from_micros((i * 7919) % 12_000);
        tasks.push(tokio::spawn(async move {
            let _ = tokio::time::timeout(after, async {
                let resp = c.get(url).await?;
                let _ = resp.into_body().collect().await;
                Ok::<_, poolscope::Error>(())
            })
            .await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for _ in 0..300 {
        let s = c.pool_snapshot();
        if s.total_waiters() == 0 && s.total_active() == 0 && s.total_connecting() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = c.pool_snapshot();
    assert_eq!(
        (s.total_waiters(), s.total_active(), s.total_connecting()),
        (0, 0, 0),
        "{s}"
    );
    server.set_fault(Fault::None);
    let resp = tokio::time::timeout(Duration::from_secs(5), c.get(url))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        "hello"
    );
    drop(c);
    rec.assert_balanced_eventually().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stress_with_random_cancellations_keeps_the_invariants() {
    let server = FaultServer::start(Proto::Http1, Fault::None).await;
    let rec = Recorder::default();
    let cap = 3;
    let c: C = Client::builder(TokioExecutor::new())
        .pool_max_conns_per_host(cap)
        .telemetry()
        .stats(rec.stats())
        .build_http();
    let url: http::Uri = server.url("/").parse().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (c, done) = (c.clone(), done.clone());
        tokio::spawn(async move {
            let mut checks = 0u64;
            while !done.load(Ordering::Relaxed) {
                for h in &c.pool_snapshot().hosts {
                    assert!(h.total <= cap, "cap exceeded: {h:?}");
                    assert_eq!(h.total, h.idle + h.active + h.connecting, "{h:?}");
                    assert!(h.conns_per_host_waiters <= h.idle_conn_waiters, "{h:?}");
                    assert!(
                        h.idle == 0 || h.idle_conn_waiters == 0,
                        "waiter beside an idle connection: {h:?}"
                    );
                }
                checks += 1;
                tokio::task::yield_now().await;
            }
            checks
        })
    };
    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..40u64 {
                let r = (t * 31 + i * 17) % 10;
                let fut = async {
                    let resp = c.get(url.clone()).await?;
                    let _ = resp.into_body().collect().await;
                    Ok::<_, poolscope::Error>(())
                };
                if r < 3 {
                    // Cancel after a pseudo-random few hundred microseconds.
                    let _ = tokio::time::timeout(Duration::from_micros(100 * r + 50), fut).await;
                } else {
                    fut.await.expect("request");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let checks = monitor.await.unwrap();
    assert!(checks > 100, "the monitor ran ({checks} checks)");
    for _ in 0..300 {
        let s = c.pool_snapshot();
        if s.total_waiters() + s.total_active() + s.total_connecting() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = c.pool_snapshot();
    assert_eq!(
        s.total_waiters() + s.total_active() + s.total_connecting(),
        0,
        "{s}"
    );
    assert!(
        server.counters().accepted() <= 64 * 40,
        "connections are reused"
    );
    drop(c);
    rec.assert_balanced_eventually().await;
}
