//! `poolscope trace URL`: one request as an httpstat-style waterfall.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use poolscope::trace::{GotConnInfo, RequestTimings};
use poolscope::ClientTrace;
use serde_json::json;
use tokio::sync::oneshot;

use crate::opts::{self, ConnOpts, RequestOpts};
use crate::Failure;

/// `poolscope trace` options.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub request: RequestOpts,
    #[command(flatten)]
    pub conn: ConnOpts,
    /// Print the timings and connection facts as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the body to FILE.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Colours for a terminal, nothing otherwise or with NO_COLOR.
struct Paint(bool);

impl Paint {
    fn detect() -> Paint {
        Paint(
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
    }
    fn c(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
}

fn ms(d: Option<Duration>) -> String {
    match d {
        None => "-".to_owned(),
        Some(d) if d < Duration::from_millis(10) => format!("{:.2}ms", d.as_secs_f64() * 1e3),
        Some(d) => format!("{}ms", d.as_millis()),
    }
}

fn secs(d: Option<Duration>) -> serde_json::Value {
    d.map_or(serde_json::Value::Null, |d| json!(d.as_secs_f64()))
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let prepared = opts::prepare(&args.request)?;
    let connector = opts::connector(&args.conn)?;
    let got: Arc<Mutex<Option<GotConnInfo>>> = Default::default();
    let (done_tx, done_rx) = oneshot::channel::<RequestTimings>();
    let trace = {
        let got = got.clone();
        // The hook is `Fn`: the first call takes the sender.
        let done_tx = Mutex::new(Some(done_tx));
        ClientTrace::builder()
            .on_got_conn(move |i| *got.lock().unwrap_or_else(|e| e.into_inner()) = Some(i.clone()))
            .on_request_done(move |i| {
                if let Some(tx) = done_tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = tx.send(i.timings);
                }
            })
            .build()
    };
    let client = opts::builder(&args.conn)?
        .telemetry()
        .trace(trace)
        .build(connector);
    let resp = client
        .request(prepared.request())
        .await
        .map_err(|e| Failure::Request(opts::describe(&e)))?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| Failure::Request(format!("error reading response body: {e}")))?
        .to_bytes();
    // request_done fires when the connection is back in the pool, which may be just after
    // the body ends: wait for it (bounded, in case it never comes).
    let t = tokio::time::timeout(Duration::from_millis(200), done_rx)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let g = got.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(path) = &args.output {
        tokio::fs::write(path, &body)
            .await
            .map_err(|e| Failure::Request(format!("cannot write {}: {e}", path.display())))?;
    }
    if args.json {
        let conn = g.as_ref().map(|g| {
            json!({
                "conn_id": g.conn_id.get(),
                "reused": g.reused,
                "was_idle": g.was_idle,
                "http_version": format!("{:?}", g.version),
                "remote_addr": g.remote_addr.map(|a| a.to_string()),
                "local_addr": g.local_addr.map(|a| a.to_string()),
                "tls": g.tls.as_ref().map(|t| json!({"version": t.version, "cipher": t.cipher, "alpn": t.alpn})),
            })
        });
        let headers: serde_json::Map<String, serde_json::Value> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("<binary>"))))
            .collect();
        let out = json!({
            "url": prepared.shown_url(),
            "status": parts.status.as_u16(),
            "version": format!("{:?}", parts.version),
            "headers": headers,
            "body_bytes": body.len(),
            "connection": conn,
            "timings": {
                "dns_seconds": secs(t.dns),
                "connect_seconds": secs(t.connect),
                "proxy_seconds": secs(t.proxy),
                "tls_seconds": secs(t.tls),
                "queued_seconds": t.queued.as_secs_f64(),
                "server_processing_seconds": secs(t.wait),
                "content_transfer_seconds": secs(t.transfer),
                "namelookup_seconds": secs(t.dns),
                "connect_total_seconds": secs(t.dns.unwrap_or_default().checked_add(t.connect.unwrap_or_default()).filter(|_| t.connect.is_some())),
                "pretransfer_seconds": secs(t.got_conn),
                "starttransfer_seconds": secs(t.first_byte),
                "total_seconds": t.total.as_secs_f64(),
            }
        });
        println!("{out}");
        return Ok(());
    }
    let p = Paint::detect();
    if let Some(g) = &g {
        let addr = g
            .remote_addr
            .map_or_else(|| "?".to_owned(), |a| a.to_string());
        let how = if g.reused {
            "reused connection"
        } else {
            "new connection"
        };
        println!(
            "Connected to {} ({:?}, {how}, #{})",
            p.c("36", &addr),
            g.version,
            g.conn_id.get()
        );
        if let Some(tls) = &g.tls {
            println!(
                "TLS: {} {} ALPN {}",
                tls.version,
                tls.cipher,
                tls.alpn.as_deref().unwrap_or("none")
            );
        }
        println!();
    }
    println!(
        "{} {}",
        p.c("32", &format!("{:?}", parts.version)),
        p.c("36", &parts.status.to_string())
    );
    for (k, v) in &parts.headers {
        println!(
            "{}: {}",
            p.c("90", k.as_str()),
            v.to_str().unwrap_or("<binary>")
        );
    }
    println!();
    match &args.output {
        Some(path) => println!("Body ({} bytes) stored in {}", body.len(), path.display()),
        None => println!("Body: {} bytes (use -o FILE to keep it)", body.len()),
    }
    println!();
    println!("{}", waterfall(&t, &p));
    Ok(())
}

