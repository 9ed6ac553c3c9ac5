//! `Builder`: every option of hyper-util's legacy `Builder`, same names and argument types,
//! plus the pool limits that are poolscope's own; its telemetry settings are behind
//! [`Builder::telemetry`] (`telemetry.rs`).

use std::fmt;
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper::rt::Timer;

mod telemetry;

pub use telemetry::TelemetryBuilder;
use telemetry::TelemetryConfig;

use super::conn::DialConfig;
use super::exec::{BoxSendFuture, Exec};
use super::{Client, Shared};
use crate::connect::HttpConnector;
use crate::history::History;
use crate::inflight::Registry;
use crate::pool::{self, Pool};

/// Builds a [`Client`]: `Client::builder(TokioExecutor::new())…build(connector)`.
///
/// Every method of hyper-util's legacy `Builder` is here with the same signature; see
/// `docs/migration.md` for the table. Defaults equal hyper-util's: no connection cap, no idle
/// caps, 90 s idle timeout, `Host` set, canceled requests retried.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use hyper_util::rt::TokioExecutor;
/// use poolscope::Client;
///
/// let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
///     .pool_max_idle_per_host(8)
///     .pool_max_conns_per_host(32)
///     .build_http();
/// # drop(client);
/// ```
#[derive(Clone)]
pub struct Builder {
    exec: Exec,
    h1: http1::Builder,
    h2: http2::Builder<Exec>,
    http2_only: bool,
    retry_canceled_requests: bool,
    set_host: bool,
    pool: pool::Config,
    pool_timer: Option<crate::pool::PoolTimer>,
    proxy: Option<crate::connect::Proxy>,
    telemetry: TelemetryConfig,
}

impl Builder {
    /// A builder whose connection tasks run on `executor`.
    pub fn new<E>(executor: E) -> Builder
    where
        E: hyper::rt::Executor<BoxSendFuture> + Send + Sync + Clone + 'static,
    {
        let exec = Exec::new(executor);
        Builder {
            h1: http1::Builder::new(),
            h2: http2::Builder::new(exec.clone()),
            exec,
            http2_only: false,
            retry_canceled_requests: true,
            set_host: true,
            pool: pool::Config::default(),
            pool_timer: None,
            proxy: None,
            telemetry: TelemetryConfig::default(),
        }
    }

    // ----- pool -------------------------------------------------------------------------

    /// How long an idle connection is kept. `None` keeps it forever. Default: 90 s.
    ///
    /// Unlike hyper-util, no `pool_timer` is needed: by default the reaper sleeps on tokio's
    /// timer (see [`pool_timer`](Self::pool_timer)).
    pub fn pool_idle_timeout<D>(&mut self, val: D) -> &mut Self
    where
        D: Into<Option<Duration>>,
    {
        self.pool.idle_timeout = val.into();
        self
    }

    /// Idle connections kept per host. Default: `usize::MAX` (no limit). `0` disables reuse.
    pub fn pool_max_idle_per_host(&mut self, max_idle: usize) -> &mut Self {
        self.pool.max_idle_per_host = (max_idle != usize::MAX).then_some(max_idle);
        self
    }

    /// Deprecated name of [`pool_max_idle_per_host`](Builder::pool_max_idle_per_host).
    #[doc(hidden)]
    #[deprecated(note = "renamed to `pool_max_idle_per_host`")]
    pub fn max_idle_per_host(&mut self, max_idle: usize) -> &mut Self {
        self.pool_max_idle_per_host(max_idle)
    }

    /// Idle connections kept across all hosts; the least recently used is closed beyond it
    /// (Go's `MaxIdleConns`). Default: no limit. poolscope only.
    pub fn pool_max_idle(&mut self, max_idle: usize) -> &mut Self {
        self.pool.max_idle = Some(max_idle);
        self
    }

    /// Connections per host, dialing + active + idle; requests beyond it wait in FIFO order
    /// (Go's `MaxConnsPerHost`). Default: no limit; 0 also means no limit, as in Go.
    /// poolscope only.
    pub fn pool_max_conns_per_host(&mut self, max: usize) -> &mut Self {
        self.pool.max_conns_per_host = Some(max);
        self
    }

