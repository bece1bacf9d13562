//! Notifications when a build completes: email through an SMTP relay (`email`, lettre over rustls) and
//! signed JSON webhooks (`webhook`, *new*). Both honour `only_failures`. They are sent by the build's
//! `BuildActor` once the build is complete, before it marks the build's hooks `final`: a notification
//! is sent at least once and, barring a crash between sending and that commit, exactly once.
use jobserv_protocol::RunStatus;
use jobserv_raft::model::{Build, Run};
use serde_json::{json, Value};

pub mod email;
pub mod webhook;

/// The facts every notification carries.
pub struct BuildSummary {
    pub project: String,
    pub number: u64,
    pub status: RunStatus,
    pub trigger: String,
    pub reason: Option<String>,
    pub url: String,
    /// (name, status, url)
    pub runs: Vec<(String, RunStatus, String)>,
}

impl BuildSummary {
    pub fn new(base_url: &str, build: &Build, runs: &[Run]) -> BuildSummary {
        let base = base_url.trim_end_matches('/');
        let url = format!("{base}/projects/{}/builds/{}/", build.project, build.number);
        BuildSummary {
            project: build.project.clone(),
            number: build.number,
            status: build.status,
            trigger: build.trigger_name.clone(),
            reason: build.reason.clone(),
            runs: runs
                .iter()
                .map(|r| (r.name.clone(), r.status, format!("{url}runs/{}/", r.name)))
                .collect(),
            url,
        }
    }

    pub fn failed(&self) -> bool {
        self.status == RunStatus::Failed
    }

    pub fn to_json(&self) -> Value {
        json!({
            "project": self.project,
            "build": self.number,
            "status": self.status,
            "trigger": self.trigger,
            "reason": self.reason,
            "url": self.url,
            "runs": self.runs.iter().map(|(name, status, url)| json!({"name": name, "status": status, "url": url})).collect::<Vec<_>>(),
        })
    }
}
