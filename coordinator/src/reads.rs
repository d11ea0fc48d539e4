//! Get by ids, filtered scans and deletes: route ids to their shards, broadcast filters, and
//! put the shard answers together.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::{Field, Schema, SchemaRef};
use longbow_common::ids::ids_from_array;
use longbow_common::shard_api::{
    DeleteRequest, DeleteResponse, GetRequest, ScanRequest, ShardTicket, ACTION_DELETE_ROWS,
};
use longbow_common::{columns, ContractError, IdValue};

use crate::catalog::NamespaceMeta;
use crate::error::{CoordinatorError, Result};
use crate::namespaces::payload_of;
use crate::node::Coordinator;
use crate::routing::shard_of;
use crate::search::{check_filter, Columns};
use crate::targets::Consistency;

/// Records by id.
#[derive(Debug, Clone)]
pub struct GetRecords {
    /// Namespace.
    pub namespace: String,
    /// Ids to fetch.
    pub ids: Vec<serde_json::Value>,
    /// Payload columns (all when absent).
    pub columns: Option<Columns>,
    /// Return vectors.
    pub include_vectors: bool,
}

/// A filtered scan.
#[derive(Debug, Clone)]
pub struct ScanRecords {
    /// Namespace.
    pub namespace: String,
    /// Filter.
    pub filter: Option<serde_json::Value>,
    /// Payload columns (all when absent).
    pub columns: Option<Columns>,
    /// Return vectors.
    pub include_vectors: bool,
    /// At most this many rows.
    pub limit: Option<usize>,
}

/// A delete by ids and/or filter.
#[derive(Debug, Clone)]
pub struct DeleteRecords {
    /// Namespace.
    pub namespace: String,
    /// Ids.
    pub ids: Option<Vec<serde_json::Value>>,
    /// Filter.
    pub filter: Option<serde_json::Value>,
}

