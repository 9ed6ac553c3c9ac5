//! `Stream`: the connection a poolscope connector returns (TCP, or TLS over TCP).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::ConnInfo;
use crate::trace::io::IoEvents;

/// A connection made by [`HttpConnector`](super::HttpConnector) or
/// [`HttpsConnector`](super::HttpsConnector): plain TCP or TLS over TCP. It implements
/// hyper's `Read`/`Write` and hyper-util's `Connection` (which reports [`ConnInfo`] as an
/// extra and HTTP/2 when ALPN chose `h2`).
pub struct Stream {
    /// Declared first, so that it is dropped before the socket it duplicates.
    probe: Option<ProbeGuard>,
    inner: Inner,
    info: ConnInfo,
    /// Set by the client on an HTTP/1 connection: the write and first-byte moments of the
    /// request on it.
    events: Option<Arc<IoEvents>>,
    /// The connector beneath said it reached a proxy (`Connected::proxy`): requests go out in
    /// absolute form.
    proxied: bool,
    /// For a forward proxy: the `Proxy-Authorization` every request on it carries.
    /// (Boxed: it is rare; see `ConnFacts::proxy_auth`.)
    proxy_auth: Option<Box<http::HeaderValue>>,
}

/// The `Proxy-Authorization` a connection to a forward proxy wants on every request: an extra
/// of its `Connected`, which the client takes (it is in no response).
#[derive(Clone)]
pub(crate) struct ProxyAuthorization(pub(crate) http::HeaderValue);

enum Inner {
    Tcp(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
    /// What another connector beneath an `HttpsConnector` made (a tunnel through a proxy, a
    /// SOCKS connection, …), as it is (`http://`) …
    Other(Box<dyn Io>),
    /// … or with TLS over it (`https://`).
    TlsOver(Box<TlsOverIo>),
}

/// TLS over another connector's connection.
type TlsOverIo = TokioIo<TlsStream<TokioIo<Box<dyn Io>>>>;

/// A connection another connector made: hyper's IO traits, sendable.
pub(crate) trait Io: Read + Write + Send + Unpin + 'static {}

impl<T: Read + Write + Send + Unpin + 'static> Io for T {}

impl Stream {
    pub(crate) fn tcp(stream: TcpStream, info: ConnInfo) -> Stream {
        Stream {
            probe: None,
            inner: Inner::Tcp(TokioIo::new(stream)),
            info,
            events: None,
            proxied: false,
            proxy_auth: None,
        }
    }

    pub(crate) fn tls(stream: TlsStream<TcpStream>, info: ConnInfo) -> Stream {
        Stream {
            probe: None,
            inner: Inner::Tls(Box::new(TokioIo::new(stream))),
            info,
            events: None,
            proxied: false,
            proxy_auth: None,
        }
    }

    /// `io` as a `Stream`, if that is its type (a connector of poolscope's made it): then the
    /// client stamps IO events inside it, and TLS can run straight over its socket.
    pub(crate) fn downcast_from<T: 'static>(io: T) -> Result<Stream, T> {
        let mut slot = Some(io);
        if let Some(stream) = (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<Stream>>()
        {
            if let Some(stream) = stream.take() {
                return Ok(stream);
            }
        }
        match slot {
            Some(io) => Err(io),
            None => unreachable!("only taken when it is a Stream"),
        }
    }

    /// A connection another connector made, as it is.
    pub(crate) fn other(io: Box<dyn Io>, info: ConnInfo, proxied: bool) -> Stream {
        Stream {
            probe: None,
            inner: Inner::Other(io),
            info,
            events: None,
            proxied,
            proxy_auth: None,
        }
    }

    /// TLS over a connection another connector made.
    pub(crate) fn tls_over(stream: TlsStream<TokioIo<Box<dyn Io>>>, info: ConnInfo) -> Stream {
        Stream {
            probe: None,
            inner: Inner::TlsOver(Box::new(TokioIo::new(stream))),
            info,
            events: None,
            proxied: false,
            proxy_auth: None,
        }
    }

    /// The TCP stream, if this is plain TCP made by poolscope's `HttpConnector` (the stream
    /// itself otherwise; moved once per dial, so its size does not matter).
    #[allow(clippy::result_large_err)]
    pub(crate) fn into_tcp(self) -> Result<(TcpStream, ConnInfo), Stream> {
        match self.inner {
            Inner::Tcp(tcp) => Ok((tcp.into_inner(), self.info)),
            inner => Err(Stream { inner, ..self }),
        }
    }

    /// This connection goes to a forward proxy: requests on it go out in absolute form, with
    /// `auth` as their `Proxy-Authorization`.
    pub(crate) fn into_forward_proxy(mut self, auth: Option<http::HeaderValue>) -> Stream {
        self.proxied = true;
        self.proxy_auth = auth.map(Box::new);
        self
    }

