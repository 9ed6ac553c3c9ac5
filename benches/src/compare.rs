//! The client comparison: one loopback server (HTTP/1.1 keep-alive and h2c on one port, a
//! 5-byte response) on its own runtime thread, and the clients on another runtime thread, so
//! the 2 cores are split evenly. Rounds alternate clients (A B C A B C …) so drift hits all of
//! them; each figure is the median of the rounds, and each ratio is taken against hyper-util
//! *in the same round* before the median.
//!
//! Clients: hyper-util's legacy `Client` (`build_http`), reqwest (HTTP/1 and HTTP/2 only),
//! poolscope with nothing registered (in-flight tracking off), poolscope with empty hooks,
//! poolscope with everything on (two counting Stats hooks, a ClientTrace with two hooks,
//! in-flight tracking, metrics into a real Prometheus recorder, a 1024-event history; no
//! stacks), poolscope with stacks, and Go's net/http when `go` is on the machine (h2c too where golang.org/x/net is
//! installed: Debian's `golang-golang-x-net-dev`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// HTTP/1.1 with keep-alive, or HTTP/2 with prior knowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    /// HTTP/1.1.
    H1,
    /// h2c.
    H2c,
}

/// One workload: protocol, concurrency and an optional per-host cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Workload {
    /// The protocol.
    pub proto: Proto,
    /// Concurrent requests.
    pub concurrency: usize,
    /// `max_conns_per_host`, for the clients that have one.
    pub cap: Option<usize>,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = match self.proto {
            Proto::H1 => "HTTP/1.1",
            Proto::H2c => "h2c",
        };
        write!(f, "{p} c={}", self.concurrency)?;
        if let Some(cap) = self.cap {
            write!(f, " cap={cap}")?;
        }
        Ok(())
    }
}

/// The clients compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// hyper-util 0.1 legacy client.
    HyperUtil,
    /// reqwest 0.12.
    Reqwest,
    /// poolscope, nothing registered, in-flight tracking off.
    Bare,
    /// poolscope with every hook registered but empty.
    HooksEmpty,
    /// poolscope with metrics into a Prometheus recorder and nothing else (in-flight off):
    /// what a service that only exports metrics runs.
    Metrics,
    /// poolscope with everything on, stacks off.
    All,
    /// poolscope with everything on and stack capture.
    Stacks,
    /// Go's net/http (an external program).
    Go,
}

impl Kind {
    /// The name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Kind::HyperUtil => "hyper-util legacy",
            Kind::Reqwest => "reqwest",
            Kind::Bare => "poolscope (nothing registered)",
            Kind::HooksEmpty => "poolscope (empty hooks)",
            Kind::Metrics => "poolscope (metrics only)",
            Kind::All => "poolscope (everything on)",
            Kind::Stacks => "poolscope (everything + stacks)",
            Kind::Go => "Go net/http",
        }
    }

    /// The short name the binaries' `--client(s)` options take.
    pub fn short(self) -> &'static str {
        match self {
            Kind::HyperUtil => "hyper",
            Kind::Reqwest => "reqwest",
            Kind::Bare => "bare",
            Kind::HooksEmpty => "empty",
            Kind::Metrics => "metrics",
            Kind::All => "all",
            Kind::Stacks => "stacks",
            Kind::Go => "go",
        }
    }

    /// Every client, in the tables' order.
    pub const EVERY: [Kind; 8] = [
        Kind::HyperUtil,
        Kind::Reqwest,
        Kind::Bare,
        Kind::HooksEmpty,
        Kind::Metrics,
        Kind::All,
        Kind::Stacks,
        Kind::Go,
    ];

    /// The client a short name names.
    pub fn parse(short: &str) -> Option<Kind> {
        Kind::EVERY.into_iter().find(|k| k.short() == short)
    }

    fn supports(self, w: &Workload) -> bool {
        match self {
            Kind::HyperUtil | Kind::Reqwest => w.cap.is_none(),
            _ => true,
        }
    }
}

