//! The HTTP methods the client's telemetry names as they are; any other is `_OTHER`, so a
//! metric's label values and a span's name stay bounded whatever methods callers invent.
//!
//! By default these are OpenTelemetry's known methods (RFC 9110's eight, and `PATCH`);
//! [`TelemetryBuilder::known_methods`](crate::TelemetryBuilder::known_methods) replaces the list, as
//! OpenTelemetry's `OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS` does for other instrumentations.

use std::sync::Arc;

use http::Method;

/// OpenTelemetry's default known methods, in the order metrics index them.
const DEFAULT: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

/// What a method is called in telemetry.
pub(crate) const OTHER: &str = "_OTHER";

/// The methods telemetry names (see the module's documentation).
#[derive(Clone, Debug, Default)]
pub(crate) struct KnownMethods(Option<Arc<[Method]>>);

impl KnownMethods {
    /// A list of the caller's own, in place of the default one.
    pub(crate) fn new(methods: impl IntoIterator<Item = Method>) -> KnownMethods {
        let mut list: Vec<Method> = Vec::new();
        for m in methods {
            if !list.contains(&m) {
                list.push(m);
            }
        }
        KnownMethods(Some(list.into()))
    }

    fn list(&self) -> &[Method] {
        self.0.as_deref().unwrap_or(&DEFAULT)
    }

    /// How many methods there are: indices run from 0 to this, which stands for `_OTHER`.
    pub(crate) fn len(&self) -> usize {
        self.list().len()
    }

    /// `m`'s index in the list, or [`len`](Self::len) when it is not in it.
    pub(crate) fn index(&self, m: &Method) -> usize {
        match &self.0 {
            // The standard methods are a comparison of a tag each.
            None => match *m {
                Method::GET => 0,
                Method::HEAD => 1,
                Method::POST => 2,
                Method::PUT => 3,
                Method::DELETE => 4,
                Method::CONNECT => 5,
                Method::OPTIONS => 6,
                Method::TRACE => 7,
                Method::PATCH => 8,
                _ => DEFAULT.len(),
            },
            Some(list) => list.iter().position(|k| k == m).unwrap_or(list.len()),
        }
    }

    /// The name of index `i` (`_OTHER` for [`len`](Self::len) and beyond).
    #[cfg_attr(not(any(feature = "metrics", feature = "tracing")), allow(dead_code))]
    pub(crate) fn name(&self, i: usize) -> &str {
        self.list().get(i).map_or(OTHER, Method::as_str)
    }

    /// What `m` is called: itself when known, `_OTHER` when not.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn label<'a>(&'a self, m: &'a Method) -> &'a str {
        if self.index(m) < self.len() {
            m.as_str()
        } else {
            OTHER
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_list_is_opentelemetrys() {
        let k = KnownMethods::default();
        for m in DEFAULT {
            assert_eq!(k.label(&m), m.as_str());
            assert_eq!(k.name(k.index(&m)), m.as_str());
        }
        let purge = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(k.label(&purge), "_OTHER");
        assert_eq!(k.index(&purge), 9);
        assert_eq!(k.name(9), "_OTHER");
    }

    #[test]
    fn a_list_of_ones_own_replaces_it() {
        let purge = Method::from_bytes(b"PURGE").unwrap();
        let k = KnownMethods::new([Method::GET, purge.clone(), Method::GET]);
        assert_eq!(k.len(), 2);
        assert_eq!(k.label(&purge), "PURGE");
        assert_eq!(k.index(&purge), 1);
        assert_eq!(k.label(&Method::POST), "_OTHER");
        assert_eq!(k.index(&Method::POST), 2);
    }
}
