//! A state with history: `history_builds` builds of one project, `runs_per_build` runs each (10,000 builds
//! and 100,000 runs in the full run), created by 32 concurrent clients over the 3 nodes. The runs stay
//! QUEUED for a host tag no worker has, as a backlog would.
//!
//! - `builds_10k_list_p99_ms`: one page (`limit=25`) of the build list at random depths (`before=`),
//!   sequential requests round-robin over the nodes; the whole list is also walked page by page
//!   (`limit=1000`) and must be gapless.
//! - `snapshot_install_s_100k_runs`: every node snapshots and purges its log, a follower is SIGKILLed,
//!   its data dir wiped, and it is started again: seconds until it has installed the snapshot and applied
//!   everything the leader had.
use super::{definition, ensure_project, Figure, Plan};
use crate::harness::{call, dir_size_mb};
use crate::local_cluster::LocalCluster;
use crate::stats::{ms, percentile};
use anyhow::{bail, ensure, Context};
use rand::Rng;
use reqwest::Method;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PROJECT: &str = "bench-history";

/// Creates `builds` builds of `project` (each `runs_per_build` runs queued for a host tag no worker has)
/// with 32 concurrent clients spread over the nodes; returns the seconds it took.
pub async fn create_builds(
    cluster: &LocalCluster,
    project: &str,
    builds: usize,
    runs_per_build: usize,
) -> anyhow::Result<f64> {
    let def = definition("bench-nobody", runs_per_build, "true");
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let urls = cluster.live_urls();
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..32 {
        let (client, token, next, def, url, project) = (
            cluster.client.clone(),
            cluster.token.clone(),
            next.clone(),
            def.clone(),
            urls[lane % urls.len()].clone(),
            project.to_string(),
        );
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < builds {
                let body = json!({"trigger-name": "t", "project-definition": def});
                let mut tries = 0;
                loop {
                    let (s, b) = call(
                        &client,
                        Method::POST,
                        &format!("{url}/projects/{project}/builds/"),
                        &token,
                        Some(body.clone()),
                    )
                    .await?;
                    if s == 201 {
                        break;
                    }
                    tries += 1;
                    if tries > 5 {
                        bail!("create build: {s} {b}");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(started.elapsed().as_secs_f64())
}

pub async fn run(
    cluster: &mut LocalCluster,
    plan: &Plan,
    say: &dyn Fn(&str),
) -> anyhow::Result<Vec<Figure>> {
    let builds = plan.history_builds;
    let runs = builds * plan.runs_per_build;
    ensure_project(cluster, PROJECT).await?;
    let create_s = create_builds(cluster, PROJECT, builds, plan.runs_per_build).await?;
    let urls = cluster.live_urls();
    say(&format!(
        "  {builds} builds ({runs} runs) created in {create_s:.1} s ({:.0} builds/s)",
        builds as f64 / create_s
    ));

    // Wait until every node has applied the last build (each node's own view, `stale=1`), so that the
    // latency samples below do not include a node's catch-up.
    for url in &urls {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, b) = call(
                &cluster.client,
                Method::GET,
                &format!("{url}/projects/{PROJECT}/builds/?limit=1&stale=1"),
                &cluster.token,
                None,
            )
            .await?;
            if b["data"]["builds"][0]["build_id"].as_u64() == Some(builds as u64) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{url} never showed build {builds}: {b}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The whole list, page by page: gapless, newest first.
    let mut before: Option<u64> = None;
    let mut seen = 0u64;
    let mut expect = builds as u64;
    loop {
        let q = before.map(|b| format!("&before={b}")).unwrap_or_default();
        let (s, b) = cluster
            .api(
                Method::GET,
                &format!("/projects/{PROJECT}/builds/?limit=1000{q}"),
                None,
            )
            .await?;
        ensure!(s == 200, "list: {s} {b}");
        let page: Vec<u64> = b["data"]["builds"]
            .as_array()
            .context("builds")?
            .iter()
            .filter_map(|b| b["build_id"].as_u64())
            .collect();
        for n in &page {
            ensure!(
                *n == expect,
                "build list not gapless: got {n}, expected {expect}"
            );
            expect -= 1;
            seen += 1;
        }
        if b["data"]["next"].is_null() || page.is_empty() {
            break;
        }
        before = page.last().copied();
    }
    ensure!(
        seen == builds as u64,
        "walked {seen} builds, expected {builds}"
    );

    let mut lat = Vec::new();
    for i in 0..plan.list_samples {
        let url = &urls[i % urls.len()];
        let before = rand::thread_rng().gen_range(2..=builds as u64 + 1);
        let t = Instant::now();
        let (s, _) = call(
            &cluster.client,
            Method::GET,
            &format!("{url}/projects/{PROJECT}/builds/?limit=25&before={before}"),
            &cluster.token,
            None,
        )
        .await?;
        lat.push(t.elapsed());
        ensure!(s == 200, "list page: {s}");
    }
    let p50 = ms(percentile(&mut lat, 50.0));
    let p99 = ms(percentile(&mut lat, 99.0));
    let mut figures = vec![Figure {
        key: "builds_10k_list_p99_ms",
        value: p99,
        workload: format!("project with {builds} builds ({runs} queued runs in the state): {} requests of one 25-build page at random depth, round-robin over the nodes; p50 {p50:.1} ms; whole list walked gapless in pages of 1000; creation {:.0} builds/s", plan.list_samples, builds as f64 / create_s),
    }];

    // Snapshot install on a wiped follower.
    let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
    let state_mb = dir_size_mb(&cluster.node(leader)?.config.data_dir);
    let rejoin =
        crate::rejoin::wipe_follower_and_rejoin(cluster, 0, Duration::from_secs(600)).await?;
    let (victim, respawns, install, snap_s) = (
        rejoin.victim,
        rejoin.respawns,
        rejoin.caught_up.as_secs_f64(),
        rejoin.snapshot_s.as_secs_f64(),
    );
    figures.push(Figure {
        key: "snapshot_install_s_100k_runs",
        value: install,
        workload: format!("node {victim} wiped and restarted; state {builds} builds / {runs} runs (leader data dir {state_mb:.0} MiB; snapshot+purge on 3 nodes took {snap_s:.1} s); restart -> snapshot installed and caught up; the node exited during start-up and was restarted {respawns} times"),
    });
    Ok(figures)
}
