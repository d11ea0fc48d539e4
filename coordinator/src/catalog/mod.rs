//! The cluster catalog: namespaces, shard nodes and placement. It is the Raft state machine's
//! state: every change is a [`CatalogCommand`] applied in log order, identically on every
//! coordinator, so nothing here may read clocks, randomness or the network.

use std::collections::BTreeMap;

use longbow_common::{IdType, IndexParams, Metric};
use serde::{Deserialize, Serialize};

/// Raft-wide id of a shard node.
pub type NodeId = u64;

mod moves;
mod replica_set;
pub mod sessions;

pub use moves::Move;
pub use replica_set::{least_loaded_outside, place, ReplicaSet};

/// A namespace and its placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespaceMeta {
    /// Name.
    pub name: String,
    /// Vector dimension; 0 while the namespace is only declared (created without a `dim`, as
    /// Longbow 0.1 clients do): its first write then fixes dim, metric and id type
    /// ([`CatalogCommand::SettleNamespace`]) and only then are its replicas created.
    pub dim: usize,
    /// Distance metric.
    pub metric: Metric,
    /// Id type.
    pub id_type: IdType,
    /// HNSW parameters.
    pub index: IndexParams,
    /// Number of shards.
    pub shards: u32,
    /// Replicas per shard.
    pub replication_factor: u32,
    /// Payload columns (base64 Arrow IPC schema), grown additively.
    pub payload_schema: Option<String>,
    /// One replica set per shard.
    pub placement: Vec<ReplicaSet>,
    /// Which namespace of this name it is: chosen when it is created (or restored), and
    /// carried by its replicas, so replicas a deleted namespace left on a node that was away
    /// are told apart from this one's (0: created before incarnations).
    #[serde(default)]
    pub incarnation: u64,
}

impl NamespaceMeta {
    /// Whether the namespace is only declared: no write has fixed its dimension yet, so it has
    /// no replicas and no rows.
    pub fn is_declared(&self) -> bool {
        self.dim == 0
    }
}

/// A registered shard node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardNodeInfo {
    /// Id assigned at first registration.
    pub id: NodeId,
    /// Stable identity the node keeps in its data directory.
    pub node_key: String,
    /// Address of its shard Flight API (`host:port`).
    pub address: String,
    /// Being decommissioned: its replicas move to other nodes and it gets no new ones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

/// Where one shard's part of a snapshot lives, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotShard {
    /// Shard number.
    pub shard: u32,
    /// Node holding the part.
    pub node: NodeId,
    /// Checkpoint LSN of the part.
    pub lsn: u64,
    /// Live rows in it.
    pub rows: u64,
    /// Bytes of its files.
    pub disk_bytes: u64,
}

/// A snapshot of a namespace: one checkpoint of every shard, kept as hard links on the nodes
/// that held the shards. Listed once complete; a pending one is being taken, or was cut off
/// (and is removed by the next sweep).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Snapshot id (a plain name, unique in the catalog).
    pub id: String,
    /// The namespace as it was (name, dimension, metric, schema, placement).
    pub namespace: NamespaceMeta,
    /// When it was taken (Unix milliseconds, chosen by the coordinator that took it).
    pub created_ms: u64,
    /// The coordinator taking it.
    pub owner: u64,
    /// Whether every shard's part is durable.
    pub complete: bool,
    /// One part per shard (filled in when complete).
    pub parts: Vec<SnapshotShard>,
}

/// A namespace whose replicas are being created: not listed, not served, and rolled back
/// by a sweep if its coordinator stopped before finishing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingNamespace {
    /// The namespace it will be.
    pub meta: NamespaceMeta,
    /// The coordinator creating it.
    pub owner: u64,
    /// When creation began (Unix ms, chosen by that coordinator).
    pub since_ms: u64,
}

