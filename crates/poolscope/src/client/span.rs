//! The request's `tracing` span (cargo feature `tracing`), with OpenTelemetry's HTTP client
//! span attributes, for `tracing-opentelemetry` to export as a CLIENT span.
//!
//! Made when the request is issued, as a child of the caller's current span; filled in at
//! the request's milestones by its [`RequestTelemetry`](super::telemetry::RequestTelemetry);
//! it ends when the response body ends, fails or is dropped, or when the request fails. With
//! no subscriber interested (level INFO, target `poolscope::request`), it is `Span::none()`
//! and every call on it returns at once.
//!
//! | attribute | when |
//! |---|---|
//! | `otel.name` (`GET`…, `HTTP` for other methods), `otel.kind` = `client`, `http.request.method`, `server.address`, `server.port`, `url.scheme`, `url.full` (no userinfo, through `redact_url`) | at creation |
//! | `network.protocol.version` (`1.1`, `2`), `network.peer.address`, `network.peer.port`, `poolscope.connection.id`, `poolscope.connection.reused`, `poolscope.time_in_queue_s` | when it gets a connection |
//! | `http.request.resend_count` | when it is sent again |
//! | `http.response.status_code`; for 4xx and 5xx `error.type` (the code) and `otel.status_code` = `ERROR` | at the response head |
//! | `error.type` (`connect`, `timeout`, `canceled`…), `otel.status_code` = `ERROR` | when it fails or is canceled |

use http::{Method, StatusCode, Uri, Version};
use tracing::field::Empty;

use crate::pool::{ConnectKey, LeaseInfo};

/// A request's span (`Span::none()` when nobody listens).
pub(crate) struct RequestSpan(tracing::Span);

impl RequestSpan {
    pub(crate) fn start(
        method: &Method,
        methods: &crate::methods::KnownMethods,
        key: &ConnectKey,
        uri: &Uri,
        redact: Option<&crate::inflight::Redact>,
    ) -> RequestSpan {
        let label = methods.label(method);
        let other = label == crate::methods::OTHER;
        let name = if other { "HTTP" } else { label };
        let span = tracing::info_span!(
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
        RequestSpan(span)
    }

    /// The span, to enter while the request runs.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.0
    }

    pub(crate) fn got_conn(&self, info: &LeaseInfo, facts: &super::conn::ConnFacts) {
        let s = &self.0;
        if s.is_disabled() {
            return;
        }
        s.record(
            "network.protocol.version",
            match facts.version {
                Version::HTTP_2 => "2",
                Version::HTTP_10 => "1.0",
                _ => "1.1",
            },
        );
        if let Some(peer) = facts.remote_addr {
            s.record("network.peer.address", peer.ip().to_string().as_str());
            s.record("network.peer.port", i64::from(peer.port()));
        }
        // An integer attribute (tracing-opentelemetry exports a `u64` as a string).
        let id = i64::try_from(info.conn_id.get()).unwrap_or(i64::MAX);
        s.record("poolscope.connection.id", id);
        s.record("poolscope.connection.reused", info.reused);
        s.record("poolscope.time_in_queue_s", info.waited.as_secs_f64());
    }

    pub(crate) fn resent(&self, resends: u32) {
        self.0
            .record("http.request.resend_count", i64::from(resends));
    }

    pub(crate) fn status(&self, status: StatusCode) {
        let s = &self.0;
        s.record("http.response.status_code", i64::from(status.as_u16()));
        if status.is_client_error() || status.is_server_error() {
            s.record("error.type", status.as_str());
            s.record("otel.status_code", "ERROR");
        }
    }

    pub(crate) fn failed(&self, error_type: &str) {
        self.0.record("error.type", error_type);
        self.0.record("otel.status_code", "ERROR");
    }
}
