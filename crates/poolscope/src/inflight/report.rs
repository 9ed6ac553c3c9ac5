//! What a report says: [`InFlightReport`] and its entries, their JSON (serde) and their
//! `Display` in the shape of seed 000's tracker.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::Phase;
use crate::key::ConnId;

/// One frame of the stack that started a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StackFrame {
    /// The function, e.g. `my_app::fetch::run`.
    pub function: String,
    /// Its source file, relative to the working directory when under it.
    pub file: Option<String>,
    /// The line.
    pub line: Option<u32>,
}

/// One request in flight.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct InFlightEntry {
    /// The request's id (the `request_id` of its trace events).
    pub id: u64,
    /// The method.
    pub method: String,
    /// The URL, without userinfo and as rewritten by `redact_url`.
    pub url: String,
    /// How long it has been in flight.
    #[serde(rename = "elapsed_seconds", serialize_with = "secs")]
    pub elapsed: Duration,
    /// When it started (wall clock).
    #[serde(serialize_with = "crate::render::rfc3339")]
    pub started_at: SystemTime,
    /// Where it is.
    pub phase: Phase,
    /// Its connection, once it has one.
    #[serde(serialize_with = "conn")]
    pub conn_id: Option<ConnId>,
    /// Response body bytes received so far.
    pub bytes_received: u64,
    /// Where it was issued: the code that called `Client::request` / `get` / `call`.
    pub called_at: CallSite,
    /// The stack that started it (empty unless `capture_stacks`).
    pub stack: Vec<StackFrame>,
}

/// A place in the source: where a request was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CallSite {
    /// The file, as the compiler names it (relative to the crate's workspace, or a path).
    pub file: &'static str,
    /// 1-based.
    pub line: u32,
    /// 1-based.
    pub column: u32,
}

impl fmt::Display for CallSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn conn<S: serde::Serializer>(c: &Option<ConnId>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => s.serialize_some(&c.get()),
        None => s.serialize_none(),
    }
}

/// The requests a client is servicing, oldest first. `Display` renders the Go tracker's
/// report; [`to_json`](InFlightReport::to_json) the same as JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InFlightReport {
    pub(super) entries: Vec<InFlightEntry>,
}

impl InFlightReport {
    /// How many requests are in flight.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, oldest first.
    pub fn iter(&self) -> std::slice::Iter<'_, InFlightEntry> {
        self.entries.iter()
    }

    /// The report as JSON: `{"entries": [{"id", "method", "url", "elapsed_seconds", ...}]}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

impl<'a> IntoIterator for &'a InFlightReport {
    type Item = &'a InFlightEntry;
    type IntoIter = std::slice::Iter<'a, InFlightEntry>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

impl fmt::Display for InFlightReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "In-flight HTTP requests:")?;
        for e in &self.entries {
            writeln!(
                f,
                "  servicing {} {:?} for {:?}",
                e.method, e.url, e.elapsed
            )?;
            if e.stack.is_empty() {
                // Without stacks, the one frame known for free: where it was issued.
                writeln!(f, "    - issued at {}", e.called_at)?;
            }
            for fr in &e.stack {
                // `(async block)` and `(closure)` are not called by name.
                let call = if fr.function.starts_with('(') {
                    ""
                } else {
                    "()"
                };
                match (&fr.file, fr.line) {
                    (Some(file), Some(line)) => {
                        writeln!(f, "    - {}{call} - {file}:{line}", fr.function)?
                    }
                    (Some(file), None) => writeln!(f, "    - {}{call} - {file}", fr.function)?,
                    _ => writeln!(f, "    - {}{call}", fr.function)?,
                }
            }
        }
        Ok(())
    }
}
