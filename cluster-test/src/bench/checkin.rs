//! Check-in throughput and latency as the number of simulated workers grows (100 → 1000 → 5000), with the
//! nodes' memory and CPU per check-in: the goal is flat latency and linear cost, and a cliff shows as
//! check-ins served falling behind those offered, p99 climbing, or CPU per check-in growing.
//!
//! Each simulated worker is enlisted with one free slot (its host tag matches no run) and loops: check in
//! (`wait=0`, so every request is served, not parked), then pause `checkin_pause`; workers are spread over
//! the 3 nodes and start at random offsets. The offered load is thus about `workers / pause`.
use super::sim::{Fleet, SimWorker};
use super::{cpu_sample, describe_rss, rss, Figure, Plan, ScaleRow};
use crate::local_cluster::LocalCluster;
use crate::stats::{ms, percentile};
use rand::Rng;
use std::time::{Duration, Instant};

pub async fn run(
    cluster: &LocalCluster,
    fleet: &Fleet,
    plan: &Plan,
    say: &dyn Fn(&str),
) -> anyhow::Result<(Vec<Figure>, Vec<ScaleRow>)> {
    let mut rows = Vec::new();
    let mut figures = Vec::new();
    let mut registered = 0;
    for &n in &plan.scale_levels {
        let new = fleet.workers("sim", registered..n);
        let took = fleet.register(&new, 1, &["bench-sim"], 64).await?;
        let register_per_s = new.len() as f64 / took.as_secs_f64().max(1e-9);
        registered = n;
        let workers = fleet.workers("sim", 0..n);
        let row = level(cluster, fleet, &workers, plan, register_per_s).await;
        say(&format!(
            "  {n} workers: {:.0} check-ins/s (offered {:.0}/s), p50 {:.2} ms, p99 {:.2} ms, {} errors, RSS max {:.0} MiB, {:.3} node-CPU ms per check-in",
            row.checkins_per_s, row.offered_per_s, row.checkin_p50_ms, row.checkin_p99_ms, row.errors, row.node_rss_mb_max, row.node_cpu_ms_per_checkin
        ));
        if n == 1000 {
            let (_, each) = rss(cluster);
            let workload = format!("1000 simulated workers, each: check in (wait=0) then pause {} s, over the 3 nodes, {} s window", plan.checkin_pause.as_secs_f64(), plan.scale_seconds);
            figures.push(Figure {
                key: "checkins_per_s_1000_workers",
                value: row.checkins_per_s,
                workload: format!("{workload}; offered ~{:.0}/s", row.offered_per_s),
            });
            figures.push(Figure {
                key: "checkin_p99_ms_1000_workers",
                value: row.checkin_p99_ms,
                workload: format!(
                    "same; p50 {:.2} ms, {} errors",
                    row.checkin_p50_ms, row.errors
                ),
            });
            figures.push(Figure {
                key: "node_rss_mb_1000_workers",
                value: row.node_rss_mb_max,
                workload: format!(
                    "largest of the 3 nodes, MiB, at the end of the 1000-worker window ({})",
                    describe_rss(&each)
                ),
            });
        }
        rows.push(row);
    }
    Ok((figures, rows))
}

async fn level(
    cluster: &LocalCluster,
    fleet: &Fleet,
    workers: &[SimWorker],
    plan: &Plan,
    register_per_s: f64,
) -> ScaleRow {
    let pause = plan.checkin_pause;
    let warmup = Duration::from_secs(1).max(pause);
    let start = Instant::now();
    let window_start = start + warmup;
    let end = window_start + Duration::from_secs(plan.scale_seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, w) in workers.iter().cloned().enumerate() {
        let fleet = fleet.clone();
        let offset =
            Duration::from_secs_f64(rand::thread_rng().gen_range(0.0..pause.as_secs_f64()));
        tasks.spawn(async move {
            tokio::time::sleep(offset).await;
            let mut lat = Vec::new();
            let mut errors = 0u64;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let ok = fleet.check_in(&w, i, 1, 0).await.is_ok();
                let done = Instant::now();
                if t >= window_start && done <= end {
                    if ok {
                        lat.push(done - t);
                    } else {
                        errors += 1;
                    }
                }
                tokio::time::sleep(pause).await;
            }
            (lat, errors)
        });
    }
    tokio::time::sleep_until(window_start.into()).await;
    let (nodes0, me0) = cpu_sample(cluster);
    tokio::time::sleep_until(end.into()).await;
    let (nodes1, me1) = cpu_sample(cluster);
    let (rss_max, _) = rss(cluster);
    let mut lat = Vec::new();
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        if let Ok((l, e)) = r {
            lat.extend(l);
            errors += e;
        }
    }
    let window = plan.scale_seconds as f64;
    let served = lat.len() as f64;
    let node_cpu = (nodes1 - nodes0).as_secs_f64();
    ScaleRow {
        workers: workers.len(),
        register_per_s,
        checkins_per_s: served / window,
        offered_per_s: workers.len() as f64 / pause.as_secs_f64(),
        checkin_p50_ms: ms(percentile(&mut lat, 50.0)),
        checkin_p99_ms: ms(percentile(&mut lat, 99.0)),
        errors,
        node_rss_mb_max: rss_max,
        node_cpu_ms_per_checkin: node_cpu * 1000.0 / served.max(1.0),
        nodes_cpu_pct: node_cpu / window * 100.0,
        client_cpu_pct: (me1 - me0).as_secs_f64() / window * 100.0,
    }
}