    /// A handle through which snapshots read this connection's `TCP_INFO` while it lives
    /// (plain TCP and TLS over poolscope's own TCP; a tunnel's socket is the proxy's, and is
    /// not sampled). It holds a duplicate of the socket's descriptor, closed when the `Stream`
    /// is dropped (before the socket itself), so it never keeps a connection open and never
    /// reads a descriptor number that has been reused.
    pub(crate) fn tcp_probe(&mut self) -> Option<Arc<TcpProbe>> {
        #[cfg(unix)]
        {
            use std::os::fd::AsFd;
            let fd = match &self.inner {
                Inner::Tcp(s) => s.inner().as_fd(),
                Inner::Tls(s) => s.inner().get_ref().0.as_fd(),
                Inner::Other(_) | Inner::TlsOver(_) => return None,
            };
            let fd = fd.try_clone_to_owned().ok()?;
            let probe = Arc::new(TcpProbe(crate::sync::Mutex::new(Some(fd))));
            self.probe = Some(ProbeGuard(probe.clone()));
            Some(probe)
        }
        #[cfg(not(unix))]
        {
            None
        }
    }

    pub(crate) fn set_events(&mut self, events: Arc<IoEvents>) {
        self.events = Some(events);
    }

    /// What the connector knows about this connection.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }
}

/// A connection's socket, for reading its `TCP_INFO` (see [`Stream::tcp_probe`]): a
/// duplicate descriptor, present while the connection's `Stream` lives.
pub(crate) struct TcpProbe(
    #[cfg(unix)] crate::sync::Mutex<Option<std::os::fd::OwnedFd>>,
    #[cfg(not(unix))] (),
);

impl TcpProbe {
    /// The kernel's `TCP_INFO` now, or `None` once the connection is gone (or if the kernel
    /// does not say).
    pub(crate) fn read(&self) -> Option<crate::stats::TcpInfo> {
        #[cfg(unix)]
        {
            let fd = self.0.lock();
            // Read under the lock: the descriptor cannot be closed meanwhile.
            tcp_info::tcp_info(fd.as_ref()?)
                .ok()
                .map(|k| from_kernel(&k))
        }
        #[cfg(not(unix))]
        {
            None
        }
    }

    fn close(&self) {
        #[cfg(unix)]
        drop(self.0.lock().take());
    }
}

/// Closes the probe's descriptor when its `Stream` is dropped.
struct ProbeGuard(Arc<TcpProbe>);

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("info", &self.info).finish()
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        let h2 = self
            .info
            .tls
            .as_ref()
            .is_some_and(|t| t.alpn.as_deref() == Some("h2"));
        let mut connected = Connected::new()
            .extra(self.info.clone())
            .proxy(self.proxied);
        if let Some(auth) = &self.proxy_auth {
            connected = connected.extra(ProxyAuthorization((**auth).clone()));
        }
        if h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl Read for Inner {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Inner::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Inner::Other(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Inner::TlsOver(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match &this.events {
            Some(events) => events.poll_read(&mut this.inner, cx, buf),
            None => Pin::new(&mut this.inner).poll_read(cx, buf),
        }
    }
}

impl Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let res = match &mut this.inner {
            Inner::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Inner::Other(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Inner::TlsOver(s) => Pin::new(&mut **s).poll_write(cx, buf),
        };
        if let Some(events) = &this.events {
            events.wrote(&res);
        }
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let res = match &mut this.inner {
            Inner::Tcp(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            Inner::Other(s) => Pin::new(&mut **s).poll_flush(cx),
            Inner::TlsOver(s) => Pin::new(&mut **s).poll_flush(cx),
        };
        if let Some(events) = &this.events {
            events.flushed(&res);
        }
        res
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            Inner::Other(s) => Pin::new(&mut **s).poll_shutdown(cx),
            Inner::TlsOver(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Inner::Tcp(s) => s.is_write_vectored(),
            Inner::Tls(s) => s.is_write_vectored(),
            Inner::Other(s) => s.is_write_vectored(),
            Inner::TlsOver(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let res = match &mut this.inner {
            Inner::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Inner::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
            Inner::Other(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
            Inner::TlsOver(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        };
        if let Some(events) = &this.events {
            events.wrote(&res);
        }
        res
    }
}

/// A snapshot row's [`TcpInfo`](crate::stats::TcpInfo) from what `tcp-info` read.
#[cfg(unix)]
fn from_kernel(k: &tcp_info::TcpInfo) -> crate::stats::TcpInfo {
    let us = |v: u32| std::time::Duration::from_micros(u64::from(v));
    crate::stats::TcpInfo {
        state: crate::stats::TcpState::from_kernel(k.state),
        rtt: us(k.rtt_us),
        rtt_var: us(k.rtt_var_us),
        min_rtt: k.min_rtt_us.map(us),
        retransmits: k.total_retrans,
        lost: k.lost,
        unacked: k.unacked,
        cwnd: k.snd_cwnd,
        bytes_acked: k.bytes_acked,
        bytes_received: k.bytes_received,
        delivery_rate: k.delivery_rate,
    }
}
