//! The pool's identities, a leaf module that `pool`, `stats` and the client all name:
//! [`ConnectKey`], which connections may serve which requests, and [`ConnId`], one
//! connection. Both are re-exported from [`pool`](crate::pool).
//!
//! Two requests can share a connection exactly when their keys are equal. A key is the
//! scheme, the host (lower-cased), the port (the scheme's default filled in) and the proxy the
//! connection goes through, if any, as Go's `connectMethodKey`. This module does not resolve
//! names: `example.com` and its address are different keys.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};

use http::Uri;

/// The identity of a connection pool queue: scheme, lower-cased host, port, and the proxy
/// the connections go through (if any).
///
/// Cloning is cheap (a reference count). `Display` renders `scheme://host:port`, followed by
/// ` via proxy-host:port` for a key with a proxy; a key never holds userinfo, a path or a
/// query.
///
/// # Examples
///
/// ```
/// use poolscope::pool::ConnectKey;
///
/// let uri: http::Uri = "https://user:secret@Example.COM/a/b?c".parse().unwrap();
/// let key = ConnectKey::from_uri(&uri).unwrap();
/// assert_eq!(key.to_string(), "https://example.com:443");
/// assert_eq!(key, ConnectKey::new("https", "example.com", 443));
/// ```
#[derive(Clone)]
pub struct ConnectKey(Arc<KeyParts>);

struct KeyParts {
    scheme: Box<str>,
    host: Box<str>,
    port: u16,
    /// The proxy: its `host:port` as shown, and an identity that also tells apart the same
    /// proxy with other credentials.
    via: Option<(Box<str>, u64)>,
    /// Hash of all the above with a per-process random seed, computed once so that the
    /// pool's per-key lookups hash a `u64` instead of strings.
    hash: u64,
}

impl KeyParts {
    fn fields(&self) -> (&str, &str, u16, Option<(&str, u64)>) {
        (
            &self.scheme,
            &self.host,
            self.port,
            self.via.as_ref().map(|(name, id)| (&**name, *id)),
        )
    }
}

impl PartialEq for ConnectKey {
    fn eq(&self, other: &ConnectKey) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.hash == other.0.hash && self.0.fields() == other.0.fields())
    }
}

impl Eq for ConnectKey {}

impl Hash for ConnectKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

impl PartialOrd for ConnectKey {
    fn partial_cmp(&self, other: &ConnectKey) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ConnectKey {
    fn cmp(&self, other: &ConnectKey) -> std::cmp::Ordering {
        self.0.fields().cmp(&other.0.fields())
    }
}

/// The seed for key hashes: random per process, so hosts chosen by an attacker cannot be
/// made to collide.
fn seed() -> &'static std::collections::hash_map::RandomState {
    static SEED: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    SEED.get_or_init(Default::default)
}

/// A hasher for maps keyed by [`ConnectKey`]: the key's precomputed hash is used as is.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is expected; fold anything else in so the hasher stays correct.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// `BuildHasher` for maps keyed by [`ConnectKey`].
pub(crate) type BuildKeyHasher = std::hash::BuildHasherDefault<KeyHasher>;

/// Why a URI could not be turned into a [`ConnectKey`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidKey {
    reason: &'static str,
}

impl fmt::Display for InvalidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "URI cannot be pooled: {}", self.reason)
    }
}

impl std::error::Error for InvalidKey {}

impl ConnectKey {
    /// Builds a key from its parts; scheme and host are lower-cased.
    pub fn new(scheme: &str, host: &str, port: u16) -> ConnectKey {
        let scheme = scheme.to_ascii_lowercase().into_boxed_str();
        let host = host.to_ascii_lowercase().into_boxed_str();
        let hash = seed().hash_one((&*scheme, &*host, port));
        ConnectKey(Arc::new(KeyParts {
            scheme,
            host,
            port,
            via: None,
            hash,
        }))
    }

