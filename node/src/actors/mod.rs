//! The node's actix actors, one per file with its messages beside it:
//! - `CheckInActor` (one per node): turns a worker's free slots into a committed assignment;
//! - `ProjectActor` (one per project, on demand): validates, expands and proposes new builds;
//! - `BuildActor` (one per build that owes chains, forge statuses or notifications, on the leader);
//! - `WorkerMonitor` (one per node, active on the leader): fails or re-queues the runs of lost workers;
//! - `RetentionKeeper` (one per node, active on the leader): deletes the builds a project's `retention` drops.
pub mod build;
pub mod checkin;
pub mod project;
pub mod retention;
pub mod worker_monitor;
