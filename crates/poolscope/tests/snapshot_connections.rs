//! Per-connection rows of pool snapshots, held against what a real loopback server saw: its
//! accepted peer addresses and the requests on each, HTTP/2 streams in flight and the
//! server's stream limit, and the kernel's TCP_INFO of the client's sockets.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use poolscope::stats::{ConnSnapshot, ConnState, TcpState};
use poolscope::Client;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What the server saw: requests per accepted connection (by its peer address), and a gate
/// that `/slow` requests wait on.
#[derive(Default)]
struct Seen {
    requests: Mutex<HashMap<SocketAddr, u64>>,
    /// Peer address of each `/slow` request, as it arrives.
    slow_from: Mutex<Vec<SocketAddr>>,
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Seen>,
    gate: Arc<Semaphore>,
}

impl Server {
    /// HTTP/1.1, or h2c with `max_streams` as SETTINGS_MAX_CONCURRENT_STREAMS.
    async fn start(h2_max_streams: Option<u32>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let gate = Arc::new(Semaphore::new(0));
        let (s, g) = (seen.clone(), gate.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = listener.accept().await.unwrap();
                s.requests.lock().unwrap().insert(peer, 0);
                let (s, g) = (s.clone(), g.clone());
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (s, g) = (s.clone(), g.clone());
                    async move {
                        *s.requests.lock().unwrap().entry(peer).or_default() += 1;
                        let slow = req.uri().path() == "/slow";
                        // Read the whole body (uploads).
                        let _ = req.into_body().collect().await;
                        if slow {
                            s.slow_from.lock().unwrap().push(peer);
                            g.acquire().await.unwrap().forget();
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                tokio::spawn(async move {
                    let io = TokioIo::new(tcp);
                    let _ = match h2_max_streams {
                        Some(max) => {
                            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .max_concurrent_streams(max)
                                .serve_connection(io, service)
                                .await
                        }
                        None => {
                            hyper::server::conn::http1::Builder::new()
                                .serve_connection(io, service)
                                .await
                        }
                    };
                });
            }
        });
        Server { addr, seen, gate }
    }

    fn url(&self, path: &str) -> http::Uri {
        format!("http://{}{path}", self.addr).parse().unwrap()
    }

    fn requests_from(&self, peer: SocketAddr) -> Option<u64> {
        self.seen.requests.lock().unwrap().get(&peer).copied()
    }

    fn slow_requests(&self) -> usize {
        self.seen.slow_from.lock().unwrap().len()
    }
}

/// Waits until `f` holds, for at most 5 s.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    support::eventually_within(what, Duration::from_secs(5), f).await;
}

/// A GET on its own task, read to the end.
fn spawn_get<C: poolscope::connect::Connect>(
    client: &Client<C, Empty<Bytes>>,
    url: http::Uri,
) -> tokio::task::JoinHandle<Bytes> {
    let c = client.clone();
    tokio::spawn(async move {
        let resp = c.get(url).await.unwrap();
        resp.into_body().collect().await.unwrap().to_bytes()
    })
}

