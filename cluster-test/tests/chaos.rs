//! The chaos suite in CI: S3 (leader SIGKILLed mid-run), S4 (rolling restart during 20 runs), S5 (leader partitioned, then healed), S6 (worker
//! SIGKILLed mid-run), S9 (wiped node rejoins from a snapshot), S10 (rolling upgrade across a storage-format bump) and a short seeded soak, one after the other
//! (each on its own 3-node cluster with 2 Docker workers; in parallel they would starve 2 cores).
//! Each scenario prints what it checked and its recovery time. The long soak is
//! `cluster-test chaos --only soak --soak-seconds 600`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_scenarios_keep_every_promise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin_dir =
        cluster_test::harness::bin_dir(None).expect("jobserv-node and jobserv-worker built");
    let d = dir.path();
    let reports = vec![
        cluster_test::chaos::leader_killed(&d.join("s3"), &bin_dir)
            .await
            .expect("S3 leader killed mid-run"),
        cluster_test::chaos::rolling_restart(&d.join("s4"), &bin_dir)
            .await
            .expect("S4 rolling restart"),
        cluster_test::chaos::partition(&d.join("s5"), &bin_dir)
            .await
            .expect("S5 partition then heal"),
        cluster_test::chaos::worker_killed(&d.join("s6"), &bin_dir)
            .await
            .expect("S6 worker killed mid-run"),
        cluster_test::chaos::wiped_node_rejoins(&d.join("s9"), &bin_dir)
            .await
            .expect("S9 wiped node rejoins"),
        cluster_test::chaos::rolling_upgrade(&d.join("s10"), &bin_dir)
            .await
            .expect("S10 rolling upgrade across a format bump"),
        cluster_test::chaos::soak(&d.join("soak"), &bin_dir, 20, 7)
            .await
            .expect("soak"),
    ];
    for report in &reports {
        println!("{report}");
        assert!(report.verdict.runs > 0, "{} checked no run", report.name);
    }
    assert!(
        reports[3].verdict.lost_worker_runs > 0,
        "S6 must have released the killed worker's runs"
    );
}
