//! Options shared by `trace` and `load`: the request (method, headers, body) and the
//! connection (HTTP/2, CA file, `--resolve`), and turning them into a client and requests.

use std::error::Error as StdError;
use std::net::IpAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;
use hyper_util::rt::TokioExecutor;
use poolscope::connect::{HttpsConnector, Proxy, ProxyBuilder};
use poolscope::Client;

use crate::Failure;

/// The client every command uses.
pub type HttpClient = Client<HttpsConnector, Full<Bytes>>;

/// What to send.
#[derive(clap::Args, Debug, Clone)]
pub struct RequestOpts {
    /// The URL (http:// or https://).
    pub url: String,
    /// The method.
    #[arg(short = 'X', long = "request", default_value = "GET")]
    pub method: String,
    /// A header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// The request body.
    #[arg(short = 'd', long = "data")]
    pub data: Option<String>,
}

/// How to connect.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConnOpts {
    /// Offer HTTP/2 in TLS ALPN (https:// only; plain http stays HTTP/1.1).
    #[arg(long)]
    pub http2: bool,
    /// Speak HTTP/2 without negotiation (h2c for http://).
    #[arg(long = "http2-prior-knowledge")]
    pub http2_prior_knowledge: bool,
    /// Trust only the certificates in this PEM file.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Resolve HOST:PORT to ADDR instead of asking DNS (repeatable).
    #[arg(long, value_name = "HOST:PORT:ADDR")]
    pub resolve: Vec<String>,
    /// Send every request through this proxy: http://, socks5://, socks5h:// (the proxy
    /// resolves names), socks4://, socks4a://, with user:password@ for credentials. Without
    /// it, as curl: ALL_PROXY, HTTPS_PROXY, HTTP_PROXY and NO_PROXY from the environment.
    #[arg(short = 'x', long, value_name = "URL")]
    pub proxy: Option<String>,
    /// Hosts to reach directly, not through the proxy (comma-separated, as NO_PROXY; "*"
    /// for all); overrides NO_PROXY.
    #[arg(long, value_name = "LIST")]
    pub noproxy: Option<String>,
}

/// A validated request template.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub method: Method,
    pub uri: Uri,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Prepared {
    pub fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        for (k, v) in &self.headers {
            req.headers_mut().append(k.clone(), v.clone());
        }
        req
    }

    /// The URL as shown: no userinfo.
    pub fn shown_url(&self) -> String {
        let auth = self.uri.authority().map_or("", |a| a.as_str());
        let hostport = auth.rsplit('@').next().unwrap_or("");
        format!(
            "{}://{}{}",
            self.uri.scheme_str().unwrap_or("http"),
            hostport,
            self.uri.path_and_query().map_or("/", |p| p.as_str())
        )
    }
}

/// `raw` as it may be shown, even when it does not parse as a URL: anything up to its last
/// `@` may be userinfo (a raw password may hold `/`, `?` or `#`), so it is masked.
fn without_userinfo(raw: &str) -> String {
    let start = raw.find("://").map_or(0, |i| i + 3);
    match raw[start..].rfind('@') {
        Some(at) => format!("{}***@{}", &raw[..start], &raw[start + at + 1..]),
        None => raw.to_owned(),
    }
}

/// Checks the URL, method and headers.
pub fn prepare(r: &RequestOpts) -> Result<Prepared, Failure> {
    let shown = without_userinfo(&r.url);
    let uri: Uri = r
        .url
        .parse()
        .map_err(|e| Failure::Usage(format!("invalid URL {shown:?}: {e}")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        Some(other) => {
            return Err(Failure::Usage(format!(
                "unsupported scheme {other:?} in {shown:?} (use http or https)"
            )))
        }
        None => {
            return Err(Failure::Usage(format!(
                "invalid URL {shown:?}: no scheme (use http:// or https://)"
            )))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(Failure::Usage(format!("invalid URL {shown:?}: no host")));
    }
    let method = Method::from_bytes(r.method.as_bytes())
        .map_err(|_| Failure::Usage(format!("invalid method {:?}", r.method)))?;
    let mut headers = Vec::new();
    for h in &r.headers {
        let (name, value) = h.split_once(':').ok_or_else(|| {
            Failure::Usage(format!("invalid header {h:?}: expected \"Name: value\""))
        })?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| Failure::Usage(format!("invalid header name in {h:?}")))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| Failure::Usage(format!("invalid header value in {h:?}")))?;
        headers.push((name, value));
    }
    Ok(Prepared {
        method,
        uri,
        headers,
        body: r.data.clone().map(Bytes::from).unwrap_or_default(),
    })
}

/// The connector for these options.
pub fn connector(c: &ConnOpts) -> Result<HttpsConnector, Failure> {
    let mut conn = match &c.cacert {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| {
                Failure::Usage(format!("cannot read --cacert {}: {e}", path.display()))
            })?;
            for cert in certs {
                let cert = cert.map_err(|e| {
                    Failure::Usage(format!("bad certificate in {}: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    Failure::Usage(format!("bad certificate in {}: {e}", path.display()))
                })?;
            }
            if roots.is_empty() {
                return Err(Failure::Usage(format!(
                    "no certificates in {}",
                    path.display()
                )));
            }
            HttpsConnector::with_roots(roots)
        }
        None => HttpsConnector::new(),
    };
    if !c.http2 && !c.http2_prior_knowledge {
        conn = conn.http1_only();
    }
    for pin in &c.resolve {
        let mut parts = pin.splitn(3, ':');
        let (host, port, addr) = (parts.next(), parts.next(), parts.next());
        let bad = || {
            Failure::Usage(format!(
                "invalid --resolve {pin:?}: expected HOST:PORT:ADDR"
            ))
        };
        let (Some(host), Some(port), Some(addr)) = (host, port, addr) else {
            return Err(bad());
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        let addr: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| bad())?;
        conn.http_mut().resolve_to(host, port, addr);
    }
    Ok(conn)
}

/// A builder with the connection options applied.
pub fn builder(c: &ConnOpts) -> Result<poolscope::Builder, Failure> {
    let mut b = Client::builder(TokioExecutor::new());
    if c.http2_prior_knowledge {
        b.http2_only(true);
    }
    b.proxy(proxy(c)?);
    Ok(b)
}

/// The proxy choice: `--proxy` (and `--noproxy`), else the environment's, as curl.
fn proxy(c: &ConnOpts) -> Result<Proxy, Failure> {
    let builder = match &c.proxy {
        Some(uri) => ProxyBuilder::default().all(uri.clone()),
        None if c.noproxy.is_none() => return Ok(Proxy::from_env()),
        None => ProxyBuilder::from_env(),
    };
    let builder = match &c.noproxy {
        Some(list) => builder.no_proxy(list.clone()),
        None => builder,
    };
    builder
        .build()
        .map_err(|e| Failure::Usage(format!("--proxy: {e}")))
}

/// One line for a failed request: the phase (from poolscope's error) and the root cause.
pub fn describe(err: &poolscope::Error) -> String {
    let mut root: Option<&(dyn StdError + 'static)> = StdError::source(err);
    let mut last = None;
    while let Some(e) = root {
        last = Some(e);
        root = e.source();
    }
    match last {
        Some(cause) => format!("{err}: {cause}"),
        None => err.to_string(),
    }
}
