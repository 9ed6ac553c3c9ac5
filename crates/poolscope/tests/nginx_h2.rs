//! HTTP/2 against a real nginx over TLS: nginx ends a connection after `keepalive_requests`
//! streams with a GOAWAY, and requests in flight on it at that moment must be retried on
//! another connection, never failed and never sent twice.
//!
//! Each test skips (with a message) where nginx is not installed.

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioExecutor;
use poolscope::connect::HttpsConnector;
use poolscope::trace::RetryReason;
use poolscope::Client;
use support::nginx::{self, Nginx, NginxOptions};

/// Every test body ends within this.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The requests of a load phase get this long; those unfinished then are reported (a request
/// that hangs is a failure too, and the counts still help).
const LOAD_TIMEOUT: Duration = Duration::from_secs(40);
/// Concurrency of the load tests.
const TASKS: usize = 16;
/// How many failures are printed in full.
const SHOWN_FAILURES: usize = 5;

/// Runs `body` under [`TEST_TIMEOUT`], or skips it without nginx.
async fn with_nginx<F: Future<Output = ()>>(name: &str, body: F) {
    support::log_from_env();
    if !nginx::available() {
        // CI installs nginx (`.ci/run`): there, a missing nginx is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "{name}: nginx is not installed, and CI must run this test"
        );
        eprintln!("{name}: skipped, nginx is not installed");
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .unwrap_or_else(|_| panic!("{name}: timed out after {TEST_TIMEOUT:?}"));
}

/// A poolscope client for `nginx`'s CA, and the count of connections it opened.
fn client<B>(nginx: &Nginx) -> (Client<HttpsConnector, B>, Arc<AtomicU64>, Retries)
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let (stats, opened) = support::counting_opened();
    let retries = Retries::default();
    let r = retries.clone();
    let trace = poolscope::ClientTrace::builder()
        .on_retry(move |i| {
            r.0.lock()
                .unwrap()
                .push((i.reason, format!("attempt {}: {}", i.attempt, i.error)));
        })
        .build();
    let client = Client::builder(TokioExecutor::new())
        .telemetry()
        .stats(stats)
        .trace(trace)
        .snapshot_tcp_info(true)
        .build(HttpsConnector::with_roots(nginx.roots()));
    (client, opened, retries)
}

/// The retries a client made: reason, attempt and error.
#[derive(Clone, Default)]
struct Retries(Arc<std::sync::Mutex<Vec<(RetryReason, String)>>>);

impl Retries {
    fn count(&self, reason: RetryReason) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _)| *r == reason)
            .count()
    }

    /// By reason, with the distinct errors of those that were not for GOAWAY.
    fn summary(&self) -> String {
        let all = self.0.lock().unwrap();
        let mut by: std::collections::BTreeMap<String, usize> = Default::default();
        for (r, _) in all.iter() {
            *by.entry(r.to_string()).or_default() += 1;
        }
        let odd: std::collections::BTreeSet<String> = all
            .iter()
            .filter(|(r, _)| *r != RetryReason::GoAway)
            .map(|(r, e)| format!("{r}: {e}"))
            .collect();
        format!("{by:?} {odd:?}")
    }
}

/// What each request of a load saw, attempt by attempt: the connections it got and why it
/// was sent again (printed for a request that went wrong).
#[derive(Clone, Default)]
struct Journal(Arc<Mutex<BTreeMap<usize, Vec<String>>>>);

impl Journal {
    /// A trace for request `id` that writes into the journal.
    fn trace(&self, id: usize) -> poolscope::ClientTrace {
        let (a, b) = (self.clone(), self.clone());
        poolscope::ClientTrace::builder()
            .on_got_conn(move |i| {
                a.add(
                    id,
                    format!(
                        "request {} got conn {} (reused {}, queued {:?}, local {:?})",
                        i.request_id, i.conn_id, i.reused, i.queued_for, i.local_addr
                    ),
                )
            })
            .on_wrote_headers({
                let j = self.clone();
                move |i| j.add(id, format!("wrote headers at {:?}", i.elapsed))
            })
            .on_wrote_request({
                let j = self.clone();
                move |i| {
                    j.add(
                        id,
                        format!("wrote request at {:?} (error {:?})", i.elapsed, i.error),
                    )
                }
            })
            .on_got_first_response_byte({
                let j = self.clone();
                move |i| j.add(id, format!("first byte at {:?}", i.elapsed))
            })
            .on_retry(move |i| {
                b.add(
                    id,
                    format!(
                        "retry (attempt {}, {}) after conn {}: {}",
                        i.attempt, i.reason, i.conn_id, i.error
                    ),
                )
            })
            .build()
    }

