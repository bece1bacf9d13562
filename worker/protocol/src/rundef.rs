//! The run definition (`.rundef.json`): everything a worker (or the simulator on a laptop) needs to execute
//! one run, and nothing more. Served by the node at assignment time and by `GET …/runs/<r>/.rundef.json`.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bumped whenever a field changes meaning. A worker refuses a rundef whose version it does not know.
pub const RUNDEF_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunDef {
    pub version: u32,
    pub project: String,
    pub build: u64,
    /// The run's name (unique in the build).
    pub run: String,
    /// Minutes the script may take before the container is killed and the run FAILED.
    pub timeout: u64,
    /// The per-run key (`Authorization: Token <api_key>`); removed when served to someone who may not see it.
    #[serde(default)]
    pub api_key: Option<String>,
    /// `https://node/projects/<p>/builds/<n>/runs/<r>/` on the node that handed out the run.
    pub run_url: String,
    /// The same run on every node, for fail-over (*new*).
    #[serde(default)]
    pub run_urls: Vec<String>,
    pub frontend_url: String,
    pub runner_url: String,
    pub trigger_type: String,
    pub container: String,
    #[serde(rename = "container-auth", default)]
    pub container_auth: Option<String>,
    #[serde(default)]
    pub privileged: bool,
    #[serde(rename = "container-user", default)]
    pub container_user: Option<String>,
    #[serde(rename = "container-entrypoint", default)]
    pub container_entrypoint: Option<String>,
    /// Merged params plus `H_PROJECT`, `H_BUILD`, `H_RUN` (and `H_TRIGGER_URL`, `GIT_*` …).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Name → value; written as files under `/secrets` and masked in the console log.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub script: Option<String>,
    #[serde(rename = "script-repo", default)]
    pub script_repo: Option<ScriptRepo>,
    #[serde(rename = "test-grepping", default)]
    pub test_grepping: Option<TestGrepping>,
    #[serde(rename = "persistent-volumes", default)]
    pub persistent_volumes: BTreeMap<String, String>,
    #[serde(rename = "shared-volumes", default)]
    pub shared_volumes: BTreeMap<String, String>,
    #[serde(rename = "host-tag")]
    pub host_tag: String,
    #[serde(rename = "console-progress", default)]
    pub console_progress: Option<ConsoleProgress>,
    /// Set by the simulator: every server call is switched off, output and artifacts land locally.
    #[serde(default)]
    pub simulated: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScriptRepo {
    #[serde(rename = "clone-url")]
    pub clone_url: String,
    #[serde(rename = "git-ref", default)]
    pub git_ref: Option<String>,
    /// Names of secrets (`:`-separated in the YAML) used as the clone token.
    #[serde(default)]
    pub token: Option<String>,
    /// Path of the script inside the repository.
    pub path: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestGrepping {
    #[serde(rename = "test-pattern", default)]
    pub test_pattern: Option<String>,
    #[serde(rename = "result-pattern")]
    pub result_pattern: String,
    #[serde(default)]
    pub fixupdict: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsoleProgress {
    #[serde(rename = "progress-pattern")]
    pub progress_pattern: String,
}

impl RunDef {
    /// The rundef as a viewer without the run key may see it: no run key, secret values removed (names kept,
    /// so the simulator's user knows which files to provide under `/secrets`).
    pub fn redacted(&self) -> RunDef {
        let mut copy = self.clone();
        copy.api_key = None;
        for value in copy.secrets.values_mut() {
            value.clear();
        }
        copy
    }
}
