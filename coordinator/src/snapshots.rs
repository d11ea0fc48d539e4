//! Snapshots of namespaces: taking one (a checkpoint of every shard, hard-linked on the node
//! that holds it), listing, restoring into a new or the same namespace, deleting; and
//! sweeping away snapshots that a crash cut off.
//!
//! A snapshot is recorded in the catalog as pending before any shard is asked, and marked
//! complete only once every shard's part is durable, so a crash at any point leaves either a
//! complete snapshot or a pending one, which is never listed and is removed (catalog entry
//! and parts) by the next sweep. A coordinator never touches snapshot files itself.

use std::time::Duration;

use longbow_common::shard_api::{
    CheckpointReply, DeleteSnapshotRequest, ReplicaKey, RestoreReplicaRequest, SnapshotPart,
    SnapshotRequest, ACTION_CHECKPOINT, ACTION_CREATE_SNAPSHOT, ACTION_DELETE_SNAPSHOT,
    ACTION_RESTORE_REPLICA,
};
use longbow_common::ContractError;

use crate::catalog::{
    least_loaded_outside, CatalogCommand, CatalogResponse, NamespaceMeta, NodeId, ReplicaSet,
    SnapshotMeta, SnapshotShard,
};
use crate::error::{CoordinatorError, Result};
use crate::node::{Coordinator, ShardTarget};

/// A pending snapshot older than this is considered cut off and swept.
pub const STALE_PENDING: Duration = Duration::from_secs(600);
/// How long one shard may take to checkpoint and link its part.
const PART_TIMEOUT: Duration = Duration::from_secs(600);

/// What `RestoreSnapshot` asks for.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// The namespace the snapshot was taken of.
    pub namespace: String,
    /// Snapshot id.
    pub snapshot: String,
    /// Namespace to restore into (default: `namespace`).
    pub target: Option<String>,
    /// Replace the target if it exists.
    pub replace: bool,
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unexpected(r: CatalogResponse) -> CoordinatorError {
    CoordinatorError::Internal(format!("unexpected catalog reply {r:?}"))
}

impl Coordinator {
    fn snapshot_meta(&self, id: &str) -> Option<SnapshotMeta> {
        self.group.catalog.read().snapshots.get(id).cloned()
    }

