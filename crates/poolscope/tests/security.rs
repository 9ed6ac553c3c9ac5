//! Secrets stay secret: userinfo in a request URL never reaches trace events, Stats events,
//! the event history, the in-flight report, errors or metric labels.
#![cfg(feature = "metrics")]

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioExecutor;
use metrics_util::debugging::DebuggingRecorder;
use poolscope::inflight::Phase;
use poolscope::{Client, ClientTrace, Stats};
use support::server::TestServer;
use support::{closed_port, eventually};

#[test]
fn userinfo_never_reaches_events_reports_errors_or_metric_labels() {
    let seen: Arc<Mutex<Vec<String>>> = Default::default();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let server = TestServer::start().await;
                macro_rules! log {
                    () => {{
                        let seen = seen.clone();
                        move |e: &_| seen.lock().unwrap().push(format!("{e:?}"))
                    }};
                }
                let trace = ClientTrace::builder()
                    .on_get_conn(log!())
                    .on_got_conn(log!())
                    .on_dns_done(log!())
                    .on_connect_done(log!())
                    .on_put_idle_conn(log!())
                    .on_request_done(log!())
                    .build();
                let stats = Stats::builder()
                    .on_idle_conn_wait_in(log!())
                    .on_idle_conn_wait_out(log!())
                    .on_conn_opened(log!())
                    .on_idle_conn_in(log!())
                    .on_conn_closed(log!())
                    .build();
                let c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
                    .telemetry()
                    .trace(trace)
                    .stats(stats)
                    .event_history(64)
                    .capture_stacks(true)
                    .metrics(true)
                    .build_http();
                let url = format!(
                    "http://admin:s3cret@127.0.0.1:{}/slow/100",
                    server.addr.port()
                );
                let fut = c.get(url.parse().unwrap());
                let task = tokio::spawn(fut);
                eventually("the request in flight, awaiting its response", || {
                    let r = c.in_flight();
                    r.len() == 1 && r.iter().all(|e| e.phase == Phase::AwaitingResponse)
                })
                .await;
                let report = c.in_flight();
                seen.lock().unwrap().push(report.to_string());
                seen.lock().unwrap().push(report.to_json());
                let resp = task.await.unwrap().unwrap();
                resp.into_body().collect().await.unwrap();
                // An error too: a refused port with userinfo.
                let refused = closed_port();
                let err = c
                    .get(
                        format!("http://admin:s3cret@127.0.0.1:{refused}/x")
                            .parse()
                            .unwrap(),
                    )
                    .await
                    .unwrap_err();
                seen.lock().unwrap().push(format!("{err} {err:?}"));
                for e in c.recent_events() {
                    seen.lock().unwrap().push(e.to_string());
                }
                seen.lock().unwrap().push(format!("{}", c.pool_snapshot()));
                drop(c);
            })
    });
    let seen = seen.lock().unwrap();
    assert!(seen.len() > 15, "events were recorded: {}", seen.len());
    for s in seen.iter() {
        assert!(!s.contains("s3cret") && !s.contains("admin"), "leaked: {s}");
    }
    for (k, _, _, _) in snapshotter.snapshot().into_vec() {
        for l in k.key().labels() {
            assert!(
                !l.value().contains("s3cret") && !l.value().contains("admin"),
                "label {l:?}"
            );
        }
    }
}

#[tokio::test]
async fn userinfo_never_reaches_the_server_as_authority_or_host() {
    let server = TestServer::start().await;
    let url: http::Uri = format!("http://admin:s3cret@{}/authority", server.addr)
        .parse()
        .unwrap();
    let expected = server.addr.to_string();
    for http2 in [false, true] {
        let c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .build_http();
        let resp = c.get(url.clone()).await.unwrap();
        let seen = resp.into_body().collect().await.unwrap().to_bytes();
        let seen = String::from_utf8_lossy(&seen).into_owned();
        assert!(
            !seen.contains("admin") && !seen.contains("s3cret"),
            "http2={http2}: the server saw {seen:?}"
        );
        let (authority, host) = seen.split_once(' ').unwrap();
        if http2 {
            assert_eq!(authority, expected, "HTTP/2 :authority");
        } else {
            assert_eq!(host, expected, "HTTP/1.1 Host");
        }
    }
}

/// The IO of a connector that says it reached a proxy (`Connected::proxy(true)`).
struct ViaProxy(hyper_util::rt::TokioIo<tokio::net::TcpStream>);

impl hyper_util::client::legacy::connect::Connection for ViaProxy {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new().proxy(true)
    }
}

impl hyper::rt::Read for ViaProxy {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for ViaProxy {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_proxy_gets_the_absolute_form_without_userinfo() {
    let server = TestServer::start().await;
    let addr = server.addr;
    // A "proxy" connector: dials the test server (which answers for any target) and says
    // it is a proxy.
    let connector = tower_service_fn(move |_uri: http::Uri| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        Ok::<_, std::io::Error>(ViaProxy(hyper_util::rt::TokioIo::new(tcp)))
    });
    let c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let url: http::Uri = format!("http://admin:s3cret@{addr}/authority")
        .parse()
        .unwrap();
    let resp = c.get(url).await.unwrap();
    let seen = resp.into_body().collect().await.unwrap().to_bytes();
    let seen = String::from_utf8_lossy(&seen).into_owned();
    // The request line carried the authority (absolute form), and no credentials.
    let (authority, _host) = seen.split_once(' ').unwrap();
    assert_eq!(authority, addr.to_string(), "{seen}");
    assert!(
        !seen.contains("admin") && !seen.contains("s3cret"),
        "{seen}"
    );
}

/// A `tower_service::Service<Uri>` from an async function.
fn tower_service_fn<F, Fut, R>(f: F) -> ServiceFn<F>
where
    F: Fn(http::Uri) -> Fut + Clone,
    Fut: std::future::Future<Output = Result<R, std::io::Error>>,
{
    ServiceFn(f)
}

#[derive(Clone)]
struct ServiceFn<F>(F);

impl<F, Fut, R> tower_service::Service<http::Uri> for ServiceFn<F>
where
    F: Fn(http::Uri) -> Fut + Clone,
    Fut: std::future::Future<Output = Result<R, std::io::Error>>,
{
    type Response = R;
    type Error = std::io::Error;
    type Future = Fut;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Fut {
        (self.0)(uri)
    }
}
