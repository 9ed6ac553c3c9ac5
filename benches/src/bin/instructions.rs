//! `cargo run --release -p benches --bin instructions`
//!
//! Instructions per request, counted by valgrind's callgrind (the same on every run, where
//! requests/s on these VMs move ±10%). Each client runs alone in its own process
//! (`reqloop`, under callgrind) against a server in another process (`reqloop --serve`, not
//! under valgrind), HTTP/1.1 keep-alive (or h2c), a 5-byte body. Each figure is the whole
//! client process's instructions, all threads, for `2n` requests minus those for `n`, divided
//! by `n`: the cost of one more request, without the process's start, the runtime's and the
//! connections' setup; with `--repeat R`, the median of R such figures. The Prometheus
//! recorder's one-time clock calibration, which depends on wall time, is left out of every
//! count (see `calibration`). Skips (exit 0) when valgrind is missing.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use benches::compare::Kind;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Instructions per request of each client, counted by callgrind")]
struct Args {
    /// Requests of the shorter run (the longer one makes twice as many).
    #[arg(short = 'n', long, default_value_t = 3000)]
    requests: u64,
    /// Clients: hyper, reqwest, bare, empty, metrics, all, stacks (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "hyper,bare,metrics,all,stacks"
    )]
    clients: Vec<String>,
    /// Concurrencies, one column each (comma-separated).
    #[arg(short = 'c', long, value_delimiter = ',', default_value = "1,64")]
    concurrency: Vec<usize>,
    /// h2c instead of HTTP/1.1.
    #[arg(long)]
    h2c: bool,
    /// Pairs of runs per figure; the figure is their median (runs agree to within a few
    /// instructions per request; the pool's and tokio's timers fire by wall-clock time, which
    /// valgrind stretches, and can move a figure a little).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

/// The server process, killed when dropped.
struct Server(std::process::Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(reqloop: &Path) -> Result<Server, String> {
    let mut child = Command::new(reqloop)
        .arg("--serve")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", reqloop.display()))?;
    let mut line = String::new();
    let out = child.stdout.take().ok_or("the server has no stdout")?;
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .map_err(|e| format!("reading the server's address: {e}"))?;
    Ok(Server(child, line.trim().to_owned()))
}

/// The instructions callgrind counted for one client process making `n` requests.
fn count(
    reqloop: &Path,
    dir: &Path,
    server: &str,
    kind: Kind,
    c: usize,
    n: u64,
    h2c: bool,
) -> Result<u64, String> {
    let out = dir.join(format!("callgrind.{}.c{c}.n{n}", kind.short()));
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(reqloop)
        .args(["--client", kind.short(), "--server", server])
        .args(["-n", &n.to_string(), "-c", &c.to_string()]);
    if h2c {
        cmd.arg("--h2c");
    }
    let run = cmd
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("valgrind: {e}"))?;
    if !run.status.success() {
        return Err(format!(
            "{} c={c} n={n} failed under callgrind: {}",
            kind.name(),
            String::from_utf8_lossy(&run.stderr)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" / ")
        ));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let total: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("{}: no summary line", out.display()))?;
    Ok(total.saturating_sub(calibration(&out)?))
}

