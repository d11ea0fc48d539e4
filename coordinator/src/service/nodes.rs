//! `DecommissionNode`: marks a shard node as leaving, so the catalog leader's rebalancer
//! moves its replicas to the other nodes ([`crate::rebalance`]) and placement gives it no new
//! ones. The answer says how many replicas are still on it; asking again reports progress,
//! and the node may be stopped once that is 0.

use longbow_common::ContractError;

use super::actions::json;
use super::requests::{self, fold, ShardNodeBody};
use crate::catalog::CatalogCommand;
use crate::error::Result;
use crate::node::Coordinator;
use crate::replica_sets::expect_ok;

/// Run `DecommissionNode`.
pub(super) async fn decommission(coord: &Coordinator, body: &[u8]) -> Result<Vec<u8>> {
    let req: ShardNodeBody = fold(&requests::SHARD_NODE, body)?.into_typed("")?;
    let node = req.node_id;
    let (known, others) = {
        let cat = coord.group.catalog.read();
        let others = cat
            .nodes
            .values()
            .filter(|n| n.id != node && !n.draining)
            .count();
        (cat.nodes.contains_key(&node), others)
    };
    if !known {
        return Err(ContractError::invalid(
            "node_id",
            format!("no shard node {node} is registered (cluster-status lists them)"),
        )
        .into());
    }
    let needed = coord
        .namespaces()
        .iter()
        .map(|m| m.replication_factor as usize)
        .max()
        .unwrap_or(0);
    if others < needed {
        return Err(ContractError::invalid(
            "node_id",
            format!(
                "shard node {node} cannot leave: a namespace keeps {needed} replicas of each \
                 shard and only {others} other shard nodes would be left"
            ),
        )
        .into());
    }
    let cmd = CatalogCommand::SetNodeDraining {
        node,
        draining: true,
    };
    expect_ok(coord.group.write(cmd).await?)?;
    let replicas = coord.holdings().get(&node).map_or(0, |h| h.0);
    json(&serde_json::json!({
        "node_id": node,
        "draining": true,
        "replicas": replicas,
    }))
}
