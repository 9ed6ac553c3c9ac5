//! The pool's rules (see `poolscope::pool`'s module docs), one deterministic test per rule,
//! each marked with its rule's tag, with a fake connection, manual polling and paused time;
//! no sockets. This file: how requests queue and get connections: keys, the idle list, the two wait queues, slots, one-shot waiters, late dials, and the events they raise (`[keys]`, `[idle-lifo]`, `[queues]`, `[slots]`, `[one-shot]`, `[late-dial]`, `[events]`).

mod support;

use std::time::Duration;

use poolscope::pool::{Config, ConnectKey, Pool, Returned};
use poolscope::stats::{CloseReason, IdleOutReason, WaitOutcome};
use support::*;

/// Rule `[queues]`.
#[tokio::test(start_paused = true)]
async fn first_checkout_dials_and_gets_the_fresh_connection() {
    let (pool, rec) = pool_with(Config::default());
    let mut c = pool.checkout(key("a"));
    let permit = expect_dial(&mut c);
    expect_pending(&mut c);
    permit.finish(Ok(TestConn::new()));
    let conn = expect_ready(&mut c);
    assert!(!conn.info().reused && !conn.info().was_idle);
    assert_eq!(
        rec.take(),
        vec![
            Ev::IdleWaitIn(H.into(), 1),
            Ev::Opened(H.into(), 1),
            Ev::IdleWaitOut(H.into(), 0, WaitOutcome::Delivered),
        ]
    );
    let snap = pool.snapshot();
    assert_eq!((snap.hosts[0].active, snap.hosts[0].total), (1, 1));
}

/// Rule `[idle-lifo]`.
#[tokio::test(start_paused = true)]
async fn idle_list_is_lifo_most_recently_returned_first() {
    let pool = Pool::new(Config::default());
    let mut a = pool.checkout(key("a"));
    let mut b = pool.checkout(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::new()));
    expect_dial(&mut b).finish(Ok(TestConn::new()));
    let (ca, cb) = (expect_ready(&mut a), expect_ready(&mut b));
    let (ida, idb) = (ca.id(), cb.id());
    assert_eq!(ca.release(), Returned::Idle);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(cb.release(), Returned::Idle);
    let got = expect_ready(&mut pool.checkout(key("a")));
    assert_eq!(got.id(), idb, "most recently returned first");
    assert!(got.info().reused && got.info().was_idle);
    let got2 = expect_ready(&mut pool.checkout(key("a")));
    assert_eq!(got2.id(), ida);
    assert_eq!(got2.info().idle_time, Duration::from_secs(1));
}

/// Rule `[keys]`.
#[tokio::test(start_paused = true)]
async fn keys_do_not_share_connections() {
    let pool = Pool::new(Config::default());
    let mut a = pool.checkout(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::new()));
    drop(expect_ready(&mut a));
    let mut b = pool.checkout(key("b"));
    let _ = expect_dial(&mut b);
    assert_eq!(pool.snapshot().host(&key("a")).unwrap().idle, 1);
}

/// Rule `[keys]`: the proxy is part of the key; the same origin through another proxy, or
/// through the same proxy with other credentials, never gets the connection.
#[tokio::test(start_paused = true)]
async fn keys_through_other_proxies_do_not_share_connections() {
    let pool = Pool::new(Config::default());
    let origin = ConnectKey::new("https", "example.com", 443);
    let via_a = origin.clone().with_proxy("10.0.0.1:3128", 1);
    let mut a = pool.checkout(via_a.clone());
    expect_dial(&mut a).finish(Ok(TestConn::new()));
    drop(expect_ready(&mut a));
    for other in [
        origin.clone(),
        origin.clone().with_proxy("10.0.0.2:3128", 1),
        origin.clone().with_proxy("10.0.0.1:3128", 2),
    ] {
        let mut c = pool.checkout(other.clone());
        let _ = expect_dial(&mut c);
    }
    assert_eq!(pool.snapshot().host(&via_a).unwrap().idle, 1, "still idle");
    let again = expect_ready(&mut pool.checkout(via_a.clone()));
    assert!(
        again.info().reused,
        "the same proxy and credentials share it"
    );
}

