//! The store's invariants across snapshot installs, purges, truncations and crashes (issue 9, item 4).
//!
//! The bench's wiped follower died with `LogIndexNotFound { want: 0, got: Some(35086) }`: openraft purged its
//! log up to the snapshot (`PurgeLog`, run by RaftCore right after it *forwarded* the install to the state
//! machine worker), the process exited before the install was durable, and the restarted node had a purge
//! mark at 35085, an empty state machine, and then accepted the leader's entries from 35086 — so the first
//! commit made RaftCore read the log from index 0.
//!
//! These tests replay what openraft does at the storage level: the same calls in the same order, with the
//! handles dropped and the sled directory reopened where a process would have died, and they check the
//! store from openraft's point of view (`StorageHelper::get_initial_state`, then the `get_log_entries` that
//! RaftCore does on the next commit). The last test SIGKILLs a child process at random points of the same
//! sequence.
mod common;

use common::try_open;
use jobserv_raft::state::keys;
use jobserv_raft::types::{Entry, LogId, SnapshotMeta, Vote};
use jobserv_raft::{codec, Command, SledLogStore, SledStateMachine};
use openraft::storage::{RaftLogReaderExt, RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{
    CommittedLeaderId, EntryPayload, LogIdOptionExt, Membership, RaftLogReader,
    RaftSnapshotBuilder, StorageHelper,
};
use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The index the bench's leader had snapshotted and purged up to.
const P: u64 = 35085;

// The on-disk layout of the log store (`log_store.rs`): tree names and meta keys.
const LOG_TREE: &str = "raft_log";
const META_TREE: &str = "raft_meta";
const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";
const STATE_TREE: &str = "state";

fn lid(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Blank,
    }
}

fn blanks(term: u64, range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    range.map(|i| blank(term, i)).collect()
}

fn membership(term: u64, index: u64) -> Entry {
    let voters: BTreeSet<u64> = [1, 2, 3].into_iter().collect();
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Membership(Membership::new(vec![voters], None)),
    }
}

fn create_project(term: u64, index: u64, name: &str) -> Entry {
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Normal(Command::CreateProject {
            name: name.into(),
            synchronous_builds: false,
            now: 1,
        }),
    }
}

fn open(path: &Path) -> (SledLogStore, SledStateMachine) {
    try_open(path).unwrap_or_else(|e| panic!("opening the store at {}: {e}", path.display()))
}

/// The sled database itself, to lay out what a crash (or an older binary) left.
fn raw(path: &Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if e.to_string().contains("lock") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("opening sled at {}: {e}", path.display()),
        }
    }
}

struct RawStore {
    db: sled::Db,
}

impl RawStore {
    fn new(path: &Path) -> Self {
        RawStore { db: raw(path) }
    }
    fn entries(&self, entries: &[Entry]) -> &Self {
        let log = self.db.open_tree(LOG_TREE).unwrap();
        for e in entries {
            log.insert(e.log_id.index.to_be_bytes(), codec::encode(e).unwrap())
                .unwrap();
        }
        self
    }
    fn vote(&self, vote: Vote) -> &Self {
        let meta = self.db.open_tree(META_TREE).unwrap();
        meta.insert(VOTE, codec::encode(&vote).unwrap()).unwrap();
        self
    }
    fn last_purged(&self, id: LogId) -> &Self {
        let meta = self.db.open_tree(META_TREE).unwrap();
        meta.insert(LAST_PURGED, codec::encode(&Some(id)).unwrap())
            .unwrap();
        self
    }
    fn committed(&self, id: LogId) -> &Self {
        let meta = self.db.open_tree(META_TREE).unwrap();
        meta.insert(COMMITTED, codec::encode(&Some(id)).unwrap())
            .unwrap();
        self
    }
    fn applied(&self, id: LogId) -> &Self {
        let state = self.db.open_tree(STATE_TREE).unwrap();
        state
            .insert(keys::LAST_APPLIED, codec::encode(&Some(id)).unwrap())
            .unwrap();
        self
    }
    fn close(&self) {
        self.db.flush().unwrap();
    }
}

