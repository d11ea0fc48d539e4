//! Reserved column names and the fixed result schema of searches.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};

use crate::IdType;

/// Record id column.
pub const ID: &str = "id";
/// Vector column.
pub const VECTOR: &str = "vector";
/// Row number of the query in a search request.
pub const QUERY_ID: &str = "query_id";
/// Distance (smaller is nearer).
pub const DISTANCE: &str = "distance";
/// Score (larger is nearer).
pub const SCORE: &str = "score";
/// Schema metadata key carrying the metric of an auto-created namespace.
pub const METRIC_METADATA_KEY: &str = "longbow.metric";

/// Names no payload column may take.
pub const RESERVED: [&str; 2] = [ID, VECTOR];

/// Prefix of a payload column in search results whose name is also a result column
/// (`query_id`, `distance`, `score`): a payload column `score` is returned as `payload.score`.
pub const SHADOWED_PREFIX: &str = "payload.";

/// The name a payload column takes in search results (see [`SHADOWED_PREFIX`]).
pub fn search_column_name(payload: &str) -> std::borrow::Cow<'_, str> {
    if [QUERY_ID, DISTANCE, SCORE].contains(&payload) {
        std::borrow::Cow::Owned(format!("{SHADOWED_PREFIX}{payload}"))
    } else {
        std::borrow::Cow::Borrowed(payload)
    }
}

/// The Arrow type of a vector column of `dim` dimensions.
pub fn vector_type(dim: usize) -> DataType {
    DataType::FixedSizeList(
        Arc::new(Field::new("item", DataType::Float32, false)),
        dim as i32,
    )
}

/// The leading fields of every search result: `query_id`, `id`, `distance`, `score`.
pub fn search_result_fields(id_type: IdType) -> Vec<Field> {
    vec![
        Field::new(QUERY_ID, DataType::UInt32, false),
        Field::new(ID, id_type.data_type(), false),
        Field::new(DISTANCE, DataType::Float32, false),
        Field::new(SCORE, DataType::Float32, false),
    ]
}

/// A search result schema with extra payload (and optionally vector) fields appended.
pub fn search_result_schema(id_type: IdType, extra: impl IntoIterator<Item = Field>) -> SchemaRef {
    let mut fields = search_result_fields(id_type);
    fields.extend(extra);
    Arc::new(Schema::new(fields))
}

/// The payload columns of a batch: every column but `id` and `vector` (row count kept).
pub fn payload_only(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let keep: Vec<usize> = batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name() != ID && f.name() != VECTOR)
        .map(|(i, _)| i)
        .collect();
    batch.project(&keep)
}
