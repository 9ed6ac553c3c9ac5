//! Connectors: DNS (hickory-resolver), TCP with happy eyeballs, and TLS (rustls), reporting
//! DNS / connect / TLS events to the request that started the dial.
//!
//! - [`HttpConnector`]: `http://` only. Literal IPs and `localhost` skip DNS; other names go
//!   to hickory-resolver with the system configuration (`/etc/resolv.conf`). Addresses are
//!   tried in turn, a new attempt starting every 250 ms while earlier ones are still pending
//!   (happy eyeballs, RFC 8305 style); `TCP_NODELAY` is set.
//! - [`HttpsConnector`]: `https://` through rustls (ring provider, webpki roots by default,
//!   custom roots or a whole `ClientConfig`), ALPN `h2` and `http/1.1`; `http://` as above.
//!
//! Both are `tower_service::Service<Uri>` and work with hyper-util's legacy client too. What
//! this module does not do: pooling, retries.
//!
//! Proxies: [`Proxy`] chooses one per request (from the environment, or given) for
//! [`Builder::proxy`](crate::client::Builder::proxy); both connectors then reach the target
//! through it (forward proxying, `CONNECT`, SOCKS). [`ForwardProxy`] and hyper-util's
//! `Tunnel` / `SocksV5` are the fixed-proxy alternatives, composed by hand.
//!
//! The stream they return carries a [`ConnInfo`] (addresses, TLS details), which the client
//! reports in `GotConnInfo`.
//!
//! # Ambient context
//!
//! A connector is a `Service<Uri>`: hyper-util's signature, which carries nothing but the
//! URI. Three task-locals carry the rest across that boundary, each set by the client around
//! the one future that needs it and read, if at all, inside it. Any connector works without
//! them (hyper-util's own, or a user's); poolscope's connectors use the first two.
//!
//! | task-local | set by | read by | carries |
//! |---|---|---|---|
//! | `trace::DIAL_TRACER` | the client's dial (`client::conn::dial`), around the connector's call | `trace::DialPhase` in DNS, TCP, proxy and TLS; each TCP attempt's `connect_start`/`connect_done` | the tracer of the request that started the dial: its hooks and its milestones |
//! | `connect::proxy::DIAL_VIA` | the client's dial (`proxy::dialing_via`), when `Builder::proxy` chose a proxy | [`HttpConnector`] and [`HttpsConnector`] (`proxy::take_via`) | the proxy to reach the target through; the dial fails if a connector leaves it untaken (it went direct) |
//! | `client::exec::HELD` | the HTTP/2 handshake (`Held::during`) | the client's executor (`Exec::execute`) | the first future the handshake spawns (h2's connection task), kept for the connection's driver to poll |

mod dns;
mod forward;
mod http;
mod https;
pub(crate) mod proxy;
pub(crate) mod stream;
mod tcp;

use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;

use ::http::Uri;

pub use self::dns::HickoryResolver;
pub use self::forward::ForwardProxy;
pub use self::http::HttpConnector;
pub use self::https::HttpsConnector;
pub use self::proxy::{InvalidProxy, Proxy, ProxyBuilder};
pub use self::stream::Stream;
use crate::trace::TlsInfo;

/// What a connector knows about a connection it made.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnInfo {
    /// The peer's address.
    pub remote_addr: SocketAddr,
    /// Our address.
    pub local_addr: SocketAddr,
    /// TLS details, for HTTPS.
    pub tls: Option<TlsInfo>,
    /// How the dial picked `remote_addr` among the resolved addresses (poolscope's TCP
    /// connect; `None` for a connection another connector made).
    pub dial: Option<crate::stats::DialSummary>,
}

/// The phase of a dial that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectPhase {
    /// The URI cannot be dialed by this connector (no host, wrong scheme).
    Uri,
    /// Name resolution.
    Dns,
    /// TCP connect (refused, unreachable, timed out).
    Tcp,
    /// The TLS handshake (certificate, protocol).
    Tls,
    /// The exchange with a proxy after reaching it: a `CONNECT` it refused or answered
    /// oddly ([`ConnectError::proxy_status`] has its status), or a failed SOCKS handshake.
    /// Failing to reach the proxy at all is [`Tcp`](ConnectPhase::Tcp) (or `Dns`).
    Proxy,
}

