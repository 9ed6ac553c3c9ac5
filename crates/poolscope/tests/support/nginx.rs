//! A real nginx (Debian's nginx-light: `http_v2` and `stub_status`) for end-to-end tests:
//! TLS with an rcgen CA and a `localhost` leaf it signed, one server on a free loopback
//! port, an access log with one line per request, and `/nginx_status` for nginx's own count
//! of accepted connections.
//!
//! - `/nginx_status` → stub_status
//! - anything else → 200 "ok\n" (for a POST too: nginx discards the body)
//!
//! nginx runs in the foreground (`daemon off; master_process off;`) as a child process that
//! is killed and reaped on drop; its files live in a fresh temp dir that is removed then.
//! Set `POOLSCOPE_NGINX_DEBUG=1` to log at nginx's `debug` level (the binary is built
//! `--with-debug`: it shows every HTTP/2 frame, e.g. `http2 send GOAWAY frame: last sid N`)
//! and to keep the temp dir (its path is printed).

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioExecutor;
use poolscope::connect::HttpsConnector;
use poolscope::Client;

/// How nginx is configured.
#[derive(Debug, Clone, Copy)]
pub struct NginxOptions {
    /// `keepalive_requests`: requests (HTTP/2: streams) per connection before nginx closes it
    /// (HTTP/2: sends GOAWAY).
    pub keepalive_requests: u32,
    /// `listen … ssl http2` rather than `listen … ssl`.
    pub http2: bool,
    /// `listen … ssl`; without it nginx speaks plain HTTP/1.1 (`url` then says `http`).
    pub tls: bool,
    /// `keepalive_timeout`, in milliseconds (nginx's default is 75 s).
    pub keepalive_timeout_ms: Option<u32>,
    /// `http2_max_concurrent_streams` (nginx's default is 128).
    pub max_concurrent_streams: Option<u32>,
}

impl Default for NginxOptions {
    fn default() -> NginxOptions {
        NginxOptions {
            keepalive_requests: 1000,
            http2: false,
            tls: true,
            keepalive_timeout_ms: None,
            max_concurrent_streams: None,
        }
    }
}

/// One access-log line: `$request_method $request_uri $status $server_protocol $connection
/// $connection_requests`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLine {
    pub method: String,
    pub uri: String,
    pub status: u16,
    /// `HTTP/2.0`, `HTTP/1.1`, …
    pub protocol: String,
    /// nginx's serial number of the TCP connection.
    pub connection: u64,
    /// `$connection_requests` (what it counts for HTTP/2 is nginx's business).
    pub connection_requests: u64,
}

/// A running nginx; killed, reaped and its temp dir removed on drop.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
    tls: bool,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    /// Connections of our own that nginx accepted: the readiness probe of `start`, plus
    /// those opened by the status clients of `accepts()`, all calls together. The mutex also
    /// serializes the calls (see `accepts`).
    own_conns: tokio::sync::Mutex<u64>,
    /// `/nginx_status` requests made by `accepts` (each is a line of the access log).
    status_fetches: AtomicUsize,
    keep_dir: bool,
}

