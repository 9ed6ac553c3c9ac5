//! The close races, against real servers started on loopback: a request sent on a kept-alive
//! connection just as the server closes it must never hang, a GET must never fail, and a
//! POST must never reach the server twice.
//!
//! - HTTP/1.1 (nginx, Node.js): independent clients, each sending one request after another
//!   with a pause about the server's keep-alive timeout, taken on the thread
//!   (`thread::sleep`, not tokio's 1 ms timer), so each request goes out about when the
//!   server closes the connection. `POOLSCOPE_RACE_REQUESTS` sets the requests per server
//!   (default 5,000).
//! - HAProxy with a 1 ms client keep-alive, HTTP/1.1 and h2c, paced from 0 to 2 ms.
//! - HTTP/2 (nginx over TLS, 4 streams per connection, GOAWAY after 50): runs of 1,000 GETs
//!   at c=16, each holding the client's opened connections against nginx's accepts
//!   (`POOLSCOPE_RACE_RUNS`, default 20).
//! - apache with mod_http2: graceful restarts during an open-loop run.
//!
//! With `POOLSCOPE_RACE_COMPARE=1`, each scenario also runs hyper-util's legacy client and
//! Go's net/http (`benches/go/closerace`, needs `go`) against the same server, each on paths
//! of its own, and prints their figures (`docs/reliability.md` has the table); only
//! poolscope's are asserted.
//!
//! Each test skips (with a message) where its server is not installed; under CI it fails.

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use faultserver::proxies::skip_unless;
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
/// Clients sending at once in the paced runs (each one request at a time, on its own
/// connection).
const LOOPS: usize = 50;
/// The server's keep-alive timeout in the HTTP/1.1 races.
const KEEPALIVE_MS: u32 = 100;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether to run hyper-util's client and Go's beside poolscope.
fn compare() -> bool {
    std::env::var_os("POOLSCOPE_RACE_COMPARE").is_some_and(|v| v != "0")
}

/// An error with its whole cause chain.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    poolscope::trace::error_text(e)
}

// ----- the clients ------------------------------------------------------------------------

type Exchanged = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One client: sends a request and reads its whole body.
type Exchange = Arc<dyn Fn(Request<Full<Bytes>>) -> Exchanged + Send + Sync>;

/// A poolscope client over `connector`, configured by `config`.
fn poolscope<C: poolscope::connect::Connect>(
    connector: C,
    config: impl FnOnce(&mut poolscope::Builder),
) -> Exchange {
    let mut b = Client::builder(TokioExecutor::new());
    config(&mut b);
    exchange_of(b.build(connector))
}

/// `client` as an [`Exchange`].
fn exchange_of<C: poolscope::connect::Connect>(client: Client<C, Full<Bytes>>) -> Exchange {
    Arc::new(move |req| {
        let client = client.clone();
        Box::pin(async move {
            let resp = client.request(req).await.map_err(|e| chain(&e))?;
            resp.into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {}", chain(&e)))?;
            Ok(())
        })
    })
}

/// hyper-util's legacy client over poolscope's connector (hyper-util's own for plain HTTP).
fn hyper_util<C>(connector: C, h2_only: bool) -> Exchange
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(h2_only)
        .build::<_, Full<Bytes>>(connector);
    Arc::new(move |req| {
        let client = client.clone();
        Box::pin(async move {
            let resp = client.request(req).await.map_err(|e| chain(&e))?;
            resp.into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {}", chain(&e)))?;
            Ok(())
        })
    })
}

fn hyper_util_http(h2_only: bool) -> Exchange {
    hyper_util(
        hyper_util::client::legacy::connect::HttpConnector::new(),
        h2_only,
    )
}

// ----- what a run saw ----------------------------------------------------------------------

#[derive(Default, Debug)]
struct Tally {
    gets: usize,
    posts: usize,
    get_failed: Vec<String>,
    post_failed: Vec<String>,
    hung: Vec<String>,
    /// POSTs the client saw answered.
    posts_ok: usize,
}

