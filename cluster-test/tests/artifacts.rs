//! Issue 10 on real processes in CI (scaled down; the full sizes are `cluster-test big-artifact` with
//! 2 GiB and `cluster-test chaos --only uploads`): a Docker run archives a file on 3 nodes, it downloads
//! with the run's own hash from every node, also after SIGKILL of the node that took the upload and a
//! wipe of another; and 20 concurrent uploads survive nodes being SIGKILLed, none listed half-stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_survive_kills_and_wipes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin_dir =
        cluster_test::harness::bin_dir(None).expect("jobserv-node and jobserv-worker built");
    let big = cluster_test::artifacts::big_artifact(&dir.path().join("big"), &bin_dir, 96)
        .await
        .expect("big artifact");
    println!("{big}");
    let uploads =
        cluster_test::artifacts::uploads_under_kills(&dir.path().join("uploads"), &bin_dir, 20, 8)
            .await
            .expect("uploads under kills");
    println!("{uploads}");
    assert_eq!(uploads.uploads, 20);
    assert_eq!(uploads.kills.len(), 2);
}
