//! `poolscope`: see what an HTTP client does.
//!
//! - `poolscope trace URL`: one request as a phase waterfall (DNS, connect, TLS, server
//!   processing, transfer), the connection facts and the response head.
//! - `poolscope load URL`: many requests with a live pool view, then a report.
//! - `poolscope demo`: a load against an in-process serve-and-track, no setup.
//!
//! Exit status: 0 on success, 1 when a request fails (one line naming the phase), 2 for
//! usage errors (bad flags, malformed URL, unknown scheme, bad header).

mod demo;
mod html;
mod load;
mod metrics_endpoint;
mod opts;
mod report;
mod timeline;
mod trace_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "poolscope",
    version,
    about = "See what an HTTP client does: trace one request, load a server, or run the demo."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One request, shown as a phase waterfall with the connection facts.
    Trace(trace_cmd::Args),
    /// Many requests with a live pool view, then a report.
    Load(load::Args),
    /// A load against an in-process serve-and-track: the live view, the in-flight report,
    /// the pool at the first limit hit and the final report. About 10 seconds.
    Demo(demo::Args),
}

/// A failure to report: usage (exit 2) or a failed request (exit 1).
#[derive(Debug)]
pub enum Failure {
    /// The command line is wrong.
    Usage(String),
    /// The request failed.
    Request(String),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("poolscope: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Trace(args) => trace_cmd::run(args).await,
            Command::Load(args) => load::run(args).await,
            Command::Demo(args) => demo::run(args).await,
        }
    });
    // Don't wait for connection tasks still closing.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("poolscope: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Request(msg)) => {
            eprintln!("poolscope: {msg}");
            ExitCode::from(1)
        }
    }
}
