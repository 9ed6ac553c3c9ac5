//! `TelemetryBuilder`: poolscope's own telemetry settings, a mutable view of a [`Builder`]
//! (`builder.telemetry()`), as hyper-util's `server::conn::auto::Builder::http1()` is of its
//! HTTP/1 settings.

use std::fmt;
use std::time::Duration;

use http::Uri;

use super::Builder;
use crate::connect::HttpConnector;
use crate::redact::Redact;
use crate::stats::Stats;
use crate::trace::ClientTrace;
use crate::Client;

/// The telemetry settings a [`Builder`] keeps until it builds a client.
#[derive(Clone)]
pub(super) struct TelemetryConfig {
    pub(super) stats: Stats,
    pub(super) trace: ClientTrace,
    pub(super) track_in_flight: bool,
    pub(super) capture_stacks: bool,
    pub(super) snapshot_tcp_info: bool,
    pub(super) redact_url: Option<Redact>,
    pub(super) event_history: usize,
    pub(super) known_methods: crate::methods::KnownMethods,
    pub(super) metrics: bool,
    pub(super) metrics_idle_timeout: Duration,
    pub(super) levels: crate::spans::Levels,
    pub(super) inject: Option<crate::spans::InjectContext>,
}

impl Default for TelemetryConfig {
    fn default() -> TelemetryConfig {
        TelemetryConfig {
            stats: Stats::default(),
            trace: ClientTrace::default(),
            track_in_flight: true,
            capture_stacks: false,
            snapshot_tcp_info: false,
            redact_url: None,
            event_history: 0,
            known_methods: Default::default(),
            metrics: false,
            metrics_idle_timeout: crate::metrics::DEFAULT_IDLE_TIMEOUT,
            levels: Default::default(),
            inject: None,
        }
    }
}

impl fmt::Debug for TelemetryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryConfig")
            .field("stats", &!self.stats.is_empty())
            .field("track_in_flight", &self.track_in_flight)
            .field("capture_stacks", &self.capture_stacks)
            .field("snapshot_tcp_info", &self.snapshot_tcp_info)
            .field("event_history", &self.event_history)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

/// A mutable view of a [`Builder`]'s telemetry settings, from
/// [`Builder::telemetry`]. Its setters return the view, so they chain; `build` and
/// `build_http` finish the client as the [`Builder`]'s do.
pub struct TelemetryBuilder<'a> {
    pub(super) inner: &'a mut Builder,
}

