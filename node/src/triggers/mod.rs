//! Triggers driven by source control: git polling (`poller`), GitHub pull requests and GitLab merge
//! requests (`forge`: webhook events in, commit statuses out), and reading a project definition from a
//! repository at the triggering commit (`repo`). `git` wraps the git CLI, which talks every transport
//! (https, ssh, file://, a plain path) with the user's own configuration.
//!
//! Duties that must happen once (polling a trigger, reporting a status) run on the node `runs_here`
//! picks; progress is durable through Raft commands (`jobserv_raft::hooks`), so another node picks up
//! exactly where a dead one stopped.
use crate::cluster::Cluster;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

pub mod forge;
pub mod git;
pub mod poller;
pub mod repo;

/// `[triggers]` in the node's TOML.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct TriggersConfig {
    /// How often a git poller looks at its repositories (JobServ polls every 90 s; 30 s here).
    pub poll_interval_secs: u64,
    /// Where fetched repositories are cached (definitions read at a commit); default `<data_dir>/git-cache`.
    pub git_cache_dir: Option<PathBuf>,
    /// The SMTP relay for build emails; without it no email is sent.
    pub smtp: Option<SmtpConfig>,
}

impl Default for TriggersConfig {
    fn default() -> Self {
        TriggersConfig {
            poll_interval_secs: 30,
            git_cache_dir: None,
            smtp: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// `none` (plain, for a relay on localhost), `starttls` or `tls`.
    #[serde(default = "default_smtp_tls")]
    pub tls: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// The sender address.
    pub from: String,
}

fn default_smtp_port() -> u16 {
    25
}

fn default_smtp_tls() -> String {
    "starttls".into()
}

impl TriggersConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.poll_interval_secs.max(1))
    }
}

/// Whether this node runs the poller of `trigger_id`: rendezvous hashing over the nodes gossip sees alive,
/// so pollers spread over the cluster and only a dead node's pollers move. Gossip may briefly disagree
/// between nodes; then two nodes poll the same trigger for a moment, which costs a `git ls-remote` and never
/// a duplicate build (builds are created by a compare-and-set on the replicated "last seen" refs). A node
/// that does not see itself in gossip yet falls back to "the leader polls".
pub fn runs_here(cluster: &Cluster, trigger_id: u64) -> bool {
    let live = cluster.gossip.live_ids_now();
    if !live.contains(&cluster.id) {
        return cluster.is_leader();
    }
    crate::gossip::rendezvous_owner(&format!("trigger-{trigger_id}"), &live) == Some(cluster.id)
}

/// The HTTPS client for forges and webhooks: public roots (webpki) plus the cluster CA, so a forge behind
/// the cluster's own CA (or a test stand-in) is trusted too.
pub fn outbound_client(ca_cert: &std::path::Path) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        // HTTP/1.1, as before `object_store` (S3) turned reqwest's http2 feature on for the whole workspace:
        // one connection per transfer, no HTTP/2 flow-control window throttling bulk bodies.
        .http1_only()
        .timeout(Duration::from_secs(15))
        .user_agent("jobserv-rs");
    if let Ok(pem) = std::fs::read(ca_cert) {
        if let Ok(ca) = reqwest::Certificate::from_pem(&pem) {
            builder = builder.add_root_certificate(ca);
        }
    }
    builder.build().unwrap_or_default()
}
