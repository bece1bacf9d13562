//! A download of a blob, from wherever it is: this node's disk, the object store, or — on a node that lacks
//! it (a wiped node before repair, a node that was down during the upload) — streamed from a peer that
//! holds it. Streaming through (rather than redirecting to the peer) keeps one URL working for the client:
//! behind a load balancer, or from a lab that reaches only one node, other nodes' addresses may not be
//! reachable at all, and a redirect would need its own signed, expiring URL.
use super::range::ByteRange;
use super::transfer;
use super::BlobStore;
use crate::cluster::Cluster;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use jobserv_raft::model::BlobRecord;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// The bytes of `range` of a blob, from the first place that has them.
pub async fn open(
    cluster: &Cluster,
    blobs: &BlobStore,
    sha256: &str,
    size: u64,
    range: ByteRange,
) -> Result<BoxStream<'static, std::io::Result<Bytes>>, String> {
    if let Some(object) = &blobs.object {
        return object
            .get(sha256, range, size)
            .await
            .map_err(|e| e.to_string());
    }
    if blobs.local.size(sha256) == Some(size) {
        return local_stream(blobs, sha256, range, size)
            .await
            .map_err(|e| e.to_string());
    }
    let record = cluster.state.blob(sha256).ok().flatten();
    let mut errors = Vec::new();
    for (node, url) in peers_to_ask(cluster, record.as_ref()) {
        let header = match range {
            ByteRange::Partial { start, end } => Some(format!("bytes={start}-{end}")),
            _ => None,
        };
        match transfer::fetch(
            &blobs.client,
            &url,
            &cluster.secret,
            sha256,
            header.as_deref(),
        )
        .await
        {
            Ok(resp) => return Ok(resp.bytes_stream().map_err(std::io::Error::other).boxed()),
            Err(e) => errors.push(format!("node {node}: {e}")),
        }
    }
    Err(format!(
        "no node holding blob {sha256} answered ({})",
        errors.join("; ")
    ))
}

/// The members to ask for a blob: its recorded holders first, then everyone else (a holder list may be
/// behind a repair).
pub fn peers_to_ask(cluster: &Cluster, record: Option<&BlobRecord>) -> Vec<(u64, String)> {
    let metrics = cluster.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let mut nodes: Vec<(u64, String)> = membership
        .nodes()
        .filter(|(id, _)| **id != cluster.id)
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect();
    let holds = |id: &u64| record.is_some_and(|r| r.holders.contains(id));
    nodes.sort_by_key(|(id, _)| (!holds(id), *id));
    nodes
}

pub async fn local_stream(
    blobs: &BlobStore,
    sha256: &str,
    range: ByteRange,
    size: u64,
) -> std::io::Result<BoxStream<'static, std::io::Result<Bytes>>> {
    let (start, len) = range.span(size);
    let mut file = tokio::fs::File::open(blobs.local.path(sha256)).await?;
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start)).await?;
    }
    Ok(tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 << 10).boxed())
}
