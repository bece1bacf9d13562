//! Artifacts: the signed upload (`PUT …/runs/<r>/artifacts/<path>?fence&expires&sig`), streamed into the
//! blob store and replicated before its metadata is committed; the download (`GET`/`HEAD …/runs/<r>/<path>`)
//! from any node with `Range`, `Content-Length`, `Content-Type` and the hash as `ETag`; and the
//! node-to-node blob routes under `/raft/blobs/` (cluster secret).
use super::runs::{run_ref, RunPath};
use crate::app::App;
use crate::auth::{artifact_signature, constant_time_eq, require_user};
use crate::blobs::range::{self, ByteRange};
use crate::blobs::transfer::HEADER_BLOB_SHA256;
use crate::blobs::upload::{store_upload, UploadError};
use crate::blobs::{serve, BlobError};
use crate::error::{success, ApiError, ApiResult};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use jobserv_raft::model::ArtifactMeta;
use jobserv_raft::model::RunRef;
use jobserv_raft::state::validate_artifact_path;
use jobserv_raft::Command;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
pub struct Signed {
    fence: u64,
    expires: u64,
    sig: String,
}

type ArtifactPath = web::Path<(String, String, String, String)>;

fn split(path: ArtifactPath) -> Result<(jobserv_raft::model::RunRef, String), ApiError> {
    let (p, n, run, artifact) = path.into_inner();
    let r = run_ref((p, n, run) as RunPath)?;
    validate_artifact_path(&artifact).map_err(|e| ApiError::BadRequest(format!("path: {e}")))?;
    Ok((r, artifact))
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> ApiError {
        match e {
            UploadError::TooLarge { .. } => ApiError::PayloadTooLarge(e.to_string()),
            UploadError::CutOff { .. } | UploadError::LengthMismatch { .. } => {
                ApiError::BadRequest(e.to_string())
            }
            UploadError::NoMajority { .. } => ApiError::Unavailable(e.to_string()),
            UploadError::Blob(BlobError::HashMismatch { .. }) => {
                ApiError::BadRequest(e.to_string())
            }
            UploadError::Blob(_) => ApiError::Internal(e.to_string()),
        }
    }
}

fn declared_length(req: &HttpRequest) -> Result<Option<u64>, ApiError> {
    match req.headers().get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::BadRequest("Content-Length: not a number".into())),
    }
}

pub async fn put_artifact(
    req: HttpRequest,
    app: web::Data<App>,
    path: ArtifactPath,
    q: web::Query<Signed>,
    payload: web::Payload,
) -> ApiResult {
    let (r, artifact) = split(path)?;
    let expected = artifact_signature(
        &app.config.cluster_secret,
        &r,
        q.fence,
        &artifact,
        q.expires,
    );
    if !constant_time_eq(&q.sig, &expected) {
        return Err(ApiError::Forbidden("bad artifact signature".into()));
    }
    if jobserv_raft::state::now_ms() > q.expires {
        return Err(ApiError::Forbidden("artifact upload URL expired".into()));
    }
    // An early refusal from this node's view, before any byte is stored; the committed entry re-checks.
    match app.state().run(&r)? {
        None => return Err(ApiError::NotFound(format!("run {r}"))),
        Some(run) if run.fence > q.fence => {
            return Err(ApiError::Conflict(format!(
                "stale lease on {r}: fencing token {} but the run is held under {}",
                q.fence, run.fence
            )))
        }
        Some(_) => {}
    }
    let limit = app.config.max_artifact_bytes as u64;
    let span = tracing::info_span!("artifact_upload", project = %r.project, build = r.build, run = %r.run, path = %artifact, node = app.cluster.id);
    let _entered = span.enter();
    let counter = app.cluster.metrics.blobs.upload_bytes.clone();
    let body = payload.inspect(move |c| {
        if let Ok(c) = c {
            counter.inc_by(c.len() as u64);
        }
    });
    let stored = store_upload(
        &app.cluster,
        &app.blobs,
        Box::pin(body),
        declared_length(&req)?,
        limit,
    )
    .await?;
    let given_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty() && *t != "application/octet-stream" && t.len() < 200);
    let meta = ArtifactMeta {
        content_type: given_type
            .map(str::to_string)
            .unwrap_or_else(|| content_type(&artifact).to_string()),
        path: artifact,
        size: stored.size,
        sha256: stored.sha256.clone(),
        created: jobserv_raft::state::now_ms(),
    };
    app.cluster
        .propose(Command::PutArtifactBlob {
            run: r,
            fence: q.fence,
            artifact: meta,
            holders: stored.holders.clone(),
        })
        .await?;
    tracing::info!(sha256 = %stored.sha256, size = stored.size, holders = ?stored.holders, "artifact stored");
    Ok(success(json!({
        "sha256": stored.sha256,
        "size": stored.size,
        "holders": stored.holders,
    })))
}

pub fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "txt" | "log" => "text/plain; charset=utf-8",
        "json" => "application/json",
        "xml" => "application/xml",
        "html" => "text/html",
        "yml" | "yaml" => "application/yaml",
        "gz" | "tgz" => "application/gzip",
        "zip" => "application/zip",
        "tar" => "application/x-tar",
        "xz" => "application/x-xz",
        "zst" => "application/zstd",
        _ => "application/octet-stream",
    }
}

