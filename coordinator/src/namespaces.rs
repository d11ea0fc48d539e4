//! Namespace lifecycle through the catalog: create (placement + replicas), delete, stats,
//! readiness, and growing the payload schema.

use arrow_schema::Schema;
use longbow_common::model::validate_dim;
use longbow_common::payload_schema::PayloadSchema;
use longbow_common::replication_api::MAX_REPLICATION_FACTOR;
use longbow_common::shard_api::{
    decode_schema, encode_schema, CreateReplicaRequest, ReplicaKey, ReplicaStats,
    ACTION_CREATE_REPLICA, ACTION_DROP_REPLICA, ACTION_REPLICA_STATS,
};
use longbow_common::{ContractError, IdType, IndexParams, Metric};
use serde::Serialize;

use crate::catalog::{
    place, CatalogCommand, CatalogResponse, NamespaceMeta, NodeId, PendingNamespace,
};
use crate::error::{CoordinatorError, Result};
use crate::node::Coordinator;

/// Longest a member may take to answer for `GetNamespace` before it is shown without.
const STATS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Most shards a namespace may have.
pub const MAX_SHARDS: u32 = 1024;

/// A namespace to create.
#[derive(Debug, Clone)]
pub struct CreateNamespaceRequest {
    /// Namespace name.
    pub name: String,
    /// Vector dimension; `None` declares the namespace, and its first write fixes dimension,
    /// metric and id type (Longbow 0.1's `CreateNamespace {"name"}`).
    pub dim: Option<usize>,
    /// Metric.
    pub metric: Metric,
    /// Id type.
    pub id_type: IdType,
    /// Shards (default: the coordinator's `default_shards`).
    pub shards: Option<u32>,
    /// Replicas per shard (default 1), on distinct nodes.
    pub replication_factor: Option<u32>,
    /// HNSW parameters.
    pub index: IndexParams,
}

/// What the first write of a declared namespace fixes.
#[derive(Debug, Clone)]
pub struct Settlement {
    /// Vector dimension.
    pub dim: usize,
    /// Metric.
    pub metric: Metric,
    /// Id type.
    pub id_type: IdType,
    /// Payload columns of the first batch.
    pub payload: PayloadSchema,
}

/// Per-shard part of namespace stats.
#[derive(Debug, Clone, Serialize)]
pub struct ShardStats {
    /// Shard number.
    pub shard: u32,
    /// Node holding the primary.
    pub primary: u64,
    /// Nodes holding backups.
    pub backups: Vec<u64>,
    /// Members holding every acknowledged write (the primary first).
    pub in_sync: Vec<u64>,
    /// Placement epoch.
    pub epoch: u64,
    /// Every member's log position: its LSN and how far it is behind the primary.
    pub replicas: Vec<ReplicaPosition>,
    /// Statistics (counts, bytes) of the replica that answered: the primary when it is live.
    pub replica: ReplicaStats,
}

/// Where one member of a replica set stands.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaPosition {
    /// Node.
    pub node: u64,
    /// Highest durable LSN it reported.
    pub lsn: u64,
    /// Entries it is behind the primary.
    pub lag: u64,
    /// Whether its node is live.
    pub live: bool,
}

/// `GetNamespace` result.
#[derive(Debug, Clone, Serialize)]
pub struct NamespaceStats {
    /// Name.
    pub name: String,
    /// Dimension.
    pub dim: usize,
    /// Metric.
    pub metric: Metric,
    /// Id type.
    pub id_type: IdType,
    /// HNSW parameters.
    pub index: IndexParams,
    /// Shard count.
    pub shards: u32,
    /// Replication factor.
    pub replication_factor: u32,
    /// Live rows.
    pub count: u64,
    /// Deleted or replaced row versions not yet compacted.
    pub deleted: u64,
    /// Memory bytes over all replicas.
    pub memory_bytes: u64,
    /// Disk bytes over all replicas.
    pub disk_bytes: u64,
    /// Rows not yet linked into a graph (searched exactly meanwhile).
    pub indexing_lag: u64,
    /// Payload columns as `name: type`.
    pub payload_columns: Vec<String>,
    /// Per shard.
    pub per_shard: Vec<ShardStats>,
}

