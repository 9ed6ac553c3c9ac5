//! `Checkout`: a request's way through the pool, and `Connecting`: a dial it was allowed.
//!
//! A checkout resolves to a connection, but on the way it may hand its caller a
//! [`Connecting`] permit ("you may dial now"). The caller runs the dial on its own (usually a
//! spawned task) and keeps polling the checkout: whichever comes first — a returned
//! connection or the finished dial — is delivered, and the other goes back to the pool. This
//! is how a request sits in both of Go's queues at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;

use super::conn::{Lease, Pooled};
use super::error::{BoxError, Error, Kind};
use super::inner::{self, Shared, Start, WaiterRef};
use super::timer::Timers;
use super::{ConnId, ConnectKey, Poolable};
use crate::stats::WaitOutcome;

/// What a [`Checkout`] produced.
#[derive(Debug)]
pub enum Step<T: Poolable> {
    /// The caller may dial a new connection for this key; finish the permit with the result.
    /// Keep polling the checkout afterwards.
    Dial(Connecting<T>),
    /// A connection.
    Ready(Pooled<T>),
}

/// A request waiting for a connection of one key. Created by
/// [`Pool::checkout`](super::Pool::checkout).
///
/// Poll it with [`step`](Checkout::step) until it returns [`Step::Ready`] or an error.
///
/// # Cancel safety
///
/// Dropping a checkout takes the request out of the queues (with `*_wait_out` events, outcome
/// `Cancelled`). A connection delivered to it in the meantime goes back to the pool, and a dial
/// permission it never picked up is passed on. A dial it already started keeps running and
/// its connection serves the next waiter or goes idle.
pub struct Checkout<T: Poolable> {
    state: State<T>,
    timeout: Option<WaitTimeout>,
}

/// The pool-wait timeout of a waiting checkout: a deadline, and the pool timer's sleep
/// until it once the checkout is polled where the pool has a timer. Without one (a pool
/// polled by hand, a runtime built without `enable_time`), the deadline is checked whenever
/// the checkout is polled.
struct WaitTimeout {
    at: tokio::time::Instant,
    sleep: Option<Pin<Box<dyn hyper::rt::Sleep>>>,
}

impl WaitTimeout {
    fn new(at: tokio::time::Instant) -> WaitTimeout {
        WaitTimeout { at, sleep: None }
    }

    /// Whether the deadline passed; arms the timer (which wakes the task then) if it can.
    fn poll_elapsed(&mut self, cx: &mut Context<'_>, timers: &Timers) -> bool {
        // At most twice: a sleep may end early (its runtime went away), and then a new one is
        // armed on the runtime this runs on now, or the deadline is checked when polled.
        for _ in 0..2 {
            if tokio::time::Instant::now() >= self.at {
                return true;
            }
            if self.sleep.is_none() {
                self.sleep = timers.sleep_until(self.at);
            }
            let Some(sleep) = &mut self.sleep else {
                return false;
            };
            if sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            self.sleep = None;
        }
        tokio::time::Instant::now() >= self.at
    }
}

/// Where the checkout is. The pool handle and the key live in the states that need them, so
/// that a connection handed out takes them along instead of cloning them (two reference
/// counts fewer per request).
enum State<T: Poolable> {
    Ready(Lease<T>, Parts<T>),
    Waiting(WaiterRef, Parts<T>),
    Failed(Error, ConnectKey),
    Done,
}

struct Parts<T> {
    shared: Arc<Shared<T>>,
    key: ConnectKey,
}

impl<T: Poolable> Checkout<T> {
    pub(super) fn new(shared: Arc<Shared<T>>, key: ConnectKey, wants_shared: bool) -> Checkout<T> {
        let mut locked = shared.lock();
        let start = locked.checkout(&key, wants_shared);
        let deadline = shared.config.wait_timeout.map(|t| locked.now() + t);
        // The checkout owns its waiter (or lease) before any user code runs: if a hook
        // panics in `finish`, unwinding drops it, which cancels the waiter (or returns the
        // lease) instead of leaving a ghost that holds a slot or swallows a connection.
        let parts = Parts {
            shared: shared.clone(),
            key,
        };
        let (state, timeout) = match start {
            Ok(Start::Ready(lease)) => (State::Ready(lease, parts), None),
            Ok(Start::Wait(r)) => (State::Waiting(r, parts), deadline.map(WaitTimeout::new)),
            Err(e) => (State::Failed(e, parts.key), None),
        };
        let checkout = Checkout { state, timeout };
        locked.finish(&shared);
        checkout
    }

