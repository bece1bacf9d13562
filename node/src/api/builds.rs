//! `/projects/<p>/builds/`, promotion and run history.
use super::parse_json;
use super::runs::{runs_json, RunFields};
use crate::actors::project::CreateBuild;
use crate::app::App;
use crate::auth::{require_admin, require_user};
use crate::error::{created, success, ApiError, ApiResult};
use actix_web::{web, HttpRequest, HttpResponse};
use jobserv_protocol::time::iso_from_ms;
use jobserv_protocol::RunStatus;
use jobserv_raft::model::Build;
use jobserv_raft::Command;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/projects/{p}/builds/", web::get().to(list))
        .route("/projects/{p}/builds/", web::post().to(create))
        .route("/projects/{p}/builds/{n}/", web::get().to(get))
        .route(
            "/projects/{p}/builds/{n}/project.yml",
            web::get().to(definition),
        )
        .route("/projects/{p}/builds/{n}/promote", web::post().to(promote))
        .route("/projects/{p}/promoted-builds/", web::get().to(promoted))
        .route(
            "/projects/{p}/promoted-builds/{name}/",
            web::get().to(promoted_one),
        )
        .route("/projects/{p}/history/{run}/", web::get().to(history));
}

pub fn build_url(base: &str, project: &str, number: u64) -> String {
    format!(
        "{}/projects/{project}/builds/{number}/",
        base.trim_end_matches('/')
    )
}

/// A build; with `runs` its runs as [`run_json`] shows them with those fields.
fn build_json(
    app: &App,
    b: &Build,
    runs: Option<RunFields>,
) -> Result<serde_json::Value, ApiError> {
    let base = &app.cluster.advertise_url;
    let mut j = json!({
        "build_id": b.number,
        "project": b.project,
        "status": b.status,
        "url": build_url(base, &b.project, b.number),
        "trigger_name": b.trigger_name,
        "trigger_type": b.trigger_type,
        "reason": b.reason,
        "params": b.params,
        "queue_priority": b.queue_priority,
        "created": iso_from_ms(b.created),
        "completed": b.completed.map(iso_from_ms),
        "runs_url": format!("{}runs/", build_url(base, &b.project, b.number)),
        "name": b.promoted.as_ref().map(|p| p.name.clone()),
        "annotation": b.promoted.as_ref().and_then(|p| p.annotation.clone()),
    });
    if let Some(fields) = runs {
        let runs = runs_json(
            app,
            &app.state().runs_of_build(&b.project, b.number)?,
            fields,
        )?;
        j["runs"] = json!(runs);
    }
    Ok(j)
}

/// What `latest` means (JobServ's `GET …/builds/latest/`): the newest PASSED build, of one trigger with
/// `?trigger_name=`; `?all=1` (ours) the newest build whatever its status.
#[derive(Deserialize, Default)]
pub struct Latest {
    trigger_name: Option<String>,
    all: Option<String>,
}

impl Latest {
    fn any_status(&self) -> bool {
        matches!(self.all.as_deref(), Some("1" | "true"))
    }
}

/// `<n>` or `latest` (see [`Latest`]).
fn resolve_build(app: &App, project: &str, n: &str, latest: &Latest) -> Result<Build, ApiError> {
    if app.state().project(project)?.is_none() {
        return Err(ApiError::NotFound(format!("project {project}")));
    }
    let build = if n == "latest" {
        newest_matching(app, project, latest)?
    } else {
        let number: u64 = n.parse().map_err(|_| {
            ApiError::BadRequest(format!(
                "build number {n:?} is neither a number nor \"latest\""
            ))
        })?;
        app.state().build(project, number)?
    };
    build.ok_or_else(|| ApiError::NotFound(format!("build {project}/{n}")))
}

pub(super) fn resolve(
    app: &App,
    project: &str,
    n: &str,
    latest: &Latest,
) -> Result<Build, ApiError> {
    resolve_build(app, project, n, latest)
}

/// Walks the project's builds newest first (a page at a time) to the first that `latest` accepts.
fn newest_matching(app: &App, project: &str, latest: &Latest) -> Result<Option<Build>, ApiError> {
    let mut before = None;
    loop {
        let page = app.state().builds_page(project, before, 100)?;
        let found = page.builds.into_iter().find(|b| {
            (latest.any_status() || b.status == RunStatus::Passed)
                && latest
                    .trigger_name
                    .as_ref()
                    .is_none_or(|t| *t == b.trigger_name)
        });
        if found.is_some() || page.next_before.is_none() {
            return Ok(found);
        }
        before = page.next_before;
    }
}

#[derive(Deserialize)]
struct Page {
    limit: Option<usize>,
    before: Option<u64>,
}

