//! JobServ's routes as JobServ's own clients call them, against a real node: the Python worker's shapes
//! (and their bad-input answers), the runner wheel, the worker script download, the simulator and its
//! server-side validation. The whole worker, unmodified, is `cluster-test/tests/legacy_worker.rs`.
mod common;
use common::*;
use serde_json::{json, Value};

const LEGACY_KEY: &str = "abcdefghijklmnopqrstuvwxyz012345";

fn legacy_host(tags: &str) -> Value {
    json!({
        "cpu_total": 4, "cpu_type": "x86_64", "mem_total": 8_000_000_000u64,
        "distro": "Debian GNU/Linux 12 (bookworm)", "api_key": LEGACY_KEY,
        "name": "py", "concurrent_runs": 1, "host_tags": tags, "surges_only": false
    })
}

/// A `GET` without any token.
async fn anonymous_get(node: &TestNode, path: &str) -> reqwest::Response {
    node.client.get(node.u(path)).send().await.expect("GET")
}

async fn as_worker(
    node: &TestNode,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = node
        .client
        .request(method, node.u(path))
        .header("Authorization", format!("Token {LEGACY_KEY}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobserv_routes_answer_in_jobserv_shapes() {
    let dir = tempdir();
    let node = TestNode::start(dir.path()).await;

    // Registration: JobServ's JSON; a missing field or a short key is named.
    let mut missing = legacy_host("a,b");
    missing.as_object_mut().expect("object").remove("cpu_type");
    let (s, b) = node.post("/workers/py/", missing).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["message"].as_str().unwrap_or("").contains("cpu_type"),
        "{b}"
    );
    let mut short = legacy_host("a");
    short["api_key"] = json!("short");
    let (s, b) = node.post("/workers/py/", short).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["message"].as_str().unwrap_or("").contains("api_key"),
        "{b}"
    );
    let (s, b) = node
        .post("/workers/py/", legacy_host(" lab1, amd64,"))
        .await;
    assert_eq!(s, 201, "{b}");
    let (_, list) = node.get("/workers/").await;
    let py = &list["data"]["workers"][0];
    assert_eq!(py["host_tags"], json!(["lab1", "amd64"]), "{list}");
    assert_eq!(py["legacy"], true, "{list}");

    // PATCH of the whole host-properties object: accepted, extra fields ignored, tags re-split.
    let mut facts = legacy_host("lab2");
    facts["something_new"] = json!(1);
    let (s, b) = as_worker(&node, reqwest::Method::PATCH, "/workers/py/", Some(facts)).await;
    assert_eq!(s, 200, "{b}");
    let (_, list) = node.get("/workers/").await;
    assert_eq!(
        list["data"]["workers"][0]["host_tags"],
        json!(["lab2"]),
        "{list}"
    );
    // A wrong type is still refused, naming the field.
    let (s, b) = as_worker(
        &node,
        reqwest::Method::PATCH,
        "/workers/py/",
        Some(json!({"mem_total": "lots"})),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(b.to_string().contains("invalid type"), "{b}");

    // Check-in: JobServ's reply shape, run-defs as strings, the version of JobServ's released worker.
    let (s, b) = as_worker(&node, reqwest::Method::GET, "/workers/py/?available_runners=1&mem_free=1&disk_free=1&load_avg_1=0.1&load_avg_5=0.1&load_avg_15=0.1", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["data"]["worker"]["version"], "b4115d43bc756112b5706dae11f6af0a",
        "{b}"
    );
    assert_eq!(b["data"]["worker"]["run-defs"], json!([]), "{b}");

    // Not enlisted: events and volume collection are refused as JobServ refuses them.
    let (s, _) = as_worker(
        &node,
        reqwest::Method::POST,
        "/workers/py/events/",
        Some(json!({"title": "t", "msg": "", "type": "info"})),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = node.patch("/workers/py/", json!({"enlisted": true})).await;
    assert_eq!(s, 200);
    let (s, b) = as_worker(
        &node,
        reqwest::Method::POST,
        "/workers/py/events/",
        Some(json!({"title": "t", "msg": "", "type": "info"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = as_worker(
        &node,
        reqwest::Method::GET,
        "/workers/py/volumes-deleted/",
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["message"].as_str().unwrap_or("").contains("directories"),
        "{b}"
    );

    // GET /worker: no script to offer a legacy worker unless configured; the binary for anyone else.
    let (s, b) = as_worker(&node, reqwest::Method::GET, "/worker", None).await;
    assert_eq!(s, 404, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap_or("")
            .contains("legacy_worker_script"),
        "{b}"
    );
    let r = anonymous_get(&node, "/worker").await;
    assert_eq!(r.headers()["content-type"], "application/octet-stream");

    // The runner wheel is a ZIP holding the handler.
    let r = anonymous_get(&node, "/runner/jobserv_runner.whl").await;
    assert_eq!(r.status().as_u16(), 200);
    let wheel = r.bytes().await.expect("bytes");
    assert!(wheel.starts_with(b"PK\x03\x04"));
    assert!(wheel
        .windows(b"jobserv_runner/handlers/simple.py".len())
        .any(|w| w == b"jobserv_runner/handlers/simple.py"));

    // DELETE: the worker itself (or an admin); once gone, its key no longer works.
    let (s, b) = as_worker(&node, reqwest::Method::DELETE, "/workers/py/", None).await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = as_worker(
        &node,
        reqwest::Method::GET,
        "/workers/py/?available_runners=1",
        None,
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_download_and_server_side_validation() {
    let dir = tempdir();
    let node = TestNode::start(dir.path()).await;

    let r = anonymous_get(&node, "/simulator").await;
    assert_eq!(r.status().as_u16(), 200);
    let version = r.headers()["x-jobserv-simulator-version"]
        .to_str()
        .expect("version")
        .to_string();
    let script = r.text().await.expect("text");
    assert!(
        script.starts_with("#!/bin/sh") && script.contains("simulate"),
        "{script}"
    );
    let r = anonymous_get(&node, &format!("/simulator?version={version}")).await;
    assert_eq!(r.status().as_u16(), 304);

    let definition: Value = serde_yaml::from_str(SIMPLE_PROJECT).expect("yaml");
    let (s, b) = node.post("/simulator-validate", definition.clone()).await;
    assert_eq!(s, 200, "{b}");
    let mut broken = definition;
    broken["triggers"][0]
        .as_object_mut()
        .expect("trigger")
        .remove("type");
    let (s, b) = node.post("/simulator-validate", broken).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["message"].as_str().unwrap_or("").contains("type"), "{b}");
    let r = node
        .client
        .post(node.u("/simulator-validate"))
        .body("not json")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
}

const ONE_RUN: &str = r#"
timeout: 5
triggers:
  - name: manual
    type: simple
    runs:
      - name: only
        container: busybox:latest
        host-tag: amd64
        script: s
  - name: other
    type: simple
    runs:
      - name: only
        container: busybox:latest
        host-tag: amd64
        script: s
scripts:
  s: |
    #!/bin/sh
    true
"#;

/// Starts a build of `trigger`; returns its number.
async fn start_build(node: &TestNode, trigger: &str) -> u64 {
    let (s, b) = node
        .post(
            "/projects/shapes/builds/",
            json!({"trigger-name": trigger, "project-definition": ONE_RUN}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    b["data"]["build_id"].as_u64().expect("build_id")
}

/// Takes the next queued run as worker `w1` and reports it PASSED.
async fn pass_next_run(node: &TestNode) {
    let rundef = take_run(node, "w1").await;
    let r = node
        .client
        .post(rundef["run_url"].as_str().expect("run_url"))
        .header(
            "Authorization",
            format!("Token {}", rundef["api_key"].as_str().expect("key")),
        )
        .header("X-RUN-STATUS", "PASSED")
        .body("ok\n")
        .send()
        .await
        .expect("report");
    assert_eq!(r.status().as_u16(), 200);
}

/// Timestamps in JobServ's ISO 8601 format, JobServ's run keys beside ours, and `builds/latest/` as JobServ
/// means it: the newest PASSED build (of a trigger with `?trigger_name=`); `?all=1` the newest of any status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_and_run_shapes_and_latest_follow_jobserv() {
    let dir = tempdir();
    let node = TestNode::start(dir.path()).await;
    let (s, _) = node.post("/projects/", json!({"name": "shapes"})).await;
    assert_eq!(s, 201);
    register_and_enlist_worker(&node, "w1", 1).await;
    let first = start_build(&node, "manual").await;
    pass_next_run(&node).await;
    let second = start_build(&node, "other").await;
    pass_next_run(&node).await;
    let third = start_build(&node, "manual").await; // stays QUEUED: nobody checks in

    let (s, b) = node
        .get(&format!("/projects/shapes/builds/{second}/"))
        .await;
    assert_eq!(s, 200, "{b}");
    let build = &b["data"]["build"];
    let created = build["created"].as_str().expect("created is a string");
    let created_ms = jobserv_protocol::time::ms_from_iso(created).expect("ISO 8601");
    assert!(created.ends_with("+00:00"), "{created}");
    assert!(
        build["completed"]
            .as_str()
            .and_then(jobserv_protocol::time::ms_from_iso)
            .expect("completed")
            >= created_ms
    );
    assert_eq!(
        build["runs_url"],
        format!("{}/projects/shapes/builds/{second}/runs/", node.url)
    );
    let run = &build["runs"][0];
    assert_eq!(run["worker_name"], "w1", "{run}");
    assert_eq!(run["build"], second, "{run}");
    assert!(run["duration_seconds"].is_u64(), "{run}");
    assert!(
        run["started"]
            .as_str()
            .and_then(jobserv_protocol::time::ms_from_iso)
            .is_some(),
        "{run}"
    );

    let (_, list) = node.get("/projects/shapes/builds/").await;
    let builds = list["data"]["builds"].as_array().expect("builds");
    assert_eq!(builds.len(), 3);
    assert!(
        builds
            .iter()
            .all(|b| b["runs"].as_array().is_some_and(|r| r.len() == 1)),
        "{list}"
    );

    let latest = |q: &'static str| {
        let node = &node;
        async move {
            let (s, b) = node
                .get(&format!("/projects/shapes/builds/latest/{q}"))
                .await;
            (s, b["data"]["build"]["build_id"].as_u64())
        }
    };
    assert_eq!(latest("").await, (200, Some(second)));
    assert_eq!(latest("?trigger_name=manual").await, (200, Some(first)));
    assert_eq!(latest("?all=1").await, (200, Some(third)));
    assert_eq!(latest("?trigger_name=nope").await.0, 404);

    // /health/runs/ in JobServ's shape (under `health`).
    let (s, h) = node.get("/health/runs/").await;
    assert_eq!(s, 200, "{h}");
    let health = &h["data"]["health"];
    assert_eq!(health["statuses"]["PASSED"], 2, "{h}");
    assert_eq!(health["QUEUED"][0]["build"], third, "{h}");
    assert_eq!(health["QUEUED"][0]["run"], "only", "{h}");
    assert_eq!(health["RUNNING"], json!({}), "{h}");
}

/// JobServ's liveness path answers like `/health`, without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_served() {
    let dir = tempdir();
    let node = TestNode::start(dir.path()).await;
    let r = anonymous_get(&node, "/healthz").await;
    assert_eq!(r.status().as_u16(), 200);
}
