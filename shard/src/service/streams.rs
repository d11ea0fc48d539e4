//! Streaming calls: DoPut (writes, acknowledged per batch once durable), DoExchange (batched
//! search) and DoGet (get by ids, scan).

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightData, PutResult, Ticket};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use longbow_common::flight::RequestBatches;
use longbow_common::model::{validate_ef, validate_k};
use longbow_common::put_pipeline::{self, PutStage};
use longbow_common::shard_api::{parse_json, SearchCommand, ShardTicket, WriteAck, WriteCommand};
use longbow_common::vectors::vectors_from_array;
use longbow_common::{columns, ContractError, ErrorExt, Filter, IdValue};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status, Streaming};

use super::{BoxStream, ShardService, MAX_MESSAGE_BYTES};
use crate::replica::{Projection, Replica, SearchParams};

/// Write batches a single DoPut keeps in flight (pipelining them into group commits).
const PUT_PIPELINE: usize = 8;

fn bad(e: ContractError) -> Status {
    e.to_status()
}

/// The descriptor command and the decoded batches of a request stream.
async fn open_cmd(
    stream: Streaming<FlightData>,
    what: &str,
) -> Result<(Vec<u8>, RequestBatches), Status> {
    let (desc, batches) = longbow_common::flight::open_stream(stream, what).await?;
    Ok((desc.cmd.to_vec(), batches))
}

fn encode(
    batches: impl futures::Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
    schema: Option<arrow_schema::SchemaRef>,
) -> BoxStream<FlightData> {
    let mut builder =
        FlightDataEncoderBuilder::new().with_max_flight_data_size(MAX_MESSAGE_BYTES / 2);
    if let Some(s) = schema {
        builder = builder.with_schema(s);
    }
    builder.build(batches).map_err(Status::from).boxed()
}

/// A DoPut's batches, queued on one replica's WAL in stream order.
struct ReplicaPut {
    replica: Arc<Replica>,
    epoch: Option<u64>,
}

impl PutStage for ReplicaPut {
    type Ack = PutResult;

    async fn start(
        &mut self,
        _n: u64,
        batch: RecordBatch,
    ) -> Result<BoxFuture<'static, Result<PutResult, Status>>, Status> {
        // Queued in stream order; durability is awaited in that order too.
        let pending = self.replica.enqueue_upsert(&batch, self.epoch).await?;
        let durable = tokio::spawn(pending.wait());
        Ok(Box::pin(async move {
            let (lsn, rows) = durable
                .await
                .map_err(|e| Status::internal(e.to_string()))??;
            let body = serde_json::to_vec(&WriteAck { rows, lsn })
                .map_err(|e| Status::internal(e.to_string()))?;
            Ok(PutResult {
                app_metadata: body.into(),
            })
        }))
    }
}

pub(super) async fn do_put(
    svc: &ShardService,
    stream: Streaming<FlightData>,
) -> Result<Response<BoxStream<PutResult>>, Status> {
    let (cmd, batches) = open_cmd(stream, "DoPut").await?;
    let cmd: WriteCommand = parse_json("DoPut descriptor", &cmd).map_err(bad)?;
    if cmd.op != "write" {
        return Err(Status::invalid_argument(format!(
            "invalid op: expected \"write\", got \"{}\"",
            cmd.op
        )));
    }
    let stage = ReplicaPut {
        replica: svc.replica(&cmd.namespace, cmd.shard)?,
        epoch: cmd.epoch,
    };
    let (tx, rx) = mpsc::channel::<Result<PutResult, Status>>(PUT_PIPELINE * 2);
    tokio::spawn(put_pipeline::run(stage, batches, PUT_PIPELINE, tx));
    Ok(Response::new(ReceiverStream::new(rx).boxed()))
}

