//! `tracing` spans (cargo feature `tracing`), with OpenTelemetry's HTTP client span
//! attributes, for `tracing-opentelemetry` to export.
//!
//! - **`HTTP` / `{method}`**: one span per request (target `poolscope::request`, kind CLIENT,
//!   at [`Builder::request_span_level`](crate::Builder::request_span_level), INFO by default),
//!   a child of the caller's current span. Made when the request is issued, filled in at its
//!   milestones by its [`RequestTelemetry`](super::telemetry::RequestTelemetry), and ended
//!   when the response body ends, fails or is dropped, or when the request fails.
//! - **`wait_for_connection`**: a child of the request's span, only while the request waits
//!   for a connection (as .NET has it): from the first time the pool cannot serve it at once
//!   to the moment it gets one (its own dial included).
//! - **`connection_setup`**: a root span per dial (target `poolscope::connection`, same
//!   level): resolve, connect, TLS and the HTTP handshake. A dial can end up serving another
//!   request than the one that started it, so it is nobody's child. The request that gets
//!   the new connection first links to it (`follows_from`). It ends once that request has the
//!   connection (or when the connection closes unused).
//!
//! With no subscriber interested, a span is `Span::none()` and costs a callsite check.
//!
//! | attribute | when |
//! |---|---|
//! | `otel.name` (`GET`…, `HTTP` for other methods), `otel.kind` = `client`, `http.request.method` (`_OTHER` for methods outside the known list, with `http.request.method_original`), `server.address`, `server.port`, `url.scheme`, `url.full` (no userinfo, through `redact_url`) | at creation |
//! | `network.protocol.version` (`1.1`, `2`), `network.peer.address`, `network.peer.port`, `poolscope.connection.id`, `poolscope.connection.reused`, `poolscope.time_in_queue_s` | when it gets a connection |
//! | `http.request.resend_count` | when it is sent again |
//! | `http.response.status_code`; for 4xx and 5xx `error.type` (the code) and `otel.status_code` = `ERROR` | at the response's end |
//! | `error.type` (`connect`, `pool_timeout`, `canceled`…), `otel.status_code` = `ERROR` | when it fails or is canceled |
//!
//! `connection_setup` has `server.address`, `server.port`, `url.scheme`, `poolscope.connection.id`,
//! then `network.peer.address`/`.port` and `network.protocol.version`, or `error.type` and
//! `otel.status_code = ERROR` if the dial failed; and the phases' durations
//! `poolscope.dns_s`, `poolscope.connect_s`, `poolscope.tls_s` when the connector is
//! poolscope's own.

use std::sync::Mutex;

use http::{Method, StatusCode, Uri};
use tracing::field::Empty;
use tracing::{Level, Span};

use crate::pool::{ConnId, ConnectKey, LeaseInfo};
use crate::stats::{Event, EventSink};

/// `tracing::span!` at a level known only at run time: one callsite per level.
macro_rules! span_at {
    ($level:expr, target: $target:expr, $(parent: $parent:expr,)? $name:literal $(, $($fields:tt)+)?) => {
        match $level {
            Level::ERROR => tracing::span!(target: $target, $(parent: $parent,)? Level::ERROR, $name $(, $($fields)+)?),
            Level::WARN => tracing::span!(target: $target, $(parent: $parent,)? Level::WARN, $name $(, $($fields)+)?),
            Level::INFO => tracing::span!(target: $target, $(parent: $parent,)? Level::INFO, $name $(, $($fields)+)?),
            Level::DEBUG => tracing::span!(target: $target, $(parent: $parent,)? Level::DEBUG, $name $(, $($fields)+)?),
            Level::TRACE => tracing::span!(target: $target, $(parent: $parent,)? Level::TRACE, $name $(, $($fields)+)?),
        }
    };
}

/// `tracing::event!` at a level known only at run time.
macro_rules! event_at {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            Level::ERROR => tracing::event!(target: "poolscope::pool", Level::ERROR, $($rest)+),
            Level::WARN => tracing::event!(target: "poolscope::pool", Level::WARN, $($rest)+),
            Level::INFO => tracing::event!(target: "poolscope::pool", Level::INFO, $($rest)+),
            Level::DEBUG => tracing::event!(target: "poolscope::pool", Level::DEBUG, $($rest)+),
            Level::TRACE => tracing::event!(target: "poolscope::pool", Level::TRACE, $($rest)+),
        }
    };
}

/// The levels of the client's spans and pool events.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Levels {
    /// The request, `wait_for_connection` and `connection_setup` spans.
    pub(crate) spans: Level,
    /// Pool events that say something (dials, closes, waits, limit hits); the per-request
    /// churn of the idle lists is at TRACE.
    pub(crate) pool: Level,
}