impl Tally {
    fn record(&mut self, post: bool, path: String, res: Result<Result<(), String>, ()>) {
        if post {
            self.posts += 1;
        } else {
            self.gets += 1;
        }
        match res {
            Ok(Ok(())) => self.posts_ok += usize::from(post),
            Ok(Err(e)) if post => self.post_failed.push(format!("{path}: {e}")),
            Ok(Err(e)) => self.get_failed.push(format!("{path}: {e}")),
            Err(()) => self.hung.push(path),
        }
    }

    /// The requests the server should have logged: every GET (a failed GET was not
    /// processed, or was retried) is not certain, so only those answered.
    fn answered(&self) -> usize {
        self.gets - self.get_failed.len() - self.hung.len() + self.posts_ok
    }

    /// A table row: failed GETs, failed POSTs, hung, POSTs processed twice.
    fn row(&self, client: &str, twice: usize) -> String {
        format!(
            "| {client} | {}/{} | {}/{} | {} | {twice} |",
            self.get_failed.len(),
            self.gets,
            self.post_failed.len(),
            self.posts,
            self.hung.len()
        )
    }
}

/// The request `k` of a run: every fourth a POST with a one-byte body, the rest GETs, each
/// on a path of its own under `base` (`{base}/get/{id}`, `{base}/post/{id}`).
fn request(base: &str, id: &str, k: usize) -> (bool, String, Request<Full<Bytes>>) {
    let post = k % 4 == 3;
    let path = format!("{base}/{}/{id}", if post { "post" } else { "get" });
    let req = Request::builder()
        .method(if post { Method::POST } else { Method::GET })
        .uri(path.as_str())
        .body(Full::new(Bytes::from_static(if post { b"x" } else { b"" })))
        .unwrap();
    (post, path, req)
}

async fn exchange(send: &Exchange, req: Request<Full<Bytes>>) -> Result<Result<(), String>, ()> {
    tokio::time::timeout(HUNG_AFTER, send(req))
        .await
        .map_err(|_| ())
}

