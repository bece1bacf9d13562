//! The worker side of the protocol, spoken over real HTTPS to a real node: registration, enlistment,
//! long-poll check-in, console appends with offsets (retries, gaps), fencing, cancel, tests, artifacts,
//! and a restart of the node on the same data dir with everything intact.
mod common;
use common::*;
use serde_json::{json, Value};

async fn check_in(node: &TestNode, name: &str, slots: u32, wait: u32) -> Value {
    let r = node
        .client
        .get(node.u(&format!("/workers/{name}/?available_runners={slots}&load_avg_1=0.5&mem_free=1000&disk_free=1000&wait={wait}")))
        .header("Authorization", format!("Token {WORKER_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json::<Value>().await.unwrap()["data"]["worker"].clone()
}

async fn append(
    node: &TestNode,
    rundef: &Value,
    offset: u64,
    bytes: &str,
    status: Option<&str>,
) -> reqwest::Response {
    let mut req = node
        .client
        .post(rundef["run_url"].as_str().unwrap())
        .header(
            "Authorization",
            format!("Token {}", rundef["api_key"].as_str().unwrap()),
        )
        .header("X-OFFSET", offset.to_string())
        .body(bytes.to_string());
    if let Some(s) = status {
        req = req.header("X-RUN-STATUS", s);
    }
    req.send().await.unwrap()
}

async fn setup(node: &TestNode) {
    let (s, _) = node.post("/projects/", json!({"name": "demo"})).await;
    assert_eq!(s, 201);
    let (s, body) = node.post("/projects/demo/builds/", json!({"trigger-name": "manual", "project-definition": SIMPLE_PROJECT, "secrets": {"token": "hunter2"}})).await;
    assert_eq!(s, 201, "{body}");
}

#[tokio::test]
async fn worker_runs_a_build_to_completion_and_state_survives_restart() {
    let dir = tempdir();
    let mut node = TestNode::start(dir.path()).await;
    setup(&node).await;

    // A wrong key is refused; an unenlisted worker gets nothing.
    let r = node
        .client
        .get(node.u("/workers/w1/?available_runners=1"))
        .header("Authorization", "Token wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    register_and_enlist_worker(&node, "w1", 2).await;
    let bad = node
        .client
        .get(node.u("/workers/w1/?available_runners=1"))
        .header("Authorization", "Token wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);

    let reply = check_in(&node, "w1", 2, 0).await;
    let defs = reply["run-defs"].as_array().unwrap().clone();
    assert_eq!(defs.len(), 2, "two free slots, three queued runs");
    assert_eq!(defs[0]["env"]["H_BUILD"], "1");
    assert_eq!(defs[0]["env"]["GREETING"], "hello");
    assert_eq!(defs[0]["secrets"]["token"], "hunter2");
    assert!(!defs[0]["run_urls"].as_array().unwrap().is_empty());

    // Console with offsets: append, retry (idempotent), overlap, gap.
    let d = &defs[0];
    let r = append(&node, d, 0, "hello\n", Some("RUNNING")).await;
    assert_eq!(r.status().as_u16(), 200);
    let r = append(&node, d, 0, "hello\n", None).await; // a retry after a lost ack
    assert_eq!(r.status().as_u16(), 200);
    let r = append(&node, d, 3, "lo\nworld\n", None).await; // overlapping retry with new bytes
    assert_eq!(r.headers()["X-OFFSET"], "12");
    let r = append(&node, d, 40, "gap\n", None).await;
    assert_eq!(r.status().as_u16(), 409);
    assert_eq!(r.headers()["X-OFFSET"], "12");
    // Tests and an artifact through a signed URL; a `..` path is refused.
    let r = node.client.post(format!("{}tests/", d["run_url"].as_str().unwrap()))
        .header("Authorization", format!("Token {}", d["api_key"].as_str().unwrap()))
        .json(&json!({"name": "unit-tests", "status": "PASSED", "results": [{"name": "t1", "status": "PASSED"}]}))
        .send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = node
        .client
        .post(format!("{}create_signed", d["run_url"].as_str().unwrap()))
        .header(
            "Authorization",
            format!("Token {}", d["api_key"].as_str().unwrap()),
        )
        .json(&json!({"paths": ["out/hello.txt"]}))
        .send()
        .await
        .unwrap();
    let urls: Value = r.json().await.unwrap();
    let put_url = urls["data"]["urls"]["out/hello.txt"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        node.client
            .put(&put_url)
            .body("artifact bytes")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        node.client
            .put(put_url.replace("sig=", "sig=0"))
            .body("x")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
    let r = node
        .client
        .post(format!("{}create_signed", d["run_url"].as_str().unwrap()))
        .header(
            "Authorization",
            format!("Token {}", d["api_key"].as_str().unwrap()),
        )
        .json(&json!({"paths": ["../../etc/passwd"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    let r = append(&node, d, 12, "done\n", Some("PASSED")).await;
    assert_eq!(r.status().as_u16(), 200);
    // The final chunk retried after completion is still acknowledged, without duplication.
    let r = append(&node, d, 12, "done\n", Some("PASSED")).await;
    assert_eq!(r.status().as_u16(), 200);
    let name0 = d["run"].as_str().unwrap().to_string();
    let (_, log) = node
        .get_text(&format!("/projects/demo/builds/1/runs/{name0}/console.log"))
        .await;
    assert_eq!(log, "hello\nworld\ndone\n");

    // Cancel the second run: the worker's next append is told to stop.
    let d1 = &defs[1];
    let name1 = d1["run"].as_str().unwrap().to_string();
    let (s, _) = node
        .post(
            &format!("/projects/demo/builds/1/runs/{name1}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let r = append(&node, d1, 0, "working\n", None).await;
    assert_eq!(
        r.headers()
            .get("X-JOBSERV-CANCEL")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    let r = append(&node, d1, 8, "", Some("PASSED")).await;
    assert_eq!(r.status().as_u16(), 200);
    let (_, run1) = node
        .get(&format!("/projects/demo/builds/1/runs/{name1}/"))
        .await;
    assert_eq!(
        run1["data"]["run"]["status"], "FAILED",
        "a cancelled run never passes"
    );

    // The third run: long-poll gets it at once.
    let started = std::time::Instant::now();
    let reply = check_in(&node, "w1", 1, 10).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let d2 = reply["run-defs"][0].clone();
    assert_eq!(
        append(&node, &d2, 0, "", Some("FAILED"))
            .await
            .status()
            .as_u16(),
        200
    );
    let (_, build) = node.get("/projects/demo/builds/1/").await;
    assert_eq!(build["data"]["build"]["status"], "FAILED");

    // A long-poll with nothing queued returns empty after its wait.
    let reply = check_in(&node, "w1", 1, 1).await;
    assert!(reply["run-defs"].as_array().unwrap().is_empty());

    // Restart on the same data dir: everything is still there.
    node.restart().await;
    let (_, log_after) = node
        .get_text(&format!("/projects/demo/builds/1/runs/{name0}/console.log"))
        .await;
    assert_eq!(log_after, "hello\nworld\ndone\n");
    let (_, run0) = node
        .get(&format!("/projects/demo/builds/1/runs/{name0}/"))
        .await;
    assert_eq!(run0["data"]["run"]["status"], "PASSED");
    assert_eq!(run0["data"]["run"]["tests"][0]["name"], "unit-tests");
    let (s, art) = node
        .get_text(&format!(
            "/projects/demo/builds/1/runs/{name0}/out/hello.txt"
        ))
        .await;
    assert_eq!((s, art.as_str()), (200, "artifact bytes"));
    let (_, build) = node.get("/projects/demo/builds/1/").await;
    assert_eq!(build["data"]["build"]["status"], "FAILED");
    // Rundef for a plain user: no run key, secret values removed.
    let (_, rundef) = node
        .get(&format!(
            "/projects/demo/builds/1/runs/{name0}/.rundef.json"
        ))
        .await;
    assert!(rundef["api_key"].is_null());
    assert_eq!(rundef["secrets"]["token"], "");
    // Build numbering continues after the restart.
    let (s, body) = node
        .post("/projects/demo/builds/", json!({"trigger-name": "manual"}))
        .await;
    assert_eq!((s, body["data"]["build_id"].as_u64()), (201, Some(2)));
    node.stop().await;
}

#[tokio::test]
async fn a_lost_worker_is_fenced_and_its_run_fails_with_a_reason() {
    let dir = tempdir();
    let mut config = node_config(dir.path(), free_port());
    // Short, but not so short that a slow first commit looks like a lost worker.
    config.worker_timeout_secs = 5;
    let mut node = TestNode::start_with(config).await;
    setup(&node).await;
    register_and_enlist_worker(&node, "w1", 2).await;
    let reply = check_in(&node, "w1", 1, 0).await;
    let d = reply["run-defs"][0].clone();
    assert_eq!(
        append(&node, &d, 0, "started\n", None)
            .await
            .status()
            .as_u16(),
        200
    );
    let name = d["run"].as_str().unwrap().to_string();
    // Stop checking in; the monitor releases the run after the timeout.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, run) = node
            .get(&format!("/projects/demo/builds/1/runs/{name}/"))
            .await;
        if run["data"]["run"]["status"] == "FAILED" {
            assert!(run["data"]["run"]["failure_reason"]
                .as_str()
                .unwrap()
                .contains("stopped checking in"));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "run was not released: {run}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The worker comes back: its key for that run is refused.
    let r = append(&node, &d, 8, "late\n", Some("PASSED")).await;
    assert_eq!(r.status().as_u16(), 403);
    let (_, log) = node
        .get_text(&format!("/projects/demo/builds/1/runs/{name}/console.log"))
        .await;
    assert_eq!(log, "started\n");
    node.stop().await;
}
