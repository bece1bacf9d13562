//! Node-to-node routes: Raft RPCs and forwarded writes. Authenticated by the cluster secret (constant-time
//! compare); bodies are `codec` blobs.
use crate::app::App;
use crate::auth::constant_time_eq;
use crate::cluster::COMMIT_TIMEOUT;
use crate::error::ApiError;
use actix_web::{web, HttpRequest, HttpResponse};
use jobserv_raft::network::CLUSTER_SECRET_HEADER;
use jobserv_raft::{codec, Command};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/raft")
            .app_data(web::PayloadConfig::new(256 * 1024 * 1024))
            .route("/append", web::post().to(append))
            .route("/vote", web::post().to(vote))
            .route("/snapshot", web::post().to(snapshot))
            .route("/propose", web::post().to(propose))
            .route("/membership", web::post().to(membership))
            .route("/read-index", web::post().to(read_index))
            .route("/status", web::get().to(status))
            .route("/campaign", web::post().to(campaign))
            .route("/blobs/", web::put().to(super::artifacts::receive_blob))
            .route("/blobs/{sha}", web::get().to(super::artifacts::send_blob)),
    );
}

pub fn check_secret(req: &HttpRequest, app: &App) -> Result<(), ApiError> {
    let given = req
        .headers()
        .get(CLUSTER_SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !constant_time_eq(given, &app.config.cluster_secret) {
        return Err(ApiError::Unauthorized(
            "node-to-node call without the cluster secret".into(),
        ));
    }
    Ok(())
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    codec::decode(body).map_err(|e| ApiError::BadRequest(format!("raft rpc body: {e}")))
}

fn reply<T: serde::Serialize>(value: &T) -> Result<HttpResponse, ApiError> {
    let bytes = codec::encode(value).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(bytes))
}

async fn append(
    req: HttpRequest,
    app: web::Data<App>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    check_secret(&req, &app)?;
    let rpc = decode(&body)?;
    reply(&app.cluster.raft.append_entries(rpc).await)
}

async fn vote(
    req: HttpRequest,
    app: web::Data<App>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    check_secret(&req, &app)?;
    if app
        .cluster
        .rejoining
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        // A node that lost its data may have acknowledged entries it no longer holds: granting a vote now
        // could elect a leader without them. Not answering is always safe (the candidate counts no vote).
        return Err(ApiError::Unavailable(
            "rejoining after losing its data: not voting until caught up".into(),
        ));
    }
    let rpc = decode(&body)?;
    reply(&app.cluster.raft.vote(rpc).await)
}

async fn snapshot(
    req: HttpRequest,
    app: web::Data<App>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    check_secret(&req, &app)?;
    let rpc = decode(&body)?;
    reply(&app.cluster.raft.install_snapshot(rpc).await)
}

/// A write forwarded by a follower. Proposed here only (no further forwarding, so no loops).
async fn propose(
    req: HttpRequest,
    app: web::Data<App>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    check_secret(&req, &app)?;
    let cmd: Command = decode(&body)?;
    reply(&app.cluster.propose_local(cmd, COMMIT_TIMEOUT).await)
}

/// A membership change forwarded by another node (or asked by a joining node). Replies
/// `Result<(), String>`.
async fn membership(
    req: HttpRequest,
    app: web::Data<App>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    check_secret(&req, &app)?;
    let change: crate::cluster::MembershipChange = decode(&body)?;
    let result: Result<(), String> = app
        .cluster
        .change_membership(change)
        .await
        .map_err(|e| e.to_string());
    reply(&result)
}

/// A follower's linearizable read asks the leader for a read index (batched with every other read that
/// arrived before the next leadership-confirming round; see `reads.rs`).
async fn read_index(req: HttpRequest, app: web::Data<App>) -> Result<HttpResponse, ApiError> {
    check_secret(&req, &app)?;
    reply(&app.cluster.reads.read_index_as_leader().await)
}

/// Whether this node belongs to an initialised cluster, and whether that cluster has ever committed
/// anything here (asked before bootstrapping, so that a wiped node never initialises a second cluster
/// beside the running one, and knows it is rejoining one).
async fn status(req: HttpRequest, app: web::Data<App>) -> Result<HttpResponse, ApiError> {
    check_secret(&req, &app)?;
    let initialized = app
        .cluster
        .raft
        .is_initialized()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let last_applied = app
        .cluster
        .raft
        .metrics()
        .borrow()
        .last_applied
        .map(|l| l.index);
    reply(&crate::cluster::PeerStatus {
        initialized,
        last_applied,
    })
}

/// The leader, stopping gracefully, asks this caught-up follower to start an election now (`handover.rs`).
async fn campaign(req: HttpRequest, app: web::Data<App>) -> Result<HttpResponse, ApiError> {
    check_secret(&req, &app)?;
    crate::handover::campaign(&app.cluster)
        .await
        .map_err(ApiError::Internal)?;
    Ok(HttpResponse::Ok().finish())
}
