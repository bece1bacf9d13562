//! The `jobserv` CLI as a user runs it: the built binary as a process, against the example projects offline
//! and against a real `jobserv-node` process (real TLS, real sled). Where a build needs a worker, the test
//! speaks the worker protocol itself over HTTPS, as `tests/worker_protocol.rs` does.
mod common;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

/// Upper bound for a followed command to finish once its build or run has completed.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// The `jobserv` binary (crate `jobserv-cli`), built beside `jobserv-node` by `cargo test --workspace`.
fn cli_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_jobserv-node")).with_file_name("jobserv");
    assert!(
        path.is_file(),
        "{} not built: run the workspace's tests (cargo test --workspace) or cargo build -p jobserv-cli",
        path.display()
    );
    path
}

/// A `jobserv` command with no connection settings inherited from the caller's environment.
fn cli() -> std::process::Command {
    let mut cmd = std::process::Command::new(cli_binary());
    for var in [
        "JOBSERV_URL",
        "JOBSERV_TOKEN",
        "JOBSERV_CA",
        "JOBSERV_CLUSTER_JSON",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// A `jobserv` command pointed at `node` through the environment, as a user's shell would be.
fn cli_for(node: &TestNode) -> std::process::Command {
    let mut cmd = cli();
    cmd.env("JOBSERV_URL", &node.url)
        .env("JOBSERV_TOKEN", &node.token)
        .env("JOBSERV_CA", &node.config.ca_cert);
    cmd
}

fn run(mut cmd: std::process::Command, args: &[&str]) -> Output {
    cmd.args(args).output().expect("run jobserv")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and asserts success; returns stdout.
fn ok(cmd: std::process::Command, args: &[&str]) -> String {
    let o = run(cmd, args);
    assert!(
        o.status.success(),
        "jobserv {args:?} failed ({:?}):\n{}{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// A `jobserv` process running in the background (a follower), read line by line as it prints.
struct Background {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    seen: Vec<String>,
}

fn spawn(node: &TestNode, args: &[&str]) -> Background {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = tokio::process::Command::from(cli_for(node));
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn jobserv");
    let out = child.stdout.take().expect("piped stdout");
    Background {
        child,
        lines: tokio::io::BufReader::new(out).lines(),
        seen: Vec::new(),
    }
}

impl Background {
    /// Waits until the process prints a line containing `text`.
    async fn expect_line(&mut self, text: &str) {
        let wait = async {
            while let Some(line) = self.lines.next_line().await.expect("read stdout") {
                let found = line.contains(text);
                self.seen.push(line);
                if found {
                    return true;
                }
            }
            false
        };
        let found = tokio::time::timeout(CHILD_TIMEOUT, wait)
            .await
            .unwrap_or(false);
        assert!(found, "no line with {text:?} in {:#?}", self.seen);
    }

    /// Waits for the exit; returns the exit code and every stdout line.
    async fn finish(mut self) -> (Option<i32>, Vec<String>) {
        let rest = async {
            while let Some(line) = self.lines.next_line().await.expect("read stdout") {
                self.seen.push(line);
            }
            self.child.wait().await.expect("wait for jobserv")
        };
        let status = tokio::time::timeout(CHILD_TIMEOUT, rest)
            .await
            .expect("jobserv did not finish");
        (status.code(), self.seen)
    }
}

fn write_project(dir: &Path) -> PathBuf {
    let path = dir.join("project.yml");
    std::fs::write(&path, SIMPLE_PROJECT).expect("write project.yml");
    path
}

// ---- offline: validate ----

#[test]
fn validate_accepts_every_example() {
    let mut seen = 0;
    for entry in std::fs::read_dir(examples_dir()).expect("examples/") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yml") {
            continue;
        }
        let out = ok(cli(), &["validate", path.to_str().expect("utf-8 path")]);
        assert!(
            out.contains("valid") && out.contains("trigger "),
            "{}: {out}",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 3, "expected the example projects, found {seen}");
}

#[test]
fn validate_prints_the_runs_each_trigger_creates() {
    let dir = tempdir();
    let out = ok(
        cli(),
        &[
            "validate",
            write_project(dir.path()).to_str().expect("path"),
        ],
    );
    assert!(out.contains("trigger manual (simple): 3 runs"), "{out}");
    assert!(
        out.contains("lint-a") && out.contains("lint-b") && out.contains("unit"),
        "{out}"
    );
}

#[test]
fn validate_reports_line_and_column_of_malformed_yaml() {
    let dir = tempdir();
    let path = dir.path().join("broken.yml");
    std::fs::write(
        &path,
        "timeout: 5\ntriggers:\n  - name: a\n    type: simple\n    runs: [\n",
    )
    .expect("write");
    let o = run(cli(), &["validate", path.to_str().expect("path")]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("broken.yml") && err.contains("line 6, column 1"),
        "{err}"
    );
}

#[test]
fn validate_names_the_path_of_an_unknown_key() {
    let dir = tempdir();
    let path = dir.path().join("typo.yml");
    std::fs::write(
        &path,
        SIMPLE_PROJECT.replacen("host-tag: amd64", "host-tagg: amd64", 1),
    )
    .expect("write");
    let o = run(cli(), &["validate", path.to_str().expect("path")]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("triggers/manual/runs/0/host-tagg: unknown key"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn missing_server_is_a_usage_error() {
    let o = run(cli(), &["project", "list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no server given"), "{}", stderr(&o));
}

// ---- against a real node ----

#[tokio::test]
async fn projects_builds_and_workers_through_the_cli() {
    let dir = tempdir();
    let node = TestNode::start(dir.path()).await;
    let definition = write_project(dir.path());
    let definition = definition.to_str().expect("path");

    let out = ok(cli_for(&node), &["project", "create", "demo"]);
    assert!(out.contains("created project demo"), "{out}");
    assert!(ok(cli_for(&node), &["project", "list"]).contains("demo"));

    let out = ok(
        cli_for(&node),
        &[
            "build",
            "create",
            "demo",
            "--trigger",
            "manual",
            "--definition",
            definition,
            "--param",
            "GREETING=hi",
            "--reason",
            "cli test",
        ],
    );
    assert!(
        out.starts_with("build 1: https://127.0.0.1:") && out.contains("/projects/demo/builds/1/"),
        "{out}"
    );
    let out = ok(cli_for(&node), &["build", "list", "demo"]);
    assert!(
        out.lines().next().is_some_and(|h| h.starts_with("BUILD")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("1 ")
            && l.contains("QUEUED")
            && l.contains("manual")
            && l.contains("cli test")),
        "{out}"
    );
    let out = ok(cli_for(&node), &["build", "show", "demo", "latest"]);
    assert!(
        out.contains("lint-a") && out.contains("no_matching_worker"),
        "{out}"
    );

    // Without a definition the server reuses the latest one.
    assert!(ok(
        cli_for(&node),
        &["build", "create", "demo", "--trigger", "manual"]
    )
    .starts_with("build 2: "));

    // A trigger the definition lacks is refused before anything reaches the server.
    let o = run(
        cli_for(&node),
        &[
            "build",
            "create",
            "demo",
            "--trigger",
            "nightly",
            "--definition",
            definition,
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no such trigger (it has: manual)"),
        "{}",
        stderr(&o)
    );

    let out = ok(cli_for(&node), &["worker", "list"]);
    assert_eq!(
        out.trim(),
        "NAME  ENLISTED  ONLINE  FREE  LOAD  HOST-TAGS  DISTRO  VERSION"
    );
    register_worker(&node, "w1", 3).await;
    assert!(ok(cli_for(&node), &["worker", "enlist", "w1"]).contains("enlisted worker w1"));
    let out = ok(cli_for(&node), &["worker", "list"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("w1") && l.contains("true") && l.contains("amd64")),
        "{out}"
    );
    let out = ok(cli_for(&node), &["--json", "worker", "list"]);
    let parsed: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(parsed["workers"][0]["enlisted"], true);

    let out = ok(
        cli_for(&node),
        &[
            "trigger",
            "create",
            "demo",
            "--type",
            "simple",
            "--secret",
            "token=hunter2",
            "--queue-priority",
            "-1",
        ],
    );
    assert!(out.contains("created trigger"), "{out}");
    let out = ok(cli_for(&node), &["trigger", "list", "demo"]);
    assert!(
        out.contains("simple") && out.contains("token") && !out.contains("hunter2"),
        "{out}"
    );

    let out = ok(cli_for(&node), &["cluster", "status"]);
    assert!(out.starts_with("leader: 1  term: "), "{out}");
    assert!(out.contains("leader") && out.contains(&node.url), "{out}");
}

#[tokio::test]
async fn server_errors_show_status_and_message_and_dead_urls_are_skipped() {
    let dir = tempdir();
    let node = TestNode::start(dir.path()).await;

    let o = run(cli_for(&node), &["project", "show", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("HTTP 404: project nope not found"),
        "{}",
        stderr(&o)
    );

    let mut bad_token = cli_for(&node);
    bad_token.env("JOBSERV_TOKEN", "wrong");
    let o = run(bad_token, &["project", "list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("HTTP 401"), "{}", stderr(&o));

    // Fail-over: the first URL refuses connections, the second is the node.
    let dead = format!("https://127.0.0.1:{}", free_port());
    let servers = format!("{dead},{}", node.url);
    let mut cmd = cli();
    cmd.args(["--server", &servers, "--token", &node.token, "--ca-cert"])
        .arg(&node.config.ca_cert);
    assert!(ok(cmd, &["project", "create", "failover"]).contains("created project failover"));

    // The same settings from a cluster.json, as `jobserv-node dev` and `cluster-test up` write it.
    let cluster = json!({"nodes": [{"id": 1, "url": dead}, {"id": 2, "url": node.url}], "workers": [],
                         "admin_token": node.token, "ca_cert": node.config.ca_cert});
    let cluster_json = dir.path().join("cluster.json");
    std::fs::write(&cluster_json, cluster.to_string()).expect("cluster.json");
    let mut cmd = cli();
    cmd.arg("--cluster-json").arg(&cluster_json);
    assert!(ok(cmd, &["project", "list"]).contains("failover"));
}

#[tokio::test]
async fn following_a_build_and_its_log_ends_with_the_build_result() {
    let dir = tempdir();
    let node = TestNode::start(dir.path()).await;
    let definition = write_project(dir.path());
    ok(cli_for(&node), &["project", "create", "demo"]);
    register_worker(&node, "w1", 3).await;
    ok(cli_for(&node), &["worker", "enlist", "w1"]);

    // Build 1: every run passes; each change is shown as it happens.
    let mut follower = spawn(
        &node,
        &[
            "build",
            "create",
            "demo",
            "--trigger",
            "manual",
            "--definition",
            definition.to_str().expect("path"),
            "--follow",
        ],
    );
    follower.expect_line("build 1: https://").await;
    let mut runs = take_runs(&node, 3).await;
    runs.sort_by_key(|d| d["env"]["H_RUN"] != "unit"); // unit first: its log is followed below
    let mut log = spawn(&node, &["run", "log", "demo", "1", "unit", "--follow"]);
    report(&node, &runs[0], 0, "step one\n", "RUNNING").await;
    follower.expect_line("unit: RUNNING").await;
    log.expect_line("step one").await;
    for def in &runs[1..] {
        report(&node, def, 0, "step one\n", "RUNNING").await;
    }
    for def in &runs {
        report(&node, def, 9, "step two\n", "PASSED").await;
    }
    let (code, lines) = follower.finish().await;
    assert_eq!(code, Some(0), "{lines:#?}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("[build 1] PASSED"),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("lint-a: PASSED, lint-b: PASSED, unit: PASSED")),
        "{lines:#?}"
    );
    let (code, lines) = log.finish().await;
    assert_eq!(code, Some(0));
    assert_eq!(lines, ["step one", "step two"]);

    assert_eq!(
        ok(cli_for(&node), &["run", "log", "demo", "latest", "unit"]),
        "step one\nstep two\n"
    );
    let out = ok(cli_for(&node), &["run", "show", "demo", "1", "lint-a"]);
    assert!(out.contains("PASSED") && out.contains("w1"), "{out}");
    let rundef: Value =
        serde_json::from_str(&ok(cli_for(&node), &["run", "rundef", "demo", "1", "unit"]))
            .expect("rundef JSON");
    assert_eq!(rundef["env"]["H_RUN"], "unit");
    assert!(ok(
        cli_for(&node),
        &["build", "promote", "demo", "1", "--name", "release-1"]
    )
    .contains("as release-1"));

    // Build 2: one run fails, so following it exits 1 and says why.
    ok(
        cli_for(&node),
        &["build", "create", "demo", "--trigger", "manual"],
    );
    let mut follower = spawn(
        &node,
        &["build", "follow", "demo", "2", "--interval", "0.2"],
    );
    follower.expect_line("QUEUED").await;
    let runs = take_runs(&node, 3).await;
    for (i, def) in runs.iter().enumerate() {
        report(
            &node,
            def,
            0,
            "done\n",
            if i == 0 { "FAILED" } else { "PASSED" },
        )
        .await;
    }
    let (code, lines) = follower.finish().await;
    assert_eq!(code, Some(1), "{lines:#?}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("[build 2] FAILED"),
        "{lines:#?}"
    );
}

// ---- the worker side, spoken directly ----

/// Checks in as `w1` until `n` run definitions were handed out.
async fn take_runs(node: &TestNode, n: usize) -> Vec<Value> {
    let mut defs = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while defs.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {n} runs assigned",
            defs.len()
        );
        let url = node.u(&format!(
            "/workers/w1/?available_runners={}&wait=5",
            n - defs.len()
        ));
        let r = node
            .client
            .get(url)
            .header("Authorization", format!("Token {WORKER_KEY}"))
            .send()
            .await
            .expect("check in");
        assert_eq!(r.status().as_u16(), 200);
        let body: Value = r.json().await.expect("check-in JSON");
        defs.extend(
            body["data"]["worker"]["run-defs"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
    }
    defs
}

async fn report(node: &TestNode, def: &Value, offset: u64, text: &str, status: &str) {
    let r = node
        .client
        .post(def["run_url"].as_str().expect("run_url"))
        .header(
            "Authorization",
            format!("Token {}", def["api_key"].as_str().expect("api_key")),
        )
        .header("X-OFFSET", offset.to_string())
        .header("X-RUN-STATUS", status)
        .body(text.to_string())
        .send()
        .await
        .expect("run update");
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
}