    fn add(&self, id: usize, what: String) {
        self.0.lock().unwrap().entry(id).or_default().push(what);
    }

    /// What the first few unfinished requests of `outcome` saw (the first is where it hung).
    fn print_unfinished(&self, method: &str, outcome: &Outcome) {
        for &id in outcome.unfinished.iter().take(3) {
            eprintln!("  {method} {id}: {}", self.of(id));
        }
    }

    fn of(&self, id: usize) -> String {
        self.0
            .lock()
            .unwrap()
            .get(&id)
            .map(|v| v.join("; "))
            .unwrap_or_default()
    }
}

/// `Display` (alternate), every source below it, then `Debug`.
fn describe(err: &poolscope::Error) -> String {
    let mut s = format!("{err:#}");
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        s.push_str(&format!("\n    caused by: {c}"));
        cause = c.source();
    }
    s.push_str(&format!("\n    debug: {err:?}"));
    s
}

/// Checks a response is nginx's `200 "ok\n"` over HTTP/2.
async fn check_ok(
    resp: Result<http::Response<poolscope::ResponseBody>, poolscope::Error>,
    want: Version,
) -> Result<(), String> {
    let resp = resp.map_err(|e| describe(&e))?;
    let (status, version) = (resp.status(), resp.version());
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e:#} / {e:?}"))?
        .to_bytes();
    if status != StatusCode::OK || version != want || body != "ok\n" {
        return Err(format!("got {status} {version:?} body {body:?}"));
    }
    Ok(())
}

/// What became of a load phase's requests.
#[derive(Default)]
struct Outcome {
    /// Requests that got the expected response.
    ok: Vec<usize>,
    /// Requests that failed, and how.
    failures: Vec<(usize, String)>,
    /// Requests still unfinished at [`LOAD_TIMEOUT`] (their tasks were aborted).
    unfinished: Vec<usize>,
}

impl Outcome {
    fn print(&self, what: &str) {
        eprintln!(
            "{what}: {} ok, {} failed, {} unfinished within {LOAD_TIMEOUT:?}{}",
            self.ok.len(),
            self.failures.len(),
            self.unfinished.len(),
            if self.unfinished.is_empty() {
                String::new()
            } else {
                format!(" (first: {:?})", first(&self.unfinished))
            }
        );
        for (id, err) in self.failures.iter().take(SHOWN_FAILURES) {
            eprintln!("  request {id}: {err}");
        }
    }
}

/// At most 20 of `v`, for messages.
fn first(v: &[usize]) -> &[usize] {
    &v[..v.len().min(20)]
}

/// Runs `send(id)` for each id in `0..total` on `tasks` tasks, each sequentially (task `t`
/// sends ids `t`, `t + tasks`, …), for at most [`LOAD_TIMEOUT`].
async fn run_load<F, Fut>(total: usize, tasks: usize, send: F, stuck: impl FnOnce()) -> Outcome
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let (send, outcome) = (send.clone(), outcome.clone());
        set.spawn(async move {
            for id in (t..total).step_by(tasks) {
                let r = send(id).await;
                let mut o = outcome.lock().unwrap();
                match r {
                    Ok(()) => o.ok.push(id),
                    Err(e) => o.failures.push((id, e)),
                }
            }
        });
    }
    let all_done = tokio::time::timeout(LOAD_TIMEOUT, async {
        while let Some(r) = set.join_next().await {
            r.expect("request task panicked");
        }
    })
    .await;
    if all_done.is_err() {
        // What the stuck requests are waiting for, before they are aborted.
        stuck();
        set.abort_all();
        while set.join_next().await.is_some() {}
    }
    let mut o = std::mem::take(&mut *outcome.lock().unwrap());
    o.ok.sort_unstable();
    o.failures.sort_by_key(|(id, _)| *id);
    let mut done = vec![false; total];
    for &id in o.ok.iter().chain(o.failures.iter().map(|(id, _)| id)) {
        done[id] = true;
    }
    o.unfinished = (0..total).filter(|&id| !done[id]).collect();
    o
}

