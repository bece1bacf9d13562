//! Runs: status, console log (append with offsets, read, live tail), run definition, simulator script,
//! rerun/cancel, tests, and signed artifact upload URLs (artifacts themselves: `artifacts.rs`).
use super::builds::resolve;
use super::parse_json;
use crate::app::App;
use crate::auth::{artifact_signature, require_admin, require_user, run_key, verify_run_key};
use crate::error::{success, ApiError, ApiResult};
use actix_web::{web, HttpRequest, HttpResponse};
use jobserv_protocol::api::{
    CreateSignedReply, CreateSignedRequest, TestReport, HEADER_CANCEL, HEADER_OFFSET,
    HEADER_RUN_METADATA, HEADER_RUN_STATUS,
};
use jobserv_protocol::time::iso_from_ms;
use jobserv_protocol::{RunDef, RunStatus};
use jobserv_raft::command::RunUpdate;
use jobserv_raft::model::{Run, RunRef};
use jobserv_raft::state::validate_artifact_path;
use jobserv_raft::{Command, CommandResult};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

const RUN: &str = "/projects/{p}/builds/{n}/runs/{r}";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/projects/{p}/builds/{n}/runs/", web::get().to(list))
        .route(&format!("{RUN}/"), web::get().to(get))
        .service(
            web::resource(format!("{RUN}/"))
                .app_data(web::PayloadConfig::new(super::MAX_CHUNK_BODY))
                .route(web::post().to(update)),
        )
        .route(&format!("{RUN}/console.log"), web::get().to(console))
        .route(&format!("{RUN}/.rundef.json"), web::get().to(rundef))
        .route(
            &format!("{RUN}/.simulate.sh"),
            web::get().to(simulate_script),
        )
        .route(&format!("{RUN}/rerun"), web::post().to(rerun))
        .route(&format!("{RUN}/cancel"), web::post().to(cancel))
        .route(
            &format!("{RUN}/create_signed"),
            web::post().to(create_signed),
        )
        .service(
            web::resource(format!("{RUN}/artifacts/{{path:.*}}"))
                .route(web::put().to(super::artifacts::put_artifact)),
        )
        .route(&format!("{RUN}/tests/"), web::get().to(list_tests))
        .route(&format!("{RUN}/tests/"), web::post().to(report_tests))
        .route(&format!("{RUN}/tests/{{t}}/"), web::get().to(get_test))
        .service(
            web::resource(format!("{RUN}/{{path:.*}}"))
                .route(web::get().to(super::artifacts::get_artifact))
                .route(web::head().to(super::artifacts::get_artifact)),
        );
}

pub type RunPath = (String, String, String);

pub fn run_ref(path: RunPath) -> Result<RunRef, ApiError> {
    let (project, n, run) = path;
    let build = n
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("build number {n:?} is not a number")))?;
    Ok(RunRef {
        project,
        build,
        run,
    })
}

fn load_run(app: &App, r: &RunRef) -> Result<Run, ApiError> {
    app.state()
        .run(r)?
        .ok_or_else(|| ApiError::NotFound(format!("run {r}")))
}

/// Why a queued run waits, from the replicated workers and this node's view of who is online.
pub fn queue_reason(app: &App, run: &Run) -> Result<jobserv_raft::model::QueueReason, ApiError> {
    Ok(QueueExplainer::new(app, std::slice::from_ref(run))?.reason(run))
}

/// Explains many queued runs at the price of one: the workers and the synchronous-build gate are read once
/// (a queue page, `/health/runs/`, a 200-run build page).
pub struct QueueExplainer {
    workers: Vec<(jobserv_raft::model::Worker, bool, u32)>,
    gate: crate::scheduler::SyncGate,
}

impl QueueExplainer {
    pub fn new(app: &App, runs: &[Run]) -> Result<QueueExplainer, ApiError> {
        let timeout = Duration::from_secs(app.config.worker_timeout_secs);
        let workers = app
            .state()
            .workers()?
            .into_iter()
            .map(|w| {
                let online = app.presence.is_online(&w.name, timeout);
                let free = app
                    .presence
                    .get(&w.name)
                    .map(|h| h.available_runners)
                    .unwrap_or(0);
                (w, online, free)
            })
            .collect();
        let gate = crate::actors::checkin::synchronous_gate(&app.cluster, runs)?;
        Ok(QueueExplainer { workers, gate })
    }

    pub fn reason(&self, run: &Run) -> jobserv_raft::model::QueueReason {
        crate::scheduler::queue_reason(run, &self.workers, &self.gate)
    }
}

