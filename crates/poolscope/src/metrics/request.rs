//! One request's metrics, from its start to its end.

use super::*;

use super::{HostMetrics, Metrics};

/// A request's metrics from start to end. Counts the request active while it lives; if it
/// is dropped without [`finish_at`](RequestMetrics::finish_at) (the response future was
/// dropped), the request is recorded with `error.type="canceled"`.
pub(crate) struct RequestMetrics {
    metrics: Arc<Metrics>,
    host: Arc<HostMetrics>,
    /// Index into the known methods.
    method: usize,
    /// The HTTP version of the connection the request last got ([`version_code`]; 0: none
    /// yet). Atomic: milestones take `&self`.
    version: AtomicU8,
    started: Instant,
    finished: bool,
}

impl RequestMetrics {
    pub(crate) fn start(
        m: &Arc<Metrics>,
        method: &Method,
        key: &ConnectKey,
        started: Instant,
    ) -> RequestMetrics {
        let host = m.host(key);
        host.enter();
        let method = m.methods.index(method);
        host.active(method, &m.methods).increment(1.0);
        RequestMetrics {
            metrics: m.clone(),
            host,
            method,
            version: AtomicU8::new(0),
            started,
            finished: false,
        }
    }

    /// The request got a connection of `version`.
    pub(crate) fn got_conn(&self, info: &LeaseInfo, version: Version) {
        self.version
            .store(version_code(Some(version)), Ordering::Relaxed);
        // Only a request that could not be served at once queued (.NET's rule).
        if !info.waited.is_zero() {
            self.host.time_in_queue.record(info.waited.as_secs_f64());
        }
        if info.reused {
            self.host.reused.increment(1);
        }
    }

    /// The request is sent again.
    pub(crate) fn retry(&self, reason: RetryReason) {
        if let Some(i) = RETRY_REASONS.iter().position(|r| *r == reason) {
            self.host.resends[i].increment(1);
        }
    }

    /// The request ended, at `end` (`elapsed` after it started: the other sinks' reading),
    /// with a response (`Ok(status)`) or an error of this type.
    pub(crate) fn finish_at(
        mut self,
        outcome: Result<StatusCode, &'static str>,
        end: Instant,
        elapsed: Duration,
    ) {
        self.record(outcome, end, elapsed);
    }

    fn record(
        &mut self,
        outcome: Result<StatusCode, &'static str>,
        end: Instant,
        elapsed: Duration,
    ) {
        if self.finished {
            return;
        }
        self.finished = true;
        let m = &self.metrics;
        self.host.active(self.method, &m.methods).decrement(1.0);
        let key = DurationKey {
            method: u16::try_from(self.method).unwrap_or(u16::MAX),
            version: self.version.load(Ordering::Relaxed),
            outcome: match outcome {
                Ok(s) => Outcome::Status(s.as_u16()),
                Err(e) => Outcome::Error(e),
            },
        };
        self.host
            .record_duration(key, &m.methods, elapsed.as_secs_f64());
        self.host.leave(|| m.nanos(end));
    }
}

impl Drop for RequestMetrics {
    fn drop(&mut self) {
        // Checked first: the clock is read only for a request that did not finish.
        if !self.finished {
            let now = Instant::now();
            self.record(
                Err("canceled"),
                now,
                now.saturating_duration_since(self.started),
            );
        }
    }
}
