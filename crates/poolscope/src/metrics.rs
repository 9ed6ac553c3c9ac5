//! Metrics through the `metrics` facade (feature `metrics`, on by default; enabled per client
//! with [`Builder::metrics(true)`](crate::Builder::metrics)).
//!
//! Names follow OpenTelemetry's HTTP client conventions, written Prometheus-style, in base
//! units. Every metric carries `scheme`, `host` and `port`; request metrics add `method`
//! (unknown methods become `_OTHER`) and `status_class` (`2xx`…) or `error_type`. Labels are
//! bounded: never a path, a query or userinfo. `docs/metrics.md` lists each metric and when
//! it moves.
//!
//! What this module does not do: install a recorder. The application installs one
//! (Prometheus, StatsD, an OpenTelemetry bridge); without one, these calls are no-ops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram, Label};

use crate::pool::key::BuildKeyHasher;
use crate::pool::{ConnectKey, LeaseInfo};
use crate::stats::{CloseReason, Event, EventSink, Limit};
use crate::trace::{method_label, ClientTrace, RetryReason};

/// `scheme`, `host`, `port` of a key, then `extra`.
fn labels(key: &ConnectKey, extra: &[(&'static str, &'static str)]) -> Vec<Label> {
    let mut v = Vec::with_capacity(3 + extra.len());
    v.push(Label::new("scheme", key.scheme().to_owned()));
    v.push(Label::new("host", key.host().to_owned()));
    v.push(Label::new("port", key.port().to_string()));
    v.extend(extra.iter().map(|(k, val)| Label::new(*k, *val)));
    v
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index of `s`'s class in [`STATUS_CLASSES`].
fn status_class(s: StatusCode) -> usize {
    match s.as_u16() / 100 {
        1 => 0,
        2 => 1,
        3 => 2,
        4 => 3,
        _ => 4,
    }
}

/// The index of `m`'s label in [`METHODS`].
fn method_index(m: &Method) -> usize {
    let label = method_label(m);
    METHODS
        .iter()
        .position(|l| *l == label)
        .unwrap_or(METHODS.len() - 1)
}

const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER",
];

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

const RETRY_REASONS: [RetryReason; 4] = [
    RetryReason::StaleConnection,
    RetryReason::NotSent,
    RetryReason::GoAway,
    RetryReason::RefusedStream,
];

/// One key's metric handles, registered once: updates are then an atomic each, with no
/// label building and no registry lookup.
struct KeyMetrics {
    key: ConnectKey,
    open_idle: Gauge,
    open_active: Gauge,
    wait_idle: Gauge,
    wait_conns_per_host: Gauge,
    opened: Counter,
    reused: Counter,
    closed: [Counter; CLOSE_REASONS.len()],
    /// Requests sent again, by `RetryReason` (indices into `RETRY_REASONS`).
    retries: [Counter; RETRY_REASONS.len()],
    connection_duration: Histogram,
    connect_duration: Histogram,
    tls_duration: Histogram,
    dns_duration: Histogram,
    time_in_queue: Histogram,
    active_requests: [Gauge; 10],
    /// Request duration histograms of responses, by method and status class (indices into
    /// `METHODS` and `STATUS_CLASSES`), made on first use: one atomic load per request after.
    by_status: [[OnceLock<Histogram>; 5]; 10],
    /// Request duration histograms of failures, by method index and error type.
    by_error: Mutex<HashMap<(usize, &'static str), Histogram>>,
}

impl KeyMetrics {
    fn new(key: &ConnectKey) -> KeyMetrics {
        let l = |extra: &[(&'static str, &'static str)]| labels(key, extra);
        KeyMetrics {
            key: key.clone(),
            open_idle: gauge!("http_client_open_connections", l(&[("state", "idle")])),
            open_active: gauge!("http_client_open_connections", l(&[("state", "active")])),
            wait_idle: gauge!("http_client_pool_waiting_requests", l(&[("queue", "idle")])),
            wait_conns_per_host: gauge!(
                "http_client_pool_waiting_requests",
                l(&[("queue", "conns_per_host")])
            ),
            opened: counter!("http_client_connections_opened_total", l(&[])),
            reused: counter!("http_client_connections_reused_total", l(&[])),
            closed: CLOSE_REASONS.map(|r| {
                counter!(
                    "http_client_connections_closed_total",
                    l(&[("reason", r.as_str())])
                )
            }),
            retries: RETRY_REASONS.map(|r| {
                counter!(
                    "http_client_request_retries_total",
                    l(&[("reason", r.as_str())])
                )
            }),
            connection_duration: histogram!("http_client_connection_duration_seconds", l(&[])),
            connect_duration: histogram!("http_client_connect_duration_seconds", l(&[])),
            tls_duration: histogram!("http_client_tls_handshake_duration_seconds", l(&[])),
            dns_duration: histogram!("dns_lookup_duration_seconds", l(&[])),
            time_in_queue: histogram!("http_client_request_time_in_queue_seconds", l(&[])),
            active_requests: METHODS
                .map(|m| gauge!("http_client_active_requests", l(&[("method", m)]))),
            by_status: Default::default(),
            by_error: Mutex::new(HashMap::new()),
        }
    }

