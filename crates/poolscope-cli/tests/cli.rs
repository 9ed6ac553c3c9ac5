//! The `poolscope` command end to end: `trace` and `load --json` against an in-process
//! serve-and-track, and bad input (one line naming the phase, exit 1; usage errors exit 2).

use std::process::{Command, Output};
use std::time::Duration;

use serve_and_track::{Config, LogSink, Server};

/// The proxy variables `poolscope` reads (as curl), cleared for every run unless a test sets
/// them: the tests' own requests go to loopback directly.
const PROXY_VARS: [&str; 8] = [
    "ALL_PROXY",
    "all_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
];

fn poolscope(args: &[&str]) -> Output {
    poolscope_with_env(args, &[])
}

fn poolscope_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_poolscope"));
    cmd.args(args).env("NO_COLOR", "1");
    for v in PROXY_VARS {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run poolscope")
}

/// Whether a proxy test must skip: `bin` is missing (CI installs it, so there it fails).
fn skip_without(bin: &str, name: &str) -> bool {
    faultserver::proxies::skip_unless(faultserver::proxies::installed(bin), bin, name)
}

/// As curl: `HTTP_PROXY` from the environment is used, `--noproxy` skips it for a host, and
/// `--proxy` takes precedence over it.
#[test]
fn trace_honours_the_environments_proxy_noproxy_and_proxy() {
    if skip_without("tinyproxy", "trace_honours_the_environments_proxy") {
        return;
    }
    let addr = server();
    let proxy = faultserver::proxies::tinyproxy("");
    let other = faultserver::proxies::tinyproxy("");
    let url = format!("http://{addr}/track");
    let env_proxy = format!("http://127.0.0.1:{}", proxy.port);
    let through = |p: &faultserver::proxies::ProxyProcess| {
        p.log()
            .matches(&format!("GET http://{addr}/track HTTP/1.1"))
            .count()
    };
    let out = poolscope_with_env(&["trace", &url], &[("HTTP_PROXY", &env_proxy)]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        through(&proxy),
        1,
        "through the environment's proxy:\n{}",
        proxy.log()
    );
    let out = poolscope_with_env(
        &["trace", "--noproxy", "127.0.0.1", &url],
        &[("HTTP_PROXY", &env_proxy)],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(through(&proxy), 1, "--noproxy went direct");
    let out = poolscope_with_env(
        &[
            "trace",
            "--proxy",
            &format!("http://127.0.0.1:{}", other.port),
            &url,
        ],
        &[("HTTP_PROXY", &env_proxy)],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        (through(&proxy), through(&other)),
        (1, 1),
        "--proxy wins over the environment"
    );
}

/// Through a SOCKS5 proxy the waterfall has the proxy exchange as a phase of its own.
#[test]
fn trace_through_socks5_shows_the_proxy_phase() {
    if skip_without("microsocks", "trace_through_socks5_shows_the_proxy_phase") {
        return;
    }
    let addr = server();
    let proxy = faultserver::proxies::microsocks();
    let out = poolscope(&[
        "trace",
        "--proxy",
        &format!("socks5h://127.0.0.1:{}", proxy.port),
        &format!("http://{addr}/track"),
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for phase in ["TCP Connection", "Proxy Tunnel", "tunnel:"] {
        assert!(text.contains(phase), "{phase} missing:\n{text}");
    }
    let json = poolscope(&[
        "trace",
        "--json",
        "--proxy",
        &format!("socks5h://127.0.0.1:{}", proxy.port),
        &format!("http://{addr}/track"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert!(v["timings"]["proxy_seconds"].as_f64().is_some(), "{v}");
}

/// serve-and-track on a loopback port, in a background runtime thread.
fn server() -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = Server::bind(
                Config {
                    addr: "127.0.0.1:0".parse().unwrap(),
                    ..Config::default()
                },
                LogSink::none(),
            )
            .await
            .unwrap();
            tx.send(server.local_addr().unwrap()).unwrap();
            server.run(std::future::pending()).await.unwrap();
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

fn stderr_line(out: &Output) -> String {
    let s = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(s.lines().count(), 1, "exactly one line: {s:?}");
    assert!(!s.contains("panicked") && !s.contains("backtrace"), "{s}");
    s
}

#[test]
fn trace_shows_the_waterfall_and_connection_facts() {
    let addr = server();
    let out = poolscope(&["trace", &format!("http://{addr}/track")]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("Connected to {addr} (HTTP/1.1, new connection")),
        "{text}"
    );
    assert!(text.contains("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("content-type: image/gif"), "{text}");
    for phase in [
        "DNS Lookup",
        "TCP Connection",
        "Server Processing",
        "Content Transfer",
        "namelookup:",
        "connect:",
        "starttransfer:",
        "total:",
    ] {
        assert!(text.contains(phase), "{phase} missing:\n{text}");
    }
    assert!(!text.contains("TLS Handshake"), "no TLS column for http://");
    assert!(!text.contains('\x1b'), "no colour when not a terminal");
}

#[test]
fn trace_json_has_timings_and_connection_facts() {
    let addr = server();
    let out = poolscope(&["trace", "--json", &format!("http://{addr}/track")]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], 200);
    assert_eq!(v["body_bytes"], 42);
    assert_eq!(v["connection"]["remote_addr"], addr.to_string());
    assert_eq!(v["connection"]["reused"], false);
    assert!(v["timings"]["total_seconds"].as_f64().unwrap() > 0.0);
    assert!(v["timings"]["connect_seconds"].as_f64().unwrap() > 0.0);
    assert!(v["timings"]["tls_seconds"].is_null());
}

#[test]
fn trace_writes_the_body_with_o() {
    let addr = server();
    let path = std::env::temp_dir().join(format!("poolscope-cli-test-{}.gif", std::process::id()));
    let out = poolscope(&[
        "trace",
        "-o",
        path.to_str().unwrap(),
        &format!("http://{addr}/track"),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(&path).unwrap(), serve_and_track::TRACKING_GIF);
    let _ = std::fs::remove_file(path);
}

#[test]
fn load_json_reports_counts_and_percentiles() {
    let addr = server();
    let out = poolscope(&[
        "load",
        "--json",
        "-n",
        "200",
        "-c",
        "16",
        "--max-conns-per-host",
        "4",
        &format!("http://{addr}/track"),
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["requests_ok"], 200);
    assert_eq!(v["requests_failed"], 0);
    let opened = v["connections_opened"].as_u64().unwrap();
    assert!((1..=4).contains(&opened), "opened {opened}");
    assert_eq!(
        v["connections_reused"].as_u64().unwrap() + opened,
        200,
        "every request but the first on each connection reused one"
    );
    assert!(v["limit_hits"].as_u64().unwrap() >= 1);
    for k in ["p50", "p90", "p99", "max"] {
        assert!(v["latency_seconds"][k].as_f64().unwrap() > 0.0, "{k}");
    }
    assert!(v["elapsed_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(v["status_counts"]["200"], 200);
    assert!(v["first_limit_hit"]["snapshot"]
        .as_str()
        .unwrap()
        .contains("max_conns_per_host=4"));
    // The same snapshot with its connection rows (the ones established by then, with the
    // kernel's TCP state: load reads TCP_INFO).
    let hosts = v["first_limit_hit"]["pool"]["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "{v}");
    let conns = hosts[0]["connections"].as_array().unwrap();
    assert!(conns.len() <= 4, "{v}");
    for c in conns {
        assert_eq!(c["tcp"]["state"], "ESTABLISHED", "{c}");
        assert!(c["peer_addr"]
            .as_str()
            .unwrap()
            .ends_with(&addr.port().to_string()));
    }
}

/// `load` counts each failure under its whole cause chain, in `--json` and in the text
/// report: the phase, the target and why (here the kernel's refusal), not only the phase.
#[test]
fn load_reports_each_error_with_its_cause_chain() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let out = poolscope(&["load", "--json", "-n", "3", "-c", "1", &url]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["requests_failed"], 3, "{v}");
    let errors = v["errors"].as_object().unwrap();
    assert_eq!(errors.len(), 1, "{v}");
    let (kind, n) = errors.iter().next().unwrap();
    assert_eq!(n, 3);
    assert!(
        kind.starts_with(&format!("connect error (127.0.0.1:{port})"))
            && kind.contains("Connection refused"),
        "{kind}"
    );
    let out = poolscope(&["load", "-n", "2", "-c", "1", &url]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.contains("errors")
            && l.contains("Connection refused")
            && l.ends_with(": 2")),
        "{text}"
    );
}

#[test]
fn a_refused_port_is_one_line_naming_the_connect_phase() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let out = poolscope(&["trace", &format!("http://{addr}/")]);
    assert_eq!(out.status.code(), Some(1));
    let line = stderr_line(&out);
    assert!(
        line.starts_with(&format!("poolscope: connect error ({addr})")),
        "{line}"
    );
}

#[test]
fn a_tls_failure_names_the_tls_phase() {
    // serve-and-track speaks plain HTTP: a TLS client hello gets no valid answer.
    let addr = server();
    let out = poolscope(&["trace", &format!("https://{addr}/")]);
    assert_eq!(out.status.code(), Some(1));
    let line = stderr_line(&out);
    assert!(line.starts_with("poolscope: tls error"), "{line}");
}

#[test]
fn resolve_pins_a_name_to_a_loopback_address() {
    let addr = server();
    let out = poolscope(&[
        "trace",
        "--json",
        "--resolve",
        &format!("tracker.test:{}:127.0.0.1", addr.port()),
        &format!("http://tracker.test:{}/track", addr.port()),
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], 200);
    assert!(
        v["timings"]["dns_seconds"].is_null(),
        "no DNS for a pinned name"
    );
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for (args, needle) in [
        (vec!["trace", "not a url"], "invalid URL"),
        (vec!["trace", "ftp://127.0.0.1/x"], "unsupported scheme"),
        (
            vec!["trace", "-H", "no-colon", "http://127.0.0.1:1/"],
            "invalid header",
        ),
        (
            vec!["trace", "--resolve", "x", "http://127.0.0.1:1/"],
            "invalid --resolve",
        ),
        (
            vec![
                "trace",
                "--proxy",
                "ftp://u:pw@127.0.0.1:1",
                "http://127.0.0.1:1/",
            ],
            "invalid proxy \"ftp://***@127.0.0.1:1\"",
        ),
        (
            vec![
                "trace",
                "--proxy",
                "https://127.0.0.1:1",
                "http://127.0.0.1:1/",
            ],
            "not supported",
        ),
    ] {
        let out = poolscope(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let line = stderr_line(&out);
        assert!(line.contains(needle), "{args:?}: {line}");
    }
    // Credentials in a rejected URL are not echoed back.
    for url in [
        "ftp://admin:s3cret@127.0.0.1/x",
        "admin:s3cret@127.0.0.1/x",
        "http://admin:s3cret@/x",
        "ftp://admin:s3/cret@127.0.0.1/x",
    ] {
        let out = poolscope(&["trace", url]);
        assert_eq!(out.status.code(), Some(2), "{url}: {out:?}");
        let line = stderr_line(&out);
        assert!(
            line.contains("invalid URL") || line.contains("unsupported scheme"),
            "{line}"
        );
        assert!(
            !line.contains("s3cret") && !line.contains("admin"),
            "{line}"
        );
    }
    let out = poolscope(&["trace", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Runs `poolscope args`, sends it SIGINT (Ctrl-C) after `after`, and returns its output and
/// how long it took to exit after the signal.
#[cfg(unix)]
fn interrupted(args: &[&str], after: Duration) -> (Output, Duration) {
    let child = Command::new(env!("CARGO_BIN_EXE_poolscope"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let sent = std::time::Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    (out, sent.elapsed())
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_a_load_early_and_still_reports() {
    let addr = server();
    let url = format!("http://{addr}/track");
    let (out, _) = interrupted(
        &["load", "--json", "--duration", "60s", "-c", "4", &url],
        Duration::from_millis(1500),
    );
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["interrupted"], true);
    assert!(v["requests_ok"].as_u64().unwrap() > 0);
    assert!(
        v["elapsed_seconds"].as_f64().unwrap() < 30.0,
        "stopped early"
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_a_load_whose_requests_never_get_an_answer() {
    // A loopback listener that accepts and never answers: every request hangs.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for conn in listener.incoming().take(4) {
            conns.push(conn);
        }
        std::thread::sleep(Duration::from_secs(20));
    });
    let url = format!("http://{addr}/");
    let (out, took) = interrupted(
        &["load", "--json", "-n", "100", "-c", "4", &url],
        Duration::from_millis(800),
    );
    assert!(
        took < Duration::from_secs(10),
        "stopped at once, not when the server gave up"
    );
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["interrupted"], true);
    assert_eq!(v["requests_ok"], 0);
    drop(held);
}

/// `GET path` on `addr` with a plain socket: the response's body.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

#[test]
fn load_serves_its_clients_metrics_while_it_runs() {
    use std::io::BufRead;
    let addr = server();
    let mut child = Command::new(env!("CARGO_BIN_EXE_poolscope"))
        .args([
            "load",
            "--json",
            "--duration",
            "3s",
            "-c",
            "2",
            "--metrics-addr",
            "127.0.0.1:0",
            &format!("http://{addr}/track"),
        ])
        .env("NO_COLOR", "1")
        .envs(PROXY_VARS.iter().map(|v| (*v, "")))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let metrics = line
        .trim()
        .strip_prefix("metrics at http://")
        .and_then(|l| l.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_owned();
    // While the run goes on, requests are counted by method and status, in seconds.
    std::thread::sleep(Duration::from_millis(1500));
    let text = http_get(&metrics, "/metrics");
    let count: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("http_client_request_duration_seconds_count{")
                && l.contains("http_request_method=\"GET\"")
                && l.contains("http_response_status_code=\"200\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(count > 0.0, "{text}");
    // metrics-exporter-prometheus 0.17 writes the HELP line under the name without the unit.
    assert!(
        text.contains("# HELP http_client_request_duration Duration of HTTP client requests"),
        "{text}"
    );
    assert!(text.contains("http_client_open_connections{"), "{text}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The scrape saw part of the run: no more than all of it.
    assert!(v["requests_ok"].as_f64().unwrap() >= count);
}

// ----- the HTML report ------------------------------------------------------------------

/// The number after `label` in `text` (`"limit hits     12"` → 12).
fn number_after(text: &str, label: &str) -> u64 {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("{label:?} not in:\n{text}"));
    text[at + label.len()..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {label:?} in:\n{text}"))
}

/// The value of `data-total="name"` in the HTML.
fn html_total(html: &str, name: &str) -> u64 {
    number_after(html, &format!("data-total=\"{name}\">"))
}

/// A PNG's pixels as RGBA rows: enough of the format for Chromium's screenshots (8-bit RGB
/// or RGBA, not interlaced).
fn png_pixels(png: &[u8]) -> (usize, usize, Vec<[u8; 4]>) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let (mut w, mut h, mut channels) = (0, 0, 0);
    let mut idat = Vec::new();
    let mut i = 8;
    while i + 8 <= png.len() {
        let len = u32::from_be_bytes(png[i..i + 4].try_into().unwrap()) as usize;
        let kind = &png[i + 4..i + 8];
        let data = &png[i + 8..i + 8 + len];
        match kind {
            b"IHDR" => {
                w = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                h = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                assert_eq!(data[8], 8, "8-bit");
                channels = match data[9] {
                    2 => 3,
                    6 => 4,
                    t => panic!("color type {t}"),
                };
                assert_eq!(data[12], 0, "not interlaced");
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        i += 12 + len;
    }
    let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&idat).expect("inflate");
    let stride = w * channels;
    let mut prev = vec![0u8; stride];
    let mut pixels = Vec::with_capacity(w * h);
    for row in raw.chunks(stride + 1).take(h) {
        let (filter, line) = (row[0], &row[1..]);
        let mut cur = vec![0u8; stride];
        for x in 0..stride {
            let a = if x >= channels { cur[x - channels] } else { 0 };
            let b = prev[x];
            let c = if x >= channels { prev[x - channels] } else { 0 };
            let pred = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                4 => {
                    let p = i16::from(a) + i16::from(b) - i16::from(c);
                    let (pa, pb, pc) = (
                        (p - i16::from(a)).abs(),
                        (p - i16::from(b)).abs(),
                        (p - i16::from(c)).abs(),
                    );
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("filter {f}"),
            };
            cur[x] = line[x].wrapping_add(pred);
        }
        for px in cur.chunks(channels) {
            pixels.push([px[0], px[1], px[2], if channels == 4 { px[3] } else { 255 }]);
        }
        prev = cur;
    }
    (w, h, pixels)
}

/// Chromium, if installed (`.ci/run` installs Debian's `chromium`).
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Renders `html` in headless Chromium: a screenshot at `png`, and the page's DOM after its
/// script ran. Panics if Chromium logged a console message (an error in the page).
fn render_in_chromium(browser: &str, html: &std::path::Path, png: &std::path::Path) -> String {
    let url = format!("file://{}", html.display());
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--window-size=1100,1500",
    ];
    let shot = Command::new(browser)
        .args(common)
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(shot.status.success(), "{shot:?}");
    let dom = Command::new(browser)
        .args(common)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(dom.status.success(), "{dom:?}");
    for out in [&shot, &dom] {
        let log = String::from_utf8_lossy(&out.stderr);
        let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
        assert!(console.is_empty(), "the page logged: {console:#?}");
    }
    String::from_utf8_lossy(&dom.stdout).into_owned()
}

/// The screenshot is a page with content: not one colour, and a good part not white.
fn assert_not_blank(png: &std::path::Path) {
    let (w, h, pixels) = png_pixels(&std::fs::read(png).unwrap());
    assert!(w >= 1000 && h >= 1000, "{w}x{h}");
    let inked = pixels
        .iter()
        .filter(|p| p[0] < 200 || p[1] < 200 || p[2] < 200)
        .count();
    let colours: std::collections::HashSet<[u8; 4]> = pixels.iter().copied().collect();
    assert!(
        inked * 100 > pixels.len() * 3,
        "{inked} of {} pixels inked",
        pixels.len()
    );
    assert!(colours.len() > 20, "{} colours", colours.len());
}

#[test]
fn load_report_agrees_with_the_text_and_renders_in_chromium() {
    let addr = server();
    let dir = std::env::temp_dir().join(format!("poolscope-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (html_path, json_path) = (dir.join("run.html"), dir.join("run.json"));
    let out = poolscope(&[
        "load",
        "-n",
        "2000",
        "-c",
        "16",
        "--max-conns-per-host",
        "4",
        "--report",
        html_path.to_str().unwrap(),
        "--report-json",
        json_path.to_str().unwrap(),
        &format!("http://{addr}/track"),
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let html = std::fs::read_to_string(&html_path).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let totals = &json["totals"];

    // Every total, three ways.
    let ok = totals["requests_ok"].as_u64().unwrap();
    assert_eq!(ok, 2000);
    assert!(text.contains("2000 requests in"), "{text}");
    assert!(text.contains("2000 ok, 0 failed"), "{text}");
    assert_eq!(html_total(&html, "requests"), 2000);
    assert_eq!(html_total(&html, "ok"), ok);
    assert_eq!(
        html_total(&html, "failed"),
        totals["requests_failed"].as_u64().unwrap()
    );
    let opened = number_after(&text, "connections   ");
    assert_eq!(opened, totals["connections_opened"].as_u64().unwrap());
    assert_eq!(html_total(&html, "opened"), opened);
    let hits = number_after(&text, "limit hits");
    assert_eq!(hits, totals["limit_hits"].as_u64().unwrap());
    assert_eq!(html_total(&html, "limit_hits"), hits);
    assert!(hits > 0);
    let reused = totals["connections_reused"].as_u64().unwrap();
    assert_eq!(html_total(&html, "reused"), reused);
    // The timeline's buckets hold every request once.
    let buckets = json["timeline"]["buckets"].as_array().unwrap();
    let done: u64 = buckets.iter().map(|b| b["done"].as_u64().unwrap()).sum();
    assert_eq!(done, 2000);
    let bucket_hits: u64 = buckets
        .iter()
        .map(|b| b["limit_hits"].as_u64().unwrap())
        .sum();
    assert_eq!(bucket_hits, hits);

    // One lane per connection opened, in the JSON and in the SVG.
    assert_eq!(
        json["timeline"]["lanes"].as_array().unwrap().len() as u64,
        opened
    );
    assert_eq!(html.matches("<g class=\"lane ").count() as u64, opened);

    // Self-contained: nothing fetched from anywhere.
    for reference in [
        "src=", "href=", "url(", "@import", "<link", "<img", "<iframe",
    ] {
        assert!(
            !html.contains(reference),
            "the report references {reference}"
        );
    }

    match chromium() {
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI installs chromium (.ci/run) and must run this test"
            );
            eprintln!("skipped the browser half: chromium is not installed");
        }
        Some(browser) => {
            let png = dir.join("run.png");
            let dom = render_in_chromium(browser, &html_path, &png);
            assert!(
                dom.contains(&format!("data-rendered=\"{opened}\"")),
                "the page's script ran to its end and counted {opened} lanes"
            );
            assert_not_blank(&png);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_open_loop_counts_latency_from_the_intended_start() {
    let addr = server();
    // 20,000 requests/s through one connection at a time cannot be kept up with: requests
    // start late, and the last ones' latency includes the wait since they were due.
    let out = poolscope(&[
        "load",
        "--json",
        "--rate",
        "20000",
        "-n",
        "400",
        "-c",
        "1",
        &format!("http://{addr}/track"),
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["requests_ok"], 400);
    assert_eq!(v["rate"], 20000.0);
    let late = v["late_starts"].as_u64().unwrap();
    assert!(late > 300, "late {late}");
    let elapsed = v["elapsed_seconds"].as_f64().unwrap();
    let max = v["latency_seconds"]["max"].as_f64().unwrap();
    // The 400th request was due at 20 ms and ran near the end.
    assert!(
        max > elapsed * 0.5,
        "max latency {max} of a {elapsed} s run"
    );

    // A rate it keeps up with: nothing late, and it takes as long as the schedule says.
    let out = poolscope(&[
        "load",
        "--rate",
        "200",
        "-n",
        "100",
        "-c",
        "8",
        &format!("http://{addr}/track"),
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("open loop at 200 req/s"), "{text}");
    assert!(text.contains(" 0 started late"), "{text}");
    let secs: f64 = text
        .split(" requests in ")
        .nth(1)
        .and_then(|s| s.split('s').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(
        (0.45..2.0).contains(&secs),
        "100 requests at 200/s took {secs} s"
    );
}

/// The README's screenshot: a demo run's report, rendered by the same code as the test
/// above. `cargo test -p poolscope-cli --test cli -- --ignored readme_screenshot`
#[test]
#[ignore = "writes docs/report.png"]
fn readme_screenshot() {
    let browser = chromium().expect("chromium");
    let dir = std::env::temp_dir().join(format!("poolscope-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let html = dir.join("demo.html");
    let out = poolscope(&[
        "demo",
        "--duration",
        "4s",
        "--report",
        html.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let png = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/report.png");
    render_in_chromium(browser, &html, &png);
    assert_not_blank(&png);
}
