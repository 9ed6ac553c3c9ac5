//! One request's way through the client: checkout (dialing when allowed), write, response,
//! retries on stale connections, and what happens when the body ends.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use http::header::{CONNECTION, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};

use super::body::{BodyEnd, Completion, ReqBody, ResponseBody};
use super::conn::{self, PoolClient, Tx};
use super::error::{Error, Kind};
use super::Client;
use crate::connect::{Connect, RequestBody};
use crate::history::{History, RequestEvent};
use crate::inflight::{Entry, Phase, Registration};
use crate::pool::{ConnectKey, Pooled, Returned, Step};
use crate::trace::{
    BodyDoneInfo, ClientTrace, FirstByteInfo, GetConnInfo, Got1xxInfo, GotConnInfo, Mark,
    PutIdleConnInfo, RequestDoneInfo, RetryInfo, RetryReason, Tracer, WroteInfo,
};

/// Attempts per request, retries included: each retry is on another connection (or another
/// stream), and only after a failure that is safe to repeat (see [`Retryable`]).
const MAX_ATTEMPTS: u32 = 10;

/// A failed attempt, and whether it may be repeated.
struct Failed<B> {
    error: Error,
    /// The request, if hyper gave it back unsent.
    unsent: Option<Request<ReqBody<B>>>,
    /// Why it may be repeated, if it may.
    retry: Option<Retryable>,
}

/// A failure after which the request may be sent again.
#[derive(Debug, Clone, Copy)]
struct Retryable {
    reason: RetryReason,
    /// The server certainly did not process the request (HTTP/2 GOAWAY above the request's
    /// stream, `REFUSED_STREAM`, never sent): safe for any method. Otherwise (a stale
    /// connection) only for an idempotent request.
    unprocessed: bool,
    /// The connection the attempt failed on.
    conn_id: crate::pool::ConnId,
}

/// What is needed to send a request again when hyper does not give it back: its head, and
/// its body if that is empty or of a type we can clone before it is sent.
struct Replay<B> {
    method: Method,
    uri: Uri,
    version: Version,
    headers: http::HeaderMap,
    extensions: http::Extensions,
    /// `None`: an empty body.
    body: Option<B>,
    /// GET, HEAD, OPTIONS, TRACE, or an idempotency key (Go's `isReplayable`).
    idempotent: bool,
}

impl<B: RequestBody> Replay<B> {
    fn of(req: &Request<B>) -> Option<Replay<B>> {
        let idempotent = matches!(
            *req.method(),
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        ) || req.headers().contains_key("idempotency-key")
            || req.headers().contains_key("x-idempotency-key");
        let body = if req.body().is_end_stream() {
            None
        } else {
            Some(clone_body(req.body())?)
        };
        Some(Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            extensions: req.extensions().clone(),
            body,
            idempotent,
        })
    }

    fn build(&self) -> Request<ReqBody<B>> {
        let body = match &self.body {
            Some(b) => {
                clone_body(b).map_or_else(|| ReqBody::empty(None), |b| ReqBody::new(b, None))
            }
            None => ReqBody::empty(None),
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        *req.extensions_mut() = self.extensions.clone();
        req
    }
}

/// A copy of a request body that has not been sent, when its type is one whose clone is the
/// same body again: `Full<Bytes>`, `Empty<Bytes>`, `Bytes`, `String`. Other bodies cannot be
/// replayed (a stream may have been partly consumed by hyper), so a request with one is
/// never sent twice.
fn clone_body<B: 'static>(body: &B) -> Option<B> {
    use std::any::Any;
    fn via<T: Clone + 'static, B: 'static>(body: &B) -> Option<B> {
        let copy = (body as &dyn Any).downcast_ref::<T>()?.clone();
        (Box::new(copy) as Box<dyn Any>)
            .downcast::<B>()
            .ok()
            .map(|b| *b)
    }
    via::<http_body_util::Full<bytes::Bytes>, B>(body)
        .or_else(|| via::<http_body_util::Empty<bytes::Bytes>, B>(body))
        .or_else(|| via::<bytes::Bytes, B>(body))
        .or_else(|| via::<String, B>(body))
}

