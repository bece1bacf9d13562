//! The Raft log and vote on sled, made durable before openraft is told so, and the invariants that tie the
//! log to the state machine of the same store.
//!
//! sled only flushes on its own every 500 ms, so nothing here trusts its background flush:
//! - `save_vote` flushes before it returns (a vote that is forgotten after a crash breaks Raft safety);
//! - `append` inserts the entries and hands the completion callback to the group-commit flusher thread,
//!   which drains every callback queued so far, calls `flush` once and then completes them all. One fsync
//!   serves every append that arrived while the previous one ran, which is what makes a busy log cheap;
//! - `truncate` flushes before it returns and removes its entries in one atomic sled batch, so a crash
//!   never leaves a gap inside the log;
//! - `purge` returns at once: openraft awaits it inside RaftCore, and removing some 20,000 entries after
//!   each snapshot held the Raft thread 135–782 ms (no heartbeats sent or answered: elections nobody
//!   caused). The log-purger thread does it (`StoreLink::purge_durably`): mark first, then the entries from
//!   the oldest up, then a flush. Until then reads treat everything up to the requested mark as gone; a
//!   crash meanwhile leaves entries at or below the mark at the bottom of the log, which the next open
//!   removes (never a gap).
//!
//! The purge mark (`last_purged`) says "everything up to here is in the state machine". It is only ever
//! written once the state machine durably holds that much (`StoreLink::purge_durably`). openraft does not
//! order things that way on a follower: when a snapshot arrives, RaftCore *forwards* the install to the state
//! machine worker and runs `PurgeLog` right away (openraft `core/raft_core.rs`, `Command::StateMachine` then
//! `Command::PurgeLog`, neither waiting for the other), and may append the leader's next entries while the
//! install is still running. Recording that purge at once, and those entries, let a crash leave a log
//! purged up to the snapshot over an empty state machine — which the restarted node then followed from
//! index 0 (issue 9). So, while a snapshot is being received or installed, a purge beyond what the state
//! machine holds is left to the install (which records it once its state is durable), and appends wait for
//! the install to finish.
//!
//! Keys of the log tree are big-endian indexes. A value is the `codec`-encoded entry itself when it is
//! small (`INLINE_BODY_MAX`), else an `EntryRef` to its body in a segment file (`entry_files`: sled
//! rewrote large values over and over).
use crate::codec;
use crate::entry_files::{EntryFiles, EntryRef};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogIdOptionExt, LogState, OptionalSend, RaftLogReader};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const LOG_TREE: &str = "raft_log";
pub(crate) const META_TREE: &str = "raft_meta";
const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// Entries up to this size stay inline in the log tree: sled handles small values well, and a round of
/// small entries then costs one fsync (sled's) instead of two (a segment's, then sled's): with every body
/// in a segment, `cluster-test bench-commit` lost 10–20 %.
const INLINE_BODY_MAX: usize = 4 << 10;

