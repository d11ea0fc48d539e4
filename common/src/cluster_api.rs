//! Cluster membership messages: what a shard node sends to a coordinator's internal port to
//! register and to heartbeat (Flight `DoAction`, JSON bodies).

use serde::{Deserialize, Serialize};

use crate::replication_api::ReplicaStatus;

/// Action a shard node sends at start-up (and again after a coordinator restart).
pub const ACTION_REGISTER: &str = "RegisterShard";
/// Action a shard node sends periodically.
pub const ACTION_HEARTBEAT: &str = "Heartbeat";

/// `RegisterShard` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterShard {
    /// The node's stable identity (kept in its data directory).
    pub node_key: String,
    /// Address of its shard API (`host:port`).
    pub address: String,
}

/// `RegisterShard` reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registered {
    /// Id assigned by the catalog.
    pub node_id: u64,
}

/// `Heartbeat` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The node's id.
    pub node_id: u64,
    /// The node's stable identity: a heartbeat from another process using the same id is
    /// refused.
    #[serde(default)]
    pub node_key: String,
    /// Every replica the node hosts.
    #[serde(default)]
    pub replicas: Vec<ReplicaStatus>,
}

/// `Heartbeat` reply: the coordinator group as the answering coordinator knows it, so a
/// node follows coordinators added or removed after it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// Raft log index of the membership this comes from: a node adopts a membership only if
    /// it is newer than the one it follows, so a coordinator that lags cannot undo a change.
    #[serde(default)]
    pub membership_index: u64,
    /// Whether the answering coordinator is itself in the group (one removed is not).
    #[serde(default)]
    pub member: bool,
    /// Internal addresses of every other coordinator of the group. The answering one is
    /// left out: the node keeps naming it by the address it reached it at.
    #[serde(default)]
    pub others: Vec<String>,
}
