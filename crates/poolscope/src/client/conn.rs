//! The pooled connection (`PoolClient`): hyper's `SendRequest` for HTTP/1 or HTTP/2, what the
//! connector told us about it (`ConnFacts`, with the HTTP/1 connection's `IoEvents`, whose IO
//! wrapper is `connect::Stream`), and the gate requests pass to reach hyper's dispatcher.
//!
//! Also the dial: run the connector with the requesting tracer in scope, handshake, and spawn
//! the connection's driver task.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::sync::Mutex;
use std::task::{Context, Poll};

use http::{Extensions, Uri, Version};
use hyper::client::conn::{http1, http2};
use hyper::rt::{Read, Write};
use hyper_util::client::legacy::connect::{Connection, HttpInfo};

use super::body::ReqBody;
use super::exec::{Exec, Held};
use super::Error;
use crate::connect::ConnInfo;
use crate::pool::{BoxError, Poolable};
use crate::spans::{SetupSpan, SpanHandle};
use crate::trace::io::IoEvents;
use crate::trace::{TlsInfo, Tracer, DIAL_TRACER};

/// What we know of a connection, shared by all its handles.
pub(crate) struct ConnFacts {
    pub(crate) version: Version,
    pub(crate) remote_addr: Option<SocketAddr>,
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) tls: Option<TlsInfo>,
    /// How the dial picked `remote_addr` (poolscope's connectors).
    pub(crate) dial: Option<crate::stats::DialSummary>,
    /// The socket, for `TCP_INFO` in snapshots (`Builder::snapshot_tcp_info`).
    pub(crate) probe: Option<Arc<crate::connect::stream::TcpProbe>>,
    /// The connector said it reached a proxy (`Connected::proxy`): HTTP/1 requests go out in
    /// absolute form.
    pub(crate) proxied: bool,
    /// A forward proxy's `Proxy-Authorization`, for every request on the connection.
    /// (Boxed: it is rare, and it keeps this struct at its size before the snapshot facts
    /// above were added; see `docs/benchmarks.md`, seventh session.)
    pub(crate) proxy_auth: Option<Box<http::HeaderValue>>,
    /// What the connector attached (`Connected::extra`, poolscope's own `ConnInfo` taken out),
    /// copied into every response's extensions as hyper-util does; `None` when nothing.
    pub(crate) extras: Option<Extensions>,
    /// Per-request IO events (HTTP/1 on poolscope's own `Stream` only: one request at a
    /// time).
    pub(crate) io: Option<Arc<IoEvents>>,
    /// HTTP/2: the peer's current `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub(crate) streams: Option<StreamLimit>,
    /// What requests pass to be handed to hyper's dispatcher.
    pub(crate) gate: Arc<Gate>,
    /// `ConnectionInfo::poison` was called: no request may get it any more.
    pub(crate) poisoned: AtomicBool,
    /// The dial's `connection_setup` span, until the first request that gets the connection
    /// links to it (which ends it).
    pub(crate) setup: Mutex<Option<SetupSpan>>,
}

impl ConnFacts {
    /// The `connection_setup` span, for the first request that asks.
    pub(crate) fn take_setup_span(&self) -> Option<SetupSpan> {
        self.setup.lock().take()
    }
}

impl crate::pool::Describe for ConnFacts {
    fn describe(&self, row: &mut crate::stats::ConnSnapshot) {
        row.version = self.version;
        row.local_addr = self.local_addr;
        row.peer_addr = self.remote_addr;
        row.dial = self.dial;
        row.tcp = self.probe.as_ref().and_then(|p| p.read());
    }
}

/// Reads an HTTP/2 connection's current stream limit (hyper's
/// `Connection::current_max_send_streams`: the server's setting once its SETTINGS arrived,
/// until then hyper's initial assumption of 100, as Go assumes). The connection future is
/// shared with its driver task: the driver stores the limit after each poll, and a reader
/// that finds the driver polling uses that stored value.
pub(crate) struct StreamLimit {
    read: Box<dyn Fn() -> Option<usize> + Send + Sync>,
    last: Arc<AtomicUsize>,
}

