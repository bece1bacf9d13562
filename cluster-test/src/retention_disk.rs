//! `cluster-test retention-disk`: disk use of a 3-node cluster holding `builds` completed builds (each
//! with one run, a 4 KiB console log and a 16 KiB artifact of its own), then after a project `retention`
//! that keeps a tenth of them: what the nodes' sled stores (`raft/`) and blob stores (`blobs/`) occupy
//! before, right after the deletion, and once sled has had time to reclaim its segments.
use crate::fill;
use crate::harness::{dir_size_mb, store_size_mb};
use crate::local_cluster::{ClusterOptions, LocalCluster};
use anyhow::ensure;
use reqwest::Method;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const PROJECT: &str = "disk";
const WORKER_KEY: &str = "disk-worker-key-0123456789abcdef";
const BATCH: usize = fill::BATCH;
const FILL: fill::Fill<'static> = fill::Fill {
    project: PROJECT,
    worker: "disk-w",
    key: WORKER_KEY,
    host_tag: "disk",
    tests: false,
};

/// (Raft store MiB, blobs MiB) summed over the nodes.
fn disk(cluster: &LocalCluster) -> (f64, f64) {
    cluster.nodes.iter().fold((0.0, 0.0), |(r, b), n| {
        (
            r + store_size_mb(&n.config.data_dir),
            b + dir_size_mb(&n.config.data_dir.join("blobs")),
        )
    })
}

pub async fn run(dir: &Path, bin_dir: &Path, builds: usize) -> anyhow::Result<String> {
    let opts = ClusterOptions {
        node_env: vec![
            ("JOBSERV_RETENTION_INTERVAL_SECS".into(), "2".into()),
            (
                "JOBSERV_ARTIFACTS".into(),
                "{gc_grace_secs = 5, repair_interval_secs = 2}".into(),
            ),
        ],
        ..ClusterOptions::workerless()
    };
    let cluster = LocalCluster::up(&dir.join("cluster"), bin_dir, &opts).await?;
    let (s, b) = cluster
        .api(Method::POST, "/projects/", Some(json!({"name": PROJECT})))
        .await?;
    ensure!(s == 201, "project: {s} {b}");
    fill::register_worker(&cluster, "disk-w", WORKER_KEY, "disk").await?;

    let started = Instant::now();
    let mut made = 0;
    while made < builds {
        let n = BATCH.min(builds - made);
        fill::complete_builds(&cluster, &FILL, n, None).await?;
        made += n;
        if made % 1000 == 0 {
            println!(
                "[{:>5.1}s] {made} builds completed",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let fill = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = disk(&cluster);
    // One more build whose definition keeps a tenth: the newest definition is the project's word.
    let keep = (builds / 10) as u64;
    fill::complete_builds(&cluster, &FILL, 1, Some(keep)).await?;
    let deleting = Instant::now();
    let oldest_kept = builds as u64 + 1 - keep + 1;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let (s, _) = cluster
            .api(
                Method::GET,
                &format!("/projects/{PROJECT}/builds/{}/", oldest_kept - 1),
                None,
            )
            .await?;
        if s == 404 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "retention did not delete build {}",
            oldest_kept - 1
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (s, _) = cluster
        .api(
            Method::GET,
            &format!("/projects/{PROJECT}/builds/{oldest_kept}/"),
            None,
        )
        .await?;
    ensure!(s == 200, "build {oldest_kept} must be kept: {s}");
    let deleted_in = deleting.elapsed();
    // Blobs go on each node's next keeper pass after the grace.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after = disk(&cluster);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let settled = disk(&cluster);
    // sled does not shrink its files; it reuses the space freed. Filling the deleted builds' worth again
    // shows whether it does.
    let refill = builds - keep as usize;
    let mut made = 0;
    while made < refill {
        let n = BATCH.min(refill - made);
        fill::complete_builds(&cluster, &FILL, n, Some(keep)).await?;
        made += n;
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    let refilled = disk(&cluster);
    Ok(format!(
        "retention-disk: {builds} builds (1 run, 4 KiB log, 16 KiB artifact each) completed in {:.0} s; \
         3 nodes' disk before: sled {:.0} MiB + blobs {:.0} MiB; retention keeping {keep} deleted {} builds in {:.1} s; \
         15 s later: sled {:.0} MiB + blobs {:.0} MiB; 75 s later: sled {:.0} MiB + blobs {:.0} MiB; \
         after {refill} more builds (retention still keeping {keep}): sled {:.0} MiB + blobs {:.0} MiB",
        fill.as_secs_f64(), before.0, before.1, builds as u64 + 1 - keep, deleted_in.as_secs_f64(),
        after.0, after.1, settled.0, settled.1, refilled.0, refilled.1
    ))
}
