//! `ForwardProxy`: `http://` requests through an HTTP proxy (forward proxying).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Uri};

use super::{ConnectError, ConnectPhase, HttpConnector, Stream};

/// Sends `http://` requests through an HTTP proxy, as browsers and Go's `Transport` do for
/// plain HTTP: every connection goes to the proxy, requests on it are written in absolute form
/// (`GET http://origin/path HTTP/1.1`), and carry `Proxy-Authorization` when the proxy's URI
/// has credentials (`http://user:password@proxy:3128`). The credentials are taken out of the
/// URI here and appear in no report, trace or error.
///
/// For `https://` through a proxy, use hyper-util's `Tunnel` under an
/// [`HttpsConnector`](super::HttpsConnector) (CONNECT): this connector refuses `https://`.
///
/// # Examples
///
/// ```
/// use poolscope::connect::{ForwardProxy, HttpConnector};
///
/// let proxy = ForwardProxy::new("http://alice:pw@127.0.0.1:3128".parse().unwrap(), HttpConnector::new());
/// # let _ = proxy;
/// ```
#[derive(Clone)]
pub struct ForwardProxy<C = HttpConnector> {
    /// The proxy, without userinfo.
    proxy: Uri,
    auth: Option<HeaderValue>,
    inner: C,
}

impl<C> std::fmt::Debug for ForwardProxy<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardProxy")
            .field("proxy", &self.proxy)
            .field("auth", &self.auth.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl<C> ForwardProxy<C> {
    /// Through the proxy at `proxy` (`http://[user:password@]host:port`); `inner` makes the
    /// TCP connection to it.
    pub fn new(proxy: Uri, inner: C) -> ForwardProxy<C> {
        // hyper-util's proxy matcher decodes the credentials (percent-encoding) into a
        // sensitive `Basic` header, as `Proxy` does.
        let auth = hyper_util::client::proxy::matcher::Matcher::builder()
            .http(proxy.to_string())
            .build()
            .intercept(&Uri::from_static("http://origin.invalid/"))
            .and_then(|i| i.basic_auth().cloned());
        ForwardProxy {
            proxy: crate::redact::strip_userinfo(&proxy),
            auth,
            inner,
        }
    }
}

impl<C> tower_service::Service<Uri> for ForwardProxy<C>
where
    C: tower_service::Service<Uri, Response = Stream> + Clone + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Stream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let (proxy, auth, mut inner) = (self.proxy.clone(), self.auth.clone(), self.inner.clone());
        Box::pin(async move {
            if !dst
                .scheme_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("http"))
            {
                return Err(ConnectError::new(
                    ConnectPhase::Uri,
                    "a forward proxy carries http:// only (https:// goes through a CONNECT tunnel)",
                ));
            }
            std::future::poll_fn(|cx| inner.poll_ready(cx))
                .await
                .map_err(|e| proxy_error(&proxy, e))?;
            let stream = inner
                .call(proxy.clone())
                .await
                .map_err(|e| proxy_error(&proxy, e))?;
            Ok(stream.into_forward_proxy(auth))
        })
    }
}

/// A failure to reach the proxy, naming it (without credentials).
fn proxy_error(
    proxy: &Uri,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> ConnectError {
    let e = e.into();
    let phase = e
        .downcast_ref::<ConnectError>()
        .map_or(ConnectPhase::Tcp, ConnectError::phase);
    ConnectError::new(phase, format!("connecting to the proxy {proxy}")).with(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_become_a_basic_header_and_leave_the_uri() {
        let p = ForwardProxy::new("http://alice:p%40ss@127.0.0.1:3128".parse().unwrap(), ());
        assert_eq!(p.proxy.to_string(), "http://127.0.0.1:3128/");
        // base64("alice:p@ss")
        assert_eq!(p.auth.as_ref().unwrap(), "Basic YWxpY2U6cEBzcw==");
        assert!(p.auth.as_ref().unwrap().is_sensitive());
        assert!(!format!("{p:?}").contains("YWxp"));
        assert!(
            ForwardProxy::new("http://127.0.0.1:3128".parse().unwrap(), ())
                .auth
                .is_none()
        );
    }
}