/// A snapshot as a leader sends it: built by a real state machine holding the projects
/// `<prefix>0..<prefix>n`, with its last log id `last`.
async fn leader_snapshot(last: LogId, prefix: &str, n: usize) -> (SnapshotMeta, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm) = open(&dir.path().join("raft"));
    let first = last.index - n as u64 - 1;
    let mut entries = vec![membership(last.leader_id.term, first)];
    for i in 0..n {
        entries.push(create_project(
            last.leader_id.term,
            first + 1 + i as u64,
            &format!("{prefix}{i}"),
        ));
    }
    entries.push(blank(last.leader_id.term, last.index));
    sm.apply(entries).await.unwrap();
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snap.meta.last_log_id, Some(last));
    (snap.meta, snap.snapshot.into_inner())
}

fn project_names(sm: &SledStateMachine) -> Vec<String> {
    sm.state()
        .projects()
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect()
}

/// Checks the store the way openraft will use it: the log is `(last_purged, last]` without holes, the
/// state machine is not behind the purge mark, `get_initial_state` succeeds, and the entries RaftCore
/// applies on the next commit (`committed+1..=last`, raft_core.rs `apply_to_state_machine`) can be read.
async fn openraft_view(log: &mut SledLogStore, sm: &mut SledStateMachine) -> Result<(), String> {
    let ls = log.get_log_state().await.map_err(|e| e.to_string())?;
    let (applied, _) = sm.applied_state().await.map_err(|e| e.to_string())?;
    if let Some(lp) = ls.last_purged_log_id {
        if applied < Some(lp) {
            return Err(format!(
                "the log is purged up to {lp} but the state machine has applied only {applied:?}"
            ));
        }
    }
    let entries = log
        .try_get_log_entries(0..)
        .await
        .map_err(|e| e.to_string())?;
    let mut expected = ls.last_purged_log_id.next_index();
    for e in &entries {
        if e.log_id.index != expected {
            return Err(format!(
                "the log holds index {} where {expected} was expected (last purged {:?})",
                e.log_id.index, ls.last_purged_log_id
            ));
        }
        expected += 1;
    }
    if entries.last().map(|e| e.log_id) != ls.last_log_id && !entries.is_empty() {
        return Err("get_log_state's last log id is not the last entry".into());
    }
    let st = StorageHelper::new(log, sm)
        .get_initial_state()
        .await
        .map_err(|e| format!("get_initial_state: {e}"))?;
    if st.snapshot_meta.last_log_id < ls.last_purged_log_id {
        return Err(format!(
            "the snapshot openraft would send is at {:?}, behind the purge mark {:?}",
            st.snapshot_meta.last_log_id, ls.last_purged_log_id
        ));
    }
    let ls = log.get_log_state().await.map_err(|e| e.to_string())?;
    if let Some(last) = ls.last_log_id {
        if st.committed < Some(last) {
            log.get_log_entries(st.committed.next_index()..=last.index)
                .await
                .map_err(|e| {
                    format!("reading the entries to apply after {:?}: {e}", st.committed)
                })?;
        }
    }
    Ok(())
}