/// Prints `client`'s pool and its requests in flight (for a load that did not finish).
fn dump<B: Send + 'static>(client: &Client<HttpsConnector, B>) {
    eprintln!("stuck: pool {}", client.pool_snapshot());
    eprintln!("stuck: {}", client.in_flight());
}

/// The tcp connections nginx logged for requests to `uri`, with the number of requests each.
fn log_connections(log: &[nginx::AccessLine]) -> BTreeMap<u64, usize> {
    let mut per_conn = BTreeMap::new();
    for l in log {
        *per_conn.entry(l.connection).or_insert(0) += 1;
    }
    per_conn
}

/// The harness itself: nginx starts, TLS with the generated CA works for HTTP/1.1 and h2,
/// and `accepts()` / `access_log(n)` count exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_serves_tls_and_counts_connections_and_requests() {
    with_nginx("harness", async {
        // HTTP/1.1: nginx without http2 offers no h2 in ALPN.
        let nginx = Nginx::start(NginxOptions {
            keepalive_requests: 100,
            http2: false,
            ..Default::default()
        });
        assert_eq!(nginx.accepts().await, 0, "nothing connected yet");
        assert_eq!(nginx.accepts().await, 0, "accepts() does not count itself");
        let (c, opened, _retries) = client::<Empty<Bytes>>(&nginx);
        for _ in 0..3 {
            check_ok(c.get(nginx.url("/")).await, Version::HTTP_11)
                .await
                .unwrap();
        }
        support::settle(&c).await;
        // How many connections the client used for 3 sequential requests is the library's
        // business; the harness must count the same as the client.
        let opened = opened.load(Ordering::SeqCst);
        let accepts = nginx.accepts().await;
        let log: Vec<_> = nginx
            .access_log(3)
            .await
            .into_iter()
            .filter(|l| l.uri == "/")
            .collect();
        eprintln!("harness, HTTP/1.1: client opened {opened}, nginx accepted {accepts}; {log:?}");
        assert_eq!(
            accepts, opened,
            "nginx's accepts vs the client's connections"
        );
        assert_eq!(log.len(), 3, "{log:?}");
        assert!(
            log.iter()
                .all(|l| l.method == "GET" && l.status == 200 && l.protocol == "HTTP/1.1"),
            "{log:?}"
        );
        // nginx numbers the requests of each connection 1, 2, …
        for (conn, n) in log_connections(&log) {
            let numbers: Vec<u64> = log
                .iter()
                .filter(|l| l.connection == conn)
                .map(|l| l.connection_requests)
                .collect();
            assert_eq!(numbers, (1..=n as u64).collect::<Vec<_>>(), "{log:?}");
        }
        assert!(log_connections(&log).len() as u64 <= opened, "{log:?}");
        drop(nginx);

        // HTTP/2.
        let nginx = Nginx::start(NginxOptions {
            keepalive_requests: 100,
            http2: true,
            ..Default::default()
        });
        let (c, opened, _retries) = client::<Empty<Bytes>>(&nginx);
        check_ok(c.get(nginx.url("/")).await, Version::HTTP_2)
            .await
            .unwrap();
        support::settle(&c).await;
        assert_eq!(
            opened.load(Ordering::SeqCst),
            1,
            "one request, one connection"
        );
        assert_eq!(nginx.accepts().await, 1, "nginx's accepts");
        let log = nginx.access_log(1).await;
        assert!(
            log.iter().any(|l| l.uri == "/" && l.protocol == "HTTP/2.0"),
            "{log:?}"
        );
        // The status fetches are logged too (one per call so far).
        assert_eq!(
            log.iter().filter(|l| l.uri == "/nginx_status").count(),
            1,
            "{log:?}"
        );
    })
    .await;
}