pub(super) async fn do_exchange(
    svc: &ShardService,
    stream: Streaming<FlightData>,
) -> Result<Response<BoxStream<FlightData>>, Status> {
    let (cmd, mut batches) = open_cmd(stream, "DoExchange").await?;
    let cmd: SearchCommand = parse_json("DoExchange descriptor", &cmd).map_err(bad)?;
    let (replica, params) = search_plan(svc, &cmd)?;
    let (tx, rx) = mpsc::channel::<Result<RecordBatch, FlightError>>(4);
    tokio::spawn(async move {
        let mut base: u32 = 0;
        while let Some(item) = batches.next().await {
            let batch = match item {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx
                        .send(Err(FlightError::Tonic(Box::new(
                            longbow_common::flight::stream_error(e),
                        ))))
                        .await;
                    return;
                }
            };
            let rows = batch.num_rows() as u32;
            let out = search_batch(replica.clone(), params.clone(), batch, base)
                .await
                .map_err(|s| FlightError::Tonic(Box::new(s)));
            let stop = out.is_err();
            if tx.send(out).await.is_err() || stop {
                return;
            }
            base = base.saturating_add(rows);
        }
    });
    Ok(Response::new(encode(ReceiverStream::new(rx), None)))
}

/// The replica a search command names and its checked parameters.
pub(super) fn search_plan(
    svc: &ShardService,
    cmd: &SearchCommand,
) -> Result<(Arc<Replica>, Arc<SearchParams>), Status> {
    if cmd.op != "search" {
        return Err(Status::invalid_argument(format!(
            "invalid op: expected \"search\", got \"{}\"",
            cmd.op
        )));
    }
    let replica = svc.replica(&cmd.namespace, cmd.shard)?;
    validate_k(cmd.k).map_err(bad)?;
    let ef = cmd.ef.unwrap_or(replica.info().index.ef_search);
    validate_ef(ef).map_err(bad)?;
    let filter = match &cmd.filter {
        Some(f) => Some(Filter::parse("filter", f).map_err(bad)?),
        None => None,
    };
    let params = Arc::new(SearchParams {
        k: cmd.k,
        ef,
        filter,
        columns: cmd.columns.clone(),
        include_vectors: cmd.include_vectors,
        allow_missing_columns: cmd.allow_missing_columns,
    });
    Ok((replica, params))
}

/// Search one batch of queries (query ids from `base`) on a blocking thread, off the async
/// runtime.
pub(super) async fn search_batch(
    replica: Arc<Replica>,
    params: Arc<SearchParams>,
    batch: RecordBatch,
    base: u32,
) -> Result<RecordBatch, Status> {
    let result = tokio::task::spawn_blocking(move || {
        let col = batch.column_by_name(columns::VECTOR).ok_or_else(|| {
            ContractError::invalid("vector", "column is missing from the query batch")
        })?;
        let queries = vectors_from_array(col.as_ref(), None)?;
        replica.search(queries, &params, base)
    })
    .await;
    match result {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => Err(e.to_status()),
        Err(e) => Err(Status::internal(e.to_string())),
    }
}

pub(super) async fn do_get(
    svc: &ShardService,
    ticket: Ticket,
) -> Result<Response<BoxStream<FlightData>>, Status> {
    let ticket: ShardTicket = parse_json("ticket", &ticket.ticket).map_err(bad)?;
    let batches = match ticket {
        ShardTicket::Get(g) => {
            let replica = svc.replica(&g.namespace, g.shard)?;
            let id_type = replica.info().id_type;
            let ids = g
                .ids
                .iter()
                .enumerate()
                .map(|(i, v)| IdValue::from_json(&format!("ids[{i}]"), v, id_type))
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?;
            let p = Projection {
                columns: g.columns,
                include_vectors: g.include_vectors,
                allow_missing_columns: g.allow_missing_columns,
            };
            vec![replica.get(&ids, &p)?]
        }
        ShardTicket::Scan(s) => {
            let replica = svc.replica(&s.namespace, s.shard)?;
            let filter = match &s.filter {
                Some(f) => Some(Filter::parse("filter", f).map_err(bad)?),
                None => None,
            };
            let limit = s.limit.unwrap_or(usize::MAX);
            tokio::task::spawn_blocking(move || {
                let p = Projection {
                    columns: s.columns,
                    include_vectors: s.include_vectors,
                    allow_missing_columns: s.allow_missing_columns,
                };
                replica.scan(filter.as_ref(), &p, limit)
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))??
        }
    };
    let schema = batches.first().map(|b| b.schema());
    Ok(Response::new(encode(
        futures::stream::iter(batches.into_iter().map(Ok)),
        schema,
    )))
}
