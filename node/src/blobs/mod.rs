//! Artifact bytes: a content-addressed blob store (sha256) beside the Raft state, never in the log.
//!
//! - `local.rs`: blobs on this node's disk (`DATA_DIR/blobs`), written atomically and fsync'd.
//! - `object.rs`: or an object store (S3/GCS/Azure) shared by every node, chosen by `[artifacts] store`.
//! - `upload.rs`: an upload streams to this node's store *and*, at the same time, to the other voters
//!   (`transfer.rs`); it is acknowledged once a majority holds a verified copy and the metadata committed.
//! - `keeper.rs`: per node, in the background: repair (fetch the blobs this node should hold and lacks,
//!   e.g. after its disk was wiped; report holders through Raft) and collection (delete blobs no artifact
//!   refers to, and partial uploads).
//! - `range.rs`: HTTP `Range` on a blob; `serve.rs`: a download from this node, a peer or the object store.
pub mod keeper;
pub mod local;
pub mod object;
pub mod range;
pub mod serve;
pub mod transfer;
pub mod upload;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;

pub use local::{BlobError, LocalBlobs, Received};
pub use object::ObjectBlobs;

/// `[artifacts]` in `node.toml`. Every node of a cluster must name the same store.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArtifactsConfig {
    /// `local` (blobs on the nodes' disks, held by a majority) or an object store URL
    /// (`s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`).
    #[serde(default = "default_store")]
    pub store: String,
    /// Object store options (`aws_endpoint`, `aws_region`, `aws_access_key_id`, `aws_allow_http`, …).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// A blob that no artifact refers to is deleted once it is this old (an upload in flight has
    /// written its blob before its metadata commits; this is how long it has to commit).
    #[serde(default = "default_gc_grace")]
    pub gc_grace_secs: u64,
    /// How often the keeper checks this node's blobs against the state (repair and collection).
    #[serde(default = "default_repair_interval")]
    pub repair_interval_secs: u64,
}

fn default_store() -> String {
    "local".into()
}
fn default_gc_grace() -> u64 {
    3600
}
fn default_repair_interval() -> u64 {
    10
}

impl Default for ArtifactsConfig {
    fn default() -> Self {
        ArtifactsConfig {
            store: default_store(),
            options: BTreeMap::new(),
            gc_grace_secs: default_gc_grace(),
            repair_interval_secs: default_repair_interval(),
        }
    }
}

/// What this node's keeper did last (shown by `/cluster/` and in the metrics).
#[derive(Clone, Debug, Default, Serialize)]
pub struct KeeperStatus {
    /// Milliseconds since the epoch of the last complete pass.
    pub last_pass: Option<u64>,
    /// Blobs referenced by the state.
    pub blobs: u64,
    /// Blobs this node should hold and lacked at the last pass (before repairing them).
    pub missing: u64,
    /// Blobs held by fewer nodes than there are voters.
    pub under_replicated: u64,
    pub repaired: u64,
    pub repaired_bytes: u64,
    pub repair_failures: u64,
    pub collected: u64,
    /// The blob being copied right now, if any.
    pub repairing: Option<String>,
}

pub struct BlobStore {
    /// Always there: the blobs themselves (local store) or the upload spool (object store).
    pub local: LocalBlobs,
    pub object: Option<ObjectBlobs>,
    pub config: ArtifactsConfig,
    /// Node-to-node transfers: no overall timeout (gigabytes take a while); a stalled peer is dropped per
    /// chunk instead (`transfer.rs`).
    pub client: reqwest::Client,
    pub status: Mutex<KeeperStatus>,
}

impl BlobStore {
    pub fn open(
        data_dir: &std::path::Path,
        config: &ArtifactsConfig,
        client: reqwest::Client,
    ) -> Result<BlobStore, BlobError> {
        let local = LocalBlobs::open(&data_dir.join("blobs"))?;
        let object = match config.store.as_str() {
            "local" => None,
            url => Some(ObjectBlobs::open(url, &config.options)?),
        };
        Ok(BlobStore {
            local,
            object,
            config: config.clone(),
            client,
            status: Mutex::new(KeeperStatus::default()),
        })
    }

    /// `local` or the object store's URL.
    pub fn backend(&self) -> &str {
        match &self.object {
            Some(o) => &o.url,
            None => "local",
        }
    }

    pub fn status(&self) -> KeeperStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn update_status(&self, f: impl FnOnce(&mut KeeperStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }
}
