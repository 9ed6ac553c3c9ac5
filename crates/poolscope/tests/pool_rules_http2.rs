//! The pool's rules (see `poolscope::pool`'s module docs), one deterministic test per rule,
//! each marked with its rule's tag, with a fake connection, manual polling and paused time;
//! no sockets. This file: shared (HTTP/2) connections: waiting for a dial, stream limits, retiring (`[http2]`, `[stream-limits]`, `[retiring]`).

mod support;

use poolscope::pool::{Config, Returned};
use poolscope::stats::CloseReason;
use support::*;

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