impl Default for Levels {
    fn default() -> Levels {
        Levels {
            spans: Level::INFO,
            pool: Level::DEBUG,
        }
    }
}

/// A request's span (`Span::none()` when nobody listens), and its wait while it waits.
pub(crate) struct RequestSpan {
    span: Span,
    level: Level,
    wait: Mutex<Option<Span>>,
}

impl RequestSpan {
    pub(crate) fn start(
        level: Level,
        method: &Method,
        methods: &crate::methods::KnownMethods,
        key: &ConnectKey,
        uri: &Uri,
        redact: Option<&crate::inflight::Redact>,
    ) -> RequestSpan {
        let label = methods.label(method);
        let other = label == crate::methods::OTHER;
        let name = if other { "HTTP" } else { label };
        let span = span_at!(
            level,
            target: "poolscope::request",
            "HTTP",
            otel.name = name,
            otel.kind = "client",
            otel.status_code = Empty,
            http.request.method = label,
            http.request.method_original = Empty,
            server.address = key.host(),
            server.port = i64::from(key.port()),
            url.scheme = key.scheme(),
            url.full = Empty,
            network.protocol.version = Empty,
            network.peer.address = Empty,
            network.peer.port = Empty,
            http.response.status_code = Empty,
            http.request.resend_count = Empty,
            error.type = Empty,
            poolscope.connection.id = Empty,
            poolscope.connection.reused = Empty,
            poolscope.time_in_queue_s = Empty,
        );
        if !span.is_disabled() {
            if other {
                span.record("http.request.method_original", method.as_str());
            }
            // The URL is rendered only for a span someone records.
            let clean = crate::inflight::strip_userinfo(uri);
            let url = redact.map_or_else(|| clean.to_string(), |f| f(&clean));
            span.record("url.full", url.as_str());
        }
        RequestSpan {
            span,
            level,
            wait: Mutex::new(None),
        }
    }

    /// The span, to enter while the request runs.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// The pool could not serve the request at once: its `wait_for_connection` starts (if it
    /// has not already, in this attempt).
    pub(crate) fn waiting(&self) {
        let mut wait = self.wait.lock().unwrap_or_else(|e| e.into_inner());
        if wait.is_none() {
            *wait = Some(span_at!(
                self.level,
                target: "poolscope::request",
                parent: &self.span,
                "wait_for_connection"
            ));
        }
    }

    pub(crate) fn got_conn(&self, info: &LeaseInfo, facts: &super::conn::ConnFacts) {
        // The wait (if any) ends here.
        drop(self.wait.lock().unwrap_or_else(|e| e.into_inner()).take());
        let s = &self.span;
        if let Some(setup) = facts.take_setup_span() {
            s.follows_from(&setup);
        }
        s.record(
            "network.protocol.version",
            crate::trace::protocol_version(facts.version),
        );
        if let Some(peer) = facts.remote_addr {
            s.record("network.peer.address", peer.ip().to_string().as_str());
            s.record("network.peer.port", i64::from(peer.port()));
        }
        s.record("poolscope.connection.id", id_value(info.conn_id));
        s.record("poolscope.connection.reused", info.reused);
        s.record("poolscope.time_in_queue_s", info.waited.as_secs_f64());
    }

    pub(crate) fn resent(&self, resends: u32) {
        self.span
            .record("http.request.resend_count", i64::from(resends));
    }

    pub(crate) fn status(&self, status: StatusCode) {
        let s = &self.span;
        s.record("http.response.status_code", i64::from(status.as_u16()));
        if status.is_client_error() || status.is_server_error() {
            s.record("error.type", status.as_str());
            s.record("otel.status_code", "ERROR");
        }
    }

    pub(crate) fn failed(&self, error_type: &str) {
        drop(self.wait.lock().unwrap_or_else(|e| e.into_inner()).take());
        self.span.record("error.type", error_type);
        self.span.record("otel.status_code", "ERROR");
    }
}

/// An id as an integer attribute (tracing-opentelemetry exports a `u64` as a string).
fn id_value(id: ConnId) -> i64 {
    i64::try_from(id.get()).unwrap_or(i64::MAX)
}

/// The `connection_setup` span of a dial of `key` (`Span::none()` when nobody listens).
pub(crate) fn setup_span(level: Level, key: &ConnectKey, id: ConnId) -> Span {
    span_at!(
        level,
        target: "poolscope::connection",
        parent: None,
        "connection_setup",
        server.address = key.host(),
        server.port = i64::from(key.port()),
        url.scheme = key.scheme(),
        poolscope.connection.id = id_value(id),
        network.peer.address = Empty,
        network.peer.port = Empty,
        network.protocol.version = Empty,
        error.type = Empty,
        otel.status_code = Empty,
        poolscope.dns_s = Empty,
        poolscope.connect_s = Empty,
        poolscope.tls_s = Empty,
    )
}

