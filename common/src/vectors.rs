//! Reading the `vector` column: FixedSizeList or List of Float32, Float16, Float64 or Int8
//! become one flat row-major `Vec<f32>`, checked for dimension, nulls, NaN and infinity.
//!
//! Longbow 0.1 clients may name the column `embedding` and describe it with the metadata keys
//! `longbow.vector_type` (the element type) and `longbow.complex` (interleaved complex
//! numbers, stored as their real and imaginary parts in turn); [`vector_column`] finds the
//! column and checks that metadata, so a description that contradicts the data is refused.

use arrow_array::cast::AsArray;
use std::sync::Arc;

use arrow_array::types::{Float16Type, Float32Type, Float64Type, Int8Type};
use arrow_array::{Array, ArrayRef, FixedSizeListArray, Float32Array, RecordBatch};
use arrow_schema::{DataType, Field};

use crate::error::quote;
use crate::{columns, ContractError};

/// Metadata key (schema or field) naming the element type of the vector column.
pub const VECTOR_TYPE_METADATA_KEY: &str = "longbow.vector_type";
/// Metadata key (schema or field): `"true"` when a float list holds interleaved complex numbers.
pub const COMPLEX_METADATA_KEY: &str = "longbow.complex";
/// The column name some Longbow 0.1 tools give the vector column.
pub const EMBEDDING: &str = "embedding";

/// The vector column of a batch: `vector`, or `embedding` when there is no `vector` column.
/// Its `longbow.vector_type` and `longbow.complex` metadata, when present, must describe it.
pub fn vector_column(batch: &RecordBatch) -> Result<Option<(String, ArrayRef)>, ContractError> {
    let schema = batch.schema();
    let name = if schema.field_with_name(columns::VECTOR).is_ok() {
        columns::VECTOR
    } else if schema.field_with_name(EMBEDDING).is_ok() {
        EMBEDDING
    } else {
        return Ok(None);
    };
    let Some(array) = batch.column_by_name(name) else {
        return Ok(None);
    };
    let Ok(field) = schema.field_with_name(name) else {
        return Ok(None);
    };
    let meta = |key: &str| {
        field
            .metadata()
            .get(key)
            .or_else(|| schema.metadata().get(key))
    };
    let element = element_type(array.data_type());
    if let Some(declared) = meta(VECTOR_TYPE_METADATA_KEY) {
        check_declared_type(name, declared, element.as_ref())?;
    }
    if let Some(flag) = meta(COMPLEX_METADATA_KEY) {
        match flag.to_ascii_lowercase().as_str() {
            "false" => {}
            "true" => {
                if !matches!(element, Some(DataType::Float32 | DataType::Float64)) {
                    return Err(ContractError::invalid(
                        COMPLEX_METADATA_KEY,
                        "complex vectors must be lists of float32 or float64 (interleaved real, imaginary)",
                    ));
                }
            }
            other => {
                return Err(ContractError::invalid(
                    COMPLEX_METADATA_KEY,
                    format!("must be \"true\" or \"false\", got {}", quote(other)),
                ))
            }
        }
    }
    Ok(Some((name.to_string(), array.clone())))
}

fn element_type(dt: &DataType) -> Option<DataType> {
    match dt {
        DataType::FixedSizeList(f, _) | DataType::List(f) | DataType::LargeList(f) => {
            Some(f.data_type().clone())
        }
        _ => None,
    }
}

fn check_declared_type(
    column: &str,
    declared: &str,
    element: Option<&DataType>,
) -> Result<(), ContractError> {
    let expected = match declared.to_ascii_lowercase().as_str() {
        "float32" | "f32" | "complex64" => DataType::Float32,
        "float64" | "f64" | "complex128" => DataType::Float64,
        "float16" | "f16" => DataType::Float16,
        "int8" | "i8" => DataType::Int8,
        other => {
            return Err(ContractError::invalid(
                VECTOR_TYPE_METADATA_KEY,
                format!(
                    "unknown vector type {}, expected float32, float64, float16, int8, complex64 or complex128",
                    quote(other)
                ),
            ))
        }
    };
    match element {
        Some(e) if *e == expected => Ok(()),
        Some(e) => Err(ContractError::invalid(
            VECTOR_TYPE_METADATA_KEY,
            format!("says {declared} but column '{column}' holds {e} elements"),
        )),
        None => Ok(()),
    }
}