/// The outcome of an idempotent shard step: a shard answering `already` (the step was done
/// before, by an earlier try) counts as success.
fn done_unless<T>(r: Result<T>, already: tonic::Code) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(CoordinatorError::Shard { status, .. }) if status.code() == already => Ok(()),
        Err(e) => Err(e),
    }
}

/// Check a namespace name (the rule lives in `longbow_common::model`).
pub fn validate_name(name: &str) -> Result<(), ContractError> {
    longbow_common::model::validate_namespace("name", name)
}

/// A new namespace incarnation: the time in nanoseconds, so a later namespace of a name has
/// a higher one than an earlier (the shard nodes keep the newer replica when they meet both).
pub fn new_incarnation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        .max(1)
}

impl Coordinator {
    /// `(node, replicas it hosts)` for each of `nodes` that may take new replicas (not being
    /// decommissioned), counted from the catalog (namespaces being created included): what
    /// placement balances.
    pub fn replicas_hosted(&self, nodes: &[NodeId]) -> Vec<(NodeId, u64)> {
        let cat = self.group.catalog.read();
        let draining = |id: &NodeId| cat.nodes.get(id).is_some_and(|n| n.draining);
        let sets: Vec<&crate::catalog::ReplicaSet> = cat
            .namespaces
            .values()
            .chain(cat.creating.values().map(|p| &p.meta))
            .flat_map(|ns| &ns.placement)
            .collect();
        nodes
            .iter()
            .filter(|id| !draining(id))
            .map(|&id| {
                let hosted = sets.iter().filter(|r| r.members().contains(&id)).count();
                (id, hosted as u64)
            })
            .collect()
    }

    /// Why `rf` replicas cannot be placed on `live` nodes: INVALID_ARGUMENT when the cluster
    /// has fewer shard nodes than that at all; UNAVAILABLE (retryable) when enough are
    /// registered but some are down, or this coordinator has not heard from them all yet.
    fn too_few_live(&self, rf: u32, live: usize) -> CoordinatorError {
        let registered = self.group.catalog.read().nodes.len();
        if rf as usize > registered {
            return ContractError::invalid(
                "replication_factor",
                format!(
                    "{rf} replicas of each shard need {rf} shard nodes, and the cluster has \
                     {registered}"
                ),
            )
            .into();
        }
        let settling = if self.liveness_settled() {
            ""
        } else {
            " (this coordinator is still hearing from shard nodes)"
        };
        CoordinatorError::Unavailable(format!(
            "{rf} replicas of each shard need {rf} live shard nodes, and {live} of the \
             {registered} registered are live{settling}"
        ))
    }