/// How much of a run [`run_json`] shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunFields {
    /// The run's own record: what lists of builds carry (no per-run scheduling work: a page of 1,000
    /// builds must not ask the scheduler 1,000 times).
    Summary,
    /// Plus `queue_reason` for a QUEUED run.
    WithQueueReason,
    /// Plus tests and artifacts (`GET <run>/`).
    Detailed,
}

pub fn run_json(app: &App, run: &Run, fields: RunFields) -> Result<serde_json::Value, ApiError> {
    let mut one = runs_json(app, std::slice::from_ref(run), fields)?;
    Ok(one.pop().unwrap_or_default())
}

/// [`run_json`] of many runs, explaining their queue reasons with one [`QueueExplainer`] (a 200-run build
/// reads the workers once, not 200 times).
pub fn runs_json(
    app: &App,
    runs: &[Run],
    fields: RunFields,
) -> Result<Vec<serde_json::Value>, ApiError> {
    let explainer = match fields {
        RunFields::Summary => None,
        _ if runs.iter().all(|r| r.status != RunStatus::Queued) => None,
        _ => Some(QueueExplainer::new(app, runs)?),
    };
    runs.iter()
        .map(|r| one_run_json(app, r, fields, explainer.as_ref()))
        .collect()
}

fn one_run_json(
    app: &App,
    run: &Run,
    fields: RunFields,
    explainer: Option<&QueueExplainer>,
) -> Result<serde_json::Value, ApiError> {
    let detailed = fields == RunFields::Detailed;
    let url = App::run_url(
        &app.cluster.advertise_url,
        &run.project,
        run.build,
        &run.name,
    );
    let mut j = json!({
        "name": run.name,
        "status": run.status,
        "url": url,
        "log_url": format!("{url}console.log"),
        "host_tag": run.host_tag,
        "build": run.build,
        "worker": run.worker,
        // JobServ's name for it.
        "worker_name": run.worker,
        "created": iso_from_ms(run.created),
        "started": run.started.map(iso_from_ms),
        "completed": run.completed.map(iso_from_ms),
        "duration_seconds": run.started.zip(run.completed).map(|(s, c)| c.saturating_sub(s) / 1000),
        "failure_reason": run.failure_reason,
        "log_bytes": run.log_len,
        "metadata": run.metadata,
    });
    if let Some(explainer) = explainer.filter(|_| run.status == RunStatus::Queued) {
        j["queue_reason"] = json!(explainer.reason(run));
    }
    if detailed {
        let r = run.run_ref();
        let tests: Vec<_> = app
            .state()
            .tests(&r)?
            .iter()
            .map(|t| json!({"name": t.name, "status": t.status, "results": t.results.len()}))
            .collect();
        j["tests"] = json!(tests);
        let artifacts: Vec<_> = app
            .state()
            .artifacts(&r)?
            .into_iter()
            .map(|a| {
                json!({"path": a.path, "size": a.size, "sha256": a.sha256, "content_type": a.content_type,
                       "url": format!("{url}{}", a.path)})
            })
            .collect();
        j["artifacts"] = json!(artifacts);
    }
    Ok(j)
}

async fn list(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<(String, String)>,
    latest: web::Query<super::builds::Latest>,
) -> ApiResult {
    require_user(&req, app.state())?;
    let (project, n) = path.into_inner();
    let build = resolve(&app, &project, &n, &latest)?;
    let runs = runs_json(
        &app,
        &app.state().runs_of_build(&project, build.number)?,
        RunFields::WithQueueReason,
    )?;
    Ok(success(json!({ "runs": runs })))
}

