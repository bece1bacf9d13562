//! The chaos suite: real node and worker processes, real Docker runs, real SIGKILL/SIGTERM, wiped data
//! dirs. Each scenario runs a workload of builds whose runs print numbered lines over a few seconds, hits
//! the cluster while they run, and then checks what must hold whatever happened:
//!
//! - every run finished with its *true* result (`*-pass` runs PASSED, `*-fail` runs FAILED — or FAILED with
//!   the lost-worker reason when the scenario killed the worker holding it);
//! - no acknowledged console byte was lost or duplicated: each run's log holds each of its lines exactly
//!   once, in order;
//! - build numbers are gapless and unique;
//! - no run was executed twice: every container appends its run id to a shared file, one line per run.
//!
//! Alongside S3, S4, S5 and the soak, a [`Recorder`](crate::recorder::Recorder) writes and reads through every node and records each
//! operation; its history must be linearizable (`crate::history`), so a node serving a stale read fails the
//! scenario. [`stale_reads_are_caught`](crate::recorder::stale_reads_are_caught) shows the checker can fail.
use crate::harness::call;
use crate::local_cluster::{ClusterOptions, LocalCluster};
use crate::recorder::{with_history, Recorder};
use crate::stats::ms;
use anyhow::{bail, ensure, Context};
use rand::{Rng, SeedableRng};
use reqwest::Method;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const PROJECT: &str = "chaos";
const TRIGGER: &str = "chaos";

/// The workload: `runs` runs per build (half pass, half fail), each printing `lines` lines `pause` apart.
pub struct Workload {
    pub runs_per_build: usize,
    pub lines: usize,
    pub pause_ms: u64,
    /// Host directory mounted at /shared in every run (the execution ledger).
    pub shared: PathBuf,
}

impl Workload {
    pub fn definition(&self) -> String {
        let idx: Vec<String> = (1..=self.runs_per_build / 2)
            .map(|i| i.to_string())
            .collect();
        format!(
            r#"timeout: 5
triggers:
  - name: {TRIGGER}
    type: simple
    runs:
      - name: run-{{loop}}
        container: busybox:latest
        host-tag: chaos
        script: work
        loop-on:
          - param: IDX
            values: [{idx}]
          - param: RESULT
            values: [pass, fail]
        shared-volumes:
          {shared}: /shared
        params:
          LINES: "{lines}"
          PAUSE: "{pause}"
scripts:
  work: |
    #!/bin/sh
    echo "$H_PROJECT/$H_BUILD/$H_RUN" >> /shared/executions.log
    i=1
    while [ $i -le $LINES ]; do
      echo "line $i of $H_RUN"
      i=$((i+1))
      sleep $PAUSE
    done
    [ "$RESULT" = pass ]
"#,
            idx = idx.join(", "),
            shared = self.shared.display(),
            lines = self.lines,
            pause = self.pause_ms as f64 / 1000.0,
        )
    }
}

#[derive(Default, Debug)]
pub struct Verdict {
    pub builds: usize,
    pub runs: usize,
    pub log_lines: usize,
    pub lost_worker_runs: usize,
    /// The recorded client history, when the scenario recorded one (it was linearizable).
    pub history: Option<crate::history::Summary>,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} builds gapless, {} runs with their true result ({} failed as lost-worker), {} log lines each exactly once, one execution per run", self.builds, self.runs, self.lost_worker_runs, self.log_lines)?;
        if let Some(h) = &self.history {
            write!(f, ", {h}")?;
        }
        Ok(())
    }
}

