//! [`RequestProbe`]: what a request's bodies and its connection's IO report to while the
//! request runs: its in-flight entry (the phase and the bytes) and its tracer (the write and
//! first-byte milestones). The request's [`RequestTelemetry`](super::telemetry::RequestTelemetry)
//! owns the other sinks (history, metrics, span, the registration) and hands clones of its
//! probe to the request body and the response body. The in-flight phase is written here and
//! nowhere else.

use std::sync::Arc;

use crate::inflight::{Entry, Phase};
use crate::pool::ConnId;
use crate::trace::io::IoEvents;
use crate::trace::{Mark, Tracer, WroteInfo};

/// A request's shared sinks: its in-flight entry and its tracer, each `None` when off.
/// Cloning is two reference counts at most.
#[derive(Clone, Default)]
pub(crate) struct RequestProbe {
    entry: Option<Arc<Entry>>,
    tracer: Option<Arc<Tracer>>,
}

impl RequestProbe {
    #[inline]
    pub(crate) fn new(entry: Option<Arc<Entry>>, tracer: Option<Arc<Tracer>>) -> RequestProbe {
        RequestProbe { entry, tracer }
    }

    /// The tracer, taken for the request's last events (the bodies keep their clones).
    #[inline]
    pub(crate) fn take_tracer(&mut self) -> Option<Arc<Tracer>> {
        self.tracer.take()
    }

    /// The tracer, if some hook listens.
    #[inline]
    pub(crate) fn tracer(&self) -> Option<&Arc<Tracer>> {
        self.tracer.as_ref()
    }

    fn phase(&self, phase: Phase) {
        if let Some(e) = &self.entry {
            e.set_phase(phase);
        }
    }

    /// An attempt asks the pool for a connection.
    #[inline]
    pub(crate) fn waiting_for_connection(&self) {
        self.phase(Phase::WaitingForConnection);
    }

    /// The pool let the request dial.
    #[inline]
    pub(crate) fn connecting(&self) {
        self.phase(Phase::Connecting);
    }

    /// The attempt got connection `id`: the request is being written.
    #[inline]
    pub(crate) fn sending_on(&self, id: ConnId) {
        if let Some(e) = &self.entry {
            e.set_phase(Phase::Sending);
            e.set_conn(id);
        }
    }

    /// The request body ended (or was empty). `io`: the HTTP/1 connection's IO, which
    /// reports `wrote_request` at its next flush; without one (HTTP/2, other connectors),
    /// the request counts as written now.
    #[inline]
    pub(crate) fn body_sent(&self, io: Option<&IoEvents>) {
        self.phase(Phase::AwaitingResponse);
        match (io, &self.tracer) {
            (Some(io), _) => io.body_done(),
            (None, Some(t)) => {
                let at = t.elapsed();
                // Once, whether hyper learns the end by polling the body or from
                // `is_end_stream` alone.
                if t.mark_once(Mark::WroteRequest, at) {
                    t.wrote_request(|| WroteInfo {
                        request_id: t.request_id,
                        elapsed: at,
                        error: None,
                    });
                }
            }
            (None, None) => {}
        }
    }

    /// The response head arrived: its body is being read.
    #[inline]
    pub(crate) fn head_received(&self) {
        self.phase(Phase::ReadingBody);
    }

    /// `n` bytes of the response body arrived.
    #[inline]
    pub(crate) fn bytes(&self, n: u64) {
        if let Some(e) = &self.entry {
            e.add_bytes(n);
        }
    }
}
