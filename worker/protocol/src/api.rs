//! API payloads and header names shared by the node and the worker (see `shared/spec/api.md`).
use crate::rundef::RunDef;
use serde::{Deserialize, Serialize};

/// Version of the HTTP payloads below; sent by the worker as `X-JOBSERV-PROTOCOL`.
pub const API_VERSION: u32 = 1;

pub const HEADER_RUN_STATUS: &str = "X-RUN-STATUS";
pub const HEADER_RUN_METADATA: &str = "X-RUN-METADATA";
pub const HEADER_OFFSET: &str = "X-OFFSET";
pub const HEADER_CANCEL: &str = "X-JOBSERV-CANCEL";
pub const HEADER_PROTOCOL: &str = "X-JOBSERV-PROTOCOL";

/// The jsend envelope every endpoint answers with.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Jsend<T> {
    Success { data: T },
    Error { message: String },
}

/// `POST /workers/<name>/`: a worker introduces itself. It is not given work until an admin enlists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerRegistration {
    /// The worker's own long random key; the node stores only its hash.
    pub api_key: String,
    pub distro: String,
    pub mem_total: u64,
    pub cpu_total: u32,
    pub cpu_type: String,
    pub concurrent_runs: u32,
    #[serde(default)]
    pub host_tags: Vec<String>,
    #[serde(default)]
    pub surges_only: bool,
    /// The worker binary's version, for self-update.
    #[serde(default)]
    pub version: String,
}

/// The `data.worker` object of a check-in reply (`GET /workers/<name>/?available_runners=…`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckInReply {
    pub name: String,
    pub enlisted: bool,
    /// Runs newly assigned to this worker by a committed Raft command.
    #[serde(rename = "run-defs", default)]
    pub run_defs: Vec<RunDef>,
    /// Runs the cluster believes this worker holds (so a restarted worker can re-learn them).
    #[serde(default)]
    pub active_runs: Vec<String>,
    /// Every node's advertised URL, for fail-over.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// The worker version the server expects; an older worker self-updates from `GET /worker`.
    #[serde(default)]
    pub version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckInEnvelope {
    pub worker: CheckInReply,
}

/// `POST …/runs/<r>/tests/`: one test (suite) with its results, as the runner found them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestReport {
    pub name: String,
    pub status: crate::RunStatus,
    #[serde(default)]
    pub results: Vec<TestResult>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    pub name: String,
    /// PASSED, FAILED or SKIPPED.
    pub status: String,
    #[serde(default)]
    pub context: Option<String>,
}

/// `POST …/runs/<r>/create_signed` body: the artifact paths the runner wants to upload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateSignedRequest {
    pub paths: Vec<String>,
}

/// Reply: one signed, expiring upload URL per path (`PUT` the bytes to it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateSignedReply {
    pub urls: std::collections::BTreeMap<String, String>,
}
