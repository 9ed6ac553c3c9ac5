//! Proxies: which one a request takes ([`Proxy`], from the environment as curl reads it or
//! given), and the dial through it (`dial_through`): forward proxying for `http://` targets
//! behind an HTTP proxy, a `CONNECT` tunnel for `https://` ones, and SOCKS4/SOCKS5 tunnels
//! (hyper-util's handshakes) for either.
//!
//! The client chooses the proxy per origin and puts it in the pool key, so connections
//! through different proxies (or one proxy with different credentials) are never shared.
//! The dial hands the choice to poolscope's connectors in a task-local (`dialing_via`); a
//! connector that does not take it (another crate's) fails the dial rather than going direct
//! unnoticed.

use std::cell::RefCell;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};

use http::{HeaderValue, StatusCode, Uri};
use hyper::rt::{Read, Write};
use hyper_util::client::legacy::connect::proxy::{SocksV4, SocksV5};
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_service::Service;

use super::{ConnectError, ConnectPhase};
use crate::trace::{DialPhase, Phase, ProxyDoneInfo, ProxyStartInfo};

/// The longest answer head to a `CONNECT` that is read.
const MAX_CONNECT_RESPONSE: usize = 16 * 1024;

/// Which proxy, if any, each request goes through; given to
/// [`Builder::proxy`](crate::client::Builder::proxy).
///
/// Proxy URIs are `http://`, `socks5://` (the client resolves the target's name),
/// `socks5h://` (the proxy does), `socks4://` or `socks4a://`, with optional
/// `user:password@` credentials: sent as `Proxy-Authorization: Basic` to an HTTP proxy, as
/// the SOCKS5 username/password method, and shown nowhere (not in keys, errors, traces or
/// reports). `https://` proxies (TLS to the proxy itself) are not supported.
///
/// `NO_PROXY` rules are curl's, as hyper-util's `Matcher` implements them: a comma-separated
/// list of host names (each also matching its subdomains), IP addresses and CIDR ranges, or
/// `*` for every host.
///
/// # Examples
///
/// ```
/// use poolscope::connect::Proxy;
///
/// // As curl: ALL_PROXY, HTTPS_PROXY, HTTP_PROXY and NO_PROXY (or their lower-case names).
/// let from_env = Proxy::from_env();
/// // Every request through one proxy, except to hosts under example.internal.
/// let explicit = Proxy::builder()
///     .all("http://alice:secret@127.0.0.1:3128")
///     .no_proxy("example.internal, 10.0.0.0/8")
///     .build()
///     .unwrap();
/// # let _ = (from_env, explicit);
/// ```
#[derive(Clone)]
pub struct Proxy {
    matcher: Arc<Matcher>,
    /// What it was built from, for `Debug` (without credentials).
    shown: Arc<str>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proxy({})", self.shown)
    }
}

impl Proxy {
    /// The proxies the environment names, read now as curl reads them: `ALL_PROXY`,
    /// `HTTPS_PROXY` (for `https://` targets), `HTTP_PROXY` (for `http://` targets),
    /// `NO_PROXY`, and their lower-case spellings. A value that is not a proxy URI is
    /// ignored. In a CGI program (`REQUEST_METHOD` is set) no proxy is used, since
    /// `HTTP_PROXY` may then come from a request header.
    pub fn from_env() -> Proxy {
        Proxy {
            matcher: Arc::new(Matcher::from_env()),
            shown: format!("from the environment: {}", ProxyBuilder::from_env().shown()).into(),
        }
    }

    /// Starts an explicit configuration.
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder::default()
    }

    /// The proxy for a request to `dst`, if it takes one.
    pub(crate) fn via(&self, dst: &Uri) -> Option<Via> {
        Via::of(self.matcher.intercept(dst)?)
    }
}

/// An explicit [`Proxy`] configuration.
#[derive(Default, Debug)]
pub struct ProxyBuilder {
    all: Option<String>,
    http: Option<String>,
    https: Option<String>,
    no: String,
}