/// What a follower does when the leader probes with `prev_log_id = P` right after the snapshot point (the
/// leader's first `next_send` starts at its `purge_upto + 1`), then commits three entries: accept the probe
/// if it has P, else get the snapshot again; then apply `committed+1..` as RaftCore does.
async fn catch_up_from_leader(
    log: &mut SledLogStore,
    sm: &mut SledStateMachine,
    meta: &SnapshotMeta,
    data: &[u8],
) -> Result<(), String> {
    let st = StorageHelper::new(log, sm)
        .get_initial_state()
        .await
        .map_err(|e| format!("get_initial_state: {e}"))?;
    let ls = log.get_log_state().await.map_err(|e| e.to_string())?;
    let at_p = log
        .try_get_log_entries(P..=P)
        .await
        .map_err(|e| e.to_string())?;
    let has_prev = st.committed >= Some(lid(2, P))
        || ls.last_purged_log_id == Some(lid(2, P))
        || at_p.first().map(|e| e.log_id) == Some(lid(2, P));
    let mut committed = st.committed;
    if !has_prev {
        // The probe is rejected: the leader sends its snapshot again.
        let mut incoming = sm
            .begin_receiving_snapshot()
            .await
            .map_err(|e| e.to_string())?;
        *incoming = Cursor::new(data.to_vec());
        sm.install_snapshot(meta, incoming)
            .await
            .map_err(|e| format!("install_snapshot: {e}"))?;
        log.purge(lid(2, P)).await.map_err(|e| e.to_string())?;
        committed = Some(lid(2, P));
    }
    log.blocking_append(blanks(2, P + 1..=P + 3))
        .await
        .map_err(|e| e.to_string())?;
    log.save_committed(Some(lid(2, P + 3)))
        .await
        .map_err(|e| e.to_string())?;
    let to_apply = log
        .get_log_entries(committed.next_index()..P + 4)
        .await
        .map_err(|e| format!("RaftCore reading the committed entries to apply: {e}"))?;
    sm.apply(to_apply).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// The bench's failure: the wiped node received the snapshot, openraft purged the log up to it, and the
/// process exited before the state machine worker had installed it. On restart the node must not claim
/// index 35085, or the leader's entries from 35086 are accepted and the first commit reads from index 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_follower_restarted_between_openraft_purge_and_install() {
    let (meta, data) = leader_snapshot(lid(2, P), "a", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    {
        let (mut log, mut sm) = open(&path);
        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        let mut incoming = sm.begin_receiving_snapshot().await.unwrap();
        *incoming = Cursor::new(data.clone());
        // following_handler::install_full_snapshot: the install goes to the state machine worker, and
        // RaftCore runs `PurgeLog { upto: 35085 }` at once, without waiting for it.
        log.purge(lid(2, P)).await.unwrap();
        // The process exits here, before the worker installed the snapshot.
    }
    let (mut log, mut sm) = open(&path);
    catch_up_from_leader(&mut log, &mut sm, &meta, &data)
        .await
        .expect("catching up after the restart");
    assert_eq!(sm.applied_state().await.unwrap().0, Some(lid(2, P + 3)));
    assert_eq!(project_names(&sm), vec!["a0", "a1", "a2"]);
    drop((log, sm));
    let (mut log, mut sm) = open(&path);
    openraft_view(&mut log, &mut sm)
        .await
        .expect("store after catching up");
}

/// While the state machine worker is still installing, the leader may already send the entries after the
/// snapshot point (its install RPC timed out). They must not reach the disk before the snapshot does (its
/// file, the install's first durable step): a crash in between would leave entries from 35086 that nothing
/// before them explains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_after_a_pending_install_wait_for_it() {
    let (meta, data) = leader_snapshot(lid(2, P), "a", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    {
        let (mut log, mut sm) = open(&path);
        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        let mut incoming = sm.begin_receiving_snapshot().await.unwrap();
        *incoming = Cursor::new(data.clone());
        log.purge(lid(2, P)).await.unwrap();
        let mut log2 = log.clone();
        let append =
            tokio::spawn(async move { log2.blocking_append(blanks(2, P + 1..=P + 3)).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !append.is_finished(),
            "entries after the snapshot point were made durable before the snapshot was installed"
        );
        sm.install_snapshot(&meta, incoming).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), append)
            .await
            .expect("the append completes once the install is done")
            .unwrap()
            .unwrap();
        let ls = log.get_log_state().await.unwrap();
        assert_eq!(ls.last_purged_log_id, Some(lid(2, P)));
        assert_eq!(ls.last_log_id, Some(lid(2, P + 3)));
    }
    let (mut log, mut sm) = open(&path);
    openraft_view(&mut log, &mut sm).await.unwrap();
    assert_eq!(sm.applied_state().await.unwrap().0, Some(lid(2, P)));
    assert_eq!(project_names(&sm), vec!["a0", "a1", "a2"]);
}

/// The store the bug left behind (purged up to 35085, entries from 35086, nothing applied, no snapshot):
/// the entries 0..=35085 are gone from this node and nothing here holds their effect. Opening it must say
/// so instead of letting RaftCore die on its first commit.
#[test]
fn the_store_the_bug_left_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    RawStore::new(&path)
        .vote(Vote::new_committed(2, 1))
        .last_purged(lid(2, P))
        .entries(&blanks(2, P + 1..=P + 3))
        .close();
    match try_open(&path) {
        Ok(_) => panic!("opened a store purged up to {P} whose state machine has applied nothing"),
        Err(e) => {
            assert!(
                e.contains("purged up to") && e.contains(&P.to_string()) && e.contains("applied"),
                "the error names what was found: {e}"
            );
        }
    }
}

