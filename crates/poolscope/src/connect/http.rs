//! `HttpConnector`: DNS + TCP for `http://` URIs.

use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::dns::Name;
use tokio::net::TcpStream;

use super::dns::{self, HickoryResolver};
use super::tcp::{self, SocketOptions};
use super::{ConnInfo, ConnectError, ConnectPhase, Stream};
use crate::stats::DialSummary;

/// Dials `http://` URIs: DNS (by default [`HickoryResolver`]: hickory-resolver, literal IPs
/// and `localhost` without a query; or any resolver service given to
/// [`new_with_resolver`](HttpConnector::new_with_resolver)), then TCP with happy eyeballs and
/// `TCP_NODELAY`, with the socket options of hyper-util's `HttpConnector`. Reports DNS and
/// connect events to the request that started the dial. Cloning shares the resolver; setting
/// an option on a clone does not change the others.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let mut http = poolscope::connect::HttpConnector::new();
/// http.set_connect_timeout(Some(Duration::from_secs(5)));
/// http.set_keepalive(Some(Duration::from_secs(60)));
/// ```
///
/// A custom resolver, as with hyper-util: any `tower_service::Service<Name>` (hyper-util's
/// [`Name`](hyper_util::client::legacy::connect::dns::Name)) whose response is an iterator of
/// `SocketAddr`.
///
/// ```
/// use std::future::{ready, Ready};
/// use std::net::SocketAddr;
/// use std::task::{Context, Poll};
/// use hyper_util::client::legacy::connect::dns::Name;
///
/// /// Sends every name to one address.
/// #[derive(Clone)]
/// struct Fixed(SocketAddr);
///
/// impl tower_service::Service<Name> for Fixed {
///     type Response = std::iter::Once<SocketAddr>;
///     type Error = std::convert::Infallible;
///     type Future = Ready<Result<Self::Response, Self::Error>>;
///     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
///         Poll::Ready(Ok(()))
///     }
///     fn call(&mut self, _name: Name) -> Self::Future {
///         ready(Ok(std::iter::once(self.0)))
///     }
/// }
///
/// let http = poolscope::connect::HttpConnector::new_with_resolver(Fixed(([127, 0, 0, 1], 8080).into()));
/// # let _ = http;
/// ```
#[derive(Clone)]
pub struct HttpConnector<R = HickoryResolver> {
    config: Arc<Config>,
    resolver: R,
}

#[derive(Clone, Debug)]
struct Config {
    connect_timeout: Option<Duration>,
    happy_eyeballs: Option<Duration>,
    enforce_http: bool,
    socket: SocketOptions,
    /// `(host, port) -> address` pins that skip DNS, as curl's `--resolve`.
    pins: Vec<(String, u16, IpAddr)>,
}

impl Default for HttpConnector {
    fn default() -> Self {
        HttpConnector::new()
    }
}

impl<R> std::fmt::Debug for HttpConnector<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.config;
        f.debug_struct("HttpConnector")
            .field("connect_timeout", &c.connect_timeout)
            .field("happy_eyeballs", &c.happy_eyeballs)
            .field("enforce_http", &c.enforce_http)
            .field("socket", &c.socket)
            .finish()
    }
}

/// The host of `uri` (an IPv6 literal without its brackets), its port (the scheme's default
/// if none is given) and whether the scheme is `https`. Fails (`ConnectPhase::Uri`) on a
/// scheme other than `http` and `https`, on `https` unless `https_ok` (the caller handles
/// TLS, or `enforce_http` is off), and on a URI without a host.
pub(crate) fn host_port(uri: &Uri, https_ok: bool) -> Result<(String, u16, bool), ConnectError> {
    let is_https = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        // As hyper-util with `enforce_http(false)`: any other scheme is plain TCP (a proxy's
        // URI given to the connector beneath a `SocksV5` or `Tunnel`, say), port 80 unless
        // the URI names one.
        Some(_) if https_ok => false,
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
    /// A connector with the [`HickoryResolver`], no connect timeout, a 250 ms happy-eyeballs
    /// stagger and `TCP_NODELAY`.
    pub fn new() -> HttpConnector {
        HttpConnector::new_with_resolver(HickoryResolver::new())
    }

    /// Resolves names with these name servers (on `port`) instead of the system's
    /// configuration.
    pub fn set_nameservers(&mut self, ips: &[IpAddr], port: u16) -> &mut Self {
        self.resolver = HickoryResolver::with_nameservers(ips, port);
        self
    }
}

