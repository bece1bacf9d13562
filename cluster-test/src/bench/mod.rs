//! `cluster-test bench`: one benchmark suite for the whole system, measured the same way every time on a
//! real 3-node cluster of separate processes on this machine (the benchmark client shares its cores).
//!
//! Every figure has a fixed key (see [`KEYS`]); `--json` writes exactly those keys, numbers only, units in
//! the names. Each measurement lives in its own file and says its workload next to its figure:
//!
//! | file | keys |
//! | --- | --- |
//! | `commit.rs` | `commit_writes_per_s`, `commit_p99_ms` (32 clients), `commit_writes_per_s_256_clients`, `commit_p99_ms_256_clients` |
//! | `checkin.rs` | `checkins_per_s_1000_workers`, `checkin_p99_ms_1000_workers`, `node_rss_mb_1000_workers`, and the scaling table (100 → 1000 → 5000 simulated workers) |
//! | `dispatch.rs` | `dispatch_runs_per_s`, `dispatch_runs_per_s_20000_queued` |
//! | `logs.rs` | `log_ingest_mb_per_s`, `log_tail_lag_p99_ms` |
//! | `trigger.rs` | `trigger_to_running_p50_ms` (a real Docker worker) |
//! | `lost_worker.rs` | `lost_worker_detect_s` (a real Docker worker SIGKILLed) |
//! | `failover.rs` | `failover_p50_ms`, `failover_max_ms` |
//! | `reads.rs` | `read_p99_ms_leader`, `read_p99_ms_follower`, `reads_per_s` (linearizable reads) |
//! | `history.rs` | `builds_10k_list_p99_ms`, `snapshot_install_s_100k_runs` |
//!
//! Simulated workers (`sim.rs`) are tokio tasks speaking the real worker protocol over HTTPS through a few
//! shared connection pools; real workers (`jobserv-worker` processes, Docker executor) are used where the
//! figure is end to end. `--quick` scales the workloads down (and says how) but still emits every key.
//! Phases run one after the other on the same cluster, in the order of [`run`]: later phases see the
//! simulated workers registered by earlier ones (as a real installation would).
pub mod artifacts;
pub mod checkin;
pub mod commit;
pub mod dispatch;
pub mod failover;
pub mod history;
pub mod logs;
pub mod lost_worker;
pub mod reads;
pub mod sim;
pub mod trigger;

use crate::local_cluster::{ClusterOptions, LocalCluster};
use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// The keys of the JSON object, in the order they are printed.
pub const KEYS: [&str; 23] = [
    "commit_writes_per_s",
    "commit_p99_ms",
    "commit_writes_per_s_256_clients",
    "commit_p99_ms_256_clients",
    "read_p99_ms_leader",
    "read_p99_ms_follower",
    "reads_per_s",
    "checkins_per_s_1000_workers",
    "checkin_p99_ms_1000_workers",
    "dispatch_runs_per_s",
    "dispatch_runs_per_s_20000_queued",
    "trigger_to_running_p50_ms",
    "log_ingest_mb_per_s",
    "log_tail_lag_p99_ms",
    "lost_worker_detect_s",
    "failover_p50_ms",
    "failover_max_ms",
    "node_rss_mb_idle",
    "node_rss_mb_1000_workers",
    "builds_10k_list_p99_ms",
    "snapshot_install_s_100k_runs",
    "artifact_upload_mib_per_s",
    "artifact_download_mib_per_s",
];

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub quick: bool,
}

