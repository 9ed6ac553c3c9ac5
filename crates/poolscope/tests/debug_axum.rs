//! `debug::DebugService` mounted in an axum `Router` (it is a `tower::Service`), served by
//! axum on loopback and asked by a poolscope client.

mod support;

use std::time::Duration;

use support::server::TestServer;

#[tokio::test]
async fn an_axum_router_serves_the_debug_endpoints() {
    let server = TestServer::start().await;
    let watched = support::client(|b| {
        b.telemetry().event_history(16);
    });
    // One request in flight while the endpoints are asked.
    let slow = watched.get(server.url("/slow/3000"));
    let in_flight = tokio::spawn(async move { slow.await.map(|_| ()) });
    support::eventually("the request to be in flight", || {
        watched.in_flight().len() == 1
    })
    .await;

    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "the app's own route" }))
        .nest_service("/debug", poolscope::debug::service(watched.clone()))
        .route_service("/pool", poolscope::debug::service(watched.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });

    let asker = support::client(|_| {});
    let get = |path: &str| {
        let f = asker.get(format!("http://{addr}{path}").parse().unwrap());
        async move {
            let resp = tokio::time::timeout(Duration::from_secs(10), f)
                .await
                .unwrap()
                .unwrap();
            let status = resp.status();
            let ctype = resp.headers()[http::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .to_owned();
            let body = String::from_utf8(support::body(resp).await.to_vec()).unwrap();
            (status, ctype, body)
        }
    };
    let (status, _, body) = get("/").await;
    assert_eq!(
        (status.as_u16(), body.as_str()),
        (200, "the app's own route")
    );

    let (status, ctype, body) = get("/debug/inflight").await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    assert!(body.contains("/slow/3000"), "{body}");

    let (status, ctype, body) = get("/debug/inflight?format=json").await;
    assert_eq!((status.as_u16(), ctype.as_str()), (200, "application/json"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["entries"].as_array().map(Vec::len), Some(1), "{v}");

    let (status, _, body) = get("/debug/pool?format=json").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v.get("hosts").is_some(), "{v}");

    let (status, _, body) = get("/debug/events").await;
    assert_eq!(status, 200);
    assert!(body.contains("conn_opened"), "{body}");

    // Mounted on one route without a prefix, it answers there too.
    let (status, _, body) = get("/pool").await;
    assert_eq!(status, 200);
    assert!(body.contains("127.0.0.1"), "{body}");

    let (status, _, _) = get("/debug/nothing").await;
    assert_eq!(status, 404);

    in_flight.abort();
    serving.abort();
}
