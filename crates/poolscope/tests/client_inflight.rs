//! The in-flight registry, the debug service and the event history, against a slow loopback
//! server.

mod support;

use std::time::Duration;

use poolscope::inflight::Phase;
use support::server::TestServer;
use support::{body, client, eventually};

#[tokio::test]
async fn three_slow_requests_are_in_flight_until_their_bodies_end_or_are_dropped() {
    let server = TestServer::start().await;
    let c = client(|_| {});
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(tokio::spawn(c.get(server.url("/slow/300"))));
    }
    eventually("three awaiting a response", || {
        let r = c.in_flight();
        r.len() == 3 && r.iter().all(|e| e.phase == Phase::AwaitingResponse)
    })
    .await;
    let first = c.in_flight();
    let url = format!("http://{}/slow/300", server.addr);
    for e in &first {
        assert_eq!(e.method, "GET");
        assert_eq!(e.url, url);
        assert!(e.conn_id.is_some());
    }
    let text = first.to_string();
    assert!(
        text.starts_with("In-flight HTTP requests:\n  servicing GET \""),
        "{text}"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = c.in_flight();
    let ages = |r: &poolscope::inflight::InFlightReport| {
        r.iter().map(|e| (e.id, e.elapsed)).collect::<Vec<_>>()
    };
    for ((id1, a), (id2, b)) in ages(&first).into_iter().zip(ages(&second)) {
        assert_eq!(id1, id2, "same order");
        assert!(b > a, "durations grow");
    }
    // Headers arrive: still in flight (reading the body) until the bodies end.
    let mut resps = Vec::new();
    for t in tasks {
        resps.push(t.await.unwrap().unwrap());
    }
    let r = c.in_flight();
    assert_eq!(r.len(), 3);
    assert!(r.iter().all(|e| e.phase == Phase::ReadingBody), "{r:?}");
    let dropped = resps.pop().unwrap();
    drop(dropped);
    assert_eq!(c.in_flight().len(), 2);
    for resp in resps {
        assert_eq!(body(resp).await, "slow");
    }
    assert!(c.in_flight().is_empty());
}

/// Without stacks, each entry still names the `file:line` that issued it
/// (`#[track_caller]` on `get`, `request` and `Service::call`).
#[tokio::test]
async fn each_entry_names_the_line_that_issued_it() {
    use tower_service::Service;
    let server = TestServer::start().await;
    let c = client(|_| {});
    let (get_line, get) = (line!(), c.get(server.url("/slow/300")));
    let req = http::Request::get(server.url("/slow/300"))
        .body(Default::default())
        .unwrap();
    let (request_line, request) = (line!(), c.request(req));
    let req = http::Request::get(server.url("/slow/300"))
        .body(Default::default())
        .unwrap();
    let mut svc = c.clone();
    let (call_line, call) = (line!(), svc.call(req));
    let futs = [tokio::spawn(get), tokio::spawn(request), tokio::spawn(call)];
    eventually("three in flight", || c.in_flight().len() == 3).await;
    let report = c.in_flight();
    let mut lines: Vec<u32> = report.iter().map(|e| e.called_at.line).collect();
    lines.sort_unstable();
    assert_eq!(lines, vec![get_line, request_line, call_line], "{report}");
    for e in report.iter() {
        assert!(e.called_at.file.ends_with("client_inflight.rs"), "{e:?}");
    }
    let text = report.to_string();
    assert!(
        text.contains(&format!("    - issued at {}:{get_line}:", file!())),
        "{text}"
    );
    for f in futs {
        body(f.await.unwrap().unwrap()).await;
    }
}

