//! Test support. For client tests: `client()`, `body()`, `eventually()` (and
//! `eventually_within()`), `closed_port()`, and the modules `events` (a trace recorder),
//! `server` (a loopback hyper server) and `nginx` (a real nginx). For the pool engine: a fake
//! connection (`TestConn`), checkout polling (`poll`, `expect_*`) and a Stats recorder
//! (`Recorder`).
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use poolscope::pool::{Checkout, ConnectKey, Error, Step};
use poolscope::stats::{CloseReason, IdleOutReason, WaitOutcome};
use poolscope::{PoolSnapshot, Stats};

pub mod apache;
pub mod events;
pub mod haproxy;
pub mod nginx;
pub mod node;
pub mod server;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioExecutor;
use poolscope::{Client, ResponseBody};

/// A client with poolscope's HTTP connector, configured by `f`.
pub fn client(
    f: impl FnOnce(&mut poolscope::Builder),
) -> Client<poolscope::connect::HttpConnector, Empty<Bytes>> {
    let mut b = Client::builder(TokioExecutor::new());
    f(&mut b);
    b.build_http()
}

/// Serves `poolscope::debug::service(client)` on a loopback port of its own; its address.
pub async fn serve_debug(
    client: Client<poolscope::connect::HttpConnector, Empty<Bytes>>,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let svc = poolscope::debug::service(client.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// Waits (at most 2 s) until `client` has no dial in progress: a dial still running has
/// been seen by the server (or proxy) but not yet by `on_conn_opened`.
#[allow(dead_code)]
pub async fn settle<C, B: Send + 'static>(client: &Client<C, B>) {
    for _ in 0..200 {
        if client.pool_snapshot().total_connecting() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("warning: the client still has a dial in progress after 2 s");
}

/// The whole body of `resp`.
pub async fn body(resp: http::Response<ResponseBody>) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}

/// Stats that count the connections a client opens, and the count.
pub fn counting_opened() -> (Stats, Arc<std::sync::atomic::AtomicU64>) {
    let opened = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let o = opened.clone();
    let stats = Stats::builder()
        .on_conn_opened(move |_| {
            o.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    (stats, opened)
}

/// An address where connects hang: a listener with a full accept backlog. Keep the returned
/// values alive while it is used.
pub async fn hanging_addr() -> (
    std::net::SocketAddr,
    socket2::Socket,
    Vec<tokio::net::TcpStream>,
) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    sock.listen(1).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    (addr, sock, fillers)
}

/// Waits until `f` holds, for at most 2 s.
pub async fn eventually(what: &str, f: impl Fn() -> bool) {
    eventually_within(what, Duration::from_secs(2), f).await;
}

/// Waits until `f` holds, checking every 10 ms for at most `limit`.
pub async fn eventually_within(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let step = Duration::from_millis(10);
    for _ in 0..limit.as_millis().div_ceil(step.as_millis()) {
        if f() {
            return;
        }
        tokio::time::sleep(step).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A loopback port where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

/// A fake connection: an id, an "open" flag the test can clear (the peer closed it), and
/// whether it is multiplexed (and how many more handles it gives, if limited: a server's
/// stream limit).
#[derive(Clone, Debug)]
pub struct TestConn {
    pub n: usize,
    pub open: Arc<AtomicBool>,
    pub shareable: bool,
    pub shares_left: Option<Arc<AtomicUsize>>,
    /// The peer's concurrent-stream limit, which the test may change (SETTINGS).
    pub max_streams: Option<Arc<AtomicUsize>>,
    /// While set, `is_open`, `share` and `max_concurrent` panic (user code that fails).
    pub explode: Arc<AtomicBool>,
}

static NEXT: AtomicUsize = AtomicUsize::new(1);

impl TestConn {
    pub fn new() -> TestConn {
        TestConn {
            n: NEXT.fetch_add(1, Ordering::Relaxed),
            open: Arc::new(AtomicBool::new(true)),
            shareable: false,
            shares_left: None,
            max_streams: None,
            explode: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn h2() -> TestConn {
        TestConn {
            shareable: true,
            ..TestConn::new()
        }
    }

    /// A multiplexed connection whose peer allows `n` concurrent streams.
    pub fn h2_limited(n: usize) -> TestConn {
        TestConn {
            max_streams: Some(Arc::new(AtomicUsize::new(n))),
            ..TestConn::h2()
        }
    }

    pub fn close(&self) {
        self.open.store(false, Ordering::Release);
    }
}

impl poolscope::pool::Poolable for TestConn {
    fn is_open(&self) -> bool {
        assert!(!self.explode.load(Ordering::Acquire), "is_open exploded");
        self.open.load(Ordering::Acquire)
    }

    fn share(&self) -> Option<Self> {
        assert!(!self.explode.load(Ordering::Acquire), "share exploded");
        if let Some(left) = &self.shares_left {
            left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .ok()?;
        }
        self.shareable.then(|| self.clone())
    }

    fn max_concurrent(&self) -> Option<usize> {
        self.max_streams.as_ref().map(|m| m.load(Ordering::Acquire))
    }
}

pub fn key(host: &str) -> ConnectKey {
    ConnectKey::new("http", host, 80)
}

/// Polls a checkout once with a no-op waker.
pub fn poll(c: &mut Checkout<TestConn>) -> Poll<Result<Step<TestConn>, Error>> {
    let mut cx = Context::from_waker(Waker::noop());
    c.poll_step(&mut cx)
}

/// One recorded Stats event, reduced to what tests compare.
#[derive(Debug, Clone, PartialEq)]
pub enum Ev {
    IdleWaitIn(String, usize),
    IdleWaitOut(String, usize, WaitOutcome),
    DialWaitIn(String, usize),
    DialWaitOut(String, usize, WaitOutcome),
    IdleIn(String, u64),
    IdleOut(String, u64, IdleOutReason),
    Reused(String, u64),
    MaxIdleHit(PoolSnapshot),
    MaxIdlePerHostHit(PoolSnapshot),
    MaxConnsPerHostHit(PoolSnapshot),
    Opened(String, u64),
    Closed(String, u64, CloseReason),
}

/// Records every Stats event in order.
#[derive(Clone, Default)]
pub struct Recorder {
    pub events: Arc<Mutex<Vec<Ev>>>,
    /// While set, the next hook call panics after recording its event (and clears it).
    pub panic_next: Arc<AtomicBool>,
}

impl Recorder {
    pub fn stats(&self) -> Stats {
        macro_rules! rec {
            ($s:expr, |$e:ident| $body:expr) => {{
                let ev = $s.events.clone();
                let armed = $s.panic_next.clone();
                move |$e: &_| {
                    ev.lock().unwrap_or_else(|p| p.into_inner()).push($body);
                    if armed.swap(false, Ordering::AcqRel) {
                        panic!("a Stats hook panicked (armed by the test)");
                    }
                }
            }};
        }
        Stats::builder()
            .on_idle_conn_wait_in(rec!(self, |e| Ev::IdleWaitIn(e.key.to_string(), e.waiters)))
            .on_idle_conn_wait_out(rec!(self, |e| Ev::IdleWaitOut(
                e.key.to_string(),
                e.waiters,
                e.outcome
            )))
            .on_conns_per_host_wait_in(rec!(self, |e| Ev::DialWaitIn(e.key.to_string(), e.waiters)))
            .on_conns_per_host_wait_out(rec!(self, |e| Ev::DialWaitOut(
                e.key.to_string(),
                e.waiters,
                e.outcome
            )))
            .on_idle_conn_in(rec!(self, |e| Ev::IdleIn(
                e.key.to_string(),
                e.conn_id.get()
            )))
            .on_idle_conn_out(rec!(self, |e| Ev::IdleOut(
                e.key.to_string(),
                e.conn_id.get(),
                e.reason
            )))
            .on_conn_reused(rec!(self, |e| Ev::Reused(
                e.key.to_string(),
                e.conn_id.get()
            )))
            .on_max_idle_conns_hit(rec!(self, |s| Ev::MaxIdleHit(s.clone())))
            .on_max_idle_conns_per_host_hit(rec!(self, |s| Ev::MaxIdlePerHostHit(s.clone())))
            .on_max_conns_per_host_hit(rec!(self, |s| Ev::MaxConnsPerHostHit(s.clone())))
            .on_conn_opened(rec!(self, |e| Ev::Opened(
                e.key.to_string(),
                e.conn_id.get()
            )))
            .on_conn_closed(rec!(self, |e| Ev::Closed(
                e.key.to_string(),
                e.conn_id.get(),
                e.reason
            )))
            .build()
    }

    pub fn take(&self) -> Vec<Ev> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }

    pub fn all(&self) -> Vec<Ev> {
        self.events.lock().unwrap().clone()
    }

    pub fn count(&self, pred: impl Fn(&Ev) -> bool) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| pred(e))
            .count()
    }

    /// Asserts every in/out pair balances and every opened connection closed.
    /// Whether every in has its out (waits, idle, opened/closed).
    pub fn is_balanced(&self) -> bool {
        let c = |p: fn(&Ev) -> bool| self.count(p);
        c(|e| matches!(e, Ev::IdleWaitIn(..))) == c(|e| matches!(e, Ev::IdleWaitOut(..)))
            && c(|e| matches!(e, Ev::DialWaitIn(..))) == c(|e| matches!(e, Ev::DialWaitOut(..)))
            && c(|e| matches!(e, Ev::IdleIn(..))) == c(|e| matches!(e, Ev::IdleOut(..)))
            && c(|e| matches!(e, Ev::Opened(..))) == c(|e| matches!(e, Ev::Closed(..)))
    }

    /// Waits (at most 2 s) until the events balance, then says which pair does not.
    pub async fn assert_balanced_eventually(&self) {
        for _ in 0..200 {
            if self.is_balanced() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.assert_balanced();
    }

    pub fn assert_balanced(&self) {
        let c = |p: fn(&Ev) -> bool| self.count(p);
        assert_eq!(
            c(|e| matches!(e, Ev::IdleWaitIn(..))),
            c(|e| matches!(e, Ev::IdleWaitOut(..))),
            "idle wait in/out"
        );
        assert_eq!(
            c(|e| matches!(e, Ev::DialWaitIn(..))),
            c(|e| matches!(e, Ev::DialWaitOut(..))),
            "conns-per-host wait in/out"
        );
        assert_eq!(
            c(|e| matches!(e, Ev::IdleIn(..))),
            c(|e| matches!(e, Ev::IdleOut(..))),
            "idle conn in/out"
        );
        assert_eq!(
            c(|e| matches!(e, Ev::Opened(..))),
            c(|e| matches!(e, Ev::Closed(..))),
            "opened/closed"
        );
    }
}

pub fn expect_dial(c: &mut Checkout<TestConn>) -> poolscope::pool::Connecting<TestConn> {
    match poll(c) {
        Poll::Ready(Ok(Step::Dial(p))) => p,
        other => panic!("expected a dial permit, got {}", describe(&other)),
    }
}

pub fn expect_ready(c: &mut Checkout<TestConn>) -> poolscope::pool::Pooled<TestConn> {
    match poll(c) {
        Poll::Ready(Ok(Step::Ready(p))) => p,
        other => panic!("expected a connection, got {}", describe(&other)),
    }
}

pub fn expect_pending(c: &mut Checkout<TestConn>) {
    let p = poll(c);
    assert!(p.is_pending(), "expected pending, got {}", describe(&p));
}

pub fn expect_err(c: &mut Checkout<TestConn>) -> Error {
    match poll(c) {
        Poll::Ready(Err(e)) => e,
        other => panic!("expected an error, got {}", describe(&other)),
    }
}

fn describe(p: &Poll<Result<Step<TestConn>, Error>>) -> String {
    match p {
        Poll::Pending => "pending".into(),
        Poll::Ready(Ok(Step::Dial(d))) => format!("dial {:?}", d.id()),
        Poll::Ready(Ok(Step::Ready(c))) => format!("conn {:?}", c.info()),
        Poll::Ready(Err(e)) => format!("error {e}"),
    }
}

/// With `POOLSCOPE_TEST_LOG=FILE` set, writes the `tracing` events of h2 and poolscope (each
/// HTTP/2 frame sent and received, at debug level) to FILE, once per test process, each line
/// naming its connection by its addresses. For digging into a failure, not for asserting.
#[allow(dead_code)]
pub fn log_from_env() {
    use tracing_subscriber::layer::SubscriberExt;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Some(path) = std::env::var_os("POOLSCOPE_TEST_LOG") else {
            return;
        };
        let file = match std::fs::File::create(&path) {
            Ok(f) => f,
            Err(e) => panic!("POOLSCOPE_TEST_LOG={path:?}: {e}"),
        };
        let filter = tracing_subscriber::EnvFilter::new("h2=debug,poolscope=debug");
        let subscriber = tracing_subscriber::registry()
            .with(filter)
            .with(ConnLog(Mutex::new(std::io::BufWriter::new(file))));
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// The label of the connection a span belongs to (poolscope's `h2_connection` span's fields,
/// copied onto h2's own `Connection` span, which h2 makes without a parent).
#[derive(Clone)]
struct ConnLabel(String);

/// Writes each event with its connection's label.
struct ConnLog(Mutex<std::io::BufWriter<std::fs::File>>);

#[derive(Default)]
struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl<S> tracing_subscriber::Layer<S> for ConnLog
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else { return };
        let label = if span.name() == "h2_connection" {
            let mut f = Fields::default();
            attrs.record(&mut f);
            Some(ConnLabel(f.0))
        } else {
            // h2's connection span is a root: take the label of the span current when it
            // was made (poolscope's, during the handshake), else of its parents.
            ctx.lookup_current()
                .into_iter()
                .chain(span.scope().skip(1))
                .find_map(|s| s.extensions().get::<ConnLabel>().cloned())
        };
        if let Some(label) = label {
            span.extensions_mut().insert(label);
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        use std::io::Write;
        let label = ctx
            .event_scope(event)
            .and_then(|mut scope| scope.find_map(|s| s.extensions().get::<ConnLabel>().cloned()))
            .map_or_else(|| "-".to_owned(), |l| l.0);
        let mut f = Fields::default();
        event.record(&mut f);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut out = self.0.lock().unwrap();
        let _ = writeln!(
            out,
            "{}.{:06} {:?} [{label}] {}:{}",
            now.as_secs(),
            now.subsec_micros(),
            std::thread::current().id(),
            event.metadata().target(),
            f.0
        );
        let _ = out.flush();
    }
}

/// The pool tests' key (`key("a")`) as the events render it.
pub const H: &str = "http://a:80";

/// A pool with `cfg` and a recorder of its events.
pub fn pool_with(cfg: poolscope::pool::Config) -> (poolscope::pool::Pool<TestConn>, Recorder) {
    let rec = Recorder::default();
    (poolscope::pool::Pool::with_stats(cfg, rec.stats()), rec)
}

/// A config with `max_conns_per_host = n`.
pub fn cap(n: usize) -> poolscope::pool::Config {
    poolscope::pool::Config {
        max_conns_per_host: Some(n),
        ..poolscope::pool::Config::default()
    }
}
