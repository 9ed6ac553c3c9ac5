//! Bodies: `ReqBody`, the request body as hyper sees it (the user's body, or an empty one for a
//! replay, reporting its end to the request's probe), and [`ResponseBody`], the response body the
//! user gets, which returns the connection and finishes the request's events at its end.

use std::pin::Pin;
use std::sync::Arc;

use crate::sync::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::probe::RequestProbe;
use crate::pool::BoxError;
use crate::trace::io::IoEvents;

/// The request body handed to hyper: the user's, or none for a replayed empty one. Its end
/// goes to the request's probe (with the HTTP/1 connection's IO, which reports the write).
pub(crate) struct ReqBody<B> {
    body: Option<B>,
    probe: RequestProbe,
    io: Option<Arc<IoEvents>>,
}

impl<B> ReqBody<B> {
    pub(crate) fn new(body: B) -> ReqBody<B> {
        ReqBody {
            body: Some(body),
            probe: RequestProbe::default(),
            io: None,
        }
    }

    /// An empty body, for replaying a request whose body was empty.
    pub(crate) fn empty() -> ReqBody<B> {
        ReqBody {
            body: None,
            probe: RequestProbe::default(),
            io: None,
        }
    }

    /// Reports this body's end to `probe` (and to `io`, the HTTP/1 connection's, if the
    /// request is traced on one).
    #[inline]
    pub(crate) fn watch(&mut self, probe: RequestProbe, io: Option<Arc<IoEvents>>) {
        self.probe = probe;
        self.io = io;
    }

    fn ended(&self) {
        self.probe.body_sent(self.io.as_deref());
    }
}

impl<B> Body for ReqBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = &mut *self;
        let Some(body) = this.body.as_mut() else {
            this.ended();
            return Poll::Ready(None);
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(None) => {
                this.ended();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                // Trailers are the last frame: hyper sends them and stops polling.
                if frame.is_trailers() || this.body.as_ref().is_some_and(Body::is_end_stream) {
                    this.ended();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        let end = self.body.as_ref().is_none_or(Body::is_end_stream);
        if end {
            // hyper does not poll a body that says it is empty: report its end here.
            self.ended();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            Some(b) => b.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}

/// What happens when a response body ends: the connection goes back (or is closed) and the
/// request's events finish.
pub(crate) trait Completion: Send {
    /// `error` is `None` when the body was read to its end.
    fn complete(self: Box<Self>, bytes: u64, error: Option<String>);
}

/// The body of a response from a poolscope [`Client`](super::Client).
///
/// This is the one type that differs from hyper-util's legacy client, whose responses carry
/// `hyper::body::Incoming`: poolscope must see the end of the body to return the connection to
/// the pool and to finish the request's events and in-flight entry. It implements
/// [`http_body::Body`] with the same `Data` (`Bytes`) and `Error` (`hyper::Error`), so
/// `BodyExt::collect`, `frame` and friends work unchanged.
///
/// # Drop behavior
///
/// Read to its end, the body returns its HTTP/1 connection to the pool. Dropped before its
/// end, the connection is closed (its remaining bytes would have to be read first), as
/// hyper does.
pub struct ResponseBody {
    inner: hyper::body::Incoming,
    /// The request's probe, whose byte count this body updates.
    probe: RequestProbe,
    /// `Some` until the body ends, fails or is dropped.
    done: Mutex<Option<Box<dyn Completion>>>,
    bytes: u64,
    /// Trailers came: they are a body's last frame, whatever `inner` says of its end.
    trailers_seen: bool,
}

impl ResponseBody {
    pub(crate) fn new(
        inner: hyper::body::Incoming,
        done: Box<dyn Completion>,
        probe: RequestProbe,
    ) -> ResponseBody {
        probe.head_received();
        let body = ResponseBody {
            inner,
            probe,
            done: Mutex::new(Some(done)),
            bytes: 0,
            trailers_seen: false,
        };
        // A body known to be empty (HEAD, 204, 304, Content-Length: 0) ends now.
        if body.inner.is_end_stream() {
            body.finish(None);
        }
        body
    }

    fn finish(&self, error: Option<String>) {
        self.finish_with(|| error);
    }

    /// Completes once; `error` is built only if this call completes.
    fn finish_with(&self, error: impl FnOnce() -> Option<String>) {
        let done = self.done.lock().take();
        if let Some(done) = done {
            done.complete(self.bytes, error());
        }
    }

    /// Body bytes received so far.
    pub fn bytes_received(&self) -> u64 {
        self.bytes
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                    this.probe.bytes(data.len() as u64);
                }
                // Trailers end the body even though hyper's `is_end_stream` does not say so
                // for a chunked HTTP/1 body, and a consumer (hyper itself, when the body is
                // forwarded) may drop it right after them.
                if frame.is_trailers() {
                    this.trailers_seen = true;
                }
                if this.trailers_seen || this.inner.is_end_stream() {
                    this.finish(None);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(Some(format!("error reading response body: {e}")))
            }
            Poll::Ready(None) => this.finish(None),
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.trailers_seen || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.finish_with(|| Some("response body dropped before its end".to_owned()));
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("bytes", &self.bytes)
            .finish()
    }
}
