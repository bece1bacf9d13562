//! Failover benchmark on a real 3-node cluster (2 cores): leader SIGKILL → first successful write through
//! a survivor (p50/max over N kills), and the time a worker streaming a console log needs to resume on
//! another node when the node it streams to is SIGKILLed (measured as: kill → the run's acknowledged log
//! grows again, seen from a survivor).
use crate::chaos::time_to_write;
use crate::local_cluster::{ClusterOptions, LocalCluster};
use crate::stats::{ms, percentile};
use anyhow::{bail, ensure, Context};
use reqwest::Method;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, serde::Serialize)]
pub struct FailoverReport {
    pub leader_kills: usize,
    pub failover_p50_ms: f64,
    pub failover_max_ms: f64,
    /// Leader SIGTERM (graceful stop: leadership handed over) → first write through a survivor.
    pub graceful_stops: usize,
    pub graceful_stop_write_gap_p50_ms: f64,
    pub graceful_stop_write_gap_max_ms: f64,
    /// Of those stops, how many elected the successor in the very next term (a hand-over, not an election).
    pub graceful_stops_next_term: usize,
    pub worker_resumes: usize,
    pub worker_resume_p50_ms: f64,
    pub worker_resume_max_ms: f64,
}

const STREAM: &str = "timeout: 5\ntriggers:\n  - name: t\n    type: simple\n    runs:\n      - name: stream\n        container: busybox:latest\n        host-tag: chaos\n        script: s\nscripts:\n  s: |\n    #!/bin/sh\n    i=0\n    while [ $i -lt 600 ]; do i=$((i+1)); echo \"line $i\"; sleep 0.1; done\n";

pub async fn run(
    dir: &Path,
    bin_dir: &Path,
    kills: usize,
    graceful: usize,
    resumes: usize,
) -> anyhow::Result<FailoverReport> {
    let opts = ClusterOptions {
        workers: 1,
        worker_concurrency: 1,
        ..Default::default()
    };
    let mut cluster = LocalCluster::up(&dir.join("cluster"), bin_dir, &opts).await?;
    let mut failover = Vec::new();
    for i in 0..kills {
        let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
        cluster.node(leader)?.kill();
        failover.push(time_to_write(&cluster, &format!("failover-{i}")).await?);
        let node = cluster.node(leader)?;
        node.spawn()?;
        node.wait_ready(Duration::from_secs(60)).await?;
        // As the bench does: the next kill finds both followers holding the whole log.
        let url = cluster.node(leader)?.url().to_string();
        crate::bench::failover::wait_caught_up(&cluster, &url).await?;
    }

    // The same with SIGTERM: the stopping leader hands over (node/src/handover.rs).
    let mut gaps = Vec::new();
    let mut next_term = 0;
    for i in 0..graceful {
        let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
        let term = leader_term(&cluster, leader).await?;
        let node = cluster.node(leader)?;
        let child = node.child.as_ref().context("leader process")?;
        child.signal_term();
        gaps.push(time_to_write(&cluster, &format!("graceful-{i}")).await?);
        let node = cluster.node(leader)?;
        if let Some(mut child) = node.child.take() {
            if child.wait_exited(Duration::from_secs(30)).is_err() {
                bail!("node {leader} did not exit within 30 s of SIGTERM");
            }
        }
        let successor = cluster.wait_leader(Duration::from_secs(30)).await?;
        if leader_term(&cluster, successor).await? == term + 1 {
            next_term += 1;
        }
        let node = cluster.node(leader)?;
        node.spawn()?;
        node.wait_ready(Duration::from_secs(60)).await?;
    }

    let mut resume = Vec::new();
    for i in 0..resumes {
        let n = cluster.build("stream", "t", STREAM).await?;
        let run = format!("/projects/stream/builds/{n}/runs/stream/");
        wait_bytes(&cluster, &run, 1, Duration::from_secs(60)).await?;
        let target = streaming_node(&cluster, &run).await?;
        let before = log_bytes(&cluster, &run).await?;
        let killed = Instant::now();
        cluster.node(target)?.kill();
        let at_kill = before.max(log_bytes(&cluster, &run).await?);
        wait_bytes(&cluster, &run, at_kill + 1, Duration::from_secs(60))
            .await
            .with_context(|| format!("resume {i}"))?;
        resume.push(killed.elapsed());
        let node = cluster.node(target)?;
        node.spawn()?;
        node.wait_ready(Duration::from_secs(60)).await?;
        let (s, _) = cluster
            .api(Method::POST, &format!("{run}cancel"), None)
            .await?;
        ensure!(s == 200, "cancel the streaming run");
        cluster
            .wait_build("stream", n, Duration::from_secs(60))
            .await?;
    }
    cluster.kill_all();
    Ok(FailoverReport {
        leader_kills: failover.len(),
        failover_p50_ms: ms(percentile(&mut failover, 50.0)),
        failover_max_ms: ms(percentile(&mut failover, 100.0)),
        graceful_stops: gaps.len(),
        graceful_stop_write_gap_p50_ms: ms(percentile(&mut gaps, 50.0)),
        graceful_stop_write_gap_max_ms: ms(percentile(&mut gaps, 100.0)),
        graceful_stops_next_term: next_term,
        worker_resumes: resume.len(),
        worker_resume_p50_ms: ms(percentile(&mut resume, 50.0)),
        worker_resume_max_ms: ms(percentile(&mut resume, 100.0)),
    })
}