impl ProxyBuilder {
    /// A configuration read from the environment as [`Proxy::from_env`] reads it, to change
    /// before [`build`](Self::build) (which, unlike `from_env`, refuses a value that is not
    /// a proxy URI).
    pub fn from_env() -> ProxyBuilder {
        if std::env::var_os("REQUEST_METHOD").is_some() {
            return ProxyBuilder::default();
        }
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok())
                .filter(|v| !v.is_empty())
        };
        ProxyBuilder {
            all: var(&["ALL_PROXY", "all_proxy"]),
            http: var(&["HTTP_PROXY", "http_proxy"]),
            https: var(&["HTTPS_PROXY", "https_proxy"]),
            no: var(&["NO_PROXY", "no_proxy"]).unwrap_or_default(),
        }
    }

    /// The proxy for every target (unless [`http`](Self::http) or [`https`](Self::https)
    /// names one for its scheme).
    pub fn all(mut self, uri: impl Into<String>) -> Self {
        self.all = Some(uri.into());
        self
    }

    /// The proxy for `http://` targets.
    pub fn http(mut self, uri: impl Into<String>) -> Self {
        self.http = Some(uri.into());
        self
    }

    /// The proxy for `https://` targets.
    pub fn https(mut self, uri: impl Into<String>) -> Self {
        self.https = Some(uri.into());
        self
    }

    /// Hosts reached directly, in `NO_PROXY`'s syntax (`example.com, 10.0.0.0/8, ::1`).
    pub fn no_proxy(mut self, list: impl Into<String>) -> Self {
        self.no = list.into();
        self
    }

    /// What `Proxy`'s `Debug` shows: the proxies without their credentials.
    fn shown(&self) -> String {
        format!(
            "all={:?} http={:?} https={:?} no={:?}",
            self.all.as_deref().map(redact),
            self.http.as_deref().map(redact),
            self.https.as_deref().map(redact),
            self.no,
        )
    }

    /// The configuration.
    ///
    /// # Errors
    ///
    /// A given proxy URI is not one: it does not parse, has no host, or has a scheme other
    /// than `http`, `socks4`, `socks4a`, `socks5` or `socks5h` (`https://` proxies included).
    pub fn build(self) -> Result<Proxy, InvalidProxy> {
        for uri in [&self.all, &self.http, &self.https].into_iter().flatten() {
            check(uri)?;
        }
        let shown = self.shown();
        let mut b = Matcher::builder();
        if let Some(all) = self.all {
            b = b.all(all);
        }
        if let Some(http) = self.http {
            b = b.http(http);
        }
        if let Some(https) = self.https {
            b = b.https(https);
        }
        Ok(Proxy {
            matcher: Arc::new(b.no(self.no).build()),
            shown: shown.into(),
        })
    }
}

/// A proxy URI that cannot be used; names it without its credentials.
#[derive(Debug, Clone)]
pub struct InvalidProxy {
    uri: String,
    why: &'static str,
}

impl std::fmt::Display for InvalidProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid proxy {:?}: {}", self.uri, self.why)
    }
}

impl std::error::Error for InvalidProxy {}

fn check(uri: &str) -> Result<(), InvalidProxy> {
    let invalid = |why| InvalidProxy {
        uri: redact(uri),
        why,
    };
    let parsed: Uri = uri.parse().map_err(|_| invalid("not a URI"))?;
    if parsed.host().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    match parsed.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        None | Some("http" | "socks4" | "socks4a" | "socks5" | "socks5h") => Ok(()),
        Some("https") => Err(invalid(
            "https:// proxies (TLS to the proxy) are not supported; use http://",
        )),
        Some(_) => Err(invalid(
            "the scheme must be http, socks4, socks4a, socks5 or socks5h",
        )),
    }
}

/// `uri` with any `user:password@` replaced by `***@`.
fn redact(uri: &str) -> String {
    let (scheme, rest) = match uri.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, uri),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let rest = match rest[..authority_end].rfind('@') {
        Some(at) => format!("***{}", &rest[at..]),
        None => rest.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest,
    }
}

/// How a dial talks to its proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ViaKind {
    /// An HTTP proxy: absolute-form requests for `http://`, `CONNECT` for `https://`.
    Http,
    /// A TLS-speaking HTTP proxy (`https://`): refused when dialed.
    Https,
    /// SOCKS4; with `remote_dns` (socks4a) the proxy resolves the target's name.
    Socks4 { remote_dns: bool },
    /// SOCKS5; with `remote_dns` (socks5h) the proxy resolves the target's name.
    Socks5 { remote_dns: bool },
}

/// The proxy one dial goes through.
#[derive(Clone)]
pub(crate) struct Via {
    pub(crate) kind: ViaKind,
    /// `host:port`: what keys, errors and reports show.
    pub(crate) name: Arc<str>,
    /// Tells apart proxies with the same name: the proxy's URI and credentials, hashed with
    /// a per-process seed.
    pub(crate) identity: u64,
    /// What the connector beneath dials to reach the proxy: `http://host:port/` (poolscope's
    /// `HttpConnector` dials only `http://`; the scheme says nothing about the proxy).
    reach: Uri,
    basic: Option<HeaderValue>,
    raw: Option<(String, String)>,
}

