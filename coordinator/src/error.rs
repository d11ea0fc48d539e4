//! The coordinator layer's error type; each variant maps to a wire status, a stable
//! machine-readable code (`x-longbow-error-code`) and says whether a retry can help.

use longbow_common::{ContractError, ErrorExt, StatusCode};

/// Errors of the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The request broke the wire contract.
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// No such namespace.
    #[error("namespace {} not found", longbow_common::error::quote(.0))]
    NamespaceNotFound(String),
    /// No such record.
    #[error("{0}")]
    RecordNotFound(String),
    /// No such snapshot (or not one of the namespace named).
    #[error("{0}")]
    SnapshotNotFound(String),
    /// The namespace exists already.
    #[error("namespace {} already exists", longbow_common::error::quote(.0))]
    NamespaceExists(String),
    /// Not supported by this server (yet).
    #[error("{0}")]
    Unimplemented(String),
    /// No live shard node can host or serve the request; retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A replica-set change was decided on a state that has moved on (another epoch or
    /// primary); the sender should look again.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A shard node claimed the identity of another node that is live.
    #[error("{0}")]
    IdentityInUse(String),
    /// The coordinator's disk is full: the change was refused before it reached the store.
    #[error("{0}")]
    DiskFull(String),
    /// A Raft message reached a coordinator it was not meant for (another group, or another
    /// member now at the address).
    #[error("{0}")]
    ForeignGroup(String),
    /// Too much in flight; retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The request's deadline passed.
    #[error("deadline exceeded: {0}")]
    Deadline(String),
    /// A shard answered with an error status (its code is kept).
    #[error("shard {shard}: {status}")]
    Shard {
        /// Which shard (or node).
        shard: String,
        /// The status it returned.
        status: Box<tonic::Status>,
    },
    /// Part of a write batch was stored and another part failed: retry the whole batch (the
    /// write is an upsert by id, so a retry is idempotent).
    #[error("{failed} (the parts of this batch for {stored} other shard(s) were stored; retrying the whole batch is safe: writes are upserts by id)")]
    PartialWrite {
        /// How many shards stored their part.
        stored: usize,
        /// The error of the first shard that failed.
        failed: Box<CoordinatorError>,
    },
    /// The catalog leader refused a change or read this coordinator forwarded to it (its
    /// code and error metadata are kept).
    #[error("catalog leader: {}", .0.message())]
    Leader(Box<tonic::Status>),
    /// The Raft group failed (no leader, shutting down).
    #[error("catalog consensus: {0}")]
    Raft(String),
    /// Local catalog storage failed.
    #[error("catalog storage: {0}")]
    Storage(String),
    /// A bug.
    #[error("internal: {0}")]
    Internal(String),
}

impl ErrorExt for CoordinatorError {
    fn status_code(&self) -> StatusCode {
        match self {
            CoordinatorError::Contract(_) => StatusCode::InvalidArgument,
            CoordinatorError::NamespaceNotFound(_)
            | CoordinatorError::RecordNotFound(_)
            | CoordinatorError::SnapshotNotFound(_) => StatusCode::NotFound,
            CoordinatorError::PartialWrite { failed, .. } => failed.status_code(),
            CoordinatorError::NamespaceExists(_) | CoordinatorError::IdentityInUse(_) => {
                StatusCode::AlreadyExists
            }
            CoordinatorError::Unimplemented(_) => StatusCode::Unimplemented,
            CoordinatorError::Unavailable(_)
            | CoordinatorError::Raft(_)
            | CoordinatorError::Conflict(_) => StatusCode::Unavailable,
            CoordinatorError::Overloaded(_) | CoordinatorError::DiskFull(_) => {
                StatusCode::ResourceExhausted
            }
            CoordinatorError::Deadline(_) => StatusCode::DeadlineExceeded,
            CoordinatorError::ForeignGroup(_) => StatusCode::Unavailable,
            CoordinatorError::Shard { status, .. } => match status.code() {
                // A transport failure (connection refused, reset) reaches us as Unknown.
                tonic::Code::Unknown => StatusCode::Unavailable,
                code => StatusCode::from_tonic(code),
            },
            CoordinatorError::Leader(status) => StatusCode::from_tonic(status.code()),
            CoordinatorError::Storage(_) | CoordinatorError::Internal(_) => StatusCode::Internal,
        }
    }

    fn error_code(&self) -> &'static str {
        match self {
            CoordinatorError::Contract(_) => "invalid_argument",
            CoordinatorError::NamespaceNotFound(_) => "namespace_not_found",
            CoordinatorError::RecordNotFound(_) => "record_not_found",
            CoordinatorError::SnapshotNotFound(_) => "snapshot_not_found",
            CoordinatorError::NamespaceExists(_) => "namespace_exists",
            CoordinatorError::Unimplemented(_) => "unimplemented",
            CoordinatorError::Unavailable(_) => "unavailable",
            CoordinatorError::Conflict(_) => "replica_set_conflict",
            CoordinatorError::IdentityInUse(_) => "node_identity_in_use",
            CoordinatorError::Overloaded(_) => "overloaded",
            CoordinatorError::DiskFull(_) => "disk_full",
            CoordinatorError::ForeignGroup(_) => "foreign_raft_group",
            CoordinatorError::Deadline(_) => "deadline_exceeded",
            CoordinatorError::PartialWrite { .. } => "partial_write",
            CoordinatorError::Shard { status, .. } => match self.status_code() {
                StatusCode::Unavailable => "shard_unavailable",
                StatusCode::DeadlineExceeded => "shard_deadline_exceeded",
                StatusCode::ResourceExhausted
                    if status
                        .metadata()
                        .get(longbow_common::error::ERROR_CODE_HEADER)
                        .is_some_and(|v| v == "disk_full") =>
                {
                    "disk_full"
                }
                code => code.default_error_code(),
            },
            CoordinatorError::Raft(_) => "catalog_unavailable",
            CoordinatorError::Leader(_) => self.status_code().default_error_code(),
            CoordinatorError::Storage(_) | CoordinatorError::Internal(_) => "internal",
        }
    }

    fn retryable(&self) -> bool {
        match self {
            CoordinatorError::PartialWrite { failed, .. } => failed.retryable(),
            _ => self.status_code().retryable(),
        }
    }

    fn to_status(&self) -> tonic::Status {
        if let CoordinatorError::Leader(status) = self {
            // The leader's answer, with its own error code and retry flag.
            return (**status).clone();
        }
        let message = match self {
            // A shard's refusal of the request keeps the shard's own message (it names the
            // bad field); a failure of the shard itself names the shard, node and address.
            CoordinatorError::Shard { status, shard } => match self.status_code() {
                StatusCode::InvalidArgument
                | StatusCode::NotFound
                | StatusCode::AlreadyExists
                | StatusCode::Unimplemented => status.message().to_string(),
                _ => format!("{shard}: {}", status.message()),
            },
            // Consensus internals (peer ids, log positions) go to the log, not the client.
            CoordinatorError::Raft(detail) => {
                tracing::warn!(detail = %detail, "catalog consensus error answered as unavailable");
                "catalog consensus is unavailable right now (no Raft leader, or shutting down); retry"
                    .to_string()
            }
            _ => self.to_string(),
        };
        longbow_common::error::error_status(
            self.status_code(),
            self.error_code(),
            self.retryable(),
            &message,
        )
    }
}

impl From<CoordinatorError> for tonic::Status {
    fn from(e: CoordinatorError) -> Self {
        e.to_status()
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;
