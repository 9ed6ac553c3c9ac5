//! Looking never stalls the client: a request capturing its stack does not wait for a report
//! resolving symbols, and the debug service resolves them off the runtime's workers.
//!
//! Resolution is made to take as long as the test likes by holding the lock the `backtrace`
//! crate's symbolizer holds while it reads debug info (its `resolve` callback runs under
//! it), on a thread of the test's own.

mod support;

use std::sync::mpsc;
use std::time::Duration;

use support::server::TestServer;
use support::{body, client, eventually};

/// The tests hold one process-wide lock: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `backtrace`'s global lock, held by a thread of its own until dropped.
struct SymbolizerBusy {
    release: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SymbolizerBusy {
    fn hold() -> SymbolizerBusy {
        let (holding_tx, holding_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut here = 0usize;
            backtrace::trace(|f| {
                here = f.ip() as usize;
                false
            });
            let mut first = true;
            backtrace::resolve(here as *mut std::ffi::c_void, |_| {
                // Once per symbol (inlined frames have several): hold on the first.
                if std::mem::take(&mut first) {
                    let _ = holding_tx.send(());
                    let _ = release_rx.recv_timeout(Duration::from_secs(60));
                }
            });
        });
        holding_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the symbolizer's lock is held");
        SymbolizerBusy {
            release: Some(release_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for SymbolizerBusy {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[tokio::test]
async fn a_request_capturing_its_stack_does_not_wait_for_symbols_being_resolved() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let c = client(|b| {
        b.telemetry().capture_stacks(true);
    });
    let busy = SymbolizerBusy::hold();
    let done = tokio::time::timeout(Duration::from_secs(5), async {
        for _ in 0..10 {
            body(c.get(server.url("/")).await.unwrap()).await;
        }
    })
    .await;
    drop(busy);
    assert!(
        done.is_ok(),
        "requests waited for the symbolizer's lock to capture their stacks"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_debug_service_resolves_stacks_off_the_runtime_thread() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await;
    let c = client(|b| {
        b.telemetry().capture_stacks(true);
    });
    // A request in flight, with a stack nobody has resolved yet.
    let slow = tokio::spawn(c.get(server.url("/slow/2000")));
    // Asking `in_flight()` here would resolve (and cache) the stack: ask the pool instead.
    eventually("the slow request holds a connection", || {
        c.pool_snapshot()
            .hosts
            .iter()
            .map(|h| h.active)
            .sum::<usize>()
            == 1
    })
    .await;
    let debug_addr = support::serve_debug(c.clone()).await;
    let busy = SymbolizerBusy::hold();
    // The report now waits for the lock; the runtime's one thread must stay free meanwhile.
    let other = client(|_| {});
    let report = tokio::spawn(
        other.get(
            format!("http://{debug_addr}/debug/inflight")
                .parse()
                .unwrap(),
        ),
    );
    let served = tokio::time::timeout(Duration::from_secs(5), async {
        body(c.get(server.url("/")).await.unwrap()).await;
    })
    .await;
    drop(busy);
    assert!(
        served.is_ok(),
        "the report resolved symbols on the runtime's thread and stalled it"
    );
    let text = String::from_utf8(body(report.await.unwrap().unwrap()).await.to_vec()).unwrap();
    assert!(text.contains("/slow/2000"), "{text}");
    body(slow.await.unwrap().unwrap()).await;
}
