//! `/workers/`: registration, enlistment, and the check-in that hands out work. A check-in records the
//! worker's health in this node's soft state only; it becomes a Raft write only when runs are assigned.
use super::parse_json;
use super::runs::rundef_for;
use crate::actors::checkin::{self, AssignWork};
use crate::app::App;
use crate::auth::{bearer, hash_token, require_user, require_worker};
use crate::error::{created, success, ApiError, ApiResult};
use crate::presence::WorkerHealth;
use actix_web::{web, HttpRequest};
use jobserv_protocol::api::{CheckInReply, WorkerRegistration};
use jobserv_raft::model::{Role, WorkerFacts};
use jobserv_raft::Command;
use serde::Deserialize;
use serde_json::json;
use std::time::{Duration, Instant};

/// Longest long-poll, and at most a third of the worker timeout (`max_wait`): a waiting worker is seen only
/// when its check-in starts and ends, and must never look lost in between.
const MAX_WAIT: Duration = Duration::from_secs(20);

fn max_wait(worker_timeout_secs: u64) -> Duration {
    MAX_WAIT.min(Duration::from_secs(worker_timeout_secs) / 3)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/workers/", web::get().to(list))
        .route("/workers/{name}/", web::post().to(register))
        .route("/workers/{name}/", web::patch().to(update))
        .route("/workers/{name}/", web::get().to(check_in))
        .route(
            "/workers/{name}/events/",
            web::post().to(super::legacy::events),
        );
}

fn facts_of(r: &WorkerRegistration) -> WorkerFacts {
    WorkerFacts {
        distro: r.distro.clone(),
        mem_total: r.mem_total,
        cpu_total: r.cpu_total,
        cpu_type: r.cpu_type.clone(),
        concurrent_runs: r.concurrent_runs,
        host_tags: r.host_tags.clone(),
        surges_only: r.surges_only,
        version: r.version.clone(),
    }
}

