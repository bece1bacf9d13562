//! `dispatch_runs_per_s`: queued runs handed to simulated workers per second while the queue is deep.
//! `dispatch_runs` runs are queued first (builds of 100 runs); then `dispatch_workers` workers, spread over
//! the 3 nodes, check in back to back with one free slot each until the queue is empty. Every hand-out is
//! a committed `AssignRuns`; the runs are completed afterwards (not timed).
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
    ensure_project(cluster, "bench-dispatch").await?;
    let builds = plan.dispatch_runs.div_ceil(PER_BUILD);
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
    let workers = fleet.workers("dispatch-sim", 0..plan.dispatch_workers);
    fleet
        .register(&workers, 1024, &["bench-dispatch"], 16)
        .await?;

    let handed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
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
    complete_all(fleet, all.into_iter().map(|r| (r, 0)).collect(), 16).await?;
    Ok(vec![Figure {
        key: "dispatch_runs_per_s",
        value: n as f64 / elapsed.max(1e-9),
        workload: format!("{n} queued runs ({builds} builds x {PER_BUILD}), {} simulated workers over the 3 nodes checking in back to back with 1 free slot; first check-in to last run handed out {elapsed:.1} s", plan.dispatch_workers),
    }])
}
