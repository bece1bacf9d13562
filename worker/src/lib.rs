//! `jobserv-worker`: the lab agent. It registers with the cluster, checks in for run definitions, executes each
//! run in a container (or directly on the host) and streams the console, tests and artifacts back. The same
//! runner, switched to simulator mode, re-executes a downloaded `.rundef.json` on a laptop.
//!
//! Layout (one concern per module):
//! - [`config`]: the typed configuration of a worker and of the runner.
//! - [`runner`]: executes one [`RunDef`](jobserv_protocol::RunDef) and reports through [`runner::RunReporter`].
//! - [`client`]: the HTTP client with node fail-over, and the reporter that speaks the run protocol.
//! - [`checkin`]: registration and the check-in loop that hands run definitions to the runner.
//! - [`recover`]: what a restarted worker does about runs left from its previous life.
//! - [`simulate`]: the simulator's local reporter and entry points.
//! - [`update`]: self-update from `GET /worker`.
//! - [`execute`]: one run handed out to somebody else (JobServ's Python worker), executed by this runner.
//!
//! Invariant: this crate never links openraft, sled or actix; it talks to the cluster over HTTPS only.
pub mod checkin;
pub mod client;
pub mod config;
pub mod error;
pub mod execute;
pub mod facts;
pub mod recover;
pub mod runner;
pub mod simulate;
pub mod update;

pub use checkin::{run_worker, run_worker_until};
pub use config::{ExecutorKind, RunnerOptions, WorkerConfig};
pub use error::{Result, WorkerError};
pub use runner::{execute_run, RunOutcome, RunReporter};
pub use simulate::{simulate, simulate_project, simulate_with, ProjectSimulation};
/// Re-exported so callers of [`run_worker_until`] need no direct tokio-util dependency.
pub use tokio_util::sync::CancellationToken;

/// The worker's own version, compared with the one a check-in reply announces (self-update).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