/// nginx sends GOAWAY after every 50th stream of a connection; 2,000 GETs at c=16 all
/// succeed, each reaches nginx once, and every connection the client opened is one nginx
/// accepted (and no other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_survive_goaway_every_50_streams() {
    const TOTAL: usize = 2_000;
    with_nginx("gets_survive_goaway_every_50_streams", async {
        let nginx = Nginx::start(NginxOptions {
            keepalive_requests: 50,
            http2: true,
            ..Default::default()
        });
        let (c, opened, retries) = client::<Empty<Bytes>>(&nginx);
        let url = nginx.url("/");
        let cl = c.clone();
        let journal = Journal::default();
        let j = journal.clone();
        let outcome = run_load(
            TOTAL,
            TASKS,
            move |id| {
                let mut req = Request::get(url.clone())
                    .body(Empty::new())
                    .expect("valid request");
                req.extensions_mut().insert(j.trace(id));
                let fut = cl.request(req);
                async move { check_ok(fut.await, Version::HTTP_2).await }
            },
            || dump(&c),
        )
        .await;
        outcome.print("GET /");
        journal.print_unfinished("GET", &outcome);

        support::settle(&c).await;
        let opened = opened.load(Ordering::SeqCst);
        let accepts = nginx.accepts().await;
        let log: Vec<_> = nginx
            .access_log(outcome.ok.len())
            .await
            .into_iter()
            .filter(|l| l.uri == "/")
            .collect();
        let good = log
            .iter()
            .filter(|l| l.method == "GET" && l.status == 200 && l.protocol == "HTTP/2.0")
            .count();
        let per_conn = log_connections(&log);
        eprintln!(
            "GET /: {TOTAL} sent, {} ok, {} failed, {} unfinished; client opened {opened} \
             connections, nginx accepted {accepts}; access log: {} lines for /, {good} GET 200 \
             HTTP/2.0, on {} connections (requests per connection: min {:?}, max {:?})",
            outcome.ok.len(),
            outcome.failures.len(),
            outcome.unfinished.len(),
            log.len(),
            per_conn.len(),
            per_conn.values().min(),
            per_conn.values().max(),
        );
        assert_eq!(outcome.failures.len(), 0, "failed requests");
        assert_eq!(outcome.unfinished.len(), 0, "unfinished requests");
        assert_eq!(
            opened, accepts,
            "client's connections opened vs nginx's accepts"
        );
        eprintln!("retries: {}", retries.summary());
        // A GET may reach nginx twice only when the connection broke under it after nginx
        // answered (nginx closes after its GOAWAY; a reset can lose the answer on the way):
        // then it was retried as an idempotent request on a stale connection. Every extra
        // line must be such a retry; a GOAWAY or not-sent retry never adds one.
        let stale = retries.count(RetryReason::StaleConnection)
            + retries.count(RetryReason::ConnectionClosed);
        assert!(
            good >= TOTAL && good <= TOTAL + stale,
            "access-log lines GET / 200 HTTP/2.0: {good} for {TOTAL} requests and {stale} \
             retries after a broken connection"
        );
        assert_eq!(log.len(), good, "access-log lines for /");
    })
    .await;
}

