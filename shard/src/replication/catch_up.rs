//! Catching up a member outside the in-sync set: a task on its primary sends it the WAL it
//! lacks (after a segment transfer when the WAL no longer holds it), round after round, and
//! once it is close behind, pauses the primary's commits (by holding the gate), sends the
//! rest and asks a coordinator to put it back in the in-sync set. Commits resume with it among the backups every group goes to.
//!
//! If that last request fails in a way that leaves its outcome unknown, the primary fences
//! itself: the catalog may now count the member as in sync while the primary does not send
//! it groups, so nothing may be acknowledged until a coordinator configures the primary again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use longbow_common::replication_api::{Member, Role};

use super::link::{BackupLink, LinkError};
use super::{link_to, PrimaryForward};

/// A member this many entries behind (or closer) is put back in sync.
const CLOSE_ENOUGH: u64 = 64;

impl PrimaryForward {
    fn current(&self) -> bool {
        self.generation.load(Ordering::Acquire) == self.version
    }

    /// Start catching `member` up (until it is in sync or this configuration is superseded).
    pub(super) fn spawn_catch_up(self: &Arc<Self>, member: Member) {
        let Some(rt) = self.runtime.clone() else {
            return;
        };
        let this = self.clone();
        rt.spawn(async move { this.catch_up(member).await });
    }

    async fn catch_up(self: Arc<Self>, member: Member) {
        let node = member.node;
        let link = Arc::new(link_to(
            &self.key,
            &self.cfg,
            member,
            &self.peers,
            self.timeout,
        ));
        let mut backoff = Duration::from_millis(200);
        let mut warned = false;
        while self.current() {
            let Some(wal) = self.replica.upgrade().map(|r| r.wal_files().clone()) else {
                return;
            };
            let upto = wal.durable_lsn();
            let outcome = match link.sync(&wal, &self.epochs, upto).await {
                Ok(_) if wal.durable_lsn().saturating_sub(upto) <= CLOSE_ENOUGH => {
                    self.clone().join(link.clone()).await
                }
                Ok(_) => Ok(false),
                Err(LinkError::NeedsTransfer { reason, .. }) => {
                    tracing::info!(replica = %self.key, backup = node, %reason, "sending a backup this primary's segment files");
                    self.transfer(&link)
                        .await
                        .map(|_| false)
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(true) => return,
                Ok(false) => backoff = Duration::from_millis(200),
                Err(e) => {
                    if !warned {
                        tracing::warn!(replica = %self.key, backup = node, error = %e, "catching a backup up failed; retrying");
                        warned = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The last step, with commits paused. `Ok(true)`: done (joined, or this configuration
    /// is over); `Ok(false)`: try another round.
    async fn join(self: Arc<Self>, link: Arc<BackupLink>) -> Result<bool, String> {
        tokio::task::spawn_blocking(move || self.join_paused(link))
            .await
            .map_err(|e| format!("catch-up task: {e}"))?
    }

    fn join_paused(&self, link: Arc<BackupLink>) -> Result<bool, String> {
        let (Some(replica), Some(rt)) = (self.replica.upgrade(), self.runtime.clone()) else {
            return Ok(true);
        };
        let mut gate = replica.gate().lock();
        if !self.current()
            || gate.role != Some(Role::Primary)
            || gate.epochs.current != self.cfg.epoch
        {
            return Ok(true);
        }
        let wal = replica.wal_files().clone();
        let upto = wal.durable_lsn();
        rt.block_on(link.sync(&wal, &self.epochs, upto))
            .map_err(|e: LinkError| e.to_string())?;
        let node = link.member.node;
        match rt.block_on(self.update_in_sync(Vec::new(), vec![node])) {
            Ok(cfg) if cfg.epoch == self.cfg.epoch && cfg.in_sync.contains(&node) => {
                tracing::info!(replica = %self.key, backup = node, lsn = upto, "backup caught up; it is in sync again");
                gate.in_sync = cfg.in_sync;
                self.links.lock().push(link);
                Ok(true)
            }
            Ok(cfg) if cfg.epoch != self.cfg.epoch => Ok(true),
            Ok(_) => Ok(false),
            Err(e) => {
                gate.fenced = Some(format!(
                    "putting node {node} back in sync had an unknown outcome ({e})"
                ));
                Err(e)
            }
        }
    }
}