/// Rule `[queues]`.
#[tokio::test(start_paused = true)]
async fn max_conns_per_host_queues_requests_fifo_with_a_snapshot() {
    let (pool, rec) = pool_with(cap(1));
    let mut c1 = pool.checkout(key("a"));
    expect_dial(&mut c1).finish(Ok(TestConn::new()));
    let conn = expect_ready(&mut c1);
    let mut c2 = pool.checkout(key("a"));
    let mut c3 = pool.checkout(key("a"));
    expect_pending(&mut c2);
    expect_pending(&mut c3);
    let hits: Vec<_> = rec
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Ev::MaxConnsPerHostHit(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(hits.len(), 2);
    let h = &hits[1].hosts[0];
    assert_eq!(
        (
            h.active,
            h.total,
            h.conns_per_host_waiters,
            h.idle_conn_waiters
        ),
        (1, 1, 2, 2)
    );
    assert_eq!(hits[1].limits.max_conns_per_host, Some(1));

    // The returned connection goes to the oldest waiter, skipping the idle list.
    let id = conn.id();
    assert_eq!(conn.release(), Returned::HandedOver);
    expect_pending(&mut c3);
    let c2conn = expect_ready(&mut c2);
    assert_eq!(c2conn.id(), id);
    assert!(c2conn.info().reused && !c2conn.info().was_idle);
    assert!(rec.all().contains(&Ev::Reused(H.into(), id.get())));
    drop(c2conn);
    assert_eq!(expect_ready(&mut c3).id(), id);
    drop(c3);
    drop(c2);
    drop(c1);
    assert_eq!(pool.snapshot().hosts[0].total, 1);
    drop(pool);
    rec.assert_balanced();
}

/// Rule `[slots]`.
#[tokio::test(start_paused = true)]
async fn a_closed_connections_slot_passes_to_the_oldest_dial_waiter() {
    let (pool, rec) = pool_with(cap(1));
    let mut c1 = pool.checkout(key("a"));
    expect_dial(&mut c1).finish(Ok(TestConn::new()));
    let conn = expect_ready(&mut c1);
    let mut c2 = pool.checkout(key("a"));
    let mut c3 = pool.checkout(key("a"));
    expect_pending(&mut c2);
    conn.discard();
    // c2 may dial now; c3 still waits; the key's count never went to 0.
    let permit = expect_dial(&mut c2);
    expect_pending(&mut c3);
    let h = pool.snapshot().hosts[0].clone();
    assert_eq!((h.total, h.connecting, h.conns_per_host_waiters), (1, 1, 1));
    assert!(rec
        .all()
        .contains(&Ev::DialWaitOut(H.into(), 1, WaitOutcome::DialPermitted)));
    assert!(rec
        .all()
        .contains(&Ev::Closed(H.into(), 1, CloseReason::NotReusable)));
    permit.finish(Ok(TestConn::new()));
    let conn2 = expect_ready(&mut c2);
    assert_eq!(conn2.id().get(), 2);
    drop((c1, c2, c3, conn2));
    drop(pool);
    rec.assert_balanced();
}

/// Rule `[one-shot]`.
#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_gives_a_delivered_connection_back() {
    let (pool, rec) = pool_with(cap(1));
    let mut c1 = pool.checkout(key("a"));
    expect_dial(&mut c1).finish(Ok(TestConn::new()));
    let conn = expect_ready(&mut c1);
    let mut c2 = pool.checkout(key("a"));
    let mut c3 = pool.checkout(key("a"));
    expect_pending(&mut c2);
    expect_pending(&mut c3);
    let id = conn.id();
    drop(conn); // delivered to c2, which never looks at it
    drop(c2); // ... and is cancelled: the connection must go on to c3
    let got = expect_ready(&mut c3);
    assert_eq!(got.id(), id);
    drop(got);
    let h = pool.snapshot().hosts[0].clone();
    assert_eq!((h.idle, h.total, h.idle_conn_waiters), (1, 1, 0));
    drop((c1, c3));
    drop(pool);
    rec.assert_balanced();
}

