//! A real Prometheus server scrapes the client's metrics (through metrics-exporter-prometheus)
//! from an endpoint the test serves on loopback; the test then asks Prometheus's HTTP API for
//! what it stored. Alone in its file: it installs the process's global recorder.
#![cfg(feature = "metrics")]

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use poolscope::Client;
use support::server::TestServer;

/// Debian's `prometheus`, or one on `PATH`.
fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Serves `GET /metrics` (the recorder's rendering) on a loopback port.
async fn serve_metrics(handle: PrometheusHandle) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let body = handle.render();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    port
}

/// A Prometheus process, killed when dropped. Its log is kept in `dir` for failures.
struct Prometheus {
    child: tokio::process::Child,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    fn start(bin: &PathBuf, target_port: u16) -> Prometheus {
        let dir = std::env::temp_dir().join(format!(
            "poolscope-prometheus-{}-{}",
            std::process::id(),
            target_port
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: poolscope\n    static_configs:\n      \
             - targets: ['127.0.0.1:{target_port}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = tokio::process::Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus starts");
        Prometheus { child, port, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Asks Prometheus's query API for `query`: each result's labels and value.
async fn query(
    c: &Client<poolscope::connect::HttpConnector, Empty<Bytes>>,
    port: u16,
    query: &str,
) -> Option<Vec<(serde_json::Value, f64)>> {
    let mut q = String::new();
    for b in query.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => q.push(char::from(b)),
            _ => q.push_str(&format!("%{b:02X}")),
        }
    }
    let uri = format!("http://127.0.0.1:{port}/api/v1/query?query={q}");
    let resp = c.get(uri.parse().ok()?).await.ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    if v["status"] != "success" {
        return None;
    }
    let results = v["data"]["result"].as_array()?;
    Some(
        results
            .iter()
            .map(|r| {
                let value = r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(f64::NAN);
                (r["metric"].clone(), value)
            })
            .collect(),
    )
}

#[test]
fn a_real_prometheus_scrapes_the_request_counts_and_open_connections() {
    let Some(bin) = binary() else {
        // CI installs Prometheus (`.ci/run`): there, a missing one is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus is not installed, and CI must run this test"
        );
        eprintln!("skipped: prometheus is not installed (apt-get install prometheus)");
        return;
    };
    let mut builder = PrometheusBuilder::new().set_enable_unit_suffix(true);
    for (name, buckets) in poolscope::metrics::bucket_advice() {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.replace('.', "_")), buckets)
            .unwrap();
    }
    let handle = builder.install_recorder().expect("the only recorder");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let server = TestServer::start().await;
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .telemetry()
            .metrics(true)
            .build_http();
        let mut made: BTreeMap<(String, String), f64> = BTreeMap::new();
        for (method, path, n) in [("GET", "/", 7), ("GET", "/status/404", 3), ("POST", "/", 2)] {
            for _ in 0..n {
                let req = http::Request::builder()
                    .method(method)
                    .uri(server.url(path))
                    .body(Full::new(Bytes::from_static(b"x")))
                    .unwrap();
                let resp = client.request(req).await.unwrap();
                let status = resp.status().as_u16().to_string();
                resp.into_body().collect().await.unwrap();
                *made.entry((method.to_owned(), status)).or_default() += 1.0;
            }
        }
        support::settle(&client).await;
        // A connection comes back to the pool just after its response ends (a request that
        // came first may have dialed another): what Prometheus must show is what is idle.
        support::eventually("every connection idle", || {
            client.pool_snapshot().total_active() == 0
        })
        .await;
        let idle = client.pool_snapshot().total_idle() as f64;
        assert!(idle >= 1.0);

        let metrics_port = serve_metrics(handle.clone()).await;
        let prom = Prometheus::start(&bin, metrics_port);
        // A client of its own, without metrics, to ask Prometheus.
        let asker: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let counts = "sum by (http_request_method, http_response_status_code) \
                      (http_client_request_duration_seconds_count)";
        let deadline = Instant::now() + Duration::from_secs(60);
        let got = loop {
            if let Some(rows) = query(&asker, prom.port, counts).await {
                if !rows.is_empty() {
                    break rows;
                }
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus stored nothing in 60 s; its log:\n{}",
                prom.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let got: BTreeMap<(String, String), f64> = got
            .into_iter()
            .map(|(m, v)| {
                let label = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
                (
                    (
                        label("http_request_method"),
                        label("http_response_status_code"),
                    ),
                    v,
                )
            })
            .collect();
        assert_eq!(
            got, made,
            "what Prometheus stored against what the test made"
        );

        let open = query(
            &asker,
            prom.port,
            "sum by (http_connection_state) (http_client_open_connections)",
        )
        .await
        .expect("open connections");
        let open: BTreeMap<String, f64> = open
            .into_iter()
            .map(|(m, v)| {
                (
                    m["http_connection_state"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    v,
                )
            })
            .collect();
        assert_eq!(
            open,
            BTreeMap::from([("active".to_owned(), 0.0), ("idle".to_owned(), idle)])
        );

        // The series carry the host's attributes, renamed by the exporter.
        let per_host = query(
            &asker,
            prom.port,
            &format!(
                "http_client_request_duration_seconds_count{{server_address=\"127.0.0.1\",\
                 server_port=\"{}\",url_scheme=\"http\",network_protocol_version=\"1.1\"}}",
                server.addr.port()
            ),
        )
        .await
        .expect("per host");
        assert_eq!(per_host.len(), 3, "{per_host:?}");
        drop(prom);
    });
}
