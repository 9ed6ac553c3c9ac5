//! One deterministic test per pool rule (see `poolscope::pool`'s module docs), each marked
//! with its rule's tag (`[slots]`, `[http2]`, …), with a fake connection, manual polling and
//! paused time. No sockets.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use poolscope::pool::{Config, ConnectKey, Pool, Returned};
use poolscope::stats::{CloseReason, IdleOutReason, WaitOutcome};
use support::*;

const H: &str = "http://a:80";

fn pool_with(cfg: Config) -> (Pool<TestConn>, Recorder) {
    let rec = Recorder::default();
    (Pool::with_stats(cfg, rec.stats()), rec)
}

fn cap(n: usize) -> Config {
    Config {
        max_conns_per_host: Some(n),
        ..Config::default()
    }
}

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

/// Rule `[timeouts]`.
#[tokio::test(start_paused = true)]
async fn the_reaper_closes_idle_connections_after_the_idle_timeout_and_stops() {
    let (pool, rec) = pool_with(Config {
        idle_timeout: Some(Duration::from_secs(90)),
        ..Config::default()
    });
    let mut a = pool.checkout(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::new()));
    drop(expect_ready(&mut a));
    tokio::time::sleep(Duration::from_secs(89)).await;
    assert_eq!(pool.snapshot().hosts[0].idle, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pool.snapshot().hosts.is_empty(), "reaped after 90s");
    assert!(rec
        .all()
        .contains(&Ev::Closed(H.into(), 1, CloseReason::IdleTimeout)));
    // With nothing idle the reaper has stopped; a new idle connection starts it again.
    let mut b = pool.checkout(key("a"));
    expect_dial(&mut b).finish(Ok(TestConn::new()));
    drop(expect_ready(&mut b));
    tokio::time::sleep(Duration::from_secs(91)).await;
    assert!(pool.snapshot().hosts.is_empty());
    drop((a, b));
    rec.assert_balanced();
}

/// Rule `[timeouts]`.
#[tokio::test(start_paused = true)]
async fn the_reaper_waits_while_connections_are_busy_and_exits_when_the_pool_is_empty() {
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let settle = || tokio::time::sleep(Duration::from_millis(1));
    let (pool, rec) = pool_with(Config {
        idle_timeout: Some(Duration::from_secs(90)),
        ..Config::default()
    });
    let mut a = pool.checkout(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::new()));
    drop(expect_ready(&mut a));
    settle().await;
    assert_eq!(tasks(), 1, "a reaper runs while something is idle");
    // Busy: the connection is in use, nothing idle. The reaper's pass finds nothing and
    // waits rather than exiting.
    let busy = expect_ready(&mut pool.checkout(key("a")));
    tokio::time::sleep(Duration::from_secs(91)).await;
    assert_eq!(tasks(), 1, "waiting, not exited");
    // Idle again: the same reaper wakes and closes it 90 s later; the pool is then empty and
    // the reaper exits.
    drop(busy);
    settle().await;
    assert_eq!(tasks(), 1, "no second reaper");
    tokio::time::sleep(Duration::from_secs(89)).await;
    assert_eq!(pool.snapshot().hosts[0].idle, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pool.snapshot().hosts.is_empty(), "reaped after 90 s idle");
    settle().await;
    assert_eq!(tasks(), 0, "the reaper exits with the pool empty");
    drop(a);
    rec.assert_balanced();
}