impl<R> HttpConnector<R> {
    /// A connector that resolves names with `resolver`: a `tower_service::Service<Name>`
    /// (hyper-util's [`Name`](hyper_util::client::legacy::connect::dns::Name)) whose response
    /// is an iterator of `SocketAddr`, as hyper-util's `HttpConnector::new_with_resolver`.
    /// Literal IPs and [`resolve_to`](HttpConnector::resolve_to) pins do not reach it; every
    /// lookup that does reports `dns_start` and `dns_done`. An address it returns with port 0,
    /// or for a URI with an explicit port, gets the URI's port; another port is kept, as
    /// hyper-util does. Its errors fail the dial in the DNS phase, with the error as the cause.
    ///
    /// The other settings are those of [`new`](HttpConnector::new).
    pub fn new_with_resolver(resolver: R) -> HttpConnector<R> {
        HttpConnector {
            config: Arc::new(Config {
                connect_timeout: None,
                happy_eyeballs: Some(Duration::from_millis(250)),
                enforce_http: true,
                socket: SocketOptions::new(),
                pins: Vec::new(),
            }),
            resolver,
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        // Clones of this connector keep their settings.
        Arc::make_mut(&mut self.config)
    }

    /// Whether only `http://` URIs are accepted. Set to `false` to dial the TCP part of
    /// `https://` URIs too (used by [`HttpsConnector`](super::HttpsConnector)).
    ///
    /// Default: `true`.
    pub fn enforce_http(&mut self, is_enforced: bool) {
        self.config_mut().enforce_http = is_enforced;
    }

    /// Sets `SO_KEEPALIVE` on every socket, with this idle time (`TCP_KEEPIDLE`) before
    /// keepalive probes are sent. `None`: no idle time is set (and unless an interval or a
    /// retry count is set, keepalive stays off).
    ///
    /// Default: `None`.
    pub fn set_keepalive(&mut self, time: Option<Duration>) {
        self.config_mut().socket.keepalive_time = time;
    }

    /// The time between two keepalive probes when the previous one was not acknowledged
    /// (`TCP_KEEPINTVL`); setting it turns keepalive on. Ignored where socket2 cannot set it.
    ///
    /// Default: `None` (the system's).
    pub fn set_keepalive_interval(&mut self, interval: Option<Duration>) {
        self.config_mut().socket.keepalive_interval = interval;
    }

    /// How many unacknowledged keepalive probes mean the peer is gone (`TCP_KEEPCNT`);
    /// setting it turns keepalive on. Ignored where socket2 cannot set it (Windows).
    ///
    /// Default: `None` (the system's).
    pub fn set_keepalive_retries(&mut self, retries: Option<u32>) {
        self.config_mut().socket.keepalive_retries = retries;
    }

    /// Sets `TCP_NODELAY` on every socket to `nodelay`.
    ///
    /// Default: `true`, unlike hyper-util (`false`): small requests and responses should not
    /// wait for Nagle's algorithm.
    pub fn set_nodelay(&mut self, nodelay: bool) {
        self.config_mut().socket.nodelay = nodelay;
    }

    /// Sets `SO_SNDBUF` on every socket (Linux doubles the value for bookkeeping and caps it
    /// at `net.core.wmem_max`).
    ///
    /// Default: `None` (the system's).
    pub fn set_send_buffer_size(&mut self, size: Option<usize>) {
        self.config_mut().socket.send_buffer_size = size;
    }

    /// Sets `SO_RCVBUF` on every socket (Linux doubles the value for bookkeeping and caps it
    /// at `net.core.rmem_max`).
    ///
    /// Default: `None` (the system's).
    pub fn set_recv_buffer_size(&mut self, size: Option<usize>) {
        self.config_mut().socket.recv_buffer_size = size;
    }

    /// Binds every socket to `addr` (port 0) before it connects. As with hyper-util, only
    /// addresses of `addr`'s family are then dialed. `None`: sockets are not bound (this also
    /// clears [`set_local_addresses`](HttpConnector::set_local_addresses)).
    ///
    /// Default: `None`.
    pub fn set_local_address(&mut self, addr: Option<IpAddr>) {
        let (v4, v6) = match addr {
            Some(IpAddr::V4(a)) => (Some(a), None),
            Some(IpAddr::V6(a)) => (None, Some(a)),
            None => (None, None),
        };
        let socket = &mut self.config_mut().socket;
        socket.local_v4 = v4;
        socket.local_v6 = v6;
    }

    /// Binds IPv4 sockets to `addr_ipv4` and IPv6 sockets to `addr_ipv6` (port 0) before they
    /// connect; both families are dialed.
    pub fn set_local_addresses(&mut self, addr_ipv4: Ipv4Addr, addr_ipv6: Ipv6Addr) {
        let socket = &mut self.config_mut().socket;
        socket.local_v4 = Some(addr_ipv4);
        socket.local_v6 = Some(addr_ipv6);
    }

    /// Timeout for the TCP connect phase: all attempts together, from the first attempt's
    /// start (hyper-util divides it among the addresses instead). On expiry the dial fails in
    /// the connect phase and [`is_timeout`](super::ConnectError::is_timeout) holds.
    ///
    /// Default: `None` (no limit).
    pub fn set_connect_timeout(&mut self, dur: Option<Duration>) {
        self.config_mut().connect_timeout = dur;
    }

    /// How long an attempt may be pending before the next address is tried alongside (happy
    /// eyeballs, RFC 8305 style: addresses alternate by family). `None`: one attempt at a
    /// time, the next only when the previous one failed.
    ///
    /// Default: 250 ms (hyper-util: 300 ms).
    pub fn set_happy_eyeballs_timeout(&mut self, dur: Option<Duration>) {
        self.config_mut().happy_eyeballs = dur;
    }

    /// Sets `SO_REUSEADDR` on every socket to `reuse_address` (set before any bind to a
    /// local address, so that it applies to it).
    ///
    /// Default: `false`.
    pub fn set_reuse_address(&mut self, reuse_address: bool) -> &mut Self {
        self.config_mut().socket.reuse_address = reuse_address;
        self
    }

    /// Binds every socket to the network interface `interface` (`SO_BINDTODEVICE`, see
    /// `man 7 socket`): only packets of that interface are sent and received. A name the
    /// system does not know fails the dial in the connect phase, with the system's error as
    /// the cause. Binding to an interface other than the one the route already uses (a VRF,
    /// say) may need `CAP_NET_RAW` on older kernels.
    ///
    /// Linux, Android and Fuchsia only (hyper-util also offers it on Apple systems and
    /// illumos, through `IP_BOUND_IF`).
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    pub fn set_interface<S: Into<String>>(&mut self, interface: S) -> &mut Self {
        self.config_mut().socket.interface = Some(interface.into());
        self
    }

    /// Sets `SO_MARK` on every socket (for policy routing and packet filters); needs
    /// `CAP_NET_ADMIN`. A refused mark fails the dial in the connect phase.
    ///
    /// Linux, Android and Fuchsia only. Default: `None`.
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    pub fn set_mark(&mut self, mark: Option<u32>) {
        self.config_mut().socket.mark = mark;
    }

    /// Sets `TCP_USER_TIMEOUT` on every socket: how long sent data may stay unacknowledged
    /// before the connection is closed.
    ///
    /// Linux, Android and Fuchsia only. Default: `None` (the system's).
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    pub fn set_tcp_user_timeout(&mut self, time: Option<Duration>) {
        self.config_mut().socket.tcp_user_timeout = time;
    }

    /// Pins `host:port` to `addr`: dials for it skip DNS (curl's `--resolve host:port:addr`).
    pub fn resolve_to(&mut self, host: &str, port: u16, addr: IpAddr) -> &mut Self {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.config_mut().pins.push((host, port, addr));
        self
    }
}

impl<R> HttpConnector<R>
where
    R: tower_service::Service<Name> + Clone + Send + Sync + 'static,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<Box<dyn StdError + Send + Sync>>,
    R::Future: Send,
{
    /// Resolves and connects. `explicit_port`: the URI names `port`, which then replaces
    /// whatever port the resolver returned (otherwise only a port 0 is replaced).
    async fn dial(
        &self,
        host: &str,
        port: u16,
        explicit_port: bool,
    ) -> Result<(TcpStream, SocketAddr, SocketAddr, Option<DialSummary>), ConnectError> {
        let config = &*self.config;
        let pinned: Vec<SocketAddr> = config
            .pins
            .iter()
            .filter(|(h, p, _)| *p == port && h.eq_ignore_ascii_case(host))
            .map(|(_, _, a)| SocketAddr::new(*a, port))
            .collect();
        let addrs = if !pinned.is_empty() {
            pinned
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, port)]
        } else {
            let mut addrs = dns::resolve(&self.resolver, host).await?;
            for addr in &mut addrs {
                if explicit_port || addr.port() == 0 {
                    addr.set_port(port);
                }
            }
            addrs
        };
        let (stream, dial) = tcp::connect(
            addrs,
            &config.socket,
            config.happy_eyeballs,
            config.connect_timeout,
        )
        .await?;
        let remote = stream
            .peer_addr()
            .map_err(|e| ConnectError::new(ConnectPhase::Tcp, "reading peer address").with(e))?;
        let local = stream
            .local_addr()
            .map_err(|e| ConnectError::new(ConnectPhase::Tcp, "reading local address").with(e))?;
        Ok((stream, remote, local, Some(dial)))
    }
}