    /// How long a connection may live before it is closed instead of reused. Default: none.
    /// poolscope only.
    pub fn pool_max_lifetime<D>(&mut self, val: D) -> &mut Self
    where
        D: Into<Option<Duration>>,
    {
        self.pool.max_lifetime = val.into();
        self
    }

    /// How long a request may wait for a connection before failing with
    /// [`Error::is_pool_timeout`](super::Error::is_pool_timeout) (the error carries a pool
    /// snapshot). Default: none. poolscope only.
    pub fn pool_wait_timeout<D>(&mut self, val: D) -> &mut Self
    where
        D: Into<Option<Duration>>,
    {
        self.pool.wait_timeout = val.into();
        self
    }

    /// The timer the pool's deadlines sleep on: the idle reaper's passes, the
    /// [`pool_wait_timeout`](Self::pool_wait_timeout), the pause between retries. Default:
    /// tokio's, when the client runs in a tokio runtime with its time driver (hyper-util
    /// needs this set to reap idle connections at all; poolscope does not). Without a timer
    /// (a runtime built without `enable_time`), no reaper runs, expired idle connections are
    /// dropped when a checkout finds them, a wait timeout is checked only when the request is
    /// polled, and retries do not pause.
    pub fn pool_timer<M>(&mut self, timer: M) -> &mut Self
    where
        M: Timer + Clone + Send + Sync + 'static,
    {
        self.pool_timer = Some(std::sync::Arc::new(timer));
        self
    }

    /// The timer hyper uses for HTTP/2 keep-alive pings (hyper's HTTP/1 client has no timer).
    pub fn timer<M>(&mut self, timer: M) -> &mut Self
    where
        M: Timer + Send + Sync + 'static,
    {
        self.h2.timer(timer);
        self
    }

    // ----- telemetry --------------------------------------------------------------------

