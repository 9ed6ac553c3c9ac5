//! The pooled connection (`PoolClient`): hyper's `SendRequest` for HTTP/1 or HTTP/2, and what
//! the connector told us about it (`ConnFacts`, with the HTTP/1 connection's `IoEvents`, whose
//! IO wrapper is `connect::Stream`). `gate.rs`: what requests pass to reach hyper's dispatcher,
//! and an HTTP/2 connection's stream limit; `dial.rs`: the dial (the connector with the
//! requesting tracer in scope), the handshake and the connection's driver task.

mod dial;
mod gate;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::sync::Mutex;
use std::task::{Context, Poll};

use http::{Extensions, Uri, Version};
use hyper::client::conn::{http1, http2};
use hyper::rt::{Read, Write};
use hyper_util::client::legacy::connect::{Connection, HttpInfo};

use super::body::ReqBody;
use super::exec::{Exec, Held};
use super::Error;
use crate::connect::ConnInfo;
use crate::pool::{BoxError, Poolable};
use crate::spans::{SetupSpan, SpanHandle};
use crate::trace::io::IoEvents;
use crate::trace::{TlsInfo, Tracer, DIAL_TRACER};

pub(crate) use self::dial::{dial, DialConfig};
pub(crate) use self::gate::{Gate, StreamLimit};

/// What we know of a connection, shared by all its handles.
pub(crate) struct ConnFacts {
    pub(crate) version: Version,
    pub(crate) remote_addr: Option<SocketAddr>,
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) tls: Option<TlsInfo>,
    /// How the dial picked `remote_addr` (poolscope's connectors).
    pub(crate) dial: Option<crate::stats::DialSummary>,
    /// The socket, for `TCP_INFO` in snapshots (`TelemetryBuilder::snapshot_tcp_info`).
    pub(crate) probe: Option<Arc<crate::connect::stream::TcpProbe>>,
    /// The connector said it reached a proxy (`Connected::proxy`): HTTP/1 requests go out in
    /// absolute form.
    pub(crate) proxied: bool,
    /// A forward proxy's `Proxy-Authorization`, for every request on the connection.
    /// (Boxed: it is rare, and this struct is allocated per connection and read per request.)
    pub(crate) proxy_auth: Option<Box<http::HeaderValue>>,
    /// What the connector attached (`Connected::extra`, poolscope's own `ConnInfo` taken out),
    /// copied into every response's extensions as hyper-util does; `None` when nothing.
    pub(crate) extras: Option<Extensions>,
    /// Per-request IO events (HTTP/1 on poolscope's own `Stream` only: one request at a
    /// time).
    pub(crate) io: Option<Arc<IoEvents>>,
    /// HTTP/2: the peer's current `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub(crate) streams: Option<StreamLimit>,
    /// What requests pass to be handed to hyper's dispatcher.
    pub(crate) gate: Arc<Gate>,
    /// `ConnectionInfo::poison` was called: no request may get it any more.
    pub(crate) poisoned: AtomicBool,
    /// The dial's `connection_setup` span, until the first request that gets the connection
    /// links to it (which ends it).
    pub(crate) setup: Mutex<Option<SetupSpan>>,
}

impl ConnFacts {
    /// The `connection_setup` span, for the first request that asks.
    pub(crate) fn take_setup_span(&self) -> Option<SetupSpan> {
        self.setup.lock().take()
    }
}

impl crate::pool::Describe for ConnFacts {
    fn describe(&self, row: &mut crate::stats::ConnSnapshot) {
        row.version = self.version;
        row.local_addr = self.local_addr;
        row.peer_addr = self.remote_addr;
        row.dial = self.dial;
        row.tcp = self.probe.as_ref().and_then(|p| p.read());
    }
}

pub(crate) enum Tx<B> {
    H1(http1::SendRequest<ReqBody<B>>),
    H2(http2::SendRequest<ReqBody<B>>),
}

/// A connection as the pool holds it.
pub(crate) struct PoolClient<B> {
    pub(crate) tx: Tx<B>,
    pub(crate) facts: Arc<ConnFacts>,
}

impl<B: Send + 'static> Poolable for PoolClient<B> {
    fn is_open(&self) -> bool {
        if self.facts.poisoned.load(Ordering::Acquire) {
            return false;
        }
        match &self.tx {
            Tx::H1(tx) => !tx.is_closed(),
            Tx::H2(tx) => !tx.is_closed(),
        }
    }

    fn share(&self) -> Option<Self> {
        match &self.tx {
            Tx::H1(_) => None,
            Tx::H2(tx) => Some(PoolClient {
                tx: Tx::H2(tx.clone()),
                facts: self.facts.clone(),
            }),
        }
    }

    fn max_concurrent(&self) -> Option<usize> {
        self.facts.streams.as_ref().map(StreamLimit::current)
    }

    fn describe(&self) -> Option<Arc<dyn crate::pool::Describe>> {
        Some(self.facts.clone())
    }
}

impl<B> PoolClient<B> {
    pub(crate) fn is_http2(&self) -> bool {
        matches!(self.tx, Tx::H2(_))
    }
}

// ----- dialing ----------------------------------------------------------------------------