/// Rule `[one-shot]`.
#[tokio::test(start_paused = true)]
async fn an_unused_dial_permission_passes_on_when_its_checkout_is_dropped() {
    let (pool, rec) = pool_with(cap(1));
    let mut c1 = pool.checkout(key("a"));
    expect_dial(&mut c1).finish(Ok(TestConn::new()));
    let conn = expect_ready(&mut c1);
    let c2 = pool.checkout(key("a"));
    let mut c3 = pool.checkout(key("a"));
    conn.discard(); // c2 is granted the slot ...
    drop(c2); // ... but leaves before using it
    let permit = expect_dial(&mut c3);
    assert_eq!(pool.snapshot().hosts[0].total, 1);
    drop(permit); // an abandoned dial fails its owner and frees the slot
    let err = expect_err(&mut c3);
    assert!(err.is_dial());
    assert!(pool.snapshot().hosts.is_empty());
    drop((c1, c3));
    rec.assert_balanced();
}

/// Rule `[late-dial]`.
#[tokio::test(start_paused = true)]
async fn a_late_dial_serves_the_oldest_waiter_or_goes_idle() {
    let (pool, rec) = pool_with(Config::default());
    let mut a = pool.checkout(key("a"));
    let pa = expect_dial(&mut a);
    drop(a); // requester left; its dial keeps going
    let mut b = pool.checkout(key("a"));
    let pb = expect_dial(&mut b);
    pa.finish(Ok(TestConn::new()));
    let got = expect_ready(&mut b);
    assert_eq!(got.id().get(), 1, "a's dial, finished first");
    assert!(!got.info().reused);
    pb.finish(Ok(TestConn::new())); // its owner was served: idle
    let h = pool.snapshot().hosts[0].clone();
    assert_eq!((h.idle, h.active, h.total), (1, 1, 2));
    // A fresh connection parked idle is "was idle" but not "reused".
    drop(b);
    let next = expect_ready(&mut pool.checkout(key("a")));
    assert_eq!(next.id().get(), 2);
    assert!(next.info().was_idle && !next.info().reused);
    drop((got, next));
    drop(pool);
    rec.assert_balanced();
}

/// Rule `[queues]`.
#[tokio::test(start_paused = true)]
async fn a_request_in_both_queues_is_served_by_whichever_delivers_first() {
    let (pool, rec) = pool_with(Config::default());
    let mut a = pool.checkout(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::new()));
    let conn = expect_ready(&mut a);
    let mut b = pool.checkout(key("a"));
    let pb = expect_dial(&mut b); // b dials ...
    drop(conn); // ... but a's connection comes back first
    let got = expect_ready(&mut b);
    assert_eq!(got.id().get(), 1);
    pb.finish(Ok(TestConn::new()));
    assert_eq!(pool.snapshot().hosts[0].idle, 1);
    drop((a, b, got));
    drop(pool);
    rec.assert_balanced();
}

/// Rule `[slots]`.
#[tokio::test(start_paused = true)]
async fn a_failed_dial_fails_its_owner_and_frees_the_slot() {
    let (pool, rec) = pool_with(cap(1));
    let mut a = pool.checkout(key("a"));
    let mut b = pool.checkout(key("a"));
    let pa = expect_dial(&mut a);
    expect_pending(&mut b);
    pa.finish(Err("connection refused".into()));
    let err = expect_err(&mut a);
    assert!(err.is_dial());
    assert_eq!(
        std::error::Error::source(&err).map(|e| e.to_string()),
        Some("connection refused".into())
    );
    // b inherits the slot and dials.
    let pb = expect_dial(&mut b);
    pb.finish(Ok(TestConn::new()));
    drop(expect_ready(&mut b));
    assert!(rec
        .all()
        .contains(&Ev::IdleWaitOut(H.into(), 1, WaitOutcome::DialFailed)));
    drop((a, b));
    drop(pool);
    rec.assert_balanced();
}

