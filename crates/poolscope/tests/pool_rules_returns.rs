//! The pool's rules (see `poolscope::pool`'s module docs), one deterministic test per rule,
//! each marked with its rule's tag, with a fake connection, manual polling and paused time;
//! no sockets. This file: where connections go back to and how they leave: returns and the idle caps, closing, no reuse (`[returns]`, `[closing]`, `[no-reuse]`).

mod support;

use std::time::Duration;

use poolscope::pool::{Config, Returned};
use poolscope::stats::{CloseReason, IdleOutReason};
use support::*;

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
    assert_eq!(
        pb.release(),
        Returned::Closed(CloseReason::MaxIdleConnsPerHost)
    );
    let hit = rec.all().into_iter().find_map(|e| match e {
        Ev::MaxIdlePerHostHit(s) => Some(s),
        _ => None,
    });
    let hit = hit.expect("MaxIdleConnsPerHostHit fired");
    assert_eq!((hit.hosts[0].idle, hit.hosts[0].active), (1, 1));
    assert!(rec.all().contains(&Ev::Closed(
        H.into(),
        idb.get(),
        CloseReason::MaxIdleConnsPerHost
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
    assert_eq!(
        ca.release(),
        Returned::Closed(CloseReason::MaxIdleConnsPerHost)
    );
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
    assert_eq!(
        cx.release(),
        Returned::Closed(CloseReason::MaxIdleConnsPerHost)
    );
    drop(cy);
    drop((x, y));
    drop((pool, h2));
    rec.assert_balanced();
    rec2.assert_balanced();
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