impl StreamLimit {
    fn current(&self) -> usize {
        match (self.read)() {
            Some(n) => {
                self.last.store(n, Ordering::Relaxed);
                n
            }
            None => self.last.load(Ordering::Relaxed),
        }
    }
}

/// The way into a connection's dispatcher (HTTP/1 and HTTP/2), closed when the dispatcher
/// ends.
///
/// hyper hands requests to its dispatcher through a tokio mpsc queue. When the dispatcher
/// ends, the queue is dropped and drains itself: each request still in it is handed back
/// unsent. But the drain stops at a slot that a sender on another thread has reserved and
/// not yet written, so a request being put in the queue at that moment (and every one after
/// it) stays there, answered by nobody: it waits forever, and its own handle to the
/// connection keeps the queue alive. On HTTP/1 this is the keep-alive close race: a request
/// sent on an idle connection just as the server closes it (seen against nginx and Node.js
/// with a 100 ms keep-alive timeout: about 1 request in 5,000 hung); on HTTP/2, requests
/// handed over as a GOAWAY ends the dispatcher (1 to 16 hanging in about 1 of 200 runs of
/// `tests/nginx_h2.rs`). hyper-util's client hands requests over the same way, and hangs
/// the same way (`docs/reliability.md`).
///
/// Requests are handed over under the read side; the dispatcher is dropped under the write
/// side ([`Guarded`]), whether it ended or its task was dropped. So a request either finds
/// the gate closed (and goes to another connection, unsent) or is wholly in the queue before
/// the queue is drained.
#[derive(Default)]
pub(crate) struct Gate(crate::sync::RwLock<bool>);

impl Gate {
    /// Hands `request` over unless the dispatcher has ended (then it comes back).
    pub(crate) fn pass<T, R>(&self, request: T, hand_over: impl FnOnce(T) -> R) -> Result<R, T> {
        let closed = self.0.read();
        if *closed {
            Err(request)
        } else {
            Ok(hand_over(request))
        }
    }

    /// Closes the gate and, with it closed to others, runs `end`.
    fn close(&self, end: impl FnOnce()) {
        let mut closed = self.0.write();
        *closed = true;
        end();
    }
}

/// A connection future (hyper's dispatcher) that is dropped behind its [`Gate`]: as soon as
/// it completes, or when this is dropped first (its task cancelled, its runtime shut down).
struct Guarded<F> {
    fut: Option<Pin<Box<F>>>,
    gate: Arc<Gate>,
}

impl<F: Future> Guarded<F> {
    fn new(fut: F, gate: Arc<Gate>) -> Guarded<F> {
        Guarded {
            fut: Some(Box::pin(fut)),
            gate,
        }
    }

    /// Polls the future; once it completes it is dropped behind the gate. `Pending` after.
    fn poll_guarded(&mut self, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(fut) = self.fut.as_mut() else {
            return Poll::Pending;
        };
        let out = std::task::ready!(fut.as_mut().poll(cx));
        self.end();
        Poll::Ready(out)
    }

    fn get(&self) -> Option<&F> {
        self.fut.as_deref()
    }
}

impl<F> Guarded<F> {
    /// Drops the future behind the gate, if it is still here.
    fn end(&mut self) {
        if let Some(fut) = self.fut.take() {
            // Its queue is dropped here, each request in it handed back.
            self.gate.close(|| drop(fut));
        }
    }
}

impl<F: Future> Future for Guarded<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // `Guarded` is `Unpin`: the future is boxed.
        self.get_mut().poll_guarded(cx)
    }
}

impl<F> Drop for Guarded<F> {
    fn drop(&mut self) {
        self.end();
    }
}

pub(crate) enum Tx<B> {
    H1(http1::SendRequest<ReqBody<B>>),
    H2(http2::SendRequest<ReqBody<B>>),
}

/// A connection as the pool holds it.
pub(crate) struct PoolClient<B> {
    pub(crate) tx: Tx<B>,
    pub(crate) facts: Arc<ConnFacts>,
}

