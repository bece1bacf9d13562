//! Replicated state for JobServ: the commands, the state machine that applies them to sled, the sled log
//! store, and the HTTPS transport between nodes. The node crate builds on this; the worker never links it.
//!
//! Invariants:
//! - every durable change is a `Command` applied in log order by `SledStateMachine` (handlers only read);
//! - nothing is acknowledged to openraft as written before `flush` made it durable (`log_store`);
//! - the log is `(last_purged, last]` without holes, and the state machine holds at least what was purged;
//!   `open_store` checks this (repairing what a crash can leave) and so does every snapshot install;
//! - everything stored or sent between nodes goes through `codec` and carries a format version.
pub mod backup;
pub mod codec;
pub mod command;
pub mod console_files;
mod entry_files;
pub mod hooks;
pub mod log_store;
pub mod model;
pub mod network;
mod segment_files;
pub mod state;
pub mod state_machine;
pub mod types;

pub use command::{Command, CommandResult, StateError};
pub use log_store::SledLogStore;
pub use state::State;
pub use state_machine::SledStateMachine;
pub use types::{NodeId, Raft, TypeConfig};

pub use log_store::{find_inconsistency, Inconsistency, StoreFacts};

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("opening sled at {path}: {source}")]
    Sled { path: String, source: sled::Error },
    #[error("checking the store at {path}: {source}")]
    Check {
        path: String,
        source: types::StorageError,
    },
    #[error("the store at {path} is inconsistent: {problem}. Refusing to start on it; to rejoin the cluster from a snapshot, move {path}, {path}.snapshot, {path}.entries and {path}.console away")]
    Inconsistent {
        path: String,
        problem: Inconsistency,
    },
}

/// Opens (or creates) the node's store under `dir`: one sled database holding the log, the vote and the
/// state, and the current snapshot in the file `dir.snapshot` beside it.
///
/// The store is checked before it is handed out (`log_store::find_inconsistency`). What a crash can leave
/// and is safe to repair is repaired, with a warning:
/// - a snapshot file ahead of the state: the interrupted install is completed from the file;
/// - entries left at or below the purge mark (an interrupted purge): removed;
/// - a gap inside the log or a hole before it that the state machine covers, or a state machine that has
///   overtaken the log (an install whose purge was not recorded): the purge mark raised to what it applied;
/// - a gap it does not cover (an interrupted truncation): what follows the gap was being removed, and is;
/// - a snapshot file behind the purge mark: removed (openraft builds a new one when it starts);
/// - `committed` beyond everything stored: lowered to what was applied.
///
/// Anything else — a state machine behind the purge mark with nothing here to cover what was purged (the
/// store the issue-9 bug left), a hole nothing covers, entries newer than the vote — is an
/// `OpenError::Inconsistent` naming what was found.
pub fn open_store(dir: &Path) -> Result<(SledLogStore, SledStateMachine), OpenError> {
    let path = dir.display().to_string();
    let wrap = |source| OpenError::Sled {
        path: path.clone(),
        source,
    };
    // sled's own periodic flush stays on as a backstop; durability comes from our explicit flushes.
    // sled's defaults (1 GiB page cache, throughput mode) made a node reach ~790 MiB RSS and ~900 MiB on
    // disk after 100k small writes; a 64 MiB cache and LowSpace (more eager segment reuse) bound both.
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(64 * 1024 * 1024)
        .mode(sled::Mode::LowSpace)
        .open()
        .map_err(wrap)?;
    let (link, lost_body) =
        log_store::StoreLink::open(&db, &dir.with_extension("entries")).map_err(wrap)?;
    let log = SledLogStore::open(link.clone()).map_err(wrap)?;
    let snapshot_file = dir.with_extension("snapshot");
    let sm = SledStateMachine::open(link.clone(), snapshot_file, &dir.with_extension("console"))
        .map_err(wrap)?;
    if let Some(lost) = lost_body {
        // Only a power loss between sled's own flush of a ref and the sync of its body does this (see
        // `entry_files`); entries not applied were never acknowledged as durable, so the log ends before.
        let last_applied = sm
            .facts(false)
            .map_err(|source| OpenError::Check {
                path: path.clone(),
                source,
            })?
            .last_applied;
        if last_applied.is_some_and(|la| la.index >= lost.log_id.index) {
            return Err(OpenError::Inconsistent {
                path,
                problem: log_store::Inconsistency::EntryBodyLost {
                    index: lost.log_id.index,
                    last_applied,
                },
            });
        }
        tracing::warn!(
            from = lost.log_id.index,
            "log entries whose bodies a crash lost: removed"
        );
        link.remove_from(lost.log_id.index)
            .and_then(|()| {
                link.db
                    .flush()
                    .map(|_| ())
                    .map_err(|e| io_storage_error(&e))
            })
            .map_err(|source| OpenError::Check {
                path: path.clone(),
                source,
            })?;
    }
    match check_and_repair(&sm) {
        Ok(()) => {}
        Err(CheckError::Inconsistent(problem)) => {
            return Err(OpenError::Inconsistent { path, problem })
        }
        Err(CheckError::Storage(source)) => return Err(OpenError::Check { path, source }),
    }
    if let Err(e) = sm.adopt_agreed_format() {
        tracing::error!("reading the agreed storage format: {e}");
    }
    Ok((log, sm))
}

