//! [`Tracer`]: one request's hooks and milestones, shared with the dial it starts and the
//! connection's IO; and the task-local that carries it into the connector.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ClientTrace, RequestTimings, TraceHooks};
use crate::key::ConnectKey;

/// Which milestone of a request a [`Tracer::mark`] records.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mark {
    /// The DNS lookup's duration.
    Dns,
    /// The TCP connect's duration.
    Connect,
    /// The TLS handshake's duration.
    Tls,
    /// The proxy exchange's duration.
    Proxy,
    /// When the request got its connection (offset from its start).
    GotConn,
    /// How long it waited in the pool's queues.
    Queued,
    /// When it was written (offset).
    WroteRequest,
    /// When its first response byte arrived (offset).
    FirstByte,
}

/// One request's milestones, filled in as they happen (some by the dial task): the dial
/// phases and the queueing as durations, the rest as offsets from the request's start (so
/// that the timings are subtractions of durations, not of instants). Each is nanoseconds
/// plus one in an atomic, 0 while unset: marking is a store, never a lock.
#[derive(Debug, Default)]
pub(crate) struct Marks([AtomicU64; 8]);

impl Marks {
    fn slot(&self, which: Mark) -> &AtomicU64 {
        &self.0[which as usize]
    }

    fn get(&self, which: Mark) -> Option<Duration> {
        let v = self.slot(which).load(Ordering::Acquire);
        v.checked_sub(1).map(Duration::from_nanos)
    }
}

fn encode(d: Duration) -> u64 {
    u64::try_from(d.as_nanos())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

/// The hooks of one request (client-wide, the request's own, and the metrics' dial hooks)
/// and its milestones.
/// Shared with the dial task this request starts.
pub(crate) struct Tracer {
    pub(crate) request_id: u64,
    /// The request's pool key.
    pub(crate) key: ConnectKey,
    pub(crate) start: Instant,
    /// Up to three hook sets (client-wide, the request's own, metrics), in one allocation.
    pub(super) hooks: [Option<Arc<TraceHooks>>; 3],
    pub(crate) marks: Marks,
    /// Attempts after the first.
    resends: AtomicU32,
}

impl Tracer {
    /// A tracer for a request, or `None` when no hook would see anything.
    pub(crate) fn new(
        request_id: u64,
        key: &ConnectKey,
        traces: &[Option<&ClientTrace>],
        start: Instant,
    ) -> Option<Arc<Tracer>> {
        let mut hooks: [Option<Arc<TraceHooks>>; 3] = [None, None, None];
        let mut n = 0;
        for t in traces.iter().flatten() {
            if let (Some(h), Some(slot)) = (&t.hooks, hooks.get_mut(n)) {
                *slot = Some(h.clone());
                n += 1;
            }
        }
        if n == 0 {
            return None;
        }
        Some(Arc::new(Tracer {
            request_id,
            key: key.clone(),
            start,
            hooks,
            marks: Marks::default(),
            resends: AtomicU32::new(0),
        }))
    }

    /// Whether some hook wants an HTTP/1 connection's write and first-read events as they
    /// happen (else the connection only stamps them for the timings).
    pub(crate) fn wants_io_events(&self) -> bool {
        self.hooks.iter().flatten().any(|h| {
            h.wrote_headers.is_some()
                || h.wrote_request.is_some()
                || h.got_first_response_byte.is_some()
        })
    }

    /// Whether some hook listens for 1xx responses.
    pub(crate) fn wants_1xx(&self) -> bool {
        self.hooks
            .iter()
            .flatten()
            .any(|h| h.got_1xx_response.is_some())
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records a milestone. Never calls a hook.
    pub(crate) fn mark(&self, which: Mark, value: Duration) {
        self.marks
            .slot(which)
            .store(encode(value), Ordering::Release);
    }

    /// Records a milestone unless it is already set; returns whether this call set it.
    pub(crate) fn mark_once(&self, which: Mark, value: Duration) -> bool {
        self.marks
            .slot(which)
            .compare_exchange(0, encode(value), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Clears the milestones of an attempt that did not produce the response (a retried
    /// request), so its timings describe the attempt that did. The dial phases stay: they
    /// belong to the request that started the dial, whichever connection served it.
    pub(crate) fn clear_attempt(&self) {
        self.resends.fetch_add(1, Ordering::Relaxed);
        for which in [
            Mark::GotConn,
            Mark::Queued,
            Mark::WroteRequest,
            Mark::FirstByte,
        ] {
            self.marks.slot(which).store(0, Ordering::Release);
        }
    }

    /// The request's timings, `total` after it started (the end's one reading, shared with
    /// the other sinks).
    pub(crate) fn timings(&self, total: Duration) -> RequestTimings {
        let m = &self.marks;
        let (got_conn, wrote, first_byte) = (
            m.get(Mark::GotConn),
            m.get(Mark::WroteRequest),
            m.get(Mark::FirstByte),
        );
        let between = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
        RequestTimings {
            queued: m.get(Mark::Queued).unwrap_or_default(),
            dns: m.get(Mark::Dns),
            connect: m.get(Mark::Connect),
            proxy: m.get(Mark::Proxy),
            tls: m.get(Mark::Tls),
            send: between(got_conn, wrote),
            wait: between(wrote, first_byte),
            transfer: first_byte.map(|f| total.saturating_sub(f)),
            total,
            got_conn,
            first_byte,
            resend_count: self.resends.load(Ordering::Relaxed),
        }
    }
}

tokio::task_local! {
    /// The tracer of the request whose dial is running on this task: connectors report DNS,
    /// connect and TLS events to it.
    pub(crate) static DIAL_TRACER: Option<Arc<Tracer>>;
}

/// The tracer of the request whose dial runs on this task, if any, to keep beyond a call.
pub(crate) fn dial_tracer() -> Option<Arc<Tracer>> {
    DIAL_TRACER.try_with(Option::clone).ok().flatten()
}
