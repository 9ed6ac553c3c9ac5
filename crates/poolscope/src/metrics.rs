//! Metrics through the `metrics` facade (feature `metrics`, on by default; enabled per client
//! with [`Builder::metrics(true)`](crate::Builder::metrics)).
//!
//! Names and attributes are OpenTelemetry's HTTP client conventions
//! (`http.client.request.duration` with `http.request.method`, `server.address`…), and
//! poolscope's own pool metrics live under `poolscope.`, modelled on OpenTelemetry's
//! `db.client.connection.*`. Durations are in seconds; [`describe`] registers every metric's
//! unit and description with the recorder, and [`bucket_advice`] gives the histogram
//! buckets OpenTelemetry advises for each. Attribute values are bounded: never a path, a
//! query or userinfo, and a method outside the client's known list is `_OTHER`.
//! `docs/metrics.md` is the reference: each metric, its attributes and when it moves.
//!
//! Handles are registered once per host (scheme, host, port) and reused: a request's updates
//! are then an atomic each, with no label building. A host that has had no connection and no
//! request for [`Builder::metrics_idle_timeout`](crate::Builder::metrics_idle_timeout) has
//! its handles dropped, so a client that talks to many hosts does not grow without bound.
//!
//! What this module does not do: install a recorder. The application installs one
//! (Prometheus, StatsD, an OpenTelemetry bridge); without one, these calls are no-ops.

use std::collections::HashMap;
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use crate::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use http::{Method, StatusCode, Version};
use metrics::{Counter, Gauge, Histogram, Label, Unit};

use crate::key::BuildKeyHasher;
use crate::methods::KnownMethods;
use crate::pool::{ConnectKey, LeaseInfo};
use crate::stats::{CloseReason, Event, EventSink, Limit};
use crate::trace::{ClientTrace, RetryReason};

/// `http.client.request.duration`: histogram, seconds.
pub const REQUEST_DURATION: &str = "http.client.request.duration";
/// `http.client.request.time_in_queue`: histogram, seconds (as .NET names it).
pub const REQUEST_TIME_IN_QUEUE: &str = "http.client.request.time_in_queue";
/// `http.client.active_requests`: gauge (an up-down counter), requests.
pub const ACTIVE_REQUESTS: &str = "http.client.active_requests";
/// `http.client.open_connections`: gauge (an up-down counter), connections.
pub const OPEN_CONNECTIONS: &str = "http.client.open_connections";
/// `http.client.connection.duration`: histogram, seconds.
pub const CONNECTION_DURATION: &str = "http.client.connection.duration";
/// `dns.lookup.duration`: histogram, seconds.
pub const DNS_LOOKUP_DURATION: &str = "dns.lookup.duration";
/// `poolscope.connection.created`: counter, connections.
pub const CONNECTIONS_CREATED: &str = "poolscope.connection.created";
/// `poolscope.connection.closed`: counter, connections.
pub const CONNECTIONS_CLOSED: &str = "poolscope.connection.closed";
/// `poolscope.connection.reused`: counter, requests.
pub const CONNECTIONS_REUSED: &str = "poolscope.connection.reused";
/// `poolscope.connection.pending_requests`: gauge, requests.
pub const PENDING_REQUESTS: &str = "poolscope.connection.pending_requests";
/// `poolscope.connection.limit_hits`: counter, events.
pub const LIMIT_HITS: &str = "poolscope.connection.limit_hits";
/// `poolscope.connection.create_time`: histogram, seconds.
pub const CREATE_TIME: &str = "poolscope.connection.create_time";
/// `poolscope.connect.duration`: histogram, seconds.
pub const CONNECT_DURATION: &str = "poolscope.connect.duration";
/// `poolscope.tls.handshake.duration`: histogram, seconds.
pub const TLS_HANDSHAKE_DURATION: &str = "poolscope.tls.handshake.duration";
/// `poolscope.request.resends`: counter, requests.
pub const REQUEST_RESENDS: &str = "poolscope.request.resends";

