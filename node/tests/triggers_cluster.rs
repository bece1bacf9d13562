//! Triggers on three real nodes: the git poller runs on the leader only, and when the leader is killed
//! (SIGKILL) the new leader's poller carries on from the replicated refs: a push made after the kill is
//! built exactly once with the right `GIT_OLD_SHA`, and nothing is built twice. A run chain fired by the
//! new leader lands in the same build.
mod common;
mod triggers_support;
use common::*;
use jobserv_node::config::Peer;
use serde_json::json;
use std::time::Duration;
use triggers_support::*;

fn definition(url: &str) -> String {
    format!(
        r#"
timeout: 5
triggers:
  - name: poll
    type: git_poller
    params:
      GIT_URL: {url}
      GIT_POLL_REFS: refs/heads/main
    runs:
      - name: build
        container: busybox:latest
        host-tag: amd64
        script: s
        triggers:
          - name: test
  - name: test
    type: simple
    runs:
      - name: test
        container: busybox:latest
        host-tag: amd64
        script: s
scripts:
  s: |
    #!/bin/sh
    true
"#
    )
}

async fn leader(nodes: &[&TestNode]) -> usize {
    wait_for("a leader", 30, async || {
        for n in nodes {
            if let Ok(r) = n
                .client
                .get(n.u("/cluster/"))
                .header("Authorization", format!("Token {}", n.token))
                .send()
                .await
            {
                if let Ok(body) = r.json::<serde_json::Value>().await {
                    if let Some(id) = body["data"]["leader"].as_u64() {
                        if nodes.iter().any(|n| n.config.id == id) {
                            return Some(id as usize);
                        }
                    }
                }
            }
        }
        None
    })
    .await
}

#[tokio::test]
async fn the_poller_moves_with_the_leader_without_missing_or_repeating_a_push() {
    let dir = tempdir();
    let repo = GitRepo::new(dir.path(), "product");
    repo.commit_and_push(
        "main",
        &[("project.yml", &definition(&repo.url()))],
        "first",
    );
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers: Vec<Peer> = (0..3)
        .map(|i| Peer {
            id: i as u64 + 1,
            url: format!("https://127.0.0.1:{}", ports[i]),
        })
        .collect();
    let configs: Vec<_> = (0..3)
        .map(|i| {
            let mut c = node_config(dir.path(), ports[i]);
            c.id = i as u64 + 1;
            c.data_dir = dir.path().join(format!("node-{}", i + 1));
            c.peers = peers.clone();
            c.triggers.poll_interval_secs = 1;
            c
        })
        .collect();
    let (a, b, c) = tokio::join!(
        TestNode::start_with(configs[0].clone()),
        TestNode::start_with(configs[1].clone()),
        TestNode::start_with(configs[2].clone())
    );
    let mut nodes = [a, b, c];
    let first = &nodes[0];
    assert_eq!(
        first.post("/projects/", json!({"name": "prod"})).await.0,
        201
    );
    let (s, body) = first
        .post("/projects/prod/triggers/", json!({"type": "git_poller", "definition_repo": repo.url(), "definition_file": "project.yml"}))
        .await;
    assert_eq!(s, 201, "{body}");
    tokio::time::sleep(Duration::from_secs(3)).await; // the first look records the refs

    let second = repo.commit_and_push("main", &[("a.txt", "a")], "second");
    wait_for("build 1", 30, async || {
        (builds(&nodes[1], "prod").await.len() == 1).then_some(())
    })
    .await;
    let leader_id = leader(&nodes.iter().collect::<Vec<_>>()).await;
    nodes[leader_id - 1].kill();
    let survivors: Vec<&TestNode> = nodes
        .iter()
        .filter(|n| n.config.id as usize != leader_id)
        .collect();
    let new_leader = leader(&survivors).await;
    assert_ne!(new_leader, leader_id);

    let third = repo.commit_and_push("main", &[("a.txt", "b")], "third");
    let reader = survivors[0];
    wait_for("build 2", 60, async || {
        (builds(reader, "prod").await.len() >= 2).then_some(())
    })
    .await;
    let b2 = build(reader, "prod", 2).await;
    assert_eq!(
        (
            b2["params"]["GIT_SHA"].as_str(),
            b2["params"]["GIT_OLD_SHA"].as_str()
        ),
        (Some(third.as_str()), Some(second.as_str()))
    );

    // The new leader's BuildActor fires the chain of build 2 into the same build.
    register_and_enlist(reader, "w1").await;
    let mut runs = Vec::new();
    while !runs.iter().any(|d: &serde_json::Value| {
        d["project"] == "prod" && d["build"] == 2 && d["run"] == "build"
    }) {
        let got = check_in(reader, "w1", 8, 2).await;
        for d in &got {
            if d["build"] != 2 {
                finish(reader, d, "PASSED").await; // build 1's run, if handed out first
            }
        }
        runs.extend(got);
    }
    let run = runs
        .iter()
        .find(|d| d["build"] == 2 && d["run"] == "build")
        .unwrap()
        .clone();
    finish(reader, &run, "PASSED").await;
    let chained = wait_for("the chained run", 30, async || {
        check_in(reader, "w1", 8, 1)
            .await
            .into_iter()
            .find(|d| d["build"] == 2 && d["run"] == "test")
    })
    .await;
    assert!(chained["env"]["H_TRIGGER_URL"]
        .as_str()
        .unwrap()
        .ends_with("/projects/prod/builds/2/runs/build/"));

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        builds(reader, "prod").await.len(),
        2,
        "no push built twice, none missed"
    );
}
