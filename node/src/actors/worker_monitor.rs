//! `WorkerMonitor`: on the leader, every few seconds, finds workers that hold runs but have not checked in
//! for `worker_timeout` and releases their runs (FAILED with a reason, or re-queued) through Raft. The
//! release bumps each run's fencing token, so the lost worker's run keys stop working at once.
//! Only the leader acts, so no duty is done twice; liveness comes from this node's soft state, and a node
//! that just became leader or just started grants every worker a full timeout first.
use crate::cluster::Cluster;
use crate::presence::Presence;
use actix::prelude::*;
use jobserv_raft::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct WorkerMonitor {
    pub cluster: Arc<Cluster>,
    pub presence: Arc<Presence>,
    pub timeout: Duration,
    pub requeue: bool,
    /// When this node last became leader: the grace period starts there.
    leader_since: Option<Instant>,
}

impl WorkerMonitor {
    pub fn new(
        cluster: Arc<Cluster>,
        presence: Arc<Presence>,
        timeout: Duration,
        requeue: bool,
    ) -> Self {
        WorkerMonitor {
            cluster,
            presence,
            timeout,
            requeue,
            leader_since: None,
        }
    }

    /// Whether this node should look for lost workers now (it leads, and has led for a full timeout).
    fn on_duty(&mut self) -> bool {
        if !self.cluster.is_leader() {
            self.leader_since = None;
            return false;
        }
        self.leader_since.get_or_insert_with(Instant::now).elapsed() >= self.timeout
    }
}

/// Workers holding runs that no live node has seen within `timeout` (this node's own view and every other
/// node's, from gossip). A run handed out within `timeout` is itself proof of a recent check-in (assignment
/// happens during one, on whichever node): gossip may not have carried that check-in here yet.
async fn lost_workers(cluster: &Cluster, presence: &Presence, timeout: Duration) -> Vec<String> {
    let Ok(workers) = cluster.state.workers() else {
        return Vec::new();
    };
    let seen_elsewhere = cluster.gossip.worker_last_seen().await;
    let now = jobserv_raft::state::now_ms();
    workers
        .into_iter()
        .filter(|w| presence.silent_for(&w.name) >= timeout)
        .filter(|w| {
            seen_elsewhere
                .get(&w.name)
                .is_none_or(|&t| now.saturating_sub(t) >= timeout.as_millis() as u64)
        })
        .filter(|w| {
            let runs = cluster.state.worker_runs(&w.name).unwrap_or_default();
            !runs.is_empty()
                && runs.iter().all(|r| {
                    now.saturating_sub(r.started.unwrap_or(0)) >= timeout.as_millis() as u64
                })
        })
        .map(|w| w.name)
        .collect()
}

impl Actor for WorkerMonitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_secs(2), |monitor, ctx| {
            if !monitor.on_duty() {
                return;
            }
            let cluster = monitor.cluster.clone();
            let presence = monitor.presence.clone();
            let timeout = monitor.timeout;
            let requeue = monitor.requeue;
            let release = async move {
                for worker in lost_workers(&cluster, &presence, timeout).await {
                    let reason = format!(
                        "worker {worker} stopped checking in (no check-in for {}s)",
                        timeout.as_secs()
                    );
                    tracing::warn!(worker = %worker, "{reason}; releasing its runs");
                    let cmd = Command::ReleaseWorkerRuns {
                        worker: worker.clone(),
                        reason,
                        requeue,
                        now: jobserv_raft::state::now_ms(),
                    };
                    if let Err(e) = cluster.propose(cmd).await {
                        tracing::warn!(worker = %worker, "could not release runs: {e}");
                    }
                }
            };
            ctx.spawn(release.into_actor(monitor));
        });
    }
}