/// Rule `[timeouts]`.
#[tokio::test(start_paused = true)]
async fn a_connection_near_its_max_lifetime_going_idle_moves_the_reaper_forward() {
    let secs = |s| tokio::time::sleep(Duration::from_secs(s));
    let (pool, rec) = pool_with(Config {
        idle_timeout: Some(Duration::from_secs(90)),
        max_lifetime: Some(Duration::from_secs(30)),
        ..Config::default()
    });
    // t=0: A goes idle (a reaper starts), then is taken again: nothing idle.
    let mut a = pool.checkout(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::new()));
    drop(expect_ready(&mut a));
    let a_busy = expect_ready(&mut pool.checkout(key("a")));
    // t=10: B is dialed and kept busy.
    secs(10).await;
    let mut b = pool.checkout(key("a"));
    expect_dial(&mut b).finish(Ok(TestConn::new()));
    let b_busy = expect_ready(&mut b);
    // t=30: the reaper passes with nothing idle and next plans to pass at t=60.
    secs(21).await;
    // t=31: B goes idle; its lifetime ends at t=40, before the reaper's planned pass.
    drop(b_busy);
    secs(8).await;
    assert_eq!(pool.snapshot().hosts[0].idle, 1, "B idle until t=40");
    secs(2).await;
    assert_eq!(
        pool.snapshot().hosts[0].idle,
        0,
        "reaped at its max lifetime"
    );
    assert!(rec
        .all()
        .iter()
        .any(|e| matches!(e, Ev::Closed(_, 2, CloseReason::MaxLifetime))));
    drop((a_busy, a, b));
    rec.assert_balanced();
}

/// Rule `[timeouts]`.
#[tokio::test(start_paused = true)]
async fn a_waiting_reaper_exits_when_the_pool_is_dropped() {
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let pool = Pool::new(Config::default());
    let mut a = pool.checkout(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::new()));
    drop(expect_ready(&mut a));
    let busy = expect_ready(&mut pool.checkout(key("a")));
    tokio::time::sleep(Duration::from_secs(91)).await;
    assert_eq!(tasks(), 1, "waiting");
    drop((a, pool));
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(tasks(), 0, "closing the pool wakes the reaper, which exits");
    drop(busy);
}

/// Rule `[timeouts]`.
#[tokio::test(start_paused = true)]
async fn max_lifetime_closes_a_connection_when_it_comes_back() {
    let (pool, rec) = pool_with(Config {
        max_lifetime: Some(Duration::from_secs(30)),
        ..Config::default()
    });
    let mut a = pool.checkout(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::new()));
    let conn = expect_ready(&mut a);
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(conn.release(), Returned::Closed(CloseReason::MaxLifetime));
    assert!(pool.snapshot().hosts.is_empty());
    drop(a);
    rec.assert_balanced();
}

/// Rule `[returns]`.
#[tokio::test(start_paused = true)]
async fn max_idle_per_host_closes_the_incoming_connection() {
    let (pool, rec) = pool_with(Config {
        max_idle_per_host: Some(1),
        ..Config::default()
    });
    let mut a = pool.checkout(key("a"));
    let mut b = pool.checkout(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::new()));
    expect_dial(&mut b).finish(Ok(TestConn::new()));
    let (pa, pb) = (expect_ready(&mut a), expect_ready(&mut b));
    assert_eq!(pa.release(), Returned::Idle);
    let idb = pb.id();
    assert_eq!(pb.release(), Returned::Closed(CloseReason::MaxIdlePerHost));
    let hit = rec.all().into_iter().find_map(|e| match e {
        Ev::MaxIdlePerHostHit(s) => Some(s),
        _ => None,
    });
    let hit = hit.expect("MaxIdleConnsPerHostHit fired");
    assert_eq!((hit.hosts[0].idle, hit.hosts[0].active), (1, 1));
    assert!(rec.all().contains(&Ev::Closed(
        H.into(),
        idb.get(),
        CloseReason::MaxIdlePerHost
    )));
    drop((a, b));
    drop(pool);
    rec.assert_balanced();
}

/// Rule `[returns]`.
#[tokio::test(start_paused = true)]
async fn max_idle_evicts_the_least_recently_used_connection_of_any_key() {
    let (pool, rec) = pool_with(Config {
        max_idle: Some(2),
        ..Config::default()
    });
    let mut conns = Vec::new();
    for host in ["a", "b", "c"] {
        let mut c = pool.checkout(key(host));
        expect_dial(&mut c).finish(Ok(TestConn::new()));
        conns.push(expect_ready(&mut c));
    }
    for c in conns {
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(c);
    }
    let snap = pool.snapshot();
    assert_eq!(snap.total_idle(), 2);
    assert!(snap.host(&key("a")).is_none(), "a was the oldest idle");
    assert_eq!(
        rec.count(|e| matches!(e, Ev::MaxIdleHit(_))),
        1,
        "hit once, when the third went idle"
    );
    assert!(rec.all().contains(&Ev::IdleOut(
        "http://a:80".into(),
        1,
        IdleOutReason::EvictedMaxIdle
    )));
    drop(pool);
    rec.assert_balanced();
}

