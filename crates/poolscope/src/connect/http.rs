//! `HttpConnector`: DNS + TCP for `http://` URIs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use tokio::net::TcpStream;

use super::dns::Resolver;
use super::{tcp, ConnInfo, ConnectError, ConnectPhase, Stream};

/// Dials `http://` URIs: hickory DNS (literal IPs and `localhost` skip it), TCP with happy
/// eyeballs, `TCP_NODELAY`. Reports DNS and connect events to the request that started the
/// dial. Cloning shares the resolver.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let mut http = poolscope::connect::HttpConnector::new();
/// http.set_connect_timeout(Some(Duration::from_secs(5)));
/// ```
#[derive(Clone)]
pub struct HttpConnector {
    resolver: Resolver,
    /// `(host, port) -> address` pins that skip DNS, as curl's `--resolve`.
    pins: std::sync::Arc<Vec<(String, u16, std::net::IpAddr)>>,
    connect_timeout: Option<Duration>,
    happy_eyeballs: Duration,
    enforce_http: bool,
}

impl Default for HttpConnector {
    fn default() -> Self {
        HttpConnector::new()
    }
}

impl std::fmt::Debug for HttpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConnector")
            .field("connect_timeout", &self.connect_timeout)
            .field("happy_eyeballs", &self.happy_eyeballs)
            .finish()
    }
}

/// The host and port of `uri`, for a connector that accepts `schemes`.
pub(crate) fn host_port(uri: &Uri, https_ok: bool) -> Result<(String, u16, bool), ConnectError> {
    let is_https = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        other => {
            return Err(ConnectError::new(
                ConnectPhase::Uri,
                format!("unsupported scheme {:?}", other.unwrap_or("")),
            ))
        }
    };
    if is_https && !https_ok {
        return Err(ConnectError::new(
            ConnectPhase::Uri,
            "https:// needs an HttpsConnector",
        ));
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ConnectError::new(ConnectPhase::Uri, "URI has no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if is_https { 443 } else { 80 });
    Ok((host, port, is_https))
}

impl HttpConnector {
    /// A connector with no connect timeout and a 250 ms happy-eyeballs stagger.
    pub fn new() -> HttpConnector {
        HttpConnector {
            resolver: Resolver::default(),
            pins: Default::default(),
            connect_timeout: None,
            happy_eyeballs: Duration::from_millis(250),
            enforce_http: true,
        }
    }

    /// Timeout for the TCP connect phase (all attempts). Default: none.
    pub fn set_connect_timeout(&mut self, timeout: Option<Duration>) -> &mut Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an attempt may be pending before the next address is tried alongside.
    /// Default: 250 ms.
    pub fn set_happy_eyeballs_timeout(&mut self, stagger: Duration) -> &mut Self {
        self.happy_eyeballs = stagger;
        self
    }

    /// Whether only `http://` URIs are accepted (the default). Set to `false` to dial the TCP
    /// part of `https://` URIs (used by [`HttpsConnector`](super::HttpsConnector)).
    pub fn enforce_http(&mut self, enforce: bool) -> &mut Self {
        self.enforce_http = enforce;
        self
    }

    /// Resolves names with these name servers (on `port`) instead of the system's
    /// configuration.
    pub fn set_nameservers(&mut self, ips: &[std::net::IpAddr], port: u16) -> &mut Self {
        self.resolver = Resolver::with_servers(ips.to_vec(), port);
        self
    }

    /// Pins `host:port` to `addr`: dials for it skip DNS (curl's `--resolve host:port:addr`).
    pub fn resolve_to(&mut self, host: &str, port: u16, addr: std::net::IpAddr) -> &mut Self {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        std::sync::Arc::make_mut(&mut self.pins).push((host, port, addr));
        self
    }

    /// Resolves and connects; the TCP stream and its addresses.
    pub(crate) async fn dial_tcp(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(TcpStream, std::net::SocketAddr, std::net::SocketAddr), ConnectError> {
        let pinned: Vec<std::net::IpAddr> = self
            .pins
            .iter()
            .filter(|(h, p, _)| *p == port && h.eq_ignore_ascii_case(host))
            .map(|(_, _, a)| *a)
            .collect();
        let addrs = if pinned.is_empty() {
            self.resolver.resolve(host).await?
        } else {
            pinned
        };
        let stream = tcp::connect(addrs, port, self.happy_eyeballs, self.connect_timeout).await?;
        let remote = stream
            .peer_addr()
            .map_err(|e| ConnectError::new(ConnectPhase::Tcp, "reading peer address").with(e))?;
        let local = stream
            .local_addr()
            .map_err(|e| ConnectError::new(ConnectPhase::Tcp, "reading local address").with(e))?;
        Ok((stream, remote, local))
    }
}

impl tower_service::Service<Uri> for HttpConnector {
    type Response = Stream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (host, port, _) = host_port(&uri, !this.enforce_http)?;
            let (stream, remote_addr, local_addr) = this.dial_tcp(&host, port).await?;
            Ok(Stream::tcp(
                stream,
                ConnInfo {
                    remote_addr,
                    local_addr,
                    tls: None,
                },
            ))
        })
    }
}