/// The same GOAWAYs with 500 POSTs: all succeed, and nginx handled each exactly once (a POST
/// resent after nginx processed it would be logged twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_survive_goaway_and_reach_nginx_exactly_once() {
    const TOTAL: usize = 500;
    with_nginx("posts_survive_goaway_and_reach_nginx_exactly_once", async {
        let nginx = Nginx::start(NginxOptions {
            keepalive_requests: 50,
            http2: true,
            ..Default::default()
        });
        let (c, _opened, retries) = client::<Full<Bytes>>(&nginx);
        let urls: Arc<Vec<http::Uri>> = Arc::new(
            (0..TOTAL)
                .map(|id| nginx.url(&format!("/post?id={id}")))
                .collect(),
        );
        let cl = c.clone();
        let journal = Journal::default();
        let j = journal.clone();
        let outcome = run_load(
            TOTAL,
            TASKS,
            move |id| {
                let mut req = Request::builder()
                    .method(Method::POST)
                    .uri(urls[id].clone())
                    .body(Full::new(Bytes::from(format!("post number {id}"))))
                    .expect("valid request");
                req.extensions_mut().insert(j.trace(id));
                let fut = cl.request(req);
                async move { check_ok(fut.await, Version::HTTP_2).await }
            },
            || dump(&c),
        )
        .await;
        outcome.print("POST /post");
        journal.print_unfinished("POST", &outcome);

        let mut seen = vec![0usize; TOTAL];
        let mut other = Vec::new();
        let log = nginx.access_log(outcome.ok.len()).await;
        for l in log.iter().cloned() {
            let id = l
                .uri
                .strip_prefix("/post?id=")
                .and_then(|id| id.parse::<usize>().ok());
            match id {
                Some(id) if id < TOTAL && l.method == "POST" && l.status == 200 => seen[id] += 1,
                _ if l.uri == "/nginx_status" => {}
                _ => other.push(l),
            }
        }
        let missing: Vec<usize> = (0..TOTAL).filter(|&id| seen[id] == 0).collect();
        let twice: Vec<usize> = (0..TOTAL).filter(|&id| seen[id] > 1).collect();
        // The assumption behind "exactly once": a stream nginx refused (one past a GOAWAY's
        // last-stream-id: nginx stops parsing once it sent GOAWAY and the last stream ended,
        // and discards the rest in its lingering close, without creating a request) is never
        // logged, so a POST that failed that way is missing from the log, and one that was
        // retried shows once. A failed POST that *is* in the log was processed by nginx and
        // then failed on the client side: retrying it would be a duplicate. With today's
        // library every failed POST was missing from the log (checked below and printed).
        let failed_but_logged: Vec<usize> = outcome
            .failures
            .iter()
            .map(|(id, _)| *id)
            .filter(|&id| seen[id] > 0)
            .collect();
        let unfinished_but_logged: Vec<usize> = outcome
            .unfinished
            .iter()
            .copied()
            .filter(|&id| seen[id] > 0)
            .collect();
        eprintln!(
            "POST /post: {TOTAL} sent, {} ok, {} failed ({} of them logged by nginx: {:?}), {} \
             unfinished ({} of them logged: {:?}); access log: {} ids missing {:?}, {} ids \
             twice or more {:?}, {} unexpected lines",
            outcome.ok.len(),
            outcome.failures.len(),
            failed_but_logged.len(),
            first(&failed_but_logged),
            outcome.unfinished.len(),
            unfinished_but_logged.len(),
            first(&unfinished_but_logged),
            missing.len(),
            first(&missing),
            twice.len(),
            first(&twice),
            other.len(),
        );
        eprintln!("retries: {}", retries.summary());
        // A POST may fail only where nginx did handle it and the connection then broke
        // before its answer arrived (the client cannot know, so it must not resend it); one
        // that failed without nginx handling it should have been retried.
        let unexplained: Vec<&(usize, String)> = outcome
            .failures
            .iter()
            .filter(|(id, _)| seen[*id] == 0)
            .collect();
        assert!(
            unexplained.is_empty(),
            "POSTs that failed and nginx never handled: {unexplained:?}"
        );
        assert!(
            outcome.failures.len() <= 1,
            "more than a rare lost answer: {:?}",
            outcome.failures
        );
        assert_eq!(outcome.unfinished.len(), 0, "unfinished requests");
        assert_eq!(
            retries.count(RetryReason::StaleConnection)
                + retries.count(RetryReason::ConnectionClosed),
            0,
            "a POST is never resent after it may have been processed"
        );
        // A POST nginx handled twice was resent after an attempt nginx had processed. The
        // cause found (2026-12-02): hyper's dispatcher opened the 50th stream, h2's
        // connection task on another thread sent it, and nginx's GOAWAY naming it as the last
        // stream arrived before the dispatcher's next check, which failed the request with
        // that GOAWAY(NO_ERROR) as if it had never been sent. In about 3 of 25 runs of this
        // file, always the 50th stream of its connection (the journal below shows it); none
        // in 800 runs since the connection task is polled by the dispatcher's own task.
        for &id in &twice {
            eprintln!("  POST {id} handled twice: {}", journal.of(id));
            for l in log.iter().filter(|l| l.uri == format!("/post?id={id}")) {
                eprintln!("    nginx: {l:?}");
            }
        }
        assert!(
            twice.is_empty(),
            "POSTs nginx handled more than once: {twice:?}; retries: {}",
            retries.summary()
        );
        assert!(missing.is_empty(), "POSTs nginx never handled: {missing:?}");
        assert!(other.is_empty(), "unexpected access-log lines: {other:?}");
    })
    .await;
}

