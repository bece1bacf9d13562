//! The Raft log and vote on sled, made durable before openraft is told so.
//!
//! sled only flushes on its own every 500 ms, so nothing here trusts its background flush:
//! - `save_vote` flushes before it returns (a vote that is forgotten after a crash breaks Raft safety);
//! - `append` inserts the entries and hands the completion callback to the group-commit flusher thread,
//!   which drains every callback queued so far, calls `flush` once and then completes them all. One fsync
//!   serves every append that arrived while the previous one ran, which is what makes a busy log cheap;
//! - `truncate` and `purge` flush before they return (they are rare).
//!
//! Keys of the log tree are big-endian indexes, values are `codec`-encoded entries.
use crate::codec;
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogReader};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::Arc;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

#[derive(Clone)]
pub struct SledLogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
    stats: Arc<FlushStats>,
}

/// Counters the node exports as metrics: how many fsyncs the log did and how many appends they served.
#[derive(Default)]
pub struct FlushStats {
    pub flushes: std::sync::atomic::AtomicU64,
    pub appends: std::sync::atomic::AtomicU64,
}

fn io_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageError::from_io_error(
        ErrorSubject::Logs,
        verb,
        std::io::Error::other(e.to_string()),
    )
}

fn vote_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageError::from_io_error(
        ErrorSubject::Vote,
        verb,
        std::io::Error::other(e.to_string()),
    )
}

impl SledLogStore {
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        let log = db.open_tree("raft_log")?;
        let meta = db.open_tree("raft_meta")?;
        let stats = Arc::new(FlushStats::default());
        let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        let flush_db = db.clone();
        let flush_stats = stats.clone();
        std::thread::Builder::new()
            .name("raft-log-flusher".into())
            .spawn(move || group_commit_loop(flush_db, rx, flush_stats))
            .map_err(sled::Error::Io)?;
        Ok(SledLogStore {
            db: db.clone(),
            log,
            meta,
            flusher: tx,
            stats,
        })
    }

    pub fn stats(&self) -> Arc<FlushStats> {
        self.stats.clone()
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        match self.meta.get(key).map_err(|e| io_err(ErrorVerb::Read, e))? {
            Some(bytes) => Ok(Some(
                codec::decode(&bytes).map_err(|e| io_err(ErrorVerb::Read, e))?,
            )),
            None => Ok(None),
        }
    }

    fn write_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let bytes = codec::encode(value).map_err(|e| io_err(ErrorVerb::Write, e))?;
        self.meta
            .insert(key, bytes)
            .map_err(|e| io_err(ErrorVerb::Write, e))?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.db
            .flush_async()
            .await
            .map_err(|e| io_err(ErrorVerb::Write, e))?;
        Ok(())
    }
}

/// The group commit: one `flush` completes every append queued before it started.
fn group_commit_loop(
    db: sled::Db,
    rx: mpsc::Receiver<LogFlushed<TypeConfig>>,
    stats: Arc<FlushStats>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let result = db.flush().map(|_| ()).map_err(|e| e.to_string());
        stats.flushes.fetch_add(1, Relaxed);
        stats.appends.fetch_add(waiting.len() as u64, Relaxed);
        for callback in waiting {
            callback.log_io_completed(result.clone().map_err(std::io::Error::other));
        }
    }
}

impl RaftLogReader<TypeConfig> for SledLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for item in self.log.range(start.to_be_bytes()..) {
            let (k, v) = item.map_err(|e| io_err(ErrorVerb::Read, e))?;
            let index = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| io_err(ErrorVerb::Read, std::io::Error::other("bad log key")))?,
            );
            if !range.contains(&index) {
                break;
            }
            out.push(codec::decode(&v).map_err(|e| io_err(ErrorVerb::Read, e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for SledLogStore {
    type LogReader = SledLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.read_meta::<Option<LogId>>(LAST_PURGED)?.flatten();
        let last = match self.log.last().map_err(|e| io_err(ErrorVerb::Read, e))? {
            Some((_, v)) => Some(
                codec::decode::<Entry>(&v)
                    .map_err(|e| io_err(ErrorVerb::Read, e))?
                    .log_id,
            ),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = codec::encode(vote).map_err(|e| vote_err(ErrorVerb::Write, e))?;
        self.meta
            .insert(VOTE, bytes)
            .map_err(|e| vote_err(ErrorVerb::Write, e))?;
        self.db
            .flush_async()
            .await
            .map_err(|e| vote_err(ErrorVerb::Write, e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        match self
            .meta
            .get(VOTE)
            .map_err(|e| vote_err(ErrorVerb::Read, e))?
        {
            Some(bytes) => Ok(Some(
                codec::decode(&bytes).map_err(|e| vote_err(ErrorVerb::Read, e))?,
            )),
            None => Ok(None),
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed on purpose: losing it only means re-applying a few entries after a restart.
        self.write_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(|e| io_err(ErrorVerb::Write, e))?;
            batch.insert(&entry.log_id.index.to_be_bytes(), bytes);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorVerb::Write, e))?;
        if let Err(mpsc::SendError(callback)) = self.flusher.send(callback) {
            // The flusher thread is gone (it only exits when every sender is dropped): flush inline.
            let result = self
                .db
                .flush()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string()));
            callback.log_io_completed(result);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let keys: Vec<_> = self
            .log
            .range(log_id.index.to_be_bytes()..)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| io_err(ErrorVerb::Delete, e))?;
        for k in keys {
            self.log
                .remove(k)
                .map_err(|e| io_err(ErrorVerb::Delete, e))?;
        }
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash half-way leaves extra entries, never a hole.
        self.write_meta(LAST_PURGED, &Some(log_id))?;
        self.flush().await?;
        let keys: Vec<_> = self
            .log
            .range(..=log_id.index.to_be_bytes())
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| io_err(ErrorVerb::Delete, e))?;
        for k in keys {
            self.log
                .remove(k)
                .map_err(|e| io_err(ErrorVerb::Delete, e))?;
        }
        self.flush().await
    }
}

/// Marks the log purged up to `upto` and removes the entries up to it (used when a snapshot is installed;
/// idempotent, and never moves the purge mark backwards).
pub fn purge_upto(db: &sled::Db, upto: LogId) -> Result<(), StorageError> {
    let log = db
        .open_tree("raft_log")
        .map_err(|e| io_err(ErrorVerb::Write, e))?;
    let meta = db
        .open_tree("raft_meta")
        .map_err(|e| io_err(ErrorVerb::Write, e))?;
    let current: Option<LogId> = match meta
        .get(LAST_PURGED)
        .map_err(|e| io_err(ErrorVerb::Read, e))?
    {
        Some(bytes) => {
            codec::decode::<Option<LogId>>(&bytes).map_err(|e| io_err(ErrorVerb::Read, e))?
        }
        None => None,
    };
    if current.is_some_and(|c| c.index >= upto.index) {
        return Ok(());
    }
    let bytes = codec::encode(&Some(upto)).map_err(|e| io_err(ErrorVerb::Write, e))?;
    meta.insert(LAST_PURGED, bytes)
        .map_err(|e| io_err(ErrorVerb::Write, e))?;
    let keys: Vec<_> = log
        .range(..=upto.index.to_be_bytes())
        .keys()
        .collect::<Result<_, _>>()
        .map_err(|e| io_err(ErrorVerb::Delete, e))?;
    for k in keys {
        log.remove(k).map_err(|e| io_err(ErrorVerb::Delete, e))?;
    }
    Ok(())
}
