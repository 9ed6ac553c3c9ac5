//! Where a request goes: its pool key and the `Host` header its URI implies.
//!
//! Both depend only on the URI's scheme and authority, and a client sends most requests to a
//! few origins, so they are computed once per (scheme, authority) and cached: a request to a
//! known origin costs one map lookup instead of parsing, lower-casing, hashing and allocating
//! a key and formatting a header (`docs/benchmarks.md` has what that saves).
//!
//! The cache is bounded ([`MAX_ORIGINS`]); past that, origins are computed per request as
//! before. An authority with userinfo is never cached, so credentials are not kept anywhere.
//! This module does not decide whether the header is sent (that is `set_host`, in `target.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::sync::RwLock;

use http::uri::Scheme;
use http::{HeaderValue, Uri};

use crate::connect::proxy::Via;
use crate::connect::Proxy;
use crate::pool::{default_port, ConnectKey, InvalidKey};

/// How many origins a client remembers.
pub(crate) const MAX_ORIGINS: usize = 256;

/// A request's pool key, `Host` header value and proxy.
#[derive(Clone)]
pub(crate) struct Origin {
    pub(crate) key: ConnectKey,
    /// `host[:port]`, the port only when it is not the scheme's default; `None` if the host
    /// is not a valid header value.
    pub(crate) host: Option<HeaderValue>,
    /// The proxy its connections go through (also in the key); shared, since every
    /// request to the origin carries it.
    pub(crate) via: Option<Arc<Via>>,
}

impl Origin {
    fn of(uri: &Uri, proxy: Option<&Proxy>) -> Result<Origin, InvalidKey> {
        let mut key = ConnectKey::from_uri(uri)?;
        let via = proxy.and_then(|p| p.via(uri)).map(Arc::new);
        if let Some(v) = &via {
            key = key.with_proxy(&v.name, v.identity);
        }
        Ok(Origin {
            key,
            host: host_header(uri),
            via,
        })
    }
}

/// The client's cache of origins, one map per common scheme, keyed by the authority as
/// written in the URI. The proxy choice depends only on the scheme and authority too, so it
/// is cached with them.
#[derive(Default)]
pub(crate) struct Origins {
    // foldhash, randomly seeded (cheaper than SipHash per request; the keys are the
    // application's own authorities, not an attacker's). The maps hold at most `MAX_ORIGINS` of the application's own authorities.
    http: RwLock<HashMap<Box<str>, Origin, foldhash::fast::RandomState>>,
    https: RwLock<HashMap<Box<str>, Origin, foldhash::fast::RandomState>>,
    proxy: Option<Proxy>,
}

impl Origins {
    pub(crate) fn new(proxy: Option<Proxy>) -> Origins {
        Origins {
            proxy,
            ..Origins::default()
        }
    }

    /// The origin of `uri`, from the cache when it is there.
    ///
    /// # Errors
    ///
    /// As [`ConnectKey::from_uri`]: the URI is not absolute, or has an unknown scheme and no
    /// port.
    pub(crate) fn resolve(&self, uri: &Uri) -> Result<Origin, InvalidKey> {
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Origin::of(uri, self.proxy.as_ref());
        };
        let map = if *scheme == Scheme::HTTP {
            &self.http
        } else if *scheme == Scheme::HTTPS {
            &self.https
        } else {
            return Origin::of(uri, self.proxy.as_ref());
        };
        let authority = authority.as_str();
        if authority.contains('@') {
            return Origin::of(uri, self.proxy.as_ref());
        }
        if let Some(found) = map.read().get(authority) {
            return Ok(found.clone());
        }
        let origin = Origin::of(uri, self.proxy.as_ref())?;
        let mut map = map.write();
        if map.len() < MAX_ORIGINS {
            map.insert(authority.into(), origin.clone());
        }
        Ok(origin)
    }
}

/// The `Host` header for `uri`: the host, and the port if it is not the scheme's default.
fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let value = match (uri.port_u16(), uri.scheme_str().and_then(default_port)) {
        (Some(p), Some(d)) if p == d => host.to_owned(),
        (Some(p), _) => format!("{host}:{p}"),
        (None, _) => host.to_owned(),
    };
    HeaderValue::from_str(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(o: &Origins, uri: &str) -> Origin {
        o.resolve(&uri.parse().unwrap()).unwrap()
    }

    #[test]
    fn host_header_omits_the_default_port_only() {
        let o = Origins::default();
        let host = |u| resolve(&o, u).host.unwrap();
        assert_eq!(host("http://Example.com/a"), "Example.com");
        assert_eq!(host("http://example.com:80/a"), "example.com");
        assert_eq!(host("https://example.com:443/"), "example.com");
        assert_eq!(host("http://example.com:8080/"), "example.com:8080");
        assert_eq!(host("https://[::1]:8443/"), "[::1]:8443");
    }

    #[test]
    fn cached_origins_equal_fresh_ones() {
        let o = Origins::default();
        for _ in 0..2 {
            let a = resolve(&o, "http://h:81/x");
            assert_eq!(a.key, ConnectKey::new("http", "h", 81));
            assert_eq!(a.host.unwrap(), "h:81");
        }
        assert_eq!(o.http.read().len(), 1);
        assert_eq!(
            resolve(&o, "https://H/").key,
            ConnectKey::new("https", "h", 443)
        );
        assert_eq!(o.https.read().len(), 1);
    }

    #[test]
    fn userinfo_is_never_cached() {
        let o = Origins::default();
        let a = resolve(&o, "http://user:secret@h:81/");
        assert_eq!(a.key.to_string(), "http://h:81");
        assert!(o.http.read().is_empty());
    }

    #[test]
    fn the_cache_is_bounded() {
        let o = Origins::default();
        for i in 0..MAX_ORIGINS + 10 {
            let a = resolve(&o, &format!("http://h{i}/"));
            assert_eq!(a.key.host(), format!("h{i}"));
        }
        assert_eq!(o.http.read().len(), MAX_ORIGINS);
    }

    #[test]
    fn invalid_uris_are_errors_and_not_cached() {
        let o = Origins::default();
        assert!(o.resolve(&"/relative".parse().unwrap()).is_err());
        assert!(o.resolve(&"ftp://h/".parse().unwrap()).is_err());
        assert!(o.http.read().is_empty());
    }
}
