//! One request's telemetry: every sink that watches a request, behind one method per
//! milestone.
//!
//! The sinks are the in-flight entry, the request's [`Tracer`] (the client's and the
//! request's own `ClientTrace`, and the metrics' dial hooks), the event history and the
//! request metrics. Each milestone reads the clock at most once, and only when some sink is
//! on; with none on, a [`RequestTelemetry`] is a few `None`s and every method returns at once.
//! The pool's own events reach the same history and metrics through the pool's one dispatch
//! (`Stats::dispatch`), not through here.
//!
//! Milestones, in order: [`start`](RequestTelemetry::start), then per attempt
//! [`get_conn`](RequestTelemetry::get_conn), [`connecting`](RequestTelemetry::connecting)
//! (when it dials), [`got_conn`](RequestTelemetry::got_conn),
//! [`first_byte`](RequestTelemetry::first_byte) (unless the connection's IO stamps it), and
//! [`retry`](RequestTelemetry::retry) between attempts; at the end
//! [`failed`](RequestTelemetry::failed), or [`body_done`](RequestTelemetry::body_done) once
//! the response body ends. Dropped before either (the response future was dropped), it
//! reports the request as canceled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, StatusCode};

use super::error::Error;
use super::probe::RequestProbe;
use super::Shared;
use crate::history::{History, RequestEvent};
use crate::inflight::Registration;
use crate::metrics::RequestMetrics;
use crate::pool::{ConnId, ConnectKey, LeaseInfo, Returned};
use crate::spans::RequestSpan;
use crate::trace::{
    BodyDoneInfo, ClientTrace, FirstByteInfo, GetConnInfo, GotConnInfo, Mark, PutIdleConnInfo,
    RequestDoneInfo, RetryInfo, RetryReason, Tracer,
};

/// What the history and tracer say of a request whose future was dropped.
const CANCELED: &str = "canceled: the response future was dropped";

/// One request's sinks. See the module's documentation.
pub(crate) struct RequestTelemetry {
    id: u64,
    /// When the request started: read once, if any sink is on.
    start: Option<Instant>,
    registration: Option<Registration>,
    /// The in-flight entry and the tracer, shared with the bodies.
    probe: RequestProbe,
    /// `Some` until the request's end is recorded.
    history: Option<Arc<History>>,
    metrics: Option<RequestMetrics>,
    /// The request's `tracing` span; ends when this is dropped (the request's end).
    /// Boxed, and only when someone records it: a disabled span would only make every move
    /// of the request's future larger.
    span: Option<RequestSpan>,
    /// The end is reported (or handed to a [`TraceEnd`]): nothing more on drop.
    ended: bool,
}

impl RequestTelemetry {
    /// The request is issued: registers it in flight (with `caller`, where it was issued, and
    /// the `stack` `Client::request` captured), and starts its tracer and metrics if it has a
    /// pool key (`None`: its URI has none, and it is about to fail).
    pub(crate) fn start<B>(
        shared: &Shared<B>,
        id: u64,
        req: &Request<B>,
        key: Option<&ConnectKey>,
        caller: &'static std::panic::Location<'static>,
        stack: Option<crate::inflight::RawStack>,
    ) -> RequestTelemetry {
        let traces = [
            Some(&shared.trace),
            req.extensions().get::<ClientTrace>(),
            shared.metrics_trace.as_ref(),
        ];
        // The metrics' trace hears only dials: it alone makes no tracer per request (see
        // `dial_tracer`), so a client with metrics and no trace hooks arms no connection IO
        // and computes no timings.
        let traced = key.is_some() && traces[..2].iter().flatten().any(|t| !t.is_empty());
        let metered = key.is_some() && shared.metrics.is_some();
        let start = (traced || metered || shared.inflight.is_some() || shared.history.is_some())
            .then(Instant::now);
        let (registration, entry) = match (&shared.inflight, start) {
            (Some(r), Some(at)) => {
                let (registration, entry) =
                    r.register_started(id, req.method(), req.uri(), caller, at, stack);
                (Some(registration), Some(entry))
            }
            _ => (None, None),
        };
        if let (Some(h), Some(at)) = (&shared.history, start) {
            h.request(
                at,
                RequestEvent::Started {
                    id,
                    method: req.method().clone(),
                    uri: req.uri().clone(),
                },
            );
        }
        let tracer = match (key, start) {
            (Some(key), Some(at)) if traced => Tracer::new(id, key, &traces, at),
            _ => None,
        };
        let metrics = match (&shared.metrics, key, start) {
            (Some(m), Some(key), Some(at)) => Some(RequestMetrics::start(m, req.method(), key, at)),
            _ => None,
        };
        let span = key.and_then(|k| {
            RequestSpan::start(
                shared.levels.spans,
                req.method(),
                &shared.methods,
                k,
                req.uri(),
                shared.redact.as_ref(),
            )
        });
        RequestTelemetry {
            id,
            start,
            registration,
            probe: RequestProbe::new(entry, tracer),
            history: shared.history.clone(),
            metrics,
            span,
            ended: false,
        }
    }

