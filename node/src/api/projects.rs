//! `/projects/` and `/projects/<p>/triggers/`.
use super::parse_json;
use crate::app::App;
use crate::auth::{require_admin, require_user};
use crate::error::{created, success, ApiError, ApiResult};
use actix_web::{web, HttpRequest};
use jobserv_raft::model::{Project, Trigger};
use jobserv_raft::state::validate_name;
use jobserv_raft::Command;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/projects/", web::get().to(list))
        .route("/projects/", web::post().to(create))
        .route("/projects/{p}/", web::get().to(get))
        .route("/projects/{p}/", web::delete().to(delete))
        .route("/projects/{p}/triggers/", web::get().to(list_triggers))
        .route("/projects/{p}/triggers/", web::post().to(create_trigger))
        .route(
            "/projects/{p}/triggers/{id}/",
            web::patch().to(update_trigger),
        )
        .route("/project-triggers/", web::get().to(triggers_of_type));
}

pub fn project_json(base: &str, p: &Project) -> serde_json::Value {
    json!({
        "name": p.name,
        "synchronous-builds": p.synchronous_builds,
        "url": format!("{}/projects/{}/", base, p.name),
        "builds_url": format!("{}/projects/{}/builds/", base, p.name),
    })
}

/// Secrets are write-only: only their names are ever returned.
fn trigger_json(t: &Trigger) -> serde_json::Value {
    json!({
        "id": t.id,
        "type": t.trigger_type,
        "owner": t.owner,
        "definition_repo": t.definition_repo,
        "definition_file": t.definition_file,
        "secrets": t.secrets.keys().collect::<Vec<_>>(),
        "queue_priority": t.queue_priority,
    })
}