impl Via {
    fn of(intercept: Intercept) -> Option<Via> {
        let uri = intercept.uri();
        let kind = match uri.scheme_str()?.to_ascii_lowercase().as_str() {
            "http" => ViaKind::Http,
            "https" => ViaKind::Https,
            "socks4" => ViaKind::Socks4 { remote_dns: false },
            "socks4a" => ViaKind::Socks4 { remote_dns: true },
            "socks5" => ViaKind::Socks5 { remote_dns: false },
            "socks5h" => ViaKind::Socks5 { remote_dns: true },
            _ => return None,
        };
        let host = uri.host()?;
        let port = uri.port_u16().unwrap_or(match kind {
            ViaKind::Http => 80,
            ViaKind::Https => 443,
            _ => 1080,
        });
        let name: Arc<str> = format!("{host}:{port}").into();
        let reach = format!("http://{name}/").parse().ok()?;
        let basic = intercept.basic_auth().cloned();
        let raw = intercept
            .raw_auth()
            .map(|(u, p)| (u.to_owned(), p.to_owned()));
        let identity = seed().hash_one((
            uri.scheme_str(),
            &*name,
            basic.as_ref().map(HeaderValue::as_bytes),
            &raw,
        ));
        Some(Via {
            kind,
            name,
            identity,
            reach,
            basic,
            raw,
        })
    }
}

fn seed() -> &'static std::collections::hash_map::RandomState {
    static SEED: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    SEED.get_or_init(Default::default)
}

impl std::fmt::Debug for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Via({:?} {})", self.kind, self.name)
    }
}

tokio::task_local! {
    static DIAL_VIA: RefCell<Option<Arc<Via>>>;
}

/// Runs the dial `f` with `via` for poolscope's connectors to take; also returns whether
/// the proxy was left untaken (the connector does not route through proxies).
pub(crate) async fn dialing_via<F: Future>(via: Option<Arc<Via>>, f: F) -> (F::Output, bool) {
    if via.is_none() {
        return (f.await, false);
    }
    DIAL_VIA
        .scope(RefCell::new(via), async {
            let out = f.await;
            let untaken = DIAL_VIA.with(|v| v.borrow().is_some());
            (out, untaken)
        })
        .await
}

/// The proxy the current dial goes through, taken so that a connector beneath does not go
/// through it a second time.
pub(crate) fn take_via() -> Option<Arc<Via>> {
    DIAL_VIA.try_with(|v| v.borrow_mut().take()).ok().flatten()
}

/// What a dial through a proxy made.
pub(crate) enum Through<IO> {
    /// An `http://` target through an HTTP proxy: the connection to the proxy, on which
    /// requests go in absolute form with these credentials.
    Forward(IO, Option<HeaderValue>),
    /// A tunnel to the target (`CONNECT` or SOCKS): TLS, if the target is `https://`, goes
    /// over it.
    Tunnel(IO),
}

/// Reaches the proxy with `inner`, then forwards or tunnels to `dst` through it.
pub(crate) async fn dial_through<T>(
    via: &Via,
    mut inner: T,
    dst: &Uri,
) -> Result<Through<T::Response>, ConnectError>
where
    T: Service<Uri>,
    T::Response: Read + Write + Unpin + Send + 'static,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if via.kind == ViaKind::Https {
        return Err(https_refused(via));
    }
    let (host, port) = target(dst)?;
    std::future::poll_fn(|cx| inner.poll_ready(cx))
        .await
        .map_err(|e| reaching(via, e))?;
    let io = inner
        .call(via.reach.clone())
        .await
        .map_err(|e| reaching(via, e))?;
    let forward = via.kind == ViaKind::Http && dst.scheme_str() == Some("http");
    if forward {
        return Ok(Through::Forward(io, via.basic.clone()));
    }
    let how = match via.kind {
        ViaKind::Http => "CONNECT",
        ViaKind::Socks4 { .. } => "SOCKS4",
        _ => "SOCKS5",
    };
    let phase = DialPhase::start(Phase::Proxy, |t| {
        t.proxy_start(|| ProxyStartInfo {
            request_id: t.request_id,
            proxy: via.name.to_string(),
            protocol: how,
        })
    });
    let result = match via.kind {
        ViaKind::Http => connect_tunnel(io, via, &host, port).await,
        ViaKind::Socks4 { remote_dns } | ViaKind::Socks5 { remote_dns } => {
            socks(io, via, &host, port, remote_dns).await
        }
        ViaKind::Https => Err(https_refused(via)),
    };
    phase.done(&result, |t, took| {
        t.proxy_done(|| ProxyDoneInfo {
            request_id: t.request_id,
            proxy: via.name.to_string(),
            protocol: how,
            status: result.as_ref().err().and_then(ConnectError::proxy_status),
            error: result.as_ref().err().map(|e| crate::trace::error_text(e)),
            took,
        })
    });
    result.map(Through::Tunnel)
}

