//! The pool's error: why a checkout did not produce a connection.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::stats::PoolSnapshot;

/// A boxed error from a dial, as the dialer reported it.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a [`Checkout`](super::Checkout) did not produce a connection.
///
/// # Formatting
///
/// `Display` prints only this level ("pool wait timed out", "dial failed"); the dialer's own
/// error is the [`source`](StdError::source). The wording may change.
pub struct Error {
    inner: Box<ErrorImpl>,
}

struct ErrorImpl {
    kind: Kind,
    cause: Option<BoxError>,
    snapshot: Option<PoolSnapshot>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `Config::wait_timeout` elapsed before a connection was delivered.
    WaitTimeout,
    /// Every handle of the pool was dropped.
    PoolClosed,
    /// The dial this request started failed.
    Dial,
    /// The dial this request started was dropped before it finished.
    DialAbandoned,
    /// The checkout was polled again after it completed.
    PolledAfterCompletion,
}

impl Error {
    pub(crate) fn new(kind: Kind) -> Error {
        Error {
            inner: Box::new(ErrorImpl {
                kind,
                cause: None,
                snapshot: None,
            }),
        }
    }

    pub(crate) fn with(mut self, cause: BoxError) -> Error {
        self.inner.cause = Some(cause);
        self
    }

    pub(crate) fn with_snapshot(mut self, snapshot: PoolSnapshot) -> Error {
        self.inner.snapshot = Some(snapshot);
        self
    }

    /// The request waited longer than the pool-wait timeout. [`snapshot`](Error::snapshot)
    /// shows the pool at that moment.
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == Kind::WaitTimeout
    }

    /// The pool was closed (every handle dropped) before a connection was delivered.
    pub fn is_closed(&self) -> bool {
        self.inner.kind == Kind::PoolClosed
    }

    /// The dial started for this request failed or was abandoned; the dialer's error is the
    /// source.
    pub fn is_dial(&self) -> bool {
        matches!(self.inner.kind, Kind::Dial | Kind::DialAbandoned)
    }

    /// The pool as it was when the error happened (pool-wait timeouts carry one).
    pub fn snapshot(&self) -> Option<&PoolSnapshot> {
        self.inner.snapshot.as_ref()
    }

    /// This dial error in a form every request that waited for the dial can hold: the
    /// dialer's error behind an `Arc` (its chain stays reachable through `source`).
    pub(crate) fn shared(self) -> Error {
        let kind = self.inner.kind;
        let cause = self
            .inner
            .cause
            .map(|c| Box::new(SharedDialError(Arc::from(c))) as BoxError);
        Error {
            inner: Box::new(ErrorImpl {
                kind,
                cause,
                snapshot: None,
            }),
        }
    }

    /// A copy of an error made by [`shared`](Error::shared).
    pub(crate) fn clone_shared(&self) -> Error {
        let cause = self
            .inner
            .cause
            .as_ref()
            .and_then(|c| c.downcast_ref::<SharedDialError>())
            .map(|c| Box::new(SharedDialError(c.0.clone())) as BoxError);
        Error {
            inner: Box::new(ErrorImpl {
                kind: self.inner.kind,
                cause,
                snapshot: None,
            }),
        }
    }

    /// Takes the dialer's own error out, if this error carries one.
    pub fn into_cause(self) -> Option<BoxError> {
        self.inner.cause
    }

    fn description(&self) -> &'static str {
        match self.inner.kind {
            Kind::WaitTimeout => "pool wait timed out",
            Kind::PoolClosed => "connection pool closed",
            Kind::Dial => "dial failed",
            Kind::DialAbandoned => "dial abandoned before it finished",
            Kind::PolledAfterCompletion => "checkout polled after completion",
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_tuple("pool::Error");
        d.field(&self.inner.kind);
        if let Some(cause) = &self.inner.cause {
            d.field(cause);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
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

/// The error of a dial that several requests waited for (HTTP/2): each holds a reference.
struct SharedDialError(Arc<dyn StdError + Send + Sync>);

impl fmt::Debug for SharedDialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for SharedDialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the dial this request waited for with others failed")
    }
}

impl StdError for SharedDialError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_and_one_pointer() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Error>();
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn dial_error_keeps_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = Error::new(Kind::Dial).with(Box::new(io));
        assert!(err.is_dial() && !err.is_timeout());
        assert_eq!(err.to_string(), "dial failed");
        assert_eq!(err.source().map(|s| s.to_string()), Some("refused".into()));
    }
}
