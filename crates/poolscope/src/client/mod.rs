//! `Client`: a drop-in for hyper-util's legacy client, on poolscope's pool.
//!
//! - [`Client`] / [`Builder`]: the same API as `hyper_util::client::legacy` (see
//!   `docs/migration.md`), plus pool limits, [`Stats`](crate::Stats) and
//!   [`ClientTrace`].
//! - [`ResponseBody`]: the response body; the one type that changes when migrating.
//! - [`Error`]: which phase of a request failed.
//!
//! What this module does not do: redirects, cookies, decompression (like hyper-util's legacy
//! client, it is a connection-pooling transport). It does choose a proxy per origin when
//! [`Builder::proxy`] is set (as Go's `Transport.Proxy`; see
//! [`Proxy`](crate::connect::Proxy)); a connector that dials a proxy itself and says so with
//! `Connected::proxy` gets absolute-form requests, and CONNECT and upgrades work through
//! `hyper::upgrade::on`.
//!
//! # Request lifecycle
//!
//! 1. The URI gives the pool key (scheme, host, port). `get_conn` fires.
//! 2. The pool hands an idle connection, or the request waits; when the pool allows, a dial
//!    starts on the executor (DNS, connect, TLS events go to this request's trace) and the
//!    new connection is handshaken as HTTP/1.1 or HTTP/2 (ALPN `h2`, or `http2_only`).
//! 3. `got_conn`; the request is written (`wrote_headers`, `wrote_request`); the response head
//!    arrives (`got_first_response_byte`).
//! 4. The response is returned with a [`ResponseBody`]. When the body ends the HTTP/1
//!    connection goes back to the pool (`put_idle_conn`), and `response_body_done` and
//!    `request_done` (with [`RequestTimings`](crate::trace::RequestTimings)) fire. A body
//!    dropped early closes its HTTP/1 connection.
//!
//! # Retries
//!
//! A request is sent again, on another connection or stream, only after a failure that says
//! the server did not process it, or could not have if the request is idempotent (the table
//! with the reasons: `docs/http2.md`):
//!
//! | failure | retried | why it is safe |
//! |---|---|---|
//! | hyper gave the request back unsent (the connection closed first, fresh or reused; hyper-util: only a reused HTTP/1 connection) | any method, with `retry_canceled_requests` (default on) | nothing was written |
//! | HTTP/2 stream reset with `REFUSED_STREAM` | any method whose body can be replayed | RFC 9113 §8.7: the server did no processing |
//! | HTTP/2 stream failed by `GOAWAY(NO_ERROR)` (above its last stream id, or opened after it) | any method whose body can be replayed | RFC 9113 §6.8: the server did not process streams above the last stream id |
//! | HTTP/2 stream failed by `GOAWAY` with an error code | idempotent requests whose body can be replayed | streams at or below the last stream id fail the same way, and may have been processed |
//! | a reused HTTP/1 connection the server had closed while idle (reset, EOF before a response) | idempotent requests whose body can be replayed | the request may have reached the server, so only one that may be repeated |
//! | an HTTP/2 connection closed under the stream before its response (a graceful restart: GOAWAY, then the close), fresh or reused | idempotent requests whose body can be replayed | the failure is the connection's; the request may have been processed |
//! | hyper's dispatcher ended while it held the request ("dispatch task is gone") | idempotent requests whose body can be replayed | whether it was sent is unknown |
//! | anything else (a stream reset with another code, a timeout, a malformed response) | never | the server may have acted on it |
//!
//! Idempotent: GET, HEAD, OPTIONS, TRACE, or a request with an `Idempotency-Key` header
//! (Go's `isReplayable`). A body can be replayed when it is empty, or a `Full<Bytes>`,
//! `Bytes` or `String` not yet sent (it is cloned before the first attempt); a streaming body
//! is never sent twice. A request makes at most 32 attempts, of which at most 10 may have
//! been processed (the other failures say the server did not process it: unsent, refused,
//! above a GOAWAY's last stream), pausing from the third attempt on (1 ms, doubling, up to 256 ms). Each retry fires
//! `ClientTrace::on_retry` with its [`RetryReason`](crate::trace::RetryReason), is counted in
//! `RequestTimings::resend_count`, in the history (`request_retry`) and in the metric
//! `poolscope.request.resends{poolscope.retry_reason}`. A request that fails in the end says why
//! it was not sent again in its error's `Display`.
//!
//! An HTTP/2 connection is leased to at most the server's `SETTINGS_MAX_CONCURRENT_STREAMS`
//! requests (hyper assumes 100 until the server's SETTINGS arrive, as Go does); beyond that a
//! request dials another connection within `pool_max_conns_per_host`, or waits for a stream to
//! come free. A connection that failed a stream with GOAWAY takes no new requests and closes
//! when its last one ends (`CloseReason::GoAway`).

