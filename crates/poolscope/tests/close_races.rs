//! The close races, against real servers started on loopback: a request sent on a kept-alive
//! connection just as the server closes it must never hang, a GET must never fail, and a
//! POST must never reach the server twice.
//!
//! HTTP/1.1 (nginx, Node.js): independent clients, each sending one request after another
//! with a pause about the server's keep-alive timeout, taken on the thread (`thread::sleep`,
//! not tokio's 1 ms timer), so each request goes out about when the server closes the
//! connection. `POOLSCOPE_RACE_REQUESTS` sets the requests per server (default 5,000).
//!
//! HTTP/2 (nginx over TLS, 4 streams per connection, GOAWAY after 50): runs of 1,000 GETs at
//! c=16, each holding the client's opened connections against nginx's accepts
//! (`POOLSCOPE_RACE_RUNS`, default 20).
//!
//! Each test skips (with a message) where its server is not installed; under CI it fails.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use poolscope::connect::{HttpConnector, HttpsConnector};
use poolscope::Client;
use support::apache::{self, Apache};
use support::haproxy::{self, Haproxy};
use support::nginx::{self, Nginx, NginxOptions};
use support::node::{self, Node};

/// A request that takes longer than this counts as hung.
const HUNG_AFTER: Duration = Duration::from_secs(10);
/// Clients sending at once (each one request at a time, on its own connection).
const LOOPS: usize = 50;
/// The server's keep-alive timeout in the HTTP/1.1 races.
const KEEPALIVE_MS: u32 = 100;

fn skip(what: &str, available: bool, name: &str) -> bool {
    if available {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{name}: {what} is not installed, and CI must run this test"
    );
    eprintln!("{name}: skipped, {what} is not installed");
    true
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An error with its whole cause chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}

/// What a paced run saw.
#[derive(Default, Debug)]
struct Tally {
    gets: usize,
    posts: usize,
    get_failed: Vec<String>,
    post_failed: Vec<String>,
    hung: Vec<String>,
    /// POST paths the client saw answered.
    posts_ok: usize,
}

/// `LOOPS` threads, each with its own client, each sending `per_loop` requests one after
/// another, pausing before each about `keepalive` (from 1.5 ms under it to 0.5 ms over it,
/// spread evenly): every fourth a POST with a one-byte body, the rest GETs, each with a path
/// of its own (`/get/L-I`, `/post/L-I`).
fn paced_run(base: &str, keepalive: Duration, per_loop: usize) -> Tally {
    let from = keepalive.saturating_sub(Duration::from_micros(1500));
    paced_run_with(base, from, Duration::from_millis(2), per_loop, |_| {})
}

