//! Mutations: the validated changes a replica applies, and their WAL encoding.
//!
//! Each mutation is logged as one WAL entry whose body is an Arrow IPC stream: an upsert as
//! `id`, `vector` and its (already conformed) payload columns; a delete as its `id` column.
//! Deletes by filter are resolved to ids before logging, so replay is deterministic.

use std::sync::Arc;

use arrow_array::{ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, RecordBatchOptions};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{Field, Schema};
use longbow_common::ids::{ids_from_array, ids_to_array};
use longbow_common::vectors::vectors_from_array;
use longbow_common::{columns, ContractError, IdType, IdValue};

use crate::error::{Result, ShardError};

/// WAL entry kind of an upsert.
pub const KIND_UPSERT: u8 = 1;
/// WAL entry kind of a delete.
pub const KIND_DELETE: u8 = 2;

/// Rows to insert or replace.
#[derive(Debug, Clone)]
pub struct UpsertRows {
    /// One id per row.
    pub ids: Vec<IdValue>,
    /// Row-major vectors (normalised already for cosine).
    pub vectors: Vec<f32>,
    /// Payload columns, conformed to the replica's payload schema.
    pub payload: RecordBatch,
}

/// A change to a replica.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Insert or replace rows.
    Upsert(UpsertRows),
    /// Delete rows by id.
    Delete(Vec<IdValue>),
}

fn ipc_encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut out, &batch.schema())?;
        w.write(batch)?;
        w.finish()?;
    }
    Ok(out)
}

fn ipc_decode(body: &[u8]) -> Result<RecordBatch> {
    let mut reader = StreamReader::try_new(body, None)?;
    let schema = reader.schema();
    match reader.next() {
        Some(b) => Ok(b?),
        None => Ok(RecordBatch::new_empty(schema)),
    }
}

impl Mutation {
    /// The WAL `(kind, body)` of this mutation.
    pub fn encode(&self, id_type: IdType, dim: usize) -> Result<(u8, Vec<u8>)> {
        match self {
            Mutation::Upsert(rows) => {
                let n = rows.ids.len();
                let mut fields = vec![
                    Field::new(columns::ID, id_type.data_type(), false),
                    Field::new(columns::VECTOR, columns::vector_type(dim), false),
                ];
                let item = Arc::new(Field::new("item", arrow_schema::DataType::Float32, false));
                let vectors = FixedSizeListArray::try_new(
                    item,
                    dim as i32,
                    Arc::new(Float32Array::from(rows.vectors.clone())),
                    None,
                )?;
                let mut arrays: Vec<ArrayRef> =
                    vec![ids_to_array(&rows.ids, id_type), Arc::new(vectors)];
                for (f, a) in rows
                    .payload
                    .schema()
                    .fields()
                    .iter()
                    .zip(rows.payload.columns())
                {
                    fields.push(f.as_ref().clone());
                    arrays.push(a.clone());
                }
                let opts = RecordBatchOptions::new().with_row_count(Some(n));
                let batch = RecordBatch::try_new_with_options(
                    Arc::new(Schema::new(fields)),
                    arrays,
                    &opts,
                )?;
                Ok((KIND_UPSERT, ipc_encode(&batch)?))
            }
            Mutation::Delete(ids) => {
                let schema = Schema::new(vec![Field::new(columns::ID, id_type.data_type(), false)]);
                let batch =
                    RecordBatch::try_new(Arc::new(schema), vec![ids_to_array(ids, id_type)])?;
                Ok((KIND_DELETE, ipc_encode(&batch)?))
            }
        }
    }

    /// Decode a WAL entry. Payload columns come back as logged; the caller conforms them to
    /// its schema again, which rebuilds the schema on replay.
    pub fn decode(kind: u8, body: &[u8], id_type: IdType, dim: usize) -> Result<Mutation> {
        let batch = ipc_decode(body)?;
        let id_col = batch.column_by_name(columns::ID).ok_or_else(|| {
            ShardError::Contract(ContractError::invalid("wal entry", "has no id column"))
        })?;
        let ids = ids_from_array(id_col.as_ref(), id_type)?;
        match kind {
            KIND_UPSERT => {
                let vcol = batch.column_by_name(columns::VECTOR).ok_or_else(|| {
                    ShardError::Contract(ContractError::invalid(
                        "wal entry",
                        "has no vector column",
                    ))
                })?;
                let vectors = vectors_from_array(vcol.as_ref(), Some(dim))?.data;
                let payload = columns::payload_only(&batch)?;
                Ok(Mutation::Upsert(UpsertRows {
                    ids,
                    vectors,
                    payload,
                }))
            }
            KIND_DELETE => Ok(Mutation::Delete(ids)),
            other => Err(ShardError::Contract(ContractError::invalid(
                "wal entry",
                format!("unknown kind {other}"),
            ))),
        }
    }
}