/// How a failed HTTP/2 stream says the server treated it.
fn h2_outcome(err: &hyper::Error) -> Option<(RetryReason, bool, String)> {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            let reason = h2.reason()?;
            if h2.is_go_away() && h2.is_remote() {
                // With NO_ERROR, h2 fails only the streams above the GOAWAY's last stream id
                // (and new ones) this way: streams the server did not process. With an error
                // code, the streams it may have processed fail the same way when the
                // connection closes, so only an idempotent request is sent again.
                let unprocessed = reason == h2::Reason::NO_ERROR;
                return Some((
                    RetryReason::GoAway,
                    unprocessed,
                    format!("connection closed by the server with GOAWAY ({reason:?})"),
                ));
            }
            if h2.is_reset() && h2.is_remote() && reason == h2::Reason::REFUSED_STREAM {
                return Some((
                    RetryReason::RefusedStream,
                    true,
                    "stream refused by the server (REFUSED_STREAM)".to_owned(),
                ));
            }
            return None;
        }
        source = e.source();
    }
    None
}

fn is_stale(err: &hyper::Error) -> bool {
    if err.is_incomplete_message() || err.is_canceled() || err.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            ) {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// The URI a dial for `key` uses: scheme and authority only, never userinfo or a path.
fn dial_uri(key: &ConnectKey) -> Result<Uri, Error> {
    let authority = Authority::try_from(format!("{}:{}", key.host(), key.port()))
        .map_err(|e| Error::new(Kind::InvalidUri).with(e))?;
    let scheme =
        Scheme::try_from(key.scheme()).map_err(|e| Error::new(Kind::InvalidUri).with(e))?;
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query("/")
        .build()
        .map_err(|e| Error::new(Kind::InvalidUri).with(e))
}

/// A `Connection` header lists `close` (among other tokens, perhaps).
fn says_close(headers: &http::HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// Takes userinfo out of a URI that is sent with its authority (HTTP/2's `:authority`, the
/// absolute form a proxy gets): credentials never go on the wire.
fn drop_userinfo(uri: &mut Uri) {
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        *uri = crate::inflight::strip_userinfo(uri);
    }
}

/// An authority-form CONNECT target gets the scheme hyper-util gives it: https for port
/// 443, else http.
fn with_connect_scheme(uri: &mut Uri) {
    let Some(authority) = uri.authority().cloned() else {
        return;
    };
    let scheme = if authority.port_u16() == Some(443) {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    };
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    parts.path_and_query = Some(PathAndQuery::from_static("/"));
    if let Ok(u) = Uri::from_parts(parts) {
        *uri = u;
    }
}

/// HTTP/1 CONNECT goes out in authority form (`CONNECT host:port HTTP/1.1`).
fn authority_form(uri: &mut Uri) {
    let Some(authority) = uri.authority() else {
        return;
    };
    let hostport = authority.as_str().rsplit('@').next().unwrap_or("");
    let mut parts = http::uri::Parts::default();
    parts.authority = hostport.parse().ok();
    if let Ok(u) = Uri::from_parts(parts) {
        *uri = u;
    }
}

/// The request target of an HTTP/1 request to an origin: path and query only.
fn origin_form(uri: &mut Uri) {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let path = if path.as_str().is_empty() {
        PathAndQuery::from_static("/")
    } else {
        path
    };
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(path);
    if let Ok(u) = Uri::from_parts(parts) {
        *uri = u;
    }
}

impl<C, B> Client<C, B>
where
    C: Connect,
    B: RequestBody,
{
    pub(super) async fn send(
        self,
        req: Request<B>,
        request_id: u64,
        registration: Option<Registration>,
    ) -> Result<Response<ResponseBody>, Error> {
        // The history's `request_started` gets its end even if this future is dropped.
        let mut unfinished = Unfinished {
            history: self.shared.history.clone(),
            id: request_id,
        };
        let result = self.send_checked(req, request_id, registration).await;
        unfinished.history = None;
        result
    }

    async fn send_checked(
        self,
        req: Request<B>,
        request_id: u64,
        registration: Option<Registration>,
    ) -> Result<Response<ResponseBody>, Error> {
        let checked = self.check(req);
        let (req, super::origin::Origin { key, host, via }) = match checked {
            Ok(checked) => checked,
            Err(e) => {
                if let Some(h) = &self.shared.history {
                    h.request(RequestEvent::Failed {
                        id: request_id,
                        error: crate::trace::error_text(&e),
                    });
                }
                return Err(e);
            }
        };
        let key = &key;
        // One reading of the clock for the request's start, shared by the in-flight entry,
        // the tracer, the metrics and the history (and none if nothing needs it).
        let registered = registration
            .as_ref()
            .map(|r| r.entry.started())
            .or_else(|| self.shared.history.is_some().then(std::time::Instant::now));
        let tracer = Tracer::new(
            request_id,
            key,
            &[
                Some(&self.shared.trace),
                req.extensions().get::<ClientTrace>(),
                self.shared.metrics_trace.as_ref(),
            ],
            || registered.unwrap_or_else(std::time::Instant::now),
        );
        let started = registered.or(tracer.as_ref().map(|t| t.start));
        #[cfg(feature = "metrics")]
        let metrics = self.shared.metrics.as_ref().map(|m| {
            let start = started.unwrap_or_else(std::time::Instant::now);
            crate::metrics::RequestMetrics::start(m, req.method(), key, start)
        });
        let mut ctx = Ctx {
            id: request_id,
            host,
            via,
            started,
            tracer,
            registration,
            #[cfg(feature = "metrics")]
            metrics,
        };
        let result = self.send_traced(req, key, &mut ctx).await;
        match result {
            Ok(resp) => Ok(resp),
            Err(e) => {
                let e = e.target(format!("{}:{}", key.host(), key.port()));
                #[cfg(feature = "metrics")]
                if let Some(m) = ctx.metrics.take() {
                    m.finish(Err(e.error_type()));
                }
                if let Some(h) = &self.shared.history {
                    h.request(RequestEvent::Failed {
                        id: request_id,
                        error: crate::trace::error_text(&e),
                    });
                }
                if let Some(t) = &ctx.tracer {
                    t.request_done(|| RequestDoneInfo {
                        request_id: t.request_id,
                        status: None,
                        timings: t.timings(),
                        error: Some(crate::trace::error_text(&e)),
                    });
                }
                Err(e)
            }
        }
    }

    /// What can be refused before anything starts: the version, and a URI without a pool key.
    fn check(&self, mut req: Request<B>) -> Result<(Request<B>, super::origin::Origin), Error> {
        let connect = req.method() == Method::CONNECT;
        match req.version() {
            // CONNECT is HTTP/1.1's (and HTTP/2's), as hyper-util has it.
            Version::HTTP_10 if connect => return Err(Error::new(Kind::UnsupportedVersion)),
            Version::HTTP_10 | Version::HTTP_11 | Version::HTTP_2 => {}
            _ => return Err(Error::new(Kind::UnsupportedVersion)),
        }
        if connect && req.uri().scheme().is_none() {
            // Authority form (`CONNECT example.com:443`): the scheme follows the port.
            with_connect_scheme(req.uri_mut());
        }
        let origin = self
            .shared
            .origins
            .resolve(req.uri())
            .map_err(|e| Error::new(Kind::InvalidUri).with(e))?;
        Ok((req, origin))
    }

    async fn send_traced(
        &self,
        req: Request<B>,
        key: &ConnectKey,
        ctx: &mut Ctx,
    ) -> Result<Response<ResponseBody>, Error> {
        let replay = Replay::of(&req);
        let uri = req.uri().clone();
        let mut req = req.map(|b| ReqBody::new(b, None));
        let mut attempt: u32 = 1;
        loop {
            if let Some(t) = &ctx.tracer {
                if attempt > 1 {
                    t.clear_attempt();
                }
                t.get_conn(|| GetConnInfo {
                    request_id: t.request_id,
                    key: key.clone(),
                });
            }
            let pooled = self.connection_for(key, ctx).await?;
            let failed = match self.send_on(pooled, req, ctx).await {
                Ok(resp) => return Ok(resp),
                Err(failed) => failed,
            };
            let Some(retry) = failed.retry else {
                return Err(failed.error);
            };
            let again = match (retry.reason, failed.unsent) {
                (RetryReason::NotSent, Some(mut unsent)) => {
                    if !self.shared.retry_canceled_requests {
                        return Err(failed.error.context("not sent again: retry_canceled_requests is off"));
                    }
                    *unsent.uri_mut() = uri.clone();
                    unsent
                }
                (_, _) => match &replay {
                    Some(r) if retry.unprocessed || r.idempotent => r.build(),
                    Some(_) => {
                        return Err(failed
                            .error
                            .context("not sent again: the server may have processed it and the method is not idempotent"))
                    }
                    None => {
                        return Err(failed
                            .error
                            .context("not sent again: its body cannot be replayed"))
                    }
                },
            };
            if attempt >= MAX_ATTEMPTS {
                return Err(failed
                    .error
                    .context(format!("gave up after {attempt} attempts")));
            }
            attempt += 1;
            self.report_retry(ctx, attempt, &retry, &failed.error);
            req = again;
        }
    }

    /// Tells every sink that the request is sent again.
    fn report_retry(&self, ctx: &Ctx, attempt: u32, retry: &Retryable, error: &Error) {
        if let Some(h) = &self.shared.history {
            h.request(RequestEvent::Retry {
                id: ctx.id,
                attempt,
                reason: retry.reason,
                conn_id: retry.conn_id,
            });
        }
        #[cfg(feature = "metrics")]
        if let Some(m) = &ctx.metrics {
            m.retry(retry.reason);
        }
        if let Some(t) = &ctx.tracer {
            t.retry(|| RetryInfo {
                request_id: t.request_id,
                attempt,
                reason: retry.reason,
                conn_id: retry.conn_id,
                error: crate::trace::error_text(error),
            });
        }
    }

    /// Checks out a connection for `key`, running each dial the pool allows on the executor.
    async fn connection_for(
        &self,
        key: &ConnectKey,
        ctx: &Ctx,
    ) -> Result<Pooled<PoolClient<B>>, Error> {
        let shared = &self.shared;
        let tracer = &ctx.tracer;
        let entry = ctx.entry();
        if let Some(e) = entry {
            e.set_phase(Phase::WaitingForConnection);
        }
        // An https origin may answer HTTP/2 through ALPN: requests that arrive while such a
        // dial is in progress wait for it rather than dial too (a cold burst makes one
        // connection). If it answers HTTP/1.1, they all dial then, and the key stops waiting.
        let mut checkout = if shared.dial.http2_only || key.scheme() == "https" {
            shared.pool.checkout_shared(key.clone())
        } else {
            shared.pool.checkout(key.clone())
        };
        loop {
            match checkout.step().await {
                Ok(Step::Ready(pooled)) => {
                    #[cfg(feature = "metrics")]
                    if let Some(m) = &ctx.metrics {
                        m.got_conn(pooled.info());
                    }
                    if let Some(e) = entry {
                        e.set_phase(Phase::Sending);
                        e.set_conn(pooled.id());
                    }
                    if let Some(h) = &shared.history {
                        let info = pooled.info();
                        h.request(RequestEvent::GotConn {
                            id: ctx.id,
                            conn_id: info.conn_id,
                            reused: info.reused,
                            waited: info.waited,
                        });
                    }
                    if let Some(t) = tracer {
                        let info = *pooled.info();
                        let facts = &pooled.facts;
                        let at = t.elapsed();
                        t.mark(Mark::GotConn, at);
                        t.mark(Mark::Queued, info.waited);
                        t.got_conn(|| GotConnInfo {
                            request_id: t.request_id,
                            conn_id: info.conn_id,
                            reused: info.reused,
                            was_idle: info.was_idle,
                            idle_time: info.idle_time,
                            queued_for: info.waited,
                            version: facts.version,
                            remote_addr: facts.remote_addr,
                            local_addr: facts.local_addr,
                            tls: facts.tls.clone(),
                        });
                    }
                    return Ok(pooled);
                }
                Ok(Step::Dial(permit)) => {
                    if let Some(e) = entry {
                        e.set_phase(Phase::Connecting);
                    }
                    let uri = dial_uri(permit.key())?;
                    let (weak, key) = (shared.pool.downgrade(), permit.key().clone());
                    let mut cfg = shared.dial.clone();
                    // The key's other connections learned the server's stream limit: assume
                    // it for this one too until its own SETTINGS arrive (instead of 100), so
                    // a server with a low limit does not refuse the excess of every new one.
                    if let Some(n) = permit.concurrency_hint().filter(|&n| n < 100) {
                        cfg.h2.initial_max_send_streams(n.max(1));
                    }
                    let dial = conn::dial::<C, B>(
                        self.connector.clone(),
                        uri,
                        cfg,
                        tracer.clone(),
                        ctx.via.clone(),
                        move || weak.evict_closed(&key),
                    );
                    shared.dial.exec.execute(async move {
                        permit.finish(dial.await);
                    });
                }
                Err(e) => return Err(Error::from_pool(e)),
            }
        }
    }

    /// Writes `req` on `pooled` and waits for the response head.
    async fn send_on(
        &self,
        mut pooled: Pooled<PoolClient<B>>,
        mut req: Request<ReqBody<B>>,
        ctx: &mut Ctx,
    ) -> Result<Response<ResponseBody>, Failed<B>> {
        let tracer = &ctx.tracer;
        let entry = ctx.entry().cloned();
        if entry.is_some() {
            *req.body_mut() =
                std::mem::replace(req.body_mut(), ReqBody::empty(None)).with_entry(entry.clone());
        }
        if let Some(capture) = req.extensions().get::<super::capture::CaptureExtension>() {
            capture.set(super::ConnectionInfo::new(
                *pooled.info(),
                pooled.facts.clone(),
            ));
        }
        let reused = pooled.info().reused;
        let conn_id = pooled.id();
        let h2 = pooled.is_http2();
        let connect = req.method() == Method::CONNECT;
        let conn_info = super::ConnectionInfo::new(*pooled.info(), pooled.facts.clone());
        let fail = |error: Error, unsent, reason: Option<(RetryReason, bool)>| Failed {
            error: error.on_connection(conn_info.clone()),
            unsent,
            retry: reason.map(|(reason, unprocessed)| Retryable {
                reason,
                unprocessed,
                conn_id,
            }),
        };
        // A request hyper hands back unsent was never written: it may go again on another
        // connection (on HTTP/1 only if this one was reused, as hyper-util: a fresh
        // connection that cannot take a request says something about the origin).
        let not_sent = (h2 || reused).then_some((RetryReason::NotSent, true));
        if !h2 {
            if req.version() == Version::HTTP_2 {
                return Err(fail(Error::new(Kind::UnsupportedVersion), None, None));
            }
            if self.shared.set_host && !req.headers().contains_key(HOST) {
                if let Some(host) = &ctx.host {
                    req.headers_mut().insert(HOST, host.clone());
                }
            }
            if req.method() == Method::CONNECT {
                authority_form(req.uri_mut());
            } else if pooled.facts.proxied {
                // A proxy gets the absolute form, and its credentials if it has some.
                drop_userinfo(req.uri_mut());
                if let Some(auth) = &pooled.facts.proxy_auth {
                    req.headers_mut()
                        .entry(http::header::PROXY_AUTHORIZATION)
                        .or_insert_with(|| auth.clone());
                }
            } else {
                origin_form(req.uri_mut());
            }
        } else {
            // HTTP/2 sends the authority as `:authority`.
            drop_userinfo(req.uri_mut());
        }
        // The connection's IO stamps the write and first-byte moments (HTTP/1 on
        // poolscope's own streams); elsewhere they are the body's end and the response head.
        let io = if h2 { None } else { pooled.facts.io.clone() };
        if let Some(t) = tracer {
            let end = match &io {
                Some(io) => {
                    io.arm(t);
                    BodyEnd::Io(io.clone())
                }
                None => {
                    t.wrote_headers(|| WroteInfo {
                        request_id: t.request_id,
                        elapsed: t.elapsed(),
                        error: None,
                    });
                    BodyEnd::H2(t.clone())
                }
            };
            *req.body_mut() = std::mem::replace(req.body_mut(), ReqBody::empty(None)).with_end(end);
            if t.wants_1xx() {
                let t1 = t.clone();
                hyper::ext::on_informational(&mut req, move |res| {
                    t1.got_1xx_response(|| Got1xxInfo {
                        request_id: t1.request_id,
                        status: res.status(),
                        headers: res.headers().clone(),
                    })
                });
            }
        }
        // The request's own `Connection: close` ends the connection after this exchange.
        let asked_close = says_close(req.headers());
        // If this future is dropped from here until the response is handed over, an HTTP/1
        // connection is mid-exchange: it must be closed, not returned.
        pooled.close_on_drop(!h2);
        // The sender and the connection's facts, borrowed apart (no clone per request).
        let PoolClient { tx, facts } = &mut *pooled;
        let result = match tx {
            Tx::H1(tx) => {
                if let Err(e) = std::future::poll_fn(|cx| tx.poll_ready(cx)).await {
                    disarm(&pooled);
                    pooled.discard();
                    return Err(fail(
                        Error::new(Kind::Canceled).with(e),
                        Some(req),
                        not_sent,
                    ));
                }
                tx.try_send_request(req).await
            }
            Tx::H2(tx) => {
                if let Err(e) = std::future::poll_fn(|cx| tx.poll_ready(cx)).await {
                    drop(pooled);
                    return Err(fail(
                        Error::new(Kind::Canceled).with(e),
                        Some(req),
                        not_sent,
                    ));
                }
                // Handed to hyper's dispatcher through the connection's gate (see `Gate`):
                // hyper's `try_send_request` puts it in the dispatcher's queue at once.
                let sent = match &facts.gate {
                    Some(gate) => gate.pass(req, |req| tx.try_send_request(req)),
                    None => Ok(tx.try_send_request(req)),
                };
                match sent {
                    Ok(sent) => sent.await,
                    Err(req) => {
                        // The dispatcher ended just now: never handed over.
                        drop(pooled);
                        return Err(fail(
                            Error::new(Kind::Canceled).with("connection closed"),
                            Some(req),
                            not_sent,
                        ));
                    }
                }
            }
        };
        if let (Some(t), Some(io)) = (tracer, &io) {
            collect_io_marks(t, io);
        }
        match result {
            Ok(resp) => {
                if io.is_none() {
                    if let Some(t) = tracer {
                        let at = t.elapsed();
                        t.mark(Mark::FirstByte, at);
                        t.got_first_response_byte(|| FirstByteInfo {
                            request_id: t.request_id,
                            elapsed: at,
                        });
                    }
                }
                // An upgraded connection (101, or a tunnel after CONNECT) belongs to
                // `hyper::upgrade::on` now: not reusable, and not broken either.
                let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS
                    || (connect && resp.status().is_success());
                let keep_alive = !upgraded
                    && !asked_close
                    && resp.version() != Version::HTTP_10
                    && !says_close(resp.headers());
                let done = Done {
                    pooled: Some(pooled),
                    // The request is over for `send` once it has a response: the tracer
                    // moves to the body's end.
                    tracer: ctx.tracer.take(),
                    status: resp.status(),
                    started: ctx.started,
                    keep_alive,
                    exec: self.shared.dial.exec.clone(),
                    registration: ctx.registration.take(),
                    #[cfg(feature = "metrics")]
                    metrics: ctx.metrics.take(),
                    history: self.shared.history.clone().map(|h| (h, ctx.id)),
                };
                let mut resp = resp;
                if let Some(p) = done.pooled.as_ref() {
                    // What the connector attached (e.g. hyper-util's `HttpInfo`), as
                    // hyper-util does, and which connection it was.
                    if let Some(extras) = &p.facts.extras {
                        resp.extensions_mut().extend(extras.clone());
                    }
                    resp.extensions_mut()
                        .insert(super::ConnectionInfo::new(*p.info(), p.facts.clone()));
                }
                Ok(resp.map(|body| ResponseBody::new(body, Box::new(done), entry)))
            }
            Err(mut e) => {
                let unsent = e.take_message();
                let err = e.into_error();
                let served = pooled.served();
                let mut detail = None;
                let retry = if unsent.is_some() {
                    not_sent
                } else if h2 {
                    h2_outcome(&err)
                        .map(|(reason, unprocessed, what)| {
                            detail = Some(format!(
                                "{what} after {served} streams on connection {conn_id}"
                            ));
                            (reason, unprocessed)
                        })
                        // The connection broke under a stream of a reused connection: as
                        // for HTTP/1, an idempotent request may go again.
                        .or_else(|| {
                            (reused && is_stale(&err))
                                .then_some((RetryReason::StaleConnection, false))
                        })
                } else {
                    (reused && is_stale(&err)).then_some((RetryReason::StaleConnection, false))
                };
                if h2 {
                    if retry.is_some_and(|(r, _)| r == RetryReason::GoAway) {
                        // GOAWAY: the connection takes no new streams; those on it go on.
                        pooled.retire(crate::stats::CloseReason::GoAway);
                    } else {
                        drop(pooled);
                    }
                } else {
                    disarm(&pooled);
                    pooled.discard();
                }
                let kind = if unsent.is_some() {
                    Kind::Canceled
                } else if err.is_parse() {
                    Kind::Receive
                } else {
                    Kind::Send
                };
                let mut error = Error::new(kind).with(err);
                if let Some(d) = detail {
                    error = error.context(d);
                }
                Err(fail(error, unsent, retry))
            }
        }
    }
}

/// The end of a response body: return or close the connection, finish the events.
struct Done<B: Send + 'static> {
    pooled: Option<Pooled<PoolClient<B>>>,
    tracer: Option<Arc<Tracer>>,
    status: StatusCode,
    /// When the request started, if the history, tracer or in-flight entry needed it.
    started: Option<std::time::Instant>,
    keep_alive: bool,
    exec: super::exec::Exec,
    /// The in-flight entry: removed when the body ends.
    registration: Option<Registration>,
    #[cfg(feature = "metrics")]
    metrics: Option<crate::metrics::RequestMetrics>,
    history: Option<(Arc<History>, u64)>,
}

