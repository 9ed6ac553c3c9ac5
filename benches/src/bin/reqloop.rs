//! `cargo run --release -p benches --bin reqloop -- --client all -n 20000 -c 64`
//!
//! A fixed number of requests from one client, for profilers and instruction counts (see
//! docs/benchmarks.md). The server is in-process on its own thread unless `--server ADDR`
//! names one that another process runs: `reqloop --serve` is that process (it prints its
//! address and serves until killed). `--bin instructions` runs both, the client under
//! callgrind.

use benches::compare::{Kind, Proto, TestServer, Workload};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Run a fixed number of requests from one client, for profiling")]
struct Args {
    /// hyper, reqwest, bare, empty, metrics, all, stacks.
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
    /// The server another process runs (`reqloop --serve`), instead of one in this process.
    #[arg(long)]
    server: Option<std::net::SocketAddr>,
    /// Be the server: print the address on stdout, then serve until killed.
    #[arg(long)]
    serve: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let server = match args.server {
        Some(addr) => TestServer::at(addr),
        None => match TestServer::in_process() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("reqloop: cannot start the server: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    if args.serve {
        println!("{}", server.addr);
        loop {
            std::thread::park();
        }
    }
    let Some(kind) = Kind::parse(&args.client).filter(|k| *k != Kind::Go) else {
        eprintln!("reqloop: unknown client {:?}", args.client);
        return std::process::ExitCode::from(2);
    };
    let w = Workload {
        proto: if args.h2c { Proto::H2c } else { Proto::H1 },
        concurrency: args.concurrency.max(1),
        cap: args.cap,
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
            if failed > 0 {
                return std::process::ExitCode::FAILURE;
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("reqloop: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
