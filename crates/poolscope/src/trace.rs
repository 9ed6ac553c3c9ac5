//! `ClientTrace`: per-request events in the vocabulary of Go's `net/http/httptrace`.
//!
//! Where [`Stats`](crate::Stats) sees the pool, a `ClientTrace` follows one request: getting a
//! connection, the dial it started (DNS, TCP connect, TLS), writing the request, the first
//! response byte, the end of the body, and the request's [`RequestTimings`] (curl `-w` style).
//!
//! A trace registered on the client's builder runs for every request; a `ClientTrace`
//! inserted in a request's extensions runs for that request too (Go's
//! `httptrace.WithClientTrace`). Every event carries the request's `request_id`, so one
//! client-wide trace can tell concurrent requests apart.
//!
//! | event | when |
//! |---|---|
//! | `get_conn` | the request asks the pool for a connection |
//! | `dns_start` / `dns_done` | name resolution of a dial this request started |
//! | `connect_start` / `connect_done` | each TCP connect attempt of that dial (to the proxy, through one) |
//! | `proxy_start` / `proxy_done` | the `CONNECT` or SOCKS exchange with the proxy of that dial |
//! | `tls_handshake_start` / `tls_handshake_done` | the TLS handshake of that dial |
//! | `got_conn` | the request got a connection (reused? idle? how long it queued) |
//! | `wrote_headers` / `wrote_request` | the head, then the whole request, was written |
//! | `got_1xx_response` | an informational response arrived (HTTP/1) |
//! | `got_first_response_byte` | HTTP/1: the first byte read after the request was written; HTTP/2: the response head arrived |
//! | `put_idle_conn` | the connection went back to the pool (or was closed) |
//! | `response_body_done` | the response body ended (or failed, or was dropped) |
//! | `request_done` | the request is over; carries [`RequestTimings`] |
//!
//! Dial events belong to the request that started the dial, as in Go: a request served by a
//! connection another request dialed sees no DNS/connect/TLS events. Hooks run on the task
//! doing the work and must be quick. Events never carry userinfo, paths or queries: hosts and
//! addresses only.
//!
//! # Examples
//!
//! ```
//! use poolscope::ClientTrace;
//!
//! let trace = ClientTrace::builder()
//!     .on_got_conn(|i| println!("#{} got conn {} reused={} idle={:?}", i.request_id, i.conn_id, i.reused, i.idle_time))
//!     .on_request_done(|i| println!("#{} done: {:?}", i.request_id, i.timings))
//!     .build();
//! # let _ = trace;
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode, Version};

use crate::pool::{ConnId, ConnectKey};

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

type Hook<E> = Option<Arc<dyn Fn(&E) + Send + Sync + 'static>>;

#[derive(Default)]
pub(crate) struct TraceHooks {
    get_conn: Hook<GetConnInfo>,
    got_conn: Hook<GotConnInfo>,
    put_idle_conn: Hook<PutIdleConnInfo>,
    dns_start: Hook<DnsStartInfo>,
    dns_done: Hook<DnsDoneInfo>,
    connect_start: Hook<ConnectStartInfo>,
    connect_done: Hook<ConnectDoneInfo>,
    tls_handshake_start: Hook<TlsHandshakeStartInfo>,
    tls_handshake_done: Hook<TlsHandshakeDoneInfo>,
    proxy_start: Hook<ProxyStartInfo>,
    proxy_done: Hook<ProxyDoneInfo>,
    wrote_headers: Hook<WroteInfo>,
    wrote_request: Hook<WroteInfo>,
    got_first_response_byte: Hook<FirstByteInfo>,
    got_1xx_response: Hook<Got1xxInfo>,
    response_body_done: Hook<BodyDoneInfo>,
    request_done: Hook<RequestDoneInfo>,
    retry: Hook<RetryInfo>,
}

/// Per-request hooks, built with [`ClientTrace::builder`]. Cloning is cheap.
///
/// Register one on the client's builder for every request, or insert one in a request's
/// extensions (`req.extensions_mut().insert(trace)`) for that request; both run.
#[derive(Clone, Default)]
pub struct ClientTrace {
    hooks: Option<Arc<TraceHooks>>,
}

impl fmt::Debug for ClientTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTrace")
            .field("registered", &self.hooks.is_some())
            .finish()
    }
}

/// Builds a [`ClientTrace`]; each `on_*` registers one hook.
#[derive(Default)]
pub struct ClientTraceBuilder {
    hooks: TraceHooks,
    any: bool,
}