/// OpenTelemetry's bucket advice for HTTP durations (seconds).
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// OpenTelemetry's bucket advice for connection lifetimes (seconds): up to five minutes.
pub const CONNECTION_DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Every histogram's name with its bucket advice, for a recorder that takes buckets per
/// metric. With metrics-exporter-prometheus, whose matchers see the name with `.` made `_`:
///
/// ```
/// # #[cfg(any())]
/// # {
/// let mut b = metrics_exporter_prometheus::PrometheusBuilder::new().set_enable_unit_suffix(true);
/// for (name, buckets) in poolscope::metrics::bucket_advice() {
///     b = b.set_buckets_for_metric(Matcher::Full(name.replace('.', "_")), buckets)?;
/// }
/// # }
/// ```
pub fn bucket_advice() -> &'static [(&'static str, &'static [f64])] {
    &[
        (REQUEST_DURATION, DURATION_BUCKETS),
        (REQUEST_TIME_IN_QUEUE, DURATION_BUCKETS),
        (CONNECTION_DURATION, CONNECTION_DURATION_BUCKETS),
        (DNS_LOOKUP_DURATION, DURATION_BUCKETS),
        (CREATE_TIME, DURATION_BUCKETS),
        (CONNECT_DURATION, DURATION_BUCKETS),
        (TLS_HANDSHAKE_DURATION, DURATION_BUCKETS),
    ]
}

/// Registers every metric's unit and description with the installed recorder (for
/// Prometheus: the `# HELP` lines, and with `set_enable_unit_suffix(true)` the `_seconds`
/// suffixes). A client built with `metrics(true)` calls it; call it yourself for a recorder
/// installed later.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Duration of HTTP client requests, from the call to the end of the response body"
    );
    describe_histogram!(
        REQUEST_TIME_IN_QUEUE,
        Unit::Seconds,
        "Time requests that could not be served at once waited for a connection"
    );
    describe_gauge!(
        ACTIVE_REQUESTS,
        "Number of outbound HTTP requests that are currently active on the client"
    );
    describe_gauge!(
        OPEN_CONNECTIONS,
        "Number of outbound HTTP connections that are currently idle or active on the client"
    );
    describe_histogram!(
        CONNECTION_DURATION,
        Unit::Seconds,
        "The duration of the successfully established outbound HTTP connections"
    );
    describe_histogram!(
        DNS_LOOKUP_DURATION,
        Unit::Seconds,
        "Measures the time taken to perform a DNS lookup"
    );
    describe_counter!(
        CONNECTIONS_CREATED,
        "Connections the pool dialled successfully"
    );
    describe_counter!(
        CONNECTIONS_CLOSED,
        "Connections that left the pool, by reason"
    );
    describe_counter!(
        CONNECTIONS_REUSED,
        "Requests served by a connection that had served an earlier one"
    );
    describe_gauge!(
        PENDING_REQUESTS,
        "Requests waiting for a connection, by queue"
    );
    describe_counter!(LIMIT_HITS, "Times a pool limit was reached, by limit");
    describe_histogram!(
        CREATE_TIME,
        Unit::Seconds,
        "Time to create a connection: resolve, connect, TLS and HTTP handshakes"
    );
    describe_histogram!(
        CONNECT_DURATION,
        Unit::Seconds,
        "Duration of successful TCP connects"
    );
    describe_histogram!(
        TLS_HANDSHAKE_DURATION,
        Unit::Seconds,
        "Duration of successful TLS handshakes"
    );
    describe_counter!(
        REQUEST_RESENDS,
        "Requests sent again on another connection, by reason"
    );
}

const CLOSE_REASONS: [CloseReason; 11] = [
    CloseReason::IdleTimeout,
    CloseReason::MaxLifetime,
    CloseReason::MaxIdleConns,
    CloseReason::MaxIdlePerHost,
    CloseReason::Broken,
    CloseReason::NotReusable,
    CloseReason::CloseIdle,
    CloseReason::PoolClosed,
    CloseReason::GoAway,
    CloseReason::Redundant,
    CloseReason::Poisoned,
];

