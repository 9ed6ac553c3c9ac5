//! `Exec`: the user's executor, type-erased, for connection tasks, dials and HTTP/2 streams;
//! and [`Held`], which keeps the task hyper spawns during an HTTP/2 handshake for the
//! connection's own driver instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::sync::Mutex;

/// A boxed `Send` future, what the client asks its executor to run.
pub type BoxSendFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor given to [`Client::builder`](super::Client::builder).
#[derive(Clone)]
pub(crate) struct Exec(Arc<dyn hyper::rt::Executor<BoxSendFuture> + Send + Sync>);

impl Exec {
    pub(crate) fn new<E>(e: E) -> Exec
    where
        E: hyper::rt::Executor<BoxSendFuture> + Send + Sync + 'static,
    {
        Exec(Arc::new(e))
    }

    pub(crate) fn execute<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut fut = Some(Box::pin(fut) as BoxSendFuture);
        // Inside `Held::during`, the first future is kept, not spawned.
        let _ = HELD.try_with(|held| held.offer(&mut fut));
        if let Some(fut) = fut {
            self.0.execute(fut)
        }
    }
}

tokio::task_local! {
    static HELD: Held;
}

/// The first future spawned while a future runs under [`Held::during`], kept for the caller
/// to poll itself.
///
/// An HTTP/2 handshake spawns h2's connection task (frames in and out) apart from hyper's
/// dispatcher (which opens streams). Run on two threads at once, they race: the dispatcher
/// opens a stream, the connection task writes it, and the server's GOAWAY naming it as
/// processed can arrive before the dispatcher's next check, which then fails the stream with
/// the connection's GOAWAY as if it had never been sent (and a `GOAWAY(NO_ERROR)` failure is
/// one that is retried for any method). Polled by one task, the two take turns and the
/// check sees only a GOAWAY that came before the stream was opened.
#[derive(Clone, Default)]
pub(crate) struct Held(Arc<Mutex<HeldSlot>>);

#[derive(Default)]
struct HeldSlot {
    offered: bool,
    fut: Option<BoxSendFuture>,
}

impl Held {
    /// Runs `fut`, keeping the first future it spawns on an [`Exec`].
    pub(crate) async fn during<F: Future>(&self, fut: F) -> F::Output {
        HELD.scope(self.clone(), fut).await
    }

    /// The kept future, if one was spawned.
    pub(crate) fn take(&self) -> Option<BoxSendFuture> {
        self.0.lock().fut.take()
    }

    fn offer(&self, fut: &mut Option<BoxSendFuture>) {
        let mut slot = self.0.lock();
        if !slot.offered {
            slot.offered = true;
            slot.fut = fut.take();
        }
    }
}

impl<F> hyper::rt::Executor<F> for Exec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        Exec::execute(self, fut)
    }
}

impl std::fmt::Debug for Exec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exec")
    }
}
