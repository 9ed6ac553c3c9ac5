//! [`DialPhase`]: one phase of a dial (DNS, TCP connect, proxy exchange, TLS) as every sink
//! sees it. The connectors call it; it fires the phase's start and done hooks of the request
//! that started the dial, records the phase's milestone for its timings, and records the
//! duration on the dial's `connection_setup` span.

use std::fmt::Display;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{dial_tracer, Mark, Tracer};

/// A phase of a dial.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    /// Name resolution.
    Dns,
    /// The TCP connect: every attempt of a happy-eyeballs race (each attempt has its own
    /// `connect_start`/`connect_done` hooks).
    Connect,
    /// The `CONNECT` or SOCKS exchange with a proxy.
    Proxy,
    /// The TLS handshake.
    Tls,
}

impl Phase {
    fn mark(self) -> Mark {
        match self {
            Phase::Dns => Mark::Dns,
            Phase::Connect => Mark::Connect,
            Phase::Proxy => Mark::Proxy,
            Phase::Tls => Mark::Tls,
        }
    }

    /// The `connection_setup` span's field.
    fn span_field(self) -> &'static str {
        match self {
            Phase::Dns => "poolscope.dns_s",
            Phase::Connect => "poolscope.connect_s",
            Phase::Proxy => "poolscope.proxy_s",
            Phase::Tls => "poolscope.tls_s",
        }
    }
}

/// A dial phase in progress. [`start`](DialPhase::start) it, then [`done`](DialPhase::done)
/// it with the phase's result. A phase whose future is dropped reports nothing.
#[must_use = "a phase reports its end in `done`"]
pub(crate) struct DialPhase {
    phase: Phase,
    tracer: Option<Arc<Tracer>>,
    start: Instant,
}

impl DialPhase {
    /// The phase starts now: `hook` (the phase's start hook) runs with the tracer of the
    /// request whose dial this is, if it has one.
    pub(crate) fn start(phase: Phase, hook: impl FnOnce(&Tracer)) -> DialPhase {
        let tracer = dial_tracer();
        if let Some(t) = &tracer {
            hook(t);
        }
        DialPhase {
            phase,
            tracer,
            start: Instant::now(),
        }
    }

    /// The phase ended with `result`: its duration goes to the span (and, if it succeeded, to
    /// the request's timings), then `hook` (the phase's done hook) runs with the tracer and
    /// the duration. Returns the duration.
    pub(crate) fn done<T, E: Display>(
        self,
        result: &Result<T, E>,
        hook: impl FnOnce(&Tracer, Duration),
    ) -> Duration {
        let took = self.start.elapsed();
        crate::spans::dial_phase(
            self.phase.span_field(),
            took,
            result.as_ref().err().map(|e| e as &dyn Display),
        );
        if let Some(t) = &self.tracer {
            if result.is_ok() {
                t.mark(self.phase.mark(), took);
            }
            hook(t, took);
        }
        took
    }
}
