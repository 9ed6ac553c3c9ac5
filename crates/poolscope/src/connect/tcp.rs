//! TCP connect with happy eyeballs: addresses interleaved by family and tried in turn, a new
//! attempt starting every `stagger` while earlier ones are pending, or at once when one fails.
//! The first to connect wins; the others are dropped.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::net::TcpStream;

use super::{ConnectError, ConnectPhase};
use crate::trace::{with_dial_tracer, ConnectDoneInfo, ConnectStartInfo, Mark};

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

async fn attempt(addr: SocketAddr) -> Result<TcpStream, (SocketAddr, std::io::Error)> {
    with_dial_tracer(|t| {
        t.connect_start(|| ConnectStartInfo {
            request_id: t.request_id,
            addr,
        })
    });
    let start = Instant::now();
    let result = TcpStream::connect(addr).await;
    let end = Instant::now();
    with_dial_tracer(|t| {
        if result.is_ok() {
            t.mark(Mark::Connect, end.saturating_duration_since(start));
        }
        t.connect_done(|| ConnectDoneInfo {
            request_id: t.request_id,
            key: t.key.clone(),
            addr,
            error: result.as_ref().err().map(ToString::to_string),
            took: end - start,
        })
    });
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
    if let Some(addr) = pending.next() {
        running.push(attempt(addr));
    }
    while !running.is_empty() {
        let next = tokio::time::timeout(stagger, running.next()).await;
        match next {
            Ok(Some(Ok(stream))) => return Ok(stream),
            Ok(Some(Err(e))) => {
                last_err = Some(e);
                if let Some(addr) = pending.next() {
                    running.push(attempt(addr));
                }
            }
            Ok(None) => break,
            // Still pending after `stagger`: start the next address alongside.
            Err(_) => {
                if let Some(addr) = pending.next() {
                    running.push(attempt(addr));
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
