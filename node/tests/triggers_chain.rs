//! Run and build chains on a real node, runs completed over the real worker protocol: every passed run
//! of `examples/chain.yml` starts its chained run in the same build with the parent's environment and
//! `H_TRIGGER_URL`, the build-level chain starts once every run passed, and the build never reads PASSED
//! before its chains ran. A failed run starts nothing.
mod common;
mod triggers_support;
use common::*;
use serde_json::json;
use triggers_support::*;

const CHAIN: &str = include_str!("../../examples/chain.yml");

#[tokio::test]
async fn run_chain_adds_named_runs_with_parent_env_to_the_same_build() {
    let dir = tempdir();
    let node = TestNode::start(dir.path()).await;
    assert_eq!(
        node.post("/projects/", json!({"name": "chain"})).await.0,
        201
    );
    let (s, body) = node
        .post(
            "/projects/chain/builds/",
            json!({"trigger-name": "compile", "project-definition": CHAIN}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    register_and_enlist(&node, "w1").await;

    let compiles = take_runs(&node, "w1", &["compile-alpha", "compile-beta"]).await;
    let alpha = compiles
        .iter()
        .find(|d| d["run"] == "compile-alpha")
        .unwrap();
    let beta = compiles
        .iter()
        .find(|d| d["run"] == "compile-beta")
        .unwrap();
    finish(&node, alpha, "PASSED").await;

    // compile-alpha passed: unit-test-alpha joins build 1, with BOARD and the parent's URL.
    let tests = take_runs(&node, "w1", &["unit-test-alpha"]).await;
    let t = &tests[0];
    assert_eq!(t["env"]["BOARD"], "alpha");
    assert_eq!(t["env"]["H_BUILD"], "1");
    assert_eq!(t["env"]["H_RUN"], "unit-test-alpha");
    assert!(
        t["env"]["H_TRIGGER_URL"]
            .as_str()
            .unwrap()
            .ends_with("/projects/chain/builds/1/runs/compile-alpha/"),
        "{}",
        t["env"]
    );
    assert_eq!(t["trigger_type"], "simple");
    finish(&node, &tests[0], "PASSED").await;
    assert_ne!(
        build(&node, "chain", 1).await["status"],
        "PASSED",
        "compile-beta is still running"
    );

    finish(&node, beta, "PASSED").await;
    let tests = take_runs(&node, "w1", &["unit-test-beta"]).await;
    assert_eq!(tests[0]["env"]["BOARD"], "beta");
    // Every run so far passed, but unit-test-beta runs: no build chain yet, the build is RUNNING.
    assert_eq!(build(&node, "chain", 1).await["status"], "RUNNING");
    finish(&node, &tests[0], "PASSED").await;

    // All passed: the trigger's own chain starts summary-final, given the build URL.
    let summary = take_runs(&node, "w1", &["summary-final"]).await;
    assert!(summary[0]["env"]["H_TRIGGER_URL"]
        .as_str()
        .unwrap()
        .ends_with("/projects/chain/builds/1/"));
    let b = build(&node, "chain", 1).await;
    assert_eq!(b["status"], "RUNNING", "never PASSED before its chains ran");
    finish(&node, &summary[0], "PASSED").await;
    let b = wait_for("build 1 PASSED", 20, async || {
        let b = build(&node, "chain", 1).await;
        (b["status"] == "PASSED").then_some(b)
    })
    .await;
    assert_eq!(
        run_names(&b),
        [
            "compile-alpha",
            "compile-beta",
            "summary-final",
            "unit-test-alpha",
            "unit-test-beta"
        ]
    );
    assert_eq!(
        builds(&node, "chain").await.len(),
        1,
        "chains add runs, not builds"
    );
}

#[tokio::test]
async fn a_failed_run_starts_no_chain_and_the_build_fails() {
    let dir = tempdir();
    let node = TestNode::start(dir.path()).await;
    assert_eq!(
        node.post("/projects/", json!({"name": "chain"})).await.0,
        201
    );
    let (s, body) = node
        .post(
            "/projects/chain/builds/",
            json!({"trigger-name": "compile", "project-definition": CHAIN}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    register_and_enlist(&node, "w1").await;
    let compiles = take_runs(&node, "w1", &["compile-alpha", "compile-beta"]).await;
    finish(&node, &compiles[0], "FAILED").await;
    finish(&node, &compiles[1], "FAILED").await;
    let b = wait_for("build 1 FAILED", 20, async || {
        let b = build(&node, "chain", 1).await;
        (b["status"] == "FAILED").then_some(b)
    })
    .await;
    assert_eq!(run_names(&b), ["compile-alpha", "compile-beta"]);
    assert!(
        check_in(&node, "w1", 8, 2).await.is_empty(),
        "no chained run was queued"
    );
}
