//! `AddCoordinator` and `RemoveCoordinator`: changes of the coordinator group, sent to any
//! coordinator (a follower forwards them to the leader). The group logic is in
//! [`crate::raft::membership`]; this module only reads the body and shapes the answer.

use longbow_common::ContractError;

use super::actions::json;
use super::requests::{self, fold, CoordinatorBody};
use crate::error::Result;
use crate::node::Coordinator;
use crate::raft::forward::MembershipChange;

/// Run one of the two actions (`kind` is canonical).
pub(super) async fn handle(coord: &Coordinator, kind: &str, body: &[u8]) -> Result<Vec<u8>> {
    let req: CoordinatorBody = fold(&requests::COORDINATOR, body)?.into_typed("")?;
    let change = match (kind, req.address) {
        ("AddCoordinator", Some(address)) => MembershipChange::Add {
            node_id: req.node_id,
            address,
        },
        ("AddCoordinator", None) => {
            return Err(ContractError::invalid(
                "address",
                "is missing: give the new coordinator's internal host:port",
            )
            .into())
        }
        (_, Some(_)) => {
            return Err(ContractError::invalid(
                "address",
                "is not taken by RemoveCoordinator: give node_id only",
            )
            .into())
        }
        (_, None) => MembershipChange::Remove {
            node_id: req.node_id,
        },
    };
    coord
        .group
        .change_members(&change, coord.config.request_timeout)
        .await?;
    let key = if kind == "AddCoordinator" {
        "added"
    } else {
        "removed"
    };
    json(&serde_json::json!({
        key: req.node_id,
        "coordinators": coord.group.members(),
    }))
}