/// The sizes of every workload; `--quick` scales them down.
#[derive(Clone, Debug)]
pub struct Plan {
    pub quick: bool,
    /// Client counts of the commit phase: the first gives `commit_writes_per_s`/`commit_p99_ms`, the
    /// second the `_256_clients` keys (etcd's published write figure is at 256 clients).
    pub commit_clients: [usize; 2],
    pub commit_seconds: u64,
    /// Size of the artifact the artifact phase uploads and downloads.
    pub artifact_mib: u64,
    pub scale_levels: Vec<usize>,
    pub scale_seconds: u64,
    pub checkin_pause: Duration,
    pub dispatch_runs: usize,
    pub dispatch_deep_runs: usize,
    pub dispatch_workers: usize,
    pub log_runs: usize,
    pub log_seconds: u64,
    pub log_chunk: usize,
    pub log_viewers: usize,
    pub trigger_samples: usize,
    pub worker_timeout_secs: u64,
    pub failover_kills: usize,
    pub history_builds: usize,
    pub runs_per_build: usize,
    pub list_samples: usize,
    pub read_samples: usize,
    pub read_clients: usize,
    pub read_seconds: u64,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        Plan {
            quick,
            commit_clients: [32, 256],
            commit_seconds: if quick { 4 } else { 10 },
            artifact_mib: if quick { 64 } else { 1024 },
            scale_levels: if quick {
                vec![100, 1000]
            } else {
                vec![100, 1000, 5000]
            },
            scale_seconds: if quick { 6 } else { 15 },
            checkin_pause: Duration::from_secs(1),
            dispatch_runs: if quick { 500 } else { 2000 },
            dispatch_deep_runs: if quick { 2000 } else { 20_000 },
            dispatch_workers: 30,
            log_runs: 50,
            log_seconds: if quick { 4 } else { 10 },
            log_chunk: if quick { 4 * 1024 } else { 64 * 1024 },
            log_viewers: 5,
            trigger_samples: if quick { 5 } else { 20 },
            worker_timeout_secs: if quick { 10 } else { 30 },
            failover_kills: if quick { 3 } else { 10 },
            history_builds: if quick { 1_000 } else { 10_000 },
            runs_per_build: 10,
            list_samples: if quick { 100 } else { 300 },
            read_samples: if quick { 200 } else { 1000 },
            read_clients: 64,
            read_seconds: if quick { 3 } else { 10 },
        }
    }

    /// What `--quick` scaled down, for the output.
    pub fn scaled_down(&self) -> Option<String> {
        let full = Plan::new(false);
        self.quick.then(|| {
            format!(
                "--quick: workers {:?} (full {:?}), {} s per level (full {}), {} and {} dispatch runs (full {} and {}), {} builds / {} runs of history (full {} / {}), {} failover kills (full {}), worker timeout {} s (full {} s, the node default), {} trigger samples (full {}), commit {} s and log {} s windows (full {} / {}), {} KiB log chunks (full {}), {} sequential reads per path and a {} s read window (full {} / {})",
                self.scale_levels,
                full.scale_levels,
                self.scale_seconds,
                full.scale_seconds,
                self.dispatch_runs,
                self.dispatch_deep_runs,
                full.dispatch_runs,
                full.dispatch_deep_runs,
                self.history_builds,
                self.history_builds * self.runs_per_build,
                full.history_builds,
                full.history_builds * full.runs_per_build,
                self.failover_kills,
                full.failover_kills,
                self.worker_timeout_secs,
                full.worker_timeout_secs,
                self.trigger_samples,
                full.trigger_samples,
                self.commit_seconds,
                self.log_seconds,
                full.commit_seconds,
                full.log_seconds,
                self.log_chunk / 1024,
                full.log_chunk / 1024,
                self.read_samples,
                self.read_seconds,
                full.read_samples,
                full.read_seconds
            )
        })
    }
}

/// One figure with the workload that produced it.
#[derive(Clone, Debug)]
pub struct Figure {
    pub key: &'static str,
    pub value: f64,
    pub workload: String,
}

/// How check-in figures change with the number of simulated workers.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ScaleRow {
    pub workers: usize,
    pub register_per_s: f64,
    pub checkins_per_s: f64,
    pub offered_per_s: f64,
    pub checkin_p50_ms: f64,
    pub checkin_p99_ms: f64,
    pub errors: u64,
    pub node_rss_mb_max: f64,
    pub node_cpu_ms_per_checkin: f64,
    pub nodes_cpu_pct: f64,
    pub client_cpu_pct: f64,
}

pub struct BenchReport {
    pub quick: bool,
    pub cores: usize,
    pub figures: Vec<Figure>,
    pub scaling: Vec<ScaleRow>,
    pub notes: Vec<String>,
    pub elapsed: Duration,
}

