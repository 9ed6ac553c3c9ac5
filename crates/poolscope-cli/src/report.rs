//! The load report: percentiles, counts, the pool at the first limit hit; text and JSON.

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in seconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// From a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let s = |us: u64| us as f64 / 1e6;
        Percentiles {
            p50: s(h.value_at_quantile(0.5)),
            p90: s(h.value_at_quantile(0.9)),
            p99: s(h.value_at_quantile(0.99)),
            max: s(h.max()),
        }
    }
}

/// The pool when a limit was first hit.
#[derive(Debug, Clone, Serialize)]
pub struct FirstHit {
    pub limit: &'static str,
    pub after_seconds: f64,
    /// The snapshot, rendered as a table.
    pub snapshot: String,
    /// The same snapshot as `PoolSnapshot::to_json` gives it: per key, and per connection
    /// with its TCP_INFO.
    pub pool: serde_json::Value,
}

/// What a load run did.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub url: String,
    pub concurrency: usize,
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub elapsed_seconds: f64,
    pub requests_per_second: f64,
    pub latency_seconds: Percentiles,
    pub time_in_queue_seconds: Percentiles,
    pub status_counts: BTreeMap<String, u64>,
    /// Failed requests by their whole cause chain (at most 32 kinds; the rest as
    /// "(other errors)").
    pub errors: BTreeMap<String, u64>,
    pub connections_opened: u64,
    /// TCP connects that succeeded: a server's accept count for this run.
    pub tcp_connects: u64,
    /// TCP connect attempts that failed or were abandoned.
    pub tcp_connects_failed: u64,
    /// Dials that connected but failed their TLS or HTTP handshake.
    pub handshakes_failed: u64,
    /// Connections closed during the run, by reason.
    pub connections_closed: BTreeMap<String, u64>,
    /// Requests sent again, by reason (stale_connection, not_sent, goaway, refused_stream,
    /// connection_closed).
    pub retries: BTreeMap<String, u64>,
    /// Attempts that got a connection on a reused one.
    pub connections_reused: u64,
    /// Attempts that got a connection: requests plus their retries.
    pub attempts: u64,
    /// `connections_reused / attempts`.
    pub reuse_ratio: f64,
    pub limit_hits: u64,
    pub first_limit_hit: Option<FirstHit>,
    pub interrupted: bool,
    /// Open loop: the requests per second asked for (`--rate`); latency then counts from
    /// each request's intended start.
    pub rate: Option<f64>,
    /// Open loop: requests that could not start on time (all `-c` were in flight).
    pub late_starts: u64,
}

fn ms(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2}s")
    } else {
        format!("{:.2}ms", s * 1000.0)
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.requests_ok + self.requests_failed;
        writeln!(f, "Load report for {}", self.url)?;
        if self.interrupted {
            writeln!(f, "  (interrupted: partial run)")?;
        }
        writeln!(
            f,
            "  {total} requests in {:.2}s with {} concurrent: {:.0} req/s, {} ok, {} failed",
            self.elapsed_seconds,
            self.concurrency,
            self.requests_per_second,
            self.requests_ok,
            self.requests_failed
        )?;
        if let Some(rate) = self.rate {
            writeln!(
                f,
                "  open loop at {rate} req/s: latency from each request's intended start; \
                 {} started late (all {} in flight)",
                self.late_starts, self.concurrency
            )?;
        }
        let l = &self.latency_seconds;
        writeln!(
            f,
            "  latency        p50 {}  p90 {}  p99 {}  max {}",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.max)
        )?;
        let q = &self.time_in_queue_seconds;
        writeln!(
            f,
            "  time in queue  p50 {}  p90 {}  p99 {}  max {}",
            ms(q.p50),
            ms(q.p90),
            ms(q.p99),
            ms(q.max)
        )?;
        let statuses: Vec<String> = self
            .status_counts
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        writeln!(
            f,
            "  status codes   {}",
            if statuses.is_empty() {
                "-".to_owned()
            } else {
                statuses.join(", ")
            }
        )?;
        for (kind, n) in &self.errors {
            writeln!(f, "  errors         {kind}: {n}")?;
        }
        writeln!(
            f,
            "  connections    {} opened, {} of {} attempts on a reused connection ({:.1}% reuse)",
            self.connections_opened,
            self.connections_reused,
            self.attempts,
            self.reuse_ratio * 100.0
        )?;
        writeln!(
            f,
            "  dials          {} TCP connects ({} attempts failed or abandoned), {} handshakes failed",
            self.tcp_connects, self.tcp_connects_failed, self.handshakes_failed
        )?;
        let counts = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "-".to_owned()
            } else {
                m.iter()
                    .map(|(k, n)| format!("{k}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        writeln!(f, "  closed         {}", counts(&self.connections_closed))?;
        writeln!(f, "  retries        {}", counts(&self.retries))?;
        writeln!(f, "  limit hits     {}", self.limit_hits)?;
        if let Some(hit) = &self.first_limit_hit {
            writeln!(
                f,
                "\nPool at the first limit hit ({}, after {}):",
                hit.limit,
                ms(hit.after_seconds)
            )?;
            for line in hit.snapshot.lines() {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}