impl TelemetryBuilder<'_> {
    /// Transport-level hooks (see [`Stats`](crate::Stats)).
    pub fn stats(&mut self, stats: Stats) -> &mut Self {
        self.inner.telemetry.stats = stats;
        self
    }

    /// Per-request hooks run for every request (see [`ClientTrace`](crate::ClientTrace)).
    pub fn trace(&mut self, trace: ClientTrace) -> &mut Self {
        self.inner.telemetry.trace = trace;
        self
    }

    /// Keep a registry of the requests in flight, for [`Client::in_flight`](crate::Client::in_flight). Default: `true`;
    /// off, requests pay nothing for it.
    pub fn track_in_flight(&mut self, enabled: bool) -> &mut Self {
        self.inner.telemetry.track_in_flight = enabled;
        self
    }

    /// Capture the stack that started each request, shown by [`Client::in_flight`](crate::Client::in_flight). Captured
    /// unresolved (a few microseconds) and resolved only when a report is rendered. Default:
    /// `false`.
    pub fn capture_stacks(&mut self, enabled: bool) -> &mut Self {
        self.inner.telemetry.capture_stacks = enabled;
        self
    }

    /// Rewrites URLs for in-flight reports, the event history and the request span's
    /// `url.full` (e.g. ids to `[oid]`). The function gets the URI without userinfo, when a
    /// report is rendered, an event is read or a recorded span is made.
    /// Default: the URI without userinfo.
    pub fn redact_url<F>(&mut self, f: F) -> &mut Self
    where
        F: Fn(&Uri) -> String + Send + Sync + 'static,
    {
        self.inner.telemetry.redact_url = Some(std::sync::Arc::new(f));
        self
    }

    /// Read the kernel's `TCP_INFO` (round-trip time, retransmissions, congestion window,
    /// bytes acknowledged, TCP state) of each connection when a pool snapshot is taken:
    /// [`Client::pool_snapshot`](crate::Client::pool_snapshot), the snapshots at limit hits, `/debug/pool`. Default:
    /// `false`. Linux; connections made by poolscope's connectors, not through a proxy.
    ///
    /// Each connection then keeps a duplicate of its socket's descriptor (closed with the
    /// connection), so the process holds two descriptors per connection, and each snapshot
    /// makes one `getsockopt` per connection (about a microsecond each; see
    /// `docs/benchmarks.md`).
    pub fn snapshot_tcp_info(&mut self, enabled: bool) -> &mut Self {
        self.inner.telemetry.snapshot_tcp_info = enabled;
        self
    }

    /// Keep the last `n` pool and request events for [`Client::recent_events`](crate::Client::recent_events). Default: 0
    /// (none kept).
    pub fn event_history(&mut self, n: usize) -> &mut Self {
        self.inner.telemetry.event_history = n;
        self
    }

    /// Report to the `metrics` facade (whatever recorder the application installed): request
    /// durations, time in queue, open connections, limit hits… (see `docs/metrics.md`).
    /// Default: `false`. Needs the `metrics` feature (on by default): without
    /// it, this setting has no effect.
    ///
    /// Building a client with metrics on also calls `poolscope::metrics::describe`, so the
    /// recorder installed then has every metric's unit and description.
    pub fn metrics(&mut self, enabled: bool) -> &mut Self {
        self.inner.telemetry.metrics = enabled;
        self
    }

    /// How long a host may have no connection and no request before its metric handles are
    /// dropped (they are made again if it comes back; the recorder keeps its series). Bounds
    /// the memory of a client that talks to many hosts. Default: 5 minutes. It has
    /// no effect without the `metrics` feature.
    pub fn metrics_idle_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.inner.telemetry.metrics_idle_timeout = timeout;
        self
    }

    /// The level of the request spans (and their `wait_for_connection` and the dials'
    /// `connection_setup` spans). Default: INFO. A `tracing::Level` converts. No effect
    /// without the `tracing` feature.
    pub fn request_span_level(&mut self, level: impl Into<crate::spans::Level>) -> &mut Self {
        self.inner.telemetry.levels.spans = level.into();
        self
    }

    /// The level of the pool's `tracing` events (target `poolscope::pool`): dials, closes,
    /// waits and limit hits. Connections entering and leaving the idle lists are always at
    /// TRACE. Default: DEBUG. A `tracing::Level` converts. No effect without the `tracing`
    /// feature.
    pub fn pool_event_level(&mut self, level: impl Into<crate::spans::Level>) -> &mut Self {
        self.inner.telemetry.levels.pool = level.into();
        self
    }

    /// Calls `f` with each request's span and its headers when the request is issued, before
    /// it is sent (and so for every retry of it), for trace-context propagation: with
    /// `tracing-opentelemetry`, inject the span's context as W3C `traceparent` so the server's
    /// span is the child of this CLIENT span (see `docs/tracing.md`). Not called when the
    /// span is disabled. Needs the `tracing` feature (its argument is a `tracing::Span`): the
    /// one builder method that a feature removes.
    #[cfg(feature = "tracing")]
    pub fn inject_trace_context<F>(&mut self, f: F) -> &mut Self
    where
        F: Fn(&tracing::Span, &mut http::HeaderMap) + Send + Sync + 'static,
    {
        self.inner.telemetry.inject = Some(std::sync::Arc::new(f));
        self
    }

    /// The HTTP methods metrics and spans name as they are; any other is `_OTHER` (and a
    /// span's name `HTTP`), so label values stay bounded. Default: OpenTelemetry's list,
    /// `GET`, `HEAD`, `POST`, `PUT`, `DELETE`, `CONNECT`, `OPTIONS`, `TRACE`, `PATCH`; this
    /// replaces it, as `OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS` does elsewhere.
    pub fn known_methods<I>(&mut self, methods: I) -> &mut Self
    where
        I: IntoIterator<Item = http::Method>,
    {
        self.inner.telemetry.known_methods = crate::methods::KnownMethods::new(methods);
        self
    }

    /// Builds the client, as [`Builder::build_http`].
    pub fn build_http<B>(&self) -> Client<HttpConnector, B>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
    {
        self.inner.build_http()
    }

    /// Builds the client with `connector`, as [`Builder::build`].
    pub fn build<C, B>(&self, connector: C) -> Client<C, B>
    where
        C: Clone,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
    {
        self.inner.build(connector)
    }
}

impl fmt::Debug for TelemetryBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.telemetry.fmt(f)
    }
}
