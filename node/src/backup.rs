//! `jobserv-node backup` and `jobserv-node restore`: the operator's side of `GET /cluster/backup`.
//!
//! - backup: streams the file from any node to `FILE.part`, checks it end to end (the END digest), then
//!   renames it to `FILE`: a file named FILE is always a whole backup.
//! - restore: checks the whole file first (nothing is written from a damaged one), then writes its state
//!   into the EMPTY store of a new cluster's first node as that cluster's first snapshot
//!   (`jobserv_raft::backup::restore_store`), and its blobs into the node's blob store, recorded as held by
//!   that node only (the other nodes' blob keepers copy them over once the cluster runs). Then start the
//!   nodes as usual: the first node starts as the leader and sends the others the snapshot.
use crate::config::NodeConfig;
use jobserv_raft::backup::{BackupHeader, BackupReader, Item};
use jobserv_raft::model::BlobRecord;
use jobserv_raft::state::keys;
use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum BackupCmdError {
    #[error("{0}")]
    Backup(#[from] jobserv_raft::backup::BackupError),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("asking {url}: {message}")]
    Http { url: String, message: String },
    #[error("blob store: {0}")]
    Blobs(String),
    #[error("{0}")]
    Config(String),
}

fn file_err(path: &Path) -> impl Fn(std::io::Error) -> BackupCmdError + '_ {
    move |source| BackupCmdError::File {
        path: path.to_path_buf(),
        source,
    }
}

/// What a backup or restore did.
#[derive(Debug)]
pub struct Summary {
    pub header: BackupHeader,
    pub bytes: u64,
    pub pairs: u64,
    pub blobs: u64,
    pub took: Duration,
}

/// Downloads a backup from `url` (any node) into `to`, checked before it gets its name.
pub async fn backup(
    url: &str,
    client: &reqwest::Client,
    token: &str,
    to: &Path,
    with_blobs: bool,
) -> Result<Summary, BackupCmdError> {
    use futures::StreamExt;
    let start = Instant::now();
    let endpoint = format!(
        "{}/cluster/backup{}",
        url.trim_end_matches('/'),
        if with_blobs { "?blobs=1" } else { "" }
    );
    let http = |message: String| BackupCmdError::Http {
        url: endpoint.clone(),
        message,
    };
    let response = client
        .get(&endpoint)
        .header("Authorization", format!("Token {token}"))
        .timeout(Duration::from_secs(24 * 3600))
        .send()
        .await
        .map_err(|e| http(e.to_string()))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(http(format!("HTTP {status}: {body}")));
    }
    let part = to.with_extension("part");
    let file = std::fs::File::create(&part).map_err(file_err(&part))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut stream = response.bytes_stream();
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| http(format!("cut off after {bytes} bytes: {e}")))?;
        bytes += chunk.len() as u64;
        out.write_all(&chunk).map_err(file_err(&part))?;
    }
    let file = out
        .into_inner()
        .map_err(|e| file_err(&part)(e.into_error()))?;
    file.sync_all().map_err(file_err(&part))?;
    drop(file);
    let (header, pairs, blobs) = verify(&part)?;
    std::fs::rename(&part, to).map_err(file_err(to))?;
    Ok(Summary {
        header,
        bytes,
        pairs,
        blobs,
        took: start.elapsed(),
    })
}

/// Reads a backup file through to its END digest; returns its header and what it holds.
pub fn verify(path: &Path) -> Result<(BackupHeader, u64, u64), BackupCmdError> {
    let file = std::fs::File::open(path).map_err(file_err(path))?;
    let mut reader = BackupReader::open(BufReader::with_capacity(1 << 20, file))?;
    let (mut pairs, mut blobs) = (0u64, 0u64);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match reader.next_item()? {
            Item::Pairs(p) => pairs += p.len() as u64,
            Item::Blob { .. } => {
                blobs += 1;
                while reader.blob_bytes(&mut buf)? > 0 {}
            }
            Item::End => break,
        }
    }
    if pairs != reader.header.pairs {
        return Err(jobserv_raft::backup::BackupError::Damaged(format!(
            "{pairs} pairs where the header says {}",
            reader.header.pairs
        ))
        .into());
    }
    Ok((reader.header.clone(), pairs, blobs))
}

