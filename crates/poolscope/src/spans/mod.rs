//! `tracing` spans (cargo feature `tracing`), with OpenTelemetry's HTTP client span
//! attributes, for `tracing-opentelemetry` to export.
//!
//! - **`HTTP` / `{method}`**: one span per request (target `poolscope::request`, kind CLIENT,
//!   at [`TelemetryBuilder::request_span_level`](crate::TelemetryBuilder::request_span_level), INFO by default),
//!   a child of the caller's current span. Made when the request is issued, filled in at its
//!   milestones by its telemetry, and ended
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
//! `poolscope.dns_s`, `poolscope.connect_s`, `poolscope.proxy_s` (a `CONNECT` or SOCKS exchange),
//! `poolscope.tls_s` when the connector is
//! poolscope's own.

//! The spans need the cargo feature `tracing`; without it, the builder's span settings are
//! accepted and have no effect, and poolscope does not depend on `tracing`.

#[cfg(feature = "tracing")]
mod on;
#[cfg(feature = "tracing")]
pub(crate) use self::on::{
    dial_phase, h2_connection_span, pool_events, InjectContext, RequestSpan, SetupSpan, SpanHandle,
};

#[cfg(not(feature = "tracing"))]
mod off;
#[cfg(not(feature = "tracing"))]
pub(crate) use self::off::{
    dial_phase, h2_connection_span, pool_events, InjectContext, RequestSpan, SetupSpan, SpanHandle,
};

/// The level of poolscope's spans or events
/// ([`TelemetryBuilder::request_span_level`](crate::TelemetryBuilder::request_span_level),
/// [`TelemetryBuilder::pool_event_level`](crate::TelemetryBuilder::pool_event_level)). With the `tracing`
/// feature, a `tracing::Level` converts into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// `ERROR`.
    Error,
    /// `WARN`.
    Warn,
    /// `INFO`.
    Info,
    /// `DEBUG`.
    Debug,
    /// `TRACE`.
    Trace,
}

#[cfg(feature = "tracing")]
impl From<tracing::Level> for Level {
    fn from(level: tracing::Level) -> Level {
        match level {
            tracing::Level::ERROR => Level::Error,
            tracing::Level::WARN => Level::Warn,
            tracing::Level::INFO => Level::Info,
            tracing::Level::DEBUG => Level::Debug,
            _ => Level::Trace,
        }
    }
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
            spans: Level::Info,
            pool: Level::Debug,
        }
    }
}

/// `network.protocol.version` as OpenTelemetry writes it (`1.1`, `2`…).
#[cfg_attr(not(any(feature = "metrics", feature = "tracing")), allow(dead_code))]
pub(crate) fn protocol_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}
