//! Node processes: configuration, start, readiness, SIGKILL/SIGTERM, restart on the same data dir; and the
//! registry that makes sure no process this program starts outlives it.
use anyhow::{bail, Context};
use jobserv_node::config::{NodeConfig, Peer};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN_LEN: usize = 48;

/// How long a SIGTERMed node or worker gets to exit before it is SIGKILLed.
pub const TERM_GRACE: Duration = Duration::from_secs(60);

// ---- The process registry -------------------------------------------------------------------------------
//
// Every node and worker process the harness starts goes through [`spawn_owned`]: it is registered here, it
// gets `PR_SET_PDEATHSIG(SIGKILL)` (the kernel kills it if this program dies, even by SIGKILL), and its
// [`OwnedChild`] handle SIGKILLs and reaps it when dropped — so a failed phase (`?`, a panic) stops what it
// started. `cluster-test`'s signal handler (main.rs) calls [`kill_all_children`] on SIGINT/SIGTERM/SIGHUP.
//
// A pid is added in the same critical section as the fork and removed in the same critical section as the
// reap, and a registered process is only ever waited for without reaping (`waitid(WNOWAIT)`), so a pid in
// the registry always names one of our own children (at worst a zombie), never a stranger that reused it.

static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn registry() -> MutexGuard<'static, Vec<u32>> {
    CHILDREN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The pids of the child processes started through [`spawn_owned`] and not reaped yet.
pub fn registered_children() -> Vec<u32> {
    registry().clone()
}

/// A node's own Raft figures (`GET /cluster/?stale=1`: its local view, answered at once even without a
/// quorum — what monitoring of *one* node needs; a linearizable read would wait for the cluster).
pub async fn own_view(
    client: &reqwest::Client,
    url: &str,
    token: &str,
) -> anyhow::Result<serde_json::Value> {
    let (s, b) = call(
        client,
        reqwest::Method::GET,
        &format!("{url}/cluster/?stale=1"),
        token,
        None,
    )
    .await?;
    anyhow::ensure!(s == 200, "{url}/cluster/?stale=1: {s} {b}");
    Ok(b["data"].clone())
}

/// Starts `cmd` as an [`OwnedChild`]: registered, and killed by the kernel if this process dies.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked exits: spawn from the main task (or a runtime
/// worker thread), never from a short-lived thread, a process that must outlive its spawner (`restart-node`)
/// is started with a plain `Command`.
pub fn spawn_owned(cmd: &mut Command) -> std::io::Result<OwnedChild> {
    let parent = std::process::id();
    // SAFETY: between fork and exec the closure only makes async-signal-safe calls (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            let sig = libc::SIGKILL as libc::c_ulong;
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                sig,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // This process may have died between the fork and the prctl: then no signal will ever come.
            if libc::getppid() as u32 != parent {
                libc::_exit(111);
            }
            Ok(())
        });
    }
    let mut children = registry();
    let child = cmd.spawn()?;
    children.push(child.id());
    Ok(OwnedChild {
        child,
        reaped: false,
    })
}