impl BenchReport {
    /// Exactly the keys of [`KEYS`], numbers only.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for key in KEYS {
            if let Some(f) = self.figures.iter().find(|f| f.key == key) {
                let value = if f.value.is_finite() { f.value } else { 0.0 };
                map.insert(key.to_string(), json!((value * 1000.0).round() / 1000.0));
            }
        }
        serde_json::Value::Object(map)
    }

    pub fn missing(&self) -> Vec<&'static str> {
        KEYS.iter()
            .copied()
            .filter(|k| !self.figures.iter().any(|f| f.key == *k))
            .collect()
    }

    pub fn print(&self) {
        let mode = if self.quick { "quick" } else { "full" };
        println!();
        println!("JobServ benchmark ({mode} run, {:.0} s): 3 node processes + the benchmark client on this machine, {} cores shared; fsync on", self.elapsed.as_secs_f64(), self.cores);
        for note in &self.notes {
            println!("  note: {note}");
        }
        println!();
        println!(
            "{:<30} {:>12}  workload ({} cores shared)",
            "key", "value", self.cores
        );
        println!("{}", "-".repeat(120));
        for f in &self.figures {
            println!(
                "{:<30} {:>12}  {}",
                f.key,
                format_value(f.value),
                f.workload
            );
        }
        println!();
        println!("Scaling: simulated workers each checking in (wait=0, 1 free slot, enlisted) then pausing 1 s; spread over the 3 nodes; {} cores shared", self.cores);
        println!(
            "{:>8} {:>12} {:>12} {:>12} {:>10} {:>10} {:>7} {:>12} {:>14} {:>10} {:>10}",
            "workers",
            "register/s",
            "offered/s",
            "checkins/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "RSS MiB max",
            "node CPU ms/ci",
            "nodes CPU",
            "client CPU"
        );
        let base = self.scaling.first().cloned();
        for row in &self.scaling {
            println!(
                "{:>8} {:>12.0} {:>12.0} {:>12.0} {:>10.2} {:>10.2} {:>7} {:>12.1} {:>14.3} {:>9.0}% {:>9.0}%",
                row.workers,
                row.register_per_s,
                row.offered_per_s,
                row.checkins_per_s,
                row.checkin_p50_ms,
                row.checkin_p99_ms,
                row.errors,
                row.node_rss_mb_max,
                row.node_cpu_ms_per_checkin,
                row.nodes_cpu_pct,
                row.client_cpu_pct
            );
        }
        if let (Some(base), Some(last)) = (base, self.scaling.last()) {
            if last.workers > base.workers {
                let x = last.workers as f64 / base.workers as f64;
                let served = last.checkins_per_s / base.checkins_per_s.max(1e-9);
                let lat = last.checkin_p99_ms / base.checkin_p99_ms.max(1e-9);
                let cost = last.node_cpu_ms_per_checkin / base.node_cpu_ms_per_checkin.max(1e-9);
                let verdict = if served < 0.8 * x || lat > 3.0 || cost > 2.0 {
                    "CLIFF: not linear/flat"
                } else {
                    "linear throughput, flat latency and cost"
                };
                println!("  {:.0}x workers -> {:.1}x check-ins served, {:.1}x p99 latency, {:.1}x CPU per check-in: {verdict}", x, served, lat, cost);
            }
        }
    }
}

fn format_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A project definition whose trigger `t` makes `runs` runs (loop-on) with `host_tag` running `script`.
pub fn definition(host_tag: &str, runs: usize, script: &str) -> String {
    let values: Vec<String> = (0..runs).map(|i| format!("r{i}")).collect();
    format!(
        "timeout: 5\ntriggers:\n  - name: t\n    type: simple\n    runs:\n      - name: run-{{loop}}\n        container: busybox:latest\n        host-tag: {host_tag}\n        script: s\n        loop-on:\n          - param: N\n            values: [{}]\nscripts:\n  s: |\n    #!/bin/sh\n    {script}\n",
        values.join(", ")
    )
}

/// A definition with exactly one run named `r`.
pub fn single_run_definition(host_tag: &str, script: &str) -> String {
    format!("timeout: 5\ntriggers:\n  - name: t\n    type: simple\n    runs:\n      - name: r\n        container: busybox:latest\n        host-tag: {host_tag}\n        script: s\nscripts:\n  s: |\n    #!/bin/sh\n    {script}\n")
}

/// Creates project `name` (ignoring "exists").
pub async fn ensure_project(cluster: &LocalCluster, name: &str) -> anyhow::Result<()> {
    let (s, b) = cluster
        .api(Method::POST, "/projects/", Some(json!({"name": name})))
        .await?;
    if s != 201 && s != 409 {
        bail!("create project {name}: {s} {b}");
    }
    Ok(())
}

/// CPU time (user + system) of a process so far, from /proc.
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 1000 / clock_ticks())
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// CPU time of every live node process together, and of this process.
pub fn cpu_sample(cluster: &LocalCluster) -> (Duration, Duration) {
    let nodes = cluster
        .nodes
        .iter()
        .filter_map(|n| n.pid())
        .map(cpu_time)
        .sum();
    (nodes, cpu_time(std::process::id()))
}

