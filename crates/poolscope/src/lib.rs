//! poolscope: an HTTP client whose connection pool is instrumented at the transport level.
//!
//! - [`pool`]: the pool engine — Go `net/http` Transport semantics, generic over the
//!   connection type, no sockets.
//! - [`stats`]: [`Stats`], transport-level hooks, and [`PoolSnapshot`].
//! - [`client`]: [`Client`], a drop-in for hyper-util's legacy client, on that pool.
//! - [`trace`]: [`ClientTrace`], per-request events (Go's httptrace).
//! - [`connect`]: connectors with DNS (hickory), happy eyeballs and TLS (rustls).
//! - [`inflight`]: the requests in flight, with the stacks that started them.
//! - [`history`]: the last N events, for post-mortems.
//! - [`debug`]: a debug HTTP service and a signal dump.
//!
//! Telemetry never contains userinfo. Pool events, trace events and metric labels carry a
//! [`ConnectKey`](pool::ConnectKey) (scheme, host, port) and never a path or a query; what
//! shows a request's URL (the in-flight report, the history's `request_started`, the request
//! span's `url.full`) shows its path and query, through
//! [`TelemetryBuilder::redact_url`](client::TelemetryBuilder::redact_url) when one is set.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod client;
pub mod connect;
pub mod debug;
pub mod history;
pub mod inflight;
mod key;
mod methods;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(not(feature = "metrics"))]
#[path = "metrics_off.rs"]
mod metrics;
pub mod pool;
mod redact;
mod render;
pub mod spans;
pub mod stats;
mod sync;
pub mod trace;

pub use client::{Builder, Client, Error, ResponseBody, ResponseFuture, TelemetryBuilder};
pub use stats::{PoolSnapshot, Stats};
pub use trace::ClientTrace;
