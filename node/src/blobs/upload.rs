//! Storing an upload: the body streams into this node's blob store and, chunk by chunk, to every other
//! voter at once (so a majority holds the blob when the last byte arrives, without a second pass). The
//! result names the nodes that hold a verified copy; the caller commits the metadata only if they are a
//! majority. A body that is cut off or over the limit leaves nothing: this node's partial file is removed
//! by its writer and the peers discard theirs when the stream breaks.
use super::local::{BlobError, Received};
use super::transfer::PeerPush;
use super::BlobStore;
use crate::cluster::Cluster;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use jobserv_raft::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the body is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the upload was cut off after {received} bytes: {reason}")]
    CutOff { received: u64, reason: String },
    #[error("the body has {got} bytes, but Content-Length said {declared}")]
    LengthMismatch { declared: u64, got: u64 },
    #[error("only {held} of the {needed} nodes a majority needs hold the blob ({why})")]
    NoMajority {
        held: usize,
        needed: usize,
        why: String,
    },
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// A blob stored where the cluster needs it.
#[derive(Debug)]
pub struct Stored {
    pub sha256: String,
    pub size: u64,
    /// Nodes holding a verified copy; empty when the object store holds it.
    pub holders: Vec<NodeId>,
}

/// The voters other than this node, with their URLs, and how many holders make a majority.
pub fn replica_targets(cluster: &Cluster) -> (Vec<(NodeId, String)>, usize) {
    let voters = cluster.voter_ids();
    let peers = voters
        .iter()
        .filter(|id| **id != cluster.id)
        .filter_map(|id| Some((*id, cluster.member_url(*id)?)))
        .collect();
    (peers, voters.len().max(1) / 2 + 1)
}

pub async fn store_upload<S, E>(
    cluster: &Cluster,
    blobs: &BlobStore,
    mut body: S,
    declared_len: Option<u64>,
    limit: u64,
) -> Result<Stored, UploadError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    if let Some(len) = declared_len {
        if len > limit {
            return Err(UploadError::TooLarge { limit });
        }
    }
    let (peers, majority) = match blobs.object {
        Some(_) => (Vec::new(), 1),
        None => replica_targets(cluster),
    };
    let mut pushes: Vec<PeerPush> = peers
        .iter()
        .map(|(id, url)| PeerPush::start(&blobs.client, url, &cluster.secret, *id))
        .collect();
    let mut writer = blobs.local.writer()?;
    let abandon = |pushes: Vec<PeerPush>| pushes.into_iter().for_each(PeerPush::abort);
    // Network chunks are gathered to `GATHER` bytes before they fan out (see `local::GATHER`).
    let mut gathered = bytes::BytesMut::new();
    let mut received = 0u64;
    loop {
        let next = body.next().await;
        let piece = match next {
            Some(Ok(c)) => {
                received += c.len() as u64;
                if received > limit {
                    abandon(pushes);
                    return Err(UploadError::TooLarge { limit });
                }
                gathered.extend_from_slice(&c);
                if gathered.len() < super::local::GATHER {
                    continue;
                }
                gathered.split().freeze()
            }
            Some(Err(e)) => {
                abandon(pushes);
                return Err(UploadError::CutOff {
                    received,
                    reason: e.to_string(),
                });
            }
            None if gathered.is_empty() => break,
            None => gathered.split().freeze(),
        };
        // This node's copy and every live peer's get the piece; a failing peer is dropped, not waited for.
        let sends = futures::future::join_all(pushes.iter_mut().map(|p| p.send(&piece)));
        let (local, _) = futures::join!(writer.write(piece.clone()), sends);
        if let Err(e) = local {
            abandon(pushes);
            return Err(e.into());
        }
    }
    if let Some(declared) = declared_len {
        if writer.written() != declared {
            abandon(pushes);
            return Err(UploadError::LengthMismatch {
                declared,
                got: writer.written(),
            });
        }
    }
    let received = writer.finish(None).await?;
    if let Some(object) = &blobs.object {
        // Spooled here; the object store is where it lives.
        let path = blobs.local.path(&received.sha256);
        let uploaded = object.upload_file(&path, &received.sha256).await;
        let _ = std::fs::remove_file(&path);
        uploaded?;
        return Ok(Stored {
            sha256: received.sha256,
            size: received.size,
            holders: Vec::new(),
        });
    }
    let mut holders = vec![cluster.id];
    let mut why = Vec::new();
    let verdicts = futures::future::join_all(pushes.into_iter().map(|p| {
        let node = p.node;
        async move { (node, p.finish().await) }
    }))
    .await;
    let mut failed = Vec::new();
    for (node, verdict) in verdicts {
        match verdict {
            Ok(got) if got == received => holders.push(node),
            Ok(got) => why.push(format!(
                "node {node} stored {} ({} bytes)",
                got.sha256, got.size
            )),
            Err(e) => {
                why.push(format!("node {node}: {e}"));
                failed.push(node);
            }
        }
    }
    // Short of a majority (a peer failed mid-stream): one more try per failed peer, from this node's copy.
    for (node, url) in peers.iter().filter(|(id, _)| failed.contains(id)) {
        if holders.len() >= majority {
            break;
        }
        match push_file(blobs, cluster, *node, url, &received).await {
            Ok(()) => holders.push(*node),
            Err(e) => why.push(format!("node {node} (second try): {e}")),
        }
    }
    if holders.len() < majority {
        tracing::warn!(sha256 = %received.sha256, ?why, "upload not held by a majority");
        return Err(UploadError::NoMajority {
            held: holders.len(),
            needed: majority,
            why: why.join("; "),
        });
    }
    if !why.is_empty() {
        tracing::info!(sha256 = %received.sha256, ?why, "some peers lack the blob; the keeper repairs them");
    }
    holders.sort_unstable();
    Ok(Stored {
        sha256: received.sha256,
        size: received.size,
        holders,
    })
}

/// Streams this node's copy of `blob` to peer `node` (a second try after a failed push).
pub async fn push_file(
    blobs: &BlobStore,
    cluster: &Cluster,
    node: NodeId,
    url: &str,
    blob: &Received,
) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let path = blobs.local.path(&blob.sha256);
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut push = PeerPush::start(&blobs.client, url, &cluster.secret, node);
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        push.send(&Bytes::copy_from_slice(&buf[..n])).await;
        if !push.alive() {
            break;
        }
    }
    match push.finish().await {
        Ok(got) if &got == blob => Ok(()),
        Ok(got) => Err(format!("stored {} ({} bytes)", got.sha256, got.size)),
        Err(e) => Err(e),
    }
}