#[tokio::test]
async fn captured_stacks_name_the_function_that_started_the_request() {
    let server = TestServer::start().await;
    let c = client(|b| {
        b.telemetry().capture_stacks(true);
    });
    let fut = c.get(server.url("/slow/200"));
    let task = tokio::spawn(fut);
    eventually("in flight", || c.in_flight().len() == 1).await;
    let report = c.in_flight();
    let entry = report.iter().next().unwrap();
    let names: Vec<&str> = entry.stack.iter().map(|f| f.function.as_str()).collect();
    assert!(
        names
            .iter()
            .any(|n| n.contains("captured_stacks_name_the_function_that_started_the_request")),
        "{report}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("poolscope::") || n.starts_with("tokio::")),
        "{names:?}"
    );
    let text = report.to_string();
    assert!(
        text.contains(
            "    - client_inflight::captured_stacks_name_the_function_that_started_the_request"
        ),
        "{text}"
    );
    body(task.await.unwrap().unwrap()).await;
}

#[tokio::test]
async fn the_report_renders_as_json_and_urls_are_redacted() {
    let server = TestServer::start().await;
    let c = client(|b| {
        b.telemetry().redact_url(|u| {
            let path: String = u
                .path()
                .chars()
                .map(|ch| if ch.is_ascii_digit() { '#' } else { ch })
                .collect();
            format!(
                "{}://{}{}",
                u.scheme_str().unwrap_or(""),
                u.authority().map_or("", |a| a.as_str()),
                path
            )
        });
    });
    let uri: http::Uri = format!("http://user:s3cret@{}/slow/250?token=abc", server.addr)
        .parse()
        .unwrap();
    let task = tokio::spawn(c.get(uri));
    eventually("in flight", || c.in_flight().len() == 1).await;
    let report = c.in_flight();
    let text = report.to_string();
    assert!(
        text.contains(&format!("\"http://{}/slow/###\"", server.addr)),
        "{text}"
    );
    assert!(
        !text.contains("s3cret") && !text.contains("token"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    let e = &json["entries"][0];
    assert_eq!(e["method"], "GET");
    assert_eq!(e["url"], format!("http://{}/slow/###", server.addr));
    assert!(e["elapsed_seconds"].as_f64().unwrap() >= 0.0);
    assert!(e["phase"].is_string());
    let _ = task.await;
}

#[tokio::test]
async fn tracking_off_reports_nothing() {
    let server = TestServer::start().await;
    // A request registers when it is made (in `Client::request`), before its first poll: the
    // report can be read at once, no wait needed.
    let on = client(|b| {
        b.telemetry().track_in_flight(true);
    });
    let fut = on.get(server.url("/slow/100"));
    assert_eq!(
        on.in_flight().len(),
        1,
        "tracking on: the request is reported"
    );
    body(fut.await.unwrap()).await;
    let off = client(|b| {
        b.telemetry().track_in_flight(false);
    });
    let fut = off.get(server.url("/slow/100"));
    assert!(
        off.in_flight().is_empty(),
        "tracking off: nothing is reported"
    );
    let task = tokio::spawn(fut);
    eventually("the request has its connection", || {
        off.pool_snapshot().total_active() == 1
    })
    .await;
    assert!(off.in_flight().is_empty(), "tracking off: not later either");
    body(task.await.unwrap().unwrap()).await;
}

#[tokio::test]
async fn the_event_history_explains_a_pool_timeout() {
    let server = TestServer::start().await;
    let c = client(|b| {
        b.pool_max_conns_per_host(1)
            .pool_wait_timeout(Duration::from_millis(50))
            .telemetry()
            .event_history(64);
    });
    let slow = tokio::spawn(c.get(server.url("/slow/300")));
    eventually("the slow request has the only slot", || {
        c.pool_snapshot().total_active() == 1
    })
    .await;
    let err = c.get(server.url("/")).await.expect_err("pool wait timeout");
    assert!(err.is_pool_timeout() && err.is_timeout());
    let snap = err.pool_snapshot().expect("snapshot in the error");
    assert_eq!(snap.hosts[0].active, 1);
    let events = c.recent_events();
    let names: Vec<&str> = events.iter().map(|e| e.name).collect();
    for expected in [
        "request_started",
        "conn_opened",
        "got_conn",
        "max_conns_per_host_hit",
        "conns_per_host_wait_in",
        "conns_per_host_wait_out",
        "request_failed",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    let timeout = events
        .iter()
        .find(|e| e.name == "conns_per_host_wait_out")
        .unwrap();
    assert!(timeout.detail.contains("outcome=timed_out"), "{timeout}");
    body(slow.await.unwrap().unwrap()).await;
}

#[tokio::test]
async fn the_history_times_a_request_with_in_flight_tracking_off() {
    let server = TestServer::start().await;
    let c = client(|b| {
        b.telemetry().track_in_flight(false).event_history(16);
    });
    body(c.get(server.url("/slow/50")).await.unwrap()).await;
    let done = c
        .recent_events()
        .into_iter()
        .find(|e| e.name == "request_done")
        .expect("request_done in the history");
    // "... elapsed=51.2ms" (a `Duration`'s `Debug`: `812µs`, `51.2ms`, `1.2s`): the request's
    // real duration, not a default zero.
    let elapsed = done.detail.rsplit("elapsed=").next().unwrap();
    let split = elapsed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(elapsed.len());
    let (number, unit) = elapsed.split_at(split);
    let number: f64 = number
        .parse()
        .unwrap_or_else(|_| panic!("a duration: {done}"));
    let ms = match unit {
        "ns" => number / 1e6,
        "µs" => number / 1e3,
        "ms" => number,
        "s" => number * 1e3,
        _ => panic!("a duration's unit: {done}"),
    };
    assert!((50.0..5_000.0).contains(&ms), "{done}");
}

#[tokio::test]
async fn every_started_request_ends_in_the_history() {
    let server = TestServer::start().await;
    let c = client(|b| {
        b.telemetry().event_history(32);
    });
    // Refused before it starts (no scheme), and dropped while the server takes its time.
    let _ = c
        .get("/relative".parse().unwrap())
        .await
        .expect_err("no scheme");
    let slow = c.get(server.url("/slow/500"));
    let _ = tokio::time::timeout(Duration::from_millis(50), slow).await;
    let events = c.recent_events();
    let count = |name: &str| events.iter().filter(|e| e.name == name).count();
    assert_eq!(count("request_started"), 2, "{events:?}");
    assert_eq!(count("request_failed"), 2, "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e.name == "request_failed" && e.detail.contains("canceled")),
        "{events:?}"
    );
}

#[tokio::test]
async fn the_debug_service_answers_its_three_endpoints() {
    let server = TestServer::start().await;
    let c = client(|b| {
        b.telemetry().event_history(16);
    });
    body(c.get(server.url("/")).await.unwrap()).await;
    let debug_addr = support::serve_debug(c.clone()).await;
    let other = client(|_| {});
    let get = |path: &str| other.get(format!("http://{debug_addr}{path}").parse().unwrap());
    let resp = get("/debug/inflight").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(String::from_utf8(body(resp).await.to_vec())
        .unwrap()
        .starts_with("In-flight HTTP requests:"));
    let resp = get("/debug/pool?format=json").await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&body(resp).await).unwrap();
    assert_eq!(v["hosts"][0]["idle"], 1);
    let resp = get("/debug/events").await.unwrap();
    let text = String::from_utf8(body(resp).await.to_vec()).unwrap();
    assert!(text.contains("request_done"), "{text}");
    assert_eq!(get("/nope").await.unwrap().status(), 404);
}

#[cfg(unix)]
#[tokio::test]
async fn a_signal_dumps_the_in_flight_report_and_the_pool() {
    let server = TestServer::start().await;
    let c = client(|_| {});
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = poolscope::debug::dump_on_signal_with(
        c.clone(),
        tokio::signal::unix::SignalKind::user_defined2(),
        move |dump| {
            let _ = tx.send(dump);
        },
    )
    .unwrap();
    let req = tokio::spawn(c.get(server.url("/slow/300")));
    eventually("in flight", || c.in_flight().len() == 1).await;
    let status = std::process::Command::new("kill")
        .args(["-USR2", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let dump = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        dump.starts_with("In-flight HTTP requests:\n  servicing GET"),
        "{dump}"
    );
    assert!(dump.contains("pool: max_idle=none"), "{dump}");
    task.abort();
    body(req.await.unwrap().unwrap()).await;
}
