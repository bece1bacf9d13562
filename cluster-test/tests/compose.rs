//! The compose deployment (`deploy/compose/`) from the images the repository's Dockerfile builds: three node
//! containers and a worker container start, pass a build, survive `docker kill` of the leader's container
//! while a run is in progress (the run PASSES), come back with `docker-compose up -d`, and then every node
//! is replaced, one at a time, by a container of a new image tag while ten runs are in progress: all PASS.
//! The images come from `deploy/build-images.sh` (`.ci/run` builds them); without them this test fails.
use cluster_test::compose::{require_images, ComposeStack};
use reqwest::Method;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

const HOST_TAG: &str = "compose-lab";

fn definition(runs: &[(&str, u32)]) -> String {
    let mut yaml =
        String::from("timeout: 10\ntriggers:\n  - name: ci\n    type: simple\n    runs:\n");
    for (name, _) in runs {
        yaml.push_str(&format!(
            "      - name: {name}\n        container: busybox:latest\n        host-tag: {HOST_TAG}\n        script: {name}\n"
        ));
    }
    yaml.push_str("scripts:\n");
    for (name, secs) in runs {
        yaml.push_str(&format!(
            "  {name}: |\n    #!/bin/sh -e\n    echo \"start {name}\"\n    sleep {secs}\n    echo \"done {name} on $H_WORKER\"\n"
        ));
    }
    yaml
}

async fn start_build(stack: &ComposeStack, project: &str, definition: &str) -> u64 {
    let (s, b) = stack
        .api(Method::POST, "/projects/", Some(json!({"name": project})))
        .await
        .expect("create project");
    assert!(s == 201 || s == 409, "create project: {s} {b}");
    let (s, b) = stack
        .api(
            Method::POST,
            &format!("/projects/{project}/builds/"),
            Some(json!({"trigger-name": "ci", "project-definition": definition})),
        )
        .await
        .expect("create build");
    assert_eq!(s, 201, "create build: {b}");
    b["data"]["build_id"].as_u64().expect("build_id")
}

async fn build_of(stack: &ComposeStack, project: &str, n: u64) -> Value {
    let (s, b) = stack
        .api(
            Method::GET,
            &format!("/projects/{project}/builds/{n}/"),
            None,
        )
        .await
        .expect("get build");
    assert_eq!(s, 200, "{b}");
    b["data"]["build"].clone()
}

