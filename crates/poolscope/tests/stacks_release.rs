//! Captured stacks as users see them: in a release build with line tables (the workspace's
//! `[profile.release]`), where inlined frames carry short names. Ignored in debug builds
//! (where names are long and nothing is inlined, so it would prove little); `.ci/run` runs it
//! with `cargo test --release -p poolscope --test stacks_release -- --ignored`.

mod support;

use support::server::TestServer;
use support::{body, client, eventually};

/// Where the request is issued: the frame the report must start with. (Not a tail call:
/// a release build would jump to `get` and leave no frame of this function.)
#[inline(never)]
fn issue_from_here(
    c: &poolscope::Client<poolscope::connect::HttpConnector, http_body_util::Empty<bytes::Bytes>>,
    url: http::Uri,
) -> poolscope::ResponseFuture {
    let fut = c.get(url);
    std::hint::black_box(&fut);
    fut
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in release by .ci/run"]
async fn release_stacks_start_at_the_caller_and_show_no_machinery() {
    if cfg!(debug_assertions) {
        panic!("run this test with --release: it checks what release builds show");
    }
    let server = TestServer::start().await;
    let c = client(|b| {
        b.telemetry().capture_stacks(true);
    });
    let task = tokio::spawn(issue_from_here(&c, server.url("/slow/10000")));
    eventually("in flight", || c.in_flight().len() == 1).await;
    let report = c.in_flight();
    let text = report.to_string();
    eprintln!("{text}");
    let entry = report.iter().next().unwrap();
    let first = entry.stack.first().expect("a frame");
    // With line tables only, names carry no module path (the file says where).
    assert!(
        first.function == "issue_from_here" || first.function == "stacks_release::issue_from_here",
        "the first frame is the caller's:\n{text}"
    );
    assert!(
        first
            .file
            .as_deref()
            .is_some_and(|f| f.ends_with("stacks_release.rs")),
        "{text}"
    );
    assert!(
        entry.stack.len() <= poolscope::inflight::MAX_FRAMES,
        "at most MAX_FRAMES frames:\n{text}"
    );
    // The capture reaches one frame below the caller: here the test's own future.
    assert!(
        entry
            .stack
            .get(1)
            .and_then(|f| f.file.as_deref())
            .is_some_and(|f| f.ends_with("stacks_release.rs")),
        "the caller's caller is shown:\n{text}"
    );
    for f in &entry.stack {
        let file = f.file.as_deref().unwrap_or("");
        assert!(
            !file.contains("/registry/src/")
                && !file.starts_with("/rustc/")
                && !file.contains("crates/poolscope/src/"),
            "a machinery frame is shown:\n{text}"
        );
        assert!(
            !f.function.contains('<') && !f.function.contains("{{"),
            "generics or closures in a name:\n{text}"
        );
        assert!(
            !f.function.starts_with("tokio::")
                && !f.function.starts_with("poolscope::")
                && !f.function.starts_with("std::")
                && !f.function.starts_with("core::"),
            "{text}"
        );
    }
    // The request outlives the reports (the first reads the debug info, which takes a while).
    task.abort();
}

type TestClient =
    poolscope::Client<poolscope::connect::HttpConnector, http_body_util::Empty<bytes::Bytes>>;

async fn outer(c: TestClient, url: http::Uri) -> bytes::Bytes {
    let b = middle(&c, url).await;
    std::hint::black_box(&b);
    b
}

async fn middle(c: &TestClient, url: http::Uri) -> bytes::Bytes {
    let b = inner(c, url).await;
    std::hint::black_box(&b);
    b
}

async fn inner(c: &TestClient, url: http::Uri) -> bytes::Bytes {
    let resp = c.get(url).await.unwrap();
    body(resp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in release by .ci/run"]
async fn a_chain_of_async_fns_is_shown_by_name_innermost_first() {
    if cfg!(debug_assertions) {
        panic!("run this test with --release: it checks what release builds show");
    }
    let server = TestServer::start().await;
    let c = client(|b| {
        b.telemetry().capture_stacks(true);
    });
    let task = tokio::spawn(outer(c.clone(), server.url("/slow/10000")));
    eventually("in flight", || c.in_flight().len() == 1).await;
    let report = c.in_flight();
    let text = report.to_string();
    eprintln!("{text}");
    let entry = report.iter().next().unwrap();
    let names: Vec<&str> = entry.stack.iter().map(|f| f.function.as_str()).collect();
    let at = |name: &str| {
        names
            .iter()
            .position(|n| *n == name || n.ends_with(&format!("::{name}")))
            .unwrap_or_else(|| panic!("no frame named {name}:\n{text}"))
    };
    let (i, m, o) = (at("inner"), at("middle"), at("outer"));
    assert_eq!(
        (i, m, o),
        (0, 1, 2),
        "inner, middle, outer, in that order:\n{text}"
    );
    for f in &entry.stack[..3] {
        assert!(
            f.file
                .as_deref()
                .is_some_and(|f| f.ends_with("stacks_release.rs"))
                && f.line.is_some(),
            "each with file:line:\n{text}"
        );
    }
    task.abort();
}
