//! What the pool hands to the hooks and sinks: [`Event`] (crate-private), and the limits
//! whose hits carry a snapshot.

use std::time::Instant;

use super::*;

/// The limit a `*_hit` event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::enum_variant_names)] // named after the Go limits they report
pub(crate) enum Limit {
    MaxIdleConns,
    MaxIdleConnsPerHost,
    MaxConnsPerHost,
}

impl Limit {
    /// The limit's name, as the builder and metrics call it.
    #[cfg_attr(not(any(feature = "metrics", feature = "tracing")), allow(dead_code))]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Limit::MaxIdleConns => "max_idle_conns",
            Limit::MaxIdleConnsPerHost => "max_idle_conns_per_host",
            Limit::MaxConnsPerHost => "max_conns_per_host",
        }
    }
}

/// One pool event, collected under the pool lock and dispatched after it is released.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    IdleConnWaitIn(WaitIn),
    IdleConnWaitOut(WaitOut),
    ConnsPerHostWaitIn(WaitIn),
    ConnsPerHostWaitOut(WaitOut),
    IdleConnIn(IdleConnIn),
    IdleConnOut(IdleConnOut),
    ConnReused(ConnReused),
    /// The snapshot is taken only when a hook or sink wants it.
    LimitHit(Limit, Option<Box<PoolSnapshot>>),
    ConnOpened(ConnOpened),
    ConnClosed(ConnClosed),
}

impl Event {
    /// When it happened (a limit hit carries no time of its own).
    pub(crate) fn at(&self) -> Option<Instant> {
        match self {
            Event::IdleConnWaitIn(e) | Event::ConnsPerHostWaitIn(e) => Some(e.at),
            Event::IdleConnWaitOut(e) | Event::ConnsPerHostWaitOut(e) => Some(e.at),
            Event::IdleConnIn(e) => Some(e.at),
            Event::IdleConnOut(e) => Some(e.at),
            Event::ConnReused(e) => Some(e.at),
            Event::LimitHit(..) => None,
            Event::ConnOpened(e) => Some(e.at),
            Event::ConnClosed(e) => Some(e.at),
        }
    }
}