/// `LOOPS` threads, each with a client of its own (`make`), each sending `per_loop` requests
/// one after another, pausing before each from `from` to `from + width` (spread evenly).
fn paced_run(
    base: &str,
    from: Duration,
    width: Duration,
    per_loop: usize,
    make: impl Fn() -> Exchange + Send + Sync + 'static,
) -> Tally {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let make = Arc::new(make);
    let width_us = u64::try_from(width.as_micros()).unwrap().max(1);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let threads: Vec<_> = (0..LOOPS)
        .map(|l| {
            let (handle, tally, make) = (rt.handle().clone(), tally.clone(), make.clone());
            let base = base.to_owned();
            std::thread::spawn(move || {
                let _in = handle.enter();
                let send = make();
                for i in 0..per_loop {
                    if i > 0 {
                        let spread = (i as u64 * 7919 + l as u64 * 104_729) % width_us;
                        std::thread::sleep(from + Duration::from_micros(spread));
                    }
                    let (post, path, req) = request(&base, &format!("{l}-{i}"), i);
                    let res = handle.block_on(exchange(&send, req));
                    tally.lock().unwrap().record(post, path, res);
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

/// [`paced_run`] about a keep-alive timeout: from 1.5 ms under it to 0.5 ms over it.
fn paced_at(
    base: &str,
    keepalive_ms: u32,
    make: impl Fn() -> Exchange + Send + Sync + 'static,
) -> Tally {
    let keepalive = Duration::from_millis(keepalive_ms.into());
    let total = env_usize("POOLSCOPE_RACE_REQUESTS", 5000);
    paced_run(
        base,
        keepalive.saturating_sub(Duration::from_micros(1500)),
        Duration::from_millis(2),
        total.div_ceil(LOOPS),
        make,
    )
}

/// Each POST path logged more than once.
fn posts_twice<'a>(logged: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for path in logged.filter(|p| p.contains("/post/")) {
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
    for e in tally.post_failed.iter().take(3) {
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

// ----- Go's net/http ------------------------------------------------------------------------

/// `benches/go/closerace`, built once per test binary (None without `go`).
fn go_binary() -> Option<PathBuf> {
    static BUILT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/go/closerace");
            let out =
                std::env::temp_dir().join(format!("poolscope-closerace-{}", std::process::id()));
            let ok = std::process::Command::new("go")
                .arg("build")
                .arg("-o")
                .arg(&out)
                .arg(".")
                .current_dir(&src)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("go is not installed or the build failed: no Go figures");
            }
            ok.then_some(out)
        })
        .clone()
}

/// Runs Go's client with `args`; its JSON report.
fn go_run(args: &[&str]) -> Option<serde_json::Value> {
    let bin = go_binary()?;
    let out = std::process::Command::new(bin).args(args).output().ok()?;
    serde_json::from_slice(&out.stdout)
        .map_err(|e| {
            eprintln!(
                "Go's client printed no report ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .ok()
}

/// A Go paced or open-loop report as a tally (error strings summarised in `get_failed`,
/// counts only elsewhere).
fn go_tally(v: &serde_json::Value) -> Tally {
    let n = |k: &str| v[k].as_u64().unwrap_or(0) as usize;
    let errors: Vec<String> = v["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    eprintln!("  Go's errors: {errors:?}");
    Tally {
        gets: n("gets"),
        posts: n("posts"),
        get_failed: vec![String::new(); n("get_failed")],
        post_failed: vec![String::new(); n("post_failed")],
        hung: vec![String::new(); n("hung")],
        posts_ok: n("posts_ok"),
    }
}

// ----- HTTP/1.1 keep-alive timeouts ---------------------------------------------------------

/// The HTTP/1.1 keep-alive race against a server at `base` with a `KEEPALIVE_MS` idle
/// timeout: poolscope's run (asserted), and with [`compare`] hyper-util's and Go's, each on
/// paths of its own. `twice(prefix, answered)` reads the server's log, once it holds
/// `answered` requests, for the POSTs under `prefix` it processed twice.
fn paced_at_keepalive(name: &str, base: &str, twice: impl Fn(&str, usize) -> Vec<String>) {
    let ours = paced_at(&format!("{base}/poolscope"), KEEPALIVE_MS, || {
        poolscope(HttpConnector::new(), |_| {})
    });
    let ours_twice = twice("/poolscope", ours.answered());
    if compare() {
        let theirs = paced_at(&format!("{base}/hyper-util"), KEEPALIVE_MS, || {
            hyper_util_http(false)
        });
        let theirs_twice = twice("/hyper-util", ours.answered() + theirs.answered());
        eprintln!("{}", ours.row("poolscope", ours_twice.len()));
        eprintln!("{}", theirs.row("hyper-util", theirs_twice.len()));
        let per_loop = env_usize("POOLSCOPE_RACE_REQUESTS", 5000)
            .div_ceil(LOOPS)
            .to_string();
        if let Some(go) = go_run(&[
            "-mode",
            "paced",
            "-url",
            &format!("{base}/go"),
            "-loops",
            &LOOPS.to_string(),
            "-per-loop",
            &per_loop,
            "-keepalive-ms",
            &KEEPALIVE_MS.to_string(),
        ]) {
            let go = go_tally(&go);
            let all = ours.answered() + theirs.answered() + go.answered();
            eprintln!("{}", go.row("Go", twice("/go", all).len()));
        }
    }
    check(name, &ours, &ours_twice);
}

/// nginx with `keepalive_timeout 100ms`, HTTP/1.1.
#[test]
fn http1_requests_paced_at_nginx_keepalive_timeout() {
    let name = "http1_requests_paced_at_nginx_keepalive_timeout";
    if skip_unless(nginx::available(), "nginx", name) {
        return;
    }
    let nginx = Nginx::start(NginxOptions {
        tls: false,
        keepalive_timeout_ms: Some(KEEPALIVE_MS),
        ..Default::default()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = format!("http://127.0.0.1:{}", nginx.port());
    paced_at_keepalive(name, &base, |prefix, answered| {
        let log = rt.block_on(nginx.access_log(answered));
        posts_twice(
            log.iter()
                .map(|l| l.uri.as_str())
                .filter(|p| p.starts_with(prefix)),
        )
    });
}

/// Node.js's `http` server with a 100 ms idle timeout per connection, HTTP/1.1.
#[test]
fn http1_requests_paced_at_node_keepalive_timeout() {
    let name = "http1_requests_paced_at_node_keepalive_timeout";
    if skip_unless(node::available(), "node", name) {
        return;
    }
    let node = Node::start(KEEPALIVE_MS);
    let url = node.url("").to_string();
    paced_at_keepalive(name, url.trim_end_matches('/'), |prefix, answered| {
        let log = node.requests(answered);
        posts_twice(
            log.iter()
                .filter_map(|l| l.split(' ').nth(1))
                .filter(|p| p.starts_with(prefix)),
        )
    });
}

// ----- HAProxy with a 1 ms keep-alive ------------------------------------------------------

/// HAProxy with a 1 ms client keep-alive in front of nginx, HTTP/1.1 (`h2c`: HTTP/2 with
/// prior knowledge between the client and HAProxy, which then ends an idle connection with
/// GOAWAY after 1 ms): requests paced from 0 to 2 ms apart, so nearly every reuse races
/// HAProxy's close.
fn through_haproxy(name: &str, h2c: bool, shared: bool) {
    if skip_unless(nginx::available(), "nginx", name)
        || skip_unless(haproxy::available(), "haproxy", name)
    {
        return;
    }
    let nginx = Nginx::start(NginxOptions {
        tls: false,
        ..Default::default()
    });
    let proxy = Haproxy::start(([127, 0, 0, 1], nginx.port()).into(), 1, h2c);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let logged = |base: &str, answered: usize| -> Vec<String> {
        let log = rt.block_on(nginx.access_log(answered));
        posts_twice(
            log.iter()
                .map(|l| l.uri.as_str())
                .filter(|p| p.starts_with(base)),
        )
    };
    let url = proxy.url("").to_string();
    let base = url.trim_end_matches('/');
    let per_loop = env_usize("POOLSCOPE_RACE_REQUESTS", 5000).div_ceil(LOOPS);
    let run = |prefix: &str, make: fn(bool) -> Exchange| {
        let one = shared.then(|| {
            let _in = rt.enter();
            make(h2c)
        });
        paced_run(
            &format!("{base}/{prefix}"),
            Duration::ZERO,
            Duration::from_millis(2),
            per_loop,
            move || one.clone().unwrap_or_else(|| make(h2c)),
        )
    };
    let ours = run("poolscope", |h2c| {
        poolscope(HttpConnector::new(), |b| {
            b.http2_only(h2c);
        })
    });
    let twice = logged("/poolscope", ours.answered());
    if compare() {
        let theirs = run("hyper-util", hyper_util_http);
        let twice_theirs = logged("/hyper-util", ours.answered() + theirs.answered());
        eprintln!("{}", ours.row("poolscope", twice.len()));
        eprintln!("{}", theirs.row("hyper-util", twice_theirs.len()));
        if h2c {
            eprintln!("| Go | Go's standard library has no h2c with prior knowledge |");
        } else if let Some(go) = go_run(&[
            "-mode",
            "paced",
            "-url",
            &format!("{base}/go"),
            "-loops",
            &LOOPS.to_string(),
            "-per-loop",
            &per_loop.to_string(),
            "-pause-from-us",
            "0",
            "-pause-width-us",
            "2000",
        ]) {
            let go = go_tally(&go);
            let all = ours.answered() + theirs.answered() + go.answered();
            eprintln!("{}", go.row("Go", logged("/go", all).len()));
        }
    }
    check(name, &ours, &twice);
}

#[test]
fn http1_through_haproxy_with_1ms_keepalive() {
    through_haproxy("http1_through_haproxy_with_1ms_keepalive", false, false);
}

#[test]
fn http1_through_haproxy_with_1ms_keepalive_one_client() {
    through_haproxy(
        "http1_through_haproxy_with_1ms_keepalive_one_client",
        false,
        true,
    );
}

#[test]
fn http2_through_haproxy_with_1ms_keepalive() {
    through_haproxy("http2_through_haproxy_with_1ms_keepalive", true, false);
}

// ----- HTTP/2 GOAWAY with a small stream limit ---------------------------------------------

/// `n` GETs of `url` at concurrency `c`: the failures (and hangs) with their causes.
async fn load(send: &Exchange, url: &str, n: u64, c: usize) -> Vec<String> {
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..c)
        .map(|_| {
            let (send, next, failed) = (send.clone(), next.clone(), failed.clone());
            let url = url.to_owned();
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::SeqCst) < n {
                    let req = Request::get(url.as_str()).body(Full::default()).unwrap();
                    let started = Instant::now();
                    match exchange(&send, req).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => failed.lock().unwrap().push(e),
                        Err(()) => failed
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
    let failed = std::mem::take(&mut *failed.lock().unwrap());
    failed
}

/// nginx over TLS with HTTP/2, 4 streams per connection and a GOAWAY after 50 streams: runs
/// of 1,000 GETs at c=16, every one answered, and in every run the client's opened
/// connections are the connections nginx accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_goaway_every_50_streams_with_4_streams_per_connection() {
    let name = "http2_goaway_every_50_streams_with_4_streams_per_connection";
    if skip_unless(nginx::available(), "nginx", name) {
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
    let mut failed_gets = 0;
    for run in 0..runs {
        let (stats, opened) = support::counting_opened();
        let client: Client<HttpsConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .telemetry()
            .stats(stats)
            .build(HttpsConnector::with_roots(nginx.roots()));
        let send = exchange_of(client.clone());
        let failed = load(&send, &nginx.url("/").to_string(), 1000, 16).await;
        support::settle(&client).await;
        let accepted = nginx.accepts().await;
        let opened = opened.load(Ordering::SeqCst);
        failed_gets += failed.len();
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
    if compare() {
        eprintln!("| poolscope | {failed_gets}/{} GETs failed |", runs * 1000);
        let mut theirs = 0;
        let mut runs_failing = 0;
        for _ in 0..runs {
            let send = hyper_util(HttpsConnector::with_roots(nginx.roots()), false);
            let failed = load(&send, &nginx.url("/").to_string(), 1000, 16).await;
            theirs += failed.len();
            runs_failing += usize::from(!failed.is_empty());
            if let Some(e) = failed.first() {
                eprintln!("  hyper-util: {e}");
            }
        }
        eprintln!(
            "| hyper-util | {theirs}/{} GETs failed, in {runs_failing} of {runs} runs |",
            runs * 1000
        );
        let (mut go_failed, mut go_runs_failing) = (0, 0);
        for _ in 0..runs {
            let ca = nginx.ca_pem_path();
            let Some(go) = go_run(&[
                "-mode",
                "load",
                "-url",
                &nginx.url("/").to_string(),
                "-cafile",
                ca.to_str().unwrap(),
                "-n",
                "1000",
                "-c",
                "16",
            ]) else {
                break;
            };
            let f =
                (go["failed"].as_u64().unwrap_or(0) + go["hung"].as_u64().unwrap_or(0)) as usize;
            go_failed += f;
            go_runs_failing += usize::from(f > 0);
        }
        eprintln!(
            "| Go | {go_failed}/{} GETs failed, in {go_runs_failing} of {runs} runs |",
            runs * 1000
        );
    }
    assert!(failures.is_empty(), "{name}: {failures:#?}");
}

// ----- apache's graceful restart -----------------------------------------------------------

/// Requests started at `rate` per second, whether or not the earlier ones ended, each
/// `request(base, k)`; graceful restarts of `apache` 0.8, 1.6, 2.4 and 3.2 s in.
async fn open_loop(
    send: &Exchange,
    base: &str,
    n: usize,
    rate: f64,
    apache: &Arc<Apache>,
) -> Tally {
    let start = tokio::time::Instant::now();
    let reloads = {
        let apache = apache.clone();
        tokio::task::spawn_blocking(move || {
            for at in [0.8, 1.6, 2.4, 3.2] {
                std::thread::sleep(Duration::from_secs_f64(at).saturating_sub(start.elapsed()));
                apache.graceful();
            }
        })
    };
    let mut tasks = Vec::new();
    for k in 0..n {
        tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / rate)).await;
        let (post, path, req) = request(base, &k.to_string(), k);
        let send = send.clone();
        tasks.push(tokio::spawn(async move {
            (post, path, exchange(&send, req).await)
        }));
    }
    let mut tally = Tally::default();
    for t in tasks {
        let (post, path, res) = t.await.unwrap();
        tally.record(post, path, res);
    }
    reloads.await.unwrap();
    tally
}

/// apache 2.4 with mod_http2 over TLS, graceful restarts (`SIGUSR1`, as `apachectl
/// graceful` and logrotate) during an open-loop run of 1,200 requests at 300/s, every fourth
/// a POST: apache sends GOAWAY and then closes connections that still have streams open.
/// Every GET is answered; no POST reaches apache twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_apache_graceful_restarts_during_open_loop() {
    let name = "http2_apache_graceful_restarts_during_open_loop";
    if skip_unless(apache::available(), "apache2 with mod_http2", name) {
        return;
    }
    let apache = Arc::new(Apache::start());
    let logged = |prefix: &'static str, answered: usize| {
        let apache = apache.clone();
        tokio::task::spawn_blocking(move || {
            let log = apache.access_log(answered);
            posts_twice(
                log.iter()
                    .filter_map(|l| l.split(' ').nth(1))
                    .filter(|p| p.starts_with(prefix)),
            )
        })
    };
    let url = apache.url("").to_string();
    let base = url.trim_end_matches('/');
    let ours = poolscope(HttpsConnector::with_roots(apache.roots()), |_| {});
    let ours = open_loop(&ours, &format!("{base}/poolscope"), 1200, 300.0, &apache).await;
    let twice = logged("/poolscope", ours.answered()).await.unwrap();
    if compare() {
        // Built before the clock of Go's run starts.
        let _ = tokio::task::spawn_blocking(go_binary).await;
        let theirs = hyper_util(HttpsConnector::with_roots(apache.roots()), false);
        let theirs = open_loop(&theirs, &format!("{base}/hyper-util"), 1200, 300.0, &apache).await;
        let twice_theirs = logged("/hyper-util", ours.answered() + theirs.answered())
            .await
            .unwrap();
        eprintln!("{}", ours.row("poolscope", twice.len()));
        eprintln!("{}", theirs.row("hyper-util", twice_theirs.len()));
        let (ca, go_url) = (apache.ca_pem_path(), format!("{base}/go"));
        let go = tokio::task::spawn_blocking(move || {
            go_run(&[
                "-mode",
                "openloop",
                "-url",
                &go_url,
                "-cafile",
                ca.to_str().unwrap(),
                "-rate",
                "300",
                "-n",
                "1200",
                "-post-every",
                "4",
            ])
        });
        // The same restarts, timed from Go's start (its binary is already built).
        let reloads = {
            let apache = apache.clone();
            tokio::task::spawn_blocking(move || {
                let start = Instant::now();
                for at in [0.8, 1.6, 2.4, 3.2] {
                    std::thread::sleep(Duration::from_secs_f64(at).saturating_sub(start.elapsed()));
                    apache.graceful();
                }
            })
        };
        if let Some(go) = go.await.unwrap() {
            let go = go_tally(&go);
            let all = ours.answered() + theirs.answered() + go.answered();
            eprintln!("{}", go.row("Go", logged("/go", all).await.unwrap().len()));
        }
        reloads.await.unwrap();
    }
    check(name, &ours, &twice);
}

// ----- a connection whose task is dropped ---------------------------------------------------

/// Spawns on one runtime, whichever runtime asks.
#[derive(Clone)]
struct OnHandle(tokio::runtime::Handle);

impl<F: Future<Output = ()> + Send + 'static> hyper::rt::Executor<F> for OnHandle {
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

/// When the runtime that drives a client's connections shuts down (their tasks dropped),
/// every request on those connections ends at once with an error, its lease returned; none
/// waits on a connection that no longer exists.
#[test]
fn requests_end_when_their_connections_runtime_shuts_down() {
    let server_rt = tokio::runtime::Runtime::new().unwrap();
    // Accepts, reads, never answers.
    let addr = server_rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    use tokio::io::AsyncReadExt;
                    while tcp.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                });
            }
        });
        addr
    });
    let conn_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(OnHandle(conn_rt.handle().clone())).build_http();
    let req_rt = tokio::runtime::Runtime::new().unwrap();
    let requests: Vec<_> = (0..8)
        .map(|k| {
            let client = client.clone();
            let (_, _, req) = request(&format!("http://{addr}"), &k.to_string(), k);
            req_rt.spawn(async move { client.request(req).await.map(|_| ()) })
        })
        .collect();
    // The requests are written and waiting for their answers.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        client.pool_snapshot().total_active(),
        8,
        "{}",
        client.pool_snapshot()
    );
    conn_rt.shutdown_background();
    let ended = req_rt.block_on(async {
        let mut errors = Vec::new();
        for r in requests {
            let res = tokio::time::timeout(Duration::from_secs(2), r)
                .await
                .expect("a request went on waiting on a connection whose task is gone");
            errors.push(res.unwrap().expect_err("nobody answered it"));
        }
        errors
    });
    eprintln!("{:?}", ended.iter().map(|e| chain(e)).collect::<Vec<_>>());
    let snap = client.pool_snapshot();
    assert_eq!(snap.total_active() + snap.total_connecting(), 0, "{snap}");
}

