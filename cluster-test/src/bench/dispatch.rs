//! `dispatch_runs_per_s` and `dispatch_runs_per_s_20000_queued`: queued runs handed to simulated workers per
//! second while the queue is deep (2,000 and 20,000 runs: the rate must not fall with depth). The runs are
//! queued first (builds of 100 runs); then `dispatch_workers` workers, spread over the 3 nodes, check in
//! back to back with one free slot each until the queue is empty. Every hand-out is a committed
//! assignment; the runs are completed afterwards (not timed).
use super::sim::{complete_all, Fleet};
use super::{definition, ensure_project, Figure, Plan};
use crate::local_cluster::LocalCluster;
use anyhow::{ensure, Context};
use reqwest::Method;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PER_BUILD: usize = 100;

pub async fn run(
    cluster: &LocalCluster,
    fleet: &Fleet,
    plan: &Plan,
) -> anyhow::Result<Vec<Figure>> {
    let mut figures = vec![
        drain(
            cluster,
            fleet,
            plan,
            "dispatch_runs_per_s",
            plan.dispatch_runs,
            "dispatch-sim",
        )
        .await?,
    ];
    figures.push(
        drain(
            cluster,
            fleet,
            plan,
            "dispatch_runs_per_s_20000_queued",
            plan.dispatch_deep_runs,
            "dispatch-deep",
        )
        .await?,
    );
    Ok(figures)
}

/// Queues `runs` runs, then times how fast `plan.dispatch_workers` workers named `{worker_prefix}-N` drain
/// them.
pub async fn drain(
    cluster: &LocalCluster,
    fleet: &Fleet,
    plan: &Plan,
    key: &'static str,
    runs: usize,
    worker_prefix: &str,
) -> anyhow::Result<Figure> {
    ensure_project(cluster, "bench-dispatch").await?;
    let builds = runs.div_ceil(PER_BUILD);
    let queued_in = Instant::now();
    let total = builds * PER_BUILD;
    let def = definition("bench-dispatch", PER_BUILD, "true");
    for _ in 0..builds {
        let (s, b) = cluster
            .api(
                Method::POST,
                "/projects/bench-dispatch/builds/",
                Some(json!({"trigger-name": "t", "project-definition": def})),
            )
            .await?;
        ensure!(s == 201, "create build: {s} {b}");
    }
    let workers = fleet.workers(worker_prefix, 0..plan.dispatch_workers);
    fleet
        .register(&workers, 1024, &["bench-dispatch"], 16)
        .await?;

    let idle = workers.clone();
    // A worker that gave up early (the queue looked drained to it) and the completion of thousands of runs
    // afterwards can outlast the worker timeout: every worker also checks in with no free slot every 5 s
    // until the end, or the lost-worker monitor would fail the runs it holds.
    let heartbeat = {
        let fleet = fleet.clone();
        tokio::spawn(async move {
            loop {
                for (i, w) in idle.iter().enumerate() {
                    let _ = fleet.check_in(w, i, 0, 0).await;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        })
    };
    let handed = Arc::new(AtomicUsize::new(0));
    let queued_in = queued_in.elapsed();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, w) in workers.into_iter().enumerate() {
        let (fleet, handed) = (fleet.clone(), handed.clone());
        tasks.spawn(async move {
            let mut mine = Vec::new();
            let mut last = started;
            let mut empty = 0;
            while handed.load(Ordering::Relaxed) < total && Instant::now() < deadline {
                let runs = fleet.check_in(&w, i, 1, 0).await?;
                if runs.is_empty() {
                    empty += 1;
                    if empty > 50 {
                        break; // the queue is drained (or nothing matches)
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                handed.fetch_add(runs.len(), Ordering::Relaxed);
                last = Instant::now();
                mine.extend(runs);
            }
            Ok::<_, anyhow::Error>((mine, last))
        });
    }
    let mut all = Vec::new();
    let mut last = started;
    while let Some(r) = tasks.join_next().await {
        let (mine, l) = r.context("dispatch task")??;
        all.extend(mine);
        last = last.max(l);
    }
    let elapsed = (last - started).as_secs_f64();
    let n = all.len();
    ensure!(n == total, "{n} of {total} queued runs were handed out");
    let completed = complete_all(fleet, all.into_iter().map(|r| (r, 0)).collect(), 16).await;
    heartbeat.abort();
    completed?;
    Ok(Figure {
        key,
        value: n as f64 / elapsed.max(1e-9),
        workload: format!("{n} queued runs ({builds} builds x {PER_BUILD}, queued in {:.1} s), {} simulated workers over the 3 nodes checking in back to back with 1 free slot; first check-in to last run handed out {elapsed:.1} s", queued_in.as_secs_f64(), plan.dispatch_workers),
    })
}
