//! `trigger_to_running_p50_ms`: a build is created through the API → its run is RUNNING on an idle,
//! long-polling real worker (a `jobserv-worker` process with the Docker executor). One run at a time; the
//! worker is back in its long poll before each sample; the first sample (image cache, connections) is not
//! counted. Observed by polling the run every 5 ms.
use super::{ensure_project, single_run_definition, Figure, Plan};
use crate::local_cluster::LocalCluster;
use crate::stats::{ms, percentile};
use anyhow::{bail, ensure, Context};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

pub async fn run(cluster: &LocalCluster, plan: &Plan) -> anyhow::Result<Vec<Figure>> {
    ensure_project(cluster, "bench-latency").await?;
    let def = single_run_definition("chaos", "echo bench");
    let mut samples = Vec::new();
    for i in 0..plan.trigger_samples + 1 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let created = Instant::now();
        let (s, b) = cluster
            .api(
                Method::POST,
                "/projects/bench-latency/builds/",
                Some(json!({"trigger-name": "t", "project-definition": def})),
            )
            .await?;
        ensure!(s == 201, "create build: {s} {b}");
        let n = b["data"]["build_id"].as_u64().context("build_id")?;
        let path = format!("/projects/bench-latency/builds/{n}/runs/r/");
        let mut running = None;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (_, r) = cluster.api(Method::GET, &path, None).await?;
            let status = r["data"]["run"]["status"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if running.is_none() && status != "QUEUED" && !status.is_empty() {
                running = Some(created.elapsed());
            }
            match status.as_str() {
                "PASSED" => break,
                "FAILED" => bail!("latency run failed: {r}"),
                _ => {}
            }
            ensure!(Instant::now() < deadline, "latency run did not finish: {r}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if i > 0 {
            samples.push(running.unwrap_or_default());
        }
    }
    let p50 = ms(percentile(&mut samples, 50.0));
    let p99 = ms(percentile(&mut samples, 99.0));
    Ok(vec![Figure {
        key: "trigger_to_running_p50_ms",
        value: p50,
        workload: format!("{} builds one at a time, 1 busybox run each, 2 idle long-polling Docker workers (real processes); p99 {p99:.0} ms", plan.trigger_samples),
    }])
}
