//! No-op twins of the spans, without the `tracing` feature: the same calls, compiled away.
//! [`RequestSpan`] and [`SetupSpan`] are never made (their constructors return `None`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, StatusCode, Uri, Version};

use crate::pool::{ConnId, ConnectKey, LeaseInfo};
use crate::stats::EventSink;

/// Never made: `Builder::inject_trace_context` needs the feature.
#[derive(Clone)]
pub(crate) enum InjectContext {}

/// A request's span: never made without the feature.
pub(crate) struct RequestSpan;

impl RequestSpan {
    pub(crate) fn start(
        _level: super::Level,
        _method: &Method,
        _methods: &crate::methods::KnownMethods,
        _key: &ConnectKey,
        _uri: &Uri,
        _redact: Option<&crate::redact::Redact>,
    ) -> Option<Box<RequestSpan>> {
        None
    }

    pub(crate) fn inject(&self, inject: &InjectContext, _headers: &mut http::HeaderMap) {
        match *inject {}
    }

    pub(crate) fn handle(&self) -> SpanHandle {
        SpanHandle
    }

    pub(crate) fn waiting(&self) {}

    pub(crate) fn got_conn(
        &self,
        _info: &LeaseInfo,
        _version: Version,
        _peer: Option<SocketAddr>,
        _setup: Option<SetupSpan>,
    ) {
    }

    pub(crate) fn resent(&self, _resends: u32) {}

    pub(crate) fn status(&self, _status: StatusCode) {}

    pub(crate) fn failed(&self, _error_type: &str) {}
}

/// A dial's span: never made without the feature.
#[derive(Clone)]
pub(crate) struct SetupSpan;

impl SetupSpan {
    pub(crate) fn start(_level: super::Level, _key: &ConnectKey, _id: ConnId) -> Option<SetupSpan> {
        None
    }

    pub(crate) fn instrument<F: Future>(&self, fut: F) -> F {
        fut
    }

    pub(crate) fn connected(&self, _version: Version, _peer: Option<SocketAddr>) {}

    pub(crate) fn failed(&self) {}
}

/// A dial phase's duration: nowhere to record it.
pub(crate) fn dial_phase(
    _field: &'static str,
    _took: std::time::Duration,
    _error: Option<&dyn std::fmt::Display>,
) {
}

/// A span to run futures in: nothing.
pub(crate) struct SpanHandle;

pub(crate) fn h2_connection_span(
    _local: Option<SocketAddr>,
    _remote: Option<SocketAddr>,
) -> SpanHandle {
    SpanHandle
}

impl SpanHandle {
    pub(crate) fn instrument<F: Future>(&self, fut: F) -> F {
        fut
    }

    pub(crate) fn in_scope<T>(&self, f: impl FnOnce() -> T) -> T {
        f()
    }
}

/// No pool events without the feature.
pub(crate) fn pool_events(_level: super::Level) -> Option<Arc<dyn EventSink>> {
    None
}
