//! `cluster-test bench --quick` in CI: the whole suite on a real 3-node cluster, scaled down. Asserts only
//! that every key is present and a number; timings are printed, never asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_bench_emits_every_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin_dir =
        cluster_test::harness::bin_dir(None).expect("jobserv-node and jobserv-worker built");
    let report = cluster_test::bench::run(
        dir.path(),
        &bin_dir,
        &cluster_test::bench::BenchOptions { quick: true },
    )
    .await
    .expect("bench --quick");
    report.print();
    let json = report.to_json();
    let object = json.as_object().expect("one JSON object");
    for key in cluster_test::bench::KEYS {
        assert!(
            object.get(key).is_some_and(|v| v.is_number()),
            "{key} missing or not a number: {json}"
        );
    }
    assert_eq!(
        object.len(),
        cluster_test::bench::KEYS.len(),
        "exactly the documented keys: {json}"
    );
}