/// One run's result.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, seconds.
    pub p50: f64,
    /// 99th percentile latency, seconds.
    pub p99: f64,
    /// Connections the server accepted during the run (`None`: not known).
    pub conns: Option<usize>,
    /// Failed requests.
    pub failed: u64,
}

/// A table row: medians over the rounds.
#[derive(Debug, Clone)]
pub struct Row {
    /// The workload.
    pub workload: Workload,
    /// The client.
    pub kind: Kind,
    /// Median of the rounds.
    pub median: Sample,
    /// Median of the per-round ratios of requests/s to hyper-util.
    pub ratio: Option<f64>,
    /// Rounds run.
    pub rounds: usize,
}

/// How to run the comparison.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rounds per workload.
    pub rounds: usize,
    /// Seconds per run.
    pub secs: f64,
    /// The workloads.
    pub workloads: Vec<Workload>,
    /// The clients.
    pub kinds: Vec<Kind>,
    /// Use a separate server process (`serve-and-track` at this path) instead of the
    /// in-process server.
    pub server_binary: Option<std::path::PathBuf>,
}

impl Options {
    /// The full comparison: 5 rounds of 2 s.
    pub fn full() -> Options {
        let mut workloads = Vec::new();
        for proto in [Proto::H1, Proto::H2c] {
            for c in [1, 16, 64, 256] {
                workloads.push(Workload {
                    proto,
                    concurrency: c,
                    cap: None,
                });
            }
        }
        workloads.push(Workload {
            proto: Proto::H1,
            concurrency: 64,
            cap: Some(8),
        });
        Options {
            rounds: 5,
            secs: 2.0,
            workloads,
            kinds: Kind::EVERY.to_vec(),
            server_binary: None,
        }
    }

    /// A few seconds in all: one short round of three workloads, to check it still runs.
    pub fn quick() -> Options {
        let mut o = Options::full();
        o.rounds = 1;
        o.secs = 0.15;
        o.workloads = vec![
            Workload {
                proto: Proto::H1,
                concurrency: 16,
                cap: None,
            },
            Workload {
                proto: Proto::H2c,
                concurrency: 16,
                cap: None,
            },
            Workload {
                proto: Proto::H1,
                concurrency: 16,
                cap: Some(4),
            },
        ];
        o
    }
}

// ----- the server ----------------------------------------------------------------------------

/// The loopback server and its accepted-connection count.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The path to request.
    pub path: &'static str,
    accepted: Option<Arc<AtomicUsize>>,
    _process: Option<std::process::Child>,
}

impl TestServer {
    /// An in-process hyper server on 127.0.0.1 with its own single-threaded runtime thread.
    pub fn in_process() -> std::io::Result<TestServer> {
        let (tx, rx) = std::sync::mpsc::channel();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(listener.local_addr());
                let body = Bytes::from_static(b"hello");
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { continue };
                    count.fetch_add(1, Ordering::Relaxed);
                    let _ = tcp.set_nodelay(true);
                    let body = body.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |_req| {
                            let body = body.clone();
                            async move { Ok::<_, Infallible>(http::Response::new(Full::new(body))) }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tcp), svc)
                            .await;
                    });
                }
            });
            })?;
        let addr = rx
            .recv()
            .map_err(|_| std::io::Error::other("server thread ended"))??;
        Ok(TestServer {
            addr,
            path: "/",
            accepted: Some(accepted),
            _process: None,
        })
    }

    /// A server some other process runs at `addr` (e.g. `reqloop --serve`).
    pub fn at(addr: SocketAddr) -> TestServer {
        TestServer {
            addr,
            path: "/",
            accepted: None,
            _process: None,
        }
    }

    /// `serve-and-track` as a separate process on a loopback port.
    pub fn process(binary: &std::path::Path) -> std::io::Result<TestServer> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(binary)
            .args(["--addr", "127.0.0.1:0", "--no-access-log"])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line)?;
        // "2026/11/23 16:42:13 INFO http: Server started 127.0.0.1:PORT"
        let addr = line
            .rsplit(' ')
            .next()
            .and_then(|a| a.trim().parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("unexpected first line {line:?}")))?;
        Ok(TestServer {
            addr,
            path: "/track",
            accepted: None,
            _process: Some(child),
        })
    }

    fn accepted(&self) -> Option<usize> {
        self.accepted.as_ref().map(|a| a.load(Ordering::Relaxed))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(p) = &mut self._process {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

// ----- the clients ---------------------------------------------------------------------------

/// The Prometheus recorder "everything on" reports to, installed once per process. Timed
/// runs drain its histogram samples every 500 ms on a thread, as an application's exporter
/// would; counted runs ([`run_requests`]) drain them once at their end instead, so that the
/// count does not depend on how many times a timer fired under valgrind.
static HANDLE: OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> = OnceLock::new();

fn prometheus() -> &'static Option<metrics_exporter_prometheus::PrometheusHandle> {
    // Histograms with each metric's bucket advice, as docs/metrics.md shows (without buckets
    // the exporter keeps summaries, several times dearer per sample).
    HANDLE.get_or_init(|| {
        let mut b =
            metrics_exporter_prometheus::PrometheusBuilder::new().set_enable_unit_suffix(true);
        for (name, buckets) in poolscope::metrics::bucket_advice() {
            b = b
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(name.replace('.', "_")),
                    buckets,
                )
                .ok()?;
        }
        b.install_recorder().ok()
    })
}

