//! The end of a response: when its body ends, fails or is dropped, the connection goes back to
//! the pool (HTTP/1 once hyper can take the next request on it) or is closed, and the
//! request's telemetry ends.

use std::task::{Context, Poll, Waker};

use http::StatusCode;

use super::body::Completion;
use super::conn::{PoolClient, Tx};
use super::telemetry::RequestTelemetry;
use crate::pool::{Pooled, Returned};
use crate::stats::CloseReason;

/// What a response body does at its end.
pub(super) struct Done<B: Send + 'static> {
    pub(super) pooled: Option<Pooled<PoolClient<B>>>,
    pub(super) telemetry: RequestTelemetry,
    pub(super) status: StatusCode,
    /// The connection may take another request (neither side said `close`, not upgraded).
    pub(super) keep_alive: bool,
    pub(super) exec: super::exec::Exec,
}

/// Ends the IO events of the request on an HTTP/1 connection.
pub(super) fn disarm<B: Send + 'static>(pooled: &Pooled<PoolClient<B>>) {
    if let Some(io) = &pooled.facts.io {
        io.disarm();
    }
}

impl<B: Send + 'static> Completion for Done<B> {
    fn complete(self: Box<Self>, bytes: u64, error: Option<String>) {
        let Done {
            pooled,
            telemetry,
            status,
            keep_alive,
            exec,
        } = *self;
        let ending = telemetry.body_done(status, error.as_deref());
        let Some(pooled) = pooled else {
            return ending.report(None, bytes, error);
        };
        let conn_id = pooled.id();
        if pooled
            .facts
            .poisoned
            .load(std::sync::atomic::Ordering::Acquire)
        {
            disarm(&pooled);
            let returned = pooled.retire(CloseReason::Poisoned);
            return ending.report(Some((conn_id, returned)), bytes, error);
        }
        if pooled.is_http2() {
            let returned = pooled.release();
            return ending.report(Some((conn_id, returned)), bytes, error);
        }
        disarm(&pooled);
        if error.is_none() && keep_alive {
            release_when_ready(pooled, &exec, move |returned| {
                ending.report(Some((conn_id, returned)), bytes, None)
            });
        } else {
            pooled.discard();
            let returned = Returned::Closed(CloseReason::NotReusable);
            ending.report(Some((conn_id, returned)), bytes, error);
        }
    }
}

/// An HTTP/1 connection goes back once hyper says it can take the next request: at once in
/// the usual case, else when its task has finished the previous exchange. `then` runs after.
fn release_when_ready<B: Send + 'static>(
    mut pooled: Pooled<PoolClient<B>>,
    exec: &super::exec::Exec,
    then: impl FnOnce(Returned) + Send + 'static,
) {
    let finish = move |pooled: Pooled<PoolClient<B>>, ready: bool| {
        let returned = if ready {
            pooled.release()
        } else {
            pooled.discard();
            Returned::Closed(CloseReason::Broken)
        };
        then(returned);
    };
    let mut cx = Context::from_waker(Waker::noop());
    let polled = match &mut pooled.tx {
        Tx::H1(tx) => tx.poll_ready(&mut cx),
        Tx::H2(_) => Poll::Ready(Ok(())),
    };
    match polled {
        Poll::Ready(Ok(())) => finish(pooled, true),
        Poll::Ready(Err(_)) => finish(pooled, false),
        Poll::Pending => exec.execute(async move {
            let ready = match &mut pooled.tx {
                Tx::H1(tx) => std::future::poll_fn(|cx| tx.poll_ready(cx)).await.is_ok(),
                Tx::H2(_) => true,
            };
            finish(pooled, ready);
        }),
    }
}
