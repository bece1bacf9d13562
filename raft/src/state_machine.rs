//! The Raft state machine: applies committed commands to the `State` tree and builds / installs snapshots.
//!
//! Applied state lives in sled, not memory, so a restart does not replay the log from the start: the
//! `last_applied` log id is written in the same atomic batch as each entry's changes. The state tree is
//! not flushed per entry — the log is the durable record, and after a crash openraft re-applies whatever
//! the tree had not persisted. A snapshot build flushes first, because the log is purged behind it.
//!
//! A snapshot is the whole state tree (versioned `codec` blob of key/value pairs) plus its meta. The
//! current snapshot is kept as a file beside the sled directory (written to a temp file, fsync'd, renamed),
//! so that a restarted node can still serve it to a lagging peer. Not in sled: rewriting a growing blob
//! into sled at every snapshot left hundreds of MiB of garbage in its segments.
use crate::codec;
use crate::command::CommandResult;
use crate::state::{keys, State};
use crate::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::Arc;
use tokio::sync::RwLock;

#[derive(Clone)]
pub struct SledStateMachine {
    db: sled::Db,
    state: State,
    snapshot_file: std::path::PathBuf,
    /// Held for writing while applying, for reading while a snapshot copies the tree: a snapshot is a
    /// consistent cut at exactly its `last_applied`.
    apply_lock: Arc<RwLock<()>>,
    /// The last applied log index, for waiters (long-polling check-ins, live log tails).
    applied: Arc<tokio::sync::watch::Sender<u64>>,
}

/// The snapshot blob.
#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageError::from_io_error(
        ErrorSubject::StateMachine,
        verb,
        std::io::Error::other(e.to_string()),
    )
}

fn snap_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageError::from_io_error(
        ErrorSubject::Snapshot(None),
        verb,
        std::io::Error::other(e.to_string()),
    )
}

impl SledStateMachine {
    /// `snapshot_file`: where the current snapshot is kept (outside the sled directory).
    pub fn open(db: &sled::Db, snapshot_file: std::path::PathBuf) -> Result<Self, sled::Error> {
        Ok(SledStateMachine {
            db: db.clone(),
            state: State::new(db.open_tree("state")?),
            snapshot_file,
            apply_lock: Arc::new(RwLock::new(())),
            applied: Arc::new(tokio::sync::watch::channel(0).0),
        })
    }

    /// Writes from now on in the format the cluster agreed on (at start, after a snapshot, after a bump).
    pub fn adopt_agreed_format(&self) -> Result<(), StorageError> {
        let agreed = self
            .state
            .format_version()
            .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let now = codec::set_write_version(agreed);
        if now < agreed {
            tracing::error!(
                agreed,
                writing = now,
                "the cluster writes a storage format this binary cannot read: upgrade this node"
            );
        }
        Ok(())
    }

    /// Wakes whenever entries are applied on this node (value: last applied index).
    pub fn subscribe_applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Read access for the node's handlers.
    pub fn state(&self) -> State {
        self.state.clone()
    }

    fn read_applied(&self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let tree = self.state.tree();
        let last_applied = match tree
            .get(keys::LAST_APPLIED)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
        {
            Some(b) => codec::decode(&b).map_err(|e| sm_err(ErrorVerb::Read, e))?,
            None => None,
        };
        let membership = match tree
            .get(keys::MEMBERSHIP)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
        {
            Some(b) => codec::decode(&b).map_err(|e| sm_err(ErrorVerb::Read, e))?,
            None => StoredMembership::default(),
        };
        Ok((last_applied, membership))
    }

