//! The git poller against real repositories (git CLI, a bare repository on a local path): a push to a
//! polled branch starts exactly one build with the right params and the definition at that commit; a
//! push to an unpolled branch starts none; a push made while the node is down is built exactly once
//! after the restart.
mod common;
mod triggers_support;
use common::*;
use serde_json::json;
use std::time::Duration;
use triggers_support::*;

fn definition(url: &str, version: &str) -> String {
    format!(
        r#"
timeout: 5
params:
  VERSION: {version}
triggers:
  - name: poll
    type: git_poller
    params:
      GIT_URL: {url}
      GIT_POLL_REFS: "refs/heads/main, refs/heads/release-*"
    runs:
      - name: build
        container: busybox:latest
        host-tag: amd64
        script: build
scripts:
  build: |
    #!/bin/sh -e
    echo "building $GIT_SHA"
"#
    )
}

async fn wait_builds(node: &TestNode, n: usize) -> Vec<serde_json::Value> {
    wait_for(&format!("{n} builds"), 30, async || {
        let b = builds(node, "prod").await;
        (b.len() >= n).then_some(b)
    })
    .await
}

/// Enough poll intervals (1 s each) for a poller to have looked at least twice.
async fn let_pollers_look() {
    tokio::time::sleep(Duration::from_secs(3)).await;
}

#[tokio::test]
async fn a_push_to_a_polled_branch_yields_exactly_one_build_also_across_a_restart() {
    let dir = tempdir();
    let repo = GitRepo::new(dir.path(), "product");
    let first = repo.commit_and_push(
        "main",
        &[("project.yml", &definition(&repo.url(), "a"))],
        "first",
    );
    let mut config = node_config(dir.path(), free_port());
    config.triggers.poll_interval_secs = 1;
    let mut node = TestNode::start_with(config).await;
    assert_eq!(
        node.post("/projects/", json!({"name": "prod"})).await.0,
        201
    );
    let (s, body) = node
        .post("/projects/prod/triggers/", json!({"type": "git_poller", "definition_repo": repo.url(), "definition_file": "project.yml"}))
        .await;
    assert_eq!(s, 201, "{body}");
    let_pollers_look().await;
    assert!(
        builds(&node, "prod").await.is_empty(),
        "the first look only records the refs"
    );

    let second = repo.commit_and_push(
        "main",
        &[("project.yml", &definition(&repo.url(), "b"))],
        "second",
    );
    let b = wait_builds(&node, 1).await;
    let b1 = build(&node, "prod", b[0]["build_id"].as_u64().unwrap()).await;
    assert_eq!(b1["trigger_name"], "poll");
    assert_eq!(b1["trigger_type"], "git_poller");
    assert_eq!(b1["params"]["GIT_URL"], repo.url());
    assert_eq!(b1["params"]["GIT_REF"], "refs/heads/main");
    assert_eq!(b1["params"]["GIT_SHA"], second);
    assert_eq!(b1["params"]["GIT_OLD_SHA"], first);
    let (_, run) = node
        .get("/projects/prod/builds/1/runs/build/.rundef.json")
        .await;
    assert_eq!(run["env"]["GIT_SHA"], second.as_str());
    assert_eq!(
        run["env"]["VERSION"], "b",
        "the definition is read at the triggering commit"
    );

    // A branch nobody polls, and time for several polls: still one build.
    repo.commit_and_push("feature", &[("notes.txt", "x")], "feature work");
    let_pollers_look().await;
    assert_eq!(builds(&node, "prod").await.len(), 1);

    // A push while the node is down is seen once it is back, and built once.
    node.terminate();
    let third = repo.commit_and_push(
        "main",
        &[("project.yml", &definition(&repo.url(), "c"))],
        "third",
    );
    node.restart().await;
    wait_builds(&node, 2).await;
    let b2 = build(&node, "prod", 2).await;
    assert_eq!(b2["params"]["GIT_SHA"], third);
    assert_eq!(b2["params"]["GIT_OLD_SHA"], second);
    // A new branch matching the globs starts a build too (no old sha).
    let release = repo.commit_and_push("release-1", &[("notes.txt", "y")], "release");
    let b = wait_builds(&node, 3).await;
    let b3 = build(&node, "prod", 3).await;
    assert_eq!(
        (
            b3["params"]["GIT_REF"].as_str(),
            b3["params"]["GIT_SHA"].as_str()
        ),
        (Some("refs/heads/release-1"), Some(release.as_str()))
    );
    assert_eq!(b3["params"]["GIT_OLD_SHA"], "");
    let_pollers_look().await;
    assert_eq!(
        builds(&node, "prod").await.len(),
        3,
        "no build repeated: {b:?}"
    );
}