pub async fn get_artifact(
    req: HttpRequest,
    app: web::Data<App>,
    path: ArtifactPath,
) -> Result<HttpResponse, ApiError> {
    require_user(&req, app.state())?;
    let (r, artifact) = split(path)?;
    download(&req, &app, &r, &artifact).await
}

/// Artifact `artifact` of run `r` to a caller already authorised (the API's token, the UI's session):
/// Range, ETag, If-None-Match, If-Range, HEAD; from this node, a peer or the object store.
pub async fn download(
    req: &HttpRequest,
    app: &App,
    r: &RunRef,
    artifact: &str,
) -> Result<HttpResponse, ApiError> {
    let (r, artifact) = (r.clone(), artifact.to_string());
    let Some(meta) = app.state().artifact_meta(&r, &artifact)? else {
        // An artifact stored inline before the blob store.
        let bytes = app
            .state()
            .artifact(&r, &artifact)?
            .ok_or_else(|| ApiError::NotFound(format!("artifact {artifact} of run {r}")))?;
        return Ok(HttpResponse::Ok()
            .content_type(content_type(&artifact))
            .body(bytes));
    };
    let etag = format!("\"{}\"", meta.sha256);
    let matches_etag = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches_etag {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish());
    }
    // `If-Range` with another validator: the client's partial copy is of other bytes; send it all.
    let if_range_ok = req
        .headers()
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == etag);
    let requested = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| if_range_ok);
    let byte_range = range::parse(requested, meta.size);
    let mut reply = match range_reply(byte_range, meta.size) {
        Ok(reply) => reply,
        Err(mut unsatisfiable) => {
            return Ok(unsatisfiable.insert_header((header::ETAG, etag)).finish())
        }
    };
    let (_, len) = byte_range.span(meta.size);
    reply
        .insert_header((header::ETAG, etag))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CONTENT_TYPE, meta.content_type.clone()))
        .no_chunking(len);
    if req.method() == actix_web::http::Method::HEAD {
        // Headers only (actix sends no body for HEAD), with the length of what a GET would send.
        return Ok(
            reply.streaming(futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>())
        );
    }
    let stream = serve::open(
        &app.cluster,
        &app.blobs,
        &meta.sha256,
        meta.size,
        byte_range,
    )
    .await
    .map_err(ApiError::Unavailable)?;
    let counter = app.cluster.metrics.blobs.download_bytes.clone();
    Ok(reply.streaming(stream.inspect(move |c| {
        if let Ok(c) = c {
            counter.inc_by(c.len() as u64);
        }
    })))
}

/// The status and `Content-Range` for `byte_range` of a blob of `size` bytes: 200, 206, or (`Err`) 416.
fn range_reply(
    byte_range: ByteRange,
    size: u64,
) -> Result<actix_web::HttpResponseBuilder, actix_web::HttpResponseBuilder> {
    match byte_range {
        ByteRange::Unsatisfiable => {
            let mut b = HttpResponse::RangeNotSatisfiable();
            b.insert_header((header::CONTENT_RANGE, format!("bytes */{size}")));
            Err(b)
        }
        ByteRange::Full => Ok(HttpResponse::Ok()),
        ByteRange::Partial { start, end } => {
            let mut b = HttpResponse::PartialContent();
            b.insert_header((header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}")));
            Ok(b)
        }
    }
}

/// `PUT /raft/blobs/`: a peer streams a blob here (an upload being replicated, or a repair push). The hash
/// is computed here; `X-Blob-Sha256`, when given, must match.
pub async fn receive_blob(
    req: HttpRequest,
    app: web::Data<App>,
    mut payload: web::Payload,
) -> ApiResult {
    super::raft_rpc::check_secret(&req, &app)?;
    let expected = req
        .headers()
        .get(HEADER_BLOB_SHA256)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let limit = app.config.max_artifact_bytes as u64;
    let mut writer = app
        .blobs
        .local
        .writer()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::BadRequest(format!(
                "blob cut off after {} bytes: {e}",
                writer.written()
            ))
        })?;
        if writer.written() + chunk.len() as u64 > limit {
            return Err(ApiError::PayloadTooLarge(format!(
                "blob larger than the limit of {limit} bytes"
            )));
        }
        writer
            .write(chunk)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    let received = writer
        .finish(expected.as_deref())
        .await
        .map_err(|e| match e {
            BlobError::HashMismatch { .. } => ApiError::BadRequest(e.to_string()),
            e => ApiError::Internal(e.to_string()),
        })?;
    Ok(success(
        json!({"sha256": received.sha256, "size": received.size}),
    ))
}

/// `GET /raft/blobs/<sha>`: this node's copy (with `Range`), for a peer that lacks it.
pub async fn send_blob(
    req: HttpRequest,
    app: web::Data<App>,
    sha: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    super::raft_rpc::check_secret(&req, &app)?;
    let sha = sha.into_inner();
    jobserv_raft::state::validate_sha256(&sha).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let size = app
        .blobs
        .local
        .size(&sha)
        .ok_or_else(|| ApiError::NotFound(format!("blob {sha} on node {}", app.cluster.id)))?;
    let byte_range = range::parse(
        req.headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok()),
        size,
    );
    let mut reply = match range_reply(byte_range, size) {
        Ok(reply) => reply,
        Err(mut unsatisfiable) => return Ok(unsatisfiable.finish()),
    };
    let (_, len) = byte_range.span(size);
    let stream = serve::local_stream(&app.blobs, &sha, byte_range, size)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(reply
        .content_type("application/octet-stream")
        .no_chunking(len)
        .streaming(stream))
}
