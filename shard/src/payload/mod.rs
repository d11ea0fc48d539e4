//! Payload: the Arrow columns stored beside each segment's vectors, the replica's payload
//! schema (additive evolution), and gathering columns for results.
//!
//! Payload is kept as the Arrow batches that were written (one chunk per write, sliced at
//! segment boundaries), so nothing is re-encoded on the write path and filters run as Arrow
//! compute kernels over whole chunks.

pub mod filter;

use std::sync::Arc;

use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_cast::cast::{cast_with_options, CastOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use longbow_common::{columns, ContractError};

/// The payload columns of one segment, chunk by chunk.
#[derive(Default)]
pub struct PayloadStore {
    chunks: Vec<(u32, RecordBatch)>,
}

impl PayloadStore {
    /// Store `batch` as the payload of rows `start..start + batch.num_rows()`.
    pub fn push(&mut self, start: u32, batch: RecordBatch) {
        self.chunks.push((start, batch));
    }

    /// The chunks with their first offsets, ascending.
    pub fn chunks(&self) -> &[(u32, RecordBatch)] {
        &self.chunks
    }

    /// (chunk index, row in chunk) of `offset`.
    pub fn locate(&self, offset: u32) -> Option<(usize, usize)> {
        let idx = self
            .chunks
            .partition_point(|(start, _)| *start <= offset)
            .checked_sub(1)?;
        let (start, batch) = &self.chunks[idx];
        let row = (offset - start) as usize;
        (row < batch.num_rows()).then_some((idx, row))
    }

    /// Bytes held by the payload arrays.
    pub fn memory_bytes(&self) -> usize {
        self.chunks
            .iter()
            .map(|(_, b)| b.get_array_memory_size())
            .sum()
    }
}

/// The payload schema of a replica: every column ever written, in first-seen order.
/// Columns may be added; an existing column's type never changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PayloadSchema {
    fields: Vec<Field>,
}

impl PayloadSchema {
    /// A schema from known fields (all made nullable: older rows lack newer columns).
    pub fn from_schema(schema: &Schema) -> Result<Self, ContractError> {
        let mut out = PayloadSchema::default();
        for f in schema.fields() {
            check_name(f.name())?;
            let dt = storage_type(f.name(), f.data_type())?;
            if out.field(f.name()).is_none() {
                out.fields.push(Field::new(f.name(), dt, true));
            }
        }
        Ok(out)
    }

    /// The fields.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name() == name)
    }

    /// As an Arrow schema.
    pub fn to_arrow(&self) -> SchemaRef {
        Arc::new(Schema::new(self.fields.clone()))
    }

    /// Conform the payload columns of an incoming batch to this schema: string and
    /// dictionary layouts become `Utf8`, a column of a known name is cast (losslessly) to its
    /// stored type, and new columns are added to `self`. Returns the batch to store.
    pub fn conform(&mut self, batch: &RecordBatch) -> Result<RecordBatch, ContractError> {
        let mut fields = Vec::new();
        let mut arrays = Vec::new();
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
            let name = field.name();
            if name == columns::ID || name == columns::VECTOR {
                continue;
            }
            check_name(name)?;
            let array = match self.field(name) {
                Some(known) => {
                    let want = known.data_type().clone();
                    cast_lossless(name, array, &want)?
                }
                None => {
                    let dt = storage_type(name, array.data_type())?;
                    let array = cast_lossless(name, array, &dt)?;
                    self.fields.push(Field::new(name, dt, true));
                    array
                }
            };
            fields.push(Field::new(name, array.data_type().clone(), true));
            arrays.push(array);
        }
        let opts = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), arrays, &opts)
            .map_err(|e| ContractError::invalid("payload", e))
    }
}

fn check_name(name: &str) -> Result<(), ContractError> {
    if name.is_empty() || columns::RESERVED.contains(&name) {
        return Err(ContractError::invalid(
            format!("column '{name}'"),
            "is a reserved name and cannot be a payload column",
        ));
    }
    Ok(())
}

/// The type a payload column is stored as.
fn storage_type(name: &str, dt: &DataType) -> Result<DataType, ContractError> {
    Ok(match dt {
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        DataType::Dictionary(_, value) => storage_type(name, value)?,
        DataType::Null => {
            return Err(ContractError::invalid(
                format!("column '{name}'"),
                "has type Null; give it a concrete type",
            ))
        }
        other => other.clone(),
    })
}

fn cast_lossless(name: &str, array: &ArrayRef, to: &DataType) -> Result<ArrayRef, ContractError> {
    if array.data_type() == to {
        return Ok(array.clone());
    }
    let opts = CastOptions {
        safe: false,
        ..Default::default()
    };
    let cast = cast_with_options(array, to, &opts).map_err(|e| {
        ContractError::invalid(
            format!("column '{name}'"),
            format!(
                "type {} cannot be stored as the column's type {to}: {e}",
                array.data_type()
            ),
        )
    })?;
    Ok(cast)
}

/// Gather `column` for rows given as (store, offset) pairs across several stores.
/// Rows whose chunk lacks the column get null.
pub fn gather(
    stores: &[&PayloadStore],
    rows: &[(usize, u32)],
    field: &Field,
) -> Result<ArrayRef, arrow_schema::ArrowError> {
    let null = new_null_array(field.data_type(), 1);
    let mut arrays: Vec<ArrayRef> = vec![null];
    let mut bases = Vec::with_capacity(stores.len());
    for store in stores {
        bases.push(arrays.len());
        for (_, batch) in store.chunks() {
            arrays.push(
                batch
                    .column_by_name(field.name())
                    .cloned()
                    .unwrap_or_else(|| arrays[0].clone()),
            );
        }
    }
    let indices: Vec<(usize, usize)> = rows
        .iter()
        .map(|&(s, off)| match stores[s].locate(off) {
            Some((chunk, row)) => {
                let idx = bases[s] + chunk;
                if arrays[idx].len() == 1 && Arc::ptr_eq(&arrays[idx], &arrays[0]) {
                    (0, 0)
                } else {
                    (idx, row)
                }
            }
            None => (0, 0),
        })
        .collect();
    let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
    arrow_select::interleave::interleave(&refs, &indices)
}
