//! The JobServ routes only JobServ's own clients use: its Python worker's unregister, log upload and
//! volume collection, the runner wheel, the simulator download and server-side validation. The shapes
//! follow foundriesio/jobserv (`jobserv/api/worker.py`); what this node does differently is in
//! `docs/jobserv-compat.md`. Worker registration, facts and check-in live in `workers.rs`, which answers a
//! legacy worker in JobServ's shapes through the helpers here.
use super::parse_json;
use super::system::worker_binary_path;
use crate::app::App;
use crate::auth::{bearer, hash_token, require_admin, require_worker};
use crate::error::{created, success, ApiError, ApiResult};
use crate::legacy::{is_legacy, packages, split_host_tags, LegacyPackages, LEGACY_VERSION};
use actix_web::{http::header, web, HttpRequest, HttpResponse};
use jobserv_raft::model::{Worker, WorkerFacts};
use jobserv_raft::Command;
use serde::Deserialize;
use serde_json::{json, Value};

/// A worker's debug log upload (`jobserv_worker.py upload`).
const MAX_WORKER_LOG: usize = 16 * 1024 * 1024;
/// The path of the runner wheel in a legacy worker's run definitions (`runner_url`).
pub const RUNNER_WHEEL_PATH: &str = "/runner/jobserv_runner.whl";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/workers/{name}/", web::delete().to(delete_worker))
        .service(
            web::resource("/workers/{name}/logs/")
                .app_data(web::PayloadConfig::new(MAX_WORKER_LOG))
                .route(web::put().to(worker_logs)),
        )
        .route(
            "/workers/{name}/volumes-deleted/",
            web::get().to(volumes_deleted),
        )
        .route(RUNNER_WHEEL_PATH, web::get().to(runner_wheel))
        .route("/simulator", web::get().to(simulator))
        .route("/simulator-validate", web::post().to(simulator_validate));
}

fn legacy_packages(app: &App) -> Result<&'static LegacyPackages, ApiError> {
    let binary = worker_binary_path(app)?;
    packages(&binary).map_err(|e| {
        ApiError::NotFound(format!(
            "runner binary {}: {e} (set worker_binary in node.toml)",
            binary.display()
        ))
    })
}

/// JobServ's registration body: `host_tags` is one comma-separated string, `name` is repeated, unknown
/// fields are ignored (JobServ's server ignores them too).
#[derive(Deserialize)]
struct LegacyRegistration {
    api_key: String,
    distro: String,
    mem_total: u64,
    cpu_total: u32,
    cpu_type: String,
    concurrent_runs: u32,
    host_tags: String,
    #[serde(default)]
    surges_only: bool,
}

/// `Some((key, facts))` when `body` is JobServ's registration shape (its `host_tags` is a string), else
/// `None`: our own workers send a list and are parsed strictly by the caller.
pub fn legacy_registration(body: &[u8]) -> Option<Result<(String, WorkerFacts), ApiError>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    if !value.get("host_tags").is_some_and(Value::is_string) {
        return None;
    }
    Some(
        serde_json::from_value::<LegacyRegistration>(value)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
            .map(|r| {
                let facts = WorkerFacts {
                    distro: r.distro,
                    mem_total: r.mem_total,
                    cpu_total: r.cpu_total,
                    cpu_type: r.cpu_type,
                    concurrent_runs: r.concurrent_runs,
                    host_tags: split_host_tags(&r.host_tags),
                    surges_only: r.surges_only,
                    version: LEGACY_VERSION.to_string(),
                };
                (r.api_key, facts)
            }),
    )
}

/// JobServ's PATCH of host facts: the whole host-properties object again; JobServ updates distro,
/// memory, CPUs, concurrency and host tags and ignores the rest (`api_key`, `name`, `surges_only`).
#[derive(Deserialize)]
struct LegacyPatch {
    distro: Option<String>,
    mem_total: Option<u64>,
    cpu_total: Option<u32>,
    cpu_type: Option<String>,
    concurrent_runs: Option<u32>,
    host_tags: Option<String>,
}

/// JobServ's PATCH body as the facts patch the node applies (the rest is ignored, not refused).
pub(super) fn legacy_patch(body: &[u8]) -> Result<super::workers::WorkerPatch, ApiError> {
    let patch: LegacyPatch = parse_json(body)?;
    Ok(super::workers::WorkerPatch {
        distro: patch.distro,
        mem_total: patch.mem_total,
        cpu_total: patch.cpu_total,
        cpu_type: patch.cpu_type,
        concurrent_runs: patch.concurrent_runs,
        host_tags: patch.host_tags.as_deref().map(split_host_tags),
        ..Default::default()
    })
}

