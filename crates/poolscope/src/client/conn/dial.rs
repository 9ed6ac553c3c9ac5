//! The dial: the connector with the requesting tracer in scope, the HTTP/1 or HTTP/2
//! handshake, and the connection's driver task.

use super::gate::{EndOnDrop, Guarded};
use super::*;

/// The HTTP settings a dial needs.
#[derive(Clone)]
pub(crate) struct DialConfig {
    pub(crate) h1: http1::Builder,
    pub(crate) h2: http2::Builder<Exec>,
    pub(crate) http2_only: bool,
    pub(crate) exec: Exec,
    /// Keep a handle for reading `TCP_INFO` in snapshots (`TelemetryBuilder::snapshot_tcp_info`).
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
        .map(|a| crate::redact::host_port(a).to_owned());
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
        let err = Error::new(crate::client::error::Kind::Connect(None)).with(e);
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
                // the frames would end it at once, at a cost on every request for fewer such
                // retries only (measured: `docs/benchmarks.md`, `docs/reliability.md`).
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
