//! DoPut (ingest), DoExchange (binary search; Longbow 0.1's `VectorSearch` command and
//! streamed `ingest` path) and DoGet (search / get / scan tickets, and Longbow 0.1's scan
//! forms).

use arrow_array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::{FlightData, FlightDescriptor, PutResult, Ticket};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use longbow_common::flight::{open_stream, stream_error, RequestBatches};
use longbow_common::put_pipeline::{self, PutStage};
use longbow_common::{ContractError, ErrorExt};
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::actions::query_batch;
use super::requests::{self, SearchBody};
use super::{exchange, longbow, BoxStream, MAX_MESSAGE_BYTES};
use crate::error::CoordinatorError;
use crate::ingest::IngestStream;
use crate::node::Coordinator;
use crate::reads::{GetRecords, ScanRecords};
use crate::search::Columns;

pub(super) fn encode(
    batches: impl futures::Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
    schema: Option<arrow_schema::SchemaRef>,
) -> BoxStream<FlightData> {
    let mut b = FlightDataEncoderBuilder::new().with_max_flight_data_size(MAX_MESSAGE_BYTES / 2);
    if let Some(s) = schema {
        b = b.with_schema(s);
    }
    b.build(batches).map_err(Status::from).boxed()
}

#[derive(Deserialize)]
struct PutCmd {
    namespace: String,
}

fn status(e: impl Into<CoordinatorError>) -> Status {
    e.into().to_status()
}

/// The namespace a DoPut descriptor names: `PATH ["ns"]`, or a CMD `{"namespace": "ns"}`.
fn put_namespace(desc: &FlightDescriptor) -> Result<String, Status> {
    if desc.r#type == DescriptorType::Path as i32 {
        return match desc.path.as_slice() {
            [ns] => Ok(ns.clone()),
            other => Err(status(ContractError::invalid(
                "flight_descriptor.path",
                format!("expected [\"<namespace>\"], got {} elements", other.len()),
            ))),
        };
    }
    let cmd: PutCmd = requests::PUT_COMMAND
        .fold_bytes("flight_descriptor.cmd", &desc.cmd)
        .and_then(|f| f.into_typed("flight_descriptor.cmd"))
        .map_err(status)?;
    Ok(cmd.namespace)
}

/// What one acknowledged batch of an ingest stream says.
type Ack = fn(batch: u64, rows: u64) -> serde_json::Value;

/// Client batches an ingest stream keeps unacknowledged at once (checked, sent, or waiting
/// for their shards).
const INGEST_WINDOW: usize = 8;

/// A client's ingest stream as a DoPut pipeline stage.
struct ClientIngest {
    stream: IngestStream,
    ack: Ack,
}

impl PutStage for ClientIngest {
    type Ack = Vec<u8>;

    async fn start(
        &mut self,
        n: u64,
        batch: RecordBatch,
    ) -> Result<BoxFuture<'static, Result<Vec<u8>, Status>>, Status> {
        let write = self.stream.submit(batch).await.map_err(|e| e.to_status())?;
        let ack = self.ack;
        Ok(Box::pin(async move {
            let rows = write.durable().await.map_err(|e| e.to_status())?;
            Ok(ack(n, rows).to_string().into_bytes())
        }))
    }
}

/// Write each batch of `batches` to `namespace`, acknowledging each once durable with
/// `ack(batch_number, rows)`, in stream order, while later batches are already on their way;
/// the first error ends the stream.
pub(super) fn ingest_stream(
    coord: &Arc<Coordinator>,
    namespace: String,
    batches: RequestBatches,
    ack: Ack,
) -> mpsc::Receiver<Result<Vec<u8>, Status>> {
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, Status>>(INGEST_WINDOW);
    let stage = ClientIngest {
        stream: IngestStream::new(coord.clone(), namespace),
        ack,
    };
    tokio::spawn(put_pipeline::run(stage, batches, INGEST_WINDOW, tx));
    rx
}