fn conn_rows<C, B: Send + 'static>(client: &Client<C, B>) -> Vec<ConnSnapshot> {
    client
        .pool_snapshot()
        .connections()
        .map(|(_, c)| c.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_connections_two_idle_one_busy_match_what_the_server_saw() {
    let server = Server::start(None).await;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();

    // Three requests at once (held by the server until all three are there): three
    // connections.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(spawn_get(&client, server.url("/slow")));
    }
    eventually("three held requests", || server.slow_requests() == 3).await;
    server.gate.add_permits(3);
    for h in held {
        h.await.unwrap();
    }
    // A connection comes back to the pool just after its response ends: wait for that, or
    // the next request would dial a fourth.
    let all_idle = || async {
        eventually("three idle", || {
            let rows = conn_rows(&client);
            rows.len() == 3 && rows.iter().all(|c| c.state == ConnState::Idle)
        })
        .await
    };
    all_idle().await;
    // Two more, one after the other (the most recently used connection serves both), then
    // one that stays on its connection.
    for _ in 0..2 {
        let resp = client.get(server.url("/")).await.unwrap();
        resp.into_body().collect().await.unwrap();
        all_idle().await;
    }
    let busy = spawn_get(&client, server.url("/slow"));
    eventually("the busy request", || server.slow_requests() == 4).await;
    let busy_from = server.seen.slow_from.lock().unwrap()[3];

    let snap = client.pool_snapshot();
    let host = &snap.hosts[0];
    assert_eq!(host.connections.len(), 3, "{snap}");
    let rows = &host.connections;
    assert!(
        rows.windows(2).all(|w| w[0].id < w[1].id),
        "oldest first: {snap}"
    );
    let active: Vec<_> = rows
        .iter()
        .filter(|c| c.state == ConnState::Active)
        .collect();
    let idle: Vec<_> = rows.iter().filter(|c| c.state == ConnState::Idle).collect();
    assert_eq!((active.len(), idle.len()), (1, 2), "{snap}");
    assert_eq!(
        active[0].local_addr,
        Some(busy_from),
        "the busy one: {snap}"
    );
    assert_eq!(active[0].streams, 1);
    assert_eq!(active[0].idle_for, None);
    assert!(
        idle.iter().all(|c| c.streams == 0 && c.idle_for.is_some()),
        "{snap}"
    );
    let mut total = 0;
    for c in rows {
        let local = c
            .local_addr
            .expect("poolscope's connector knows its address");
        // The server's own count for the connection with that peer address.
        assert_eq!(
            server.requests_from(local),
            Some(c.requests),
            "{c:?}\n{snap}"
        );
        assert_eq!(c.peer_addr, Some(server.addr));
        assert_eq!(c.version, Version::HTTP_11);
        assert!(c.age >= c.idle_for.unwrap_or_default());
        let dial = c.dial.expect("poolscope's connector says how it dialled");
        assert_eq!((dial.resolved, dial.attempts, dial.fallback), (1, 1, false));
        // TCP_INFO is opt-in.
        assert_eq!(c.tcp, None);
        total += c.requests;
    }
    assert_eq!(total, 6, "every request counted once: {snap}");
    // The counts are the pool's, consistent with its per-key line.
    assert_eq!((host.idle, host.active), (2, 1));

    let text = snap.to_string();
    assert!(text.contains("requests"), "{text}");
    for c in rows {
        assert!(text.contains(&c.local_addr.unwrap().to_string()), "{text}");
    }
    let json: serde_json::Value = serde_json::from_str(&snap.to_json()).unwrap();
    let conns = json["hosts"][0]["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 3);
    assert_eq!(
        conns.iter().filter(|c| c["state"] == "active").count(),
        1,
        "{json}"
    );
    assert_eq!(
        conns
            .iter()
            .map(|c| c["requests"].as_u64().unwrap())
            .sum::<u64>(),
        6
    );

    server.gate.add_permits(1);
    busy.await.unwrap();
    // The busy connection came back: three idle, and none listed after they close.
    eventually("three idle", || {
        conn_rows(&client)
            .iter()
            .all(|c| c.state == ConnState::Idle)
    })
    .await;
    client.close_idle_connections();
    assert!(conn_rows(&client).is_empty(), "{}", client.pool_snapshot());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_info_shows_the_round_trip_and_the_bytes_of_an_upload() {
    let server = Server::start(None).await;
    let mut b = Client::builder(TokioExecutor::new());
    b.telemetry().snapshot_tcp_info(true);
    let client: Client<_, Full<Bytes>> = b.build_http();

    let resp = client
        .request(
            Request::post(server.url("/"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    resp.into_body().collect().await.unwrap();
    let before = conn_rows(&client);
    assert_eq!(before.len(), 1);
    let tcp = before[0].tcp.expect("TCP_INFO on Linux");
    assert_eq!(tcp.state, TcpState::Established);
    assert!(tcp.rtt > Duration::ZERO, "{tcp:?}");

    // The connection comes back just after its response ends: the upload must find it.
    eventually("the connection idle", || {
        client.pool_snapshot().total_active() == 0
    })
    .await;
    let upload = Bytes::from(vec![b'x'; 1024 * 1024]);
    let resp = client
        .request(
            Request::post(server.url("/"))
                .body(Full::new(upload))
                .unwrap(),
        )
        .await
        .unwrap();
    resp.into_body().collect().await.unwrap();
    let after = conn_rows(&client);
    assert_eq!(after[0].id, before[0].id, "the same connection");
    let tcp2 = after[0].tcp.unwrap();
    let acked = tcp2.bytes_acked.unwrap() - tcp.bytes_acked.unwrap();
    assert!(acked >= 1024 * 1024, "acked {acked}: {tcp2:?}");
    assert!(tcp2.bytes_received.unwrap() > tcp.bytes_received.unwrap());
    assert_eq!(tcp2.retransmits, 0, "{tcp2:?}");
    assert!(tcp2.cwnd > 0);

    let text = client.pool_snapshot().to_string();
    assert!(text.contains("ESTABLISHED"), "{text}");

    // Once the connection is gone, so is its row (the connection may still be on its way
    // back from the last request: close_idle_connections closes it when it arrives).
    client.close_idle_connections();
    eventually("no row left", || conn_rows(&client).is_empty()).await;
}

/// The inode of the IPv4 TCP socket whose local address is `local` (`/proc/net/tcp`).
fn socket_inode(local: SocketAddr) -> Option<String> {
    let SocketAddr::V4(v4) = local else {
        return None;
    };
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(v4.ip().octets()),
        v4.port()
    );
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    // An earlier connection from the same local port may linger in TIME_WAIT (state 06,
    // inode 0): only the established one is this connection's.
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(1) == Some(&want.as_str()) && f.get(3) == Some(&"01") && f.get(9) != Some(&"0"))
            .then(|| f[9].to_owned())
    })
}

/// Descriptors of this process that refer to socket `inode`.
fn descriptors_of(inode: &str) -> usize {
    let target = format!("socket:[{inode}]");
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy() == target)
        .count()
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_closes_its_descriptor_with_the_connection() {
    // The probe holds a duplicate of the socket's descriptor: two while the connection
    // lives, none once it is closed (a leaked one would keep the socket's memory, and a
    // descriptor, for as long as the process runs).
    let server = Server::start(None).await;
    let mut b = Client::builder(TokioExecutor::new());
    b.telemetry().snapshot_tcp_info(true);
    let client: Client<_, Empty<Bytes>> = b.build_http();
    let resp = client.get(server.url("/")).await.unwrap();
    resp.into_body().collect().await.unwrap();
    let row = conn_rows(&client).remove(0);
    assert!(row.tcp.is_some());
    let inode = socket_inode(row.local_addr.unwrap()).unwrap();
    assert_eq!(
        descriptors_of(&inode),
        2,
        "the socket and the probe's duplicate"
    );
    client.close_idle_connections();
    eventually("both descriptors closed", || descriptors_of(&inode) == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_in_flight_and_the_servers_limit() {
    let server = Server::start(Some(7)).await;
    let mut b = Client::builder(TokioExecutor::new());
    b.http2_only(true);
    let client: Client<_, Empty<Bytes>> = b.build_http();
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(spawn_get(&client, server.url("/slow")));
    }
    eventually("five streams at the server", || server.slow_requests() == 5).await;
    let snap = client.pool_snapshot();
    let rows = &snap.hosts[0].connections;
    assert_eq!(rows.len(), 1, "{snap}");
    let c = &rows[0];
    assert_eq!(c.version, Version::HTTP_2);
    assert_eq!(c.state, ConnState::Active);
    assert_eq!(c.streams, 5, "{snap}");
    assert_eq!(c.max_streams, Some(7), "the server's SETTINGS: {snap}");
    assert_eq!(c.requests, 5);
    assert_eq!(server.requests_from(c.local_addr.unwrap()), Some(5));
    assert!(snap.to_string().contains("5/7"), "{snap}");

    server.gate.add_permits(5);
    for h in held {
        h.await.unwrap();
    }
    eventually("the connection idle", || {
        rows_idle(&client.pool_snapshot().hosts[0].connections)
    })
    .await;
}

fn rows_idle(rows: &[ConnSnapshot]) -> bool {
    rows.len() == 1 && rows[0].state == ConnState::Idle && rows[0].streams == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_says_which_address_the_dial_chose_and_whether_the_family_fell_back() {
    // The name resolves to ::1 first, then 127.0.0.1; only the IPv4 address listens, so the
    // first attempt fails (refused, or unreachable without IPv6) and the second wins.
    let server = Server::start(None).await;
    let port = server.addr.port();
    let mut http = poolscope::connect::HttpConnector::new();
    http.resolve_to("dual.test", port, "::1".parse().unwrap())
        .resolve_to("dual.test", port, "127.0.0.1".parse().unwrap());
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(http);
    let url: http::Uri = format!("http://dual.test:{port}/").parse().unwrap();
    let resp = client.get(url).await.unwrap();
    resp.into_body().collect().await.unwrap();
    let row = conn_rows(&client).remove(0);
    assert_eq!(
        row.peer_addr,
        Some(server.addr),
        "the address that answered"
    );
    let dial = row.dial.unwrap();
    assert_eq!(
        (dial.resolved, dial.attempts, dial.fallback),
        (2, 2, true),
        "{row:?}"
    );
    let text = client.pool_snapshot().to_string();
    assert!(text.contains("(fallback family)"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&client.pool_snapshot().to_json()).unwrap();
    assert_eq!(json["hosts"][0]["connections"][0]["dial"]["fallback"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_a_limit_hit_hook_gets_has_the_described_rows() {
    let server = Server::start(None).await;
    let seen: Arc<Mutex<Vec<poolscope::PoolSnapshot>>> = Arc::default();
    let s = seen.clone();
    let stats = poolscope::Stats::builder()
        .on_max_conns_per_host_hit(move |snap| s.lock().unwrap().push(snap.clone()))
        .build();
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_max_conns_per_host(1)
        .telemetry()
        .stats(stats)
        .snapshot_tcp_info(true);
    let client: Client<_, Empty<Bytes>> = b.build_http();
    // The first request holds the only connection; the second hits the limit.
    let first = spawn_get(&client, server.url("/slow"));
    eventually("the first request at the server", || {
        server.slow_requests() == 1
    })
    .await;
    let second = spawn_get(&client, server.url("/slow"));
    eventually("the limit hit", || !seen.lock().unwrap().is_empty()).await;
    let snap = seen.lock().unwrap()[0].clone();
    let rows = &snap.hosts[0].connections;
    assert_eq!(rows.len(), 1, "{snap}");
    assert_eq!(rows[0].state, ConnState::Active);
    // Described after the lock, before the hook ran: addresses and TCP_INFO are there.
    assert_eq!(rows[0].peer_addr, Some(server.addr), "{snap}");
    assert_eq!(
        rows[0].tcp.map(|t| t.state),
        Some(TcpState::Established),
        "{snap}"
    );
    server.gate.add_permits(2);
    first.await.unwrap();
    second.await.unwrap();
}
