//! Records behind triggers and notifications: what a build still has to do once its runs move (start
//! chained triggers, report to a forge, notify) and what a git poller last saw. They live in the
//! replicated state so that a restart or a leader change neither repeats nor misses a duty:
//! - `BuildHooks.done` holds a marker per duty once it is done (`run:<name>` / `build` for chains fired,
//!   `status:pending`, `final` once the completion duties ran). `FireChain` checks and sets its marker in
//!   the same entry that adds the runs, so a chain fires at most once whichever node proposes it.
//! - While a passed run (or a passed build) still has an unfired chain, the state machine keeps the build
//!   RUNNING: a build is never seen PASSED and then RUNNING again because its chained runs arrived late.
//! - A poller's refs advance in the same entry that creates the build (`PollAdvance` is a compare-and-set
//!   on the ref's last seen sha), so exactly one build is created per moved ref.
use jobserv_protocol::project::TriggerRef;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Marker set once a build's completion duties (final forge status, email, webhooks) ran.
pub const FINAL: &str = "final";
/// Marker set once the "pending" commit status was reported to the forge.
pub const STATUS_PENDING: &str = "status:pending";
/// Marker of the build-level chain (the trigger's own `triggers`).
pub const BUILD_CHAIN: &str = "build";

/// Marker of the chain a run starts when it passes.
pub fn run_chain_marker(run: &str) -> String {
    format!("run:{run}")
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildHooks {
    /// Runs that start other triggers when they pass, with those triggers (`{loop}` already replaced).
    pub run_chains: BTreeMap<String, Vec<TriggerRef>>,
    /// Triggers started when every run of the build passed.
    pub build_chain: Vec<TriggerRef>,
    /// Duties done (see the module docs for the markers).
    pub done: BTreeSet<String>,
}

/// A poller's compare-and-set: `key` (trigger, repository, ref) moves from `old` to `new`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PollAdvance {
    pub project: String,
    pub trigger: u64,
    pub key: String,
    pub old: Option<String>,
    pub new: String,
}
