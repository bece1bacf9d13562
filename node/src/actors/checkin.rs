//! `CheckInActor`: hands queued runs to a checking-in worker. Messages are handled one at a time
//! (`AtomicResponse`), so two workers checking in on this node never race for the same run; across
//! nodes the state machine decides (a run no longer QUEUED is skipped), so assignment stays exactly-once.
//! A check-in that finds nothing to assign writes nothing.
//!
//! Once the cluster writes format 3, check-ins skip this actor: `assign_next` proposes `AssignNext` and the
//! state machine picks the runs from its host-tag queues, so check-ins on every node run concurrently,
//! batch into shared Raft appends, and never lose a run to another node's check-in. The actor remains for
//! a cluster still running a release without `AssignNext` (during a rolling upgrade).
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::scheduler::{self, SyncGate};
use actix::prelude::*;
use jobserv_raft::model::{Run, RunRef, Worker};
use jobserv_raft::{Command, CommandResult};
use std::sync::Arc;

pub struct CheckInActor {
    cluster: Arc<Cluster>,
}

impl CheckInActor {
    pub fn new(cluster: Arc<Cluster>) -> Self {
        CheckInActor { cluster }
    }
}

impl Actor for CheckInActor {
    type Context = Context<Self>;
}

/// Assign up to `slots` runs to `worker`; replies with the runs and their fencing tokens.
#[derive(Message)]
#[rtype(result = "Result<Vec<(RunRef, u64)>, ApiError>")]
pub struct AssignWork {
    pub worker: Worker,
    pub slots: u32,
}

/// The oldest unfinished build of every synchronous project that has queued runs.
pub fn synchronous_gate(cluster: &Cluster, queued: &[Run]) -> Result<SyncGate, ApiError> {
    let mut gate = SyncGate::new();
    for run in queued {
        if gate.contains_key(&run.project) {
            continue;
        }
        let Some(project) = cluster.state.project(&run.project)? else {
            continue;
        };
        if !project.synchronous_builds {
            continue;
        }
        // Walk back from the run's build to the oldest one that is not complete.
        let mut oldest = run.build;
        let mut n = run.build;
        while n > 1 {
            n -= 1;
            match cluster.state.build(&run.project, n)? {
                Some(b) if !b.status.is_complete() => oldest = n,
                Some(_) => break,
                None => break,
            }
        }
        gate.insert(run.project.clone(), oldest);
    }
    Ok(gate)
}

/// Assigns up to `slots` runs to `worker` through `AssignNext`. The node first runs the same pick on its
/// applied state: when that finds nothing, nothing is proposed (idle long-polls write nothing).
pub async fn assign_next(
    cluster: &Cluster,
    worker: &Worker,
    slots: u32,
) -> Result<Vec<(RunRef, u64)>, ApiError> {
    if cluster.state.pick_for(worker, slots as usize)?.is_empty() {
        return Ok(Vec::new());
    }
    let cmd = Command::AssignNext {
        worker: worker.name.clone(),
        slots,
        now: jobserv_raft::state::now_ms(),
    };
    match cluster.propose(cmd).await? {
        CommandResult::Assigned(assigned) => {
            for (run, _) in &assigned {
                tracing::info!(project = %run.project, build = run.build, run = %run.run, worker = %worker.name, "run assigned");
            }
            Ok(assigned)
        }
        other => Err(ApiError::Internal(format!(
            "unexpected reply to AssignNext: {other:?}"
        ))),
    }
}

/// Whether check-ins may use `AssignNext` (every node reads format 3).
pub fn cluster_assigns_next() -> bool {
    jobserv_raft::codec::write_version() >= 3
}

impl Handler<AssignWork> for CheckInActor {
    type Result = AtomicResponse<Self, Result<Vec<(RunRef, u64)>, ApiError>>;

    fn handle(&mut self, msg: AssignWork, _ctx: &mut Context<Self>) -> Self::Result {
        let cluster = self.cluster.clone();
        let work = async move {
            let queued = cluster.state.queued_runs(1000)?;
            let gate = synchronous_gate(&cluster, &queued)?;
            let picked: Vec<RunRef> =
                scheduler::pick_runs(&queued, &msg.worker, msg.slots as usize, &gate)
                    .into_iter()
                    .map(|r| r.run_ref())
                    .collect();
            if picked.is_empty() {
                return Ok(Vec::new());
            }
            let cmd = Command::AssignRuns {
                worker: msg.worker.name.clone(),
                runs: picked,
                now: jobserv_raft::state::now_ms(),
            };
            match cluster.propose(cmd).await? {
                CommandResult::Assigned(assigned) => {
                    for (run, _) in &assigned {
                        tracing::info!(project = %run.project, build = run.build, run = %run.run, worker = %msg.worker.name, "run assigned");
                    }
                    Ok(assigned)
                }
                other => Err(ApiError::Internal(format!(
                    "unexpected reply to AssignRuns: {other:?}"
                ))),
            }
        };
        AtomicResponse::new(Box::pin(work.into_actor(self)))
    }
}
