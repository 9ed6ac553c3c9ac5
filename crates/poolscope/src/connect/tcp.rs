//! TCP connect with happy eyeballs: addresses interleaved by family and tried in turn, a new
//! attempt starting every `stagger` while earlier ones are pending, or at once when one fails
//! (with no stagger, one at a time). The first to connect wins; the others are dropped. Every
//! attempt that reported `connect_start` reports `connect_done`, a dropped one (it lost the
//! race, or the connect timed out) with a "canceled" error. The request's `connect` timing
//! runs from the first attempt's start to the winner's end, so time lost on a silent address
//! is not hidden.
//!
//! Each attempt's socket is a tokio `TcpSocket` whose options ([`SocketOptions`]: keepalive,
//! `TCP_NODELAY`, buffer sizes, `SO_REUSEADDR`, interface, mark, `TCP_USER_TIMEOUT`, local
//! address) are set through socket2 before it connects. An option the system refuses fails
//! the attempt, naming the option, with the system's error as the cause.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpSocket, TcpStream};

use crate::stats::DialSummary;

use std::sync::Arc;

use super::{ConnectError, ConnectPhase};
use crate::trace::{dial_tracer, ConnectDoneInfo, ConnectStartInfo, DialPhase, Phase, Tracer};

/// Options set on every socket before it connects. The default is the OS's defaults, except
/// for `nodelay` (see [`SocketOptions::new`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct SocketOptions {
    /// `TCP_KEEPIDLE`; with `keepalive_interval` and `keepalive_retries`, if any is set,
    /// `SO_KEEPALIVE`.
    pub(crate) keepalive_time: Option<Duration>,
    /// `TCP_KEEPINTVL`.
    pub(crate) keepalive_interval: Option<Duration>,
    /// `TCP_KEEPCNT`.
    pub(crate) keepalive_retries: Option<u32>,
    /// `TCP_NODELAY`.
    pub(crate) nodelay: bool,
    /// `SO_REUSEADDR`.
    pub(crate) reuse_address: bool,
    /// `SO_SNDBUF`.
    pub(crate) send_buffer_size: Option<usize>,
    /// `SO_RCVBUF`.
    pub(crate) recv_buffer_size: Option<usize>,
    /// The address IPv4 sockets bind to (port 0).
    pub(crate) local_v4: Option<Ipv4Addr>,
    /// The address IPv6 sockets bind to (port 0).
    pub(crate) local_v6: Option<Ipv6Addr>,
    /// `SO_BINDTODEVICE`.
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    pub(crate) interface: Option<String>,
    /// `SO_MARK`.
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    pub(crate) mark: Option<u32>,
    /// `TCP_USER_TIMEOUT`.
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    pub(crate) tcp_user_timeout: Option<Duration>,
}

impl SocketOptions {
    /// The OS's defaults, with `TCP_NODELAY` on: small requests and responses must not wait
    /// for Nagle's algorithm.
    pub(crate) fn new() -> SocketOptions {
        SocketOptions {
            nodelay: true,
            ..SocketOptions::default()
        }
    }

    /// The keepalive settings, if any is set. The kernel counts them in whole seconds and
    /// refuses 0 (`EINVAL`): shorter ones are raised to 1 s (a pool idle timeout under a
    /// second would otherwise fail every connect of `build_http`'s connector).
    fn keepalive(&self) -> Option<TcpKeepalive> {
        let at_least_1s = |d: Duration| d.max(Duration::from_secs(1));
        let mut any = false;
        let mut ka = TcpKeepalive::new();
        if let Some(time) = self.keepalive_time {
            ka = ka.with_time(at_least_1s(time));
            any = true;
        }
        if let Some(interval) = self.keepalive_interval {
            ka = with_interval(ka, at_least_1s(interval), &mut any);
        }
        if let Some(retries) = self.keepalive_retries {
            ka = with_retries(ka, retries, &mut any);
        }
        any.then_some(ka)
    }

