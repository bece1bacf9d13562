//! Starts real nodes (real sled dirs, real TLS on 127.0.0.1) inside the test process.
#![allow(dead_code)]
use jobserv_node::config::NodeConfig;
use jobserv_node::node::{start, RunningNode};
use std::path::{Path, PathBuf};

pub struct TestNode {
    pub node: Option<RunningNode>,
    pub url: String,
    pub token: String,
    pub client: reqwest::Client,
    pub config: NodeConfig,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

pub fn node_config(dir: &Path, port: u16) -> NodeConfig {
    let pki = jobserv_node::tls::ensure_dev_pki(&dir.join("pki")).expect("dev pki");
    NodeConfig {
        id: 1,
        data_dir: dir.join("node-1"),
        listen: format!("127.0.0.1:{port}"),
        advertise_url: format!("https://127.0.0.1:{port}"),
        peers: vec![],
        join: None,
        tls_cert: pki.node_cert,
        tls_key: pki.node_key,
        ca_cert: pki.ca_cert,
        cluster_secret: "test-cluster-secret-0123456789abcdef".into(),
        admin_token: Some("admin-token-0123456789abcdef0123456789abcdef".into()),
        worker_timeout_secs: 30,
        requeue_lost_runs: false,
        max_artifact_bytes: 1024 * 1024,
        worker_binary: None,
        log_json: false,
    }
}

impl TestNode {
    pub async fn start(dir: &Path) -> TestNode {
        Self::start_with(node_config(dir, free_port())).await
    }

    pub async fn start_with(config: NodeConfig) -> TestNode {
        let node = start(config.clone()).await.expect("node starts");
        let client = jobserv_node::tls::client(&config.ca_cert, std::time::Duration::from_secs(60)).expect("client");
        TestNode { node: Some(node), url: config.advertise_url.clone(), token: config.admin_token.clone().unwrap_or_default(), client, config }
    }

    pub async fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            node.stop().await;
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        let node = start(self.config.clone()).await.expect("node restarts");
        self.node = Some(node);
    }

    pub fn u(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.client.get(self.u(path)).header("Authorization", format!("Token {}", self.token)).send().await.expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let r = self.client.get(self.u(path)).header("Authorization", format!("Token {}", self.token)).send().await.expect("GET");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self.client.post(self.u(path)).header("Authorization", format!("Token {}", self.token)).json(&body).send().await.expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn patch(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self.client.patch(self.u(path)).header("Authorization", format!("Token {}", self.token)).json(&body).send().await.expect("PATCH");
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

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

pub fn data_dir(t: &tempfile::TempDir) -> PathBuf {
    t.path().to_path_buf()
}
