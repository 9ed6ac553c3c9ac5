//! The in-flight registry: which requests the client is servicing now, for how long, in
//! which phase, and (optionally) the stack that started each.
//!
//! An entry lives from [`Client::request`](crate::Client::request) until the response body
//! reaches its end, fails or is dropped, or the request fails. Entries sit in 32 shards, each
//! a small mutex-guarded slab picked by the request id, so registering and removing never
//! takes a global lock; phase, connection and byte counts are atomics the request updates.
//!
//! Stacks are captured as raw return addresses, and only the top [`CAPTURE_DEPTH`] frames:
//! the unwinder stops there instead of walking the runtime's frames down to the thread's
//! start; the walk takes no lock (`stack-capture`). Addresses are resolved only when a
//! report is rendered, each once per registry (resolved frames are cached by address): the
//! executable's through its DWARF (`dwarf.rs`, which names async fns), others through
//! `backtrace`. Frames of poolscope, tokio, hyper, futures and std are left out so the
//! caller's frames come first.
//!
//! [`InFlightReport`]'s `Display` follows the shape of the Go tracker this is modelled on:
//!
//! ```text
//! In-flight HTTP requests:
//!   servicing GET "http://host1:8484/.cbfs/blob/[oid]" for 56.705274ms
//!     - my_app::fetch::run() - src/fetch.rs:64
//! ```
//!
//! URLs never show userinfo; [`TelemetryBuilder::redact_url`](crate::TelemetryBuilder::redact_url) rewrites
//! them further (ids, tokens in queries).

mod dwarf;
mod report;
mod stack;

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{Method, Uri};
use serde::Serialize;
use slab::Slab;

use crate::key::ConnId;
use crate::redact::{strip_userinfo, Redact};
use crate::sync::Mutex;

pub use self::report::{CallSite, InFlightEntry, InFlightReport, StackFrame};
pub(crate) use self::stack::RawStack;
use self::stack::Symbol;
pub use self::stack::{CAPTURE_DEPTH, MAX_FRAMES};

const SHARDS: usize = 32;

/// The phase of an in-flight request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Waiting for a connection from the pool.
    WaitingForConnection,
    /// Waiting for a connection this request is dialing.
    Connecting,
    /// Writing the request.
    Sending,
    /// The request is written; waiting for the response head.
    AwaitingResponse,
    /// The response head arrived; the body is being read.
    ReadingBody,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Connecting,
            2 => Phase::Sending,
            3 => Phase::AwaitingResponse,
            4 => Phase::ReadingBody,
            _ => Phase::WaitingForConnection,
        }
    }

    /// `waiting_for_connection`, `connecting`, `sending`, `awaiting_response`, `reading_body`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::WaitingForConnection => "waiting_for_connection",
            Phase::Connecting => "connecting",
            Phase::Sending => "sending",
            Phase::AwaitingResponse => "awaiting_response",
            Phase::ReadingBody => "reading_body",
        }
    }
}

/// One request's live state, shared by the request and the registry.
pub(crate) struct Entry {
    id: u64,
    method: Method,
    /// As given (a cheap clone); userinfo is stripped and `redact_url` applied at report time.
    uri: Uri,
    started: Instant,
    phase: AtomicU8,
    /// 0 until a connection is known.
    conn_id: AtomicU64,
    bytes: AtomicU64,
    /// Where the request was issued (`#[track_caller]`): known even without stacks.
    caller: &'static std::panic::Location<'static>,
    stack: Option<RawStack>,
}

impl Entry {
    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    pub(crate) fn set_conn(&self, id: ConnId) {
        self.conn_id.store(id.get(), Ordering::Relaxed);
    }

    pub(crate) fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
}

/// The registry of one client (also usable on its own, to track any kind of request).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use poolscope::inflight::Registry;
///
/// let registry = Arc::new(Registry::new(false));
/// let guard = registry.register(1, &http::Method::GET, &"http://u:pw@h/x".parse().unwrap());
/// assert!(registry.report().to_string().contains("servicing GET \"http://h/x\""));
/// drop(guard);
/// assert!(registry.report().is_empty());
/// ```
pub struct Registry {
    shards: Box<[Mutex<Slab<Arc<Entry>>>]>,
    capture_stacks: bool,
    redact: Option<Redact>,
    /// Addresses already resolved, with their symbols (innermost first).
    symbols: Mutex<std::collections::HashMap<usize, Arc<[Symbol]>>>,
}

/// A registered request; dropping it removes the entry.
pub struct Registration {
    registry: Arc<Registry>,
    /// The entry's slot in its shard, and the shard (the request id's).
    slot: u32,
    shard: u32,
    /// The entry's address, to check (debug builds) that the slot still holds it: only this
    /// registration removes its slot, so it does.
    #[cfg(debug_assertions)]
    entry: usize,
}
impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("shard", &self.shard)
            .field("slot", &self.slot)
            .finish()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("capture_stacks", &self.capture_stacks)
            .finish()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(shard) = self.registry.shards.get(self.shard as usize) else {
            return;
        };
        let mut slab = shard.lock();
        #[cfg(debug_assertions)]
        debug_assert!(slab
            .get(self.slot as usize)
            .is_some_and(|e| Arc::as_ptr(e) as usize == self.entry));
        slab.try_remove(self.slot as usize);
    }
}

impl Registry {
    /// A registry; with `capture_stacks`, each registration captures the caller's stack.
    pub fn new(capture_stacks: bool) -> Registry {
        Registry::with_redaction(capture_stacks, None)
    }

