//! The shard layer's error type. Every variant maps to one wire status and says whether a
//! retry can help (through [`ErrorExt`]).

use longbow_common::shard_api::ReplicaKey;
use longbow_common::{ContractError, ErrorExt, StatusCode};

use crate::wal::WalError;

/// Errors of the shard node.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The request broke the wire contract (bad field, dimension, type, ...).
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// No such replica on this node.
    #[error("replica {0} not found on this shard node")]
    ReplicaNotFound(ReplicaKey),
    /// The replica exists already.
    #[error("replica {0} already exists on this shard node")]
    ReplicaExists(ReplicaKey),
    /// No part of this snapshot on this shard node.
    #[error("snapshot {0} has no part on this shard node")]
    SnapshotNotFound(String),
    /// The snapshot part exists already.
    #[error("snapshot {0} already has this part on this shard node")]
    SnapshotExists(String),
    /// The replica cannot take writes (its WAL failed, or it is shutting down).
    #[error("replica {key} is unavailable: {reason}")]
    Unavailable {
        /// Which replica.
        key: ReplicaKey,
        /// Why.
        reason: String,
    },
    /// The disk is full: the write was refused and nothing of it was kept; retry once space
    /// is freed (reads keep working).
    #[error("replica {key}: the disk is full, the write was not stored ({reason}); writes resume by themselves once space is freed")]
    DiskFull {
        /// Which replica.
        key: ReplicaKey,
        /// The OS error.
        reason: String,
    },
    /// A request carried an epoch older than the replica accepted: it comes from a primary,
    /// or a coordinator, that the replica set has moved past.
    #[error("replica {key}: epoch {got} is stale, this replica is at epoch {current}")]
    StaleEpoch {
        /// Which replica.
        key: ReplicaKey,
        /// The epoch the request carried.
        got: u64,
        /// The replica's epoch.
        current: u64,
    },
    /// A write went to a replica that is not its shard's primary (or not configured yet).
    #[error("replica {key} is not the primary of its shard{detail}")]
    NotPrimary {
        /// Which replica.
        key: ReplicaKey,
        /// More about why.
        detail: String,
    },
    /// Replicated entries do not follow this backup's log, which ends at `lsn` (or the
    /// primary of this epoch has not probed it yet): the primary must catch it up.
    #[error("replica {key}: the entries do not follow its log, which ends at LSN {lsn}")]
    LogGap {
        /// Which replica.
        key: ReplicaKey,
        /// Where its log ends.
        lsn: u64,
    },
    /// The replica cannot be brought in line from the log alone: it needs its primary's
    /// segment files.
    #[error("replica {key} needs a transfer of its primary's segments: {reason}")]
    NeedsTransfer {
        /// Which replica.
        key: ReplicaKey,
        /// Why.
        reason: String,
    },
    /// The WAL could not be read or written.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A local file operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// File or directory concerned.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A stored file is damaged or does not match the manifest.
    #[error("stored data in {path} is damaged: {reason}")]
    Corrupt {
        /// File or directory concerned.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The request is for an older namespace of this name than the replica it found (a
    /// coordinator acting on a catalog that has moved on).
    #[error("replica {key} belongs to incarnation {have} of its namespace, the request to incarnation {got}")]
    NewerIncarnation {
        /// The replica.
        key: ReplicaKey,
        /// Its incarnation.
        have: u64,
        /// The request's.
        got: u64,
    },
    /// The data directory is locked by another process (or cannot be locked).
    #[error(transparent)]
    Locked(#[from] longbow_common::dirlock::DirLockError),
    /// Arrow failed on data that was already validated: a bug.
    #[error("internal Arrow error: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

impl ErrorExt for ShardError {
    fn error_code(&self) -> &'static str {
        match self {
            ShardError::DiskFull { .. } => "disk_full",
            ShardError::StaleEpoch { .. } => "stale_epoch",
            ShardError::NotPrimary { .. } => "not_primary",
            ShardError::LogGap { .. } => "log_gap",
            ShardError::NeedsTransfer { .. } => "needs_transfer",
            ShardError::NewerIncarnation { .. } => "newer_incarnation",
            _ => self.status_code().default_error_code(),
        }
    }

    fn status_code(&self) -> StatusCode {
        match self {
            ShardError::Contract(_) => StatusCode::InvalidArgument,
            ShardError::ReplicaNotFound(_) | ShardError::SnapshotNotFound(_) => {
                StatusCode::NotFound
            }
            ShardError::ReplicaExists(_) | ShardError::SnapshotExists(_) => {
                StatusCode::AlreadyExists
            }
            ShardError::Unavailable { .. }
            | ShardError::StaleEpoch { .. }
            | ShardError::NotPrimary { .. }
            | ShardError::LogGap { .. }
            | ShardError::NeedsTransfer { .. }
            | ShardError::NewerIncarnation { .. } => StatusCode::Unavailable,
            ShardError::DiskFull { .. } => StatusCode::ResourceExhausted,
            ShardError::Wal(_)
            | ShardError::Io { .. }
            | ShardError::Corrupt { .. }
            | ShardError::Arrow(_)
            | ShardError::Locked(_) => StatusCode::Internal,
        }
    }
}

impl From<ShardError> for tonic::Status {
    fn from(e: ShardError) -> Self {
        e.to_status()
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = ShardError> = std::result::Result<T, E>;