/// Restores `from` into the store of the node `config` describes: its data dir must hold no store yet,
/// and it must be the lowest id of `peers` (the node that would have bootstrapped the new cluster).
pub async fn restore(from: &Path, config: &NodeConfig) -> Result<Summary, BackupCmdError> {
    let start = Instant::now();
    // The whole file is checked before anything is written.
    verify(from)?;
    let mut voters = BTreeMap::new();
    if config.peers.is_empty() {
        voters.insert(
            config.id,
            openraft::BasicNode {
                addr: config.advertise_url.trim_end_matches('/').to_string(),
            },
        );
    } else {
        for p in &config.peers {
            voters.insert(
                p.id,
                openraft::BasicNode {
                    addr: p.url.trim_end_matches('/').to_string(),
                },
            );
        }
    }
    if voters.keys().next() != Some(&config.id) {
        return Err(BackupCmdError::Config(format!(
            "restore on node {} (the lowest id of peers), not on node {}: the others start empty and receive the state from it",
            voters.keys().next().copied().unwrap_or(0),
            config.id
        )));
    }
    let store_dir = config.data_dir.join("raft");
    std::fs::create_dir_all(&config.data_dir).map_err(file_err(&config.data_dir))?;
    let blobs =
        crate::blobs::BlobStore::open(&config.data_dir, &config.artifacts, reqwest::Client::new())
            .map_err(|e| BackupCmdError::Blobs(e.to_string()))?;
    let file = std::fs::File::open(from).map_err(file_err(from))?;
    let mut reader = BackupReader::open(BufReader::with_capacity(1 << 20, file))?;
    let header = reader.header.clone();
    let mut pairs = Vec::with_capacity(header.pairs as usize);
    let mut restored_blobs = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match reader.next_item()? {
            Item::Pairs(p) => pairs.extend(p),
            Item::Blob { sha256, size } => {
                let mut writer = blobs
                    .local
                    .writer()
                    .map_err(|e| BackupCmdError::Blobs(e.to_string()))?;
                loop {
                    let n = reader.blob_bytes(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    writer
                        .write(bytes::Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .map_err(|e| BackupCmdError::Blobs(e.to_string()))?;
                }
                let got = writer
                    .finish(Some(&sha256))
                    .await
                    .map_err(|e| BackupCmdError::Blobs(format!("blob {sha256}: {e}")))?;
                if got.size != size {
                    return Err(BackupCmdError::Blobs(format!(
                        "blob {sha256}: {} bytes written, {size} in the backup",
                        got.size
                    )));
                }
                if let Some(object) = &blobs.object {
                    object
                        .upload_file(&blobs.local.path(&sha256), &sha256)
                        .await
                        .map_err(|e| BackupCmdError::Blobs(format!("blob {sha256}: {e}")))?;
                    let _ = std::fs::remove_file(blobs.local.path(&sha256));
                }
                restored_blobs.push(sha256);
            }
            Item::End => break,
        }
    }
    // Blob records name the nodes that hold each blob: in the new cluster, this node holds what the file
    // brought; blobs left out of the backup are held by nobody here (an object store still has them).
    let restored: std::collections::HashSet<&str> =
        restored_blobs.iter().map(String::as_str).collect();
    for (k, v) in pairs.iter_mut() {
        if !k.starts_with(keys::BLOBS) {
            continue;
        }
        let mut record: BlobRecord = jobserv_raft::codec::decode(v)
            .map_err(|e| jobserv_raft::backup::BackupError::Damaged(format!("blob record: {e}")))?;
        record.holders = if restored.contains(record.sha256.as_str()) && blobs.object.is_none() {
            vec![config.id]
        } else {
            Vec::new()
        };
        *v = jobserv_raft::codec::encode(&record)
            .map_err(|e| BackupCmdError::Blobs(e.to_string()))?;
    }
    let count = pairs.len() as u64;
    let dir = store_dir.clone();
    let index = header.applied_index;
    let leader = config.id;
    tokio::task::spawn_blocking(move || {
        jobserv_raft::backup::restore_store(&dir, pairs, voters, leader, index)
    })
    .await
    .map_err(|e| BackupCmdError::Config(e.to_string()))??;
    Ok(Summary {
        bytes: std::fs::metadata(from).map(|m| m.len()).unwrap_or(0),
        header,
        pairs: count,
        blobs: restored_blobs.len() as u64,
        took: start.elapsed(),
    })
}
