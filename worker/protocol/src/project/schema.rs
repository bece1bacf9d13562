//! The typed project definition: what a valid `PROJECT.yml` means.
//!
//! Values of these types come from [`super::parse_project`], which only returns a definition that passed every
//! schema and validation rule, so the expansion code can rely on references resolving. The fields are public
//! for reading; a caller that builds or edits one by hand gets errors (never panics) from the expansion
//! functions if it breaks those invariants. Names follow the YAML keys (`script-repos` → `script_repos`).
use crate::rundef::{ConsoleProgress, TestGrepping};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Longest trigger name JobServ stores.
pub const MAX_TRIGGER_NAME: usize = 80;

/// How deep trigger chains may go: a trigger may start a trigger that starts one more (JobServ's rule).
pub const MAX_TRIGGER_DEPTH: usize = 2;

/// A parsed and validated project definition.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProjectDefinition {
    pub description: Option<String>,
    /// Minutes a run may take before it is killed and FAILED.
    pub timeout: u64,
    /// Environment for every run.
    pub params: BTreeMap<String, String>,
    /// Name → script text (with its `#!` line).
    pub scripts: BTreeMap<String, String>,
    pub script_repos: BTreeMap<String, ScriptRepoDef>,
    /// Project-wide notification; a trigger's own `email` replaces it.
    pub email: Option<Email>,
    /// In document order.
    pub triggers: Vec<Trigger>,
    /// *new*: how many builds the project keeps (the newest build's definition decides); `None` keeps all.
    pub retention: Option<Retention>,
    /// Copied from the [`super::Limits`] the document was parsed with, so expansion honours the same bound.
    #[serde(skip)]
    pub(crate) max_runs_per_trigger: usize,
}

/// *new* `retention: {builds: N, days: D}`: keep the newest `builds` builds and/or those younger than
/// `days` days; older completed builds are deleted with their runs, logs, tests and artifacts. When both
/// are set a build goes only when both allow it. Running and promoted builds are always kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub builds: Option<u64>,
    pub days: Option<u64>,
}

/// An entry of `script-repos`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptRepoDef {
    pub clone_url: String,
    pub git_ref: Option<String>,
    /// Secret name(s), `:`-separated, holding the clone token.
    pub token: Option<String>,
}

impl ScriptRepoDef {
    /// The secret names in `token` (JobServ allows several, `:`-separated).
    pub fn token_secrets(&self) -> Vec<String> {
        self.token
            .as_deref()
            .map(split_secret_names)
            .unwrap_or_default()
    }
}

pub(crate) fn split_secret_names(value: &str) -> Vec<String> {
    value
        .split(':')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email {
    /// Comma-separated addresses, as written.
    pub users: String,
    pub only_failures: bool,
}

impl Email {
    /// The addresses in `users`, trimmed.
    pub fn addresses(&self) -> Vec<String> {
        self.users
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// The kinds of trigger JobServ knows. The LAVA ones are accepted and stored; executing LAVA jobs is out of
/// scope for now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerType {
    GitPoller,
    GithubPr,
    GitlabMr,
    Simple,
    Lava,
    LavaPr,
    LavaMr,
}

impl TriggerType {
    pub const ALL: [TriggerType; 7] = [
        TriggerType::GitPoller,
        TriggerType::GithubPr,
        TriggerType::GitlabMr,
        TriggerType::Simple,
        TriggerType::Lava,
        TriggerType::LavaPr,
        TriggerType::LavaMr,
    ];

    /// The name used in the YAML and in a rundef's `trigger_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerType::GitPoller => "git_poller",
            TriggerType::GithubPr => "github_pr",
            TriggerType::GitlabMr => "gitlab_mr",
            TriggerType::Simple => "simple",
            TriggerType::Lava => "lava",
            TriggerType::LavaPr => "lava_pr",
            TriggerType::LavaMr => "lava_mr",
        }
    }

    pub fn from_name(name: &str) -> Option<TriggerType> {
        TriggerType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for TriggerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trigger {
    pub name: String,
    pub trigger_type: TriggerType,
    /// Environment for this trigger's runs.
    pub params: BTreeMap<String, String>,
    /// As written (before `loop-on` expansion).
    pub runs: Vec<Run>,
    /// Triggers started when *all* runs of a build started by this trigger completed (and the build passed).
    pub triggers: Vec<TriggerRef>,
    pub email: Option<Email>,
    /// *new*: signed JSON POSTs on build completion.
    pub webhooks: Vec<Webhook>,
}

/// A reference to another trigger of the project, from a run's or a trigger's `triggers` list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerRef {
    pub name: String,
    /// Format for the started runs' names: `{name}` is the started run's own name. In a [`super::RunSpec`]
    /// any `{loop}` of the parent run has already been replaced by its loop value.
    pub run_names: Option<String>,
}

/// *new*: a webhook notified when a build completes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub url: String,
    /// Name of the secret holding the HMAC key the POST is signed with.
    pub secret_name: String,
    pub only_failures: bool,
}

/// Where a run's script comes from: exactly one of `script` / `script-repo`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunScript {
    /// A name in the project's `scripts`.
    Script(String),
    /// A name in `script-repos` and the path of the script inside that repository.
    Repo { name: String, path: String },
}

/// One `loop-on` entry: a parameter and the values it takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopOn {
    /// An environment variable name, or `host-tag` to set the run's host tag.
    pub param: String,
    pub values: Vec<String>,
}

/// The `loop-on` param that sets the host tag rather than an environment variable.
pub const HOST_TAG_PARAM: &str = "host-tag";

/// A run as written in the YAML (one entry may expand to many runs through `loop-on`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Run {
    /// May contain `{loop}` when `loop_on` is set.
    pub name: String,
    pub container: String,
    /// Name of a secret holding registry credentials.
    pub container_auth: Option<String>,
    pub container_user: Option<String>,
    /// `Some("")` clears the image's entrypoint.
    pub container_entrypoint: Option<String>,
    pub privileged: bool,
    /// `None` only when a `loop-on` entry sets `host-tag`.
    pub host_tag: Option<String>,
    pub script: RunScript,
    pub params: BTreeMap<String, String>,
    pub loop_on: Vec<LoopOn>,
    /// Volume name → container path.
    pub persistent_volumes: BTreeMap<String, String>,
    /// Host path (or worker-configured volume name) → container path.
    pub shared_volumes: BTreeMap<String, String>,
    pub console_progress: Option<ConsoleProgress>,
    pub test_grepping: Option<TestGrepping>,
    pub triggers: Vec<TriggerRef>,
}

impl ProjectDefinition {
    pub fn trigger(&self, name: &str) -> Option<&Trigger> {
        self.triggers.iter().find(|t| t.name == name)
    }

    /// The email settings for a build started by `trigger_name`: the trigger's own, else the project's.
    pub fn email_for(&self, trigger_name: &str) -> Option<&Email> {
        self.trigger(trigger_name)
            .and_then(|t| t.email.as_ref())
            .or(self.email.as_ref())
    }
}
