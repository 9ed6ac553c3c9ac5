//! One request's way through the client: attempts (checkout, dialing when the pool allows,
//! write, response head) until one answers or the retry policy (`retry.rs`) says stop.
//! What each milestone tells the sinks is in `telemetry.rs`; how the target is rewritten per
//! connection in `target.rs`; what happens when the body ends in `end.rs`.

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, Version};

use super::body::{ReqBody, ResponseBody};
use super::conn::{self, PoolClient, Tx};
use super::end::{disarm, Done};
use super::error::{Error, Kind};
use super::origin::Origin;
use super::probe::RequestProbe;
use super::retry::{
    h2_outcome, is_dispatch_gone, is_stale, next_attempt, Failed, Replay, Retryable,
};
use super::target::{dial_uri, says_close, with_connect_scheme};
use super::telemetry::RequestTelemetry;
use super::Client;
use crate::connect::{Connect, RequestBody};
use crate::pool::{Pooled, Step};
use crate::spans::SetupSpan;
use crate::trace::io::{collect_io_marks, IoEvents};
use crate::trace::{Got1xxInfo, RetryReason, WroteInfo};

/// An attempt that got a response head.
struct Answered<B: Send + 'static> {
    resp: Response<hyper::body::Incoming>,
    pooled: Pooled<PoolClient<B>>,
    keep_alive: bool,
}