mod body;
mod builder;
mod capture;
mod conn;
mod end;
mod error;
mod exec;
mod origin;
mod probe;
mod retry;
mod send;
mod target;
mod telemetry;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, Uri};

pub use body::ResponseBody;
pub use builder::{Builder, TelemetryBuilder};
pub use capture::{capture_connection, CaptureConnection, ConnectionInfo};
pub use error::Error;
pub use exec::BoxSendFuture;

use crate::connect::{Connect, RequestBody};
use crate::history::{History, RecordedEvent};
use crate::inflight::{InFlightReport, Registry};
use crate::pool::Pool;
use crate::stats::PoolSnapshot;
use crate::trace::ClientTrace;
use conn::{DialConfig, PoolClient};

/// An HTTP client with an instrumented connection pool. Cloning is cheap and shares the pool.
///
/// # Examples
///
/// ```no_run
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Empty};
/// use hyper_util::rt::TokioExecutor;
/// use poolscope::Client;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
/// let resp = client.get("http://127.0.0.1:8080/".parse()?).await?;
/// let body = resp.into_body().collect().await?.to_bytes();
/// println!("{} bytes; pool:\n{}", body.len(), client.pool_snapshot());
/// # Ok(()) }
/// ```
pub struct Client<C, B> {
    shared: Arc<Shared<B>>,
    connector: C,
}

pub(crate) struct Shared<B> {
    pool: Pool<PoolClient<B>>,
    inflight: Option<Arc<Registry>>,
    history: Option<Arc<History>>,
    dial: DialConfig,
    trace: ClientTrace,
    /// The dial-phase metrics hooks, when metrics are on.
    metrics_trace: Option<ClientTrace>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    retry_canceled_requests: bool,
    set_host: bool,
    next_request: AtomicU64,
    origins: origin::Origins,
    /// The user's URL rewriting, for the request span's `url.full`.
    redact: Option<crate::redact::Redact>,
    /// The methods the request span names (the metrics keep their own copy).
    methods: crate::methods::KnownMethods,
    levels: crate::spans::Levels,
    inject: Option<crate::spans::InjectContext>,
}

impl Client<(), ()> {
    /// Starts building a client whose connection tasks run on `executor` (e.g.
    /// `hyper_util::rt::TokioExecutor::new()`).
    pub fn builder<E>(executor: E) -> Builder
    where
        E: hyper::rt::Executor<BoxSendFuture> + Send + Sync + Clone + 'static,
    {
        Builder::new(executor)
    }
}

