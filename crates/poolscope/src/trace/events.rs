//! The events a [`ClientTrace`](super::ClientTrace) hook receives, and a request's
//! [`RequestTimings`].

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, StatusCode, Version};

use crate::key::{ConnId, ConnectKey};

/// The request asks the pool for a connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GetConnInfo {
    /// The request.
    pub request_id: u64,
    /// The pool key (`scheme://host:port`).
    pub key: ConnectKey,
}

/// The request got a connection: Go's `GotConnInfo`, plus what we know of the connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GotConnInfo {
    /// The request.
    pub request_id: u64,
    /// The connection.
    pub conn_id: ConnId,
    /// The connection served an earlier request.
    pub reused: bool,
    /// The connection came from the idle pool.
    pub was_idle: bool,
    /// How long it was idle, if `was_idle`.
    pub idle_time: Duration,
    /// How long the request waited in the pool's queues.
    pub queued_for: Duration,
    /// HTTP/1.1 or HTTP/2.
    pub version: Version,
    /// The peer's address, when the connector reports it.
    pub remote_addr: Option<SocketAddr>,
    /// Our address, when the connector reports it.
    pub local_addr: Option<SocketAddr>,
    /// TLS details, for HTTPS connections made by poolscope's connector.
    pub tls: Option<TlsInfo>,
}

/// What was negotiated in a TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsInfo {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    /// The cipher suite, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: String,
    /// The ALPN protocol (`h2`, `http/1.1`), if any was negotiated.
    pub alpn: Option<String>,
}

/// Where a connection went after the request (Go's `PutIdleConn`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PutIdleConnInfo {
    /// The request.
    pub request_id: u64,
    /// The connection.
    pub conn_id: ConnId,
    /// `None` if it went back to the pool (idle, to a waiter, or still shared); otherwise why
    /// it was closed.
    pub error: Option<String>,
}

/// Name resolution starts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DnsStartInfo {
    /// The request that started the dial.
    pub request_id: u64,
    /// The name being resolved.
    pub host: String,
}

/// Name resolution ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DnsDoneInfo {
    /// The request that started the dial.
    pub request_id: u64,
    /// The pool key being dialed.
    pub key: ConnectKey,
    /// The name that was resolved: the key's host, or a proxy's.
    pub host: String,
    /// The addresses found.
    pub addrs: Vec<std::net::IpAddr>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// What kind of failure it was, as OpenTelemetry's `error.type` of a DNS lookup:
    /// `host_not_found` (the name does not exist or has no address), `timeout`, or `_OTHER`.
    pub error_type: Option<&'static str>,
    /// How long it took.
    pub took: Duration,
}

/// A TCP connect attempt starts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectStartInfo {
    /// The request that started the dial.
    pub request_id: u64,
    /// The address dialed.
    pub addr: SocketAddr,
}

/// A TCP connect attempt ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectDoneInfo {
    /// The request that started the dial.
    pub request_id: u64,
    /// The pool key being dialed.
    pub key: ConnectKey,
    /// The address dialed.
    pub addr: SocketAddr,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// How long it took.
    pub took: Duration,
}

/// The TLS handshake starts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TlsHandshakeStartInfo {
    /// The request that started the dial.
    pub request_id: u64,
    /// The server name sent (SNI) and verified.
    pub server_name: String,
}

/// The TLS handshake ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TlsHandshakeDoneInfo {
    /// The request that started the dial.
    pub request_id: u64,
    /// The pool key being dialed.
    pub key: ConnectKey,
    /// What was negotiated, on success.
    pub tls: Option<TlsInfo>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// How long it took.
    pub took: Duration,
}

/// The exchange with a proxy starts, once the connection to it is made: a `CONNECT` or a
/// SOCKS handshake (forward proxying has none).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProxyStartInfo {
    /// The request that started the dial.
    pub request_id: u64,
    /// The proxy, `host:port` (never its credentials).
    pub proxy: String,
    /// `CONNECT`, `SOCKS4` or `SOCKS5`.
    pub protocol: &'static str,
}

/// The exchange with a proxy ended: the tunnel is open, or the proxy refused.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProxyDoneInfo {
    /// The request that started the dial.
    pub request_id: u64,
    /// The proxy, `host:port`.
    pub proxy: String,
    /// `CONNECT`, `SOCKS4` or `SOCKS5`.
    pub protocol: &'static str,
    /// The status a proxy refused a `CONNECT` with.
    pub status: Option<http::StatusCode>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// How long it took.
    pub took: Duration,
}

/// A write milestone of the request: the head, or the whole request.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WroteInfo {
    /// The request.
    pub request_id: u64,
    /// Time since the request started.
    pub elapsed: Duration,
    /// Why writing failed, for `wrote_request` only.
    pub error: Option<String>,
}

