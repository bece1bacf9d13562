//! The whole path on one machine: a real node process, a real worker (the `jobserv-worker` library, over
//! HTTPS with the cluster CA), real Docker containers from the locally built busybox image. A matrix build
//! of the examples passes; its console log, artifacts and tests are read back through the API; a failing
//! run fails the build; the rundef replays in the simulator with the same output.
mod common;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn busybox_image() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../worker/scripts/build-busybox-image.sh"
        );
        let status = std::process::Command::new("bash")
            .arg(script)
            .status()
            .expect("run build-busybox-image.sh");
        assert!(
            status.success(),
            "building the busybox image failed (is Docker running?)"
        );
    });
}

async fn wait_build(
    node: &TestNode,
    project: &str,
    n: u64,
    timeout: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, b) = node.get(&format!("/projects/{project}/builds/{n}/")).await;
        let status = b["data"]["build"]["status"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if status == "PASSED" || status == "FAILED" {
            return b["data"]["build"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "build {project}/{n} did not finish: {b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_worker_runs_example_builds_in_docker() {
    busybox_image();
    let dir = tempdir();
    let node = TestNode::start(dir.path()).await;
    let mut cfg = jobserv_worker::WorkerConfig::new(
        vec![node.url.clone()],
        "e2e-worker",
        dir.path().join("worker"),
    );
    cfg.ca_cert = Some(node.config.ca_cert.clone());
    cfg.host_tags = vec!["amd64".into()];
    cfg.concurrency = 2;
    let stop = jobserv_worker::CancellationToken::new();
    let worker = tokio::spawn(jobserv_worker::run_worker_until(cfg, stop.clone()));

    // The worker registers itself; an admin enlists it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, _) = node
            .patch("/workers/e2e-worker/", json!({"enlisted": true}))
            .await;
        if s == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "worker never registered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let hello = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/hello.yml"
    ))
    .unwrap();
    node.post("/projects/", json!({"name": "hello"})).await;
    let created = Instant::now();
    let (s, b) = node
        .post(
            "/projects/hello/builds/",
            json!({"trigger-name": "hello", "project-definition": hello}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let build = wait_build(&node, "hello", 1, Duration::from_secs(120)).await;
    assert_eq!(build["status"], "PASSED", "{build}");
    eprintln!("hello build passed {:?} after creation", created.elapsed());

    let (_, log) = node
        .get_text("/projects/hello/builds/1/runs/hello/console.log")
        .await;
    assert!(
        log.contains("simulator"),
        "the log starts with the steps to recreate the run: {log}"
    );
    assert!(
        log.contains("hello, world from run hello of build 1 (hello)"),
        "{log}"
    );
    let (s, art) = node
        .get_text("/projects/hello/builds/1/runs/hello/hello.txt")
        .await;
    assert_eq!((s, art.trim()), (200, "hello, world"));
    let (_, tests) = node.get("/projects/hello/builds/1/runs/hello/tests/").await;
    let results: usize = tests["data"]["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["results"].as_array().unwrap().len())
        .sum();
    assert_eq!(results, 2, "{tests}");

    // A failing script fails its run and the build.
    let failing = hello.replace("echo done", "echo failing on purpose; exit 3");
    let (s, _) = node
        .post(
            "/projects/hello/builds/",
            json!({"trigger-name": "hello", "project-definition": failing}),
        )
        .await;
    assert_eq!(s, 201);
    let build = wait_build(&node, "hello", 2, Duration::from_secs(120)).await;
    assert_eq!(build["status"], "FAILED");

    // The simulator replays the passing run from its .rundef.json with the same output.
    let (_, rundef) = node
        .get("/projects/hello/builds/1/runs/hello/.rundef.json")
        .await;
    let rundef_path = dir.path().join("rundef.json");
    std::fs::write(&rundef_path, serde_json::to_vec(&rundef).unwrap()).unwrap();
    let workspace = dir.path().join("sim");
    jobserv_worker::simulate(&rundef_path, &workspace)
        .await
        .expect("simulation runs");
    let sim_log = std::fs::read_to_string(workspace.join("console.log")).unwrap();
    assert!(
        sim_log.contains("hello, world from run hello of build 1 (hello)"),
        "{sim_log}"
    );
    assert_eq!(
        std::fs::read_to_string(workspace.join("archive/hello.txt"))
            .unwrap()
            .trim(),
        "hello, world"
    );

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
}
