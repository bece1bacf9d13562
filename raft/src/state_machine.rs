//! The Raft state machine: applies committed commands to the `State` tree and builds / installs snapshots.
//!
//! Applied state lives in sled, not memory, so a restart does not replay the log from the start: the
//! `last_applied` log id is written in the same atomic commit as each entry's changes (`state/redo.rs`). The state tree is
//! not flushed per entry — the log is the durable record, and after a crash openraft re-applies whatever
//! the tree had not persisted. A snapshot build flushes first, because the log is purged behind it.
//!
//! A snapshot is the whole state tree (versioned `codec` blob of key/value pairs) plus its meta. The
//! current snapshot is kept as a file beside the sled directory (written to a temp file, fsync'd, renamed),
//! so that a restarted node can still serve it to a lagging peer. Not in sled: rewriting a growing blob
//! into sled at every snapshot left hundreds of MiB of garbage in its segments.
//!
//! Installing a snapshot is crash-safe step by step: the snapshot is decoded, written to its file (fsync'd);
//! then the state tree is replaced in one atomic sled batch (old keys removed, the snapshot's written,
//! `last_applied` set) and flushed; then the log's purge mark is raised to the snapshot. A crash between any
//! two leaves a store that `open_store` accepts or repairs (`lib.rs`, `log_store::find_inconsistency`: a
//! file ahead of the state is installed again), and the store is checked again after every install. The
//! log store learns the state machine's progress through `StoreLink`: a purge openraft asks for before the
//! install is durable is left to the install, and entries after the snapshot wait for its file.
use crate::codec;
use crate::command::CommandResult;
use crate::console_files::ConsoleFiles;
use crate::log_store::{StoreFacts, StoreLink};
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
    /// Shared with the log store of the same database.
    link: Arc<StoreLink>,
}

/// The snapshot blob.
#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    #[serde(with = "codec::byte_pairs")]
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// The beginning of a `StoredSnapshot`: its meta comes first, so it is read without the data.
#[derive(Deserialize)]
struct StoredSnapshotHead {
    meta: SnapshotMeta,
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    StorageError::from_io_error(
        ErrorSubject::StateMachine,
        verb,
        std::io::Error::other(e.to_string()),
    )
}

/// Runs the synchronous, whole-state part of a snapshot build or install on a blocking thread. The state
/// machine worker shares a single-threaded runtime with RaftCore (the node's `start_raft`): seconds of copying
/// there stalled RaftCore itself, so a follower stopped answering heartbeats, campaigned with a higher term and
/// deposed a healthy leader.
async fn off_the_raft_thread<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, std::io::Error::other(e.to_string())))?
}

/// Runs `sweep` (of the console files) on a blocking thread and logs how it went.
async fn sweep_console_files_off_thread(
    state: &State,
    sweep: impl FnOnce(&State) -> crate::state::StateResult<usize> + Send + 'static,
) {
    let state = state.clone();
    let swept = tokio::task::spawn_blocking(move || sweep(&state)).await;
    log_console_sweep(swept.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()).into())));
}