/// A crash half-way through a purge leaves entries at or below the purge mark: removed on open.
#[tokio::test]
async fn entries_left_by_an_interrupted_purge_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    RawStore::new(&path)
        .vote(Vote::new_committed(2, 1))
        .last_purged(lid(2, 10))
        .entries(&blanks(2, 5..=20))
        .applied(lid(2, 15))
        .close();
    let (mut log, mut sm) = open(&path);
    let first = log.try_get_log_entries(0..=20).await.unwrap()[0].log_id;
    assert_eq!(first, lid(2, 11));
    let ls = log.get_log_state().await.unwrap();
    assert_eq!(
        (ls.last_purged_log_id, ls.last_log_id),
        (Some(lid(2, 10)), Some(lid(2, 20)))
    );
    openraft_view(&mut log, &mut sm).await.unwrap();
}

/// A log that starts after a hole the state machine covers (an install whose purge mark was not yet
/// written): the purge mark is moved up to what the state machine has applied.
#[tokio::test]
async fn a_hole_the_state_machine_covers_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    RawStore::new(&path)
        .vote(Vote::new_committed(2, 1))
        .entries(&blanks(2, 101..=110))
        .applied(lid(2, 100))
        .close();
    let (mut log, mut sm) = open(&path);
    let ls = log.get_log_state().await.unwrap();
    assert_eq!(ls.last_purged_log_id, Some(lid(2, 100)));
    openraft_view(&mut log, &mut sm).await.unwrap();
}

/// A hole the state machine does not cover cannot be repaired here.
#[test]
fn a_hole_nothing_covers_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    RawStore::new(&path)
        .vote(Vote::new_committed(2, 1))
        .last_purged(lid(2, 50))
        .entries(&blanks(2, 101..=110))
        .applied(lid(2, 60))
        .close();
    let e = try_open(&path)
        .err()
        .expect("a log with entries 51..=100 missing");
    assert!(e.contains("101"), "{e}");
}

/// A truncation interrupted by a crash (an older binary removed the entries one by one, lowest first)
/// leaves a gap: what is after it was being truncated, and is removed.
#[tokio::test]
async fn a_gap_left_by_an_interrupted_truncation_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    let mut entries = blanks(2, 1..=10);
    entries.extend(blanks(2, 15..=20));
    RawStore::new(&path)
        .vote(Vote::new_committed(2, 1))
        .entries(&entries)
        .applied(lid(2, 5))
        .committed(lid(2, 8))
        .close();
    let (mut log, mut sm) = open(&path);
    let ls = log.get_log_state().await.unwrap();
    assert_eq!(ls.last_log_id, Some(lid(2, 10)));
    openraft_view(&mut log, &mut sm).await.unwrap();
}

/// Entries from a term the stored vote has not reached mean the vote was lost: refused.
#[test]
fn entries_newer_than_the_vote_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    RawStore::new(&path).entries(&blanks(3, 0..=3)).close();
    let e = try_open(&path)
        .err()
        .expect("entries of term 3 and no vote");
    assert!(e.contains("vote"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    RawStore::new(&path)
        .vote(Vote::new_committed(2, 1))
        .entries(&blanks(3, 0..=3))
        .close();
    let e = try_open(&path)
        .err()
        .expect("entries of term 3 and a vote of term 2");
    assert!(e.contains("vote") && e.contains("term 3"), "{e}");
}

/// `committed` is not flushed; one beyond everything the store holds is lowered to what was applied
/// (openraft would otherwise try to re-apply entries that are not there).
#[tokio::test]
async fn committed_beyond_the_log_is_lowered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    RawStore::new(&path)
        .vote(Vote::new_committed(2, 1))
        .entries(&blanks(2, 0..=5))
        .applied(lid(2, 3))
        .committed(lid(2, 9))
        .close();
    let (mut log, mut sm) = open(&path);
    assert_eq!(log.read_committed().await.unwrap(), Some(lid(2, 3)));
    openraft_view(&mut log, &mut sm).await.unwrap();
}

