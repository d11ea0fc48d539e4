//! Reading the `vector` column: FixedSizeList or List of Float32, Float16 or Float64 become
//! one flat row-major `Vec<f32>`, checked for dimension, nulls, NaN and infinity.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float16Type, Float32Type, Float64Type};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;

use crate::ContractError;

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
        other => {
            return Err(ContractError::invalid(
                "vector",
                format!("element type {other} is not Float16, Float32 or Float64"),
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