/// Rule `[timeouts]`.
#[tokio::test(start_paused = true)]
async fn the_pool_wait_timeout_fails_with_a_snapshot() {
    let (pool, rec) = pool_with(Config {
        max_conns_per_host: Some(1),
        wait_timeout: Some(Duration::from_millis(500)),
        ..Config::default()
    });
    let mut a = pool.checkout(key("a"));
    let _permit = expect_dial(&mut a);
    let mut b = pool.checkout(key("a"));
    let res = tokio::time::timeout(Duration::from_secs(5), b.step()).await;
    let err = match res {
        Ok(Err(e)) => e,
        other => panic!("expected a pool timeout, got {other:?}"),
    };
    assert!(err.is_timeout());
    let snap = err.snapshot().expect("snapshot");
    assert_eq!(snap.hosts[0].conns_per_host_waiters, 1);
    assert_eq!(snap.hosts[0].oldest_wait, Some(Duration::from_millis(500)));
    assert!(rec
        .all()
        .contains(&Ev::DialWaitOut(H.into(), 0, WaitOutcome::TimedOut)));
}

/// Rule `[http2]`.
#[tokio::test(start_paused = true)]
async fn http2_requests_wait_for_the_dial_in_progress_and_share_its_connection() {
    let (pool, rec) = pool_with(cap(4));
    let mut a = pool.checkout_shared(key("a"));
    let mut b = pool.checkout_shared(key("a"));
    let mut c = pool.checkout_shared(key("a"));
    let permit = expect_dial(&mut a);
    expect_pending(&mut b); // no second dial
    expect_pending(&mut c);
    assert_eq!(pool.snapshot().hosts[0].connecting, 1);
    permit.finish(Ok(TestConn::h2()));
    let (ca, cb, cc) = (
        expect_ready(&mut a),
        expect_ready(&mut b),
        expect_ready(&mut c),
    );
    assert!(ca.id() == cb.id() && cb.id() == cc.id());
    assert!(ca.info().shared);
    let h = pool.snapshot().hosts[0].clone();
    assert_eq!((h.total, h.active, h.idle), (1, 1, 0));
    // A later request shares it at once, even while it is in use.
    let cd = expect_ready(&mut pool.checkout(key("a")));
    assert_eq!(cd.id(), ca.id());
    assert!(cd.info().reused && !cd.info().was_idle);
    drop((ca, cb, cc));
    assert_eq!(cd.release(), Returned::Shared);
    assert_eq!(pool.snapshot().hosts[0].idle, 1);
    drop((a, b, c));
    drop(pool);
    rec.assert_balanced();
}

/// Rule `[http2]`.
#[tokio::test(start_paused = true)]
async fn requests_an_http2_connection_cannot_take_keep_their_place_and_dial() {
    let (pool, rec) = pool_with(Config::default());
    let mut a = pool.checkout_shared(key("a"));
    let mut b = pool.checkout_shared(key("a"));
    let mut c = pool.checkout_shared(key("a"));
    let permit = expect_dial(&mut a);
    expect_pending(&mut b);
    expect_pending(&mut c);
    // The connection gives two handles besides the pool's own: a's and b's, none for c.
    permit.finish(Ok(TestConn {
        shares_left: Some(std::sync::Arc::new(2.into())),
        ..TestConn::h2()
    }));
    let (ca, cb) = (expect_ready(&mut a), expect_ready(&mut b));
    assert_eq!(ca.id(), cb.id());
    // c is not stranded: it still waits for a connection and may dial one of its own.
    let pc = expect_dial(&mut c);
    assert_eq!(pool.snapshot().hosts[0].idle_conn_waiters, 1);
    pc.finish(Ok(TestConn::h2()));
    let cc = expect_ready(&mut c);
    assert_ne!(cc.id(), ca.id());
    drop((ca, cb, cc));
    drop((a, b, c));
    drop(pool);
    rec.assert_balanced();
}

