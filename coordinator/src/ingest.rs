//! Ingest: check a client batch, grow the namespace schema, split it by shard and write
//! each part to its primary; a batch is acknowledged once every part is durable.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use longbow_common::ids::{ids_from_array, IdType};
use longbow_common::{columns, ContractError, Metric};

use crate::catalog::NamespaceMeta;
use crate::error::{CoordinatorError, Result};
use crate::namespaces::{payload_of, CreateNamespaceRequest};
use crate::node::Coordinator;
use crate::routing;

/// The dimension of a vector column, from its type or its first row.
pub(crate) fn vector_dim(col: &ArrayRef) -> Result<usize> {
    use arrow_array::cast::AsArray;
    match col.data_type() {
        DataType::FixedSizeList(_, n) => Ok(*n as usize),
        DataType::List(_) if !col.is_empty() => Ok(col.as_list::<i32>().value_length(0) as usize),
        DataType::LargeList(_) if !col.is_empty() => {
            Ok(col.as_list::<i64>().value_length(0) as usize)
        }
        other => Err(ContractError::invalid(
            "vector",
            format!("column type {other} is not a list of floats"),
        )
        .into()),
    }
}

impl Coordinator {
    /// The namespace a DoPut writes to, created from its first batch when unknown: `dim`
    /// from the vector column, metric from schema metadata `longbow.metric` (default l2),
    /// id type from the id column.
    pub async fn namespace_for_put(
        &self,
        name: &str,
        first: &RecordBatch,
    ) -> Result<NamespaceMeta> {
        if let Ok(meta) = self.namespace(name) {
            return Ok(meta);
        }
        let vector = first.column_by_name(columns::VECTOR).ok_or_else(|| {
            ContractError::invalid(
                "vector",
                "column is missing (needed to create the namespace)",
            )
        })?;
        let id = first
            .column_by_name(columns::ID)
            .ok_or_else(|| ContractError::invalid("id", "column is missing"))?;
        let metric = match first.schema().metadata().get(columns::METRIC_METADATA_KEY) {
            Some(m) => Metric::parse(columns::METRIC_METADATA_KEY, m)?,
            None => Metric::L2,
        };
        let req = CreateNamespaceRequest {
            name: name.to_string(),
            dim: vector_dim(vector)?,
            metric,
            id_type: IdType::from_data_type(id.data_type())?,
            shards: None,
            replication_factor: None,
            index: Default::default(),
        };
        match self.create_namespace(req, None).await {
            Ok(meta) => Ok(meta),
            // Another writer created it first.
            Err(CoordinatorError::NamespaceExists(_)) => self.namespace(name),
            Err(e) => Err(e),
        }
    }

    /// Write one client batch; returns its row count once every part is durable.
    pub async fn ingest(&self, name: &str, batch: RecordBatch) -> Result<u64> {
        let meta = self.namespace(name)?;
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(0);
        }
        let id_col = batch
            .column_by_name(columns::ID)
            .ok_or_else(|| ContractError::invalid("id", "column is missing"))?;
        let ids = ids_from_array(id_col.as_ref(), meta.id_type)?;
        let vector = batch
            .column_by_name(columns::VECTOR)
            .ok_or_else(|| ContractError::invalid("vector", "column is missing"))?;
        let dim = vector_dim(vector)?;
        if dim != meta.dim {
            return Err(ContractError::invalid(
                "vector",
                format!("has dimension {dim}, expected {}", meta.dim),
            )
            .into());
        }
        let payload = self.conform_payload(&meta, &batch).await?;
        let mut fields = vec![
            Field::new(columns::ID, id_col.data_type().clone(), false),
            Field::new(columns::VECTOR, vector.data_type().clone(), true),
        ];
        let mut arrays = vec![id_col.clone(), vector.clone()];
        for (f, a) in payload.schema().fields().iter().zip(payload.columns()) {
            fields.push(f.as_ref().clone());
            arrays.push(a.clone());
        }
        let routed = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .map_err(|e| ContractError::invalid("batch", e))?;
        let parts = routing::split(&routed, &ids, meta.shards)
            .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
        let writes = parts.into_iter().map(|(shard, part)| {
            let meta = &meta;
            async move {
                let addr = self.primary_addr(meta, shard)?;
                self.bounded(self.shards.write(&addr, &meta.name, shard, part))
                    .await
            }
        });
        futures::future::try_join_all(writes).await?;
        self.metrics.ingest_rows.inc_by(rows as u64);
        Ok(rows as u64)
    }

    /// Conform payload columns to the namespace schema, growing it (through Raft) when the
    /// batch brings new columns. Schema growth is serialised so concurrent writers never
    /// lose each other's columns.
    async fn conform_payload(
        &self,
        meta: &NamespaceMeta,
        batch: &RecordBatch,
    ) -> Result<RecordBatch> {
        let before = payload_of(meta)?;
        let mut after = before.clone();
        let conformed = after.conform(batch)?;
        if after == before {
            return Ok(conformed);
        }
        let _guard = self.schema_lock.lock().await;
        let fresh = payload_of(&self.namespace(&meta.name)?)?;
        let mut grown = fresh.clone();
        let conformed = grown.conform(batch)?;
        self.record_schema(&meta.name, &fresh, &grown).await?;
        Ok(conformed)
    }
}
