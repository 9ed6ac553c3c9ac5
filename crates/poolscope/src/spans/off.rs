//! No-op twins of the spans, without the `tracing` feature: the same calls, compiled away.
//! [`RequestSpan`] and [`SetupSpan`] are never made (their constructors return `None`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, StatusCode, Uri, Version};

use crate::pool::{ConnId, ConnectKey, LeaseInfo};
use crate::stats::EventSink;

/// Never made: `TelemetryBuilder::inject_trace_context` needs the feature.
#[derive(Clone)]
pub(crate) enum InjectContext {}

/// A request's span: never made without the feature (so an `Option` of it takes no room).
pub(crate) enum RequestSpan {}

impl RequestSpan {
    #[inline]
    pub(crate) fn start(
        _level: super::Level,
        _method: &Method,
        _methods: &crate::methods::KnownMethods,
        _key: &ConnectKey,
        _uri: &Uri,
        _redact: Option<&crate::redact::Redact>,
    ) -> Option<RequestSpan> {
        None
    }

    #[inline]
    pub(crate) fn inject(&self, _inject: &InjectContext, _headers: &mut http::HeaderMap) {
        match *self {}
    }

    #[inline]
    pub(crate) fn handle(&self) -> SpanHandle {
        match *self {}
    }

    #[inline]
    pub(crate) fn waiting(&self) {
        match *self {}
    }

    #[inline]
    pub(crate) fn got_conn(
        &self,
        _info: &LeaseInfo,
        _version: Version,
        _peer: Option<SocketAddr>,
        _setup: Option<SetupSpan>,
    ) {
        match *self {}
    }

    #[inline]
    pub(crate) fn resent(&self, _resends: u32) {
        match *self {}
    }

    #[inline]
    pub(crate) fn status(&self, _status: StatusCode) {
        match *self {}
    }

    #[inline]
    pub(crate) fn failed(&self, _error_type: &str) {
        match *self {}
    }
}

/// A dial's span: never made without the feature.
#[derive(Clone)]
pub(crate) struct SetupSpan;

impl SetupSpan {
    #[inline]
    pub(crate) fn start(_level: super::Level, _key: &ConnectKey, _id: ConnId) -> Option<SetupSpan> {
        None
    }

    #[inline]
    pub(crate) fn instrument<F: Future>(&self, fut: F) -> F {
        fut
    }

    #[inline]
    pub(crate) fn connected(&self, _version: Version, _peer: Option<SocketAddr>) {}

    #[inline]
    pub(crate) fn failed(&self) {}
}

/// A dial phase's duration: nowhere to record it.
#[inline]
pub(crate) fn dial_phase(
    _field: &'static str,
    _took: std::time::Duration,
    _error: Option<&dyn std::fmt::Display>,
) {
}

/// A span to run futures in: nothing.
pub(crate) struct SpanHandle;

#[inline]
pub(crate) fn h2_connection_span(
    _local: Option<SocketAddr>,
    _remote: Option<SocketAddr>,
) -> SpanHandle {
    SpanHandle
}

impl SpanHandle {
    #[inline]
    pub(crate) fn instrument<F: Future>(&self, fut: F) -> F {
        fut
    }

    #[inline]
    pub(crate) fn in_scope<T>(&self, f: impl FnOnce() -> T) -> T {
        f()
    }
}

/// No pool events without the feature.
#[inline]
pub(crate) fn pool_events(_level: super::Level) -> Option<Arc<dyn EventSink>> {
    None
}
