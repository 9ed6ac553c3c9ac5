//! Benchmarks of poolscope: criterion micro-benchmarks (`pool.rs`, `inflight.rs`) and the
//! client comparison ([`compare`]): poolscope against hyper-util's legacy client, reqwest and
//! (when `go` is installed) Go's net/http, on a loopback server.

pub mod compare;