    /// Take a snapshot of namespace `name`: every shard checkpoints and hard-links its files.
    pub async fn snapshot(&self, name: &str) -> Result<SnapshotMeta> {
        self.sweep_snapshots().await;
        let meta = self.namespace_now(name).await?;
        let created_ms = now_ms();
        let mut id = format!("snap-{created_ms}");
        let mut n = 1;
        while self.snapshot_meta(&id).is_some() {
            n += 1;
            id = format!("snap-{created_ms}-{n}");
        }
        let pending = SnapshotMeta {
            id: id.clone(),
            namespace: meta.clone(),
            created_ms,
            owner: self.config.node_id,
            complete: false,
            parts: Vec::new(),
        };
        match self
            .group
            .write(CatalogCommand::BeginSnapshot(pending.clone()))
            .await?
        {
            CatalogResponse::Ok => {}
            other => return Err(unexpected(other)),
        }
        let shards = if meta.is_declared() { 0 } else { meta.shards };
        let calls = (0..shards).map(|shard| self.snapshot_part(&meta, shard, &id));
        let parts = match futures::future::try_join_all(calls).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(snapshot = %id, namespace = name, error = %e, "snapshot failed; removing its parts");
                self.abort_snapshot(&pending).await;
                return Err(e);
            }
        };
        match self
            .group
            .write(CatalogCommand::CompleteSnapshot {
                id: id.clone(),
                parts: parts.clone(),
            })
            .await?
        {
            CatalogResponse::Ok => {}
            other => return Err(unexpected(other)),
        }
        Ok(SnapshotMeta {
            complete: true,
            parts,
            ..pending
        })
    }

    async fn snapshot_part(
        &self,
        meta: &NamespaceMeta,
        shard: u32,
        id: &str,
    ) -> Result<SnapshotShard> {
        let to = self.primary_addr(meta, shard)?;
        let req = SnapshotRequest {
            namespace: meta.name.clone(),
            shard,
            snapshot: id.to_string(),
        };
        let part: SnapshotPart = tokio::time::timeout(
            PART_TIMEOUT,
            self.shards.action(&to, ACTION_CREATE_SNAPSHOT, &req),
        )
        .await
        .map_err(|_| {
            CoordinatorError::Deadline(format!("{to}: snapshot took longer than {PART_TIMEOUT:?}"))
        })??;
        Ok(SnapshotShard {
            shard,
            node: to.node,
            lsn: part.lsn,
            rows: part.rows,
            disk_bytes: part.disk_bytes,
        })
    }

    /// Complete snapshots, of one namespace or of all, oldest first.
    pub fn list_snapshots(&self, namespace: Option<&str>) -> Vec<SnapshotMeta> {
        let mut out: Vec<SnapshotMeta> = self
            .group
            .catalog
            .read()
            .snapshots
            .values()
            .filter(|s| s.complete && namespace.is_none_or(|n| s.namespace.name == n))
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        out
    }

    /// A complete snapshot by id, checked to belong to `namespace` when one is named.
    pub fn find_snapshot(&self, id: &str, namespace: Option<&str>) -> Result<SnapshotMeta> {
        let quote = longbow_common::error::quote;
        match self.snapshot_meta(id) {
            Some(s) if s.complete && namespace.is_none_or(|n| s.namespace.name == n) => Ok(s),
            Some(s) if s.complete => Err(CoordinatorError::SnapshotNotFound(format!(
                "snapshot {} is a snapshot of namespace {}, not {}",
                quote(id),
                quote(&s.namespace.name),
                quote(namespace.unwrap_or_default())
            ))),
            _ => Err(CoordinatorError::SnapshotNotFound(format!(
                "snapshot {} not found",
                quote(id)
            ))),
        }
    }

    /// Delete a snapshot: its parts on the shard nodes, then its catalog entry. A node that
    /// cannot be reached fails the call (retryable) and the snapshot stays listed.
    pub async fn delete_snapshot(&self, id: &str, namespace: Option<&str>) -> Result<()> {
        let snap = self.find_snapshot(id, namespace)?;
        self.delete_parts(&snap).await?;
        match self
            .group
            .write(CatalogCommand::DeleteSnapshot { id: id.to_string() })
            .await?
        {
            CatalogResponse::Ok | CatalogResponse::NotFound(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The nodes that may hold parts of `snap` (the recorded parts, or for a pending one the
    /// placement it was taken from).
    fn part_nodes(snap: &SnapshotMeta) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = if snap.complete {
            snap.parts.iter().map(|p| p.node).collect()
        } else {
            snap.namespace.placement.iter().map(|r| r.primary).collect()
        };
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    async fn delete_parts(&self, snap: &SnapshotMeta) -> Result<()> {
        let req = DeleteSnapshotRequest {
            snapshot: snap.id.clone(),
        };
        for node in Self::part_nodes(snap) {
            let addr = self.node_addr(node).map_err(|why| {
                CoordinatorError::Unavailable(format!("snapshot {}: {why}", snap.id))
            })?;
            let to = ShardTarget {
                namespace: snap.namespace.name.clone(),
                shard: 0,
                node,
                addr,
            };
            self.shards
                .action::<serde_json::Value>(&to, ACTION_DELETE_SNAPSHOT, &req)
                .await?;
        }
        Ok(())
    }

    async fn abort_snapshot(&self, snap: &SnapshotMeta) {
        match self.delete_parts(snap).await {
            Ok(()) => {
                let cmd = CatalogCommand::DeleteSnapshot {
                    id: snap.id.clone(),
                };
                if let Err(e) = self.group.write(cmd).await {
                    tracing::warn!(snapshot = %snap.id, error = %e, "forgetting a cut-off snapshot failed; the next sweep retries");
                }
            }
            Err(e) => {
                tracing::warn!(snapshot = %snap.id, error = %e, "removing parts of a cut-off snapshot failed; the next sweep retries")
            }
        }
    }

    /// Remove pending snapshots that can no longer complete: those this coordinator began
    /// before it (re)started, and any older than [`STALE_PENDING`].
    pub async fn sweep_snapshots(&self) {
        let now = now_ms();
        // Another coordinator's leftovers are the leader's to sweep, so no two coordinators
        // sweep the same one.
        let leader = self.group.is_leader();
        let stale: Vec<SnapshotMeta> = self
            .group
            .catalog
            .read()
            .snapshots
            .values()
            .filter(|s| {
                !s.complete
                    && ((s.owner == self.config.node_id && s.created_ms < self.started_ms)
                        || (leader
                            && now.saturating_sub(s.created_ms) > STALE_PENDING.as_millis() as u64))
            })
            .cloned()
            .collect();
        for snap in stale {
            tracing::info!(snapshot = %snap.id, "sweeping a snapshot that a crash cut off");
            self.abort_snapshot(&snap).await;
        }
    }

    /// Restore a snapshot into a new namespace, or into an existing one with `replace`.
    /// Each shard is restored on the node holding its part, which must be live.
    pub async fn restore_snapshot(&self, req: &RestoreRequest) -> Result<NamespaceMeta> {
        let snap = self.find_snapshot(&req.snapshot, Some(&req.namespace))?;
        let target = req.target.clone().unwrap_or_else(|| req.namespace.clone());
        crate::namespaces::validate_name(&target)
            .map_err(|e| ContractError::invalid("target", e.to_string()))?;
        let live = self.live_nodes();
        if let Some(p) = snap.parts.iter().find(|p| !live.contains(&p.node)) {
            return Err(CoordinatorError::Unavailable(format!(
                "snapshot {}: the part of shard {} is on node {}, which is not live",
                snap.id, p.shard, p.node
            )));
        }
        if self.namespace(&target).is_ok() {
            if !req.replace {
                return Err(CoordinatorError::NamespaceExists(target));
            }
            self.delete_namespace(&target).await?;
        }
        let meta = NamespaceMeta {
            name: target.clone(),
            placement: self.restored_placement(&snap, &live)?,
            incarnation: crate::namespaces::new_incarnation(),
            ..snap.namespace.clone()
        };
        if meta.is_declared() {
            self.publish_declared(&meta).await?;
            return Ok(meta);
        }
        let calls = snap.parts.iter().map(|p| {
            let (meta, snap) = (&meta, &snap);
            async move {
                let to = self.primary_addr(meta, p.shard)?;
                let req = RestoreReplicaRequest {
                    snapshot: snap.id.clone(),
                    shard: p.shard,
                    namespace: meta.name.clone(),
                    incarnation: meta.incarnation,
                };
                self.shards
                    .action::<serde_json::Value>(&to, ACTION_RESTORE_REPLICA, &req)
                    .await
            }
        });
        // Backups start empty and out of sync: each restored primary sends them its files.
        let backups: Vec<(u32, NodeId)> = meta
            .placement
            .iter()
            .enumerate()
            .flat_map(|(shard, set)| set.backups.iter().map(move |n| (shard as u32, *n)))
            .collect();
        let backups = backups
            .into_iter()
            .map(|(shard, node)| self.create_replica(&meta, shard, node));
        let restore = async {
            futures::future::try_join_all(calls).await?;
            futures::future::try_join_all(backups).await?;
            let configs = meta.placement.iter().enumerate().flat_map(|(shard, set)| {
                let meta = &meta;
                let mut order = set.backups.clone();
                order.push(set.primary);
                order
                    .into_iter()
                    .map(move |node| self.push_config(meta, shard as u32, node))
            });
            futures::future::try_join_all(configs).await?;
            Ok(())
        };
        self.create_placed(&meta, restore).await?;
        Ok(meta)
    }

    /// Where a restored namespace's replicas go: each shard's primary on the node holding its
    /// part, its backups (as many as the namespace had) on the least-loaded other live nodes.
    fn restored_placement(&self, snap: &SnapshotMeta, live: &[NodeId]) -> Result<Vec<ReplicaSet>> {
        let rf = snap.namespace.replication_factor.max(1) as usize;
        if rf > live.len() {
            return Err(CoordinatorError::Unavailable(format!(
                "snapshot {}: its namespace had {rf} replicas of each shard, and {} shard nodes \
                 are live",
                snap.id,
                live.len()
            )));
        }
        let mut load = self.replicas_hosted(live);
        let mut placement: Vec<ReplicaSet> = snap.namespace.placement.clone();
        for p in &snap.parts {
            let mut members = vec![p.node];
            while members.len() < rf {
                let next = least_loaded_outside(&load, &members).ok_or_else(|| {
                    CoordinatorError::Unavailable(format!(
                        "snapshot {}: no live node left for a backup of shard {}",
                        snap.id, p.shard
                    ))
                })?;
                members.push(next);
            }
            for (id, hosted) in load.iter_mut() {
                if members.contains(id) {
                    *hosted += 1;
                }
            }
            if let Some(set) = placement.get_mut(p.shard as usize) {
                *set = ReplicaSet::rebuilding(p.node, members[1..].to_vec());
            }
        }
        Ok(placement)
    }

    /// Seal and checkpoint every shard of a namespace now.
    pub async fn checkpoint(&self, name: &str) -> Result<Vec<(u32, CheckpointReply)>> {
        let meta = self.namespace_now(name).await?;
        let shards = if meta.is_declared() { 0 } else { meta.shards };
        let calls = (0..shards).map(|shard| {
            let meta = &meta;
            async move {
                let to = self.primary_addr(meta, shard)?;
                let key = ReplicaKey {
                    namespace: meta.name.clone(),
                    shard,
                };
                let reply: CheckpointReply = tokio::time::timeout(
                    PART_TIMEOUT,
                    self.shards.action(&to, ACTION_CHECKPOINT, &key),
                )
                .await
                .map_err(|_| {
                    CoordinatorError::Deadline(format!(
                        "{to}: checkpoint took longer than {PART_TIMEOUT:?}"
                    ))
                })??;
                Ok::<_, CoordinatorError>((shard, reply))
            }
        });
        futures::future::try_join_all(calls).await
    }
}

/// The JSON a client sees for a snapshot.
pub fn describe(s: &SnapshotMeta) -> serde_json::Value {
    serde_json::json!({
        "snapshot": s.id,
        "namespace": s.namespace.name,
        "created_ms": s.created_ms,
        "rows": s.parts.iter().map(|p| p.rows).sum::<u64>(),
        "disk_bytes": s.parts.iter().map(|p| p.disk_bytes).sum::<u64>(),
        "shards": s.parts.iter().map(|p| serde_json::json!({
            "shard": p.shard, "node": p.node, "lsn": p.lsn, "rows": p.rows, "disk_bytes": p.disk_bytes,
        })).collect::<Vec<_>>(),
    })
}