    fn load_current_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        match std::fs::read(&self.snapshot_file) {
            Ok(b) => Ok(Some(
                codec::decode(&b).map_err(|e| snap_err(ErrorVerb::Read, e))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(snap_err(ErrorVerb::Read, e)),
        }
    }

    /// Durably replaces the current snapshot file (temp file, fsync, rename, fsync the directory).
    async fn save_current_snapshot(&self, stored: &StoredSnapshot) -> Result<(), StorageError> {
        use std::io::Write;
        let bytes = codec::encode(stored).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let tmp = self.snapshot_file.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        f.write_all(&bytes)
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        f.sync_all().map_err(|e| snap_err(ErrorVerb::Write, e))?;
        std::fs::rename(&tmp, &self.snapshot_file).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        if let Some(dir) = self.snapshot_file.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        // The state tree the snapshot was taken from, or installed into, must be durable too.
        self.db
            .flush_async()
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        Ok(())
    }
}

fn meta_writes(
    log_id: &LogId,
    membership: Option<&StoredMembership>,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
    let mut out = vec![(
        keys::LAST_APPLIED.to_vec(),
        codec::encode(&Some(*log_id)).map_err(|e| sm_err(ErrorVerb::Write, e))?,
    )];
    if let Some(m) = membership {
        out.push((
            keys::MEMBERSHIP.to_vec(),
            codec::encode(m).map_err(|e| sm_err(ErrorVerb::Write, e))?,
        ));
    }
    Ok(out)
}

impl RaftSnapshotBuilder<TypeConfig> for SledStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let _cut = self.apply_lock.read().await;
        self.db
            .flush_async()
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let (last_applied, membership) = self.read_applied()?;
        let mut pairs = Vec::new();
        for item in self.state.tree().iter() {
            let (k, v) = item.map_err(|e| snap_err(ErrorVerb::Read, e))?;
            pairs.push((k.to_vec(), v.to_vec()));
        }
        let data =
            codec::encode(&SnapshotPayload { pairs }).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, crate::state::now_ms()),
            None => format!("empty-{}", crate::state::now_ms()),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        self.save_current_snapshot(&stored).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for SledStateMachine {
    type SnapshotBuilder = SledStateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        self.read_applied()
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let _write = self.apply_lock.write().await;
        let mut results = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let result = match &entry.payload {
                EntryPayload::Blank => {
                    self.state
                        .apply(log_id.index, None, meta_writes(&log_id, None)?)
                }
                EntryPayload::Normal(cmd) => {
                    self.state
                        .apply(log_id.index, Some(cmd), meta_writes(&log_id, None)?)
                }
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(log_id), m.clone());
                    self.state
                        .apply(log_id.index, None, meta_writes(&log_id, Some(&stored))?)
                }
            };
            results.push(result.map_err(|e| sm_err(ErrorVerb::Write, e))?);
            if let EntryPayload::Normal(crate::Command::SetFormatVersion { .. }) = &entry.payload {
                self.adopt_agreed_format()?;
            }
            self.applied.send_replace(log_id.index);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let _write = self.apply_lock.write().await;
        let data = snapshot.into_inner();
        let payload: SnapshotPayload =
            codec::decode(&data).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let tree = self.state.tree();
        tree.clear().map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let mut batch = sled::Batch::default();
        for (k, v) in payload.pairs {
            batch.insert(k, v);
        }
        // The snapshot's own meta wins over whatever the copied tree said.
        for (k, v) in meta_writes_opt(meta)? {
            batch.insert(k, v);
        }
        tree.apply_batch(batch)
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        self.save_current_snapshot(&StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .await?;
        // openraft purges the log up to the snapshot in a separate step after this returns. A crash in
        // between would leave a log that starts after a hole with no purge mark — which openraft cannot
        // open again. So record the purge here, in the same database, before returning.
        if let Some(last) = meta.last_log_id {
            crate::log_store::purge_upto(&self.db, last)
                .map_err(|e| snap_err(ErrorVerb::Write, e))?;
            self.db
                .flush_async()
                .await
                .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        }
        self.adopt_agreed_format()?;
        if let Some(id) = meta.last_log_id {
            self.applied.send_replace(id.index);
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.load_current_snapshot()?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

fn meta_writes_opt(meta: &SnapshotMeta) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
    Ok(vec![
        (
            keys::LAST_APPLIED.to_vec(),
            codec::encode(&meta.last_log_id).map_err(|e| snap_err(ErrorVerb::Write, e))?,
        ),
        (
            keys::MEMBERSHIP.to_vec(),
            codec::encode(&meta.last_membership).map_err(|e| snap_err(ErrorVerb::Write, e))?,
        ),
    ])
}