async fn register(app: web::Data<App>, path: web::Path<String>, body: web::Bytes) -> ApiResult {
    let name = path.into_inner();
    let (api_key, facts) = match super::legacy::legacy_registration(&body) {
        Some(legacy) => legacy?,
        None => {
            let reg: WorkerRegistration = parse_json(&body)?;
            let facts = facts_of(&reg);
            (reg.api_key, facts)
        }
    };
    if api_key.len() < 32 {
        return Err(ApiError::BadRequest(
            "api_key: must be a random string of at least 32 characters".into(),
        ));
    }
    if facts.concurrent_runs == 0 || facts.concurrent_runs > 1024 {
        return Err(ApiError::BadRequest(
            "concurrent_runs: must be 1 to 1024".into(),
        ));
    }
    jobserv_raft::state::validate_name("worker", &name)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let cmd = Command::RegisterWorker {
        name: name.clone(),
        key_hash: hash_token(&api_key),
        facts,
        now: jobserv_raft::state::now_ms(),
    };
    app.cluster.propose(cmd).await?;
    tracing::info!(worker = %name, "worker registered");
    Ok(created(
        json!({ "name": name, "enlisted": app.state().worker(&name)?.map(|w| w.enlisted).unwrap_or(false) }),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct WorkerPatch {
    pub enlisted: Option<bool>,
    pub distro: Option<String>,
    pub mem_total: Option<u64>,
    pub cpu_total: Option<u32>,
    pub cpu_type: Option<String>,
    pub concurrent_runs: Option<u32>,
    pub host_tags: Option<Vec<String>>,
    pub surges_only: Option<bool>,
    pub version: Option<String>,
}

/// Admins may enlist or delist; the worker itself may update its facts.
async fn update(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    let name = path.into_inner();
    let is_admin = bearer(&req)
        .and_then(|t| app.state().token(&hash_token(t)).ok().flatten())
        .is_some_and(|t| t.role == Role::Admin);
    let worker = if is_admin {
        app.state()
            .worker(&name)?
            .ok_or_else(|| ApiError::NotFound(format!("worker {name}")))?
    } else {
        require_worker(&req, app.state(), &name)?
    };
    // JobServ's worker PATCHes its whole host-properties object, read leniently as JobServ does.
    let legacy = !is_admin && crate::legacy::is_legacy(&worker.facts);
    let patch: WorkerPatch = if legacy {
        super::legacy::legacy_patch(&body)?
    } else {
        parse_json(&body)?
    };
    if !is_admin && patch.enlisted.is_some() {
        return Err(ApiError::Forbidden(
            "enlisted: only an admin may enlist or delist a worker".into(),
        ));
    }
    let mut facts = worker.facts.clone();
    facts.distro = patch.distro.unwrap_or(facts.distro);
    facts.mem_total = patch.mem_total.unwrap_or(facts.mem_total);
    facts.cpu_total = patch.cpu_total.unwrap_or(facts.cpu_total);
    facts.cpu_type = patch.cpu_type.unwrap_or(facts.cpu_type);
    facts.concurrent_runs = patch.concurrent_runs.unwrap_or(facts.concurrent_runs);
    facts.host_tags = patch.host_tags.unwrap_or(facts.host_tags);
    facts.surges_only = patch.surges_only.unwrap_or(facts.surges_only);
    facts.version = patch.version.unwrap_or(facts.version);
    let facts = (facts != worker.facts).then_some(facts);
    if facts.is_some() || patch.enlisted.is_some() {
        app.cluster
            .propose(Command::UpdateWorker {
                name: name.clone(),
                enlisted: patch.enlisted,
                facts,
            })
            .await?;
    }
    if legacy {
        // JobServ answers 200 with no data.
        return Ok(success(json!({})));
    }
    let worker = app
        .state()
        .worker(&name)?
        .ok_or_else(|| ApiError::NotFound(format!("worker {name}")))?;
    Ok(success(
        json!({ "worker": {"name": worker.name, "enlisted": worker.enlisted, "host_tags": worker.facts.host_tags} }),
    ))
}

#[derive(Deserialize)]
struct CheckInQuery {
    available_runners: Option<u32>,
    load_avg_1: Option<f64>,
    mem_free: Option<u64>,
    disk_free: Option<u64>,
    wait: Option<f64>,
}

async fn check_in(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
    q: web::Query<CheckInQuery>,
) -> ApiResult {
    let name = path.into_inner();
    let worker = require_worker(&req, app.state(), &name)?;
    let span = tracing::debug_span!("check_in", worker = %name);
    let _enter = span.enter();
    let available = q.available_runners.unwrap_or(0);
    let health = |available_runners| WorkerHealth {
        last_seen: Instant::now(),
        load_avg_1: q.load_avg_1,
        mem_free: q.mem_free,
        disk_free: q.disk_free,
        available_runners,
    };
    app.presence.seen(&name, health(available));

    let mut assigned = Vec::new();
    if worker.enlisted && available > 0 {
        let longest = max_wait(app.config.worker_timeout_secs);
        let wait = Duration::from_secs_f64(q.wait.unwrap_or(0.0).clamp(0.0, longest.as_secs_f64()));
        let deadline = Instant::now() + wait;
        loop {
            // Take the applied index before looking, so a run queued meanwhile wakes us.
            let seen = app.cluster.applied_index();
            assigned = if checkin::cluster_assigns_next() {
                checkin::assign_next(&app.cluster, &worker, available).await?
            } else {
                app.checkin
                    .send(AssignWork {
                        worker: worker.clone(),
                        slots: available,
                    })
                    .await
                    .map_err(|e| ApiError::Internal(format!("check-in actor: {e}")))??
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if !assigned.is_empty() || remaining.is_zero() {
                break;
            }
            app.cluster.wait_applied(seen, remaining).await;
        }
        app.presence.seen(
            &name,
            health(available.saturating_sub(assigned.len() as u32)),
        );
    }
    app.cluster
        .metrics
        .checkins
        .with_label_values(&[if assigned.is_empty() {
            "idle"
        } else {
            "assigned"
        }])
        .inc();

    let mut run_defs = Vec::new();
    for (run_ref, fence) in &assigned {
        if let Some(run) = app.state().run(run_ref)? {
            run_defs.push(rundef_for(&app, &run, Some(*fence))?);
        }
    }
    if crate::legacy::is_legacy(&worker.facts) {
        return Ok(success(super::legacy::legacy_checkin_reply(
            &app, &worker, run_defs,
        )?));
    }
    let active_runs = app
        .state()
        .worker_run_refs(&name)?
        .iter()
        .map(|r| r.to_string())
        .collect();
    let reply = CheckInReply {
        name: name.clone(),
        enlisted: worker.enlisted,
        run_defs,
        active_runs,
        nodes: app.cluster.node_urls(),
        version: app
            .config
            .worker_version
            .clone()
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
    };
    Ok(success(json!({ "worker": reply })))
}

async fn list(req: HttpRequest, app: web::Data<App>) -> ApiResult {
    require_user(&req, app.state())?;
    let timeout = Duration::from_secs(app.config.worker_timeout_secs);
    let workers: Vec<_> = app
        .state()
        .workers()?
        .into_iter()
        .map(|w| {
            let health = app.presence.get(&w.name);
            json!({
                "name": w.name,
                "enlisted": w.enlisted,
                "online": app.presence.is_online(&w.name, timeout),
                "distro": w.facts.distro,
                "mem_total": w.facts.mem_total,
                "cpu_total": w.facts.cpu_total,
                "cpu_type": w.facts.cpu_type,
                "concurrent_runs": w.facts.concurrent_runs,
                "host_tags": w.facts.host_tags,
                "surges_only": w.facts.surges_only,
                "version": w.facts.version,
                "legacy": crate::legacy::is_legacy(&w.facts),
                "health": health,
            })
        })
        .collect();
    Ok(success(json!({ "workers": workers })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long poll never outlasts a third of the worker timeout, so the lost-worker monitor cannot fire
    /// on a worker that is only waiting for work.
    #[test]
    fn the_long_poll_is_capped_by_the_worker_timeout() {
        assert_eq!(max_wait(90), MAX_WAIT);
        assert_eq!(max_wait(30), Duration::from_secs(10));
        assert_eq!(
            max_wait(10),
            Duration::from_millis(3_333) + Duration::from_nanos(333_333)
        );
        assert_eq!(max_wait(0), Duration::ZERO);
    }
}
