//! One host's metric handles, registered once and updated with an atomic each.

use super::*;

pub(super) const CLOSE_REASONS: [CloseReason; 11] = [
    CloseReason::IdleTimeout,
    CloseReason::MaxLifetime,
    CloseReason::MaxIdleConns,
    CloseReason::MaxIdleConnsPerHost,
    CloseReason::Broken,
    CloseReason::NotReusable,
    CloseReason::CloseIdle,
    CloseReason::PoolClosed,
    CloseReason::GoAway,
    CloseReason::Redundant,
    CloseReason::Poisoned,
];

pub(super) const RETRY_REASONS: [RetryReason; 5] = [
    RetryReason::StaleConnection,
    RetryReason::NotSent,
    RetryReason::GoAway,
    RetryReason::RefusedStream,
    RetryReason::ConnectionClosed,
];

/// A version as a small number (0: none), to keep in an atomic.
pub(super) fn version_code(v: Option<Version>) -> u8 {
    match v {
        None => 0,
        Some(Version::HTTP_09) => 1,
        Some(Version::HTTP_10) => 2,
        Some(Version::HTTP_2) => 4,
        Some(Version::HTTP_3) => 5,
        Some(_) => 3,
    }
}

/// The version a [`version_code`] stands for.
pub(super) fn version_of(code: u8) -> Option<Version> {
    match code {
        0 => None,
        1 => Some(Version::HTTP_09),
        2 => Some(Version::HTTP_10),
        4 => Some(Version::HTTP_2),
        5 => Some(Version::HTTP_3),
        _ => Some(Version::HTTP_11),
    }
}

/// How a request ended, as its duration's attributes say.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Outcome {
    Status(u16),
    Error(&'static str),
}

/// The attributes a request duration is recorded under, beyond its host's.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct DurationKey {
    /// Index into the client's known methods.
    pub(super) method: u16,
    /// The connection's HTTP version, if the request got one ([`version_code`]).
    pub(super) version: u8,
    pub(super) outcome: Outcome,
}

