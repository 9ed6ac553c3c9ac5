//! Debug endpoints and a signal dump: what the client is doing, on demand.
//!
//! - [`service`]: a hyper service to mount in your own server, answering
//!   `GET /debug/inflight` (the in-flight report; `?format=json` for JSON), `GET /debug/pool`
//!   (the pool snapshot, text or JSON) and `GET /debug/events` (the event history).
//! - [`dump_on_signal`]: writes the in-flight report and the pool snapshot to stderr each time
//!   the process receives a signal (`SIGUSR1`, say), as Go's tracker does on `SIGINFO`.
//!
//! **Do not expose these publicly.** They show the URLs (paths and queries, without
//! userinfo) your process is requesting, the stacks that started them and your pool's state.
//! Mount them on a loopback or admin-only listener.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;

use crate::Client;

/// The debug service of [`service`]: a hyper `Service` and a `tower::Service`, so it can be
/// served by hyper directly or mounted in an axum `Router`.
#[derive(Debug)]
pub struct DebugService<C, B> {
    client: Client<C, B>,
}

impl<C: Clone, B> Clone for DebugService<C, B> {
    fn clone(&self) -> Self {
        DebugService {
            client: self.client.clone(),
        }
    }
}

/// A service serving `/debug/inflight`, `/debug/pool` and `/debug/events` for `client`
/// (text, or JSON with `?format=json`). Other paths answer 404. Nested under a prefix that
/// its router strips (axum's `Router::nest_service("/debug", ...)`), it answers `/inflight`,
/// `/pool` and `/events` the same.
///
/// In axum:
///
/// ```ignore
/// let app = axum::Router::new().nest_service("/debug", poolscope::debug::service(client));
/// ```
///
/// # Examples
///
/// ```no_run
/// # async fn run(client: poolscope::Client<poolscope::connect::HttpConnector, http_body_util::Empty<bytes::Bytes>>) {
/// use hyper_util::rt::{TokioExecutor, TokioIo};
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:6060").await.unwrap();
/// loop {
///     let (tcp, _) = listener.accept().await.unwrap();
///     let svc = poolscope::debug::service(client.clone());
///     tokio::spawn(async move {
///         let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
///             .serve_connection(TokioIo::new(tcp), svc)
///             .await;
///     });
/// }
/// # }
/// ```
pub fn service<C, B>(client: Client<C, B>) -> DebugService<C, B> {
    DebugService { client }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

impl<C, B: Send + 'static> DebugService<C, B> {
    /// Answers one debug request on the calling thread (an in-flight report resolves its
    /// stacks' symbols here). The service's `call` runs this on a blocking thread.
    pub fn answer<ReqB>(&self, req: &Request<ReqB>) -> Response<Full<Bytes>> {
        let json = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "format=json"));
        let text = |s: String| reply(StatusCode::OK, "text/plain; charset=utf-8", s);
        let as_json = |s: String| reply(StatusCode::OK, "application/json", s);
        if req.method() != http::Method::GET {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "GET only\n".into(),
            );
        }
        let path = req.uri().path();
        match path.strip_prefix("/debug").unwrap_or(path) {
            "/inflight" => {
                let r = self.client.in_flight();
                if json {
                    as_json(r.to_json())
                } else {
                    text(r.to_string())
                }
            }
            "/pool" => {
                let s = self.client.pool_snapshot();
                if json {
                    as_json(s.to_json())
                } else {
                    text(format!("{s}\n"))
                }
            }
            "/events" => {
                let events = self.client.recent_events();
                if json {
                    as_json(serde_json::to_string(&events).unwrap_or_else(|_| "[]".into()))
                } else {
                    text(events.iter().map(|e| format!("{e}\n")).collect())
                }
            }
            _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        }
    }
}

impl<C, B> DebugService<C, B>
where
    C: Clone + Send + Sync + 'static,
    B: Send + 'static,
{
    /// Answers on a blocking thread: a report resolves its stacks' symbols (reading debug
    /// info, milliseconds the first time), which must not occupy a runtime worker.
    fn answer_off_worker<ReqB>(&self, req: &Request<ReqB>) -> AnswerFuture {
        let mut head = Request::new(());
        *head.method_mut() = req.method().clone();
        *head.uri_mut() = req.uri().clone();
        let svc = self.clone();
        let answer = tokio::task::spawn_blocking(move || svc.answer(&head));
        Box::pin(async move {
            Ok(answer.await.unwrap_or_else(|_| {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "the runtime is shutting down\n".into(),
                )
            }))
        })
    }
}

/// The future of a [`DebugService`]'s answer.
pub type AnswerFuture =
    Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

impl<C, B, ReqB> hyper::service::Service<Request<ReqB>> for DebugService<C, B>
where
    C: Clone + Send + Sync + 'static,
    B: Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = AnswerFuture;

    fn call(&self, req: Request<ReqB>) -> Self::Future {
        self.answer_off_worker(&req)
    }
}

impl<C, B, ReqB> tower_service::Service<Request<ReqB>> for DebugService<C, B>
where
    C: Clone + Send + Sync + 'static,
    B: Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = AnswerFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        self.answer_off_worker(&req)
    }
}

/// Writes the in-flight report and the pool snapshot to stderr each time the process
/// receives `signal` (e.g. `SignalKind::user_defined1()` for `SIGUSR1`). Runs until the
/// returned task is aborted.
///
/// # Errors
///
/// The signal handler could not be installed.
#[cfg(unix)]
pub fn dump_on_signal<C, B>(
    client: Client<C, B>,
    signal: tokio::signal::unix::SignalKind,
) -> std::io::Result<tokio::task::JoinHandle<()>>
where
    C: Clone + Send + Sync + 'static,
    B: Send + 'static,
{
    dump_on_signal_with(client, signal, |dump| eprintln!("{dump}"))
}

/// Like [`dump_on_signal`], handing each dump (the in-flight report, then the pool snapshot)
/// to `write` instead of stderr.
///
/// # Errors
///
/// The signal handler could not be installed.
#[cfg(unix)]
pub fn dump_on_signal_with<C, B, F>(
    client: Client<C, B>,
    signal: tokio::signal::unix::SignalKind,
    write: F,
) -> std::io::Result<tokio::task::JoinHandle<()>>
where
    C: Clone + Send + Sync + 'static,
    B: Send + 'static,
    F: Fn(String) + Send + 'static,
{
    let mut stream = tokio::signal::unix::signal(signal)?;
    Ok(tokio::spawn(async move {
        while stream.recv().await.is_some() {
            // Resolving the stacks' symbols runs on a blocking thread, not on a worker.
            let client = client.clone();
            let dump = tokio::task::spawn_blocking(move || {
                format!("{}{}", client.in_flight(), client.pool_snapshot())
            });
            match dump.await {
                Ok(dump) => write(dump),
                Err(_) => return,
            }
        }
    }))
}
