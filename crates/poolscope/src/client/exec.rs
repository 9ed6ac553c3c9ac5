//! `Exec`: the user's executor, type-erased, for connection tasks, dials and HTTP/2 streams.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

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
        self.0.execute(Box::pin(fut))
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
