//! The pool's events as metrics (a `Stats` sink), and the dial phases' durations (a
//! `ClientTrace` of the metrics' own).

use super::*;

use super::Metrics;

/// The pool-level metrics: a `Stats` sink.
pub(crate) struct PoolMetrics(pub(crate) Arc<Metrics>);

/// The pool's events as metrics: a [`PoolMetrics`] sink.
pub(crate) fn pool_sink(m: &Arc<Metrics>) -> Arc<dyn EventSink> {
    Arc::new(PoolMetrics(m.clone()))
}

impl EventSink for PoolMetrics {
    fn on_pool_event(&self, event: &Event) {
        let m = &self.0;
        match event {
            Event::ConnOpened(e) => {
                let h = m.host(&e.key);
                h.enter();
                h.created.increment(1);
                h.create_time.record(e.dial_time.as_secs_f64());
                h.open_active.increment(1.0);
            }
            Event::ConnClosed(e) => {
                let h = m.host(&e.key);
                if let Some(i) = CLOSE_REASONS.iter().position(|r| *r == e.reason) {
                    h.closed[i].increment(1);
                }
                h.connection_duration.record(e.lifetime.as_secs_f64());
                h.open_active.decrement(1.0);
                h.leave(|| m.nanos(e.at));
            }
            Event::IdleConnIn(e) => {
                let h = m.host(&e.key);
                h.open_active.decrement(1.0);
                h.open_idle.increment(1.0);
            }
            // A connection leaving the idle list is in use, or about to be closed (its
            // `ConnClosed` then takes it out of `active`).
            Event::IdleConnOut(e) => {
                let h = m.host(&e.key);
                h.open_idle.decrement(1.0);
                h.open_active.increment(1.0);
            }
            Event::IdleConnWaitIn(e) => m.host(&e.key).pending_idle.increment(1.0),
            Event::IdleConnWaitOut(e) => m.host(&e.key).pending_idle.decrement(1.0),
            Event::ConnsPerHostWaitIn(e) => m.host(&e.key).pending_dial.increment(1.0),
            Event::ConnsPerHostWaitOut(e) => m.host(&e.key).pending_dial.decrement(1.0),
            Event::LimitHit(limit, _) => m.limit_hit(*limit).increment(1),
            Event::ConnReused(_) => {}
        }
    }
}

/// DNS, TCP connect and TLS handshake durations of the dials requests start.
pub(crate) fn dial_trace(m: &Arc<Metrics>) -> ClientTrace {
    let (m1, m2, m3) = (m.clone(), m.clone(), m.clone());
    ClientTrace::builder()
        .on_dns_done(move |i| {
            m1.host(&i.key)
                .record_dns(&i.host, i.error_type, i.took.as_secs_f64())
        })
        .on_connect_done(move |i| {
            if i.error.is_none() {
                m2.host(&i.key)
                    .connect_duration
                    .record(i.took.as_secs_f64())
            }
        })
        .on_tls_handshake_done(move |i| {
            if i.error.is_none() {
                m3.host(&i.key).tls_duration.record(i.took.as_secs_f64())
            }
        })
        .build()
}
