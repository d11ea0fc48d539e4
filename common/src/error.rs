//! Error classification shared by every layer: each error maps to one gRPC status code and
//! says whether retrying the same request can help.
//!
//! Layer error enums live in their own crates; this module only owns the mapping rules, the
//! error metadata every reply carries (a stable machine-readable code and a retry flag, see
//! [`error_status`]), and the errors raised while reading the wire contract itself.
//!
//! Messages that reach a client never carry server file paths or internals: an INTERNAL error
//! is logged in full and answered with a reference to that log line. User input is quoted
//! through [`quote`], which bounds its length.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Response metadata key carrying the stable error code (for example `namespace_not_found`).
pub const ERROR_CODE_HEADER: &str = "x-longbow-error-code";
/// Response metadata key carrying `true` when retrying the same request may succeed.
pub const RETRYABLE_HEADER: &str = "x-longbow-retryable";
/// Longest client-visible error message; longer ones are cut (user input is already bounded
/// by [`quote`], so only a long list of names ever gets here).
pub const MAX_MESSAGE_CHARS: usize = 1024;
/// Longest piece of user input quoted whole in an error message.
pub const MAX_QUOTED_CHARS: usize = 64;

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

    /// The status of a gRPC code (codes Longbow never sends map to the nearest one).
    pub fn from_tonic(code: tonic::Code) -> Self {
        match code {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => StatusCode::InvalidArgument,
            tonic::Code::NotFound => StatusCode::NotFound,
            tonic::Code::AlreadyExists => StatusCode::AlreadyExists,
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Aborted => {
                StatusCode::Unavailable
            }
            tonic::Code::ResourceExhausted => StatusCode::ResourceExhausted,
            tonic::Code::Unimplemented => StatusCode::Unimplemented,
            tonic::Code::DeadlineExceeded => StatusCode::DeadlineExceeded,
            _ => StatusCode::Internal,
        }
    }

    /// The canonical gRPC name of this status (`NOT_FOUND`).
    pub fn grpc_name(self) -> &'static str {
        match self {
            StatusCode::InvalidArgument => "INVALID_ARGUMENT",
            StatusCode::NotFound => "NOT_FOUND",
            StatusCode::AlreadyExists => "ALREADY_EXISTS",
            StatusCode::Unavailable => "UNAVAILABLE",
            StatusCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            StatusCode::Unimplemented => "UNIMPLEMENTED",
            StatusCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            StatusCode::Internal => "INTERNAL",
        }
    }

    /// The generic machine-readable code of this status (layers may give finer ones).
    pub fn default_error_code(self) -> &'static str {
        match self {
            StatusCode::InvalidArgument => "invalid_argument",
            StatusCode::NotFound => "not_found",
            StatusCode::AlreadyExists => "already_exists",
            StatusCode::Unavailable => "unavailable",
            StatusCode::ResourceExhausted => "resource_exhausted",
            StatusCode::Unimplemented => "unimplemented",
            StatusCode::DeadlineExceeded => "deadline_exceeded",
            StatusCode::Internal => "internal",
        }
    }
}

/// Quote user input for an error message: whole when short, else its first
/// [`MAX_QUOTED_CHARS`] characters and its length.
pub fn quote(input: &str) -> String {
    let n = input.chars().count();
    if n <= MAX_QUOTED_CHARS {
        format!("'{input}'")
    } else {
        let head: String = input.chars().take(MAX_QUOTED_CHARS).collect();
        format!("'{head}…' ({n} characters)")
    }
}

static INCIDENTS: AtomicU64 = AtomicU64::new(0);

