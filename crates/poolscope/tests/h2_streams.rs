//! HTTP/2 streams the server did not process are sent again, and only those: a stream reset
//! with `REFUSED_STREAM`, or failed by a `GOAWAY(NO_ERROR)` above its last-stream-id, is
//! retried whatever the method (the bodies here are `Full`: replayable), and each POST body
//! reaches the server exactly once; a stream reset with another code after the server read it
//! is not retried. The pool leases an HTTP/2 connection to at most the server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` requests, and dials or queues beyond that.
//!
//! The scripted server (`faultserver::h2frames`) speaks HTTP/2 frame by frame, so each test
//! decides exactly which streams are refused and where the GOAWAY falls; the stream-limit
//! tests use a hyper server with `max_concurrent_streams(4)`.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use faultserver::h2frames::{code, Action, Fate, H2ScriptServer, Script};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use poolscope::trace::{RequestDoneInfo, RetryInfo, RetryReason};
use poolscope::{Client, ClientTrace};
use support::{Ev, Recorder};
use tokio::net::TcpListener;

type C = Client<poolscope::connect::HttpConnector, Full<Bytes>>;

/// A request's outcome: status, version and body, or its error with the source chain.
type Outcome = Result<(StatusCode, Version, Bytes), String>;

/// Every test body ends within this.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

async fn bounded<F: Future<Output = ()>>(name: &str, body: F) {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .unwrap_or_else(|_| panic!("{name}: timed out after {TEST_TIMEOUT:?}"));
}

/// An h2c (prior knowledge) client reporting to `rec`, at most `cap` connections per host.
fn client(rec: &Recorder, cap: Option<usize>) -> C {
    let mut b = Client::builder(TokioExecutor::new());
    b.http2_only(true).telemetry().stats(rec.stats());
    if let Some(cap) = cap {
        b.pool_max_conns_per_host(cap);
    }
    b.build_http()
}

/// What each request (by its label) saw: its retries and how it ended.
#[derive(Clone, Default)]
struct Log {
    retries: Arc<Mutex<BTreeMap<String, Vec<RetryInfo>>>>,
    done: Arc<Mutex<BTreeMap<String, RequestDoneInfo>>>,
}

impl Log {
    /// A trace for the request labelled `label`.
    fn trace(&self, label: &str) -> ClientTrace {
        let (retries, done) = (self.retries.clone(), self.done.clone());
        let (l1, l2) = (label.to_owned(), label.to_owned());
        ClientTrace::builder()
            .on_retry(move |i: &RetryInfo| {
                retries
                    .lock()
                    .unwrap()
                    .entry(l1.clone())
                    .or_default()
                    .push(i.clone());
            })
            .on_request_done(move |i: &RequestDoneInfo| {
                done.lock().unwrap().insert(l2.clone(), i.clone());
            })
            .build()
    }

    fn retries(&self) -> Vec<(String, RetryInfo)> {
        let r = self.retries.lock().unwrap();
        r.iter()
            .flat_map(|(l, v)| v.iter().map(move |i| (l.clone(), i.clone())))
            .collect()
    }

    fn retries_of(&self, label: &str) -> Vec<RetryInfo> {
        self.retries
            .lock()
            .unwrap()
            .get(label)
            .cloned()
            .unwrap_or_default()
    }

    fn done(&self, label: &str) -> Option<RequestDoneInfo> {
        self.done.lock().unwrap().get(label).cloned()
    }
}

/// A request to `url` with `body` (a POST unless empty), traced as `label` in `log`.
fn request(url: &str, body: &str, label: &str, log: &Log) -> Request<Full<Bytes>> {
    let method = if body.is_empty() {
        Method::GET
    } else {
        Method::POST
    };
    let mut req = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    req.extensions_mut().insert(log.trace(label));
    req
}

/// Sends it: `Ok((status, version, body))`, or the error's `Display` with its source chain.
async fn send(c: &C, req: Request<Full<Bytes>>) -> Outcome {
    match c.request(req).await {
        Ok(resp) => {
            let (status, version) = (resp.status(), resp.version());
            match resp.into_body().collect().await {
                Ok(b) => Ok((status, version, b.to_bytes())),
                Err(e) => Err(format!("body: {}", chain(&e))),
            }
        }
        Err(e) => Err(chain(&e)),
    }
}

