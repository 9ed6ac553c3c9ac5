//! The comparison still runs: `--quick` mode, no timing assertions.

#[test]
fn the_quick_comparison_runs_every_client_and_loses_no_request() {
    let opts = benches::compare::Options::quick();
    let server = benches::compare::TestServer::in_process().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let rows = rt.block_on(benches::compare::run(&opts, &server, None));
    let table = benches::compare::table(&rows);
    // 3 workloads: 7 clients, 7 clients, 5 (hyper-util and reqwest have no per-host cap).
    assert_eq!(rows.len(), 19, "{table}");
    for r in &rows {
        assert!(r.median.rps > 0.0, "{table}");
        assert_eq!(r.median.failed, 0, "{table}");
        if r.workload.cap == Some(4) {
            assert!(r.median.conns.unwrap() <= 4, "the cap holds: {table}");
        }
    }
}
