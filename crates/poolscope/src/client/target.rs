//! The request target and head as each connection needs them: origin form for an origin,
//! absolute form (and the proxy's credentials) for a forward proxy, authority form for
//! CONNECT, `:authority` without userinfo for HTTP/2, and the `Host` header.

use http::header::{CONNECTION, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Uri, Version};

use super::conn::ConnFacts;
use super::error::{Error, Kind};
use crate::pool::ConnectKey;

/// The URI a dial for `key` uses: scheme and authority only, never userinfo or a path.
pub(super) fn dial_uri(key: &ConnectKey) -> Result<Uri, Error> {
    let authority = Authority::try_from(format!("{}:{}", key.host(), key.port()))
        .map_err(|e| Error::new(Kind::InvalidUri).with(e))?;
    let scheme =
        Scheme::try_from(key.scheme()).map_err(|e| Error::new(Kind::InvalidUri).with(e))?;
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query("/")
        .build()
        .map_err(|e| Error::new(Kind::InvalidUri).with(e))
}

/// A `Connection` header lists `close` (among other tokens, perhaps).
pub(super) fn says_close(headers: &http::HeaderMap) -> bool {
    let close = |v: &http::HeaderValue| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    };
    // A few headers are scanned (a standard name compares as one byte) instead of hashed.
    if headers.len() <= 16 {
        headers
            .iter()
            .any(|(name, value)| name == CONNECTION && close(value))
    } else {
        headers.get_all(CONNECTION).iter().any(close)
    }
}

/// Takes userinfo out of a URI that is sent with its authority (HTTP/2's `:authority`, the
/// absolute form a proxy gets): credentials never go on the wire.
fn drop_userinfo(uri: &mut Uri) {
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        *uri = crate::redact::strip_userinfo(uri);
    }
}

/// An authority-form CONNECT target gets the scheme hyper-util gives it: https for port
/// 443, else http.
pub(super) fn with_connect_scheme(uri: &mut Uri) {
    let Some(authority) = uri.authority().cloned() else {
        return;
    };
    let scheme = if authority.port_u16() == Some(443) {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    };
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    parts.path_and_query = Some(PathAndQuery::from_static("/"));
    if let Ok(u) = Uri::from_parts(parts) {
        *uri = u;
    }
}

/// HTTP/1 CONNECT goes out in authority form (`CONNECT host:port HTTP/1.1`).
fn authority_form(uri: &mut Uri) {
    let Some(authority) = uri.authority() else {
        return;
    };
    let hostport = crate::redact::host_port(authority);
    let mut parts = http::uri::Parts::default();
    parts.authority = hostport.parse().ok();
    if let Ok(u) = Uri::from_parts(parts) {
        *uri = u;
    }
}

/// The request target of an HTTP/1 request to an origin: path and query only.
fn origin_form(uri: &mut Uri) {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let path = if path.as_str().is_empty() {
        PathAndQuery::from_static("/")
    } else {
        path
    };
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(path);
    if let Ok(u) = Uri::from_parts(parts) {
        *uri = u;
    }
}

/// Rewrites `req` for the connection it goes out on (`h2`, and what the dial learned in
/// `facts`): the target's form, `Host` (when `set_host` and the request has none: `host`)
/// and a proxy's credentials. An HTTP/1 connection refuses an HTTP/2 request.
pub(super) fn for_connection<T>(
    req: &mut Request<T>,
    h2: bool,
    facts: &ConnFacts,
    set_host: Option<&HeaderValue>,
) -> Result<(), Error> {
    if h2 {
        // HTTP/2 sends the authority as `:authority`.
        drop_userinfo(req.uri_mut());
        return Ok(());
    }
    if req.version() == Version::HTTP_2 {
        return Err(Error::new(Kind::UnsupportedVersion));
    }
    if let Some(host) = set_host {
        if !req.headers().contains_key(HOST) {
            req.headers_mut().insert(HOST, host.clone());
        }
    }
    if req.method() == Method::CONNECT {
        authority_form(req.uri_mut());
    } else if facts.proxied {
        // A proxy gets the absolute form, and its credentials if it has some.
        drop_userinfo(req.uri_mut());
        if let Some(auth) = &facts.proxy_auth {
            req.headers_mut()
                .entry(http::header::PROXY_AUTHORIZATION)
                .or_insert_with(|| (**auth).clone());
        }
    } else {
        origin_form(req.uri_mut());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::says_close;
    use http::header::{HeaderName, HeaderValue, CONNECTION};
    use http::HeaderMap;

    /// `headers` with `n` other headers (whose values say `close`, which must not count)
    /// before the given `Connection` values.
    fn with(n: usize, values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for i in 0..n {
            let name = HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap();
            h.insert(name, HeaderValue::from_static("close"));
        }
        for v in values {
            h.append(CONNECTION, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn close_is_found_among_tokens_and_values_whether_the_headers_are_scanned_or_hashed() {
        // 3 headers are scanned, 40 looked up by hash: both ways give the same answers.
        for n in [0, 3, 40] {
            assert!(!says_close(&with(n, &[])), "{n}");
            assert!(!says_close(&with(n, &["keep-alive"])), "{n}");
            assert!(!says_close(&with(n, &["closed, upgrade"])), "{n}");
            assert!(says_close(&with(n, &["close"])), "{n}");
            assert!(says_close(&with(n, &["Upgrade , CLOSE "])), "{n}");
            assert!(says_close(&with(n, &["keep-alive", "close"])), "{n}");
        }
    }
}