/// Records a request whose future was dropped before it finished as failed in the history
/// (unless `history` was cleared because it finished).
struct Unfinished {
    history: Option<Arc<History>>,
    id: u64,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(h) = self.history.take() {
            h.request(RequestEvent::Failed {
                id: self.id,
                error: "canceled: the response future was dropped".to_owned(),
            });
        }
    }
}

/// One request's context: its id, tracer and in-flight registration.
struct Ctx {
    id: u64,
    /// The `Host` header value the request's URI implies.
    host: Option<HeaderValue>,
    /// The proxy its connections go through.
    via: Option<Arc<crate::connect::proxy::Via>>,
    /// The request's start, read once when something needs it.
    started: Option<std::time::Instant>,
    tracer: Option<Arc<Tracer>>,
    /// Moves to the response body's `Done` once there is a response.
    registration: Option<Registration>,
    /// Moves to `Done` too; finished there, or with the error.
    #[cfg(feature = "metrics")]
    metrics: Option<crate::metrics::RequestMetrics>,
}

impl Ctx {
    fn entry(&self) -> Option<&Arc<Entry>> {
        self.registration.as_ref().map(|r| &r.entry)
    }
}

/// Ends the IO events of the request on an HTTP/1 connection.
fn disarm<B: Send + 'static>(pooled: &Pooled<PoolClient<B>>) {
    if let Some(io) = &pooled.facts.io {
        io.disarm();
    }
}