pub(super) async fn do_put(
    coord: &Arc<Coordinator>,
    stream: Streaming<FlightData>,
) -> Result<BoxStream<PutResult>, Status> {
    let (desc, batches) = open_stream(stream, "DoPut").await?;
    let namespace = put_namespace(&desc)?;
    crate::namespaces::validate_name(&namespace).map_err(status)?;
    let acks = ingest_stream(
        coord,
        namespace,
        batches,
        |_, rows| serde_json::json!({ "rows": rows }),
    );
    Ok(ReceiverStream::new(acks)
        .map_ok(|body| PutResult {
            app_metadata: body.into(),
        })
        .boxed())
}

pub(super) async fn do_exchange(
    coord: &Arc<Coordinator>,
    stream: Streaming<FlightData>,
) -> Result<BoxStream<FlightData>, Status> {
    let (desc, batches) = open_stream(stream, "DoExchange").await?;
    if desc.r#type == DescriptorType::Path as i32 {
        return exchange::ingest(coord, &desc, batches);
    }
    if desc.cmd.as_ref() == exchange::LONGBOW_SEARCH_COMMAND.as_bytes() {
        return Ok(exchange::longbow_search(coord, batches));
    }
    let body: SearchBody = requests::SEARCH_COMMAND
        .fold_bytes("flight_descriptor.cmd", &desc.cmd)
        .and_then(|f| f.into_typed("flight_descriptor.cmd"))
        .map_err(status)?;
    let req = body.request().map_err(status)?;
    let prepared = Arc::new(coord.prepare_search_now(&req).await.map_err(status)?);
    let coord = coord.clone();
    let mut batches = batches;
    let (tx, rx) = mpsc::channel::<Result<RecordBatch, FlightError>>(4);
    tokio::spawn(async move {
        let mut base = 0u32;
        // The stream's schema is the first result's: it says whether that answer is partial
        // (`longbow.partial`). A later answer that differs would be mislabelled, so it ends
        // the stream with a retryable error instead.
        let mut first: Option<arrow_schema::SchemaRef> = None;
        while let Some(item) = batches.next().await {
            let out = match item {
                Ok(q) => {
                    let rows = q.num_rows() as u32;
                    let r = coord.search(&prepared, &q, base).await;
                    base = base.saturating_add(rows);
                    r.map_err(|e| e.to_status())
                        .and_then(|b| same_partiality(&mut first, b))
                        .map_err(|s| FlightError::Tonic(Box::new(s)))
                }
                Err(e) => Err(FlightError::Tonic(Box::new(stream_error(e)))),
            };
            let stop = out.is_err();
            if tx.send(out).await.is_err() || stop {
                return;
            }
        }
        if first.is_none() {
            // No query batch came: still answer with the (empty) result schema.
            let _ = tx.send(Ok(RecordBatch::new_empty(prepared.schema()))).await;
        }
    });
    Ok(encode(ReceiverStream::new(rx), None))
}

/// `batch` if its schema (with its partial-result metadata) is the stream's, set by the first.
fn same_partiality(
    first: &mut Option<arrow_schema::SchemaRef>,
    batch: RecordBatch,
) -> Result<RecordBatch, Status> {
    match first {
        None => {
            *first = Some(batch.schema());
            Ok(batch)
        }
        Some(s) if *s == batch.schema() => Ok(batch),
        Some(_) => Err(CoordinatorError::Unavailable(
            "shard availability changed during this DoExchange stream, so its answers would \
             disagree on being partial (longbow.partial); send the remaining queries again"
                .into(),
        )
        .to_status()),
    }
}

#[derive(Deserialize)]
struct LongbowScan {
    name: String,
    #[serde(default)]
    filters: Option<serde_json::Value>,
    #[serde(default)]
    limit: Option<usize>,
}