/// The nginx binary: `/usr/sbin/nginx`, else `nginx` on `PATH`.
fn binary() -> Option<PathBuf> {
    let sbin = PathBuf::from("/usr/sbin/nginx");
    if sbin.is_file() {
        return Some(sbin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

/// Whether nginx is installed (tests skip without it).
pub fn available() -> bool {
    binary().is_some()
}

/// A CA (DER, and PEM for other clients: Go's) and a leaf for `localhost` / 127.0.0.1 it
/// signed (PEM cert, PEM key). rustls rejects a CA certificate used as the server's own, hence
/// two.
pub fn certificates_with_ca_pem() -> (
    rustls::pki_types::CertificateDer<'static>,
    String,
    String,
    String,
) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "poolscope test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("self-sign the CA");

    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("leaf params");
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .expect("sign the leaf");
    (
        ca_cert.der().clone(),
        ca_cert.pem(),
        leaf_cert.pem(),
        leaf_key.serialize_pem(),
    )
}

/// A fresh, unique directory under the system temp dir.
pub fn fresh_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    loop {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("poolscope-nginx-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("create {}: {e}", dir.display()),
        }
    }
}

pub fn free_port() -> u16 {
    // Bound and dropped: free now, and very likely still free when nginx binds it (`start`
    // retries if not).
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

fn config(dir: &Path, port: u16, opts: NginxOptions, debug: bool) -> String {
    let d = dir.display();
    let http2 = if opts.http2 { " http2" } else { "" };
    let ssl = if opts.tls { " ssl" } else { "" };
    let level = if debug { " debug" } else { "" };
    let keepalive = opts.keepalive_requests;
    let mut extra = String::new();
    if let Some(ms) = opts.keepalive_timeout_ms {
        extra.push_str(&format!("    keepalive_timeout {ms}ms;\n"));
    }
    if let Some(n) = opts.max_concurrent_streams {
        extra.push_str(&format!("    http2_max_concurrent_streams {n};\n"));
    }
    let certs = if opts.tls {
        format!("ssl_certificate {d}/leaf.pem;\n        ssl_certificate_key {d}/leaf.key;")
    } else {
        String::new()
    };
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log{level};

events {{
    worker_connections 1024;
}}

http {{
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    log_format poolscope '$request_method $request_uri $status $server_protocol $connection $connection_requests';
    access_log {d}/access.log poolscope;

    keepalive_requests {keepalive};
{extra}
    server {{
        listen 127.0.0.1:{port}{ssl}{http2};
        server_name localhost;
        {certs}

        location = /nginx_status {{
            stub_status;
        }}
        location / {{
            return 200 "ok\n";
        }}
    }}
}}
"#
    )
}

/// Waits (at most `within`) until the server `child` (`what`) accepts connections on
/// 127.0.0.1:`port`; why not, if it exited first or did not in time.
///
/// The one probe that connects is accepted (and counted) by the server; the refused ones
/// before it are not. A probe can also connect to itself (TCP's simultaneous open, when the
/// kernel picks the port it dials as its own local port while nothing listens there): that
/// is not the server, and it holds the port the server is about to bind (nginx then retries
/// its bind 500 ms later).
pub fn wait_listening(
    child: &mut Child,
    port: u16,
    within: Duration,
    what: &str,
) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Err(format!("{what} exited: {status}"));
        }
        if let Ok(probe) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            // The port answering is not enough: another test's server may have been given the
            // same free port a moment earlier and answer for it while this one fails to bind
            // (and exits, or retries and exits). Ready means `child` holds the listener.
            if probe.local_addr().ok() != probe.peer_addr().ok() && holds_listener(child, port) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{what} did not accept connections within {within:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `child` holds the socket listening on 127.0.0.1:`port` (Linux: the
/// listener's inode in `/proc/net/tcp` among the process's descriptors). Elsewhere, true.
fn holds_listener(child: &Child, port: u16) -> bool {
    if !cfg!(target_os = "linux") {
        return true;
    }
    let want = format!("0100007F:{port:04X}");
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return true;
    };
    let Some(inode) = table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // State 0A: LISTEN.
        (f.get(1) == Some(&want.as_str()) && f.get(3) == Some(&"0A")).then(|| f[9].to_owned())
    }) else {
        return false;
    };
    let target = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .map(|fds| {
            fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .any(|l| l.to_string_lossy() == target)
        })
        .unwrap_or(false)
}

pub fn read_lossy(path: &Path) -> String {
    let mut s = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_end(&mut s);
    }
    String::from_utf8_lossy(&s).into_owned()
}

