//! `poolscope demo`: serve-and-track in process, a load with a per-host cap low enough to
//! queue, and everything poolscope shows about it.

use std::sync::Arc;
use std::time::Duration;

use serve_and_track::{Config, LogSink, Server};

use crate::load::{self, Plan, Recording};
use crate::opts::{self, ConnOpts, RequestOpts};
use crate::Failure;

/// `poolscope demo` options.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// How long the load runs.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "6s")]
    pub duration: Duration,
    /// Concurrent requests.
    #[arg(short = 'c', long, default_value_t = 64)]
    pub concurrency: usize,
    /// The per-host connection cap (low, so requests queue).
    #[arg(long = "max-conns-per-host", default_value_t = 8)]
    pub max_conns_per_host: usize,
    /// Write an HTML report of the run (see `poolscope load --report`).
    #[arg(long, value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,
    /// Write its aggregates as JSON (docs/report.md).
    #[arg(long = "report-json", value_name = "FILE")]
    pub report_json: Option<std::path::PathBuf>,
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let server = Server::bind(
        Config {
            addr: "127.0.0.1:0"
                .parse()
                .map_err(|_| Failure::Usage("bad address".into()))?,
            state_file: std::env::temp_dir().join("poolscope-demo-state"),
            grace: Duration::from_secs(2),
        },
        LogSink::none(),
    )
    .await
    .map_err(|e| Failure::Request(format!("cannot start serve-and-track: {e}")))?;
    let addr = server
        .local_addr()
        .map_err(|e| Failure::Request(e.to_string()))?;
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let url = format!("http://{addr}/track");
    println!("poolscope demo");
    println!("  serve-and-track is listening on {addr} (in this process)");
    println!(
        "  load: GET {url}, {} concurrent for {:?}, pool_max_conns_per_host({})",
        args.concurrency, args.duration, args.max_conns_per_host
    );
    println!(
        "  so {} requests share {} connections and wait in the pool's queues.\n",
        args.concurrency, args.max_conns_per_host
    );

    let request = RequestOpts {
        url: url.clone(),
        method: "GET".into(),
        headers: Vec::new(),
        data: None,
    };
    let prepared = opts::prepare(&request)?;
    let conn = ConnOpts::default();
    let rec = Arc::new(Recording::default());
    let (stats, trace) = rec.hooks();
    let client = opts::builder(&conn)?
        .pool_max_conns_per_host(args.max_conns_per_host)
        .telemetry()
        .capture_stacks(true)
        .stats(stats)
        .trace(trace)
        .build(opts::connector(&conn)?);

    // Mid-run: who is in flight, and who started them.
    let snapshot_task = {
        let client = client.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            // Resolving the stacks' symbols reads debug info: on a blocking thread, not on
            // a worker the load runs on.
            tokio::task::spawn_blocking(move || client.in_flight())
                .await
                .unwrap_or_default()
        })
    };
    let plan = Plan {
        requests: None,
        duration: Some(args.duration),
        concurrency: args.concurrency,
        rate: None,
    };
    if args.report.is_some() || args.report_json.is_some() {
        rec.keep_timeline(std::time::Instant::now());
    }
    let stop = load::Stop::new();
    stop.on_ctrl_c();
    let bar = load::progress(&plan);
    let interrupted = load::execute(&client, prepared, rec.clone(), plan, stop, bar).await;
    let inflight = snapshot_task.await.unwrap_or_default();

    println!(
        "In-flight report taken 1.5 s into the run ({} requests; the first 4 shown):",
        inflight.len()
    );
    let text = inflight.to_string();
    let mut shown = 0;
    for line in text.lines() {
        if line.starts_with("  servicing") {
            shown += 1;
            if shown > 4 {
                break;
            }
        }
        println!("{line}");
    }
    println!();
    let report = rec.report(url, args.concurrency, interrupted);
    load::write_reports(
        &rec,
        &report,
        crate::html::Limits {
            max_conns_per_host: Some(args.max_conns_per_host),
            ..Default::default()
        },
        args.report.as_deref(),
        args.report_json.as_deref(),
    )?;
    print!("{report}");
    println!("\nPool now:\n{}", client.pool_snapshot());
    let _ = stop_server.send(());
    let _ = server_task.await;
    Ok(())
}
