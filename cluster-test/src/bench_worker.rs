//! Worker benchmark: time from a build being created to its run RUNNING on an idle long-polling worker
//! (p50/p99), and the runner's overhead against a plain `docker run` of the same script.
use crate::harness::{
    busybox_image, call, cluster_configs, enlist, random_token, repo_root, NodeProcess,
    WorkerProcess,
};
use crate::stats::{ms, percentile};
use anyhow::{bail, ensure, Context};
use reqwest::Method;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, serde::Serialize)]
pub struct WorkerBenchReport {
    pub samples: usize,
    pub trigger_to_running_p50_ms: f64,
    pub trigger_to_running_p99_ms: f64,
    pub run_wall_p50_ms: f64,
    pub plain_docker_run_p50_ms: f64,
    pub runner_overhead_ratio: f64,
}

const SCRIPT: &str = "echo bench; i=0; while [ $i -lt 1000 ]; do i=$((i+1)); done; echo done";

fn project(script: &str) -> String {
    format!("timeout: 5\ntriggers:\n  - name: t\n    type: simple\n    runs:\n      - name: r\n        container: busybox:latest\n        host-tag: bench\n        script: s\nscripts:\n  s: |\n    #!/bin/sh\n    {script}\n")
}

pub async fn run(dir: &Path, bin_dir: &Path, samples: usize) -> anyhow::Result<WorkerBenchReport> {
    busybox_image(&repo_root())?;
    let token = random_token();
    let config = cluster_configs(dir, 1, &token, &random_token())?.remove(0);
    let mut node = NodeProcess::new(config.clone(), bin_dir)?;
    node.spawn()?;
    node.wait_ready(Duration::from_secs(60)).await?;
    let url = node.url().to_string();
    let client = node.client.clone();
    let mut worker = WorkerProcess::new(
        bin_dir,
        "bench-worker",
        &[url.clone()],
        &config.ca_cert,
        &dir.join("worker"),
        &["bench"],
        1,
        "docker",
    );
    worker.spawn()?;
    enlist(
        &client,
        &url,
        &token,
        "bench-worker",
        Duration::from_secs(60),
    )
    .await?;
    let (s, b) = call(
        &client,
        Method::POST,
        &format!("{url}/projects/"),
        &token,
        Some(json!({"name": "bench"})),
    )
    .await?;
    ensure!(s == 201, "{s} {b}");

    let mut to_running = Vec::new();
    let mut run_wall = Vec::new();
    let definition = project(SCRIPT);
    for i in 0..samples + 1 {
        // Let the worker settle back into its long poll.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let created = Instant::now();
        let (s, b) = call(
            &client,
            Method::POST,
            &format!("{url}/projects/bench/builds/"),
            &token,
            Some(json!({"trigger-name": "t", "project-definition": definition})),
        )
        .await?;
        ensure!(s == 201, "{s} {b}");
        let n = b["data"]["build_id"].as_u64().context("build_id")?;
        let run_url = format!("{url}/projects/bench/builds/{n}/runs/r/");
        let mut running_at = None;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (_, r) = call(&client, Method::GET, &run_url, &token, None).await?;
            let status = r["data"]["run"]["status"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if running_at.is_none() && status != "QUEUED" {
                running_at = Some(created.elapsed());
            }
            if status == "PASSED" {
                let ms = |key: &str| {
                    r["data"]["run"][key]
                        .as_str()
                        .and_then(jobserv_protocol::time::ms_from_iso)
                        .unwrap_or(0)
                };
                let (started, completed) = (ms("started"), ms("completed"));
                if i > 0 {
                    // the first sample warms up connections and the image cache
                    to_running.push(running_at.unwrap_or_default());
                    run_wall.push(Duration::from_millis(completed.saturating_sub(started)));
                }
                break;
            }
            if status == "FAILED" {
                bail!("bench run failed: {r}");
            }
            if Instant::now() > deadline {
                bail!("bench run did not finish");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let mut plain = Vec::new();
    for _ in 0..samples.min(10) {
        let t = Instant::now();
        let status = tokio::process::Command::new("docker")
            .args(["run", "--rm", "busybox:latest", "sh", "-c", SCRIPT])
            .output()
            .await?;
        ensure!(status.status.success(), "plain docker run failed");
        plain.push(t.elapsed());
    }
    worker.kill();
    node.terminate();
    let run_p50 = percentile(&mut run_wall, 50.0);
    let plain_p50 = percentile(&mut plain, 50.0);
    Ok(WorkerBenchReport {
        samples,
        trigger_to_running_p50_ms: ms(percentile(&mut to_running, 50.0)),
        trigger_to_running_p99_ms: ms(percentile(&mut to_running, 99.0)),
        run_wall_p50_ms: ms(run_p50),
        plain_docker_run_p50_ms: ms(plain_p50),
        runner_overhead_ratio: run_p50.as_secs_f64() / plain_p50.as_secs_f64().max(1e-9),
    })
}

impl WorkerBenchReport {
    pub fn print(&self) {
        println!(
            "JobServ worker benchmark ({} samples; 1 node, 1 docker worker, this machine: 2 cores)",
            self.samples
        );
        println!("  build created -> run RUNNING (idle long-polling worker): p50 {:>7.1} ms   p99 {:>7.1} ms", self.trigger_to_running_p50_ms, self.trigger_to_running_p99_ms);
        println!(
            "  run wall time (RUNNING -> PASSED, incl. log/artifact upload): p50 {:>7.1} ms",
            self.run_wall_p50_ms
        );
        println!(
            "  plain `docker run --rm busybox sh -c SCRIPT`:               p50 {:>7.1} ms",
            self.plain_docker_run_p50_ms
        );
        println!(
            "  runner overhead ratio (run / plain docker run):             {:>7.2}x",
            self.runner_overhead_ratio
        );
    }
}