async fn wait_status(stack: &ComposeStack, project: &str, n: u64, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let build = build_of(stack, project, n).await;
        let status = build["status"].as_str().unwrap_or("").to_string();
        if status == "PASSED" || status == "FAILED" {
            return build;
        }
        assert!(
            Instant::now() < deadline,
            "build {project}/{n} not finished after {timeout:?}: {build}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_run_running(stack: &ComposeStack, project: &str, n: u64, run: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, b) = stack
            .api(
                Method::GET,
                &format!("/projects/{project}/builds/{n}/runs/{run}/"),
                None,
            )
            .await
            .expect("get run");
        if b["data"]["run"]["status"] == "RUNNING" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run never RUNNING: {b}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The run's console log from whichever node answers (one may be down).
async fn console(stack: &ComposeStack, project: &str, n: u64, run: &str) -> String {
    let mut last = String::new();
    for node in 1..=3 {
        let r = stack
            .client
            .get(format!(
                "{}/projects/{project}/builds/{n}/runs/{run}/console.log",
                stack.url(node)
            ))
            .header("Authorization", format!("Token {}", stack.token))
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 200 => return r.text().await.unwrap_or_default(),
            Ok(r) => last = format!("node{node}: {}", r.status()),
            Err(e) => last = format!("node{node}: {e}"),
        }
    }
    panic!("no node served the console: {last}")
}

/// A new image tag with a different image id (a label on top of the tested image), as a release would be.
fn next_image(tag: &str, next: &str) {
    for target in ["node", "worker"] {
        let dockerfile =
            format!("FROM jobserv/{target}:{tag}\nLABEL org.jobserv.rollout=\"{next}\"\n");
        let mut child = Command::new("docker")
            .args([
                "build",
                "-q",
                "-t",
                &format!("jobserv/{target}:{next}"),
                "-",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("docker build");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(dockerfile.as_bytes())
            .expect("write Dockerfile");
        assert!(
            child.wait().expect("docker build").success(),
            "tagging {next}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_survives_docker_kill_and_a_rolling_replace_during_runs() {
    let tag = std::env::var("JOBSERV_IMAGE_TAG").unwrap_or_else(|_| "dev".into());
    require_images(&tag);
    let stack = ComposeStack::up(&tag, HOST_TAG).await.expect("compose up");

    // A first build passes.
    let n = start_build(&stack, "compose", &definition(&[("hello", 1)])).await;
    let build = wait_status(&stack, "compose", n, Duration::from_secs(180)).await;
    assert_eq!(build["status"], "PASSED", "{build}\n{}", stack.logs());

    // docker kill of the leader's container while a run is in progress: the run passes.
    let n = start_build(&stack, "compose", &definition(&[("slow", 15)])).await;
    wait_run_running(&stack, "compose", n, "slow").await;
    let leader = stack.leader().await.expect("leader");
    stack.kill(&format!("node{leader}")).expect("docker kill");
    let build = wait_status(&stack, "compose", n, Duration::from_secs(180)).await;
    assert_eq!(
        build["status"],
        "PASSED",
        "after killing node{leader}: {build}\n{}",
        stack.logs()
    );
    assert!(
        console(&stack, "compose", n, "slow")
            .await
            .contains("done slow on"),
        "the run's console is whole"
    );
    // ... and `docker-compose up -d` brings the killed node back; it catches up.
    stack.compose_ok(&["up", "-d"]).expect("compose up -d");
    stack
        .wait_ready(leader, Duration::from_secs(120))
        .await
        .expect("killed node back");

    // Rolling replace of all three nodes with a new image tag while ten runs are in progress.
    let next = format!("{tag}-next{}", std::process::id());
    next_image(&tag, &next);
    let old_image = stack.image_of("node1").expect("image of node1");
    let runs: Vec<(String, u32)> = (1..=10).map(|i| (format!("r{i:02}"), 6)).collect();
    let runs_ref: Vec<(&str, u32)> = runs.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    let n = start_build(&stack, "rolling", &definition(&runs_ref)).await;
    wait_run_running(&stack, "rolling", n, "r01").await;
    for node in 1..=3 {
        let service = format!("node{node}");
        stack
            .compose_with("JOBSERV_TAG", &next, &["up", "-d", "--no-deps", &service])
            .expect("replace node");
        let took = stack
            .wait_ready(node, Duration::from_secs(120))
            .await
            .expect("replaced node ready");
        let image = stack.image_of(&service).expect("image");
        assert_ne!(image, old_image, "{service} runs the new image");
        eprintln!("{service} replaced by {next}, ready after {took:?}");
    }
    let build = wait_status(&stack, "rolling", n, Duration::from_secs(300)).await;
    assert_eq!(
        build["status"],
        "PASSED",
        "rolling replace: {build}\n{}",
        stack.logs()
    );
    let listed = build["runs"].as_array().map(|r| r.len()).unwrap_or(0);
    let (_, b) = stack
        .api(
            Method::GET,
            &format!("/projects/rolling/builds/{n}/runs/"),
            None,
        )
        .await
        .expect("runs");
    let runs_json = b["data"]["runs"].as_array().cloned().unwrap_or_default();
    assert_eq!(runs_json.len(), 10, "{b} ({listed} in the build)");
    for run in &runs_json {
        assert_eq!(run["status"], "PASSED", "{run}");
    }
    drop(stack);
    for target in ["node", "worker"] {
        let _ = Command::new("docker")
            .args(["rmi", &format!("jobserv/{target}:{next}")])
            .output();
    }
}
