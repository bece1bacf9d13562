//! Proposal batching (`node/src/batcher.rs`) on a real 3-node cluster: many runs appending console bytes
//! at once through all three nodes share Raft entries, and still every append gets its own answer — its
//! own stored length, its own refusal (an offset gap) — and every log reads back exactly as written.
mod common;
mod triggers_support;
use common::*;
use serde_json::{json, Value};
use std::sync::Arc;
use triggers_support::*;

const RUNS: usize = 12;
const ROUNDS: usize = 15;

fn definition() -> String {
    let runs: String = (0..RUNS)
        .map(|i| format!("      - name: r{i}\n        container: busybox:latest\n        host-tag: amd64\n        script: s\n"))
        .collect();
    format!("timeout: 5\ntriggers:\n  - name: manual\n    type: simple\n    runs:\n{runs}scripts:\n  s: |\n    #!/bin/sh\n    true\n")
}

/// POSTs `bytes` at `offset` to the run's console through `base` (a node's URL); status and `X-OFFSET`.
async fn append(
    node: &TestNode,
    base: &str,
    rundef: &Value,
    offset: u64,
    bytes: String,
) -> (u16, u64) {
    let url = rundef["run_url"]
        .as_str()
        .expect("run_url")
        .replacen(&node.url, base, 1);
    let r = node
        .client
        .post(url)
        .header(
            "Authorization",
            format!("Token {}", rundef["api_key"].as_str().expect("api_key")),
        )
        .header("X-OFFSET", offset.to_string())
        .body(bytes)
        .send()
        .await
        .expect("append");
    let stored = r
        .headers()
        .get("X-OFFSET")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("X-OFFSET in the reply");
    (r.status().as_u16(), stored)
}

/// `name`'s sum and count over every node's `/metrics`.
async fn histogram(nodes: &[TestNode], name: &str) -> (f64, f64) {
    let (mut sum, mut count) = (0.0, 0.0);
    for node in nodes {
        let (s, text) = node.get_text("/metrics").await;
        assert_eq!(s, 200);
        for line in text.lines() {
            let value = |l: &str| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
            if line.starts_with(&format!("{name}_sum ")) {
                sum += value(line).expect("sum");
            } else if line.starts_with(&format!("{name}_count ")) {
                count += value(line).expect("count");
            }
        }
    }
    (sum, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_entries_and_each_gets_its_own_answer() {
    let dir = tempdir();
    let nodes = three_nodes(dir.path(), |_| {}).await;
    for node in &nodes {
        wait_format_raised(node).await; // batches are written only from format 4 on
    }
    let n1 = &nodes[0];
    assert_eq!(n1.post("/projects/", json!({"name": "batch"})).await.0, 201);
    let (s, body) = n1
        .post(
            "/projects/batch/builds/",
            json!({"trigger-name": "manual", "project-definition": definition()}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    register_and_enlist_worker(n1, "w1", RUNS as u32).await;
    let names: Vec<String> = (0..RUNS).map(|i| format!("r{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let rundefs = take_runs(n1, "w1", &names).await;
    let (sum_before, _) = histogram(&nodes, "jobserv_proposal_batch_commands").await;

    // Every round, each run appends one line through node (run + round) % 3, all runs at once; every
    // third round a run first tries an append past its end, which must be refused alone.
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let nodes = Arc::new(nodes);
    let mut expected: Vec<String> = vec![String::new(); RUNS];
    let mut proposals = 0;
    for round in 0..ROUNDS {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, rundef) in rundefs.iter().enumerate() {
            let (nodes, base, rundef) =
                (nodes.clone(), urls[(i + round) % 3].clone(), rundef.clone());
            let offset = expected[i].len() as u64;
            let line = format!("run {i} round {round}\n");
            let gap = round % 3 == 0;
            tasks.spawn(async move {
                if gap {
                    let (s, stored) =
                        append(&nodes[0], &base, &rundef, offset + 7, "gap".into()).await;
                    assert_eq!(
                        (s, stored),
                        (409, offset),
                        "a gap is refused with the stored length"
                    );
                }
                let (s, stored) = append(&nodes[0], &base, &rundef, offset, line.clone()).await;
                assert_eq!(s, 200);
                assert_eq!(
                    stored,
                    offset + line.len() as u64,
                    "run {i}: its own new length"
                );
                (i, line)
            });
            proposals += if gap { 2 } else { 1 };
        }
        while let Some(done) = tasks.join_next().await {
            let (i, line) = done.expect("append task");
            expected[i].push_str(&line);
        }
    }

    for (i, want) in expected.iter().enumerate() {
        for node in nodes.iter() {
            let (s, text) = node
                .get_text(&format!("/projects/batch/builds/1/runs/r{i}/console.log"))
                .await;
            assert_eq!(s, 200);
            assert_eq!(&text, want, "run r{i} through {}", node.url);
        }
    }
    // Every append (refused ones too) went through a batcher; fewer batches than appends: they shared.
    let (sum, count) = histogram(&nodes[..], "jobserv_proposal_batch_commands").await;
    assert_eq!(
        sum - sum_before,
        proposals as f64,
        "appends proposed through the batchers"
    );
    assert!(
        count < sum,
        "{sum} commands in {count} batches: concurrent appends never shared an entry"
    );
}
