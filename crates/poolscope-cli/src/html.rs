//! The HTML report of a load run: one self-contained file (inline SVG and CSS, a small
//! inline script for hover details; nothing loaded from anywhere), and the JSON of the same
//! aggregates (`docs/report.md`).

use std::fmt::Write as _;

use serde::Serialize;

use crate::report::LoadReport;
use crate::timeline::{bin_floor, Timeline, LATENCY_BINS};

/// Everything a report shows.
#[derive(Serialize)]
pub struct RunReport<'a> {
    /// The command line that made the run.
    pub command: String,
    /// The pool's limits, as configured (`None`: no limit).
    pub limits: Limits,
    /// The totals (what the text report prints).
    pub totals: &'a LoadReport,
    /// Latency and time-in-queue histograms: `[[bin floor in seconds, count], ...]`.
    pub latency_histogram: Vec<(f64, u64)>,
    pub queue_histogram: Vec<(f64, u64)>,
    pub timeline: &'a Timeline,
}

#[derive(Serialize, Clone, Copy, Default)]
pub struct Limits {
    pub max_conns_per_host: Option<usize>,
    pub max_idle_per_host: Option<usize>,
    pub idle_timeout_seconds: Option<f64>,
}

/// A histogram's recorded values (µs) in the report's log bins.
pub fn log_bins(h: Option<&hdrhistogram::Histogram<u64>>) -> Vec<(f64, u64)> {
    let mut bins = vec![0u64; LATENCY_BINS];
    if let Some(h) = h {
        for v in h.iter_recorded() {
            let d = std::time::Duration::from_micros(v.value_iterated_to());
            bins[crate::timeline::bin(d)] += v.count_at_value();
        }
    }
    bins.iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(b, n)| (bin_floor(b), *n))
        .collect()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn secs(s: f64) -> String {
    if s == 0.0 {
        "0".to_owned()
    } else if s >= 1.0 {
        format!("{s:.2}s")
    } else if s >= 0.001 {
        format!("{:.2}ms", s * 1e3)
    } else {
        format!("{:.0}µs", s * 1e6)
    }
}

const W: f64 = 1000.0;
const LEFT: f64 = 70.0;
/// Room for the close reasons at the lanes' ends.
const RIGHT: f64 = 90.0;

/// x of time `t` in a run of `end` seconds.
fn x(t: f64, end: f64) -> f64 {
    LEFT + (t / end.max(1e-9)).clamp(0.0, 1.0) * (W - LEFT - RIGHT)
}

fn time_axis(out: &mut String, end: f64, y: f64) {
    for i in 0..=5 {
        let t = end * f64::from(i) / 5.0;
        let _ = write!(
            out,
            r##"<line x1="{0:.1}" y1="0" x2="{0:.1}" y2="{y}" class="grid"/><text x="{0:.1}" y="{1}" class="axis" text-anchor="middle">{2}</text>"##,
            x(t, end),
            y + 12.0,
            secs(t)
        );
    }
}

