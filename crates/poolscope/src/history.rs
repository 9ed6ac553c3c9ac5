//! The event history: the last N pool and request events, for post-mortems.
//!
//! The history is a ring of N slots. A writer takes the next sequence number (one atomic
//! add) and writes its event into slot `seq % N`, under that slot's own mutex: two writers
//! meet only when their events are N apart, and a slower writer never overwrites a newer
//! event (the slot keeps the higher `seq`). A read copies the slots, one lock at a time, and sorts them by `seq`; it
//! takes nothing out, so concurrent readers see the same history. (A lock-free queue that
//! overwrites its oldest entry, `crossbeam_queue::ArrayQueue::force_push`, moves each event
//! several times and cost more per event: `docs/benchmarks.md`.)
//! Events are stored as they are and formatted only when read, so recording is a clone and a
//! store. Their time is the `Instant` their milestone already read (a pool event's `at`, a
//! request milestone's one clock reading), turned into wall-clock time only when read, from
//! one pair of readings taken when the history was made.
//! When a `*_hit` hook fires or a pool-wait timeout comes back, [`Client::recent_events`]
//! shows what led there.
//!
//! [`Client::recent_events`]: crate::Client::recent_events

use crate::sync::Mutex;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use http::StatusCode;
use serde::Serialize;

use crate::pool::ConnId;
use crate::redact::{strip_userinfo, Redact};
use crate::stats::{Event, EventSink, Limit, WaitIn, WaitOut};

/// A request-level event kept in the history.
#[derive(Debug, Clone)]
pub(crate) enum RequestEvent {
    Started {
        id: u64,
        method: http::Method,
        uri: http::Uri,
    },
    GotConn {
        id: u64,
        conn_id: ConnId,
        reused: bool,
        waited: Duration,
    },
    Done {
        id: u64,
        status: StatusCode,
        elapsed: Duration,
    },
    Failed {
        id: u64,
        error: String,
    },
    Retry {
        id: u64,
        attempt: u32,
        reason: crate::trace::RetryReason,
        conn_id: ConnId,
    },
}

#[derive(Debug, Clone)]
enum What {
    Pool(Event),
    Request(RequestEvent),
}

#[derive(Clone)]
struct Recorded {
    seq: u64,
    at: Instant,
    what: What,
}

/// The history of one client.
pub(crate) struct History {
    /// Event `seq` goes to slot `seq % len`.
    ring: Box<[Mutex<Option<Recorded>>]>,
    seq: AtomicU64,
    redact: Option<Redact>,
    /// The monotonic and the wall clock read together at creation: an event's `Instant`
    /// becomes its wall-clock time by this offset.
    anchor: (Instant, SystemTime),
}

impl History {
    /// A history of `n` events (at least 1).
    pub(crate) fn new(n: usize, redact: Option<Redact>) -> History {
        History {
            ring: (0..n.max(1)).map(|_| Mutex::new(None)).collect(),
            seq: AtomicU64::new(0),
            redact,
            anchor: (Instant::now(), SystemTime::now()),
        }
    }

    fn push(&self, at: Instant, what: What) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let slot = &self.ring[(seq % self.ring.len() as u64) as usize];
        let mut held = slot.lock();
        // A writer N events ahead got here first: this event is already out of the window.
        if held.as_ref().is_some_and(|r| r.seq > seq) {
            return;
        }
        // Written in place; the event it replaces is dropped here (an `Arc` or a `String`).
        *held = Some(Recorded { seq, at, what });
    }

    /// Records a request's event, which happened `at`.
    pub(crate) fn request(&self, at: Instant, ev: RequestEvent) {
        self.push(at, What::Request(ev));
    }

    fn wall_clock(&self, at: Instant) -> SystemTime {
        let (mono, wall) = self.anchor;
        match at.checked_duration_since(mono) {
            Some(after) => wall + after,
            None => wall - mono.saturating_duration_since(at),
        }
    }

    /// The newest events, oldest first.
    pub(crate) fn recent(&self) -> Vec<RecordedEvent> {
        let mut kept: Vec<Recorded> = self
            .ring
            .iter()
            .filter_map(|slot| slot.lock().clone())
            .collect();
        kept.sort_by_key(|r| r.seq);
        // Rendered after the locks: the user's `redact_url` may be slow, or read the history.
        kept.iter().map(|r| self.describe(r)).collect()
    }
}

impl EventSink for History {
    fn on_pool_event(&self, event: &Event) {
        let at = event.at().unwrap_or_else(Instant::now);
        self.push(at, What::Pool(event.clone()));
    }
}

/// One event from [`Client::recent_events`](crate::Client::recent_events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RecordedEvent {
    /// Order of recording across the client (gaps are events that were overwritten).
    pub seq: u64,
    /// When it was recorded.
    #[serde(serialize_with = "crate::render::rfc3339")]
    pub at: SystemTime,
    /// The event's name: a `Stats` hook's (`idle_conn_wait_in`, `max_conns_per_host_hit`, …)
    /// or a request's (`request_started`, `got_conn`, `request_retry`, `request_done`,
    /// `request_failed`).
    pub name: &'static str,
    /// What it says: key, connection, counts, durations.
    pub detail: String,
}

impl fmt::Display for RecordedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} #{} {} {}",
            humantime::format_rfc3339_micros(self.at),
            self.seq,
            self.name,
            self.detail
        )
    }
}

impl History {
    fn describe(&self, r: &Recorded) -> RecordedEvent {
        let (name, detail) = describe(&r.what, self.redact.as_ref());
        RecordedEvent {
            seq: r.seq,
            at: self.wall_clock(r.at),
            name,
            detail,
        }
    }
}