/// JobServ's check-in reply: `run-defs` are JSON strings whose `runner_url` is the wheel, and `version`
/// is the worker-script version that decides whether `jobserv_worker.py` replaces itself.
pub fn legacy_checkin_reply(
    app: &App,
    worker: &Worker,
    run_defs: Vec<jobserv_protocol::RunDef>,
) -> Result<Value, ApiError> {
    let base = app.cluster.advertise_url.trim_end_matches('/').to_string();
    let mut strings = Vec::with_capacity(run_defs.len());
    for mut def in run_defs {
        def.runner_url = format!("{base}{RUNNER_WHEEL_PATH}");
        strings.push(serde_json::to_string(&def).map_err(|e| ApiError::Internal(e.to_string()))?);
    }
    let version = announced_version(app)?;
    Ok(json!({ "worker": {
        "name": worker.name,
        "enlisted": worker.enlisted,
        "distro": worker.facts.distro,
        "mem_total": worker.facts.mem_total,
        "cpu_total": worker.facts.cpu_total,
        "cpu_type": worker.facts.cpu_type,
        "concurrent_runs": worker.facts.concurrent_runs,
        "host_tags": worker.facts.host_tags.join(","),
        "surges_only": worker.facts.surges_only,
        "version": version,
        "run-defs": strings,
    }}))
}

fn site_script(app: &App) -> Result<Option<Vec<u8>>, ApiError> {
    match &app.config.legacy_worker_script {
        None => Ok(None),
        Some(path) => std::fs::read(path).map(Some).map_err(|e| {
            ApiError::Internal(format!("legacy_worker_script {}: {e}", path.display()))
        }),
    }
}

fn announced_version(app: &App) -> Result<String, ApiError> {
    let upgrade = app.config.legacy_worker_upgrade;
    let script = if upgrade { None } else { site_script(app)? };
    Ok(legacy_packages(app)?.announced_version(upgrade, script.as_deref()))
}

/// Whether `Authorization` carries the key of a worker registered in JobServ's shape. `GET /worker` names
/// no worker, so the key is looked up among the workers (a scan: this is asked once per upgrade).
pub fn asked_by_legacy_worker(req: &HttpRequest, app: &App) -> Result<bool, ApiError> {
    let Some(token) = bearer(req) else {
        return Ok(false);
    };
    let hash = hash_token(token);
    Ok(app
        .state()
        .workers()?
        .iter()
        .any(|w| is_legacy(&w.facts) && crate::auth::constant_time_eq(&w.key_hash, &hash)))
}

/// What `GET /worker` gives a legacy worker: the hand-over script, or the site's own script.
pub fn legacy_worker_script(app: &App) -> Result<HttpResponse, ApiError> {
    let text = if app.config.legacy_worker_upgrade {
        legacy_packages(app)?.migrate_script.clone().into_bytes()
    } else if let Some(script) = site_script(app)? {
        script
    } else {
        return Err(ApiError::NotFound(
            "no worker script for JobServ's Python workers: set legacy_worker_script (the site's \
             jobserv_worker.py) or legacy_worker_upgrade = true in node.toml"
                .into(),
        ));
    };
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(text))
}

/// The worker's own key, and (as JobServ) 403 until an admin enlisted it.
fn require_enlisted_worker(req: &HttpRequest, app: &App, name: &str) -> Result<(), ApiError> {
    let worker = require_worker(req, app.state(), name)?;
    if !worker.enlisted {
        return Err(ApiError::Forbidden(format!(
            "worker {name} is not enlisted"
        )));
    }
    Ok(())
}

/// `DELETE /workers/<name>/` (`jobserv_worker.py unregister`): the worker itself or an admin.
async fn delete_worker(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
) -> ApiResult {
    let name = path.into_inner();
    if require_admin(&req, app.state()).is_err() {
        require_worker(&req, app.state(), &name)?;
    }
    app.cluster
        .propose(Command::DeleteWorker { name: name.clone() })
        .await?;
    tracing::info!(worker = %name, "worker deleted");
    Ok(success(json!({})))
}

/// `PUT /workers/<name>/logs/` (`jobserv_worker.py upload`): debug output an operator asked a worker to
/// send. Kept on the node that received it (`DATA_DIR/worker-logs/<name>/<ms>.log`), not replicated: it is
/// a diagnostic drop-box, not build state.
async fn worker_logs(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    let name = path.into_inner();
    require_worker(&req, app.state(), &name)?;
    let dir = app.config.data_dir.join("worker-logs").join(&name);
    std::fs::create_dir_all(&dir).map_err(|e| ApiError::Internal(e.to_string()))?;
    // actix decodes `Content-Encoding: gzip` bodies; keep a body that is still gzip as such.
    let gzip = body.starts_with(&[0x1f, 0x8b]);
    let file = dir.join(format!(
        "{}.log{}",
        jobserv_raft::state::now_ms(),
        if gzip { ".gz" } else { "" }
    ));
    std::fs::write(&file, &body).map_err(|e| ApiError::Internal(e.to_string()))?;
    tracing::info!(worker = %name, bytes = body.len(), file = %file.display(), "worker log uploaded");
    Ok(success(json!({"bytes": body.len()})))
}