/// Starts the upkeep thread of the Prometheus recorder, once.
fn prometheus_upkeep() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        if let Some(h) = prometheus().clone() {
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_millis(500));
                h.run_upkeep();
            });
        }
    });
}

/// Installs the Prometheus recorder, unless `BENCH_NO_RECORDER` is set (for profiling what
/// the recorder itself costs: without one, the `metrics` facade's calls are no-ops).
fn recorder() {
    if std::env::var_os("BENCH_NO_RECORDER").is_none() {
        let _ = prometheus();
    }
}

fn counter<E>(n: &Arc<AtomicU64>) -> impl Fn(&E) + Send + Sync + 'static {
    let n = n.clone();
    move |_: &E| {
        n.fetch_add(1, Ordering::Relaxed);
    }
}

fn noop<E>() -> impl Fn(&E) + Send + Sync + 'static {
    |_: &E| {}
}

type PsClient = poolscope::Client<poolscope::connect::HttpConnector, Empty<Bytes>>;

fn poolscope_client(kind: Kind, w: &Workload, events: &Arc<AtomicU64>) -> PsClient {
    let mut b = poolscope::Client::builder(TokioExecutor::new());
    b.http2_only(w.proto == Proto::H2c);
    if let Some(cap) = w.cap {
        b.pool_max_conns_per_host(cap);
    }
    match kind {
        Kind::Bare => {
            b.telemetry().track_in_flight(false);
        }
        Kind::HooksEmpty => {
            b.telemetry().track_in_flight(false);
            b.telemetry().stats(
                poolscope::Stats::builder()
                    .on_idle_conn_wait_in(noop())
                    .on_idle_conn_wait_out(noop())
                    .on_conns_per_host_wait_in(noop())
                    .on_conns_per_host_wait_out(noop())
                    .on_idle_conn_in(noop())
                    .on_idle_conn_out(noop())
                    .on_conn_reused(noop())
                    .on_max_idle_conns_hit(noop())
                    .on_max_idle_conns_per_host_hit(noop())
                    .on_max_conns_per_host_hit(noop())
                    .on_conn_opened(noop())
                    .on_conn_closed(noop())
                    .build(),
            );
            b.telemetry().trace(
                poolscope::ClientTrace::builder()
                    .on_get_conn(noop())
                    .on_got_conn(noop())
                    .on_request_done(noop())
                    .build(),
            );
        }
        Kind::Metrics => {
            recorder();
            b.telemetry().track_in_flight(false).metrics(true);
        }
        Kind::All | Kind::Stacks => {
            // "Everything on" as issue #19 counts it: two Stats hooks and two trace hooks
            // that fire on every request, in-flight tracking, metrics into a real
            // Prometheus recorder and a 1024-event history.
            recorder();
            b.telemetry().stats(
                poolscope::Stats::builder()
                    .on_conn_reused(counter(events))
                    .on_idle_conn_in(counter(events))
                    .build(),
            );
            let total_us = events.clone();
            b.telemetry().trace(
                poolscope::ClientTrace::builder()
                    .on_got_conn(counter(events))
                    .on_request_done(move |i| {
                        total_us.fetch_add(i.timings.total.as_micros() as u64, Ordering::Relaxed);
                    })
                    .build(),
            );
            b.telemetry()
                .track_in_flight(true)
                .metrics(true)
                .event_history(1024)
                .capture_stacks(kind == Kind::Stacks);
            // For profiling one sink's share: `BENCH_SINKS_OFF=history,metrics,inflight,trace,stats`.
            let off = std::env::var("BENCH_SINKS_OFF").unwrap_or_default();
            for sink in off.split(',') {
                match sink {
                    "history" => {
                        b.telemetry().event_history(0);
                    }
                    "metrics" => {
                        b.telemetry().metrics(false);
                    }
                    "inflight" => {
                        b.telemetry().track_in_flight(false);
                    }
                    "trace" => {
                        b.telemetry().trace(poolscope::ClientTrace::default());
                    }
                    "stats" => {
                        b.telemetry().stats(poolscope::Stats::default());
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    b.build_http()
}

#[allow(clippy::large_enum_variant)] // one per run, never moved in a hot path
enum AnyClient {
    HyperUtil(
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            Empty<Bytes>,
        >,
    ),
    Reqwest(reqwest::Client),
    Poolscope(PsClient),
}

impl AnyClient {
    fn new(kind: Kind, w: &Workload, events: &Arc<AtomicU64>) -> Result<AnyClient, String> {
        Ok(match kind {
            Kind::HyperUtil => AnyClient::HyperUtil(
                hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                    .http2_only(w.proto == Proto::H2c)
                    .build_http(),
            ),
            Kind::Reqwest => {
                let mut b = reqwest::Client::builder();
                if w.proto == Proto::H2c {
                    b = b.http2_prior_knowledge();
                }
                AnyClient::Reqwest(b.build().map_err(|e| e.to_string())?)
            }
            Kind::Go => return Err("Go runs as a process".into()),
            _ => AnyClient::Poolscope(poolscope_client(kind, w, events)),
        })
    }

    async fn get(&self, uri: &http::Uri, url: &str) -> Result<(), String> {
        match self {
            AnyClient::HyperUtil(c) => {
                let resp = c.get(uri.clone()).await.map_err(|e| e.to_string())?;
                resp.into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?;
            }
            AnyClient::Reqwest(c) => {
                let resp = c.get(url).send().await.map_err(|e| e.to_string())?;
                resp.bytes().await.map_err(|e| e.to_string())?;
            }
            AnyClient::Poolscope(c) => {
                let resp = c.get(uri.clone()).await.map_err(|e| e.to_string())?;
                resp.into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

/// How long a run goes on: until a time, or for a number of requests.
#[derive(Clone)]
enum Budget {
    Until(Instant),
    Requests(Arc<AtomicU64>),
}

impl Budget {
    /// Whether another request may start (taking it from the budget).
    fn another(&self) -> bool {
        match self {
            Budget::Until(t) => Instant::now() < *t,
            Budget::Requests(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

/// Runs exactly `requests` requests of `kind` on `w` (for instruction counting under
/// callgrind, where a timed run would measure valgrind). Returns the elapsed time and the
/// failures.
pub async fn run_requests(
    kind: Kind,
    w: Workload,
    server: &TestServer,
    requests: u64,
) -> Result<(Duration, u64), String> {
    let url = format!("http://{}{}", server.addr, server.path);
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    let events = Arc::new(AtomicU64::new(0));
    let client = Arc::new(AnyClient::new(kind, &w, &events)?);
    let budget = Budget::Requests(Arc::new(AtomicU64::new(requests)));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..w.concurrency)
        .map(|_| {
            let (client, uri, url, failed, budget) = (
                client.clone(),
                uri.clone(),
                url.clone(),
                failed.clone(),
                budget.clone(),
            );
            tokio::spawn(async move {
                while budget.another() {
                    if client.get(&uri, &url).await.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed();
    // Only if this client installed it: installing calibrates a clock for a stretch of wall
    // time, which under valgrind is a different number of instructions every run.
    if let Some(Some(h)) = HANDLE.get() {
        h.run_upkeep();
    }
    Ok((elapsed, failed.load(Ordering::Relaxed)))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds"))
}

/// One timed run of `kind` on `w`.
async fn run_once(
    kind: Kind,
    w: Workload,
    server: &TestServer,
    secs: f64,
    go: Option<&GoClient>,
) -> Result<Sample, String> {
    let url = format!("http://{}{}", server.addr, server.path);
    if kind == Kind::Go {
        let go = go.ok_or("no Go client")?;
        return run_go(go, &url, w, secs, server).await;
    }
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    let events = Arc::new(AtomicU64::new(0));
    let client = Arc::new(AnyClient::new(kind, &w, &events)?);
    prometheus_upkeep();
    let before = server.accepted();
    let budget = Budget::Until(Instant::now() + Duration::from_secs_f64(secs));
    let failed = Arc::new(AtomicU64::new(0));
    let merged = Arc::new(Mutex::new(histogram()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..w.concurrency {
        let (client, uri, url, failed, merged, budget) = (
            client.clone(),
            uri.clone(),
            url.clone(),
            failed.clone(),
            merged.clone(),
            budget.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            while budget.another() {
                let t0 = Instant::now();
                match client.get(&uri, &url).await {
                    Ok(()) => {
                        let _ = h.record((t0.elapsed().as_micros() as u64).clamp(1, 60_000_000));
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if let Ok(mut m) = merged.lock() {
                let _ = m.add(&h);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop(client);
    let h = merged.lock().map_err(|_| "poisoned")?.clone();
    Ok(Sample {
        rps: h.len() as f64 / elapsed,
        p50: h.value_at_quantile(0.5) as f64 / 1e6,
        p99: h.value_at_quantile(0.99) as f64 / 1e6,
        conns: before.and_then(|b| server.accepted().map(|a| a - b)),
        failed: failed.load(Ordering::Relaxed),
    })
}

async fn run_go(
    go: &GoClient,
    url: &str,
    w: Workload,
    secs: f64,
    server: &TestServer,
) -> Result<Sample, String> {
    let before = server.accepted();
    let mut cmd = tokio::process::Command::new(&go.path);
    cmd.args([
        "-url",
        url,
        "-c",
        &w.concurrency.to_string(),
        "-secs",
        &secs.to_string(),
    ]);
    if let Some(cap) = w.cap {
        cmd.args(["-max-conns-per-host", &cap.to_string()]);
    }
    if w.proto == Proto::H2c {
        cmd.arg("-h2c");
    }
    let out = cmd.output().await.map_err(|e| e.to_string())?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("go client output: {e}"))?;
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    Ok(Sample {
        rps: f("requests") / f("elapsed").max(1e-9),
        p50: f("p50"),
        p99: f("p99"),
        conns: before.and_then(|b| server.accepted().map(|a| a - b)),
        failed: v["failed"].as_u64().unwrap_or(0),
    })
}

/// The Go comparison client, built.
#[derive(Debug, Clone)]
pub struct GoClient {
    /// The binary.
    pub path: std::path::PathBuf,
    /// Built with golang.org/x/net's HTTP/2 transport, so it can run the h2c workloads.
    pub h2c: bool,
}

impl GoClient {
    fn supports(&self, w: &Workload) -> bool {
        w.proto == Proto::H1 || self.h2c
    }
}

/// Where Debian's `golang-golang-x-net-dev` puts golang.org/x/net (a GOPATH tree).
const GO_SYSTEM_PATH: &str = "/usr/share/gocode";

/// Builds the Go client into `target/`, if `go` is installed: with h2c where golang.org/x/net
/// is installed, else HTTP/1.1 only. `None` if `go` is missing or the build fails.
pub fn build_go(workspace: &std::path::Path) -> Option<GoClient> {
    let dir = workspace.join("benches/go");
    let out = workspace.join("target/go-bench-client");
    let build = |h2c: bool| {
        let mut gopath = vec![workspace.join("target/go-path")];
        let mut cmd = std::process::Command::new("go");
        cmd.args(["build", "-o"]).arg(&out);
        if h2c {
            cmd.args(["-tags", "h2c"]).arg(dir.join("h2c.go"));
            gopath.push(GO_SYSTEM_PATH.into());
        }
        cmd.arg(dir.join("client.go"))
            .env("GO111MODULE", "off")
            .env("GOPATH", std::env::join_paths(gopath).ok()?)
            .env("GOCACHE", workspace.join("target/go-cache"))
            .stderr(std::process::Stdio::null());
        cmd.status().ok().filter(|s| s.success()).map(|_| GoClient {
            path: out.clone(),
            h2c,
        })
    };
    build(true).or_else(|| build(false))
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the comparison and returns the rows, printing progress to stderr.
pub async fn run(opts: &Options, server: &TestServer, go: Option<&GoClient>) -> Vec<Row> {
    let mut rows = Vec::new();
    for w in &opts.workloads {
        let kinds: Vec<Kind> = opts
            .kinds
            .iter()
            .copied()
            .filter(|k| k.supports(w) && (*k != Kind::Go || go.is_some_and(|g| g.supports(w))))
            .collect();
        let mut samples: BTreeMap<Kind, Vec<Sample>> = BTreeMap::new();
        let mut ratios: BTreeMap<Kind, Vec<f64>> = BTreeMap::new();
        for round in 0..opts.rounds {
            let mut hyper_rps = None;
            // Rotate the starting client each round so no client always runs first.
            let n = kinds.len();
            for i in 0..n {
                let kind = kinds[(i + round) % n];
                eprint!(
                    "\r{w} round {}/{} {:<34}",
                    round + 1,
                    opts.rounds,
                    kind.name()
                );
                match run_once(kind, *w, server, opts.secs, go).await {
                    Ok(s) => {
                        if kind == Kind::HyperUtil {
                            hyper_rps = Some(s.rps);
                        }
                        samples.entry(kind).or_default().push(s);
                    }
                    Err(e) => eprintln!("\n{}: {e}", kind.name()),
                }
            }
            if let Some(h) = hyper_rps.filter(|h| *h > 0.0) {
                for (k, s) in &samples {
                    if let Some(last) = s.last() {
                        ratios.entry(*k).or_default().push(last.rps / h);
                    }
                }
            }
        }
        for kind in kinds {
            let Some(s) = samples.get(&kind) else {
                continue;
            };
            let conns: Vec<f64> = s.iter().filter_map(|s| s.conns.map(|c| c as f64)).collect();
            rows.push(Row {
                workload: *w,
                kind,
                median: Sample {
                    rps: median(s.iter().map(|s| s.rps).collect()),
                    p50: median(s.iter().map(|s| s.p50).collect()),
                    p99: median(s.iter().map(|s| s.p99).collect()),
                    conns: (!conns.is_empty()).then(|| median(conns) as usize),
                    failed: s.iter().map(|s| s.failed).sum(),
                },
                ratio: ratios.get(&kind).map(|r| median(r.clone())),
                rounds: s.len(),
            });
        }
    }
    eprintln!();
    rows
}

/// The rows as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from("| workload | client | req/s | × hyper-util | p50 | p99 | conns opened | failed |\n|---|---|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let ms = |s: f64| format!("{:.3} ms", s * 1e3);
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} |\n",
            r.workload,
            r.kind.name(),
            r.median.rps,
            r.ratio
                .map_or_else(|| "n/a".to_owned(), |x| format!("{x:.2}")),
            ms(r.median.p50),
            ms(r.median.p99),
            r.median
                .conns
                .map_or_else(|| "-".to_owned(), |c| c.to_string()),
            r.median.failed,
        ));
    }
    out
}
