//! `cluster-test big-log --mib 200`: a run's console log of that size through a 3-node cluster (fsync on),
//! appended in 1 MiB chunks the way a worker streams (each acknowledged once committed), then read back
//! whole and from offsets through every node; and what it costs the Raft snapshot (built in memory from
//! the whole state): the snapshot's time and the nodes' peak RSS while it is built. These figures are the
//! reason console logs stay in Raft (issue 10's note).
use crate::artifacts::RssSampler;
use crate::harness::{call, hold_runs};
use crate::local_cluster::{ClusterOptions, LocalCluster};
use anyhow::{ensure, Context};
use futures::StreamExt;
use reqwest::Method;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Instant;

pub async fn run(dir: &Path, bin_dir: &Path, mib: u64) -> anyhow::Result<String> {
    let opts = ClusterOptions::workerless();
    let cluster = LocalCluster::up(&dir.join("cluster"), bin_dir, &opts).await?;
    let node = &cluster.nodes[0];
    let runs = hold_runs(
        node,
        &cluster.token,
        "big-log",
        &crate::bench::single_run_definition("big-log", "true"),
        "big-log-w",
        "big-log-key-0123456789abcdef01234",
        "big-log",
        1,
    )
    .await?;
    let (run_url, key) = runs.into_iter().next().context("held run")?;
    let mut full = Sha256::new();
    let started = Instant::now();
    let mut offset = 0u64;
    for i in 0..mib {
        let chunk: Vec<u8> = (0..)
            .flat_map(|j: u64| {
                format!("chunk {i:>6} line {j:>6}: the quick brown fox jumps over the lazy dog\n")
                    .into_bytes()
            })
            .take(1 << 20)
            .collect();
        full.update(&chunk);
        let r = node
            .client
            .post(&run_url)
            .header("Authorization", format!("Token {key}"))
            .header("X-OFFSET", offset.to_string())
            .body(chunk)
            .send()
            .await?;
        ensure!(
            r.status().is_success(),
            "append at {offset}: {}",
            r.status()
        );
        offset += 1 << 20;
    }
    let ingest = started.elapsed().as_secs_f64();
    let expected = hex::encode(full.finalize());
    let path = &run_url[run_url.find("/projects/").context("path")?..];
    let mut reads = Vec::new();
    for n in &cluster.nodes {
        // A follower that trails the flood answers 503 until it has applied the read index (linearizable
        // reads); the time it needed is part of the figure.
        let t = Instant::now();
        let resp = loop {
            let resp = n
                .client
                .get(format!("{}{path}console.log", n.url()))
                .header("Authorization", format!("Token {}", cluster.token))
                .send()
                .await?;
            if resp.status().as_u16() != 503 || t.elapsed().as_secs() > 300 {
                break resp;
            }
        };
        let waited = t.elapsed().as_secs_f64();
        let t = Instant::now();
        ensure!(
            resp.status().is_success(),
            "read via node {}: {}",
            n.config.id,
            resp.status()
        );
        let mut h = Sha256::new();
        let mut got = 0u64;
        let mut body = resp.bytes_stream();
        while let Some(c) = body.next().await {
            let c = c?;
            got += c.len() as u64;
            h.update(&c);
        }
        ensure!(
            got == offset && hex::encode(h.finalize()) == expected,
            "node {}: the log read back differs",
            n.config.id
        );
        reads.push(format!(
            "node {} {:.0} MiB/s after {waited:.1} s catching up",
            n.config.id,
            mib as f64 / t.elapsed().as_secs_f64()
        ));
        // From an offset in the middle (X-OFFSET): exactly the rest.
        let from = offset / 2 + 12345;
        let resp = n
            .client
            .get(format!("{}{path}console.log", n.url()))
            .header("Authorization", format!("Token {}", cluster.token))
            .header("X-OFFSET", from.to_string())
            .send()
            .await?;
        let rest = resp.bytes().await?;
        ensure!(
            rest.len() as u64 == offset - from,
            "node {}: {} bytes from {from}",
            n.config.id,
            rest.len()
        );
    }
    let sampler = RssSampler::start(&cluster);
    let before: Vec<f64> = cluster.nodes.iter().filter_map(|n| n.rss_mb()).collect();
    let t = Instant::now();
    let (s, b) = call(
        &node.client,
        Method::POST,
        &format!("{}/cluster/snapshot", node.url()),
        &cluster.token,
        None,
    )
    .await?;
    ensure!(s == 200, "snapshot: {s} {b}");
    let snapshot_s = t.elapsed().as_secs_f64();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let peak = sampler.peak();
    let snap_files: f64 = cluster
        .nodes
        .iter()
        .map(|n| crate::harness::store_size_mb(&n.config.data_dir))
        .sum::<f64>()
        / 3.0;
    Ok(format!(
        "big-log: a {mib} MiB console log appended in 1 MiB chunks through node 1 in {ingest:.1} s ({:.1} MiB/s acknowledged, fsync on); \
         read back whole with the same sha256 through every node ({}), and from the middle (X-OFFSET) exactly the rest; \
         a snapshot on node 1 took {snapshot_s:.1} s; RSS before {:?} MiB, peak while snapshotting {:?} MiB; each node's Raft store (sled, entry bodies, console files, snapshot) ≈ {snap_files:.0} MiB",
        mib as f64 / ingest,
        reads.join(", "),
        before.iter().map(|v| v.round()).collect::<Vec<_>>(),
        peak.values().map(|v| v.round()).collect::<Vec<_>>(),
    ))
}
