//! The catalog read consistency a client asks for, in request header
//! `x-longbow-read-consistency`:
//!
//! - `local` (the default): the catalog as this coordinator has applied it, which may trail
//!   the leader by a heartbeat;
//! - `linearizable`: the call first waits until this coordinator holds every catalog change
//!   acknowledged before it arrived (the leader confirms its leadership with a quorum and
//!   names the index to wait for), so it sees, for example, a namespace another coordinator
//!   just created.
//!
//! Any other value is refused with INVALID_ARGUMENT naming the header, never ignored.

use longbow_common::{ContractError, ErrorExt};
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::node::Coordinator;

/// The request header.
pub const HEADER: &str = "x-longbow-read-consistency";

/// The values the header takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadConsistency {
    /// This coordinator's applied catalog.
    Local,
    /// Every catalog change acknowledged before the call.
    Linearizable,
}

/// The consistency `metadata` asks for.
pub fn requested(metadata: &MetadataMap) -> Result<ReadConsistency, ContractError> {
    let Some(value) = metadata.get(HEADER) else {
        return Ok(ReadConsistency::Local);
    };
    let bad = || ContractError::invalid(HEADER, "must be 'local' or 'linearizable'".to_string());
    let value = value.to_str().map_err(|_| bad())?;
    match value.trim().to_ascii_lowercase().as_str() {
        "local" => Ok(ReadConsistency::Local),
        "linearizable" => Ok(ReadConsistency::Linearizable),
        _ => Err(ContractError::invalid(
            HEADER,
            format!(
                "must be 'local' or 'linearizable', got {}",
                longbow_common::error::quote(value)
            ),
        )),
    }
}

/// Wait as the request's header asks before the call reads the catalog.
pub(super) async fn before_call(coord: &Coordinator, metadata: &MetadataMap) -> Result<(), Status> {
    let wanted = requested(metadata).map_err(|e| crate::CoordinatorError::from(e).to_status())?;
    if wanted == ReadConsistency::Linearizable {
        coord.group.linearize().await.map_err(|e| e.to_status())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert(HEADER, value.parse().expect("ascii"));
        m
    }

    #[test]
    fn no_header_reads_locally() {
        assert_eq!(
            requested(&MetadataMap::new()).ok(),
            Some(ReadConsistency::Local)
        );
    }

    #[test]
    fn both_values_are_understood_in_any_case() {
        assert_eq!(
            requested(&with("Linearizable")).ok(),
            Some(ReadConsistency::Linearizable)
        );
        assert_eq!(requested(&with("local")).ok(), Some(ReadConsistency::Local));
    }

    #[test]
    fn an_unknown_value_is_refused_naming_the_header() {
        let e = requested(&with("strong")).expect_err("refused");
        let msg = e.to_string();
        assert!(msg.contains(HEADER) && msg.contains("strong"), "{msg}");
    }
}
