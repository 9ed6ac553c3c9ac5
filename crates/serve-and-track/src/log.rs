//! Logging: Apache combined access-log lines and Go-style lifecycle lines, written by a
//! background thread so a request never waits on stdout.

use std::io::Write;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where log lines go: stdout (through a writer thread) or a function (tests).
#[derive(Clone)]
pub struct LogSink {
    write: Arc<dyn Fn(String) + Send + Sync>,
    /// Whether access-log lines are written (lifecycle lines always are).
    access: bool,
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogSink")
    }
}

impl LogSink {
    /// Lines to stdout, written and flushed by a background thread.
    pub fn stdout() -> LogSink {
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            while let Ok(line) = rx.recv() {
                let _ = out.write_all(line.as_bytes());
                // Flush when no more lines are waiting: batches under load, prompt when idle.
                while let Ok(line) = rx.try_recv() {
                    let _ = out.write_all(line.as_bytes());
                }
                let _ = out.flush();
            }
        });
        let tx = std::sync::Mutex::new(tx);
        LogSink {
            write: Arc::new(move |line| {
                if let Ok(tx) = tx.lock() {
                    let _ = tx.send(line);
                }
            }),
            access: true,
        }
    }

    /// Lines handed to `f` (each ends with a newline).
    pub fn to_fn(f: impl Fn(String) + Send + Sync + 'static) -> LogSink {
        LogSink {
            write: Arc::new(f),
            access: true,
        }
    }

    /// Discards everything.
    pub fn none() -> LogSink {
        LogSink::to_fn(|_| {})
    }

    /// The same sink without access-log lines (for benchmarks).
    pub fn without_access_log(mut self) -> LogSink {
        self.access = false;
        self
    }

    /// Writes one access-log line (it ends with a newline).
    pub(crate) fn access(&self, line: impl FnOnce() -> String) {
        if self.access {
            (self.write)(line())
        }
    }

    /// `2017/08/14 14:47:50 INFO http: <msg>`
    pub(crate) fn lifecycle(&self, msg: &str) {
        (self.write)(format!(
            "{} INFO http: {msg}\n",
            go_log_time(SystemTime::now())
        ));
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn split(t: SystemTime) -> (i64, u32, u32, u64, u64, u64) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil((secs / 86_400) as i64);
    let s = secs % 86_400;
    (y, m, d, s / 3600, (s / 60) % 60, s % 60)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Apache's `%t` time in UTC: `14/Aug/2017:13:47:57 +0000`.
pub fn apache_time(t: SystemTime) -> String {
    let (y, m, d, hh, mm, ss) = split(t);
    format!(
        "{d:02}/{}/{y}:{hh:02}:{mm:02}:{ss:02} +0000",
        MONTHS[(m - 1) as usize]
    )
}

/// Go's `log` time in UTC: `2017/08/14 13:47:50`.
pub fn go_log_time(t: SystemTime) -> String {
    let (y, m, d, hh, mm, ss) = split(t);
    format!("{y}/{m:02}/{d:02} {hh:02}:{mm:02}:{ss:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_format_like_apache_and_go() {
        // 2017-08-14T13:47:57Z, the seed's 14:47:57 +0100.
        let t = UNIX_EPOCH + Duration::from_secs(1_502_718_477);
        assert_eq!(apache_time(t), "14/Aug/2017:13:47:57 +0000");
        assert_eq!(go_log_time(t), "2017/08/14 13:47:57");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(go_log_time(leap), "2000/02/29 00:00:00");
    }
}
