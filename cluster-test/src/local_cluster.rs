//! A local cluster of real processes: N nodes and M workers on 127.0.0.1, plus the `cluster.json` contract
//! of `shared/spec/cli.md`. Calls go to any live node and move on when one does not answer.
use crate::harness::{
    busybox_image, cluster_configs, enlist, random_token, repo_root, NodeProcess, WorkerProcess,
};
use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct LocalCluster {
    pub dir: PathBuf,
    pub nodes: Vec<NodeProcess>,
    pub workers: Vec<WorkerProcess>,
    pub token: String,
    pub client: reqwest::Client,
    pub ca_cert: PathBuf,
    /// One fault-injecting proxy per node (same order as `nodes`), when partitionable.
    pub proxies: Vec<crate::proxy::FaultProxy>,
    /// What `jobserv-node restore` printed, when the cluster was restored from a backup.
    pub restore_output: Option<String>,
}

pub struct ClusterOptions {
    pub nodes: u64,
    pub workers: usize,
    pub executor: String,
    pub worker_concurrency: u32,
    pub worker_timeout_secs: u64,
    pub requeue_lost_runs: bool,
    /// Put a fault-injecting proxy in front of every node (all cluster and worker traffic goes through it).
    pub partitionable: bool,
    /// Extra environment for every node process.
    pub node_env: Vec<(String, String)>,
    /// Restore this backup into node 1 (`jobserv-node restore`) before any node first starts.
    pub restore_from: Option<PathBuf>,
}

impl ClusterOptions {
    /// Three nodes and no real worker: for tests and benches that drive runs themselves (simulated
    /// workers) or need none.
    pub fn workerless() -> Self {
        ClusterOptions {
            workers: 0,
            executor: "host".into(),
            ..Default::default()
        }
    }
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            workers: 2,
            executor: "docker".into(),
            worker_concurrency: 2,
            worker_timeout_secs: 30,
            requeue_lost_runs: false,
            partitionable: false,
            node_env: Vec::new(),
            restore_from: None,
        }
    }
}

