//! `poolscope load URL`: many requests, a live pool view, then a report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use indicatif::{ProgressBar, ProgressStyle};
use poolscope::{ClientTrace, Stats};

use crate::opts::{self, ConnOpts, HttpClient, Prepared, RequestOpts};
use crate::report::{FirstHit, LoadReport, Percentiles};
use crate::timeline::Timeline;
use crate::Failure;

/// `poolscope load` options.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub request: RequestOpts,
    #[command(flatten)]
    pub conn: ConnOpts,
    /// Total requests (default 1000 unless --duration is given).
    #[arg(short = 'n', long = "requests")]
    pub requests: Option<u64>,
    /// Run for this long instead (e.g. 10s, 1m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Concurrent requests.
    #[arg(short = 'c', long = "concurrency", default_value_t = 10)]
    pub concurrency: usize,
    /// Pool: connections per host (dialing + active + idle).
    #[arg(long = "max-conns-per-host")]
    pub max_conns_per_host: Option<usize>,
    /// Pool: idle connections kept per host.
    #[arg(long = "max-idle-per-host")]
    pub max_idle_per_host: Option<usize>,
    /// Pool: idle timeout (e.g. 90s).
    #[arg(long = "idle-timeout", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Serve the client's metrics in Prometheus's format at http://ADDR/metrics while the
    /// run lasts (e.g. 127.0.0.1:9100; port 0 picks one, printed on stderr).
    #[arg(long = "metrics-addr", value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Open loop: start this many requests per second, evenly spread, with -c as the most in
    /// flight; latency counts from each request's intended start.
    #[arg(long, value_name = "N")]
    pub rate: Option<f64>,
    /// Write an HTML report of the run over time (one self-contained file).
    #[arg(long, value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,
    /// Write the same aggregates as JSON (schema: docs/report.md).
    #[arg(long = "report-json", value_name = "FILE")]
    pub report_json: Option<std::path::PathBuf>,
}

/// Everything a run records, shared by workers and hooks.
#[derive(Default)]
pub struct Recording {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub opened: AtomicU64,
    pub reused: AtomicU64,
    /// Connections handed to requests: one per attempt (a retried request has several).
    pub attempts: AtomicU64,
    /// TCP connects that succeeded (what a server counts as accepts), and attempts that
    /// failed or were abandoned (happy eyeballs, connect timeout).
    pub tcp_connects: AtomicU64,
    pub tcp_failed: AtomicU64,
    /// Dials that connected but never became a pooled connection (TLS or HTTP handshake
    /// failed).
    pub handshakes_failed: AtomicU64,
    pub closed: Mutex<BTreeMap<String, u64>>,
    pub retries: Mutex<BTreeMap<String, u64>>,
    pub limit_hits: AtomicU64,
    pub latency_us: Mutex<Option<Histogram<u64>>>,
    pub queue_us: Mutex<Option<Histogram<u64>>>,
    pub statuses: Mutex<BTreeMap<String, u64>>,
    pub errors: Mutex<BTreeMap<String, u64>>,
    pub first_hit: Mutex<Option<FirstHit>>,
    pub started: Mutex<Option<Instant>>,
    /// Open loop: requests that could not start at their intended time.
    pub late_starts: AtomicU64,
    /// The run over time, when a report was asked for (`keep_timeline`); unset, a hook
    /// pays one atomic load for it.
    pub timeline: std::sync::OnceLock<Mutex<Timeline>>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 h, 3 significant digits: bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds"))
}

fn bump(counts: &Mutex<BTreeMap<String, u64>>, what: &str) {
    let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
    *counts.entry(what.to_owned()).or_default() += 1;
}

/// Distinct errors the report keeps apart; the rest are counted together under
/// [`OTHER_ERRORS`] (an error's text can name a connection or a stream count, and the
/// report's size must stay bounded).
const MAX_ERROR_KINDS: usize = 32;
const OTHER_ERRORS: &str = "(other errors)";

