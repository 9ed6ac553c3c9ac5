//! Name resolution: literal IPs directly, other names through a resolver service — by
//! default [`HickoryResolver`] (hickory-resolver with the system configuration, created on
//! first use; `localhost` without a query), or any `tower_service::Service<Name>` as
//! hyper-util's `HttpConnector::new_with_resolver` takes. Every lookup that goes to a resolver
//! reports `dns_start` / `dns_done` to the request that started the dial.

use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use hyper_util::client::legacy::connect::dns::Name;
use tower_service::Service;

use super::{ConnectError, ConnectPhase};
use crate::trace::{DialPhase, DnsDoneInfo, DnsStartInfo, Phase};

/// [`HttpConnector`](super::HttpConnector)'s default resolver: hickory-resolver with the
/// system configuration (`/etc/resolv.conf`), or with the name servers given to
/// [`with_nameservers`](HickoryResolver::with_nameservers). `localhost` resolves to
/// `127.0.0.1` and `::1` without a query, a literal IP to itself. The hickory resolver is
/// created on first use and shared by clones.
///
/// It is a `tower_service::Service<Name>` (hyper-util's
/// [`Name`](hyper_util::client::legacy::connect::dns::Name)) like any resolver
/// [`HttpConnector::new_with_resolver`](super::HttpConnector::new_with_resolver) takes, so a
/// custom resolver can wrap it. The addresses it returns have port 0: the connector sets the
/// URI's port.
#[derive(Clone, Default)]
pub struct HickoryResolver {
    hickory: Arc<OnceLock<Result<TokioResolver, String>>>,
    /// Name servers to ask instead of the system's.
    servers: Option<(Vec<IpAddr>, u16)>,
}

impl std::fmt::Debug for HickoryResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HickoryResolver")
            .field("servers", &self.servers)
            .finish()
    }
}

impl HickoryResolver {
    /// Uses the system configuration.
    pub fn new() -> HickoryResolver {
        HickoryResolver::default()
    }

    /// Asks these name servers (UDP and TCP, on `port`) instead of the system's.
    pub fn with_nameservers(ips: &[IpAddr], port: u16) -> HickoryResolver {
        HickoryResolver {
            hickory: Arc::default(),
            servers: Some((ips.to_vec(), port)),
        }
    }

    /// The addresses of `host` (brackets of an IPv6 literal already removed).
    async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, ConnectError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        if host.eq_ignore_ascii_case("localhost") {
            return Ok(vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]);
        }
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
            return Err(ConnectError::no_addresses(host));
        }
        Ok(addrs)
    }
}

/// The future of a [`HickoryResolver`] lookup.
type HickoryFuture =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, ConnectError>> + Send>>;

impl Service<Name> for HickoryResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ConnectError;
    type Future = HickoryFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let ips = this.lookup(name.as_str()).await?;
            Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect::<Vec<_>>()
                .into_iter())
        })
    }
}

/// A resolver error as a DNS-phase [`ConnectError`]: poolscope's own DNS errors as they are,
/// anything else as the source of one.
fn dns_error(host: &str, err: Box<dyn StdError + Send + Sync>) -> ConnectError {
    match err.downcast::<ConnectError>() {
        Ok(ce) if ce.phase() == ConnectPhase::Dns => *ce,
        Ok(ce) => ConnectError::new(ConnectPhase::Dns, format!("resolving {host:?}")).with(ce),
        Err(other) => {
            ConnectError::new(ConnectPhase::Dns, format!("resolving {host:?}")).with(other)
        }
    }
}

/// Asks `resolver` (a clone of it, made ready first, as `tower` requires) for the addresses of
/// `host`, reporting `dns_start` and `dns_done`. An empty answer is an error.
pub(crate) async fn resolve<R>(resolver: &R, host: &str) -> Result<Vec<SocketAddr>, ConnectError>
where
    R: Service<Name> + Clone,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let phase = DialPhase::start(Phase::Dns, |t| {
        t.dns_start(|| DnsStartInfo {
            request_id: t.request_id,
            host: host.to_owned(),
        })
    });
    let result = ask(resolver.clone(), host).await;
    phase.done(&result, |t, took| {
        t.dns_done(|| DnsDoneInfo {
            request_id: t.request_id,
            key: t.key.clone(),
            addrs: result
                .as_ref()
                .map(|a| a.iter().map(SocketAddr::ip).collect())
                .unwrap_or_default(),
            host: host.to_owned(),
            error: result.as_ref().err().map(|e| crate::trace::error_text(e)),
            error_type: result.as_ref().err().map(error_type),
            took,
        })
    });
    result
}

/// A failed lookup's `error.type` (see [`DnsDoneInfo::error_type`]), from the error and its
/// causes: hickory's answers, an IO timeout, or poolscope's own empty answer.
fn error_type(err: &ConnectError) -> &'static str {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(r) = e.downcast_ref::<hickory_resolver::ResolveError>() {
            if r.is_nx_domain() || r.is_no_records_found() {
                return "host_not_found";
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return "timeout";
            }
        }
        if let Some(ce) = e.downcast_ref::<ConnectError>() {
            if ce.is_no_addresses() {
                return "host_not_found";
            }
            if ce.is_timeout() {
                return "timeout";
            }
        }
        cause = e.source();
    }
    "_OTHER"
}

async fn ask<R>(mut resolver: R, host: &str) -> Result<Vec<SocketAddr>, ConnectError>
where
    R: Service<Name>,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let name = Name::from_str(host).map_err(|e| {
        ConnectError::new(ConnectPhase::Dns, format!("invalid name {host:?}")).with(e)
    })?;
    {
        let ready = std::future::poll_fn(|cx| resolver.poll_ready(cx)).await;
        ready.map_err(|e| dns_error(host, e.into()))?;
    }
    let addrs: Vec<SocketAddr> = {
        let answer = resolver.call(name).await;
        answer.map_err(|e| dns_error(host, e.into()))?.collect()
    };
    if addrs.is_empty() {
        return Err(ConnectError::no_addresses(host));
    }
    Ok(addrs)
}