/// httpstat's picture: phase durations in a row, cumulative marks under it.
fn waterfall(t: &RequestTimings, p: &Paint) -> String {
    let connect = match (t.dns, t.connect) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or_default() + b.unwrap_or_default()),
    };
    // (phase, its duration, the cumulative mark at its end)
    let mut cols = vec![
        ("DNS Lookup", t.dns, ("namelookup", t.dns)),
        ("TCP Connection", t.connect, ("connect", connect)),
    ];
    if t.proxy.is_some() {
        // CONNECT or the SOCKS handshake, after the TCP connect to the proxy.
        let tunnel = connect.map(|c| c + t.proxy.unwrap_or_default());
        cols.push(("Proxy Tunnel", t.proxy, ("tunnel", tunnel)));
    }
    if t.tls.is_some() {
        cols.push(("TLS Handshake", t.tls, ("pretransfer", t.got_conn)));
    }
    cols.push(("Server Processing", t.wait, ("starttransfer", t.first_byte)));
    cols.push(("Content Transfer", t.transfer, ("total", Some(t.total))));
    let widths: Vec<usize> = cols.iter().map(|(n, _, _)| n.len() + 4).collect();
    // Column of the separator after each cell: '[' + cells and separators.
    let mut seps = Vec::new();
    let mut at = 0;
    for w in &widths {
        at += w + 1;
        seps.push(at);
    }
    let mut out = String::from(" ");
    for (i, (name, _, _)) in cols.iter().enumerate() {
        out.push_str(&format!("{:^w$} ", name, w = widths[i]));
    }
    out.push_str("\n[");
    for (i, (_, d, _)) in cols.iter().enumerate() {
        out.push_str(&p.c("36", &format!("{:^w$}", ms(*d), w = widths[i])));
        out.push(if i + 1 == cols.len() { ']' } else { '|' });
    }
    out.push('\n');
    let bars_from = |from: usize, line: &mut String| {
        for &sep in &seps[from..] {
            while line.chars().count() < sep {
                line.push(' ');
            }
            line.push('|');
        }
    };
    let mut line = String::new();
    bars_from(0, &mut line);
    out.push_str(&line);
    out.push('\n');
    for (i, (_, _, (mark, d))) in cols.iter().enumerate() {
        let label = format!("{mark}:{}", ms(*d));
        let pad = (seps[i] + 1).saturating_sub(label.chars().count());
        let mut line = " ".repeat(pad);
        line.push_str(&p.c("36", &label));
        // `bars_from` counts characters; colour codes would skew it, so pad by hand.
        let mut rest = String::new();
        let mut col = pad + label.chars().count();
        for &sep in &seps[i + 1..] {
            while col < sep {
                rest.push(' ');
                col += 1;
            }
            rest.push('|');
            col += 1;
        }
        line.push_str(&rest);
        out.push_str(&line);
        out.push('\n');
    }
    out
}