/// The instructions of the one-time clock calibration that metrics-exporter-prometheus's
/// recorder runs when it is installed (`quanta::Clock::new`, which loops for a stretch of wall
/// time: a different count on every run, and ±600 instructions per request in a 10,000-request
/// difference), read from the profile with `callgrind_annotate`; 0 for a client that installs
/// no recorder. Left out, every client's figure repeats to within a few instructions.
fn calibration(profile: &Path) -> Result<u64, String> {
    let out = Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--threshold=100", "--auto=no"])
        .arg(profile)
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("callgrind_annotate (ships with valgrind): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "callgrind_annotate failed on {}",
            profile.display()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("quanta::Clock::new "))
        .filter_map(|l| {
            l.split_whitespace()
                .next()?
                .replace(',', "")
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map_or(true, |s| !s.success())
    {
        eprintln!("instructions: skipped, valgrind is not installed (apt install valgrind)");
        return std::process::ExitCode::SUCCESS;
    }
    let mut kinds = Vec::new();
    for c in &args.clients {
        match Kind::parse(c).filter(|k| *k != Kind::Go) {
            Some(k) => kinds.push(k),
            None => {
                eprintln!("instructions: unknown client {c:?}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let reqloop: PathBuf = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name("reqloop"),
        Err(e) => {
            eprintln!("instructions: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if !reqloop.exists() {
        eprintln!(
            "instructions: {} is missing: `cargo build --release -p benches` first",
            reqloop.display()
        );
        return std::process::ExitCode::FAILURE;
    }
    let dir = std::env::temp_dir().join(format!("poolscope-instructions-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("instructions: {}: {e}", dir.display());
        return std::process::ExitCode::FAILURE;
    }
    let server = match serve(&reqloop) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("instructions: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let n = args.requests.max(1);
    // (marginal, whole ÷ requests) per [kind][column]
    let mut per: Vec<Vec<Option<(f64, f64)>>> =
        vec![vec![None; args.concurrency.len()]; kinds.len()];
    let mut failed = false;
    for (ci, &c) in args.concurrency.iter().enumerate() {
        for (ki, &kind) in kinds.iter().enumerate() {
            eprint!("\r{:<34} c={c:<4}", kind.name());
            let mut figures = Vec::new();
            for _ in 0..args.repeat.max(1) {
                let counts = count(&reqloop, &dir, &server.1, kind, c, n, args.h2c).and_then(|a| {
                    count(&reqloop, &dir, &server.1, kind, c, 2 * n, args.h2c).map(|b| (a, b))
                });
                match counts {
                    Ok((a, b)) => figures.push((
                        b.saturating_sub(a) as f64 / n as f64,
                        b as f64 / (2 * n) as f64,
                    )),
                    Err(e) => {
                        eprintln!("\ninstructions: {e}");
                        failed = true;
                    }
                }
            }
            figures.sort_by(|x, y| x.0.total_cmp(&y.0));
            per[ki][ci] = figures.get(figures.len() / 2).copied();
        }
    }
    eprintln!();
    let _ = std::fs::remove_dir_all(&dir);
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let hyper = kinds.iter().position(|k| *k == Kind::HyperUtil);
    let table = |title: String, pick: fn((f64, f64)) -> f64| {
        println!("{title}\n");
        let mut header = String::from("| client |");
        let mut rule = String::from("|---|");
        for c in &args.concurrency {
            header.push_str(&format!(" c={c} |"));
            rule.push_str("---:|");
        }
        println!("{header}\n{rule}");
        for (kind, row) in kinds.iter().zip(&per) {
            let mut line = format!("| {} |", kind.name());
            for (ci, value) in row.iter().enumerate() {
                let cell = match value.map(pick) {
                    None => "failed".to_owned(),
                    Some(v) => {
                        let ratio = hyper
                            .and_then(|h| per[h][ci].map(pick))
                            .filter(|h| *h > 0.0)
                            .map(|h| format!(" ({:.2})", v / h))
                            .unwrap_or_default();
                        format!("{:.1}k{ratio}", v / 1000.0)
                    }
                };
                line.push_str(&format!(" {cell} |"));
            }
            println!("{line}");
        }
        println!();
    };
    let proto = if args.h2c {
        "h2c"
    } else {
        "HTTP/1.1 keep-alive"
    };
    table(
        format!(
            "Instructions per request, one more request ({proto}; {} minus {n} requests, ÷ {n}; callgrind; commit {commit}); × hyper-util in brackets",
            2 * n
        ),
        |(marginal, _)| marginal,
    );
    table(
        format!(
            "Instructions of the whole client process ÷ requests ({proto}; {} requests; callgrind; commit {commit})",
            2 * n
        ),
        |(_, whole)| whole,
    );
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
