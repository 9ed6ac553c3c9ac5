//! [`IoEvents`]: the state of the request on an HTTP/1 connection as its IO sees it, for the
//! `wrote_headers`, `wrote_request` and `got_first_response_byte` events and the request's
//! write and first-byte milestones. The IO wrapper that calls it is
//! [`connect::Stream`](crate::connect::Stream); the client arms it per traced request.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crate::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Read, ReadBufCursor};

use super::{FirstByteInfo, Mark, Tracer, WroteInfo};

const IDLE: u8 = 0;
const ARMED: u8 = 1;
const WROTE_HEADERS: u8 = 2;
const WROTE_REQUEST: u8 = 3;
const GOT_FIRST_BYTE: u8 = 4;

/// The state of the request currently on an HTTP/1 connection, as its IO sees it.
///
/// `state` moves IDLE → ARMED (a traced request starts) → WROTE_HEADERS (first write) →
/// WROTE_REQUEST (the body ended and a flush completed) → GOT_FIRST_BYTE (first read with
/// data); `disarm` returns it to IDLE. Untraced requests leave it IDLE, so the IO pays one
/// atomic load per call.
///
/// The moments the request was written and its first byte arrived are stamped in atomics
/// for the request's timings, which its task collects with [`marks`](IoEvents::marks) once
/// the response head is in. Only when a hook wants these events as they happen
/// (`wrote_headers`, `wrote_request`, `got_first_response_byte`) is the tracer handed to the
/// connection (`live`), so a trace that only needs timings costs the IO no lock.
pub(crate) struct IoEvents {
    state: AtomicU8,
    body_done: AtomicBool,
    /// `tracer` is set: the IO calls its hooks.
    live: AtomicBool,
    tracer: Mutex<Option<Arc<Tracer>>>,
    /// When the request was written / its first byte read, as nanoseconds after `epoch`
    /// plus one; 0 while it has not happened.
    wrote_at: AtomicU64,
    first_byte_at: AtomicU64,
    /// The armed request's start (its tracer's) as nanoseconds after `epoch`, negative if
    /// the request started before the connection was made: a stamp minus this is the
    /// request's mark, with no more clock arithmetic when the marks are collected.
    start_ns: AtomicI64,
    epoch: Instant,
}

impl IoEvents {
    pub(crate) fn new() -> IoEvents {
        IoEvents {
            state: AtomicU8::new(IDLE),
            body_done: AtomicBool::new(false),
            live: AtomicBool::new(false),
            tracer: Mutex::new(None),
            wrote_at: AtomicU64::new(0),
            first_byte_at: AtomicU64::new(0),
            start_ns: AtomicI64::new(0),
            epoch: Instant::now(),
        }
    }

