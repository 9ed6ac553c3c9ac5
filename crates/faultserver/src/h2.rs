//! h2c with the faults that apply to HTTP/2: idle close, close after N requests (GOAWAY),
//! reset mid-body (RST_STREAM), stall after headers, never respond, slow body.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::{current, Counters, Fault};

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(s: &'static str) -> Body {
    http_body_util::Full::new(Bytes::from_static(s.as_bytes()))
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn stream(items: Vec<(Duration, Result<Bytes, std::io::Error>)>, then_pending: bool) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
    tokio::spawn(async move {
        for (delay, item) in items {
            tokio::time::sleep(delay).await;
            if tx.send(item.map(Frame::data)).await.is_err() {
                return;
            }
        }
        if then_pending {
            // Keep the stream open and silent until the client gives up.
            tx.closed().await;
        }
    });
    ChannelBody(rx).boxed()
}

/// A body fed by a channel: frames as they are sent, an error as a reset.
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx)
    }
}

/// Streams in progress and the time of the last activity: the idle-close fault waits for
/// both to allow it.
struct Activity {
    active: AtomicUsize,
    last: Mutex<std::time::Instant>,
}

impl Activity {
    fn touch(&self) {
        if let Ok(mut l) = self.last.lock() {
            *l = std::time::Instant::now();
        }
    }

    fn idle_for(&self) -> Duration {
        self.last.lock().map(|l| l.elapsed()).unwrap_or_default()
    }
}

pub(crate) async fn serve(tcp: TcpStream, c: Arc<Counters>, f: Arc<Mutex<Fault>>) {
    let served = Arc::new(AtomicUsize::new(0));
    let activity = Arc::new(Activity {
        active: AtomicUsize::new(0),
        last: Mutex::new(std::time::Instant::now()),
    });
    let (close_tx, mut close_rx) = tokio::sync::mpsc::channel::<()>(1);
    let svc = {
        let (f, served, activity) = (f.clone(), served.clone(), activity.clone());
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let (c, f, served, close_tx) = (c.clone(), f.clone(), served.clone(), close_tx.clone());
            let activity = activity.clone();
            async move {
                activity.active.fetch_add(1, Ordering::SeqCst);
                activity.touch();
                let _done = Done(activity);
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                c.saw(req.method().as_str(), id);
                let n = served.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = req.into_body().collect().await;
                let body = match current(&f) {
                    Fault::CloseAfter(limit) if n >= limit => {
                        let _ = close_tx.try_send(());
                        full("hello")
                    }
                    Fault::ResetMidBody => stream(
                        vec![
                            (Duration::ZERO, Ok(Bytes::from_static(b"01234"))),
                            (
                                Duration::from_millis(10),
                                Err(std::io::Error::other("reset")),
                            ),
                        ],
                        false,
                    ),
                    Fault::StallAfterHeaders => stream(Vec::new(), true),
                    Fault::NeverRespond => {
                        std::future::pending::<()>().await;
                        full("")
                    }
                    Fault::SlowBody(d) => stream(
                        b"hello"
                            .iter()
                            .map(|b| (d, Ok(Bytes::copy_from_slice(&[*b]))))
                            .collect(),
                        false,
                    ),
                    _ => full("hello"),
                };
                Ok::<_, Infallible>(Response::new(body))
            }
        })
    };
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tcp), svc);
    tokio::pin!(conn);
    let idle_close = async {
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if let Fault::CloseIdleAfter(d) = current(&f) {
                if activity.active.load(Ordering::SeqCst) == 0 && activity.idle_for() >= d {
                    return;
                }
            }
        }
    };
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = close_rx.recv() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        () = idle_close => {}
    }
}

/// Marks the end of a stream's handling (the response head is out; bodies may still stream).
struct Done(Arc<Activity>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}
