//! The retry policy: which failed attempts may be sent again, and with what.
//!
//! A request goes again only on another connection (or stream), after a failure that says the
//! server did not process it (HTTP/2 GOAWAY above its stream, `REFUSED_STREAM`, a request
//! hyper hands back unsent) or, for an idempotent request, after a reused connection turned
//! out stale; and only if its body can be sent again. Go's `Transport` has the same rules
//! (`rewindBody`, `isReplayable`, `http2.canRetryError`).

use http::{Method, Request, Uri, Version};

use super::body::ReqBody;
use super::error::Error;
use crate::connect::RequestBody;
use crate::trace::RetryReason;

/// Attempts per request that may have been processed (a stale connection, a connection
/// closed under the stream): each retry is on another connection (or another stream), and
/// only after a failure that is safe to repeat (see [`Retryable`]). Kept low: a request that
/// crashes its server ("query of death") is not sent to it more often than this.
pub(super) const MAX_ATTEMPTS: u32 = 10;

/// Attempts per request when the last failure says the server did not process it (unsent,
/// `REFUSED_STREAM`, above a `GOAWAY(NO_ERROR)`'s last stream): sending it again cannot
/// repeat anything, and a server that turns streams away in bursts (HAProxy with a 1 ms
/// keep-alive under load GOAWAYs 40-70% of streams, independently on each attempt) would
/// otherwise fail a request now and then after ten. The pauses between attempts (`backoff`,
/// up to 256 ms) bound how fast they go.
pub(super) const MAX_UNPROCESSED_ATTEMPTS: u32 = 32;

/// A failed attempt, and whether it may be repeated.
pub(super) struct Failed<B> {
    pub(super) error: Error,
    /// The request, if hyper gave it back unsent.
    pub(super) unsent: Option<Request<ReqBody<B>>>,
    /// Why it may be repeated, if it may.
    pub(super) retry: Option<Retryable>,
}

/// A failure after which the request may be sent again.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retryable {
    pub(super) reason: RetryReason,
    /// The server certainly did not process the request (HTTP/2 GOAWAY above the request's
    /// stream, `REFUSED_STREAM`, never sent): safe for any method. Otherwise (a stale
    /// connection) only for an idempotent request.
    pub(super) unprocessed: bool,
    /// The connection the attempt failed on.
    pub(super) conn_id: crate::pool::ConnId,
}

/// What is needed to send a request again when hyper does not give it back: its head, and
/// its body if that is empty or of a type we can clone before it is sent.
pub(super) struct Replay<B> {
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
    pub(super) fn of(req: &Request<B>) -> Option<Replay<B>> {
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
            Some(b) => clone_body(b).map_or_else(ReqBody::empty, ReqBody::new),
            None => ReqBody::empty(),
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
pub(super) fn h2_outcome(err: &hyper::Error) -> Option<(RetryReason, bool, String)> {
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

/// hyper's dispatcher ended while it held the request, without an answer or an error for
/// it (hyper: "dispatch task is gone"). Whether it was sent is unknown: on HTTP/2, a request
/// hyper holds while the connection has no stream free for it is dropped this way when a
/// GOAWAY ends the dispatcher, and it may have been opened (and sent) just before. hyper has
/// no predicate for this kind, so it is told by `is_user` and hyper's description of it.
pub(super) fn is_dispatch_gone(err: &hyper::Error) -> bool {
    err.is_user() && err.to_string() == "dispatch task is gone"
}

/// The connection broke under the request (reset, broken pipe, EOF, an incomplete message,
/// hyper canceled it) rather than the server answering something.
pub(super) fn is_stale(err: &hyper::Error) -> bool {
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

/// What the next attempt sends after `failed`, or the error the request ends with.
/// `attempt` is the attempt that failed, `maybe_processed` how many attempts failed in a way
/// the server may have processed (this one included); `uri` the request's URI as the user gave
/// it (an HTTP/1 attempt rewrites its target) when there is no `replay` to take it from.
pub(super) fn next_attempt<B: RequestBody>(
    failed: Failed<B>,
    replay: Option<&Replay<B>>,
    uri: Option<&Uri>,
    retry_canceled_requests: bool,
    attempt: u32,
    maybe_processed: &mut u32,
) -> Result<(Request<ReqBody<B>>, Retryable, Error), Error> {
    let Some(retry) = failed.retry else {
        return Err(failed.error);
    };
    let again = match (retry.reason, failed.unsent) {
        (RetryReason::NotSent, Some(mut unsent)) => {
            if !retry_canceled_requests {
                return Err(failed
                    .error
                    .context("not sent again: retry_canceled_requests is off"));
            }
            if let Some(uri) = replay.map(|r| &r.uri).or(uri) {
                *unsent.uri_mut() = uri.clone();
            }
            unsent
        }
        (_, _) => match replay {
            Some(r) if retry.unprocessed || r.idempotent => r.build(),
            Some(_) => return Err(failed.error.context(
                "not sent again: the server may have processed it and the method is not idempotent",
            )),
            None => {
                return Err(failed
                    .error
                    .context("not sent again: its body cannot be replayed"))
            }
        },
    };
    if !retry.unprocessed {
        *maybe_processed += 1;
    }
    if attempt >= MAX_UNPROCESSED_ATTEMPTS || *maybe_processed >= MAX_ATTEMPTS {
        return Err(failed
            .error
            .context(format!("gave up after {attempt} attempts")));
    }
    Ok((again, retry, failed.error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::ConnId;
    use bytes::Bytes;
    use http_body_util::Full;

    /// Retries `req` after failures of `reason` until the policy gives up; the attempts made.
    fn attempts_until_given_up(reason: RetryReason, unprocessed: bool) -> u32 {
        let req = Request::get("http://h/")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let replay = Replay::of(&req).unwrap();
        let mut maybe_processed = 0;
        for attempt in 1.. {
            let failed = Failed::<Full<Bytes>> {
                error: Error::new(super::super::error::Kind::Send),
                unsent: None,
                retry: Some(Retryable {
                    reason,
                    unprocessed,
                    conn_id: ConnId(1),
                }),
            };
            if next_attempt(
                failed,
                Some(&replay),
                None,
                true,
                attempt,
                &mut maybe_processed,
            )
            .is_err()
            {
                return attempt;
            }
        }
        unreachable!()
    }

    #[test]
    fn a_request_the_server_may_have_processed_goes_at_most_ten_times() {
        assert_eq!(
            attempts_until_given_up(RetryReason::ConnectionClosed, false),
            MAX_ATTEMPTS
        );
        assert_eq!(
            attempts_until_given_up(RetryReason::StaleConnection, false),
            MAX_ATTEMPTS
        );
    }

    #[test]
    fn a_request_the_server_turned_away_unprocessed_goes_up_to_32_times() {
        assert_eq!(
            attempts_until_given_up(RetryReason::GoAway, true),
            MAX_UNPROCESSED_ATTEMPTS
        );
    }
}
