//! `HttpsConnector`: `http://` as [`HttpConnector`], `https://` with a rustls handshake.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::http::host_port;
use hyper::rt::{Read, Write};
use hyper_util::client::legacy::connect::Connection;

use super::proxy::Through;
use super::stream::Io;
use super::{ConnInfo, ConnectError, ConnectPhase, HttpConnector, Stream};
use crate::trace::{DialPhase, Phase, TlsHandshakeDoneInfo, TlsHandshakeStartInfo, TlsInfo};

/// Dials `http://` and `https://` URIs. TLS is rustls with the ring provider; certificates
/// are verified against the webpki roots unless other roots or a whole `ClientConfig` are
/// given; ALPN offers `h2` and `http/1.1`. Reports TLS events to the request that started the
/// dial, and the negotiated version, cipher and ALPN to `GotConnInfo`.
///
/// The connector beneath (`T`) makes the connection TLS runs over: poolscope's
/// [`HttpConnector`] by default, or any `tower::Service<Uri>` whose connection implements
/// hyper's `Read + Write` and hyper-util's `Connection`, such as hyper-util's `Tunnel`
/// (HTTP CONNECT through a proxy) or `SocksV5` ([`wrap`](HttpsConnector::wrap)).
///
/// # Examples
///
/// ```
/// let https = poolscope::connect::HttpsConnector::new();
/// # let _ = https;
/// ```
///
/// HTTPS through an HTTP proxy (CONNECT), as hyper-util users write it:
///
/// ```
/// use hyper_util::client::legacy::connect::proxy::Tunnel;
/// use poolscope::connect::{HttpConnector, HttpsConnector};
///
/// let proxy = "http://127.0.0.1:3128".parse().unwrap();
/// let https = HttpsConnector::new().wrap(Tunnel::new(proxy, HttpConnector::new()));
/// # let _ = https;
/// ```
#[derive(Clone)]
pub struct HttpsConnector<T = HttpConnector> {
    http: T,
    tls: Arc<ClientConfig>,
    /// How long a TLS handshake may take; `None`: no limit.
    handshake_timeout: Option<Duration>,
}

impl<T> std::fmt::Debug for HttpsConnector<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsConnector")
            .field("alpn", &self.tls.alpn_protocols)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

impl Default for HttpsConnector {
    fn default() -> Self {
        HttpsConnector::new()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl HttpsConnector {
    /// Verifies servers against the webpki (Mozilla) roots; ALPN `h2`, `http/1.1`.
    pub fn new() -> HttpsConnector {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        HttpsConnector::with_roots(roots)
    }

    /// Verifies servers against `roots` only; ALPN `h2`, `http/1.1`.
    pub fn with_roots(roots: RootCertStore) -> HttpsConnector {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        let mut config = match config {
            Ok(c) => c,
            // The ring provider supports the default versions; this cannot fail with it.
            Err(_) => unreachable!("ring supports the safe default protocol versions"),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        HttpsConnector::with_tls_config(config)
    }

    /// Uses `config` as is (its roots, client auth and ALPN list).
    pub fn with_tls_config(config: ClientConfig) -> HttpsConnector {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        HttpsConnector {
            http,
            tls: Arc::new(config),
            handshake_timeout: None,
        }
    }

    /// The TCP part, to set its timeouts.
    pub fn http_mut(&mut self) -> &mut HttpConnector {
        &mut self.http
    }
}

impl<T> HttpsConnector<T> {
    /// The same TLS settings over the connections `inner` makes (a proxy tunnel, SOCKS, a
    /// connector of your own). `inner` is called with the request's URI, `https://` included.
    pub fn wrap<U>(self, inner: U) -> HttpsConnector<U> {
        HttpsConnector {
            http: inner,
            tls: self.tls,
            handshake_timeout: self.handshake_timeout,
        }
    }

    /// The connector beneath.
    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.http
    }

    /// Offers only `http/1.1` in ALPN.
    pub fn http1_only(mut self) -> Self {
        Arc::make_mut(&mut self.tls).alpn_protocols = vec![b"http/1.1".to_vec()];
        self
    }

    /// How long a TLS handshake may take before the dial fails with a timeout in the TLS
    /// phase ([`Error::is_timeout`](crate::Error::is_timeout)). The connect timeout of
    /// [`http_mut`](HttpsConnector::http_mut) covers TCP only. Default: no limit, as
    /// hyper-rustls; Go's `DefaultTransport` uses 10 seconds.
    pub fn set_tls_handshake_timeout(&mut self, timeout: Option<Duration>) {
        self.handshake_timeout = timeout;
    }
}

async fn handshake<IO>(
    tls: Arc<ClientConfig>,
    timeout: Option<Duration>,
    host: &str,
    tcp: IO,
) -> Result<(tokio_rustls::client::TlsStream<IO>, TlsInfo), ConnectError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        ConnectError::new(ConnectPhase::Tls, format!("invalid server name {host:?}")).with(e)
    })?;
    let phase = DialPhase::start(Phase::Tls, |t| {
        t.tls_handshake_start(|| TlsHandshakeStartInfo {
            request_id: t.request_id,
            server_name: host.to_owned(),
        })
    });
    let connect = TlsConnector::from(tls).connect(name, tcp);
    let result = match timeout {
        Some(t) => tokio::time::timeout(t, connect).await.unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("timed out after {t:?}"),
            ))
        }),
        None => connect.await,
    };
    let result = result
        .map_err(|e| {
            let timed_out = e.kind() == std::io::ErrorKind::TimedOut;
            let err =
                ConnectError::new(ConnectPhase::Tls, format!("handshake with {host}")).with(e);
            if timed_out {
                err.timed_out()
            } else {
                err
            }
        })
        .map(|s| {
            let (_, conn) = s.get_ref();
            let info = TlsInfo {
                version: conn
                    .protocol_version()
                    .and_then(|v| v.as_str())
                    .unwrap_or("unknown")
                    .replace("TLSv1_", "TLSv1."),
                cipher: conn
                    .negotiated_cipher_suite()
                    .and_then(|c| c.suite().as_str())
                    .unwrap_or("unknown")
                    .to_owned(),
                alpn: conn
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned()),
            };
            (s, info)
        });
    phase.done(&result, |t, took| {
        t.tls_handshake_done(|| TlsHandshakeDoneInfo {
            request_id: t.request_id,
            key: t.key.clone(),
            tls: result.as_ref().ok().map(|(_, i)| i.clone()),
            error: result.as_ref().err().map(|e| crate::trace::error_text(e)),
            took,
        })
    });
    result
}