    /// poolscope's own telemetry settings: hooks, the in-flight registry, the event history,
    /// metrics, spans. Returns a mutable view of them, as hyper-util's `server::conn::auto`
    /// builder does for HTTP/1 and HTTP/2; hyper-util's own settings stay flat here.
    ///
    /// ```
    /// # use bytes::Bytes;
    /// # use http_body_util::Full;
    /// # use hyper_util::rt::TokioExecutor;
    /// use poolscope::{Client, Stats};
    ///
    /// let stats = Stats::builder()
    ///     .on_max_conns_per_host_hit(|snapshot| eprintln!("{snapshot}"))
    ///     .build();
    /// let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
    ///     .pool_max_conns_per_host(32)
    ///     .telemetry()
    ///     .stats(stats)
    ///     .event_history(256)
    ///     .build_http();
    /// # drop(client);
    /// ```
    pub fn telemetry(&mut self) -> TelemetryBuilder<'_> {
        TelemetryBuilder { inner: self }
    }

    // ----- client behaviour -------------------------------------------------------------

    /// Retry a request that was never written because its connection closed first (hyper
    /// handed it back unsent), whatever its method. Default: `true`.
    pub fn retry_canceled_requests(&mut self, val: bool) -> &mut Self {
        self.retry_canceled_requests = val;
        self
    }

    /// Send requests through the proxy `proxy` chooses for their origin (none for an origin
    /// it does not intercept): `Proxy::from_env()` reads the proxy variables as curl and Go's
    /// `ProxyFromEnvironment` do. Default: no proxy, as hyper-util (Go's `Transport` defaults
    /// to the environment; set it to get that).
    ///
    /// The proxy is part of the pool key (shown as `… via host:port`): connections through
    /// different proxies, or one proxy with other credentials, are never shared. The dial
    /// through it needs poolscope's [`HttpConnector`](crate::connect::HttpConnector) or
    /// [`HttpsConnector`](crate::connect::HttpsConnector) (over any connector beneath);
    /// another connector fails the dial with a `proxy` error rather than going direct.
    /// poolscope only.
    pub fn proxy(&mut self, proxy: crate::connect::Proxy) -> &mut Self {
        self.proxy = Some(proxy);
        self
    }

    /// Add a `Host` header from the URI when the request has none. Default: `true`.
    pub fn set_host(&mut self, val: bool) -> &mut Self {
        self.set_host = val;
        self
    }

    /// Speak HTTP/2 only (prior knowledge for `http://`). Default: `false`.
    pub fn http2_only(&mut self, val: bool) -> &mut Self {
        self.http2_only = val;
        self
    }

    /// Build a client with poolscope's [`HttpConnector`].
    pub fn build_http<B>(&self) -> Client<HttpConnector, B>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
    {
        let mut connector = HttpConnector::new();
        // As hyper-util: with reuse on, TCP keepalive probes idle sockets after the pool's
        // idle timeout.
        if self.pool.max_idle_per_host != Some(0) {
            connector.set_keepalive(self.pool.idle_timeout);
        }
        self.build(connector)
    }

    /// Build a client with `connector`: any `tower_service::Service<Uri>` whose connections
    /// implement hyper's `Read + Write` and hyper-util's `Connection` (hyper-util's own
    /// `HttpConnector` works as is).
    pub fn build<C, B>(&self, connector: C) -> Client<C, B>
    where
        C: Clone,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
    {
        let t = &self.telemetry;
        let history = (t.event_history > 0)
            .then(|| std::sync::Arc::new(History::new(t.event_history, t.redact_url.clone())));
        let mut stats = t.stats.clone();
        if let Some(h) = &history {
            stats = stats.with_sink(h.clone());
        }
        let metrics =
            crate::metrics::Metrics::build(t.metrics, &t.known_methods, t.metrics_idle_timeout);
        let mut metrics_trace = None;
        if let Some(m) = &metrics {
            stats = stats.with_sink(crate::metrics::pool_sink(m));
            metrics_trace = Some(crate::metrics::dial_trace(m));
        }
        if let Some(sink) = crate::spans::pool_events(t.levels.pool) {
            stats = stats.with_sink(sink);
        }
        Client {
            shared: std::sync::Arc::new(Shared {
                pool: Pool::with_timer(self.pool.clone(), stats, self.pool_timer.clone()),
                inflight: t.track_in_flight.then(|| {
                    std::sync::Arc::new(Registry::with_redaction(
                        t.capture_stacks,
                        t.redact_url.clone(),
                    ))
                }),
                history,
                dial: DialConfig {
                    h1: self.h1.clone(),
                    h2: self.h2.clone(),
                    http2_only: self.http2_only,
                    exec: self.exec.clone(),
                    tcp_info: t.snapshot_tcp_info,
                },
                trace: t.trace.clone(),
                metrics_trace,
                metrics,
                retry_canceled_requests: self.retry_canceled_requests,
                set_host: self.set_host,
                next_request: std::sync::atomic::AtomicU64::new(1),
                redact: t.redact_url.clone(),
                methods: t.known_methods.clone(),
                levels: t.levels,
                inject: t.inject.clone(),
                origins: super::origin::Origins::new(self.proxy.clone()),
            }),
            connector,
        }
    }
}