    fn active(&self, method: usize) -> &Gauge {
        &self.active_requests[method.min(METHODS.len() - 1)]
    }

    /// Records a request's duration under its method and outcome.
    fn record_duration(&self, method: usize, outcome: Result<usize, &'static str>, secs: f64) {
        let method = method.min(METHODS.len() - 1);
        let make = |outcome: (&'static str, &'static str)| {
            histogram!(
                "http_client_request_duration_seconds",
                labels(&self.key, &[("method", METHODS[method]), outcome])
            )
        };
        match outcome {
            Ok(class) => {
                let class = class.min(STATUS_CLASSES.len() - 1);
                self.by_status[method][class]
                    .get_or_init(|| make(("status_class", STATUS_CLASSES[class])))
                    .record(secs);
            }
            Err(error_type) => {
                let mut map = self.by_error.lock().unwrap_or_else(|e| e.into_inner());
                map.entry((method, error_type))
                    .or_insert_with(|| make(("error_type", error_type)))
                    .record(secs);
            }
        }
    }
}

/// A client's metrics: handles per key, created on first use. Install the recorder before
/// building the client: handles are bound to the recorder present when they are made.
#[derive(Default)]
pub(crate) struct Metrics {
    keys: RwLock<HashMap<ConnectKey, Arc<KeyMetrics>, BuildKeyHasher>>,
    limit_hits: OnceLock<[Counter; 3]>,
}

impl Metrics {
    fn key(&self, key: &ConnectKey) -> Arc<KeyMetrics> {
        if let Some(k) = self.keys.read().unwrap_or_else(|e| e.into_inner()).get(key) {
            return k.clone();
        }
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        keys.entry(key.clone())
            .or_insert_with(|| Arc::new(KeyMetrics::new(key)))
            .clone()
    }

