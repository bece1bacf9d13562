//! Health, version, metrics, cluster status and the worker binary for self-update.
use crate::app::App;
use crate::auth::require_admin;
use crate::error::{success, ApiError, ApiResult};
use actix_web::{web, HttpRequest, HttpResponse};
use jobserv_protocol::RunStatus;
use serde_json::json;
use std::collections::BTreeMap;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        // JobServ's liveness path (Kubernetes probes written for JobServ).
        .route("/healthz", web::get().to(health))
        .route("/health/ready", web::get().to(ready))
        .route("/health/runs/", web::get().to(health_runs))
        .route("/version", web::get().to(version))
        .route("/metrics", web::get().to(metrics))
        .route("/cluster/", web::get().to(cluster))
        .route("/cluster/snapshot", web::post().to(snapshot))
        .route("/cluster/backup", web::get().to(super::backup::backup))
        .route("/cluster/nodes/", web::post().to(add_node))
        .route("/cluster/nodes/{id}/", web::delete().to(remove_node))
        .route("/worker", web::get().to(worker_download))
        .route("/runner", web::get().to(worker_binary));
}

/// Liveness of this node's Raft core (never waits for a quorum; public). 503 with the reason once the
/// core has quit — the node then stops serving (see `node::spawn_raft_watchdog`).
async fn health(app: web::Data<App>) -> HttpResponse {
    let m = app.cluster.raft.metrics().borrow().clone();
    match &m.running_state {
        Err(fatal) => HttpResponse::ServiceUnavailable().json(json!({
            "status": "error",
            "message": format!("raft core stopped: {fatal}"),
        })),
        Ok(()) => success(json!({
            "raft": "running",
            "node": app.cluster.id,
            "state": format!("{:?}", m.state),
            "leader": m.current_leader,
            "last_applied": m.last_applied.map(|l| l.index),
        })),
    }
}

/// How long readiness waits for this node to prove it is caught up.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Readiness (a load balancer's or Kubernetes' probe): 200 only when this node can serve a linearizable
/// read now — a leader answered its read index and this node has applied up to it, i.e. it has caught up
/// with everything committed. 503 with the reason otherwise (no quorum, still catching up after a restart
/// or a wipe). Never waits longer than 2 s. Liveness is `/health`.
async fn ready(app: web::Data<App>) -> HttpResponse {
    if app
        .cluster
        .draining
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        return HttpResponse::ServiceUnavailable().json(json!({
            "status": "error",
            "message": "not ready: this node is stopping",
        }));
    }
    match tokio::time::timeout(READY_WAIT, app.cluster.reads.linearize(false)).await {
        Ok(Ok(_)) => success(json!({
            "ready": true,
            "node": app.cluster.id,
            "applied": app.cluster.applied_index(),
        })),
        Ok(Err(e)) => HttpResponse::ServiceUnavailable().json(json!({
            "status": "error",
            "message": format!("not ready: {e}"),
        })),
        Err(_) => HttpResponse::ServiceUnavailable().json(json!({
            "status": "error",
            "message": format!("not ready: not caught up with the leader within {READY_WAIT:?}"),
        })),
    }
}

