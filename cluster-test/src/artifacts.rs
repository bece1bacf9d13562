//! Artifacts at real size on real processes (issue 10):
//! - [`big_artifact`]: a Docker run archives a file of `size_mib` (2 GiB by default) on a 3-node cluster; it
//!   must PASS, download with the run's own `sha256sum` from every node, and still do so after the node
//!   that took the upload is SIGKILLed and a second node's data dir is wiped (its blobs come back by
//!   repair). Every node's RSS is sampled throughout; the peak is reported.
//! - [`uploads_under_kills`] (chaos `uploads`): 20 runs upload at once while nodes are SIGKILLed and
//!   restarted; every run PASSES (a cut-off upload is retried by the worker), every listed artifact is
//!   whole (its size and hash are the run's), and each blob is on a majority of the nodes' disks.
use crate::harness::call;
use crate::local_cluster::{ClusterOptions, LocalCluster};
use anyhow::{bail, ensure, Context};
use futures::StreamExt;
use reqwest::Method;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROJECT: &str = "artifacts";

fn definition(runs: usize, size_mib: u64) -> String {
    let loop_on = if runs > 1 {
        let idx: Vec<String> = (1..=runs).map(|i| i.to_string()).collect();
        format!(
            "        loop-on:\n          - param: IDX\n            values: [{}]\n",
            idx.join(", ")
        )
    } else {
        String::new()
    };
    let name = if runs > 1 { "up-{loop}" } else { "big" };
    format!(
        r#"timeout: 60
triggers:
  - name: t
    type: simple
    runs:
      - name: {name}
        container: busybox:latest
        host-tag: chaos
        script: archive
{loop_on}        params:
          SIZE_MIB: "{size_mib}"
scripts:
  archive: |
    #!/bin/sh -e
    dd if=/dev/urandom of=/archive/big.bin bs=1M count=$SIZE_MIB 2>/dev/null
    sha256sum /archive/big.bin
"#
    )
}

/// The hash the run printed for its file.
async fn console_sha(cluster: &LocalCluster, path: &str) -> anyhow::Result<String> {
    for url in cluster.live_urls() {
        if let Ok((200, log)) = cluster.text(&url, &format!("{path}console.log")).await {
            let text = String::from_utf8_lossy(&log);
            if let Some(line) = text.lines().find(|l| l.ends_with("  /archive/big.bin")) {
                return Ok(line[..64].to_string());
            }
            bail!("{path}: no sha256sum line in the console");
        }
    }
    bail!("{path}: console not readable")
}

/// Streams a download and hashes it: (sha256, bytes, seconds).
pub async fn download_sha(
    client: &reqwest::Client,
    url: &str,
    token: &str,
) -> anyhow::Result<(String, u64, f64)> {
    let started = Instant::now();
    let resp = client
        .get(url)
        .header("Authorization", format!("Token {token}"))
        .send()
        .await?;
    ensure!(resp.status().is_success(), "GET {url}: {}", resp.status());
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        n += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((
        hex::encode(hasher.finalize()),
        n,
        started.elapsed().as_secs_f64(),
    ))
}

