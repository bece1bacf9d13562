//! Triggers on three real nodes: the git poller runs on the leader only, and when the leader is killed
//! (SIGKILL) the new leader's poller carries on from the replicated refs: a push made after the kill is
//! built exactly once with the right `GIT_OLD_SHA`, and nothing is built twice. A run chain fired by the
//! new leader lands in the same build.
mod common;
mod triggers_support;
use common::*;
use serde_json::json;
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

#[tokio::test]
async fn the_poller_moves_with_the_leader_without_missing_or_repeating_a_push() {
    let dir = tempdir();
    let repo = GitRepo::new(dir.path(), "product");
    let first_sha = repo.commit_and_push(
        "main",
        &[("project.yml", &definition(&repo.url()))],
        "first",
    );
    let mut nodes = three_nodes(dir.path(), |c| c.triggers.poll_interval_secs = 1).await;
    let first = &nodes[0];
    wait_format_raised(first).await;
    assert_eq!(
        first.post("/projects/", json!({"name": "prod"})).await.0,
        201
    );
    // The first look records the refs (main at `first`): only then is a push a change.
    create_poller_and_wait_first_look(first, "prod", json!({"type": "git_poller", "definition_repo": repo.url(), "definition_file": "project.yml"}))
        .await;

    let second = repo.commit_and_push("main", &[("a.txt", "a")], "second");
    wait_for("build 1", 30, async || {
        (builds(&nodes[1], "prod").await.len() == 1).then_some(())
    })
    .await;
    let leader_id = agreed_leader(&nodes.iter().collect::<Vec<_>>(), 3).await as usize;
    nodes[leader_id - 1].kill();
    let survivors: Vec<&TestNode> = nodes
        .iter()
        .filter(|n| n.config.id as usize != leader_id)
        .collect();
    let new_leader = agreed_leader(&survivors, 3).await as usize;
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
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !runs.iter().any(|d: &serde_json::Value| {
        d["project"] == "prod" && d["build"] == 2 && d["run"] == "build"
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "build 2's run was not handed out within 60 s; got {runs:?}"
        );
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

    // No push built twice, none missed: one more push is built by a later poll of the new leader, as
    // build 3 from `third` — a repeat of build 2 would have come first, or as this build from another sha.
    let fourth = repo.commit_and_push("main", &[("a.txt", "c")], "fourth");
    wait_for("build 3", 60, async || {
        (builds(reader, "prod").await.len() >= 3).then_some(())
    })
    .await;
    let shas: Vec<(String, String)> = builds(reader, "prod")
        .await
        .iter()
        .rev()
        .map(|b| {
            (
                b["params"]["GIT_OLD_SHA"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                b["params"]["GIT_SHA"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        shas,
        [
            (first_sha, second.clone()),
            (second, third.clone()),
            (third, fourth)
        ],
        "(GIT_OLD_SHA, GIT_SHA) of every build: no push built twice, none missed"
    );
}