    /// Create a namespace: choose placement, commit it through Raft, create the replicas.
    pub async fn create_namespace(
        &self,
        req: CreateNamespaceRequest,
        payload: Option<&Schema>,
    ) -> Result<NamespaceMeta> {
        validate_name(&req.name)?;
        if let Some(dim) = req.dim {
            validate_dim("dim", dim)?;
        }
        req.index.validate()?;
        let shards = req.shards.unwrap_or(self.config.default_shards);
        if !(1..=MAX_SHARDS).contains(&shards) {
            return Err(ContractError::invalid(
                "shards",
                format!("must be in 1..={MAX_SHARDS}, got {shards}"),
            )
            .into());
        }
        let rf = req.replication_factor.unwrap_or(1);
        if !(1..=MAX_REPLICATION_FACTOR).contains(&rf) {
            return Err(ContractError::invalid(
                "replication_factor",
                format!("must be in 1..={MAX_REPLICATION_FACTOR}, got {rf}"),
            )
            .into());
        }
        // Judged on a catalog holding every change committed so far (registered nodes, names
        // taken), not on what a coordinator that lags the leader still has.
        self.group.linearize().await?;
        let live = self.live_nodes();
        if rf as usize > live.len() {
            return Err(self.too_few_live(rf, live.len()));
        }
        self.sweep_namespaces().await;
        if self.group.catalog.read().name_taken(&req.name) {
            return Err(CoordinatorError::NamespaceExists(req.name));
        }
        let payload_schema = match payload {
            Some(s) if !s.fields().is_empty() => {
                Some(encode_schema(&PayloadSchema::from_schema(s)?.to_arrow())?)
            }
            _ => None,
        };
        let load = self.replicas_hosted(&live);
        let placement = place(shards, rf, &load).ok_or_else(|| {
            CoordinatorError::Unavailable("no live shard node to place replicas on".into())
        })?;
        let meta = NamespaceMeta {
            name: req.name.clone(),
            dim: req.dim.unwrap_or(0),
            metric: req.metric,
            id_type: req.id_type,
            index: req.index,
            shards,
            replication_factor: rf,
            payload_schema,
            placement,
            incarnation: new_incarnation(),
        };
        if meta.is_declared() {
            self.publish_declared(&meta).await?;
        } else {
            self.create_placed(&meta, self.create_replicas(&meta))
                .await?;
        }
        Ok(meta)
    }

    /// Publish a declared namespace (no replicas to create) at once.
    pub(crate) async fn publish_declared(&self, meta: &NamespaceMeta) -> Result<()> {
        match self
            .group
            .write(CatalogCommand::CreateNamespace(meta.clone()))
            .await?
        {
            CatalogResponse::Ok => Ok(()),
            CatalogResponse::AlreadyExists(n) => Err(CoordinatorError::NamespaceExists(n)),
            other => Err(CoordinatorError::Internal(format!(
                "unexpected catalog reply {other:?}"
            ))),
        }
    }

    /// Create namespace `meta` in two steps: reserve it in the catalog (not listed, not
    /// served), run `replicas` (which creates them on the shard nodes), then publish it. A
    /// failure drops what was created and forgets the reservation; a reservation whose
    /// coordinator stopped half-way is rolled back by [`Coordinator::sweep_namespaces`].
    /// So a namespace is never listed without its replicas.
    pub(crate) async fn create_placed(
        &self,
        meta: &NamespaceMeta,
        replicas: impl std::future::Future<Output = Result<()>>,
    ) -> Result<()> {
        let pending = PendingNamespace {
            meta: meta.clone(),
            owner: self.config.node_id,
            since_ms: crate::snapshots::now_ms(),
        };
        match self
            .group
            .write(CatalogCommand::BeginNamespace(pending))
            .await?
        {
            CatalogResponse::Ok => {}
            CatalogResponse::AlreadyExists(n) => return Err(CoordinatorError::NamespaceExists(n)),
            other => {
                return Err(CoordinatorError::Internal(format!(
                    "unexpected catalog reply {other:?}"
                )))
            }
        }
        let finished = match replicas.await {
            Ok(()) => {
                self.group
                    .write(CatalogCommand::FinishNamespace {
                        name: meta.name.clone(),
                    })
                    .await
            }
            Err(e) => Err(e),
        };
        match finished {
            Ok(CatalogResponse::Ok) => Ok(()),
            Ok(other) => Err(CoordinatorError::Internal(format!(
                "unexpected catalog reply {other:?}"
            ))),
            Err(e) => {
                tracing::warn!(namespace = %meta.name, error = %e, "creating the namespace failed; rolling it back");
                self.roll_back_creation(meta).await;
                Err(e)
            }
        }
    }

    async fn roll_back_creation(&self, meta: &NamespaceMeta) {
        self.drop_replicas(meta).await;
        let cmd = CatalogCommand::AbortNamespace {
            name: meta.name.clone(),
        };
        if let Err(e) = self.group.write(cmd).await {
            tracing::warn!(namespace = %meta.name, error = %e, "forgetting a failed namespace creation failed; the next sweep retries");
        }
    }