/// SIGKILLs every registered child and waits (up to 10 s) until each has exited. They stay registered (as
/// zombies) until their handles reap them, so their pids cannot be reused meanwhile. Holds the registry
/// lock throughout: nothing new is spawned while (or after, if the caller then exits) this runs. Returns
/// the pids it killed.
pub fn kill_all_children() -> Vec<u32> {
    let children = registry();
    for pid in children.iter() {
        // SAFETY: kill(2) on a pid that is our unreaped child.
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for pid in children.iter() {
        if wait_exit(*pid, Some(deadline)).is_none() {
            eprintln!("cluster-test: process {pid} did not exit within 10 s of SIGKILL");
        }
    }
    children.clone()
}

/// Waits until child `pid` has exited, without reaping it; `None` if `deadline` passed first. A pid that is
/// not (or no longer) our child counts as exited.
fn wait_exit(pid: u32, deadline: Option<Instant>) -> Option<ExitStatus> {
    loop {
        // SAFETY: waitid(2) fills `info`; WNOWAIT leaves the child waitable (by `Child::wait` later).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags =
            libc::WEXITED | libc::WNOWAIT | if deadline.is_some() { libc::WNOHANG } else { 0 };
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        if r != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Some(ExitStatus::from_raw(0)); // ECHILD: already gone
        }
        // SAFETY: the union fields are valid for a SIGCHLD siginfo (waitid's output).
        let (exited_pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if exited_pid != 0 {
            let raw = match info.si_code {
                libc::CLD_EXITED => (status & 0xff) << 8,
                libc::CLD_DUMPED => status | 0x80,
                _ => status,
            };
            return Some(ExitStatus::from_raw(raw));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A child process started by [`spawn_owned`]. Dropping it SIGKILLs and reaps the process.
pub struct OwnedChild {
    child: Child,
    reaped: bool,
}

impl OwnedChild {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited, without reaping it (it stays registered until this handle is
    /// killed or dropped), like `Child::try_wait`.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if self.reaped {
            return Ok(self.child.try_wait()?);
        }
        Ok(wait_exit(self.id(), Some(Instant::now())))
    }

    /// SIGKILL, wait, reap.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.reaped {
            return None;
        }
        let _ = self.child.kill();
        wait_exit(self.id(), None);
        self.reap()
    }

    /// SIGTERM, wait up to `grace` for the exit, then SIGKILL; reap. `Err` carries the status when the
    /// process had to be SIGKILLed.
    pub fn terminate(&mut self, grace: Duration) -> Result<Option<ExitStatus>, Option<ExitStatus>> {
        if self.reaped {
            return Ok(None);
        }
        // SAFETY: kill(2) on our unreaped child.
        unsafe {
            libc::kill(self.id() as libc::pid_t, libc::SIGTERM);
        }
        if wait_exit(self.id(), Some(Instant::now() + grace)).is_some() {
            return Ok(self.reap());
        }
        Err(self.kill())
    }

    /// SIGTERM without waiting (the caller measures what happens meanwhile); then `wait_exited`.
    pub fn signal_term(&self) {
        if !self.reaped {
            // SAFETY: kill(2) on our unreaped child.
            unsafe {
                libc::kill(self.id() as libc::pid_t, libc::SIGTERM);
            }
        }
    }

    /// Waits up to `grace` for the exit (no signal), then SIGKILL; reap. `Err` as in `terminate`.
    pub fn wait_exited(
        &mut self,
        grace: Duration,
    ) -> Result<Option<ExitStatus>, Option<ExitStatus>> {
        if self.reaped {
            return Ok(None);
        }
        if wait_exit(self.id(), Some(Instant::now() + grace)).is_some() {
            return Ok(self.reap());
        }
        Err(self.kill())
    }

    fn reap(&mut self) -> Option<ExitStatus> {
        let mut children = registry();
        let status = self.child.wait().ok();
        self.reaped = true;
        let pid = self.id();
        children.retain(|p| *p != pid);
        status
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Where the JobServ binaries are: `--bin-dir`, else next to this executable (or its parent, for
/// `target/debug/deps` test binaries).
pub fn bin_dir(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .context("executable has no directory")?
        .to_path_buf();
    if !dir.join("jobserv-node").exists() {
        if let Some(parent) = dir.parent() {
            dir = parent.to_path_buf();
        }
    }
    if !dir.join("jobserv-node").exists() {
        bail!(
            "no jobserv-node binary in {} (build the workspace, or pass --bin-dir)",
            dir.display()
        );
    }
    Ok(dir)
}

/// Configs for `n` nodes sharing one CA, cluster secret and admin token under `dir`.
pub fn cluster_configs(
    dir: &Path,
    n: u64,
    admin_token: &str,
    cluster_secret: &str,
) -> anyhow::Result<Vec<NodeConfig>> {
    let pki = jobserv_node::tls::ensure_dev_pki(&dir.join("pki"))?;
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_, _>>()?;
    let peers: Vec<Peer> = (1..=n)
        .zip(&ports)
        .map(|(id, port)| Peer {
            id,
            url: format!("https://127.0.0.1:{port}"),
        })
        .collect();
    Ok((1..=n)
        .zip(&ports)
        .map(|(id, port)| {
            let mut config = NodeConfig::local(
                id,
                dir.join(format!("node-{id}")),
                *port,
                &pki,
                cluster_secret.to_string(),
                Some(admin_token.to_string()),
            );
            config.peers = if n > 1 { peers.clone() } else { vec![] };
            config
        })
        .collect())
}

/// One node process with a fresh admin token, started and ready. Returns the node and the token.
pub async fn single_node(dir: &Path, bin_dir: &Path) -> anyhow::Result<(NodeProcess, String)> {
    let token = random_token();
    let config = cluster_configs(dir, 1, &token, &random_token())?.remove(0);
    let mut node = NodeProcess::new(config, bin_dir)?;
    node.spawn()?;
    node.wait_ready(Duration::from_secs(60)).await?;
    Ok((node, token))
}

/// A build of `definition` (trigger `t`) in a new `project`, its runs held by worker `worker` (registered
/// with `worker_key` for `slots` runs, enlisted, checked in once): the `(run_url, run key)` of each run,
/// for driving the console protocol by hand. Expects exactly `slots` runs to be handed out.
pub async fn hold_runs(
    node: &NodeProcess,
    token: &str,
    project: &str,
    definition: &str,
    worker: &str,
    worker_key: &str,
    host_tag: &str,
    slots: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    use serde_json::json;
    let (url, client) = (node.url(), &node.client);
    let (s, b) = call(
        client,
        reqwest::Method::POST,
        &format!("{url}/projects/"),
        token,
        Some(json!({"name": project})),
    )
    .await?;
    anyhow::ensure!(s == 201, "create project {project}: {s} {b}");
    let body = json!({"trigger-name": "t", "project-definition": definition});
    let (s, b) = call(
        client,
        reqwest::Method::POST,
        &format!("{url}/projects/{project}/builds/"),
        token,
        Some(body),
    )
    .await?;
    anyhow::ensure!(s == 201, "create build: {s} {b}");
    let reg = json!({"api_key": worker_key, "distro": "x", "mem_total": 1, "cpu_total": 1, "cpu_type": "x", "concurrent_runs": slots, "host_tags": [host_tag]});
    let r = client
        .post(format!("{url}/workers/{worker}/"))
        .json(&reg)
        .send()
        .await?;
    anyhow::ensure!(
        r.status().as_u16() == 201,
        "register worker {worker}: {}",
        r.status()
    );
    let (s, b) = call(
        client,
        reqwest::Method::PATCH,
        &format!("{url}/workers/{worker}/"),
        token,
        Some(json!({"enlisted": true})),
    )
    .await?;
    anyhow::ensure!(s == 200, "enlist {worker}: {s} {b}");
    let (s, b) = call(
        client,
        reqwest::Method::GET,
        &format!("{url}/workers/{worker}/?available_runners={slots}"),
        worker_key,
        None,
    )
    .await?;
    anyhow::ensure!(s == 200, "check in: {s} {b}");
    let runs: Vec<(String, String)> = b["data"]["worker"]["run-defs"]
        .as_array()
        .context("run-defs")?
        .iter()
        .filter_map(|d| {
            Some((
                d["run_url"].as_str()?.to_string(),
                d["api_key"].as_str()?.to_string(),
            ))
        })
        .collect();
    anyhow::ensure!(
        runs.len() == slots,
        "expected {slots} runs, got {}",
        runs.len()
    );
    Ok(runs)
}

pub struct NodeProcess {
    pub config: NodeConfig,
    pub config_path: PathBuf,
    pub binary: PathBuf,
    /// The running process (registered; SIGKILLed when replaced or dropped).
    pub child: Option<OwnedChild>,
    pub client: reqwest::Client,
    /// Extra environment for the process (e.g. `JOBSERV_MAX_FORMAT` to behave like an older release).
    pub env: Vec<(String, String)>,
}

impl NodeProcess {
    pub fn new(config: NodeConfig, bin_dir: &Path) -> anyhow::Result<NodeProcess> {
        std::fs::create_dir_all(&config.data_dir)?;
        let config_path = config.data_dir.with_extension("toml");
        std::fs::write(&config_path, config.to_toml())?;
        let client = jobserv_node::tls::client(&config.ca_cert, Duration::from_secs(60))?;
        Ok(NodeProcess {
            config,
            config_path,
            binary: bin_dir.join("jobserv-node"),
            child: None,
            client,
            env: Vec::new(),
        })
    }

    pub fn url(&self) -> &str {
        &self.config.advertise_url
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log_path(&self) -> PathBuf {
        self.config.data_dir.with_extension("log")
    }

    /// `jobserv-node restore --from BACKUP --config` this node's config (before its first start).
    pub fn restore(&self, backup: &Path) -> anyhow::Result<String> {
        let out = Command::new(&self.binary)
            .args(["restore", "--from"])
            .arg(backup)
            .arg("--config")
            .arg(&self.config_path)
            .output()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        if !out.status.success() {
            bail!(
                "jobserv-node restore failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(["run", "--config"])
            .arg(&self.config_path)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone()?)
            .stderr(log);
        let child =
            spawn_owned(&mut cmd).with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until *this* node answers an admin-authenticated `GET /cluster/?stale=1` naming a leader: it
    /// serves, the admin token is in its applied state, and it knows a leader. Its own view (`stale=1`), so
    /// the answer is immediate; whether the cluster as a whole serves is for the caller's linearizable
    /// reads and writes to find out.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let token = self.config.admin_token.clone().unwrap_or_default();
        let mut last: String;
        loop {
            match call(
                &self.client,
                reqwest::Method::GET,
                &format!("{}/cluster/?stale=1", self.url()),
                &token,
                None,
            )
            .await
            {
                Ok((200, b)) if b["data"]["leader"].as_u64().is_some() => {
                    return Ok(started.elapsed())
                }
                Ok((s, b)) => last = format!("HTTP {s} {b}"),
                Err(e) => last = e.to_string(),
            }
            if started.elapsed() > timeout {
                bail!(
                    "node {} not ready after {timeout:?} (last: {last}); see {}",
                    self.config.id,
                    self.log_path().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// SIGTERM and wait for the exit (SIGKILL after [`TERM_GRACE`], with a warning).
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            if child.terminate(TERM_GRACE).is_err() {
                eprintln!(
                    "node {} (pid {}) did not exit within {TERM_GRACE:?} of SIGTERM: SIGKILLed; see {}",
                    self.config.id,
                    child.id(),
                    self.log_path().display()
                );
            }
        }
    }

    /// Resident memory in MiB, from /proc.
    pub fn rss_mb(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Total size of the files under `dir`, in MiB.
/// A node's Raft store on disk: sled (`raft`), the log's entry bodies, the console files and the snapshot.
pub fn store_size_mb(data_dir: &Path) -> f64 {
    ["raft", "raft.entries", "raft.console", "raft.snapshot"]
        .iter()
        .map(|name| dir_size_mb(&data_dir.join(name)))
        .sum()
}

pub fn dir_size_mb(dir: &Path) -> f64 {
    fn walk(p: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(p) else {
            // A file (the snapshot), or nothing.
            return std::fs::metadata(p).map_or(0, |m| if m.is_file() { m.len() } else { 0 });
        };
        entries
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    walk(dir) as f64 / (1024.0 * 1024.0)
}

/// A fresh random token.
pub fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..ADMIN_TOKEN_LEN)
        .map(|_| format!("{:x}", rng.gen_range(0..16u8)))
        .collect()
}

/// An authenticated JSON call; returns status and body.
pub async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let mut req = client
        .request(method, url)
        .header("Authorization", format!("Token {token}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(serde_json::Value::Null)))
}

/// `call` on the first of `urls` that answers with anything but 503, going round them `rounds` times with a
/// growing pause (a node may be down, restarting, or not caught up yet).
pub async fn call_any(
    client: &reqwest::Client,
    urls: &[String],
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
    rounds: u64,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let mut last = String::new();
    for attempt in 0..rounds {
        for url in urls {
            match call(
                client,
                method.clone(),
                &format!("{url}{path}"),
                token,
                body.clone(),
            )
            .await
            {
                Ok((503, b)) => last = format!("{url}: 503 {b}"),
                Ok(reply) => return Ok(reply),
                Err(e) => last = format!("{url}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100 * (attempt + 1).min(5))).await;
    }
    bail!("{method} {path}: no node answered: {last}")
}

/// A real `jobserv-worker run` process.
pub struct WorkerProcess {
    pub name: String,
    /// The running process (registered; SIGKILLed when replaced or dropped).
    pub child: Option<OwnedChild>,
    pub args: Vec<String>,
    pub binary: PathBuf,
    pub log: PathBuf,
}

impl WorkerProcess {
    /// A worker for `servers` keeping its key and volumes in `data_dir`.
    pub fn new(
        bin_dir: &Path,
        name: &str,
        servers: &[String],
        ca_cert: &Path,
        data_dir: &Path,
        host_tags: &[&str],
        concurrency: u32,
        executor: &str,
    ) -> WorkerProcess {
        let mut args = vec![
            "run".to_string(),
            "--server".into(),
            servers.join(","),
            "--name".into(),
            name.into(),
            "--concurrency".into(),
            concurrency.to_string(),
            "--executor".into(),
            executor.into(),
            "--no-self-update".into(),
        ];
        args.push("--data-dir".into());
        args.push(data_dir.display().to_string());
        args.push("--ca-cert".into());
        args.push(ca_cert.display().to_string());
        for tag in host_tags {
            args.push("--host-tag".into());
            args.push(tag.to_string());
        }
        WorkerProcess {
            name: name.to_string(),
            child: None,
            args,
            binary: bin_dir.join("jobserv-worker"),
            log: data_dir.with_extension("log"),
        }
    }

    pub fn spawn(&mut self) -> anyhow::Result<()> {
        if let Some(parent) = self.log.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(&self.args).stdout(log.try_clone()?).stderr(log);
        let child =
            spawn_owned(&mut cmd).with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Enlists a worker once it has registered (admin token).
pub async fn enlist(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let (s, b) = call(
            client,
            reqwest::Method::PATCH,
            &format!("{url}/workers/{name}/"),
            token,
            Some(serde_json::json!({"enlisted": true})),
        )
        .await?;
        if s == 200 {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!("worker {name} did not register within {timeout:?}: {s} {b}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Builds the local busybox image (idempotent).
pub fn busybox_image(repo_root: &Path) -> anyhow::Result<()> {
    let status = Command::new("bash")
        .arg(repo_root.join("worker/scripts/build-busybox-image.sh"))
        .status()?;
    if !status.success() {
        bail!("building busybox:latest failed (is Docker running?)");
    }
    Ok(())
}

/// The repository root (for scripts and examples), from this crate's manifest dir.
pub fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}
