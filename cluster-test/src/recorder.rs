//! The recorded client history of a chaos scenario: a task that, while the scenario disrupts the
//! cluster, creates builds and reads builds, run statuses and console logs through every node in turn
//! (each node's own listener, bypassing any fault-injecting proxy, so a cut-off node is read too), and
//! records every operation for `history::History::check` (linearizability per key).
use crate::chaos::{start, Verdict, PROJECT};
use crate::harness::call;
use crate::history::{self, builds_key, console_key, rank, run_key, History, Model, Outcome};
use crate::local_cluster::{ClusterOptions, LocalCluster};
use anyhow::{anyhow, bail, ensure, Context};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The project whose build numbers are the recorder's counter (the chaos project's builds must stay
/// gapless 1..=n for `verify`, so the recorder never creates those).
pub const HISTORY_PROJECT: &str = "history";
const HISTORY_TRIGGER: &str = "history";
const HISTORY_RUN: &str = "probe";
/// One run on a host tag no worker serves: it stays QUEUED until the recorder cancels it.
const HISTORY_YAML: &str = "timeout: 5\ntriggers:\n  - name: history\n    type: simple\n    runs:\n      - name: probe\n        container: busybox:latest\n        host-tag: history-unserved\n        script: s\nscripts:\n  s: |\n    #!/bin/sh\n    true\n";
/// Below every chaos run, so a probe run left QUEUED (its cancel lost) never delays the workload.
const HISTORY_PRIORITY: i32 = -1000;
/// Between two rounds of the recorder (a round is ~7 operations).
const RECORD_PAUSE: Duration = Duration::from_millis(150);
/// Longer than a node's 10 s before a 503 (no quorum, no reachable leader).
const OP_TIMEOUT: Duration = Duration::from_secs(20);

/// A node as the recorder addresses it: its own listener, bypassing any fault-injecting proxy.
#[derive(Clone, Debug)]
struct Target {
    id: u64,
    label: String,
    url: String,
}

fn targets(cluster: &LocalCluster) -> Vec<Target> {
    cluster
        .nodes
        .iter()
        .map(|n| {
            let url = format!("https://{}", n.config.listen);
            Target {
                id: n.config.id,
                label: format!("node {} {url}", n.config.id),
                url,
            }
        })
        .collect()
}

/// Why an operation got no reply; `sent` is false when the request surely never reached the node.
struct Failure {
    sent: bool,
    why: String,
}