/// A snapshot file older than the purge mark cannot bring a peer up to the log: dropped on open, and
/// openraft builds a current one from the state machine.
#[tokio::test]
async fn a_snapshot_behind_the_purge_mark_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    {
        let (mut log, mut sm) = open(&path);
        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        let mut entries = vec![membership(2, 0)];
        entries.extend(blanks(2, 1..=130));
        log.blocking_append(entries.clone()).await.unwrap();
        sm.apply(entries[..=50].to_vec()).await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        sm.apply(entries[51..=120].to_vec()).await.unwrap();
        log.purge(lid(2, 100)).await.unwrap();
    }
    let (mut log, mut sm) = open(&path);
    if let Some(s) = sm.get_current_snapshot().await.unwrap() {
        assert!(s.meta.last_log_id >= Some(lid(2, 100)), "{:?}", s.meta);
    }
    openraft_view(&mut log, &mut sm).await.unwrap();
}

/// A snapshot file as a leader's node keeps it (beside its sled directory), for `last`.
async fn leader_snapshot_file(last: LogId, prefix: &str, n: usize) -> (tempfile::TempDir, PathBuf) {
    let (meta, data) = leader_snapshot(last, prefix, n).await;
    // Installing it on a scratch store writes the file exactly as an install does.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    {
        let (mut log, mut sm) = open(&path);
        log.save_vote(&Vote::new_committed(last.leader_id.term, 1))
            .await
            .unwrap();
        let mut incoming = sm.begin_receiving_snapshot().await.unwrap();
        *incoming = Cursor::new(data);
        sm.install_snapshot(&meta, incoming).await.unwrap();
    }
    let file = path.with_extension("snapshot");
    (dir, file)
}

/// An install interrupted after its snapshot file was durable (its first step) but before the state tree
/// was: the entries the leader sent after the snapshot point are already in the log, behind a gap. The
/// install is completed from the file, and those entries are kept.
#[tokio::test]
async fn an_install_interrupted_after_its_file_is_completed() {
    let (_leader, file) = leader_snapshot_file(lid(2, P), "a", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    let mut old = vec![membership(1, 0)];
    old.extend(blanks(1, 1..=10));
    RawStore::new(&path)
        .vote(Vote::new_committed(2, 1))
        .entries(&old)
        .applied(lid(1, 10))
        .entries(&blanks(2, P + 1..=P + 3))
        .committed(lid(2, P + 2))
        .close();
    std::fs::copy(&file, path.with_extension("snapshot")).unwrap();
    let (mut log, mut sm) = open(&path);
    assert_eq!(sm.applied_state().await.unwrap().0, Some(lid(2, P)));
    assert_eq!(project_names(&sm), vec!["a0", "a1"]);
    let ls = log.get_log_state().await.unwrap();
    assert_eq!(
        (ls.last_purged_log_id, ls.last_log_id),
        (Some(lid(2, P)), Some(lid(2, P + 3)))
    );
    openraft_view(&mut log, &mut sm).await.unwrap();
}

/// The same with no entries after it, on an empty node: the file alone makes the state.
#[tokio::test]
async fn a_snapshot_ahead_of_the_state_is_installed_again() {
    let (_leader, file) = leader_snapshot_file(lid(2, 40), "a", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    RawStore::new(&path).vote(Vote::new_committed(2, 1)).close();
    std::fs::copy(&file, path.with_extension("snapshot")).unwrap();
    let (mut log, mut sm) = open(&path);
    assert_eq!(sm.applied_state().await.unwrap().0, Some(lid(2, 40)));
    assert_eq!(project_names(&sm), vec!["a0"]);
    openraft_view(&mut log, &mut sm).await.unwrap();
}

/// An install interrupted after the state tree but before the purge mark, with the leader's next entries
/// appended: old entries, a gap, new entries — the state machine covers the gap, so the mark is raised.
#[tokio::test]
async fn a_gap_the_state_machine_covers_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    RawStore::new(&path)
        .vote(Vote::new_committed(2, 1))
        .entries(&blanks(1, 1..=10))
        .entries(&blanks(2, 101..=103))
        .applied(lid(2, 100))
        .close();
    let (mut log, mut sm) = open(&path);
    let ls = log.get_log_state().await.unwrap();
    assert_eq!(
        (ls.last_purged_log_id, ls.last_log_id),
        (Some(lid(2, 100)), Some(lid(2, 103)))
    );
    openraft_view(&mut log, &mut sm).await.unwrap();
}

/// A lagging node (state and log of its own) installs a snapshot: its state is replaced as a whole and its
/// log purged up to the snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_replaces_older_state_and_log() {
    let (meta, data) = leader_snapshot(lid(2, P), "a", 3).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    {
        let (mut log, mut sm) = open(&path);
        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        let entries = vec![membership(1, 0), create_project(1, 1, "old"), blank(1, 2)];
        log.blocking_append(entries.clone()).await.unwrap();
        log.blocking_append(blanks(1, 3..=12)).await.unwrap();
        sm.apply(entries).await.unwrap();
        let mut incoming = sm.begin_receiving_snapshot().await.unwrap();
        *incoming = Cursor::new(data.clone());
        let mut sm2 = sm.clone();
        let install = tokio::spawn(async move { sm2.install_snapshot(&meta, incoming).await });
        log.purge(lid(2, P)).await.unwrap();
        install.await.unwrap().unwrap();
        assert_eq!(project_names(&sm), vec!["a0", "a1", "a2"]);
    }
    let (mut log, mut sm) = open(&path);
    let ls = log.get_log_state().await.unwrap();
    assert_eq!(
        (ls.last_purged_log_id, ls.last_log_id),
        (Some(lid(2, P)), Some(lid(2, P)))
    );
    assert_eq!(project_names(&sm), vec!["a0", "a1", "a2"]);
    openraft_view(&mut log, &mut sm).await.unwrap();
}

