//! What telemetry may show of a URL: never its userinfo. Every place that renders a request's
//! URI or a connection's target (in-flight reports, the history, the request span, a proxy's
//! name, an error's target) takes it from here; [`TelemetryBuilder::redact_url`](crate::TelemetryBuilder::redact_url)
//! is the user's further rewriting ([`Redact`]).

use std::sync::Arc;

use http::uri::Authority;
use http::Uri;

/// Rewrites a URL (already without userinfo) for reports.
pub(crate) type Redact = Arc<dyn Fn(&Uri) -> String + Send + Sync>;

/// `authority` without its userinfo: `host[:port]`.
pub(crate) fn host_port(authority: &Authority) -> &str {
    authority.as_str().rsplit('@').next().unwrap_or("")
}

/// `uri` without userinfo: `scheme://host[:port]/path?query`.
pub(crate) fn strip_userinfo(uri: &Uri) -> Uri {
    let Some(auth) = uri.authority() else {
        return uri.clone();
    };
    let hostport = host_port(auth);
    if hostport.len() == auth.as_str().len() {
        return uri.clone();
    }
    let mut parts = http::uri::Parts::default();
    parts.scheme = uri.scheme().cloned();
    parts.authority = hostport.parse().ok();
    parts.path_and_query = uri.path_and_query().cloned();
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_stripped() {
        let u: Uri = "http://user:pw@h:81/a?b=c".parse().unwrap();
        assert_eq!(strip_userinfo(&u).to_string(), "http://h:81/a?b=c");
        let u: Uri = "http://h/a".parse().unwrap();
        assert_eq!(strip_userinfo(&u).to_string(), "http://h/a");
        assert_eq!(host_port(&"u:p@h:1".parse().unwrap()), "h:1");
    }
}
