//! The HTTPS API of `shared/spec/api.md`, served by every node. One file per resource; every handler
//! reads the local applied state and changes state only through `Cluster::propose` (or an actor that does).
//! By the time a handler reads, the `reads::linearize_reads` middleware has made that read linearizable
//! (this node applied the leader's read index), unless the caller asked for `?stale=1`.
use actix_web::web;

mod artifacts;
mod backup;
mod builds;
mod legacy;
mod projects;
mod raft_rpc;
mod runs;
pub(crate) mod system;
mod webhooks;
mod workers;

/// Request bodies above this are refused with 413 before they are read whole.
pub const MAX_JSON_BODY: usize = 2 * 1024 * 1024;
/// Console chunks and artifacts.
pub const MAX_CHUNK_BODY: usize = 32 * 1024 * 1024;

pub use artifacts::download as download_artifact;
pub use legacy::RUNNER_WHEEL_PATH;
pub use runs::{queue_reason, viewer_rundef, whole_log, QueueExplainer};
pub use system::cluster_view;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // actix tries resources in this order, a regex per pattern: the hot paths first (Raft RPCs, then a
    // worker's appends under `runs`), ahead of the twenty patterns of projects and builds. No pattern of
    // those matches a path under a run, so the order changes no route.
    raft_rpc::configure(cfg);
    runs::configure(cfg);
    system::configure(cfg);
    projects::configure(cfg);
    builds::configure(cfg);
    workers::configure(cfg);
    legacy::configure(cfg);
    webhooks::configure(cfg);
}

/// Parses a JSON body with a message that names the field at fault.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<T, crate::error::ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| crate::error::ApiError::BadRequest(format!("invalid JSON body: {e}")))
}
