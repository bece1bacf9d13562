//! Blobs between nodes, over the cluster's authenticated HTTPS (`/raft/blobs/`, cluster secret):
//! a **push** streams an upload to a peer while it is still arriving (so replication costs no second
//! pass), and a **fetch** pulls a blob (or a range of it) from a peer that holds it (reads on a node that
//! lacks the blob, and repair). The receiving side always recomputes the hash: a peer's bytes are trusted
//! only if they hash to the address asked for.
use super::local::Received;
use bytes::Bytes;
use jobserv_raft::network::CLUSTER_SECRET_HEADER;
use std::time::Duration;
use tokio::sync::mpsc;

/// Path of the node-to-node blob routes.
pub const BLOB_RPC: &str = "/raft/blobs/";
/// Header carrying the hash the sender expects the receiver to compute (refused on a mismatch).
pub const HEADER_BLOB_SHA256: &str = "X-Blob-Sha256";
/// A peer that accepts no chunk for this long is dropped from the upload (it is repaired later).
const STALL: Duration = Duration::from_secs(30);
/// After the last byte: time for the peer to fsync and answer.
const FINISH: Duration = Duration::from_secs(120);

/// An upload being streamed to one peer.
pub struct PeerPush {
    pub node: u64,
    tx: Option<mpsc::Sender<Result<Bytes, std::io::Error>>>,
    reply: tokio::task::JoinHandle<Result<Received, String>>,
    failed: Option<String>,
}

impl PeerPush {
    pub fn start(client: &reqwest::Client, base_url: &str, secret: &str, node: u64) -> PeerPush {
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
        let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
        let request = client
            .put(format!("{}{BLOB_RPC}", base_url.trim_end_matches('/')))
            .header(CLUSTER_SECRET_HEADER, secret)
            .body(body);
        let reply = tokio::spawn(async move {
            let resp = request.send().await.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                return Err(format!("HTTP {status}: {text}"));
            }
            let v: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
            let data = &v["data"];
            match (data["sha256"].as_str(), data["size"].as_u64()) {
                (Some(sha), Some(size)) => Ok(Received {
                    sha256: sha.to_string(),
                    size,
                }),
                _ => Err(format!("unexpected reply {v}")),
            }
        });
        PeerPush {
            node,
            tx: Some(tx),
            reply,
            failed: None,
        }
    }

    /// Sends one chunk; a peer that fails or stalls is dropped (the upload goes on without it).
    pub async fn send(&mut self, chunk: &Bytes) {
        let Some(tx) = &self.tx else { return };
        match tokio::time::timeout(STALL, tx.send(Ok(chunk.clone()))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => self.fail("the connection closed".into()),
            Err(_) => self.fail(format!("accepted nothing for {}s", STALL.as_secs())),
        }
    }

    fn fail(&mut self, why: String) {
        self.tx = None;
        self.failed.get_or_insert(why);
    }

    pub fn alive(&self) -> bool {
        self.tx.is_some()
    }

    /// Ends the stream and waits for the peer's verdict: the blob it stored.
    pub async fn finish(mut self) -> Result<Received, String> {
        if let Some(why) = self.failed.take() {
            self.reply.abort();
            return Err(why);
        }
        self.tx = None;
        match tokio::time::timeout(FINISH, &mut self.reply).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => {
                self.reply.abort();
                Err(format!(
                    "no answer {}s after the last byte",
                    FINISH.as_secs()
                ))
            }
        }
    }

    /// Abandons the push: the peer sees the body cut off and discards what it received.
    pub fn abort(mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.try_send(Err(std::io::Error::other("upload abandoned")));
        }
        self.reply.abort();
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// `GET /raft/blobs/<sha>` on a peer, with `range` (an HTTP `Range` header value) when given.
pub async fn fetch(
    client: &reqwest::Client,
    base_url: &str,
    secret: &str,
    sha256: &str,
    range: Option<&str>,
) -> Result<reqwest::Response, String> {
    let mut req = client
        .get(format!(
            "{}{BLOB_RPC}{sha256}",
            base_url.trim_end_matches('/')
        ))
        .header(CLUSTER_SECRET_HEADER, secret);
    if let Some(range) = range {
        req = req.header(reqwest::header::RANGE, range);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(resp)
    } else {
        Err(format!("HTTP {}", resp.status()))
    }
}