impl<C, B> Client<C, B>
where
    C: Connect,
    B: RequestBody,
{
    /// Sends `req`, whose origin `check` resolved (or refused), reporting to `telemetry`:
    /// attempts until one gets a response head, or the retry policy gives up. (One `async fn`
    /// for the whole loop: each nested future would be moved, whole, into its parent.)
    pub(super) async fn send(
        self,
        req: Request<B>,
        origin: Result<Origin, Error>,
        telemetry: RequestTelemetry,
    ) -> Result<Response<ResponseBody>, Error> {
        let origin = match origin {
            Ok(origin) => origin,
            Err(e) => {
                telemetry.failed(&e);
                return Err(e);
            }
        };
        let key = &origin.key;
        let replay = Replay::of(&req);
        // The URI an unsent request goes again with (an HTTP/1 attempt rewrites its target):
        // the replay's, or a copy of its own only when there is no replay.
        let uri = replay.is_none().then(|| req.uri().clone());
        let mut req = req.map(ReqBody::new);
        let mut attempt: u32 = 1;
        let mut maybe_processed: u32 = 0;
        let error = loop {
            telemetry.get_conn(key, attempt);
            let pooled = match self.connection_for(&origin, &telemetry).await {
                Ok(pooled) => pooled,
                Err(e) => break e,
            };
            let failed = match self.attempt(pooled, req, &origin, &telemetry).await {
                Ok(answered) => return Ok(self.respond(answered, telemetry)),
                Err(failed) => failed,
            };
            let (again, retry, error) = match next_attempt(
                failed,
                replay.as_ref(),
                uri.as_ref(),
                self.shared.retry_canceled_requests,
                attempt,
                &mut maybe_processed,
            ) {
                Ok(next) => next,
                Err(e) => break e,
            };
            attempt += 1;
            telemetry.retry(attempt, retry.reason, retry.conn_id, &error);
            if let Some(pause) = backoff(attempt).and_then(|p| self.shared.pool.sleep(p)) {
                pause.await;
            }
            req = again;
        };
        let error = error.target(format!("{}:{}", key.host(), key.port()));
        telemetry.failed(&error);
        Err(error)
    }

    /// What can be refused before anything starts: the version, and a URI without a pool
    /// key. An authority-form CONNECT gets its scheme here.
    pub(super) fn check(&self, req: &mut Request<B>) -> Result<Origin, Error> {
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
        self.shared
            .origins
            .resolve(req.uri())
            .map_err(|e| Error::new(Kind::InvalidUri).with(e))
    }

    /// Checks out a connection for the origin's key, running each dial the pool allows on the
    /// executor.
    async fn connection_for(
        &self,
        origin: &Origin,
        telemetry: &RequestTelemetry,
    ) -> Result<Pooled<PoolClient<B>>, Error> {
        let shared = &self.shared;
        let key = &origin.key;
        // An https origin may answer HTTP/2 through ALPN: requests that arrive while such a
        // dial is in progress wait for it rather than dial too (a cold burst makes one
        // connection). If it answers HTTP/1.1, they all dial then, and the key stops waiting.
        let mut checkout = if shared.dial.http2_only || key.scheme() == "https" {
            shared.pool.checkout_shared(key.clone())
        } else {
            shared.pool.checkout(key.clone())
        };
        loop {
            let step = if telemetry.hears_waits() {
                noting_pending(checkout.step(), || telemetry.waiting()).await
            } else {
                checkout.step().await
            };
            match step {
                Ok(Step::Ready(pooled)) => {
                    telemetry.got_conn(pooled.info(), &pooled.facts);
                    return Ok(pooled);
                }
                Ok(Step::Dial(permit)) => {
                    telemetry.connecting();
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
                        telemetry.dial_tracer(shared, permit.key()),
                        origin.via.clone(),
                        move || weak.evict_closed(&key),
                    );
                    if let Some(setup) =
                        SetupSpan::start(shared.levels.spans, permit.key(), permit.id())
                    {
                        let span = setup.clone();
                        shared.dial.exec.execute(span.instrument(async move {
                            let dialed = dial.await;
                            match &dialed {
                                Ok(c) => {
                                    setup.connected(c.facts.version, c.facts.remote_addr);
                                    // Kept until the first request that gets the connection
                                    // links to it.
                                    *c.facts.setup.lock() = Some(setup);
                                }
                                Err(_) => setup.failed(),
                            }
                            permit.finish(dialed);
                        }));
                        continue;
                    }
                    shared.dial.exec.execute(async move {
                        permit.finish(dial.await);
                    });
                }
                Err(e) => return Err(Error::from_pool(e)),
            }
        }
    }

    /// Writes `req` on `pooled` and waits for the response head.
    async fn attempt(
        &self,
        mut pooled: Pooled<PoolClient<B>>,
        mut req: Request<ReqBody<B>>,
        origin: &Origin,
        telemetry: &RequestTelemetry,
    ) -> Result<Answered<B>, Failed<B>> {
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
        // connection, whatever its method, even from a fresh HTTP/1 connection (hyper-util
        // retries only from a reused one): nothing reached the server, and the attempts are
        // bounded (`MAX_UNPROCESSED_ATTEMPTS`).
        let not_sent = Some((RetryReason::NotSent, true));
        let host: Option<&HeaderValue> = self
            .shared
            .set_host
            .then_some(origin.host.as_ref())
            .flatten();
        if let Err(e) = super::target::for_connection(&mut req, h2, &pooled.facts, host) {
            return Err(fail(e, None, None));
        }
        // The connection's IO stamps the write and first-byte moments (HTTP/1 on
        // poolscope's own streams); elsewhere they are the body's end and the response head.
        let io = if h2 { None } else { pooled.facts.io.clone() };
        watch(telemetry.probe(), &mut req, io.as_ref());
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
                // Handed to hyper's dispatcher through the connection's gate (see `Gate`):
                // `try_send_request` puts it in the dispatcher's queue at once.
                match facts.gate.pass(req, |req| tx.try_send_request(req)) {
                    Ok(sent) => sent.await,
                    Err(req) => {
                        // The dispatcher ended just now: never handed over.
                        disarm(&pooled);
                        pooled.discard();
                        return Err(fail(
                            Error::new(Kind::Canceled).with("connection closed"),
                            Some(req),
                            not_sent,
                        ));
                    }
                }
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
                match facts.gate.pass(req, |req| tx.try_send_request(req)) {
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
        if let (Some(t), Some(io)) = (telemetry.tracer(), &io) {
            collect_io_marks(t, io);
        }
        match result {
            Ok(resp) => {
                if io.is_none() {
                    telemetry.first_byte();
                }
                // An upgraded connection (101, or a tunnel after CONNECT) belongs to
                // `hyper::upgrade::on` now: not reusable, and not broken either.
                let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS
                    || (connect && resp.status().is_success());
                let keep_alive = !upgraded
                    && !asked_close
                    && resp.version() != Version::HTTP_10
                    && !says_close(resp.headers());
                Ok(Answered {
                    resp,
                    pooled,
                    keep_alive,
                })
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
                        // The connection ended under the stream before its response: after a
                        // GOAWAY that named it as processable (apache's graceful restart
                        // closes connections with streams still open), a reset, or hyper
                        // holding it when the dispatcher ended. An idempotent request may go
                        // again, fresh connection or not: the failure is the connection's,
                        // shared by every stream on it, not this request's.
                        .or_else(|| {
                            (is_stale(&err) || is_dispatch_gone(&err))
                                .then_some((RetryReason::ConnectionClosed, false))
                        })
                } else if reused && is_stale(&err) {
                    Some((RetryReason::StaleConnection, false))
                } else {
                    is_dispatch_gone(&err).then_some((RetryReason::ConnectionClosed, false))
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

    /// The response the user gets: its body returns the connection and ends the telemetry.
    fn respond(
        &self,
        answered: Answered<B>,
        telemetry: RequestTelemetry,
    ) -> Response<ResponseBody> {
        let Answered {
            mut resp,
            pooled,
            keep_alive,
        } = answered;
        // What the connector attached (e.g. hyper-util's `HttpInfo`), as hyper-util does,
        // and which connection it was.
        if let Some(extras) = &pooled.facts.extras {
            resp.extensions_mut().extend(extras.clone());
        }
        resp.extensions_mut().insert(super::ConnectionInfo::new(
            *pooled.info(),
            pooled.facts.clone(),
        ));
        let probe = telemetry.probe().clone();
        let done = Done {
            pooled: Some(pooled),
            status: resp.status(),
            telemetry,
            keep_alive,
            exec: self.shared.dial.exec.clone(),
        };
        resp.map(|body| ResponseBody::new(body, Box::new(done), probe))
    }
}

/// The pause before attempt `attempt`: none for the first retry (a stale connection, a
/// GOAWAY: the next connection will do), then from the third attempt on 1 ms, 2 ms, 4 ms ...
/// up to 256 ms, each with up to a quarter more at random, as Go's HTTP/2 transport backs off
/// (from 1 s). A server that keeps turning requests away (a GOAWAY on every connection before
/// it reads their streams, seen with HAProxy's 1 ms keep-alive under load; `REFUSED_STREAM`s
/// from an overcommitted new connection) otherwise takes all of a request's attempts within
/// a few milliseconds. It sleeps on the pool's timer; without one, no pause.
fn backoff(attempt: u32) -> Option<std::time::Duration> {
    use std::hash::BuildHasher;
    let doublings = attempt.checked_sub(3)?;
    let base = std::time::Duration::from_millis(1 << doublings.min(8));
    let jitter = std::collections::hash_map::RandomState::new().hash_one(attempt) % 256;
    Some(base + base * u32::try_from(jitter).unwrap_or(0) / 1024)
}

/// Hands the request's probe to its body, and the tracer (if any) to whoever sees the request
/// written: the HTTP/1 connection's IO, or (on HTTP/2 and other connectors) the body's end;
/// and to hyper's 1xx callback.
fn watch<B>(probe: &RequestProbe, req: &mut Request<ReqBody<B>>, io: Option<&Arc<IoEvents>>) {
    let Some(t) = probe.tracer() else {
        req.body_mut().watch(probe.clone(), None);
        return;
    };
    match io {
        Some(io) => io.arm(t),
        None => t.wrote_headers(|| WroteInfo {
            request_id: t.request_id,
            elapsed: t.elapsed(),
            error: None,
        }),
    }
    req.body_mut().watch(probe.clone(), io.cloned());
    if t.wants_1xx() {
        let t1 = t.clone();
        hyper::ext::on_informational(req, move |res| {
            t1.got_1xx_response(|| Got1xxInfo {
                request_id: t1.request_id,
                status: res.status(),
                headers: res.headers().clone(),
            })
        });
    }
}

/// Awaits `fut`, calling `on_pending` the first time it is not ready.
async fn noting_pending<F: std::future::Future>(fut: F, on_pending: impl FnOnce()) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut on_pending = Some(on_pending);
    std::future::poll_fn(|cx| {
        let poll = fut.as_mut().poll(cx);
        if poll.is_pending() {
            if let Some(f) = on_pending.take() {
                f();
            }
        }
        poll
    })
    .await
}