/// A vector column as the canonical `FixedSizeList<Float32>[dim]`, checked as
/// [`vectors_from_array`] checks it. A column already in that layout is checked in place and
/// returned without a copy.
pub fn canonical_vectors(
    array: &dyn Array,
    expected_dim: Option<usize>,
) -> Result<(usize, ArrayRef), ContractError> {
    if let Some(dim) = already_canonical(array, expected_dim)? {
        return Ok((dim, arrow_array::make_array(array.to_data())));
    }
    let v = vectors_from_array(array, expected_dim)?;
    let dim = v.dim;
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let list =
        FixedSizeListArray::try_new(item, dim as i32, Arc::new(Float32Array::from(v.data)), None)
            .map_err(|e| ContractError::invalid(columns::VECTOR, e))?;
    Ok((dim, Arc::new(list)))
}

/// The dimension of a `FixedSizeList<Float32>` column without nulls (checked for NaN and
/// infinity in place), or `None` when the column needs converting.
fn already_canonical(
    array: &dyn Array,
    expected_dim: Option<usize>,
) -> Result<Option<usize>, ContractError> {
    let DataType::FixedSizeList(item, size) = array.data_type() else {
        return Ok(None);
    };
    let dim = *size as usize;
    if *item.data_type() != DataType::Float32 || array.null_count() > 0 || dim == 0 {
        return Ok(None);
    }
    if expected_dim.is_some_and(|d| d != dim) {
        return Ok(None); // the slow path names the row and both dimensions
    }
    let list = array.as_fixed_size_list();
    let values = list.values();
    if values.null_count() > 0 {
        return Ok(None);
    }
    let start = list.offset() * dim;
    let data = &values.as_primitive::<Float32Type>().values()[start..start + list.len() * dim];
    check_finite(columns::VECTOR, data, dim)?;
    Ok(Some(dim))
}

/// Flat row-major vectors of one dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct Vectors {
    /// Dimension of every vector.
    pub dim: usize,
    /// `rows * dim` values.
    pub data: Vec<f32>,
}