/// Checks every invariant over builds 1..=n of the chaos project. `lost_workers` are workers the scenario
/// killed: runs they held may be FAILED with the lost-worker reason instead of their script's result.
pub async fn verify(
    cluster: &LocalCluster,
    workload: &Workload,
    n: u64,
    lost_workers: &[String],
) -> anyhow::Result<Verdict> {
    let mut verdict = Verdict::default();
    // Build numbers: 1..=n exactly.
    let (s, b) = cluster
        .api(
            Method::GET,
            &format!("/projects/{PROJECT}/builds/?limit=1000"),
            None,
        )
        .await?;
    ensure!(s == 200, "listing builds: {s} {b}");
    let numbers: Vec<u64> = b["data"]["builds"]
        .as_array()
        .context("builds")?
        .iter()
        .filter_map(|b| b["build_id"].as_u64())
        .collect();
    ensure!(
        numbers == (1..=n).rev().collect::<Vec<_>>(),
        "build numbers not gapless/unique: {numbers:?} (expected {n}..1)"
    );
    verdict.builds = numbers.len();
    // Every build must end before the execution ledger is read.
    let mut finished = Vec::new();
    for build in 1..=n {
        finished.push(
            cluster
                .wait_build(PROJECT, build, Duration::from_secs(240))
                .await?,
        );
    }
    let executions =
        std::fs::read_to_string(workload.shared.join("executions.log")).unwrap_or_default();
    let mut executed: BTreeMap<&str, usize> = BTreeMap::new();
    for line in executions.lines() {
        *executed.entry(line.trim()).or_default() += 1;
    }
    for (b, build) in finished.iter().zip(1..=n) {
        for run in b["runs"].as_array().context("runs")? {
            let name = run["name"].as_str().context("run name")?;
            let status = run["status"].as_str().unwrap_or("");
            let (s, detail) = cluster
                .api(
                    Method::GET,
                    &format!("/projects/{PROJECT}/builds/{build}/runs/{name}/"),
                    None,
                )
                .await?;
            ensure!(s == 200, "run {build}/{name}: {s}");
            let reason = detail["data"]["run"]["failure_reason"]
                .as_str()
                .unwrap_or("");
            let worker = detail["data"]["run"]["worker"].as_str().unwrap_or("");
            let lost = status == "FAILED"
                && reason.contains("stopped checking in")
                && lost_workers
                    .iter()
                    .any(|w| reason.contains(w.as_str()) || worker == w);
            let expected = if name.ends_with("-pass") {
                "PASSED"
            } else {
                "FAILED"
            };
            if lost {
                verdict.lost_worker_runs += 1;
            } else if status != expected {
                bail!("run {build}/{name} is {status} (reason {reason:?}), its true result is {expected}");
            }
            let id = format!("{PROJECT}/{build}/{name}");
            let count = executed.get(id.as_str()).copied().unwrap_or(0);
            ensure!(count <= 1, "run {id} was executed {count} times");
            if !lost {
                ensure!(count == 1, "run {id} has no execution record");
                verdict.log_lines += check_log(cluster, build, name, workload.lines).await?;
            }
            verdict.runs += 1;
        }
    }
    Ok(verdict)
}