/// The gRPC status of an error: `code`, the message (an INTERNAL one is logged and replaced
/// by a reference to the log line), and the metadata every Longbow error carries: the stable
/// `error_code` and the retry flag, both as response metadata ([`ERROR_CODE_HEADER`],
/// [`RETRYABLE_HEADER`]) and as the Flight error detail (JSON
/// `{"code", "retryable", "status"}`, which Flight clients see as `extra_info`).
pub fn error_status(
    code: StatusCode,
    error_code: &str,
    retryable: bool,
    message: &str,
) -> tonic::Status {
    let message = if code == StatusCode::Internal {
        let n = INCIDENTS.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::error!(incident = n, error = message, "internal error");
        format!("internal error (incident {n} in the server log)")
    } else {
        bounded(message)
    };
    let detail = serde_json::json!({
        "code": error_code,
        "retryable": retryable,
        "status": code.grpc_name(),
    });
    let mut status = tonic::Status::with_details(
        code.tonic_code(),
        message,
        detail.to_string().into_bytes().into(),
    );
    let md = status.metadata_mut();
    if let Ok(v) = error_code.parse() {
        md.insert(ERROR_CODE_HEADER, v);
    }
    md.insert(
        RETRYABLE_HEADER,
        tonic::metadata::MetadataValue::from_static(if retryable { "true" } else { "false" }),
    );
    status
}

/// The stable error code a Longbow process put on `status` (`None` for a status from
/// elsewhere, such as the transport).
pub fn error_code_of(status: &tonic::Status) -> Option<&str> {
    status
        .metadata()
        .get(ERROR_CODE_HEADER)
        .and_then(|v| v.to_str().ok())
}

/// Give a status made elsewhere (the transport, a library) Longbow's error metadata, derived
/// from its gRPC code, unless it already has it.
pub fn with_error_metadata(status: tonic::Status) -> tonic::Status {
    if status.code() == tonic::Code::Ok || status.metadata().contains_key(ERROR_CODE_HEADER) {
        return status;
    }
    let code = StatusCode::from_tonic(status.code());
    error_status(
        code,
        code.default_error_code(),
        code.retryable(),
        status.message(),
    )
}

fn bounded(message: &str) -> String {
    if message.chars().count() <= MAX_MESSAGE_CHARS {
        return message.to_string();
    }
    let head: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    format!("{head}… (message cut)")
}

/// Implemented by every layer's error enum so the service edge can answer uniformly.
pub trait ErrorExt: std::error::Error {
    /// The wire status of this error.
    fn status_code(&self) -> StatusCode;

    /// Whether retrying can help.
    fn retryable(&self) -> bool {
        self.status_code().retryable()
    }

    /// The stable machine-readable code clients match on (`x-longbow-error-code`).
    fn error_code(&self) -> &'static str {
        self.status_code().default_error_code()
    }

    /// The gRPC status sent to the caller: the code, the human message and the error
    /// metadata (see [`error_status`]).
    fn to_status(&self) -> tonic::Status {
        error_status(
            self.status_code(),
            self.error_code(),
            self.retryable(),
            &self.to_string(),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_input_is_quoted_with_its_length() {
        let long = "x".repeat(5000);
        let q = quote(&long);
        assert!(q.len() < 100, "{q}");
        assert!(q.contains("5000 characters"), "{q}");
        assert_eq!(quote("docs"), "'docs'");
    }

    #[test]
    fn every_error_carries_code_and_retry_flag() {
        let s = error_status(StatusCode::Unavailable, "shard_unavailable", true, "down");
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(
            s.metadata().get(ERROR_CODE_HEADER).map(|v| v.to_str().ok()),
            Some(Some("shard_unavailable"))
        );
        assert_eq!(
            s.metadata().get(RETRYABLE_HEADER).map(|v| v.to_str().ok()),
            Some(Some("true"))
        );
        let detail: serde_json::Value = serde_json::from_slice(s.details()).expect("json");
        assert_eq!(detail["code"], "shard_unavailable");
        assert_eq!(detail["retryable"], true);
    }

    #[test]
    fn internal_messages_are_replaced_by_an_incident_reference() {
        let s = error_status(
            StatusCode::Internal,
            "internal",
            false,
            "/var/lib/longbow/wal/000001.log: Input/output error",
        );
        assert!(!s.message().contains("/var/lib"), "{}", s.message());
        assert!(s.message().contains("incident"), "{}", s.message());
    }

    #[test]
    fn foreign_statuses_get_metadata_from_their_code() {
        let s = with_error_metadata(tonic::Status::resource_exhausted("too big"));
        assert_eq!(
            s.metadata().get(ERROR_CODE_HEADER).map(|v| v.to_str().ok()),
            Some(Some("resource_exhausted"))
        );
        assert_eq!(s.message(), "too big");
    }
}
