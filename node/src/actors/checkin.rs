//! `CheckInActor`: hands queued runs to a checking-in worker. Messages are handled one at a time
//! (`AtomicResponse`), so two workers checking in on this node never race for the same run; across
//! nodes the state machine decides (a run no longer QUEUED is skipped), so assignment stays exactly-once.
//! A check-in that finds nothing to assign writes nothing.
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