macro_rules! trace_setters {
    ($( $(#[$doc:meta])* $name:ident => $field:ident : $ev:ty ),* $(,)?) => {
        impl ClientTraceBuilder {
            $(
                $(#[$doc])*
                pub fn $name(mut self, f: impl Fn(&$ev) + Send + Sync + 'static) -> Self {
                    self.hooks.$field = Some(Arc::new(f));
                    self.any = true;
                    self
                }
            )*
        }

        impl Tracer {
            $(
                pub(crate) fn $field(&self, ev: impl FnOnce() -> $ev) {
                    let mut ev = Some(ev);
                    let mut built: Option<$ev> = None;
                    for h in self.hooks.iter().flatten() {
                        if let Some(f) = &h.$field {
                            if built.is_none() {
                                built = ev.take().map(|e| e());
                            }
                            if let Some(e) = &built {
                                f(e);
                            }
                        }
                    }
                }
            )*
        }
    };
}

trace_setters! {
    /// The request asks the pool for a connection (Go's `GetConn`).
    on_get_conn => get_conn: GetConnInfo,
    /// The request got a connection (Go's `GotConn`).
    on_got_conn => got_conn: GotConnInfo,
    /// The connection went back to the pool or was closed (Go's `PutIdleConn`).
    on_put_idle_conn => put_idle_conn: PutIdleConnInfo,
    /// Name resolution starts (Go's `DNSStart`).
    on_dns_start => dns_start: DnsStartInfo,
    /// Name resolution ended (Go's `DNSDone`).
    on_dns_done => dns_done: DnsDoneInfo,
    /// A TCP connect attempt starts (Go's `ConnectStart`), once per address tried.
    on_connect_start => connect_start: ConnectStartInfo,
    /// A TCP connect attempt ended (Go's `ConnectDone`).
    on_connect_done => connect_done: ConnectDoneInfo,
    /// The TLS handshake starts (Go's `TLSHandshakeStart`).
    on_tls_handshake_start => tls_handshake_start: TlsHandshakeStartInfo,
    /// The TLS handshake ended (Go's `TLSHandshakeDone`).
    on_tls_handshake_done => tls_handshake_done: TlsHandshakeDoneInfo,
    /// The exchange with a proxy starts (`CONNECT` or SOCKS; poolscope only).
    on_proxy_start => proxy_start: ProxyStartInfo,
    /// The exchange with a proxy ended (poolscope only).
    on_proxy_done => proxy_done: ProxyDoneInfo,
    /// The request head was written (Go's `WroteHeaders`).
    on_wrote_headers => wrote_headers: WroteInfo,
    /// The whole request was written, or writing failed (Go's `WroteRequest`).
    on_wrote_request => wrote_request: WroteInfo,
    /// The first response byte arrived (Go's `GotFirstResponseByte`); HTTP/2: the head.
    on_got_first_response_byte => got_first_response_byte: FirstByteInfo,
    /// An informational 1xx response arrived (Go's `Got1xxResponse`; HTTP/1 only).
    on_got_1xx_response => got_1xx_response: Got1xxInfo,
    /// The response body ended, failed or was dropped.
    on_response_body_done => response_body_done: BodyDoneInfo,
    /// The request is over, with its timings: once per request, whether it got a response,
    /// failed, or was canceled (its response future dropped; `error` says so).
    on_request_done => request_done: RequestDoneInfo,
    /// An attempt failed in a way that is safe to repeat; the request is sent again.
    on_retry => retry: RetryInfo,
}

impl ClientTraceBuilder {
    /// Finishes the builder.
    pub fn build(self) -> ClientTrace {
        ClientTrace {
            hooks: self.any.then(|| Arc::new(self.hooks)),
        }
    }
}

impl ClientTrace {
    /// Starts building a trace.
    pub fn builder() -> ClientTraceBuilder {
        ClientTraceBuilder::default()
    }

    /// Whether no hook is registered.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_none()
    }
}

/// Which milestone of a request a [`Tracer::mark`] records.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mark {
    /// The DNS lookup's duration.
    Dns,
    /// The TCP connect's duration.
    Connect,
    /// The TLS handshake's duration.
    Tls,
    /// The proxy exchange's duration.
    Proxy,
    /// When the request got its connection (offset from its start).
    GotConn,
    /// How long it waited in the pool's queues.
    Queued,
    /// When it was written (offset).
    WroteRequest,
    /// When its first response byte arrived (offset).
    FirstByte,
}

/// One request's milestones, filled in as they happen (some by the dial task): the dial
/// phases and the queueing as durations, the rest as offsets from the request's start (so
/// that the timings are subtractions of durations, not of instants). Each is nanoseconds
/// plus one in an atomic, 0 while unset: marking is a store, never a lock.
#[derive(Debug, Default)]
pub(crate) struct Marks([AtomicU64; 8]);

impl Marks {
    fn slot(&self, which: Mark) -> &AtomicU64 {
        &self.0[which as usize]
    }

    fn get(&self, which: Mark) -> Option<Duration> {
        let v = self.slot(which).load(Ordering::Acquire);
        v.checked_sub(1).map(Duration::from_nanos)
    }
}

fn encode(d: Duration) -> u64 {
    u64::try_from(d.as_nanos())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

/// The hooks of one request (client-wide and the request's own) and its milestones.
/// Shared with the dial task this request starts.
pub(crate) struct Tracer {
    pub(crate) request_id: u64,
    /// The request's pool key.
    pub(crate) key: ConnectKey,
    pub(crate) start: Instant,
    /// Up to three hook sets (client-wide, the request's own, metrics), in one allocation.
    hooks: [Option<Arc<TraceHooks>>; 3],
    pub(crate) marks: Marks,
    /// Attempts after the first.
    resends: AtomicU32,
}

impl Tracer {
    /// A tracer for a request, or `None` when no hook would see anything.
    pub(crate) fn new(
        request_id: u64,
        key: &ConnectKey,
        traces: &[Option<&ClientTrace>],
        start: Instant,
    ) -> Option<Arc<Tracer>> {
        let mut hooks: [Option<Arc<TraceHooks>>; 3] = [None, None, None];
        let mut n = 0;
        for t in traces.iter().flatten() {
            if let (Some(h), Some(slot)) = (&t.hooks, hooks.get_mut(n)) {
                *slot = Some(h.clone());
                n += 1;
            }
        }
        if n == 0 {
            return None;
        }
        Some(Arc::new(Tracer {
            request_id,
            key: key.clone(),
            start,
            hooks,
            marks: Marks::default(),
            resends: AtomicU32::new(0),
        }))
    }

    /// Whether some hook wants an HTTP/1 connection's write and first-read events as they
    /// happen (else the connection only stamps them for the timings).
    pub(crate) fn wants_io_events(&self) -> bool {
        self.hooks.iter().flatten().any(|h| {
            h.wrote_headers.is_some()
                || h.wrote_request.is_some()
                || h.got_first_response_byte.is_some()
        })
    }

    /// Whether some hook listens for 1xx responses.
    pub(crate) fn wants_1xx(&self) -> bool {
        self.hooks
            .iter()
            .flatten()
            .any(|h| h.got_1xx_response.is_some())
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Records a milestone. Never calls a hook.
    pub(crate) fn mark(&self, which: Mark, value: Duration) {
        self.marks
            .slot(which)
            .store(encode(value), Ordering::Release);
    }

    /// Records a milestone unless it is already set; returns whether this call set it.
    pub(crate) fn mark_once(&self, which: Mark, value: Duration) -> bool {
        self.marks
            .slot(which)
            .compare_exchange(0, encode(value), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Clears the milestones of an attempt that did not produce the response (a retried
    /// request), so its timings describe the attempt that did. The dial phases stay: they
    /// belong to the request that started the dial, whichever connection served it.
    pub(crate) fn clear_attempt(&self) {
        self.resends.fetch_add(1, Ordering::Relaxed);
        for which in [
            Mark::GotConn,
            Mark::Queued,
            Mark::WroteRequest,
            Mark::FirstByte,
        ] {
            self.marks.slot(which).store(0, Ordering::Release);
        }
    }

    /// The request's timings, `total` after it started (the end's one reading, shared with
    /// the other sinks).
    pub(crate) fn timings(&self, total: Duration) -> RequestTimings {
        let m = &self.marks;
        let (got_conn, wrote, first_byte) = (
            m.get(Mark::GotConn),
            m.get(Mark::WroteRequest),
            m.get(Mark::FirstByte),
        );
        let between = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
        RequestTimings {
            queued: m.get(Mark::Queued).unwrap_or_default(),
            dns: m.get(Mark::Dns),
            connect: m.get(Mark::Connect),
            proxy: m.get(Mark::Proxy),
            tls: m.get(Mark::Tls),
            send: between(got_conn, wrote),
            wait: between(wrote, first_byte),
            transfer: first_byte.map(|f| total.saturating_sub(f)),
            total,
            got_conn,
            first_byte,
            resend_count: self.resends.load(Ordering::Relaxed),
        }
    }
}

/// `network.protocol.version` as OpenTelemetry writes it (`1.1`, `2`…).
pub(crate) fn protocol_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// An error and its causes on one line (`what: why: root cause`), as the `error` strings of
/// events and the history show them: each level's `Display` shows only itself. For a
/// [`crate::Error`] it says the phase, the target, why it was not retried, and hyper's and
/// the OS's causes.
pub fn error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let s = e.to_string();
        // A cause that already repeats what was said adds nothing.
        if !text.ends_with(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    text
}

tokio::task_local! {
    /// The tracer of the request whose dial is running on this task: connectors report DNS,
    /// connect and TLS events to it.
    pub(crate) static DIAL_TRACER: Option<Arc<Tracer>>;
}

/// The tracer of the request whose dial runs on this task, if any, to keep beyond a call.
pub(crate) fn dial_tracer() -> Option<Arc<Tracer>> {
    DIAL_TRACER.try_with(Option::clone).ok().flatten()
}

/// Runs `f` with the tracer of the request whose dial runs on this task, if any.
pub(crate) fn with_dial_tracer(f: impl FnOnce(&Tracer)) {
    let _ = DIAL_TRACER.try_with(|t| {
        if let Some(t) = t {
            f(t)
        }
    });
}