    /// Roll back namespace creations that can no longer finish: those this coordinator began
    /// before it (re)started, once every node they were placed on is back (so their replicas
    /// can be dropped), and any older than ten minutes.
    pub async fn sweep_namespaces(&self) {
        let now = crate::snapshots::now_ms();
        let live = self.live_nodes();
        // Another coordinator's leftovers are the leader's to sweep.
        let leader = self.group.is_leader();
        let stale: Vec<NamespaceMeta> = self
            .group
            .catalog
            .read()
            .creating
            .values()
            .filter(|p| {
                let cut_off = p.owner == self.config.node_id
                    && p.since_ms < self.started_ms
                    && p.meta
                        .placement
                        .iter()
                        .all(|r| r.members().iter().all(|n| live.contains(n)));
                cut_off
                    || (leader
                        && now.saturating_sub(p.since_ms)
                            > crate::snapshots::STALE_PENDING.as_millis() as u64)
            })
            .map(|p| p.meta.clone())
            .collect();
        for meta in stale {
            tracing::info!(namespace = %meta.name, "rolling back a namespace creation that a crash cut off");
            self.roll_back_creation(&meta).await;
        }
    }

    /// Create every replica of `meta` on its members, then give each member its place in
    /// the replica set.
    async fn create_replicas(&self, meta: &NamespaceMeta) -> Result<()> {
        let calls = meta.placement.iter().enumerate().flat_map(|(shard, set)| {
            set.members()
                .into_iter()
                .map(move |node| self.create_replica(meta, shard as u32, node))
        });
        futures::future::try_join_all(calls).await?;
        let configs = (0..meta.shards).flat_map(|shard| {
            let set = &meta.placement[shard as usize];
            set.members()
                .into_iter()
                .map(move |node| self.push_config(meta, shard, node))
        });
        futures::future::try_join_all(configs).await?;
        Ok(())
    }

    pub(crate) async fn create_replica(
        &self,
        meta: &NamespaceMeta,
        shard: u32,
        node: NodeId,
    ) -> Result<()> {
        let addr = self.member_addr(meta, shard, node)?;
        let req = CreateReplicaRequest {
            namespace: meta.name.clone(),
            shard,
            dim: meta.dim,
            metric: meta.metric,
            id_type: meta.id_type,
            index: meta.index,
            payload_schema: meta.payload_schema.clone(),
            incarnation: meta.incarnation,
        };
        let created = self
            .bounded(
                self.shards
                    .action::<serde_json::Value>(&addr, ACTION_CREATE_REPLICA, &req),
            )
            .await;
        // A retried create finds the replica already there.
        done_unless(created, tonic::Code::AlreadyExists)
    }

    /// Settle a declared namespace with what its first write brings: create its replicas,
    /// then commit dimension, metric, id type and payload schema. Nothing is committed when a
    /// replica cannot be created, so a failed first write leaves it declared.
    pub async fn settle_namespace(&self, name: &str, s: &Settlement) -> Result<NamespaceMeta> {
        let declared = self.namespace(name)?;
        if !declared.is_declared() {
            return Ok(declared);
        }
        validate_dim("vector", s.dim)?;
        let payload_schema = if s.payload.fields().is_empty() {
            None
        } else {
            Some(encode_schema(&s.payload.to_arrow())?)
        };
        let meta = NamespaceMeta {
            dim: s.dim,
            metric: s.metric,
            id_type: s.id_type,
            payload_schema: payload_schema.clone(),
            ..declared
        };
        if let Err(e) = self.create_replicas(&meta).await {
            self.drop_replicas(&meta).await;
            return Err(e);
        }
        let cmd = CatalogCommand::SettleNamespace {
            name: name.to_string(),
            dim: s.dim,
            metric: s.metric,
            id_type: s.id_type,
            payload_schema,
        };
        match self.group.write(cmd).await {
            Ok(CatalogResponse::Ok) => Ok(meta),
            // Another writer settled it first: its settlement holds.
            Ok(CatalogResponse::AlreadyExists(_)) => self.namespace(name),
            Ok(other) => Err(CoordinatorError::Internal(format!(
                "unexpected catalog reply {other:?}"
            ))),
            Err(e) => {
                self.drop_replicas(&meta).await;
                Err(e)
            }
        }
    }