/// Counts one failure under its whole cause chain (`error sending request (host:port):
/// context: cause: cause's cause`), so the report says why, not only in which phase.
fn bump_error(counts: &Mutex<BTreeMap<String, u64>>, err: &(dyn std::error::Error + 'static)) {
    let text = poolscope::trace::error_text(err);
    let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
    let key = if counts.contains_key(&text) || counts.len() < MAX_ERROR_KINDS {
        text
    } else {
        OTHER_ERRORS.to_owned()
    };
    *counts.entry(key).or_default() += 1;
}

/// A response body that failed: "error reading response body", its cause the body's error.
#[derive(Debug)]
struct BodyError(Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("error reading response body")
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

fn record(h: &Mutex<Option<Histogram<u64>>>, d: Duration) {
    let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
    let _ = h
        .get_or_insert_with(histogram)
        .record((d.as_micros() as u64).clamp(1, 3_600_000_000));
}

fn percentiles(h: &Mutex<Option<Histogram<u64>>>) -> Percentiles {
    h.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(Percentiles::of)
        .unwrap_or_default()
}

impl Recording {
    fn elapsed(&self) -> Duration {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// Records into the timeline, if one is kept.
    pub fn timeline(&self, f: impl FnOnce(&mut Timeline)) {
        if let Some(t) = self.timeline.get() {
            f(&mut t.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }

    /// Keeps the run over time from `start` on (for `--report` and `--report-json`; once per
    /// recording).
    pub fn keep_timeline(&self, start: Instant) {
        let _ = self.timeline.set(Mutex::new(Timeline::new(start)));
    }

    fn hit(self: &Arc<Self>, limit: &'static str, snap: &poolscope::PoolSnapshot) {
        self.limit_hits.fetch_add(1, Ordering::Relaxed);
        self.timeline(|t| t.limit_hit(limit, snap.taken_at));
        let mut first = self.first_hit.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(FirstHit {
                limit,
                after_seconds: self.elapsed().as_secs_f64(),
                snapshot: snap.to_string(),
                pool: serde_json::from_str(&snap.to_json()).unwrap_or_default(),
            });
        }
    }

    /// Hooks that feed this recording.
    pub fn hooks(self: &Arc<Self>) -> (Stats, ClientTrace) {
        let (r1, r2, r3, r4, r5) = (
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
        );
        let (r6, r7, r8, r9) = (self.clone(), self.clone(), self.clone(), self.clone());
        let (w1, w2, w3, w4, r10) = (
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
        );
        let r11 = self.clone();
        let stats = Stats::builder()
            .on_conn_opened(move |e| {
                r1.opened.fetch_add(1, Ordering::Relaxed);
                r1.timeline(|t| t.conn_opened(e.conn_id.get(), e.at, e.shared));
            })
            .on_conn_closed(move |e| {
                bump(&r6.closed, e.reason.as_str());
                r6.timeline(|t| t.conn_closed(e.conn_id.get(), e.at, e.reason.as_str()));
            })
            .on_idle_conn_in(move |e| r11.timeline(|t| t.conn_idle(e.conn_id.get(), e.at)))
            .on_idle_conn_wait_in(move |e| {
                w1.timeline(|t| t.waiting(&e.key, e.waiters, false, e.at))
            })
            .on_idle_conn_wait_out(move |e| {
                w2.timeline(|t| t.waiting(&e.key, e.waiters, false, e.at))
            })
            .on_conns_per_host_wait_in(move |e| {
                w3.timeline(|t| t.waiting(&e.key, e.waiters, true, e.at))
            })
            .on_conns_per_host_wait_out(move |e| {
                w4.timeline(|t| t.waiting(&e.key, e.waiters, true, e.at))
            })
            .on_max_conns_per_host_hit(move |s| r2.hit("max_conns_per_host", s))
            .on_max_idle_conns_per_host_hit(move |s| r3.hit("max_idle_conns_per_host", s))
            .on_max_idle_conns_hit(move |s| r4.hit("max_idle_conns", s))
            .build();
        let trace = ClientTrace::builder()
            .on_got_conn(move |i| {
                r5.attempts.fetch_add(1, Ordering::Relaxed);
                if i.reused {
                    r5.reused.fetch_add(1, Ordering::Relaxed);
                }
                record(&r5.queue_us, i.queued_for);
                r5.timeline(|t| t.got_conn(i.request_id, i.conn_id.get(), Instant::now()));
            })
            .on_request_done(move |i| {
                r10.timeline(|t| t.request_ended(i.request_id, Instant::now()))
            })
            .on_connect_done(move |i| {
                let n = if i.error.is_none() {
                    &r7.tcp_connects
                } else {
                    &r7.tcp_failed
                };
                n.fetch_add(1, Ordering::Relaxed);
            })
            .on_tls_handshake_done(move |i| {
                if i.error.is_some() {
                    r8.handshakes_failed.fetch_add(1, Ordering::Relaxed);
                }
            })
            .on_retry(move |i| bump(&r9.retries, i.reason.as_str()))
            .build();
        (stats, trace)
    }

    pub fn report(&self, url: String, concurrency: usize, interrupted: bool) -> LoadReport {
        let ok = self.ok.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let elapsed = self.elapsed().as_secs_f64();
        let reused = self.reused.load(Ordering::Relaxed);
        let attempts = self.attempts.load(Ordering::Relaxed);
        LoadReport {
            url,
            concurrency,
            requests_ok: ok,
            requests_failed: failed,
            elapsed_seconds: elapsed,
            requests_per_second: if elapsed > 0.0 {
                (ok + failed) as f64 / elapsed
            } else {
                0.0
            },
            latency_seconds: percentiles(&self.latency_us),
            time_in_queue_seconds: percentiles(&self.queue_us),
            status_counts: self
                .statuses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            errors: self
                .errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            connections_opened: self.opened.load(Ordering::Relaxed),
            tcp_connects: self.tcp_connects.load(Ordering::Relaxed),
            tcp_connects_failed: self.tcp_failed.load(Ordering::Relaxed),
            handshakes_failed: self.handshakes_failed.load(Ordering::Relaxed),
            connections_closed: self
                .closed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            retries: self
                .retries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            connections_reused: reused,
            attempts,
            reuse_ratio: if attempts > 0 {
                reused as f64 / attempts as f64
            } else {
                0.0
            },
            limit_hits: self.limit_hits.load(Ordering::Relaxed),
            first_limit_hit: self
                .first_hit
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            interrupted,
            rate: None,
            late_starts: self.late_starts.load(Ordering::Relaxed),
        }
    }
}

/// How long and how wide a run is.
pub struct Plan {
    pub requests: Option<u64>,
    pub duration: Option<Duration>,
    pub concurrency: usize,
    /// Open loop at this many requests per second.
    pub rate: Option<f64>,
}

/// Asks a run to stop (Ctrl-C): requests still in flight are abandoned, not awaited, so a
/// run stuck on a server that does not answer still stops and reports.
#[derive(Clone)]
pub struct Stop(Arc<tokio::sync::watch::Sender<bool>>);

impl Stop {
    pub fn new() -> Stop {
        Stop(Arc::new(tokio::sync::watch::Sender::new(false)))
    }

    /// Stops the run.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    /// Stops the run on the first Ctrl-C.
    pub fn on_ctrl_c(&self) {
        let stop = self.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.stop();
            }
        });
    }

    fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the run is asked to stop, or at `deadline`.
    async fn stopped(&self, deadline: Option<Instant>) {
        let mut rx = self.0.subscribe();
        let asked = async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        };
        match deadline {
            Some(d) => {
                tokio::select! {
                    _ = asked => {}
                    _ = tokio::time::sleep_until(d.into()) => {}
                }
            }
            None => asked.await,
        }
    }
}

