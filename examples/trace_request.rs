//! Tracing one request with a `ClientTrace` in its extensions (Go's
//! `httptrace.WithClientTrace`): every event as it happens, then the timings.
//!
//! `cargo run -p examples --example trace_request`

mod local_server;

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioExecutor;
use poolscope::{Client, ClientTrace};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let addr = local_server::start().await;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for attempt in 1..=2 {
        let start = Instant::now();
        let at = move || format!("{:>8.3?}", start.elapsed());
        let trace = ClientTrace::builder()
            .on_get_conn(move |i| println!("{} GetConn {}", at(), i.key))
            .on_dns_start(move |i| println!("{} DNSStart {}", at(), i.host))
            .on_dns_done(move |i| println!("{} DNSDone {:?}", at(), i.addrs))
            .on_connect_start(move |i| println!("{} ConnectStart {}", at(), i.addr))
            .on_connect_done(move |i| println!("{} ConnectDone {} err={:?}", at(), i.addr, i.error))
            .on_got_conn(move |i| {
                println!(
                    "{} GotConn {} reused={} was_idle={} idle_time={:?} {:?}",
                    at(),
                    i.conn_id,
                    i.reused,
                    i.was_idle,
                    i.idle_time,
                    i.version
                )
            })
            .on_wrote_headers(move |_| println!("{} WroteHeaders", at()))
            .on_wrote_request(move |_| println!("{} WroteRequest", at()))
            .on_got_first_response_byte(move |_| println!("{} GotFirstResponseByte", at()))
            .on_put_idle_conn(move |i| println!("{} PutIdleConn err={:?}", at(), i.error))
            .on_response_body_done(move |i| println!("{} BodyDone {} bytes", at(), i.bytes))
            .on_request_done(|i| println!("timings: {:#?}", i.timings))
            .build();
        println!("--- request {attempt}");
        let mut req = http::Request::new(Empty::new());
        *req.uri_mut() = format!("http://localhost:{}/", addr.port()).parse()?;
        req.extensions_mut().insert(trace);
        let resp = client.request(req).await?;
        resp.into_body().collect().await?;
    }
    Ok(())
}
