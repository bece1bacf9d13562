//! What an admin does from the pages — rerun or cancel a run, cancel or promote a build, enlist or delist a
//! worker — through the same Raft commands as the API's routes. Every form carries the session's CSRF
//! value; every action answers 303 back to the page it came from.
use super::builds::build_href_of;
use super::runs::{run_base, run_ref};
use super::{error_page, Viewer};
use crate::app::App;
use crate::error::ApiError;
use actix_web::http::header;
use actix_web::{web, HttpResponse};
use jobserv_protocol::RunStatus;
use jobserv_raft::Command;
use serde::Deserialize;

/// The viewer if they are an admin and the form's CSRF value is theirs; else the page to answer.
// The error is the page to answer instead, built once per request: boxing it would only add noise.
#[allow(clippy::result_large_err)]
fn admin(v: Viewer, app: &App, csrf: &str) -> Result<Viewer, HttpResponse> {
    if !v.session.check_csrf(&app.config.cluster_secret, csrf) {
        return Err(error_page(
            &v,
            ApiError::Forbidden("csrf: missing or wrong form token: reload the page".into()),
        ));
    }
    if !v.session.is_admin() {
        return Err(error_page(
            &v,
            ApiError::Forbidden("only an admin may do this".into()),
        ));
    }
    Ok(v)
}

fn back_to(location: String) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

#[derive(Deserialize)]
pub struct Form {
    csrf: String,
    name: Option<String>,
    annotation: Option<String>,
}

/// `POST /ui/projects/<p>/builds/<n>/runs/<r>/{rerun,cancel}`.
pub async fn run(
    v: Viewer,
    app: web::Data<App>,
    path: web::Path<(String, u64, String, String)>,
    form: web::Form<Form>,
) -> HttpResponse {
    let v = match admin(v, &app, &form.csrf) {
        Ok(v) => v,
        Err(page) => return page,
    };
    let (p, n, r, verb) = path.into_inner();
    let r = run_ref(p, n, r);
    let now = jobserv_raft::state::now_ms();
    let cmd = match verb.as_str() {
        "rerun" => Command::RerunRun {
            run: r.clone(),
            now,
        },
        "cancel" => Command::CancelRun {
            run: r.clone(),
            now,
        },
        other => return error_page(&v, ApiError::NotFound(format!("no action {other:?}"))),
    };
    if let Err(e) = app.cluster.propose(cmd).await {
        return error_page(&v, e);
    }
    tracing::info!(run = %r, action = %verb, by = %v.session.token_name, "UI action");
    back_to(run_base(&r))
}

/// `POST /ui/projects/<p>/builds/<n>/{cancel,promote}`: cancel every run still going; promote (name and
/// annotation from the form) a PASSED build.
pub async fn build(
    v: Viewer,
    app: web::Data<App>,
    path: web::Path<(String, u64, String)>,
    form: web::Form<Form>,
) -> HttpResponse {
    let v = match admin(v, &app, &form.csrf) {
        Ok(v) => v,
        Err(page) => return page,
    };
    let (project, number, verb) = path.into_inner();
    let result = match verb.as_str() {
        "cancel" => cancel_build(&app, &project, number).await,
        "promote" => {
            let name = form.name.clone().unwrap_or_default().trim().to_string();
            match jobserv_raft::state::validate_name("promotion", &name) {
                Err(e) => Err(ApiError::BadRequest(format!("name: {e}"))),
                Ok(()) => app
                    .cluster
                    .propose(Command::PromoteBuild {
                        project: project.clone(),
                        build: number,
                        name,
                        annotation: form.annotation.clone().filter(|a| !a.trim().is_empty()),
                    })
                    .await
                    .map(|_| ()),
            }
        }
        other => Err(ApiError::NotFound(format!("no action {other:?}"))),
    };
    match result {
        Ok(()) => {
            tracing::info!(project = %project, build = number, action = %verb, by = %v.session.token_name, "UI action");
            back_to(build_href_of(&project, number))
        }
        Err(e) => error_page(&v, e),
    }
}

async fn cancel_build(app: &App, project: &str, number: u64) -> Result<(), ApiError> {
    let now = jobserv_raft::state::now_ms();
    for run in app.state().runs_of_build(project, number)? {
        if !matches!(run.status, RunStatus::Passed | RunStatus::Failed) {
            app.cluster
                .propose(Command::CancelRun {
                    run: run.run_ref(),
                    now,
                })
                .await?;
        }
    }
    Ok(())
}

/// `POST /ui/workers/<w>/{enlist,delist}`.
pub async fn worker(
    v: Viewer,
    app: web::Data<App>,
    path: web::Path<(String, String)>,
    form: web::Form<Form>,
) -> HttpResponse {
    let v = match admin(v, &app, &form.csrf) {
        Ok(v) => v,
        Err(page) => return page,
    };
    let (name, verb) = path.into_inner();
    let enlisted = match verb.as_str() {
        "enlist" => true,
        "delist" => false,
        other => return error_page(&v, ApiError::NotFound(format!("no action {other:?}"))),
    };
    let cmd = Command::UpdateWorker {
        name: name.clone(),
        enlisted: Some(enlisted),
        facts: None,
    };
    if let Err(e) = app.cluster.propose(cmd).await {
        return error_page(&v, e);
    }
    tracing::info!(worker = %name, action = %verb, by = %v.session.token_name, "UI action");
    back_to("/ui/workers/".into())
}