/// Rule `[idle-lifo]`.
#[tokio::test(start_paused = true)]
async fn expired_and_broken_idle_connections_are_dropped_at_checkout() {
    let (pool, rec) = pool_with(Config {
        idle_timeout: Some(Duration::from_secs(10)),
        ..Config::default()
    });
    let mut a = pool.checkout(key("a"));
    let mut b = pool.checkout(key("a"));
    let ca = TestConn::new();
    expect_dial(&mut a).finish(Ok(ca.clone()));
    expect_dial(&mut b).finish(Ok(TestConn::new()));
    let (pa, pb) = (expect_ready(&mut a), expect_ready(&mut b));
    drop(pb); // older
    tokio::time::advance(Duration::from_secs(5)).await;
    drop(pa); // newer, but the peer will close it
    ca.close();
    tokio::time::advance(Duration::from_secs(6)).await;
    // Newest first: broken; then the older one has been idle 11s > 10s: expired. Both go
    // before the reaper runs (it is not polled here: no yield).
    let mut c = pool.checkout(key("a"));
    let _permit = expect_dial(&mut c);
    let outs: Vec<_> = rec
        .all()
        .into_iter()
        .filter(|e| matches!(e, Ev::IdleOut(..)))
        .collect();
    assert_eq!(
        outs,
        vec![
            Ev::IdleOut(H.into(), 1, IdleOutReason::Broken),
            Ev::IdleOut(H.into(), 2, IdleOutReason::Expired),
        ]
    );
}

/// Rule `[events]`.
#[test]
fn hooks_never_run_under_the_pool_lock() {
    // A hook that takes the pool lock itself (via snapshot) would deadlock if it were called
    // with the lock held. Run in a thread so a deadlock fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let slot: std::sync::Arc<std::sync::OnceLock<Pool<TestConn>>> = Default::default();
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let hook = {
            let (slot, calls) = (slot.clone(), calls.clone());
            move || {
                if let Some(p) = slot.get() {
                    let _ = p.snapshot();
                    calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        };
        let (h1, h2, h3, h4) = (hook.clone(), hook.clone(), hook.clone(), hook.clone());
        let stats = poolscope::Stats::builder()
            .on_idle_conn_wait_in(move |_| h1())
            .on_conn_opened(move |_| h2())
            .on_idle_conn_in(move |_| h3())
            .on_max_conns_per_host_hit(move |_| h4())
            .build();
        let pool = Pool::with_stats(cap(1), stats);
        let _ = slot.set(pool.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut a = pool.checkout(key("a"));
            expect_dial(&mut a).finish(Ok(TestConn::new()));
            let conn = expect_ready(&mut a);
            let mut b = pool.checkout(key("a"));
            expect_pending(&mut b);
            drop(conn);
            drop(expect_ready(&mut b));
        });
        let _ = tx.send(calls.load(std::sync::atomic::Ordering::Relaxed));
    });
    let calls = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a hook deadlocked on the pool lock");
    assert!(calls >= 4, "hooks ran: {calls}");
}

/// Rule `[events]`.
#[tokio::test(start_paused = true)]
async fn waiters_count_in_events_is_the_live_queue_length() {
    let (pool, rec) = pool_with(cap(1));
    let mut a = pool.checkout(key("a"));
    let _p = expect_dial(&mut a);
    let b = pool.checkout(key("a"));
    let c = pool.checkout(key("a"));
    drop(b);
    let ins: Vec<_> = rec
        .all()
        .into_iter()
        .filter(|e| matches!(e, Ev::DialWaitIn(..) | Ev::DialWaitOut(..)))
        .collect();
    assert_eq!(
        ins,
        vec![
            Ev::DialWaitIn(H.into(), 1),
            Ev::DialWaitIn(H.into(), 2),
            Ev::DialWaitOut(H.into(), 1, WaitOutcome::Canceled),
        ]
    );
    drop(c);
}

/// Rule `[one-shot]`. A lease delivered to a checkout that is dropped unused is not a request
/// served: the
/// connection's next request is not "reused".
#[tokio::test(start_paused = true)]
async fn an_unused_http2_lease_does_not_count_as_a_request() {
    let (pool, rec) = pool_with(Config::default());
    let mut a = pool.checkout_shared(key("a"));
    let permit = expect_dial(&mut a);
    drop(a); // its owner left: the connection goes idle with no request served
    permit.finish(Ok(TestConn::h2()));
    // A checkout leased it at once, and is dropped before it is polled.
    drop(pool.checkout_shared(key("a")));
    let mut c = pool.checkout_shared(key("a"));
    let conn = expect_ready(&mut c);
    assert!(!conn.info().reused, "no request was served on it before");
    drop(conn);
    drop(c);
    drop(pool);
    rec.assert_balanced();
}
