//! The spans and pool events, with the `tracing` feature.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::sync::Mutex;

use http::{Method, StatusCode, Uri, Version};
use tracing::field::Empty;
use tracing::{Instrument, Level, Span};

use crate::pool::{ConnId, ConnectKey, LeaseInfo};
use crate::stats::{Event, EventSink};

impl super::Level {
    fn tracing(self) -> Level {
        match self {
            super::Level::Error => Level::ERROR,
            super::Level::Warn => Level::WARN,
            super::Level::Info => Level::INFO,
            super::Level::Debug => Level::DEBUG,
            super::Level::Trace => Level::TRACE,
        }
    }
}

/// [`TelemetryBuilder::inject_trace_context`](crate::TelemetryBuilder::inject_trace_context)'s function.
pub(crate) type InjectContext = Arc<dyn Fn(&Span, &mut http::HeaderMap) + Send + Sync>;

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

/// A request's span (`Span::none()` when nobody listens), and its wait while it waits.
/// Boxed: a request that nobody records carries only a `None` of it.
pub(crate) struct RequestSpan(Box<Inner>);

pub(crate) struct Inner {
    span: Span,
    level: Level,
    wait: Mutex<Option<Span>>,
}

impl std::ops::Deref for RequestSpan {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl RequestSpan {
    /// The request's span, or `None` when nobody records it (a disabled span would only
    /// make every move of the request's future larger).
    pub(crate) fn start(
        level: super::Level,
        method: &Method,
        methods: &crate::methods::KnownMethods,
        key: &ConnectKey,
        uri: &Uri,
        redact: Option<&crate::redact::Redact>,
    ) -> Option<RequestSpan> {
        let level = level.tracing();
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
        if span.is_disabled() {
            return None;
        }
        if other {
            span.record("http.request.method_original", method.as_str());
        }
        // The URL is rendered only for a span someone records.
        let clean = crate::redact::strip_userinfo(uri);
        let url = redact.map_or_else(|| clean.to_string(), |f| f(&clean));
        span.record("url.full", url.as_str());
        Some(RequestSpan(Box::new(Inner {
            span,
            level,
            wait: Mutex::new(None),
        })))
    }

    /// Lets `inject` write the span's context into the request's headers.
    pub(crate) fn inject(&self, inject: &InjectContext, headers: &mut http::HeaderMap) {
        inject(&self.span, headers);
    }

    /// The span, to run the request's future in.
    pub(crate) fn handle(&self) -> SpanHandle {
        SpanHandle(self.span.clone())
    }

    /// The pool could not serve the request at once: its `wait_for_connection` starts (if it
    /// has not already, in this attempt).
    pub(crate) fn waiting(&self) {
        let mut wait = self.wait.lock();
        if wait.is_none() {
            *wait = Some(span_at!(
                self.level,
                target: "poolscope::request",
                parent: &self.span,
                "wait_for_connection"
            ));
        }
    }

    /// The request got a connection (of `version`, to `peer`); `setup` is the dial's span if
    /// this request is the first to get the connection.
    pub(crate) fn got_conn(
        &self,
        info: &LeaseInfo,
        version: Version,
        peer: Option<SocketAddr>,
        setup: Option<SetupSpan>,
    ) {
        // The wait (if any) ends here.
        drop(self.wait.lock().take());
        let s = &self.span;
        if let Some(setup) = setup {
            s.follows_from(&setup.0);
        }
        s.record("network.protocol.version", super::protocol_version(version));
        if let Some(peer) = peer {
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
        drop(self.wait.lock().take());
        self.span.record("error.type", error_type);
        self.span.record("otel.status_code", "ERROR");
    }
}

/// An id as an integer attribute (tracing-opentelemetry exports a `u64` as a string).
fn id_value(id: ConnId) -> i64 {
    i64::try_from(id.get()).unwrap_or(i64::MAX)
}

/// A dial's `connection_setup` span.
#[derive(Clone)]
pub(crate) struct SetupSpan(Span);

impl SetupSpan {
    /// The span of a dial of `key`, or `None` when nobody records it.
    pub(crate) fn start(level: super::Level, key: &ConnectKey, id: ConnId) -> Option<SetupSpan> {
        let span = span_at!(
            level.tracing(),
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
            poolscope.proxy_s = Empty,
            poolscope.tls_s = Empty,
        );
        (!span.is_disabled()).then_some(SetupSpan(span))
    }

    /// `fut` (the dial), run in the span.
    pub(crate) fn instrument<F: Future>(&self, fut: F) -> impl Future<Output = F::Output> {
        fut.instrument(self.0.clone())
    }

    /// The dial made a connection of `version` to `peer`.
    pub(crate) fn connected(&self, version: Version, peer: Option<SocketAddr>) {
        let span = &self.0;
        span.record("network.protocol.version", super::protocol_version(version));
        if let Some(peer) = peer {
            span.record("network.peer.address", peer.ip().to_string().as_str());
            span.record("network.peer.port", i64::from(peer.port()));
        }
    }

    /// The dial failed.
    pub(crate) fn failed(&self) {
        self.0.record("error.type", "connect");
        self.0.record("otel.status_code", "ERROR");
    }
}

/// Records a dial phase's duration on the current span, if it is a `connection_setup` (a
/// field it does not have is ignored), and says it as a DEBUG event in it.
pub(crate) fn dial_phase(
    field: &'static str,
    took: std::time::Duration,
    error: Option<&dyn std::fmt::Display>,
) {
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
            tracing::debug!(target: "poolscope::connection", phase = field, took = ?took, error = %e, "dial phase failed")
        }
    }
}

/// A span to run futures in: an HTTP/2 connection's (DEBUG, `h2_connection`, for h2's own
/// events), or a request's.
pub(crate) struct SpanHandle(Span);

/// The span of an HTTP/2 connection from `local` to `remote`.
pub(crate) fn h2_connection_span(
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
) -> SpanHandle {
    SpanHandle(tracing::debug_span!("h2_connection", local = ?local, remote = ?remote))
}

impl SpanHandle {
    /// `fut`, run in the span.
    pub(crate) fn instrument<F: Future>(&self, fut: F) -> impl Future<Output = F::Output> {
        fut.instrument(self.0.clone())
    }

    /// Runs `f` in the span.
    pub(crate) fn in_scope<T>(&self, f: impl FnOnce() -> T) -> T {
        self.0.in_scope(f)
    }
}

/// The pool's events as `tracing` events at `level`: a [`PoolEvents`] sink.
pub(crate) fn pool_events(level: super::Level) -> Option<Arc<dyn EventSink>> {
    Some(Arc::new(PoolEvents(level.tracing())))
}

/// Pool events as `tracing` events, target `poolscope::pool`: dials, closes, waits and limit
/// hits at the configured level (DEBUG by default), the idle lists' churn at TRACE. A `Stats`
/// sink that asks for events only while a subscriber is interested.
struct PoolEvents(Level);

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
