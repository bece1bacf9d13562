//! `ProjectActor`: one per project, started on first use. It owns the path from "start a build" to a
//! committed `CreateBuild`: parse and validate the definition, expand the trigger, gather the secrets,
//! propose. Builds of one project are thereby created in the order requests reached this node, and the
//! CPU spent on YAML stays off the HTTP workers' threads.
use crate::cluster::Cluster;
use crate::definition::prepare_build;
use crate::error::ApiError;
use actix::prelude::*;
use jobserv_raft::command::NewBuild;
use jobserv_raft::{Command, CommandResult};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

pub struct ProjectActor {
    project: String,
    cluster: Arc<Cluster>,
}

impl Actor for ProjectActor {
    type Context = Context<Self>;
}

#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<u64, ApiError>")]
pub struct CreateBuild {
    pub trigger_name: String,
    pub definition: String,
    pub params: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
    pub reason: Option<String>,
    pub trigger_type: Option<String>,
    pub queue_priority: Option<i32>,
}

impl Handler<CreateBuild> for ProjectActor {
    type Result = AtomicResponse<Self, Result<u64, ApiError>>;

    fn handle(&mut self, msg: CreateBuild, _ctx: &mut Context<Self>) -> Self::Result {
        let work = create_build(self.cluster.clone(), self.project.clone(), msg, None);
        AtomicResponse::new(Box::pin(work.into_actor(self)))
    }
}

/// A build started by a git poller: created only if the ref still moves from `advance.old` (see
/// `jobserv_raft::hooks::PollAdvance`), so a poller on another node never starts the same build twice.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<u64, ApiError>")]
pub struct CreatePolledBuild {
    pub build: CreateBuild,
    pub advance: jobserv_raft::hooks::PollAdvance,
}

impl Handler<CreatePolledBuild> for ProjectActor {
    type Result = AtomicResponse<Self, Result<u64, ApiError>>;

    fn handle(&mut self, msg: CreatePolledBuild, _ctx: &mut Context<Self>) -> Self::Result {
        let work = create_build(
            self.cluster.clone(),
            self.project.clone(),
            msg.build,
            Some(msg.advance),
        );
        AtomicResponse::new(Box::pin(work.into_actor(self)))
    }
}

async fn create_build(
    cluster: Arc<Cluster>,
    project: String,
    msg: CreateBuild,
    advance: Option<jobserv_raft::hooks::PollAdvance>,
) -> Result<u64, ApiError> {
    if cluster.state.project(&project)?.is_none() {
        return Err(ApiError::NotFound(format!("project {project}")));
    }
    let prepared = prepare_build(&msg.definition, &msg.trigger_name)?;
    let trigger_type = msg
        .trigger_type
        .clone()
        .unwrap_or_else(|| prepared.trigger_type.clone());
    // Secrets: those of the project's triggers of this type, overridden by the request's own.
    let mut secrets = BTreeMap::new();
    let mut priority = 0;
    for trigger in cluster.state.triggers(&project)? {
        if trigger.trigger_type == trigger_type {
            secrets.extend(trigger.secrets.clone());
            priority = priority.max(trigger.queue_priority);
        }
    }
    secrets.extend(msg.secrets.clone());
    let runs = prepared.runs(&project, &msg.params, &secrets)?;
    let new_build = NewBuild {
        project: project.clone(),
        trigger_name: msg.trigger_name.clone(),
        trigger_type,
        reason: msg.reason.clone(),
        params: msg.params.clone(),
        secrets,
        queue_priority: msg.queue_priority.unwrap_or(priority),
        definition: msg.definition.clone(),
        runs,
        now: jobserv_raft::state::now_ms(),
    };
    // Chains, forge statuses and notifications the build will owe (see `actors::build`).
    let hooks = crate::actors::build::hooks_for(
        prepared.definition(),
        &msg.trigger_name,
        &new_build.params,
    );
    let command = match (hooks, advance) {
        (None, None) => Command::CreateBuild(Box::new(new_build)),
        (hooks, advance) => Command::CreateBuildExt {
            build: Box::new(new_build),
            hooks,
            advance,
        },
    };
    match cluster.propose(command).await? {
        CommandResult::BuildCreated { number } => {
            tracing::info!(project = %project, build = number, "build created");
            Ok(number)
        }
        other => Err(ApiError::Internal(format!(
            "unexpected reply to CreateBuild: {other:?}"
        ))),
    }
}

/// Finds or starts the actor of a project. Actors live on one dedicated arbiter.
pub struct ProjectActors {
    arbiter: actix::ArbiterHandle,
    cluster: Arc<Cluster>,
    actors: Mutex<HashMap<String, Addr<ProjectActor>>>,
}

impl ProjectActors {
    pub fn new(arbiter: actix::ArbiterHandle, cluster: Arc<Cluster>) -> Self {
        ProjectActors {
            arbiter,
            cluster,
            actors: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, project: &str) -> Addr<ProjectActor> {
        let mut actors = match self.actors.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(addr) = actors.get(project).filter(|a| a.connected()) {
            return addr.clone();
        }
        let actor = ProjectActor {
            project: project.to_string(),
            cluster: self.cluster.clone(),
        };
        let addr = ProjectActor::start_in_arbiter(&self.arbiter, move |_| actor);
        actors.insert(project.to_string(), addr.clone());
        addr
    }

    /// Stops the actor of a deleted project.
    pub fn forget(&self, project: &str) {
        if let Ok(mut actors) = self.actors.lock() {
            actors.remove(project);
        }
    }
}
