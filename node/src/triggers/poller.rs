//! `GitPoller`: one actor per `git_poller` trigger, asked to poll by `PollerSupervisor` every
//! `poll_interval_secs` while `runs_here` says this node owns the trigger.
//!
//! A poll reads the project definition from the trigger's `definition_repo` (at its HEAD; cached by
//! sha), and for each `git_poller` trigger of it lists `GIT_URL` (`git ls-remote`) and keeps the refs
//! matching `GIT_POLL_REFS`. The first poll only records what it saw (as JobServ does). Afterwards every
//! ref whose sha differs from the recorded one starts one build with `GIT_URL`, `GIT_REF`, `GIT_SHA` and
//! `GIT_OLD_SHA`; the build is created in the same Raft entry that advances the ref, and only if the ref
//! still moves from the sha this poller saw (`PollAdvance`), so a restart, a second poller on another
//! node or a retry never starts it twice, and a ref that moved while no node polled is still seen.
use super::{git, repo, runs_here};
use crate::actors::project::{CreateBuild, CreatePolledBuild};
use crate::app::App;
use crate::error::ApiError;
use actix::prelude::*;
use actix_web::web::Data;
use jobserv_protocol::project::{parse_project, TriggerType};
use jobserv_raft::hooks::PollAdvance;
use jobserv_raft::Command;
use std::collections::{BTreeMap, HashMap};

pub struct GitPoller {
    app: Data<App>,
    project: String,
    trigger: u64,
    /// The definition last read: (definition repo HEAD sha, text).
    definition: Option<(String, String)>,
}

impl Actor for GitPoller {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Poll;

impl Handler<Poll> for GitPoller {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _msg: Poll, _ctx: &mut Context<Self>) -> Self::Result {
        let app = self.app.clone();
        let (project, trigger, cached) =
            (self.project.clone(), self.trigger, self.definition.clone());
        let work = async move {
            let result = poll(&app, &project, trigger, cached).await;
            if let Err(e) = &result {
                tracing::warn!(project = %project, trigger, "git poll: {e}");
            }
            result.ok().flatten()
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|definition, act, _| {
            if definition.is_some() {
                act.definition = definition;
            }
        })))
    }
}