    /// Delete a namespace from the catalog, then drop its replicas.
    pub async fn delete_namespace(&self, name: &str) -> Result<()> {
        let meta = self.namespace_now(name).await?;
        match self
            .group
            .write(CatalogCommand::DeleteNamespace {
                name: name.to_string(),
            })
            .await?
        {
            CatalogResponse::Ok => {}
            CatalogResponse::NotFound(n) => return Err(CoordinatorError::NamespaceNotFound(n)),
            other => {
                return Err(CoordinatorError::Internal(format!(
                    "unexpected catalog reply {other:?}"
                )))
            }
        }
        self.replicas.forget_namespace(name);
        if !meta.is_declared() {
            self.drop_replicas(&meta).await;
        }
        Ok(())
    }

    /// Drop every replica of `meta` (best effort: a failure is logged, its files stay).
    async fn drop_replicas(&self, meta: &NamespaceMeta) {
        let name = meta.name.as_str();
        let members = meta.placement.iter().enumerate().flat_map(|(shard, set)| {
            set.members()
                .into_iter()
                .map(move |node| (shard as u32, node))
        });
        for (shard, node) in members {
            let Ok(addr) = self.member_addr(meta, shard, node) else {
                continue;
            };
            if let Err(e) = self.drop_replica_at(&addr).await {
                tracing::warn!(namespace = name, shard, error = %e, "dropping a replica failed; its files stay until retried")
            }
        }
    }

    /// Drop the replica `to` names, and its files; one that is not there counts as dropped.
    pub(crate) async fn drop_replica_at(&self, to: &crate::node::ShardTarget) -> Result<()> {
        let key = ReplicaKey {
            namespace: to.namespace.clone(),
            shard: to.shard,
        };
        let dropped = self
            .shards
            .action::<serde_json::Value>(to, ACTION_DROP_REPLICA, &key)
            .await;
        done_unless(dropped, tonic::Code::NotFound)
    }

    /// Aggregate statistics from every shard: counts from one in-sync replica of each (the
    /// primary when it is live), bytes from every live member, and each member's LSN and lag.
    pub async fn namespace_stats(&self, name: &str) -> Result<NamespaceStats> {
        let meta = self.namespace_now(name).await?;
        let shards = if meta.is_declared() { 0 } else { meta.shards };
        let calls = (0..shards).map(|shard| self.shard_stats(&meta, shard));
        let per_shard = futures::future::try_join_all(calls).await?;
        let sum =
            |f: fn(&ReplicaStats) -> u64| per_shard.iter().map(|s| f(&s.0.replica)).sum::<u64>();
        let bytes = |f: fn(&(ShardStats, u64, u64)) -> u64| per_shard.iter().map(f).sum::<u64>();
        Ok(NamespaceStats {
            name: meta.name.clone(),
            dim: meta.dim,
            metric: meta.metric,
            id_type: meta.id_type,
            index: meta.index,
            shards: meta.shards,
            replication_factor: meta.replication_factor,
            count: sum(|r| r.count),
            deleted: sum(|r| r.deleted),
            memory_bytes: bytes(|s| s.1),
            disk_bytes: bytes(|s| s.2),
            indexing_lag: sum(|r| r.indexing_lag),
            payload_columns: payload_of(&meta)?
                .fields()
                .iter()
                .map(|f| format!("{}: {}", f.name(), f.data_type()))
                .collect(),
            per_shard: per_shard.into_iter().map(|s| s.0).collect(),
        })
    }