/// The log of a completed run holds `line i of RUN` for i = 1..=lines, each exactly once and in order,
/// identical on every live node.
async fn check_log(
    cluster: &LocalCluster,
    build: u64,
    run: &str,
    lines: usize,
) -> anyhow::Result<usize> {
    let path = format!("/projects/{PROJECT}/builds/{build}/runs/{run}/console.log");
    // Reads are local: a node restarted a moment ago may still be applying the last entries. Give every
    // node up to 15 s to converge; a log that still differs then is a real divergence.
    let deadline = Instant::now() + Duration::from_secs(15);
    let reference = loop {
        let mut logs = Vec::new();
        for url in cluster.live_urls() {
            let (s, bytes) = cluster.text(&url, &path).await?;
            ensure!(s == 200, "{url}{path}: {s}");
            logs.push(bytes);
        }
        if logs.windows(2).all(|w| w[0] == w[1]) {
            break logs.into_iter().next();
        }
        ensure!(
            Instant::now() < deadline,
            "{path} still differs between nodes after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let log = String::from_utf8_lossy(reference.as_deref().unwrap_or_default()).to_string();
    let got: Vec<&str> = log.lines().filter(|l| l.starts_with("line ")).collect();
    let want: Vec<String> = (1..=lines).map(|i| format!("line {i} of {run}")).collect();
    if got != want {
        bail!("{path}: expected {} numbered lines exactly once in order, got {} (first difference at {:?})", want.len(), got.len(), got.iter().zip(&want).position(|(g, w)| g != w));
    }
    Ok(got.len())
}

/// Waits until at least `min` runs of the chaos project are RUNNING with some log.
pub async fn wait_running(
    cluster: &LocalCluster,
    build: u64,
    min: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, b) = cluster
            .api(
                Method::GET,
                &format!("/projects/{PROJECT}/builds/{build}/runs/"),
                None,
            )
            .await?;
        let running = b["data"]["runs"]
            .as_array()
            .map(|runs| {
                runs.iter()
                    .filter(|r| {
                        r["status"] == "RUNNING" && r["log_bytes"].as_u64().unwrap_or(0) > 0
                    })
                    .count()
            })
            .unwrap_or(0);
        if running >= min {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {running} runs running after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Time until a write succeeds through a surviving node after a kill.
pub async fn time_to_write(cluster: &LocalCluster, probe: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    loop {
        for url in cluster.live_urls() {
            let body = serde_json::json!({"name": probe});
            let attempt = Instant::now();
            let reply = call(
                &cluster.client,
                Method::POST,
                &format!("{url}/projects/"),
                &cluster.token,
                Some(body),
            )
            .await;
            if std::env::var_os("CLUSTER_TEST_DEBUG").is_some() {
                eprintln!(
                    "  +{:?} {url} -> {:?} after {:?}",
                    started.elapsed(),
                    reply.as_ref().map(|r| r.0).map_err(|e| e.to_string()),
                    attempt.elapsed()
                );
            }
            if let Ok((s, _)) = reply {
                if s == 201 || s == 409 {
                    return Ok(started.elapsed());
                }
            }
        }
        if Instant::now() > deadline {
            bail!("no write succeeded within 60s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct ScenarioReport {
    pub name: &'static str,
    pub verdict: Verdict,
    pub recovery: Vec<(String, Duration)>,
}

impl std::fmt::Display for ScenarioReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: PASS — {}", self.name, self.verdict)?;
        for (what, d) in &self.recovery {
            write!(f, "; {what} {:.0} ms", ms(*d))?;
        }
        Ok(())
    }
}

fn workload(dir: &Path, runs: usize) -> anyhow::Result<Workload> {
    let shared = dir.join("shared");
    std::fs::create_dir_all(&shared)?;
    Ok(Workload {
        runs_per_build: runs,
        lines: 20,
        pause_ms: 250,
        shared,
    })
}

pub(crate) async fn start(
    dir: &Path,
    bin_dir: &Path,
    opts: ClusterOptions,
) -> anyhow::Result<LocalCluster> {
    LocalCluster::up(&dir.join("cluster"), bin_dir, &opts).await
}

fn chaos_options() -> ClusterOptions {
    ClusterOptions {
        nodes: 3,
        workers: 2,
        executor: "docker".into(),
        worker_concurrency: 5,
        worker_timeout_secs: 10,
        requeue_lost_runs: false,
        partitionable: false,
        node_env: Vec::new(),
        restore_from: None,
    }
}

/// S3: SIGKILL the leader while 10 runs are in progress.
pub async fn leader_killed(dir: &Path, bin_dir: &Path) -> anyhow::Result<ScenarioReport> {
    let mut cluster = start(dir, bin_dir, chaos_options()).await?;
    let recorder = Recorder::start(&cluster).await?;
    let w = workload(dir, 10)?;
    let n = cluster.build(PROJECT, TRIGGER, &w.definition()).await?;
    wait_running(&cluster, n, 6, Duration::from_secs(60)).await?;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await?;
    cluster.node(leader)?.kill();
    let write = time_to_write(&cluster, "probe-s3").await?;
    let new_leader = cluster.wait_leader(Duration::from_secs(30)).await?;
    let verdict = with_history(verify(&cluster, &w, n, &[]).await, recorder).await?;
    cluster.kill_all();
    Ok(ScenarioReport {
        name: "S3 leader killed mid-run",
        verdict,
        recovery: vec![(
            format!(
                "leader {leader} SIGKILL -> write through a survivor (new leader {new_leader})"
            ),
            write,
        )],
    })
}

/// S5: cut the leader off from the other nodes and the workers mid-run. It must not commit anything (a
/// write sent straight to it fails with 503), the majority elects a leader and the workers move there;
/// after healing, the old leader catches up and its uncommitted write is gone.
pub async fn partition(dir: &Path, bin_dir: &Path) -> anyhow::Result<ScenarioReport> {
    let mut cluster = start(
        dir,
        bin_dir,
        ClusterOptions {
            partitionable: true,
            ..chaos_options()
        },
    )
    .await?;
    // The recorder talks to every node directly, so it also reads through the cut-off one (which must
    // answer 503, never its old state).
    let recorder = Recorder::start(&cluster).await?;
    let w = workload(dir, 10)?;
    let n = cluster.build(PROJECT, TRIGGER, &w.definition()).await?;
    wait_running(&cluster, n, 6, Duration::from_secs(60)).await?;
    let victim = cluster.wait_leader(Duration::from_secs(10)).await?;
    let direct = cluster.direct_url(victim)?;
    cluster.isolate(victim)?;
    let cut = Instant::now();
    // The majority side recovers.
    let majority = time_to_write(&cluster, "probe-s5").await?;
    // The minority side refuses, clearly, within its commit timeout.
    let started = Instant::now();
    let (s, body) = call(
        &cluster.client,
        Method::POST,
        &format!("{direct}/projects/"),
        &cluster.token,
        Some(serde_json::json!({"name": "split-brain"})),
    )
    .await?;
    let refused_after = started.elapsed();
    ensure!(
        s == 503,
        "the cut-off node answered a write with {s} {body}, not 503"
    );
    ensure!(
        body["status"] == "error" && body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "503 without a clear message: {body}"
    );
    let (s, _) = cluster
        .api(Method::GET, "/projects/split-brain/", None)
        .await?;
    ensure!(
        s == 404,
        "a write refused by the cut-off node exists on the majority"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.heal();
    let healed = Instant::now();
    // The old leader catches up: it serves the majority's probe and agrees there is no split-brain project.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, _) = call(
            &cluster.client,
            Method::GET,
            &format!("{direct}/projects/probe-s5/"),
            &cluster.token,
            None,
        )
        .await?;
        if s == 200 {
            break;
        }
        ensure!(Instant::now() < deadline, "the healed node never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let caught_up = healed.elapsed();
    let (s, _) = call(
        &cluster.client,
        Method::GET,
        &format!("{direct}/projects/split-brain/"),
        &cluster.token,
        None,
    )
    .await?;
    ensure!(
        s == 404,
        "the healed node kept a write that was never committed"
    );
    let verdict = with_history(verify(&cluster, &w, n, &[]).await, recorder).await?;
    let _ = cut;
    cluster.kill_all();
    Ok(ScenarioReport {
        name: "S5 leader partitioned from nodes and workers, then healed",
        verdict,
        recovery: vec![
            (
                format!("cut node {victim} -> write through the majority"),
                majority,
            ),
            (
                "cut-off node refused a write (503) after".into(),
                refused_after,
            ),
            ("heal -> old leader caught up".into(), caught_up),
        ],
    })
}

/// S4: restart every node in turn (SIGTERM, start again) while 20 runs are in progress.
pub async fn rolling_restart(dir: &Path, bin_dir: &Path) -> anyhow::Result<ScenarioReport> {
    let mut cluster = start(dir, bin_dir, chaos_options()).await?;
    let recorder = Recorder::start(&cluster).await?;
    let w = workload(dir, 10)?;
    let first = cluster.build(PROJECT, TRIGGER, &w.definition()).await?;
    let second = cluster.build(PROJECT, TRIGGER, &w.definition()).await?;
    wait_running(&cluster, first, 5, Duration::from_secs(60)).await?;
    let mut recovery = Vec::new();
    for id in 1..=3 {
        let node = cluster.node(id)?;
        node.terminate();
        node.spawn()?;
        let ready = node.wait_ready(Duration::from_secs(60)).await?;
        recovery.push((format!("node {id} SIGTERM -> serving again"), ready));
    }
    let verdict = with_history(verify(&cluster, &w, second, &[]).await, recorder).await?;
    cluster.kill_all();
    Ok(ScenarioReport {
        name: "S4 rolling restart during 20 runs",
        verdict,
        recovery,
    })
}

/// S10: a rolling upgrade across a storage-format bump while runs are in progress. The cluster starts on
/// binaries that read only format 1 (`JOBSERV_MAX_FORMAT=1`, i.e. the previous release); each node in turn
/// is stopped and started as the new release (reads the newest format, `codec::FORMAT_VERSION`). While any
/// old node remains, the cluster keeps writing format 1; once the last one is upgraded the leader raises it
/// to the newest, and work goes on.
pub async fn rolling_upgrade(dir: &Path, bin_dir: &Path) -> anyhow::Result<ScenarioReport> {
    let old = vec![("JOBSERV_MAX_FORMAT".to_string(), "1".to_string())];
    let mut cluster = start(
        dir,
        bin_dir,
        ClusterOptions {
            node_env: old,
            ..chaos_options()
        },
    )
    .await?;
    let w = workload(dir, 10)?;
    let first = cluster.build(PROJECT, TRIGGER, &w.definition()).await?;
    wait_running(&cluster, first, 5, Duration::from_secs(60)).await?;
    let mut recovery = Vec::new();
    for id in 1..=3 {
        let format = storage_format(&cluster).await?;
        ensure!(
            format == 1,
            "format raised to {format} while node {id} still runs the old release"
        );
        let node = cluster.node(id)?;
        node.terminate();
        node.env.clear(); // the new release
        node.spawn()?;
        recovery.push((
            format!("node {id} upgraded -> serving"),
            node.wait_ready(Duration::from_secs(60)).await?,
        ));
    }
    let upgraded = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    let newest = u64::from(jobserv_raft::codec::FORMAT_VERSION);
    while storage_format(&cluster).await? != newest {
        ensure!(
            Instant::now() < deadline,
            "the storage format was never raised after the last node was upgraded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    recovery.push((
        format!("last upgrade -> format {newest} agreed"),
        upgraded.elapsed(),
    ));
    // Every node now writes the newest format, and work goes on across the bump (with format 3, check-ins
    // assign through `AssignNext`).
    for url in cluster.live_urls() {
        let (_, b) = call(
            &cluster.client,
            Method::GET,
            &format!("{url}/cluster/?stale=1"),
            &cluster.token,
            None,
        )
        .await?;
        ensure!(
            b["data"]["storage_format_written"] == newest,
            "{url} still writes format {}",
            b["data"]["storage_format_written"]
        );
    }
    let second = cluster.build(PROJECT, TRIGGER, &w.definition()).await?;
    let verdict = verify(&cluster, &w, second, &[]).await?;
    cluster.kill_all();
    Ok(ScenarioReport {
        name: "S10 rolling upgrade across storage-format bumps (1 -> newest)",
        verdict,
        recovery,
    })
}

async fn storage_format(cluster: &LocalCluster) -> anyhow::Result<u64> {
    let (s, b) = cluster.api(Method::GET, "/cluster/", None).await?;
    ensure!(s == 200, "/cluster/: {s}");
    b["data"]["storage_format"]
        .as_u64()
        .context("storage_format")
}

/// S6: SIGKILL a worker mid-run: its runs FAIL with a reason within the timeout, the build completes, and
/// the worker, restarted, cannot write to those runs.
pub async fn worker_killed(dir: &Path, bin_dir: &Path) -> anyhow::Result<ScenarioReport> {
    let mut cluster = start(dir, bin_dir, chaos_options()).await?;
    let w = workload(dir, 10)?;
    let n = cluster.build(PROJECT, TRIGGER, &w.definition()).await?;
    wait_running(&cluster, n, 6, Duration::from_secs(60)).await?;
    let killed_at = Instant::now();
    cluster.workers[0].kill();
    let victim = cluster.workers[0].name.clone();
    // Wait for the first run of the victim to be released.
    let deadline = Instant::now() + Duration::from_secs(90);
    let detect = loop {
        let (_, b) = cluster
            .api(
                Method::GET,
                &format!("/projects/{PROJECT}/builds/{n}/runs/"),
                None,
            )
            .await?;
        let released = b["data"]["runs"].as_array().is_some_and(|runs| {
            runs.iter().any(|r| {
                r["failure_reason"]
                    .as_str()
                    .is_some_and(|s| s.contains("stopped checking in"))
            })
        });
        if released {
            break killed_at.elapsed();
        }
        ensure!(
            Instant::now() < deadline,
            "the lost worker's runs were never released"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The worker comes back: it must not be able to complete the runs it lost.
    cluster.workers[0].spawn()?;
    let verdict = verify(&cluster, &w, n, &[victim]).await?;
    ensure!(
        verdict.lost_worker_runs > 0,
        "no run was held by the killed worker"
    );
    cluster.kill_all();
    Ok(ScenarioReport {
        name: "S6 worker killed mid-run",
        verdict,
        recovery: vec![(
            "worker SIGKILL -> its runs FAILED (timeout 10 s)".into(),
            detect,
        )],
    })
}

/// S9: wipe a follower's data dir and start it again: it rejoins from a snapshot.
pub async fn wiped_node_rejoins(dir: &Path, bin_dir: &Path) -> anyhow::Result<ScenarioReport> {
    let mut cluster = start(dir, bin_dir, chaos_options()).await?;
    let w = workload(dir, 4)?;
    let n = cluster.build(PROJECT, TRIGGER, &w.definition()).await?;
    cluster
        .wait_build(PROJECT, n, Duration::from_secs(120))
        .await?;
    // Every node compacts its log (so the wiped node can only catch up from a snapshot, whoever leads
    // then), a follower is wiped and started again; it must install a snapshot and catch up.
    let rejoin =
        crate::rejoin::wipe_follower_and_rejoin(&mut cluster, 0, Duration::from_secs(120)).await?;
    ensure!(
        rejoin.respawns == 0,
        "the wiped node exited {} time(s) during its catch-up",
        rejoin.respawns
    );
    let (victim, caught_up) = (rejoin.victim, rejoin.caught_up);
    let verdict = verify(&cluster, &w, n, &[]).await?;
    cluster.kill_all();
    Ok(ScenarioReport {
        name: "S9 wiped node rejoins from a snapshot",
        verdict,
        recovery: vec![(format!("node {victim} wiped -> caught up"), caught_up)],
    })
}

/// Randomised soak: kill a random node every few seconds (seeded), restart it, under continuous builds.
pub async fn soak(
    dir: &Path,
    bin_dir: &Path,
    seconds: u64,
    seed: u64,
) -> anyhow::Result<ScenarioReport> {
    let mut cluster = start(dir, bin_dir, chaos_options()).await?;
    let recorder = Recorder::start(&cluster).await?;
    let w = Workload {
        lines: 8,
        pause_ms: 150,
        ..workload(dir, 4)?
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut builds = 0;
    let mut recovery = Vec::new();
    // Every term is one election (or one failed campaign); killing the leader needs one. The terms beyond
    // the leader kills are elections nobody asked for: what too-tight timeouts on a loaded machine cause.
    let first_term = crate::bench::term(&cluster).await;
    let mut leader_kills = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        builds = cluster.build(PROJECT, TRIGGER, &w.definition()).await?;
        let victim = rng.gen_range(1..=3u64);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..2500))).await;
        if cluster.wait_leader(Duration::from_secs(10)).await? == victim {
            leader_kills += 1;
        }
        cluster.node(victim)?.kill();
        let write = time_to_write(&cluster, &format!("probe-{builds}")).await?;
        recovery.push((format!("kill node {victim} -> write"), write));
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1500))).await;
        let node = cluster.node(victim)?;
        node.spawn()?;
        node.wait_ready(Duration::from_secs(60)).await?;
    }
    let terms = crate::bench::term(&cluster)
        .await
        .saturating_sub(first_term);
    let verdict = with_history(verify(&cluster, &w, builds, &[]).await, recorder).await?;
    cluster.kill_all();
    let mut gaps: Vec<Duration> = recovery.iter().map(|(_, d)| *d).collect();
    let kills = gaps.len();
    let median = crate::stats::percentile(&mut gaps, 50.0);
    let worst = crate::stats::percentile(&mut gaps, 100.0);
    Ok(ScenarioReport {
        name: "soak (random SIGKILL under continuous builds)",
        verdict,
        recovery: vec![
            (
                format!("{kills} kills (seed {seed}), {leader_kills} of the leader; {terms} new terms (elections), {} beyond one per leader kill; median kill -> write", terms.saturating_sub(leader_kills)),
                median,
            ),
            (format!("worst kill -> write of the {kills}"), worst),
        ],
    })
}
