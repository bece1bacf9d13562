//! Typed configuration: [`WorkerConfig`] for a long-running worker, [`RunnerOptions`] for executing one run
//! (shared by the worker and the simulator). Defaults give a working development worker.
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// How a run's script is executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExecutorKind {
    /// In a container of the run's image, through the local Docker engine (the normal case).
    #[default]
    Docker,
    /// Directly with `sh` in a workspace directory, for machines without Docker: no isolation at all.
    Host,
}

impl FromStr for ExecutorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "docker" => Ok(ExecutorKind::Docker),
            "host" => Ok(ExecutorKind::Host),
            other => Err(format!(
                "unknown executor {other:?}: expected docker or host"
            )),
        }
    }
}

impl fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExecutorKind::Docker => "docker",
            ExecutorKind::Host => "host",
        })
    }
}

/// Everything the runner needs besides the run definition and the reporter.
#[derive(Clone, Debug)]
pub struct RunnerOptions {
    pub executor: ExecutorKind,
    /// Persistent volumes live under `data_dir/volumes/<name>` and survive between runs.
    pub data_dir: PathBuf,
    /// Labels every container with `jobserv.worker=<name>` so a restarted worker reaps only its own orphans.
    pub worker_name: String,
    /// Replaces the run definition's timeout (which is in minutes) — for tests, or
    /// `JOBSERV_RUN_TIMEOUT_SECONDS` on the command line.
    pub timeout_override: Option<Duration>,
    /// Console output is sent at least this often while there is output...
    pub flush_interval: Duration,
    /// ...or as soon as this many bytes are pending.
    pub flush_bytes: usize,
    /// When the script is silent, an empty console POST is sent this often so that a cancel is noticed.
    pub heartbeat: Duration,
    /// Who gets the files a run's container wrote into the workspace and volumes once the run is over
    /// (`chown -R` in a container of the run's image): the worker's own user when it is not root (a
    /// systemd unit's dedicated user could otherwise not clean up what a root container left). `None`:
    /// left as written.
    pub file_owner: Option<(u32, u32)>,
}

/// The worker's user and group when it is not root.
fn non_root_owner() -> Option<(u32, u32)> {
    // SAFETY: geteuid/getegid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    (uid != 0).then_some((uid, gid))
}

impl RunnerOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        RunnerOptions {
            executor: ExecutorKind::Docker,
            data_dir: data_dir.into(),
            worker_name: "local".to_string(),
            timeout_override: None,
            flush_interval: Duration::from_secs(1),
            flush_bytes: 64 * 1024,
            heartbeat: Duration::from_secs(3),
            file_owner: non_root_owner(),
        }
    }
}

/// A long-running worker (`jobserv-worker run`).
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Node base URLs (`https://host:port`), tried in order; more are learned from check-in replies.
    pub servers: Vec<String>,
    pub name: String,
    pub host_tags: Vec<String>,
    /// Runs executed at the same time.
    pub concurrency: u32,
    pub executor: ExecutorKind,
    /// Holds `worker.key`, `runs/<id>/` (one per active run) and `volumes/<name>/`.
    pub data_dir: PathBuf,
    /// A PEM CA certificate added to the trusted roots (the cluster's self-signed CA).
    pub ca_cert: Option<PathBuf>,
    /// Accept any server certificate (development only).
    pub insecure: bool,
    /// Long-poll duration sent as `wait=` on check-in.
    pub checkin_wait: Duration,
    /// Pause between check-ins when the worker is not enlisted, is busy, or a node failed.
    pub checkin_pause: Duration,
    /// See [`RunnerOptions::timeout_override`].
    pub run_timeout_override: Option<Duration>,
    /// Replace the running binary when the cluster announces a newer worker version. Off by default in the
    /// library (a test binary must not be replaced); the CLI turns it on.
    pub self_update: bool,
    pub surges_only: bool,
}

impl WorkerConfig {
    pub fn new(
        servers: Vec<String>,
        name: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        WorkerConfig {
            servers,
            name: name.into(),
            host_tags: Vec::new(),
            concurrency: 1,
            executor: ExecutorKind::Docker,
            data_dir: data_dir.into(),
            ca_cert: None,
            insecure: false,
            checkin_wait: Duration::from_secs(25),
            checkin_pause: Duration::from_secs(3),
            run_timeout_override: None,
            self_update: false,
            surges_only: false,
        }
    }

    pub fn runner_options(&self) -> RunnerOptions {
        RunnerOptions {
            executor: self.executor,
            worker_name: self.name.clone(),
            timeout_override: self.run_timeout_override,
            ..RunnerOptions::new(self.data_dir.clone())
        }
    }
}
