//! Many completed builds, fast: builds created through the API, their runs taken by one worker speaking the
//! real protocol (check-in with many free runners), each completed with a 4 KiB console log, a 16 KiB
//! artifact of its own and, when asked, two test results. Used by `retention-disk` and the backup bench
//! and test.
use crate::harness::call;
use crate::local_cluster::LocalCluster;
use anyhow::{ensure, Context};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

/// Builds are made this many at a time.
pub const BATCH: usize = 50;

/// Who makes the builds: the project, the worker that takes their runs, the host tag tying them.
pub struct Fill<'a> {
    pub project: &'a str,
    pub worker: &'a str,
    pub key: &'a str,
    pub host_tag: &'a str,
    /// Report two test results per run (one PASSED, one FAILED).
    pub tests: bool,
}

/// Registers and enlists the worker the fill's runs go to (`BATCH` concurrent runs).
pub async fn register_worker(
    cluster: &LocalCluster,
    name: &str,
    key: &str,
    host_tag: &str,
) -> anyhow::Result<()> {
    let node = &cluster.nodes[0];
    let reg = json!({"api_key": key, "distro": "x", "mem_total": 1, "cpu_total": 1, "cpu_type": "x", "concurrent_runs": BATCH, "host_tags": [host_tag]});
    let r = node
        .client
        .post(format!("{}/workers/{name}/", node.url()))
        .json(&reg)
        .send()
        .await?;
    ensure!(r.status().as_u16() == 201, "register: {}", r.status());
    let (s, b) = cluster
        .api(
            Method::PATCH,
            &format!("/workers/{name}/"),
            Some(json!({"enlisted": true})),
        )
        .await?;
    ensure!(s == 200, "enlist: {s} {b}");
    Ok(())
}

pub fn definition(host_tag: &str, retention: Option<u64>) -> String {
    let retention = retention
        .map(|n| format!("retention:\n  builds: {n}\n"))
        .unwrap_or_default();
    format!("timeout: 5\n{retention}triggers:\n  - name: t\n    type: simple\n    runs:\n      - name: r\n        container: busybox:latest\n        host-tag: {host_tag}\n        script: s\nscripts:\n  s: |\n    #!/bin/sh\n    true\n")
}

/// Creates `count` builds, hands their runs to the worker, and completes each with a log and an artifact.
pub async fn complete_builds(
    cluster: &LocalCluster,
    fill: &Fill<'_>,
    count: usize,
    retention: Option<u64>,
) -> anyhow::Result<()> {
    let url = cluster.nodes[0].url().to_string();
    let client = &cluster.nodes[0].client;
    let def = definition(fill.host_tag, retention);
    let path = format!("/projects/{}/builds/", fill.project);
    let creates = (0..count).map(|_| {
        cluster.api(
            Method::POST,
            &path,
            Some(json!({"trigger-name": "t", "project-definition": def})),
        )
    });
    for r in futures::future::join_all(creates).await {
        let (s, b) = r?;
        ensure!(s == 201, "create build: {s} {b}");
    }
    let mut defs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while defs.len() < count {
        ensure!(
            Instant::now() < deadline,
            "runs not handed out: {} of {count}",
            defs.len()
        );
        let (s, b) = call(
            client,
            Method::GET,
            &format!(
                "{url}/workers/{}/?available_runners={}",
                fill.worker,
                count - defs.len()
            ),
            fill.key,
            None,
        )
        .await?;
        ensure!(s == 200, "check in: {s} {b}");
        defs.extend(
            b["data"]["worker"]["run-defs"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
    }
    let tests = fill.tests;
    let work = defs.into_iter().map(|d| async move {
        let run_url = d["run_url"].as_str().context("run_url")?.to_string();
        let key = d["api_key"].as_str().context("api_key")?.to_string();
        let (s, b) = call(
            client,
            Method::POST,
            &format!("{run_url}create_signed"),
            &key,
            Some(json!({"paths": ["out.bin"]})),
        )
        .await?;
        ensure!(s == 200, "create_signed: {s} {b}");
        let put = b["data"]["urls"]["out.bin"]
            .as_str()
            .context("url")?
            .to_string();
        let artifact: Vec<u8> = (0..16384).map(|_| rand::random::<u8>()).collect();
        let r = client.put(&put).body(artifact).send().await?;
        ensure!(r.status().is_success(), "artifact: {}", r.status());
        if tests {
            let report = json!({"name": "unit", "status": "PASSED", "results": [
                {"name": "first", "status": "PASSED"},
                {"name": "second", "status": "SKIPPED", "context": run_url},
            ]});
            let (s, b) = call(
                client,
                Method::POST,
                &format!("{run_url}tests/"),
                &key,
                Some(report),
            )
            .await?;
            ensure!(s == 200 || s == 201, "tests: {s} {b}");
        }
        // 4 KiB, beginning with the run's own URL: every run's log differs.
        let mut log = format!("{run_url}\n");
        log.push_str(&"x".repeat(4095 - log.len().min(4095)));
        log.push('\n');
        let r = client
            .post(&run_url)
            .header("Authorization", format!("Token {key}"))
            .header("X-OFFSET", "0")
            .header("X-RUN-STATUS", "PASSED")
            .body(log)
            .send()
            .await?;
        ensure!(r.status().is_success(), "complete: {}", r.status());
        anyhow::Ok(())
    });
    for r in futures::future::join_all(work).await {
        r?;
    }
    Ok(())
}