/// 64 GETs started at once on a fresh client: one TLS connection (h2, multiplexed), not 64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_burst_over_tls_makes_one_connection() {
    const BURST: usize = 64;
    with_nginx("a_cold_burst_over_tls_makes_one_connection", async {
        let nginx = Nginx::start(NginxOptions {
            keepalive_requests: 1000,
            http2: true,
            ..Default::default()
        });
        let (c, opened, _retries) = client::<Empty<Bytes>>(&nginx);
        let barrier = Arc::new(tokio::sync::Barrier::new(BURST));
        let (cl, url) = (c.clone(), nginx.url("/"));
        // One task per request, all released at once.
        let outcome = run_load(
            BURST,
            BURST,
            move |_| {
                let (c, url, barrier) = (cl.clone(), url.clone(), barrier.clone());
                async move {
                    barrier.wait().await;
                    check_ok(c.get(url).await, Version::HTTP_2).await
                }
            },
            || dump(&c),
        )
        .await;
        outcome.print("cold burst");
        support::settle(&c).await;
        let opened = opened.load(Ordering::SeqCst);
        let accepts = nginx.accepts().await;
        let log: Vec<_> = nginx
            .access_log(outcome.ok.len())
            .await
            .into_iter()
            .filter(|l| l.uri == "/")
            .collect();
        eprintln!(
            "cold burst: {BURST} sent, {} ok, {} failed, {} unfinished; client opened {opened} \
             connections, nginx accepted {accepts}; access log: {} lines for / on {} \
             connections",
            outcome.ok.len(),
            outcome.failures.len(),
            outcome.unfinished.len(),
            log.len(),
            log_connections(&log).len(),
        );
        assert_eq!(outcome.failures.len(), 0, "failed requests");
        assert_eq!(outcome.unfinished.len(), 0, "unfinished requests");
        assert_eq!(accepts, 1, "nginx's accepts");
        assert_eq!(opened, 1, "client's connections opened");
        // The snapshot's row for it: HTTP/2 over TLS to nginx, every request on it, nginx's
        // stream limit (its default `http2_max_concurrent_streams`, 128), and the kernel's
        // view of the socket beneath TLS.
        let snap = c.pool_snapshot();
        let rows: Vec<_> = snap.connections().map(|(_, r)| r.clone()).collect();
        assert_eq!(rows.len(), 1, "{snap}");
        let row = &rows[0];
        assert_eq!(row.version, Version::HTTP_2, "{snap}");
        assert_eq!(row.requests, BURST as u64, "{snap}");
        assert_eq!(row.max_streams, Some(128), "{snap}");
        assert_eq!(
            row.peer_addr.map(|a| a.port()),
            Some(nginx.port()),
            "{snap}"
        );
        let tcp = row.tcp.expect("TCP_INFO beneath TLS");
        assert_eq!(tcp.state, poolscope::stats::TcpState::Established, "{snap}");
        assert!(tcp.bytes_received.unwrap_or(0) > 0, "{snap}");
    })
    .await;
}