/// [`paced_run`] with pauses spread evenly from `from` to `from + width`, and clients
/// configured by `config`.
fn paced_run_with(
    base: &str,
    from: Duration,
    width: Duration,
    per_loop: usize,
    config: impl Fn(&mut poolscope::Builder) + Send + Sync + 'static,
) -> Tally {
    let config = Arc::new(config);
    let width_us = u64::try_from(width.as_micros()).unwrap().max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let threads: Vec<_> = (0..LOOPS)
        .map(|l| {
            let handle = rt.handle().clone();
            let tally = tally.clone();
            let base = base.to_owned();
            let config = config.clone();
            std::thread::spawn(move || {
                let client: Client<HttpConnector, Full<Bytes>> = {
                    let _in = handle.enter();
                    let mut b = Client::builder(TokioExecutor::new());
                    config(&mut b);
                    b.build_http()
                };
                for i in 0..per_loop {
                    if i > 0 {
                        let spread = (i as u64 * 7919 + l as u64 * 104_729) % width_us;
                        let pause = from + Duration::from_micros(spread);
                        std::thread::sleep(pause);
                    }
                    let post = i % 4 == 3;
                    let (method, path) = if post {
                        (Method::POST, format!("/post/{l}-{i}"))
                    } else {
                        (Method::GET, format!("/get/{l}-{i}"))
                    };
                    let req = Request::builder()
                        .method(method)
                        .uri(format!("{base}{path}"))
                        .body(Full::new(Bytes::from_static(if post { b"x" } else { b"" })))
                        .unwrap();
                    let _in = handle.enter();
                    let outcome = handle.block_on(tokio::time::timeout(HUNG_AFTER, async {
                        let resp = client.request(req).await.map_err(|e| chain(&e))?;
                        resp.into_body()
                            .collect()
                            .await
                            .map_err(|e| format!("body: {}", chain(&e)))?;
                        Ok::<_, String>(())
                    }));
                    let mut t = tally.lock().unwrap();
                    if post {
                        t.posts += 1;
                    } else {
                        t.gets += 1;
                    }
                    match outcome {
                        Ok(Ok(())) => t.posts_ok += usize::from(post),
                        Ok(Err(e)) if post => t.post_failed.push(format!("{path}: {e}")),
                        Ok(Err(e)) => t.get_failed.push(format!("{path}: {e}")),
                        Err(_) => t.hung.push(format!("{path}\n{}", client.pool_snapshot())),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(rt);
    Arc::try_unwrap(tally).unwrap().into_inner().unwrap()
}

/// Each POST path the server logged more than once.
fn posts_twice<'a>(logged: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for path in logged.filter(|p| p.starts_with("/post/")) {
        *seen.entry(path).or_default() += 1;
    }
    seen.into_iter()
        .filter(|&(_, n)| n > 1)
        .map(|(p, n)| format!("{p} ×{n}"))
        .collect()
}

fn check(name: &str, tally: &Tally, twice: &[String]) {
    eprintln!(
        "{name}: {} GETs ({} failed), {} POSTs ({} failed), {} hung, {} POSTs logged twice",
        tally.gets,
        tally.get_failed.len(),
        tally.posts,
        tally.post_failed.len(),
        tally.hung.len(),
        twice.len()
    );
    for e in tally.post_failed.iter().take(5) {
        eprintln!("  POST failed: {e}");
    }
    assert!(
        tally.hung.is_empty(),
        "{name}: requests hung: {:#?}",
        tally.hung
    );
    assert!(
        tally.get_failed.is_empty(),
        "{name}: GETs failed: {:#?}",
        tally.get_failed
    );
    assert!(twice.is_empty(), "{name}: POSTs processed twice: {twice:?}");
}

/// nginx with `keepalive_timeout 100ms`, HTTP/1.1.
#[test]
fn http1_requests_paced_at_nginx_keepalive_timeout() {
    let name = "http1_requests_paced_at_nginx_keepalive_timeout";
    if skip("nginx", nginx::available(), name) {
        return;
    }
    let nginx = Nginx::start(NginxOptions {
        tls: false,
        keepalive_timeout_ms: Some(KEEPALIVE_MS),
        ..Default::default()
    });
    let total = env_usize("POOLSCOPE_RACE_REQUESTS", 5000);
    let base = format!("http://127.0.0.1:{}", nginx.port());
    let tally = paced_run(
        &base,
        Duration::from_millis(KEEPALIVE_MS.into()),
        total.div_ceil(LOOPS),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let log = rt.block_on(nginx.access_log(tally.gets + tally.posts_ok));
    let twice = posts_twice(log.iter().map(|l| l.uri.as_str()));
    check(name, &tally, &twice);
}

/// Node.js's `http` server with a 100 ms idle timeout per connection, HTTP/1.1.
#[test]
fn http1_requests_paced_at_node_keepalive_timeout() {
    let name = "http1_requests_paced_at_node_keepalive_timeout";
    if skip("node", node::available(), name) {
        return;
    }
    let node = Node::start(KEEPALIVE_MS);
    let total = env_usize("POOLSCOPE_RACE_REQUESTS", 5000);
    let base = node.url("").to_string();
    let base = base.trim_end_matches('/');
    let tally = paced_run(
        base,
        Duration::from_millis(KEEPALIVE_MS.into()),
        total.div_ceil(LOOPS),
    );
    let log = node.requests(tally.gets + tally.posts_ok);
    let twice = posts_twice(log.iter().filter_map(|l| l.split(' ').nth(1)));
    check(name, &tally, &twice);
}

/// nginx over TLS with HTTP/2, 4 streams per connection and a GOAWAY after 50 streams: runs
/// of 1,000 GETs at c=16, every one answered, and in every run the client's opened
/// connections are the connections nginx accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_goaway_every_50_streams_with_4_streams_per_connection() {
    let name = "http2_goaway_every_50_streams_with_4_streams_per_connection";
    if skip("nginx", nginx::available(), name) {
        return;
    }
    let nginx = Nginx::start(NginxOptions {
        keepalive_requests: 50,
        http2: true,
        max_concurrent_streams: Some(4),
        ..Default::default()
    });
    let runs = env_usize("POOLSCOPE_RACE_RUNS", 20);
    let mut accepted_before = nginx.accepts().await;
    let mut failures = Vec::new();
    for run in 0..runs {
        let (stats, opened) = support::counting_opened();
        let client: Client<HttpsConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .stats(stats)
            .build(HttpsConnector::with_roots(nginx.roots()));
        let next = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (client, next, failed) = (client.clone(), next.clone(), failed.clone());
                let url = nginx.url("/");
                tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::SeqCst) < 1000 {
                        let req = Request::get(url.clone()).body(Full::default()).unwrap();
                        let started = Instant::now();
                        let res = tokio::time::timeout(HUNG_AFTER, async {
                            let resp = client.request(req).await.map_err(|e| chain(&e))?;
                            resp.into_body()
                                .collect()
                                .await
                                .map_err(|e| format!("body: {}", chain(&e)))?;
                            Ok::<_, String>(())
                        })
                        .await;
                        match res {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => failed.lock().unwrap().push(e),
                            Err(_) => failed
                                .lock()
                                .unwrap()
                                .push(format!("hung for {:?}", started.elapsed())),
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        support::settle(&client).await;
        let accepted = nginx.accepts().await;
        let opened = opened.load(Ordering::SeqCst);
        let failed = std::mem::take(&mut *failed.lock().unwrap());
        if !failed.is_empty() || opened != accepted - accepted_before {
            failures.push(format!(
                "run {run}: {} failed {:?}; opened {opened}, nginx accepted {}",
                failed.len(),
                failed.iter().take(3).collect::<Vec<_>>(),
                accepted - accepted_before
            ));
        }
        accepted_before = accepted;
    }
    assert!(failures.is_empty(), "{name}: {failures:#?}");
}

/// HAProxy with a 1 ms client keep-alive in front of nginx, HTTP/1.1: requests paced from 0
/// to 2 ms apart, so nearly every reuse races HAProxy's close.
#[test]
fn http1_through_haproxy_with_1ms_keepalive() {
    let name = "http1_through_haproxy_with_1ms_keepalive";
    if skip("nginx", nginx::available(), name) || skip("haproxy", haproxy::available(), name) {
        return;
    }
    let nginx = Nginx::start(NginxOptions {
        tls: false,
        ..Default::default()
    });
    let proxy = Haproxy::start(([127, 0, 0, 1], nginx.port()).into(), 1, false);
    let total = env_usize("POOLSCOPE_RACE_REQUESTS", 5000);
    let base = proxy.url("").to_string();
    let tally = paced_run_with(
        base.trim_end_matches('/'),
        Duration::ZERO,
        Duration::from_millis(2),
        total.div_ceil(LOOPS),
        |_| {},
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let log = rt.block_on(nginx.access_log(tally.gets + tally.posts_ok));
    let twice = posts_twice(log.iter().map(|l| l.uri.as_str()));
    check(name, &tally, &twice);
}

/// The same with HTTP/2 (h2c, prior knowledge) between the client and HAProxy: HAProxy ends
/// an idle connection with GOAWAY after 1 ms, as a request opens a stream on it.
#[test]
fn http2_through_haproxy_with_1ms_keepalive() {
    let name = "http2_through_haproxy_with_1ms_keepalive";
    if skip("nginx", nginx::available(), name) || skip("haproxy", haproxy::available(), name) {
        return;
    }
    let nginx = Nginx::start(NginxOptions {
        tls: false,
        ..Default::default()
    });
    let proxy = Haproxy::start(([127, 0, 0, 1], nginx.port()).into(), 1, true);
    let total = env_usize("POOLSCOPE_RACE_REQUESTS", 5000);
    let base = proxy.url("").to_string();
    let tally = paced_run_with(
        base.trim_end_matches('/'),
        Duration::ZERO,
        Duration::from_millis(2),
        total.div_ceil(LOOPS),
        |b| {
            b.http2_only(true);
        },
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let log = rt.block_on(nginx.access_log(tally.gets + tally.posts_ok));
    let twice = posts_twice(log.iter().map(|l| l.uri.as_str()));
    check(name, &tally, &twice);
}

/// apache 2.4 with mod_http2 over TLS, graceful restarts (`SIGUSR1`, as `apachectl
/// graceful` and logrotate) during an open-loop run of 1,200 requests at 300/s, every fourth
/// a POST: apache sends GOAWAY and then closes connections that still have streams open.
/// Every GET is answered; no POST reaches apache twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_apache_graceful_restarts_during_open_loop() {
    let name = "http2_apache_graceful_restarts_during_open_loop";
    if skip("apache2 with mod_http2", apache::available(), name) {
        return;
    }
    let apache = Arc::new(Apache::start());
    let (stats, opened) = support::counting_opened();
    let client: Client<HttpsConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .stats(stats)
        .build(HttpsConnector::with_roots(apache.roots()));
    const N: usize = 1200;
    const RATE: f64 = 300.0;
    let start = tokio::time::Instant::now();
    let reloads = {
        let apache = apache.clone();
        tokio::task::spawn_blocking(move || {
            for at in [0.8, 1.6, 2.4, 3.2] {
                let wait = Duration::from_secs_f64(at).saturating_sub(start.elapsed());
                std::thread::sleep(wait);
                apache.graceful();
            }
        })
    };
    let mut tasks = Vec::new();
    for k in 0..N {
        tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / RATE)).await;
        let post = k % 4 == 3;
        let (method, path) = if post {
            (Method::POST, format!("/post/{k}"))
        } else {
            (Method::GET, format!("/get/{k}"))
        };
        let req = Request::builder()
            .method(method)
            .uri(apache.url(&path))
            .body(Full::new(Bytes::from_static(if post { b"x" } else { b"" })))
            .unwrap();
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let res = tokio::time::timeout(HUNG_AFTER, async {
                let resp = client.request(req).await.map_err(|e| chain(&e))?;
                resp.into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("body: {}", chain(&e)))?;
                Ok::<_, String>(())
            })
            .await;
            (post, path, res)
        }));
    }
    let mut tally = Tally::default();
    for t in tasks {
        let (post, path, res) = t.await.unwrap();
        if post {
            tally.posts += 1;
        } else {
            tally.gets += 1;
        }
        match res {
            Ok(Ok(())) => tally.posts_ok += usize::from(post),
            Ok(Err(e)) if post => tally.post_failed.push(format!("{path}: {e}")),
            Ok(Err(e)) => tally.get_failed.push(format!("{path}: {e}")),
            Err(_) => tally.hung.push(path),
        }
    }
    reloads.await.unwrap();
    let (apache2, completed) = (apache.clone(), tally.gets + tally.posts_ok);
    let log = tokio::task::spawn_blocking(move || apache2.access_log(completed))
        .await
        .unwrap();
    let twice = posts_twice(log.iter().filter_map(|l| l.split(' ').nth(1)));
    eprintln!(
        "{name}: {} connections opened; apache error log:\n{}",
        opened.load(Ordering::SeqCst),
        apache
            .error_log()
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    check(name, &tally, &twice);
}