/// Copies the write and first-byte moments an HTTP/1 connection stamped into the request's
/// milestones.
fn collect_io_marks(t: &Tracer, io: &conn::IoEvents) {
    let (wrote, first_byte) = io.marks();
    if let Some(at) = wrote {
        t.mark(Mark::WroteRequest, at.saturating_duration_since(t.start));
    }
    if let Some(at) = first_byte {
        t.mark(Mark::FirstByte, at.saturating_duration_since(t.start));
    }
}

fn put_info(t: &Tracer, conn_id: crate::pool::ConnId, returned: Returned) {
    t.put_idle_conn(|| PutIdleConnInfo {
        request_id: t.request_id,
        conn_id,
        error: match returned {
            Returned::Closed(reason) => Some(format!("connection closed: {}", reason.as_str())),
            _ => None,
        },
    });
}

impl<B: Send + 'static> Completion for Done<B> {
    fn complete(mut self: Box<Self>, bytes: u64, error: Option<String>) {
        let tracer = self.tracer.take();
        let status = self.status;
        // One reading of the clock for the end, shared by history, metrics and timings, and
        // none when nothing needs it.
        #[cfg(feature = "metrics")]
        let metered = self.metrics.is_some();
        #[cfg(not(feature = "metrics"))]
        let metered = false;
        let end =
            (tracer.is_some() || self.history.is_some() || metered).then(std::time::Instant::now);
        if let Some((h, id)) = self.history.take() {
            let elapsed = self
                .started
                .zip(end)
                .map(|(start, end)| end.saturating_duration_since(start))
                .unwrap_or_default();
            h.request(match &error {
                None => RequestEvent::Done {
                    id,
                    status,
                    elapsed,
                },
                Some(e) => RequestEvent::Failed {
                    id,
                    error: e.clone(),
                },
            });
        }
        // Out of the in-flight registry: the body is over.
        drop(self.registration.take());
        #[cfg(feature = "metrics")]
        if let Some((m, end)) = self.metrics.take().zip(end) {
            m.finish_at(Ok(status), end);
        }
        // Go's order: the connection goes back (PutIdleConn) before the end is reported.
        let events = move |conn: Option<(crate::pool::ConnId, Returned)>, error: Option<String>| {
            let (Some(t), Some(end)) = (&tracer, end) else {
                return;
            };
            if let Some((conn_id, returned)) = conn {
                put_info(t, conn_id, returned);
            }
            t.response_body_done(|| BodyDoneInfo {
                request_id: t.request_id,
                bytes,
                error: error.clone(),
            });
            t.request_done(|| RequestDoneInfo {
                request_id: t.request_id,
                status: Some(status),
                timings: t.timings_at(end),
                error,
            });
        };
        let Some(pooled) = self.pooled.take() else {
            return events(None, error);
        };
        let conn_id = pooled.id();
        if pooled
            .facts
            .poisoned
            .load(std::sync::atomic::Ordering::Acquire)
        {
            disarm(&pooled);
            let returned = pooled.retire(crate::stats::CloseReason::Poisoned);
            return events(Some((conn_id, returned)), error);
        }
        if pooled.is_http2() {
            let returned = pooled.release();
            return events(Some((conn_id, returned)), error);
        }
        disarm(&pooled);
        if error.is_none() && self.keep_alive {
            release_when_ready(pooled, &self.exec, move |returned| {
                events(Some((conn_id, returned)), None)
            });
        } else {
            pooled.discard();
            let returned = Returned::Closed(crate::stats::CloseReason::NotReusable);
            events(Some((conn_id, returned)), error);
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
            Returned::Closed(crate::stats::CloseReason::Broken)
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
