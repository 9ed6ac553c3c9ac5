//! Migrating from hyper-util's legacy client: the diff is the import and, if you name it, the
//! response body type.
//!
//! `cargo run -p examples --example migrate_from_hyper_util`

mod local_server;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioExecutor;

// - use hyper_util::client::legacy::Client;
// + use poolscope::Client;
use poolscope::Client;

// - async fn fetch(client: &Client<HttpConnector, Empty<Bytes>>, ..) -> Response<hyper::body::Incoming>
// + async fn fetch(client: &Client<poolscope::connect::HttpConnector, Empty<Bytes>>, ..) -> Response<poolscope::ResponseBody>
async fn fetch(
    client: &Client<poolscope::connect::HttpConnector, Empty<Bytes>>,
    uri: http::Uri,
) -> Result<Bytes, Box<dyn std::error::Error + Send + Sync>> {
    let resp: http::Response<poolscope::ResponseBody> = client.get(uri).await?;
    Ok(resp.into_body().collect().await?.to_bytes())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let addr = local_server::start().await;
    // Unchanged: the builder and its options.
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .pool_max_idle_per_host(8)
        .build_http();
    for _ in 0..3 {
        let body = fetch(&client, format!("http://{addr}/").parse()?).await?;
        println!("got {:?}", body);
    }
    // New: look inside the pool.
    println!("{}", client.pool_snapshot());
    Ok(())
}
