//! `BuildActor`: one per build that still owes something (`jobserv_raft::hooks`), started by
//! `BuildSupervisor` on the node that runs build duties (the leader for now, `triggers::runs_here`).
//! On every change of the applied state it looks at its build and does what is due, in this order:
//! 1. a passed run whose `triggers` have not fired: expand them (the parent run's environment plus
//!    `H_TRIGGER_URL`, the run's URL) and add the runs to the same build (`FireChain`), as JobServ does;
//!    a chained `simple` trigger takes the build's trigger type (a simple child of a PR build reports to
//!    the PR and clones the PR's code);
//! 2. every run passed and the trigger's own `triggers` have not fired: the same with the build's params
//!    and the build URL;
//! 3. a forge build not yet reported: the `pending` commit status;
//! 4. the build complete (the state machine keeps it RUNNING while a chain is pending): the final commit
//!    status, the email and the webhooks, then `MarkBuild(final)`, which retires the actor.
//!
//! Every step is recorded by a Raft command, so a new leader's actors pick up where the old one stopped.
use crate::cluster::Cluster;
use crate::notify::{self, BuildSummary};
use crate::triggers::forge::StatusTarget;
use crate::triggers::SmtpConfig;
use actix::prelude::*;
use jobserv_protocol::project::{
    parse_project, ProjectDefinition, RunSpec, TriggerRef, TriggerType,
};
use jobserv_protocol::{RunDef, RunStatus};
use jobserv_raft::hooks::{run_chain_marker, BuildHooks, BUILD_CHAIN, FINAL, STATUS_PENDING};
use jobserv_raft::model::Build;
use jobserv_raft::Command;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The hooks a new build gets, or `None` when it owes nothing (no chain, no forge status, no
/// notification): such a build costs no extra Raft entry.
pub fn hooks_for(
    definition: &ProjectDefinition,
    trigger_name: &str,
    params: &BTreeMap<String, String>,
) -> Option<BuildHooks> {
    let trigger = definition.trigger(trigger_name)?;
    let mut hooks = BuildHooks {
        build_chain: trigger.triggers.clone(),
        ..Default::default()
    };
    if let Ok(specs) = definition.expand_trigger(trigger_name, params) {
        hooks.run_chains = run_chains(&specs);
    }
    let forge = params.contains_key("GH_STATUS_URL") || params.contains_key("GL_STATUS_URL");
    let notifies = definition.email_for(trigger_name).is_some() || !trigger.webhooks.is_empty();
    let owes = forge || notifies || !hooks.build_chain.is_empty() || !hooks.run_chains.is_empty();
    owes.then_some(hooks)
}

fn run_chains(specs: &[RunSpec]) -> BTreeMap<String, Vec<TriggerRef>> {
    specs
        .iter()
        .filter(|s| !s.triggers.is_empty())
        .map(|s| (s.name.clone(), s.triggers.clone()))
        .collect()
}

/// What a `BuildActor` needs to do its duties.
#[derive(Clone)]
pub struct Duties {
    pub cluster: Arc<Cluster>,
    pub client: reqwest::Client,
    pub smtp: Option<SmtpConfig>,
}

pub struct BuildActor {
    duties: Duties,
    project: String,
    number: u64,
}

impl Actor for BuildActor {
    type Context = Context<Self>;
}

/// Look at the build and do what is due.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Refresh;

impl Handler<Refresh> for BuildActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _msg: Refresh, _ctx: &mut Context<Self>) -> Self::Result {
        let (duties, project, number) = (self.duties.clone(), self.project.clone(), self.number);
        let work = async move {
            if let Err(e) = refresh(&duties, &project, number).await {
                tracing::warn!(project = %project, build = number, "build duties: {e}");
            }
        };
        AtomicResponse::new(Box::pin(work.into_actor(self)))
    }
}

async fn refresh(d: &Duties, project: &str, number: u64) -> Result<(), crate::error::ApiError> {
    let state = &d.cluster.state;
    let (Some(build), Some(hooks)) = (
        state.build(project, number)?,
        state.build_hooks(project, number)?,
    ) else {
        return Ok(());
    };
    if hooks.done.contains(FINAL) {
        return Ok(());
    }
    let runs = state.runs_of_build(project, number)?;
    let base = d.cluster.advertise_url.clone();
    let build_url = format!("{base}/projects/{project}/builds/{number}/");

    let mut fired = false;
    for run in runs.iter().filter(|r| r.status == RunStatus::Passed) {
        let Some(chain) = hooks.run_chains.get(&run.name) else {
            continue;
        };
        let marker = run_chain_marker(&run.name);
        if hooks.done.contains(&marker) {
            continue;
        }
        let mut params = run.definition.env.clone();
        params.insert(
            "H_TRIGGER_URL".into(),
            format!("{build_url}runs/{}/", run.name),
        );
        fire(d, &build, marker, chain, &params).await?;
        fired = true;
    }
    if fired {
        // The build has new runs, which `runs` predates: judging the build chain on it would start it
        // while the chained runs are still queued. The next refresh (after this entry) sees them.
        return Ok(());
    }
    if !hooks.build_chain.is_empty()
        && !hooks.done.contains(BUILD_CHAIN)
        && runs.iter().all(|r| r.status == RunStatus::Passed)
    {
        let mut params = build.params.clone();
        params.insert("H_TRIGGER_URL".into(), build_url.clone());
        fire(
            d,
            &build,
            BUILD_CHAIN.to_string(),
            &hooks.build_chain,
            &params,
        )
        .await?;
        return Ok(()); // the build has new runs: the next refresh sees them
    }

    let forge = StatusTarget::of(&build);
    if let Some(target) = &forge {
        if !build.status.is_complete() && !hooks.done.contains(STATUS_PENDING) {
            if let Err(e) = target.report(&d.client, build.status, &build_url).await {
                tracing::warn!(project, build = number, "{e}");
            }
            mark(d, project, number, STATUS_PENDING).await?;
        }
    }
    if !build.status.is_complete() {
        return Ok(());
    }
    if let Some(target) = &forge {
        if let Err(e) = target.report(&d.client, build.status, &build_url).await {
            tracing::warn!(project, build = number, "{e}");
        }
    }
    notify_completion(d, &build, &runs).await;
    mark(d, project, number, FINAL).await
}

