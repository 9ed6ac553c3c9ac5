//! `Stream`: the connection a poolscope connector returns (TCP, or TLS over TCP).

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::ConnInfo;

/// A connection made by [`HttpConnector`](super::HttpConnector) or
/// [`HttpsConnector`](super::HttpsConnector): plain TCP or TLS over TCP. It implements
/// hyper's `Read`/`Write` and hyper-util's `Connection` (which reports [`ConnInfo`] as an
/// extra and HTTP/2 when ALPN chose `h2`).
pub struct Stream {
    inner: Inner,
    info: ConnInfo,
}

enum Inner {
    Tcp(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Stream {
    pub(crate) fn tcp(stream: TcpStream, info: ConnInfo) -> Stream {
        Stream {
            inner: Inner::Tcp(TokioIo::new(stream)),
            info,
        }
    }

    pub(crate) fn tls(stream: TlsStream<TcpStream>, info: ConnInfo) -> Stream {
        Stream {
            inner: Inner::Tls(Box::new(TokioIo::new(stream))),
            info,
        }
    }

    /// What the connector knows about this connection.
    pub fn info(&self) -> &ConnInfo {
        &self.info
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
        let connected = Connected::new().extra(self.info.clone());
        if h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Inner::Tcp(s) => s.is_write_vectored(),
            Inner::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Inner::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }
}