/// The first response byte arrived (HTTP/2: the response head).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FirstByteInfo {
    /// The request.
    pub request_id: u64,
    /// Time since the request started.
    pub elapsed: Duration,
}

/// An informational (1xx) response arrived.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Got1xxInfo {
    /// The request.
    pub request_id: u64,
    /// The status, e.g. `100 Continue` or `103 Early Hints`.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
}

/// The response body ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BodyDoneInfo {
    /// The request.
    pub request_id: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// `None` if the body was read to its end; otherwise what happened (an error, or the
    /// body was dropped before its end).
    pub error: Option<String>,
}

/// Why a request is sent again on another connection (or another stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryReason {
    /// A reused HTTP/1 connection had been closed by the server while it sat idle; the
    /// request is idempotent (or carries an idempotency key) and its body can be sent again.
    StaleConnection,
    /// The connection closed before the request was written: hyper gave it back unsent.
    NotSent,
    /// The server sent HTTP/2 GOAWAY and had not processed this stream (RFC 9113 §6.8).
    GoAway,
    /// The server refused the HTTP/2 stream before processing it (`REFUSED_STREAM`,
    /// RFC 9113 §8.7), typically because it was over its concurrent-stream limit.
    RefusedStream,
    /// The connection ended under the request before any of the response arrived, and
    /// whether the server processed it is unknown: an HTTP/2 connection closed under its
    /// streams (a graceful restart: GOAWAY, then the close), or hyper's dispatcher ended while
    /// it held the request. Sent again, like a stale connection's, only when the request is
    /// idempotent (or carries an idempotency key) and its body can be sent again.
    ConnectionClosed,
}

impl RetryReason {
    /// A short, stable name, suitable as a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            RetryReason::StaleConnection => "stale_connection",
            RetryReason::NotSent => "not_sent",
            RetryReason::GoAway => "goaway",
            RetryReason::RefusedStream => "refused_stream",
            RetryReason::ConnectionClosed => "connection_closed",
        }
    }
}

impl fmt::Display for RetryReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An attempt failed in a way that is safe to repeat, and the request is sent again.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RetryInfo {
    /// The request.
    pub request_id: u64,
    /// The attempt that starts now (2 for the first retry). OpenTelemetry's
    /// `http.request.resend_count` is this minus one.
    pub attempt: u32,
    /// Why the previous attempt may be repeated.
    pub reason: RetryReason,
    /// The connection the previous attempt failed on.
    pub conn_id: ConnId,
    /// The previous attempt's error.
    pub error: String,
}

/// The request is over: the body ended, failed or was dropped, or the request failed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RequestDoneInfo {
    /// The request.
    pub request_id: u64,
    /// The response status, if a response arrived.
    pub status: Option<StatusCode>,
    /// Where the time went.
    pub timings: RequestTimings,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Where one request's time went, in the manner of curl's `-w` variables. Each phase is a
/// duration; phases that did not happen are `None`. `dns`, `connect` and `tls` are those of
/// the dial this request started (Go's rule: dial events belong to the request that started
/// the dial), so they are `None` when it started none, and set even if a returned connection
/// served it first. A retried request reports the phases of its last attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestTimings {
    /// Waiting for a connection (zero when served at once by an idle one); when the request
    /// dialed, this includes its own dial.
    pub queued: Duration,
    /// Name resolution of the dial this request started.
    pub dns: Option<Duration>,
    /// TCP connect of that dial: from its first attempt's start to the end of the one that
    /// connected (happy eyeballs may try several addresses).
    pub connect: Option<Duration>,
    /// The exchange with a proxy (`CONNECT`, SOCKS) of that dial, after the TCP connect to
    /// the proxy (which is `connect`) and before TLS to the target.
    pub proxy: Option<Duration>,
    /// TLS handshake of that dial.
    pub tls: Option<Duration>,
    /// From getting the connection until the request was written.
    pub send: Option<Duration>,
    /// From the request written until the first response byte ("server processing").
    pub wait: Option<Duration>,
    /// From the first response byte until the body ended ("content transfer").
    pub transfer: Option<Duration>,
    /// Start to end.
    pub total: Duration,
    /// Start until a connection was in hand (curl's `time_pretransfer`, roughly).
    pub got_conn: Option<Duration>,
    /// Start until the first response byte (curl's `time_starttransfer`).
    pub first_byte: Option<Duration>,
    /// How many times the request was sent again after an attempt that was safe to repeat
    /// (OpenTelemetry's `http.request.resend_count`); 0 when the first attempt answered.
    pub resend_count: u32,
}
