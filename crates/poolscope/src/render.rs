//! How telemetry writes values out, shared by the in-flight report and the history (their
//! JSON through serde, their text): wall-clock times as RFC 3339 with microseconds.

use std::time::SystemTime;

/// `t` as RFC 3339 with microseconds (`2026-12-07T19:00:00.123456Z`), for serde.
pub(crate) fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_micros(*t))
}
