//! Error classification shared by every layer: each error maps to one gRPC status code and
//! says whether retrying the same request can help.
//!
//! Layer error enums live in their own crates; this module only owns the mapping rules and the
//! errors raised while reading the wire contract itself.

use std::fmt;

/// The status a Longbow error maps to on the wire (a subset of gRPC codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    /// The request is malformed; the message names the bad field.
    InvalidArgument,
    /// A namespace, replica or record does not exist.
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// A node or replica cannot serve right now; retrying may succeed.
    Unavailable,
    /// Back-pressure: too much in flight; retry later.
    ResourceExhausted,
    /// The operation is not supported (yet) by this server.
    Unimplemented,
    /// A deadline passed before the work finished.
    DeadlineExceeded,
    /// A bug or an unexpected local failure (disk I/O, corrupted state).
    Internal,
}

impl StatusCode {
    /// Whether a client may retry the same request and expect a different outcome.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            StatusCode::Unavailable | StatusCode::ResourceExhausted | StatusCode::DeadlineExceeded
        )
    }

    /// The gRPC code for this status.
    pub fn tonic_code(self) -> tonic::Code {
        match self {
            StatusCode::InvalidArgument => tonic::Code::InvalidArgument,
            StatusCode::NotFound => tonic::Code::NotFound,
            StatusCode::AlreadyExists => tonic::Code::AlreadyExists,
            StatusCode::Unavailable => tonic::Code::Unavailable,
            StatusCode::ResourceExhausted => tonic::Code::ResourceExhausted,
            StatusCode::Unimplemented => tonic::Code::Unimplemented,
            StatusCode::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            StatusCode::Internal => tonic::Code::Internal,
        }
    }
}

/// Implemented by every layer's error enum so the service edge can answer uniformly.
pub trait ErrorExt: std::error::Error {
    /// The wire status of this error.
    fn status_code(&self) -> StatusCode;

    /// Whether retrying can help.
    fn retryable(&self) -> bool {
        self.status_code().retryable()
    }

    /// The gRPC status sent to the caller: the code plus the human message.
    fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.status_code().tonic_code(), self.to_string())
    }
}

/// An error found while reading a request against the wire contract.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContractError {
    /// A field is missing, has the wrong type or an out-of-range value.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// Dotted path of the offending field, e.g. `filter.and[0].op` or `vector[3]`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ContractError {
    /// Shorthand for [`ContractError::InvalidField`].
    pub fn invalid(field: impl Into<String>, reason: impl fmt::Display) -> Self {
        ContractError::InvalidField {
            field: field.into(),
            reason: reason.to_string(),
        }
    }
}

impl ErrorExt for ContractError {
    fn status_code(&self) -> StatusCode {
        StatusCode::InvalidArgument
    }
}