const RETRY_REASONS: [RetryReason; 5] = [
    RetryReason::StaleConnection,
    RetryReason::NotSent,
    RetryReason::GoAway,
    RetryReason::RefusedStream,
    RetryReason::ConnectionClosed,
];

/// A version as a small number (0: none), to keep in an atomic.
fn version_code(v: Option<Version>) -> u8 {
    match v {
        None => 0,
        Some(Version::HTTP_09) => 1,
        Some(Version::HTTP_10) => 2,
        Some(Version::HTTP_2) => 4,
        Some(Version::HTTP_3) => 5,
        Some(_) => 3,
    }
}

/// The version a [`version_code`] stands for.
fn version_of(code: u8) -> Option<Version> {
    match code {
        0 => None,
        1 => Some(Version::HTTP_09),
        2 => Some(Version::HTTP_10),
        4 => Some(Version::HTTP_2),
        5 => Some(Version::HTTP_3),
        _ => Some(Version::HTTP_11),
    }
}

/// How a request ended, as its duration's attributes say.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    Status(u16),
    Error(&'static str),
}

/// The attributes a request duration is recorded under, beyond its host's.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct DurationKey {
    /// Index into the client's known methods.
    method: u16,
    /// The connection's HTTP version, if the request got one ([`version_code`]).
    version: u8,
    outcome: Outcome,
}