/// The connections' lanes, queued requests and limit hits on one time axis.
fn lanes_svg(tl: &Timeline, end: f64) -> String {
    let n = tl.lanes.len();
    let lane_h = if n <= 40 {
        12.0
    } else if n <= 200 {
        5.0
    } else {
        2.0
    };
    let lanes_h = lane_h * n as f64;
    let queue_h = 60.0;
    let h = lanes_h + queue_h + 40.0;
    let mut s = format!(r##"<svg id="lanes" width="{W}" height="{h}" viewBox="0 0 {W} {h}">"##);
    time_axis(&mut s, end, lanes_h + queue_h + 20.0);
    for (i, lane) in tl.lanes.iter().enumerate() {
        let y = i as f64 * lane_h;
        let closed = lane.closed.unwrap_or(end);
        let kind = if lane.http2 { "h2" } else { "h1" };
        let _ = write!(
            s,
            r##"<g class="lane {kind}" data-conn="{id}"><title>connection #{id} ({ver}): opened {o}, {c}, {r} requests</title><rect x="{x0:.1}" y="{y:.1}" width="{w:.1}" height="{lh:.1}" class="life"/>"##,
            id = lane.id,
            ver = if lane.http2 { "HTTP/2" } else { "HTTP/1.1" },
            o = secs(lane.opened),
            c = match (lane.closed, lane.close_reason) {
                (Some(t), Some(r)) => format!("closed {} ({r})", secs(t)),
                _ => "open at the end".to_owned(),
            },
            r = lane.requests,
            x0 = x(lane.opened, end),
            w = (x(closed, end) - x(lane.opened, end)).max(0.5),
            lh = (lane_h - 1.0).max(1.0),
        );
        for &(b0, b1, streams) in &lane.busy {
            // HTTP/2: the more streams at once, the darker.
            let opacity = if lane.http2 {
                (0.35 + 0.1 * f64::from(streams)).min(1.0)
            } else {
                1.0
            };
            let _ = write!(
                s,
                r##"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" class="busy" fill-opacity="{opacity:.2}"><title>busy {}–{}, {streams} at once</title></rect>"##,
                x(b0, end),
                (x(b1, end) - x(b0, end)).max(0.5),
                (lane_h - 1.0).max(1.0),
                secs(b0),
                secs(b1),
            );
        }
        if let (Some(t), Some(r), true) = (lane.closed, lane.close_reason, lane_h >= 12.0) {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.1}" class="reason">{r}</text>"##,
                x(t, end) + 2.0,
                y + lane_h - 3.0
            );
        }
        s.push_str("</g>");
    }
    // Requests queued, over time: all waiting, and those waiting for permission to dial.
    let base = lanes_h + queue_h + 10.0;
    let peak = tl
        .buckets
        .iter()
        .map(|b| b.idle_wait_max.max(b.dial_wait_max))
        .max()
        .unwrap_or(0)
        .max(1);
    for (series, class) in [(false, "wait-idle"), (true, "wait-dial")] {
        let mut pts = String::new();
        for (i, b) in tl.buckets.iter().enumerate() {
            let v = if series {
                b.dial_wait_max
            } else {
                b.idle_wait_max
            };
            let t = (i as f64 + 0.5) * tl.resolution_seconds;
            let _ = write!(
                pts,
                "{:.1},{:.1} ",
                x(t, end),
                base - queue_h * f64::from(v) / f64::from(peak)
            );
        }
        let _ = write!(s, r##"<polyline points="{pts}" class="{class}"/>"##);
    }
    let _ = write!(
        s,
        r##"<text x="2" y="{:.1}" class="axis">queued (max {peak})</text>"##,
        base - queue_h + 10.0
    );
    // Limit hits: a tick under each bucket that had any (darker for more), and a line at the
    // first one.
    let most = tl
        .buckets
        .iter()
        .map(|b| b.limit_hits)
        .max()
        .unwrap_or(0)
        .max(1);
    for (i, b) in tl
        .buckets
        .iter()
        .enumerate()
        .filter(|(_, b)| b.limit_hits > 0)
    {
        let t0 = i as f64 * tl.resolution_seconds;
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="6" class="hits" fill-opacity="{:.2}"><title>{} limit hits at {}</title></rect>"##,
            x(t0, end),
            base + 2.0,
            (x(t0 + tl.resolution_seconds, end) - x(t0, end)).max(1.0),
            0.3 + 0.7 * f64::from(b.limit_hits) / f64::from(most),
            b.limit_hits,
            secs(t0)
        );
    }
    if let Some(&(t, limit)) = tl.limit_hits.first() {
        let _ = write!(
            s,
            r##"<line x1="{0:.1}" y1="0" x2="{0:.1}" y2="{1:.1}" class="hit"><title>first limit hit ({limit}) at {2}</title></line>"##,
            x(t, end),
            base + 8.0,
            secs(t)
        );
    }
    s.push_str("</svg>");
    s
}