    /// The key this checkout waits on; `None` once it has produced its connection or error
    /// (the key went along with the connection).
    pub fn key(&self) -> Option<&ConnectKey> {
        match &self.state {
            State::Ready(_, parts) | State::Waiting(_, parts) => Some(&parts.key),
            State::Failed(_, key) => Some(key),
            State::Done => None,
        }
    }

    /// Whether a connection was available at once (no waiting, no dial).
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready(..))
    }

    /// Waits for the next step: a dial permit or a connection.
    ///
    /// # Errors
    ///
    /// The pool-wait timeout elapsed ([`Error::is_timeout`], with a snapshot), the pool was
    /// closed, or the dial this request started failed ([`Error::is_dial`]).
    pub async fn step(&mut self) -> Result<Step<T>, Error> {
        std::future::poll_fn(|cx| self.poll_step(cx)).await
    }

    /// Polls for the next step; see [`step`](Checkout::step).
    pub fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Result<Step<T>, Error>> {
        // The state stays `Waiting` (owning the waiter, which its `Drop` cancels) until the
        // waiter is gone from the pool and every call into user code is over.
        if !matches!(self.state, State::Waiting(..)) {
            return Poll::Ready(match std::mem::replace(&mut self.state, State::Done) {
                State::Ready(lease, parts) => {
                    Ok(Step::Ready(Pooled::new(lease, parts.key, parts.shared)))
                }
                State::Failed(e, _) => Err(e),
                State::Done | State::Waiting(..) => Err(Error::new(Kind::PolledAfterCompletion)),
            });
        }
        let State::Waiting(wref, parts) = &self.state else {
            unreachable!("checked above")
        };
        let wref = *wref;
        // Poll the timer before taking the lock; a delivered result still wins below.
        let timed_out = self
            .timeout
            .as_mut()
            .is_some_and(|t| t.poll_elapsed(cx, &parts.shared.timers));
        let mut locked = parts.shared.lock();
        let lease = match locked.poll_waiter(wref, cx.waker()) {
            inner::Found::Done(Ok(lease)) => lease,
            inner::Found::Done(Err(e)) => {
                locked.finish(&parts.shared);
                self.state = State::Done;
                return Poll::Ready(Err(e));
            }
            inner::Found::Dial(inner::DialGrant {
                id,
                shared_hint,
                concurrency_hint,
            }) => {
                // Owned before `finish` runs user code: dropped by an unwind, the permit ends
                // the dial as abandoned and its slot passes on.
                let permit = Connecting {
                    shared: Some(parts.shared.clone()),
                    key: parts.key.clone(),
                    id,
                    owner: wref,
                    shared_hint,
                    concurrency_hint,
                    started: locked.now(),
                };
                locked.finish(&parts.shared);
                return Poll::Ready(Ok(Step::Dial(permit)));
            }
            inner::Found::Pending if timed_out => {
                // The timed-out key's row only: a full snapshot would walk every key under
                // the lock, for each waiter of a storm of timeouts.
                let unfinished = locked.snapshot_of(&parts.key);
                locked.cancel_waiter(wref, WaitOutcome::TimedOut);
                locked.finish(&parts.shared);
                let snapshot = unfinished.finish();
                self.state = State::Done;
                return Poll::Ready(Err(Error::new(Kind::WaitTimeout).with_snapshot(snapshot)));
            }
            inner::Found::Pending => {
                locked.finish(&parts.shared);
                return Poll::Pending;
            }
        };
        // The waiter is gone with its result: the lease goes back to the pool if `finish`
        // panics.
        let mut guard = PutBack {
            lease: Some(lease),
            parts,
        };
        locked.finish(&parts.shared);
        let lease = guard.lease.take();
        drop(guard);
        let (Some(lease), State::Waiting(_, parts)) =
            (lease, std::mem::replace(&mut self.state, State::Done))
        else {
            unreachable!("the lease and the state were set above")
        };
        Poll::Ready(Ok(Step::Ready(Pooled::new(lease, parts.key, parts.shared))))
    }

    /// Drives the checkout to a connection, running each dial it is allowed with `dial` on a
    /// spawned tokio task, so that a dial outlives a request that stops waiting for it.
    ///
    /// # Errors
    ///
    /// As [`step`](Checkout::step).
    pub async fn connect_with<F, Fut>(mut self, mut dial: F) -> Result<Pooled<T>, Error>
    where
        F: FnMut(ConnId) -> Fut,
        Fut: Future<Output = Result<T, BoxError>> + Send + 'static,
    {
        loop {
            match self.step().await? {
                Step::Ready(conn) => return Ok(conn),
                Step::Dial(permit) => {
                    let fut = dial(permit.id());
                    tokio::spawn(async move { permit.finish(fut.await) });
                }
            }
        }
    }
}

