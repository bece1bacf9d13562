//! The node's configuration: a TOML file (`jobserv-node run --config node.toml`) with an environment
//! override for every key (`JOBSERV_<KEY>` in upper case), and defaults that make a working dev node.
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeConfig {
    /// Raft node id, unique in the cluster.
    pub id: u64,
    pub data_dir: PathBuf,
    /// Address to listen on, e.g. `127.0.0.1:8443`.
    pub listen: String,
    /// The HTTPS base URL other nodes and workers use to reach this node.
    pub advertise_url: String,
    /// The initial voters (id and URL) when bootstrapping a new cluster; the lowest id initialises it.
    #[serde(default)]
    pub peers: Vec<Peer>,
    /// A member to join through instead of bootstrapping.
    #[serde(default)]
    pub join: Option<String>,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// The CA that signed every node's certificate (trusted for node-to-node calls).
    pub ca_cert: PathBuf,
    /// Shared by every node; authenticates Raft RPCs, forwarded writes and signs run keys.
    #[serde(default)]
    pub cluster_secret: String,
    /// A file holding `cluster_secret` (what `jobserv-node init-secrets` writes; a mounted Kubernetes
    /// Secret, a compose volume), read at load when `cluster_secret` is not given.
    #[serde(default)]
    pub cluster_secret_file: Option<PathBuf>,
    /// An admin token to install at start (its hash goes through Raft), so a fresh cluster is usable.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// A file holding `admin_token`, read at load when `admin_token` is not given.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// A worker that has not checked in for this long loses its runs.
    #[serde(default = "default_worker_timeout")]
    pub worker_timeout_secs: u64,
    /// Re-queue (instead of fail) the runs of a lost worker.
    #[serde(default)]
    pub requeue_lost_runs: bool,
    /// Largest artifact accepted (its bytes go to the blob store, not the Raft log).
    #[serde(default = "default_max_artifact")]
    pub max_artifact_bytes: usize,
    /// How often the leader applies the projects' `retention` (deleting builds they no longer keep).
    #[serde(default = "default_retention_interval")]
    pub retention_interval_secs: u64,
    /// Where artifact bytes live (`[artifacts]`: the nodes' disks or an object store), collection, repair.
    #[serde(default)]
    pub artifacts: crate::blobs::ArtifactsConfig,
    /// The worker binary served by `GET /worker` and `GET /runner` for self-update and legacy runs (default: `jobserv-worker` beside this binary).
    #[serde(default)]
    pub worker_binary: Option<PathBuf>,
    /// The worker version check-in replies announce (default: this node's version). A worker that is older
    /// downloads `GET /worker` and re-executes itself between runs.
    #[serde(default)]
    pub worker_version: Option<String>,
    /// JobServ's Python workers (`jobserv_worker.py`) hand their host over to `jobserv-worker` (same name,
    /// key, host tags, concurrency) on their next check-in between runs. Off by default.
    #[serde(default)]
    pub legacy_worker_upgrade: bool,
    /// The site's own `jobserv_worker.py`: served to legacy workers at `GET /worker` and announced by its md5
    /// (what JobServ does with its bundled copy), when `legacy_worker_upgrade` is off.
    #[serde(default)]
    pub legacy_worker_script: Option<PathBuf>,
    /// Source address for this node's outgoing connections (Raft, forwarding). Lets a test harness tell
    /// nodes apart behind a fault-injecting proxy; unset in production.
    #[serde(default)]
    pub outbound_ip: Option<std::net::IpAddr>,
    /// `host:port` other nodes gossip to (default: the host of `advertise_url`, the port of `listen`).
    #[serde(default)]
    pub gossip_advertise: Option<String>,
    /// Gossip seeds (`host:port`); default: the peers' and the join URL's host:port.
    #[serde(default)]
    pub gossip_seeds: Vec<String>,
    /// Log as JSON lines instead of text.
    #[serde(default)]
    pub log_json: bool,
    /// Git polling, forge webhooks and notifications (`[triggers]`, see `crate::triggers`).
    #[serde(default)]
    pub triggers: crate::triggers::TriggersConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Peer {
    pub id: u64,
    pub url: String,
}

fn default_worker_timeout() -> u64 {
    30
}

fn default_retention_interval() -> u64 {
    300
}

fn default_max_artifact() -> usize {
    64 * 1024 * 1024 * 1024
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("{key} is missing: {hint}")]
    Missing {
        key: &'static str,
        hint: &'static str,
    },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

impl NodeConfig {
    /// Node `id` listening on 127.0.0.1:`port` with certificates from `pki`; every other key at its
    /// default. The dev quickstart, the tests and the cluster harness start from this.
    pub fn local(
        id: u64,
        data_dir: PathBuf,
        port: u16,
        pki: &crate::tls::DevPki,
        cluster_secret: String,
        admin_token: Option<String>,
    ) -> NodeConfig {
        NodeConfig {
            id,
            data_dir,
            listen: format!("127.0.0.1:{port}"),
            advertise_url: format!("https://127.0.0.1:{port}"),
            peers: vec![],
            join: None,
            tls_cert: pki.node_cert.clone(),
            tls_key: pki.node_key.clone(),
            ca_cert: pki.ca_cert.clone(),
            cluster_secret,
            cluster_secret_file: None,
            admin_token,
            admin_token_file: None,
            worker_timeout_secs: default_worker_timeout(),
            requeue_lost_runs: false,
            max_artifact_bytes: default_max_artifact(),
            artifacts: Default::default(),
            retention_interval_secs: default_retention_interval(),
            worker_binary: None,
            worker_version: None,
            legacy_worker_upgrade: false,
            legacy_worker_script: None,
            outbound_ip: None,
            gossip_advertise: None,
            gossip_seeds: vec![],
            log_json: false,
            triggers: Default::default(),
        }
    }

    pub fn load(path: &std::path::Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.display().to_string(),
                source,
            })?;
        apply_env_overrides(&mut table)?;
        let mut config: NodeConfig = table.try_into().map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        config.read_secret_files()?;
        Ok(config)
    }

    /// Fills `cluster_secret` and `admin_token` from their `_file` keys when they are not given inline,
    /// and refuses a node without a cluster secret.
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        let read = |path: &PathBuf| -> Result<String, ConfigError> {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            Ok(text.trim().to_string())
        };
        if self.cluster_secret.is_empty() {
            if let Some(path) = &self.cluster_secret_file {
                self.cluster_secret = read(path)?;
            }
        }
        if self.cluster_secret.is_empty() {
            return Err(ConfigError::Missing {
                key: "cluster_secret",
                hint: "set cluster_secret or cluster_secret_file (jobserv-node init-secrets makes one)",
            });
        }
        if self.admin_token.is_none() {
            if let Some(path) = &self.admin_token_file {
                self.admin_token = Some(read(path)?).filter(|t| !t.is_empty());
            }
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// Every top-level key can be overridden by `JOBSERV_<KEY>`; values are parsed as TOML when they can be
/// (numbers, booleans, arrays), else taken as strings.
fn apply_env_overrides(table: &mut toml::Table) -> Result<(), ConfigError> {
    const KEYS: [&str; 26] = [
        "cluster_secret_file",
        "admin_token_file",
        "legacy_worker_upgrade",
        "legacy_worker_script",
        "retention_interval_secs",
        // A TOML inline table: JOBSERV_ARTIFACTS='{store = "s3://b/p", gc_grace_secs = 60}'.
        "artifacts",
        "id",
        "data_dir",
        "listen",
        "advertise_url",
        "peers",
        "join",
        "tls_cert",
        "tls_key",
        "ca_cert",
        "cluster_secret",
        "admin_token",
        "worker_timeout_secs",
        "requeue_lost_runs",
        "max_artifact_bytes",
        "worker_binary",
        "log_json",
        "outbound_ip",
        "gossip_advertise",
        "gossip_seeds",
        "worker_version",
    ];
    for key in KEYS {
        let var = format!("JOBSERV_{}", key.to_uppercase());
        let Ok(raw) = std::env::var(&var) else {
            continue;
        };
        let value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
            Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.clone())),
            Err(_) => toml::Value::String(raw.clone()),
        };
        if key == "peers" && !value.is_array() {
            return Err(ConfigError::Env {
                var,
                message: "expected a TOML array like [{id=1, url=\"https://…\"}]".into(),
            });
        }
        table.insert(key.to_string(), value);
    }
    Ok(())
}