    /// The in-flight entry and the tracer, for the bodies and the connection's IO.
    pub(crate) fn probe(&self) -> &RequestProbe {
        &self.probe
    }

    /// The request's span, for its future to run in.
    pub(crate) fn span(&self) -> Option<&RequestSpan> {
        self.span.as_ref()
    }

    /// The tracer, for the dial task and the connection's IO events.
    pub(crate) fn tracer(&self) -> Option<&Arc<Tracer>> {
        self.probe.tracer()
    }

    /// The tracer for a dial this request starts: its own (which carries the metrics' dial
    /// hooks too), or, when it has none, one for the metrics' dial hooks alone. Made here,
    /// when a dial starts, so that requests served by pooled connections never make one.
    pub(crate) fn dial_tracer<B>(
        &self,
        shared: &Shared<B>,
        key: &ConnectKey,
    ) -> Option<Arc<Tracer>> {
        match self.tracer() {
            Some(t) => Some(t.clone()),
            None => Tracer::new(
                self.id,
                key,
                &[shared.metrics_trace.as_ref()],
                Instant::now(),
            ),
        }
    }

    /// An attempt asks the pool for a connection (`attempt` counts from 1).
    pub(crate) fn get_conn(&self, key: &ConnectKey, attempt: u32) {
        self.probe.waiting_for_connection();
        if let Some(t) = self.tracer() {
            if attempt > 1 {
                t.clear_attempt();
            }
            t.get_conn(|| GetConnInfo {
                request_id: t.request_id,
                key: key.clone(),
            });
        }
    }

    /// The pool could not serve the request at once: it waits (its span says so).
    pub(crate) fn waiting(&self) {
        if let Some(s) = &self.span {
            s.waiting();
        }
    }

    /// Whether a sink wants to hear of waits ([`waiting`](Self::waiting)).
    pub(crate) fn hears_waits(&self) -> bool {
        self.span.is_some()
    }

    /// The pool let this request dial.
    pub(crate) fn connecting(&self) {
        self.probe.connecting();
    }

    /// The attempt got a connection: `info` from the pool, `facts` from the dial.
    pub(crate) fn got_conn(&self, info: &LeaseInfo, facts: &super::conn::ConnFacts) {
        if let Some(m) = &self.metrics {
            m.got_conn(info, facts.version);
        }
        self.probe.sending_on(info.conn_id);
        if let Some(s) = &self.span {
            s.got_conn(
                info,
                facts.version,
                facts.remote_addr,
                facts.take_setup_span(),
            );
        }
        if self.history.is_none() && self.tracer().is_none() {
            return;
        }
        let now = Instant::now();
        if let Some(h) = &self.history {
            h.request(
                now,
                RequestEvent::GotConn {
                    id: self.id,
                    conn_id: info.conn_id,
                    reused: info.reused,
                    waited: info.waited,
                },
            );
        }
        if let Some(t) = self.tracer() {
            let at = now.saturating_duration_since(t.start);
            t.mark(Mark::GotConn, at);
            t.mark(Mark::Queued, info.waited);
            t.got_conn(|| GotConnInfo {
                request_id: t.request_id,
                conn_id: info.conn_id,
                reused: info.reused,
                was_idle: info.was_idle,
                idle_time: info.idle_time,
                queued_for: info.waited,
                version: facts.version,
                remote_addr: facts.remote_addr,
                local_addr: facts.local_addr,
                tls: facts.tls.clone(),
            });
        }
    }

    /// The response head arrived, on a connection whose IO does not stamp its first byte.
    pub(crate) fn first_byte(&self) {
        if let Some(t) = self.tracer() {
            let at = t.elapsed();
            t.mark(Mark::FirstByte, at);
            t.got_first_response_byte(|| FirstByteInfo {
                request_id: t.request_id,
                elapsed: at,
            });
        }
    }

    /// The request is sent again: `attempt` is the one about to start.
    pub(crate) fn retry(&self, attempt: u32, reason: RetryReason, conn_id: ConnId, error: &Error) {
        if let Some(m) = &self.metrics {
            m.retry(reason);
        }
        if let Some(s) = &self.span {
            s.resent(attempt.saturating_sub(1));
        }
        if self.history.is_none() && self.tracer().is_none() {
            return;
        }
        if let Some(h) = &self.history {
            h.request(
                Instant::now(),
                RequestEvent::Retry {
                    id: self.id,
                    attempt,
                    reason,
                    conn_id,
                },
            );
        }
        if let Some(t) = self.tracer() {
            t.retry(|| RetryInfo {
                request_id: t.request_id,
                attempt,
                reason,
                conn_id,
                error: crate::trace::error_text(error),
            });
        }
    }

