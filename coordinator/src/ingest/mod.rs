//! Ingest: check a whole client batch, create or settle its namespace, grow the payload
//! schema, split the batch by shard and write each part to its primary. A batch is
//! acknowledged once every part is durable.
//!
//! An ingest stream ([`IngestStream`]) keeps many batches in flight: each shard's parts go,
//! in stream order, down one long-lived write stream to its primary (a [`lane`]), so the
//! order of writes to every id is the order the client sent them.
//!
//! A refused batch changes nothing: every check (ids, vector column and metadata, dimension,
//! nulls, NaN and infinity, payload names and types) runs on the whole batch, off the async
//! runtime, before a namespace is created or any part reaches a shard. Only a shard failing
//! after others stored their parts leaves a batch half-written; the client then gets
//! [`CoordinatorError::PartialWrite`], and since writes are upserts by id, retrying the whole
//! batch is idempotent.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};
use longbow_common::ids::{ids_from_array, IdType};
use longbow_common::payload_schema::PayloadSchema;
use longbow_common::vectors::{canonical_vectors, vector_column};
use longbow_common::{columns, ContractError, Metric};

use crate::catalog::NamespaceMeta;
use crate::error::{CoordinatorError, Result};
use crate::namespaces::{payload_of, CreateNamespaceRequest, Settlement};
use crate::node::Coordinator;
use crate::routing;

mod lane;
mod stream;

pub use stream::IngestStream;

/// What a batch is checked against: an existing namespace, or the one its first batch
/// creates or settles.
#[derive(Debug, Clone)]
struct Target {
    dim: Option<usize>,
    id_type: Option<IdType>,
    shards: u32,
    payload: PayloadSchema,
}

impl Target {
    /// An existing (settled) namespace.
    fn of(meta: &NamespaceMeta) -> Result<Target> {
        Ok(Target {
            dim: Some(meta.dim),
            id_type: Some(meta.id_type),
            shards: meta.shards,
            payload: payload_of(meta)?,
        })
    }

    /// A namespace the batch itself is to create or settle, with `shards` shards.
    fn first_batch(shards: u32) -> Target {
        Target {
            dim: None,
            id_type: None,
            shards,
            payload: PayloadSchema::default(),
        }
    }
}

/// A checked client batch, split into its shards' parts.
pub(crate) struct Routed {
    /// Rows in the batch.
    pub rows: u64,
    /// Each shard's part (shards without rows have none).
    pub parts: Vec<(u32, RecordBatch)>,
}

/// A batch that passed every check, split by shard.
struct Prepared {
    rows: u64,
    dim: usize,
    id_type: IdType,
    shards: u32,
    /// The payload schema after this batch (a superset of the target's).
    payload: PayloadSchema,
    grows: bool,
    parts: Vec<(u32, RecordBatch)>,
}

/// Check a whole batch against `t` and split it by shard. Pure CPU work: no I/O.
fn prepare(t: &Target, batch: &RecordBatch) -> Result<Prepared> {
    let id_col = batch
        .column_by_name(columns::ID)
        .ok_or_else(|| ContractError::invalid("id", "column is missing"))?;
    let id_type = match t.id_type {
        Some(t) => t,
        None => IdType::from_data_type(id_col.data_type())?,
    };
    let ids = ids_from_array(id_col.as_ref(), id_type)?;
    let (vector_name, raw) = vector_column(batch)?
        .ok_or_else(|| ContractError::invalid("vector", "column is missing"))?;
    let (dim, vectors) =
        canonical_vectors(raw.as_ref(), t.dim).map_err(|e| rename_vector_error(e, &vector_name))?;
    let payload_cols: Vec<usize> = batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name() != columns::ID && *f.name() != vector_name)
        .map(|(i, _)| i)
        .collect();
    let payload_in = batch
        .project(&payload_cols)
        .map_err(|e| ContractError::invalid("batch", e))?;
    let mut payload = t.payload.clone();
    let conformed = payload.conform(&payload_in)?;
    let grows = payload != t.payload;
    let mut fields = vec![
        Field::new(columns::ID, id_col.data_type().clone(), false),
        Field::new(columns::VECTOR, vectors.data_type().clone(), false),
    ];
    let mut arrays: Vec<ArrayRef> = vec![id_col.clone(), vectors];
    for (f, a) in conformed.schema().fields().iter().zip(conformed.columns()) {
        fields.push(f.as_ref().clone());
        arrays.push(a.clone());
    }
    let routed = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| ContractError::invalid("batch", e))?;
    let parts = routing::split(&routed, &ids, t.shards)
        .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
    Ok(Prepared {
        rows: batch.num_rows() as u64,
        dim,
        id_type,
        shards: t.shards,
        payload,
        grows,
        parts,
    })
}

