//! The pool's rules (see `poolscope::pool`'s module docs), one deterministic test per rule,
//! each marked with its rule's tag, with a fake connection, manual polling and paused time;
//! no sockets. This file: time: the idle timeout, the max lifetime, the reaper, the pool-wait timeout (`[timeouts]`).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use poolscope::pool::{Config, Pool, Returned};
use poolscope::stats::{CloseReason, WaitOutcome};
use support::*;

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