/// A change to the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CatalogCommand {
    /// Register (or re-register with a new address) a shard node.
    RegisterShardNode {
        /// The node's stable identity.
        node_key: String,
        /// Its current address.
        address: String,
    },
    /// Create a namespace with its placement.
    CreateNamespace(NamespaceMeta),
    /// Reserve a namespace whose replicas are about to be created.
    BeginNamespace(PendingNamespace),
    /// Publish a reserved namespace once its replicas exist.
    FinishNamespace {
        /// Name.
        name: String,
    },
    /// Forget a reserved namespace (its creation failed or was cut off).
    AbortNamespace {
        /// Name.
        name: String,
    },
    /// Delete a namespace.
    DeleteNamespace {
        /// Name.
        name: String,
    },
    /// Fix the dimension, metric, id type and payload schema of a declared namespace (one
    /// whose `dim` is 0); a no-op answering `AlreadyExists` when it is settled already.
    SettleNamespace {
        /// Name.
        name: String,
        /// Vector dimension.
        dim: usize,
        /// Distance metric.
        metric: Metric,
        /// Id type.
        id_type: IdType,
        /// Payload columns of the first batch (base64 Arrow IPC).
        payload_schema: Option<String>,
    },
    /// Replace a namespace's payload schema unconditionally. Only in logs written before
    /// [`CatalogCommand::SwapPayloadSchema`]; never proposed now (kept so those logs replay).
    SetPayloadSchema {
        /// Name.
        name: String,
        /// New schema (base64 Arrow IPC).
        payload_schema: String,
    },
    /// Replace a namespace's payload schema with a superset of it, provided it is still
    /// `from` (compare-and-set: two writers growing the schema at once cannot lose each
    /// other's columns; the loser recomputes from the newer schema).
    SwapPayloadSchema {
        /// Name.
        name: String,
        /// The schema the change was computed from (`None`: the namespace had none).
        from: Option<String>,
        /// New schema (base64 Arrow IPC).
        to: String,
    },
    /// Apply `command` once: a proposal retried after an answer was lost (a leader change, a
    /// dropped connection to the leader) finds its first outcome in its proposer's session
    /// and changes nothing again (see [`sessions`]).
    Once {
        /// The proposing coordinator process: its node id and start time.
        origin: String,
        /// The proposal's number within `origin`.
        seq: u64,
        /// Every proposal of `origin` under this number has been answered.
        done_below: u64,
        /// The change.
        command: Box<CatalogCommand>,
    },
    /// Record a snapshot being taken (pending).
    BeginSnapshot(SnapshotMeta),
    /// Mark a pending snapshot complete with its parts.
    CompleteSnapshot {
        /// Snapshot id.
        id: String,
        /// One part per shard.
        parts: Vec<SnapshotShard>,
    },
    /// Forget a snapshot.
    DeleteSnapshot {
        /// Snapshot id.
        id: String,
    },
    /// Make in-sync member `primary` the primary of a shard at `epoch + 1`, provided the
    /// shard is still at `epoch`; the old primary stays a member, out of the in-sync set.
    Promote {
        /// Namespace.
        namespace: String,
        /// Shard number.
        shard: u32,
        /// The epoch the change was decided at.
        epoch: u64,
        /// The new primary.
        primary: NodeId,
    },
    /// Replace a shard's in-sync set, provided the shard is still at `epoch` with the same
    /// primary; the primary stays in it and every node in it must be a member.
    SetInSync {
        /// Namespace.
        namespace: String,
        /// Shard number.
        shard: u32,
        /// The epoch the change was decided at.
        epoch: u64,
        /// The new in-sync set.
        in_sync: Vec<NodeId>,
    },
    /// Replace backup `old` of a shard with `new` (out of sync until its primary catches it
    /// up) at `epoch + 1`, provided the shard is still at `epoch`: the rebuild of a replica
    /// whose node stayed dead past `--replica-timeout-secs`.
    ReplaceMember {
        /// Namespace.
        namespace: String,
        /// Shard number.
        shard: u32,
        /// The epoch the change was decided at.
        epoch: u64,
        /// The member leaving.
        old: NodeId,
        /// The node taking its place.
        new: NodeId,
    },
    /// Start moving member `from` of a shard to node `to` at `epoch + 1` (see [`moves`]).
    BeginMove {
        /// Namespace.
        namespace: String,
        /// Shard number.
        shard: u32,
        /// The epoch the change was decided at.
        epoch: u64,
        /// The member leaving.
        from: NodeId,
        /// The node taking its place.
        to: NodeId,
    },
    /// Finish a shard's move (its new member is in sync) at `epoch + 1`.
    FinishMove {
        /// Namespace.
        namespace: String,
        /// Shard number.
        shard: u32,
        /// The epoch the change was decided at.
        epoch: u64,
    },
    /// Give up a shard's move (its new member's node died) at `epoch + 1`.
    AbortMove {
        /// Namespace.
        namespace: String,
        /// Shard number.
        shard: u32,
        /// The epoch the change was decided at.
        epoch: u64,
    },
    /// Mark a shard node as being decommissioned (or not).
    SetNodeDraining {
        /// The node.
        node: NodeId,
        /// Whether its replicas are to move off it.
        draining: bool,
    },
}