/// Rule `[no-reuse]`.
#[tokio::test(start_paused = true)]
async fn with_no_idle_connection_allowed_nothing_is_reused() {
    let (pool, rec) = pool_with(Config {
        max_idle_per_host: Some(0),
        max_conns_per_host: Some(1),
        ..Config::default()
    });
    let mut a = pool.checkout(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::new()));
    let ca = expect_ready(&mut a);
    let mut b = pool.checkout(key("a"));
    // The cap: b waits.
    expect_pending(&mut b);
    // Even with b waiting, the returned connection closes; its slot lets b dial.
    assert_eq!(ca.release(), Returned::Closed(CloseReason::MaxIdlePerHost));
    expect_dial(&mut b).finish(Ok(TestConn::new()));
    let cb = expect_ready(&mut b);
    assert!(!cb.info().reused);
    drop(cb);
    drop((a, b));
    assert_eq!(pool.snapshot().total_idle(), 0);

    // HTTP/2 connections are not shared either: each request dials its own.
    let (h2, rec2) = pool_with(Config {
        max_idle_per_host: Some(0),
        ..Config::default()
    });
    let mut x = h2.checkout_shared(key("h"));
    let mut y = h2.checkout_shared(key("h"));
    let (px, py) = (expect_dial(&mut x), expect_dial(&mut y));
    px.finish(Ok(TestConn::h2()));
    py.finish(Ok(TestConn::h2()));
    let (cx, cy) = (expect_ready(&mut x), expect_ready(&mut y));
    assert_ne!(cx.id(), cy.id());
    assert_eq!(cx.release(), Returned::Closed(CloseReason::MaxIdlePerHost));
    drop(cy);
    drop((x, y));
    drop((pool, h2));
    rec.assert_balanced();
    rec2.assert_balanced();
}

/// Rule `[http2]`. a failed shared dial fails every request that waited for it at
/// once, with the dial's error (Go's dial call), instead of letting them dial one by one.
#[tokio::test(start_paused = true)]
async fn a_failed_http2_dial_fails_everyone_waiting_for_it() {
    let (pool, rec) = pool_with(Config::default());
    let mut a = pool.checkout_shared(key("a"));
    let mut b = pool.checkout_shared(key("a"));
    let mut c = pool.checkout_shared(key("a"));
    let pa = expect_dial(&mut a);
    expect_pending(&mut b);
    expect_pending(&mut c);
    pa.finish(Err("tls handshake failed".into()));
    for w in [&mut a, &mut b, &mut c] {
        let e = expect_err(w);
        assert!(e.is_dial());
        let mut chain = Vec::new();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            chain.push(s.to_string());
            src = s.source();
        }
        assert!(
            chain.iter().any(|s| s == "tls handshake failed"),
            "the dial's own error is in the chain: {chain:?}"
        );
    }
    // The next request dials anew.
    let mut d = pool.checkout_shared(key("a"));
    let pd = expect_dial(&mut d);
    pd.finish(Ok(TestConn::h2()));
    drop(expect_ready(&mut d));
    drop((a, b, c, d));
    drop(pool);
    rec.assert_balanced();
}

/// Rule `[closing]`.
#[tokio::test(start_paused = true)]
async fn dropping_the_pool_fails_waiters_and_closes_idle_connections() {
    let (pool, rec) = pool_with(cap(1));
    let mut a = pool.checkout(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::new()));
    let conn = expect_ready(&mut a);
    let mut b = pool.checkout(key("b"));
    expect_dial(&mut b).finish(Ok(TestConn::new()));
    drop(expect_ready(&mut b)); // idle
    let mut waiting = pool.checkout(key("a"));
    expect_pending(&mut waiting);
    drop(pool);
    assert!(expect_err(&mut waiting).is_closed());
    assert!(rec.all().contains(&Ev::Closed(
        "http://b:80".into(),
        2,
        CloseReason::PoolClosed
    )));
    // The connection in use closes when it comes back.
    assert_eq!(conn.release(), Returned::Closed(CloseReason::PoolClosed));
    drop((a, b, waiting));
    rec.assert_balanced();
}