fn message(b: &Value) -> String {
    let m = b["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| b.to_string());
    m.chars().take(160).collect()
}

/// Client operations, each recorded in `history` with its invoke and complete instants.
#[derive(Clone)]
struct Probe {
    client: reqwest::Client,
    token: String,
    history: History,
    stop: watch::Receiver<bool>,
}

impl Probe {
    fn new(cluster: &LocalCluster, history: History, stop: watch::Receiver<bool>) -> Probe {
        Probe {
            client: cluster.client.clone(),
            token: cluster.token.clone(),
            history,
            stop,
        }
    }

    /// Runs one request with a timeout, giving up when the recorder is stopped.
    async fn attempt<T>(
        &self,
        request: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> Result<T, Failure> {
        let mut stop = self.stop.clone();
        tokio::select! {
            reply = tokio::time::timeout(OP_TIMEOUT, request) => match reply {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => {
                    let not_sent = e.chain().any(|c| {
                        c.downcast_ref::<reqwest::Error>().is_some_and(|r| r.is_connect())
                    });
                    let why: String = format!("{e:#}").chars().take(200).collect();
                    Err(Failure { sent: !not_sent, why })
                }
                Err(_) => Err(Failure { sent: true, why: format!("no answer within {OP_TIMEOUT:?}") }),
            },
            _ = stop.wait_for(|s| *s) => Err(Failure { sent: true, why: "recorder stopped".into() }),
        }
    }

    async fn json(
        &self,
        method: Method,
        url: String,
        body: Option<Value>,
    ) -> Result<(u16, Value), Failure> {
        self.attempt(call(&self.client, method, &url, &self.token, body))
            .await
    }

    /// Creates a build of the history project through `t`: a write of its number (and of its run, QUEUED).
    async fn create_build(&self, t: &Target) -> Option<u64> {
        let body = json!({
            "trigger-name": HISTORY_TRIGGER,
            "project-definition": HISTORY_YAML,
            "queue-priority": HISTORY_PRIORITY,
        });
        let invoke = Instant::now();
        let reply = self
            .json(
                Method::POST,
                format!("{}/projects/{HISTORY_PROJECT}/builds/", t.url),
                Some(body),
            )
            .await;
        let complete = Instant::now();
        let outcome = match reply {
            Ok((201, b)) => match b["data"]["build_id"].as_u64() {
                Some(n) => Outcome::Ok(n),
                None => Outcome::Unknown(None, format!("201 without a build_id: {b}")),
            },
            Ok((s, b)) if s < 500 => Outcome::Failed(format!("{s} {}", message(&b))),
            Ok((s, b)) => Outcome::Unknown(None, format!("{s} {}", message(&b))),
            Err(f) if !f.sent => Outcome::Failed(f.why),
            Err(f) => Outcome::Unknown(None, f.why),
        };
        let number = match outcome {
            Outcome::Ok(n) => Some(n),
            _ => None,
        };
        self.history.write(
            &builds_key(HISTORY_PROJECT),
            &t.label,
            invoke,
            complete,
            outcome,
        );
        if let Some(n) = number {
            self.history.write(
                &run_key(HISTORY_PROJECT, n, HISTORY_RUN),
                &t.label,
                invoke,
                complete,
                Outcome::Ok(rank::QUEUED),
            );
        }
        number
    }

    /// Cancels the (QUEUED) run of a history build through `t`: a write of its status, terminal. Keeps the
    /// queue short, too.
    async fn cancel(&self, t: &Target, build: u64) {
        let invoke = Instant::now();
        let reply = self
            .json(
                Method::POST,
                format!(
                    "{}/projects/{HISTORY_PROJECT}/builds/{build}/runs/{HISTORY_RUN}/cancel",
                    t.url
                ),
                None,
            )
            .await;
        let complete = Instant::now();
        let outcome = match reply {
            Ok((200, _)) => Outcome::Ok(rank::DONE),
            Ok((s, b)) if s < 500 => Outcome::Failed(format!("{s} {}", message(&b))),
            Ok((s, b)) => Outcome::Unknown(Some(rank::DONE), format!("{s} {}", message(&b))),
            Err(f) if !f.sent => Outcome::Failed(f.why),
            Err(f) => Outcome::Unknown(Some(rank::DONE), f.why),
        };
        self.history.write(
            &run_key(HISTORY_PROJECT, build, HISTORY_RUN),
            &t.label,
            invoke,
            complete,
            outcome,
        );
    }

    /// The newest build number of `project` through `t` (0 when the node knows no build or no project).
    async fn read_latest(&self, t: &Target, project: &str) -> Option<u64> {
        let invoke = Instant::now();
        let reply = self
            .json(
                Method::GET,
                format!("{}/projects/{project}/builds/?limit=1", t.url),
                None,
            )
            .await;
        let complete = Instant::now();
        let value = match reply {
            Ok((200, b)) => match b["data"]["builds"].as_array() {
                Some(list) => match list.first() {
                    None => Ok(0),
                    Some(build) => build["build_id"]
                        .as_u64()
                        .ok_or_else(|| format!("a build without build_id: {build}")),
                },
                None => Err(format!("200 without builds: {b}")),
            },
            Ok((404, _)) => Ok(0),
            Ok((s, b)) => Err(format!("{s} {}", message(&b))),
            Err(f) => Err(f.why),
        };
        let latest = value.as_ref().ok().copied();
        self.history
            .read(&builds_key(project), &t.label, invoke, complete, value);
        latest
    }

    /// A run's status through `t` (and, with `log`, its `log_bytes` as a read of the console length).
    async fn read_run(&self, t: &Target, project: &str, build: u64, run: &str, log: bool) {
        let invoke = Instant::now();
        let reply = self
            .json(
                Method::GET,
                format!("{}/projects/{project}/builds/{build}/runs/{run}/", t.url),
                None,
            )
            .await;
        let complete = Instant::now();
        let (status, length) = match reply {
            Ok((200, b)) => {
                let r = &b["data"]["run"];
                let status = r["status"].as_str().unwrap_or("");
                (
                    history::status_rank(status).ok_or_else(|| format!("status {status:?}")),
                    r["log_bytes"]
                        .as_u64()
                        .ok_or_else(|| format!("no log_bytes: {r}")),
                )
            }
            Ok((404, _)) => (Ok(rank::ABSENT), Ok(0)),
            Ok((s, b)) => {
                let why = format!("{s} {}", message(&b));
                (Err(why.clone()), Err(why))
            }
            Err(f) => (Err(f.why.clone()), Err(f.why)),
        };
        self.history.read(
            &run_key(project, build, run),
            &t.label,
            invoke,
            complete,
            status,
        );
        if log {
            self.history.read(
                &console_key(project, build, run),
                &t.label,
                invoke,
                complete,
                length,
            );
        }
    }

    /// A run's console log through `t`: a read of its bytes (checked as a prefix of every longer read).
    async fn read_console(&self, t: &Target, project: &str, build: u64, run: &str) {
        let url = format!(
            "{}/projects/{project}/builds/{build}/runs/{run}/console.log",
            t.url
        );
        let request = async {
            let r = self
                .client
                .get(&url)
                .header("Authorization", format!("Token {}", self.token))
                .send()
                .await?;
            let status = r.status().as_u16();
            let offset = r
                .headers()
                .get(jobserv_protocol::api::HEADER_OFFSET)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let bytes = r.bytes().await?;
            anyhow::Ok((status, offset, bytes))
        };
        let invoke = Instant::now();
        let reply = self.attempt(request).await;
        let complete = Instant::now();
        let bytes: Result<Vec<u8>, String> = match reply {
            // A QUEUED run without output answers a placeholder line at offset 0: its log is empty.
            Ok((200, Some(0), _)) => Ok(Vec::new()),
            Ok((200, _, bytes)) => Ok(bytes.to_vec()),
            Ok((404, _, _)) => Ok(Vec::new()),
            Ok((s, _, body)) => Err(format!(
                "{s} {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(160)
                    .collect::<String>()
            )),
            Err(f) => Err(f.why),
        };
        self.history.read_log(
            &console_key(project, build, run),
            &t.label,
            invoke,
            complete,
            bytes.as_deref().map_err(|e| e.clone()),
        );
    }

    /// The runs of a chaos build through `t`, each recorded as a read of its status and console length
    /// (one consistent read of the node's state). `None` when the node did not answer.
    async fn list_runs(&self, t: &Target, build: u64) -> Option<Vec<String>> {
        let invoke = Instant::now();
        let reply = self
            .json(
                Method::GET,
                format!("{}/projects/{PROJECT}/builds/{build}/runs/", t.url),
                None,
            )
            .await;
        let complete = Instant::now();
        let Ok((200, b)) = reply else {
            return None;
        };
        let mut names = Vec::new();
        for r in b["data"]["runs"].as_array()? {
            let Some(name) = r["name"].as_str() else {
                continue;
            };
            let status = r["status"].as_str().unwrap_or("");
            self.history.read(
                &run_key(PROJECT, build, name),
                &t.label,
                invoke,
                complete,
                history::status_rank(status).ok_or_else(|| format!("status {status:?}")),
            );
            if let Some(len) = r["log_bytes"].as_u64() {
                self.history.read(
                    &console_key(PROJECT, build, name),
                    &t.label,
                    invoke,
                    complete,
                    Ok(len),
                );
            }
            names.push(name.to_string());
        }
        Some(names)
    }
}

/// Creates the history project (if needed) and declares its build numbers a counter, starting from the
/// newest build the cluster reports now.
async fn history_project(cluster: &LocalCluster, history: &History) -> anyhow::Result<()> {
    let (s, b) = cluster
        .api(
            Method::POST,
            "/projects/",
            Some(json!({"name": HISTORY_PROJECT})),
        )
        .await?;
    ensure!(
        s == 201 || s == 409,
        "create project {HISTORY_PROJECT}: {s} {b}"
    );
    let initial = if s == 201 {
        0
    } else {
        let (s, b) = cluster
            .api(
                Method::GET,
                &format!("/projects/{HISTORY_PROJECT}/builds/?limit=1"),
                None,
            )
            .await?;
        ensure!(s == 200, "listing {HISTORY_PROJECT} builds: {s} {b}");
        b["data"]["builds"][0]["build_id"].as_u64().unwrap_or(0)
    };
    history.declare(&builds_key(HISTORY_PROJECT), Model::Counter { initial });
    Ok(())
}

/// The recorder's loop: round-robin over the nodes, each write immediately followed by reads through
/// other nodes.
struct Driver {
    probe: Probe,
    targets: Vec<Target>,
    chaos_runs: Vec<(u64, String)>,
    next_run: usize,
}

impl Driver {
    async fn run(mut self) {
        let n = self.targets.len();
        let mut round = 0usize;
        while !*self.probe.stop.borrow() {
            let a = self.targets[round % n].clone();
            let b = self.targets[(round + 1) % n].clone();
            let c = self.targets[(round + 2) % n].clone();
            // The counter: create through a, read the newest number through b.
            let created = self.probe.create_build(&a).await;
            self.probe.read_latest(&b, HISTORY_PROJECT).await;
            // A run status written by a client: cancel through c, read through a.
            if let Some(build) = created {
                self.probe.cancel(&c, build).await;
                self.probe
                    .read_run(&a, HISTORY_PROJECT, build, HISTORY_RUN, false)
                    .await;
            }
            // The workload's runs, written by the workers: status, length, bytes.
            if round % 8 == 0 {
                self.refresh(&c).await;
            }
            if !self.chaos_runs.is_empty() {
                let (build, run) = self.chaos_runs[self.next_run % self.chaos_runs.len()].clone();
                self.next_run += 1;
                self.probe.read_run(&a, PROJECT, build, &run, true).await;
                self.probe.read_console(&b, PROJECT, build, &run).await;
            }
            round += 1;
            let mut stop = self.probe.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(RECORD_PAUSE) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    }

    /// Learns the runs of the two newest chaos builds (reading the chaos build numbers, too).
    async fn refresh(&mut self, t: &Target) {
        let Some(latest) = self.probe.read_latest(t, PROJECT).await else {
            return;
        };
        let mut runs = Vec::new();
        for build in latest.saturating_sub(1).max(1)..=latest {
            match self.probe.list_runs(t, build).await {
                Some(names) => runs.extend(names.into_iter().map(|n| (build, n))),
                None => return,
            }
        }
        if !runs.is_empty() {
            self.chaos_runs = runs;
        }
    }
}

/// Records a client history alongside a scenario, until [`Recorder::finish`] (or drop, which aborts).
pub struct Recorder {
    history: History,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Recorder {
    /// Creates the history project and starts the recording task against every node, directly.
    pub async fn start(cluster: &LocalCluster) -> anyhow::Result<Recorder> {
        let history = History::new();
        history_project(cluster, &history).await?;
        let (stop, stopped) = watch::channel(false);
        let driver = Driver {
            probe: Probe::new(cluster, history.clone(), stopped),
            targets: targets(cluster),
            chaos_runs: Vec::new(),
            next_run: 0,
        };
        let task = tokio::spawn(driver.run());
        Ok(Recorder {
            history,
            stop,
            task: Some(task),
        })
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// Stops the task and checks the history.
    pub async fn finish(mut self) -> Result<history::Summary, history::Violations> {
        let _ = self.stop.send(true);
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(30), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        self.history.check()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Stops the recorder after the scenario's own checks; a history violation fails the scenario.
pub(crate) async fn with_history(
    verdict: anyhow::Result<Verdict>,
    recorder: Recorder,
) -> anyhow::Result<Verdict> {
    let checked = recorder.finish().await;
    match (verdict, checked) {
        (Ok(mut verdict), Ok(summary)) => {
            verdict.history = Some(summary);
            Ok(verdict)
        }
        (Ok(_), Err(violations)) => Err(anyhow!("{violations}")),
        (Err(e), Ok(_)) => Err(e),
        (Err(e), Err(violations)) => Err(anyhow!("{e:#}\nand the {violations}")),
    }
}

/// What [`stale_reads_are_caught`] found.
#[derive(Debug)]
pub struct StaleReadReport {
    /// The follower cut off in the partition phase.
    pub cut_off: u64,
    pub partition_ops: usize,
    /// Stale reads (or reads going back) found in the partition phase: always > 0 when Ok.
    pub partition_stale: usize,
    pub race_ops: usize,
    /// Violations found in the race phase (write on the leader, read at once on a follower): usually >
    /// 0, but a follower may apply in time.
    pub race_violations: usize,
    /// The partition phase's violations, as the checker prints them.
    pub printed: String,
}

impl std::fmt::Display for StaleReadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stale reads caught: {} stale read(s) in {} ops through cut-off node {}; race phase: {} violation(s) in {} ops",
            self.partition_stale, self.partition_ops, self.cut_off, self.race_violations, self.race_ops
        )
    }
}

/// The checker can fail: a cluster whose nodes serve every read from local state
/// (`JOBSERV_TEST_STALE_READS=1`, broken on purpose) must produce a non-linearizable history. Two sources:
///
/// 1. the race: create a build on the leader, read the newest number (and the new run) at once through a
///    follower, 100 times — a follower that has not applied the entry yet answers the old state;
/// 2. deterministic: cut a follower off, keep creating builds through the majority and read through the
///    cut-off node. A node serving its local state answers what it had before the cut (a stale read); a
///    correct one answers 503 after ~10 s.
///
/// Ok only if the partition phase found a stale read. No workers, no Docker.
pub async fn stale_reads_are_caught(dir: &Path, bin_dir: &Path) -> anyhow::Result<StaleReadReport> {
    let mut cluster = start(
        dir,
        bin_dir,
        ClusterOptions {
            nodes: 3,
            workers: 0,
            partitionable: true,
            node_env: vec![("JOBSERV_TEST_STALE_READS".into(), "1".into())],
            ..ClusterOptions::default()
        },
    )
    .await?;
    let (_stop, stopped) = watch::channel(false);
    let nodes = targets(&cluster);
    let leader_id = cluster.wait_leader(Duration::from_secs(30)).await?;
    let leader = nodes
        .iter()
        .find(|t| t.id == leader_id)
        .context("the leader")?
        .clone();
    let followers: Vec<Target> = nodes
        .iter()
        .filter(|t| t.id != leader_id)
        .cloned()
        .collect();

    // 1. The race.
    let race = History::new();
    history_project(&cluster, &race).await?;
    let probe = Probe::new(&cluster, race.clone(), stopped.clone());
    for i in 0..100 {
        let follower = &followers[i % followers.len()];
        let created = probe.create_build(&leader).await;
        probe.read_latest(follower, HISTORY_PROJECT).await;
        if let Some(build) = created {
            probe
                .read_run(follower, HISTORY_PROJECT, build, HISTORY_RUN, false)
                .await;
        }
    }
    let race_violations = match race.check() {
        Ok(_) => 0,
        Err(v) => v.total,
    };

    // 2. The partition.
    let cut = followers[0].clone();
    let part = History::new();
    history_project(&cluster, &part).await?;
    let probe = Probe::new(&cluster, part.clone(), stopped.clone());
    cluster.isolate(cut.id)?;
    let mut created = None;
    for _ in 0..3 {
        let n = probe.create_build(&leader).await;
        ensure!(
            n.is_some(),
            "a create through the leader failed with a follower cut off: {:?}",
            part.ops().last().map(|op| op.render(part.start()))
        );
        created = n;
        probe.read_latest(&cut, HISTORY_PROJECT).await;
    }
    if let Some(build) = created {
        probe
            .read_run(&cut, HISTORY_PROJECT, build, HISTORY_RUN, false)
            .await;
    }
    cluster.heal();
    cluster.kill_all();
    let race_ops = race.len();
    let partition_ops = part.len();
    match part.check() {
        Ok(summary) => bail!(
            "the checker found nothing with stale reads on: the cut-off node {} never served a stale read \
             ({summary}; race phase: {race_violations} violation(s) in {race_ops} ops)",
            cut.label
        ),
        Err(v) => {
            let stale = v.count(history::ViolationKind::StaleRead)
                + v.count(history::ViolationKind::ReadWentBack);
            ensure!(
                stale > 0,
                "the partition phase found violations, but no stale read: {v}"
            );
            Ok(StaleReadReport {
                cut_off: cut.id,
                partition_ops,
                partition_stale: stale,
                race_ops,
                race_violations,
                printed: v.to_string(),
            })
        }
    }
}