/// A ticket, read strictly: `{"search"|"get"|"scan": {...}}`, Longbow's
/// `{"name"|"dataset", "filters", "limit"}`, or (first byte not `{`) a plain namespace name.
async fn run_ticket(
    coord: &Arc<Coordinator>,
    ticket: &[u8],
) -> Result<(arrow_schema::SchemaRef, Vec<RecordBatch>), CoordinatorError> {
    if ticket.first() != Some(&b'{') {
        let name = std::str::from_utf8(ticket)
            .map_err(|_| ContractError::invalid("ticket", "is neither JSON nor a UTF-8 name"))?
            .trim();
        return longbow_scan(coord, name.to_string(), None, None).await;
    }
    let mut outer = requests::TICKET.fold_bytes("", ticket)?;
    let forms = ["search", "get", "scan"];
    let given: Vec<&str> = forms
        .iter()
        .copied()
        .filter(|k| outer.map.contains_key(*k))
        .collect();
    match given.as_slice() {
        [form] if outer.map.len() == 1 => {
            let inner = outer.map.remove(*form).unwrap_or_default();
            match *form {
                "search" => search_ticket(coord, inner).await,
                "get" => {
                    let b: requests::GetBody = requests::GET_TICKET.parse("get", inner)?;
                    coord
                        .get(&GetRecords {
                            namespace: b.namespace,
                            ids: b.ids,
                            columns: Columns::from_json("get.columns", b.columns.as_ref())?,
                            include_vectors: b.include_vectors,
                        })
                        .await
                }
                _ => {
                    let b: requests::ScanBody = requests::SCAN_TICKET.parse("scan", inner)?;
                    coord
                        .scan(&ScanRecords {
                            namespace: b.namespace,
                            filter: b.filter,
                            columns: Columns::from_json("scan.columns", b.columns.as_ref())?,
                            include_vectors: b.include_vectors,
                            limit: b.limit,
                        })
                        .await
                }
            }
        }
        [] => {
            let b: LongbowScan = outer.into_typed("")?;
            longbow_scan(coord, b.name, b.filters, b.limit).await
        }
        _ => Err(ContractError::invalid(
            "ticket",
            "give exactly one of search, get, scan (and nothing beside it)",
        )
        .into()),
    }
}

/// Longbow 0.1's scan: every stored column, `vector` included.
async fn longbow_scan(
    coord: &Arc<Coordinator>,
    name: String,
    filters: Option<serde_json::Value>,
    limit: Option<usize>,
) -> Result<(arrow_schema::SchemaRef, Vec<RecordBatch>), CoordinatorError> {
    coord
        .scan(&ScanRecords {
            namespace: name,
            filter: filters,
            columns: None,
            include_vectors: true,
            limit,
        })
        .await
}

async fn search_ticket(
    coord: &Arc<Coordinator>,
    inner: serde_json::Value,
) -> Result<(arrow_schema::SchemaRef, Vec<RecordBatch>), CoordinatorError> {
    let folded = requests::SEARCH_TICKET.fold("search", inner)?;
    let longbow_shape = folded.used("dataset");
    let b: SearchBody = folded.into_typed("search")?;
    let req = b.request()?;
    let prepared = coord.prepare_search_now(&req).await?;
    let vector = b
        .vector
        .as_ref()
        .ok_or_else(|| ContractError::invalid("search.vector", "is missing"))?;
    let out = coord.search(&prepared, &query_batch(vector)?, 0).await?;
    if longbow_shape {
        let out = longbow::search_columns(&out, req.include_vectors)?;
        return Ok((out.schema(), vec![out]));
    }
    // The answer's own schema: it carries `longbow.partial` when some shards did not answer.
    Ok((out.schema(), vec![out]))
}

pub(super) async fn do_get(
    coord: &Arc<Coordinator>,
    ticket: Ticket,
) -> Result<BoxStream<FlightData>, Status> {
    let (schema, batches) = run_ticket(coord, &ticket.ticket).await.map_err(status)?;
    Ok(encode(
        futures::stream::iter(batches.into_iter().map(Ok)),
        Some(schema),
    ))
}
