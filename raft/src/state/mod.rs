//! The replicated state: projects, triggers, builds, runs, console logs, tests, workers and tokens, kept in
//! one sled tree (`keys` has the layout). `apply` is the only writer and runs inside the Raft state
//! machine; `read` is what the node's handlers use (local reads of the applied state).
mod apply;
mod artifacts;
mod console;
mod hooks;
pub mod keys;
mod queue;
mod read;
mod redo;
mod tally;
#[cfg(test)]
pub(crate) mod test_machine;
mod txn;

pub use apply::{validate_artifact_path, Prepared};
pub use artifacts::validate_sha256;
pub use console::ConsoleFilesInUse;
pub use queue::{host_tag_matches, pick, QueueSource, SURGE_QUEUE_LENGTH};
pub use read::{BuildPage, ConsoleSlice};
pub use redo::REDO_MAX_BYTES;

use crate::codec::CodecError;
use crate::command::StateError;
use crate::console_files::ConsoleFiles;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StateStoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    #[error("console files: {0}")]
    ConsoleFiles(#[from] std::io::Error),
    #[error("the redo record of an interrupted commit: {0}")]
    Redo(String),
}

pub type StateResult<T> = Result<T, StateStoreError>;

/// Handle on the state tree. Cheap to clone (sled trees are reference counted).
#[derive(Clone)]
pub struct State {
    tree: sled::Tree,
    /// The redo record of the commit in progress (`redo.rs`); empty between commits.
    redo: sled::Tree,
    /// Where large console chunks go (`console_files.rs`); without it every chunk stays in the tree.
    console: Option<Arc<ConsoleFiles>>,
}

impl State {
    /// The state tree `name` of `db` (and its redo tree), with the commit a crash interrupted finished.
    pub fn open(
        db: &sled::Db,
        name: &str,
        console: Option<Arc<ConsoleFiles>>,
    ) -> StateResult<Self> {
        let state = State {
            tree: db.open_tree(name)?,
            redo: db.open_tree(format!("{name}.redo"))?,
            console,
        };
        let finished = state.finish_interrupted_commit()?;
        if finished > 0 {
            tracing::warn!(
                writes = finished,
                "finished the state commit a crash interrupted"
            );
        }
        Ok(state)
    }

    pub fn console_files(&self) -> Option<&Arc<ConsoleFiles>> {
        self.console.as_ref()
    }

    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }
}

/// Names end up in keys and URLs: projects, runs, workers and tests use a conservative alphabet.
pub fn validate_name(kind: &str, name: &str) -> Result<(), StateError> {
    const MAX: usize = 128;
    if name.is_empty() || name.len() > MAX {
        return Err(StateError::Invalid(format!(
            "{kind} name must be 1 to {MAX} characters"
        )));
    }
    if name == "." || name == ".." {
        return Err(StateError::Invalid(format!(
            "{kind} name may not be {name:?}"
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.+:@".contains(*c)))
    {
        return Err(StateError::Invalid(format!(
            "{kind} name {name:?} contains {bad:?}; allowed are letters, digits and - _ . + : @"
        )));
    }
    Ok(())
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
