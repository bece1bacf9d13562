//! Console output of runs in append-only segment files beside sled (`DATA_DIR/raft.console/`); the state
//! tree keeps, per stored chunk, a `ConsoleRef` to its bytes under the chunk's key with an `r` appended
//! (`keys::console_chunk_ref`).
//!
//! Why: in sled 0.34 a log flood's console bytes were written about five times (its log, then leaf
//! consolidations and segment relocation rewriting them): ≈ 175 MB/s to the disk per node for 33 MB/s of
//! console, most of the CPU in the kernel's page-cache copies. Here a chunk is written once.
//!
//! Only chunks of at least `MIN_BYTES` come here (one update's new bytes); smaller ones stay in the tree,
//! where they cost no extra fsync (`state/apply.rs`).
//!
//! Durability: `State::prepare` writes an entry's bodies; they are synced (`State::sync_console_files`)
//! **before** `State::commit` makes the writes that hold their refs, so sled can never persist (on
//! its own, early) a ref to bytes that are not on disk. Bodies whose refs a crash lost are garbage; the
//! entry is applied again after the restart and writes them anew.
//!
//! Refs are this node's business: a snapshot or a backup carries the bytes inline under the chunk's plain
//! key (`State::export`), so neither format changed and a node without this file reads them.
//!
//! Space: a segment file is deleted once no ref points into it (`State::sweep_console_files`, after every
//! snapshot build and on open): deleted runs and reruns free their segments as the runs around them go.
use crate::segment_files::{Place, Segments};
use std::collections::BTreeSet;
use std::path::Path;

const SEGMENT_MAGIC: &[u8; 15] = b"jobserv-cons-sg";
/// A new segment is started once the current one holds this much.
const SEGMENT_BYTES: u64 = 64 << 20;
/// New console bytes of one update below this stay in the state tree.
pub const MIN_BYTES: usize = 16 << 10;

/// Where a chunk's bytes are: stored in the state tree (`codec`-encoded, so versioned).
pub(crate) type ConsoleRef = Place;

pub struct ConsoleFiles {
    segments: Segments,
}

impl ConsoleFiles {
    /// Opens `dir` (created if missing). Every segment is kept: which are still referenced is for
    /// `State::sweep_console_files` to find.
    pub fn open(dir: &Path) -> std::io::Result<ConsoleFiles> {
        Self::open_with(dir, SEGMENT_BYTES)
    }

    pub(crate) fn open_with(dir: &Path, segment_bytes: u64) -> std::io::Result<ConsoleFiles> {
        let (segments, _) = Segments::open(dir, SEGMENT_MAGIC, segment_bytes, |_| true)?;
        Ok(ConsoleFiles { segments })
    }

    /// Writes `bytes` at the end of the current segment (not synced: `sync` does).
    pub(crate) fn append(&self, bytes: &[u8]) -> std::io::Result<ConsoleRef> {
        self.segments.append(bytes)
    }

    pub(crate) fn sync(&self) -> std::io::Result<()> {
        self.segments.sync()
    }

    pub(crate) fn read(&self, r: &ConsoleRef) -> std::io::Result<Vec<u8>> {
        self.segments.read(r)
    }

    /// The segment being written: refs to older ones are never created any more.
    pub(crate) fn current(&self) -> u64 {
        self.segments.current()
    }

    /// Deletes the segments below `below` that are not in `referenced`; how many went.
    pub(crate) fn delete_unreferenced(
        &self,
        referenced: &BTreeSet<u64>,
        below: u64,
    ) -> std::io::Result<usize> {
        let doomed: Vec<u64> = self
            .segments
            .numbers()
            .into_iter()
            .filter(|s| *s < below && !referenced.contains(s))
            .collect();
        self.segments.delete(&doomed)?;
        Ok(doomed.len())
    }

    pub fn segment_numbers(&self) -> Vec<u64> {
        self.segments.numbers()
    }
}
