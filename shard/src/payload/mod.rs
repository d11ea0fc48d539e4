//! Payload: the Arrow columns stored beside each segment's vectors, the replica's payload
//! schema (additive evolution), and gathering columns for results.
//!
//! Payload is kept as the Arrow batches that were written (one chunk per write, sliced at
//! segment boundaries), so nothing is re-encoded on the write path and filters run as Arrow
//! compute kernels over whole chunks.

pub mod filter;

use std::sync::Arc;

use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch};
use arrow_schema::Field;
pub use longbow_common::payload_schema::PayloadSchema;

/// The payload columns of one segment, chunk by chunk (cheap to clone: chunks share their
/// Arrow buffers).
#[derive(Default, Clone)]
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