/// Rule `[closing]`.
#[tokio::test(start_paused = true)]
async fn close_idle_connections_closes_only_idle_ones() {
    let (pool, rec) = pool_with(Config::default());
    let mut a = pool.checkout(key("a"));
    let mut b = pool.checkout(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::new()));
    expect_dial(&mut b).finish(Ok(TestConn::new()));
    let (pa, pb) = (expect_ready(&mut a), expect_ready(&mut b));
    drop(pa);
    pool.close_idle_connections();
    let h = pool.snapshot().hosts[0].clone();
    assert_eq!((h.idle, h.active), (0, 1));
    assert!(rec
        .all()
        .contains(&Ev::Closed(H.into(), 1, CloseReason::CloseIdle)));
    drop((pb, a, b));
    drop(pool);
    rec.assert_balanced();
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
            Ev::DialWaitOut(H.into(), 1, WaitOutcome::Cancelled),
        ]
    );
    drop(c);
}

/// Rule `[stream-limits]`. a shared connection is leased to at most its peer's
/// concurrent-stream limit; beyond it a request dials another connection (no cap).
#[tokio::test(start_paused = true)]
async fn a_full_http2_connection_makes_the_next_request_dial() {
    let (pool, rec) = pool_with(Config::default());
    let mut a = pool.checkout_shared(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::h2_limited(2)));
    let first = expect_ready(&mut a);
    let mut b = pool.checkout_shared(key("a"));
    let second = expect_ready(&mut b);
    assert_eq!(second.id(), first.id(), "room for two streams");
    let mut c = pool.checkout_shared(key("a"));
    let pc = expect_dial(&mut c);
    pc.finish(Ok(TestConn::h2_limited(2)));
    let third = expect_ready(&mut c);
    assert_ne!(third.id(), first.id(), "the first connection is full");
    drop((first, second, third));
    drop((a, b, c));
    drop(pool);
    rec.assert_balanced();
}

/// Rule `[stream-limits]`. at the per-host cap, a request that finds every shared connection full
/// waits,
/// and the next stream that comes free is its (a returned lease serves the oldest waiter).
#[tokio::test(start_paused = true)]
async fn at_the_cap_a_request_waits_for_a_stream_and_gets_the_one_freed() {
    let (pool, rec) = pool_with(cap(1));
    let mut a = pool.checkout_shared(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::h2_limited(1)));
    let first = expect_ready(&mut a);
    let mut b = pool.checkout_shared(key("a"));
    expect_pending(&mut b);
    assert_eq!(pool.snapshot().hosts[0].conns_per_host_waiters, 1);
    assert_eq!(first.release(), Returned::Shared);
    let second = expect_ready(&mut b);
    assert_eq!(second.id().get(), 1);
    assert!(second.info().reused);
    drop(second);
    drop((a, b));
    drop(pool);
    rec.assert_balanced();
}

/// Rule `[stream-limits]`. when the peer lowers its limit (SETTINGS), no new stream is leased
/// beyond it.
#[tokio::test(start_paused = true)]
async fn a_lowered_stream_limit_is_respected_at_once() {
    let (pool, rec) = pool_with(cap(1));
    let conn = TestConn::h2_limited(100);
    let limit = conn.max_streams.clone().unwrap();
    let mut a = pool.checkout_shared(key("a"));
    expect_dial(&mut a).finish(Ok(conn));
    let first = expect_ready(&mut a);
    limit.store(1, std::sync::atomic::Ordering::Release);
    let mut b = pool.checkout_shared(key("a"));
    expect_pending(&mut b);
    drop(first);
    drop(expect_ready(&mut b));
    drop((a, b));
    drop(pool);
    rec.assert_balanced();
}

