//! A snapshot as text: the pool's limits, a line per key, a table of its connections.

use std::fmt;
use std::time::Duration;

use super::{ConnSnapshot, PoolSnapshot};

fn limit(v: Option<usize>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

/// One line of the table: the key left-aligned, counts right-aligned.
fn row(f: &mut fmt::Formatter<'_>, width: usize, c: [String; 8]) -> fmt::Result {
    writeln!(
        f,
        "  {:<width$}  {:>5} {:>6} {:>10} {:>5}  {:>10} {:>10}  {}",
        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
    )
}

/// A duration in the unit that keeps it short: `850µs`, `12.3ms`, `4.1s`, `3m20s`.
fn short(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", d.as_secs_f64() * 1e3)
    } else if us < 60_000_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// The connections of one key, indented under its row.
fn conn_table(f: &mut fmt::Formatter<'_>, conns: &[ConnSnapshot]) -> fmt::Result {
    if conns.is_empty() {
        return Ok(());
    }
    let line = |f: &mut fmt::Formatter<'_>, c: [&str; 11]| {
        writeln!(
            f,
            "      {:<6} {:<8} {:<6} {:>7} {:>7} {:>8} {:>7} {:>8} {:>7}  {:<11} {}",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10]
        )
    };
    line(
        f,
        [
            "conn", "version", "state", "age", "idle", "requests", "streams", "rtt", "retrans",
            "tcp", "peer",
        ],
    )?;
    for c in conns {
        let dash = || "-".to_owned();
        let streams = match c.max_streams {
            Some(max) => format!("{}/{max}", c.streams),
            None => c.streams.to_string(),
        };
        let tcp = c.tcp.as_ref();
        let mut peer = c.peer_addr.map_or_else(dash, |a| a.to_string());
        if let Some(local) = c.local_addr {
            peer = format!("{peer} from {local}");
        }
        if c.dial.is_some_and(|d| d.fallback) {
            peer.push_str(" (fallback family)");
        }
        line(
            f,
            [
                &c.id.to_string(),
                &format!("{:?}", c.version),
                c.state.as_str(),
                &short(c.age),
                &c.idle_for.map_or_else(dash, short),
                &c.requests.to_string(),
                &streams,
                &tcp.map_or_else(dash, |t| short(t.rtt)),
                &tcp.map_or_else(dash, |t| t.retransmits.to_string()),
                tcp.map_or("-", |t| t.state.as_str()),
                &peer,
            ],
        )?;
    }
    Ok(())
}

impl fmt::Display for PoolSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.limits;
        writeln!(
            f,
            "pool: max_idle={} max_idle_per_host={} max_conns_per_host={}",
            limit(l.max_idle),
            limit(l.max_idle_per_host),
            limit(l.max_conns_per_host)
        )?;
        let width = self
            .hosts
            .iter()
            .map(|h| h.key.to_string().len())
            .max()
            .unwrap_or(0)
            .max("key".len());
        row(
            f,
            width,
            [
                "key",
                "idle",
                "active",
                "connecting",
                "total",
                "wait(idle)",
                "wait(dial)",
                "oldest wait",
            ]
            .map(str::to_owned),
        )?;
        for h in &self.hosts {
            let oldest = h
                .oldest_wait
                .map_or_else(|| "-".to_owned(), |d| format!("{d:?}"));
            row(
                f,
                width,
                [
                    h.key.to_string(),
                    h.idle.to_string(),
                    h.active.to_string(),
                    h.connecting.to_string(),
                    h.total.to_string(),
                    h.idle_conn_waiters.to_string(),
                    h.conns_per_host_waiters.to_string(),
                    oldest,
                ],
            )?;
            conn_table(f, &h.connections)?;
        }
        write!(
            f,
            "  total: {} idle, {} active, {} connecting, {} waiting",
            self.total_idle(),
            self.total_active(),
            self.total_connecting(),
            self.total_waiters()
        )
    }
}
