//! One-node benchmark (fsync on): committed writes per second and p50/p99 commit latency through the API
//! (console appends, each one Raft entry made durable before it is acknowledged), the same for build
//! creation, and the node's memory and disk after many writes and after compaction.
use crate::harness::{call, dir_size_mb, hold_runs, single_node};
use crate::stats::{ms, percentile};
use anyhow::ensure;
use reqwest::Method;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct BenchOptions {
    pub clients: usize,
    pub seconds: u64,
    pub footprint_writes: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct BenchReport {
    pub append_clients: usize,
    pub commit_writes_per_s: f64,
    pub commit_p50_ms: f64,
    pub commit_p99_ms: f64,
    pub build_clients: usize,
    pub build_create_per_s: f64,
    pub build_create_p50_ms: f64,
    pub build_create_p99_ms: f64,
    pub footprint_writes: u64,
    pub rss_mb_after_writes: f64,
    pub disk_mb_after_writes: f64,
    pub rss_mb_after_compaction: f64,
    pub disk_mb_after_compaction: f64,
}

const WORKER_KEY: &str = "bench-worker-key-0123456789abcdef0123456789abcdef";

fn project_yaml(runs: usize) -> String {
    let values: Vec<String> = (0..runs).map(|i| format!("r{i}")).collect();
    format!(
        "timeout: 5\ntriggers:\n  - name: t\n    type: simple\n    runs:\n      - name: run-{{loop}}\n        container: busybox:latest\n        host-tag: bench\n        script: s\n        loop-on:\n          - param: N\n            values: [{}]\nscripts:\n  s: |\n    #!/bin/sh\n    true\n",
        values.join(", ")
    )
}

pub async fn run(dir: &Path, bin_dir: &Path, opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    let (mut node, token) = single_node(dir, bin_dir).await?;
    let url = node.url().to_string();
    let client = node.client.clone();

    let runs = hold_runs(
        &node,
        &token,
        "bench",
        &project_yaml(opts.clients),
        "bench",
        WORKER_KEY,
        "bench",
        opts.clients,
    )
    .await?;

    // 1. Console appends: one Raft write each, `clients` concurrent writers.
    let deadline = Instant::now() + Duration::from_secs(opts.seconds);
    let (appends, mut lat, offsets) =
        append_load(&client, &runs, vec![0; runs.len()], deadline, u64::MAX).await;
    let elapsed = opts.seconds as f64;
    let commit_writes_per_s = appends as f64 / elapsed;
    let commit_p50_ms = ms(percentile(&mut lat, 50.0));
    let commit_p99_ms = ms(percentile(&mut lat, 99.0));

    // 2. Build creation through the API.
    let build_clients = opts.clients.min(16);
    let deadline = Instant::now() + Duration::from_secs(opts.seconds);
    let mut tasks = Vec::new();
    for _ in 0..build_clients {
        let client = client.clone();
        let url = format!("{url}/projects/bench/builds/");
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                match call(
                    &client,
                    Method::POST,
                    &url,
                    &token,
                    Some(json!({"trigger-name": "t"})),
                )
                .await
                {
                    Ok((201, _)) => lat.push(t.elapsed()),
                    _ => break,
                }
            }
            lat
        }));
    }
    let mut build_lat = Vec::new();
    for t in tasks {
        build_lat.extend(t.await?);
    }
    let build_create_per_s = build_lat.len() as f64 / elapsed;

    // 3. Footprint after many writes, then after a snapshot compacted the log.
    let already = appends;
    if opts.footprint_writes > already {
        let per_run = (opts.footprint_writes - already).div_ceil(runs.len() as u64);
        append_load(
            &client,
            &runs,
            offsets,
            Instant::now() + Duration::from_secs(3600),
            per_run,
        )
        .await;
    }
    let rss_mb_after_writes = node.rss_mb().unwrap_or(0.0);
    let disk_mb_after_writes = dir_size_mb(&node.config.data_dir);
    let (s, b) = call(
        &client,
        Method::POST,
        &format!("{url}/cluster/snapshot?purge=true"),
        &token,
        None,
    )
    .await?;
    ensure!(s == 200, "snapshot: {s} {b}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_mb_after_compaction = node.rss_mb().unwrap_or(0.0);
    let disk_mb_after_compaction = dir_size_mb(&node.config.data_dir);
    node.terminate();
    Ok(BenchReport {
        append_clients: runs.len(),
        commit_writes_per_s,
        commit_p50_ms,
        commit_p99_ms,
        build_clients,
        build_create_per_s,
        build_create_p50_ms: ms(percentile(&mut build_lat, 50.0)),
        build_create_p99_ms: ms(percentile(&mut build_lat, 99.0)),
        footprint_writes: opts.footprint_writes.max(appends),
        rss_mb_after_writes,
        disk_mb_after_writes,
        rss_mb_after_compaction,
        disk_mb_after_compaction,
    })
}

/// Appends 100-byte chunks to every run concurrently until `deadline` or `per_run` writes each.
async fn append_load(
    client: &reqwest::Client,
    runs: &[(String, String)],
    offsets: Vec<u64>,
    deadline: Instant,
    per_run: u64,
) -> (u64, Vec<Duration>, Vec<u64>) {
    let mut tasks = Vec::new();
    for ((run_url, key), mut offset) in runs.iter().cloned().zip(offsets) {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let chunk = vec![b'x'; 99]
                .into_iter()
                .chain([b'\n'])
                .collect::<Vec<u8>>();
            let mut lat = Vec::new();
            let mut done = 0;
            while Instant::now() < deadline && done < per_run {
                let t = Instant::now();
                let r = client
                    .post(&run_url)
                    .header("Authorization", format!("Token {key}"))
                    .header("X-OFFSET", offset.to_string())
                    .body(chunk.clone())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        lat.push(t.elapsed());
                        offset += chunk.len() as u64;
                        done += 1;
                    }
                    _ => break,
                }
            }
            (lat, offset)
        }));
    }
    let mut all = Vec::new();
    let mut offsets = Vec::new();
    for t in tasks {
        if let Ok((lat, offset)) = t.await {
            all.extend(lat);
            offsets.push(offset);
        }
    }
    (all.len() as u64, all, offsets)
}

impl BenchReport {
    pub fn print(&self) {
        println!(
            "JobServ one-node benchmark (fsync on; this machine: {} cores)",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        );
        println!("  console appends, {} concurrent clients:  {:>9.0} committed writes/s   p50 {:>7.2} ms   p99 {:>7.2} ms", self.append_clients, self.commit_writes_per_s, self.commit_p50_ms, self.commit_p99_ms);
        println!("  build creation, {} concurrent clients:   {:>9.1} builds/s           p50 {:>7.2} ms   p99 {:>7.2} ms", self.build_clients, self.build_create_per_s, self.build_create_p50_ms, self.build_create_p99_ms);
        println!(
            "  after {} writes:      RSS {:>7.1} MiB   data dir {:>7.1} MiB",
            self.footprint_writes, self.rss_mb_after_writes, self.disk_mb_after_writes
        );
        println!(
            "  after snapshot+purge: RSS {:>7.1} MiB   data dir {:>7.1} MiB",
            self.rss_mb_after_compaction, self.disk_mb_after_compaction
        );
    }
}