/// One request of the run, timed from `start` (its intended start in an open loop), its
/// outcome recorded. `false` when the run stopped while it was in flight (it is abandoned,
/// and not counted).
async fn one(
    client: &HttpClient,
    req: &Prepared,
    rec: &Recording,
    start: Instant,
    stopped: std::pin::Pin<&mut (impl std::future::Future<Output = ()> + ?Sized)>,
) -> bool {
    let exchange = async {
        let resp = client.request(req.request()).await?;
        let status = resp.status().as_u16().to_string();
        Ok::<_, poolscope::Error>((status, resp.into_body().collect().await))
    };
    // A request still running when the run stops or its time is up is abandoned.
    let outcome = tokio::select! {
        biased;
        _ = stopped => return false,
        outcome = exchange => outcome,
    };
    let latency = start.elapsed();
    let ok = matches!(outcome, Ok((_, Ok(_))));
    rec.timeline(|t| t.completed(Instant::now(), latency, ok));
    match outcome {
        Ok((status, body)) => match body {
            Ok(_) => {
                record(&rec.latency_us, latency);
                rec.ok.fetch_add(1, Ordering::Relaxed);
                bump(&rec.statuses, &status);
            }
            Err(e) => {
                rec.failed.fetch_add(1, Ordering::Relaxed);
                bump_error(&rec.errors, &BodyError(e.into()));
            }
        },
        Err(e) => {
            rec.failed.fetch_add(1, Ordering::Relaxed);
            bump_error(&rec.errors, &e);
        }
    }
    true
}