/// Outcome of applying a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogResponse {
    /// Applied.
    Ok,
    /// Applied; the id of the registered node.
    Node(NodeId),
    /// The namespace exists already.
    AlreadyExists(String),
    /// No such namespace.
    NotFound(String),
    /// The change was decided on a state that has moved on (another epoch or primary).
    Conflict(String),
}

/// The replicated catalog state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, NamespaceMeta>,
    /// Shard nodes by id.
    pub nodes: BTreeMap<NodeId, ShardNodeInfo>,
    next_node_id: NodeId,
    /// Snapshots by id (pending and complete).
    #[serde(default)]
    pub snapshots: BTreeMap<String, SnapshotMeta>,
    /// Namespaces whose replicas are being created.
    #[serde(default)]
    pub creating: BTreeMap<String, PendingNamespace>,
    /// Outcomes of [`CatalogCommand::Once`] proposals still owed to their proposers.
    #[serde(default)]
    sessions: sessions::Sessions,
}

impl Catalog {
    /// Whether a namespace of this name exists or is being created.
    pub fn name_taken(&self, name: &str) -> bool {
        self.namespaces.contains_key(name) || self.creating.contains_key(name)
    }

    /// Apply one command.
    pub fn apply(&mut self, cmd: &CatalogCommand) -> CatalogResponse {
        match cmd {
            CatalogCommand::Once {
                origin,
                seq,
                done_below,
                command,
            } => match self.sessions.check(origin, *seq, *done_below) {
                sessions::Seen::Again(out) => out,
                sessions::Seen::New => {
                    let out = self.apply(command);
                    self.sessions.record(origin, *seq, out.clone());
                    out
                }
            },
            CatalogCommand::SwapPayloadSchema { name, from, to } => {
                match self.namespaces.get_mut(name) {
                    Some(ns) if &ns.payload_schema == from => {
                        ns.payload_schema = Some(to.clone());
                        CatalogResponse::Ok
                    }
                    Some(_) => CatalogResponse::Conflict(format!(
                        "the payload schema of '{name}' changed meanwhile"
                    )),
                    None => CatalogResponse::NotFound(name.clone()),
                }
            }
            CatalogCommand::RegisterShardNode { node_key, address } => {
                if let Some(n) = self.nodes.values_mut().find(|n| &n.node_key == node_key) {
                    n.address = address.clone();
                    return CatalogResponse::Node(n.id);
                }
                self.next_node_id += 1;
                let id = self.next_node_id;
                self.nodes.insert(
                    id,
                    ShardNodeInfo {
                        id,
                        node_key: node_key.clone(),
                        address: address.clone(),
                        draining: false,
                    },
                );
                CatalogResponse::Node(id)
            }
            CatalogCommand::CreateNamespace(meta) => {
                if self.name_taken(&meta.name) {
                    return CatalogResponse::AlreadyExists(meta.name.clone());
                }
                self.namespaces.insert(meta.name.clone(), meta.clone());
                CatalogResponse::Ok
            }
            CatalogCommand::BeginNamespace(pending) => {
                let name = &pending.meta.name;
                if self.name_taken(name) {
                    return CatalogResponse::AlreadyExists(name.clone());
                }
                self.creating.insert(name.clone(), pending.clone());
                CatalogResponse::Ok
            }
            CatalogCommand::FinishNamespace { name } => match self.creating.remove(name) {
                Some(p) => {
                    self.namespaces.insert(name.clone(), p.meta);
                    CatalogResponse::Ok
                }
                None => CatalogResponse::NotFound(name.clone()),
            },
            CatalogCommand::AbortNamespace { name } => match self.creating.remove(name) {
                Some(_) => CatalogResponse::Ok,
                None => CatalogResponse::NotFound(name.clone()),
            },
            CatalogCommand::DeleteNamespace { name } => match self.namespaces.remove(name) {
                Some(_) => CatalogResponse::Ok,
                None => CatalogResponse::NotFound(name.clone()),
            },
            CatalogCommand::SettleNamespace {
                name,
                dim,
                metric,
                id_type,
                payload_schema,
            } => match self.namespaces.get_mut(name) {
                Some(ns) if ns.dim == 0 => {
                    ns.dim = *dim;
                    ns.metric = *metric;
                    ns.id_type = *id_type;
                    ns.payload_schema = payload_schema.clone();
                    CatalogResponse::Ok
                }
                Some(_) => CatalogResponse::AlreadyExists(name.clone()),
                None => CatalogResponse::NotFound(name.clone()),
            },
            CatalogCommand::SetPayloadSchema {
                name,
                payload_schema,
            } => match self.namespaces.get_mut(name) {
                Some(ns) => {
                    ns.payload_schema = Some(payload_schema.clone());
                    CatalogResponse::Ok
                }
                None => CatalogResponse::NotFound(name.clone()),
            },
            CatalogCommand::BeginSnapshot(meta) => {
                if self.snapshots.contains_key(&meta.id) {
                    return CatalogResponse::AlreadyExists(meta.id.clone());
                }
                self.snapshots.insert(meta.id.clone(), meta.clone());
                CatalogResponse::Ok
            }
            CatalogCommand::CompleteSnapshot { id, parts } => match self.snapshots.get_mut(id) {
                Some(s) => {
                    s.complete = true;
                    s.parts = parts.clone();
                    CatalogResponse::Ok
                }
                None => CatalogResponse::NotFound(id.clone()),
            },
            CatalogCommand::DeleteSnapshot { id } => match self.snapshots.remove(id) {
                Some(_) => CatalogResponse::Ok,
                None => CatalogResponse::NotFound(id.clone()),
            },
            CatalogCommand::Promote {
                namespace,
                shard,
                epoch,
                primary,
            } => match self.replica_set(namespace, *shard) {
                Ok(set) => set.promote(*epoch, *primary),
                Err(e) => e,
            },
            CatalogCommand::SetInSync {
                namespace,
                shard,
                epoch,
                in_sync,
            } => match self.replica_set(namespace, *shard) {
                Ok(set) => set.set_in_sync(*epoch, in_sync),
                Err(e) => e,
            },
            CatalogCommand::ReplaceMember {
                namespace,
                shard,
                epoch,
                old,
                new,
            } => match self.replica_set(namespace, *shard) {
                Ok(set) => set.replace(*epoch, *old, *new),
                Err(e) => e,
            },
            CatalogCommand::BeginMove {
                namespace,
                shard,
                epoch,
                from,
                to,
            } => match self.replica_set(namespace, *shard) {
                Ok(set) => set.begin_move(*epoch, *from, *to),
                Err(e) => e,
            },
            CatalogCommand::FinishMove {
                namespace,
                shard,
                epoch,
            } => match self.replica_set(namespace, *shard) {
                Ok(set) => set.finish_move(*epoch),
                Err(e) => e,
            },
            CatalogCommand::AbortMove {
                namespace,
                shard,
                epoch,
            } => match self.replica_set(namespace, *shard) {
                Ok(set) => set.abort_move(*epoch),
                Err(e) => e,
            },
            CatalogCommand::SetNodeDraining { node, draining } => match self.nodes.get_mut(node) {
                Some(n) => {
                    n.draining = *draining;
                    CatalogResponse::Ok
                }
                None => CatalogResponse::NotFound(format!("shard node {node}")),
            },
        }
    }