/// One poll; returns the definition it read (for the cache).
async fn poll(
    app: &App,
    project: &str,
    trigger_id: u64,
    cached: Option<(String, String)>,
) -> Result<Option<(String, String)>, ApiError> {
    let state = &app.cluster.state;
    let Some(trigger) = state.trigger(project, trigger_id)? else {
        return Ok(None);
    };
    let Some((def_repo, def_file)) = repo::definition_location(&trigger, None) else {
        return Err(ApiError::BadRequest(
            "a git_poller trigger needs definition_repo".into(),
        ));
    };
    let head = repo::head_of(&def_repo).await?;
    let text = match cached {
        Some((sha, text)) if sha == head => text,
        _ => repo::read_definition(app, &def_repo, &def_file, &head).await?,
    };
    let definition = parse_project(&text)
        .map_err(|e| ApiError::BadRequest(format!("{def_repo}:{def_file}: {e}")))?;

    // key "<trigger>|<url>|<ref>" → (trigger name, url, ref, sha)
    let mut current: BTreeMap<String, (String, String, String, String)> = BTreeMap::new();
    let mut listed: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for t in definition
        .triggers
        .iter()
        .filter(|t| t.trigger_type == TriggerType::GitPoller)
    {
        let param = |k: &str| {
            t.params
                .get(k)
                .or_else(|| definition.params.get(k))
                .cloned()
        };
        let (Some(url), Some(globs)) = (param("GIT_URL"), param("GIT_POLL_REFS")) else {
            tracing::warn!(project, trigger = %t.name, "git_poller trigger without GIT_URL / GIT_POLL_REFS");
            continue;
        };
        if !listed.contains_key(&url) {
            let refs = git::ls_remote(&url)
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?;
            listed.insert(url.clone(), refs);
        }
        for (name, sha) in &listed[&url] {
            if git::ref_matches(&globs, name) {
                current.insert(
                    format!("{}|{url}|{name}", t.name),
                    (t.name.clone(), url.clone(), name.clone(), sha.clone()),
                );
            }
        }
    }

    let Some(seen) = state.poller_refs(project, trigger_id)? else {
        let seen = current
            .iter()
            .map(|(k, v)| (k.clone(), v.3.clone()))
            .collect();
        app.cluster
            .propose(Command::PollerSeen {
                project: project.into(),
                trigger: trigger_id,
                seen,
                replace: false,
            })
            .await?;
        return Ok(Some((head, text)));
    };
    for (key, (trigger_name, url, git_ref, sha)) in current {
        let old = seen.get(&key).cloned();
        if old.as_deref() == Some(sha.as_str()) {
            continue;
        }
        let build_definition = if repo::same_repo(&def_repo, &url) {
            repo::read_definition(app, &def_repo, &def_file, &sha)
                .await
                .unwrap_or_else(|_| text.clone())
        } else {
            text.clone()
        };
        let params = BTreeMap::from([
            ("GIT_URL".to_string(), url.clone()),
            ("GIT_REF".to_string(), git_ref.clone()),
            ("GIT_SHA".to_string(), sha.clone()),
            ("GIT_OLD_SHA".to_string(), old.clone().unwrap_or_default()),
        ]);
        let msg = CreatePolledBuild {
            build: CreateBuild {
                trigger_name,
                definition: build_definition,
                params,
                secrets: BTreeMap::new(),
                reason: Some(format!("{git_ref} of {url} moved to {sha}")),
                trigger_type: Some(TriggerType::GitPoller.as_str().into()),
                queue_priority: None,
            },
            advance: PollAdvance {
                project: project.into(),
                trigger: trigger_id,
                key: key.clone(),
                old,
                new: sha.clone(),
            },
        };
        let reply = app
            .projects
            .get(project)
            .send(msg)
            .await
            .map_err(|e| ApiError::Internal(format!("project actor: {e}")))?;
        match reply {
            Ok(number) => {
                tracing::info!(project, build = number, %git_ref, %sha, "git poller started a build")
            }
            Err(ApiError::BadRequest(why)) if why.contains("moved already") => {}
            Err(ApiError::BadRequest(why)) => {
                // The definition at this commit cannot build: record the sha so it is not retried forever.
                tracing::warn!(project, %git_ref, %sha, "no build for this commit: {why}");
                let seen = BTreeMap::from([(key, sha)]);
                app.cluster
                    .propose(Command::PollerSeen {
                        project: project.into(),
                        trigger: trigger_id,
                        seen,
                        replace: true,
                    })
                    .await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Some((head, text)))
}

/// Starts the `GitPoller`s of the triggers this node owns and asks each to poll every interval. A poll
/// that is still running delays that trigger's next one (polls of one trigger never overlap).
pub fn start_supervisor(app: Data<App>) {
    actix::spawn(async move {
        let interval = app.config.triggers.poll_interval();
        let mut pollers: HashMap<(String, u64), Addr<GitPoller>> = HashMap::new();
        loop {
            let triggers = app
                .cluster
                .state
                .triggers_of_type(TriggerType::GitPoller.as_str())
                .unwrap_or_default();
            let mut polls = Vec::new();
            let mut live = std::collections::HashSet::new();
            for t in triggers
                .into_iter()
                .filter(|t| runs_here(&app.cluster, t.id))
            {
                let key = (t.project.clone(), t.id);
                live.insert(key.clone());
                let addr = pollers
                    .entry(key)
                    .or_insert_with(|| {
                        GitPoller {
                            app: app.clone(),
                            project: t.project.clone(),
                            trigger: t.id,
                            definition: None,
                        }
                        .start()
                    })
                    .clone();
                polls.push(addr.send(Poll));
            }
            pollers.retain(|k, _| live.contains(k));
            let started = tokio::time::Instant::now();
            futures::future::join_all(polls).await;
            tokio::time::sleep_until(started + interval).await;
        }
    });
}
