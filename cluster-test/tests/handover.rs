//! A graceful stop of the leader (SIGTERM, what `kubectl rollout restart`, `systemctl restart` and
//! `docker-compose up -d` send) hands leadership to a caught-up follower before the process exits: the
//! successor campaigns at the leader's request and wins in the very next term — one round of votes, no
//! election timeout, no split vote — and writes go on through the remaining nodes. A follower's SIGTERM
//! hands nothing over. (The write pause is measured, not asserted: `cluster-test chaos --only rolling`.)
use cluster_test::bench::sim::{Fleet, SimWorker};
use cluster_test::harness::{bin_dir, call};
use cluster_test::local_cluster::{ClusterOptions, LocalCluster};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

async fn own_view(cluster: &LocalCluster, id: u64) -> serde_json::Value {
    let node = &cluster.nodes[id as usize - 1];
    let (s, b) = call(
        &cluster.client,
        Method::GET,
        &format!("{}/cluster/?stale=1", node.url()),
        &cluster.token,
        None,
    )
    .await
    .expect("own view");
    assert_eq!(s, 200, "{b}");
    b["data"].clone()
}

async fn campaigned(cluster: &LocalCluster, id: u64) -> u64 {
    let node = &cluster.nodes[id as usize - 1];
    let text = node
        .client
        .get(format!("{}/metrics", node.url()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find(|l| l.starts_with("jobserv_leader_handovers_total{outcome=\"campaigned\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_leader_hands_leadership_over_in_one_term() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bins = bin_dir(None).expect("binaries");
    let opts = ClusterOptions::workerless();
    let mut cluster = LocalCluster::up(dir.path(), &bins, &opts)
        .await
        .expect("cluster");
    let (s, b) = cluster
        .api(Method::POST, "/projects/", Some(json!({"name": "before"})))
        .await
        .expect("write");
    assert_eq!(s, 201, "{b}");

    // A follower's SIGTERM: nothing to hand over, the leader stays.
    let leader = cluster
        .wait_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let term = own_view(&cluster, leader).await["term"]
        .as_u64()
        .expect("term");
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.node(follower).expect("node").terminate();
    assert_eq!(
        cluster
            .wait_leader(Duration::from_secs(30))
            .await
            .expect("leader"),
        leader
    );
    cluster
        .node(follower)
        .expect("node")
        .spawn()
        .expect("restart follower");
    cluster.nodes[follower as usize - 1]
        .wait_ready(Duration::from_secs(60))
        .await
        .expect("follower back");
    assert_eq!(
        own_view(&cluster, leader).await["term"].as_u64(),
        Some(term)
    );

    // A worker long-polls the leader: a graceful stop drains requests in flight (up to 5 s), so the
    // stopping node lives on well past the hand-over, as it does under real workers.
    let fleet = Fleet::new(&cluster, 1).expect("fleet");
    let home = fleet
        .urls
        .iter()
        .position(|u| *u == cluster.nodes[leader as usize - 1].url())
        .expect("the leader's URL");
    let worker = SimWorker {
        node: home,
        ..SimWorker::new("long-poll", 0, fleet.urls.len())
    };
    fleet
        .register(std::slice::from_ref(&worker), 1, &["amd64"], 1)
        .await
        .expect("register the worker");
    let long_poll = {
        let (fleet, worker) = (fleet.clone(), worker.clone());
        tokio::spawn(async move { fleet.check_in(&worker, 0, 1, 20).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The leader's SIGTERM: a successor campaigns at its request and leads in term + 1.
    let stopped_at = Instant::now();
    cluster.node(leader).expect("node").terminate();
    long_poll.abort();
    let log =
        std::fs::read_to_string(cluster.nodes[leader as usize - 1].log_path()).unwrap_or_default();
    assert!(
        log.contains("leadership handed over"),
        "the leader's log:\n{log}"
    );
    let new_leader = cluster
        .wait_leader(Duration::from_secs(30))
        .await
        .expect("new leader");
    assert_ne!(new_leader, leader);
    let view = own_view(&cluster, new_leader).await;
    assert_eq!(
        view["term"].as_u64(),
        Some(term + 1),
        "one election round: {view}"
    );
    assert_eq!(
        campaigned(&cluster, new_leader).await,
        1,
        "node {new_leader} campaigned at the leader's request"
    );
    let (s, b) = cluster
        .api(Method::POST, "/projects/", Some(json!({"name": "after"})))
        .await
        .expect("write after");
    assert_eq!(s, 201, "{b}");
    // The stopped node never campaigned while it drained: the new leader could not reach it (its server
    // no longer accepts connections), and a leader grants a higher-term vote once its lease has passed,
    // so such a campaign won, and the cluster had a leader that was about to exit.
    assert_eq!(
        own_view(&cluster, new_leader).await["term"].as_u64(),
        Some(term + 1),
        "the term moved on after the hand-over; the stopped node's log:\n{}",
        std::fs::read_to_string(cluster.nodes[leader as usize - 1].log_path()).unwrap_or_default()
    );
    println!(
        "leader {leader} stopped; node {new_leader} leads term {}; first write through the cluster {:?} after SIGTERM",
        term + 1,
        stopped_at.elapsed()
    );
    cluster.kill_all();
}
