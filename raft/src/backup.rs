//! Backups: a consistent cut of the whole replicated state at one applied index, in a versioned file that
//! `jobserv-node restore` turns into the store of a new cluster's first node.
//!
//! File format (version 1), all integers big-endian:
//! ```text
//! "JOBSERV-BACKUP\n"  u32 format version
//! record*             u8 kind, u64 length, payload
//!   1 HEADER          JSON `BackupHeader`
//!   2 PAIRS           codec-encoded Vec<(key, value)>: state-tree pairs in key order, ≤ ~1 MiB per record
//!   3 BLOB            32-byte sha256, then the blob's bytes (only in backups made with blobs)
//!   255 END           32-byte sha256 of every byte before this record
//! ```
//! The state values are kept exactly as stored (their own `codec` version byte each), so a restore by a
//! newer binary reads them as a node upgraded in place would. The trailing digest makes a truncated or
//! damaged file an error before anything is written.
use crate::codec;
use crate::state::keys;
pub use crate::state_machine::StateCut;
use crate::types::{LogId, NodeId, SnapshotMeta, StoredMembership, Vote};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;

pub const MAGIC: &[u8] = b"JOBSERV-BACKUP\n";
pub const FORMAT_VERSION: u32 = 1;
pub const KIND_HEADER: u8 = 1;
pub const KIND_PAIRS: u8 = 2;
pub const KIND_BLOB: u8 = 3;
pub const KIND_END: u8 = 255;
/// Pairs are grouped into records of about this many bytes.
pub const PAIRS_RECORD_BYTES: usize = 1 << 20;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BackupHeader {
    pub format: u32,
    /// The node that took the cut, and the applied index it was taken at (after a linearizable barrier:
    /// everything acknowledged before the backup began is in it).
    pub source_node: NodeId,
    pub applied_index: u64,
    pub created_ms: u64,
    /// The storage format the source cluster had agreed to write (`m/format`).
    pub state_format: u8,
    pub pairs: u64,
    pub blobs: bool,
    pub node_version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a JobServ backup (no {MAGIC:?} at the start)")]
    NotABackup,
    #[error("backup format {0} is newer than this binary reads ({FORMAT_VERSION}): restore with a newer jobserv-node")]
    FormatTooNew(u32),
    #[error("the backup's state format {0} is newer than this binary reads ({1})")]
    StateFormatTooNew(u8, u8),
    #[error("the backup is damaged or cut off: {0}")]
    Damaged(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("store: {0}")]
    Store(String),
    #[error("the data directory {0} already holds a store: restore only into an empty one (a new cluster's first node, before its first start)")]
    NotEmpty(String),
}

/// Writes records and keeps the running digest the END record carries.
pub struct BackupWriter<W: Write> {
    out: W,
    digest: Sha256,
}

impl<W: Write> BackupWriter<W> {
    pub fn new(mut out: W, header: &BackupHeader) -> std::io::Result<Self> {
        let mut digest = Sha256::new();
        let mut start = MAGIC.to_vec();
        start.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.write_all(&start)?;
        digest.update(&start);
        let mut w = BackupWriter { out, digest };
        let json = serde_json::to_vec(header).map_err(std::io::Error::other)?;
        w.record(KIND_HEADER, &[&json])?;
        Ok(w)
    }