/// Samples every node's RSS every 100 ms until dropped; `peak()` is the largest seen per node.
pub struct RssSampler {
    peak: Arc<Mutex<BTreeMap<u64, f64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(cluster: &LocalCluster) -> RssSampler {
        let pids: Vec<(u64, u32)> = cluster
            .nodes
            .iter()
            .filter_map(|n| Some((n.config.id, n.pid()?)))
            .collect();
        let peak = Arc::new(Mutex::new(BTreeMap::new()));
        let p = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                for (id, pid) in &pids {
                    if let Some(mb) = rss_of(*pid) {
                        let mut peak = p.lock().unwrap_or_else(|e| e.into_inner());
                        let e: &mut f64 = peak.entry(*id).or_insert(0.0);
                        *e = (*e).max(mb);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        RssSampler { peak, task }
    }

    pub fn peak(&self) -> BTreeMap<u64, f64> {
        self.peak.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn rss_of(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

/// Bytes of artifacts each node received from workers (`jobserv_artifact_upload_bytes_total`).
async fn upload_bytes_by_node(cluster: &LocalCluster) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for node in cluster.nodes.iter().filter(|n| n.child.is_some()) {
        let Ok(r) = cluster
            .client
            .get(format!("{}/metrics", node.url()))
            .header("Authorization", format!("Token {}", cluster.token))
            .send()
            .await
        else {
            continue;
        };
        let text = r.text().await.unwrap_or_default();
        if let Some(v) = text
            .lines()
            .find(|l| l.starts_with("jobserv_artifact_upload_bytes_total "))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
        {
            out.insert(node.config.id, v as u64);
        }
    }
    out
}

fn blob_path(cluster: &LocalCluster, id: u64, sha: &str) -> Option<std::path::PathBuf> {
    let node = cluster.nodes.iter().find(|n| n.config.id == id)?;
    Some(node.config.data_dir.join("blobs").join(&sha[..2]).join(sha))
}

/// Downloads `path` through every live node: each must serve `size` bytes hashing to `expected`. One line
/// per node (`when`: what had happened), with its rate.
async fn served_everywhere(
    cluster: &LocalCluster,
    path: &str,
    expected: &str,
    size: u64,
    when: &str,
) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for node in cluster.nodes.iter().filter(|n| n.child.is_some()) {
        let url = format!("{}{path}", node.url());
        let (sha, bytes, secs) = download_sha(&cluster.client, &url, &cluster.token).await?;
        ensure!(
            sha == expected && bytes == size,
            "{when}: node {} served {sha} ({bytes} bytes), the run made {expected} ({size} bytes)",
            node.config.id
        );
        lines.push(format!(
            "{when}: node {} same sha256 ({:.0} MiB/s)",
            node.config.id,
            bytes as f64 / 1048576.0 / secs
        ));
    }
    Ok(lines)
}

pub struct BigArtifactReport {
    pub size_mib: u64,
    pub run_seconds: f64,
    pub uploading_seconds: f64,
    pub rss_peak: BTreeMap<u64, f64>,
    pub downloads: Vec<String>,
    pub taker: u64,
    pub wiped: u64,
    pub repair_seconds: f64,
}

impl std::fmt::Display for BigArtifactReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "big artifact: PASS — a run archived {} MiB and PASSED in {:.1} s (UPLOADING for {:.1} s: {:.0} MiB/s worker → node {} → peers, fsync on)",
            self.size_mib, self.run_seconds, self.uploading_seconds, self.size_mib as f64 / self.uploading_seconds.max(0.001), self.taker)?;
        let rss: Vec<String> = self
            .rss_peak
            .iter()
            .map(|(id, mb)| format!("node {id} {mb:.0} MiB"))
            .collect();
        writeln!(
            f,
            "  peak RSS during the run and its upload: {}",
            rss.join(", ")
        )?;
        for d in &self.downloads {
            writeln!(f, "  {d}")?;
        }
        write!(f, "  node {} wiped (after node {} came back): restarted, caught up and its blob repaired in {:.1} s", self.wiped, self.taker, self.repair_seconds)
    }
}

