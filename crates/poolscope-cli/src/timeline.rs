//! A load run over time, in bounded memory: fixed-resolution buckets (requests, errors,
//! latency bins, queued requests, limit hits, late starts) and one lane per connection
//! (opened → closed, busy intervals merged at the bucket resolution, close reason). Fed by
//! the client's own events (Stats and ClientTrace hooks); rendered as HTML (`html.rs`) and
//! JSON (`--report-json`, schema in `docs/report.md`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use poolscope::pool::ConnectKey;
use serde::Serialize;

/// Buckets kept at most: when a run outlasts them, pairs merge and the resolution doubles.
const MAX_BUCKETS: usize = 400;
/// Lanes drawn at most; connections beyond are counted (`lanes_dropped`), not drawn.
pub const MAX_LANES: usize = 4000;
/// Latency bins: half-octaves from 1 µs (bin `b` holds `[2^(b/2), 2^((b+1)/2))` µs).
pub const LATENCY_BINS: usize = 64;

/// The bin of a duration.
pub fn bin(d: Duration) -> usize {
    let us = d.as_micros().max(1) as f64;
    ((us.log2() * 2.0) as usize).min(LATENCY_BINS - 1)
}

/// The lower bound of bin `b`, in seconds.
pub fn bin_floor(b: usize) -> f64 {
    2f64.powf(b as f64 / 2.0) / 1e6
}

/// One slice of time.
#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    /// Requests that ended in it (completed or failed).
    pub done: u32,
    pub errors: u32,
    /// Latencies of the requests that ended in it, by bin.
    #[serde(serialize_with = "sparse")]
    pub latency: Vec<u32>,
    /// The most requests waiting for a connection at once (all queued requests).
    pub idle_wait_max: u32,
    /// Of those, the most waiting for permission to dial (`max_conns_per_host`).
    pub dial_wait_max: u32,
    pub limit_hits: u32,
    /// Open loop: requests that could not start at their intended time.
    pub late_starts: u32,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            done: 0,
            errors: 0,
            latency: vec![0; LATENCY_BINS],
            idle_wait_max: 0,
            dial_wait_max: 0,
            limit_hits: 0,
            late_starts: 0,
        }
    }

    fn merge(&mut self, o: &Bucket) {
        self.done += o.done;
        self.errors += o.errors;
        for (a, b) in self.latency.iter_mut().zip(&o.latency) {
            *a += b;
        }
        self.idle_wait_max = self.idle_wait_max.max(o.idle_wait_max);
        self.dial_wait_max = self.dial_wait_max.max(o.dial_wait_max);
        self.limit_hits += o.limit_hits;
        self.late_starts += o.late_starts;
    }

    /// The `q` quantile of the latencies in this bucket (the floor of its bin), seconds.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u32 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let want = (f64::from(total) * q).ceil().max(1.0) as u32;
        let mut seen = 0;
        for (b, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(bin_floor(b));
            }
        }
        None
    }
}

/// Latency bins as `[[bin, count], ...]`, the empty ones left out.
fn sparse<S: serde::Serializer>(v: &[u32], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(None)?;
    for (b, n) in v.iter().enumerate().filter(|(_, n)| **n > 0) {
        seq.serialize_element(&(b, n))?;
    }
    seq.end()
}

/// One connection's life.
#[derive(Debug, Clone, Serialize)]
pub struct Lane {
    pub id: u64,
    pub http2: bool,
    /// Seconds after the start.
    pub opened: f64,
    pub closed: Option<f64>,
    pub close_reason: Option<&'static str>,
    pub requests: u64,
    /// `[start, end, most requests on it at once]`, seconds after the start.
    pub busy: Vec<(f64, f64, u32)>,
    #[serde(skip)]
    in_use: u32,
    #[serde(skip)]
    busy_since: f64,
    #[serde(skip)]
    busy_max: u32,
}

/// The run over time.
#[derive(Debug, Serialize)]
pub struct Timeline {
    #[serde(skip)]
    start: Instant,
    /// Width of a bucket.
    pub resolution_seconds: f64,
    pub buckets: Vec<Bucket>,
    pub lanes: Vec<Lane>,
    /// Connections not drawn (beyond `MAX_LANES`).
    pub lanes_dropped: u64,
    /// When the first limit hits happened (at most 1,000 kept), seconds, with the limit.
    pub limit_hits: Vec<(f64, &'static str)>,
    #[serde(skip)]
    lane_of: HashMap<u64, usize>,
    /// Request → its connection, while it is in flight on an HTTP/2 connection (an HTTP/1
    /// connection's busy interval ends when it goes idle).
    #[serde(skip)]
    on_conn: HashMap<u64, u64>,
    /// Requests waiting, per key (a load has one or a few keys: a list).
    #[serde(skip)]
    idle_waiting: Vec<(ConnectKey, u32)>,
    #[serde(skip)]
    dial_waiting: Vec<(ConnectKey, u32)>,
}

impl Timeline {
    pub fn new(start: Instant) -> Timeline {
        Timeline {
            start,
            resolution_seconds: 0.01,
            buckets: Vec::new(),
            lanes: Vec::new(),
            lanes_dropped: 0,
            limit_hits: Vec::new(),
            lane_of: HashMap::new(),
            on_conn: HashMap::new(),
            idle_waiting: Vec::new(),
            dial_waiting: Vec::new(),
        }
    }

