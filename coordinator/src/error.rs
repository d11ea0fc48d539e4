//! The coordinator layer's error type; each variant maps to a wire status and says whether a
//! retry can help.

use longbow_common::{ContractError, ErrorExt, StatusCode};

/// Errors of the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The request broke the wire contract.
    #[error(transparent)]
    Contract(#[from] ContractError),
    /// No such namespace.
    #[error("namespace '{0}' not found")]
    NamespaceNotFound(String),
    /// The namespace exists already.
    #[error("namespace '{0}' already exists")]
    NamespaceExists(String),
    /// Not supported by this server (yet).
    #[error("{0}")]
    Unimplemented(String),
    /// No live shard node can host or serve the request; retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
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
            CoordinatorError::NamespaceNotFound(_) => StatusCode::NotFound,
            CoordinatorError::NamespaceExists(_) => StatusCode::AlreadyExists,
            CoordinatorError::Unimplemented(_) => StatusCode::Unimplemented,
            CoordinatorError::Unavailable(_) | CoordinatorError::Raft(_) => StatusCode::Unavailable,
            CoordinatorError::Overloaded(_) => StatusCode::ResourceExhausted,
            CoordinatorError::Deadline(_) => StatusCode::DeadlineExceeded,
            CoordinatorError::Shard { status, .. } => match status.code() {
                tonic::Code::InvalidArgument => StatusCode::InvalidArgument,
                tonic::Code::NotFound => StatusCode::NotFound,
                tonic::Code::AlreadyExists => StatusCode::AlreadyExists,
                tonic::Code::ResourceExhausted => StatusCode::ResourceExhausted,
                tonic::Code::DeadlineExceeded => StatusCode::DeadlineExceeded,
                tonic::Code::Unimplemented => StatusCode::Unimplemented,
                tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown => {
                    StatusCode::Unavailable
                }
                _ => StatusCode::Internal,
            },
            CoordinatorError::Storage(_) | CoordinatorError::Internal(_) => StatusCode::Internal,
        }
    }

    fn to_status(&self) -> tonic::Status {
        match self {
            // Keep the shard's own message: it names the bad field.
            CoordinatorError::Shard { status, .. }
                if self.status_code() != StatusCode::Internal =>
            {
                tonic::Status::new(
                    self.status_code().tonic_code(),
                    status.message().to_string(),
                )
            }
            _ => tonic::Status::new(self.status_code().tonic_code(), self.to_string()),
        }
    }
}

impl From<CoordinatorError> for tonic::Status {
    fn from(e: CoordinatorError) -> Self {
        e.to_status()
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;
