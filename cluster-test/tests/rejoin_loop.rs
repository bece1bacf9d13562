//! S9 in a loop, at CI scale: on a state of 300 builds / 3,000 runs, a follower is wiped and restarted
//! three times (alternating followers, after snapshot + purge on every node); each time it installs a
//! snapshot, catches up, lists exactly the newest acknowledged build and takes new builds itself, without
//! ever exiting. The full scale is `cluster-test rejoin-loop --builds 10000 --cycles 30` (release).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_rejoins_every_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin_dir = cluster_test::harness::bin_dir(None).expect("jobserv-node built");
    let opts = cluster_test::rejoin::LoopOptions {
        builds: 300,
        runs_per_build: 10,
        cycles: 3,
        builds_between: 5,
    };
    let report =
        cluster_test::rejoin::rejoin_loop(dir.path(), &bin_dir, &opts, &|s| println!("{s}"))
            .await
            .expect("every wiped node rejoins");
    println!("{report}");
    assert_eq!(report.cycles.len(), 3);
    for c in &report.cycles {
        assert_eq!(
            c.respawns, 0,
            "node {} exited during its catch-up",
            c.victim
        );
        assert!(
            c.snapshot_index > 0,
            "node {} caught up without installing a snapshot",
            c.victim
        );
    }
}
