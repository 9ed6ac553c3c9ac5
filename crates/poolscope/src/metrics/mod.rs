//! Metrics through the `metrics` facade (feature `metrics`, on by default; enabled per client
//! with [`TelemetryBuilder::metrics(true)`](crate::TelemetryBuilder::metrics)).
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
//! request for [`TelemetryBuilder::metrics_idle_timeout`](crate::TelemetryBuilder::metrics_idle_timeout) has
//! its handles dropped, so a client that talks to many hosts does not grow without bound.
//!
//! What this module does not do: install a recorder. The application installs one
//! (Prometheus, StatsD, an OpenTelemetry bridge); without one, these calls are no-ops.

mod host;
mod request;
mod sink;

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
    /// A client's metrics when `enabled` (`TelemetryBuilder::metrics`); the names are described to
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

use self::host::*;
pub(crate) use self::request::RequestMetrics;
pub(crate) use self::sink::{dial_trace, pool_sink};

#[cfg(test)]
mod tests {
    use super::sink::PoolMetrics;
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
