//! Name resolution: literal IPs and `localhost` directly, other names through
//! hickory-resolver with the system configuration, created on first use.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;

use super::{ConnectError, ConnectPhase};
use crate::trace::{with_dial_tracer, DnsDoneInfo, DnsStartInfo, Mark};

/// A resolver shared by clones of a connector.
#[derive(Clone, Default)]
pub(crate) struct Resolver {
    hickory: Arc<OnceLock<Result<TokioResolver, String>>>,
    /// Name servers to ask instead of the system's.
    servers: Option<(Vec<IpAddr>, u16)>,
}

impl Resolver {
    /// Asks these name servers (UDP and TCP, `port`) instead of the system's.
    pub(crate) fn with_servers(ips: Vec<IpAddr>, port: u16) -> Resolver {
        Resolver {
            hickory: Arc::default(),
            servers: Some((ips, port)),
        }
    }

    /// Resolves `host` (brackets of an IPv6 literal already removed).
    pub(crate) async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, ConnectError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        with_dial_tracer(|t| {
            t.dns_start(|| DnsStartInfo {
                request_id: t.request_id,
                host: host.to_owned(),
            })
        });
        let start = Instant::now();
        let result = if host.eq_ignore_ascii_case("localhost") {
            Ok(vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ])
        } else {
            self.lookup(host).await
        };
        let end = Instant::now();
        with_dial_tracer(|t| {
            t.mark(Mark::Dns, end.saturating_duration_since(start));
            t.dns_done(|| DnsDoneInfo {
                request_id: t.request_id,
                key: t.key.clone(),
                addrs: result.as_ref().map(Clone::clone).unwrap_or_default(),
                error: result.as_ref().err().map(ToString::to_string),
                took: end - start,
            })
        });
        result
    }

    async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, ConnectError> {
        let resolver = self.hickory.get_or_init(|| match &self.servers {
            Some((ips, port)) => {
                let group = NameServerConfigGroup::from_ips_clear(ips, *port, true);
                let config = ResolverConfig::from_parts(None, Vec::new(), group);
                Ok(
                    TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                        .build(),
                )
            }
            None => TokioResolver::builder_tokio()
                .map(|b| b.build())
                .map_err(|e| format!("no system DNS configuration: {e}")),
        });
        let resolver = match resolver {
            Ok(r) => r,
            Err(e) => return Err(ConnectError::new(ConnectPhase::Dns, e.clone())),
        };
        let lookup = resolver.lookup_ip(host).await.map_err(|e| {
            ConnectError::new(ConnectPhase::Dns, format!("resolving {host:?}")).with(e)
        })?;
        let addrs: Vec<IpAddr> = lookup.iter().collect();
        if addrs.is_empty() {
            return Err(ConnectError::new(
                ConnectPhase::Dns,
                format!("no addresses for {host:?}"),
            ));
        }
        Ok(addrs)
    }
}
