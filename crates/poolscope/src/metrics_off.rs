//! No-op twins of the client's metrics, without the `metrics` feature: the same calls,
//! compiled away. [`Metrics::build`] returns `None`, so nothing here is ever made.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode, Version};

use crate::methods::KnownMethods;
use crate::pool::{ConnectKey, LeaseInfo};
use crate::stats::EventSink;
use crate::trace::{ClientTrace, RetryReason};

/// How long a host may be quiet before its handles are dropped, by default.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// A client's metrics: never made without the feature.
pub(crate) enum Metrics {}

impl Metrics {
    #[inline]
    pub(crate) fn build(
        _enabled: bool,
        _methods: &KnownMethods,
        _idle_timeout: Duration,
    ) -> Option<Arc<Metrics>> {
        None
    }
}

#[inline]
pub(crate) fn pool_sink(m: &Arc<Metrics>) -> Arc<dyn EventSink> {
    match **m {}
}

#[inline]
pub(crate) fn dial_trace(m: &Arc<Metrics>) -> ClientTrace {
    match **m {}
}

/// A request's metrics: never made without the feature.
pub(crate) struct RequestMetrics;

impl RequestMetrics {
    #[inline]
    pub(crate) fn start(
        m: &Arc<Metrics>,
        _method: &Method,
        _key: &ConnectKey,
        _started: Instant,
    ) -> RequestMetrics {
        match **m {}
    }

    #[inline]
    pub(crate) fn got_conn(&self, _info: &LeaseInfo, _version: Version) {}

    #[inline]
    pub(crate) fn retry(&self, _reason: RetryReason) {}

    #[inline]
    pub(crate) fn finish_at(
        self,
        _outcome: Result<StatusCode, &'static str>,
        _end: Instant,
        _elapsed: Duration,
    ) {
    }
}
