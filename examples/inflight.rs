//! "What is my HTTP client doing right now, and who asked for it?" — the in-flight report
//! with stacks, taken while three slow requests are being serviced.
//!
//! `cargo run -p examples --example inflight`

mod local_server;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioExecutor;
use poolscope::Client;

type HttpClient = Client<poolscope::connect::HttpConnector, Empty<Bytes>>;

async fn fetch_blob(
    client: HttpClient,
    uri: http::Uri,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let resp = client.get(uri).await?;
    Ok(resp.into_body().collect().await?.to_bytes().len())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let addr = local_server::start().await;
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .telemetry()
        .capture_stacks(true)
        // The seed's report shows object ids replaced with [oid].
        .redact_url(|u| {
            let path = match u.path().rsplit_once('/') {
                Some((dir, _)) => format!("{dir}/[oid]"),
                None => u.path().to_owned(),
            };
            format!(
                "{}://{}{}",
                u.scheme_str().unwrap_or("http"),
                u.authority().map_or("", |a| a.as_str()),
                path
            )
        })
        .build_http();
    let mut tasks = Vec::new();
    for ms in [300, 250, 200] {
        let uri = format!("http://{addr}/slow/{ms}").parse()?;
        tasks.push(tokio::spawn(fetch_blob(client.clone(), uri)));
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    print!("{}", client.in_flight());
    for t in tasks {
        t.await??;
    }
    println!(
        "\nafter the bodies ended: {} in flight",
        client.in_flight().len()
    );
    Ok(())
}