#[derive(Deserialize)]
struct VolumesQuery {
    directories: Option<Vec<String>>,
}

/// `GET /workers/<name>/volumes-deleted/` with a JSON body `{"directories": [...]}`: the directories
/// (project-name prefixes) no project starts with any more, whose persistent volumes the worker may
/// delete. As in JobServ, only prefixes the worker sent are answered (no list of every project).
async fn volumes_deleted(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    let name = path.into_inner();
    require_enlisted_worker(&req, &app, &name)?;
    let query: VolumesQuery = if body.is_empty() {
        VolumesQuery { directories: None }
    } else {
        parse_json(&body)?
    };
    let directories = query
        .directories
        .filter(|d| !d.is_empty())
        .ok_or_else(|| ApiError::BadRequest("directories: missing required argument".into()))?;
    let projects: Vec<String> = app
        .state()
        .projects()?
        .into_iter()
        .map(|p| p.name)
        .collect();
    let deletes: Vec<&String> = directories
        .iter()
        .filter(|d| !projects.iter().any(|p| p.starts_with(d.as_str())))
        .collect();
    Ok(success(json!({ "volumes": deletes })))
}

/// The runner package JobServ's worker imports (`runner_url` of its run definitions).
async fn runner_wheel(app: web::Data<App>) -> Result<HttpResponse, ApiError> {
    let packages = legacy_packages(&app)?;
    Ok(HttpResponse::Ok()
        .content_type("application/zip")
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"jobserv_runner-0.0.0+jobserv.node-py3-none-any.whl\"",
        ))
        .body(packages.wheel.clone()))
}

const SIMULATOR_TEMPLATE: &str = "#!/bin/sh
# JobServ's simulator download, served by jobserv-node: fetches this cluster's jobserv-worker (checked
# against its sha256) and runs its simulator on a downloaded run definition:
#   sh simulator.sh .rundef.json [--workspace DIR] [--executor docker|host]
set -eu
NODE=\"${JOBSERV_URL:-@NODE@}\"
SHA=@SHA@
BIN=\"${XDG_CACHE_HOME:-$HOME/.cache}/jobserv/jobserv-worker-$SHA\"
if [ ! -x \"$BIN\" ]; then
  mkdir -p \"$(dirname \"$BIN\")\"
  curl -fsS ${JOBSERV_CA_CERT:+--cacert \"$JOBSERV_CA_CERT\"} \"$NODE/runner\" -o \"$BIN.part\"
  echo \"$SHA  $BIN.part\" | sha256sum -c - >/dev/null
  chmod +x \"$BIN.part\" && mv \"$BIN.part\" \"$BIN\"
fi
exec \"$BIN\" simulate \"$@\"
";

#[derive(Deserialize)]
struct SimulatorQuery {
    version: Option<String>,
}

/// `GET /simulator[?version=V]`: the simulator script; 304 when the caller already has version `V`
/// (JobServ's contract). Ours wraps `jobserv-worker simulate` instead of JobServ's Python simulator.
async fn simulator(
    app: web::Data<App>,
    q: web::Query<SimulatorQuery>,
) -> Result<HttpResponse, ApiError> {
    use sha2::Digest;
    let packages = legacy_packages(&app)?;
    let script = SIMULATOR_TEMPLATE
        .replace("@NODE@", app.cluster.advertise_url.trim_end_matches('/'))
        .replace("@SHA@", &packages.runner_sha256);
    let version = hex::encode(&sha2::Sha256::digest(script.as_bytes())[..8]);
    if q.version.as_deref() == Some(version.as_str()) {
        return Ok(HttpResponse::NotModified().finish());
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("X-JOBSERV-SIMULATOR-VERSION", version))
        .body(script))
}

/// `POST /simulator-validate`: a project definition as JSON, validated exactly as a project's YAML is
/// (JSON is YAML); 400 with the error naming the field, else `{}`.
async fn simulator_validate(body: web::Bytes) -> ApiResult {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("run-definition must be posted as json data".into()))?;
    if !value.is_object() {
        return Err(ApiError::BadRequest(
            "run-definition must be posted as json data: a JSON object".into(),
        ));
    }
    let text =
        serde_json::to_string_pretty(&value).map_err(|e| ApiError::Internal(e.to_string()))?;
    jobserv_protocol::project::parse_project(&text)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(success(json!({})))
}

/// Worker events (`jobserv_worker.py cronwrap`, `gc-volumes`): logged, not replicated. JobServ answers
/// 201, and 403 to a worker that is not enlisted.
pub async fn events(
    req: HttpRequest,
    app: web::Data<App>,
    path: web::Path<String>,
    body: web::Bytes,
) -> ApiResult {
    let name = path.into_inner();
    require_enlisted_worker(&req, &app, &name)?;
    let event: Value = parse_json(&body)?;
    tracing::info!(worker = %name, event = %event, "worker event");
    Ok(created(json!({})))
}