macro_rules! delegate {
    ($( $(#[$doc:meta])* $name:ident($arg:ident: $ty:ty) => $b:ident.$target:ident($conv:expr) ),* $(,)?) => {
        impl Builder {
            $(
                $(#[$doc])*
                pub fn $name(&mut self, $arg: $ty) -> &mut Self {
                    self.$b.$target($conv);
                    self
                }
            )*
        }
    };
}

delegate! {
    /// The exact size of the HTTP/1 read buffer (unsets `http1_max_buf_size`). Default: adaptive.
    http1_read_buf_exact_size(sz: usize) => h1.read_buf_exact_size(Some(sz)),
    /// The maximum HTTP/1 read buffer size. Default: about 400 KiB.
    http1_max_buf_size(max: usize) => h1.max_buf_size(max),
    /// Accept spaces between a header name and the colon in responses. Default: `false`.
    http1_allow_spaces_after_header_name_in_responses(val: bool) => h1.allow_spaces_after_header_name_in_responses(val),
    /// Accept obsolete multi-line headers in responses. Default: `false`.
    http1_allow_obsolete_multiline_headers_in_responses(val: bool) => h1.allow_obsolete_multiline_headers_in_responses(val),
    /// Ignore invalid headers in responses instead of failing. Default: `false`.
    http1_ignore_invalid_headers_in_responses(val: bool) => h1.ignore_invalid_headers_in_responses(val),
    /// Use vectored writes for HTTP/1. Default: auto.
    http1_writev(enabled: bool) => h1.writev(enabled),
    /// Write HTTP/1 header names in Title-Case. Default: `false`.
    http1_title_case_headers(val: bool) => h1.title_case_headers(val),
    /// Keep the case of HTTP/1 header names as received/sent. Default: `false`.
    http1_preserve_header_case(val: bool) => h1.preserve_header_case(val),
    /// The maximum number of headers in an HTTP/1 response. Default: 100.
    http1_max_headers(val: usize) => h1.max_headers(val),
    /// Accept HTTP/0.9 responses. Default: `false`.
    http09_responses(val: bool) => h1.http09_responses(val),
    /// HTTP/2: the limit of reset streams pending accept. Default: hyper's.
    http2_max_pending_accept_reset_streams(max: impl Into<Option<usize>>) => h2.max_pending_accept_reset_streams(max.into()),
    /// HTTP/2: the initial stream window size. Default: 2 MiB.
    http2_initial_stream_window_size(sz: impl Into<Option<u32>>) => h2.initial_stream_window_size(sz.into()),
    /// HTTP/2: the initial connection window size. Default: 5 MiB.
    http2_initial_connection_window_size(sz: impl Into<Option<u32>>) => h2.initial_connection_window_size(sz.into()),
    /// HTTP/2: the initial maximum of locally initiated streams. Default: hyper's.
    http2_initial_max_send_streams(initial: impl Into<Option<usize>>) => h2.initial_max_send_streams(initial),
    /// HTTP/2: adaptive flow control (overrides the window sizes). Default: `false`.
    http2_adaptive_window(enabled: bool) => h2.adaptive_window(enabled),
    /// HTTP/2: the maximum frame size. Default: hyper's.
    http2_max_frame_size(sz: impl Into<Option<u32>>) => h2.max_frame_size(sz),
    /// HTTP/2: the maximum header list size. Default: hyper's.
    http2_max_header_list_size(max: u32) => h2.max_header_list_size(max),
    /// HTTP/2: the HPACK header table size. Default: hyper's.
    http2_header_table_size(size: impl Into<Option<u32>>) => h2.header_table_size(size),
    /// HTTP/2: send keep-alive pings at this interval (needs a `timer`). Default: off.
    http2_keep_alive_interval(interval: impl Into<Option<Duration>>) => h2.keep_alive_interval(interval),
    /// HTTP/2: close the connection if a keep-alive ping is not answered in time. Default: 20 s.
    http2_keep_alive_timeout(timeout: Duration) => h2.keep_alive_timeout(timeout),
    /// HTTP/2: send keep-alive pings while no stream is open. Default: `false`.
    http2_keep_alive_while_idle(enabled: bool) => h2.keep_alive_while_idle(enabled),
    /// HTTP/2: the maximum of concurrently reset streams. Default: hyper's.
    http2_max_concurrent_reset_streams(max: usize) => h2.max_concurrent_reset_streams(max),
    /// HTTP/2: the maximum of locally reset streams before a GOAWAY. Default: hyper's.
    http2_max_local_error_reset_streams(max: impl Into<Option<usize>>) => h2.max_local_error_reset_streams(max),
    /// HTTP/2: the maximum write buffer per stream. Default: 1 MiB.
    http2_max_send_buf_size(max: usize) => h2.max_send_buf_size(max),
    /// HTTP/2: the maximum concurrent streams the peer may open. Default: hyper's.
    http2_max_concurrent_streams(max: impl Into<Option<u32>>) => h2.max_concurrent_streams(max),
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("http2_only", &self.http2_only)
            .field("retry_canceled_requests", &self.retry_canceled_requests)
            .field("set_host", &self.set_host)
            .field("pool", &self.pool)
            .field("telemetry", &self.telemetry)
            .finish()
    }
}