/// Queued and running runs by host tag, and why the queued ones wait. Public, like JobServ's.
async fn health_runs(app: web::Data<App>) -> ApiResult {
    let mut queued: BTreeMap<String, u64> = BTreeMap::new();
    let mut reasons: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    // JobServ's shape, under `health`: every active run, queued in queue order, running by worker.
    let item = |run: &jobserv_raft::model::Run| {
        json!({
            "project": run.project,
            "build": run.build,
            "run": run.name,
            "url": App::run_url(&app.cluster.advertise_url, &run.project, run.build, &run.name),
            "created": jobserv_protocol::time::iso_from_ms(run.created),
        })
    };
    let mut jobserv_queued = Vec::new();
    let mut jobserv_running: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    let all_queued = app.state().queued_runs(100_000)?;
    let explainer = super::runs::QueueExplainer::new(&app, &all_queued)?;
    for run in &all_queued {
        jobserv_queued.push(item(run));
        *queued.entry(run.host_tag.clone()).or_default() += 1;
        let reason = explainer.reason(run);
        *reasons
            .entry(run.host_tag.clone())
            .or_default()
            .entry(reason.as_str())
            .or_default() += 1;
    }
    let mut running: BTreeMap<String, u64> = BTreeMap::new();
    for worker in app.state().workers()? {
        for run in app.state().worker_runs(&worker.name)? {
            *running.entry(run.host_tag.clone()).or_default() += 1;
            jobserv_running
                .entry(worker.name.clone())
                .or_default()
                .push(item(&run));
        }
    }
    let counts: BTreeMap<&str, u64> = app
        .state()
        .run_counts()?
        .into_iter()
        .map(|(s, n)| (s.as_str(), n))
        .collect();
    Ok(success(json!({
        RunStatus::Queued.as_str(): queued,
        RunStatus::Running.as_str(): running,
        "queue_reasons": reasons,
        "health": {
            "statuses": counts.iter().filter(|(_, n)| **n > 0).collect::<BTreeMap<_, _>>(),
            "QUEUED": jobserv_queued,
            "RUNNING": jobserv_running,
        },
        "totals": counts,
    })))
}

async fn version() -> ApiResult {
    Ok(success(
        json!({ "version": env!("CARGO_PKG_VERSION"), "api": jobserv_protocol::api::API_VERSION, "rundef": jobserv_protocol::rundef::RUNDEF_VERSION, "storage": jobserv_raft::codec::write_version(), "storage_readable": jobserv_raft::codec::max_readable() }),
    ))
}

async fn metrics(app: web::Data<App>) -> HttpResponse {
    let text = app.cluster.metrics.render(&app.cluster, &app.log_stats);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text)
}

async fn cluster(req: HttpRequest, app: web::Data<App>) -> ApiResult {
    require_admin(&req, app.state())?;
    Ok(success(cluster_view(&app).await?))
}