    /// The request failed before it had a response.
    pub(crate) fn failed(mut self, error: &Error) {
        self.ended = true;
        if let Some(s) = self.span.take() {
            s.failed(error.error_type());
        }
        let end = self.clock();
        if let (Some(m), Some(end)) = (self.metrics.take(), end) {
            m.finish_at(Err(error.error_type()), end.at, end.elapsed);
        }
        drop(self.registration.take());
        let text = (self.history.is_some() || self.tracer().is_some())
            .then(|| crate::trace::error_text(error));
        if let (Some(h), Some(end)) = (self.history.take(), end) {
            h.request(
                end.at,
                RequestEvent::Failed {
                    id: self.id,
                    error: text.clone().unwrap_or_default(),
                },
            );
        }
        if let (Some(t), Some(end)) = (self.tracer(), end) {
            t.request_done(|| RequestDoneInfo {
                request_id: t.request_id,
                status: None,
                timings: t.timings(end.elapsed),
                error: text,
            });
        }
    }

    /// The response body ended (`error`: how it failed, or that it was dropped early). The
    /// history, the in-flight registry and the metrics learn it now; the tracer once the
    /// connection is back in the pool or closed (Go's order), through the [`TraceEnd`].
    pub(crate) fn body_done(mut self, status: StatusCode, error: Option<&str>) -> TraceEnd {
        self.ended = true;
        if let Some(s) = self.span.take() {
            s.status(status);
        }
        let end = self.clock();
        if let (Some(h), Some(end)) = (self.history.take(), end) {
            h.request(
                end.at,
                match error {
                    None => RequestEvent::Done {
                        id: self.id,
                        status,
                        elapsed: end.elapsed,
                    },
                    Some(e) => RequestEvent::Failed {
                        id: self.id,
                        error: e.to_owned(),
                    },
                },
            );
        }
        // Out of the in-flight registry: the body is over.
        drop(self.registration.take());
        if let (Some(m), Some(end)) = (self.metrics.take(), end) {
            m.finish_at(Ok(status), end.at, end.elapsed);
        }
        TraceEnd {
            tracer: self.probe.take_tracer().zip(end.map(|e| e.elapsed)),
            status,
        }
    }

    /// One reading of the clock for the request's end, and how long after its start that
    /// is, if a sink needs it: every sink gets both from here.
    fn clock(&self) -> Option<End> {
        self.start.map(|start| {
            let at = Instant::now();
            End {
                at,
                elapsed: at.saturating_duration_since(start),
            }
        })
    }
}

/// The request's end, read once for every sink.
#[derive(Clone, Copy)]
struct End {
    at: Instant,
    /// `at` minus the request's start.
    elapsed: Duration,
}

impl Drop for RequestTelemetry {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // The response future was dropped before the request ended. The metrics record it
        // as canceled when they drop.
        if let Some(s) = self.span.take() {
            s.failed("canceled");
        }
        let end = self.clock();
        drop(self.registration.take());
        if let (Some(h), Some(end)) = (self.history.take(), end) {
            h.request(
                end.at,
                RequestEvent::Failed {
                    id: self.id,
                    error: CANCELED.to_owned(),
                },
            );
        }
        if let (Some(t), Some(end)) = (self.tracer(), end) {
            t.request_done(|| RequestDoneInfo {
                request_id: t.request_id,
                status: None,
                timings: t.timings(end.elapsed),
                error: Some(CANCELED.to_owned()),
            });
        }
    }
}

/// The tracer's part of a response's end: reported once the connection's fate is known.
pub(crate) struct TraceEnd {
    /// The tracer, and the request's total time as the other sinks saw it.
    tracer: Option<(Arc<Tracer>, Duration)>,
    status: StatusCode,
}

impl TraceEnd {
    /// Reports `put_idle_conn` (if the response had a connection), `response_body_done` and
    /// `request_done`.
    pub(crate) fn report(
        self,
        conn: Option<(ConnId, Returned)>,
        bytes: u64,
        error: Option<String>,
    ) {
        let Some((t, total)) = self.tracer else {
            return;
        };
        if let Some((conn_id, returned)) = conn {
            t.put_idle_conn(|| PutIdleConnInfo {
                request_id: t.request_id,
                conn_id,
                error: match returned {
                    Returned::Closed(reason) => {
                        Some(format!("connection closed: {}", reason.as_str()))
                    }
                    _ => None,
                },
            });
        }
        t.response_body_done(|| BodyDoneInfo {
            request_id: t.request_id,
            bytes,
            error: error.clone(),
        });
        t.request_done(|| RequestDoneInfo {
            request_id: t.request_id,
            status: Some(self.status),
            timings: t.timings(total),
            error,
        });
    }
}
