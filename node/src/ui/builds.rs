//! Projects (with each one's last build), a project's builds (paged), a build's runs grouped by run name.
use super::layout::{age, seg, status, time, took};
use super::{error_page, Viewer};
use crate::app::App;
use crate::error::ApiError;
use actix_web::{web, HttpResponse};
use jobserv_protocol::RunStatus;
use jobserv_raft::model::{Build, Run};
use maud::{html, Markup};
use serde::Deserialize;
use std::collections::BTreeMap;

pub async fn projects(v: Viewer, app: web::Data<App>) -> HttpResponse {
    match projects_body(&app) {
        Ok(body) => v.page("Projects", body),
        Err(e) => error_page(&v, e),
    }
}

fn projects_body(app: &App) -> Result<Markup, ApiError> {
    let mut rows = Vec::new();
    for p in app.state().projects()? {
        let last = app.state().latest_build(&p.name)?;
        rows.push((p, last));
    }
    Ok(html! {
        h1 { "Projects" }
        @if rows.is_empty() {
            p.muted { "No projects yet. Create one with " code { "jobserv project create NAME" } "." }
        } @else {
            table {
                thead { tr { th { "Project" } th { "Last build" } th { "Status" } th { "Trigger" } th { "Age" } } }
                tbody {
                    @for (p, last) in &rows {
                        tr {
                            td { a href={ "/ui/projects/" (seg(&p.name)) "/" } { (p.name) } }
                            @if let Some(b) = last {
                                td { a href=(build_href(b)) { "#" (b.number) } }
                                td { (status(b.status)) }
                                td { (b.trigger_name) }
                                td { (age(b.created)) }
                            } @else {
                                td.muted colspan="4" { "no builds" }
                            }
                        }
                    }
                }
            }
        }
    })
}

pub fn build_href(b: &Build) -> String {
    build_href_of(&b.project, b.number)
}

pub fn build_href_of(project: &str, number: u64) -> String {
    format!("/ui/projects/{}/builds/{number}/", seg(project))
}

#[derive(Deserialize)]
pub struct Page {
    before: Option<u64>,
}

pub async fn project(
    v: Viewer,
    app: web::Data<App>,
    path: web::Path<String>,
    page: web::Query<Page>,
) -> HttpResponse {
    let name = path.into_inner();
    match project_body(&app, &name, page.before) {
        Ok(body) => v.page(&name, body),
        Err(e) => error_page(&v, e),
    }
}

const BUILDS_PER_PAGE: usize = 30;

fn project_body(app: &App, name: &str, before: Option<u64>) -> Result<Markup, ApiError> {
    app.state()
        .project(name)?
        .ok_or_else(|| ApiError::NotFound(format!("project {name}")))?;
    let page = app.state().builds_page(name, before, BUILDS_PER_PAGE)?;
    let last_100 = app.state().builds_page(name, None, 100)?.builds;
    Ok(html! {
        div.crumbs { a href="/ui/" { "Projects" } " / " }
        h1 { (name) }
        @if !last_100.is_empty() {
            (super::charts::builds(&last_100, jobserv_raft::state::now_ms()))
        }
        @if page.builds.is_empty() {
            p.muted { "No builds." }
        } @else {
            table {
                thead { tr { th { "Build" } th { "Status" } th { "Trigger" } th { "Reason" } th { "Created" } th { "Duration" } } }
                tbody {
                    @for b in &page.builds {
                        tr {
                            td { a href=(build_href(b)) { "#" (b.number) } }
                            td { (status(b.status)) @if let Some(p) = &b.promoted { " " span.muted { "promoted: " (p.name) } } }
                            td { (b.trigger_name) " " span.muted { "(" (b.trigger_type) ")" } }
                            td { (b.reason.clone().unwrap_or_default()) }
                            td title=(time(b.created)) { (age(b.created)) }
                            td { (took(Some(b.created), b.completed)) }
                        }
                    }
                }
            }
        }
        div.pager {
            @if before.is_some() { a href={ "/ui/projects/" (seg(name)) "/" } { "« newest" } }
            @if let Some(n) = page.next_before { a href={ "/ui/projects/" (seg(name)) "/?before=" (n) } { "older »" } }
        }
    })
}

pub async fn build(v: Viewer, app: web::Data<App>, path: web::Path<(String, u64)>) -> HttpResponse {
    let (project, number) = path.into_inner();
    match build_body(&app, &v, &project, number) {
        Ok(body) => v.page(&format!("{project} #{number}"), body),
        Err(e) => error_page(&v, e),
    }
}

pub fn run_href(r: &Run) -> String {
    format!(
        "/ui/projects/{}/builds/{}/runs/{}/",
        seg(&r.project),
        r.build,
        seg(&r.name)
    )
}