/// The record schema: `id`, the chosen payload columns, optionally `vector`.
fn record_schema(
    meta: &NamespaceMeta,
    cols: &[String],
    include_vectors: bool,
) -> Result<SchemaRef> {
    let payload = payload_of(meta)?;
    let mut fields = vec![Field::new(columns::ID, meta.id_type.data_type(), false)];
    for c in cols {
        let f = payload.field(c).ok_or_else(|| {
            ContractError::invalid(
                format!("columns[{}]", longbow_common::error::quote(c)),
                format!("is not a payload column of namespace '{}'", meta.name),
            )
        })?;
        fields.push(f.clone());
    }
    if include_vectors {
        fields.push(Field::new(
            columns::VECTOR,
            columns::vector_type(meta.dim),
            false,
        ));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Cast shard batches to `schema` (all-null columns from shards that never saw a column).
fn conform(schema: &SchemaRef, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    batches
        .into_iter()
        .map(|b| {
            let arrays: Vec<ArrayRef> = schema
                .fields()
                .iter()
                .map(|f| match b.column_by_name(f.name()) {
                    Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
                    Some(c) => arrow_cast::cast(c, f.data_type()),
                    None => Ok(arrow_array::new_null_array(f.data_type(), b.num_rows())),
                })
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
            RecordBatch::try_new(schema.clone(), arrays)
                .map_err(|e| CoordinatorError::Internal(e.to_string()))
        })
        .collect()
}

fn parse_ids(meta: &NamespaceMeta, ids: &[serde_json::Value]) -> Result<Vec<IdValue>> {
    Ok(ids
        .iter()
        .enumerate()
        .map(|(i, v)| IdValue::from_json(&format!("ids[{i}]"), v, meta.id_type))
        .collect::<std::result::Result<_, _>>()?)
}

/// Ids grouped by the shard that owns them, as JSON values for shard requests.
fn ids_by_shard(ids: &[IdValue], shards: u32) -> HashMap<u32, Vec<serde_json::Value>> {
    let mut by_shard: HashMap<u32, Vec<serde_json::Value>> = HashMap::new();
    for id in ids {
        by_shard
            .entry(shard_of(id, shards))
            .or_default()
            .push(id.to_json());
    }
    by_shard
}

impl Coordinator {
    /// Run one get/scan ticket per shard in parallel (within the limits) and conform the
    /// answers to `schema`.
    async fn run_tickets(
        &self,
        meta: &NamespaceMeta,
        schema: &SchemaRef,
        tickets: impl Iterator<Item = (u32, ShardTicket)>,
    ) -> Result<Vec<RecordBatch>> {
        let calls = tickets.map(|(shard, t)| async move {
            self.on_replica(meta, shard, Consistency::Any, |to| {
                let t = &t;
                async move { self.bounded(self.shards.get(&to, t)).await }
            })
            .await
        });
        let parts = futures::future::try_join_all(calls)
            .await?
            .into_iter()
            .flatten()
            .collect();
        conform(schema, parts)
    }

    /// Records by id, in request order (missing ids skipped).
    pub async fn get(&self, req: &GetRecords) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let meta = self.namespace_now(&req.namespace).await?;
        let cols = req
            .columns
            .as_ref()
            .map_or_else(|| all_columns(&meta), |c| c.resolve(&meta));
        let schema = record_schema(&meta, &cols, req.include_vectors)?;
        let ids = parse_ids(&meta, &req.ids)?;
        if meta.is_declared() {
            return Ok((schema.clone(), vec![RecordBatch::new_empty(schema)]));
        }
        let by_shard = ids_by_shard(&ids, meta.shards);
        let tickets = by_shard.into_iter().map(|(shard, ids)| {
            let t = ShardTicket::Get(GetRequest {
                namespace: meta.name.clone(),
                shard,
                ids,
                columns: Some(cols.clone()),
                include_vectors: req.include_vectors,
                allow_missing_columns: true,
            });
            (shard, t)
        });
        let parts = self.run_tickets(&meta, &schema, tickets).await?;
        if parts.is_empty() {
            return Ok((schema.clone(), vec![RecordBatch::new_empty(schema)]));
        }
        let all = arrow_select::concat::concat_batches(&schema, &parts)
            .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
        // Restore request order.
        let got = ids_from_array(all.column(0).as_ref(), meta.id_type)?;
        let pos: HashMap<&IdValue, u32> = got
            .iter()
            .enumerate()
            .map(|(i, id)| (id, i as u32))
            .collect();
        let order: Vec<u32> = ids.iter().filter_map(|id| pos.get(id).copied()).collect();
        let ordered = arrow_select::take::take_record_batch(&all, &UInt32Array::from(order))
            .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
        Ok((schema, vec![ordered]))
    }

    /// Live records matching a filter, from every shard, at most `limit`.
    pub async fn scan(&self, req: &ScanRecords) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let meta = self.namespace_now(&req.namespace).await?;
        let cols = req
            .columns
            .as_ref()
            .map_or_else(|| all_columns(&meta), |c| c.resolve(&meta));
        let schema = record_schema(&meta, &cols, req.include_vectors)?;
        check_filter(&meta, req.filter.as_ref())?;
        if meta.is_declared() {
            return Ok((schema.clone(), vec![RecordBatch::new_empty(schema)]));
        }
        let limit = req.limit.unwrap_or(usize::MAX);
        let tickets = (0..meta.shards).map(|shard| {
            let t = ShardTicket::Scan(ScanRequest {
                namespace: meta.name.clone(),
                shard,
                filter: req.filter.clone(),
                columns: Some(cols.clone()),
                include_vectors: req.include_vectors,
                limit: req.limit,
                allow_missing_columns: true,
            });
            (shard, t)
        });
        let parts = self.run_tickets(&meta, &schema, tickets).await?;
        let mut out = Vec::new();
        let mut left = limit;
        for b in parts {
            if left == 0 {
                break;
            }
            let take = b.num_rows().min(left);
            if take > 0 {
                out.push(b.slice(0, take));
                left -= take;
            }
        }
        Ok((schema, out))
    }

    /// Delete by ids and/or filter; returns rows deleted.
    pub async fn delete(&self, req: &DeleteRecords) -> Result<u64> {
        let meta = self.namespace_now(&req.namespace).await?;
        let ids = parse_ids(&meta, req.ids.as_deref().unwrap_or_default())?;
        check_filter(&meta, req.filter.as_ref())?;
        if req.ids.is_none() && req.filter.is_none() {
            return Err(ContractError::invalid("ids", "give ids or a filter").into());
        }
        if meta.is_declared() {
            return Ok(0);
        }
        let by_shard = ids_by_shard(&ids, meta.shards);
        let shards: Vec<u32> = if req.filter.is_some() {
            (0..meta.shards).collect()
        } else {
            by_shard.keys().copied().collect()
        };
        let calls = shards.into_iter().map(|shard| {
            let meta = &meta;
            let ids = by_shard.get(&shard).cloned();
            async move {
                let r: DeleteResponse = self
                    .on_primary(&meta.name, shard, |to, epoch| {
                        let body = DeleteRequest {
                            namespace: meta.name.clone(),
                            shard,
                            ids: ids.clone(),
                            filter: req.filter.clone(),
                            epoch: Some(epoch),
                        };
                        async move {
                            self.bounded(self.shards.action(&to, ACTION_DELETE_ROWS, &body))
                                .await
                        }
                    })
                    .await?;
                Ok::<_, CoordinatorError>(r.deleted)
            }
        });
        Ok(futures::future::try_join_all(calls)
            .await?
            .into_iter()
            .sum())
    }
}

/// Every payload column of a namespace.
pub fn all_columns(meta: &NamespaceMeta) -> Vec<String> {
    payload_of(meta)
        .map(|p| p.fields().iter().map(|f| f.name().clone()).collect())
        .unwrap_or_default()
}
