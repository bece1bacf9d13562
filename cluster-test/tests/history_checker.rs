//! The history checker can fail: on a cluster whose nodes serve stale local reads (the test-only switch
//! `JOBSERV_TEST_STALE_READS=1`), reads through a cut-off follower — and reads racing a write on a
//! follower — are recorded, and the checker must report the stale reads with the offending operations.
//! (Its passing side runs in every chaos scenario: S3, S4, S5 and the soak check their histories.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_catches_a_deliberately_stale_read_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin_dir = cluster_test::harness::bin_dir(None).expect("jobserv-node built");
    let report = cluster_test::recorder::stale_reads_are_caught(dir.path(), &bin_dir)
        .await
        .expect("the checker must catch stale reads");
    println!("{report}\n{}", report.printed);
    assert!(
        report.partition_stale > 0,
        "no stale read found through the cut-off node: {report}"
    );
    assert!(
        report.printed.contains("node"),
        "a violation prints the offending operations: {}",
        report.printed
    );
}
