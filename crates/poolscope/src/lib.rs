//! poolscope: an HTTP client whose connection pool is instrumented at the transport level.
//!
//! - [`pool`]: the pool engine — Go `net/http` Transport semantics, generic over the
//!   connection type, no sockets.
//! - [`stats`]: [`Stats`], transport-level hooks, and [`PoolSnapshot`].
//!
//! Telemetry never contains userinfo, paths or queries: events carry a
//! [`ConnectKey`](pool::ConnectKey) (scheme, host, port).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod pool;
pub mod stats;

pub use stats::{PoolSnapshot, Stats};
pub mod connect;
pub mod trace;

pub use trace::ClientTrace;
pub mod client;

pub use client::{Builder, Client, Error, ResponseBody, ResponseFuture};