impl Nginx {
    /// Starts nginx and waits (at most ~5 s) until its port accepts connections. Panics with
    /// nginx's error log if it does not start.
    pub fn start(opts: NginxOptions) -> Nginx {
        let bin = binary().expect("nginx not found: check support::nginx::available() first");
        let debug = std::env::var_os("POOLSCOPE_NGINX_DEBUG").is_some_and(|v| v != "0");
        let dir = fresh_dir();
        let (ca_der, ca_pem, leaf_pem, leaf_key) = certificates_with_ca_pem();
        std::fs::write(dir.join("ca.pem"), ca_pem).expect("write ca.pem");
        std::fs::write(dir.join("leaf.pem"), leaf_pem).expect("write leaf.pem");
        std::fs::write(dir.join("leaf.key"), leaf_key).expect("write leaf.key");

        let mut last_error = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, config(&dir, port, opts, debug)).expect("write nginx.conf");
            // A failed attempt's log would be mistaken for this one's.
            let _ = std::fs::remove_file(dir.join("error.log"));
            let stderr = std::fs::File::create(dir.join("stderr.log")).expect("stderr.log");
            let mut child = Command::new(&bin)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));

            let outcome = wait_listening(&mut child, port, Duration::from_secs(5), "nginx");
            let log = format!(
                "{}{}",
                read_lossy(&dir.join("error.log")),
                read_lossy(&dir.join("stderr.log"))
            );
            match outcome {
                Ok(()) => {
                    if debug {
                        eprintln!("nginx on port {port}, files in {}", dir.display());
                    }
                    return Nginx {
                        child,
                        dir,
                        port,
                        tls: opts.tls,
                        ca_der,
                        // The readiness probe.
                        own_conns: tokio::sync::Mutex::new(1),
                        status_fetches: Default::default(),
                        keep_dir: debug,
                    };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = format!("{why}; error log:\n{log}");
                    // Someone took the port between our probe and nginx's bind: try another.
                    if log.contains("Address already in use") {
                        continue;
                    }
                    break;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("nginx did not start: {last_error}");
    }

    /// The port nginx listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://localhost:PORT{path}` (`http://127.0.0.1:PORT{path}` without TLS).
    pub fn url(&self, path: &str) -> http::Uri {
        if !self.tls {
            return format!("http://127.0.0.1:{}{path}", self.port)
                .parse()
                .expect("valid URI");
        }
        format!("https://localhost:{}{path}", self.port)
            .parse()
            .expect("valid URI")
    }

    /// The CA that signed nginx's certificate, as a PEM file (for other clients: Go's).
    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Roots containing just the CA that signed nginx's certificate.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("add CA root");
        roots
    }

    /// The connections nginx has accepted, not counting the harness's own.
    ///
    /// stub_status's `accepts` counts every TCP connection accepted so far. The harness's own
    /// among them are exactly: the one readiness probe of `start` that connected (it is queued
    /// before anything else, so nginx has accepted it by the time any request is handled),
    /// and one per call of this function, whose status request needs a connection accepted
    /// before the request is handled. Each call fetches `/nginx_status` with a fresh poolscope
    /// client, so it opens exactly one new connection; that is asserted with an
    /// `on_conn_opened` hook (a client that had to dial twice would make the count off by
    /// one). So `accepts()` = reported − 1 − (status fetches so far, this one included).
    /// Calls are serialized by a mutex, so a concurrent call's connection cannot be counted by
    /// nginx but not yet by us.
    ///
    /// A connection the client under test is still dialing is counted by nginx as soon as it
    /// is accepted, before the client's `on_conn_opened`: compare when that client has
    /// nothing connecting.
    pub async fn accepts(&self) -> u64 {
        let mut own_conns = self.own_conns.lock().await;
        let (stats, opened) = super::counting_opened();
        let client: Client<HttpsConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .telemetry()
            .stats(stats)
            .build(HttpsConnector::with_roots(self.roots()));
        let resp = client
            .get(self.url("/nginx_status"))
            .await
            .unwrap_or_else(|e| panic!("GET /nginx_status: {e:#?}"));
        assert_eq!(resp.status(), 200, "GET /nginx_status");
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("read /nginx_status")
            .to_bytes();
        drop(client);
        let body = String::from_utf8_lossy(&body);
        let this_call = opened.load(Ordering::SeqCst);
        assert_eq!(
            this_call, 1,
            "the status client opened {this_call} connections"
        );
        *own_conns += this_call;
        self.status_fetches.fetch_add(1, Ordering::SeqCst);
        let reported = parse_accepts(&body)
            .unwrap_or_else(|| panic!("unexpected stub_status output:\n{body}"));
        reported
            .checked_sub(*own_conns)
            .unwrap_or_else(|| panic!("accepts {reported} < the harness's own {own_conns}"))
    }

    /// The access log, one entry per request nginx handled, once it holds at least
    /// `completed` lines (the requests the caller saw answered) besides the harness's own
    /// status fetches, and then stopped growing for 100 ms (at most 5 s in all).
    ///
    /// nginx writes a request's line (unbuffered: no `buffer=` is configured) when the
    /// request ends, which is after it sent the last of the answer: a client can have the
    /// whole answer before the line is written, so reading the file at once can miss it.
    pub async fn access_log(&self, completed: usize) -> Vec<AccessLine> {
        let want = completed + self.status_fetches.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        let path = self.dir.join("access.log");
        let mut text = read_lossy(&path);
        let mut steady_since = Instant::now();
        while Instant::now() < deadline {
            let enough = text.lines().count() >= want;
            if enough && steady_since.elapsed() >= Duration::from_millis(100) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = read_lossy(&path);
            if now.len() != text.len() {
                steady_since = Instant::now();
                text = now;
            }
        }
        text.lines()
            .map(|l| parse_access_line(l).unwrap_or_else(|| panic!("bad access-log line: {l:?}")))
            .collect()
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        read_lossy(&self.dir.join("error.log"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// stub_status:
///
/// ```text
/// Active connections: 1
/// server accepts handled requests
///  7 7 12
/// Reading: 0 Writing: 1 Waiting: 0
/// ```
fn parse_accepts(body: &str) -> Option<u64> {
    let mut lines = body.lines();
    lines.find(|l| l.trim() == "server accepts handled requests")?;
    lines.next()?.split_whitespace().next()?.parse().ok()
}

fn parse_access_line(line: &str) -> Option<AccessLine> {
    let mut f = line.split(' ');
    let line = AccessLine {
        method: f.next()?.to_owned(),
        uri: f.next()?.to_owned(),
        status: f.next()?.parse().ok()?,
        protocol: f.next()?.to_owned(),
        connection: f.next()?.parse().ok()?,
        connection_requests: f.next()?.parse().ok()?,
    };
    f.next().is_none().then_some(line)
}