impl<R> tower_service::Service<Uri> for HttpConnector<R>
where
    R: tower_service::Service<Name> + Clone + Send + Sync + 'static,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<Box<dyn StdError + Send + Sync>>,
    R::Future: Send,
{
    type Response = Stream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        // The resolver's readiness is awaited in each dial, on its own clone.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (host, port, _) = host_port(&uri, !this.config.enforce_http)?;
            // Through the client's proxy for this origin: this connector reaches the proxy
            // (the proxy taken first, so that it does not go through it again), then
            // forwards or tunnels; TLS, if any, is the business of a connector above.
            if let Some(via) = super::proxy::take_via() {
                return match super::proxy::dial_through(&via, this.clone(), &uri).await? {
                    super::proxy::Through::Forward(stream, auth) => {
                        Ok(stream.into_forward_proxy(auth))
                    }
                    super::proxy::Through::Tunnel(stream) => Ok(stream),
                };
            }
            let explicit_port = uri.port_u16().is_some();
            let (stream, remote_addr, local_addr, dial) =
                this.dial(&host, port, explicit_port).await?;
            Ok(Stream::tcp(
                stream,
                ConnInfo {
                    remote_addr,
                    local_addr,
                    tls: None,
                    dial,
                },
            ))
        })
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    //! Each setter, read back from the socket of a real dial to a loopback listener.

    use super::*;
    use socket2::SockRef;

    /// Dials a fresh loopback listener with `http`; the client's stream, after the listener
    /// accepted it.
    async fn dial(http: &HttpConnector) -> TcpStream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stream, remote, _, _) = http.dial("127.0.0.1", port, true).await.unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, stream.local_addr().unwrap());
        assert_eq!(remote.port(), port);
        stream
    }

    #[tokio::test]
    async fn defaults() {
        let stream = dial(&HttpConnector::new()).await;
        let s = SockRef::from(&stream);
        assert!(
            s.nodelay().unwrap(),
            "poolscope's default is TCP_NODELAY on"
        );
        assert!(!s.keepalive().unwrap());
        assert!(!s.reuse_address().unwrap());
        assert_eq!(s.device().unwrap(), None);
        assert_eq!(s.tcp_user_timeout().unwrap(), None);
    }

    #[tokio::test]
    async fn set_keepalive() {
        let mut http = HttpConnector::new();
        http.set_keepalive(Some(Duration::from_secs(75)));
        let stream = dial(&http).await;
        let s = SockRef::from(&stream);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.keepalive_time().unwrap(), Duration::from_secs(75));
    }

    #[tokio::test]
    async fn set_keepalive_interval() {
        let mut http = HttpConnector::new();
        http.set_keepalive_interval(Some(Duration::from_secs(9)));
        let stream = dial(&http).await;
        let s = SockRef::from(&stream);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.keepalive_interval().unwrap(), Duration::from_secs(9));
    }

    #[tokio::test]
    async fn set_keepalive_retries() {
        let mut http = HttpConnector::new();
        http.set_keepalive_retries(Some(3));
        let stream = dial(&http).await;
        let s = SockRef::from(&stream);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.keepalive_retries().unwrap(), 3);
    }

    #[tokio::test]
    async fn set_nodelay() {
        let mut http = HttpConnector::new();
        http.set_nodelay(false);
        assert!(!SockRef::from(&dial(&http).await).nodelay().unwrap());
        http.set_nodelay(true);
        assert!(SockRef::from(&dial(&http).await).nodelay().unwrap());
    }

    #[tokio::test]
    async fn set_send_buffer_size() {
        let mut http = HttpConnector::new();
        http.set_send_buffer_size(Some(48 * 1024));
        let stream = dial(&http).await;
        // Linux doubles it.
        assert_eq!(
            SockRef::from(&stream).send_buffer_size().unwrap(),
            2 * 48 * 1024
        );
    }

    #[tokio::test]
    async fn set_recv_buffer_size() {
        let mut http = HttpConnector::new();
        http.set_recv_buffer_size(Some(40 * 1024));
        let stream = dial(&http).await;
        assert_eq!(
            SockRef::from(&stream).recv_buffer_size().unwrap(),
            2 * 40 * 1024
        );
    }

    #[tokio::test]
    async fn set_reuse_address() {
        let mut http = HttpConnector::new();
        let _: &mut HttpConnector = http.set_reuse_address(true);
        let stream = dial(&http).await;
        assert!(SockRef::from(&stream).reuse_address().unwrap());
    }

    #[tokio::test]
    async fn set_interface() {
        let mut http = HttpConnector::new();
        let _: &mut HttpConnector = http.set_interface("lo");
        let stream = dial(&http).await;
        assert_eq!(
            SockRef::from(&stream).device().unwrap().as_deref(),
            Some(&b"lo"[..])
        );
    }

    #[tokio::test]
    async fn set_tcp_user_timeout() {
        let mut http = HttpConnector::new();
        http.set_tcp_user_timeout(Some(Duration::from_secs(4)));
        let stream = dial(&http).await;
        assert_eq!(
            SockRef::from(&stream).tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(4))
        );
    }

    #[tokio::test]
    async fn set_mark() {
        let mut http = HttpConnector::new();
        http.set_mark(Some(7));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        match http.dial("127.0.0.1", port, true).await {
            Ok((stream, _, _, _)) => assert_eq!(SockRef::from(&stream).mark().unwrap(), 7),
            // Without CAP_NET_ADMIN.
            Err(e) => {
                assert_eq!(e.phase(), ConnectPhase::Tcp);
                let io = std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<std::io::Error>())
                    .unwrap();
                assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
            }
        }
    }

    #[tokio::test]
    async fn set_local_address() {
        let mut http = HttpConnector::new();
        http.set_local_address(Some(IpAddr::from([127, 0, 0, 2])));
        let stream = dial(&http).await;
        assert_eq!(
            stream.local_addr().unwrap().ip(),
            IpAddr::from([127, 0, 0, 2])
        );
        http.set_local_address(None);
        let stream = dial(&http).await;
        assert_eq!(
            stream.local_addr().unwrap().ip(),
            IpAddr::from([127, 0, 0, 1])
        );
    }

    #[tokio::test]
    async fn setting_an_option_on_a_clone_leaves_the_original_alone() {
        let original = HttpConnector::new();
        let mut clone = original.clone();
        clone.set_nodelay(false);
        clone.set_keepalive(Some(Duration::from_secs(30)));
        let s = dial(&original).await;
        assert!(SockRef::from(&s).nodelay().unwrap());
        assert!(!SockRef::from(&s).keepalive().unwrap());
    }
}