/// Runs of a matrix grouped by their name before the loop-on values (`lint-{loop}` → `lint`), so a
/// 200-run build reads as a few groups.
fn group_of(name: &str) -> &str {
    name.split_once('-').map(|(g, _)| g).unwrap_or(name)
}

fn build_body(app: &App, v: &Viewer, project: &str, number: u64) -> Result<Markup, ApiError> {
    let b = app
        .state()
        .build(project, number)?
        .ok_or_else(|| ApiError::NotFound(format!("build {project}/{number}")))?;
    let runs = app.state().runs_of_build(project, number)?;
    let explainer = crate::api::QueueExplainer::new(app, &runs)?;
    let mut groups: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for r in &runs {
        groups.entry(group_of(&r.name)).or_default().push(r);
    }
    let mut tests: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut test_lists = Vec::new();
    for r in &runs {
        test_lists.push((r.name.as_str(), app.state().tests(&r.run_ref())?));
    }
    for (name, list) in &test_lists {
        let entry = tests.entry(name).or_default();
        for t in list {
            for res in &t.results {
                match res.status.as_str() {
                    "FAILED" => entry.1 += 1,
                    "PASSED" => entry.0 += 1,
                    _ => {}
                }
            }
        }
    }
    Ok(html! {
        div.crumbs { a href="/ui/" { "Projects" } " / " a href={ "/ui/projects/" (seg(project)) "/" } { (project) } " / " }
        h1 { (project) " #" (number) " " (status(b.status)) }
        div.card {
            dl.facts {
                dt { "Trigger" } dd { (b.trigger_name) " (" (b.trigger_type) ")" }
                @if let Some(r) = &b.reason { dt { "Reason" } dd { (r) } }
                dt { "Created" } dd { (time(b.created)) " (" (age(b.created)) ")" }
                dt { "Duration" } dd { (took(Some(b.created), b.completed)) }
                @if let Some(p) = &b.promoted { dt { "Promoted" } dd { (p.name) @if let Some(a) = &p.annotation { " — " (a) } } }
                dt { "Definition" } dd { a href={ (build_href(&b)) "project.yml" } { "project.yml" } }
            }
        }
        h2 { "Runs (" (runs.len()) ")" }
        table {
            thead { tr { th { "Run" } th { "Status" } th { "Worker" } th { "Duration" } th.num { "Tests passed" } th.num { "failed" } th { "Queue" } } }
            tbody {
                @for (group, members) in &groups {
                    @if members.len() > 1 {
                        tr { td colspan="7" { strong { (group) } span.muted { " — " (members.len()) " runs" } } }
                    }
                    @for r in members {
                        @let (passed, failed) = tests.get(r.name.as_str()).copied().unwrap_or_default();
                        tr data-run=(r.name) {
                            td { a href=(run_href(r)) { (r.name) } }
                            td { (status(r.status)) }
                            td { (r.worker.clone().unwrap_or_else(|| "-".into())) }
                            td { (took(r.started, r.completed)) }
                            td.num { (passed) }
                            td.num { @if failed > 0 { strong.error { (failed) } } @else { (failed) } }
                            td.muted {
                                @if r.status == jobserv_protocol::RunStatus::Queued {
                                    (explainer.reason(r).as_str()) " (" (r.host_tag) ")"
                                }
                            }
                        }
                    }
                }
            }
        }
        @if v.session.is_admin() {
            h2 { "Actions" }
            div.actions {
                @if !matches!(b.status, RunStatus::Passed | RunStatus::Failed) {
                    form method="post" action={ (build_href(&b)) "cancel" } {
                        input type="hidden" name="csrf" value=(v.csrf);
                        button.danger type="submit" { "Cancel build" }
                    }
                }
                @if b.status == RunStatus::Passed && b.promoted.is_none() {
                    form method="post" action={ (build_href(&b)) "promote" } {
                        input type="hidden" name="csrf" value=(v.csrf);
                        input type="text" name="name" placeholder="release name" required;
                        input type="text" name="annotation" placeholder="annotation (optional)";
                        button type="submit" { "Promote" }
                    }
                }
            }
            p.muted { "Rerun or cancel a single run on its page." }
        }
    })
}

/// The project definition the build ran with.
pub async fn definition(
    v: Viewer,
    app: web::Data<App>,
    path: web::Path<(String, u64)>,
) -> HttpResponse {
    let (project, number) = path.into_inner();
    match app.state().build(&project, number) {
        Ok(Some(b)) => HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(b.definition),
        Ok(None) => error_page(&v, ApiError::NotFound(format!("build {project}/{number}"))),
        Err(e) => error_page(&v, e.into()),
    }
}
