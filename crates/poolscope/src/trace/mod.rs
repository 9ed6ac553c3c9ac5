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
use std::sync::Arc;

mod dial;
mod events;
pub(crate) mod io;
mod tracer;

pub(crate) use self::dial::{DialPhase, Phase};
pub use self::events::*;
pub(crate) use self::tracer::{dial_tracer, Mark, Tracer, DIAL_TRACER};

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