/// A DNS lookup series: the name looked up, the error type (`None`: it succeeded).
type DnsSeries = (Box<str>, Option<&'static str>, Histogram);

/// One host's metric handles (a pool key's: scheme, host, port), registered once: updates
/// are then an atomic each, with no label building and no registry lookup.
struct HostMetrics {
    /// `server.address`, `server.port`, `url.scheme`.
    base: [Label; 3],
    open_idle: Gauge,
    open_active: Gauge,
    pending_idle: Gauge,
    pending_dial: Gauge,
    created: Counter,
    reused: Counter,
    closed: [Counter; CLOSE_REASONS.len()],
    resends: [Counter; RETRY_REASONS.len()],
    connection_duration: Histogram,
    create_time: Histogram,
    connect_duration: Histogram,
    tls_duration: Histogram,
    time_in_queue: Histogram,
    /// Active requests by method index (the last one is `_OTHER`), made on first use.
    active: Box<[OnceLock<Gauge>]>,
    /// Request durations by method, version and outcome, made on first use.
    durations: RwLock<HashMap<DurationKey, Histogram, foldhash::fast::RandomState>>,
    /// DNS lookups by name looked up and error type (`None`: it succeeded).
    dns: Mutex<Vec<DnsSeries>>,
    /// Open connections plus requests in progress: the host is quiet at 0.
    live: AtomicIsize,
    /// When `live` last became 0, in nanoseconds since [`Metrics::anchor`].
    quiet_since: AtomicU64,
}

impl HostMetrics {
    fn new(key: &ConnectKey, methods: usize, at: u64) -> HostMetrics {
        let base = [
            Label::new("server.address", key.host().to_owned()),
            Label::new("server.port", key.port().to_string()),
            Label::new("url.scheme", key.scheme().to_owned()),
        ];
        let with = |extra: &[(&'static str, &'static str)]| -> Vec<Label> {
            let mut v = base.to_vec();
            v.extend(extra.iter().map(|(k, val)| Label::new(*k, *val)));
            v
        };
        let counter = |name: &'static str, extra: &[(&'static str, &'static str)]| {
            metrics::counter!(name, with(extra))
        };
        let gauge = |name: &'static str, extra: &[(&'static str, &'static str)]| {
            metrics::gauge!(name, with(extra))
        };
        let histogram = |name: &'static str| metrics::histogram!(name, with(&[]));
        HostMetrics {
            open_idle: gauge(OPEN_CONNECTIONS, &[("http.connection.state", "idle")]),
            open_active: gauge(OPEN_CONNECTIONS, &[("http.connection.state", "active")]),
            pending_idle: gauge(PENDING_REQUESTS, &[("poolscope.queue", "idle")]),
            pending_dial: gauge(PENDING_REQUESTS, &[("poolscope.queue", "conns_per_host")]),
            created: counter(CONNECTIONS_CREATED, &[]),
            reused: counter(CONNECTIONS_REUSED, &[]),
            closed: CLOSE_REASONS.map(|r| {
                counter(
                    CONNECTIONS_CLOSED,
                    &[("poolscope.close_reason", r.as_str())],
                )
            }),
            resends: RETRY_REASONS
                .map(|r| counter(REQUEST_RESENDS, &[("poolscope.retry_reason", r.as_str())])),
            connection_duration: histogram(CONNECTION_DURATION),
            create_time: histogram(CREATE_TIME),
            connect_duration: histogram(CONNECT_DURATION),
            tls_duration: histogram(TLS_HANDSHAKE_DURATION),
            time_in_queue: histogram(REQUEST_TIME_IN_QUEUE),
            active: (0..=methods).map(|_| OnceLock::new()).collect(),
            durations: RwLock::default(),
            dns: Mutex::default(),
            live: AtomicIsize::new(0),
            quiet_since: AtomicU64::new(at),
            base,
        }
    }

    fn labels(&self, extra: [Option<(&'static str, String)>; 4]) -> Vec<Label> {
        let mut v = self.base.to_vec();
        v.extend(
            extra
                .into_iter()
                .flatten()
                .map(|(k, val)| Label::new(k, val)),
        );
        v
    }

    fn active(&self, method: usize, methods: &KnownMethods) -> &Gauge {
        let method = method.min(self.active.len() - 1);
        self.active[method].get_or_init(|| {
            let name = methods.name(method).to_owned();
            metrics::gauge!(
                ACTIVE_REQUESTS,
                self.labels([Some(("http.request.method", name)), None, None, None])
            )
        })
    }

    /// Records a request's duration under its method, version and outcome.
    fn record_duration(&self, key: DurationKey, methods: &KnownMethods, secs: f64) {
        if let Some(h) = self.durations.read().get(&key) {
            h.record(secs);
            return;
        }
        let method = methods.name(usize::from(key.method)).to_owned();
        let (status, error) = match key.outcome {
            Outcome::Status(s) => (
                Some(("http.response.status_code", s.to_string())),
                (s >= 400).then(|| ("error.type", s.to_string())),
            ),
            Outcome::Error(e) => (None, Some(("error.type", e.to_owned()))),
        };
        let version = version_of(key.version).map(|v| {
            (
                "network.protocol.version",
                crate::spans::protocol_version(v).to_owned(),
            )
        });
        let labels = self.labels([
            Some(("http.request.method", method)),
            version,
            status,
            error,
        ]);
        let mut map = self.durations.write();
        map.entry(key)
            .or_insert_with(|| metrics::histogram!(REQUEST_DURATION, labels))
            .record(secs);
    }

    /// Records a DNS lookup of `name` (`error`: its error type, if it failed).
    fn record_dns(&self, name: &str, error: Option<&'static str>, secs: f64) {
        let mut dns = self.dns.lock();
        if let Some((_, _, h)) = dns.iter().find(|(n, e, _)| &**n == name && *e == error) {
            h.record(secs);
            return;
        }
        let mut labels = vec![Label::new("dns.question.name", name.to_owned())];
        labels.extend(error.map(|e| Label::new("error.type", e)));
        let h = metrics::histogram!(DNS_LOOKUP_DURATION, labels);
        h.record(secs);
        dns.push((name.into(), error, h));
    }

    /// A connection opened or a request started.
    fn enter(&self) {
        self.live.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection closed or a request ended; `at` says when (nanoseconds since the
    /// anchor), asked only if the host is now quiet.
    fn leave(&self, at: impl FnOnce() -> u64) {
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.quiet_since.store(at(), Ordering::Release);
        }
    }
}

/// How long a host may be quiet before its handles are dropped, by default.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// A client's metrics: handles per host, created on first use. Install the recorder before
/// building the client: handles are bound to the recorder present when they are made.
pub(crate) struct Metrics {
    hosts: RwLock<HashMap<ConnectKey, Arc<HostMetrics>, BuildKeyHasher>>,
    limit_hits: OnceLock<[Counter; 3]>,
    methods: KnownMethods,
    /// How long a host may be quiet before its handles are dropped.
    idle_timeout: Duration,
    /// The origin of the nanosecond times below.
    anchor: Instant,
    /// When the hosts were last swept for quiet ones.
    last_sweep: AtomicU64,
}

impl Metrics {
    /// A client's metrics when `enabled` (`Builder::metrics`); the names are described to
    /// the recorder then.
    pub(crate) fn build(
        enabled: bool,
        methods: &KnownMethods,
        idle_timeout: Duration,
    ) -> Option<Arc<Metrics>> {
        enabled.then(|| {
            describe();
            Arc::new(Metrics::new(methods.clone(), idle_timeout))
        })
    }

    pub(crate) fn new(methods: KnownMethods, idle_timeout: Duration) -> Metrics {
        Metrics {
            hosts: RwLock::default(),
            limit_hits: OnceLock::new(),
            methods,
            idle_timeout,
            anchor: Instant::now(),
            last_sweep: AtomicU64::new(0),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.anchor).as_nanos()).unwrap_or(u64::MAX)
    }

    fn host(&self, key: &ConnectKey) -> Arc<HostMetrics> {
        if let Some(h) = self.hosts.read().get(key) {
            return h.clone();
        }
        let now = self.nanos(Instant::now());
        let mut hosts = self.hosts.write();
        // A new host is the only way the map grows, so quiet ones are swept here, at most
        // twice per idle timeout: the sweep's cost is spread over that time's new hosts.
        let timeout = u64::try_from(self.idle_timeout.as_nanos()).unwrap_or(u64::MAX);
        if now.saturating_sub(self.last_sweep.load(Ordering::Relaxed)) >= timeout / 2 {
            self.last_sweep.store(now, Ordering::Relaxed);
            hosts.retain(|_, h| {
                // Nobody else holds it (no request's metrics), nothing is open, for a while.
                Arc::strong_count(h) > 1
                    || h.live.load(Ordering::Acquire) != 0
                    || now.saturating_sub(h.quiet_since.load(Ordering::Acquire)) < timeout
            });
        }
        hosts
            .entry(key.clone())
            .or_insert_with(|| Arc::new(HostMetrics::new(key, self.methods.len(), now)))
            .clone()
    }

    fn limit_hit(&self, limit: Limit) -> &Counter {
        let hits = self.limit_hits.get_or_init(|| {
            [
                Limit::MaxIdleConns,
                Limit::MaxIdleConnsPerHost,
                Limit::MaxConnsPerHost,
            ]
            .map(|l| metrics::counter!(LIMIT_HITS, "poolscope.limit" => l.as_str()))
        });
        match limit {
            Limit::MaxIdleConns => &hits[0],
            Limit::MaxIdleConnsPerHost => &hits[1],
            Limit::MaxConnsPerHost => &hits[2],
        }
    }

    /// Hosts with handles now (for tests of the eviction).
    #[cfg(test)]
    fn hosts(&self) -> usize {
        self.hosts.read().len()
    }
}

/// The pool-level metrics: a `Stats` sink.
pub(crate) struct PoolMetrics(pub(crate) Arc<Metrics>);

/// The pool's events as metrics: a [`PoolMetrics`] sink.
pub(crate) fn pool_sink(m: &Arc<Metrics>) -> Arc<dyn EventSink> {
    Arc::new(PoolMetrics(m.clone()))
}

impl EventSink for PoolMetrics {
    fn on_pool_event(&self, event: &Event) {
        let m = &self.0;
        match event {
            Event::ConnOpened(e) => {
                let h = m.host(&e.key);
                h.enter();
                h.created.increment(1);
                h.create_time.record(e.dial_time.as_secs_f64());
                h.open_active.increment(1.0);
            }
            Event::ConnClosed(e) => {
                let h = m.host(&e.key);
                if let Some(i) = CLOSE_REASONS.iter().position(|r| *r == e.reason) {
                    h.closed[i].increment(1);
                }
                h.connection_duration.record(e.lifetime.as_secs_f64());
                h.open_active.decrement(1.0);
                h.leave(|| m.nanos(e.at));
            }
            Event::IdleConnIn(e) => {
                let h = m.host(&e.key);
                h.open_active.decrement(1.0);
                h.open_idle.increment(1.0);
            }
            // A connection leaving the idle list is in use, or about to be closed (its
            // `ConnClosed` then takes it out of `active`).
            Event::IdleConnOut(e) => {
                let h = m.host(&e.key);
                h.open_idle.decrement(1.0);
                h.open_active.increment(1.0);
            }
            Event::IdleConnWaitIn(e) => m.host(&e.key).pending_idle.increment(1.0),
            Event::IdleConnWaitOut(e) => m.host(&e.key).pending_idle.decrement(1.0),
            Event::ConnsPerHostWaitIn(e) => m.host(&e.key).pending_dial.increment(1.0),
            Event::ConnsPerHostWaitOut(e) => m.host(&e.key).pending_dial.decrement(1.0),
            Event::LimitHit(limit, _) => m.limit_hit(*limit).increment(1),
            Event::ConnReused(_) => {}
        }
    }
}

/// DNS, TCP connect and TLS handshake durations of the dials requests start.
pub(crate) fn dial_trace(m: &Arc<Metrics>) -> ClientTrace {
    let (m1, m2, m3) = (m.clone(), m.clone(), m.clone());
    ClientTrace::builder()
        .on_dns_done(move |i| {
            m1.host(&i.key)
                .record_dns(&i.host, i.error_type, i.took.as_secs_f64())
        })
        .on_connect_done(move |i| {
            if i.error.is_none() {
                m2.host(&i.key)
                    .connect_duration
                    .record(i.took.as_secs_f64())
            }
        })
        .on_tls_handshake_done(move |i| {
            if i.error.is_none() {
                m3.host(&i.key).tls_duration.record(i.took.as_secs_f64())
            }
        })
        .build()
}

/// A request's metrics from start to end. Counts the request active while it lives; if it
/// is dropped without [`finish_at`](RequestMetrics::finish_at) (the response future was
/// dropped), the request is recorded with `error.type="canceled"`.
pub(crate) struct RequestMetrics {
    metrics: Arc<Metrics>,
    host: Arc<HostMetrics>,
    /// Index into the known methods.
    method: usize,
    /// The HTTP version of the connection the request last got ([`version_code`]; 0: none
    /// yet). Atomic: milestones take `&self`.
    version: AtomicU8,
    started: Instant,
    finished: bool,
}

impl RequestMetrics {
    pub(crate) fn start(
        m: &Arc<Metrics>,
        method: &Method,
        key: &ConnectKey,
        started: Instant,
    ) -> RequestMetrics {
        let host = m.host(key);
        host.enter();
        let method = m.methods.index(method);
        host.active(method, &m.methods).increment(1.0);
        RequestMetrics {
            metrics: m.clone(),
            host,
            method,
            version: AtomicU8::new(0),
            started,
            finished: false,
        }
    }

    /// The request got a connection of `version`.
    pub(crate) fn got_conn(&self, info: &LeaseInfo, version: Version) {
        self.version
            .store(version_code(Some(version)), Ordering::Relaxed);
        // Only a request that could not be served at once queued (.NET's rule).
        if !info.waited.is_zero() {
            self.host.time_in_queue.record(info.waited.as_secs_f64());
        }
        if info.reused {
            self.host.reused.increment(1);
        }
    }

    /// The request is sent again.
    pub(crate) fn retry(&self, reason: RetryReason) {
        if let Some(i) = RETRY_REASONS.iter().position(|r| *r == reason) {
            self.host.resends[i].increment(1);
        }
    }

    /// The request ended, at `end` (`elapsed` after it started: the other sinks' reading),
    /// with a response (`Ok(status)`) or an error of this type.
    pub(crate) fn finish_at(
        mut self,
        outcome: Result<StatusCode, &'static str>,
        end: Instant,
        elapsed: Duration,
    ) {
        self.record(outcome, end, elapsed);
    }

    fn record(
        &mut self,
        outcome: Result<StatusCode, &'static str>,
        end: Instant,
        elapsed: Duration,
    ) {
        if self.finished {
            return;
        }
        self.finished = true;
        let m = &self.metrics;
        self.host.active(self.method, &m.methods).decrement(1.0);
        let key = DurationKey {
            method: u16::try_from(self.method).unwrap_or(u16::MAX),
            version: self.version.load(Ordering::Relaxed),
            outcome: match outcome {
                Ok(s) => Outcome::Status(s.as_u16()),
                Err(e) => Outcome::Error(e),
            },
        };
        self.host
            .record_duration(key, &m.methods, elapsed.as_secs_f64());
        self.host.leave(|| m.nanos(end));
    }
}

impl Drop for RequestMetrics {
    fn drop(&mut self) {
        // Checked first: the clock is read only for a request that did not finish.
        if !self.finished {
            let now = Instant::now();
            self.record(
                Err("canceled"),
                now,
                now.saturating_duration_since(self.started),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(key: &ConnectKey, at: Instant) -> Event {
        Event::ConnClosed(crate::stats::ConnClosed {
            key: key.clone(),
            conn_id: crate::pool::ConnId(1),
            at,
            reason: CloseReason::IdleTimeout,
            lifetime: Duration::from_millis(5),
            requests: 1,
        })
    }

    fn opened(key: &ConnectKey, at: Instant) -> Event {
        Event::ConnOpened(crate::stats::ConnOpened {
            key: key.clone(),
            conn_id: crate::pool::ConnId(1),
            at,
            dial_time: Duration::from_millis(1),
            shared: false,
        })
    }

    #[test]
    fn a_quiet_host_is_dropped_when_a_new_one_comes() {
        let m = Arc::new(Metrics::new(
            KnownMethods::default(),
            Duration::from_millis(40),
        ));
        let sink = PoolMetrics(m.clone());
        let a = ConnectKey::new("http", "a.test", 80);
        let b = ConnectKey::new("http", "b.test", 80);
        let c = ConnectKey::new("http", "c.test", 80);
        // `a` has a request in progress and a connection; `b` has a connection that closes.
        let req = RequestMetrics::start(&m, &Method::GET, &a, Instant::now());
        sink.on_pool_event(&opened(&a, Instant::now()));
        sink.on_pool_event(&opened(&b, Instant::now()));
        sink.on_pool_event(&closed(&b, Instant::now()));
        std::thread::sleep(Duration::from_millis(60));
        m.host(&c);
        assert_eq!(m.hosts(), 2, "b was quiet for longer than the timeout");
        // The request ends and the connection closes: `a` is quiet too, but only for now.
        req.finish_at(Ok(StatusCode::OK), Instant::now(), Duration::ZERO);
        sink.on_pool_event(&closed(&a, Instant::now()));
        m.host(&b);
        assert_eq!(m.hosts(), 3, "a has not been quiet for the timeout yet");
        std::thread::sleep(Duration::from_millis(60));
        m.host(&ConnectKey::new("http", "d.test", 80));
        // a, b and c all quiet past the timeout: only d is left.
        assert_eq!(m.hosts(), 1);
    }
}
