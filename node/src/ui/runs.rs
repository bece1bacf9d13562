//! A run: its facts, the live console (never sent whole: the page loads the tail, the script follows it in
//! long-polled slices with offsets), failing tests first, artifacts, the run definition and the simulator
//! command.
use super::builds::build_href;
use super::layout::{seg, status, time, took};
use super::{error_page, Viewer};
use crate::app::App;
use crate::error::ApiError;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use jobserv_protocol::RunStatus;
use jobserv_raft::model::RunRef;
use maud::{html, Markup};
use serde::Deserialize;
use std::time::{Duration, Instant};

/// What the run page shows of the log before the script takes over, and the largest slice one poll gets.
const CONSOLE_SLICE: u64 = 256 * 1024;
/// Longest wait of one console poll for new bytes.
const MAX_WAIT: Duration = Duration::from_secs(25);

pub fn run_ref(project: String, build: u64, run: String) -> RunRef {
    RunRef {
        project,
        build,
        run,
    }
}

pub fn run_base(r: &RunRef) -> String {
    format!(
        "/ui/projects/{}/builds/{}/runs/{}/",
        seg(&r.project),
        r.build,
        seg(&r.run)
    )
}

pub async fn run(
    v: Viewer,
    app: web::Data<App>,
    path: web::Path<(String, u64, String)>,
) -> HttpResponse {
    let (p, n, r) = path.into_inner();
    let r = run_ref(p, n, r);
    match run_body(&app, &v, &r) {
        Ok(body) => v.page(&format!("{} #{} {}", r.project, r.build, r.run), body),
        Err(e) => error_page(&v, e),
    }
}

