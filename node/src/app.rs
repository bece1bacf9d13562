//! What every handler can reach: the cluster handle, the worker soft state, the actors and the config.
use crate::actors::checkin::CheckInActor;
use crate::actors::project::ProjectActors;
use crate::cluster::Cluster;
use crate::config::NodeConfig;
use crate::presence::Presence;
use actix::Addr;
use std::sync::Arc;

pub struct App {
    pub cluster: Arc<Cluster>,
    pub presence: Arc<Presence>,
    pub checkin: Addr<CheckInActor>,
    pub projects: ProjectActors,
    pub config: NodeConfig,
    pub log_stats: Arc<jobserv_raft::log_store::FlushStats>,
    /// Artifact bytes (`blobs/`).
    pub blobs: Arc<crate::blobs::BlobStore>,
    /// Queue depth by host tag over the last hour, sampled by this node (the UI's queue chart).
    pub queue_history: Arc<crate::ui::charts::QueueHistory>,
}

impl App {
    pub fn state(&self) -> &jobserv_raft::State {
        &self.cluster.state
    }

    /// `https://node/projects/<p>/builds/<n>/runs/<r>/` on `base`.
    pub fn run_url(base: &str, project: &str, build: u64, run: &str) -> String {
        format!(
            "{}/projects/{project}/builds/{build}/runs/{run}/",
            base.trim_end_matches('/')
        )
    }
}
