//! serve-and-track: a tracking web server, in Rust on hyper.
//!
//! - `GET /track` → `200`, a 1×1 transparent GIF (42 bytes), not cacheable; counted in the
//!   `tracking_*` metrics.
//! - `GET /state` → `200 OK` when the state file exists, else `503`.
//! - `GET /metrics` → Prometheus text: `tracking_request_duration` (summary, quantiles 0.5,
//!   0.9, 0.99), `tracking_requests_count_total{status="success"|"failure"}` and
//!   `tracking_requests_size_total` — `/track` requests only.
//! - Other paths `404`, other methods `405`.
//!
//! HTTP/1.1 and h2c on the same port. One access-log line per request in Apache combined
//! format, and the lifecycle lines `INFO http: Server started …`, `Server stopping`,
//! `Server stopped gracefully`. [`Server::run`] stops accepting when its shutdown future
//! completes and lets in-flight requests finish.
//!
//! What it does not do: TLS, virtual hosts, persistence of metrics.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod log;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

pub use log::{apache_time, go_log_time, LogSink};
pub use routes::TRACKING_GIF;

/// Where the server listens and which file decides its health.
#[derive(Debug, Clone)]
pub struct Config {
    /// The address to bind. Default: `127.0.0.1:8080`.
    pub addr: SocketAddr,
    /// `/state` answers 200 while this file exists. Default: `./state`.
    pub state_file: PathBuf,
    /// How long a graceful stop waits for in-flight requests. Default: 30 s.
    pub grace: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            state_file: PathBuf::from("./state"),
            grace: Duration::from_secs(30),
        }
    }
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    app: Arc<routes::App>,
    log: LogSink,
    grace: Duration,
}

impl Server {
    /// Binds `config.addr` and prepares the metrics; logs go to `log`.
    ///
    /// # Errors
    ///
    /// The address cannot be bound.
    pub async fn bind(config: Config, log: LogSink) -> std::io::Result<Server> {
        let listener = TcpListener::bind(config.addr).await?;
        Ok(Server {
            listener,
            app: Arc::new(routes::App::new(config.state_file)),
            log,
            grace: config.grace,
        })
    }

    /// The address actually bound (useful with port 0).
    ///
    /// # Errors
    ///
    /// The socket's address cannot be read.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests
    /// finish (up to the grace period) and returns.
    ///
    /// # Errors
    ///
    /// The local address cannot be read.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let addr = self.listener.local_addr()?;
        self.log.lifecycle(&format!("Server started {addr}"));
        let graceful = GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        // The recorder keeps histogram samples until upkeep drains them into the summary:
        // without it, memory grows with every /track that no /metrics scrape follows.
        let upkeep = {
            let app = self.app.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    app.upkeep();
                }
            })
        };
        tokio::pin!(shutdown);
        let mut backoff: Option<Duration> = None;
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(accepted) => {
                            backoff = None;
                            accepted
                        }
                        Err(e) => {
                            // Out of file descriptors (or similar): the error comes back at
                            // once until connections close, so back off as Go's server does
                            // (5 ms doubling to 1 s) instead of spinning.
                            let delay = backoff
                                .map_or(Duration::from_millis(5), |d: Duration| d * 2)
                                .min(Duration::from_secs(1));
                            backoff = Some(delay);
                            self.log
                                .lifecycle(&format!("Accept error: {e}; retrying in {delay:?}"));
                            tokio::select! {
                                _ = tokio::time::sleep(delay) => continue,
                                () = &mut shutdown => break,
                            }
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    let svc = routes::Service::new(self.app.clone(), peer, self.log.clone());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc);
                    let conn = graceful.watch(conn.into_owned());
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                () = &mut shutdown => break,
            }
        }
        upkeep.abort();
        self.log.lifecycle("Server stopping");
        drop(self.listener);
        match tokio::time::timeout(self.grace, graceful.shutdown()).await {
            Ok(()) => self.log.lifecycle("Server stopped gracefully"),
            Err(_) => self
                .log
                .lifecycle("Server stopped: grace period over, connections dropped"),
        }
        Ok(())
    }
}
