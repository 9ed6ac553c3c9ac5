//! The client's error: which phase of a request failed.

use std::error::Error as StdError;
use std::fmt;

use crate::connect::{ConnectError, ConnectPhase};
use crate::pool;
use crate::stats::PoolSnapshot;

type BoxError = Box<dyn StdError + Send + Sync>;

/// A request failed. Opaque, as hyper's error is: ask with the `is_*` predicates.
///
/// # Formatting
///
/// `Display` names the phase that failed — `invalid URI`, `dns error`, `connect error`, `tls
/// error`, `pool wait timed out`, `error sending request`, `error receiving response`, … —
/// and the host where it helps; the cause is the [`source`](StdError::source). The wording may
/// change. Neither ever contains userinfo, a path or a query.
pub struct Error {
    inner: Box<ErrorImpl>,
}

struct ErrorImpl {
    kind: Kind,
    cause: Option<BoxError>,
    /// `host:port`, where known.
    target: Option<String>,
    /// What the client knows beyond the phase and the cause: which connection, how it
    /// ended, why the request was not sent again.
    context: Vec<String>,
    /// The connection the request failed on, if it had one.
    conn: Option<super::ConnectionInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The URI cannot be requested (relative, no host, unsupported scheme).
    InvalidUri,
    /// The request asks for an HTTP version the connection cannot speak.
    UnsupportedVersion,
    /// Dialing failed, in this phase (`None`: the HTTP handshake on the new connection).
    Connect(Option<ConnectPhase>),
    /// The pool-wait timeout elapsed.
    PoolTimeout,
    /// The client (its pool) was dropped while the request waited.
    PoolClosed,
    /// Writing the request failed, or the connection closed before a response.
    Send,
    /// Reading the response head failed (malformed, or cut short).
    Receive,
    /// The request was canceled before it was sent (the connection closed first).
    Canceled,
}

impl Error {
    pub(crate) fn new(kind: Kind) -> Error {
        Error {
            inner: Box::new(ErrorImpl {
                kind,
                cause: None,
                target: None,
                context: Vec::new(),
                conn: None,
            }),
        }
    }

    pub(crate) fn with(mut self, cause: impl Into<BoxError>) -> Error {
        self.inner.cause = Some(cause.into());
        self
    }

    /// Records the connection the request failed on.
    pub(crate) fn on_connection(mut self, conn: super::ConnectionInfo) -> Error {
        self.inner.conn = Some(conn);
        self
    }

    /// The connection the request was on when it failed (hyper-util's `connect_info`):
    /// `None` when it failed before it had one (invalid URI, dial, pool timeout).
    pub fn connect_info(&self) -> Option<&super::ConnectionInfo> {
        self.inner.conn.as_ref()
    }

    /// Adds what the client knows about the failure to its `Display`.
    pub(crate) fn context(mut self, what: impl Into<String>) -> Error {
        self.inner.context.push(what.into());
        self
    }

    pub(crate) fn target(mut self, target: impl Into<String>) -> Error {
        self.inner.target = Some(target.into());
        self
    }

    /// Maps a pool checkout error: a dial error keeps its connector phase.
    pub(crate) fn from_pool(err: pool::Error) -> Error {
        if err.is_timeout() {
            return Error::new(Kind::PoolTimeout).with(err);
        }
        if err.is_closed() {
            return Error::new(Kind::PoolClosed).with(err);
        }
        match err.into_cause() {
            Some(cause) => match cause.downcast::<ConnectError>() {
                Ok(ce) => Error::new(Kind::Connect(Some(ce.phase()))).with(*ce),
                Err(other) => match other.downcast::<Error>() {
                    Ok(e) => *e,
                    Err(other) => {
                        // A dial shared by several requests: its error sits one level down.
                        let below = other.source();
                        let phase = below
                            .and_then(|e| e.downcast_ref::<ConnectError>())
                            .map(ConnectError::phase);
                        let kind = match below.and_then(|e| e.downcast_ref::<Error>()) {
                            Some(e) => e.inner.kind,
                            None => Kind::Connect(phase),
                        };
                        Error::new(kind).with(other)
                    }
                },
            },
            None => Error::new(Kind::Connect(None)).with("dial abandoned before it finished"),
        }
    }

    /// The request failed while connecting: DNS, TCP, TLS or the HTTP handshake.
    pub fn is_connect(&self) -> bool {
        matches!(self.inner.kind, Kind::Connect(_))
    }

    /// Which connect phase failed, if [`is_connect`](Error::is_connect) and the connector is
    /// poolscope's.
    pub fn connect_phase(&self) -> Option<ConnectPhase> {
        match self.inner.kind {
            Kind::Connect(p) => p,
            _ => None,
        }
    }

