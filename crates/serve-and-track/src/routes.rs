//! The routes, the `tracking_*` metrics and the access log.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use metrics::{Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::log::{apache_time, LogSink};

/// A 1×1 transparent GIF, 42 bytes.
pub const TRACKING_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x01, 0x44, 0x00, 0x3b,
];

/// What every connection shares: the state file and the metrics.
pub(crate) struct App {
    state_file: PathBuf,
    prometheus: PrometheusHandle,
    duration: metrics::Histogram,
    success: metrics::Counter,
    failure: metrics::Counter,
    size: metrics::Counter,
}

impl App {
    pub(crate) fn new(state_file: PathBuf) -> App {
        // Our own recorder, not the global one: an application (or test) embedding the server
        // keeps its own metrics separate.
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_quantiles(&[0.5, 0.9, 0.99]) {
            Ok(b) => b,
            Err(_) => unreachable!("0.5, 0.9 and 0.99 are valid quantiles"),
        };
        let recorder = builder.build_recorder();
        let prometheus = recorder.handle();
        let meta = Metadata::new(module_path!(), Level::INFO, None);
        let status = |s: &'static str| {
            Key::from_parts(
                "tracking_requests_count_total",
                vec![Label::new("status", s)],
            )
        };
        App {
            state_file,
            duration: recorder
                .register_histogram(&Key::from_name("tracking_request_duration"), &meta),
            success: recorder.register_counter(&status("success"), &meta),
            failure: recorder.register_counter(&status("failure"), &meta),
            size: recorder.register_counter(&Key::from_name("tracking_requests_size_total"), &meta),
            prometheus,
        }
    }

    /// Drains recorded histogram samples into their summaries (bounded memory).
    pub(crate) fn upkeep(&self) {
        self.prometheus.run_upkeep();
    }

    fn respond(&self, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        let known = matches!(path, "/track" | "/state" | "/metrics");
        if known && req.method() != Method::GET && req.method() != Method::HEAD {
            if path == "/track" {
                self.failure.increment(1);
            }
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        match path {
            "/track" => {
                let start = Instant::now();
                let mut r = Response::new(Full::new(Bytes::from_static(TRACKING_GIF)));
                let h = r.headers_mut();
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
                h.insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("no-cache, no-store, must-revalidate"),
                );
                h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
                h.insert(header::EXPIRES, HeaderValue::from_static("0"));
                self.success.increment(1);
                self.size.increment(TRACKING_GIF.len() as u64);
                self.duration.record(start.elapsed().as_secs_f64());
                r
            }
            "/state" => {
                if self.state_file.exists() {
                    text(StatusCode::OK, "OK")
                } else {
                    // 33 bytes, as the original's 503 body.
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "state file not found, unavailable",
                    )
                }
            }
            "/metrics" => {
                let mut r = text(StatusCode::OK, "");
                *r.body_mut() = Full::new(Bytes::from(self.prometheus.render()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// One connection's service: answers and logs each request.
#[derive(Clone)]
pub(crate) struct Service {
    app: Arc<App>,
    peer: SocketAddr,
    log: LogSink,
}

impl Service {
    pub(crate) fn new(app: Arc<App>, peer: SocketAddr, log: LogSink) -> Service {
        Service { app, peer, log }
    }
}

fn header_str(req: &Request<hyper::body::Incoming>, name: header::HeaderName) -> &str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A field of the access log as Apache writes it: a quote or a backslash escaped with a
/// backslash, other bytes outside printable ASCII as `\xhh`, so a request cannot break the
/// line's quoting or inject a line.
fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..0x7f => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.into()
}

impl hyper::service::Service<Request<hyper::body::Incoming>> for Service {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<hyper::body::Incoming>) -> Self::Future {
        let resp = self.app.respond(&req);
        // Bytes of body sent: none for HEAD, whatever the GET would have been.
        let size = if req.method() == Method::HEAD {
            0
        } else {
            http_body::Body::size_hint(resp.body()).exact().unwrap_or(0)
        };
        // ::1 - - [14/Aug/2017:14:47:57 +0100] "GET /state HTTP/1.1" 200 2 "" "curl/7.54.0"
        self.log.access(|| {
            format!(
                "{} - - [{}] \"{} {} {:?}\" {} {} \"{}\" \"{}\"\n",
                self.peer.ip(),
                apache_time(SystemTime::now()),
                escape(req.method().as_str()),
                escape(req.uri().path_and_query().map_or("/", |p| p.as_str())),
                req.version(),
                resp.status().as_u16(),
                size,
                escape(header_str(&req, header::REFERER)),
                escape(header_str(&req, header::USER_AGENT)),
            )
        });
        Box::pin(async move { Ok(resp) })
    }
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn log_fields_cannot_break_their_quotes_or_the_line() {
        assert_eq!(escape("/track?x=1"), "/track?x=1");
        assert_eq!(escape(r#"/a"b"#), r#"/a\"b"#);
        assert_eq!(escape(r"C:\x"), r"C:\\x");
        assert_eq!(
            escape("ua\n127.0.0.1 - - fake"),
            r"ua\x0a127.0.0.1 - - fake"
        );
        assert_eq!(escape("caf\u{e9}"), r"caf\xc3\xa9");
    }
}