/// The store is checked after every install too: a snapshot from a term the stored vote has not reached
/// means the vote was not saved first (openraft saves it before it installs), and the install says so.
#[tokio::test]
async fn install_checks_the_store_afterwards() {
    let (meta, data) = leader_snapshot(lid(3, 100), "a", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut sm) = open(&dir.path().join("raft"));
    log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
    let mut incoming = sm.begin_receiving_snapshot().await.unwrap();
    *incoming = Cursor::new(data);
    let e = sm
        .install_snapshot(&meta, incoming)
        .await
        .expect_err("a snapshot of term 3 over a vote of term 1");
    assert!(e.to_string().contains("vote"), "{e}");
}

// --- SIGKILL at random points of the install / catch-up sequence -------------------------------------

const CHILD_ENV: &str = "JOBSERV_STORE_CRASH_CHILD";
const PROJECTS: usize = 1500;

fn snapshot_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.meta.json")),
        dir.join(format!("{name}.data")),
    )
}

fn read_snapshot(dir: &Path, name: &str) -> (SnapshotMeta, Vec<u8>) {
    let (m, d) = snapshot_files(dir, name);
    (
        serde_json::from_slice(&std::fs::read(m).unwrap()).unwrap(),
        std::fs::read(d).unwrap(),
    )
}

/// The child: replays, round after round until it is killed, what a follower does when a leader sends it
/// a snapshot and then entries — the install on its own task (the state machine worker) while "RaftCore"
/// purges and appends, then a commit, a conflicting tail truncated, and a policy snapshot plus purge.
/// A no-op unless started by `sigkill_during_install_and_catch_up_leaves_a_consistent_store`.
#[test]
fn crash_child() {
    let Ok(work) = std::env::var(CHILD_ENV) else {
        return;
    };
    let work = PathBuf::from(work);
    let life: u64 = std::env::var("JOBSERV_STORE_CRASH_LIFE")
        .unwrap()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let snaps = [read_snapshot(&work, "a"), read_snapshot(&work, "b")];
        let (mut log, mut sm) = open(&work.join("raft"));
        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        for round in 0u64.. {
            let ls = log.get_log_state().await.unwrap();
            let (applied, _) = sm.applied_state().await.unwrap();
            let base = std::cmp::max(ls.last_log_id.next_index(), applied.next_index());
            let p = base + 1000;
            let (src, data) = &snaps[((life + round) % 2) as usize];
            let meta = SnapshotMeta {
                last_log_id: Some(lid(2, p)),
                last_membership: src.last_membership.clone(),
                snapshot_id: format!("{p}"),
            };
            let mut incoming = sm.begin_receiving_snapshot().await.unwrap();
            *incoming = Cursor::new(data.clone());
            let mut worker = sm.clone();
            let install =
                tokio::spawn(async move { worker.install_snapshot(&meta, incoming).await });
            log.purge(lid(2, p)).await.unwrap();
            let entries = blanks(2, p + 1..=p + 20);
            log.blocking_append(entries.clone()).await.unwrap();
            install.await.unwrap().unwrap();
            log.save_committed(Some(lid(2, p + 20))).await.unwrap();
            sm.apply(entries).await.unwrap();
            log.blocking_append(blanks(2, p + 21..=p + 40))
                .await
                .unwrap();
            log.truncate(lid(2, p + 30)).await.unwrap();
            sm.get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            log.purge(lid(2, p + 10)).await.unwrap();
        }
    });
}