    /// A timeout elapsed: the pool-wait timeout, or a connect timeout.
    pub fn is_timeout(&self) -> bool {
        if self.inner.kind == Kind::PoolTimeout {
            return true;
        }
        let mut source = self.source();
        while let Some(e) = source {
            if e.downcast_ref::<ConnectError>()
                .is_some_and(ConnectError::is_timeout)
            {
                return true;
            }
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                return true;
            }
            source = e.source();
        }
        false
    }

    /// The pool-wait timeout elapsed; [`pool_snapshot`](Error::pool_snapshot) shows the pool
    /// at that moment.
    pub fn is_pool_timeout(&self) -> bool {
        self.inner.kind == Kind::PoolTimeout
    }

    /// The request was canceled before it was sent: the connection it was handed to closed
    /// first, and it could not go again (hyper's meaning).
    pub fn is_canceled(&self) -> bool {
        self.inner.kind == Kind::Canceled
    }

    /// The client (its pool) was dropped while the request waited for a connection.
    pub fn is_pool_closed(&self) -> bool {
        self.inner.kind == Kind::PoolClosed
    }

    /// The pool's snapshot carried by a pool-wait timeout.
    pub fn pool_snapshot(&self) -> Option<&PoolSnapshot> {
        self.source()?.downcast_ref::<pool::Error>()?.snapshot()
    }

    /// The status a proxy refused the request's tunnel with (`CONNECT` answered 407, 403,
    /// 502...), if that is why it failed.
    pub fn proxy_status(&self) -> Option<http::StatusCode> {
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            if let Some(ce) = e.downcast_ref::<ConnectError>() {
                if let Some(status) = ce.proxy_status() {
                    return Some(status);
                }
            }
            cause = e.source();
        }
        None
    }

    /// Which phase failed, as a short stable label (OpenTelemetry's `error.type` in the
    /// metrics and spans): `invalid_uri`, `unsupported_version`, `dns`, `connect` (TCP),
    /// `tls`, `uri`, `proxy` (the connect phases), `handshake`, `pool_timeout`, `pool_closed`, `send`,
    /// `receive`, `canceled`. Unlike `Display`, whose wording may change, these do not; a
    /// new kind of failure may add one.
    pub fn error_type(&self) -> &'static str {
        match self.inner.kind {
            Kind::InvalidUri => "invalid_uri",
            Kind::UnsupportedVersion => "unsupported_version",
            Kind::Connect(Some(p)) => p.as_str(),
            Kind::Connect(None) => "handshake",
            Kind::PoolTimeout => "pool_timeout",
            Kind::PoolClosed => "pool_closed",
            Kind::Send => "send",
            Kind::Receive => "receive",
            Kind::Canceled => "canceled",
        }
    }

    fn description(&self) -> String {
        let what = match self.inner.kind {
            Kind::InvalidUri => "invalid URI",
            Kind::UnsupportedVersion => "unsupported HTTP version for this connection",
            Kind::Connect(Some(ConnectPhase::Dns)) => "dns error",
            Kind::Connect(Some(ConnectPhase::Tcp)) => "connect error",
            Kind::Connect(Some(ConnectPhase::Tls)) => "tls error",
            Kind::Connect(Some(ConnectPhase::Uri)) => "cannot dial this URI",
            Kind::Connect(Some(ConnectPhase::Proxy)) => "proxy error",
            Kind::Connect(_) => "connection handshake failed",
            Kind::PoolTimeout => "pool wait timed out",
            Kind::PoolClosed => "client dropped while the request waited for a connection",
            Kind::Send => "error sending request",
            Kind::Receive => "error receiving response",
            Kind::Canceled => "request canceled before it was sent",
        };
        let mut out = match &self.inner.target {
            Some(t) => format!("{what} ({t})"),
            None => what.to_owned(),
        };
        for (i, c) in self.inner.context.iter().enumerate() {
            out.push_str(if i == 0 { ": " } else { "; " });
            out.push_str(c);
        }
        out
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("poolscope::Error");
        d.field("kind", &self.inner.kind);
        if let Some(t) = &self.inner.target {
            d.field("target", t);
        }
        if !self.inner.context.is_empty() {
            d.field("context", &self.inner.context);
        }
        if let Some(c) = &self.inner.cause {
            d.field("cause", c);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .cause
            .as_ref()
            .map(|e| &**e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_and_one_pointer() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn connect_errors_name_their_phase() {
        let ce = ConnectError::new(ConnectPhase::Tls, "handshake with h");
        let e = Error::new(Kind::Connect(Some(ce.phase())))
            .with(ce)
            .target("h:443");
        assert!(e.is_connect());
        assert_eq!(e.connect_phase(), Some(ConnectPhase::Tls));
        assert_eq!(e.to_string(), "tls error (h:443)");
    }

    #[test]
    fn connect_timeout_is_a_timeout() {
        let ce = ConnectError::new(ConnectPhase::Tcp, "slow").timed_out();
        let e = Error::new(Kind::Connect(Some(ConnectPhase::Tcp))).with(ce);
        assert!(e.is_timeout() && e.is_connect());
    }
}