/// Expands `chain` with `params` and adds the runs to the build under `marker` (once).
async fn fire(
    d: &Duties,
    build: &Build,
    marker: String,
    chain: &[TriggerRef],
    params: &BTreeMap<String, String>,
) -> Result<(), crate::error::ApiError> {
    let mut specs = Vec::new();
    match parse_project(&build.definition) {
        Ok(definition) => {
            for t in chain {
                match definition.expand_triggered_runs(t, params) {
                    Ok(runs) => specs.extend(runs),
                    Err(e) => {
                        tracing::warn!(project = %build.project, build = build.number, trigger = %t.name, "chain not started: {e}")
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(project = %build.project, build = build.number, "chain not started: {e}")
        }
    }
    let chains = run_chains(&specs);
    let runs: Vec<RunDef> = specs
        .into_iter()
        .map(|spec| {
            let simple = spec.trigger_type == TriggerType::Simple;
            let mut def = crate::definition::run_definition(&build.project, spec);
            if simple {
                def.trigger_type = build.trigger_type.clone(); // JobServ's upgrade: report like the parent
            }
            def
        })
        .collect();
    tracing::info!(project = %build.project, build = build.number, %marker, runs = runs.len(), "chain fired");
    let cmd = Command::FireChain {
        project: build.project.clone(),
        build: build.number,
        marker,
        runs,
        run_chains: chains,
        now: jobserv_raft::state::now_ms(),
    };
    d.cluster.propose(cmd).await.map(|_| ())
}

async fn mark(
    d: &Duties,
    project: &str,
    number: u64,
    marker: &str,
) -> Result<(), crate::error::ApiError> {
    d.cluster
        .propose(Command::MarkBuild {
            project: project.into(),
            build: number,
            marker: marker.into(),
        })
        .await
        .map(|_| ())
}

async fn notify_completion(d: &Duties, build: &Build, runs: &[jobserv_raft::model::Run]) {
    let Ok(definition) = parse_project(&build.definition) else {
        return;
    };
    let summary = BuildSummary::new(&d.cluster.advertise_url, build, runs);
    if let Some(email) = definition.email_for(&build.trigger_name) {
        if !email.only_failures || summary.failed() {
            match &d.smtp {
                Some(smtp) => match notify::email::send(smtp, &email.addresses(), &summary).await {
                    Ok(()) => {
                        tracing::info!(project = %build.project, build = build.number, "email sent")
                    }
                    Err(e) => {
                        tracing::warn!(project = %build.project, build = build.number, "email: {e}")
                    }
                },
                None => {
                    tracing::warn!(project = %build.project, "the definition asks for email but [triggers.smtp] is not configured")
                }
            }
        }
    }
    let webhooks = definition
        .trigger(&build.trigger_name)
        .map(|t| t.webhooks.clone())
        .unwrap_or_default();
    for hook in webhooks {
        if hook.only_failures && !summary.failed() {
            continue;
        }
        let Some(secret) = build.secrets.get(&hook.secret_name) else {
            tracing::warn!(project = %build.project, url = %hook.url, "webhook secret {} missing: not sent", hook.secret_name);
            continue;
        };
        if let Err(e) = notify::webhook::send(&d.client, &hook.url, secret, &summary).await {
            tracing::warn!(project = %build.project, build = build.number, "{e}");
        }
    }
}

/// Keeps one `BuildActor` per open build on the node that runs build duties and wakes them whenever the
/// applied state changes (at least every second). Refreshes of one build never overlap.
pub fn start_supervisor(duties: Duties) {
    actix::spawn(async move {
        let mut actors: HashMap<(String, u64), Addr<BuildActor>> = HashMap::new();
        let mut seen = 0;
        loop {
            seen = duties
                .cluster
                .wait_applied(seen, Duration::from_secs(1))
                .await;
            if !duties.cluster.is_leader() {
                actors.clear();
                continue;
            }
            let open = duties.cluster.state.open_hook_builds().unwrap_or_default();
            let live: HashSet<(String, u64)> = open.iter().cloned().collect();
            actors.retain(|k, _| live.contains(k));
            let mut refreshes = Vec::new();
            for (project, number) in open {
                let addr = actors
                    .entry((project.clone(), number))
                    .or_insert_with(|| {
                        BuildActor {
                            duties: duties.clone(),
                            project,
                            number,
                        }
                        .start()
                    })
                    .clone();
                refreshes.push(addr.send(Refresh));
            }
            futures::future::join_all(refreshes).await;
        }
    });
}