async fn get(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<(String, String, String)>,
) -> ApiResult {
    require_user(&req, app.state())?;
    let r = run_ref(path.into_inner())?;
    let run = load_run(&app, &r)?;
    Ok(success(
        json!({ "run": run_json(&app, &run, RunFields::Detailed)? }),
    ))
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The worker's append/status call. The chunk is acknowledged only once committed; `X-OFFSET` makes a
/// retry (possibly through another node) idempotent.
async fn update(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<(String, String, String)>,
    body: web::Bytes,
) -> ApiResult {
    let r = run_ref(path.into_inner())?;
    let fence = verify_run_key(&req, &app.config.cluster_secret, &r)?;
    let status = match header(&req, HEADER_RUN_STATUS) {
        Some(s) => Some(
            s.parse::<RunStatus>()
                .map_err(|e| ApiError::BadRequest(format!("{HEADER_RUN_STATUS}: {e}")))?,
        ),
        None => None,
    };
    let offset = match header(&req, HEADER_OFFSET) {
        Some(o) => o.trim().parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!("{HEADER_OFFSET}: {o:?} is not a byte offset"))
        })?,
        // JobServ's own worker sends no offset: append at the end.
        None => load_run(&app, &r)?.log_len,
    };
    // A big body is committed as several entries of at most `CONSOLE_ENTRY` bytes, in order; only the last
    // carries the status. openraft bounds an AppendEntries batch by entry count (32) and gives it one
    // heartbeat interval: 32 entries of 1 MiB never reached a follower in time, and it fell behind for good
    // (batches are now bounded by bytes too: `log_store::MAX_APPEND_BYTES`).
    // A failure part-way is safe: the client retries from its offset and stored bytes are skipped.
    let pieces: Vec<&[u8]> = if body.is_empty() {
        vec![&body[..]]
    } else {
        body.chunks(CONSOLE_ENTRY).collect()
    };
    let last = pieces.len() - 1;
    let mut at = offset;
    let mut result = None;
    for (i, piece) in pieces.into_iter().enumerate() {
        let final_piece = i == last;
        let update = RunUpdate {
            run: r.clone(),
            fence,
            offset: at,
            console: piece.to_vec(),
            status: status.filter(|_| final_piece),
            metadata: header(&req, HEADER_RUN_METADATA)
                .filter(|_| final_piece)
                .map(str::to_string),
            failure_reason: header(&req, "X-RUN-FAILURE-REASON")
                .filter(|_| final_piece)
                .map(str::to_string),
            now: jobserv_raft::state::now_ms(),
        };
        at += piece.len() as u64;
        result = Some(
            app.cluster
                .propose(Command::UpdateRun(Box::new(update)))
                .await?,
        );
    }
    match result.unwrap_or(CommandResult::Done) {
        CommandResult::RunUpdated { log_len, cancel } => {
            if let Some(s) = status {
                tracing::info!(project = %r.project, build = r.build, run = %r.run, status = %s, "run status");
            }
            let mut reply = HttpResponse::Ok();
            reply.insert_header((HEADER_OFFSET, log_len.to_string()));
            if cancel {
                reply.insert_header((HEADER_CANCEL, "1"));
            }
            Ok(reply
                .json(json!({"status": "success", "data": {"offset": log_len, "cancel": cancel}})))
        }
        other => Err(ApiError::Internal(format!("unexpected reply {other:?}"))),
    }
}

#[derive(Deserialize)]
struct ConsoleQuery {
    offset: Option<u64>,
    follow: Option<String>,
}

async fn console(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<(String, String, String)>,
    q: web::Query<ConsoleQuery>,
) -> ApiResult {
    require_user(&req, app.state())?;
    let r = run_ref(path.into_inner())?;
    let run = load_run(&app, &r)?;
    let offset = match header(&req, HEADER_OFFSET) {
        Some(o) => o.trim().parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!("{HEADER_OFFSET}: {o:?} is not a byte offset"))
        })?,
        None => q.offset.unwrap_or(0),
    };
    let follow = q
        .follow
        .as_deref()
        .is_some_and(|f| f != "0" && f != "false");
    if follow {
        return Ok(live_tail(app.into_inner(), r, offset));
    }
    if run.status == RunStatus::Queued && run.log_len == 0 {
        let reason = queue_reason(&app, &run)?;
        let text = format!(
            "# Waiting for worker with tag: {} ({})\n",
            run.host_tag,
            reason.as_str()
        );
        return Ok(HttpResponse::Ok()
            .insert_header((HEADER_RUN_STATUS, run.status.as_str()))
            .insert_header((HEADER_OFFSET, "0"))
            .content_type("text/plain")
            .body(text));
    }
    Ok(whole_log(app.into_inner(), &run, offset))
}

/// The log from `offset` up to its length now, streamed in slices: a log of hundreds of MiB is never held
/// in memory (the API's `console.log` and the UI's download).
pub fn whole_log(app: std::sync::Arc<App>, run: &Run, offset: u64) -> HttpResponse {
    let end = run.log_len.max(offset);
    let stream = futures::stream::unfold(
        (app, run.run_ref(), offset),
        move |(app, r, at)| async move {
            if at >= end {
                return None;
            }
            let max = (end - at).min(CONSOLE_SLICE) as usize;
            match app.state().console(&r, at, max) {
                Ok(Some(slice)) if !slice.bytes.is_empty() => {
                    let next = at + slice.bytes.len() as u64;
                    Some((
                        Ok::<_, actix_web::Error>(web::Bytes::from(slice.bytes)),
                        (app, r, next),
                    ))
                }
                // Deleted meanwhile (retention): the client sees a short body and retries from its offset.
                _ => None,
            }
        },
    );
    HttpResponse::Ok()
        .insert_header((HEADER_RUN_STATUS, run.status.as_str()))
        .insert_header((HEADER_OFFSET, end.to_string()))
        .content_type("text/plain; charset=utf-8")
        .no_chunking(end - offset)
        .streaming(stream)
}