impl<B: Send + 'static> Poolable for PoolClient<B> {
    fn is_open(&self) -> bool {
        if self.facts.poisoned.load(Ordering::Acquire) {
            return false;
        }
        match &self.tx {
            Tx::H1(tx) => !tx.is_closed(),
            Tx::H2(tx) => !tx.is_closed(),
        }
    }

    fn share(&self) -> Option<Self> {
        match &self.tx {
            Tx::H1(_) => None,
            Tx::H2(tx) => Some(PoolClient {
                tx: Tx::H2(tx.clone()),
                facts: self.facts.clone(),
            }),
        }
    }

    fn max_concurrent(&self) -> Option<usize> {
        self.facts.streams.as_ref().map(StreamLimit::current)
    }

    fn describe(&self) -> Option<Arc<dyn crate::pool::Describe>> {
        Some(self.facts.clone())
    }
}

impl<B> PoolClient<B> {
    pub(crate) fn is_http2(&self) -> bool {
        matches!(self.tx, Tx::H2(_))
    }
}

// ----- dialing ----------------------------------------------------------------------------

/// The HTTP settings a dial needs.
#[derive(Clone)]
pub(crate) struct DialConfig {
    pub(crate) h1: http1::Builder,
    pub(crate) h2: http2::Builder<Exec>,
    pub(crate) http2_only: bool,
    pub(crate) exec: Exec,
    /// Keep a handle for reading `TCP_INFO` in snapshots (`Builder::snapshot_tcp_info`).
    pub(crate) tcp_info: bool,
}

/// Dials `uri` with `connector` (the requesting tracer in scope for DNS/connect/TLS events),
/// performs the HTTP/1 or HTTP/2 handshake and spawns the connection's driver task.
pub(crate) async fn dial<C, B>(
    mut connector: C,
    uri: Uri,
    cfg: DialConfig,
    tracer: Option<Arc<Tracer>>,
    via: Option<Arc<crate::connect::proxy::Via>>,
    on_close: impl FnOnce() + Send + 'static,
) -> Result<PoolClient<B>, BoxError>
where
    C: crate::connect::Connect,
    B: crate::connect::RequestBody,
{
    let target = uri
        .authority()
        .map(|a| a.as_str().rsplit('@').next().unwrap_or("").to_owned());
    let connect = async {
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(Into::into)?;
        connector.call(uri).await.map_err(Into::into)
    };
    let proxy = via.as_ref().map(|v| v.name.clone());
    let (io, untaken) =
        crate::connect::proxy::dialing_via(via, DIAL_TRACER.scope(tracer, connect)).await;
    let io: C::Response = io?;
    if let (true, Some(proxy)) = (untaken, proxy) {
        // The connector went direct: the request must not look proxied when it was not.
        return Err(Box::new(crate::connect::ConnectError::new(
            crate::connect::ConnectPhase::Proxy,
            format!(
                "the connector does not route through proxies (the client's proxy for this \
                 origin is {proxy}): Builder::proxy needs poolscope's HttpConnector or \
                 HttpsConnector"
            ),
        )));
    }
    let connected = io.connected();
    let mut extras = Extensions::new();
    connected.get_extras(&mut extras);
    // poolscope's own connectors attach `ConnInfo` for `GotConnInfo`; it is taken out here,
    // so their responses carry nothing extra (the facts are in the trace) and cost no copy.
    let proxy_auth = extras
        .remove::<crate::connect::stream::ProxyAuthorization>()
        .map(|a| Box::new(a.0));
    let (remote_addr, local_addr, tls, dial) = if let Some(info) = extras.remove::<ConnInfo>() {
        (
            Some(info.remote_addr),
            Some(info.local_addr),
            info.tls,
            info.dial,
        )
    } else if let Some(info) = extras.get::<HttpInfo>() {
        (
            Some(info.remote_addr()),
            Some(info.local_addr()),
            None,
            None,
        )
    } else {
        (None, None, None, None)
    };
    let h2 = cfg.http2_only || connected.is_negotiated_h2();
    let proxied = connected.is_proxied();
    let handshake_err = |e: hyper::Error| -> BoxError {
        let err = Error::new(super::error::Kind::Connect(None)).with(e);
        Box::new(match &target {
            Some(t) => err.target(t.clone()),
            None => err,
        })
    };
    // The IO goes to hyper as the connector made it, so that after an upgrade
    // `Upgraded::downcast` finds the connector's type. Only poolscope's own `Stream` stamps
    // the write and first-byte moments of HTTP/1 requests; on other connectors they are
    // taken when the body ends and when the response head arrives (as for HTTP/2).
    let span = h2.then(|| crate::spans::h2_connection_span(local_addr, remote_addr));
    let (handshaken, events, probe) = match crate::connect::Stream::downcast_from(io) {
        Ok(mut stream) => {
            let probe = if cfg.tcp_info {
                stream.tcp_probe()
            } else {
                None
            };
            let events = (!h2).then(|| {
                let events = Arc::new(IoEvents::new());
                stream.set_events(events.clone());
                events
            });
            (handshake(stream, &cfg, on_close, span).await, events, probe)
        }
        Err(io) => (handshake(io, &cfg, on_close, span).await, None, None),
    };
    let (tx, streams, gate) = handshaken.map_err(handshake_err)?;
    Ok(PoolClient {
        tx,
        facts: Arc::new(ConnFacts {
            version: if h2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            },
            remote_addr,
            local_addr,
            tls,
            dial,
            probe,
            proxied,
            proxy_auth,
            extras: (!extras.is_empty()).then_some(extras),
            io: events,
            streams,
            gate,
            poisoned: AtomicBool::new(false),
            setup: Mutex::new(None),
        }),
    })
}

