//! Replicated state for JobServ: the commands, the state machine that applies them to sled, the sled log
//! store, and the HTTPS transport between nodes. The node crate builds on this; the worker never links it.
//!
//! Invariants:
//! - every durable change is a `Command` applied in log order by `SledStateMachine` (handlers only read);
//! - nothing is acknowledged to openraft as written before `flush` made it durable (`log_store`);
//! - everything stored or sent between nodes goes through `codec` and carries a format version.
pub mod codec;
pub mod command;
pub mod hooks;
pub mod log_store;
pub mod model;
pub mod network;
pub mod state;
pub mod state_machine;
pub mod types;

pub use command::{Command, CommandResult, StateError};
pub use log_store::SledLogStore;
pub use state::State;
pub use state_machine::SledStateMachine;
pub use types::{NodeId, Raft, TypeConfig};

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("opening sled at {path}: {source}")]
    Sled { path: String, source: sled::Error },
}

/// Opens (or creates) the node's store under `dir`: one sled database holding the log, the vote and the
/// state, and the current snapshot in the file `dir.snapshot` beside it.
pub fn open_store(dir: &Path) -> Result<(SledLogStore, SledStateMachine), OpenError> {
    let wrap = |source| OpenError::Sled {
        path: dir.display().to_string(),
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
    let log = SledLogStore::open(&db).map_err(wrap)?;
    let snapshot_file = dir.with_extension("snapshot");
    let sm = SledStateMachine::open(&db, snapshot_file).map_err(wrap)?;
    if let Err(e) = sm.adopt_agreed_format() {
        tracing::error!("reading the agreed storage format: {e}");
    }
    Ok((log, sm))
}

/// Raft timing and snapshot policy for JobServ nodes.
pub fn raft_config() -> openraft::Config {
    openraft::Config {
        cluster_name: "jobserv".into(),
        // openraft starts an election only after `election_timeout_max` (its leader lease) plus a random
        // election timeout without a heartbeat: 1.5-2 s here, long enough not to fire on a loaded 2-core
        // machine, short enough for a fail-over within a few seconds.
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        // Compact the log every 20000 entries (a snapshot copies the whole state, so not too often); keep a
        // tail so slow followers catch up without one.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(20_000),
        max_in_snapshot_log_to_keep: 1000,
        // Each snapshot chunk (3 MiB) must be sent and stored within this; openraft's 200 ms default left a
        // wiped node retrying forever on a loaded 2-core machine (seen by `cluster-test bench --quick`).
        install_snapshot_timeout: 10_000,
        // openraft uses the heartbeat interval as the AppendEntries timeout: keep batches small enough to
        // cross it even with 64 KiB console chunks (300 of them timed out again and again in debug builds).
        max_payload_entries: 32,
        ..Default::default()
    }
}