    /// Only one family has a local address: only addresses of that family can be dialed.
    fn only_family(&self) -> Option<IpAddr> {
        match (self.local_v4, self.local_v6) {
            (Some(v4), None) => Some(IpAddr::V4(v4)),
            (None, Some(v6)) => Some(IpAddr::V6(v6)),
            _ => None,
        }
    }
}

// Where socket2 supports `TCP_KEEPINTVL` (as hyper-util: a no-op elsewhere).
#[cfg(any(
    target_os = "android",
    target_os = "dragonfly",
    target_os = "freebsd",
    target_os = "fuchsia",
    target_os = "illumos",
    target_os = "ios",
    target_os = "visionos",
    target_os = "linux",
    target_os = "macos",
    target_os = "netbsd",
    target_os = "tvos",
    target_os = "watchos",
    target_os = "windows",
))]
fn with_interval(ka: TcpKeepalive, interval: Duration, any: &mut bool) -> TcpKeepalive {
    *any = true;
    ka.with_interval(interval)
}

#[cfg(not(any(
    target_os = "android",
    target_os = "dragonfly",
    target_os = "freebsd",
    target_os = "fuchsia",
    target_os = "illumos",
    target_os = "ios",
    target_os = "visionos",
    target_os = "linux",
    target_os = "macos",
    target_os = "netbsd",
    target_os = "tvos",
    target_os = "watchos",
    target_os = "windows",
)))]
fn with_interval(ka: TcpKeepalive, _: Duration, _: &mut bool) -> TcpKeepalive {
    ka
}

// Where socket2 supports `TCP_KEEPCNT` (as hyper-util: a no-op elsewhere).
#[cfg(any(
    target_os = "android",
    target_os = "dragonfly",
    target_os = "freebsd",
    target_os = "fuchsia",
    target_os = "illumos",
    target_os = "ios",
    target_os = "visionos",
    target_os = "linux",
    target_os = "macos",
    target_os = "netbsd",
    target_os = "tvos",
    target_os = "watchos",
))]
fn with_retries(ka: TcpKeepalive, retries: u32, any: &mut bool) -> TcpKeepalive {
    *any = true;
    ka.with_retries(retries)
}

#[cfg(not(any(
    target_os = "android",
    target_os = "dragonfly",
    target_os = "freebsd",
    target_os = "fuchsia",
    target_os = "illumos",
    target_os = "ios",
    target_os = "visionos",
    target_os = "linux",
    target_os = "macos",
    target_os = "netbsd",
    target_os = "tvos",
    target_os = "watchos",
)))]
fn with_retries(ka: TcpKeepalive, _: u32, _: &mut bool) -> TcpKeepalive {
    ka
}

/// Why an attempt failed: what it was doing, and the system's error.
#[derive(Debug)]
struct AttemptError {
    addr: SocketAddr,
    /// `None`: the connect itself.
    doing: Option<String>,
    err: io::Error,
}

impl AttemptError {
    /// The first attempt's error is the cause (Go reports the first too); the message names
    /// every other address that was tried and how it failed.
    fn into_connect_error(self, others: &[AttemptError]) -> ConnectError {
        let mut msg = match self.doing {
            Some(doing) => format!("{doing} (for {})", self.addr),
            None => format!("connecting to {}", self.addr),
        };
        for other in others {
            msg.push_str(&format!(
                "; then {} failed too: {}",
                other.addr,
                other.event_text()
            ));
        }
        ConnectError::new(ConnectPhase::Tcp, msg).with(self.err)
    }

    /// What `connect_done` reports.
    fn event_text(&self) -> String {
        match &self.doing {
            Some(doing) => format!("{doing}: {}", self.err),
            None => self.err.to_string(),
        }
    }
}