/// Rule `[retiring]`. a retired shared connection takes no new requests; the ones on it go
/// on, and it closes for its reason when the last comes back.
#[tokio::test(start_paused = true)]
async fn a_connection_that_got_goaway_takes_no_new_requests() {
    let (pool, rec) = pool_with(Config::default());
    let mut a = pool.checkout_shared(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::h2()));
    let first = expect_ready(&mut a);
    let mut b = pool.checkout_shared(key("a"));
    let second = expect_ready(&mut b);
    assert_eq!(first.retire(CloseReason::GoAway), Returned::Shared);
    let mut c = pool.checkout_shared(key("a"));
    let pc = expect_dial(&mut c);
    pc.finish(Ok(TestConn::h2()));
    let third = expect_ready(&mut c);
    assert_ne!(third.id(), second.id());
    assert_eq!(second.release(), Returned::Closed(CloseReason::GoAway));
    assert!(rec
        .all()
        .contains(&Ev::Closed(H.into(), 1, CloseReason::GoAway)));
    drop(third);
    drop((a, b, c));
    drop(pool);
    rec.assert_balanced();
}

/// Rule `[http2]`. an HTTP/2 connection from a dial nobody needs any more, while the
/// key has a shared connection with room, is closed (Go's `addConnIfNeeded`).
#[tokio::test(start_paused = true)]
async fn a_raced_http2_dial_nobody_needs_is_closed() {
    let (pool, rec) = pool_with(Config::default());
    // Two requests that did not know the origin speaks HTTP/2 dial at once.
    let mut a = pool.checkout(key("a"));
    let mut b = pool.checkout(key("a"));
    let (pa, pb) = (expect_dial(&mut a), expect_dial(&mut b));
    pa.finish(Ok(TestConn::h2()));
    let first = expect_ready(&mut a);
    // `b` is served by the shared connection at once; its own dial ends later.
    let second = expect_ready(&mut b);
    assert_eq!(second.id(), first.id());
    pb.finish(Ok(TestConn::h2()));
    assert!(rec
        .all()
        .contains(&Ev::Closed(H.into(), 2, CloseReason::Redundant)));
    assert_eq!(pool.snapshot().hosts[0].total, 1);
    drop((first, second));
    drop((a, b));
    drop(pool);
    rec.assert_balanced();
}

/// Rule `[http2]`. requests that waited for a dial hoping for HTTP/2 all dial when it brings
/// HTTP/1.1, and later requests to the key no longer wait for each other's dials.
#[tokio::test(start_paused = true)]
async fn an_origin_that_answers_http1_is_not_waited_for_again() {
    let (pool, rec) = pool_with(Config::default());
    let mut a = pool.checkout_shared(key("a"));
    let mut b = pool.checkout_shared(key("a"));
    let mut c = pool.checkout_shared(key("a"));
    let pa = expect_dial(&mut a);
    expect_pending(&mut b);
    expect_pending(&mut c);
    pa.finish(Ok(TestConn::new()));
    let first = expect_ready(&mut a);
    let (pb, pc) = (expect_dial(&mut b), expect_dial(&mut c));
    let mut d = pool.checkout_shared(key("a"));
    let pd = expect_dial(&mut d);
    let mut e = pool.checkout_shared(key("a"));
    let pe = expect_dial(&mut e);
    for (p, w) in [(pb, &mut b), (pc, &mut c), (pd, &mut d), (pe, &mut e)] {
        p.finish(Ok(TestConn::new()));
        drop(expect_ready(w));
    }
    drop(first);
    drop((a, b, c, d, e));
    drop(pool);
    rec.assert_balanced();
}

/// Rule `[returns]`. Go's `MaxIdleConns = 0`: no limit (it does not turn keep-alive off).
#[tokio::test(start_paused = true)]
async fn a_max_idle_of_zero_means_no_limit() {
    let (pool, rec) = pool_with(Config {
        max_idle: Some(0),
        ..Config::default()
    });
    assert_eq!(pool.config().max_idle, None);
    let mut a = pool.checkout(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::new()));
    assert_eq!(expect_ready(&mut a).release(), Returned::Idle);
    drop(a);
    drop(pool);
    rec.assert_balanced();
}