/// How long an append waits for a snapshot install it depends on before it gives up with an error.
const INSTALL_WAIT_LIMIT: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct SledLogStore {
    link: Arc<StoreLink>,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
    /// The log-purger thread's queue (`StoreLink::purge_durably`).
    purger: mpsc::Sender<LogId>,
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

fn msg_err(verb: ErrorVerb, msg: String) -> StorageError {
    StorageError::from_io_error(ErrorSubject::Logs, verb, std::io::Error::other(msg))
}

/// What the state machine tells the log store (see `StoreLink`).
#[derive(Clone, Debug, Default)]
pub(crate) struct SmProgress {
    /// The last index the state machine holds (applied or installed); not necessarily flushed yet.
    pub(crate) applied: Option<u64>,
    /// A snapshot is being received or installed (`begin_receiving_snapshot` until the install is done).
    pub(crate) receiving: bool,
    /// The last index of a snapshot whose file is durable (an install's first durable step: from then on a
    /// crash is repaired on open by installing the file again).
    pub(crate) snapshot_durable: Option<u64>,
    /// Applying or installing failed: whoever waits for the state machine stops waiting.
    pub(crate) failed: Option<String>,
}

/// What the log store and the state machine of one store share: the database and the log trees, the state
/// machine's progress, and the purge that waits for an install.
pub(crate) struct StoreLink {
    pub(crate) db: sled::Db,
    pub(crate) log: sled::Tree,
    pub(crate) meta: sled::Tree,
    /// The entries' bodies (the log tree holds refs to them).
    pub(crate) entries: EntryFiles,
    /// Serialises the writers of the purge mark: RaftCore's `purge` and the state machine's install.
    purge_lock: std::sync::Mutex<()>,
    sm: tokio::sync::watch::Sender<SmProgress>,
    /// A purge openraft asked for beyond what the state machine held, while a snapshot was being installed.
    deferred_purge: std::sync::Mutex<Option<LogId>>,
    /// The highest purge handed to the log-purger thread: reads treat entries up to it as gone, whether
    /// the thread has removed them yet or not.
    purging: std::sync::Mutex<Option<LogId>>,
}

impl StoreLink {
    /// `entries_dir` holds the segment files of the entries' bodies. Also returns a ref of the newest
    /// segments whose body did not read back whole (see `entry_files`), for `open_store` to deal with.
    pub(crate) fn open(
        db: &sled::Db,
        entries_dir: &Path,
    ) -> Result<(Arc<Self>, Option<EntryRef>), sled::Error> {
        let log = db.open_tree(LOG_TREE)?;
        let mut live = Vec::new();
        for value in log.iter().values() {
            let value = value?;
            if let Some(r) = EntryRef::decode(&value).map_err(|e| {
                sled::Error::Io(std::io::Error::other(format!("log entry ref: {e}")))
            })? {
                live.push(r);
            }
        }
        let (entries, lost_body) = EntryFiles::open(entries_dir, live)?;
        let link = Arc::new(StoreLink {
            db: db.clone(),
            log,
            meta: db.open_tree(META_TREE)?,
            entries,
            purge_lock: std::sync::Mutex::new(()),
            sm: tokio::sync::watch::channel(SmProgress::default()).0,
            deferred_purge: std::sync::Mutex::new(None),
            purging: std::sync::Mutex::new(None),
        });
        Ok((link, lost_body))
    }

    pub(crate) fn sm_applied(&self, index: u64) {
        self.sm
            .send_modify(|p| p.applied = p.applied.max(Some(index)));
    }

    pub(crate) fn sm_receiving(&self) {
        self.sm.send_modify(|p| p.receiving = true);
    }

    pub(crate) fn sm_snapshot_durable(&self, index: u64) {
        self.sm
            .send_modify(|p| p.snapshot_durable = p.snapshot_durable.max(Some(index)));
    }

    /// The install up to `index` is durable, its purge mark recorded.
    pub(crate) fn sm_installed(&self, index: Option<u64>) {
        self.sm.send_modify(|p| {
            p.applied = p.applied.max(index);
            p.receiving = false;
        });
        let mut deferred = self.deferred_purge.lock().unwrap();
        if deferred.is_some_and(|d| Some(d.index) <= index) {
            *deferred = None;
        }
    }

    pub(crate) fn sm_failed(&self, why: String) {
        self.sm.send_modify(|p| p.failed = Some(why));
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

    pub(crate) fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(LAST_PURGED)?.flatten())
    }

    /// Writes and flushes a vote outside openraft (a restore's first vote, before the node starts).
    pub(crate) fn write_vote(&self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = codec::encode(vote).map_err(|e| vote_err(ErrorVerb::Write, e))?;
        self.meta
            .insert(VOTE, bytes)
            .map_err(|e| vote_err(ErrorVerb::Write, e))?;
        self.db.flush().map_err(|e| vote_err(ErrorVerb::Write, e))?;
        Ok(())
    }

    pub(crate) fn read_vote(&self) -> Result<Option<Vote>, StorageError> {
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

    pub(crate) fn read_committed(&self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    /// Overwrites the (unflushed, advisory) committed log id; used by the repair on open.
    pub(crate) fn set_committed(&self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.write_meta(COMMITTED, &committed)
    }

    /// The entry a log tree value stands for: read through its ref, or decoded in place.
    fn decode_entry(&self, v: &[u8]) -> Result<Entry, StorageError> {
        let read = match EntryRef::decode(v).map_err(|e| io_err(ErrorVerb::Read, e))? {
            Some(r) => {
                let body = self
                    .entries
                    .read(&r)
                    .map_err(|e| io_err(ErrorVerb::Read, e))?;
                codec::decode::<Entry>(&body)
            }
            None => codec::decode::<Entry>(v),
        };
        read.map_err(|e| io_err(ErrorVerb::Read, e))
    }

    /// The log id a log tree value stands for, without reading a body.
    fn decode_log_id(v: &[u8]) -> Result<LogId, StorageError> {
        match EntryRef::decode(v).map_err(|e| io_err(ErrorVerb::Read, e))? {
            Some(r) => Ok(r.log_id),
            None => Ok(codec::decode::<Entry>(v)
                .map_err(|e| io_err(ErrorVerb::Read, e))?
                .log_id),
        }
    }

    /// The size of the entry a log tree value stands for.
    fn entry_len(v: &[u8]) -> usize {
        match EntryRef::decode(v) {
            Ok(Some(r)) => r.len as usize,
            _ => v.len(),
        }
    }

    /// The log id of the entry at `index`, if the log has one.
    pub(crate) fn entry_at(&self, index: u64) -> Result<Option<LogId>, StorageError> {
        match self
            .log
            .get(index.to_be_bytes())
            .map_err(|e| io_err(ErrorVerb::Read, e))?
        {
            Some(v) => Ok(Some(Self::decode_log_id(&v)?)),
            None => Ok(None),
        }
    }

    fn first_and_last(&self) -> Result<(Option<LogId>, Option<LogId>), StorageError> {
        let first = match self.log.first().map_err(|e| io_err(ErrorVerb::Read, e))? {
            Some((_, v)) => Some(Self::decode_log_id(&v)?),
            None => None,
        };
        let last = match self.log.last().map_err(|e| io_err(ErrorVerb::Read, e))? {
            Some((_, v)) => Some(Self::decode_log_id(&v)?),
            None => None,
        };
        Ok((first, last))
    }

    /// The first gap between the first and the last entry (a scan of the keys): the first missing index
    /// and the first index present after it.
    fn first_gap(&self) -> Result<Option<(u64, u64)>, StorageError> {
        let mut expected: Option<u64> = None;
        for k in self.log.iter().keys() {
            let k = k.map_err(|e| io_err(ErrorVerb::Read, e))?;
            let index = key_index(&k)?;
            if let Some(want) = expected {
                if index != want {
                    return Ok(Some((want, index)));
                }
            }
            expected = Some(index + 1);
        }
        Ok(None)
    }

    /// Raises the purge mark to `upto` (never lowers it) and removes every entry at or below the mark, in
    /// one batch. The mark is written first: a crash in between leaves entries at or below it, which the
    /// next open removes. Not flushed; callers flush.
    pub(crate) fn record_purge(&self, upto: LogId) -> Result<(), StorageError> {
        let _one_writer = self.purge_lock.lock().unwrap();
        let mark = self.raise_purge_mark(upto)?;
        let mut batch = sled::Batch::default();
        for k in self.log.range(..=mark.index.to_be_bytes()).keys() {
            batch.remove(k.map_err(|e| io_err(ErrorVerb::Delete, e))?);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorVerb::Delete, e))
    }

    /// The purge mark raised to `upto`, never lowered; the mark now. The caller holds `purge_lock`.
    fn raise_purge_mark(&self, upto: LogId) -> Result<LogId, StorageError> {
        match self.last_purged()? {
            Some(current) if current.index >= upto.index => Ok(current),
            _ => {
                self.write_meta(LAST_PURGED, &Some(upto))?;
                Ok(upto)
            }
        }
    }

    /// Reads from now on treat entries up to `upto` as purged (`SledLogStore::purge`).
    fn begin_purge(&self, upto: LogId) {
        let mut purging = self.purging.lock().unwrap();
        if purging.is_none_or(|p| p.index < upto.index) {
            *purging = Some(upto);
        }
    }

    /// The first index a read may return: above the purge mark and above a purge in progress.
    fn first_readable(&self) -> Result<u64, StorageError> {
        Ok(self.purged_upto()?.next_index())
    }

    /// The purge mark, or the purge in progress if it is higher.
    fn purged_upto(&self) -> Result<Option<LogId>, StorageError> {
        let purging = *self.purging.lock().unwrap();
        Ok(later(self.last_purged()?, purging))
    }

    /// Removes every entry from `index` on, in one batch. Not flushed; callers flush.
    pub(crate) fn remove_from(&self, index: u64) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for k in self.log.range(index.to_be_bytes()..).keys() {
            batch.remove(k.map_err(|e| io_err(ErrorVerb::Delete, e))?);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorVerb::Delete, e))
    }

    /// Bodies first, then the refs to them: what this returns durable has both halves.
    fn sync_appended(&self) -> std::io::Result<()> {
        self.entries.sync()?;
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.db
            .flush_async()
            .await
            .map_err(|e| io_err(ErrorVerb::Write, e))?;
        Ok(())
    }

    /// Purges up to `upto` once the state machine's state up to there is durable: flush (the state tree
    /// lives in the same database), raise the mark, remove the entries from the oldest up (plain removes:
    /// no sled batch, which would hold sled's global write lock, and with it every other writer of this
    /// node, for the whole range), flush, delete the segment files no entry needs. Runs on the log-purger
    /// thread; a crash part-way leaves entries at or below the mark at the bottom of the log, which the
    /// next open removes.
    pub(crate) fn purge_durably(&self, upto: LogId) -> Result<(), StorageError> {
        let started = Instant::now();
        let _one_writer = self.purge_lock.lock().unwrap();
        self.flush_blocking()?;
        let mark = self.raise_purge_mark(upto)?;
        let mut removed = 0u64;
        for k in self.log.range(..=mark.index.to_be_bytes()).keys() {
            let k = k.map_err(|e| io_err(ErrorVerb::Delete, e))?;
            self.log
                .remove(k)
                .map_err(|e| io_err(ErrorVerb::Delete, e))?;
            removed += 1;
        }
        self.flush_blocking()?;
        self.forget_purged_bodies()?;
        tracing::debug!(
            %upto,
            removed,
            took_ms = started.elapsed().as_millis() as u64,
            "log purged"
        );
        Ok(())
    }

    fn flush_blocking(&self) -> Result<(), StorageError> {
        self.db.flush().map_err(|e| io_err(ErrorVerb::Write, e))?;
        Ok(())
    }

    /// Deletes the segment files every one of whose bodies is purged; only once the purge is durable (a
    /// crash before must not leave refs to deleted files).
    pub(crate) fn forget_purged_bodies(&self) -> Result<(), StorageError> {
        if let Some(purged) = self.last_purged()? {
            self.entries
                .forget_through(purged.index)
                .map_err(|e| io_err(ErrorVerb::Delete, e))?;
        }
        Ok(())
    }

    /// What the log side of the store holds, for `find_inconsistency`. `scan` also looks for gaps inside
    /// the log (reads every key; done on open).
    pub(crate) fn log_facts(
        &self,
        last_applied: Option<LogId>,
        scan: bool,
    ) -> Result<StoreFacts, StorageError> {
        // Not half-way through a purge (entries at or below the mark are what an interrupted one leaves).
        let _no_purge_running = self.purge_lock.lock().unwrap();
        let (first, last) = self.first_and_last()?;
        Ok(StoreFacts {
            vote: self.read_vote()?,
            committed: self.read_committed()?,
            last_purged: self.last_purged()?,
            first,
            last,
            gap: if scan { self.first_gap()? } else { None },
            at_applied: match last_applied {
                Some(la) => self.entry_at(la.index)?,
                None => None,
            },
            last_applied,
            snapshot: None,
        })
    }
}

