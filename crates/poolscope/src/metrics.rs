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

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use metrics::{counter, gauge, histogram, Label};

use crate::pool::{ConnectKey, LeaseInfo};
use crate::stats::{Event, EventSink, Limit};
use crate::trace::ClientTrace;

/// `scheme`, `host`, `port` of a key, then `extra`.
fn labels(key: &ConnectKey, extra: &[(&'static str, &'static str)]) -> Vec<Label> {
    let mut v = Vec::with_capacity(3 + extra.len());
    v.push(Label::new("scheme", key.scheme().to_owned()));
    v.push(Label::new("host", key.host().to_owned()));
    v.push(Label::new("port", key.port().to_string()));
    v.extend(extra.iter().map(|(k, val)| Label::new(*k, *val)));
    v
}

/// OpenTelemetry's rule: known methods as they are, anything else `_OTHER`.
pub(crate) fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// The pool-level metrics: a `Stats` sink.
#[derive(Debug, Default)]
pub(crate) struct PoolMetrics;

impl EventSink for PoolMetrics {
    fn on_pool_event(&self, event: &Event) {
        match event {
            Event::ConnOpened(e) => {
                counter!("http_client_connections_opened_total", labels(&e.key, &[])).increment(1);
                open(&e.key, "active").increment(1.0);
            }
            Event::ConnClosed(e) => {
                let reason = [("reason", e.reason.as_str())];
                counter!(
                    "http_client_connections_closed_total",
                    labels(&e.key, &reason)
                )
                .increment(1);
                histogram!(
                    "http_client_connection_duration_seconds",
                    labels(&e.key, &[])
                )
                .record(e.lifetime.as_secs_f64());
                open(&e.key, "active").decrement(1.0);
            }
            Event::IdleConnIn(e) => {
                open(&e.key, "active").decrement(1.0);
                open(&e.key, "idle").increment(1.0);
            }
            // A connection leaving the idle list is in use, or about to be closed (its
            // `ConnClosed` then takes it out of `active`).
            Event::IdleConnOut(e) => {
                open(&e.key, "idle").decrement(1.0);
                open(&e.key, "active").increment(1.0);
            }
            Event::IdleConnWaitIn(e) => waiting(&e.key, "idle").increment(1.0),
            Event::IdleConnWaitOut(e) => waiting(&e.key, "idle").decrement(1.0),
            Event::ConnsPerHostWaitIn(e) => waiting(&e.key, "conns_per_host").increment(1.0),
            Event::ConnsPerHostWaitOut(e) => waiting(&e.key, "conns_per_host").decrement(1.0),
            Event::LimitHit(limit, _) => {
                let limit = match limit {
                    Limit::MaxIdleConns => "max_idle_conns",
                    Limit::MaxIdleConnsPerHost => "max_idle_conns_per_host",
                    Limit::MaxConnsPerHost => "max_conns_per_host",
                };
                counter!("http_client_pool_limit_hits_total", "limit" => limit).increment(1);
            }
            Event::ConnReused(_) => {}
        }
    }
}

fn open(key: &ConnectKey, state: &'static str) -> metrics::Gauge {
    gauge!(
        "http_client_open_connections",
        labels(key, &[("state", state)])
    )
}

fn waiting(key: &ConnectKey, queue: &'static str) -> metrics::Gauge {
    gauge!(
        "http_client_pool_waiting_requests",
        labels(key, &[("queue", queue)])
    )
}

/// DNS, TCP connect and TLS handshake durations of the dials requests start.
pub(crate) fn dial_trace() -> ClientTrace {
    ClientTrace::builder()
        .on_dns_done(|i| {
            histogram!("dns_lookup_duration_seconds", labels(&i.key, &[]))
                .record(i.took.as_secs_f64())
        })
        .on_connect_done(|i| {
            if i.error.is_none() {
                histogram!("http_client_connect_duration_seconds", labels(&i.key, &[]))
                    .record(i.took.as_secs_f64())
            }
        })
        .on_tls_handshake_done(|i| {
            if i.error.is_none() {
                histogram!(
                    "http_client_tls_handshake_duration_seconds",
                    labels(&i.key, &[])
                )
                .record(i.took.as_secs_f64())
            }
        })
        .build()
}

/// A request's metrics from start to end. Counts the request active while it lives; if it
/// is dropped without [`finish`](RequestMetrics::finish) (the response future was dropped),
/// the request is recorded with `error_type="canceled"`.
pub(crate) struct RequestMetrics {
    method: &'static str,
    key: ConnectKey,
    started: Instant,
    finished: bool,
}

impl RequestMetrics {
    pub(crate) fn start(method: &Method, key: &ConnectKey, started: Instant) -> RequestMetrics {
        gauge!(
            "http_client_active_requests",
            labels(key, &[("method", method_label(method))])
        )
        .increment(1.0);
        RequestMetrics {
            method: method_label(method),
            key: key.clone(),
            started,
            finished: false,
        }
    }

    pub(crate) fn got_conn(&self, info: &LeaseInfo) {
        histogram!(
            "http_client_request_time_in_queue_seconds",
            labels(&self.key, &[])
        )
        .record(info.waited.as_secs_f64());
        if info.reused {
            counter!(
                "http_client_connections_reused_total",
                labels(&self.key, &[])
            )
            .increment(1);
        }
    }

    /// The request ended with a response (`Ok(status)`) or an error of this type.
    pub(crate) fn finish(mut self, outcome: Result<StatusCode, &'static str>) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: Result<StatusCode, &'static str>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let elapsed: Duration = self.started.elapsed();
        gauge!(
            "http_client_active_requests",
            labels(&self.key, &[("method", self.method)])
        )
        .decrement(1.0);
        let outcome = match outcome {
            Ok(status) => ("status_class", status_class(status)),
            Err(error_type) => ("error_type", error_type),
        };
        histogram!(
            "http_client_request_duration_seconds",
            labels(&self.key, &[("method", self.method), outcome])
        )
        .record(elapsed.as_secs_f64());
    }
}

impl Drop for RequestMetrics {
    fn drop(&mut self) {
        self.record(Err("canceled"));
    }
}
