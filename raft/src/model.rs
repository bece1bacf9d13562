//! The records the state machine keeps. They are stored through `codec` (versioned bincode) and served as
//! JSON by the node, so they derive both. Timestamps are milliseconds since the Unix epoch, taken by the
//! proposer and carried in the command, so that applying a command is deterministic on every node.
use jobserv_protocol::api::TestResult;
use jobserv_protocol::{RunDef, RunStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Identifies one run: project, build number, run name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunRef {
    pub project: String,
    pub build: u64,
    pub run: String,
}

impl std::fmt::Display for RunRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.project, self.build, self.run)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub name: String,
    pub synchronous_builds: bool,
    /// The next build number. Allocated only inside the state machine, so numbers are gapless and unique
    /// whichever node took the request.
    pub next_build: u64,
    pub created: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub id: u64,
    pub project: String,
    #[serde(rename = "type")]
    pub trigger_type: String,
    pub owner: Option<String>,
    pub definition_repo: Option<String>,
    pub definition_file: Option<String>,
    /// Write-only: never serialized to API clients (the node strips them), kept for runs and webhooks.
    pub secrets: BTreeMap<String, String>,
    pub queue_priority: i32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Build {
    pub project: String,
    pub number: u64,
    pub status: RunStatus,
    pub trigger_name: String,
    pub trigger_type: String,
    pub reason: Option<String>,
    pub params: BTreeMap<String, String>,
    /// Write-only secrets given with the build (merged over the trigger's).
    pub secrets: BTreeMap<String, String>,
    pub queue_priority: i32,
    /// The project definition the build ran with.
    pub definition: String,
    pub run_names: Vec<String>,
    pub created: u64,
    pub completed: Option<u64>,
    pub promoted: Option<Promotion>,
}

/// Counts over a build's runs (`keys::build_tally`), enough to derive the build's status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildTally {
    pub runs: u32,
    /// Runs no longer queued.
    pub started: u32,
    pub complete: u32,
    pub failed: u32,
}

impl BuildTally {
    /// Counts `status` in (`sign` 1) or out (-1).
    pub fn count(&mut self, status: RunStatus, sign: i32) {
        let bump = |n: &mut u32, yes: bool| {
            if yes {
                *n = n.saturating_add_signed(sign);
            }
        };
        bump(&mut self.runs, true);
        bump(&mut self.started, status != RunStatus::Queued);
        bump(&mut self.complete, status.is_complete());
        bump(&mut self.failed, status == RunStatus::Failed);
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Promotion {
    pub name: String,
    pub annotation: Option<String>,
}

/// Why a queued run is still waiting; machine-readable, shown in the run JSON, `/health/runs/` and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum QueueReason {
    NoMatchingWorker,
    AllMatchingBusy,
    SurgeOnly,
    SynchronousBuild,
}

impl QueueReason {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueReason::NoMatchingWorker => "no_matching_worker",
            QueueReason::AllMatchingBusy => "all_matching_busy",
            QueueReason::SurgeOnly => "surge_only",
            QueueReason::SynchronousBuild => "synchronous_build",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub project: String,
    pub build: u64,
    pub name: String,
    pub status: RunStatus,
    pub host_tag: String,
    pub queue_priority: i32,
    /// Orders the queue within a priority: the log index that created the run, then its position.
    pub queue_seq: u64,
    /// The run definition without run key, URLs or secrets: those are filled in at assignment.
    pub definition: RunDef,
    pub worker: Option<String>,
    /// The fencing token of the current lease: the log index of the assignment. A run key minted for an
    /// older lease no longer matches, so a worker that lost the run cannot write to it.
    pub fence: u64,
    pub log_len: u64,
    pub created: u64,
    pub started: Option<u64>,
    pub completed: Option<u64>,
    pub cancelled: bool,
    /// Why the run FAILED when the worker did not say (timeout, lost worker, cancelled…).
    pub failure_reason: Option<String>,
    /// Free-form metadata from `X-RUN-METADATA` (console progress etc.).
    pub metadata: Option<String>,
}

impl Run {
    pub fn run_ref(&self) -> RunRef {
        RunRef {
            project: self.project.clone(),
            build: self.build,
            run: self.name.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Test {
    pub name: String,
    pub status: RunStatus,
    pub results: Vec<TestResult>,
    pub created: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct WorkerFacts {
    pub distro: String,
    pub mem_total: u64,
    pub cpu_total: u32,
    pub cpu_type: String,
    pub concurrent_runs: u32,
    pub host_tags: Vec<String>,
    pub surges_only: bool,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Worker {
    pub name: String,
    /// sha256 of the worker's key: the key itself is never stored.
    pub key_hash: String,
    pub facts: WorkerFacts,
    pub enlisted: bool,
    pub created: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
}

/// An artifact of a run. Its bytes live in the blob store under `sha256` (on the nodes' disks or in an
/// object store), never in the Raft log: the log commits only this record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArtifactMeta {
    pub path: String,
    pub size: u64,
    /// Lower-case hex sha256 of the bytes: the blob's address and the download's `ETag`.
    pub sha256: String,
    pub content_type: String,
    pub created: u64,
}

/// A blob of the content-addressed store: its size, the nodes that hold a verified copy (empty with an
/// object-store backend, which holds it for everyone) and how many artifacts refer to it. A blob whose last
/// reference goes is removed from the state; every node then deletes its copy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub sha256: String,
    pub size: u64,
    pub holders: Vec<u64>,
    pub refs: u64,
    pub created: u64,
}

/// A one-time login link for the web UI: using it logs the browser in as the token whose hash is here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoginLink {
    pub token_hash: String,
    /// Unix ms after which the link no longer works.
    pub expires: u64,
}
