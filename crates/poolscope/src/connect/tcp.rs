//! TCP connect with happy eyeballs: addresses interleaved by family and tried in turn, a new
//! attempt starting every `stagger` while earlier ones are pending, or at once when one fails.
//! The first to connect wins; the others are dropped. Every attempt that reported
//! `connect_start` reports `connect_done`, a dropped one (it lost the race, or the connect
//! timed out) with a "canceled" error. The request's `connect` timing runs from the first
//! attempt's start to the winner's end, so time lost on a silent address is not hidden.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::net::TcpStream;

use std::sync::Arc;

use super::{ConnectError, ConnectPhase};
use crate::trace::{dial_tracer, ConnectDoneInfo, ConnectStartInfo, Mark, Tracer};

/// Orders addresses as RFC 8305 suggests: alternate families, starting with the first.
pub(crate) fn interleave(addrs: Vec<IpAddr>) -> Vec<IpAddr> {
    let first_v6 = addrs.first().is_some_and(IpAddr::is_ipv6);
    let (a, b): (Vec<IpAddr>, Vec<IpAddr>) =
        addrs.into_iter().partition(|ip| ip.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter(), b.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

/// One traced attempt between its `connect_start` and its `connect_done`: if it is dropped
/// before it ends, the drop reports the `connect_done`.
struct Reported {
    tracer: Option<Arc<Tracer>>,
    addr: SocketAddr,
    start: Instant,
}

impl Reported {
    fn done(&mut self, error: Option<String>) {
        if let Some(t) = self.tracer.take() {
            t.connect_done(|| ConnectDoneInfo {
                request_id: t.request_id,
                key: t.key.clone(),
                addr: self.addr,
                error,
                took: self.start.elapsed(),
            });
        }
    }
}

impl Drop for Reported {
    fn drop(&mut self) {
        self.done(Some("canceled".into()));
    }
}

/// Connects to `addr`; `began` is when the first attempt of the race started.
async fn attempt(
    addr: SocketAddr,
    began: Instant,
) -> Result<TcpStream, (SocketAddr, std::io::Error)> {
    let tracer = dial_tracer();
    if let Some(t) = &tracer {
        t.connect_start(|| ConnectStartInfo {
            request_id: t.request_id,
            addr,
        });
    }
    let mut report = Reported {
        tracer,
        addr,
        start: Instant::now(),
    };
    let result = TcpStream::connect(addr).await;
    if let (Some(t), Ok(_)) = (&report.tracer, &result) {
        t.mark(Mark::Connect, began.elapsed());
    }
    report.done(result.as_ref().err().map(ToString::to_string));
    result.map_err(|e| (addr, e))
}

/// Connects to one of `addrs` on `port`.
pub(crate) async fn connect(
    addrs: Vec<IpAddr>,
    port: u16,
    stagger: Duration,
    timeout: Option<Duration>,
) -> Result<TcpStream, ConnectError> {
    let race = race(addrs, port, stagger);
    let stream = match timeout {
        Some(t) => tokio::time::timeout(t, race).await.map_err(|_| {
            ConnectError::new(ConnectPhase::Tcp, format!("connect timed out after {t:?}"))
                .timed_out()
        })??,
        None => race.await?,
    };
    // Small requests and responses must not wait for Nagle's algorithm.
    stream
        .set_nodelay(true)
        .map_err(|e| ConnectError::new(ConnectPhase::Tcp, "setting TCP_NODELAY").with(e))?;
    Ok(stream)
}

async fn race(addrs: Vec<IpAddr>, port: u16, stagger: Duration) -> Result<TcpStream, ConnectError> {
    let mut pending = interleave(addrs)
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port));
    let mut running = FuturesUnordered::new();
    let mut last_err: Option<(SocketAddr, std::io::Error)> = None;
    let began = Instant::now();
    if let Some(addr) = pending.next() {
        running.push(attempt(addr, began));
    }
    while !running.is_empty() {
        let next = tokio::time::timeout(stagger, running.next()).await;
        match next {
            Ok(Some(Ok(stream))) => return Ok(stream),
            Ok(Some(Err(e))) => {
                last_err = Some(e);
                if let Some(addr) = pending.next() {
                    running.push(attempt(addr, began));
                }
            }
            Ok(None) => break,
            // Still pending after `stagger`: start the next address alongside.
            Err(_) => {
                if let Some(addr) = pending.next() {
                    running.push(attempt(addr, began));
                }
            }
        }
    }
    Err(match last_err {
        Some((addr, e)) => {
            ConnectError::new(ConnectPhase::Tcp, format!("connecting to {addr}")).with(e)
        }
        None => ConnectError::new(ConnectPhase::Dns, "no addresses to connect to"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleave_alternates_families_starting_with_the_first() {
        let v4 = |n| IpAddr::from([10, 0, 0, n]);
        let v6 = |n| IpAddr::from([0, 0, 0, 0, 0, 0, 0, n]);
        let got = interleave(vec![v6(1), v6(2), v6(3), v4(1), v4(2)]);
        assert_eq!(got, vec![v6(1), v4(1), v6(2), v4(2), v6(3)]);
    }
}
