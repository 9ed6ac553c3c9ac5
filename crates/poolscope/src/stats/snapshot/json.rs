//! A snapshot as JSON, through mirror structs (serde stays out of the public types).

use super::PoolSnapshot;

impl PoolSnapshot {
    /// The snapshot as JSON: limits and one object per key (`key`, `idle`, `active`,
    /// `connecting`, `total`, `idle_conn_waiters`, `conns_per_host_waiters`,
    /// `oldest_wait_seconds`, `connections`), each connection an object (`id`, `state`,
    /// `version`, `age_seconds`, `idle_seconds`, `requests`, `streams`, `max_streams`,
    /// `local_addr`, `peer_addr`, `dial` {`resolved`, `attempts`, `fallback`}, `tcp` {`state`,
    /// `rtt_seconds`, `rtt_var_seconds`, `min_rtt_seconds`, `retransmits`, `lost`, `unacked`,
    /// `cwnd`, `bytes_acked`, `bytes_received`, `delivery_rate`}); absent facts are `null`.
    pub fn to_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Limits {
            max_idle: Option<usize>,
            max_idle_per_host: Option<usize>,
            max_conns_per_host: Option<usize>,
            idle_timeout_seconds: Option<f64>,
            max_lifetime_seconds: Option<f64>,
        }
        #[derive(serde::Serialize)]
        struct Host {
            key: String,
            idle: usize,
            active: usize,
            connecting: usize,
            total: usize,
            idle_conn_waiters: usize,
            conns_per_host_waiters: usize,
            oldest_wait_seconds: Option<f64>,
            connections: Vec<Conn>,
        }
        #[derive(serde::Serialize)]
        struct Conn {
            id: u64,
            state: &'static str,
            version: String,
            age_seconds: f64,
            idle_seconds: Option<f64>,
            requests: u64,
            streams: usize,
            max_streams: Option<usize>,
            local_addr: Option<String>,
            peer_addr: Option<String>,
            dial: Option<Dial>,
            tcp: Option<Tcp>,
        }
        #[derive(serde::Serialize)]
        struct Dial {
            resolved: usize,
            attempts: usize,
            fallback: bool,
        }
        #[derive(serde::Serialize)]
        struct Tcp {
            state: &'static str,
            rtt_seconds: f64,
            rtt_var_seconds: f64,
            min_rtt_seconds: Option<f64>,
            retransmits: u32,
            lost: u32,
            unacked: u32,
            cwnd: u32,
            bytes_acked: Option<u64>,
            bytes_received: Option<u64>,
            delivery_rate: Option<u64>,
        }
        #[derive(serde::Serialize)]
        struct Snap {
            limits: Limits,
            hosts: Vec<Host>,
        }
        let l = &self.limits;
        let snap = Snap {
            limits: Limits {
                max_idle: l.max_idle,
                max_idle_per_host: l.max_idle_per_host,
                max_conns_per_host: l.max_conns_per_host,
                idle_timeout_seconds: l.idle_timeout.map(|d| d.as_secs_f64()),
                max_lifetime_seconds: l.max_lifetime.map(|d| d.as_secs_f64()),
            },
            hosts: self
                .hosts
                .iter()
                .map(|h| Host {
                    key: h.key.to_string(),
                    idle: h.idle,
                    active: h.active,
                    connecting: h.connecting,
                    total: h.total,
                    idle_conn_waiters: h.idle_conn_waiters,
                    conns_per_host_waiters: h.conns_per_host_waiters,
                    oldest_wait_seconds: h.oldest_wait.map(|d| d.as_secs_f64()),
                    connections: h
                        .connections
                        .iter()
                        .map(|c| Conn {
                            id: c.id.get(),
                            state: c.state.as_str(),
                            version: format!("{:?}", c.version),
                            age_seconds: c.age.as_secs_f64(),
                            idle_seconds: c.idle_for.map(|d| d.as_secs_f64()),
                            requests: c.requests,
                            streams: c.streams,
                            max_streams: c.max_streams,
                            local_addr: c.local_addr.map(|a| a.to_string()),
                            peer_addr: c.peer_addr.map(|a| a.to_string()),
                            dial: c.dial.map(|d| Dial {
                                resolved: d.resolved,
                                attempts: d.attempts,
                                fallback: d.fallback,
                            }),
                            tcp: c.tcp.map(|t| Tcp {
                                state: t.state.as_str(),
                                rtt_seconds: t.rtt.as_secs_f64(),
                                rtt_var_seconds: t.rtt_var.as_secs_f64(),
                                min_rtt_seconds: t.min_rtt.map(|d| d.as_secs_f64()),
                                retransmits: t.retransmits,
                                lost: t.lost,
                                unacked: t.unacked,
                                cwnd: t.cwnd,
                                bytes_acked: t.bytes_acked,
                                bytes_received: t.bytes_received,
                                delivery_rate: t.delivery_rate,
                            }),
                        })
                        .collect(),
                })
                .collect(),
        };
        serde_json::to_string(&snap).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}