/// The term node `id` reports (its own view).
async fn leader_term(cluster: &LocalCluster, id: u64) -> anyhow::Result<u64> {
    let node = &cluster.nodes[id as usize - 1];
    let view = crate::harness::own_view(&cluster.client, node.url(), &cluster.token).await?;
    view["term"].as_u64().context("term")
}

async fn log_bytes(cluster: &LocalCluster, run: &str) -> anyhow::Result<u64> {
    let (s, b) = cluster.api(Method::GET, run, None).await?;
    ensure!(s == 200, "{run}: {s}");
    b["data"]["run"]["log_bytes"].as_u64().context("log_bytes")
}

async fn wait_bytes(
    cluster: &LocalCluster,
    run: &str,
    at_least: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while log_bytes(cluster, run).await? < at_least {
        if Instant::now() > deadline {
            bail!("{run}: log did not reach {at_least} bytes within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The node receiving the worker's console appends: the one whose counter of run updates grows (sampled
/// every 100 ms until one grows, up to 30 s; the worker posts at least every second while its script
/// prints). `/metrics` is each node's own figures (never linearized).
async fn streaming_node(cluster: &LocalCluster, run: &str) -> anyhow::Result<u64> {
    async fn updates(cluster: &LocalCluster) -> anyhow::Result<Vec<(u64, u64)>> {
        let mut counts = Vec::new();
        for node in cluster.nodes.iter().filter(|n| n.child.is_some()) {
            let text = cluster
                .client
                .get(format!("{}/metrics", node.url()))
                .send()
                .await?
                .text()
                .await?;
            let n = text
                .lines()
                .filter(|l| {
                    l.starts_with("jobserv_http_requests_total")
                        && l.contains("method=\"POST\"")
                        && l.contains("route=\"/projects/{p}/builds/{n}/runs/{r}/\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum();
            counts.push((node.config.id, n));
        }
        Ok(counts)
    }
    let before = updates(cluster).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = updates(cluster).await?;
        let busiest = now
            .iter()
            .filter_map(|(id, n)| {
                let b = before.iter().find(|(i, _)| i == id).map_or(0, |(_, b)| *b);
                (*n > b).then_some((n - b, *id))
            })
            .max();
        if let Some((_, id)) = busiest {
            return Ok(id);
        }
        if Instant::now() > deadline {
            bail!("{run}: no node received a console append within 30 s (counters {before:?} -> {now:?})");
        }
    }
}

impl FailoverReport {
    pub fn print(&self) {
        println!("JobServ failover benchmark (3 nodes, 1 Docker worker; this machine: 2 cores)");
        println!("  leader SIGKILL -> first write through a survivor, {} kills: p50 {:>7.0} ms   max {:>7.0} ms", self.leader_kills, self.failover_p50_ms, self.failover_max_ms);
        println!("  leader SIGTERM (hand-over) -> first write through a survivor, {} stops: p50 {:>7.0} ms   max {:>7.0} ms   ({} of them elected in the next term)", self.graceful_stops, self.graceful_stop_write_gap_p50_ms, self.graceful_stop_write_gap_max_ms, self.graceful_stops_next_term);
        println!("  streaming node SIGKILL -> worker's log grows again via another node, {} kills: p50 {:>7.0} ms   max {:>7.0} ms", self.worker_resumes, self.worker_resume_p50_ms, self.worker_resume_max_ms);
    }
}