/// A socket for `addr` with `opts` set, bound if a local address is set for its family; not
/// connected. On failure, what failed and why.
pub(crate) fn open(
    addr: SocketAddr,
    opts: &SocketOptions,
) -> Result<TcpSocket, (String, io::Error)> {
    fn doing(what: impl Into<String>) -> impl FnOnce(io::Error) -> (String, io::Error) {
        let what = what.into();
        move |e| (what, e)
    }
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(doing("opening a socket"))?;
    let sock = SockRef::from(&socket);
    if let Some(ka) = opts.keepalive() {
        sock.set_tcp_keepalive(&ka)
            .map_err(doing("setting TCP keepalive"))?;
    }
    sock.set_nodelay(opts.nodelay)
        .map_err(doing("setting TCP_NODELAY"))?;
    if opts.reuse_address {
        sock.set_reuse_address(true)
            .map_err(doing("setting SO_REUSEADDR"))?;
    }
    if let Some(size) = opts.send_buffer_size {
        // The kernel takes an `int`; larger values mean "the maximum" anyway.
        sock.set_send_buffer_size(size.min(i32::MAX as usize))
            .map_err(doing(format!("setting SO_SNDBUF to {size}")))?;
    }
    if let Some(size) = opts.recv_buffer_size {
        sock.set_recv_buffer_size(size.min(i32::MAX as usize))
            .map_err(doing(format!("setting SO_RCVBUF to {size}")))?;
    }
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    {
        if let Some(interface) = &opts.interface {
            sock.bind_device(Some(interface.as_bytes()))
                .map_err(doing(format!("binding to interface {interface:?}")))?;
        }
        if let Some(mark) = opts.mark {
            sock.set_mark(mark)
                .map_err(doing(format!("setting SO_MARK to {mark}")))?;
        }
        if let Some(timeout) = opts.tcp_user_timeout {
            sock.set_tcp_user_timeout(Some(timeout))
                .map_err(doing(format!("setting TCP_USER_TIMEOUT to {timeout:?}")))?;
        }
    }
    let local = match (addr, opts.local_v4, opts.local_v6) {
        (SocketAddr::V4(_), Some(ip), _) => Some(SocketAddr::new(ip.into(), 0)),
        (SocketAddr::V6(_), _, Some(ip)) => Some(SocketAddr::new(ip.into(), 0)),
        // Windows sockets must be bound before they connect.
        (SocketAddr::V4(_), None, _) if cfg!(windows) => {
            Some(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0))
        }
        (SocketAddr::V6(_), _, None) if cfg!(windows) => {
            Some(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0))
        }
        _ => None,
    };
    if let Some(local) = local {
        socket
            .bind(local)
            .map_err(doing(format!("binding to local address {}", local.ip())))?;
    }
    Ok(socket)
}

/// Orders addresses as RFC 8305 suggests: alternate families, starting with the first.
pub(crate) fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let first_v6 = addrs.first().is_some_and(SocketAddr::is_ipv6);
    let (a, b): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addrs.into_iter().partition(|a| a.is_ipv6() == first_v6);
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

/// Connects to `addr` with a socket that has `opts`. A connected stream comes back with the
/// address it reached.
async fn attempt(
    addr: SocketAddr,
    opts: &SocketOptions,
) -> Result<(SocketAddr, TcpStream), AttemptError> {
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
    let result = match open(addr, opts) {
        Ok(socket) => socket.connect(addr).await.map_err(|err| AttemptError {
            addr,
            doing: None,
            err,
        }),
        Err((doing, err)) => Err(AttemptError {
            addr,
            doing: Some(doing),
            err,
        }),
    };
    report.done(result.as_ref().err().map(AttemptError::event_text));
    result.map(|stream| (addr, stream))
}