fn key_index(k: &[u8]) -> Result<u64, StorageError> {
    Ok(u64::from_be_bytes(k.try_into().map_err(|_| {
        io_err(ErrorVerb::Read, std::io::Error::other("bad log key"))
    })?))
}

impl SledLogStore {
    pub(crate) fn open(link: Arc<StoreLink>) -> Result<Self, sled::Error> {
        let stats = Arc::new(FlushStats::default());
        let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        let flush_link = link.clone();
        let flush_stats = stats.clone();
        std::thread::Builder::new()
            .name("raft-log-flusher".into())
            .spawn(move || group_commit_loop(flush_link, rx, flush_stats))
            .map_err(sled::Error::Io)?;
        let (purger, purges) = mpsc::channel::<LogId>();
        let purge_link = link.clone();
        std::thread::Builder::new()
            .name("raft-log-purger".into())
            .spawn(move || purge_loop(purge_link, purges))
            .map_err(sled::Error::Io)?;
        Ok(SledLogStore {
            link,
            flusher: tx,
            purger,
            stats,
        })
    }

    pub fn stats(&self) -> Arc<FlushStats> {
        self.stats.clone()
    }

    /// If a purge was left to a snapshot install, waits until that install's snapshot file is durable, so
    /// that no entry after the snapshot point reaches the disk before something that explains it: from
    /// then on `open_store` completes an interrupted install from the file. The install itself (decode,
    /// then the file) normally finishes long before the leader sends entries: it only does so once its
    /// install RPC has answered or timed out (`install_snapshot_timeout`).
    async fn wait_for_pending_install(&self) -> Result<(), StorageError> {
        let Some(pending) = *self.link.deferred_purge.lock().unwrap() else {
            return Ok(());
        };
        let mut rx = self.link.sm.subscribe();
        let started = Instant::now();
        loop {
            {
                let p = rx.borrow_and_update();
                if let Some(why) = &p.failed {
                    return Err(msg_err(
                        ErrorVerb::Write,
                        format!("not appending after snapshot {pending}: the state machine failed: {why}"),
                    ));
                }
                if p.applied >= Some(pending.index) || p.snapshot_durable >= Some(pending.index) {
                    break;
                }
            }
            match tokio::time::timeout(Duration::from_secs(30), rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(msg_err(
                        ErrorVerb::Write,
                        format!("not appending after snapshot {pending}: the state machine is gone"),
                    ))
                }
                Err(_) if started.elapsed() < INSTALL_WAIT_LIMIT => {
                    tracing::warn!(
                        snapshot = %pending,
                        waited_s = started.elapsed().as_secs(),
                        "appending entries waits for the snapshot install before them"
                    );
                }
                Err(_) => {
                    return Err(msg_err(
                        ErrorVerb::Write,
                        format!(
                            "not appending after snapshot {pending}: its install did not finish within {} s",
                            INSTALL_WAIT_LIMIT.as_secs()
                        ),
                    ))
                }
            }
        }
        // The purge mark itself is recorded by the install, once the state it stands for is durable.
        Ok(())
    }
}