/// The cluster as this node sees it: Raft figures, members with role and gossip state, storage format,
/// artifact replication (`GET /cluster/` and the UI's cluster page).
pub async fn cluster_view(app: &App) -> Result<serde_json::Value, ApiError> {
    let m = app.cluster.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let gossip = app.cluster.gossip.members().await;
    let keeper = app.blobs.status();
    let nodes: Vec<_> = membership
        .nodes()
        .map(|(id, node)| {
            let role = if Some(*id) == m.current_leader {
                "leader"
            } else if voters.contains(id) {
                "follower"
            } else {
                "learner"
            };
            let seen = gossip.iter().find(|g| g.raft_id == Some(*id));
            json!({
                "id": id,
                "url": node.addr,
                "raft_role": role,
                "gossip_state": seen.map(|g| g.state).unwrap_or("suspect"),
                "generation": seen.map(|g| g.generation),
                "blobs": seen.and_then(|g| g.blobs.clone()),
            })
        })
        .collect();
    Ok(json!({
        "leader": m.current_leader,
        "term": m.current_term,
        "nodes": nodes,
        "this_node": app.cluster.id,
        "last_applied": m.last_applied.map(|l| l.index),
        "last_log_index": m.last_log_index,
        // On the leader: how far each member's log matches its own (the commit index is what a majority
        // matched); elsewhere null.
        "replication": m.replication.as_ref().map(|r| {
            r.iter()
                .map(|(id, matched)| (id.to_string(), matched.map(|l| l.index)))
                .collect::<BTreeMap<_, _>>()
        }),
        "health": match &m.running_state {
            Ok(()) => "running".to_string(),
            Err(fatal) => format!("stopped: {fatal}"),
        },
        "snapshot": m.snapshot.map(|l| l.index),
        "purged": m.purged.map(|l| l.index),
        "storage_format": app.state().format_version()?,
        "storage_format_written": jobserv_raft::codec::write_version(),
        "storage_format_readable": jobserv_raft::codec::max_readable(),
        "artifacts": {
            "store": app.blobs.backend(),
            // This node's keeper at its last pass; every node's is under `nodes[].blobs` (gossip).
            "blobs": keeper.blobs,
            "under_replicated": keeper.under_replicated,
            "this_node": keeper,
        },
    }))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNode {
    id: u64,
    url: String,
}

/// Adds a node (learner first, then voter). Admin only.
async fn add_node(req: HttpRequest, app: web::Data<App>, body: web::Bytes) -> ApiResult {
    require_admin(&req, app.state())?;
    let n: NewNode = super::parse_json(&body)?;
    if !n.url.starts_with("https://") {
        return Err(ApiError::BadRequest("url: must be an https:// URL".into()));
    }
    app.cluster
        .change_membership(crate::cluster::MembershipChange::AddNode {
            id: n.id,
            url: n.url,
        })
        .await?;
    Ok(success(json!({"added": n.id})))
}

async fn remove_node(req: HttpRequest, app: web::Data<App>, path: web::Path<u64>) -> ApiResult {
    require_admin(&req, app.state())?;
    let id = path.into_inner();
    app.cluster
        .change_membership(crate::cluster::MembershipChange::RemoveNode { id })
        .await?;
    Ok(success(json!({"removed": id})))
}

/// The worker binary this node serves (`jobserv-worker` beside this binary unless configured).
pub fn worker_binary_path(app: &App) -> Result<std::path::PathBuf, ApiError> {
    match &app.config.worker_binary {
        Some(p) => Ok(p.clone()),
        None => Ok(std::env::current_exe()
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .with_file_name("jobserv-worker")),
    }
}

/// `GET /worker`: the worker binary, for self-update — or, asked by one of JobServ's Python workers (its
/// key in `Authorization`), the script it replaces itself with (`super::legacy::legacy_worker_script`).
async fn worker_download(req: HttpRequest, app: web::Data<App>) -> Result<HttpResponse, ApiError> {
    if super::legacy::asked_by_legacy_worker(&req, &app)? {
        return super::legacy::legacy_worker_script(&app);
    }
    worker_binary(app).await
}

/// `GET /runner`: the worker binary, whose runner executes runs (our workers, and JobServ's through the wheel).
async fn worker_binary(app: web::Data<App>) -> Result<HttpResponse, ApiError> {
    let path = worker_binary_path(&app)?;
    let bytes = std::fs::read(&path)
        .map_err(|_| ApiError::NotFound(format!("worker binary {}", path.display())))?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((
            "X-JOBSERV-WORKER-VERSION",
            app.config
                .worker_version
                .clone()
                .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
        ))
        .body(bytes))
}

#[derive(serde::Deserialize)]
struct SnapshotQuery {
    /// Also purge the whole log up to the snapshot (default: keep the configured tail for lagging peers).
    purge: Option<bool>,
}

/// Builds a snapshot now; with `?purge=true` the log up to it is purged at once (so a lagging or wiped
/// node can only catch up from the snapshot). For operators, the footprint benchmark and S9.
async fn snapshot(
    req: HttpRequest,
    app: web::Data<App>,
    q: web::Query<SnapshotQuery>,
) -> ApiResult {
    require_admin(&req, app.state())?;
    app.cluster
        .raft
        .trigger()
        .snapshot()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let target = app.cluster.applied_index();
    loop {
        let m = app.cluster.raft.metrics().borrow().clone();
        if let Some(snap) = m.snapshot.filter(|s| s.index >= target) {
            if q.purge.unwrap_or(false) {
                app.cluster
                    .raft
                    .trigger()
                    .purge_log(snap.index)
                    .await
                    .map_err(|e| ApiError::Unavailable(e.to_string()))?;
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while app
                    .cluster
                    .raft
                    .metrics()
                    .borrow()
                    .purged
                    .is_none_or(|p| p.index < snap.index)
                    && std::time::Instant::now() < deadline
                {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
            let m = app.cluster.raft.metrics().borrow().clone();
            return Ok(success(
                json!({"snapshot_index": m.snapshot.map(|s| s.index), "purged": m.purged.map(|p| p.index)}),
            ));
        }
        if std::time::Instant::now() > deadline {
            return Err(ApiError::Unavailable(
                "snapshot not built within 60s".into(),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