/// Closed loop: one of `-c` workers, each starting its next request when the last ended.
async fn worker(
    client: HttpClient,
    req: Arc<Prepared>,
    rec: Arc<Recording>,
    issued: Arc<AtomicU64>,
    plan: Arc<Plan>,
    stop: Stop,
    deadline: Option<Instant>,
) {
    let stopped = stop.stopped(deadline);
    tokio::pin!(stopped);
    loop {
        if stop.is_stopped() || deadline.is_some_and(|d| Instant::now() >= d) {
            return;
        }
        if let Some(n) = plan.requests {
            if issued.fetch_add(1, Ordering::Relaxed) >= n {
                return;
            }
        }
        if !one(&client, &req, &rec, Instant::now(), stopped.as_mut()).await {
            return;
        }
    }
}

/// Open loop: requests start at `start + i / rate`, whatever the earlier ones are doing, at
/// most `-c` in flight. A request that finds `-c` in flight when it is due waits for one to
/// end, and its latency still counts from its intended start (no coordinated omission); it
/// is counted late. (The timer's own lateness, a millisecond at most, is not.)
async fn open_loop(
    client: HttpClient,
    req: Arc<Prepared>,
    rec: Arc<Recording>,
    plan: Arc<Plan>,
    rate: f64,
    stop: Stop,
    deadline: Option<Instant>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(plan.concurrency.max(1)));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let stopped = stop.stopped(deadline);
    tokio::pin!(stopped);
    for i in 0u64.. {
        if plan.requests.is_some_and(|n| i >= n) {
            break;
        }
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        if deadline.is_some_and(|d| intended >= d) {
            break;
        }
        let permit = tokio::select! {
            biased;
            _ = &mut stopped => break,
            permit = async {
                tokio::time::sleep_until(intended.into()).await;
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => Ok(permit),
                    Err(_) => {
                        let now = Instant::now();
                        rec.late_starts.fetch_add(1, Ordering::Relaxed);
                        rec.timeline(|t| t.late_start(now));
                        slots.clone().acquire_owned().await
                    }
                }
            } => permit,
        };
        let Ok(permit) = permit else { break };
        let (client, req, rec, stop) = (client.clone(), req.clone(), rec.clone(), stop.clone());
        tasks.spawn(async move {
            let stopped = stop.stopped(deadline);
            tokio::pin!(stopped);
            one(&client, &req, &rec, intended, stopped.as_mut()).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Runs the plan with `client`, showing a live view on `bar` (hidden when not a terminal).
/// Stops early when `stop` is set. Returns whether it was stopped early.
pub async fn execute(
    client: &HttpClient,
    req: Prepared,
    rec: Arc<Recording>,
    plan: Plan,
    stop: Stop,
    bar: ProgressBar,
) -> bool {
    let plan = Arc::new(plan);
    let req = Arc::new(req);
    let issued = Arc::new(AtomicU64::new(0));
    *rec.started.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    let deadline = plan.duration.map(|d| Instant::now() + d);
    let mut tasks = Vec::new();
    if let Some(rate) = plan.rate {
        tasks.push(tokio::spawn(open_loop(
            client.clone(),
            req.clone(),
            rec.clone(),
            plan.clone(),
            rate,
            stop.clone(),
            deadline,
        )));
    }
    for _ in 0..if plan.rate.is_some() {
        0
    } else {
        plan.concurrency.max(1)
    } {
        tasks.push(tokio::spawn(worker(
            client.clone(),
            req.clone(),
            rec.clone(),
            issued.clone(),
            plan.clone(),
            stop.clone(),
            deadline,
        )));
    }
    let live = {
        let (client, rec, bar) = (client.clone(), rec.clone(), bar.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let done = rec.ok.load(Ordering::Relaxed) + rec.failed.load(Ordering::Relaxed);
                let secs = rec.elapsed().as_secs_f64().max(1e-9);
                let lat = percentiles(&rec.latency_us);
                let snap = client.pool_snapshot();
                bar.set_position(done);
                bar.set_message(format!(
                    "{:.0} req/s  p50 {:.2}ms p99 {:.2}ms  conns {} active {} idle {} connecting  waiting {}  limit hits {}{}",
                    done as f64 / secs,
                    lat.p50 * 1e3,
                    lat.p99 * 1e3,
                    snap.total_active(),
                    snap.total_idle(),
                    snap.total_connecting(),
                    snap.total_waiters(),
                    rec.limit_hits.load(Ordering::Relaxed),
                    connections_line(&snap),
                ));
            }
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    live.abort();
    bar.finish_and_clear();
    stop.is_stopped()
}

/// Writes the HTML and JSON reports asked for, from `rec`'s timeline.
pub fn write_reports(
    rec: &Recording,
    report: &LoadReport,
    limits: crate::html::Limits,
    html: Option<&std::path::Path>,
    json: Option<&std::path::Path>,
) -> Result<(), Failure> {
    if html.is_none() && json.is_none() {
        return Ok(());
    }
    let Some(timeline) = rec.timeline.get() else {
        return Ok(());
    };
    let mut timeline = timeline.lock().unwrap_or_else(|e| e.into_inner());
    timeline.finish(Instant::now());
    let hist = |h: &Mutex<Option<Histogram<u64>>>| {
        crate::html::log_bins(h.lock().unwrap_or_else(|e| e.into_inner()).as_ref())
    };
    let run = crate::html::RunReport {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        limits,
        totals: report,
        latency_histogram: hist(&rec.latency_us),
        queue_histogram: hist(&rec.queue_us),
        timeline: &timeline,
    };
    let write = |path: &std::path::Path, text: String| {
        std::fs::write(path, text)
            .map_err(|e| Failure::Usage(format!("writing {}: {e}", path.display())))
    };
    if let Some(path) = html {
        write(path, crate::html::render(&run))?;
    }
    if let Some(path) = json {
        let text = serde_json::to_string(&run)
            .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
        write(path, text)?;
    }
    Ok(())
}

/// The live view's summary of the connections' rows: streams in use on HTTP/2 and, where
/// the kernel said, the round-trip times and retransmissions.
pub fn connections_line(snap: &poolscope::stats::PoolSnapshot) -> String {
    let mut out = String::new();
    let h2: Vec<_> = snap
        .connections()
        .filter(|(_, c)| c.version == http::Version::HTTP_2)
        .collect();
    if !h2.is_empty() {
        let streams: usize = h2.iter().map(|(_, c)| c.streams).sum();
        let max: usize = h2.iter().filter_map(|(_, c)| c.max_streams).sum();
        out.push_str(&format!("  h2 streams {streams}/{max}"));
    }
    let mut rtts: Vec<Duration> = snap
        .connections()
        .filter_map(|(_, c)| c.tcp.map(|t| t.rtt))
        .collect();
    if !rtts.is_empty() {
        rtts.sort();
        let retrans: u64 = snap
            .connections()
            .filter_map(|(_, c)| c.tcp.map(|t| u64::from(t.retransmits)))
            .sum();
        out.push_str(&format!(
            "  rtt p50 {:.2}ms max {:.2}ms  retrans {retrans}",
            rtts[rtts.len() / 2].as_secs_f64() * 1e3,
            rtts[rtts.len() - 1].as_secs_f64() * 1e3,
        ));
    }
    out
}

/// The live view: a bar when the request count is known, a spinner otherwise.
pub fn progress(plan: &Plan) -> ProgressBar {
    match plan.requests {
        Some(n) => {
            let bar = ProgressBar::new(n);
            if let Ok(style) =
                ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len}  {msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        }
        None => {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} {elapsed_precise} {pos} done  {msg}")
            {
                bar.set_style(style);
            }
            bar
        }
    }
}

/// Waits (at most 5 s) for the dials still in progress to end: a dial that a request started
/// and another connection made unneeded goes on after the run, and the server has accepted
/// it. Reporting before it ends would count its TCP connect but not its connection.
async fn settle_dials(client: &HttpClient) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.pool_snapshot().total_connecting() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let prepared = opts::prepare(&args.request)?;
    let connector = opts::connector(&args.conn)?;
    if args.concurrency == 0 {
        return Err(Failure::Usage("-c must be at least 1".into()));
    }
    let rec = Arc::new(Recording::default());
    let (stats, trace) = rec.hooks();
    let mut b = opts::builder(&args.conn)?;
    // The live view and the first limit hit's snapshot show each connection's TCP_INFO.
    b.telemetry()
        .stats(stats)
        .trace(trace)
        .snapshot_tcp_info(true);
    if let Some(addr) = args.metrics_addr {
        let local = crate::metrics_endpoint::serve(addr).await?;
        eprintln!("metrics at http://{local}/metrics");
        b.telemetry().metrics(true);
    }
    if let Some(n) = args.max_conns_per_host {
        b.pool_max_conns_per_host(n);
    }
    if let Some(n) = args.max_idle_per_host {
        b.pool_max_idle_per_host(n);
    }
    if let Some(t) = args.idle_timeout {
        b.pool_idle_timeout(t);
    }
    let client = b.build(connector);
    let plan = Plan {
        requests: args.requests.or(if args.duration.is_none() {
            Some(1000)
        } else {
            None
        }),
        duration: args.duration,
        concurrency: args.concurrency,
        rate: args.rate,
    };
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(Failure::Usage("--rate must be a positive number".into()));
        }
    }
    if args.report.is_some() || args.report_json.is_some() {
        rec.keep_timeline(Instant::now());
    }
    let stop = Stop::new();
    stop.on_ctrl_c();
    #[cfg(unix)]
    let dump = poolscope::debug::dump_on_signal(
        client.clone(),
        tokio::signal::unix::SignalKind::user_defined1(),
    )
    .ok();
    let bar = progress(&plan);
    let url = prepared.shown_url();
    let interrupted = execute(&client, prepared, rec.clone(), plan, stop, bar).await;
    #[cfg(unix)]
    if let Some(d) = dump {
        d.abort();
    }
    settle_dials(&client).await;
    let mut report = rec.report(url, args.concurrency, interrupted);
    report.rate = args.rate;
    let limits = crate::html::Limits {
        max_conns_per_host: args.max_conns_per_host,
        max_idle_per_host: args.max_idle_per_host,
        idle_timeout_seconds: args.idle_timeout.map(|d| d.as_secs_f64()),
    };
    write_reports(
        &rec,
        &report,
        limits,
        args.report.as_deref(),
        args.report_json.as_deref(),
    )?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report)
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        );
    } else {
        print!("{report}");
    }
    if report.requests_ok == 0 && report.requests_failed > 0 {
        let (kind, _) = report
            .errors
            .iter()
            .next()
            .map_or(("requests failed".to_owned(), 0), |(k, n)| (k.clone(), *n));
        return Err(Failure::Request(format!("every request failed: {kind}")));
    }
    Ok(())
}