/// A sweep of the console files is logged, not fatal: unreferenced segments only take space.
fn log_console_sweep(swept: crate::state::StateResult<usize>) {
    match swept {
        Ok(0) => {}
        Ok(n) => tracing::info!(segments = n, "console files no run refers to: deleted"),
        Err(e) => tracing::warn!(error = %e, "sweeping the console files"),
    }
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
    /// `console_dir`: this node's console files (`console_files.rs`).
    pub(crate) fn open(
        link: Arc<StoreLink>,
        snapshot_file: std::path::PathBuf,
        console_dir: &std::path::Path,
    ) -> Result<Self, sled::Error> {
        let db = link.db.clone();
        let console = Arc::new(ConsoleFiles::open(console_dir)?);
        let sm = SledStateMachine {
            state: State::open(&db, "state", Some(console)).map_err(|e| match e {
                crate::state::StateStoreError::Sled(e) => e,
                other => sled::Error::Io(std::io::Error::other(other.to_string())),
            })?,
            db,
            snapshot_file,
            apply_lock: Arc::new(RwLock::new(())),
            applied: Arc::new(tokio::sync::watch::channel(0).0),
            link,
        };
        if let Ok((Some(last_applied), _)) = sm.read_applied() {
            sm.applied.send_replace(last_applied.index);
            sm.link.sm_applied(last_applied.index);
        }
        // Derived indexes: recomputed rather than trusted (a release before them, or a crash, left them stale).
        if let Err(e) = sm.state.rebuild_derived() {
            tracing::error!(error = %e, "rebuilding the derived indexes");
        }
        log_console_sweep(sm.state.sweep_console_files());
        Ok(sm)
    }

    pub(crate) fn link(&self) -> &Arc<StoreLink> {
        &self.link
    }

    /// What the store holds, log and state machine (`scan`: also look for gaps inside the log).
    pub(crate) fn facts(&self, scan: bool) -> Result<StoreFacts, StorageError> {
        let (last_applied, _) = self.read_applied()?;
        let mut facts = self.link.log_facts(last_applied, scan)?;
        facts.snapshot = self.snapshot_file_meta()?.map(|m| m.last_log_id);
        Ok(facts)
    }

    /// The current snapshot's meta, read from the beginning of its file.
    fn snapshot_file_meta(&self) -> Result<Option<SnapshotMeta>, StorageError> {
        use std::io::Read;
        let file = match std::fs::File::open(&self.snapshot_file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(snap_err(ErrorVerb::Read, e)),
        };
        let mut head = Vec::new();
        file.take(1 << 20)
            .read_to_end(&mut head)
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        match codec::decode::<StoredSnapshotHead>(&head) {
            Ok(h) => Ok(Some(h.meta)),
            // A meta longer than the first MiB (it is not): read the whole file.
            Err(_) => Ok(self.load_current_snapshot()?.map(|s| s.meta)),
        }
    }

    /// Removes a snapshot file that cannot serve (behind the purge mark); openraft builds a new one when it
    /// starts (`StorageHelper::get_initial_state`: no snapshot and a purged log).
    pub(crate) fn remove_snapshot_file(&self) -> Result<(), StorageError> {
        match std::fs::remove_file(&self.snapshot_file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(snap_err(ErrorVerb::Delete, e)),
        }
    }

    /// Replaces the whole state tree by a snapshot's pairs and meta, in one atomic batch: after a crash
    /// the tree is either the old state or the new one, never a mix.
    fn replace_state(
        &self,
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        meta: &SnapshotMeta,
    ) -> Result<(), StorageError> {
        let tree = self.state.tree();
        let mut batch = sled::Batch::default();
        for k in tree.iter().keys() {
            batch.remove(k.map_err(|e| snap_err(ErrorVerb::Read, e))?);
        }
        // Console pieces back into this node's console files (synced before the batch holds their refs).
        let pairs = self
            .state
            .import(pairs)
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        for (k, v) in pairs {
            batch.insert(k, v);
        }
        // The snapshot's own meta wins over whatever the copied tree said.
        for (k, v) in meta_writes_opt(meta)? {
            batch.insert(k, v);
        }
        tree.apply_batch(batch)
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        // The snapshot's derived indexes may come from a release that did not keep them.
        self.state
            .rebuild_derived()
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        Ok(())
    }

    /// Installs the snapshot file into the state tree again (an install whose file is durable but whose
    /// state is not), and purges the log up to it. Used by the repair on open.
    pub(crate) fn reinstall_from_file(&self) -> Result<Option<LogId>, StorageError> {
        let Some(stored) = self.load_current_snapshot()? else {
            return Ok(None);
        };
        let payload: SnapshotPayload =
            codec::decode(&stored.data).map_err(|e| snap_err(ErrorVerb::Read, e))?;
        self.replace_state(payload.pairs, &stored.meta)?;
        self.db.flush().map_err(|e| snap_err(ErrorVerb::Write, e))?;
        if let Some(last) = stored.meta.last_log_id {
            self.link.record_purge(last)?;
            self.db.flush().map_err(|e| snap_err(ErrorVerb::Write, e))?;
            self.applied.send_replace(last.index);
            self.link.sm_applied(last.index);
        }
        self.adopt_agreed_format()?;
        Ok(stored.meta.last_log_id)
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

    /// Makes `stored` the current snapshot file (replaced durably), flushes the state it was taken from,
    /// and gives its data back.
    async fn save_current_snapshot(&self, stored: StoredSnapshot) -> Result<Vec<u8>, StorageError> {
        let this = self.clone();
        let data = off_the_raft_thread(move || {
            this.write_snapshot_file(&stored)?;
            Ok(stored.data)
        })
        .await?;
        // The state tree the snapshot was taken from must be durable too.
        self.db
            .flush_async()
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        Ok(data)
    }

    /// Durably replaces the current snapshot file (temp file, fsync, rename, fsync the directory).
    fn write_snapshot_file(&self, stored: &StoredSnapshot) -> Result<(), StorageError> {
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
        Ok(())
    }
}

/// A consistent cut of the state tree: every pair, taken while no entry is being applied.
pub struct StateCut {
    pub applied: Option<LogId>,
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl SledStateMachine {
    /// Copies the whole state tree at one applied index (the apply lock held for reading, as a snapshot
    /// build does; the copy is in memory, so the lock is held for the copy only, not for the transfer).
    pub async fn cut(&self) -> Result<StateCut, crate::backup::BackupError> {
        let _cut = self.apply_lock.read().await;
        let store_err =
            |e: &dyn std::fmt::Display| crate::backup::BackupError::Store(e.to_string());
        let (pairs, _) = self.state.export().map_err(|e| store_err(&e))?;
        // Under the same read guard as the export: the mark of exactly the state copied.
        let (applied, _) = self.read_applied().map_err(|e| store_err(&e))?;
        Ok(StateCut { applied, pairs })
    }

    /// A restore's snapshot file (`backup::restore_store`), written durably; `reinstall_from_file`
    /// then installs it as a crash-interrupted install is completed.
    pub(crate) fn write_restored_snapshot(
        &self,
        meta: SnapshotMeta,
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), StorageError> {
        let data =
            codec::encode(&SnapshotPayload { pairs }).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        self.write_snapshot_file(&StoredSnapshot { meta, data })
    }
}

impl SledStateMachine {
    /// The steps of an install, each durable before the next: the snapshot file, the state, the purge mark.
    async fn install(
        &self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let bytes = data.len();
        let (this, meta_copy) = (self.clone(), meta.clone());
        let started = std::time::Instant::now();
        let (decoded, file_written, pairs) = off_the_raft_thread(move || {
            let meta = meta_copy;
            // Decoded before anything is written: a file that does not decode is never made current.
            let payload: SnapshotPayload =
                codec::decode(&data).map_err(|e| snap_err(ErrorVerb::Read, e))?;
            let decoded = started.elapsed();
            this.write_snapshot_file(&StoredSnapshot {
                meta: meta.clone(),
                data,
            })?;
            let file_written = started.elapsed();
            // From here a crash is repaired on open by installing the file again, so the log may take the
            // leader's entries after the snapshot point (`SledLogStore::append` waits for this).
            if let Some(last) = meta.last_log_id {
                this.link.sm_snapshot_durable(last.index);
            }
            let pairs = payload.pairs.len();
            this.replace_state(payload.pairs, &meta)?;
            Ok((decoded, file_written, pairs))
        })
        .await?;
        let replaced = started.elapsed();
        self.db
            .flush_async()
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        tracing::info!(
            snapshot = %meta.snapshot_id,
            bytes,
            pairs,
            decode_ms = decoded.as_millis() as u64,
            file_ms = (file_written - decoded).as_millis() as u64,
            replace_ms = (replaced - file_written).as_millis() as u64,
            flush_ms = (started.elapsed() - replaced).as_millis() as u64,
            "installing a snapshot: state replaced and flushed"
        );
        // openraft purges the log up to the snapshot itself, but not after this install is durable (it
        // runs `PurgeLog` as soon as it has handed the install over). The mark is recorded here, now that
        // the state it stands for is on disk; `SledLogStore::purge` leaves such a purge to us.
        if let Some(last) = meta.last_log_id {
            self.link.record_purge(last)?;
            self.db
                .flush_async()
                .await
                .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        }
        if let Some(problem) = crate::log_store::find_inconsistency(&self.facts(false)?) {
            return Err(StorageError::from_io_error(
                ErrorSubject::Store,
                ErrorVerb::Write,
                std::io::Error::other(format!(
                    "after installing snapshot {}: inconsistent store: {problem}",
                    meta.snapshot_id
                )),
            ));
        }
        self.adopt_agreed_format()?;
        // The segments the replaced state referred to (the new one's refs are all in newer ones).
        sweep_console_files_off_thread(&self.state, State::sweep_console_files).await;
        if let Some(id) = meta.last_log_id {
            self.applied.send_replace(id.index);
        }
        self.link.sm_installed(meta.last_log_id.map(|id| id.index));
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
        if let Some(lp) = self.link.last_purged()? {
            if last_applied.map(|l| l.index) < Some(lp.index) {
                // Such a snapshot cannot bring anyone up to the log. `open_store` refuses a store like this
                // and purges wait for installs, so only openraft's storage suite (which purges logs it never
                // applied) gets here.
                tracing::warn!(
                    last_applied = ?last_applied,
                    last_purged = %lp,
                    "building a snapshot behind the purge mark"
                );
            }
        }
        // The read guard keeps `apply` out while the blocking thread copies: still one consistent cut.
        let state = self.state.clone();
        let started = std::time::Instant::now();
        let (data, console_in_use) = off_the_raft_thread(move || {
            let (pairs, in_use) = state.export().map_err(|e| snap_err(ErrorVerb::Read, e))?;
            let data = codec::encode(&SnapshotPayload { pairs })
                .map_err(|e| snap_err(ErrorVerb::Write, e))?;
            Ok((data, in_use))
        })
        .await?;
        tracing::info!(
            bytes = data.len(),
            export_ms = started.elapsed().as_millis() as u64,
            "snapshot built: state exported and encoded"
        );
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
            data,
        };
        // Moved through the blocking thread and back, not cloned: a copy of a 200 MB snapshot on the Raft
        // thread held up heartbeats for hundreds of ms (`jobserv_runtime_lateness_seconds`).
        let data = self.save_current_snapshot(stored).await?;
        // The console segments the copy found no ref to can go without another scan or flush: the tree
        // was flushed above and, under the read guard, no apply has changed it (or written a body) since.
        sweep_console_files_off_thread(&self.state, move |state| {
            state.delete_console_files_unused_by(&console_in_use)
        })
        .await;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl SledStateMachine {
    /// Applies `entries` as one group (`state::Group`, one atomic commit, `state/redo.rs`): their changes
    /// prepared, their console bodies (if any) synced on a blocking thread — RaftCore shares this thread, and an fsync per
    /// large entry held it up — then committed to the tree. The caller makes them visible.
    async fn apply_group(&self, entries: &[Entry]) -> Result<Vec<CommandResult>, StorageError> {
        let mut group = self.state.group();
        for entry in entries {
            let log_id = entry.log_id;
            match &entry.payload {
                EntryPayload::Blank => group.add(log_id.index, None, meta_writes(&log_id, None)?),
                EntryPayload::Normal(cmd) => {
                    group.add(log_id.index, Some(cmd), meta_writes(&log_id, None)?)
                }
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(log_id), m.clone());
                    group.add(log_id.index, None, meta_writes(&log_id, Some(&stored))?)
                }
            }
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        }
        let prepared = group.finish().map_err(|e| sm_err(ErrorVerb::Write, e))?;
        if prepared.needs_sync() {
            let state = self.state.clone();
            tokio::task::spawn_blocking(move || state.sync_console_files())
                .await
                .map_err(|e| sm_err(ErrorVerb::Write, std::io::Error::other(e.to_string())))?
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        }
        self.state
            .commit(prepared)
            .map_err(|e| sm_err(ErrorVerb::Write, e))
    }
}

/// The most entries one atomic commit applies (`state::Group`); a longer apply yields to RaftCore between
/// groups.
const APPLY_GROUP_MAX: usize = 64;

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
        let mut group: Vec<Entry> = Vec::new();
        let mut entries = entries.into_iter().peekable();
        while let Some(entry) = entries.next() {
            // A format bump ends its group: the entries after it are encoded in the agreed format.
            let bumps_format = matches!(
                &entry.payload,
                EntryPayload::Normal(crate::Command::SetFormatVersion { .. })
            );
            group.push(entry);
            if group.len() < APPLY_GROUP_MAX && !bumps_format && entries.peek().is_some() {
                continue;
            }
            let (first, last) = (group[0].log_id, group[group.len() - 1].log_id);
            let applied = self.apply_group(&group).await.map_err(|e| {
                self.link
                    .sm_failed(format!("applying {first}..={last}: {e}"));
                e
            })?;
            results.extend(applied);
            group.clear();
            if bumps_format {
                self.adopt_agreed_format()?;
            }
            self.applied.send_replace(last.index);
            self.link.sm_applied(last.index);
            // RaftCore shares this single-threaded runtime: let it answer heartbeats and votes between
            // groups of a long apply (thousands of entries after a catch-up or a big AppendEntries).
            if entries.peek().is_some() {
                tokio::task::yield_now().await;
            }
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        // From here until the install is done, a purge beyond what is applied is left to the install.
        self.link.sm_receiving();
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let _write = self.apply_lock.write().await;
        let result = self.install(meta, snapshot).await;
        if let Err(e) = &result {
            self.link
                .sm_failed(format!("installing snapshot {}: {e}", meta.snapshot_id));
        }
        result
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        // Off the Raft thread: the leader reads the file whenever it sends a snapshot, and reading an
        // 800 MB one there (the bench's history phase) held RaftCore 0.8-1.3 s, long enough for elections.
        let this = self.clone();
        let stored = off_the_raft_thread(move || this.load_current_snapshot()).await?;
        Ok(stored.map(|s| Snapshot {
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