/// The group commit: one sync of the bodies, then one sled `flush` (the refs), complete every append
/// queued before it started.
fn group_commit_loop(
    link: Arc<StoreLink>,
    rx: mpsc::Receiver<LogFlushed<TypeConfig>>,
    stats: Arc<FlushStats>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let result = link.sync_appended().map_err(|e| e.to_string());
        stats.flushes.fetch_add(1, Relaxed);
        stats.appends.fetch_add(waiting.len() as u64, Relaxed);
        for callback in waiting {
            callback.log_io_completed(result.clone().map_err(std::io::Error::other));
        }
    }
}

/// The log-purger thread: the highest purge queued, one at a time. It ends with the last `SledLogStore`.
fn purge_loop(link: Arc<StoreLink>, purges: mpsc::Receiver<LogId>) {
    while let Ok(mut upto) = purges.recv() {
        while let Ok(more) = purges.try_recv() {
            if more.index > upto.index {
                upto = more;
            }
        }
        if let Err(e) = link.purge_durably(upto) {
            // Reads already skip these entries; the next purge retries from the same mark.
            tracing::error!(%upto, error = %e, "log purge failed");
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
        }
        .max(self.link.first_readable()?);
        let mut out = Vec::new();
        for item in self.link.log.range(start.to_be_bytes()..) {
            let (k, v) = item.map_err(|e| io_err(ErrorVerb::Read, e))?;
            let index = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| io_err(ErrorVerb::Read, std::io::Error::other("bad log key")))?,
            );
            if !range.contains(&index) {
                break;
            }
            out.push(self.link.decode_entry(&v)?);
        }
        Ok(out)
    }

    /// What one AppendEntries carries: entries from `start` until `MAX_APPEND_BYTES` (at least one
    /// entry, at most `max_payload_entries`). openraft gives each AppendEntries the heartbeat interval to
    /// cross and be stored; an entry count alone let a log flood of 64 KiB console chunks (32 of them, or
    /// 32 of 1 MiB once) miss that again and again, and followers trailed the leader for good.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let start = start.max(self.link.first_readable()?);
        for item in self.link.log.range(start.to_be_bytes()..end.to_be_bytes()) {
            let (_, v) = item.map_err(|e| io_err(ErrorVerb::Read, e))?;
            let len = StoreLink::entry_len(&v);
            if !out.is_empty() && bytes + len > MAX_APPEND_BYTES {
                break;
            }
            bytes += len;
            out.push(self.link.decode_entry(&v)?);
        }
        Ok(out)
    }
}

