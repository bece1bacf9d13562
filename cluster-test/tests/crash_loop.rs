//! A short crash loop in CI (the full 200-iteration run is `cluster-test crash-loop`): a real node process
//! is SIGKILLed mid-stream of acknowledged writes and restarted on the same sled dir, repeatedly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_killed_mid_write_stream_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin_dir = cluster_test::harness::bin_dir(None).expect("jobserv-node built");
    let report = cluster_test::crash_loop::run(dir.path(), &bin_dir, 25, 42)
        .await
        .expect("every iteration verifies");
    assert_eq!(report.iterations, 25);
    assert_eq!(report.restart_ready.len(), 25);
    assert!(
        report.acked_appends > 0 && report.acked_builds > 1,
        "the loop wrote something: {} appends, {} builds",
        report.acked_appends,
        report.acked_builds
    );
}