/// A DNS lookup series: the name looked up, the error type (`None`: it succeeded).
pub(super) type DnsSeries = (Box<str>, Option<&'static str>, Histogram);

/// One host's metric handles (a pool key's: scheme, host, port), registered once: updates
/// are then an atomic each, with no label building and no registry lookup.
pub(super) struct HostMetrics {
    /// `server.address`, `server.port`, `url.scheme`.
    pub(super) base: [Label; 3],
    pub(super) open_idle: Gauge,
    pub(super) open_active: Gauge,
    pub(super) pending_idle: Gauge,
    pub(super) pending_dial: Gauge,
    pub(super) created: Counter,
    pub(super) reused: Counter,
    pub(super) closed: [Counter; CLOSE_REASONS.len()],
    pub(super) resends: [Counter; RETRY_REASONS.len()],
    pub(super) connection_duration: Histogram,
    pub(super) create_time: Histogram,
    pub(super) connect_duration: Histogram,
    pub(super) tls_duration: Histogram,
    pub(super) time_in_queue: Histogram,
    /// Active requests by method index (the last one is `_OTHER`), made on first use.
    pub(super) active: Box<[OnceLock<Gauge>]>,
    /// Request durations by method, version and outcome, made on first use.
    pub(super) durations: RwLock<HashMap<DurationKey, Histogram, foldhash::fast::RandomState>>,
    /// DNS lookups by name looked up and error type (`None`: it succeeded).
    pub(super) dns: Mutex<Vec<DnsSeries>>,
    /// Open connections plus requests in progress: the host is quiet at 0.
    pub(super) live: AtomicIsize,
    /// When `live` last became 0, in nanoseconds since [`Metrics::anchor`].
    pub(super) quiet_since: AtomicU64,
}

impl HostMetrics {
    pub(super) fn new(key: &ConnectKey, methods: usize, at: u64) -> HostMetrics {
        let base = [
            Label::new("server.address", key.host().to_owned()),
            Label::new("server.port", key.port().to_string()),
            Label::new("url.scheme", key.scheme().to_owned()),
        ];
        let with = |extra: &[(&'static str, &'static str)]| -> Vec<Label> {
            let mut v = base.to_vec();
            v.extend(extra.iter().map(|(k, val)| Label::new(*k, *val)));
            v
        };
        let counter = |name: &'static str, extra: &[(&'static str, &'static str)]| {
            metrics::counter!(name, with(extra))
        };
        let gauge = |name: &'static str, extra: &[(&'static str, &'static str)]| {
            metrics::gauge!(name, with(extra))
        };
        let histogram = |name: &'static str| metrics::histogram!(name, with(&[]));
        HostMetrics {
            open_idle: gauge(OPEN_CONNECTIONS, &[("http.connection.state", "idle")]),
            open_active: gauge(OPEN_CONNECTIONS, &[("http.connection.state", "active")]),
            pending_idle: gauge(PENDING_REQUESTS, &[("poolscope.queue", "idle")]),
            pending_dial: gauge(PENDING_REQUESTS, &[("poolscope.queue", "conns_per_host")]),
            created: counter(CONNECTIONS_CREATED, &[]),
            reused: counter(CONNECTIONS_REUSED, &[]),
            closed: CLOSE_REASONS.map(|r| {
                counter(
                    CONNECTIONS_CLOSED,
                    &[("poolscope.close_reason", r.as_str())],
                )
            }),
            resends: RETRY_REASONS
                .map(|r| counter(REQUEST_RESENDS, &[("poolscope.retry_reason", r.as_str())])),
            connection_duration: histogram(CONNECTION_DURATION),
            create_time: histogram(CREATE_TIME),
            connect_duration: histogram(CONNECT_DURATION),
            tls_duration: histogram(TLS_HANDSHAKE_DURATION),
            time_in_queue: histogram(REQUEST_TIME_IN_QUEUE),
            active: (0..=methods).map(|_| OnceLock::new()).collect(),
            durations: RwLock::default(),
            dns: Mutex::default(),
            live: AtomicIsize::new(0),
            quiet_since: AtomicU64::new(at),
            base,
        }
    }

    pub(super) fn labels(&self, extra: [Option<(&'static str, String)>; 4]) -> Vec<Label> {
        let mut v = self.base.to_vec();
        v.extend(
            extra
                .into_iter()
                .flatten()
                .map(|(k, val)| Label::new(k, val)),
        );
        v
    }

    pub(super) fn active(&self, method: usize, methods: &KnownMethods) -> &Gauge {
        let method = method.min(self.active.len() - 1);
        self.active[method].get_or_init(|| {
            let name = methods.name(method).to_owned();
            metrics::gauge!(
                ACTIVE_REQUESTS,
                self.labels([Some(("http.request.method", name)), None, None, None])
            )
        })
    }

    /// Records a request's duration under its method, version and outcome.
    pub(super) fn record_duration(&self, key: DurationKey, methods: &KnownMethods, secs: f64) {
        if let Some(h) = self.durations.read().get(&key) {
            h.record(secs);
            return;
        }
        let method = methods.name(usize::from(key.method)).to_owned();
        let (status, error) = match key.outcome {
            Outcome::Status(s) => (
                Some(("http.response.status_code", s.to_string())),
                (s >= 400).then(|| ("error.type", s.to_string())),
            ),
            Outcome::Error(e) => (None, Some(("error.type", e.to_owned()))),
        };
        let version = version_of(key.version).map(|v| {
            (
                "network.protocol.version",
                crate::spans::protocol_version(v).to_owned(),
            )
        });
        let labels = self.labels([
            Some(("http.request.method", method)),
            version,
            status,
            error,
        ]);
        let mut map = self.durations.write();
        map.entry(key)
            .or_insert_with(|| metrics::histogram!(REQUEST_DURATION, labels))
            .record(secs);
    }

    /// Records a DNS lookup of `name` (`error`: its error type, if it failed).
    pub(super) fn record_dns(&self, name: &str, error: Option<&'static str>, secs: f64) {
        let mut dns = self.dns.lock();
        if let Some((_, _, h)) = dns.iter().find(|(n, e, _)| &**n == name && *e == error) {
            h.record(secs);
            return;
        }
        let mut labels = vec![Label::new("dns.question.name", name.to_owned())];
        labels.extend(error.map(|e| Label::new("error.type", e)));
        let h = metrics::histogram!(DNS_LOOKUP_DURATION, labels);
        h.record(secs);
        dns.push((name.into(), error, h));
    }

    /// A connection opened or a request started.
    pub(super) fn enter(&self) {
        self.live.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection closed or a request ended; `at` says when (nanoseconds since the
    /// anchor), asked only if the host is now quiet.
    pub(super) fn leave(&self, at: impl FnOnce() -> u64) {
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.quiet_since.store(at(), Ordering::Release);
        }
    }
}
