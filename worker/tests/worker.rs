//! The worker end to end against a fake node speaking the protocol (see common/fake_node.rs) and the real Docker
//! engine: registration, long-poll check-in, console with offsets through injected failures and fail-over,
//! tests, signed artifact uploads, cancel, and restart recovery.
mod common;

use common::fake_node::FakeNode;
use common::*;
use jobserv_worker::WorkerConfig;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A URL where nothing listens: the first node of the list is "dead".
async fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    drop(l);
    url
}

fn node_rundef(
    node: &FakeNode,
    dead: &str,
    project: &str,
    script: &str,
) -> jobserv_protocol::RunDef {
    let mut rd = rundef(project, script);
    let path = format!("/projects/{project}/builds/1/runs/unit/");
    rd.run_url = format!("{dead}{path}");
    rd.run_urls = vec![format!("{dead}{path}"), format!("{}{path}", node.url)];
    rd
}

fn config(node: &FakeNode, dead: &str, data_dir: &std::path::Path, name: &str) -> WorkerConfig {
    let mut config = WorkerConfig::new(vec![dead.to_string(), node.url.clone()], name, data_dir);
    config.checkin_wait = Duration::from_secs(1);
    config.checkin_pause = Duration::from_millis(200);
    config
}

#[tokio::test]
async fn worker_runs_an_assigned_run_through_node_failures() {
    busybox_image();
    let node = FakeNode::start().await;
    let dead = dead_url().await;
    let dir = tempfile::tempdir().expect("tmp");
    let script = "for i in 1 2 3 4 5 6; do echo line-$i; sleep 0.3; done\n\
                  echo art > /archive/a.txt\n\
                  echo '<testsuite name=\"s\"><testcase name=\"t\"/></testsuite>' > /archive/junit.xml\n";
    {
        let mut s = node.lock();
        s.inject_failures = true;
        s.pending_runs
            .push(node_rundef(&node, &dead, "e2e", script));
    }
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(jobserv_worker::run_worker_until(
        config(&node, &dead, dir.path(), "w-e2e"),
        shutdown.clone(),
    ));
    node.wait_for(60, "final status", |s| {
        s.statuses.iter().any(|st| st == "PASSED" || st == "FAILED")
    })
    .await;
    let log = {
        let s = node.lock();
        assert_eq!(s.statuses.first().map(String::as_str), Some("RUNNING"));
        assert_eq!(
            s.statuses.last().map(String::as_str),
            Some("PASSED"),
            "{:?}",
            s.statuses
        );
        assert!(s.statuses.iter().any(|st| st == "UPLOADING"));
        assert_eq!(
            (s.injected_500, s.injected_409),
            (1, 1),
            "both failures were injected"
        );
        assert_eq!(
            s.uploads.get("a.txt").map(Vec::as_slice),
            Some(&b"art\n"[..])
        );
        assert!(s.uploads.contains_key("junit.xml"));
        assert_eq!(s.tests.len(), 1);
        assert_eq!(s.tests[0]["name"], "s");
        let reg = &s.registered[0];
        let key = reg["api_key"].as_str().unwrap_or_default().to_string();
        assert_eq!(key.len(), 48);
        assert!(
            s.auth_seen.contains(&format!("Token {key}")),
            "check-in uses the worker key"
        );
        assert!(
            s.auth_seen.iter().any(|a| a == "Token run-key"),
            "run requests use the run key"
        );
        assert!(
            s.checkin_queries[0].contains("available_runners=1"),
            "{:?}",
            s.checkin_queries
        );
        String::from_utf8_lossy(&s.console).into_owned()
    };
    // Every line exactly once despite the 500 and the partial 409.
    for i in 1..=6 {
        assert_eq!(log.matches(&format!("line-{i}\n")).count(), 1, "{log}");
    }
    assert!(log.starts_with("# To recreate this run locally"));
    assert!(log.ends_with("== result: PASSED\n"), "{log}");
    // The run directory is gone once the run completed; the key stays.
    node.wait_for(10, "run dir cleanup", |_| {
        std::fs::read_dir(dir.path().join("runs"))
            .map(|d| d.count() == 0)
            .unwrap_or(false)
    })
    .await;
    assert!(dir.path().join("worker.key").exists());
    shutdown.cancel();
    worker.await.expect("join").expect("worker");
}