/// A lease between its waiter and its `Pooled`: given back if it is dropped there (an unwind).
struct PutBack<'a, T: Poolable> {
    lease: Option<Lease<T>>,
    parts: &'a Parts<T>,
}

impl<T: Poolable> Drop for PutBack<'_, T> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            // Delivered but never used: not a request served.
            self.parts.shared.put_unused(&self.parts.key, lease);
        }
    }
}

impl<T: Poolable> Drop for Checkout<T> {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Waiting(wref, parts) => {
                let mut locked = parts.shared.lock();
                locked.cancel_waiter(wref, WaitOutcome::Canceled);
                locked.finish(&parts.shared);
            }
            State::Ready(lease, parts) => {
                // Leased at checkout but never handed out: not a request served.
                parts.shared.put_unused(&parts.key, lease);
            }
            State::Failed(..) | State::Done => {}
        }
    }
}

impl<T: Poolable> std::fmt::Debug for Checkout<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkout")
            .field("key", &self.key())
            .finish()
    }
}

/// Permission to dial one connection for a key, counted against `max_conns_per_host` from
/// the moment it was granted.
///
/// # Drop behavior
///
/// Dropping it without [`finish`](Connecting::finish) counts as a failed dial: the slot is
/// released and the request that started it gets an error ([`Error::is_dial`]).
pub struct Connecting<T: Poolable> {
    /// `Some` until finished.
    shared: Option<Arc<Shared<T>>>,
    key: ConnectKey,
    id: ConnId,
    owner: WaiterRef,
    shared_hint: bool,
    concurrency_hint: Option<usize>,
    started: Instant,
}

impl<T: Poolable> Connecting<T> {
    /// The id the new connection will have.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The key to dial.
    pub fn key(&self) -> &ConnectKey {
        &self.key
    }

    /// The smallest [`max_concurrent`](Poolable::max_concurrent) among the key's live shared
    /// connections when this dial was granted, if any has one: a dialer of a multiplexed
    /// protocol may start the new connection with it (HTTP/2: as the stream limit assumed
    /// until the server's SETTINGS arrive), so that a server with a low limit does not have
    /// every new connection overcommitted.
    pub fn concurrency_hint(&self) -> Option<usize> {
        self.concurrency_hint
    }

    /// Hands the dial's result to the pool: a connection serves the request that started the
    /// dial if it still waits, else the oldest waiter, else goes idle; an error goes to the
    /// request that started the dial and frees the slot.
    pub fn finish(mut self, result: Result<T, BoxError>) {
        self.complete(result.map_err(inner::dial_error));
    }

    fn complete(&mut self, result: Result<T, Error>) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let mut locked = shared.lock();
        locked.finish_dial(
            &self.key,
            self.id,
            self.owner,
            self.shared_hint,
            self.started,
            result,
        );
        locked.finish(&shared);
    }
}

impl<T: Poolable> Drop for Connecting<T> {
    fn drop(&mut self) {
        self.complete(Err(Error::new(Kind::DialAbandoned)));
    }
}

impl<T: Poolable> std::fmt::Debug for Connecting<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connecting")
            .field("key", &self.key)
            .field("id", &self.id)
            .finish()
    }
}
