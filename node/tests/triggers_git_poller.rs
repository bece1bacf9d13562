//! The git poller against real repositories (git CLI, a bare repository on a local path): a push to a
//! polled branch starts exactly one build with the right params and the definition at that commit; a
//! push to an unpolled branch starts none; a push made while the node is down is built exactly once
//! after the restart. Nothing waits for a fixed time: "no build" is checked once a later sentinel push
//! has been built (see `sentinel`), and the poller's first look by its Raft entry.
mod common;
mod triggers_support;
use common::*;
use serde_json::json;
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

/// `(GIT_REF, GIT_SHA)` of every build, oldest first.
async fn built_refs(node: &TestNode) -> Vec<(String, String)> {
    let mut refs: Vec<(String, String)> = builds(node, "prod")
        .await
        .iter()
        .map(|b| {
            (
                b["params"]["GIT_REF"].as_str().unwrap_or("").to_string(),
                b["params"]["GIT_SHA"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    refs.reverse();
    refs
}

/// Pushes the new branch `branch` (matched by the globs, and sorting after every ref under test) and waits
/// for its build, number `n`. A poll lists every ref at once and handles them in ref order, and polls never
/// overlap: so once the sentinel is built, a poll that listed everything pushed before it has handled every
/// ref that sorts before it — whatever those would wrongly build (an unpolled branch, a repeat) exists now.
async fn sentinel(node: &TestNode, repo: &GitRepo, branch: &str, n: usize) -> String {
    let sha = repo.commit_and_push(branch, &[("notes.txt", branch)], "sentinel");
    wait_builds(node, n).await;
    let b = build(node, "prod", n as u64).await;
    assert_eq!(
        (
            b["params"]["GIT_REF"].as_str(),
            b["params"]["GIT_SHA"].as_str()
        ),
        (
            Some(format!("refs/heads/{branch}").as_str()),
            Some(sha.as_str())
        ),
        "build {n} is the sentinel's; builds: {:?}",
        built_refs(node).await
    );
    sha
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
    wait_format_raised(&node).await;
    assert_eq!(
        node.post("/projects/", json!({"name": "prod"})).await.0,
        201
    );
    create_poller_and_wait_first_look(&node, "prod", json!({"type": "git_poller", "definition_repo": repo.url(), "definition_file": "project.yml"}))
        .await;
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

    // A branch nobody polls, then a polled sentinel branch: once the sentinel is built, a poll that saw the
    // unpolled branch is done, and it built nothing for it.
    repo.commit_and_push("feature", &[("notes.txt", "x")], "feature work");
    let s0 = sentinel(&node, &repo, "release-0", 2).await;
    assert_eq!(
        built_refs(&node).await,
        [
            ("refs/heads/main".to_string(), second.clone()),
            ("refs/heads/release-0".to_string(), s0.clone())
        ],
        "nothing built for the unpolled branch"
    );

    // A push while the node is down is seen once it is back, and built once.
    node.terminate();
    let third = repo.commit_and_push(
        "main",
        &[("project.yml", &definition(&repo.url(), "c"))],
        "third",
    );
    node.restart().await;
    wait_builds(&node, 3).await;
    let b3 = build(&node, "prod", 3).await;
    assert_eq!(b3["params"]["GIT_SHA"], third);
    assert_eq!(b3["params"]["GIT_OLD_SHA"], second);
    // A new branch matching the globs starts a build too (no old sha).
    let release = repo.commit_and_push("release-1", &[("notes.txt", "y")], "release");
    wait_builds(&node, 4).await;
    let b4 = build(&node, "prod", 4).await;
    assert_eq!(
        (
            b4["params"]["GIT_REF"].as_str(),
            b4["params"]["GIT_SHA"].as_str()
        ),
        (Some("refs/heads/release-1"), Some(release.as_str()))
    );
    assert_eq!(b4["params"]["GIT_OLD_SHA"], "");
    // No build repeated: a sentinel sorting after every ref, pushed once build 4 exists, is built by a later
    // poll that handled main, release-0 and release-1 first.
    let s2 = sentinel(&node, &repo, "release-2", 5).await;
    assert_eq!(
        built_refs(&node).await,
        [
            ("refs/heads/main".to_string(), second),
            ("refs/heads/release-0".to_string(), s0),
            ("refs/heads/main".to_string(), third),
            ("refs/heads/release-1".to_string(), release),
            ("refs/heads/release-2".to_string(), s2),
        ],
        "every push built exactly once"
    );
}