/// Requests per second and p50/p99 latency per bucket.
fn rate_svg(tl: &Timeline, end: f64) -> String {
    let h = 160.0;
    let plot = 130.0;
    let mut s = format!(r##"<svg id="rate" width="{W}" height="{h}" viewBox="0 0 {W} {h}">"##);
    time_axis(&mut s, end, plot);
    let res = tl.resolution_seconds;
    let peak_rate = tl
        .buckets
        .iter()
        .map(|b| f64::from(b.done) / res)
        .fold(0.0, f64::max)
        .max(1.0);
    let lat: Vec<(Option<f64>, Option<f64>)> = tl
        .buckets
        .iter()
        .map(|b| (b.quantile(0.5), b.quantile(0.99)))
        .collect();
    let peak_lat = lat.iter().filter_map(|l| l.1).fold(0.0, f64::max).max(1e-6);
    let mut rate = String::new();
    // p50 and p99 lines break where a bucket had no request ending.
    let (mut p50, mut p99) = (vec![String::new()], vec![String::new()]);
    for (i, b) in tl.buckets.iter().enumerate() {
        let t = x((i as f64 + 0.5) * res, end);
        let _ = write!(
            rate,
            "{t:.1},{:.1} ",
            plot - plot * (f64::from(b.done) / res) / peak_rate
        );
        for (line, v) in [(&mut p50, lat[i].0), (&mut p99, lat[i].1)] {
            match v {
                Some(v) => {
                    if let Some(last) = line.last_mut() {
                        let _ = write!(last, "{t:.1},{:.1} ", plot - plot * v / peak_lat);
                    }
                }
                None if line.last().is_some_and(|l| !l.is_empty()) => line.push(String::new()),
                None => {}
            }
        }
    }
    for (line, class) in [(&p50, "p50"), (&p99, "p99")] {
        for pts in line.iter().filter(|p| !p.is_empty()) {
            let _ = write!(s, r##"<polyline points="{pts}" class="{class}"/>"##);
        }
    }
    let _ = write!(
        s,
        r##"<polyline points="{rate}" class="rps"/><text x="2" y="12" class="axis">{:.0} req/s</text><text x="2" y="26" class="axis p99t">p99 {}</text>"##,
        peak_rate,
        secs(peak_lat)
    );
    s.push_str("</svg>");
    s
}

/// A log-scale histogram as bars.
fn histogram_svg(id: &str, bins: &[(f64, u64)]) -> String {
    let (w, h, plot) = (480.0, 150.0, 120.0);
    let mut s = format!(r##"<svg id="{id}" width="{w}" height="{h}" viewBox="0 0 {w} {h}">"##);
    let peak = bins.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let bar = (w - 20.0) / LATENCY_BINS as f64;
    for &(floor, n) in bins {
        let b = ((floor * 1e6).log2() * 2.0).round() as usize;
        let bh = plot * (n as f64).ln_1p() / peak.ln_1p();
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" class="bar"><title>{} and up: {n}</title></rect>"##,
            10.0 + b as f64 * bar,
            plot - bh,
            (bar - 1.0).max(1.0),
            secs(floor)
        );
    }
    for (floor, label) in [(1e-5, "10µs"), (1e-3, "1ms"), (0.1, "100ms"), (10.0, "10s")] {
        let b = (f64::log2(floor * 1e6) * 2.0).round();
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" class="axis" text-anchor="middle">{label}</text>"##,
            10.0 + b * bar,
            plot + 14.0
        );
    }
    s.push_str("</svg>");
    s
}

fn counts_table(title: &str, rows: &std::collections::BTreeMap<String, u64>) -> String {
    let mut s = format!("<table><tr><th>{}</th><th>count</th></tr>", esc(title));
    for (k, n) in rows {
        let _ = write!(s, "<tr><td>{}</td><td class=\"n\">{n}</td></tr>", esc(k));
    }
    if rows.is_empty() {
        s.push_str("<tr><td>none</td><td class=\"n\">0</td></tr>");
    }
    s.push_str("</table>");
    s
}

/// The first limit hit's snapshot: per key, and per connection when there are rows.
fn snapshot_table(report: &LoadReport) -> String {
    let Some(hit) = &report.first_limit_hit else {
        return "<p>No pool limit was hit.</p>".to_owned();
    };
    let mut s = format!(
        "<p><b>{}</b> first hit after {}.</p><table><tr><th>key</th><th>idle</th><th>active</th><th>connecting</th><th>waiting</th><th>waiting to dial</th></tr>",
        esc(hit.limit),
        secs(hit.after_seconds)
    );
    let hosts = hit.pool["hosts"].as_array().cloned().unwrap_or_default();
    let num = |v: &serde_json::Value| v.as_u64().map_or("-".to_owned(), |n| n.to_string());
    for h in &hosts {
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(h["key"].as_str().unwrap_or("")),
            num(&h["idle"]),
            num(&h["active"]),
            num(&h["connecting"]),
            num(&h["idle_conn_waiters"]),
            num(&h["conns_per_host_waiters"]),
        );
    }
    s.push_str("</table>");
    let conns: Vec<&serde_json::Value> = hosts
        .iter()
        .filter_map(|h| h["connections"].as_array())
        .flatten()
        .collect();
    if !conns.is_empty() {
        s.push_str("<table><tr><th>conn</th><th>version</th><th>state</th><th>age</th><th>requests</th><th>streams</th><th>peer</th><th>rtt</th><th>retransmits</th><th>tcp</th></tr>");
        for c in conns {
            let tcp = &c["tcp"];
            let _ = write!(
                s,
                "<tr><td>#{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                num(&c["id"]),
                esc(c["version"].as_str().unwrap_or("")),
                esc(c["state"].as_str().unwrap_or("")),
                c["age_seconds"].as_f64().map_or("-".to_owned(), secs),
                num(&c["requests"]),
                num(&c["streams"]),
                esc(c["peer_addr"].as_str().unwrap_or("-")),
                tcp["rtt_seconds"].as_f64().map_or("-".to_owned(), secs),
                num(&tcp["retransmits"]),
                esc(tcp["state"].as_str().unwrap_or("-")),
            );
        }
        s.push_str("</table>");
    }
    s
}

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; }
code { font-family: ui-monospace, monospace; background: #f3f3f3; padding: 1px 4px; }
.totals td { padding: 2px 12px 2px 0; } table { border-collapse: collapse; margin: 8px 0; }
th, td { text-align: left; padding: 2px 8px; border-bottom: 1px solid #e4e4e4; } td.n { text-align: right; }
.life { fill: #e8eef6; } .busy { fill: #3b73b9; } .h2 .busy { fill: #7a4fb5; }
.reason { font-size: 9px; fill: #555; } .grid { stroke: #eee; } .axis { font-size: 10px; fill: #666; }
.wait-idle { fill: none; stroke: #d08a1e; stroke-width: 1.5; } .wait-dial { fill: none; stroke: #c0392b; stroke-width: 1.5; stroke-dasharray: 3 2; }
.hit { stroke: #c0392b; stroke-width: 1; stroke-dasharray: 2 2; } .hits { fill: #c0392b; } .rps { fill: none; stroke: #2e8b57; stroke-width: 1.5; }
.p50 { fill: none; stroke: #3b73b9; stroke-width: 1.5; } .p99 { fill: none; stroke: #c0392b; stroke-width: 1.5; } .p99t { fill: #c0392b; }
.bar { fill: #3b73b9; } .legend span { margin-right: 16px; } .note { color: #666; }
#hover { position: fixed; right: 16px; top: 16px; background: #fffbe6; border: 1px solid #e0d28a; padding: 4px 8px; display: none; }
"#;

/// A tiny script: shows the hovered element's `<title>` in a fixed box. It ends by marking
/// the page as rendered (`data-rendered`), which the browser test looks for.
const SCRIPT: &str = r#"
(function () {
  var box = document.getElementById('hover');
  document.querySelectorAll('svg [class]').forEach(function (el) {
    var t = el.querySelector('title');
    if (!t) return;
    el.addEventListener('mouseenter', function () { box.textContent = t.textContent; box.style.display = 'block'; });
    el.addEventListener('mouseleave', function () { box.style.display = 'none'; });
  });
  document.body.setAttribute('data-rendered', String(document.querySelectorAll('#lanes g.lane').length));
})();
"#;

/// The HTML page.
pub fn render(r: &RunReport<'_>) -> String {
    let t = r.totals;
    let tl = r.timeline;
    let end = (tl.buckets.len() as f64 * tl.resolution_seconds)
        .max(t.elapsed_seconds)
        .max(1e-3);
    let total = t.requests_ok + t.requests_failed;
    let lim = |v: Option<usize>| v.map_or("none".to_owned(), |v| v.to_string());
    let mut s = String::with_capacity(64 * 1024);
    let _ = write!(
        s,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>poolscope load report: {url}</title><style>{STYLE}</style></head><body><div id="hover"></div>"#,
        url = esc(&t.url)
    );
    let _ = write!(
        s,
        r#"<h1>poolscope load report</h1><p><code>{cmd}</code></p>
<p>Target <b>{url}</b>; pool limits: max_conns_per_host={mc}, max_idle_per_host={mi}, idle_timeout={it}.</p>
<table class="totals" id="totals"><tr><td>requests</td><td class="n" data-total="requests">{total}</td><td>ok</td><td class="n" data-total="ok">{ok}</td><td>failed</td><td class="n" data-total="failed">{failed}</td></tr>
<tr><td>elapsed</td><td class="n">{el:.2}s</td><td>req/s</td><td class="n" data-total="rps">{rps:.0}</td><td>concurrency</td><td class="n">{c}</td></tr>
<tr><td>connections opened</td><td class="n" data-total="opened">{opened}</td><td>reused</td><td class="n" data-total="reused">{reused}</td><td>limit hits</td><td class="n" data-total="limit_hits">{hits}</td></tr>
<tr><td>latency p50</td><td class="n">{p50}</td><td>p99</td><td class="n">{p99}</td><td>max</td><td class="n">{max}</td></tr></table>"#,
        cmd = esc(&r.command),
        url = esc(&t.url),
        mc = lim(r.limits.max_conns_per_host),
        mi = lim(r.limits.max_idle_per_host),
        it = r
            .limits
            .idle_timeout_seconds
            .map_or("default".to_owned(), secs),
        ok = t.requests_ok,
        failed = t.requests_failed,
        el = t.elapsed_seconds,
        rps = t.requests_per_second,
        c = t.concurrency,
        opened = t.connections_opened,
        reused = t.connections_reused,
        hits = t.limit_hits,
        p50 = secs(t.latency_seconds.p50),
        p99 = secs(t.latency_seconds.p99),
        max = secs(t.latency_seconds.max),
    );
    if let Some(rate) = t.rate {
        let _ = write!(
            s,
            r#"<p class="note">Open loop at {rate} requests/s with at most {c} in flight. Latency is measured from each request's <i>intended</i> start, so a stalled pool shows as latency instead of as fewer requests (no coordinated omission). <b data-total="late">{late}</b> requests could not start on time.</p>"#,
            c = t.concurrency,
            late = t.late_starts
        );
    }
    let _ = write!(
        s,
        r#"<h2>Connections over time</h2><p class="legend"><span style="color:#3b73b9">■ busy (HTTP/1.1)</span><span style="color:#7a4fb5">■ busy (HTTP/2, darker = more streams)</span><span style="color:#a9bcd6">■ open, idle</span><span style="color:#d08a1e">— requests queued</span><span style="color:#c0392b">- - queued to dial · | limit hit</span></p>{lanes}"#,
        lanes = lanes_svg(tl, end)
    );
    if tl.lanes_dropped > 0 {
        let _ = write!(
            s,
            r#"<p class="note">{} more connections are not drawn.</p>"#,
            tl.lanes_dropped
        );
    }
    let _ = write!(
        s,
        r#"<h2>Requests/s and latency over time</h2><p class="legend"><span style="color:#2e8b57">— requests/s</span><span style="color:#3b73b9">— p50</span><span style="color:#c0392b">— p99</span> <span class="note">per {res}</span></p>{rate}"#,
        res = secs(tl.resolution_seconds),
        rate = rate_svg(tl, end)
    );
    let _ = write!(
        s,
        r#"<h2>Latency and time in queue (log scale)</h2><div style="display:flex;gap:24px"><div><b>latency</b><br>{lat}</div><div><b>time in queue</b><br>{queue}</div></div>"#,
        lat = histogram_svg("latency", &r.latency_histogram),
        queue = histogram_svg("queue", &r.queue_histogram)
    );
    let _ = write!(
        s,
        r#"<h2>Status codes, errors, connections closed</h2><div style="display:flex;gap:24px">{}{}{}</div>"#,
        counts_table("status", &t.status_counts),
        counts_table("error", &t.errors),
        counts_table("closed because", &t.connections_closed)
    );
    let _ = write!(
        s,
        r#"<h2>The pool at the first limit hit</h2>{}"#,
        snapshot_table(t)
    );
    let _ = write!(
        s,
        r#"<p class="note">{total} requests; the time axis is in buckets of {res} (the report keeps at most 400, merging as a run goes on).</p><script>{SCRIPT}</script></body></html>"#,
        res = secs(tl.resolution_seconds)
    );
    s
}
