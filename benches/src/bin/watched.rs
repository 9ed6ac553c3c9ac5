//! `cargo build --release -p benches && ./target/release/watched`
//!
//! Does looking stall the client? A load at concurrency 64 (HTTP/1.1, stacks captured)
//! against `reqloop --serve` in its own process, in rounds that alternate between nobody
//! looking and a thread taking the in-flight report 20 times a second (as a service
//! scraping `/debug/inflight` would). Per round: requests/s, and the completions per 20 ms
//! slice of the run (median and minimum). Issue #30 asks for requests/s within noise of the
//! unwatched rounds and no slice below half the median.

use std::io::BufRead;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioExecutor;

#[derive(Parser, Debug)]
#[command(about = "Requests/s and 20 ms slices of a load, watched and unwatched")]
struct Args {
    /// Seconds per round.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Rounds of each kind (alternated).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent requests.
    #[arg(short = 'c', long, default_value_t = 64)]
    concurrency: usize,
    /// Reports per second in the watched rounds.
    #[arg(long, default_value_t = 20.0)]
    hz: f64,
}

struct Round {
    watched: bool,
    rps: f64,
    median_slice: u64,
    min_slice: u64,
    reports: usize,
    slowest_report: Duration,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let reqloop = std::env::current_exe()?.with_file_name("reqloop");
    let mut server = std::process::Command::new(&reqloop)
        .arg("--serve")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", reqloop.display()))?;
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let url: http::Uri = format!("http://{}/", line.trim()).parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rounds = Vec::new();
    for i in 0..2 * args.rounds {
        let watched = i % 2 == 1;
        rounds.push(rt.block_on(round(&args, url.clone(), watched)));
    }
    let _ = server.kill();
    println!("| round | watched | requests/s | median / min per 20 ms slice | reports (slowest) |");
    println!("|---|---|---:|---:|---:|");
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "| {} | {} | {:.0} | {} / {} | {} ({:.1} ms) |",
            i + 1,
            if r.watched { "yes" } else { "no" },
            r.rps,
            r.median_slice,
            r.min_slice,
            r.reports,
            r.slowest_report.as_secs_f64() * 1e3
        );
    }
    let median = |watched: bool| {
        let mut v: Vec<f64> = rounds
            .iter()
            .filter(|r| r.watched == watched)
            .map(|r| r.rps)
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (plain, watched) = (median(false), median(true));
    println!(
        "\nmedian requests/s: unwatched {plain:.0}, watched {watched:.0} ({:.2}x)",
        watched / plain
    );
    let worst = |watched: bool| {
        rounds
            .iter()
            .filter(|r| r.watched == watched)
            .map(|r| r.min_slice as f64 / r.median_slice.max(1) as f64)
            .fold(f64::INFINITY, f64::min)
    };
    println!(
        "lowest 20 ms slice: {:.2} of its round's median watched, {:.2} unwatched",
        worst(true),
        worst(false)
    );
    Ok(())
}

async fn round(args: &Args, url: http::Uri, watched: bool) -> Round {
    let client: poolscope::Client<_, Empty<Bytes>> =
        poolscope::Client::builder(TokioExecutor::new())
            .telemetry()
            .capture_stacks(true)
            .build_http();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watched.then(|| {
        let (client, stop) = (client.clone(), stop.clone());
        let period = Duration::from_secs_f64(1.0 / args.hz);
        std::thread::spawn(move || {
            let (mut n, mut slowest) = (0, Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let report = client.in_flight();
                std::hint::black_box(report.to_string());
                slowest = slowest.max(t.elapsed());
                n += 1;
                std::thread::sleep(period.saturating_sub(t.elapsed()));
            }
            (n, slowest)
        })
    });
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            while Instant::now() < end {
                if let Ok(resp) = client.get(url.clone()).await {
                    if resp.into_body().collect().await.is_ok() {
                        done.push(start.elapsed());
                    }
                }
            }
            done
        }));
    }
    let mut slices = vec![0u64; (args.seconds / 0.02).ceil() as usize + 1];
    let mut total = 0u64;
    for t in tasks {
        for at in t.await.unwrap_or_default() {
            if let Some(s) = slices.get_mut((at.as_secs_f64() / 0.02) as usize) {
                *s += 1;
            }
            total += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (reports, slowest_report) = watcher
        .and_then(|w| w.join().ok())
        .unwrap_or((0, Duration::ZERO));
    // The first and last slices are partial (start-up, the tasks' last requests).
    let full = &slices[1..slices.len().saturating_sub(2).max(2)];
    let mut sorted = full.to_vec();
    sorted.sort_unstable();
    Round {
        watched,
        rps: total as f64 / args.seconds,
        median_slice: sorted[sorted.len() / 2],
        min_slice: sorted[0],
        reports,
        slowest_report,
    }
}