/// The later of two log ids (by index); `None` is before every id.
fn later(a: Option<LogId>, b: Option<LogId>) -> Option<LogId> {
    std::cmp::max_by_key(a, b, |id| id.map(|i| i.index))
}

/// The byte budget of one AppendEntries (see `limited_get_log_entries`): 4 console chunks of 64 KiB, which a
/// follower on a loaded 2-core machine receives and fsyncs well inside the 100 ms heartbeat interval, and
/// small enough that a new leader's binary-search probes (each one a full batch, see `raft_config`) cost
/// little.
pub const MAX_APPEND_BYTES: usize = 256 << 10;

impl RaftLogStorage<TypeConfig> for SledLogStore {
    type LogReader = SledLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged = self.link.purged_upto()?;
        let last = match self
            .link
            .log
            .last()
            .map_err(|e| io_err(ErrorVerb::Read, e))?
        {
            // Entries at or below a purge in progress may still be stored.
            Some((_, v)) => later(Some(StoreLink::decode_log_id(&v)?), last_purged),
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
        self.link
            .meta
            .insert(VOTE, bytes)
            .map_err(|e| vote_err(ErrorVerb::Write, e))?;
        self.link
            .db
            .flush_async()
            .await
            .map_err(|e| vote_err(ErrorVerb::Write, e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.link.read_vote()
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed on purpose: losing it only means re-applying a few entries after a restart.
        self.link.write_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.link.read_committed()
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
        self.wait_for_pending_install().await?;
        // Large bodies to the segment files (not yet synced: the group commit syncs them before it flushes
        // the refs), then each entry into the tree. Plain inserts, not one sled batch: a batch costs two
        // writes of sled's log of its own (its manifest alone, and what was buffered before it), each with a
        // `sync_file_range`, and an append needs no atomicity. In index order, so a crash before the group
        // commit leaves a prefix of them, never a gap (sled's recovery stops at the first torn message of
        // its log, `LogIter::next`); none of them was acknowledged yet.
        for entry in entries {
            let body = codec::encode(&entry).map_err(|e| io_err(ErrorVerb::Write, e))?;
            let value = if body.len() <= INLINE_BODY_MAX {
                body
            } else {
                let r = self
                    .link
                    .entries
                    .append(entry.log_id, &body)
                    .map_err(|e| io_err(ErrorVerb::Write, e))?;
                r.encode().map_err(|e| io_err(ErrorVerb::Write, e))?
            };
            self.link
                .log
                .insert(entry.log_id.index.to_be_bytes(), value)
                .map_err(|e| io_err(ErrorVerb::Write, e))?;
        }
        if let Err(mpsc::SendError(callback)) = self.flusher.send(callback) {
            // The flusher thread is gone (it only exits when every sender is dropped): flush inline.
            let result = self.link.sync_appended();
            callback.log_io_completed(result);
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // One batch: removing entries one by one left a gap inside the log when a crash came half-way.
        self.link.remove_from(log_id.index)?;
        self.link.flush().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let sm = self.link.sm.borrow().clone();
        if sm.receiving && sm.applied < Some(log_id.index) {
            // openraft purges up to a snapshot it has only handed to the state machine worker. Recording
            // it now would put the purge mark ahead of a state machine that may not have the snapshot when
            // we crash; the install records it once its state is durable, and appends wait for that.
            tracing::info!(
                upto = %log_id,
                applied = ?sm.applied,
                "purge up to a snapshot still being installed: left to the install"
            );
            let mut deferred = self.link.deferred_purge.lock().unwrap();
            if deferred.is_none_or(|d| d.index < log_id.index) {
                *deferred = Some(log_id);
            }
            return Ok(());
        }
        self.link.begin_purge(log_id);
        if let Err(mpsc::SendError(upto)) = self.purger.send(log_id) {
            // The purger thread is gone (it only exits when every sender is dropped): purge inline.
            self.link.purge_durably(upto)?;
        }
        Ok(())
    }
}

/// What one store holds, as far as the invariants between its parts go (see `find_inconsistency`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreFacts {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub last_purged: Option<LogId>,
    /// The first and the last entry of the log.
    pub first: Option<LogId>,
    pub last: Option<LogId>,
    /// The first gap between `first` and `last`, when looked for: (first missing index, next present).
    pub gap: Option<(u64, u64)>,
    /// The log's own entry at the index of `last_applied`, if it has one.
    pub at_applied: Option<LogId>,
    /// The state machine's last applied log id.
    pub last_applied: Option<LogId>,
    /// The snapshot file: `None` without one, else its last log id.
    pub snapshot: Option<Option<LogId>>,
}

fn show(id: &Option<LogId>) -> String {
    match id {
        Some(id) => format!("{id}"),
        None => "nothing".into(),
    }
}

fn show_vote(vote: &Option<Vote>) -> String {
    match vote {
        Some(v) => format!("{v} (term {})", v.leader_id.term),
        None => "absent".into(),
    }
}

/// A broken invariant of the store, naming what was found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Inconsistency {
    #[error("the body of log entry {index} did not survive (its segment file lost it) but the state machine has applied {}: it was acknowledged as durable", show(last_applied))]
    EntryBodyLost {
        index: u64,
        last_applied: Option<LogId>,
    },
    #[error("log entries {first}..={upto} are still stored at or below the purge mark {last_purged} (a purge was interrupted)")]
    EntriesAtOrBelowPurged {
        first: u64,
        upto: u64,
        last_purged: LogId,
    },
    #[error("the log holds entries {first}..={last} but {first_missing}..{resume} are missing (the state machine has applied {}: {})", show(last_applied), if last_applied.map(|l| l.index + 1) >= Some(*resume) { "an install's purge was not recorded" } else { "a truncation was interrupted" })]
    GapInLog {
        first: u64,
        last: u64,
        first_missing: u64,
        resume: u64,
        last_applied: Option<LogId>,
    },
    #[error("{what} is {log_id}, of term {}, but the stored vote is {}: the vote was lost", log_id.leader_id.term, show_vote(vote))]
    VoteBehind {
        what: &'static str,
        log_id: LogId,
        vote: Option<Vote>,
    },
    #[error("the state machine has applied {last_applied} but the log's entry at index {} is {in_log}", last_applied.index)]
    AppliedConflictsWithLog { last_applied: LogId, in_log: LogId },
    #[error("the snapshot file is at {snapshot} but the state machine has applied only {} (an install was interrupted)", show(last_applied))]
    SnapshotAheadOfState {
        snapshot: LogId,
        last_applied: Option<LogId>,
    },
    #[error("the snapshot file is at {snapshot} and the log's entry at index {} is {in_log}", snapshot.index)]
    SnapshotConflictsWithLog { snapshot: LogId, in_log: LogId },
    #[error("the log is purged up to {last_purged} but the state machine has applied only {} and the snapshot file is at {}: entries {}..={} are gone from this node and nothing here holds their effect", show(last_applied), show(snapshot), last_applied.next_index(), last_purged.index)]
    AppliedBehindPurged {
        last_purged: LogId,
        last_applied: Option<LogId>,
        snapshot: Option<LogId>,
    },
    #[error("the log starts at index {first} but is purged only up to {} and the state machine has applied only {}: entries {}..{first} are missing", show(last_purged), show(last_applied), last_purged.next_index())]
    HoleBeforeLog {
        first: u64,
        last_purged: Option<LogId>,
        last_applied: Option<LogId>,
    },
    #[error("the state machine has applied {last_applied}, beyond the log (last entry {}, purged up to {}): an install's purge was not recorded", show(last), show(last_purged))]
    StateAheadOfLog {
        last_applied: LogId,
        last: Option<LogId>,
        last_purged: Option<LogId>,
    },
    #[error("the snapshot file is at {} but the log is purged up to {last_purged}: it cannot bring a peer up to the log", show(snapshot))]
    SnapshotBehindPurged {
        snapshot: Option<LogId>,
        last_purged: LogId,
    },
    #[error(
        "committed is {committed}, beyond both the last log entry ({}) and the state machine ({})",
        show(last),
        show(last_applied)
    )]
    CommittedBeyondLog {
        committed: LogId,
        last: Option<LogId>,
        last_applied: Option<LogId>,
    },
}

