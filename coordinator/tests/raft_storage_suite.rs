//! openraft's storage conformance suite (`openraft::testing::Suite`) against the catalog's
//! Raft store: the sled log and the snapshot-backed state machine, each test on a fresh
//! directory.

use longbow_coordinator::raft::store::{open, LogStore, StateMachine};
use longbow_coordinator::raft::TypeConfig;
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

/// Opens the store in a new temporary directory, removed when the suite drops the guard.
struct SledStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SledStore {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (log, sm) = open(dir.path()).expect("open the store");
        Ok((dir, log, sm))
    }
}

#[test]
fn the_catalog_store_passes_openraft_storage_conformance_suite() {
    Suite::test_all(SledStore).expect("every check of the suite");
}
