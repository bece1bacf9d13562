//! A cluster that has just been created survives losing its leader at once. Regression: the followers of
//! a brand-new cluster, seeing the leader's first entries a moment after they started, took themselves for
//! wiped nodes rejoining (which vote only once caught up); with the leader SIGKILLed in that window
//! neither would ever vote again and the cluster stayed leaderless for good (`cluster-test bench-failover`
//! found it: no write within 60 s). A new cluster is now told apart from one that committed entries
//! before the node came up (`node::bootstrap`), so the survivors elect a leader.
use cluster_test::chaos::time_to_write;
use cluster_test::harness::bin_dir;
use cluster_test::local_cluster::{ClusterOptions, LocalCluster};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_clusters_leader_killed_at_once_is_replaced() {
    let bins = bin_dir(None).expect("binaries");
    for round in 0..3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = ClusterOptions::workerless();
        let mut cluster = LocalCluster::up(dir.path(), &bins, &opts)
            .await
            .expect("cluster");
        let leader = cluster
            .wait_leader(Duration::from_secs(30))
            .await
            .expect("leader");
        cluster.node(leader).expect("node").kill();
        let took = time_to_write(&cluster, &format!("after-{round}"))
            .await
            .unwrap_or_else(|e| panic!("round {round}: the survivors never elected a leader: {e}"));
        println!("round {round}: leader {leader} SIGKILLed right after start; first write after {took:?}");
        cluster.kill_all();
    }
}
