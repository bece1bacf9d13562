//! Reads are linearizable on every node (api.md, "Consistency of reads"): on three real node processes, a
//! build created through one node is seen at once by a read through either other node, hundreds of times
//! over — no wait, no retry. Without a quorum a read answers 503 after a bounded time, and `?stale=1`
//! still answers at once from the node's own state.
mod common;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_build_created_through_one_node_is_read_at_once_through_the_others() {
    let dir = tempdir();
    let nodes = three_nodes(dir.path(), |_| {}).await;
    let (s, body) = nodes[0].post("/projects/", json!({"name": "lin"})).await;
    assert_eq!(s, 201, "{body}");
    const ROUNDS: usize = 300;
    let mut reads = 0;
    for i in 0..ROUNDS {
        let writer = &nodes[i % 3];
        let (s, body) = writer
            .post(
                "/projects/lin/builds/",
                json!({"trigger-name": "manual", "project-definition": SIMPLE_PROJECT}),
            )
            .await;
        assert_eq!(s, 201, "create through node {}: {body}", writer.config.id);
        let n = body["data"]["build_id"].as_u64().expect("build_id");
        assert_eq!(n, i as u64 + 1, "gapless numbers");
        for reader in nodes.iter().filter(|r| r.config.id != writer.config.id) {
            // The build, its runs, and the project's newest build: all there on the first try.
            let (s, body) = reader.get(&format!("/projects/lin/builds/{n}/")).await;
            assert_eq!(
                s, 200,
                "build {n} created through node {} not visible through node {}: {body}",
                writer.config.id, reader.config.id
            );
            assert_eq!(body["data"]["build"]["build_id"].as_u64(), Some(n));
            let (s, body) = reader.get("/projects/lin/builds/?limit=1").await;
            assert_eq!(s, 200, "{body}");
            assert_eq!(
                body["data"]["builds"][0]["build_id"].as_u64(),
                Some(n),
                "node {} lists an older newest build than {n}",
                reader.config.id
            );
            reads += 2;
        }
    }
    assert_eq!(reads, ROUNDS * 4);
    // The read-index machinery was used on both paths (followers asked the leader).
    let (s, text) = nodes[0].get_text("/metrics").await;
    assert_eq!(s, 200);
    assert!(
        text.contains("jobserv_read_index_rounds_total"),
        "read metrics exported"
    );
}

#[tokio::test]
async fn without_a_quorum_reads_answer_503_in_bounded_time_unless_stale_is_asked() {
    let dir = tempdir();
    let mut nodes = three_nodes(dir.path(), |_| {}).await;
    let (s, body) = nodes[0].post("/projects/", json!({"name": "q"})).await;
    assert_eq!(s, 201, "{body}");
    // Every node has the project (a linearizable read on each proves it applied it).
    for n in &nodes {
        assert_eq!(n.get("/projects/q/").await.0, 200);
        // Ready: caught up with the leader.
        let (s, body) = n.get("/health/ready").await;
        assert_eq!((s, &body["data"]["ready"]), (200, &json!(true)), "{body}");
    }
    let [a, b, c] = &mut nodes;
    a.kill();
    b.kill();
    let started = Instant::now();
    let (s, body) = c.get("/projects/q/").await;
    let took = started.elapsed();
    assert_eq!(s, 503, "a node alone cannot know it is up to date: {body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("stale=1"),
        "the message says how to get a possibly stale answer: {body}"
    );
    assert!(
        took < Duration::from_secs(20),
        "bounded: answered after {took:?}"
    );
    // The explicitly stale read answers at once from the node's own applied state.
    let (s, body) = c.get("/projects/q/?stale=1").await;
    assert_eq!(s, 200, "{body}");
    // Health says the Raft core runs (this node is fine, only cut off from a quorum).
    let (s, body) = c.get("/health").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["data"]["raft"], "running");
    // ...but it is not ready to serve: no quorum can tell it is up to date. Answered within the bound.
    let started = Instant::now();
    let (s, body) = c.get("/health/ready").await;
    assert_eq!(s, 503, "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("not ready"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded: {:?}",
        started.elapsed()
    );
}