/// Largest console bytes per Raft entry (see `update`).
const CONSOLE_ENTRY: usize = 64 * 1024;

/// Bytes of a console log read from the state per step of a streamed response.
const CONSOLE_SLICE: u64 = 1 << 20;

/// A streaming response that follows the log until the run completes.
fn live_tail(app: std::sync::Arc<App>, r: RunRef, offset: u64) -> HttpResponse {
    let stream = futures::stream::unfold(
        (app, r, offset, false),
        |(app, r, offset, done)| async move {
            if done {
                return None;
            }
            loop {
                let seen = app.cluster.applied_index();
                let slice = match app.state().console(&r, offset, 1 << 20) {
                    Ok(Some(s)) => s,
                    _ => return None,
                };
                if !slice.bytes.is_empty() {
                    let next = offset + slice.bytes.len() as u64;
                    return Some((
                        Ok::<_, actix_web::Error>(web::Bytes::from(slice.bytes)),
                        (app, r, next, false),
                    ));
                }
                if slice.status.is_complete() {
                    return None;
                }
                app.cluster.wait_applied(seen, Duration::from_secs(5)).await;
            }
        },
    );
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .streaming(stream)
}

/// The run definition a worker gets for `run` under lease `fence`, with this node's URLs.
pub fn rundef_for(app: &App, run: &Run, fence: Option<u64>) -> Result<RunDef, ApiError> {
    let mut def = run.definition.clone();
    let base = app.cluster.advertise_url.trim_end_matches('/').to_string();
    def.run_url = App::run_url(&base, &run.project, run.build, &run.name);
    def.run_urls = app
        .cluster
        .node_urls()
        .iter()
        .map(|u| App::run_url(u, &run.project, run.build, &run.name))
        .collect();
    def.frontend_url = format!("{base}/projects/{}/builds/{}/", run.project, run.build);
    def.runner_url = format!("{base}/runner");
    if let Some(fence) = fence {
        def.api_key = Some(run_key(&app.config.cluster_secret, &run.run_ref(), fence));
        if let Some(build) = app.state().build(&run.project, run.build)? {
            def.secrets = build.secrets;
        }
    }
    Ok(def)
}

async fn rundef(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<(String, String, String)>,
) -> ApiResult {
    let r = run_ref(path.into_inner())?;
    let run = load_run(&app, &r)?;
    // The holder of the current run key sees everything; anybody else a copy without key and secrets.
    let def = match verify_run_key(&req, &app.config.cluster_secret, &r) {
        Ok(fence) if fence == run.fence => rundef_for(&app, &run, Some(fence))?,
        _ => {
            require_user(&req, app.state())?;
            viewer_rundef(&app, &r)?
        }
    };
    Ok(HttpResponse::Ok().json(def))
}

/// The run definition as a viewer without the run key sees it (API and UI): no key, secret names only.
pub fn viewer_rundef(app: &App, r: &RunRef) -> Result<RunDef, ApiError> {
    let run = load_run(app, r)?;
    Ok(rundef_for(app, &run, None)?.redacted_with_names(
        &app.state()
            .build(&r.project, r.build)?
            .map(|b| b.secrets)
            .unwrap_or_default(),
    ))
}

trait RedactWithNames {
    fn redacted_with_names(self, secrets: &std::collections::BTreeMap<String, String>) -> RunDef;
}

impl RedactWithNames for RunDef {
    /// Keeps the secret names (values emptied) so the simulator's user knows which files to provide.
    fn redacted_with_names(
        mut self,
        secrets: &std::collections::BTreeMap<String, String>,
    ) -> RunDef {
        self.secrets = secrets.keys().map(|k| (k.clone(), String::new())).collect();
        self.redacted()
    }
}