/// One client under closed-loop load (c=16, no pause) through HAProxy with a 1 ms client
/// keep-alive: the connections at the bottom of the pool's idle list sit long enough for
/// HAProxy to close them, and are taken again as it does.
async fn through_haproxy_under_load(name: &str, h2c: bool) {
    if skip_unless(nginx::available(), "nginx", name)
        || skip_unless(haproxy::available(), "haproxy", name)
    {
        return;
    }
    let nginx = Nginx::start(NginxOptions {
        tls: false,
        ..Default::default()
    });
    let proxy = Haproxy::start(([127, 0, 0, 1], nginx.port()).into(), 1, h2c);
    let total = env_usize("POOLSCOPE_RACE_REQUESTS", 5000) as u64;
    let retries = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let r = retries.clone();
    let trace = poolscope::ClientTrace::builder()
        .on_retry(move |i| {
            *r.lock()
                .unwrap()
                .entry(format!("attempt {} {}", i.attempt, i.reason))
                .or_default() += 1;
        })
        .build();
    let send = poolscope(HttpConnector::new(), |b| {
        b.http2_only(h2c).telemetry().trace(trace);
    });
    let failed = load(&send, &proxy.url("/poolscope").to_string(), total, 16).await;
    eprintln!(
        "{name}: {} of {total} GETs failed; retries {:?}",
        failed.len(),
        retries.lock().unwrap()
    );
    if compare() {
        let theirs = hyper_util_http(h2c);
        let f = load(&theirs, &proxy.url("/hyper-util").to_string(), total, 16).await;
        eprintln!("| poolscope | {}/{total} |", failed.len());
        eprintln!("| hyper-util | {}/{total} | {:?}", f.len(), f.first());
    }
    assert!(failed.is_empty(), "{name}: {failed:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_through_haproxy_with_1ms_keepalive_under_load() {
    through_haproxy_under_load("http1_through_haproxy_with_1ms_keepalive_under_load", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_through_haproxy_with_1ms_keepalive_under_load() {
    through_haproxy_under_load("http2_through_haproxy_with_1ms_keepalive_under_load", true).await;
}
