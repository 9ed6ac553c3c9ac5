//! serve-and-track driven by poolscope's own client: the seed's transcript (status codes,
//! sizes, MIME type, metric values after one and two tracks), the access-log format and a
//! graceful stop with a request in flight.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioExecutor;
use poolscope::Client;
use serve_and_track::{Config, LogSink, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Running {
    base: String,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    state: std::path::PathBuf,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start() -> Running {
    let dir = std::env::temp_dir().join(format!(
        "serve-and-track-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let lines = lines.clone();
        LogSink::to_fn(move |l| lines.lock().unwrap().push(l))
    };
    let server = Server::bind(
        Config {
            addr: "127.0.0.1:0".parse().unwrap(),
            state_file: state.clone(),
            grace: Duration::from_secs(5),
        },
        sink,
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Running {
        base,
        lines,
        stop: Some(tx),
        task,
        state,
        _dir: TempDir(dir),
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

type C = Client<poolscope::connect::HttpConnector, Empty<Bytes>>;

fn client() -> C {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn get(c: &C, url: String) -> (u16, http::HeaderMap, Bytes) {
    let resp = c.get(url.parse().unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (
        status,
        headers,
        resp.into_body().collect().await.unwrap().to_bytes(),
    )
}

fn tracking_lines(metrics: &Bytes) -> Vec<String> {
    String::from_utf8_lossy(metrics)
        .lines()
        .filter(|l| l.starts_with("tracking_"))
        .map(str::to_owned)
        .collect()
}

fn metric(lines: &[String], name: &str) -> f64 {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} missing from {lines:?}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_seed_transcript() {
    let s = start().await;
    let c = client();
    std::fs::write(&s.state, b"").unwrap();
    let (status, _, body) = get(&c, format!("{}/state", s.base)).await;
    assert_eq!((status, body.len()), (200, 2));
    assert_eq!(body, "OK");
    std::fs::remove_file(&s.state).unwrap();
    let (status, _, body) = get(&c, format!("{}/state", s.base)).await;
    assert_eq!((status, body.len()), (503, 33));

    let (status, headers, body) = get(&c, format!("{}/track", s.base)).await;
    assert_eq!((status, body.len()), (200, 42));
    assert_eq!(headers["content-type"], "image/gif");
    assert!(headers["cache-control"]
        .to_str()
        .unwrap()
        .contains("no-cache"));
    assert_eq!(&body[..6], b"GIF89a");

    let (_, _, m) = get(&c, format!("{}/metrics", s.base)).await;
    let lines = tracking_lines(&m);
    assert_eq!(
        metric(&lines, "tracking_requests_count_total{status=\"success\"}"),
        1.0
    );
    assert_eq!(metric(&lines, "tracking_requests_size_total"), 42.0);
    assert_eq!(metric(&lines, "tracking_request_duration_count"), 1.0);
    for q in ["0.5", "0.9", "0.99"] {
        assert!(
            metric(
                &lines,
                &format!("tracking_request_duration{{quantile=\"{q}\"}}")
            ) >= 0.0
        );
    }
    let sum1 = metric(&lines, "tracking_request_duration_sum");

    get(&c, format!("{}/track", s.base)).await;
    let (_, _, m) = get(&c, format!("{}/metrics", s.base)).await;
    let lines = tracking_lines(&m);
    assert_eq!(
        metric(&lines, "tracking_requests_count_total{status=\"success\"}"),
        2.0
    );
    assert_eq!(metric(&lines, "tracking_requests_size_total"), 84.0);
    assert_eq!(metric(&lines, "tracking_request_duration_count"), 2.0);
    assert!(metric(&lines, "tracking_request_duration_sum") >= sum1);
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_405() {
    let s = start().await;
    let c = client();
    assert_eq!(get(&c, format!("{}/nope", s.base)).await.0, 404);
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("{}/track", s.base))
        .body(Empty::new())
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
    resp.into_body().collect().await.unwrap();
    let (_, _, m) = get(&c, format!("{}/metrics", s.base)).await;
    assert_eq!(
        metric(
            &tracking_lines(&m),
            "tracking_requests_count_total{status=\"failure\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn every_request_is_logged_in_apache_combined_format() {
    let s = start().await;
    let c = client();
    get(&c, format!("{}/state", s.base)).await;
    let req = http::Request::builder()
        .uri(format!("{}/track", s.base))
        .header("user-agent", "curl/7.54.0")
        .header("referer", "http://example.test/page")
        .body(Empty::new())
        .unwrap();
    c.request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    let head = http::Request::builder()
        .method(http::Method::HEAD)
        .uri(format!("{}/track", s.base))
        .body(Empty::new())
        .unwrap();
    c.request(head)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    let lines = s.lines.lock().unwrap().clone();
    assert!(
        lines[0].contains(" INFO http: Server started 127.0.0.1:"),
        "{lines:?}"
    );
    // HEAD sends no body: 0 bytes, like Apache's %B.
    assert!(
        lines[3].ends_with("\"HEAD /track HTTP/1.1\" 200 0 \"\" \"\"\n"),
        "{}",
        lines[3]
    );
    let state = &lines[1];
    // 127.0.0.1 - - [23/Nov/2026:16:42:13 +0000] "GET /state HTTP/1.1" 503 33 "" ""
    let (prefix, rest) = state.split_once(" [").unwrap();
    assert_eq!(prefix, "127.0.0.1 - -");
    let (time, rest) = rest.split_once("] ").unwrap();
    assert_eq!(time.len(), "14/Aug/2017:14:47:57 +0000".len(), "{time}");
    assert!(time.ends_with(" +0000") && time.as_bytes()[2] == b'/' && time.as_bytes()[6] == b'/');
    assert_eq!(rest, "\"GET /state HTTP/1.1\" 503 33 \"\" \"\"\n");
    assert!(
        lines[2].ends_with(
            "\"GET /track HTTP/1.1\" 200 42 \"http://example.test/page\" \"curl/7.54.0\"\n"
        ),
        "{}",
        lines[2]
    );
}

#[tokio::test]
async fn a_graceful_stop_finishes_the_request_in_flight() {
    let mut s = start().await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    // A request whose head is half sent when the stop begins.
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(b"GET /track HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.stop.take().unwrap().send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    tcp.write_all(b"Connection: close\r\n\r\n").await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut resp))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(resp.ends_with(serve_and_track::TRACKING_GIF));
    tokio::time::timeout(Duration::from_secs(5), &mut s.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let lines = s.lines.lock().unwrap().clone();
    let at = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap();
    // The request finished during the stop, before "stopped gracefully".
    assert!(at("Server stopping") < at("GET /track"), "{lines:?}");
    assert!(
        at("GET /track") < at("Server stopped gracefully"),
        "{lines:?}"
    );
    assert_eq!(lines.len(), 4, "{lines:?}");
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
}
