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

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;

use crate::Client;

/// The debug service of [`service`].
#[derive(Clone, Debug)]
pub struct DebugService<C, B> {
    client: Client<C, B>,
}

/// A hyper service serving `/debug/inflight`, `/debug/pool` and `/debug/events` for
/// `client` (text, or JSON with `?format=json`). Other paths answer 404.
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
    /// Answers one debug request.
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
        match req.uri().path() {
            "/debug/inflight" => {
                let r = self.client.in_flight();
                if json {
                    as_json(r.to_json())
                } else {
                    text(r.to_string())
                }
            }
            "/debug/pool" => {
                let s = self.client.pool_snapshot();
                if json {
                    as_json(s.to_json())
                } else {
                    text(format!("{s}\n"))
                }
            }
            "/debug/events" => {
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

impl<C, B, ReqB> hyper::service::Service<Request<ReqB>> for DebugService<C, B>
where
    B: Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<ReqB>) -> Self::Future {
        let resp = self.answer(&req);
        Box::pin(async move { Ok(resp) })
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
    C: Send + Sync + 'static,
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
    C: Send + Sync + 'static,
    B: Send + 'static,
    F: Fn(String) + Send + 'static,
{
    let mut stream = tokio::signal::unix::signal(signal)?;
    Ok(tokio::spawn(async move {
        while stream.recv().await.is_some() {
            write(format!("{}{}", client.in_flight(), client.pool_snapshot()));
        }
    }))
}
