//! Longbow 0.1's DoExchange forms: the `VectorSearch` command (queries as rows of `dataset`,
//! `k`, `ef`, `query_vector`, answered with `id`, `score`) and the streamed ingest path
//! `PATH ["ingest", dataset]` (each batch acknowledged with `{"status": "acked", "batch_id",
//! "rows"}` once durable).

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_flight::error::FlightError;
use arrow_flight::{FlightData, FlightDescriptor};
use arrow_schema::{DataType, Field, Schema};
use futures::StreamExt;
use longbow_common::flight::{stream_error, RequestBatches};
use longbow_common::{ContractError, ErrorExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::streams::{encode, ingest_stream};
use super::{longbow, BoxStream};
use crate::error::{CoordinatorError, Result};
use crate::node::Coordinator;
use crate::search::SearchRequest;

/// The DoExchange command (plain bytes, not JSON) of Longbow 0.1's binary search.
pub const LONGBOW_SEARCH_COMMAND: &str = "VectorSearch";

/// `PATH ["ingest", dataset]`.
pub(super) fn ingest(
    coord: &Arc<Coordinator>,
    desc: &FlightDescriptor,
    batches: RequestBatches,
) -> std::result::Result<BoxStream<FlightData>, Status> {
    let namespace =
        match desc.path.as_slice() {
            [verb, ns] if verb == "ingest" => ns.clone(),
            _ => return Err(ContractError::invalid(
                "flight_descriptor.path",
                "DoExchange takes PATH [\"ingest\", \"<namespace>\"] or a CMD (a search command)",
            )
            .to_status()),
        };
    crate::namespaces::validate_name(&namespace).map_err(|e| e.to_status())?;
    let acks = ingest_stream(
        coord,
        namespace,
        batches,
        |batch, rows| serde_json::json!({"status": "acked", "batch_id": batch, "rows": rows}),
    );
    Ok(ReceiverStream::new(acks)
        .map(|r| {
            r.map(|body| FlightData {
                app_metadata: body.into(),
                ..Default::default()
            })
        })
        .boxed())
}

/// The `VectorSearch` command: each input batch is answered with one batch of `id`, `score`,
/// the hits of its rows in row order.
pub(super) fn longbow_search(
    coord: &Arc<Coordinator>,
    mut batches: RequestBatches,
) -> BoxStream<FlightData> {
    let coord = coord.clone();
    let (tx, rx) = mpsc::channel::<std::result::Result<RecordBatch, FlightError>>(4);
    tokio::spawn(async move {
        while let Some(item) = batches.next().await {
            let out = match item {
                Ok(q) => search_rows(&coord, &q)
                    .await
                    .map_err(|e| FlightError::Tonic(Box::new(e.to_status()))),
                Err(e) => Err(FlightError::Tonic(Box::new(stream_error(e)))),
            };
            let stop = out.is_err();
            if tx.send(out).await.is_err() || stop {
                return;
            }
        }
    });
    encode(ReceiverStream::new(rx), None)
}

fn column<'a>(q: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    q.column_by_name(name).ok_or_else(|| {
        ContractError::invalid(
            name,
            "column is missing (VectorSearch takes dataset, k, ef, query_vector)",
        )
        .into()
    })
}

fn integers(q: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>> {
    let a = column(q, name)?;
    if !a.data_type().is_integer() {
        return Err(ContractError::invalid(
            name,
            format!("must be an integer column, got {}", a.data_type()),
        )
        .into());
    }
    let wide =
        arrow_cast::cast(a, &DataType::Int64).map_err(|e| ContractError::invalid(name, e))?;
    Ok(wide.as_primitive::<Int64Type>().iter().collect())
}

async fn search_rows(coord: &Coordinator, q: &RecordBatch) -> Result<RecordBatch> {
    for f in q.schema().fields() {
        if !["dataset", "k", "ef", "query_vector"].contains(&f.name().as_str()) {
            return Err(ContractError::invalid(
                longbow_common::error::quote(f.name()),
                "unknown column (VectorSearch takes dataset, k, ef, query_vector)",
            )
            .into());
        }
    }
    let datasets = arrow_cast::cast(column(q, "dataset")?, &DataType::Utf8)
        .map_err(|e| ContractError::invalid("dataset", e))?;
    let datasets = datasets.as_string::<i32>();
    let ks = integers(q, "k")?;
    let efs = match q.column_by_name("ef") {
        Some(_) => integers(q, "ef")?,
        None => vec![None; q.num_rows()],
    };
    let vectors = column(q, "query_vector")?;
    let mut parts = Vec::with_capacity(q.num_rows());
    for row in 0..q.num_rows() {
        if datasets.is_null(row) {
            return Err(ContractError::invalid(format!("dataset[{row}]"), "is null").into());
        }
        let namespace = datasets.value(row).to_string();
        if row > 0 && namespace != datasets.value(0) {
            return Err(ContractError::invalid(
                format!("dataset[{row}]"),
                "every row of one batch must name the same dataset",
            )
            .into());
        }
        let k = ks[row].unwrap_or(10);
        let ef = efs[row];
        let as_usize = |field: String, v: i64| {
            usize::try_from(v).map_err(|_| {
                CoordinatorError::from(ContractError::invalid(field, format!("{v} is negative")))
            })
        };
        let req = SearchRequest {
            namespace,
            k: as_usize(format!("k[{row}]"), k)?,
            ef: ef.map(|e| as_usize(format!("ef[{row}]"), e)).transpose()?,
            filter: None,
            columns: None,
            include_vectors: false,
            allow_partial: false,
            consistency: Default::default(),
        };
        let prepared = coord.prepare_search_now(&req).await?;
        let one = vectors.slice(row, 1);
        let query = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                longbow_common::columns::VECTOR,
                one.data_type().clone(),
                true,
            )])),
            vec![one],
        )
        .map_err(|e| ContractError::invalid("query_vector", e))?;
        let out = coord.search(&prepared, &query, 0).await?;
        parts.push(longbow::search_columns(&out, false)?);
    }
    let Some(first) = parts.first() else {
        return Err(ContractError::invalid("batch", "has no rows").into());
    };
    arrow_select::concat::concat_batches(&first.schema(), &parts)
        .map_err(|e| CoordinatorError::Internal(e.to_string()))
}
