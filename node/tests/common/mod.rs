//! Starts real nodes (real sled dirs, real TLS on 127.0.0.1) inside the test process.
#![allow(dead_code)]
use jobserv_node::config::NodeConfig;
use std::path::{Path, PathBuf};

pub mod artifacts;
pub mod webdriver;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn node_config(dir: &Path, port: u16) -> NodeConfig {
    let pki = jobserv_node::tls::ensure_dev_pki(&dir.join("pki")).expect("dev pki");
    let mut config = NodeConfig::local(
        1,
        dir.join("node-1"),
        port,
        &pki,
        "test-cluster-secret-0123456789abcdef".into(),
        Some("admin-token-0123456789abcdef0123456789abcdef".into()),
    );
    config.max_artifact_bytes = 1024 * 1024;
    config
}

/// A real `jobserv-node` process on 127.0.0.1 with its own sled dir and TLS.
pub struct TestNode {
    pub child: Option<std::process::Child>,
    pub url: String,
    pub token: String,
    pub client: reqwest::Client,
    pub config: NodeConfig,
    pub config_path: PathBuf,
}

impl TestNode {
    pub async fn start(dir: &Path) -> TestNode {
        Self::start_with(node_config(dir, free_port())).await
    }

    pub async fn start_with(config: NodeConfig) -> TestNode {
        std::fs::create_dir_all(&config.data_dir).expect("data dir");
        let config_path = config.data_dir.with_extension("toml");
        std::fs::write(&config_path, config.to_toml()).expect("config file");
        let client = jobserv_node::tls::client(&config.ca_cert, std::time::Duration::from_secs(60))
            .expect("client");
        let mut node = TestNode {
            child: None,
            url: config.advertise_url.clone(),
            token: config.admin_token.clone().unwrap_or_default(),
            client,
            config,
            config_path,
        };
        node.spawn().await;
        node
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.data_dir.with_extension("log"))
            .expect("log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_jobserv-node"))
            .args(["run", "--config"])
            .arg(&self.config_path)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn jobserv-node");
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Waits until *this* node answers an admin-authenticated `GET /cluster/?stale=1` naming a leader: it
    /// serves, the admin token is in its applied state, and it knows a leader. Its own view (`stale=1`), so
    /// it answers at once; what the cluster acknowledged is for the test's (linearizable) reads to check.
    pub async fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let last = match self
                .client
                .get(self.u("/cluster/?stale=1"))
                .header("Authorization", format!("Token {}", self.token))
                .send()
                .await
            {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    if status == 200 && body["data"]["leader"].as_u64().is_some() {
                        return;
                    }
                    format!("HTTP {status} {body}")
                }
                Err(e) => e.to_string(),
            };
            assert!(
                std::time::Instant::now() < deadline,
                "node at {} not ready within 60 s (last: {last}); see {}",
                self.url,
                self.config.data_dir.with_extension("log").display()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// This node's own Raft figures (`GET /cluster/?stale=1`, its local view): `leader`, `this_node`,
    /// `term`, `last_applied`, `storage_format`, …
    pub async fn own_view(&self) -> serde_json::Value {
        let (s, body) = self.get("/cluster/?stale=1").await;
        assert_eq!(s, 200, "GET /cluster/?stale=1 on {}: {body}", self.url);
        body["data"].clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    pub async fn stop(&mut self) {
        self.terminate();
    }

    pub async fn restart(&mut self) {
        self.terminate();
        self.spawn().await;
    }

    pub async fn restart_after_kill(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// SIGKILL, then the data dir is wiped (a replaced disk) and the node restarts under the same id.
    pub async fn wipe_and_restart(&mut self) {
        self.kill();
        std::fs::remove_dir_all(&self.config.data_dir).expect("wipe data dir");
        std::fs::create_dir_all(&self.config.data_dir).expect("data dir");
        self.spawn().await;
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

impl TestNode {
    pub fn u(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .client
            .get(self.u(path))
            .header("Authorization", format!("Token {}", self.token))
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(self.u(path))
            .header("Authorization", format!("Token {}", self.token))
            .send()
            .await
            .expect("GET");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(self.u(path))
            .header("Authorization", format!("Token {}", self.token))
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn patch(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .client
            .patch(self.u(path))
            .header("Authorization", format!("Token {}", self.token))
            .json(&body)
            .send()
            .await
            .expect("PATCH");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }
}

pub const SIMPLE_PROJECT: &str = r#"
timeout: 5
params:
  GREETING: hello
triggers:
  - name: manual
    type: simple
    runs:
      - name: unit
        container: busybox:latest
        host-tag: amd64
        script: greet
      - name: lint-{loop}
        container: busybox:latest
        host-tag: amd64
        script: greet
        loop-on:
          - param: FLAVOUR
            values: [a, b]
scripts:
  greet: |
    #!/bin/sh -e
    echo "$GREETING from $H_RUN"
"#;

/// `unit` can run on an `amd64` worker; `lint-a` and `lint-b` wait for a host tag nobody has.
pub const UI_PROJECT: &str = r#"
timeout: 5
triggers:
  - name: manual
    type: simple
    runs:
      - name: unit
        container: busybox:latest
        host-tag: amd64
        script: s
      - name: lint-{loop}
        container: busybox:latest
        host-tag: nowhere
        script: s
        loop-on:
          - param: FLAVOUR
            values: [a, b]
scripts:
  s: |
    #!/bin/sh
    true
"#;

/// Checks in once as worker `worker` (key [`WORKER_KEY`]) with one free slot; the run definition it got
/// (`Null` when none).
pub async fn take_run(node: &TestNode, worker: &str) -> serde_json::Value {
    let reply: serde_json::Value = node
        .client
        .get(node.u(&format!("/workers/{worker}/?available_runners=1")))
        .header("Authorization", format!("Token {WORKER_KEY}"))
        .send()
        .await
        .expect("check in")
        .json()
        .await
        .expect("check-in reply");
    reply["data"]["worker"]["run-defs"][0].clone()
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

pub fn data_dir(t: &tempfile::TempDir) -> PathBuf {
    t.path().to_path_buf()
}

/// The key every hand-spoken test worker registers with.
pub const WORKER_KEY: &str = "worker-key-0123456789abcdef0123456789abcdef";

/// Registers worker `name` (tag `amd64`) over the real protocol; not yet enlisted.
pub async fn register_worker(node: &TestNode, name: &str, concurrent_runs: u32) {
    let reg = serde_json::json!({"api_key": WORKER_KEY, "distro": "debian", "mem_total": 1u64 << 30, "cpu_total": 2,
                                 "cpu_type": "x86_64", "concurrent_runs": concurrent_runs, "host_tags": ["amd64"]});
    let r = node
        .client
        .post(node.u(&format!("/workers/{name}/")))
        .json(&reg)
        .send()
        .await
        .expect("register");
    assert_eq!(r.status().as_u16(), 201);
}

/// Registers worker `name` and enlists it with the admin token.
pub async fn register_and_enlist_worker(node: &TestNode, name: &str, concurrent_runs: u32) {
    register_worker(node, name, concurrent_runs).await;
    let (s, body) = node
        .patch(
            &format!("/workers/{name}/"),
            serde_json::json!({"enlisted": true}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
}

/// Three real node processes forming one cluster (`peers` 1..=3 on free ports), each config adjusted by
/// `tweak` before start; returns once every node is ready.
pub async fn three_nodes(dir: &Path, tweak: impl Fn(&mut NodeConfig)) -> [TestNode; 3] {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers: Vec<jobserv_node::config::Peer> = (0..3)
        .map(|i| jobserv_node::config::Peer {
            id: i as u64 + 1,
            url: format!("https://127.0.0.1:{}", ports[i]),
        })
        .collect();
    let configs: Vec<_> = (0..3)
        .map(|i| {
            let mut c = node_config(dir, ports[i]);
            c.id = i as u64 + 1;
            c.data_dir = dir.join(format!("node-{}", i + 1));
            c.peers = peers.clone();
            tweak(&mut c);
            c
        })
        .collect();
    let (a, b, c) = tokio::join!(
        TestNode::start_with(configs[0].clone()),
        TestNode::start_with(configs[1].clone()),
        TestNode::start_with(configs[2].clone())
    );
    [a, b, c]
}