fn io_storage_error(e: &dyn std::fmt::Display) -> types::StorageError {
    types::StorageError::from_io_error(
        openraft::ErrorSubject::Store,
        openraft::ErrorVerb::Write,
        std::io::Error::other(e.to_string()),
    )
}

enum CheckError {
    Inconsistent(Inconsistency),
    Storage(types::StorageError),
}

impl From<types::StorageError> for CheckError {
    fn from(e: types::StorageError) -> Self {
        CheckError::Storage(e)
    }
}

/// Checks the whole store and repairs, one at a time, what is safe to repair (see `open_store`).
fn check_and_repair(sm: &SledStateMachine) -> Result<(), CheckError> {
    use Inconsistency::*;
    let link = sm.link();
    for _ in 0..16 {
        let Some(problem) = find_inconsistency(&sm.facts(true)?) else {
            return Ok(());
        };
        match &problem {
            EntriesAtOrBelowPurged { last_purged, .. } => link.record_purge(*last_purged)?,
            // Entries the state machine covers on both sides of the gap: an install whose purge was not
            // recorded yet, with the leader's next entries after it. Else an interrupted truncation (an
            // older binary removed entries one by one): what follows the gap was being removed.
            GapInLog {
                resume,
                last_applied: Some(la),
                ..
            } if la.index + 1 >= *resume => link.record_purge(*la)?,
            GapInLog { first_missing, .. } => link.remove_from(*first_missing)?,
            SnapshotAheadOfState { snapshot, .. } => {
                if let Some(in_log) = link.entry_at(snapshot.index)? {
                    if in_log != *snapshot {
                        return Err(CheckError::Inconsistent(SnapshotConflictsWithLog {
                            snapshot: *snapshot,
                            in_log,
                        }));
                    }
                }
                sm.reinstall_from_file()?;
            }
            HoleBeforeLog {
                first,
                last_applied: Some(la),
                ..
            } if la.index + 1 >= *first => link.record_purge(*la)?,
            StateAheadOfLog { last_applied, .. } => link.record_purge(*last_applied)?,
            SnapshotBehindPurged { .. } => sm.remove_snapshot_file()?,
            CommittedBeyondLog { last_applied, .. } => link.set_committed(*last_applied)?,
            _ => return Err(CheckError::Inconsistent(problem)),
        }
        link.db.flush().map_err(|e| io_storage_error(&e))?;
        tracing::warn!(%problem, "repaired the store");
    }
    match find_inconsistency(&sm.facts(true)?) {
        None => Ok(()),
        Some(problem) => Err(CheckError::Inconsistent(problem)),
    }
}

/// Raft timing and snapshot policy for JobServ nodes.
pub fn raft_config() -> openraft::Config {
    openraft::Config {
        cluster_name: "jobserv".into(),
        // openraft starts an election only after `election_timeout_max` (its leader lease) plus a random
        // election timeout (drawn once per process) without a heartbeat: 320-400 ms here. Its timer ticks
        // every 1.5 heartbeat intervals, and a leader sends heartbeats on those ticks: every 150 ms, so a
        // follower campaigns after two heartbeats missed in a row (a heartbeat 170 ms late or more).
        // The heartbeat interval is also openraft's AppendEntries timeout, so it stays at 100 ms.
        // Measured by `cluster-test bench` and `bench-failover` (a SIGKILLed leader: 430-490 ms from the
        // kill to the election with 400-500 ms, about 45 ms more to the first write) and checked against
        // spurious elections on the loaded 2-core machine by the 30-minute chaos soak (`cluster-test chaos
        // --only soak --soak-seconds 1800`).
        heartbeat_interval: 100,
        election_timeout_min: 120,
        election_timeout_max: 200,
        // Compact the log every 20000 entries (a snapshot copies the whole state, so not too often); keep a
        // tail so slow followers catch up without one.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(20_000),
        max_in_snapshot_log_to_keep: 1000,
        // Each snapshot chunk (3 MiB) must be sent and stored within this; openraft's 200 ms default left a
        // wiped node retrying forever on a loaded 2-core machine (seen by `cluster-test bench --quick`).
        install_snapshot_timeout: 10_000,
        // openraft uses the heartbeat interval as the AppendEntries timeout: the log store bounds each batch
        // by bytes (`log_store::MAX_APPEND_BYTES`). The entry cap stays small because a new leader finds
        // each follower's match by binary search over the whole unpurged log (about 20,000 entries), and
        // every probe carries a full batch: with 4,096 entries / 1 MiB per probe a new leader spent 600 ms
        // re-sending log before its first commit (the bench's fail-over, after its log flood).
        max_payload_entries: 64,
        ..Default::default()
    }
}
