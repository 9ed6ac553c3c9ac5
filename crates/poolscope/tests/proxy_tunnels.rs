//! HTTPS through real proxies started on loopback: `HttpsConnector` layered over hyper-util's
//! `Tunnel` (HTTP CONNECT, through tinyproxy) and `SocksV5` (through microsocks), to a real
//! nginx with a test CA. Each test skips (with a message) where the proxy or nginx is not
//! installed, and fails instead under CI, which installs them (`.ci/run`).

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::proxy::{SocksV5, Tunnel};
use hyper_util::rt::TokioExecutor;
use poolscope::connect::{HttpConnector, HttpsConnector};
use poolscope::{Client, Stats};

use support::nginx::{self, Nginx, NginxOptions};

/// A proxy process on a free loopback port, killed on drop.
struct Proxy {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn have(bin: &str) -> bool {
    ["/usr/bin/", "/usr/sbin/", "/usr/local/bin/"]
        .iter()
        .any(|d| std::path::Path::new(&format!("{d}{bin}")).exists())
}

fn skip(what: &str, name: &str) -> bool {
    if have(what) && nginx::available() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{name}: {what} or nginx is not installed, and CI must run this test"
    );
    eprintln!("{name}: skipped, {what} or nginx is not installed");
    true
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "poolscope-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Waits until `port` accepts TCP connections.
async fn listening(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

/// tinyproxy on loopback, logging every CONNECT to `tinyproxy.log`.
async fn tinyproxy() -> Proxy {
    tinyproxy_with("").await
}

/// tinyproxy with `extra` configuration lines.
async fn tinyproxy_with(extra: &str) -> Proxy {
    let dir = scratch("tinyproxy");
    let port = free_port();
    let log = dir.join("tinyproxy.log");
    let conf = dir.join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nLogFile \"{}\"\n\
             LogLevel Connect\nMaxClients 100\nPidFile \"{}\"\n{extra}\n",
            log.display(),
            dir.join("tinyproxy.pid").display()
        ),
    )
    .expect("write tinyproxy.conf");
    let child = Command::new("tinyproxy")
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tinyproxy");
    listening(port).await;
    Proxy { child, port, dir }
}

/// microsocks on loopback.
async fn microsocks() -> Proxy {
    let dir = scratch("microsocks");
    let port = free_port();
    let child = Command::new("microsocks")
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start microsocks");
    listening(port).await;
    Proxy { child, port, dir }
}