impl Vectors {
    /// Number of vectors.
    pub fn rows(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// The `i`-th vector.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Read a vector column. `expected_dim`, when given, must match every row.
pub fn vectors_from_array(
    array: &dyn Array,
    expected_dim: Option<usize>,
) -> Result<Vectors, ContractError> {
    if let Some(row) = (0..array.len()).find(|&i| array.is_null(i)) {
        return Err(ContractError::invalid(
            format!("vector[{row}]"),
            "vector must not be null",
        ));
    }
    let (values, offsets): (ArrayRef, Vec<usize>) = match array.data_type() {
        DataType::FixedSizeList(_, size) => {
            let list = array.as_fixed_size_list();
            let size = *size as usize;
            let base = list.offset() * size;
            let values = list.values().slice(base, list.len() * size);
            (values, (0..=list.len()).map(|i| i * size).collect())
        }
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            let start = list.value_offsets()[0] as usize;
            let end = list.value_offsets()[list.len()] as usize;
            let offs = list
                .value_offsets()
                .iter()
                .map(|&o| o as usize - start)
                .collect();
            (list.values().slice(start, end - start), offs)
        }
        DataType::LargeList(_) => {
            let list = array.as_list::<i64>();
            let start = list.value_offsets()[0] as usize;
            let end = list.value_offsets()[list.len()] as usize;
            let offs = list
                .value_offsets()
                .iter()
                .map(|&o| o as usize - start)
                .collect();
            (list.values().slice(start, end - start), offs)
        }
        other => {
            return Err(ContractError::invalid(
                "vector",
                format!("column type {other} is not a list of floats"),
            ))
        }
    };
    if values.null_count() > 0 {
        return Err(ContractError::invalid(
            "vector",
            "vector elements must not be null",
        ));
    }
    let data: Vec<f32> = match values.data_type() {
        DataType::Float32 => values.as_primitive::<Float32Type>().values().to_vec(),
        DataType::Float16 => values
            .as_primitive::<Float16Type>()
            .values()
            .iter()
            .map(|v| v.to_f32())
            .collect(),
        DataType::Float64 => values
            .as_primitive::<Float64Type>()
            .values()
            .iter()
            .map(|&v| v as f32)
            .collect(),
        DataType::Int8 => values
            .as_primitive::<Int8Type>()
            .values()
            .iter()
            .map(|&v| v as f32)
            .collect(),
        other => {
            return Err(ContractError::invalid(
                "vector",
                format!("element type {other} is not Float16, Float32, Float64 or Int8"),
            ))
        }
    };
    let rows = offsets.len() - 1;
    let dim = match (expected_dim, rows) {
        (Some(d), _) => d,
        (None, 0) => 0,
        (None, _) => offsets[1] - offsets[0],
    };
    for r in 0..rows {
        let len = offsets[r + 1] - offsets[r];
        if len != dim {
            return Err(ContractError::invalid(
                format!("vector[{r}]"),
                format!("has dimension {len}, expected {dim}"),
            ));
        }
    }
    if rows > 0 && dim == 0 {
        return Err(ContractError::invalid(
            "vector",
            "vectors must have at least one dimension",
        ));
    }
    check_finite("vector", &data, dim)?;
    Ok(Vectors { dim, data })
}

/// Reject NaN and infinite values, naming the row.
pub fn check_finite(field: &str, data: &[f32], dim: usize) -> Result<(), ContractError> {
    if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
        let row = pos / dim.max(1);
        return Err(ContractError::invalid(
            format!("{field}[{row}]"),
            format!(
                "element {} is {} (must be finite)",
                pos % dim.max(1),
                data[pos]
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{FixedSizeListBuilder, Float64Builder, ListBuilder};

    #[test]
    fn list_of_f64_is_converted_and_dimension_checked() {
        let mut b = ListBuilder::new(Float64Builder::new());
        b.values().append_slice(&[1.0, 2.0]);
        b.append(true);
        b.values().append_slice(&[3.0, 4.0]);
        b.append(true);
        let a = b.finish();
        let v = vectors_from_array(&a, Some(2)).expect("valid");
        assert_eq!(v.data, vec![1.0, 2.0, 3.0, 4.0]);
        let err = vectors_from_array(&a, Some(3)).expect_err("wrong dim");
        assert!(err.to_string().contains("vector[0]"), "{err}");
    }

    #[test]
    fn a_canonical_column_is_checked_in_place_and_not_copied() {
        let mut b = FixedSizeListBuilder::new(arrow_array::builder::Float32Builder::new(), 2);
        for row in [[1.0, 2.0], [3.0, 4.0], [5.0, f32::INFINITY]] {
            b.values().append_slice(&row);
            b.append(true);
        }
        let a = b.finish();
        let ok = a.slice(0, 2);
        let (dim, out) = canonical_vectors(&ok, Some(2)).expect("valid");
        assert_eq!(dim, 2);
        assert_eq!(
            out.to_data().child_data()[0].buffers()[0].as_ptr(),
            ok.values().to_data().buffers()[0].as_ptr()
        );
        let err = canonical_vectors(&a.slice(1, 2), Some(2)).expect_err("infinity");
        assert!(err.to_string().contains("vector[1]"), "{err}");
        let err = canonical_vectors(&ok, Some(3)).expect_err("dimension");
        assert!(err.to_string().contains("expected 3"), "{err}");
    }

    #[test]
    fn nan_is_rejected_with_its_row() {
        let mut b = FixedSizeListBuilder::new(arrow_array::builder::Float32Builder::new(), 2);
        b.values().append_slice(&[1.0, 2.0]);
        b.append(true);
        b.values().append_slice(&[f32::NAN, 2.0]);
        b.append(true);
        let a = b.finish();
        let err = vectors_from_array(&a, None).expect_err("nan");
        assert!(err.to_string().contains("vector[1]"), "{err}");
    }
}
