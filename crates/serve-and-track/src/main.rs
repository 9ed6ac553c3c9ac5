//! `serve-and-track`: the tracking server. `serve-and-track --addr 127.0.0.1:8080 --state-file ./state`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use serve_and_track::{Config, LogSink, Server};

/// A tracking web server: /track (a 1x1 GIF), /state (health from a state file), /metrics.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// /state answers 200 while this file exists, 503 otherwise.
    #[arg(long, default_value = "./state")]
    state_file: PathBuf,
    /// Do not write the access log (for benchmarks).
    #[arg(long)]
    no_access_log: bool,
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("serve-and-track: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let log = if args.no_access_log {
        LogSink::stdout().without_access_log()
    } else {
        LogSink::stdout()
    };
    let result = runtime.block_on(async {
        let config = Config {
            addr: args.addr,
            state_file: args.state_file,
            ..Config::default()
        };
        let server = Server::bind(config, log).await?;
        server.run(shutdown_signal()).await
    });
    // Give the log thread a moment to flush the last lines.
    std::thread::sleep(std::time::Duration::from_millis(50));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serve-and-track: {e}");
            ExitCode::FAILURE
        }
    }
}
