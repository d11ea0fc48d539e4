//! A primary's link to one backup: the calls it makes on it (replicate, probe, truncate) and
//! bringing the backup's log in line with its own.
//!
//! Bringing in line ([`BackupLink::sync`]) follows Kafka's leader-epoch truncation: the backup
//! says where its log ends and in which epoch; the primary answers with where that epoch ends
//! in its own log; the backup cuts everything after the smaller of the two (entries an earlier
//! primary logged but never got acknowledged), and the primary sends what is missing from its
//! WAL. A link is synced once per epoch before it forwards live groups, and again whenever the
//! backup says the entries do not follow its log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use longbow_common::channels::Channels;
use longbow_common::replication_api::{
    encode_framed, encode_replicate, InstallTransfer, Member, ProbeReply, ProbeRequest,
    ReplicateHeader, ReplicateReply, TransferFileHeader, TransferFileReply, TruncateRequest,
    ACTION_INSTALL_TRANSFER, ACTION_PROBE_REPLICA, ACTION_REPLICATE, ACTION_TRANSFER_FILE,
    ACTION_TRUNCATE_REPLICA,
};
use longbow_common::shard_api::ReplicaKey;

use crate::replica::epoch::Epochs;
use crate::wal::{Tail, WalFiles};

/// Bytes of WAL entries sent per call while catching a backup up.
pub const CATCH_UP_CHUNK: usize = 4 << 20;

/// Why a backup could not be brought in line.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The call failed (the backup is down, slow, or refused).
    #[error("backup node {node} ({addr}): {status}")]
    Call {
        /// Backup node.
        node: u64,
        /// Its address.
        addr: String,
        /// What it answered.
        status: String,
    },
    /// The entries it lacks are no longer in this primary's WAL, or its log diverged below
    /// its checkpoint: it needs the primary's segment files.
    #[error("backup node {node} needs a transfer of the shard's segments: {reason}")]
    NeedsTransfer {
        /// Backup node.
        node: u64,
        /// Why.
        reason: String,
    },
}

/// One backup as its primary sees it.
pub struct BackupLink {
    /// The backup.
    pub member: Member,
    key: ReplicaKey,
    epoch: u64,
    primary: u64,
    synced: AtomicBool,
    peers: Arc<Channels>,
    timeout: Duration,
    /// Set once the catalog took the backup out of the in-sync set: groups still being sent
    /// on the link no longer wait for it.
    dropped: AtomicBool,
    dropped_notify: tokio::sync::Notify,
}

impl BackupLink {
    /// A link, not yet synced, from the primary `primary` of `epoch` to `member`.
    pub fn new(
        key: ReplicaKey,
        epoch: u64,
        primary: u64,
        member: Member,
        peers: Arc<Channels>,
        timeout: Duration,
    ) -> BackupLink {
        BackupLink {
            member,
            key,
            epoch,
            primary,
            synced: AtomicBool::new(false),
            peers,
            timeout,
            dropped: AtomicBool::new(false),
            dropped_notify: tokio::sync::Notify::new(),
        }
    }

    /// Mark the link dropped: call only once the catalog no longer counts the backup in
    /// sync, so no acknowledgement needs it any more.
    pub fn drop_from_sync(&self) {
        self.dropped.store(true, Ordering::Release);
        self.dropped_notify.notify_waiters();
    }

