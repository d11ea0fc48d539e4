//! The catalog's Raft group: type configuration, start-up and the typed write path.
//!
//! Log and vote live in `sled`, the state machine in memory with snapshots in a file
//! ([`store`]); RPCs between coordinators travel
//! over the internal Flight port ([`network`]). One coordinator is a one-voter cluster.

pub mod disk;
pub mod network;
pub mod store;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use parking_lot::RwLock;

use crate::catalog::{Catalog, CatalogCommand, CatalogResponse};
use crate::error::{CoordinatorError, Result};

openraft::declare_raft_types!(
    /// Raft types of the catalog group.
    pub TypeConfig:
        D = CatalogCommand,
        R = CatalogResponse,
);

/// Log entries kept after a snapshot covers them, so a follower slightly behind catches up
/// from the log instead of a whole snapshot.
pub const LOGS_KEPT: u64 = 100;

/// The running Raft node.
pub type CatalogRaft = Raft<TypeConfig>;

/// A started catalog: the Raft handle plus a read view of the applied state.
#[derive(Clone)]
pub struct CatalogGroup {
    /// Raft handle.
    pub raft: CatalogRaft,
    /// The state machine's catalog, read locally (reads never go through Raft).
    pub catalog: Arc<RwLock<Catalog>>,
    /// This coordinator's Raft id.
    pub id: u64,
    /// Refuses growth of the catalog on a full disk, keeps deletes writable.
    disk: Arc<disk::DiskGuard>,
}

impl CatalogGroup {
    /// Open the Raft storage under `dir` and start the node. A coordinator whose storage is
    /// empty initialises a one-voter cluster of itself at `internal_addr`. A snapshot of the
    /// catalog is written every `snapshot_logs` entries and the log it covers is purged
    /// (all but the last [`LOGS_KEPT`], for followers slightly behind).
    pub async fn start(
        id: u64,
        internal_addr: &str,
        dir: &Path,
        snapshot_logs: u64,
    ) -> Result<CatalogGroup> {
        let (log_store, state_machine) = store::open(dir)?;
        let catalog = state_machine.catalog();
        let config = Config {
            cluster_name: "longbow-catalog".into(),
            heartbeat_interval: 250,
            election_timeout_min: 500,
            election_timeout_max: 1000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_logs.max(1)),
            max_in_snapshot_log_to_keep: LOGS_KEPT,
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| CoordinatorError::Storage(e.to_string()))?,
        );
        let raft = Raft::new(id, config, network::Network, log_store, state_machine)
            .await
            .map_err(|e| CoordinatorError::Raft(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| CoordinatorError::Raft(e.to_string()))?;
        if !initialized {
            let members = BTreeMap::from([(
                id,
                BasicNode {
                    addr: internal_addr.to_string(),
                },
            )]);
            raft.initialize(members)
                .await
                .map_err(|e| CoordinatorError::Raft(e.to_string()))?;
        }
        Ok(CatalogGroup {
            raft,
            catalog,
            id,
            disk: Arc::new(disk::DiskGuard::new(dir)),
        })
    }

    /// Propose a change and wait until it is committed and applied.
    pub async fn write(&self, cmd: CatalogCommand) -> Result<CatalogResponse> {
        self.disk.admit(&cmd)?;
        match self.raft.client_write(cmd).await {
            Ok(resp) => Ok(resp.data),
            Err(e) => Err(CoordinatorError::Raft(e.to_string())),
        }
    }

    /// Why the catalog's disk counts as full, if it does (the catalog then only deletes).
    pub fn disk_full(&self) -> Option<String> {
        self.disk.full()
    }

    /// Wait (bounded) until this node leads, so writes can be served.
    pub async fn wait_leader(&self, timeout: std::time::Duration) -> Result<()> {
        let mut metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if metrics.borrow().current_leader.is_some() {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .is_err()
            {
                return Err(CoordinatorError::Raft(
                    "no Raft leader elected in time".into(),
                ));
            }
        }
    }

    /// Whether this coordinator leads the catalog group now.
    pub fn is_leader(&self) -> bool {
        self.term_and_leader().1 == Some(self.id)
    }

    /// `(term, leader)` for metrics and status.
    pub fn term_and_leader(&self) -> (u64, Option<u64>) {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.current_term, m.current_leader)
    }

    /// Stop the Raft node.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}