/// Connects to one of `addrs`, with sockets that have `opts`. `stagger`: how long an attempt
/// may be pending before the next starts alongside; `None`: one attempt at a time.
pub(crate) async fn connect(
    addrs: Vec<SocketAddr>,
    opts: &SocketOptions,
    stagger: Option<Duration>,
    timeout: Option<Duration>,
) -> Result<(TcpStream, DialSummary), ConnectError> {
    // As hyper-util: with a local address for one family only, only that family is dialed.
    let addrs = match opts.only_family() {
        Some(local) => {
            let total = addrs.len();
            let same: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| a.is_ipv6() == local.is_ipv6())
                .collect();
            if same.is_empty() && total > 0 {
                return Err(ConnectError::new(
                    ConnectPhase::Tcp,
                    format!("no address of the host is of the local address {local}'s family"),
                ));
            }
            same
        }
        None => addrs,
    };
    // The phase is the whole race; each attempt reports its own start and end.
    let phase = DialPhase::start(Phase::Connect, |_| {});
    let race = race(addrs, opts, stagger);
    let result = match timeout {
        Some(t) => tokio::time::timeout(t, race).await.unwrap_or_else(|_| {
            Err(
                ConnectError::new(ConnectPhase::Tcp, format!("connect timed out after {t:?}"))
                    .timed_out(),
            )
        }),
        None => race.await,
    };
    phase.done(&result, |_, _| {});
    result
}