async fn list(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
    page: web::Query<Page>,
) -> ApiResult {
    require_user(&req, app.state())?;
    let project = path.into_inner();
    app.state()
        .project(&project)?
        .ok_or_else(|| ApiError::NotFound(format!("project {project}")))?;
    let limit = page.limit.unwrap_or(25);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::BadRequest("limit: must be 1 to 1000".into()));
    }
    let result = app.state().builds_page(&project, page.before, limit)?;
    let builds: Result<Vec<_>, ApiError> = result
        .builds
        .iter()
        .map(|b| build_json(&app, b, Some(RunFields::Summary)))
        .collect();
    let next = result.next_before.map(|n| {
        format!(
            "{}/projects/{project}/builds/?limit={limit}&before={n}",
            app.cluster.advertise_url
        )
    });
    // As JobServ: `next` only when there is a next page (scripts loop `while "next" in data`).
    let mut data = json!({ "builds": builds?, "limit": limit });
    if let Some(next) = next {
        data["next"] = json!(next);
    }
    Ok(success(data))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBuildBody {
    #[serde(rename = "trigger-name")]
    trigger_name: String,
    #[serde(rename = "project-definition")]
    project_definition: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, String>,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    reason: Option<String>,
    #[serde(rename = "trigger-type")]
    trigger_type: Option<String>,
    #[serde(rename = "queue-priority")]
    queue_priority: Option<i32>,
}

async fn create(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    require_user(&req, app.state())?;
    let project = path.into_inner();
    let b: NewBuildBody = parse_json(&body)?;
    app.state()
        .project(&project)?
        .ok_or_else(|| ApiError::NotFound(format!("project {project}")))?;
    // Without a definition, the project's latest build's definition is used again.
    let definition = match b.project_definition {
        Some(d) => d,
        None => app
            .state()
            .latest_build(&project)?
            .map(|b| b.definition)
            .ok_or(ApiError::BadRequest(
                "project-definition: required (the project has no earlier build to take it from)"
                    .into(),
            ))?,
    };
    let msg = CreateBuild {
        trigger_name: b.trigger_name,
        definition,
        params: b.params,
        secrets: b.secrets,
        reason: b.reason,
        trigger_type: b.trigger_type,
        queue_priority: b.queue_priority,
    };
    let number = app
        .projects
        .get(&project)
        .send(msg)
        .await
        .map_err(|e| ApiError::Internal(format!("project actor: {e}")))??;
    let url = build_url(&app.cluster.advertise_url, &project, number);
    Ok(created(json!({ "url": url, "build_id": number })))
}

async fn get(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<(String, String)>,
    latest: web::Query<Latest>,
) -> ApiResult {
    require_user(&req, app.state())?;
    let (project, n) = path.into_inner();
    let build = resolve_build(&app, &project, &n, &latest)?;
    Ok(success(
        json!({ "build": build_json(&app, &build, Some(RunFields::WithQueueReason))? }),
    ))
}

async fn definition(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<(String, String)>,
    latest: web::Query<Latest>,
) -> Result<HttpResponse, ApiError> {
    require_user(&req, app.state())?;
    let (project, n) = path.into_inner();
    let build = resolve_build(&app, &project, &n, &latest)?;
    Ok(HttpResponse::Ok()
        .content_type("application/yaml")
        .body(build.definition))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    name: String,
    annotation: Option<String>,
}

async fn promote(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> ApiResult {
    require_admin(&req, app.state())?;
    let (project, n) = path.into_inner();
    let b: PromoteBody = parse_json(&body)?;
    jobserv_raft::state::validate_name("promotion", &b.name)
        .map_err(|e| ApiError::BadRequest(format!("name: {e}")))?;
    let build = resolve_build(&app, &project, &n, &Latest::default())?;
    let cmd = Command::PromoteBuild {
        project: project.clone(),
        build: build.number,
        name: b.name,
        annotation: b.annotation,
    };
    app.cluster.propose(cmd).await?;
    let build = resolve_build(
        &app,
        &project,
        &build.number.to_string(),
        &Latest::default(),
    )?;
    Ok(success(
        json!({ "build": build_json(&app, &build, Some(RunFields::WithQueueReason))? }),
    ))
}

async fn promoted(req: HttpRequest, app: web::Data<App>, path: web::Path<String>) -> ApiResult {
    require_user(&req, app.state())?;
    let project = path.into_inner();
    let builds: Result<Vec<_>, ApiError> = app
        .state()
        .promoted_builds(&project)?
        .iter()
        .map(|b| build_json(&app, b, None))
        .collect();
    Ok(success(json!({ "builds": builds? })))
}

async fn promoted_one(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    require_user(&req, app.state())?;
    let (project, name) = path.into_inner();
    let build = app
        .state()
        .promoted_builds(&project)?
        .into_iter()
        .find(|b| b.promoted.as_ref().is_some_and(|p| p.name == name))
        .ok_or_else(|| ApiError::NotFound(format!("promoted build {name} of {project}")))?;
    Ok(success(
        json!({ "build": build_json(&app, &build, Some(RunFields::WithQueueReason))? }),
    ))
}

async fn history(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<(String, String)>,
) -> ApiResult {
    require_user(&req, app.state())?;
    let (project, run) = path.into_inner();
    let runs = runs_json(
        &app,
        &app.state().run_history(&project, &run, 100)?,
        RunFields::WithQueueReason,
    )?;
    Ok(success(json!({ "runs": runs })))
}
