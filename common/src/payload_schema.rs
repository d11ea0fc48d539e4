//! The payload schema of a namespace or replica: every payload column ever written, in
//! first-seen order, with additive evolution only. Shared by coordinators (which keep the
//! namespace schema in Raft) and shards (which conform stored chunks to it).

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_cast::cast::{cast_with_options, CastOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::{columns, ContractError};

/// Payload columns in first-seen order. Columns may be added; a column's type never changes.
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
