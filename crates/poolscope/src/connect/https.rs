//! `HttpsConnector`: `http://` as [`HttpConnector`], `https://` with a rustls handshake.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Uri;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::http::host_port;
use super::{ConnInfo, ConnectError, ConnectPhase, HttpConnector, Stream};
use crate::trace::{with_dial_tracer, Mark, TlsHandshakeDoneInfo, TlsHandshakeStartInfo, TlsInfo};

/// Dials `http://` and `https://` URIs. TLS is rustls with the ring provider; certificates
/// are verified against the webpki roots unless other roots or a whole `ClientConfig` are
/// given; ALPN offers `h2` and `http/1.1`. Reports TLS events to the request that started the
/// dial, and the negotiated version, cipher and ALPN to `GotConnInfo`.
///
/// # Examples
///
/// ```
/// let https = poolscope::connect::HttpsConnector::new();
/// # let _ = https;
/// ```
#[derive(Clone)]
pub struct HttpsConnector {
    http: HttpConnector,
    tls: Arc<ClientConfig>,
    /// How long a TLS handshake may take; `None`: no limit.
    handshake_timeout: Option<Duration>,
}

impl std::fmt::Debug for HttpsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsConnector")
            .field("http", &self.http)
            .field("alpn", &self.tls.alpn_protocols)
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

    /// Offers only `http/1.1` in ALPN.
    pub fn http1_only(mut self) -> HttpsConnector {
        Arc::make_mut(&mut self.tls).alpn_protocols = vec![b"http/1.1".to_vec()];
        self
    }

    /// The TCP part, to set its timeouts.
    pub fn http_mut(&mut self) -> &mut HttpConnector {
        &mut self.http
    }

    /// How long a TLS handshake may take before the dial fails with a timeout in the TLS
    /// phase ([`Error::is_timeout`](crate::Error::is_timeout)). The connect timeout of
    /// [`http_mut`](HttpsConnector::http_mut) covers TCP only. Default: no limit, as
    /// hyper-rustls; Go's `DefaultTransport` uses 10 seconds.
    pub fn set_tls_handshake_timeout(&mut self, timeout: Option<Duration>) {
        self.handshake_timeout = timeout;
    }
}

async fn handshake(
    tls: Arc<ClientConfig>,
    timeout: Option<Duration>,
    host: &str,
    tcp: tokio::net::TcpStream,
) -> Result<
    (
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        TlsInfo,
    ),
    ConnectError,
> {
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        ConnectError::new(ConnectPhase::Tls, format!("invalid server name {host:?}")).with(e)
    })?;
    with_dial_tracer(|t| {
        t.tls_handshake_start(|| TlsHandshakeStartInfo {
            request_id: t.request_id,
            server_name: host.to_owned(),
        })
    });
    let start = Instant::now();
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
    let end = Instant::now();
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
    with_dial_tracer(|t| {
        if result.is_ok() {
            t.mark(Mark::Tls, end.saturating_duration_since(start));
        }
        t.tls_handshake_done(|| TlsHandshakeDoneInfo {
            request_id: t.request_id,
            key: t.key.clone(),
            tls: result.as_ref().ok().map(|(_, i)| i.clone()),
            error: result.as_ref().err().map(|e| crate::trace::error_text(e)),
            took: end - start,
        })
    });
    result
}

impl tower_service::Service<Uri> for HttpsConnector {
    type Response = Stream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (host, port, is_https) = host_port(&uri, true)?;
            let (tcp, remote_addr, local_addr) = this.http.dial_tcp(&host, port).await?;
            if !is_https {
                let info = ConnInfo {
                    remote_addr,
                    local_addr,
                    tls: None,
                };
                return Ok(Stream::tcp(tcp, info));
            }
            let (tls, info) =
                handshake(this.tls.clone(), this.handshake_timeout, &host, tcp).await?;
            Ok(Stream::tls(
                tls,
                ConnInfo {
                    remote_addr,
                    local_addr,
                    tls: Some(info),
                },
            ))
        })
    }
}