fn run_body(app: &App, v: &Viewer, r: &RunRef) -> Result<Markup, ApiError> {
    let run = app
        .state()
        .run(r)?
        .ok_or_else(|| ApiError::NotFound(format!("run {r}")))?;
    let build = app
        .state()
        .build(&r.project, r.build)?
        .ok_or_else(|| ApiError::NotFound(format!("build {}/{}", r.project, r.build)))?;
    let mut tests = app.state().tests(r)?;
    // Failures first.
    tests.sort_by_key(|t| (t.status != RunStatus::Failed, t.name.clone()));
    let artifacts = app.state().artifacts(r)?;
    let base = run_base(r);
    let start = run.log_len.saturating_sub(CONSOLE_SLICE);
    let progress = run
        .definition
        .console_progress
        .as_ref()
        .map(|p| p.progress_pattern.clone());
    Ok(html! {
        div.crumbs {
            a href="/ui/" { "Projects" } " / "
            a href={ "/ui/projects/" (seg(&r.project)) "/" } { (r.project) } " / "
            a href=(build_href(&build)) { "#" (r.build) } " / "
        }
        h1 { (r.run) " " span #run-status class={ "badge s-" (run.status.as_str()) } { (run.status.as_str()) } }
        div.card {
            dl.facts {
                dt { "Worker" } dd { (run.worker.clone().unwrap_or_else(|| "-".into())) }
                dt { "Host tag" } dd { (run.host_tag) }
                dt { "Created" } dd { (time(run.created)) }
                dt { "Duration" } dd { (took(run.started, run.completed)) }
                @if run.status == RunStatus::Queued {
                    dt { "Waiting because" } dd { (crate::api::queue_reason(app, &run)?.as_str()) }
                }
                @if let Some(reason) = &run.failure_reason { dt { "Failure" } dd.error { (reason) } }
                dt { "Recreate it" } dd {
                    a href={ (base) ".rundef.json" } { ".rundef.json" } " then "
                    code { "jobserv-worker simulate .rundef.json --workspace /tmp/" (r.project) "-" (r.build) "-" (r.run) }
                }
            }
        }
        @if progress.is_some() { progress #console-progress max="100" value="0" {} }
        h2 { "Console" }
        @if start > 0 {
            p.muted { "Showing the last " (CONSOLE_SLICE / 1024) " KiB of " (run.log_len / 1024) " KiB. "
                a href={ (base) "console.log" } { "Download the whole log" } }
        }
        pre.console data-console={ (base) "console" } data-start=(start) data-progress=[progress.as_deref()] {}
        h2 { "Tests (" (tests.len()) ")" }
        @if tests.is_empty() { p.muted { "No tests reported." } } @else {
            table {
                thead { tr { th { "Test" } th { "Status" } th { "Results" } } }
                tbody {
                    @for t in &tests {
                        tr {
                            td { (t.name) }
                            td { (status(t.status)) }
                            td {
                                @for res in t.results.iter().filter(|x| x.status == "FAILED") {
                                    div.error { "✗ " (res.name) }
                                }
                                span.muted { (t.results.iter().filter(|x| x.status == "PASSED").count()) " passed, "
                                    (t.results.iter().filter(|x| x.status == "FAILED").count()) " failed, "
                                    (t.results.iter().filter(|x| x.status == "SKIPPED").count()) " skipped" }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Artifacts (" (artifacts.len()) ")" }
        @if artifacts.is_empty() { p.muted { "No artifacts." } } @else {
            table {
                thead { tr { th { "Path" } th.num { "Size" } th { "sha256" } } }
                tbody {
                    @for a in &artifacts {
                        tr {
                            td { a href={ (base) "artifacts/" (a.path) } { (a.path) } }
                            td.num { (human_size(a.size)) }
                            td { code { (&a.sha256[..12.min(a.sha256.len())]) } }
                        }
                    }
                }
            }
        }
        @if v.session.is_admin() { (admin_actions(v, &base, run.status)) }
    })
}

/// Rerun (a finished run) and Cancel (a run still going): both are rendered, and the page's script shows
/// the one that fits as the status changes live.
fn admin_actions(v: &Viewer, base: &str, s: RunStatus) -> Markup {
    let state = if matches!(s, RunStatus::Passed | RunStatus::Failed) {
        "done"
    } else {
        "active"
    };
    html! {
        h2 { "Actions" }
        div.actions #run-actions data-run-state=(state) {
            form.when-done method="post" action={ (base) "rerun" } {
                input type="hidden" name="csrf" value=(v.csrf);
                button type="submit" { "Rerun" }
            }
            form.when-active method="post" action={ (base) "cancel" } {
                input type="hidden" name="csrf" value=(v.csrf);
                button.danger type="submit" { "Cancel" }
            }
        }
    }
}

pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}

#[derive(Deserialize)]
pub struct ConsoleQuery {
    offset: Option<u64>,
    wait: Option<f64>,
}

/// One slice of the log from `offset` (at most 256 KiB); with `wait`, waits (up to 25 s) for bytes past
/// `offset` or the run's end. Headers: `X-Offset` (where the next slice starts), `X-Run-Status`,
/// `X-Log-Length`. 401 without a session (the script reloads the page, which shows the login form).
pub async fn console(
    v: Option<Viewer>,
    app: web::Data<App>,
    path: web::Path<(String, u64, String)>,
    q: web::Query<ConsoleQuery>,
) -> HttpResponse {
    if v.is_none() {
        return HttpResponse::Unauthorized().body("log in again");
    }
    let (p, n, r) = path.into_inner();
    let r = run_ref(p, n, r);
    let offset = q.offset.unwrap_or(0);
    let wait = Duration::from_secs_f64(q.wait.unwrap_or(0.0).clamp(0.0, MAX_WAIT.as_secs_f64()));
    let deadline = Instant::now() + wait;
    loop {
        let seen = app.cluster.applied_index();
        let slice = match app.state().console(&r, offset, CONSOLE_SLICE as usize) {
            Ok(Some(slice)) => slice,
            Ok(None) => return HttpResponse::NotFound().body(format!("no run {r}")),
            Err(e) => return HttpResponse::InternalServerError().body(e.to_string()),
        };
        let done = matches!(slice.status, RunStatus::Passed | RunStatus::Failed);
        let remaining = deadline.saturating_duration_since(Instant::now());
        if !slice.bytes.is_empty() || done || remaining.is_zero() {
            return HttpResponse::Ok()
                .content_type("text/plain; charset=utf-8")
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .insert_header(("X-Offset", (offset + slice.bytes.len() as u64).to_string()))
                .insert_header(("X-Run-Status", slice.status.as_str()))
                .insert_header(("X-Log-Length", slice.log_len.to_string()))
                .body(slice.bytes);
        }
        // Nothing new: sleep until this node applies another entry (a console append, a status change).
        app.cluster.wait_applied(seen, remaining).await;
    }
}

/// The whole log, as a download (the run page itself never sends it whole).
pub async fn whole_log(
    v: Viewer,
    app: web::Data<App>,
    path: web::Path<(String, u64, String)>,
) -> HttpResponse {
    let (p, n, r) = path.into_inner();
    let r = run_ref(p, n, r);
    match app.state().run(&r) {
        Ok(Some(run)) => crate::api::whole_log(app.into_inner(), &run, 0),
        Ok(None) => error_page(&v, ApiError::NotFound(format!("run {r}"))),
        Err(e) => error_page(&v, e.into()),
    }
}

/// The run definition as a viewer may see it (no run key; secret names without values).
pub async fn rundef(
    v: Viewer,
    app: web::Data<App>,
    path: web::Path<(String, u64, String)>,
) -> HttpResponse {
    let (p, n, r) = path.into_inner();
    let r = run_ref(p, n, r);
    match crate::api::viewer_rundef(&app, &r) {
        Ok(def) => HttpResponse::Ok()
            .content_type("application/json")
            .insert_header((
                header::CONTENT_DISPOSITION,
                "attachment; filename=\".rundef.json\"",
            ))
            .json(def),
        Err(e) => error_page(&v, e),
    }
}

/// An artifact, through the API's download (Range, ETag; from any node).
pub async fn artifact(
    v: Viewer,
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<(String, u64, String, String)>,
) -> HttpResponse {
    let (p, n, r, file) = path.into_inner();
    let r = run_ref(p, n, r);
    match crate::api::download_artifact(&req, &app, &r, &file).await {
        Ok(resp) => resp,
        Err(e) => error_page(&v, e),
    }
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes() {
        assert_eq!(human_size(12), "12 B");
        assert_eq!(human_size(50 * 1024 * 1024), "50.0 MiB");
        assert_eq!(human_size(2_147_483_648), "2.0 GiB");
    }
}