/// Performs the HTTP/1 or HTTP/2 handshake on `io` and spawns the connection's driver task;
/// for HTTP/1, waits until the connection can take a request (a connection that fails first
/// reports the connection task's own error, as hyper-util does since its PR 184).
/// `span`: the HTTP/2 connection's (for HTTP/2), `None` for HTTP/1.
async fn handshake<I, B>(
    io: I,
    cfg: &DialConfig,
    on_close: impl FnOnce() + Send + 'static,
    span: Option<SpanHandle>,
) -> Result<(Tx<B>, Option<StreamLimit>, Arc<Gate>), hyper::Error>
where
    I: Read + Write + Unpin + Send + 'static,
    B: crate::connect::RequestBody,
{
    if let Some(span) = span {
        // h2's connection task (frames in and out) is polled by this connection's driver,
        // with hyper's dispatcher, never beside it on another thread (see `Held`).
        let held = Held::default();
        let (tx, conn) = held.during(span.instrument(cfg.h2.handshake(io))).await?;
        let mut frames = held.take();
        let last = Arc::new(AtomicUsize::new(conn.current_max_send_streams()));
        let gate = Arc::new(Gate::default());
        // Dropped by the driver as soon as it completes, or with the driver's task: hyper's
        // dispatcher lives in it, and while it lives `SendRequest` does not see the
        // connection closed. Shared with the stream-limit reader.
        let conn = Arc::new(Mutex::new(Guarded::new(conn, gate.clone())));
        let (driver, stored) = (EndOnDrop(conn.clone()), last.clone());
        let mut on_close = Some(on_close);
        // Polls the dispatcher (dropped behind the gate once it completes); whether it lives.
        let poll_dispatcher = move |cx: &mut Context<'_>| {
            let mut conn = driver.0.lock();
            if conn.poll_guarded(cx).is_pending() {
                if let Some(c) = conn.get() {
                    stored.store(c.current_max_send_streams(), Ordering::Relaxed);
                }
            }
            conn.get().is_some()
        };
        cfg.exec.execute(std::future::poll_fn(move |cx| {
            span.in_scope(|| {
                // The dispatcher, then the frames. h2 does not wake the dispatcher for a GOAWAY
                // the frames read: it ends when next polled, and a request handed over then comes
                // back unsent and goes elsewhere (`not_sent`). Polling the dispatcher again after
                // the frames would end it at once, but it cost ~1k instructions per h2c request
                // (3%), for fewer such retries only (`docs/reliability.md`).
                let dispatching = poll_dispatcher(cx);
                if let Some(f) = frames.as_mut() {
                    if f.as_mut().poll(cx).is_ready() {
                        frames = None;
                    }
                }
                if !dispatching {
                    // The connection takes no more requests: if it sits in the pool, it leaves
                    // now. Its streams in flight go on until they end.
                    if let Some(f) = on_close.take() {
                        f();
                    }
                }
                if dispatching || frames.is_some() {
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
        }));
        let streams = StreamLimit {
            read: Box::new(move || {
                let conn = conn.try_lock()?;
                conn.get().map(|c| c.current_max_send_streams())
            }),
            last,
        };
        return Ok((Tx::H2(tx), Some(streams), gate));
    }
    let (mut tx, conn) = cfg.h1.handshake(io).await?;
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<hyper::Error>();
    let gate = Arc::new(Gate::default());
    // With upgrades, a 101 or a successful CONNECT hands the IO to
    // `hyper::upgrade::on(response)`; the connection is then gone from the pool.
    let conn = Guarded::new(conn.with_upgrades(), gate.clone());
    cfg.exec.execute(async move {
        if let Err(e) = conn.await {
            let _ = failed_tx.send(e);
        }
        // The connection is gone: if it sits idle in the pool, it leaves now.
        on_close();
    });
    match tx.ready().await {
        Ok(()) => Ok((Tx::H1(tx), None, gate)),
        Err(e) if e.is_closed() => Err(failed_rx.await.unwrap_or(e)),
        Err(e) => Err(e),
    }
}

/// Ends a shared [`Guarded`] dispatcher when dropped: the HTTP/2 driver's task holds it, so
/// a task dropped before the dispatcher completed (its runtime shut down) still hands back
/// every queued request.
struct EndOnDrop<F>(Arc<Mutex<Guarded<F>>>);

impl<F> Drop for EndOnDrop<F> {
    fn drop(&mut self) {
        self.0.lock().end();
    }
}

#[cfg(test)]
mod tests {
    use super::Gate;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    /// A value that counts its drop.
    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Races one send into a tokio mpsc queue (hyper's dispatcher queue) against the queue's
    /// receiver being dropped, `rounds` times; how many sent values were left in the queue,
    /// neither handed back nor dropped by the receiver's drain (each would be a request
    /// waiting forever).
    fn stranded(rounds: usize, gated: bool) -> usize {
        let mut stranded = 0;
        for _ in 0..rounds {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Counted>();
            let gate = Arc::new(Gate::default());
            let drops = Arc::new(AtomicUsize::new(0));
            let start = Arc::new(Barrier::new(2));
            let sender = {
                let (gate, drops, start) = (gate.clone(), drops.clone(), start.clone());
                std::thread::spawn(move || {
                    let value = Counted(drops);
                    start.wait();
                    if gated {
                        match gate.pass(value, |v| tx.send(v).map_err(|e| e.0)) {
                            // Handed back (the gate was closed, or the queue was): not left.
                            Err(v) | Ok(Err(v)) => drop(v),
                            Ok(Ok(())) => {}
                        }
                    } else if let Err(e) = tx.send(value) {
                        drop(e.0);
                    }
                    tx
                })
            };
            start.wait();
            if gated {
                gate.close(|| drop(rx));
            } else {
                drop(rx);
            }
            // The sender's handle is still alive (a request holds its connection's), so a
            // value left in the queue is not dropped yet.
            let tx = sender.join().unwrap();
            if drops.load(Ordering::SeqCst) == 0 {
                stranded += 1;
            }
            drop(tx);
        }
        stranded
    }

    #[test]
    fn a_request_handed_over_through_the_gate_is_never_left_in_a_dropped_queue() {
        assert_eq!(stranded(20_000, true), 0);
    }

    /// What the gate is for: without it, tokio's drain misses a value being sent as the
    /// receiver drops. (How often depends on the machine; this only reports it.)
    #[test]
    #[ignore = "a measurement of tokio's race, not a check: run with --ignored --nocapture"]
    fn without_the_gate_a_value_can_be_left_in_a_dropped_queue() {
        let n = stranded(200_000, false);
        eprintln!("{n} of 200000 sends left in a dropped queue without the gate");
    }
}
