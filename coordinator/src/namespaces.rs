//! Namespace lifecycle through the catalog: create (placement + replicas), delete, stats,
//! readiness, and growing the payload schema.

use arrow_schema::Schema;
use longbow_common::model::validate_dim;
use longbow_common::payload_schema::PayloadSchema;
use longbow_common::shard_api::{
    decode_schema, encode_schema, CreateReplicaRequest, ReplicaKey, ReplicaStats,
    ACTION_CREATE_REPLICA, ACTION_DROP_REPLICA, ACTION_REPLICA_STATS,
};
use longbow_common::{ContractError, IdType, IndexParams, Metric};
use serde::Serialize;

use crate::catalog::{place, CatalogCommand, CatalogResponse, NamespaceMeta, PendingNamespace};
use crate::error::{CoordinatorError, Result};
use crate::node::Coordinator;

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
    /// Replicas per shard (only 1 until replication lands).
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
    /// Placement epoch.
    pub epoch: u64,
    /// Replica statistics (LSN, counts, bytes).
    pub replica: ReplicaStats,
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

/// Check a namespace name (the rule lives in `longbow_common::model`).
pub fn validate_name(name: &str) -> Result<(), ContractError> {
    longbow_common::model::validate_namespace("name", name)
}

impl Coordinator {
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
        if rf != 1 {
            return Err(ContractError::invalid(
                "replication_factor",
                format!("only 1 is supported until replication lands, got {rf}"),
            )
            .into());
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
        let live = self.live_nodes();
        let load: Vec<(u64, u64)> = {
            let cat = self.group.catalog.read();
            live.iter()
                .map(|&id| {
                    let hosted = cat
                        .namespaces
                        .values()
                        .flat_map(|ns| &ns.placement)
                        .filter(|r| r.primary == id)
                        .count();
                    (id, hosted as u64)
                })
                .collect()
        };
        let placement = place(shards, &load).ok_or_else(|| {
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
        let stale: Vec<NamespaceMeta> = self
            .group
            .catalog
            .read()
            .creating
            .values()
            .filter(|p| {
                let cut_off = p.owner == self.config.node_id
                    && p.since_ms < self.started_ms
                    && p.meta.placement.iter().all(|r| live.contains(&r.primary));
                cut_off
                    || now.saturating_sub(p.since_ms)
                        > crate::snapshots::STALE_PENDING.as_millis() as u64
            })
            .map(|p| p.meta.clone())
            .collect();
        for meta in stale {
            tracing::info!(namespace = %meta.name, "rolling back a namespace creation that a crash cut off");
            self.roll_back_creation(&meta).await;
        }
    }

    async fn create_replicas(&self, meta: &NamespaceMeta) -> Result<()> {
        let calls = (0..meta.shards).map(|shard| async move {
            let addr = self.primary_addr(meta, shard)?;
            let req = CreateReplicaRequest {
                namespace: meta.name.clone(),
                shard,
                dim: meta.dim,
                metric: meta.metric,
                id_type: meta.id_type,
                index: meta.index,
                payload_schema: meta.payload_schema.clone(),
            };
            match self
                .bounded(self.shards.action::<serde_json::Value>(
                    &addr,
                    ACTION_CREATE_REPLICA,
                    &req,
                ))
                .await
            {
                Ok(_) => Ok(()),
                // A retried create finds the replica already there.
                Err(CoordinatorError::Shard { status, .. })
                    if status.code() == tonic::Code::AlreadyExists =>
                {
                    Ok(())
                }
                Err(e) => Err(e),
            }
        });
        futures::future::try_join_all(calls).await?;
        Ok(())
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
        let meta = self.namespace(name)?;
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
        if !meta.is_declared() {
            self.drop_replicas(&meta).await;
        }
        Ok(())
    }

    /// Drop every replica of `meta` (best effort: a failure is logged, its files stay).
    async fn drop_replicas(&self, meta: &NamespaceMeta) {
        let name = meta.name.as_str();
        for shard in 0..meta.shards {
            let Ok(addr) = self.primary_addr(meta, shard) else {
                continue;
            };
            let key = ReplicaKey {
                namespace: name.to_string(),
                shard,
            };
            match self
                .shards
                .action::<serde_json::Value>(&addr, ACTION_DROP_REPLICA, &key)
                .await
            {
                Ok(_) => {}
                Err(CoordinatorError::Shard { status, .. })
                    if status.code() == tonic::Code::NotFound => {}
                Err(e) => {
                    tracing::warn!(namespace = name, shard, error = %e, "dropping a replica failed; its files stay until retried")
                }
            }
        }
    }

    /// Aggregate statistics from every shard.
    pub async fn namespace_stats(&self, name: &str) -> Result<NamespaceStats> {
        let meta = self.namespace(name)?;
        let shards = if meta.is_declared() { 0 } else { meta.shards };
        let calls = (0..shards).map(|shard| {
            let meta = &meta;
            async move {
                let addr = self.primary_addr(meta, shard)?;
                let key = ReplicaKey {
                    namespace: meta.name.clone(),
                    shard,
                };
                let replica: ReplicaStats = self
                    .bounded(self.shards.action(&addr, ACTION_REPLICA_STATS, &key))
                    .await?;
                let set = &meta.placement[shard as usize];
                Ok::<_, CoordinatorError>(ShardStats {
                    shard,
                    primary: set.primary,
                    epoch: set.epoch,
                    replica,
                })
            }
        });
        let per_shard = futures::future::try_join_all(calls).await?;
        let sum =
            |f: fn(&ReplicaStats) -> u64| per_shard.iter().map(|s| f(&s.replica)).sum::<u64>();
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
            memory_bytes: sum(|r| r.memory_bytes),
            disk_bytes: sum(|r| r.disk_bytes),
            indexing_lag: sum(|r| r.indexing_lag),
            payload_columns: payload_of(&meta)?
                .fields()
                .iter()
                .map(|f| format!("{}: {}", f.name(), f.data_type()))
                .collect(),
            per_shard,
        })
    }

    /// Grow the namespace's payload schema in the catalog if `conformed` added columns.
    pub async fn record_schema(
        &self,
        name: &str,
        before: &PayloadSchema,
        after: &PayloadSchema,
    ) -> Result<()> {
        if before == after {
            return Ok(());
        }
        let encoded = encode_schema(&after.to_arrow())?;
        self.group
            .write(CatalogCommand::SetPayloadSchema {
                name: name.to_string(),
                payload_schema: encoded,
            })
            .await?;
        Ok(())
    }
}

/// The payload schema stored for a namespace.
pub fn payload_of(meta: &NamespaceMeta) -> Result<PayloadSchema> {
    Ok(match &meta.payload_schema {
        Some(s) => PayloadSchema::from_schema(&decode_schema(s)?)?,
        None => PayloadSchema::default(),
    })
}