async fn race(
    addrs: Vec<SocketAddr>,
    opts: &SocketOptions,
    stagger: Option<Duration>,
) -> Result<(TcpStream, DialSummary), ConnectError> {
    let resolved = addrs.len();
    let first_v6 = addrs.first().is_some_and(SocketAddr::is_ipv6);
    let mut pending = interleave(addrs).into_iter();
    let mut running = FuturesUnordered::new();
    let mut errors: Vec<AttemptError> = Vec::new();
    if let Some(addr) = pending.next() {
        running.push(attempt(addr, opts));
    }
    while !running.is_empty() {
        // With no address left to start, nothing to stagger (and no timer needed).
        let next = match stagger.filter(|_| pending.len() > 0) {
            Some(stagger) => tokio::time::timeout(stagger, running.next()).await,
            None => Ok(running.next().await),
        };
        match next {
            Ok(Some(Ok((addr, stream)))) => {
                let fallback = addr.is_ipv6() != first_v6;
                // Attempts started: the addresses no longer pending.
                let attempts = resolved - pending.len();
                return Ok((stream, DialSummary::new(resolved, attempts, fallback)));
            }
            Ok(Some(Err(e))) => {
                errors.push(e);
                if let Some(addr) = pending.next() {
                    running.push(attempt(addr, opts));
                }
            }
            Ok(None) => break,
            // Still pending after `stagger`: start the next address alongside.
            Err(_) => {
                if let Some(addr) = pending.next() {
                    running.push(attempt(addr, opts));
                }
            }
        }
    }
    let mut errors = errors.into_iter();
    Err(match errors.next() {
        Some(first) => first.into_connect_error(errors.as_slice()),
        None => ConnectError::new(ConnectPhase::Dns, "no addresses to connect to"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleave_alternates_families_starting_with_the_first() {
        let v4 = |n| SocketAddr::from(([10, 0, 0, n], 80));
        let v6 = |n| SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, n], 80));
        let got = interleave(vec![v6(1), v6(2), v6(3), v4(1), v4(2)]);
        assert_eq!(got, vec![v6(1), v4(1), v6(2), v4(2), v6(3)]);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod socket_tests {
    //! The options as the kernel reports them on a socket [`open`] made.

    use super::*;

    fn v4() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 80))
    }

    #[tokio::test]
    async fn the_defaults_are_the_systems_with_nodelay() {
        let socket = open(v4(), &SocketOptions::new()).unwrap();
        let s = SockRef::from(&socket);
        assert!(s.nodelay().unwrap());
        assert!(!s.keepalive().unwrap());
        assert!(!s.reuse_address().unwrap());
        assert_eq!(s.device().unwrap(), None);
        assert_eq!(s.tcp_user_timeout().unwrap(), None);
        assert_eq!(s.mark().unwrap(), 0);
        assert_eq!(s.local_addr().unwrap().as_socket().unwrap().port(), 0);
    }

    #[tokio::test]
    async fn every_option_is_set_before_connecting() {
        let opts = SocketOptions {
            keepalive_time: Some(Duration::from_secs(61)),
            keepalive_interval: Some(Duration::from_secs(7)),
            keepalive_retries: Some(4),
            nodelay: false,
            reuse_address: true,
            send_buffer_size: Some(64 * 1024),
            recv_buffer_size: Some(96 * 1024),
            local_v4: Some(Ipv4Addr::new(127, 0, 0, 2)),
            local_v6: None,
            interface: Some("lo".into()),
            mark: None,
            tcp_user_timeout: Some(Duration::from_millis(1500)),
        };
        let socket = open(v4(), &opts).unwrap();
        let s = SockRef::from(&socket);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.keepalive_time().unwrap(), Duration::from_secs(61));
        assert_eq!(s.keepalive_interval().unwrap(), Duration::from_secs(7));
        assert_eq!(s.keepalive_retries().unwrap(), 4);
        assert!(!s.nodelay().unwrap());
        assert!(s.reuse_address().unwrap());
        // Linux doubles buffer sizes for its bookkeeping.
        assert_eq!(s.send_buffer_size().unwrap(), 2 * 64 * 1024);
        assert_eq!(s.recv_buffer_size().unwrap(), 2 * 96 * 1024);
        assert_eq!(s.device().unwrap().as_deref(), Some(&b"lo"[..]));
        assert_eq!(
            s.tcp_user_timeout().unwrap(),
            Some(Duration::from_millis(1500))
        );
        let local = s.local_addr().unwrap().as_socket().unwrap();
        assert_eq!(local.ip(), IpAddr::from([127, 0, 0, 2]));
    }

    #[tokio::test]
    async fn any_keepalive_setting_turns_keepalive_on() {
        for opts in [
            SocketOptions {
                keepalive_interval: Some(Duration::from_secs(3)),
                ..SocketOptions::new()
            },
            SocketOptions {
                keepalive_retries: Some(2),
                ..SocketOptions::new()
            },
        ] {
            let socket = open(v4(), &opts).unwrap();
            assert!(SockRef::from(&socket).keepalive().unwrap(), "{opts:?}");
        }
    }

    #[tokio::test]
    async fn each_family_binds_its_own_local_address() {
        let opts = SocketOptions {
            local_v4: Some(Ipv4Addr::new(127, 0, 0, 3)),
            local_v6: Some(Ipv6Addr::LOCALHOST),
            ..SocketOptions::new()
        };
        let socket = open(v4(), &opts).unwrap();
        let local = SockRef::from(&socket).local_addr().unwrap().as_socket();
        assert_eq!(local.unwrap().ip(), IpAddr::from([127, 0, 0, 3]));
        // Where IPv6 loopback exists.
        if std::net::TcpListener::bind("[::1]:0").is_ok() {
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 80));
            let socket = open(v6, &opts).unwrap();
            let local = SockRef::from(&socket).local_addr().unwrap().as_socket();
            assert_eq!(local.unwrap().ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
        }
    }

    #[tokio::test]
    async fn mark_is_set_or_refused_without_cap_net_admin() {
        let opts = SocketOptions {
            mark: Some(7),
            ..SocketOptions::new()
        };
        match open(v4(), &opts) {
            Ok(socket) => assert_eq!(SockRef::from(&socket).mark().unwrap(), 7),
            Err((doing, err)) => {
                assert_eq!(doing, "setting SO_MARK to 7");
                assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
            }
        }
    }

    #[tokio::test]
    async fn a_refused_option_names_itself_and_keeps_the_system_error() {
        let opts = SocketOptions {
            interface: Some("nosuchif0".into()),
            ..SocketOptions::new()
        };
        let Err((doing, err)) = open(v4(), &opts) else {
            panic!("an unknown interface is refused");
        };
        assert_eq!(doing, "binding to interface \"nosuchif0\"");
        assert_eq!(err.raw_os_error(), Some(19), "ENODEV: {err}");
    }
}