impl<T> tower_service::Service<Uri> for HttpsConnector<T>
where
    T: tower_service::Service<Uri> + Clone + Send + Sync + 'static,
    T::Future: Send + 'static,
    T::Response: Read + Write + Connection + Unpin + Send + 'static,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Stream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (host, _, is_https) = host_port(&uri, true)?;
            let mut inner = this.http.clone();
            // Through the client's proxy for this origin (taken, so that the connector
            // beneath only reaches the proxy): forward proxying ends here; a tunnel gets TLS
            // over it like any connection.
            let io = match super::proxy::take_via() {
                Some(via) => match super::proxy::dial_through(&via, inner, &uri).await? {
                    Through::Forward(io, auth) => {
                        let stream = match crate::connect::Stream::downcast_from(io) {
                            Ok(stream) => stream,
                            Err(io) => {
                                let info = conn_info(&io.connected());
                                Stream::other(Box::new(io), info, true)
                            }
                        };
                        return Ok(stream.into_forward_proxy(auth));
                    }
                    Through::Tunnel(io) => io,
                },
                None => {
                    std::future::poll_fn(|cx| inner.poll_ready(cx))
                        .await
                        .map_err(inner_error)?;
                    inner.call(uri).await.map_err(inner_error)?
                }
            };
            // poolscope's own TCP: TLS straight over the socket.
            let io = match crate::connect::Stream::downcast_from(io) {
                Ok(stream) => match stream.into_tcp() {
                    Ok((tcp, info)) if is_https => {
                        let (tls, tls_info) =
                            handshake(this.tls.clone(), this.handshake_timeout, &host, tcp).await?;
                        return Ok(Stream::tls(
                            tls,
                            ConnInfo {
                                tls: Some(tls_info),
                                ..info
                            },
                        ));
                    }
                    Ok((tcp, info)) => return Ok(Stream::tcp(tcp, info)),
                    Err(stream) if !is_https => return Ok(stream),
                    Err(stream) => {
                        let info = stream.info().clone();
                        (Box::new(stream) as Box<dyn Io>, info)
                    }
                },
                Err(io) => {
                    let connected = io.connected();
                    let info = conn_info(&connected);
                    if !is_https {
                        return Ok(Stream::other(Box::new(io), info, connected.is_proxied()));
                    }
                    (Box::new(io) as Box<dyn Io>, info)
                }
            };
            // Another connector's connection (a tunnel, SOCKS): TLS over it. Its addresses
            // are the proxy's.
            let (io, info) = io;
            let (tls, tls_info) = handshake(
                this.tls.clone(),
                this.handshake_timeout,
                &host,
                hyper_util::rt::TokioIo::new(io),
            )
            .await?;
            Ok(Stream::tls_over(
                tls,
                ConnInfo {
                    tls: Some(tls_info),
                    ..info
                },
            ))
        })
    }
}

/// A failure of the connector beneath, with its phase when it is poolscope's.
fn inner_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ConnectError {
    let e = e.into();
    match e.downcast::<ConnectError>() {
        Ok(ce) => *ce,
        Err(other) => {
            ConnectError::new(ConnectPhase::Tcp, "the connector beneath failed").with(other)
        }
    }
}

/// The addresses a connection's `Connected` reports (poolscope's `ConnInfo`, or hyper-util's
/// `HttpInfo`).
fn conn_info(connected: &hyper_util::client::legacy::connect::Connected) -> ConnInfo {
    let mut extras = http::Extensions::new();
    connected.get_extras(&mut extras);
    if let Some(info) = extras.remove::<ConnInfo>() {
        return info;
    }
    match extras.get::<hyper_util::client::legacy::connect::HttpInfo>() {
        Some(h) => ConnInfo {
            remote_addr: h.remote_addr(),
            local_addr: h.local_addr(),
            tls: None,
            dial: None,
        },
        // The connector beneath reports no addresses.
        None => ConnInfo {
            remote_addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            local_addr: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            tls: None,
            dial: None,
        },
    }
}