    /// The same origin reached through the proxy `name` (`host:port`, as shown; never
    /// credentials). `identity` tells apart proxies that show the same name, such as one
    /// proxy with two sets of credentials: keys are equal only if both are.
    ///
    /// ```
    /// use poolscope::pool::ConnectKey;
    ///
    /// let direct = ConnectKey::new("https", "example.com", 443);
    /// let proxied = direct.clone().with_proxy("127.0.0.1:3128", 1);
    /// assert_eq!(proxied.to_string(), "https://example.com:443 via 127.0.0.1:3128");
    /// assert_ne!(direct, proxied);
    /// assert_ne!(proxied, direct.with_proxy("127.0.0.1:3128", 2));
    /// ```
    pub fn with_proxy(self, name: &str, identity: u64) -> ConnectKey {
        let p = &*self.0;
        let via = Some((Box::<str>::from(name), identity));
        let hash = seed().hash_one((&*p.scheme, &*p.host, p.port, name, identity));
        ConnectKey(Arc::new(KeyParts {
            scheme: p.scheme.clone(),
            host: p.host.clone(),
            port: p.port,
            via,
            hash,
        }))
    }

    /// The proxy the key's connections go through (`host:port`), if any.
    pub fn proxy(&self) -> Option<&str> {
        self.0.via.as_ref().map(|(name, _)| &**name)
    }

    /// Builds the key a request to `uri` is pooled under.
    ///
    /// # Errors
    ///
    /// The URI must be absolute (have a scheme and a host); a scheme other than `http` or
    /// `https` must carry an explicit port.
    pub fn from_uri(uri: &Uri) -> Result<ConnectKey, InvalidKey> {
        let scheme = uri.scheme_str().ok_or(InvalidKey {
            reason: "no scheme (the URI must be absolute)",
        })?;
        let host = uri.host().ok_or(InvalidKey {
            reason: "no host (the URI must be absolute)",
        })?;
        if host.is_empty() {
            return Err(InvalidKey {
                reason: "empty host",
            });
        }
        let port = match uri.port_u16() {
            Some(port) => port,
            None => default_port(scheme).ok_or(InvalidKey {
                reason: "unknown scheme without an explicit port",
            })?,
        };
        Ok(ConnectKey::new(scheme, host, port))
    }

    /// The scheme, lower-cased (`http`, `https`).
    pub fn scheme(&self) -> &str {
        &self.0.scheme
    }

    /// The host, lower-cased; an IPv6 literal keeps its brackets (`[::1]`).
    pub fn host(&self) -> &str {
        &self.0.host
    }

    /// The port, with the scheme's default filled in.
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// Whether the scheme is `https`.
    pub fn is_https(&self) -> bool {
        self.scheme() == "https"
    }
}

/// The default port of `http` (80) and `https` (443); `None` for any other scheme.
pub(crate) fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else {
        None
    }
}

impl fmt::Display for ConnectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme(), self.host(), self.port())?;
        match self.proxy() {
            Some(proxy) => write!(f, " via {proxy}"),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for ConnectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectKey({self})")
    }
}

/// A connection's id, unique within one pool, given when its dial starts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) u64);

impl ConnId {
    /// The id as a number (ids start at 1 and grow).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_are_filled_in_and_host_lowercased() {
        let k = ConnectKey::from_uri(&"http://HOST.example/x".parse().unwrap()).unwrap();
        assert_eq!(
            (k.scheme(), k.host(), k.port()),
            ("http", "host.example", 80)
        );
        let k = ConnectKey::from_uri(&"HTTPS://h:8443".parse().unwrap()).unwrap();
        assert_eq!((k.scheme(), k.port()), ("https", 8443));
    }

    #[test]
    fn explicit_default_port_equals_implicit() {
        let a = ConnectKey::from_uri(&"http://h:80/".parse().unwrap()).unwrap();
        let b = ConnectKey::from_uri(&"http://h/".parse().unwrap()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn relative_uri_and_unknown_scheme_are_rejected() {
        assert!(ConnectKey::from_uri(&"/path".parse().unwrap()).is_err());
        let err = ConnectKey::from_uri(&"ftp://h/".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("unknown scheme"));
        assert!(ConnectKey::from_uri(&"ftp://h:21/".parse().unwrap()).is_ok());
    }

    #[test]
    fn userinfo_never_reaches_the_key() {
        let k = ConnectKey::from_uri(&"http://u:pw@h:81/p?q=1".parse().unwrap()).unwrap();
        assert_eq!(k.to_string(), "http://h:81");
    }

    #[test]
    fn ipv6_literal_keeps_brackets() {
        let k = ConnectKey::from_uri(&"http://[::1]:8080/".parse().unwrap()).unwrap();
        assert_eq!(k.to_string(), "http://[::1]:8080");
    }
}