impl<C, B> Client<C, B>
where
    C: Connect,
    B: RequestBody,
{
    /// Sends a `GET` to `uri` with a default (empty) body.
    #[track_caller]
    pub fn get(&self, uri: Uri) -> ResponseFuture
    where
        B: Default,
    {
        let mut req = Request::new(B::default());
        *req.uri_mut() = uri;
        self.request(req)
    }

    /// Sends `req`. The URI must be absolute. A [`ClientTrace`] in the request's extensions
    /// traces this request (as well as the client-wide one).
    ///
    /// The in-flight report names where each request was issued (`#[track_caller]`: the
    /// caller's `file:line`, with or without captured stacks).
    #[track_caller]
    pub fn request(&self, req: Request<B>) -> ResponseFuture {
        let shared = &self.shared;
        let id = shared
            .next_request
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Captured here, inlined: the caller's frame is the second one the unwinder meets.
        let stack = shared
            .inflight
            .as_ref()
            .filter(|r| r.captures_stacks())
            .map(|_| crate::inflight::RawStack::capture());
        let mut req = req;
        let origin = self.check(&mut req);
        // Started here, synchronously, so a captured stack shows the caller.
        let telemetry = telemetry::RequestTelemetry::start(
            shared,
            id,
            &req,
            origin.as_ref().ok().map(|o| &o.key),
            std::panic::Location::caller(),
            stack,
        );
        // The request's future itself, boxed once (an `async` block around it would be moved,
        // whole, once more), run in the request's span if there is one (only when someone
        // records it).
        if let Some(span) = telemetry.span() {
            if let Some(inject) = &shared.inject {
                span.inject(inject, req.headers_mut());
            }
            let span = span.handle();
            let fut = span.instrument(self.clone().send(req, origin, telemetry));
            return ResponseFuture {
                inner: crate::sync::Mutex::new(Box::pin(fut)),
            };
        }
        ResponseFuture {
            inner: crate::sync::Mutex::new(Box::pin(self.clone().send(req, origin, telemetry))),
        }
    }
}

impl<C, B: Send + 'static> Client<C, B> {
    /// The pool as it is now: idle, active and connecting connections and waiters per key.
    pub fn pool_snapshot(&self) -> PoolSnapshot {
        self.shared.pool.snapshot()
    }

    /// The requests in flight now, oldest first (empty if `track_in_flight(false)`).
    ///
    /// ```text
    /// In-flight HTTP requests:
    ///   servicing GET "http://127.0.0.1:8080/slow" for 56.705274ms
    /// ```
    ///
    /// With `capture_stacks(true)`, the report resolves the stacks' symbols on the calling
    /// thread (reading debug info: milliseconds the first time, then cached). Requests never
    /// wait for it: capturing a stack takes no lock that resolving holds. From async code,
    /// call it in `tokio::task::spawn_blocking`, as [`debug::service`](crate::debug::service)
    /// and [`debug::dump_on_signal`](crate::debug::dump_on_signal) do, so that it does not
    /// occupy a runtime worker.
    pub fn in_flight(&self) -> InFlightReport {
        self.shared
            .inflight
            .as_ref()
            .map(|r| r.report())
            .unwrap_or_default()
    }

    /// The last pool and request events, oldest first (empty unless `event_history(n)`).
    pub fn recent_events(&self) -> Vec<RecordedEvent> {
        self.shared
            .history
            .as_ref()
            .map(|h| h.recent())
            .unwrap_or_default()
    }

    /// Closes every idle connection now.
    pub fn close_idle_connections(&self) {
        self.shared.pool.close_idle_connections()
    }
}

impl<C: Clone, B> Clone for Client<C, B> {
    fn clone(&self) -> Self {
        Client {
            shared: self.shared.clone(),
            connector: self.connector.clone(),
        }
    }
}

impl<C, B> std::fmt::Debug for Client<C, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// The future of [`Client::request`]: the response head, or an [`Error`].
///
/// # Cancel safety
///
/// Dropping it cancels the request: it leaves the pool's queues (a connection delivered to it
/// meanwhile goes back to the pool), a dial it started keeps running and its connection
/// serves the next request, and an HTTP/1 connection it was writing to or reading from is
/// closed.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture {
    /// In a `Mutex` only so that the future is `Sync`, as hyper-util's is: it is never
    /// locked (`poll` has `&mut` access and uses `get_mut`), so it costs no synchronisation.
    inner: crate::sync::Mutex<BoxResponseFuture>,
}

type BoxResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Error>> + Send>>;

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().inner.get_mut().as_mut().poll(cx)
    }
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture")
    }
}

macro_rules! service_impl {
    ($($t:ty),*) => {$(
        impl<C, B> tower_service::Service<Request<B>> for $t
        where
            C: Connect,
            B: RequestBody,
        {
            type Response = Response<ResponseBody>;
            type Error = Error;
            type Future = ResponseFuture;

            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
                Poll::Ready(Ok(()))
            }

            #[track_caller]
            fn call(&mut self, req: Request<B>) -> ResponseFuture {
                self.request(req)
            }
        }
    )*};
}

service_impl!(Client<C, B>, &'_ Client<C, B>);