    fn limit_hit(&self, limit: Limit) -> &Counter {
        let hits = self.limit_hits.get_or_init(|| {
            [
                "max_idle_conns",
                "max_idle_conns_per_host",
                "max_conns_per_host",
            ]
            .map(|l| counter!("http_client_pool_limit_hits_total", "limit" => l))
        });
        match limit {
            Limit::MaxIdleConns => &hits[0],
            Limit::MaxIdleConnsPerHost => &hits[1],
            Limit::MaxConnsPerHost => &hits[2],
        }
    }
}

/// The pool-level metrics: a `Stats` sink.
pub(crate) struct PoolMetrics(pub(crate) Arc<Metrics>);

impl EventSink for PoolMetrics {
    fn on_pool_event(&self, event: &Event) {
        let m = &self.0;
        match event {
            Event::ConnOpened(e) => {
                let k = m.key(&e.key);
                k.opened.increment(1);
                k.open_active.increment(1.0);
            }
            Event::ConnClosed(e) => {
                let k = m.key(&e.key);
                if let Some(i) = CLOSE_REASONS.iter().position(|r| *r == e.reason) {
                    k.closed[i].increment(1);
                }
                k.connection_duration.record(e.lifetime.as_secs_f64());
                k.open_active.decrement(1.0);
            }
            Event::IdleConnIn(e) => {
                let k = m.key(&e.key);
                k.open_active.decrement(1.0);
                k.open_idle.increment(1.0);
            }
            // A connection leaving the idle list is in use, or about to be closed (its
            // `ConnClosed` then takes it out of `active`).
            Event::IdleConnOut(e) => {
                let k = m.key(&e.key);
                k.open_idle.decrement(1.0);
                k.open_active.increment(1.0);
            }
            Event::IdleConnWaitIn(e) => m.key(&e.key).wait_idle.increment(1.0),
            Event::IdleConnWaitOut(e) => m.key(&e.key).wait_idle.decrement(1.0),
            Event::ConnsPerHostWaitIn(e) => m.key(&e.key).wait_conns_per_host.increment(1.0),
            Event::ConnsPerHostWaitOut(e) => m.key(&e.key).wait_conns_per_host.decrement(1.0),
            Event::LimitHit(limit, _) => m.limit_hit(*limit).increment(1),
            Event::ConnReused(_) => {}
        }
    }
}

/// DNS, TCP connect and TLS handshake durations of the dials requests start.
pub(crate) fn dial_trace(m: &Arc<Metrics>) -> ClientTrace {
    let (m1, m2, m3) = (m.clone(), m.clone(), m.clone());
    ClientTrace::builder()
        .on_dns_done(move |i| m1.key(&i.key).dns_duration.record(i.took.as_secs_f64()))
        .on_connect_done(move |i| {
            if i.error.is_none() {
                m2.key(&i.key).connect_duration.record(i.took.as_secs_f64())
            }
        })
        .on_tls_handshake_done(move |i| {
            if i.error.is_none() {
                m3.key(&i.key).tls_duration.record(i.took.as_secs_f64())
            }
        })
        .build()
}

/// A request's metrics from start to end. Counts the request active while it lives; if it
/// is dropped without [`finish`](RequestMetrics::finish) (the response future was dropped),
/// the request is recorded with `error_type="canceled"`.
pub(crate) struct RequestMetrics {
    /// Index into `METHODS`.
    method: usize,
    key: Arc<KeyMetrics>,
    started: Instant,
    finished: bool,
}

impl RequestMetrics {
    pub(crate) fn start(
        m: &Metrics,
        method: &Method,
        key: &ConnectKey,
        started: Instant,
    ) -> RequestMetrics {
        let key = m.key(key);
        let method = method_index(method);
        key.active(method).increment(1.0);
        RequestMetrics {
            method,
            key,
            started,
            finished: false,
        }
    }

    pub(crate) fn got_conn(&self, info: &LeaseInfo) {
        self.key.time_in_queue.record(info.waited.as_secs_f64());
        if info.reused {
            self.key.reused.increment(1);
        }
    }

    /// The request is sent again.
    pub(crate) fn retry(&self, reason: RetryReason) {
        if let Some(i) = RETRY_REASONS.iter().position(|r| *r == reason) {
            self.key.retries[i].increment(1);
        }
    }

    /// The request ended, at `end`, with a response (`Ok(status)`) or an error of this type.
    pub(crate) fn finish_at(mut self, outcome: Result<StatusCode, &'static str>, end: Instant) {
        self.record(outcome, end);
    }

    fn record(&mut self, outcome: Result<StatusCode, &'static str>, end: Instant) {
        if self.finished {
            return;
        }
        self.finished = true;
        let elapsed: Duration = end.saturating_duration_since(self.started);
        self.key.active(self.method).decrement(1.0);
        self.key.record_duration(
            self.method,
            outcome.map(status_class),
            elapsed.as_secs_f64(),
        );
    }
}

impl Drop for RequestMetrics {
    fn drop(&mut self) {
        // Checked first: the clock is read only for a request that did not finish.
        if !self.finished {
            self.record(Err("canceled"), Instant::now());
        }
    }
}