    /// Seconds after the start.
    fn t(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.start).as_secs_f64()
    }

    /// The bucket of time `t`, made (and older ones merged) as needed.
    fn bucket(&mut self, t: f64) -> &mut Bucket {
        let mut i = (t / self.resolution_seconds) as usize;
        while i >= MAX_BUCKETS {
            let merged: Vec<Bucket> = self
                .buckets
                .chunks(2)
                .map(|pair| {
                    let mut b = pair[0].clone();
                    if let Some(o) = pair.get(1) {
                        b.merge(o);
                    }
                    b
                })
                .collect();
            self.buckets = merged;
            self.resolution_seconds *= 2.0;
            i = (t / self.resolution_seconds) as usize;
        }
        while self.buckets.len() <= i {
            self.buckets.push(Bucket::new());
        }
        &mut self.buckets[i]
    }

    pub fn conn_opened(&mut self, id: u64, at: Instant, http2: bool) {
        if self.lanes.len() >= MAX_LANES {
            self.lanes_dropped += 1;
            return;
        }
        let opened = self.t(at);
        self.lane_of.insert(id, self.lanes.len());
        self.lanes.push(Lane {
            id,
            http2,
            opened,
            closed: None,
            close_reason: None,
            requests: 0,
            busy: Vec::new(),
            in_use: 0,
            busy_since: opened,
            busy_max: 0,
        });
    }

    pub fn conn_closed(&mut self, id: u64, at: Instant, reason: &'static str) {
        let t = self.t(at);
        if let Some(&i) = self.lane_of.get(&id) {
            let lane = &mut self.lanes[i];
            lane.closed = Some(t);
            lane.close_reason = Some(reason);
            lane.end_busy(t, self.resolution_seconds);
        }
    }

    pub fn got_conn(&mut self, request: u64, conn: u64, at: Instant) {
        let t = self.t(at);
        if let Some(&i) = self.lane_of.get(&conn) {
            let lane = &mut self.lanes[i];
            if lane.http2 {
                self.on_conn.insert(request, conn);
            }
            lane.requests += 1;
            if lane.in_use == 0 {
                lane.busy_since = t;
                lane.busy_max = 0;
            }
            // An HTTP/1 connection carries one request at a time, also when it passes straight
            // from one to the next.
            lane.in_use = if lane.http2 { lane.in_use + 1 } else { 1 };
            lane.busy_max = lane.busy_max.max(lane.in_use);
        }
    }

    /// Request `request` let go of its connection (its body ended, failed or was dropped):
    /// the end of a stream on an HTTP/2 connection.
    pub fn request_ended(&mut self, request: u64, at: Instant) {
        if self.on_conn.is_empty() {
            return;
        }
        let Some(conn) = self.on_conn.remove(&request) else {
            return;
        };
        let t = self.t(at);
        let res = self.resolution_seconds;
        if let Some(&i) = self.lane_of.get(&conn) {
            let lane = &mut self.lanes[i];
            if lane.in_use > 1 {
                lane.in_use -= 1;
            } else {
                lane.end_busy(t, res);
            }
        }
    }

    /// HTTP/1 connection `conn` went idle: its busy interval ends.
    pub fn conn_idle(&mut self, conn: u64, at: Instant) {
        let t = self.t(at);
        let res = self.resolution_seconds;
        if let Some(&i) = self.lane_of.get(&conn) {
            let lane = &mut self.lanes[i];
            if !lane.http2 {
                lane.end_busy(t, res);
            }
        }
    }

    /// A request of the run ended at `at` after `latency` (from its intended start, in an
    /// open loop); `ok` unless it failed.
    pub fn completed(&mut self, at: Instant, latency: Duration, ok: bool) {
        let t = self.t(at);
        let b = self.bucket(t);
        b.done += 1;
        if !ok {
            b.errors += 1;
        }
        b.latency[bin(latency)] += 1;
    }

