//! `GET /cluster/backup[?blobs=1]` (admin): the whole replicated state as a backup file
//! (`jobserv_raft::backup`), cut at one applied index on this node after the usual linearizable barrier,
//! so it holds everything acknowledged before the request. The cluster keeps running: the apply lock is
//! held only while the tree is copied into memory. With `blobs=1` every artifact blob the state refers to
//! follows, read from wherever it is (this disk, a peer, the object store).
use crate::app::App;
use crate::auth::require_admin;
use crate::blobs::range::ByteRange;
use crate::error::ApiError;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::StreamExt;
use jobserv_raft::backup::{BackupHeader, BackupWriter, FORMAT_VERSION};
use jobserv_raft::model::BlobRecord;
use jobserv_raft::state::keys;
use std::io::Write;
use tokio::sync::mpsc;

#[derive(serde::Deserialize)]
pub struct BackupQuery {
    #[serde(default)]
    blobs: Option<String>,
}

pub async fn backup(
    req: HttpRequest,
    app: web::Data<App>,
    query: web::Query<BackupQuery>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, app.state())?;
    let with_blobs = matches!(query.blobs.as_deref(), Some("1" | "true" | "yes"));
    let cut = app
        .cluster
        .state_machine
        .cut()
        .await
        .map_err(|e| ApiError::Internal(format!("cutting the state: {e}")))?;
    let applied_index = cut.applied.map(|l| l.index).unwrap_or(0);
    let state_format = app
        .cluster
        .state
        .format_version()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let header = BackupHeader {
        format: FORMAT_VERSION,
        source_node: app.cluster.id,
        applied_index,
        created_ms: jobserv_raft::state::now_ms(),
        state_format,
        pairs: cut.pairs.len() as u64,
        blobs: with_blobs,
        node_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let blobs: Vec<BlobRecord> = if with_blobs {
        cut.pairs
            .iter()
            .filter(|(k, _)| k.starts_with(keys::BLOBS))
            .filter_map(|(_, v)| jobserv_raft::codec::decode::<BlobRecord>(v).ok())
            .collect()
    } else {
        Vec::new()
    };
    tracing::info!(
        applied_index,
        pairs = cut.pairs.len(),
        blobs = blobs.len(),
        "backup started"
    );
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    let handle = tokio::runtime::Handle::current();
    let app = app.into_inner();
    tokio::task::spawn_blocking(move || {
        let out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let result = (|| -> std::io::Result<()> {
            let mut w = BackupWriter::new(out, &header)?;
            w.pairs(&cut.pairs)?;
            drop(cut);
            for blob in &blobs {
                let mut sha = [0u8; 32];
                hex::decode_to_slice(&blob.sha256, &mut sha).map_err(std::io::Error::other)?;
                let mut stream = handle
                    .block_on(crate::blobs::serve::open(
                        &app.cluster,
                        &app.blobs,
                        &blob.sha256,
                        blob.size,
                        ByteRange::Full,
                    ))
                    .map_err(|e| std::io::Error::other(format!("blob {}: {e}", blob.sha256)))?;
                w.blob_start(&sha, blob.size)?;
                let mut written = 0u64;
                while let Some(chunk) = handle.block_on(stream.next()) {
                    let chunk = chunk?;
                    written += chunk.len() as u64;
                    w.blob_bytes(&chunk)?;
                }
                if written != blob.size {
                    return Err(std::io::Error::other(format!(
                        "blob {}: {written} bytes read, {} recorded",
                        blob.sha256, blob.size
                    )));
                }
            }
            w.finish()?.flush()
        })();
        if let Err(e) = result {
            // The client sees a cut-off body: the missing END record makes the file invalid.
            tracing::error!(error = %e, "backup failed");
            let _ = tx.blocking_send(Err(e));
        } else {
            tracing::info!(applied_index, "backup sent");
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("X-JobServ-Backup-Index", applied_index.to_string()))
        .streaming(tokio_stream_from(rx)))
}

const CHUNK: usize = 256 * 1024;

/// A `Write` that hands the response body over in 256 KiB chunks (blocking: runs on a blocking thread).
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

fn tokio_stream_from(
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}