impl ConnectPhase {
    /// `uri`, `dns`, `connect`, `tls`, `proxy`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnectPhase::Uri => "uri",
            ConnectPhase::Dns => "dns",
            ConnectPhase::Tcp => "connect",
            ConnectPhase::Tls => "tls",
            ConnectPhase::Proxy => "proxy",
        }
    }
}

/// A dial failed. `Display` names the phase and the host; the cause is the source.
#[derive(Debug)]
pub struct ConnectError {
    phase: ConnectPhase,
    msg: String,
    timed_out: bool,
    /// The status a proxy refused a `CONNECT` with.
    proxy_status: Option<::http::StatusCode>,
    cause: Option<Box<dyn StdError + Send + Sync>>,
}

/// How [`ConnectError::no_addresses`] begins.
const NO_ADDRESSES: &str = "no addresses for";

impl ConnectError {
    pub(crate) fn new(phase: ConnectPhase, msg: impl Into<String>) -> ConnectError {
        ConnectError {
            phase,
            msg: msg.into(),
            timed_out: false,
            proxy_status: None,
            cause: None,
        }
    }

    /// A lookup of `host` that found no address.
    pub(crate) fn no_addresses(host: &str) -> ConnectError {
        ConnectError::new(ConnectPhase::Dns, format!("{NO_ADDRESSES} {host:?}"))
    }

    /// Whether this is a lookup that found no address ([`no_addresses`](Self::no_addresses)).
    pub(crate) fn is_no_addresses(&self) -> bool {
        self.phase == ConnectPhase::Dns
            && self.cause.is_none()
            && self.msg.starts_with(NO_ADDRESSES)
    }

    pub(crate) fn with(mut self, cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    pub(crate) fn timed_out(mut self) -> Self {
        self.timed_out = true;
        self
    }

    /// Which phase failed.
    pub fn phase(&self) -> ConnectPhase {
        self.phase
    }

    /// Whether the connect timeout elapsed.
    pub fn is_timeout(&self) -> bool {
        self.timed_out
    }

    /// The status a proxy refused a `CONNECT` with (407 for credentials it wants, 403 for a
    /// target it forbids, 502 for one it could not reach...).
    pub fn proxy_status(&self) -> Option<::http::StatusCode> {
        self.proxy_status
    }

    pub(crate) fn with_proxy_status(mut self, status: ::http::StatusCode) -> Self {
        self.proxy_status = Some(status);
        self
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only this level: the cause is the `source`, and printing it here too would show it
        // twice to anyone who walks the chain.
        write!(f, "{} error: {}", self.phase.as_str(), self.msg)
    }
}

impl StdError for ConnectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.cause
            .as_ref()
            .map(|e| &**e as &(dyn StdError + 'static))
    }
}

/// The connectors a [`Client`](crate::Client) accepts: any `tower_service::Service<Uri>` whose
/// connections implement hyper's `Read + Write` and hyper-util's `Connection` (which reports
/// HTTP/2 negotiation and extras such as addresses). hyper-util's `HttpConnector`, and
/// poolscope's [`HttpConnector`] and [`HttpsConnector`], all qualify.
///
/// Implemented for every such service; name it as a bound (`C: Connect`) rather than
/// implementing it.
pub trait Connect:
    tower_service::Service<
        Uri,
        Response: hyper::rt::Read
                      + hyper::rt::Write
                      + hyper_util::client::legacy::connect::Connection
                      + Unpin
                      + Send
                      + 'static,
        Error: Into<Box<dyn StdError + Send + Sync>>,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Connect for S where
    S: tower_service::Service<
            Uri,
            Response: hyper::rt::Read
                          + hyper::rt::Write
                          + hyper_util::client::legacy::connect::Connection
                          + Unpin
                          + Send
                          + 'static,
            Error: Into<Box<dyn StdError + Send + Sync>>,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// The request bodies a [`Client`](crate::Client) accepts: hyper-util's bounds
/// (`Body + Send + Unpin + 'static` with `Send` data and boxable errors), named once.
/// Implemented for every such body.
pub trait RequestBody:
    http_body::Body<Data: Send, Error: Into<Box<dyn StdError + Send + Sync>>> + Send + Unpin + 'static
{
}

impl<B> RequestBody for B where
    B: http_body::Body<Data: Send, Error: Into<Box<dyn StdError + Send + Sync>>>
        + Send
        + Unpin
        + 'static
{
}