#[tokio::test]
async fn worker_stops_a_run_the_node_cancelled() {
    busybox_image();
    let node = FakeNode::start().await;
    let dead = dead_url().await;
    let dir = tempfile::tempdir().expect("tmp");
    node.lock().pending_runs.push(node_rundef(
        &node,
        &dead,
        "e2ecancel",
        "echo started\nsleep 120\n",
    ));
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(jobserv_worker::run_worker_until(
        config(&node, &dead, dir.path(), "w-cancel"),
        shutdown.clone(),
    ));
    node.wait_for(30, "script start", |s| {
        String::from_utf8_lossy(&s.console).contains("started")
    })
    .await;
    node.lock().cancel = true;
    node.wait_for(30, "FAILED", |s| s.statuses.iter().any(|st| st == "FAILED"))
        .await;
    assert!(String::from_utf8_lossy(&node.lock().console).contains("run cancelled"));
    assert_eq!(containers_of("e2ecancel/1/unit").await, 0);
    shutdown.cancel();
    worker.await.expect("join").expect("worker");
}

#[tokio::test]
async fn restarted_worker_fails_its_abandoned_run_and_reaps_its_container() {
    busybox_image();
    let node = FakeNode::start().await;
    let dead = dead_url().await;
    let dir = tempfile::tempdir().expect("tmp");
    let name = "w-restart";
    // The previous life: a saved rundef with 5 acknowledged bytes, and its container still running.
    let rd = node_rundef(&node, &dead, "e2erestart", "sleep 120\n");
    node.lock().console.extend_from_slice(b"hello");
    let run_dir = dir
        .path()
        .join("runs")
        .join(jobserv_worker::runner::run_id(&rd));
    std::fs::create_dir_all(&run_dir).expect("mkdir");
    std::fs::write(
        run_dir.join("rundef.json"),
        serde_json::to_vec(&rd).expect("json"),
    )
    .expect("write");
    std::fs::write(run_dir.join("offset"), "5").expect("write");
    let docker = jobserv_worker::runner::docker::connect()
        .await
        .expect("docker");
    let labels = std::collections::HashMap::from([
        ("jobserv.run".to_string(), "e2erestart/1/unit".to_string()),
        ("jobserv.worker".to_string(), name.to_string()),
        (
            "jobserv.worker-home".to_string(),
            std::path::absolute(dir.path())
                .expect("absolute")
                .display()
                .to_string(),
        ),
    ]);
    let body = bollard::models::ContainerCreateBody {
        image: Some("busybox:latest".into()),
        cmd: Some(vec!["sleep".into(), "120".into()]),
        labels: Some(labels),
        ..Default::default()
    };
    let created = docker.create_container(None, body).await.expect("create");
    docker
        .start_container(&created.id, None)
        .await
        .expect("start");
    assert_eq!(containers_of("e2erestart/1/unit").await, 1);

    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(jobserv_worker::run_worker_until(
        config(&node, &dead, dir.path(), name),
        shutdown.clone(),
    ));
    node.wait_for(30, "FAILED", |s| s.statuses.iter().any(|st| st == "FAILED"))
        .await;
    let log = String::from_utf8_lossy(&node.lock().console).into_owned();
    assert!(
        log.starts_with("hello\n== run failed: worker restarted"),
        "{log}"
    );
    assert_eq!(containers_of("e2erestart/1/unit").await, 0);
    shutdown.cancel();
    worker.await.expect("join").expect("worker");
}