/// Errors about the vector column name the column the client sent (`embedding` too).
fn rename_vector_error(e: ContractError, name: &str) -> ContractError {
    match e {
        ContractError::InvalidField { field, reason } if name != columns::VECTOR => {
            ContractError::InvalidField {
                field: field.replacen(columns::VECTOR, name, 1),
                reason,
            }
        }
        other => other,
    }
}

/// The metric a first batch asks for (schema metadata `longbow.metric`).
fn batch_metric(batch: &RecordBatch) -> Result<Option<Metric>> {
    Ok(
        match batch.schema().metadata().get(columns::METRIC_METADATA_KEY) {
            Some(m) => Some(Metric::parse(columns::METRIC_METADATA_KEY, m)?),
            None => None,
        },
    )
}

/// Times a batch adding columns is checked again after losing a schema change to another
/// writer.
const SCHEMA_SWAP_ATTEMPTS: usize = 16;

impl Coordinator {
    async fn prepare_off_runtime(&self, t: Target, batch: &RecordBatch) -> Result<Prepared> {
        let batch = batch.clone();
        tokio::task::spawn_blocking(move || prepare(&t, &batch))
            .await
            .map_err(|e| CoordinatorError::Internal(format!("batch check task: {e}")))?
    }

    /// Check one client batch for namespace `name` and split it by shard, creating the
    /// namespace from the batch when unknown (dim from the vector column, metric from schema
    /// metadata `longbow.metric`, default l2, id type from the id column), settling it when
    /// only declared, and storing the payload columns it adds.
    pub(crate) async fn route_batch(&self, name: &str, batch: RecordBatch) -> Result<Routed> {
        if batch.num_rows() == 0 {
            return Ok(Routed {
                rows: 0,
                parts: Vec::new(),
            });
        }
        let existing = self.namespace_now(name).await.ok();
        let (meta, first) = match existing {
            Some(meta) if !meta.is_declared() => (meta, None),
            Some(declared) => self.settle_from(&declared, &batch).await?,
            None => self.create_from(name, &batch).await?,
        };
        let target = Target::of(&meta)?;
        // A first batch was checked and split already, against what it created; reuse that
        // unless another writer created the namespace differently in between.
        let reusable = first.filter(|p| {
            (Some(p.dim), Some(p.id_type), p.shards) == (target.dim, target.id_type, target.shards)
                && p.payload == target.payload
        });
        let mut prepared = match reusable {
            Some(p) => Prepared { grows: false, ..p },
            None => self.prepare_off_runtime(target, &batch).await?,
        };
        if prepared.grows {
            prepared = self.grow_schema(name, &batch).await?;
        }
        Ok(Routed {
            rows: prepared.rows,
            parts: prepared.parts,
        })
    }

    /// Check `batch` against the newest schema and store the columns it adds. The change is
    /// a compare-and-set in the catalog: a writer that lost a race with another (on this
    /// coordinator or any other) checks again against the schema that won, so concurrent
    /// writers never lose each other's columns.
    async fn grow_schema(&self, name: &str, batch: &RecordBatch) -> Result<Prepared> {
        for _ in 0..SCHEMA_SWAP_ATTEMPTS {
            let meta = self.namespace(name)?;
            let target = Target::of(&meta)?;
            let before = target.payload.clone();
            let prepared = self.prepare_off_runtime(target, batch).await?;
            if self
                .swap_schema(name, &meta.payload_schema, &before, &prepared.payload)
                .await?
            {
                return Ok(prepared);
            }
        }
        Err(CoordinatorError::Unavailable(format!(
            "the payload schema of namespace '{name}' changed {SCHEMA_SWAP_ATTEMPTS} times while \
             this batch was checked against it; retry"
        )))
    }