/// Records how a dial ended on its `connection_setup` span.
pub(crate) fn setup_done(span: &Span, facts: Option<&super::conn::ConnFacts>) {
    match facts {
        Some(f) => {
            span.record(
                "network.protocol.version",
                crate::trace::protocol_version(f.version),
            );
            if let Some(peer) = f.remote_addr {
                span.record("network.peer.address", peer.ip().to_string().as_str());
                span.record("network.peer.port", i64::from(peer.port()));
            }
        }
        None => {
            span.record("error.type", "connect");
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// Records a dial phase's duration on the current span, if it is a `connection_setup` (a
/// field it does not have is ignored), and says it as a DEBUG event in it.
pub(crate) fn dial_phase(field: &'static str, took: std::time::Duration, error: Option<&str>) {
    let current = Span::current();
    if current.is_disabled() {
        return;
    }
    current.record(field, took.as_secs_f64());
    match error {
        None => {
            tracing::debug!(target: "poolscope::connection", phase = field, took = ?took, "dial phase done")
        }
        Some(e) => {
            tracing::debug!(target: "poolscope::connection", phase = field, took = ?took, error = e, "dial phase failed")
        }
    }
}

/// Pool events as `tracing` events, target `poolscope::pool`: dials, closes, waits and limit
/// hits at the configured level (DEBUG by default), the idle lists' churn at TRACE. A `Stats`
/// sink that asks for events only while a subscriber is interested.
pub(crate) struct PoolEvents(pub(crate) Level);

impl PoolEvents {
    fn enabled(&self) -> bool {
        match self.0 {
            Level::ERROR => tracing::enabled!(target: "poolscope::pool", Level::ERROR),
            Level::WARN => tracing::enabled!(target: "poolscope::pool", Level::WARN),
            Level::INFO => tracing::enabled!(target: "poolscope::pool", Level::INFO),
            Level::DEBUG => tracing::enabled!(target: "poolscope::pool", Level::DEBUG),
            Level::TRACE => tracing::enabled!(target: "poolscope::pool", Level::TRACE),
        }
    }
}

impl EventSink for PoolEvents {
    fn active(&self) -> bool {
        self.enabled() || tracing::enabled!(target: "poolscope::pool", Level::TRACE)
    }

    fn on_pool_event(&self, event: &Event) {
        let level = self.0;
        match event {
            Event::ConnOpened(e) => event_at!(
                level,
                key = %e.key,
                conn_id = e.conn_id.get(),
                dial_time = ?e.dial_time,
                shared = e.shared,
                "connection opened"
            ),
            Event::ConnClosed(e) => event_at!(
                level,
                key = %e.key,
                conn_id = e.conn_id.get(),
                reason = e.reason.as_str(),
                lifetime = ?e.lifetime,
                requests = e.requests,
                "connection closed"
            ),
            Event::IdleConnWaitIn(e) => event_at!(
                level,
                key = %e.key,
                queue = "idle",
                waiters = e.waiters,
                "request waits for a connection"
            ),
            Event::IdleConnWaitOut(e) => event_at!(
                level,
                key = %e.key,
                queue = "idle",
                waiters = e.waiters,
                waited = ?e.waited,
                outcome = e.outcome.as_str(),
                "request stops waiting for a connection"
            ),
            Event::ConnsPerHostWaitIn(e) => event_at!(
                level,
                key = %e.key,
                queue = "conns_per_host",
                waiters = e.waiters,
                "request waits for permission to dial (max_conns_per_host)"
            ),
            Event::ConnsPerHostWaitOut(e) => event_at!(
                level,
                key = %e.key,
                queue = "conns_per_host",
                waiters = e.waiters,
                waited = ?e.waited,
                outcome = e.outcome.as_str(),
                "request stops waiting for permission to dial"
            ),
            Event::LimitHit(limit, _) => event_at!(level, limit = limit.as_str(), "pool limit hit"),
            Event::IdleConnIn(e) => tracing::trace!(
                target: "poolscope::pool",
                key = %e.key,
                conn_id = e.conn_id.get(),
                idle = e.idle,
                "connection idle"
            ),
            Event::IdleConnOut(e) => tracing::trace!(
                target: "poolscope::pool",
                key = %e.key,
                conn_id = e.conn_id.get(),
                idle = e.idle,
                idle_time = ?e.idle_time,
                reason = e.reason.as_str(),
                "connection leaves the idle list"
            ),
            Event::ConnReused(e) => tracing::trace!(
                target: "poolscope::pool",
                key = %e.key,
                conn_id = e.conn_id.get(),
                "connection handed to a waiting request"
            ),
        }
    }
}
