//! `--metrics-addr`: the client's metrics (poolscope's `metrics(true)`) in Prometheus's text
//! format at `http://ADDR/metrics` while the command runs, through metrics-exporter-prometheus
//! with the buckets and unit suffixes `docs/metrics.md` describes.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::Failure;

/// Installs the Prometheus recorder as the process's recorder (before the client is built:
/// its handles bind to it) and serves it on `addr`. The task ends with the runtime.
pub async fn serve(addr: SocketAddr) -> Result<SocketAddr, Failure> {
    let mut builder = PrometheusBuilder::new().set_enable_unit_suffix(true);
    for (name, buckets) in poolscope::metrics::bucket_advice() {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.replace('.', "_")), buckets)
            .map_err(|e| Failure::Usage(format!("--metrics-addr: {e}")))?;
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::Usage(format!("--metrics-addr {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::Usage(format!("--metrics-addr {addr}: {e}")))?;
    metrics::set_global_recorder(recorder)
        .map_err(|e| Failure::Usage(format!("--metrics-addr: {e}")))?;
    // Histogram samples wait in the recorder until upkeep drains them.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(accept(listener, handle));
    Ok(local)
}

async fn accept(listener: tokio::net::TcpListener, handle: PrometheusHandle) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                let resp = respond(req.uri().path(), &handle);
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn respond(path: &str, handle: &PrometheusHandle) -> http::Response<Full<Bytes>> {
    let (status, ctype, body) = match path {
        "/metrics" => (
            http::StatusCode::OK,
            "text/plain; version=0.0.4",
            handle.render(),
        ),
        _ => (
            http::StatusCode::NOT_FOUND,
            "text/plain",
            "not found: metrics are at /metrics\n".to_owned(),
        ),
    };
    let mut resp = http::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ctype),
    );
    resp
}
