//! Keeping the catalog writable on a full disk. The Raft store stops for good once a write
//! fails for lack of space, and the calls that free space (deleting a namespace or a
//! snapshot) are catalog writes themselves. So the coordinator keeps a ballast file beside
//! its store: while the disk has room it is filled; once free space falls below half of it,
//! changes that grow the catalog are refused with RESOURCE_EXHAUSTED before they reach the
//! store, and a change that frees space first releases the ballast, which gives the store
//! room to write it. The ballast is filled again once the disk has room.

use std::path::{Path, PathBuf};

use longbow_common::disk::{free_bytes, total_bytes, Ballast};

use crate::catalog::CatalogCommand;
use crate::error::{CoordinatorError, Result};

/// Largest ballast.
const MAX_BALLAST: u64 = 64 << 20;
/// Smallest ballast.
const MIN_BALLAST: u64 = 1 << 20;

/// The free-space guard of a catalog store.
pub struct DiskGuard {
    dir: PathBuf,
    ballast: Ballast,
}

/// Whether a change frees space (or is tiny and needed to serve at all).
fn frees_space(cmd: &CatalogCommand) -> bool {
    matches!(
        cmd,
        CatalogCommand::DeleteNamespace { .. }
            | CatalogCommand::AbortNamespace { .. }
            | CatalogCommand::DeleteSnapshot { .. }
            | CatalogCommand::RegisterShardNode { .. }
            // Failover keeps acknowledged data available; it must not wait for space.
            | CatalogCommand::Promote { .. }
            | CatalogCommand::SetInSync { .. }
            // So does rebuilding a lost copy on another node.
            | CatalogCommand::ReplaceMember { .. }
            // Ending a move frees a node's copy.
            | CatalogCommand::FinishMove { .. }
            | CatalogCommand::AbortMove { .. }
    )
}

impl DiskGuard {
    /// A guard over the store in `dir`, with a ballast of 2 % of the filesystem (1–64 MiB).
    pub fn new(dir: &Path) -> DiskGuard {
        let size = total_bytes(dir)
            .map(|t| (t / 50).clamp(MIN_BALLAST, MAX_BALLAST))
            .unwrap_or(MIN_BALLAST);
        let guard = DiskGuard {
            dir: dir.to_path_buf(),
            ballast: Ballast::new(dir.join("BALLAST"), size),
        };
        guard.refill();
        guard
    }

    fn refill(&self) {
        if self.ballast.present() {
            return;
        }
        let room = free_bytes(&self.dir).unwrap_or(0);
        if room > 3 * self.ballast.size() {
            if let Err(e) = self.ballast.fill() {
                tracing::warn!(error = %e, "could not set the catalog's disk ballast aside");
            }
        }
    }

    /// Why the store's disk counts as full, if it does.
    pub fn full(&self) -> Option<String> {
        let free = free_bytes(&self.dir).ok()?;
        (free < self.ballast.size() / 2)
            .then(|| format!("the coordinator's disk is full ({free} bytes left)"))
    }

    /// Admit `cmd` to the store, or refuse it because the disk is full.
    pub fn admit(&self, cmd: &CatalogCommand) -> Result<()> {
        let free = free_bytes(&self.dir).unwrap_or(u64::MAX);
        if free >= self.ballast.size() / 2 {
            self.refill();
            return Ok(());
        }
        if frees_space(cmd) {
            match self.ballast.release() {
                Ok(true) => tracing::warn!(
                    free,
                    "disk full: released the catalog's ballast to write a change that frees space"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not release the catalog's ballast"),
            }
            return Ok(());
        }
        Err(CoordinatorError::DiskFull(format!(
            "the coordinator's disk is full ({free} bytes left): the change was not made; \
             delete namespaces or snapshots to free space, then retry"
        )))
    }
}