impl LocalCluster {
    pub async fn up(
        dir: &Path,
        bin_dir: &Path,
        opts: &ClusterOptions,
    ) -> anyhow::Result<LocalCluster> {
        std::fs::create_dir_all(dir)?;
        let token = random_token();
        std::fs::write(dir.join("admin-token"), &token)?;
        let mut configs = cluster_configs(dir, opts.nodes, &token, &random_token())?;
        for c in &mut configs {
            c.worker_timeout_secs = opts.worker_timeout_secs;
            c.requeue_lost_runs = opts.requeue_lost_runs;
            c.worker_binary = Some(bin_dir.join("jobserv-worker"));
        }
        let ca_cert = configs[0].ca_cert.clone();
        let mut proxies = Vec::new();
        if opts.partitionable {
            for c in &configs {
                proxies.push(crate::proxy::FaultProxy::start(c.listen.parse()?).await?);
            }
            let peers: Vec<jobserv_node::config::Peer> = configs
                .iter()
                .zip(&proxies)
                .map(|(c, p)| jobserv_node::config::Peer {
                    id: c.id,
                    url: format!("https://{}", p.listen),
                })
                .collect();
            let gossip: Vec<String> = configs.iter().map(|c| c.listen.clone()).collect();
            for (c, p) in configs.iter_mut().zip(&proxies) {
                c.advertise_url = format!("https://{}", p.listen);
                c.peers = peers.clone();
                c.outbound_ip = Some(crate::proxy::node_source(c.id));
                c.gossip_advertise = Some(c.listen.clone());
                c.gossip_seeds = gossip.iter().filter(|g| **g != c.listen).cloned().collect();
            }
        }
        let mut nodes = Vec::new();
        let mut restore_output = None;
        for config in configs {
            let restore = opts.restore_from.as_ref().filter(|_| config.id == 1);
            let mut node = NodeProcess::new(config, bin_dir)?;
            if let Some(backup) = restore {
                restore_output = Some(node.restore(backup)?);
            }
            node.env = opts.node_env.clone();
            node.spawn()?;
            nodes.push(node);
        }
        for node in &nodes {
            node.wait_ready(Duration::from_secs(60)).await?;
        }
        let client = nodes[0].client.clone();
        let mut cluster = LocalCluster {
            dir: dir.to_path_buf(),
            nodes,
            workers: Vec::new(),
            token,
            client,
            ca_cert,
            proxies,
            restore_output,
        };
        if opts.workers > 0 && opts.executor == "docker" {
            busybox_image(&repo_root())?;
        }
        let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url().to_string()).collect();
        for i in 1..=opts.workers {
            let name = format!("worker-{i}");
            let mut w = WorkerProcess::new(
                bin_dir,
                &name,
                &urls,
                &cluster.ca_cert,
                &dir.join(&name),
                &["amd64", "chaos"],
                opts.worker_concurrency,
                &opts.executor,
            );
            w.spawn()?;
            cluster.workers.push(w);
        }
        for w in &cluster.workers {
            let url = cluster.nodes[0].url().to_string();
            enlist(
                &cluster.client,
                &url,
                &cluster.token,
                &w.name,
                Duration::from_secs(60),
            )
            .await?;
        }
        cluster.wait_leader(Duration::from_secs(30)).await?;
        cluster.write_json()?;
        Ok(cluster)
    }

    pub fn write_json(&self) -> anyhow::Result<()> {
        let doc = json!({
            "nodes": self.nodes.iter().map(|n| json!({"id": n.config.id, "url": n.url(), "pid": n.pid(), "data_dir": n.config.data_dir})).collect::<Vec<_>>(),
            "workers": self.workers.iter().map(|w| json!({"name": w.name, "pid": w.pid()})).collect::<Vec<_>>(),
            "admin_token": self.token,
            "ca_cert": self.ca_cert,
        });
        std::fs::write(
            self.dir.join("cluster.json"),
            serde_json::to_string_pretty(&doc)?,
        )?;
        Ok(())
    }

    pub fn node(&mut self, id: u64) -> anyhow::Result<&mut NodeProcess> {
        self.nodes
            .iter_mut()
            .find(|n| n.config.id == id)
            .with_context(|| format!("no node {id}"))
    }

    pub fn live_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.url().to_string())
            .collect()
    }

    /// An API call through the first live node that answers (connection errors and 503 move on).
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let urls = self.live_urls();
        crate::harness::call_any(&self.client, &urls, &self.token, method, path, body, 40).await
    }

    pub async fn text(&self, url: &str, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let r = self
            .client
            .get(format!("{url}{path}"))
            .header("Authorization", format!("Token {}", self.token))
            .send()
            .await?;
        Ok((r.status().as_u16(), r.bytes().await?.to_vec()))
    }

    /// The leader's id, once it is agreed on: the leader names itself, and a majority of *all* the cluster's
    /// nodes (counting it) name it. Each node is asked for its own view (`GET /cluster/?stale=1`, answered at
    /// once even without a quorum). One node's word is not enough: a node that just restarted may still name
    /// an old leader, and a deposed leader may not know yet; but a newer leader needs a majority's votes,
    /// and a node that voted no longer names the old one, so no majority can agree on a deposed leader.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        let majority = self.nodes.len() / 2 + 1;
        loop {
            // (node asked, the leader it names, its term)
            let mut views: Vec<(u64, Option<u64>, Option<u64>)> = Vec::new();
            for node in self.nodes.iter().filter(|n| n.child.is_some()) {
                if let Ok(view) =
                    crate::harness::own_view(&self.client, node.url(), &self.token).await
                {
                    views.push((
                        node.config.id,
                        view["leader"].as_u64(),
                        view["term"].as_u64(),
                    ));
                }
            }
            let agreed = views.iter().find_map(|&(me, leader, _)| {
                let leader = leader.filter(|l| *l == me)?;
                let named = views.iter().filter(|v| v.1 == Some(leader)).count();
                (named >= majority).then_some(leader)
            });
            if let Some(leader) = agreed {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                bail!("no leader agreed on by {majority} of {} nodes within {timeout:?}; (node, leader it names, term) of the live nodes that answered: {views:?}", self.nodes.len());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates (if needed) a project and starts a build; returns its number.
    pub async fn build(
        &self,
        project: &str,
        trigger: &str,
        definition: &str,
    ) -> anyhow::Result<u64> {
        let (s, b) = self
            .api(Method::POST, "/projects/", Some(json!({"name": project})))
            .await?;
        if s != 201 && s != 409 {
            bail!("create project {project}: {s} {b}");
        }
        let (s, b) = self
            .api(
                Method::POST,
                &format!("/projects/{project}/builds/"),
                Some(json!({"trigger-name": trigger, "project-definition": definition})),
            )
            .await?;
        if s != 201 {
            bail!("create build: {s} {b}");
        }
        b["data"]["build_id"].as_u64().context("build_id")
    }

    /// Waits until the build is PASSED or FAILED; returns the build JSON.
    pub async fn wait_build(
        &self,
        project: &str,
        n: u64,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let (s, b) = self
                .api(
                    Method::GET,
                    &format!("/projects/{project}/builds/{n}/"),
                    None,
                )
                .await?;
            if s == 200 {
                let status = b["data"]["build"]["status"].as_str().unwrap_or("");
                if status == "PASSED" || status == "FAILED" {
                    return Ok(b["data"]["build"].clone());
                }
            }
            if Instant::now() > deadline {
                bail!("build {project}/{n} not finished after {timeout:?}: {b}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Cuts node `id` off: its proxy refuses everybody, the other proxies refuse it.
    pub fn isolate(&self, id: u64) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.proxies.is_empty(),
            "the cluster was not started partitionable"
        );
        for (node, proxy) in self.nodes.iter().zip(&self.proxies) {
            if node.config.id == id {
                proxy.isolate();
            } else {
                proxy.deny(&[crate::proxy::node_source(id)]);
            }
        }
        Ok(())
    }

    pub fn heal(&self) {
        for proxy in &self.proxies {
            proxy.heal();
        }
    }

    /// The node's own listener, bypassing its proxy.
    pub fn direct_url(&mut self, id: u64) -> anyhow::Result<String> {
        Ok(format!("https://{}", self.node(id)?.config.listen))
    }

    pub fn kill_all(&mut self) {
        for w in &mut self.workers {
            w.kill();
        }
        for n in &mut self.nodes {
            n.kill();
        }
    }
}

/// `cluster-test restart-node --dir DIR --id N`: starts node N again on its data dir and port (stopping a
/// still-running one first) and rewrites its pid in `cluster.json`. The new process outlives this command.
pub fn restart_node(dir: &Path, bin_dir: &Path, id: u64) -> anyhow::Result<u32> {
    let path = dir.join("cluster.json");
    let mut doc: Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let nodes = doc["nodes"].as_array_mut().context("cluster.json: nodes")?;
    let entry = nodes
        .iter_mut()
        .find(|n| n["id"].as_u64() == Some(id))
        .with_context(|| format!("cluster.json has no node {id}"))?;
    if let Some(pid) = entry["pid"].as_u64() {
        if alive(pid) {
            signal(pid, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let config_path = dir.join(format!("node-{id}.toml"));
    // A plain `Command`, not `harness::spawn_owned`: this process exits at once and the node must outlive it
    // (`cluster-test up` stops it later by the pid written below).
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("node-{id}.log")))?;
    let child = std::process::Command::new(bin_dir.join("jobserv-node"))
        .args(["run", "--config"])
        .arg(&config_path)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting jobserv-node")?;
    let pid = child.id();
    entry["pid"] = json!(pid);
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
    Ok(pid)
}

fn signal(pid: u64, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory effects; a pid that is gone gives ESRCH, ignored.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Whether a pid is a running (not zombie) process.
pub fn alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Stops every process listed in `cluster.json` (SIGTERM, then SIGKILL after a grace period): the nodes and
/// workers `up` started, and nodes that `restart-node` started since (not children of `up`).
pub fn stop_all_listed(dir: &Path) {
    let Ok(bytes) = std::fs::read(dir.join("cluster.json")) else {
        return;
    };
    let Ok(doc) = serde_json::from_slice::<Value>(&bytes) else {
        return;
    };
    let pids: Vec<u64> = ["workers", "nodes"]
        .iter()
        .flat_map(|k| doc[*k].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["pid"].as_u64())
        .collect();
    for pid in &pids {
        if alive(*pid) {
            signal(*pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in &pids {
        if alive(*pid) {
            signal(*pid, libc::SIGKILL);
        }
    }
}
