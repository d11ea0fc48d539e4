//! DoPut (ingest), DoExchange (binary search) and DoGet (search / get / scan tickets).

use arrow_array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::{FlightData, PutResult, Ticket};
use futures::{StreamExt, TryStreamExt};
use longbow_common::flight::{open_stream, stream_error};
use longbow_common::{ContractError, ErrorExt};
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::actions::query_batch;
use super::{BoxStream, MAX_MESSAGE_BYTES};
use crate::node::Coordinator;
use crate::reads::{GetRecords, ScanRecords};
use crate::search::SearchRequest;

fn encode(
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
    #[serde(alias = "dataset", alias = "name")]
    namespace: String,
}

/// The namespace a DoPut descriptor names: `PATH ["ns"]`, or a CMD `{"namespace": "ns"}`.
fn put_namespace(desc: &arrow_flight::FlightDescriptor) -> Result<String, Status> {
    if desc.r#type == DescriptorType::Path as i32 {
        return match desc.path.as_slice() {
            [ns] => Ok(ns.clone()),
            other => Err(Status::invalid_argument(format!(
                "invalid flight_descriptor.path: expected [\"<namespace>\"], got {other:?}"
            ))),
        };
    }
    let cmd: PutCmd = serde_json::from_slice(&desc.cmd)
        .map_err(|e| Status::invalid_argument(format!("invalid flight_descriptor.cmd: {e}")))?;
    Ok(cmd.namespace)
}

pub(super) async fn do_put(
    coord: &Arc<Coordinator>,
    stream: Streaming<FlightData>,
) -> Result<BoxStream<PutResult>, Status> {
    let (desc, mut batches) = open_stream(stream, "DoPut").await?;
    let namespace = put_namespace(&desc)?;
    crate::namespaces::validate_name(&namespace).map_err(|e| e.to_status())?;
    let coord = coord.clone();
    let (tx, rx) = mpsc::channel::<Result<PutResult, Status>>(4);
    tokio::spawn(async move {
        let mut known = false;
        while let Some(item) = batches.next().await {
            let batch = match item {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(Err(stream_error(e))).await;
                    return;
                }
            };
            if !known {
                if let Err(e) = coord.namespace_for_put(&namespace, &batch).await {
                    let _ = tx.send(Err(e.to_status())).await;
                    return;
                }
                known = true;
            }
            let res = coord
                .ingest(&namespace, batch)
                .await
                .map_err(|e| e.to_status())
                .map(|rows| PutResult {
                    app_metadata: serde_json::json!({ "rows": rows })
                        .to_string()
                        .into_bytes()
                        .into(),
                });
            let failed = res.is_err();
            if tx.send(res).await.is_err() || failed {
                return;
            }
        }
    });
    Ok(ReceiverStream::new(rx).boxed())
}

pub(super) async fn do_exchange(
    coord: &Arc<Coordinator>,
    stream: Streaming<FlightData>,
) -> Result<BoxStream<FlightData>, Status> {
    let (desc, mut batches) = open_stream(stream, "DoExchange").await?;
    let req: SearchRequest = serde_json::from_slice(&desc.cmd)
        .map_err(|e| Status::invalid_argument(format!("invalid DoExchange command: {e}")))?;
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&desc.cmd) {
        if let Some(op) = v.get("op").and_then(|o| o.as_str()) {
            if op != "search" {
                return Err(Status::invalid_argument(format!(
                    "invalid op: expected \"search\", got \"{op}\""
                )));
            }
        }
    }
    let prepared = Arc::new(coord.prepare_search(&req).map_err(|e| e.to_status())?);
    let schema = prepared.schema();
    let coord = coord.clone();
    let (tx, rx) = mpsc::channel::<Result<RecordBatch, FlightError>>(4);
    tokio::spawn(async move {
        let mut base = 0u32;
        while let Some(item) = batches.next().await {
            let out = match item {
                Ok(q) => {
                    let rows = q.num_rows() as u32;
                    let r = coord.search(&prepared, &q, base).await;
                    base = base.saturating_add(rows);
                    r.map_err(|e| FlightError::Tonic(Box::new(e.to_status())))
                }
                Err(e) => Err(FlightError::Tonic(Box::new(stream_error(e)))),
            };
            let stop = out.is_err();
            if tx.send(out).await.is_err() || stop {
                return;
            }
        }
    });
    Ok(encode(ReceiverStream::new(rx), Some(schema)))
}

/// Tickets a client may send to DoGet.
#[derive(Deserialize)]
#[serde(untagged)]
enum ClientTicket {
    Search {
        search: SearchTicket,
    },
    Get {
        get: GetRecords,
    },
    Scan {
        scan: ScanRecords,
    },
    /// Longbow's scan form: `{"name": ns, "filters": [...], "limit": n}`.
    Named {
        #[serde(alias = "dataset", alias = "namespace")]
        name: String,
        #[serde(default)]
        filters: Option<serde_json::Value>,
        #[serde(default)]
        limit: Option<usize>,
    },
}

#[derive(Deserialize)]
struct SearchTicket {
    #[serde(flatten)]
    search: SearchRequest,
    vector: Vec<f32>,
}

pub(super) async fn do_get(
    coord: &Arc<Coordinator>,
    ticket: Ticket,
) -> Result<BoxStream<FlightData>, Status> {
    let t: ClientTicket = serde_json::from_slice(&ticket.ticket).map_err(|e| {
        ContractError::invalid("ticket", format!("expected {{\"search\"|\"get\"|\"scan\": {{...}}}} or {{\"name\", \"filters\"}}: {e}")).to_status()
    })?;
    let (schema, batches) = match t {
        ClientTicket::Search { search } => {
            let prepared = coord
                .prepare_search(&search.search)
                .map_err(|e| e.to_status())?;
            let q = query_batch(&search.vector).map_err(|e| e.to_status())?;
            let out = coord
                .search(&prepared, &q, 0)
                .await
                .map_err(|e| e.to_status())?;
            (prepared.schema(), vec![out])
        }
        ClientTicket::Get { get } => coord.get(&get).await.map_err(|e| e.to_status())?,
        ClientTicket::Scan { scan } => coord.scan(&scan).await.map_err(|e| e.to_status())?,
        ClientTicket::Named {
            name,
            filters,
            limit,
        } => {
            let scan = ScanRecords {
                namespace: name,
                filter: filters,
                columns: None,
                include_vectors: false,
                limit,
            };
            coord.scan(&scan).await.map_err(|e| e.to_status())?
        }
    };
    Ok(encode(
        futures::stream::iter(batches.into_iter().map(Ok)),
        Some(schema),
    ))
}