/// Rule `[closing]`. Go's `CloseIdleConnections`: connections in use when it is called close as
/// they come
/// back, until the next request starts.
#[tokio::test(start_paused = true)]
async fn close_idle_connections_also_closes_those_that_come_back_until_the_next_checkout() {
    let (pool, rec) = pool_with(Config::default());
    let mut a = pool.checkout(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::new()));
    let held = expect_ready(&mut a);
    pool.close_idle_connections();
    assert_eq!(held.release(), Returned::Closed(CloseReason::CloseIdle));
    // A new request: pooling resumes.
    let mut b = pool.checkout(key("a"));
    expect_dial(&mut b).finish(Ok(TestConn::new()));
    assert_eq!(expect_ready(&mut b).release(), Returned::Idle);
    drop((a, b));
    drop(pool);
    rec.assert_balanced();
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

/// Rule `[timeouts]`. A shared connection past its max lifetime while in use closes as
/// `MaxLifetime`, not as
/// broken, when its last request ends.
#[tokio::test(start_paused = true)]
async fn a_shared_connection_past_its_lifetime_closes_as_such() {
    let (pool, rec) = pool_with(Config {
        max_lifetime: Some(Duration::from_secs(10)),
        ..Config::default()
    });
    let mut a = pool.checkout_shared(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::h2()));
    let held = expect_ready(&mut a);
    tokio::time::advance(Duration::from_secs(11)).await;
    let mut b = pool.checkout_shared(key("a"));
    let pb = expect_dial(&mut b); // the old one is retired: b dials
    assert_eq!(held.release(), Returned::Closed(CloseReason::MaxLifetime));
    pb.finish(Ok(TestConn::h2()));
    drop(expect_ready(&mut b));
    drop((a, b));
    drop(pool);
    rec.assert_balanced();
}

/// Rule `[timeouts]`. The idle timeout applies to an idle HTTP/2 connection at checkout too,
/// without a reaper
/// (here: no runtime, so none runs).
#[test]
fn an_expired_idle_http2_connection_is_not_leased() {
    let (pool, rec) = pool_with(Config {
        idle_timeout: Some(Duration::from_millis(20)),
        ..Config::default()
    });
    let mut a = pool.checkout_shared(key("a"));
    expect_dial(&mut a).finish(Ok(TestConn::h2()));
    drop(expect_ready(&mut a));
    std::thread::sleep(Duration::from_millis(40));
    let mut b = pool.checkout_shared(key("a"));
    let pb = expect_dial(&mut b);
    assert!(rec
        .all()
        .contains(&Ev::Closed(H.into(), 1, CloseReason::IdleTimeout)));
    pb.finish(Ok(TestConn::h2()));
    drop(expect_ready(&mut b));
    drop((a, b));
    drop(pool);
    rec.assert_balanced();
}

/// Rule `[timeouts]`. connections expiring at spread-out instants are reaped in batches, not
/// one pass each (a pass visits every key): after a pass that closed something, the next is
/// at least 1/16 of the idle timeout later.
#[tokio::test(start_paused = true)]
async fn the_reaper_batches_connections_that_expire_at_spread_out_instants() {
    let instants = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let seen = instants.clone();
    let stats = poolscope::Stats::builder()
        .on_conn_closed(move |e| {
            seen.lock().unwrap().insert(e.at);
        })
        .build();
    let pool = Pool::with_stats(
        Config {
            idle_timeout: Some(Duration::from_millis(1600)),
            ..Config::default()
        },
        stats,
    );
    // 100 connections of 100 keys going idle 10 ms apart: expiries spread over 1 s.
    for i in 0..100 {
        let mut c = pool.checkout(key(&format!("h{i}")));
        expect_dial(&mut c).finish(Ok(TestConn::new()));
        drop(expect_ready(&mut c));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(pool.snapshot().total_idle(), 0, "all reaped");
    let passes = instants.lock().unwrap().len();
    // 1 s of expiries at passes >= 100 ms apart: about 10 passes, far fewer than 100.
    assert!(passes <= 13, "{passes} reaper passes closed connections");
}