fn wait_in(e: &WaitIn) -> String {
    format!("{} waiters={}", e.key, e.waiters)
}

fn wait_out(e: &WaitOut) -> String {
    format!(
        "{} waiters={} waited={:?} outcome={}",
        e.key,
        e.waiters,
        e.waited,
        e.outcome.as_str()
    )
}

fn describe(what: &What, redact: Option<&Redact>) -> (&'static str, String) {
    match what {
        What::Pool(ev) => match ev {
            Event::IdleConnWaitIn(e) => ("idle_conn_wait_in", wait_in(e)),
            Event::IdleConnWaitOut(e) => ("idle_conn_wait_out", wait_out(e)),
            Event::ConnsPerHostWaitIn(e) => ("conns_per_host_wait_in", wait_in(e)),
            Event::ConnsPerHostWaitOut(e) => ("conns_per_host_wait_out", wait_out(e)),
            Event::IdleConnIn(e) => (
                "idle_conn_in",
                format!("{} conn={} idle={}", e.key, e.conn_id, e.idle),
            ),
            Event::IdleConnOut(e) => (
                "idle_conn_out",
                format!(
                    "{} conn={} idle={} idle_time={:?} reason={}",
                    e.key,
                    e.conn_id,
                    e.idle,
                    e.idle_time,
                    e.reason.as_str()
                ),
            ),
            Event::ConnReused(e) => ("conn_reused", format!("{} conn={}", e.key, e.conn_id)),
            Event::LimitHit(limit, snap) => {
                let name = match limit {
                    Limit::MaxIdleConns => "max_idle_conns_hit",
                    Limit::MaxIdleConnsPerHost => "max_idle_conns_per_host_hit",
                    Limit::MaxConnsPerHost => "max_conns_per_host_hit",
                };
                let detail = snap.as_ref().map_or_else(String::new, |s| {
                    format!(
                        "idle={} active={} connecting={} waiting={}",
                        s.total_idle(),
                        s.total_active(),
                        s.total_connecting(),
                        s.total_waiters()
                    )
                });
                (name, detail)
            }
            Event::ConnOpened(e) => (
                "conn_opened",
                format!(
                    "{} conn={} dial_time={:?} shared={}",
                    e.key, e.conn_id, e.dial_time, e.shared
                ),
            ),
            Event::ConnClosed(e) => (
                "conn_closed",
                format!(
                    "{} conn={} reason={} lifetime={:?} requests={}",
                    e.key,
                    e.conn_id,
                    e.reason.as_str(),
                    e.lifetime,
                    e.requests
                ),
            ),
        },
        What::Request(ev) => match ev {
            RequestEvent::Started { id, method, uri } => {
                let clean = strip_userinfo(uri);
                let url = redact.map_or_else(|| clean.to_string(), |f| f(&clean));
                ("request_started", format!("request={id} {method} {url:?}"))
            }
            RequestEvent::GotConn {
                id,
                conn_id,
                reused,
                waited,
            } => (
                "got_conn",
                format!("request={id} conn={conn_id} reused={reused} waited={waited:?}"),
            ),
            RequestEvent::Done {
                id,
                status,
                elapsed,
            } => (
                "request_done",
                format!(
                    "request={id} status={} elapsed={elapsed:?}",
                    status.as_u16()
                ),
            ),
            RequestEvent::Failed { id, error } => {
                ("request_failed", format!("request={id} error={error}"))
            }
            RequestEvent::Retry {
                id,
                attempt,
                reason,
                conn_id,
            } => (
                "request_retry",
                format!("request={id} attempt={attempt} reason={reason} after_conn={conn_id}"),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_ring_keeps_the_newest_n_in_order_under_concurrent_writers() {
        let h = Arc::new(History::new(64, None));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        h.request(
                            Instant::now(),
                            RequestEvent::Failed {
                                id: t * 10_000 + i,
                                error: String::new(),
                            },
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let recent = h.recent();
        assert_eq!(recent.len(), 64);
        let seqs: Vec<u64> = recent.iter().map(|e| e.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order");
        // The newest survive: the last seq handed out, and nothing older than the last 64
        // pushes (a writer may push a little after taking its seq: 4 writers of slack).
        assert_eq!(*seqs.last().unwrap(), 3999);
        assert!(seqs[0] >= 3999 - 63 - 4, "oldest kept: {}", seqs[0]);
        // Reading does not consume.
        assert_eq!(h.recent().len(), 64);
    }

    #[test]
    fn reading_while_writers_record_loses_no_newer_event() {
        let h = Arc::new(History::new(64, None));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (h, done) = (h.clone(), done.clone());
                std::thread::spawn(move || {
                    while !done.load(Ordering::Relaxed) {
                        let seqs: Vec<u64> = h.recent().iter().map(|e| e.seq).collect();
                        assert!(seqs.len() <= 64);
                        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
                    }
                })
            })
            .collect();
        let writers: Vec<_> = (0..2)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        h.request(
                            Instant::now(),
                            RequestEvent::Failed {
                                id: t * 100_000 + i,
                                error: String::new(),
                            },
                        );
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        // With every writer done, the history holds exactly the newest 64 (two writers of
        // slack for a push that came a little after its seq was taken).
        let seqs: Vec<u64> = h.recent().iter().map(|e| e.seq).collect();
        assert_eq!(seqs.len(), 64);
        assert_eq!(*seqs.last().unwrap(), 39_999, "{seqs:?}");
        assert!(seqs[0] >= 39_999 - 63 - 2, "oldest kept: {seqs:?}");
    }
}