    /// One shard's statistics, with the memory and disk bytes of all its live members.
    async fn shard_stats(
        &self,
        meta: &NamespaceMeta,
        shard: u32,
    ) -> Result<(ShardStats, u64, u64)> {
        let key = ReplicaKey {
            namespace: meta.name.clone(),
            shard,
        };
        let set = &meta.placement[shard as usize];
        let members = set.members();
        let asks = members.iter().map(|&node| {
            let key = &key;
            async move {
                let to = self
                    .member_addr(meta, shard, node)
                    .map_err(|e| e.to_string())?;
                if !self.is_live(node) {
                    return Err(format!("node {node} is not live"));
                }
                let call = self
                    .shards
                    .action::<ReplicaStats>(&to, ACTION_REPLICA_STATS, key);
                match tokio::time::timeout(STATS_TIMEOUT, call).await {
                    Ok(Ok(s)) => Ok(s),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("{to} did not answer within {STATS_TIMEOUT:?}")),
                }
            }
        });
        let results: Vec<std::result::Result<ReplicaStats, String>> =
            futures::future::join_all(asks).await;
        let in_sync = set.in_sync();
        let best = members
            .iter()
            .zip(&results)
            .filter(|(n, _)| in_sync.contains(n))
            .find_map(|(_, a)| a.as_ref().ok().cloned())
            .ok_or_else(|| {
                let why: Vec<String> = results
                    .iter()
                    .filter_map(|r| r.as_ref().err().cloned())
                    .collect();
                CoordinatorError::Unavailable(format!(
                    "no in-sync replica answered (members {members:?}, in sync {in_sync:?}): {}",
                    why.join("; ")
                ))
            })?;
        let answers: Vec<Option<ReplicaStats>> = results.into_iter().map(|r| r.ok()).collect();
        let lsn_of = |i: usize, node: u64| {
            answers[i]
                .as_ref()
                .map(|a| a.lsn)
                .or_else(|| self.reported(node, meta, shard).map(|r| r.lsn))
                .unwrap_or(0)
        };
        let primary_lsn = lsn_of(0, set.primary);
        let replicas = members
            .iter()
            .enumerate()
            .map(|(i, &node)| {
                let lsn = lsn_of(i, node);
                ReplicaPosition {
                    node,
                    lsn,
                    lag: primary_lsn.saturating_sub(lsn),
                    live: self.is_live(node),
                }
            })
            .collect();
        let memory = answers.iter().flatten().map(|a| a.memory_bytes).sum();
        let disk = answers.iter().flatten().map(|a| a.disk_bytes).sum();
        let stats = ShardStats {
            shard,
            primary: set.primary,
            backups: set.backups.clone(),
            in_sync,
            epoch: set.epoch,
            replicas,
            replica: best,
        };
        Ok((stats, memory, disk))
    }

    /// Grow the namespace's payload schema from `before` (stored as `from`) to `after`, if
    /// they differ, as a compare-and-set: `false` when the stored schema has moved on
    /// meanwhile (the caller recomputes from the newer one).
    pub async fn swap_schema(
        &self,
        name: &str,
        from: &Option<String>,
        before: &PayloadSchema,
        after: &PayloadSchema,
    ) -> Result<bool> {
        if before == after {
            return Ok(true);
        }
        let to = encode_schema(&after.to_arrow())?;
        let cmd = CatalogCommand::SwapPayloadSchema {
            name: name.to_string(),
            from: from.clone(),
            to,
        };
        match self.group.write(cmd).await? {
            CatalogResponse::Ok => Ok(true),
            CatalogResponse::Conflict(_) => Ok(false),
            CatalogResponse::NotFound(n) => Err(CoordinatorError::NamespaceNotFound(n)),
            other => Err(CoordinatorError::Internal(format!(
                "unexpected catalog reply {other:?}"
            ))),
        }
    }
}

/// The payload schema stored for a namespace.
pub fn payload_of(meta: &NamespaceMeta) -> Result<PayloadSchema> {
    Ok(match &meta.payload_schema {
        Some(s) => PayloadSchema::from_schema(&decode_schema(s)?)?,
        None => PayloadSchema::default(),
    })
}