#[test]
fn sigkill_during_install_and_catch_up_leaves_a_consistent_store() {
    let work = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (name, prefix) in [("a", "a"), ("b", "b")] {
        let (meta, data) = rt.block_on(leader_snapshot(lid(2, 5000), prefix, PROJECTS));
        let (m, d) = snapshot_files(work.path(), name);
        std::fs::write(m, serde_json::to_vec(&meta).unwrap()).unwrap();
        std::fs::write(d, data).unwrap();
    }
    let mut next = common::random("STORE_CRASH_SEED");
    let path = work.path().join("raft");
    let lives: u64 = std::env::var("STORE_CRASH_LIVES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    for life in 0..lives {
        let delay = Duration::from_millis(150 + next() % 1500);
        common::run_child_then_kill(
            "crash_child",
            &[
                (CHILD_ENV, work.path().display().to_string()),
                ("JOBSERV_STORE_CRASH_LIFE", life.to_string()),
            ],
            delay,
            life,
        );
        let (mut log, mut sm) = try_open(&path).unwrap_or_else(|e| {
            panic!("life {life}, killed after {delay:?}: the store does not open: {e}")
        });
        rt.block_on(openraft_view(&mut log, &mut sm))
            .unwrap_or_else(|e| panic!("life {life}, killed after {delay:?}: {e}"));
        let names = project_names(&sm);
        let whole = names.is_empty()
            || (names.len() == PROJECTS
                && (names.iter().all(|n| n.starts_with('a'))
                    || names.iter().all(|n| n.starts_with('b'))));
        assert!(
            whole,
            "life {life}, killed after {delay:?}: the state is not one whole snapshot: {} projects",
            names.len()
        );
        drop((log, sm));
    }
}

/// An AppendEntries batch stops at `MAX_APPEND_BYTES`, yet always carries at least one entry (an entry larger
/// than the budget still travels, alone), and never reads past `end`.
#[tokio::test]
async fn append_batches_are_bounded_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _sm) = open(&dir.path().join("raft"));
    let quarter = "x".repeat(jobserv_raft::log_store::MAX_APPEND_BYTES / 4);
    let whole = "y".repeat(jobserv_raft::log_store::MAX_APPEND_BYTES + 1);
    let mut entries = vec![membership(1, 1)];
    entries.extend((2..=9).map(|i| create_project(1, i, &quarter)));
    entries.push(create_project(1, 10, &whole));
    entries.push(create_project(1, 11, "small"));
    log.blocking_append(entries).await.unwrap();
    let mut reader = log.get_log_reader().await;
    let indexes = |batch: Vec<Entry>| batch.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
    // Each quarter-budget entry encodes a little over a quarter: three fit, the fourth does not.
    assert_eq!(
        indexes(reader.limited_get_log_entries(2, 12).await.unwrap()),
        [2, 3, 4]
    );
    assert_eq!(
        indexes(reader.limited_get_log_entries(10, 12).await.unwrap()),
        [10]
    );
    assert_eq!(
        indexes(reader.limited_get_log_entries(11, 12).await.unwrap()),
        [11]
    );
    assert_eq!(
        indexes(reader.limited_get_log_entries(1, 3).await.unwrap()),
        [1, 2]
    );
}