    /// Resolves once [`BackupLink::drop_from_sync`] was called (at once if it was).
    pub async fn dropped(&self) {
        let notified = self.dropped_notify.notified();
        if self.dropped.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    /// Whether the backup was brought in line in this epoch and has taken every group since.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// A failed call or step on this link, saying why.
    pub fn error(&self, status: impl Into<String>) -> LinkError {
        LinkError::Call {
            node: self.member.node,
            addr: self.member.addr.clone(),
            status: status.into(),
        }
    }

    fn failed(&self, s: tonic::Status) -> LinkError {
        if longbow_common::error::error_code_of(&s) == Some("needs_transfer") {
            return LinkError::NeedsTransfer {
                node: self.member.node,
                reason: s.message().to_string(),
            };
        }
        self.error(format!("{}: {}", s.code(), s.message()))
    }

    /// Send entries (WAL encoding) labelled by `starts`.
    pub async fn replicate(
        &self,
        entries: &[u8],
        starts: Vec<(u64, u64)>,
    ) -> Result<ReplicateReply, LinkError> {
        let header = ReplicateHeader {
            namespace: self.key.namespace.clone(),
            shard: self.key.shard,
            epoch: self.epoch,
            primary: self.primary,
            starts,
        };
        let body = encode_replicate(&header, entries);
        let reply = self
            .peers
            .action_bytes(&self.member.addr, ACTION_REPLICATE, body, self.timeout)
            .await
            .map_err(|s| self.failed(s))?;
        serde_json::from_slice(&reply).map_err(|e| self.error(format!("bad Replicate reply: {e}")))
    }

    async fn probe(&self) -> Result<ProbeReply, LinkError> {
        let req = ProbeRequest {
            namespace: self.key.namespace.clone(),
            shard: self.key.shard,
            epoch: self.epoch,
        };
        self.peers
            .action(&self.member.addr, ACTION_PROBE_REPLICA, &req, self.timeout)
            .await
            .map_err(|s| self.failed(s))
    }

    async fn truncate(&self, after_lsn: u64) -> Result<ProbeReply, LinkError> {
        let req = TruncateRequest {
            namespace: self.key.namespace.clone(),
            shard: self.key.shard,
            epoch: self.epoch,
            after_lsn,
        };
        // Cutting the log reopens the replica: give it longer than a plain call.
        self.peers
            .action(
                &self.member.addr,
                ACTION_TRUNCATE_REPLICA,
                &req,
                self.timeout * 10,
            )
            .await
            .map_err(|s| self.failed(s))
    }

    /// Send `bytes` of transferred file `file` (at `offset`) in transfer `transfer`.
    pub async fn transfer_file(
        &self,
        transfer: &str,
        file: &str,
        offset: u64,
        bytes: &[u8],
    ) -> Result<TransferFileReply, LinkError> {
        let header = TransferFileHeader {
            namespace: self.key.namespace.clone(),
            shard: self.key.shard,
            epoch: self.epoch,
            primary: self.primary,
            transfer: transfer.to_string(),
            file: file.to_string(),
            offset,
        };
        let reply = self
            .peers
            .action_bytes(
                &self.member.addr,
                ACTION_TRANSFER_FILE,
                encode_framed(&header, bytes),
                self.timeout * 5,
            )
            .await
            .map_err(|s| self.failed(s))?;
        serde_json::from_slice(&reply)
            .map_err(|e| self.error(format!("bad TransferFile reply: {e}")))
    }

    /// Ask the backup to install transfer `transfer` of the checkpoint `manifest` describes;
    /// `bytes` is what it has to check (it sets the time allowed).
    pub async fn install(
        &self,
        transfer: &str,
        manifest: serde_json::Value,
        epochs: Vec<(u64, u64)>,
        bytes: u64,
    ) -> Result<ProbeReply, LinkError> {
        let req = InstallTransfer {
            namespace: self.key.namespace.clone(),
            shard: self.key.shard,
            epoch: self.epoch,
            primary: self.primary,
            transfer: transfer.to_string(),
            manifest,
            epochs,
        };
        // Checking is reading every byte once: allow 20 MB/s on top of a reopen.
        let allowed = self.timeout * 10 + Duration::from_secs(bytes / (20 << 20));
        self.peers
            .action(&self.member.addr, ACTION_INSTALL_TRANSFER, &req, allowed)
            .await
            .map_err(|s| self.failed(s))
    }

    /// Mark the link as needing a sync before the next live group.
    pub fn unsync(&self) {
        self.synced.store(false, Ordering::Release);
    }

    /// Bring the backup's log in line with this primary's up to `upto` (this log's entries
    /// are in `wal`, its epochs in `epochs`): probe, cut a diverged suffix, send the missing
    /// entries. Returns the backup's last LSN, which is `upto` on success.
    pub async fn sync(&self, wal: &WalFiles, epochs: &Epochs, upto: u64) -> Result<u64, LinkError> {
        let p = self.probe().await?;
        let keep = epochs.end_of(p.last_epoch, upto).min(p.lsn);
        let mut have = p.lsn;
        if keep < p.lsn {
            tracing::info!(replica = %self.key, backup = self.member.node, backup_lsn = p.lsn, keep, "cutting back a backup's log that diverged from this primary's");
            have = self.truncate(keep).await?.lsn;
        }
        while have < upto {
            let bytes = match wal.read_from(have + 1, CATCH_UP_CHUNK) {
                Ok(Tail::Entries { bytes, last }) if last > have => bytes,
                Ok(Tail::Entries { .. }) => break,
                Ok(Tail::Gone) => {
                    return Err(LinkError::NeedsTransfer {
                        node: self.member.node,
                        reason: format!(
                            "it has LSNs up to {have}, and this primary's WAL no longer holds {}",
                            have + 1
                        ),
                    })
                }
                Err(e) => return Err(self.error(format!("reading this primary's WAL: {e}"))),
            };
            let last = crate::wal::entry::scan(&bytes, 0)
                .0
                .last()
                .map(|e| e.lsn)
                .unwrap_or(have);
            let reply = self
                .replicate(&bytes, epochs.covering(have + 1, last))
                .await?;
            if !reply.appended || reply.lsn <= have {
                return Err(self.error(format!(
                    "refused catch-up entries from {} (its log ends at {})",
                    have + 1,
                    reply.lsn
                )));
            }
            have = reply.lsn;
        }
        self.synced.store(true, Ordering::Release);
        Ok(have)
    }
}