    pub(crate) fn arm(&self, tracer: &Arc<Tracer>) {
        self.wrote_at.store(0, Ordering::Relaxed);
        self.first_byte_at.store(0, Ordering::Relaxed);
        let start = match tracer.start.checked_duration_since(self.epoch) {
            Some(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
            None => i64::try_from(self.epoch.duration_since(tracer.start).as_nanos())
                .map_or(i64::MIN, |before| -before),
        };
        self.start_ns.store(start, Ordering::Relaxed);
        if tracer.wants_io_events() {
            *self.tracer.lock() = Some(tracer.clone());
            self.live.store(true, Ordering::Release);
        }
        self.body_done.store(false, Ordering::Release);
        self.state.store(ARMED, Ordering::Release);
    }

    pub(crate) fn disarm(&self) {
        self.state.store(IDLE, Ordering::Release);
        if self.live.swap(false, Ordering::AcqRel) {
            self.tracer.lock().take();
        }
    }

    /// The request body has ended (or was empty).
    pub(crate) fn body_done(&self) {
        self.body_done.store(true, Ordering::Release);
    }

    /// When the armed request was written and its first byte arrived, as far as the IO saw,
    /// as times after the request's start. (Read by the task that armed it.)
    pub(crate) fn marks(&self) -> (Option<Duration>, Option<Duration>) {
        let start = i128::from(self.start_ns.load(Ordering::Relaxed));
        let at = |ns: u64| {
            ns.checked_sub(1).map(|ns| {
                let after_start = (i128::from(ns) - start).max(0);
                Duration::from_nanos(u64::try_from(after_start).unwrap_or(u64::MAX))
            })
        };
        (
            at(self.wrote_at.load(Ordering::Acquire)),
            at(self.first_byte_at.load(Ordering::Acquire)),
        )
    }

    fn advance(&self, from: u8, to: u8) -> bool {
        self.state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Stamps `slot` with now; returns now.
    fn stamp(&self, slot: &AtomicU64) -> Instant {
        let now = Instant::now();
        let ns = u64::try_from(now.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX - 1);
        slot.store(ns + 1, Ordering::Release);
        now
    }

    /// The tracer, if a hook wants the IO events as they happen.
    fn live_tracer(&self) -> Option<Arc<Tracer>> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        self.tracer.lock().clone()
    }

    fn on_write(&self) {
        if self.state.load(Ordering::Acquire) != ARMED || !self.advance(ARMED, WROTE_HEADERS) {
            return;
        }
        if let Some(t) = self.live_tracer() {
            t.wrote_headers(|| WroteInfo {
                request_id: t.request_id,
                elapsed: t.elapsed(),
                error: None,
            });
        }
    }

    fn on_flushed(&self) {
        if self.state.load(Ordering::Acquire) != WROTE_HEADERS
            || !self.body_done.load(Ordering::Acquire)
            || !self.advance(WROTE_HEADERS, WROTE_REQUEST)
        {
            return;
        }
        let now = self.stamp(&self.wrote_at);
        if let Some(t) = self.live_tracer() {
            t.wrote_request(|| WroteInfo {
                request_id: t.request_id,
                elapsed: now.saturating_duration_since(t.start),
                error: None,
            });
        }
    }

    fn on_read(&self) {
        let s = self.state.load(Ordering::Acquire);
        if (s != WROTE_REQUEST && s != WROTE_HEADERS) || !self.advance(s, GOT_FIRST_BYTE) {
            return;
        }
        let now = self.stamp(&self.first_byte_at);
        // A response can start before the request is flushed: then it counts as written.
        let _ = self.wrote_at.compare_exchange(
            0,
            self.first_byte_at.load(Ordering::Acquire),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if let Some(t) = self.live_tracer() {
            t.got_first_response_byte(|| FirstByteInfo {
                request_id: t.request_id,
                elapsed: now.saturating_duration_since(t.start),
            });
        }
    }
}

impl IoEvents {
    fn awaiting_first_byte(&self) -> bool {
        matches!(
            self.state.load(Ordering::Acquire),
            WROTE_HEADERS | WROTE_REQUEST
        )
    }

    /// A read through `io`, reporting the first byte of an armed request.
    #[inline]
    pub(crate) fn poll_read<I: Read + Unpin>(
        &self,
        io: &mut I,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.awaiting_first_byte() {
            return Pin::new(io).poll_read(cx, buf);
        }
        self.poll_first_read(io, cx, buf)
    }

    /// The first read of a traced request, through a copy, to learn whether it brought bytes
    /// (an EOF is not a first byte). Apart from [`poll_read`](Self::poll_read), so that every
    /// other read does not set up this one's 8 KiB stack frame.
    #[inline(never)]
    fn poll_first_read<I: Read + Unpin>(
        &self,
        io: &mut I,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut tmp = [std::mem::MaybeUninit::<u8>::uninit(); 8192];
        let room = buf.remaining().min(tmp.len());
        let mut rb = hyper::rt::ReadBuf::uninit(&mut tmp[..room]);
        match Pin::new(io).poll_read(cx, rb.unfilled()) {
            Poll::Ready(Ok(())) => {
                let filled = rb.filled();
                if !filled.is_empty() {
                    buf.put_slice(filled);
                    self.on_read();
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }

    /// What a write of `n` bytes means for the armed request.
    pub(crate) fn wrote(&self, res: &Poll<std::io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = res {
            if *n > 0 {
                self.on_write();
            }
        }
    }

    /// What a flush means for the armed request.
    pub(crate) fn flushed(&self, res: &Poll<std::io::Result<()>>) {
        if let Poll::Ready(Ok(())) = res {
            self.on_flushed();
        }
    }
}

/// Copies the write and first-byte moments an HTTP/1 connection stamped into the request's
/// milestones.
pub(crate) fn collect_io_marks(t: &Tracer, io: &IoEvents) {
    let (wrote, first_byte) = io.marks();
    if let Some(at) = wrote {
        t.mark(Mark::WroteRequest, at);
    }
    if let Some(at) = first_byte {
        t.mark(Mark::FirstByte, at);
    }
}