/// `n` GETs at concurrency `c` through `client`; every one must be 200 "ok\n".
async fn load<C: poolscope::connect::Connect>(
    client: &Client<C, Empty<Bytes>>,
    url: http::Uri,
    n: usize,
    c: usize,
) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < n as u64 {
                let resp = client
                    .get(url.clone())
                    .await
                    .unwrap_or_else(|e| panic!("{e:?}"));
                assert_eq!(resp.status(), 200);
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(&body[..], b"ok\n");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn counted() -> (Stats, Arc<AtomicU64>) {
    support::counting_opened()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_through_an_http_proxy_tunnel_reuses_its_connections() {
    if skip("tinyproxy", "https_through_an_http_proxy_tunnel") {
        return;
    }
    let run = async {
        let nginx = Nginx::start(NginxOptions {
            keepalive_requests: 1000,
            http2: false,
        });
        let proxy = tinyproxy().await;
        let proxy_uri: http::Uri = format!("http://127.0.0.1:{}", proxy.port).parse().unwrap();
        let https = HttpsConnector::with_roots(nginx.roots())
            .wrap(Tunnel::new(proxy_uri, HttpConnector::new()));
        let (stats, opened) = counted();
        // With no cap, a request that waits dials at once, as Go's Transport does, and slow
        // dials (CONNECT, then TLS) that lose to a returned connection go idle: the cap makes
        // the count exact here.
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .stats(stats)
            .pool_max_conns_per_host(8)
            .build(https);
        load(&client, nginx.url("/"), 200, 8).await;
        let opened = opened.load(Ordering::SeqCst);
        // Every connection the pool opened is one CONNECT at the proxy, and reused after.
        let log = std::fs::read_to_string(proxy.dir.join("tinyproxy.log")).unwrap_or_default();
        let connects = log.matches("CONNECT localhost:").count();
        eprintln!("tunnel: {opened} connections opened, tinyproxy logged {connects} CONNECTs");
        assert!((1..=8).contains(&opened), "{opened} connections for c=8");
        assert_eq!(
            connects as u64, opened,
            "one CONNECT per pooled connection:\n{log}"
        );
        assert_eq!(
            nginx.access_log(200).await.len(),
            200,
            "nginx served every request once"
        );
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_through_a_socks5_proxy_reuses_its_connections() {
    if skip("microsocks", "https_through_a_socks5_proxy") {
        return;
    }
    let run = async {
        let nginx = Nginx::start(NginxOptions {
            keepalive_requests: 1000,
            http2: true,
        });
        let proxy = microsocks().await;
        let proxy_uri: http::Uri = format!("socks5://127.0.0.1:{}", proxy.port)
            .parse()
            .unwrap();
        // Remote DNS (socks5h): the proxy resolves `localhost`. The connector beneath dials
        // the proxy's `socks5://` URI, so it must not insist on `http://`.
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let socks = SocksV5::new(proxy_uri, http).local_dns(false);
        let https = HttpsConnector::with_roots(nginx.roots()).wrap(socks);
        let (stats, opened) = counted();
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .stats(stats)
            .build(https);
        load(&client, nginx.url("/"), 200, 8).await;
        let opened = opened.load(Ordering::SeqCst);
        // HTTP/2 over the SOCKS tunnel (ALPN h2): one connection, and nginx saw only the
        // proxy's connections, as many as the pool opened.
        let accepts = nginx.accepts().await;
        eprintln!("socks5: {opened} connections opened, nginx accepted {accepts}");
        assert_eq!(opened, 1, "a cold burst over ALPN h2 makes one connection");
        assert_eq!(accepts, opened);
        assert_eq!(
            nginx
                .access_log(200)
                .await
                .iter()
                .filter(|l| l.uri == "/")
                .count(),
            200
        );
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("bounded");
}

/// Proxy credentials go to the proxy (`Proxy-Authorization` on the CONNECT) and appear in
/// nothing the client reports: errors, the event history, the in-flight report, snapshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_credentials_reach_the_proxy_and_nothing_else() {
    if skip(
        "tinyproxy",
        "proxy_credentials_reach_the_proxy_and_nothing_else",
    ) {
        return;
    }
    const SECRET: &str = "s3cr3t-pw";
    let run = async {
        let nginx = Nginx::start(NginxOptions {
            keepalive_requests: 1000,
            http2: false,
        });
        let proxy = tinyproxy_with(&format!("BasicAuth alice {SECRET}")).await;
        let proxy_uri: http::Uri = format!("http://127.0.0.1:{}", proxy.port).parse().unwrap();
        let client_with = |auth: Option<&str>| {
            let mut tunnel = Tunnel::new(proxy_uri.clone(), HttpConnector::new());
            if let Some(auth) = auth {
                use base64_free::encode;
                let value = format!("Basic {}", encode(auth.as_bytes()));
                tunnel = tunnel.with_auth(value.parse().unwrap());
            }
            let https = HttpsConnector::with_roots(nginx.roots()).wrap(tunnel);
            let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
                .event_history(256)
                .build(https);
            client
        };
        // With the credentials: through.
        let good = client_with(Some(&format!("alice:{SECRET}")));
        load(&good, nginx.url("/"), 20, 2).await;
        // With wrong ones: the proxy refuses (407), the request fails in the connect phase.
        let bad = client_with(Some(&format!("alice:not-{SECRET}")));
        let err = bad
            .get(nginx.url("/"))
            .await
            .expect_err("the proxy refuses");
        assert!(err.is_connect(), "{err:?}");
        let mut seen = vec![format!("{err}"), format!("{err:?}")];
        let mut src = std::error::Error::source(&err);
        while let Some(e) = src {
            seen.push(format!("{e} {e:?}"));
            src = e.source();
        }
        for c in [&good, &bad] {
            seen.push(format!("{}", c.pool_snapshot()));
            seen.push(format!("{}", c.in_flight()));
            seen.extend(c.recent_events().iter().map(|e| format!("{e:?}")));
        }
        let header = base64_free::encode(format!("alice:{SECRET}").as_bytes());
        for s in &seen {
            assert!(!s.contains(SECRET), "the proxy password leaked: {s}");
            assert!(!s.contains(&header), "the proxy credentials leaked: {s}");
        }
        eprintln!("refused by the proxy: {}", seen[0]);
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("bounded");
}

/// Base64 for a `Basic` header, without a dependency for one test.
mod base64_free {
    pub fn encode(input: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

/// `http://` through a forward proxy: absolute-form requests on connections to the proxy,
/// with the proxy URI's credentials as `Proxy-Authorization`; a wrong password gets the
/// proxy's refusal, and the password appears in nothing the client reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_through_a_forward_proxy_with_credentials() {
    if skip("tinyproxy", "http_through_a_forward_proxy_with_credentials") {
        return;
    }
    const SECRET: &str = "f0rward-pw";
    let run = async {
        let origin = support::server::TestServer::start().await;
        let proxy = tinyproxy_with(&format!("BasicAuth bob {SECRET}")).await;
        let client_for = |password: &str| {
            let proxy_uri: http::Uri = format!("http://bob:{password}@127.0.0.1:{}", proxy.port)
                .parse()
                .unwrap();
            let (stats, opened) = counted();
            let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
                .stats(stats)
                .event_history(256)
                .build(poolscope::connect::ForwardProxy::new(
                    proxy_uri,
                    HttpConnector::new(),
                ));
            (client, opened)
        };
        let (good, opened) = client_for(SECRET);
        for _ in 0..20 {
            let resp = good.get(origin.url("/")).await.unwrap();
            assert_eq!(resp.status(), 200);
            support::body(resp).await;
        }
        assert_eq!(
            origin.counters.requests("GET"),
            20,
            "the origin saw every request"
        );
        let log = std::fs::read_to_string(proxy.dir.join("tinyproxy.log")).unwrap_or_default();
        // tinyproxy closes a client connection after each forwarded request (it answers with
        // `Connection: close`), so every request has its own connection: as many as the
        // proxy accepted (less the one readiness probe of `listening`).
        let accepted = log.matches("Connect (file descriptor").count() as u64 - 1;
        assert_eq!(
            opened.load(Ordering::SeqCst),
            accepted,
            "connections to the proxy:\n{log}"
        );
        let absolute = log
            .matches(&format!(
                "GET http://127.0.0.1:{}/ HTTP/1.1",
                origin.addr.port()
            ))
            .count();
        assert_eq!(absolute, 20, "absolute-form requests at the proxy:\n{log}");
        // A wrong password: the proxy refuses itself (tinyproxy 1.11 answers 401, where
        // RFC 9110 says 407).
        let (bad, _) = client_for("wrong");
        let resp = bad.get(origin.url("/")).await.unwrap();
        assert!(
            matches!(resp.status().as_u16(), 401 | 407),
            "{}",
            resp.status()
        );
        support::body(resp).await;
        assert_eq!(
            origin.counters.requests("GET"),
            20,
            "nothing more reached the origin"
        );
        let header = base64_free::encode(format!("bob:{SECRET}").as_bytes());
        let mut seen = Vec::new();
        for c in [&good, &bad] {
            seen.push(format!("{}", c.pool_snapshot()));
            seen.push(format!("{}", c.in_flight()));
            seen.extend(c.recent_events().iter().map(|e| format!("{e:?}")));
        }
        for s in &seen {
            assert!(
                !s.contains(SECRET) && !s.contains(&header),
                "credentials leaked: {s}"
            );
        }
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("bounded");
}
