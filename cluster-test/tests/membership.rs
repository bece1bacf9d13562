//! Membership through the API: a node started with `join` is added as a learner and promoted to voter; an
//! admin removes it again with `DELETE /cluster/nodes/<id>/`. Real processes, real TLS.
use cluster_test::harness::{bin_dir, call, cluster_configs, random_token, NodeProcess};
use reqwest::Method;
use std::time::{Duration, Instant};

/// The voters in `node`'s own view of the membership (`stale=1`: answered at once, also while a
/// membership change is in flight).
async fn voters(node: &NodeProcess, token: &str) -> Vec<u64> {
    let (_, b) = call(
        &node.client,
        Method::GET,
        &format!("{}/cluster/?stale=1", node.url()),
        token,
        None,
    )
    .await
    .expect("cluster status");
    let mut ids: Vec<u64> = b["data"]["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter(|n| n["raft_role"] != "learner")
                .filter_map(|n| n["id"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

async fn wait_voters(node: &NodeProcess, token: &str, want: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if voters(node, token).await == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "voters never became {want:?} (now {:?})",
            voters(node, token).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_through_any_member_and_is_removed_by_an_admin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bins = bin_dir(None).expect("binaries built");
    let token = random_token();
    let mut configs = cluster_configs(dir.path(), 2, &token, &random_token()).expect("configs");
    for c in &mut configs {
        c.peers.clear();
    }
    let mut second = configs.pop().expect("config 2");
    let first = configs.pop().expect("config 1");
    second.join = Some(first.advertise_url.clone());

    let mut one = NodeProcess::new(first, &bins).expect("node 1");
    one.spawn().expect("spawn 1");
    one.wait_ready(Duration::from_secs(60))
        .await
        .expect("node 1 ready");
    let (s, _) = call(
        &one.client,
        Method::POST,
        &format!("{}/projects/", one.url()),
        &token,
        Some(serde_json::json!({"name": "before-join"})),
    )
    .await
    .expect("write");
    assert_eq!(s, 201);

    let mut two = NodeProcess::new(second, &bins).expect("node 2");
    two.spawn().expect("spawn 2");
    wait_voters(&one, &token, &[1, 2]).await;
    two.wait_ready(Duration::from_secs(60))
        .await
        .expect("node 2 serves after joining");
    // The joined node has the state from before it joined, and takes writes (forwarded to the leader).
    let (s, _) = call(
        &two.client,
        Method::GET,
        &format!("{}/projects/before-join/", two.url()),
        &token,
        None,
    )
    .await
    .expect("read");
    assert_eq!(s, 200);
    let (s, _) = call(
        &two.client,
        Method::POST,
        &format!("{}/projects/", two.url()),
        &token,
        Some(serde_json::json!({"name": "after-join"})),
    )
    .await
    .expect("write");
    assert_eq!(s, 201);
    // Removal needs an admin token.
    let (s, _) = call(
        &one.client,
        Method::DELETE,
        &format!("{}/cluster/nodes/2/", one.url()),
        "not-a-token",
        None,
    )
    .await
    .expect("delete");
    assert_eq!(s, 401);
    let (s, b) = call(
        &one.client,
        Method::DELETE,
        &format!("{}/cluster/nodes/2/", one.url()),
        &token,
        None,
    )
    .await
    .expect("delete");
    assert_eq!(s, 200, "{b}");
    wait_voters(&one, &token, &[1]).await;
    let (s, _) = call(
        &one.client,
        Method::POST,
        &format!("{}/projects/", one.url()),
        &token,
        Some(serde_json::json!({"name": "after-removal"})),
    )
    .await
    .expect("write");
    assert_eq!(s, 201, "the remaining single voter commits alone");
}