pub async fn big_artifact(
    dir: &Path,
    bin_dir: &Path,
    size_mib: u64,
) -> anyhow::Result<BigArtifactReport> {
    let opts = ClusterOptions {
        nodes: 3,
        workers: 1,
        executor: "docker".into(),
        worker_concurrency: 1,
        ..Default::default()
    };
    let mut cluster = LocalCluster::up(&dir.join("cluster"), bin_dir, &opts).await?;
    let sampler = RssSampler::start(&cluster);
    let started = Instant::now();
    let n = cluster
        .build(PROJECT, "t", &definition(1, size_mib))
        .await?;
    let run_path = format!("/projects/{PROJECT}/builds/{n}/runs/big/");
    let (mut uploading_since, mut uploading) = (None, 0.0);
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let (_, r) = cluster.api(Method::GET, &run_path, None).await?;
        let status = r["data"]["run"]["status"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if status == "UPLOADING" && uploading_since.is_none() {
            uploading_since = Some(Instant::now());
        }
        if status == "PASSED" || status == "FAILED" {
            if let Some(t) = uploading_since {
                uploading = t.elapsed().as_secs_f64();
            }
            ensure!(status == "PASSED", "the run {status}: {r}");
            break;
        }
        ensure!(Instant::now() < deadline, "run not done after an hour: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run_seconds = started.elapsed().as_secs_f64();
    let rss_peak = sampler.peak();
    drop(sampler);
    let expected = console_sha(&cluster, &run_path).await?;
    let taker = upload_bytes_by_node(&cluster)
        .await
        .into_iter()
        .find(|(_, b)| *b >= size_mib << 20)
        .map(|(id, _)| id)
        .context("no node counted the upload's bytes")?;
    let dl = format!("{run_path}big.bin");
    let size = size_mib << 20;
    let mut downloads = served_everywhere(&cluster, &dl, &expected, size, "download").await?;
    // The node that took the upload dies: the two others serve the artifact (from their own copies).
    cluster.node(taker)?.kill();
    let when = format!("node {taker} (took the upload) SIGKILLed");
    downloads.extend(served_everywhere(&cluster, &dl, &expected, size, &when).await?);
    {
        let node = cluster.node(taker)?;
        node.spawn()?;
        node.wait_ready(Duration::from_secs(120)).await?;
    }
    // Then a second node loses its disk (one at a time: with one node down and another wiped, a 3-node
    // cluster has no majority holding the state, so Raft itself waits). Its blobs come back by repair.
    let wiped = cluster
        .nodes
        .iter()
        .map(|n| n.config.id)
        .find(|id| *id != taker)
        .context("second node")?;
    let wiped_started = Instant::now();
    {
        let node = cluster.node(wiped)?;
        node.kill();
        std::fs::remove_dir_all(&node.config.data_dir)?;
        std::fs::create_dir_all(&node.config.data_dir)?;
        node.spawn()?;
        node.wait_ready(Duration::from_secs(300)).await?;
    }
    let path = blob_path(&cluster, wiped, &expected).context("wiped node's blob path")?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    while !path.exists() {
        ensure!(
            Instant::now() < deadline,
            "node {wiped} never repaired blob {expected}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let repair_seconds = wiped_started.elapsed().as_secs_f64();
    let when = format!("node {wiped} wiped and repaired");
    downloads.extend(served_everywhere(&cluster, &dl, &expected, size, &when).await?);
    cluster.kill_all();
    Ok(BigArtifactReport {
        size_mib,
        run_seconds,
        uploading_seconds: uploading,
        rss_peak,
        downloads,
        taker,
        wiped,
        repair_seconds,
    })
}

/// Chaos `uploads`: `uploads` runs archive `size_mib` each at once; nodes are SIGKILLed (the leader, then
/// another) and restarted while they upload.
pub async fn uploads_under_kills(
    dir: &Path,
    bin_dir: &Path,
    uploads: usize,
    size_mib: u64,
) -> anyhow::Result<UploadsReport> {
    let opts = ClusterOptions {
        nodes: 3,
        workers: 2,
        executor: "docker".into(),
        worker_concurrency: (uploads / 2).max(1) as u32,
        worker_timeout_secs: 30,
        ..Default::default()
    };
    let mut cluster = LocalCluster::up(&dir.join("cluster"), bin_dir, &opts).await?;
    let started = Instant::now();
    let n = cluster
        .build(PROJECT, "t", &definition(uploads, size_mib))
        .await?;
    let names: Vec<String> = (1..=uploads).map(|i| format!("up-{i}")).collect();
    let build_path = format!("/projects/{PROJECT}/builds/{n}/");
    let mut kills = Vec::new();
    let mut half_listed = Vec::new();
    for round in 0..2 {
        // Kill while uploads are under way: once a quarter of the runs are UPLOADING at once (or, late in
        // the build, whenever any still is).
        wait_uploading(&cluster, &build_path, (uploads / 4).max(1)).await?;
        let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
        let victim = if round == 0 {
            leader
        } else {
            cluster
                .nodes
                .iter()
                .map(|n| n.config.id)
                .find(|id| *id != leader && !kills.contains(id))
                .context("a follower not killed yet")?
        };
        cluster.node(victim)?.kill();
        kills.push(victim);
        // While it is down, every artifact any node lists must be whole.
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            half_listed.extend(partial_listings(&cluster, &build_path, &names, size_mib).await);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let node = cluster.node(victim)?;
        node.spawn()?;
        node.wait_ready(Duration::from_secs(120)).await?;
    }
    let build = cluster
        .wait_build(PROJECT, n, Duration::from_secs(1200))
        .await?;
    half_listed.extend(partial_listings(&cluster, &build_path, &names, size_mib).await);
    ensure!(
        half_listed.is_empty(),
        "artifacts listed with a wrong size: {half_listed:?}"
    );
    ensure!(
        build["status"] == "PASSED",
        "build {n} {}: {build}",
        build["status"]
    );
    // Every artifact: the run's hash through every node, and on the disks of a majority.
    for name in &names {
        let path = format!("{build_path}runs/{name}/");
        let expected = console_sha(&cluster, &path).await?;
        served_everywhere(
            &cluster,
            &format!("{path}big.bin"),
            &expected,
            size_mib << 20,
            name,
        )
        .await?;
        let holders = cluster
            .nodes
            .iter()
            .filter(|node| {
                blob_path(&cluster, node.config.id, &expected).is_some_and(|p| p.exists())
            })
            .count();
        ensure!(holders >= 2, "{name}: blob on {holders} node(s)");
    }
    // How many upload attempts the kills cut off (each was retried by its worker to completion).
    let retried = cluster
        .workers
        .iter()
        .map(|w| {
            std::fs::read_to_string(&w.log)
                .map(|l| l.matches("artifact upload failed").count())
                .unwrap_or(0)
        })
        .sum();
    cluster.kill_all();
    Ok(UploadsReport {
        uploads,
        size_mib,
        kills,
        retried,
        seconds: started.elapsed().as_secs_f64(),
    })
}

pub struct UploadsReport {
    pub uploads: usize,
    pub size_mib: u64,
    pub kills: Vec<u64>,
    /// Upload attempts that failed (cut off by a kill) and were retried by the worker.
    pub retried: usize,
    pub seconds: f64,
}

impl std::fmt::Display for UploadsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uploads: PASS — {} concurrent uploads of {} MiB while nodes {:?} were SIGKILLed (and restarted): {} upload attempts cut off and retried by the workers; every run PASSED, no artifact was ever listed with a partial size, each downloads with its run's sha256 from every node and is on a majority of the nodes' disks ({:.0} s)",
            self.uploads, self.size_mib, self.kills, self.retried, self.seconds)
    }
}

/// Waits until `at_least` runs of the build are UPLOADING (or at least one, after 60 s).
async fn wait_uploading(
    cluster: &LocalCluster,
    build_path: &str,
    at_least: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let (_, b) = cluster
            .api(Method::GET, &format!("{build_path}runs/"), None)
            .await?;
        let runs = b["data"]["runs"].as_array().cloned().unwrap_or_default();
        let count = |status: &str| runs.iter().filter(|r| r["status"] == status).count();
        let uploading = count("UPLOADING");
        let wanted = if started.elapsed() > Duration::from_secs(60) {
            1
        } else {
            at_least
        };
        // Nothing left that could still upload: no point waiting.
        let active = count("QUEUED") + count("RUNNING") + uploading;
        if uploading >= wanted || (!runs.is_empty() && active == 0) {
            return Ok(());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(600),
            "no run reached UPLOADING: {b}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Artifacts some node lists with a size other than the whole file's.
async fn partial_listings(
    cluster: &LocalCluster,
    build_path: &str,
    names: &[String],
    size_mib: u64,
) -> Vec<String> {
    let mut bad = Vec::new();
    for url in cluster.live_urls() {
        for name in names {
            let Ok((200, run)) = call(
                &cluster.client,
                Method::GET,
                &format!("{url}{build_path}runs/{name}/"),
                &cluster.token,
                None,
            )
            .await
            else {
                continue;
            };
            for a in run["data"]["run"]["artifacts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                if a["size"].as_u64() != Some(size_mib << 20) {
                    bad.push(format!("{name} via {url}: {a}"));
                }
            }
        }
    }
    bad
}
