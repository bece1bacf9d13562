//! Backup and restore, end to end on real processes: a 3-node cluster filled with `builds` completed builds
//! (a run each with a console log, two test results and an artifact), a backup taken with
//! `jobserv-node backup --with-blobs` while more builds are being made, `jobserv-node restore` into node 1
//! of a fresh 3-node cluster, and that cluster started. `compare` then reads every build of the fill from
//! both clusters — build, runs, console log, tests, and the artifact of every tenth run — and requires them
//! identical (URLs aside: they name each cluster's own nodes). `cluster-test bench-backup` reports the times.
use crate::fill::{self, Fill};
use crate::local_cluster::{ClusterOptions, LocalCluster};
use anyhow::{ensure, Context};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const PROJECT: &str = "backed-up";
const WORKER_KEY: &str = "backup-worker-key-0123456789abcdef";
const FILL: Fill<'static> = Fill {
    project: PROJECT,
    worker: "backup-w",
    key: WORKER_KEY,
    host_tag: "backup",
    tests: true,
};

#[derive(Debug)]
pub struct BackupReport {
    pub builds: usize,
    pub fill_secs: f64,
    pub backup_secs: f64,
    pub backup_bytes: u64,
    /// Builds made while the backup was being taken.
    pub builds_during_backup: usize,
    pub backup_index: String,
    /// `jobserv-node restore` plus starting the three processes until each serves.
    pub restore_secs: f64,
    /// From starting the restored cluster's processes to every node ready and the last build readable.
    pub start_secs: f64,
    pub builds_compared: usize,
    pub restore_output: String,
}

impl std::fmt::Display for BackupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "builds                   {}", self.builds)?;
        writeln!(f, "fill                     {:.1} s", self.fill_secs)?;
        writeln!(
            f,
            "backup (with blobs)      {:.2} s, {:.1} MiB, {} builds made meanwhile ({})",
            self.backup_secs,
            self.backup_bytes as f64 / (1024.0 * 1024.0),
            self.builds_during_backup,
            self.backup_index
        )?;
        writeln!(f, "restore + nodes serving  {:.2} s", self.restore_secs)?;
        writeln!(f, "restored cluster ready   {:.2} s", self.start_secs)?;
        writeln!(f, "builds compared          {}", self.builds_compared)?;
        write!(f, "restore said             {}", self.restore_output)
    }
}