fn https_refused(via: &Via) -> ConnectError {
    ConnectError::new(
        ConnectPhase::Proxy,
        format!(
            "the proxy {} is https://: TLS to a proxy is not supported",
            via.name
        ),
    )
}

/// The target's host (without IPv6 brackets) and port.
fn target(dst: &Uri) -> Result<(String, u16), ConnectError> {
    let host = dst
        .host()
        .ok_or_else(|| ConnectError::new(ConnectPhase::Uri, "no host to tunnel to"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = dst
        .port_u16()
        .or_else(|| crate::pool::default_port(dst.scheme_str().unwrap_or("")))
        .ok_or_else(|| ConnectError::new(ConnectPhase::Uri, "no port to tunnel to"))?;
    Ok((host.to_owned(), port))
}

/// A failure to reach the proxy, naming it.
fn reaching(via: &Via, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ConnectError {
    let e = e.into();
    let phase = e
        .downcast_ref::<ConnectError>()
        .map_or(ConnectPhase::Tcp, ConnectError::phase);
    ConnectError::new(phase, format!("connecting to the proxy {}", via.name)).with(e)
}

/// `host:port` as a request target: an IPv6 literal in brackets.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Asks the HTTP proxy on `io` for a tunnel to `host:port`, returning `io` once it answered
/// 2xx.
async fn connect_tunnel<IO>(io: IO, via: &Via, host: &str, port: u16) -> Result<IO, ConnectError>
where
    IO: Read + Write + Unpin,
{
    let target = authority(host, port);
    let failed = |what: &str| {
        ConnectError::new(
            ConnectPhase::Proxy,
            format!("CONNECT {target} through the proxy {}: {what}", via.name),
        )
    };
    let mut io = TokioIo::new(io);
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
    if let Some(auth) = &via.basic {
        head.extend_from_slice(b"Proxy-Authorization: ");
        head.extend_from_slice(auth.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    io.write_all(&head)
        .await
        .map_err(|e| failed("writing the request").with(e))?;
    io.flush()
        .await
        .map_err(|e| failed("writing the request").with(e))?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let end = loop {
        let n = io
            .read(&mut chunk)
            .await
            .map_err(|e| failed("reading the answer").with(e))?;
        if n == 0 {
            return Err(failed("the proxy closed the connection before it answered"));
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            break from + i + 4;
        }
        if buf.len() > MAX_CONNECT_RESPONSE {
            return Err(failed("the answer's head is over 16 KiB"));
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(failed("the answer's head is incomplete")),
        Err(e) => return Err(failed("the answer is not HTTP").with(e)),
    }
    let code = resp.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| failed("the answer has no valid status"))?;
    if !status.is_success() {
        // The proxy's own reason phrase says more than the standard one ("Access
        // violation" for a port it does not tunnel to).
        let reason = resp
            .reason
            .filter(|r| !r.trim().is_empty())
            .or(status.canonical_reason())
            .unwrap_or("");
        return Err(ConnectError::new(
            ConnectPhase::Proxy,
            format!(
                "the proxy {} refused CONNECT {target}: {} {reason}",
                via.name,
                status.as_u16()
            ),
        )
        .with_proxy_status(status));
    }
    if end < buf.len() {
        // The target speaks only after the client (TLS, HTTP): bytes already here did not
        // come from it.
        return Err(failed("the proxy sent data after its answer"));
    }
    Ok(io.into_inner())
}

/// A SOCKS handshake with the proxy on `io` for `host:port` (hyper-util's).
async fn socks<IO>(
    io: IO,
    via: &Via,
    host: &str,
    port: u16,
    remote_dns: bool,
) -> Result<IO, ConnectError>
where
    IO: Read + Write + Unpin + Send + 'static,
{
    // The client resolves the name (socks4, socks5) here, asynchronously; hyper-util's own
    // local resolution would block the executor's thread.
    let host = if remote_dns || host.parse::<std::net::IpAddr>().is_ok() {
        host.to_owned()
    } else {
        let mut addrs = tokio::net::lookup_host((host, port)).await.map_err(|e| {
            ConnectError::new(ConnectPhase::Dns, format!("resolving {host:?} for SOCKS")).with(e)
        })?;
        let v4 = matches!(via.kind, ViaKind::Socks4 { .. });
        addrs
            .find(|a| !v4 || a.is_ipv4())
            .ok_or_else(|| {
                ConnectError::new(
                    ConnectPhase::Dns,
                    format!("no address for {host:?} that SOCKS can carry"),
                )
            })?
            .ip()
            .to_string()
    };
    let dst: Uri = format!("http://{}/", authority(&host, port))
        .parse()
        .map_err(|e| ConnectError::new(ConnectPhase::Uri, "no SOCKS target").with(e))?;
    let connected = Connected(Some(io));
    let result = match via.kind {
        ViaKind::Socks4 { .. } => {
            let mut s = SocksV4::new(via.reach.clone(), connected);
            s.call(dst).await.map_err(|e| e.to_string())
        }
        _ => {
            let mut s = SocksV5::new(via.reach.clone(), connected);
            if let Some((user, pass)) = &via.raw {
                s = s.with_auth(user.clone(), pass.clone());
            }
            s.call(dst).await.map_err(|e| e.to_string())
        }
    };
    result.map_err(|e| {
        ConnectError::new(
            ConnectPhase::Proxy,
            format!(
                "the SOCKS proxy {} did not open a tunnel to {}: {e}",
                via.name,
                authority(&host, port)
            ),
        )
    })
}

/// A connector that hands out a connection already made (to the SOCKS proxy), once.
struct Connected<IO>(Option<IO>);

impl<IO> Service<Uri> for Connected<IO> {
    type Response = IO;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<IO, std::io::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), std::io::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        std::future::ready(
            self.0.take().ok_or_else(|| {
                std::io::Error::other("the connection to the proxy was already used")
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(
            redact("http://alice:pw@127.0.0.1:3128"),
            "http://***@127.0.0.1:3128"
        );
        assert_eq!(redact("socks5h://u@h:1"), "socks5h://***@h:1");
        assert_eq!(redact("http://h:1/a@b"), "http://h:1/a@b");
        assert_eq!(redact("alice:pw@h:1"), "***@h:1");
        let p = Proxy::builder()
            .all("http://alice:pw@127.0.0.1:3128")
            .build()
            .unwrap();
        assert!(!format!("{p:?}").contains("pw"), "{p:?}");
        let via = p.via(&"http://example.com/".parse().unwrap()).unwrap();
        assert!(!format!("{via:?}").contains("pw"));
        assert_eq!(&*via.name, "127.0.0.1:3128");
    }

    #[test]
    fn invalid_proxies_are_refused_by_name() {
        for (uri, why) in [
            ("https://127.0.0.1:3128", "not supported"),
            ("ftp://127.0.0.1:21", "scheme"),
            ("http://", "URI"),
        ] {
            let e = Proxy::builder().all(uri).build().unwrap_err();
            assert!(e.to_string().contains(why), "{uri}: {e}");
        }
        let e = Proxy::builder()
            .https("https://bob:hunter2@p:1")
            .build()
            .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn kinds_ports_and_no_proxy() {
        let p = Proxy::builder()
            .http("http://p:8080")
            .https("socks5h://u:pw@s")
            .no_proxy("internal.example, 10.0.0.0/8")
            .build()
            .unwrap();
        let via = |u: &str| p.via(&u.parse().unwrap());
        let h = via("http://a.example/").unwrap();
        assert_eq!((h.kind, &*h.name), (ViaKind::Http, "p:8080"));
        let s = via("https://a.example/").unwrap();
        assert_eq!(s.kind, ViaKind::Socks5 { remote_dns: true });
        assert_eq!(&*s.name, "s:1080");
        assert_eq!(s.raw.as_ref().unwrap().0, "u");
        assert!(via("http://x.internal.example/").is_none());
        assert!(via("https://10.1.2.3/").is_none());
        // The same proxy with other credentials is another identity.
        let q = Proxy::builder()
            .https("socks5h://u:other@s")
            .build()
            .unwrap();
        let t = q.via(&"https://a.example/".parse().unwrap()).unwrap();
        assert_eq!(s.name, t.name);
        assert_ne!(s.identity, t.identity);
    }
}
