//! `cargo run --release -p benches --bin reqloop -- --client all -n 20000 -c 64`
//!
//! A fixed number of requests from one client to the in-process loopback server, for
//! profilers: under `valgrind --tool=callgrind --separate-threads=yes` the client thread's
//! instruction count divided by `-n` is the client's cost per request, repeatable where
//! timings on this VM are not (see docs/benchmarks.md).

use benches::compare::{Kind, Proto, TestServer, Workload};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Run a fixed number of requests from one client, for profiling")]
struct Args {
    /// hyper, reqwest, bare, empty, all, stacks.
    #[arg(long, default_value = "bare")]
    client: String,
    /// Requests in all.
    #[arg(short = 'n', long, default_value_t = 20_000)]
    requests: u64,
    /// Concurrent requests.
    #[arg(short = 'c', long, default_value_t = 64)]
    concurrency: usize,
    /// h2c instead of HTTP/1.1.
    #[arg(long)]
    h2c: bool,
    /// `max_conns_per_host` (poolscope clients only).
    #[arg(long)]
    cap: Option<usize>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let kind = match args.client.as_str() {
        "hyper" => Kind::HyperUtil,
        "reqwest" => Kind::Reqwest,
        "bare" => Kind::Bare,
        "empty" => Kind::HooksEmpty,
        "all" => Kind::All,
        "stacks" => Kind::Stacks,
        other => {
            eprintln!("reqloop: unknown client {other:?}");
            return std::process::ExitCode::from(2);
        }
    };
    let w = Workload {
        proto: if args.h2c { Proto::H2c } else { Proto::H1 },
        concurrency: args.concurrency.max(1),
        cap: args.cap,
    };
    let server = match TestServer::in_process() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("reqloop: cannot start the server: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("reqloop: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(benches::compare::run_requests(
        kind,
        w,
        &server,
        args.requests,
    )) {
        Ok((elapsed, failed)) => {
            println!(
                "{} {w}: {} requests in {:.3} s ({:.0} req/s), {failed} failed",
                kind.name(),
                args.requests,
                elapsed.as_secs_f64(),
                args.requests as f64 / elapsed.as_secs_f64()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("reqloop: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
