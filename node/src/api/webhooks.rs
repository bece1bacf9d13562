//! `POST /github/<p>/` and `POST /gitlab/<p>/`: forge webhooks for a project's `github_pr` / `gitlab_mr`
//! triggers. Nothing is read or changed before the request is authenticated: GitHub's
//! `X-Hub-Signature-256` (HMAC-SHA256 of the raw body with the trigger's `webhook-key` secret) or GitLab's
//! `X-Gitlab-Token` (equal to it), both compared in constant time. A missing header is 401, a wrong one
//! 403. An accepted event that asks for a build reads the project definition from the repository at the
//! event's commit and starts the build through the project's actor (201); other events are acknowledged
//! (200) and ignored.
use crate::actors::project::CreateBuild;
use crate::app::App;
use crate::error::{created, success, ApiError, ApiResult};
use crate::triggers::forge::{self, ForgeAction, PrEvent};
use crate::triggers::repo;
use actix_web::{web, HttpRequest};
use jobserv_protocol::project::{parse_project, TriggerType};
use jobserv_raft::model::Trigger;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/github/{p}/", web::post().to(github))
        .route("/gitlab/{p}/", web::post().to(gitlab));
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The project's triggers of `kind`; 404 for an unknown project or one without such a trigger.
fn triggers_of(app: &App, project: &str, kind: TriggerType) -> Result<Vec<Trigger>, ApiError> {
    let triggers: Vec<Trigger> = app
        .state()
        .triggers(project)?
        .into_iter()
        .filter(|t| t.trigger_type == kind.as_str())
        .collect();
    if triggers.is_empty() {
        return Err(ApiError::NotFound(format!(
            "{kind} trigger of project {project}"
        )));
    }
    Ok(triggers)
}

async fn github(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    let project = path.into_inner();
    let signature = header(&req, "X-Hub-Signature-256").ok_or(ApiError::Unauthorized(
        "X-Hub-Signature-256: required".into(),
    ))?;
    let triggers = triggers_of(&app, &project, TriggerType::GithubPr)?;
    let trigger = triggers
        .into_iter()
        .find(|t| {
            t.secrets
                .get(forge::WEBHOOK_KEY)
                .is_some_and(|key| forge::github_signature_ok(key, &body, signature))
        })
        .ok_or(ApiError::Forbidden(
            "X-Hub-Signature-256: signature does not match".into(),
        ))?;
    let event: Value = super::parse_json(&body)?;
    let kind = header(&req, "X-GitHub-Event").unwrap_or_default();
    let action = forge::github_action(kind, &event).map_err(ApiError::BadRequest)?;
    let pr = match action {
        ForgeAction::Ignore(why) => return Ok(success(json!({"ignored": why}))),
        ForgeAction::Build(pr) => pr,
        ForgeAction::Retest { pull_url } => {
            let mut get = crate::triggers::outbound_client(&app.config.ca_cert)
                .get(&pull_url)
                .header("Accept", "application/vnd.github+json");
            if let Some(token) = trigger.secrets.get(forge::GITHUB_TOKEN) {
                get = get.header("Authorization", format!("token {token}"));
            }
            let reply = get
                .send()
                .await
                .map_err(|e| ApiError::Unavailable(format!("{pull_url}: {e}")))?;
            if !reply.status().is_success() {
                return Err(ApiError::Unavailable(format!(
                    "{pull_url}: HTTP {}",
                    reply.status()
                )));
            }
            let pull: Value = reply
                .json()
                .await
                .map_err(|e| ApiError::Unavailable(format!("{pull_url}: {e}")))?;
            forge::github_pr(&pull, "retest requested").map_err(ApiError::BadRequest)?
        }
    };
    start_build(&app, &trigger, TriggerType::GithubPr, pr).await
}

async fn gitlab(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    let project = path.into_inner();
    let token = header(&req, "X-Gitlab-Token")
        .ok_or(ApiError::Unauthorized("X-Gitlab-Token: required".into()))?;
    let triggers = triggers_of(&app, &project, TriggerType::GitlabMr)?;
    let trigger = triggers
        .into_iter()
        .find(|t| {
            t.secrets
                .get(forge::WEBHOOK_KEY)
                .is_some_and(|key| forge::gitlab_token_ok(key, token))
        })
        .ok_or(ApiError::Forbidden(
            "X-Gitlab-Token: token does not match".into(),
        ))?;
    let event: Value = super::parse_json(&body)?;
    match forge::gitlab_action(&event).map_err(ApiError::BadRequest)? {
        ForgeAction::Build(mr) => start_build(&app, &trigger, TriggerType::GitlabMr, mr).await,
        ForgeAction::Ignore(why) | ForgeAction::Retest { pull_url: why } => {
            Ok(success(json!({"ignored": why})))
        }
    }
}

/// Reads the definition at the event's commit and starts a build of its first trigger of `kind`.
async fn start_build(app: &App, trigger: &Trigger, kind: TriggerType, event: PrEvent) -> ApiResult {
    let text = repo::definition_for_commit(app, trigger, &event.git_url, &event.sha).await?;
    let definition = parse_project(&text)
        .map_err(|e| ApiError::BadRequest(format!("project definition at {}: {e}", event.sha)))?;
    let name = definition
        .triggers
        .iter()
        .find(|t| t.trigger_type == kind)
        .map(|t| t.name.clone())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "the project definition at {} has no {kind} trigger",
                event.sha
            ))
        })?;
    let msg = CreateBuild {
        trigger_name: name,
        definition: text,
        params: event.params,
        secrets: BTreeMap::new(),
        reason: Some(event.reason),
        trigger_type: Some(kind.as_str().into()),
        queue_priority: None,
    };
    let number = app
        .projects
        .get(&trigger.project)
        .send(msg)
        .await
        .map_err(|e| ApiError::Internal(format!("project actor: {e}")))??;
    let url = format!(
        "{}/projects/{}/builds/{number}/",
        app.cluster.advertise_url, trigger.project
    );
    Ok(created(json!({"url": url, "build_id": number})))
}