async fn list(req: HttpRequest, app: web::Data<App>) -> ApiResult {
    require_user(&req, app.state())?;
    let base = &app.cluster.advertise_url;
    let projects: Vec<_> = app
        .state()
        .projects()?
        .iter()
        .map(|p| project_json(base, p))
        .collect();
    Ok(success(json!({ "projects": projects })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProject {
    name: String,
    #[serde(default, rename = "synchronous-builds", alias = "synchronous_builds")]
    synchronous_builds: bool,
}

async fn create(req: HttpRequest, app: web::Data<App>, body: web::Bytes) -> ApiResult {
    require_admin(&req, app.state())?;
    let new: NewProject = parse_json(&body)?;
    validate_name("project", &new.name).map_err(|e| ApiError::BadRequest(format!("name: {e}")))?;
    let cmd = Command::CreateProject {
        name: new.name.clone(),
        synchronous_builds: new.synchronous_builds,
        now: jobserv_raft::state::now_ms(),
    };
    app.cluster.propose(cmd).await?;
    // `propose` returns once this node applied the write too, so the local read sees it.
    let project = app.state().project(&new.name)?.ok_or_else(|| {
        ApiError::Internal("project committed but not applied on this node".into())
    })?;
    Ok(created(
        json!({ "project": project_json(&app.cluster.advertise_url, &project) }),
    ))
}

async fn get(req: HttpRequest, app: web::Data<App>, path: web::Path<String>) -> ApiResult {
    require_user(&req, app.state())?;
    let name = path.into_inner();
    let project = app
        .state()
        .project(&name)?
        .ok_or_else(|| ApiError::NotFound(format!("project {name}")))?;
    Ok(success(
        json!({ "project": project_json(&app.cluster.advertise_url, &project) }),
    ))
}

async fn delete(req: HttpRequest, app: web::Data<App>, path: web::Path<String>) -> ApiResult {
    require_admin(&req, app.state())?;
    let name = path.into_inner();
    app.cluster
        .propose(Command::DeleteProject { name: name.clone() })
        .await?;
    app.projects.forget(&name);
    Ok(success(json!({})))
}

async fn list_triggers(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
) -> ApiResult {
    require_admin(&req, app.state())?;
    let name = path.into_inner();
    app.state()
        .project(&name)?
        .ok_or_else(|| ApiError::NotFound(format!("project {name}")))?;
    let triggers: Vec<_> = app
        .state()
        .triggers(&name)?
        .iter()
        .map(trigger_json)
        .collect();
    Ok(success(json!({ "triggers": triggers })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    #[serde(rename = "type")]
    trigger_type: Option<String>,
    owner: Option<String>,
    definition_repo: Option<String>,
    definition_file: Option<String>,
    #[serde(default)]
    secrets: Vec<SecretBody>,
    queue_priority: Option<i32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretBody {
    name: String,
    value: String,
}

const TRIGGER_TYPES: [&str; 7] = [
    "git_poller",
    "github_pr",
    "gitlab_mr",
    "simple",
    "lava",
    "lava_pr",
    "lava_mr",
];

fn check_trigger_type(t: &str) -> Result<(), ApiError> {
    if TRIGGER_TYPES.contains(&t) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "type: unknown trigger type {t:?}; expected one of {}",
            TRIGGER_TYPES.join(", ")
        )))
    }
}

fn secrets_map(secrets: Vec<SecretBody>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for (i, s) in secrets.into_iter().enumerate() {
        if s.name.is_empty() || s.name.contains('/') {
            return Err(ApiError::BadRequest(format!(
                "secrets/{i}/name: must be non-empty without '/'"
            )));
        }
        out.insert(s.name, s.value);
    }
    Ok(out)
}

async fn create_trigger(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    require_admin(&req, app.state())?;
    let project = path.into_inner();
    let b: TriggerBody = parse_json(&body)?;
    let trigger_type = b
        .trigger_type
        .ok_or(ApiError::BadRequest("type: required".into()))?;
    check_trigger_type(&trigger_type)?;
    let trigger = Trigger {
        id: 0,
        project: project.clone(),
        trigger_type,
        owner: b.owner,
        definition_repo: b.definition_repo,
        definition_file: b.definition_file,
        secrets: secrets_map(b.secrets)?,
        queue_priority: b.queue_priority.unwrap_or(0),
    };
    match app
        .cluster
        .propose(Command::CreateTrigger { trigger })
        .await?
    {
        jobserv_raft::CommandResult::TriggerCreated { id } => Ok(created(json!({ "id": id }))),
        other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    }
}

async fn update_trigger(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<(String, u64)>,
    body: web::Bytes,
) -> ApiResult {
    require_admin(&req, app.state())?;
    let (project, id) = path.into_inner();
    let b: TriggerBody = parse_json(&body)?;
    let mut trigger = app
        .state()
        .trigger(&project, id)?
        .ok_or_else(|| ApiError::NotFound(format!("trigger {id} of project {project}")))?;
    if let Some(t) = b.trigger_type {
        check_trigger_type(&t)?;
        trigger.trigger_type = t;
    }
    trigger.owner = b.owner.or(trigger.owner);
    trigger.definition_repo = b.definition_repo.or(trigger.definition_repo);
    trigger.definition_file = b.definition_file.or(trigger.definition_file);
    trigger.queue_priority = b.queue_priority.unwrap_or(trigger.queue_priority);
    // Secrets given in a PATCH are added or replaced; the others stay.
    trigger.secrets.extend(secrets_map(b.secrets)?);
    app.cluster
        .propose(Command::UpdateTrigger {
            trigger: trigger.clone(),
        })
        .await?;
    Ok(success(json!({ "trigger": trigger_json(&trigger) })))
}

async fn triggers_of_type(
    req: HttpRequest,
    app: web::Data<App>,
    query: web::Query<BTreeMap<String, String>>,
) -> ApiResult {
    require_admin(&req, app.state())?;
    let t = query.get("type").ok_or(ApiError::BadRequest(
        "type: query parameter required".into(),
    ))?;
    check_trigger_type(t)?;
    let triggers: Vec<_> = app
        .state()
        .triggers_of_type(t)?
        .iter()
        .map(|tr| {
            let mut j = trigger_json(tr);
            j["project"] = json!(tr.project);
            j
        })
        .collect();
    Ok(success(json!({ "triggers": triggers })))
}
