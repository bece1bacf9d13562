//! `lost_worker_detect_s`: a real worker (process, Docker executor) is SIGKILLed while its run is RUNNING;
//! seconds until the run is FAILED (or re-queued) by the leader's `WorkerMonitor`, with the cluster's
//! `worker_timeout_secs` (the node default, 30 s, in the full run).
use super::{ensure_project, single_run_definition, Figure, Plan};
use crate::local_cluster::LocalCluster;
use anyhow::{ensure, Context};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

pub async fn run(cluster: &mut LocalCluster, plan: &Plan) -> anyhow::Result<Vec<Figure>> {
    let victim = cluster
        .workers
        .last()
        .context("no real worker")?
        .name
        .clone();
    ensure_project(cluster, "bench-lost").await?;
    // The worker's name is a host tag of its own: the run can only go to the victim.
    let def = single_run_definition(&victim, "echo started; sleep 600");
    let (s, b) = cluster
        .api(
            Method::POST,
            "/projects/bench-lost/builds/",
            Some(json!({"trigger-name": "t", "project-definition": def})),
        )
        .await?;
    ensure!(s == 201, "create build: {s} {b}");
    let n = b["data"]["build_id"].as_u64().context("build_id")?;
    let path = format!("/projects/bench-lost/builds/{n}/runs/r/");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, r) = cluster.api(Method::GET, &path, None).await?;
        if r["data"]["run"]["status"] == "RUNNING"
            && r["data"]["run"]["log_bytes"].as_u64().unwrap_or(0) > 0
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the run never started on {victim}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed = Instant::now();
    if let Some(w) = cluster.workers.last_mut() {
        w.kill();
    }
    let deadline = Instant::now() + Duration::from_secs(plan.worker_timeout_secs * 4 + 30);
    let (detect, outcome) = loop {
        let (_, r) = cluster.api(Method::GET, &path, None).await?;
        let status = r["data"]["run"]["status"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if status == "FAILED" || status == "QUEUED" {
            break (
                killed.elapsed(),
                format!(
                    "{status}: {}",
                    r["data"]["run"]["failure_reason"].as_str().unwrap_or("")
                ),
            );
        }
        ensure!(
            Instant::now() < deadline,
            "the lost worker's run was never released: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The killed worker's container is an orphan now: remove it (by the label the worker puts on it).
    let _ = tokio::process::Command::new("sh").arg("-c").arg(format!("docker ps -aq --filter label=jobserv.worker={victim} | xargs -r docker rm -f >/dev/null 2>&1")).status().await;
    Ok(vec![Figure {
        key: "lost_worker_detect_s",
        value: detect.as_secs_f64(),
        workload: format!("{victim} (real process) SIGKILLed mid-run, worker timeout {} s{}, monitor every 2 s; run became {outcome}", plan.worker_timeout_secs, if plan.quick { " (quick: shortened)" } else { " (node default)" }),
    }])
}