    pub(crate) fn with_redaction(capture_stacks: bool, redact: Option<Redact>) -> Registry {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(Slab::new())).collect(),
            capture_stacks,
            redact,
            symbols: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Registers a request (`id` is yours to choose; it orders equal ages), issued where
    /// this is called from (`#[track_caller]`: a function of yours marked so passes its own
    /// caller on). Captures the caller's stack if enabled: call it where the caller's frames
    /// are on the stack.
    #[track_caller]
    pub fn register(self: &Arc<Self>, id: u64, method: &Method, uri: &Uri) -> Registration {
        self.register_at(id, method, uri, std::panic::Location::caller())
    }

    /// As [`register`](Self::register), issued at `caller`.
    pub fn register_at(
        self: &Arc<Self>,
        id: u64,
        method: &Method,
        uri: &Uri,
        caller: &'static std::panic::Location<'static>,
    ) -> Registration {
        let stack = if self.capture_stacks {
            Some(RawStack::capture())
        } else {
            None
        };
        self.register_started(id, method, uri, caller, Instant::now(), stack)
            .0
    }

    /// Whether registrations carry the caller's stack.
    pub(crate) fn captures_stacks(&self) -> bool {
        self.capture_stacks
    }

    /// As [`register_at`](Self::register_at), for a request that started `started` (a
    /// clock reading its other sinks share), with the stack its caller captured (so that the
    /// registration adds no frame above the caller's). Returns the entry too, for the
    /// request's probe to update.
    pub(crate) fn register_started(
        self: &Arc<Self>,
        id: u64,
        method: &Method,
        uri: &Uri,
        caller: &'static std::panic::Location<'static>,
        started: Instant,
        stack: Option<RawStack>,
    ) -> (Registration, Arc<Entry>) {
        let entry = Arc::new(Entry {
            id,
            method: method.clone(),
            uri: uri.clone(),
            started,
            phase: AtomicU8::new(Phase::WaitingForConnection as u8),
            conn_id: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            caller,
            stack,
        });
        let shard = &self.shards[id as usize % SHARDS];
        let slot = shard.lock().insert(entry.clone());
        let registration = Registration {
            registry: self.clone(),
            // A shard of more than 4 billion requests in flight is not a case.
            slot: u32::try_from(slot).unwrap_or(u32::MAX),
            shard: (id as usize % SHARDS) as u32,
            #[cfg(debug_assertions)]
            entry: Arc::as_ptr(&entry) as usize,
        };
        (registration, entry)
    }

    /// The requests in flight now, oldest first, stacks resolved.
    pub fn report(&self) -> InFlightReport {
        let mut live: Vec<Arc<Entry>> = Vec::new();
        for shard in self.shards.iter() {
            let slab = shard.lock();
            live.extend(slab.iter().map(|(_, e)| e.clone()));
        }
        // Resolve outside the shard locks: it reads debug info and can take milliseconds.
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut entries: Vec<InFlightEntry> = live
            .iter()
            .map(|e| InFlightEntry {
                id: e.id,
                method: e.method.to_string(),
                url: self.url(&e.uri),
                elapsed: now.saturating_duration_since(e.started),
                started_at: wall - now.saturating_duration_since(e.started),
                phase: Phase::from_u8(e.phase.load(Ordering::Relaxed)),
                conn_id: match e.conn_id.load(Ordering::Relaxed) {
                    0 => None,
                    n => Some(ConnId(n)),
                },
                bytes_received: e.bytes.load(Ordering::Relaxed),
                called_at: CallSite {
                    file: e.caller.file(),
                    line: e.caller.line(),
                    column: e.caller.column(),
                },
                stack: e
                    .stack
                    .as_ref()
                    .map(|s| self.resolve(s))
                    .unwrap_or_default(),
            })
            .collect();
        entries.sort_by(|a, b| b.elapsed.cmp(&a.elapsed).then(a.id.cmp(&b.id)));
        InFlightReport { entries }
    }

    /// The URL as reports show it: without userinfo, through `redact_url`.
    pub(crate) fn url(&self, uri: &Uri) -> String {
        let clean = strip_userinfo(uri);
        match &self.redact {
            Some(f) => f(&clean),
            None => clean.to_string(),
        }
    }

    /// How many requests are registered.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Whether no request is registered.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.lock().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_is_oldest_first_and_entries_leave_on_drop() {
        let reg = Arc::new(Registry::new(false));
        // The older request has the larger id: only the age can put it first.
        let at = Instant::now();
        let here = std::panic::Location::caller();
        let (older, older_entry) = reg.register_started(
            2,
            &Method::GET,
            &"http://h/a".parse().unwrap(),
            here,
            at,
            None,
        );
        // Spin (no sleep) until the clock has moved on, so the two ages differ.
        while Instant::now() <= at {}
        let newer = reg.register(1, &Method::POST, &"http://h/b".parse().unwrap());
        assert!(older_entry.started == at);
        let r = reg.report();
        assert_eq!(r.iter().map(|e| e.id).collect::<Vec<_>>(), vec![2, 1]);
        drop(older);
        assert_eq!(reg.len(), 1);
        assert!(!reg.is_empty());
        drop(newer);
        assert!(reg.is_empty());
        assert!(reg.report().is_empty());
    }

    #[test]
    fn display_matches_the_seed_shape() {
        let reg = Arc::new(Registry::new(false));
        let _a = reg.register(
            1,
            &Method::GET,
            &"http://host1:8484/.cbfs/blob/x".parse().unwrap(),
        );
        let text = reg.report().to_string();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("In-flight HTTP requests:"));
        let line = lines.next().unwrap();
        assert!(
            line.starts_with("  servicing GET \"http://host1:8484/.cbfs/blob/x\" for "),
            "{line}"
        );
    }
}