fn index(id: &Option<LogId>) -> Option<u64> {
    id.map(|l| l.index)
}

/// The first broken invariant, in the order they are repaired. The invariants:
/// - the stored vote's term is at least the term of every entry (and, once a vote is stored, of the applied
///   entry and of the purge mark);
/// - the state machine is not behind its own snapshot file (checked early: installing the file again is
///   what explains entries appended after it);
/// - the state machine agrees with the log at its index;
/// - no entry at or below the purge mark, no gap inside the log, and the log starts right after the mark
///   (`first == last_purged + 1`, or the log is empty);
/// - the state machine is not behind the purge mark (`last_applied >= last_purged`: the purged entries'
///   effect must be here);
/// - the snapshot file, when the log is purged, reaches the mark (else it cannot bring a peer up to the log);
/// - `committed` is not beyond everything stored.
pub fn find_inconsistency(f: &StoreFacts) -> Option<Inconsistency> {
    // Without any vote, only log entries count: openraft saves the leader's vote before it accepts its
    // entries or its snapshot, but openraft's storage suite installs snapshots into vote-less stores.
    let vote_term = f.vote.map_or(0, |v| v.leader_id.term);
    let mut by_term = vec![("the last log entry", f.last)];
    if f.vote.is_some() {
        by_term.push(("the state machine's last applied entry", f.last_applied));
        by_term.push(("the purge mark", f.last_purged));
    }
    for (what, id) in by_term {
        if let Some(log_id) = id {
            if log_id.leader_id.term > vote_term {
                return Some(Inconsistency::VoteBehind {
                    what,
                    log_id,
                    vote: f.vote,
                });
            }
        }
    }
    if let Some(Some(snapshot)) = f.snapshot {
        if Some(snapshot.index) > index(&f.last_applied) {
            return Some(Inconsistency::SnapshotAheadOfState {
                snapshot,
                last_applied: f.last_applied,
            });
        }
    }
    if let (Some(la), Some(in_log)) = (f.last_applied, f.at_applied) {
        if la != in_log {
            return Some(Inconsistency::AppliedConflictsWithLog {
                last_applied: la,
                in_log,
            });
        }
    }
    if let (Some(lp), Some(first), Some(last)) = (f.last_purged, f.first, f.last) {
        if first.index <= lp.index {
            return Some(Inconsistency::EntriesAtOrBelowPurged {
                first: first.index,
                upto: lp.index.min(last.index),
                last_purged: lp,
            });
        }
    }
    if let (Some(first), Some(last), Some((first_missing, resume))) = (f.first, f.last, f.gap) {
        return Some(Inconsistency::GapInLog {
            first: first.index,
            last: last.index,
            first_missing,
            resume,
            last_applied: f.last_applied,
        });
    }
    if let Some(lp) = f.last_purged {
        if index(&f.last_applied) < Some(lp.index) {
            return Some(Inconsistency::AppliedBehindPurged {
                last_purged: lp,
                last_applied: f.last_applied,
                snapshot: f.snapshot.flatten(),
            });
        }
    }
    if let Some(first) = f.first {
        if first.index > f.last_purged.next_index() {
            return Some(Inconsistency::HoleBeforeLog {
                first: first.index,
                last_purged: f.last_purged,
                last_applied: f.last_applied,
            });
        }
    }
    if let Some(la) = f.last_applied {
        if Some(la.index) > index(&f.last_purged) && index(&f.last) < Some(la.index) {
            return Some(Inconsistency::StateAheadOfLog {
                last_applied: la,
                last: f.last,
                last_purged: f.last_purged,
            });
        }
    }
    if let (Some(lp), Some(snapshot)) = (f.last_purged, f.snapshot) {
        if index(&snapshot) < Some(lp.index) {
            return Some(Inconsistency::SnapshotBehindPurged {
                snapshot,
                last_purged: lp,
            });
        }
    }
    if let Some(c) = f.committed {
        if Some(c.index) > index(&f.last) && Some(c.index) > index(&f.last_applied) {
            return Some(Inconsistency::CommittedBeyondLog {
                committed: c,
                last: f.last,
                last_applied: f.last_applied,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn stored_keys_at_or_below(link: &StoreLink, index: u64) -> usize {
        link.log.range(..=index.to_be_bytes()).count()
    }

    /// `purge` hands the work to the log-purger thread and returns without waiting for it (openraft awaits
    /// it inside RaftCore, so a slow one used to hold heartbeats up); reads treat the covered entries as
    /// gone at once, and the thread records the mark and removes them afterwards. A purge already running
    /// is played by holding the purge lock until the checks are done.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_purge_returns_before_the_purger_has_run_and_reads_skip_what_it_covers() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut log, _sm) = crate::open_store(dir.path()).expect("open");
        let entries: Vec<Entry> = (1..=100)
            .map(|i| Entry {
                log_id: log_id(i),
                payload: EntryPayload::Blank,
            })
            .collect();
        log.blocking_append(entries).await.expect("append");

        let link = log.link.clone();
        let released = Arc::new(AtomicBool::new(false));
        let (held_tx, held) = mpsc::channel::<()>();
        let (release, release_rx) = mpsc::channel::<()>();
        let holder = {
            let released = released.clone();
            std::thread::spawn(move || {
                let _running = link.purge_lock.lock().unwrap();
                held_tx.send(()).expect("send");
                // Released when told to, or after 20 s so that a purge that waits for it ends the test
                // with a failure instead of hanging.
                let _ = release_rx.recv_timeout(Duration::from_secs(20));
                released.store(true, SeqCst);
            })
        };
        held.recv().expect("lock held");

        log.purge(log_id(60)).await.expect("purge");
        assert!(
            !released.load(SeqCst),
            "purge waited for the purge already running"
        );
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(60)));
        assert_eq!(state.last_log_id, Some(log_id(100)));
        let read = log.try_get_log_entries(0..=100).await.expect("read");
        assert_eq!(read.first().map(|e| e.log_id), Some(log_id(61)));
        assert_eq!(read.len(), 40);
        let limited = log.limited_get_log_entries(1, 101).await.expect("read");
        assert_eq!(limited.first().map(|e| e.log_id), Some(log_id(61)));
        // Not done yet: neither the mark nor the removal reached the store.
        assert_eq!(log.link.last_purged().expect("mark"), None);
        assert_eq!(stored_keys_at_or_below(&log.link, 60), 60);

        release.send(()).expect("release");
        holder.join().expect("holder");
        let deadline = Instant::now() + Duration::from_secs(20);
        while log.link.last_purged().expect("mark") != Some(log_id(60))
            || stored_keys_at_or_below(&log.link, 60) > 0
        {
            assert!(Instant::now() < deadline, "the purger never finished");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(60)));
        assert_eq!(state.last_log_id, Some(log_id(100)));
        assert_eq!(
            log.try_get_log_entries(0..=100).await.expect("read").len(),
            40
        );

        // A purge of everything: the last log id is the mark, with or without entries stored.
        log.purge(log_id(100)).await.expect("purge");
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(100)));
        assert_eq!(state.last_log_id, Some(log_id(100)));
        assert!(log
            .try_get_log_entries(0..=100)
            .await
            .expect("read")
            .is_empty());
    }
}
