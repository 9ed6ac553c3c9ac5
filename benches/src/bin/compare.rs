//! `cargo run --release -p benches --bin compare [-- --quick] [--separate-server]`
//!
//! poolscope against hyper-util's legacy client, reqwest and Go's net/http on a loopback
//! server; prints a Markdown table (see `benches::compare`).

use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Compare poolscope with hyper-util, reqwest and Go on a loopback server")]
struct Args {
    /// A few seconds in all, to check it runs (figures meaningless).
    #[arg(long)]
    quick: bool,
    /// Rounds per workload (default 5).
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds per run (default 2).
    #[arg(long)]
    secs: Option<f64>,
    /// Use serve-and-track as a separate server process (built with the workspace).
    #[arg(long)]
    separate_server: bool,
    /// Skip the Go client even if `go` is installed.
    #[arg(long)]
    no_go: bool,
    /// Only workloads whose name contains this (e.g. "HTTP/1.1 c=64").
    #[arg(long)]
    only: Option<String>,
    /// Only these clients: hyper, reqwest, bare, empty, metrics, all, stacks, go (comma-separated).
    #[arg(long, value_delimiter = ',')]
    clients: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let mut opts = if args.quick {
        benches::compare::Options::quick()
    } else {
        benches::compare::Options::full()
    };
    if let Some(r) = args.rounds {
        opts.rounds = r.max(1);
    }
    if let Some(s) = args.secs {
        opts.secs = s;
    }
    if let Some(only) = &args.only {
        opts.workloads
            .retain(|w| w.to_string() == *only || w.to_string().starts_with(&format!("{only} ")));
    }
    if !args.clients.is_empty() {
        opts.kinds
            .retain(|k| args.clients.iter().any(|c| c == k.short()));
    }
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let server = if args.separate_server {
        let bin = workspace.join("target/release/serve-and-track");
        benches::compare::TestServer::process(&bin)
    } else {
        benches::compare::TestServer::in_process()
    };
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            eprintln!("compare: cannot start the server: {e} (for --separate-server, `cargo build --release -p serve-and-track` first)");
            return std::process::ExitCode::FAILURE;
        }
    };
    let go = if args.no_go {
        None
    } else {
        benches::compare::build_go(&workspace)
    };
    match &go {
        None => eprintln!("compare: Go client skipped (no `go` on this machine, or --no-go)"),
        Some(g) if !g.h2c => eprintln!(
            "compare: Go client runs HTTP/1.1 only (h2c needs golang.org/x/net: golang-golang-x-net-dev)"
        ),
        Some(_) => {}
    }
    // The clients get one runtime thread; the in-process server has its own.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("compare: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let rows = rt.block_on(benches::compare::run(&opts, &server, go.as_ref()));
    println!(
        "{} rounds of {} s per client and workload; server {}\n",
        opts.rounds,
        opts.secs,
        if args.separate_server {
            "serve-and-track (separate process)"
        } else {
            "in-process hyper (own thread)"
        }
    );
    print!("{}", benches::compare::table(&rows));
    std::process::ExitCode::SUCCESS
}