/// The largest resident set among the live nodes, and each node's, in MiB.
pub fn rss(cluster: &LocalCluster) -> (f64, Vec<(u64, f64)>) {
    let each: Vec<(u64, f64)> = cluster
        .nodes
        .iter()
        .filter_map(|n| Some((n.config.id, n.rss_mb()?)))
        .collect();
    (each.iter().map(|(_, r)| *r).fold(0.0, f64::max), each)
}

pub fn describe_rss(each: &[(u64, f64)]) -> String {
    each.iter()
        .map(|(id, r)| format!("node {id} {r:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs the whole suite on a fresh cluster under `dir`.
pub async fn run(dir: &Path, bin_dir: &Path, opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    let plan = Plan::new(opts.quick);
    let started = Instant::now();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mut figures = Vec::new();
    let mut notes = vec![format!("every figure: 3 jobserv-node processes + 2 jobserv-worker processes (Docker) + this client, all on this machine's {cores} cores")];
    if let Some(s) = plan.scaled_down() {
        notes.push(s);
    }
    let say = |what: &str| println!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());

    say("starting 3 nodes and 2 Docker workers");
    let options = ClusterOptions {
        nodes: 3,
        workers: 2,
        executor: "docker".into(),
        worker_concurrency: 2,
        worker_timeout_secs: plan.worker_timeout_secs,
        requeue_lost_runs: false,
        ..Default::default()
    };
    let mut cluster = LocalCluster::up(&dir.join("cluster"), bin_dir, &options)
        .await
        .context("starting the cluster")?;
    let fleet = sim::Fleet::new(&cluster, 4)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle, each) = rss(&cluster);
    figures.push(Figure {
        key: "node_rss_mb_idle",
        value: idle,
        workload: format!(
            "largest of the 3 nodes, MiB, cluster up with 2 idle long-polling workers ({})",
            describe_rss(&each)
        ),
    });

    for (i, clients) in plan.commit_clients.into_iter().enumerate() {
        say(&format!(
            "commit: concurrent console appends, {clients} clients"
        ));
        let keys = if i == 0 {
            ["commit_writes_per_s", "commit_p99_ms"]
        } else {
            [
                "commit_writes_per_s_256_clients",
                "commit_p99_ms_256_clients",
            ]
        };
        figures.extend(
            commit::run(&cluster, &fleet, &plan, clients, keys)
                .await
                .context("commit")?,
        );
    }

    say("linearizable reads: leader, follower, 64 clients");
    figures.extend(reads::run(&cluster, &plan).await.context("reads")?);

    say("check-in scaling");
    let (scale_figures, scaling) = checkin::run(&cluster, &fleet, &plan, &say)
        .await
        .context("check-in scaling")?;
    figures.extend(scale_figures);

    say("dispatch from a deep queue");
    figures.extend(
        dispatch::run(&cluster, &fleet, &plan)
            .await
            .context("dispatch")?,
    );

    say("artifacts: upload and download throughput");
    figures.extend(artifacts::run(&cluster, &plan).await.context("artifacts")?);

    say("log ingest and live tail");
    figures.extend(logs::run(&cluster, &fleet, &plan).await.context("logs")?);

    say("trigger -> RUNNING on a real Docker worker");
    figures.extend(
        trigger::run(&cluster, &plan)
            .await
            .context("trigger to running")?,
    );

    say("lost worker detection (SIGKILL a real worker mid-run)");
    figures.extend(
        lost_worker::run(&mut cluster, &plan)
            .await
            .context("lost worker")?,
    );

    say("leader fail-over");
    figures.extend(
        failover::run(&mut cluster, &plan)
            .await
            .context("failover")?,
    );

    say("history: many builds, list pages, wiped node catch-up");
    figures.extend(
        history::run(&mut cluster, &plan, &say)
            .await
            .context("history")?,
    );

    cluster.kill_all();
    let order = |k: &str| KEYS.iter().position(|x| *x == k).unwrap_or(usize::MAX);
    figures.sort_by_key(|f| order(f.key));
    Ok(BenchReport {
        quick: opts.quick,
        cores,
        figures,
        scaling,
        notes,
        elapsed: started.elapsed(),
    })
}

/// The highest Raft term any live node reports (each its own view, `stale=1`): a phase that raises it
/// caused leader elections.
pub async fn term(cluster: &LocalCluster) -> u64 {
    let mut term = 0;
    for url in cluster.live_urls() {
        if let Ok(view) = crate::harness::own_view(&cluster.client, &url, &cluster.token).await {
            term = term.max(view["term"].as_u64().unwrap_or(0));
        }
    }
    term
}