    /// Create a namespace from its first batch, once the batch has passed every check; the
    /// checked batch comes back with it.
    async fn create_from(
        &self,
        name: &str,
        batch: &RecordBatch,
    ) -> Result<(NamespaceMeta, Option<Prepared>)> {
        crate::namespaces::validate_name(name)?;
        let shards = self.config.default_shards;
        let checked = self
            .prepare_off_runtime(Target::first_batch(shards), batch)
            .await?;
        let req = CreateNamespaceRequest {
            name: name.to_string(),
            dim: Some(checked.dim),
            metric: batch_metric(batch)?.unwrap_or_default(),
            id_type: checked.id_type,
            shards: Some(shards),
            replication_factor: None,
            index: Default::default(),
        };
        let schema = checked.payload.to_arrow();
        match self.create_namespace(req, Some(schema.as_ref())).await {
            Ok(meta) => Ok((meta, Some(checked))),
            // Another writer created it first.
            Err(CoordinatorError::NamespaceExists(_)) => Ok((self.namespace(name)?, None)),
            Err(e) => Err(e),
        }
    }

    /// Settle a declared namespace from its first batch, once the batch has passed every
    /// check; the checked batch comes back with it.
    async fn settle_from(
        &self,
        declared: &NamespaceMeta,
        batch: &RecordBatch,
    ) -> Result<(NamespaceMeta, Option<Prepared>)> {
        let checked = self
            .prepare_off_runtime(Target::first_batch(declared.shards), batch)
            .await?;
        let s = Settlement {
            dim: checked.dim,
            metric: batch_metric(batch)?.unwrap_or(declared.metric),
            id_type: checked.id_type,
            payload: checked.payload.clone(),
        };
        let meta = self.settle_namespace(&declared.name, &s).await?;
        Ok((meta, Some(checked)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
    use arrow_array::{Array, StringArray, UInt64Array};

    fn batch(values: &[f32], payload_name: &str) -> RecordBatch {
        let mut b = FixedSizeListBuilder::new(Float32Builder::new(), 2);
        for pair in values.chunks(2) {
            b.values().append_slice(pair);
            b.append(true);
        }
        let vectors = b.finish();
        let n = values.len() / 2;
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", arrow_schema::DataType::UInt64, false),
                Field::new("vector", vectors.data_type().clone(), true),
                Field::new(payload_name, arrow_schema::DataType::Utf8, true),
            ])),
            vec![
                Arc::new(UInt64Array::from_iter_values(0..n as u64)),
                Arc::new(vectors),
                Arc::new(StringArray::from(vec!["x"; n])),
            ],
        )
        .expect("batch")
    }

    fn target() -> Target {
        Target {
            dim: Some(2),
            id_type: Some(IdType::Uint64),
            shards: 3,
            payload: PayloadSchema::default(),
        }
    }

    #[test]
    fn a_nan_anywhere_refuses_the_whole_batch() {
        let err = prepare(&target(), &batch(&[1.0, 2.0, 3.0, f32::NAN], "tag"))
            .err()
            .expect("nan");
        assert!(err.to_string().contains("vector[1]"), "{err}");
    }

    #[test]
    fn a_payload_column_named_score_is_stored() {
        let p = prepare(&target(), &batch(&[1.0, 2.0, 3.0, 4.0], "score")).expect("ok");
        assert!(p.grows);
        assert!(p.payload.field("score").is_some());
        assert_eq!(p.parts.iter().map(|(_, b)| b.num_rows()).sum::<usize>(), 2);
    }
}
