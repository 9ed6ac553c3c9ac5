//! A client on a tokio runtime built without its time driver (`enable_time` not called):
//! the pool has no timer then, so no idle reaper runs (before, one was spawned at every
//! connection's return to the idle list, and each panicked on its first sleep); idle
//! connections are still reused, and an expired one is dropped when a checkout finds it.
//! (Its own test binary: it counts panics with a process-wide hook.)

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::server::TestServer;

#[test]
fn a_runtime_without_timers_runs_the_pool_without_a_reaper_and_without_panics() {
    let panics = Arc::new(AtomicUsize::new(0));
    let seen = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        seen.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    // The server runs on a runtime of its own, with timers.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let server = TestServer::start().await;
            tx.send(server.url("/")).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let url = rx.recv().unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let (stats, opened) = support::counting_opened();
    let client = support::client(|b| {
        b.pool_idle_timeout(Duration::from_secs(1))
            .telemetry()
            .stats(stats)
            .event_history(100);
    });
    rt.block_on(async {
        for _ in 0..3 {
            support::body(client.get(url.clone()).await.unwrap()).await;
            // Turns for any task the pool spawned (a reaper would have been by now).
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
        }
    });
    assert_eq!(
        opened.load(Ordering::SeqCst),
        1,
        "the idle connection was reused: {:#?}",
        client.recent_events()
    );
    // Past its idle timeout, with no reaper: the next checkout drops it and dials anew.
    std::thread::sleep(Duration::from_millis(1100));
    rt.block_on(async {
        support::body(client.get(url.clone()).await.unwrap()).await;
    });
    assert_eq!(
        opened.load(Ordering::SeqCst),
        2,
        "the expired connection was not reused"
    );
    // tokio can only be asked whether its time driver is on by making a timer, which panics
    // when it is off: the pool asks once (the panic is caught, and printed by the hook).
    assert!(
        panics.load(Ordering::SeqCst) <= 1,
        "{} panics: the pool asked tokio for a timer more than once",
        panics.load(Ordering::SeqCst)
    );
}