async fn simulate_script(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    require_user(&req, app.state())?;
    let r = run_ref(path.into_inner())?;
    let run = load_run(&app, &r)?;
    let url = App::run_url(
        &app.cluster.advertise_url,
        &run.project,
        run.build,
        &run.name,
    );
    let script = format!(
        "#!/bin/sh -e\n\
         # Recreates run {r} on this machine with the JobServ simulator.\n\
         # Needs: curl, jobserv-worker, Docker. JOBSERV_TOKEN must hold an API token; CA a CA file if the\n\
         # server's certificate is not publicly trusted. Secrets are not downloaded: put their values in\n\
         # the \"secrets\" of $RUNDEF before running.\n\
         RUNDEF=${{RUNDEF:-.rundef.json}}\n\
         WORKSPACE=${{WORKSPACE:-./{run_name}}}\n\
         curl -fsS ${{CA:+--cacert \"$CA\"}} -H \"Authorization: Token $JOBSERV_TOKEN\" -o \"$RUNDEF\" '{url}.rundef.json'\n\
         exec jobserv-worker simulate \"$RUNDEF\" --workspace \"$WORKSPACE\"\n",
        run_name = run.name
    );
    Ok(HttpResponse::Ok()
        .content_type("text/x-shellscript")
        .body(script))
}

async fn rerun(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<(String, String, String)>,
) -> ApiResult {
    require_admin(&req, app.state())?;
    let r = run_ref(path.into_inner())?;
    app.cluster
        .propose(Command::RerunRun {
            run: r.clone(),
            now: jobserv_raft::state::now_ms(),
        })
        .await?;
    Ok(success(
        json!({ "run": run_json(&app, &load_run(&app, &r)?, RunFields::WithQueueReason)? }),
    ))
}

async fn cancel(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<(String, String, String)>,
) -> ApiResult {
    require_user(&req, app.state())?;
    let r = run_ref(path.into_inner())?;
    app.cluster
        .propose(Command::CancelRun {
            run: r.clone(),
            now: jobserv_raft::state::now_ms(),
        })
        .await?;
    Ok(success(
        json!({ "run": run_json(&app, &load_run(&app, &r)?, RunFields::WithQueueReason)? }),
    ))
}

const SIGNED_URL_LIFETIME_MS: u64 = 3600 * 1000;

async fn create_signed(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<(String, String, String)>,
    body: web::Bytes,
) -> ApiResult {
    let r = run_ref(path.into_inner())?;
    let fence = verify_run_key(&req, &app.config.cluster_secret, &r)?;
    let request: CreateSignedRequest = parse_json(&body)?;
    if request.paths.len() > 10_000 {
        return Err(ApiError::BadRequest(
            "paths: at most 10000 per request".into(),
        ));
    }
    let expires = jobserv_raft::state::now_ms() + SIGNED_URL_LIFETIME_MS;
    let base = App::run_url(&app.cluster.advertise_url, &r.project, r.build, &r.run);
    let mut urls = std::collections::BTreeMap::new();
    for (i, p) in request.paths.iter().enumerate() {
        validate_artifact_path(p).map_err(|e| ApiError::BadRequest(format!("paths/{i}: {e}")))?;
        let sig = artifact_signature(&app.config.cluster_secret, &r, fence, p, expires);
        let encoded: Vec<String> = p
            .split('/')
            .map(|s| urlencoding::encode(s).into_owned())
            .collect();
        urls.insert(
            p.clone(),
            format!(
                "{base}artifacts/{}?fence={fence}&expires={expires}&sig={sig}",
                encoded.join("/")
            ),
        );
    }
    Ok(success(CreateSignedReply { urls }))
}

async fn list_tests(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<(String, String, String)>,
) -> ApiResult {
    require_user(&req, app.state())?;
    let r = run_ref(path.into_inner())?;
    load_run(&app, &r)?;
    Ok(success(json!({ "tests": app.state().tests(&r)? })))
}

async fn get_test(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<(String, String, String, String)>,
) -> ApiResult {
    require_user(&req, app.state())?;
    let (p, n, run, t) = path.into_inner();
    let r = run_ref((p, n, run))?;
    let test = app
        .state()
        .test(&r, &t)?
        .ok_or_else(|| ApiError::NotFound(format!("test {t} of run {r}")))?;
    Ok(success(json!({ "test": test })))
}

async fn report_tests(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<(String, String, String)>,
    body: web::Bytes,
) -> ApiResult {
    let r = run_ref(path.into_inner())?;
    let fence = verify_run_key(&req, &app.config.cluster_secret, &r)?;
    let report: TestReport = parse_json(&body)?;
    app.cluster
        .propose(Command::ReportTests {
            run: r,
            fence,
            report,
            now: jobserv_raft::state::now_ms(),
        })
        .await?;
    Ok(success(json!({})))
}