/// The segment file holding the most entry bodies (`raft.entries/`, see `entry_files`), and its size.
fn fullest_segment(store: &Path) -> (PathBuf, u64) {
    std::fs::read_dir(store.with_extension("entries"))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let len = std::fs::metadata(&path).unwrap().len();
            (path, len)
        })
        .max_by_key(|(_, len)| *len)
        .unwrap()
}

/// The entries in `range`, as openraft reads them, encoded (for comparing).
async fn read_back(log: &mut SledLogStore, range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    let mut reader = log.get_log_reader().await;
    encoded(&reader.try_get_log_entries(range).await.unwrap())
}

fn encoded(entries: &[Entry]) -> Vec<Vec<u8>> {
    entries.iter().map(|e| codec::encode(e).unwrap()).collect()
}

/// Large entry bodies live in segment files beside sled; a store whose log tree holds every entry inline
/// (written by a release before those files) reads on, and large appends after them go to the files.
#[tokio::test]
async fn inline_entries_of_an_older_store_read_on_beside_bodies_in_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    let mut all = vec![membership(1, 0)];
    all.extend((1..=3).map(|i| create_project(1, i, &format!("old{i}"))));
    RawStore::new(&path)
        .vote(Vote::new_committed(1, 1))
        .entries(&all)
        .close();
    let new: Vec<Entry> = (4..=6)
        .map(|i| create_project(1, i, &"n".repeat(i as usize * 2000)))
        .collect();
    all.extend(new.clone());
    {
        let (mut log, mut sm) = open(&path);
        log.blocking_append(new).await.unwrap();
        assert_eq!(read_back(&mut log, 0..7).await, encoded(&all));
        openraft_view(&mut log, &mut sm).await.unwrap();
    }
    // The new bodies are in a segment, not in sled: one file of at least their size.
    let (_, size) = fullest_segment(&path);
    assert!(
        size > 30_000,
        "the newest bodies are in a segment file ({size} bytes)"
    );
    let (mut log, mut sm) = open(&path);
    assert_eq!(read_back(&mut log, 0..7).await, encoded(&all));
    assert_eq!(
        log.get_log_state().await.unwrap().last_log_id,
        Some(lid(1, 6))
    );
    openraft_view(&mut log, &mut sm).await.unwrap();
}

/// A power loss can persist a ref (sled flushes on its own too) without the body it points to: the log
/// then ends before that entry when it was never applied, and the store is refused, naming the entry,
/// when the state machine had applied it (that would be an fsync that lied).
#[tokio::test]
async fn a_body_a_power_loss_tore_ends_the_log_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raft");
    let mut all = vec![membership(1, 0)];
    // Bodies above the inline size (4 KiB), so that they go to a segment.
    all.extend((1..=5).map(|i| create_project(1, i, &format!("p{i}{}", "x".repeat(5000)))));
    {
        let (mut log, _sm) = open(&path);
        log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        log.blocking_append(all.clone()).await.unwrap();
    }
    let (segment, size) = fullest_segment(&path);
    let torn = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    torn.set_len(size - 3).unwrap();
    drop(torn);
    let saved = tempfile::tempdir().unwrap();
    copy_store(&path, saved.path());
    {
        let (mut log, mut sm) = open(&path);
        assert_eq!(
            log.get_log_state().await.unwrap().last_log_id,
            Some(lid(1, 4))
        );
        assert_eq!(read_back(&mut log, 0..6).await, encoded(&all[..5]));
        openraft_view(&mut log, &mut sm).await.unwrap();
    }
    // The same torn store, but its state machine had applied entry 5.
    let path = saved.path().join("raft");
    RawStore::new(&path).applied(lid(1, 5)).close();
    let err = try_open(&path).err().expect("refused");
    assert!(
        err.contains("log entry 5 did not survive") && err.contains("raft.entries"),
        "{err}"
    );
}

/// Copies a store (the sled directory and the files beside it) into `to`.
fn copy_store(store: &Path, to: &Path) {
    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), target).unwrap();
            }
        }
    }
    let name = store.file_name().unwrap().to_string_lossy().into_owned();
    copy_dir(store, &to.join(&name));
    copy_dir(
        &store.with_extension("entries"),
        &to.join(format!("{name}.entries")),
    );
}