    /// The number of requests waiting for `key` (all, or for permission to dial) is `n`.
    pub fn waiting(&mut self, key: &ConnectKey, n: usize, dial: bool, at: Instant) {
        let list = if dial {
            &mut self.dial_waiting
        } else {
            &mut self.idle_waiting
        };
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        match list.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = n,
            None => list.push((key.clone(), n)),
        }
        let total: u32 = list.iter().map(|(_, n)| n).sum();
        let t = self.t(at);
        let b = self.bucket(t);
        if dial {
            b.dial_wait_max = b.dial_wait_max.max(total);
        } else {
            b.idle_wait_max = b.idle_wait_max.max(total);
        }
    }

    pub fn limit_hit(&mut self, limit: &'static str, at: Instant) {
        let t = self.t(at);
        if self.limit_hits.len() < 1000 {
            self.limit_hits.push((t, limit));
        }
        self.bucket(t).limit_hits += 1;
    }

    pub fn late_start(&mut self, at: Instant) {
        let t = self.t(at);
        self.bucket(t).late_starts += 1;
    }

    /// Ends the busy intervals still open at the end of the run.
    pub fn finish(&mut self, at: Instant) {
        let t = self.t(at);
        let res = self.resolution_seconds;
        for lane in &mut self.lanes {
            lane.end_busy(t, res);
        }
        // Every bucket up to the end exists, so the series span the whole run.
        self.bucket(t);
    }
}

impl Lane {
    /// Ends the busy interval in progress (if any) at `end`, merging it with the previous one
    /// when the gap between them is below half the resolution `res` (so a lane holds at most
    /// about one interval per bucket).
    fn end_busy(&mut self, end: f64, res: f64) {
        if self.in_use == 0 {
            return;
        }
        self.in_use = 0;
        let (start, max) = (self.busy_since, self.busy_max);
        if let Some(last) = self.busy.last_mut() {
            if start - last.1 < res / 2.0 {
                last.1 = end.max(last.1);
                last.2 = last.2.max(max);
                return;
            }
        }
        self.busy.push((start, end, max));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_stay_bounded_and_keep_every_request() {
        let start = Instant::now();
        let mut t = Timeline::new(start);
        for i in 0..100_000u64 {
            let at = start + Duration::from_millis(i);
            t.completed(at, Duration::from_millis(3), i % 10 != 0);
        }
        assert!(t.buckets.len() <= MAX_BUCKETS);
        let done: u32 = t.buckets.iter().map(|b| b.done).sum();
        let errors: u32 = t.buckets.iter().map(|b| b.errors).sum();
        assert_eq!((done, errors), (100_000, 10_000));
        assert!(t.resolution_seconds >= 100.0 / MAX_BUCKETS as f64);
    }

    #[test]
    fn busy_intervals_merge_at_the_resolution() {
        let start = Instant::now();
        let mut t = Timeline::new(start);
        t.conn_opened(1, start, false);
        // 1000 back-to-back requests 1 ms apart, each 0.5 ms long: gaps below half a
        // bucket (10 ms) merge into one interval.
        for i in 0..1000u64 {
            let s = start + Duration::from_micros(i * 1000);
            t.got_conn(i, 1, s);
            t.conn_idle(1, s + Duration::from_micros(500));
        }
        assert_eq!(t.lanes[0].busy.len(), 1);
        assert_eq!(t.lanes[0].requests, 1000);
    }

    #[test]
    fn an_http1_connection_passed_straight_on_carries_one_request_at_a_time() {
        let start = Instant::now();
        let mut t = Timeline::new(start);
        t.conn_opened(1, start, false);
        t.conn_opened(2, start, true);
        for i in 0..3u64 {
            // The HTTP/1 connection goes from request to request without going idle; the
            // HTTP/2 one takes three streams at once.
            t.got_conn(i, 1, start + Duration::from_millis(i));
            t.got_conn(10 + i, 2, start + Duration::from_millis(i));
        }
        t.finish(start + Duration::from_millis(5));
        assert_eq!(t.lanes[0].busy, vec![(0.0, 0.005, 1)]);
        assert_eq!(t.lanes[1].busy, vec![(0.0, 0.005, 3)]);
    }

    #[test]
    fn quantiles_come_from_the_bins() {
        let mut b = Bucket::new();
        for _ in 0..99 {
            b.latency[bin(Duration::from_millis(1))] += 1;
        }
        b.latency[bin(Duration::from_secs(1))] += 1;
        let p50 = b.quantile(0.5).unwrap();
        assert!((0.0007..=0.001).contains(&p50), "{p50}");
        assert!(b.quantile(1.0).unwrap() > 0.7);
    }
}