    /// One record whose payload is the concatenation of `parts`.
    pub fn record(&mut self, kind: u8, parts: &[&[u8]]) -> std::io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut head = vec![kind];
        head.extend_from_slice(&(len as u64).to_be_bytes());
        self.out.write_all(&head)?;
        self.digest.update(&head);
        for p in parts {
            self.out.write_all(p)?;
            self.digest.update(p);
        }
        Ok(())
    }

    /// The pairs, in records of about `PAIRS_RECORD_BYTES`.
    pub fn pairs(&mut self, pairs: &[(Vec<u8>, Vec<u8>)]) -> std::io::Result<()> {
        let mut start = 0;
        while start < pairs.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < pairs.len() && (end == start || bytes < PAIRS_RECORD_BYTES) {
                bytes += pairs[end].0.len() + pairs[end].1.len();
                end += 1;
            }
            let chunk = codec::encode_pairs(&pairs[start..end]).map_err(std::io::Error::other)?;
            self.record(KIND_PAIRS, &[&chunk])?;
            start = end;
        }
        Ok(())
    }

    /// A blob's record head (kind, length, sha); the caller then writes its bytes with `blob_bytes`.
    pub fn blob_start(&mut self, sha256: &[u8; 32], size: u64) -> std::io::Result<()> {
        let mut head = vec![KIND_BLOB];
        head.extend_from_slice(&(32 + size).to_be_bytes());
        head.extend_from_slice(sha256);
        self.out.write_all(&head)?;
        self.digest.update(&head);
        Ok(())
    }

    pub fn blob_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)?;
        self.digest.update(bytes);
        Ok(())
    }

    /// The END record; returns the output.
    pub fn finish(mut self) -> std::io::Result<W> {
        let digest: [u8; 32] = self.digest.clone().finalize().into();
        let mut end = vec![KIND_END];
        end.extend_from_slice(&32u64.to_be_bytes());
        end.extend_from_slice(&digest);
        self.out.write_all(&end)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// What a reader meets after the header.
pub enum Item {
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
    /// A blob of `size` bytes: read them with `BackupReader::blob_bytes` before the next item.
    Blob {
        sha256: String,
        size: u64,
    },
    /// The END record, its digest checked.
    End,
}

pub struct BackupReader<R: Read> {
    input: R,
    digest: Sha256,
    blob_left: u64,
    pub header: BackupHeader,
}

impl<R: Read> BackupReader<R> {
    pub fn open(mut input: R) -> Result<Self, BackupError> {
        let mut start = vec![0u8; MAGIC.len() + 4];
        input
            .read_exact(&mut start)
            .map_err(|_| BackupError::NotABackup)?;
        if &start[..MAGIC.len()] != MAGIC {
            return Err(BackupError::NotABackup);
        }
        let version = u32::from_be_bytes(start[MAGIC.len()..].try_into().unwrap_or([0; 4]));
        if version > FORMAT_VERSION {
            return Err(BackupError::FormatTooNew(version));
        }
        let mut digest = Sha256::new();
        digest.update(&start);
        let mut reader = BackupReader {
            input,
            digest,
            blob_left: 0,
            header: BackupHeader {
                format: version,
                source_node: 0,
                applied_index: 0,
                created_ms: 0,
                state_format: 0,
                pairs: 0,
                blobs: false,
                node_version: String::new(),
            },
        };
        let (kind, len) = reader.record_head()?;
        if kind != KIND_HEADER || len > 1 << 20 {
            return Err(BackupError::Damaged(
                "the first record is not the header".into(),
            ));
        }
        let json = reader.payload(len)?;
        reader.header = serde_json::from_slice(&json)
            .map_err(|e| BackupError::Damaged(format!("header: {e}")))?;
        if reader.header.state_format > codec::max_readable() {
            return Err(BackupError::StateFormatTooNew(
                reader.header.state_format,
                codec::max_readable(),
            ));
        }
        Ok(reader)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), BackupError> {
        self.input
            .read_exact(buf)
            .map_err(|e| BackupError::Damaged(format!("cut off: {e}")))?;
        self.digest.update(&*buf);
        Ok(())
    }

    fn record_head(&mut self) -> Result<(u8, u64), BackupError> {
        let mut head = [0u8; 9];
        self.read_exact(&mut head)?;
        let len = u64::from_be_bytes(head[1..].try_into().unwrap_or([0; 8]));
        Ok((head[0], len))
    }

    fn payload(&mut self, len: u64) -> Result<Vec<u8>, BackupError> {
        let mut buf = vec![0u8; len as usize];
        self.read_exact(&mut buf)?;
        Ok(buf)
    }

    pub fn next_item(&mut self) -> Result<Item, BackupError> {
        if self.blob_left > 0 {
            return Err(BackupError::Damaged("a blob's bytes were not read".into()));
        }
        let before_end: [u8; 32] = self.digest.clone().finalize().into();
        let (kind, len) = self.record_head()?;
        match kind {
            KIND_PAIRS => {
                if len > 1 << 32 {
                    return Err(BackupError::Damaged(format!(
                        "a pairs record of {len} bytes"
                    )));
                }
                let bytes = self.payload(len)?;
                let pairs = codec::decode_pairs(&bytes)
                    .map_err(|e| BackupError::Damaged(format!("pairs: {e}")))?;
                Ok(Item::Pairs(pairs))
            }
            KIND_BLOB => {
                if len < 32 {
                    return Err(BackupError::Damaged(
                        "a blob record without its hash".into(),
                    ));
                }
                let sha = self.payload(32)?;
                self.blob_left = len - 32;
                Ok(Item::Blob {
                    sha256: hex::encode(sha),
                    size: len - 32,
                })
            }
            KIND_END => {
                if len != 32 {
                    return Err(BackupError::Damaged(
                        "an END record without a digest".into(),
                    ));
                }
                let mut stated = [0u8; 32];
                self.input
                    .read_exact(&mut stated)
                    .map_err(|e| BackupError::Damaged(format!("cut off: {e}")))?;
                // The digest covers everything before the END record (its kind and length bytes too are
                // after `before_end`): compare with what was computed before reading them.
                if stated != before_end {
                    return Err(BackupError::Damaged(
                        "the digest at the end does not match the contents".into(),
                    ));
                }
                Ok(Item::End)
            }
            other => Err(BackupError::Damaged(format!("unknown record kind {other}"))),
        }
    }

    /// Up to `buf.len()` bytes of the current blob; 0 once it is all read.
    pub fn blob_bytes(&mut self, buf: &mut [u8]) -> Result<usize, BackupError> {
        let n = (buf.len() as u64).min(self.blob_left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.read_exact(&mut buf[..n])?;
        self.blob_left -= n as u64;
        Ok(n)
    }
}

/// Writes restored `pairs` as the whole state of the store in `dir`, which must be empty, as the snapshot
/// of a new cluster whose voters are `voters` and whose first leader is `leader` (this node), then opens
/// it once to check it. The snapshot is at `index` (the source's applied index, for traceability) in term
/// 1; the store also gets a committed vote for `leader` in that term, so the node starts as the leader
/// (openraft restores a leader whose vote is committed) and sends the other, empty, nodes the snapshot. It
/// does not need their votes: they come up as rejoining nodes (an empty store beside a peer that has
/// applied entries), which vote only once caught up.
pub fn restore_store(
    dir: &Path,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    voters: BTreeMap<NodeId, openraft::BasicNode>,
    leader: NodeId,
    index: u64,
) -> Result<LogId, BackupError> {
    let store_err = |e: &dyn std::fmt::Display| BackupError::Store(e.to_string());
    let (_log, sm) = crate::open_store(dir).map_err(|e| store_err(&e))?;
    let facts = sm.facts(false).map_err(|e| store_err(&e))?;
    if facts.last_applied.is_some()
        || facts.last.is_some()
        || facts.last_purged.is_some()
        || facts.snapshot.flatten().is_some()
        || facts.vote.is_some()
    {
        return Err(BackupError::NotEmpty(dir.display().to_string()));
    }
    let log_id = LogId::new(openraft::CommittedLeaderId::new(1, leader), index.max(1));
    let ids: BTreeSet<NodeId> = voters.keys().copied().collect();
    let membership = openraft::Membership::new(vec![ids], voters);
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), membership),
        snapshot_id: format!("restore-{}-{}", log_id.index, crate::state::now_ms()),
    };
    // The source's own applied index and membership are replaced by the snapshot's meta.
    let pairs: Vec<_> = pairs
        .into_iter()
        .filter(|(k, _)| k != keys::LAST_APPLIED && k != keys::MEMBERSHIP)
        .collect();
    sm.write_restored_snapshot(meta, pairs)
        .map_err(|e| store_err(&e))?;
    // Installed exactly as a crash-interrupted snapshot install is completed on open.
    sm.reinstall_from_file().map_err(|e| store_err(&e))?;
    let vote = Vote::new_committed(1, leader);
    sm.link().write_vote(&vote).map_err(|e| store_err(&e))?;
    // The checks a node's start makes (`open_store`), on what was just written.
    let facts = sm.facts(true).map_err(|e| store_err(&e))?;
    if let Some(problem) = crate::log_store::find_inconsistency(&facts) {
        return Err(BackupError::Store(format!("after the restore: {problem}")));
    }
    facts
        .last_applied
        .ok_or_else(|| BackupError::Store("nothing applied after the restore".into()))
}