    fn replica_set(
        &mut self,
        namespace: &str,
        shard: u32,
    ) -> Result<&mut ReplicaSet, CatalogResponse> {
        let ns = self
            .namespaces
            .get_mut(namespace)
            .ok_or_else(|| CatalogResponse::NotFound(namespace.to_string()))?;
        ns.placement
            .get_mut(shard as usize)
            .ok_or_else(|| CatalogResponse::Conflict(format!("no shard {shard} in {namespace}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re_registration_keeps_the_node_id_and_updates_the_address() {
        let mut c = Catalog::default();
        let a = c.apply(&CatalogCommand::RegisterShardNode {
            node_key: "k1".into(),
            address: "x:1".into(),
        });
        let b = c.apply(&CatalogCommand::RegisterShardNode {
            node_key: "k2".into(),
            address: "x:2".into(),
        });
        let a2 = c.apply(&CatalogCommand::RegisterShardNode {
            node_key: "k1".into(),
            address: "x:9".into(),
        });
        assert_eq!(
            (a.clone(), b),
            (CatalogResponse::Node(1), CatalogResponse::Node(2))
        );
        assert_eq!(a2, a);
        assert_eq!(c.nodes[&1].address, "x:9");
    }

    fn declared(name: &str) -> NamespaceMeta {
        NamespaceMeta {
            name: name.into(),
            dim: 0,
            metric: Metric::L2,
            id_type: IdType::Int64,
            index: IndexParams::default(),
            shards: 1,
            replication_factor: 1,
            payload_schema: None,
            placement: vec![],
            incarnation: 1,
        }
    }

    #[test]
    fn a_keyed_proposal_applied_twice_changes_the_catalog_once() {
        let mut c = Catalog::default();
        let once = |name: &str| CatalogCommand::Once {
            origin: "1:7".into(),
            seq: 1,
            done_below: 0,
            command: Box::new(CatalogCommand::CreateNamespace(declared(name))),
        };
        assert_eq!(c.apply(&once("a")), CatalogResponse::Ok);
        // The retry answers the first outcome (not AlreadyExists) and changes nothing.
        assert_eq!(c.apply(&once("b")), CatalogResponse::Ok);
        assert_eq!(c.namespaces.keys().collect::<Vec<_>>(), vec!["a"]);
    }

    #[test]
    fn a_schema_swap_from_a_schema_that_moved_on_is_a_conflict() {
        let mut c = Catalog::default();
        c.apply(&CatalogCommand::CreateNamespace(declared("a")));
        let swap = |from: Option<&str>, to: &str| CatalogCommand::SwapPayloadSchema {
            name: "a".into(),
            from: from.map(String::from),
            to: to.into(),
        };
        assert_eq!(c.apply(&swap(None, "s1")), CatalogResponse::Ok);
        assert!(matches!(
            c.apply(&swap(None, "s2")),
            CatalogResponse::Conflict(_)
        ));
        assert_eq!(c.apply(&swap(Some("s1"), "s2")), CatalogResponse::Ok);
        assert_eq!(c.namespaces["a"].payload_schema.as_deref(), Some("s2"));
    }
}
