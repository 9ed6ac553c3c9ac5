//! Which connection served a request: [`ConnectionInfo`] in every response's extensions, and
//! [`capture_connection`] for code that holds only the request (hyper-util's
//! `capture_connection`, whose poisoning the AWS SDK relies on to evict bad connections).

use std::fmt;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::{Extensions, Request, Version};
use tokio::sync::watch;

use super::conn::ConnFacts;
use crate::pool::{ConnId, LeaseInfo};
use crate::trace::TlsInfo;

/// The connection a request was sent on and how the request got it.
///
/// Every response carries one in its extensions (`resp.extensions().get::<ConnectionInfo>()`),
/// so middleware (a `tower` layer, a logger) can read it without registering a hook; a
/// [`CaptureConnection`] gets it as soon as the request has its connection. Cloning is cheap.
///
/// # Examples
///
/// ```no_run
/// # async fn run(client: poolscope::Client<poolscope::connect::HttpConnector, http_body_util::Empty<bytes::Bytes>>) -> Result<(), poolscope::Error> {
/// use poolscope::client::ConnectionInfo;
///
/// let resp = client.get("http://example.com/".parse().unwrap()).await?;
/// if let Some(conn) = resp.extensions().get::<ConnectionInfo>() {
///     println!("{} reused={} queued {:?}", conn.id(), conn.is_reused(), conn.queued());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ConnectionInfo {
    lease: LeaseInfo,
    facts: Arc<ConnFacts>,
}

impl ConnectionInfo {
    pub(crate) fn new(lease: LeaseInfo, facts: Arc<ConnFacts>) -> ConnectionInfo {
        ConnectionInfo { lease, facts }
    }

    /// The connection's id (as in `Stats` events, snapshots and traces).
    pub fn id(&self) -> ConnId {
        self.lease.conn_id
    }

    /// The connection had carried an earlier request.
    pub fn is_reused(&self) -> bool {
        self.lease.reused
    }

    /// The connection came from the idle list (or was an HTTP/2 connection nobody used).
    pub fn was_idle(&self) -> bool {
        self.lease.was_idle
    }

    /// How long it had been idle, when [`was_idle`](ConnectionInfo::was_idle).
    pub fn idle_time(&self) -> Duration {
        self.lease.idle_time
    }

    /// How long the request waited in the pool's queues for it (zero when served at once).
    pub fn queued(&self) -> Duration {
        self.lease.waited
    }

    /// The HTTP version spoken on it.
    pub fn version(&self) -> Version {
        self.facts.version
    }

    /// The peer's address, when the connector reported it (poolscope's connectors and
    /// hyper-util's `HttpConnector` do).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.facts.remote_addr
    }

    /// The local address, when the connector reported it.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.facts.local_addr
    }

    /// The TLS session, for poolscope's `HttpsConnector`.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.facts.tls.as_ref()
    }

    /// The connector said it reached a proxy (`Connected::proxy`).
    pub fn is_proxied(&self) -> bool {
        self.facts.proxied
    }

    /// The connection speaks HTTP/2 (hyper-util's `Connected::is_negotiated_h2`).
    pub fn is_negotiated_h2(&self) -> bool {
        self.facts.version == Version::HTTP_2
    }

    /// Copies what the connector attached (`Connected::extra`) into `extensions`.
    pub fn get_extras(&self, extensions: &mut Extensions) {
        if let Some(extras) = &self.facts.extras {
            extensions.extend(extras.clone());
        }
    }

    /// Marks the connection as not to be reused (hyper-util's `Connected::poison`): requests
    /// on it now finish, and then it is closed instead of going back to the pool
    /// (`CloseReason::Poisoned`); no new request gets it.
    pub fn poison(&self) {
        self.facts.poisoned.store(true, Ordering::Release);
    }

    /// Whether [`poison`](ConnectionInfo::poison) was called for this connection.
    pub fn is_poisoned(&self) -> bool {
        self.facts.poisoned.load(Ordering::Acquire)
    }
}

impl fmt::Debug for ConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionInfo")
            .field("id", &self.lease.conn_id)
            .field("reused", &self.lease.reused)
            .field("was_idle", &self.lease.was_idle)
            .field("idle_time", &self.lease.idle_time)
            .field("queued", &self.lease.waited)
            .field("version", &self.facts.version)
            .field("remote_addr", &self.facts.remote_addr)
            .field("local_addr", &self.facts.local_addr)
            .field("proxied", &self.facts.proxied)
            .field("poisoned", &self.is_poisoned())
            .finish()
    }
}

/// Receives the [`ConnectionInfo`] of the connection a request gets; see
/// [`capture_connection`].
#[derive(Debug, Clone)]
pub struct CaptureConnection {
    rx: watch::Receiver<Option<ConnectionInfo>>,
}

/// The sending side, in the request's extensions.
#[derive(Clone)]
pub(crate) struct CaptureExtension {
    tx: Arc<watch::Sender<Option<ConnectionInfo>>>,
}

impl CaptureExtension {
    pub(crate) fn set(&self, info: ConnectionInfo) {
        self.tx.send_replace(Some(info));
    }
}

/// Asks the client to report the connection `request` gets, as hyper-util's
/// `capture_connection` does: once the request has its connection (before the response
/// arrives), [`CaptureConnection::connection_metadata`] returns it. A retried request reports
/// the connection of its last attempt.
///
/// A request marked with hyper-util's own `capture_connection` cannot be reported: its
/// extension type is private to hyper-util. Use this function instead (the calls read the
/// same); `docs/migration.md` says more.
///
/// # Examples
///
/// ```no_run
/// # async fn run(client: poolscope::Client<poolscope::connect::HttpConnector, http_body_util::Empty<bytes::Bytes>>) -> Result<(), poolscope::Error> {
/// let mut req = http::Request::new(http_body_util::Empty::new());
/// *req.uri_mut() = "http://example.com/".parse().unwrap();
/// let captured = poolscope::client::capture_connection(&mut req);
/// let resp = client.request(req).await?;
/// if resp.status().is_server_error() {
///     // Do not send anything else on this connection.
///     if let Some(conn) = captured.connection_metadata().as_ref() {
///         conn.poison();
///     }
/// }
/// # Ok(()) }
/// ```
pub fn capture_connection<B>(request: &mut Request<B>) -> CaptureConnection {
    let (tx, rx) = watch::channel(None);
    request
        .extensions_mut()
        .insert(CaptureExtension { tx: Arc::new(tx) });
    CaptureConnection { rx }
}

impl CaptureConnection {
    /// The connection, once the request has one (`None` before).
    pub fn connection_metadata(&self) -> impl Deref<Target = Option<ConnectionInfo>> + '_ {
        self.rx.borrow()
    }

    /// Waits until the request has a connection; `None` if the request ended without one.
    pub async fn wait_for_connection_metadata(
        &mut self,
    ) -> impl Deref<Target = Option<ConnectionInfo>> + '_ {
        if self.rx.borrow().is_some() {
            return self.rx.borrow();
        }
        let _ = self.rx.changed().await;
        self.rx.borrow()
    }
}