/// `e` and its sources, joined by ` <- `.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(" <- ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `n` concurrent POSTs with bodies `post-1` … `post-n` (their labels too), each to `url`.
async fn concurrent_posts(c: &C, url: &str, n: usize, log: &Log) -> Vec<(String, Outcome)> {
    let mut tasks = Vec::new();
    for i in 1..=n {
        let label = format!("post-{i}");
        let req = request(url, &label, &label, log);
        let c = c.clone();
        tasks.push(tokio::spawn(async move { (label, send(&c, req).await) }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn assert_all_ok(results: &[(String, Outcome)], body: &str) {
    for (label, r) in results {
        match r {
            Ok((status, version, b)) => {
                assert_eq!(*status, StatusCode::OK, "{label}");
                assert_eq!(*version, Version::HTTP_2, "{label}");
                assert_eq!(b, body, "{label}");
            }
            Err(e) => panic!("{label} failed: {e}"),
        }
    }
}

fn opened(rec: &Recorder) -> usize {
    rec.count(|e| matches!(e, Ev::Opened(..)))
}

/// Waits until `f` holds, for at most 5 s.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    support::eventually_within(what, Duration::from_secs(5), f).await;
}

/// Each request's retries are consecutive attempts from 2, all for `reason`, and its
/// `resend_count` is their number. Returns the total of retries.
fn check_retries(log: &Log, labels: &[String], reasons: &[RetryReason]) -> usize {
    let mut total = 0;
    for label in labels {
        let retries = log.retries_of(label);
        let attempts: Vec<u32> = retries.iter().map(|r| r.attempt).collect();
        let expected: Vec<u32> = (2..2 + retries.len() as u32).collect();
        assert_eq!(attempts, expected, "{label}: attempts");
        for r in &retries {
            assert!(
                reasons.contains(&r.reason),
                "{label}: retry for {:?} ({}), expected one of {reasons:?}",
                r.reason,
                r.error
            );
        }
        let done = log
            .done(label)
            .unwrap_or_else(|| panic!("{label}: no request_done"));
        assert_eq!(
            done.timings.resend_count as usize,
            retries.len(),
            "{label}: resend_count"
        );
        assert!(done.error.is_none(), "{label}: {:?}", done.error);
        total += retries.len();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_streams_are_sent_again_and_each_post_is_processed_once() {
    bounded("refused streams", async {
        let server = H2ScriptServer::start(Script::new().on_each([2, 4, 5], Action::Refuse)).await;
        let rec = Recorder::default();
        let c = client(&rec, None);
        let log = Log::default();
        let results = concurrent_posts(&c, &server.url("/"), 8, &log).await;
        assert_all_ok(&results, "ok");
        let labels: Vec<String> = results.iter().map(|(l, _)| l.clone()).collect();

        // The server: 8 + 3 streams; the 2nd, 4th and 5th refused; each body processed once.
        let records = server.records();
        let fates: Vec<Fate> = records.iter().map(|r| r.fate).collect();
        eprintln!("server streams: {records:?}");
        assert_eq!(server.streams_seen(), 11, "{fates:?}");
        let refused: Vec<usize> = records
            .iter()
            .filter(|r| r.fate == Fate::Refused)
            .filter_map(|r| r.index)
            .collect();
        assert_eq!(refused, [2, 4, 5]);
        assert_eq!(server.processed().len(), 8, "{fates:?}");
        for label in &labels {
            assert_eq!(server.times_processed(label.as_bytes()), 1, "{label}");
        }
        assert!(
            server.protocol_errors().is_empty(),
            "{:?}",
            server.protocol_errors()
        );

        // The client: 3 retries, all RefusedStream, counted in resend_count.
        let retries = log.retries();
        for (label, r) in &retries {
            eprintln!(
                "retry: {label} attempt {} {:?}: {}",
                r.attempt, r.reason, r.error
            );
        }
        assert_eq!(
            check_retries(&log, &labels, &[RetryReason::RefusedStream]),
            3
        );
        assert!(
            retries
                .iter()
                .all(|(_, r)| r.error.contains("REFUSED_STREAM")),
            "{retries:?}"
        );
        let resent = labels
            .iter()
            .filter(|l| log.done(l).unwrap().timings.resend_count > 0)
            .count();
        assert!((1..=3).contains(&resent), "{resent} requests resent");

        // A refused stream does not cost the connection.
        assert_eq!(server.connections(), 1);
        assert_eq!(opened(&rec), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_above_a_goaways_last_stream_id_are_sent_again_on_another_connection() {
    bounded("goaway", async {
        let server = H2ScriptServer::start(Script::new().goaway_after(3)).await;
        let rec = Recorder::default();
        let c = client(&rec, None);
        let log = Log::default();
        let results = concurrent_posts(&c, &server.url("/"), 10, &log).await;
        assert_all_ok(&results, "ok");
        let labels: Vec<String> = results.iter().map(|(l, _)| l.clone()).collect();

        let records = server.records();
        for r in &records {
            eprintln!(
                "server: conn {} stream {} index {:?} {:?} {:?}",
                r.conn,
                r.stream_id,
                r.index,
                String::from_utf8_lossy(&r.body),
                r.fate
            );
        }
        for (label, r) in log.retries() {
            eprintln!(
                "retry: {label} attempt {} {:?}: {}",
                r.attempt, r.reason, r.error
            );
        }
        // Each body processed exactly once; nothing above a GOAWAY's last stream id was.
        assert_eq!(server.processed().len(), 10);
        for label in &labels {
            assert_eq!(server.times_processed(label.as_bytes()), 1, "{label}");
        }
        let ignored = records.iter().filter(|r| r.fate == Fate::Ignored).count();
        assert!(server.goaways_sent() >= 1);
        assert!(ignored >= 1, "no stream above a GOAWAY's last stream id");
        // No connection processed more than 3 streams.
        let mut per_conn: HashMap<usize, usize> = HashMap::new();
        for r in records.iter().filter(|r| r.processed()) {
            *per_conn.entry(r.conn).or_default() += 1;
        }
        assert!(per_conn.values().all(|&n| n <= 3), "{per_conn:?}");

        // Every stream the server ignored was retried for GoAway; a request that found the
        // connection gone before its stream went out may be retried as NotSent.
        let total = check_retries(&log, &labels, &[RetryReason::GoAway, RetryReason::NotSent]);
        let goaway = log
            .retries()
            .iter()
            .filter(|(_, r)| r.reason == RetryReason::GoAway)
            .count();
        assert!(
            goaway >= ignored,
            "{goaway} GoAway retries, {ignored} ignored streams"
        );
        assert!(
            total >= ignored,
            "{total} retries, {ignored} ignored streams"
        );

        // At least two connections; the server accepted exactly those the client opened.
        let opened = opened(&rec);
        assert!(opened >= 2, "{opened} connections opened");
        assert_eq!(server.connections(), opened);
        assert!(
            server.protocol_errors().is_empty(),
            "{:?}",
            server.protocol_errors()
        );
        drop(c);
        eventually("server connections closed", || {
            server.open_connections() == 0
        })
        .await;
        eventually("client connections closed", || {
            rec.count(|e| matches!(e, Ev::Closed(..))) == opened
        })
        .await;
        rec.assert_balanced();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reset_with_internal_error_after_the_server_read_it_is_not_sent_again() {
    bounded("reset after read", async {
        let server = H2ScriptServer::start(
            Script::new().on(1, Action::ResetAfterRead(code::INTERNAL_ERROR)),
        )
        .await;
        let rec = Recorder::default();
        let c = client(&rec, None);
        let log = Log::default();
        let err = send(&c, request(&server.url("/"), "post-1", "post-1", &log))
            .await
            .expect_err("the reset stream fails the request");
        eprintln!("error: {err}");
        assert!(err.starts_with("error sending request"), "{err}");
        assert!(
            err.contains("stream error received") && err.contains("internal error"),
            "the error names the reset: {err}"
        );
        // Processed once, never sent again.
        assert_eq!(server.streams_seen(), 1, "{:?}", server.records());
        assert_eq!(server.times_processed(b"post-1"), 1);
        assert_eq!(
            server.records()[0].fate,
            Fate::ResetAfterRead(code::INTERNAL_ERROR)
        );
        assert!(log.retries().is_empty(), "{:?}", log.retries());
        let done = log.done("post-1").expect("request_done");
        assert_eq!(done.timings.resend_count, 0);
        assert!(done.error.is_some());

        // The connection outlives the stream reset: the next request goes on it.
        let ok = send(&c, request(&server.url("/"), "post-2", "post-2", &log)).await;
        assert_eq!(
            ok.map(|(s, _, b)| (s, b)),
            Ok((StatusCode::OK, Bytes::from("ok")))
        );
        assert_eq!(server.times_processed(b"post-2"), 1);
        assert_eq!((server.connections(), opened(&rec)), (1, 1));
    })
    .await;
}

// ----- a hyper server with a stream limit -----------------------------------------------

/// A hyper h2c server allowing 4 concurrent streams per connection, whose handler reads the
/// body and answers `ok` after 50 ms, counting requests in progress per connection (keyed by
/// the client's address) and the most seen at once.
struct LimitedServer {
    addr: SocketAddr,
    state: Arc<LimitedState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct LimitedState {
    accepted: AtomicUsize,
    active: Mutex<HashMap<SocketAddr, usize>>,
    max_per_conn: AtomicUsize,
    requests: AtomicUsize,
    bodies: Mutex<Vec<Bytes>>,
}

impl Drop for LimitedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts a request out when its handler ends (or is dropped).
struct InProgress(Arc<LimitedState>, SocketAddr);

impl Drop for InProgress {
    fn drop(&mut self) {
        if let Some(n) = self.0.active.lock().unwrap().get_mut(&self.1) {
            *n -= 1;
        }
    }
}

const STREAM_LIMIT: u32 = 4;

impl LimitedServer {
    async fn start() -> LimitedServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(LimitedState::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    return;
                };
                st.accepted.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let st = st.clone();
                        async move {
                            let now = {
                                let mut active = st.active.lock().unwrap();
                                let n = active.entry(peer).or_default();
                                *n += 1;
                                *n
                            };
                            let _in_progress = InProgress(st.clone(), peer);
                            st.max_per_conn.fetch_max(now, Ordering::SeqCst);
                            st.requests.fetch_add(1, Ordering::SeqCst);
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            if let Ok(b) = body {
                                if !b.is_empty() {
                                    st.bodies.lock().unwrap().push(b);
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(STREAM_LIMIT)
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        LimitedServer { addr, state, task }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    fn max_per_conn(&self) -> usize {
        self.state.max_per_conn.load(Ordering::SeqCst)
    }
}

/// `n` concurrent requests with bodies `body(i)` (GETs when empty), labelled `req-i`.
async fn concurrent(
    c: &C,
    url: &str,
    n: usize,
    body: impl Fn(usize) -> String,
    log: &Log,
) -> Vec<(String, Outcome)> {
    let mut tasks = Vec::new();
    for i in 1..=n {
        let label = format!("req-{i}");
        let req = request(url, &body(i), &label, log);
        let c = c.clone();
        tasks.push(tokio::spawn(async move { (label, send(&c, req).await) }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// One GET, so that the connection it opens has the server's SETTINGS (until they arrive,
/// hyper assumes 100 concurrent streams, and the pool leases a connection that far).
async fn warm_up(c: &C, url: &str, log: &Log) {
    let r = send(c, request(url, "", "warm-up", log)).await;
    assert_eq!(r.map(|(s, _, _)| s), Ok(StatusCode::OK), "warm-up");
}

/// Stats events by kind, for the log.
fn kinds(rec: &Recorder) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for e in rec.all() {
        let k = format!("{e:?}");
        let k = k.split('(').next().unwrap_or_default().to_owned();
        *kinds.entry(k).or_default() += 1;
    }
    kinds
}

/// The pool is at rest; after the client is dropped every connection closes and every Stats
/// pair balances.
async fn assert_pool_done(c: C, rec: &Recorder) {
    let snap = c.pool_snapshot();
    assert_eq!(
        snap.total_waiters() + snap.total_active() + snap.total_connecting(),
        0,
        "{snap}"
    );
    drop(c);
    eventually("client connections closed", || {
        rec.count(|e| matches!(e, Ev::Closed(..))) == opened(rec)
    })
    .await;
    rec.assert_balanced();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_limit_with_a_connection_cap_queues_requests_on_two_connections() {
    bounded("stream limit, cap 2", async {
        let server = LimitedServer::start().await;
        let rec = Recorder::default();
        let c = client(&rec, Some(2));
        let log = Log::default();
        // Both connections learn the server's limit first: one GET opens the first, then 5
        // at once fill it (4) and open the second for the 5th.
        warm_up(&c, &server.url(), &log).await;
        let warm = concurrent(&c, &server.url(), STREAM_LIMIT as usize + 1, |_| String::new(), &log)
            .await;
        assert_all_ok(&warm, "ok");
        assert_eq!((opened(&rec), server.accepted()), (2, 2), "warm-up: two connections");
        let before = rec.count(|e| matches!(e, Ev::DialWaitIn(..)));
        let warm_retries = log.retries().len();

        let results = concurrent(&c, &server.url(), 32, |_| String::new(), &log).await;
        assert_all_ok(&results, "ok");
        let retries = log.retries();
        for (label, r) in &retries {
            eprintln!("retry: {label} attempt {} {:?}: {}", r.attempt, r.reason, r.error);
        }
        let waits_in = rec.count(|e| matches!(e, Ev::DialWaitIn(..))) - before;
        eprintln!(
            "accepted {}, max per connection {}, requests {}, conns-per-host waits {waits_in}, retries {} (warm-up {warm_retries}), stats events {:?}",
            server.accepted(),
            server.max_per_conn(),
            server.state.requests.load(Ordering::SeqCst),
            retries.len(),
            kinds(&rec),
        );
        assert_eq!(server.accepted(), 2, "no third connection");
        assert_eq!(opened(&rec), 2);
        assert!(
            server.max_per_conn() <= STREAM_LIMIT as usize,
            "{} at once on one connection",
            server.max_per_conn()
        );
        // 8 streams at once on the two connections; the other 24 requests queued.
        assert!(waits_in > 0, "no request queued for a connection");
        // Both connections knew the limit: none was leased beyond it, so nothing was refused.
        assert_eq!(retries.len(), warm_retries, "{retries:?}");
        assert_pool_done(c, &rec).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_connections_over_a_stream_limit_with_a_cap_still_serve_every_request() {
    bounded("stream limit, cap 2, cold", async {
        let server = LimitedServer::start().await;
        let rec = Recorder::default();
        let c = client(&rec, Some(2));
        let log = Log::default();
        // No warm-up: the connections are leased before the server's SETTINGS arrive.
        let results = concurrent(&c, &server.url(), 32, |_| String::new(), &log).await;
        assert_all_ok(&results, "ok");
        let retries = log.retries();
        eprintln!(
            "cold: accepted {}, max per connection {}, retries {} (max attempt {}), stats events {:?}",
            server.accepted(),
            server.max_per_conn(),
            retries.len(),
            retries.iter().map(|(_, r)| r.attempt).max().unwrap_or(1),
            kinds(&rec),
        );
        assert!(server.accepted() <= 2, "{} connections", server.accepted());
        assert_eq!(opened(&rec), server.accepted());
        assert!(server.max_per_conn() <= STREAM_LIMIT as usize);
        // Streams over the limit sent before the SETTINGS arrived were refused, and only those
        // were sent again.
        let labels: Vec<String> = results.iter().map(|(l, _)| l.clone()).collect();
        check_retries(&log, &labels, &[RetryReason::RefusedStream]);
        assert_pool_done(c, &rec).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_limit_without_a_cap_opens_more_connections() {
    bounded("stream limit, no cap", async {
        let server = LimitedServer::start().await;
        let rec = Recorder::default();
        let c = client(&rec, None);
        let log = Log::default();
        warm_up(&c, &server.url(), &log).await;
        let results = concurrent(&c, &server.url(), 32, |_| String::new(), &log).await;
        assert_all_ok(&results, "ok");
        eprintln!(
            "no cap: accepted {}, opened {}, max per connection {}, retries {} (max attempt {})",
            server.accepted(),
            opened(&rec),
            server.max_per_conn(),
            log.retries().len(),
            log.retries()
                .iter()
                .map(|(_, r)| r.attempt)
                .max()
                .unwrap_or(1),
        );
        assert!(opened(&rec) > 1, "{} connection(s) opened", opened(&rec));
        assert_eq!(opened(&rec), server.accepted());
        assert!(server.max_per_conn() <= STREAM_LIMIT as usize);
        let labels: Vec<String> = results.iter().map(|(l, _)| l.clone()).collect();
        check_retries(&log, &labels, &[RetryReason::RefusedStream]);
        assert_pool_done(c, &rec).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_over_a_stream_limit_each_reach_the_handler_once() {
    bounded("posts, stream limit", async {
        let server = LimitedServer::start().await;
        let rec = Recorder::default();
        let c = client(&rec, None);
        let log = Log::default();
        let results = concurrent(&c, &server.url(), 32, |i| format!("post-{i}"), &log).await;
        assert_all_ok(&results, "ok");
        for (label, r) in log.retries() {
            eprintln!(
                "retry: {label} attempt {} {:?}: {}",
                r.attempt, r.reason, r.error
            );
        }
        let bodies = server.state.bodies.lock().unwrap().clone();
        let mut seen: HashMap<Bytes, usize> = HashMap::new();
        for b in &bodies {
            *seen.entry(b.clone()).or_default() += 1;
        }
        assert_eq!(bodies.len(), 32, "{seen:?}");
        for i in 1..=32 {
            let b = Bytes::from(format!("post-{i}"));
            assert_eq!(seen.get(&b), Some(&1), "post-{i}");
        }
        // Whatever was sent again was a stream the server refused unprocessed.
        let labels: Vec<String> = results.iter().map(|(l, _)| l.clone()).collect();
        check_retries(&log, &labels, &[RetryReason::RefusedStream]);
        assert!(server.max_per_conn() <= STREAM_LIMIT as usize);
        eprintln!(
            "posts: accepted {}, opened {}, retries {} (max attempt {})",
            server.accepted(),
            opened(&rec),
            log.retries().len(),
            log.retries()
                .iter()
                .map(|(_, r)| r.attempt)
                .max()
                .unwrap_or(1),
        );
        assert_eq!(opened(&rec), server.accepted());
    })
    .await;
}

/// A request the server did not process but whose body cannot be replayed (a stream) fails,
/// and its error says what happened and why it was not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreplayable_request_refused_by_goaway_fails_naming_the_cause() {
    use http_body_util::BodyExt;
    type Streamed = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;
    let run = async {
        // The first stream on each connection is answered; GOAWAY after it.
        let server = H2ScriptServer::start(Script::new().goaway_after(1)).await;
        let client: poolscope::Client<poolscope::connect::HttpConnector, Streamed> =
            poolscope::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build_http();
        let uri: http::Uri = server.url("/").parse().unwrap();
        let post = |n: usize| {
            let body = http_body_util::Full::new(Bytes::from(format!("stream-{n}")))
                .map_err(|never| match never {})
                .boxed();
            let mut req = http::Request::new(body);
            *req.method_mut() = http::Method::POST;
            *req.uri_mut() = uri.clone();
            client.request(req)
        };
        // Two at once on one connection: the second is above the GOAWAY's last stream.
        let (a, b) = tokio::join!(post(1), post(2));
        let (ok, failed) = match (a, b) {
            (Ok(r), Err(e)) | (Err(e), Ok(r)) => (r, e),
            (a, b) => panic!(
                "one answered and one refused, got {:?} and {:?}",
                a.is_ok(),
                b.is_ok()
            ),
        };
        assert_eq!(ok.status(), 200);
        let shown = failed.to_string();
        assert!(shown.starts_with("error sending request"), "{shown}");
        assert!(
            shown.contains("GOAWAY (NO_ERROR)"),
            "the error names the GOAWAY: {shown}"
        );
        assert!(
            shown.contains("not sent again: its body cannot be replayed"),
            "and why it was not retried: {shown}"
        );
        assert_eq!(
            server.processed_bodies().len(),
            1,
            "the server processed one"
        );
    };
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("bounded");
}
