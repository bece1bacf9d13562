//! Runs openraft's own storage test suite (`openraft::testing::Suite`) against the sled log store and
//! state machine, each case on a fresh sled database in a temp dir.
use jobserv_raft::{open_store, SledLogStore, SledStateMachine, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

struct SledBuilder;

impl StoreBuilder<TypeConfig, SledLogStore, SledStateMachine, tempfile::TempDir> for SledBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, SledLogStore, SledStateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|e| {
            StorageError::from_io_error(
                openraft::ErrorSubject::Store,
                openraft::ErrorVerb::Write,
                e,
            )
        })?;
        let (log, sm) = open_store(&dir.path().join("raft")).map_err(|e| {
            StorageError::from_io_error(
                openraft::ErrorSubject::Store,
                openraft::ErrorVerb::Write,
                std::io::Error::other(e.to_string()),
            )
        })?;
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_store_passes_the_openraft_storage_suite() -> Result<(), StorageError<u64>> {
    Suite::test_all(SledBuilder)
}
