//! Memory bounds measured on the process's RSS: alone in their binary, so that no other test
//! allocates meanwhile (in `reliability.rs` they ran beside the stress tests).

use bytes::Bytes;
use faultserver::{Fault, FaultServer, Proto};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioExecutor;
use poolscope::connect::HttpConnector;
use poolscope::Client;

type C = Client<HttpConnector, Empty<Bytes>>;

#[tokio::test]
async fn an_endless_body_costs_only_what_the_user_reads() {
    let server = FaultServer::start(Proto::Http1, Fault::EndlessBody).await;
    let c: C = Client::builder(TokioExecutor::new()).build_http();
    let resp = c.get(server.url("/").parse().unwrap()).await.unwrap();
    let mut body = resp.into_body();
    let before = faultserver::rss_kib();
    let mut read = 0u64;
    while read < 256 << 20 {
        let frame = body.frame().await.unwrap().unwrap();
        read += frame.data_ref().map_or(0, |d| d.len() as u64);
    }
    let grown = faultserver::rss_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "256 MiB streamed, RSS grew {grown} KiB");
    drop(body);
    assert_eq!(c.pool_snapshot().total_active(), 0);
}