/// Replaces every `https://host:port` origin in strings: the two clusters' nodes differ, nothing else may.
fn without_origins(v: &Value) -> Value {
    match v {
        Value::String(s) => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(i) = rest.find("https://") {
                out.push_str(&rest[..i]);
                let after = &rest[i + 8..];
                let end = after.find('/').unwrap_or(after.len());
                out.push_str("https://NODE");
                rest = &after[end..];
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(without_origins).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), without_origins(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

async fn get_json(cluster: &LocalCluster, path: &str) -> anyhow::Result<Value> {
    let (s, b) = cluster.api(Method::GET, path, None).await?;
    ensure!(s == 200, "GET {path}: {s} {b}");
    Ok(without_origins(&b["data"]))
}

async fn get_bytes(cluster: &LocalCluster, node: usize, path: &str) -> anyhow::Result<Vec<u8>> {
    let (s, b) = cluster.text(cluster.nodes[node].url(), path).await?;
    ensure!(s == 200, "GET {path} on node {}: {s}", node + 1);
    Ok(b)
}

/// Build `n` of the fill read from both clusters: equal, or an error naming what differs.
async fn compare_build(a: &LocalCluster, b: &LocalCluster, n: u64) -> anyhow::Result<()> {
    let build = format!("/projects/{PROJECT}/builds/{n}/");
    let run = format!("{build}runs/r/");
    for path in [
        build.clone(),
        format!("{build}runs/"),
        run.clone(),
        format!("{run}tests/"),
    ] {
        let (x, y) = (get_json(a, &path).await?, get_json(b, &path).await?);
        ensure!(x == y, "{path} differs:\nsource:   {x}\nrestored: {y}");
    }
    let console = format!("{run}console.log");
    let (x, y) = (
        get_bytes(a, 0, &console).await?,
        get_bytes(b, 0, &console).await?,
    );
    ensure!(
        x == y && !x.is_empty(),
        "{console} differs ({} / {} bytes)",
        x.len(),
        y.len()
    );
    if n.is_multiple_of(10) {
        // From node 3 of the restored cluster: it may hold the blob already (repair) or stream it from node 1.
        let artifact = format!("{run}out.bin");
        let (x, y) = (
            get_bytes(a, 0, &artifact).await?,
            get_bytes(b, 2, &artifact).await?,
        );
        ensure!(x == y && x.len() == 16384, "{artifact} differs");
    }
    Ok(())
}

pub async fn run(
    dir: &Path,
    bin_dir: &Path,
    builds: usize,
    compare: bool,
) -> anyhow::Result<BackupReport> {
    let source_opts = ClusterOptions::workerless();
    let source = LocalCluster::up(&dir.join("source"), bin_dir, &source_opts).await?;
    let (s, b) = source
        .api(Method::POST, "/projects/", Some(json!({"name": PROJECT})))
        .await?;
    ensure!(s == 201, "project: {s} {b}");
    fill::register_worker(&source, FILL.worker, FILL.key, FILL.host_tag).await?;
    let started = Instant::now();
    let mut made = 0;
    while made < builds {
        let n = fill::BATCH.min(builds - made);
        fill::complete_builds(&source, &FILL, n, None).await?;
        made += n;
        if made % 1000 == 0 {
            println!(
                "[{:>6.1}s] {made} builds completed",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let fill_secs = started.elapsed().as_secs_f64();

    // The backup, through the real CLI, while builds go on being made and completed.
    let file = dir.join("cluster.backup");
    let url = source.nodes[1].url().to_string();
    let (ca, token_file) = (source.ca_cert.clone(), source.dir.join("admin-token"));
    let binary = bin_dir.join("jobserv-node");
    let backup_file = file.clone();
    let backup = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let out = Command::new(binary)
            .args(["backup", "--with-blobs", "--url", &url, "--ca"])
            .arg(&ca)
            .arg("--token-file")
            .arg(&token_file)
            .arg("--to")
            .arg(&backup_file)
            .output();
        (start.elapsed(), out)
    });
    let mut during = 0;
    let backup = loop {
        if backup.is_finished() {
            break backup.await?;
        }
        fill::complete_builds(&source, &FILL, 5, None).await?;
        during += 5;
    };
    let (backup_took, out) = backup;
    let out = out.context("jobserv-node backup")?;
    ensure!(
        out.status.success(),
        "jobserv-node backup failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let backup_index = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let backup_bytes = std::fs::metadata(&file)?.len();

    // A fresh cluster: node 1 restored from the file before any node starts.
    let restore_start = Instant::now();
    let target_opts = ClusterOptions {
        restore_from: Some(file.clone()),
        ..ClusterOptions::workerless()
    };
    let restored = LocalCluster::up(&dir.join("restored"), bin_dir, &target_opts).await?;
    let up_secs = restore_start.elapsed().as_secs_f64();
    // Every node ready, each reading the newest build of the fill as the cluster serves it.
    for node in 0..3 {
        let path = format!("/projects/{PROJECT}/builds/{builds}/");
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let (s, _) = restored.text(restored.nodes[node].url(), &path).await?;
            if s == 200 {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "build {builds} not readable on restored node {}",
                node + 1
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let start_secs = restore_start.elapsed().as_secs_f64();
    let restore_output = restored.restore_output.clone().unwrap_or_default();
    let mut compared = 0;
    if compare {
        for n in 1..=builds as u64 {
            compare_build(&source, &restored, n)
                .await
                .with_context(|| format!("build {n}"))?;
            compared += 1;
        }
        // Builds made during the backup: either in the backup or not, never half (a cut at one index);
        // those in it read back as the source had them at that index, so only their presence is checked.
        let (s, b) = restored
            .api(Method::GET, &format!("/projects/{PROJECT}/builds/"), None)
            .await?;
        ensure!(s == 200, "{b}");
    }
    Ok(BackupReport {
        builds,
        fill_secs,
        backup_secs: backup_took.as_secs_f64(),
        backup_bytes,
        builds_during_backup: during,
        backup_index,
        restore_secs: up_secs,
        start_secs,
        builds_compared: compared,
        restore_output,
    })
}
