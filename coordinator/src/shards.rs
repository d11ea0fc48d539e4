//! Typed calls to shard nodes over pooled Flight connections.
//!
//! One HTTP/2 channel per shard address is kept and shared (cheap clones, many concurrent
//! streams per connection). Errors from a shard keep their gRPC code, so a shard's
//! INVALID_ARGUMENT naming a field reaches the client unchanged.
//!
//! Searches of a shard node running in this process (`longbow local`) are direct calls
//! through [`InProcessShard`] instead: no loopback Flight, no IPC encoding.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{Action, FlightClient, FlightDescriptor, Ticket};
use arrow_schema::SchemaRef;
use futures::{StreamExt, TryStreamExt};
use longbow_common::channels::Channels;
use longbow_common::in_process::InProcessShard;
use longbow_common::shard_api::{SearchCommand, ShardTicket, WriteAck, WriteCommand};
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{CoordinatorError, Result};
use crate::node::ShardTarget;

/// Largest message exchanged with shards.
const MAX_MESSAGE_BYTES: usize = longbow_common::channels::MAX_MESSAGE_BYTES;

/// Batches a write stream buffers before the shard reads them.
const WRITE_SESSION_BUFFER: usize = 4;

/// A long-lived write stream to one shard primary ([`ShardClients::open_write`]).
pub struct WriteSession {
    /// Where it goes.
    pub to: ShardTarget,
    schema: SchemaRef,
    tx: mpsc::Sender<RecordBatch>,
    acks: futures::stream::BoxStream<'static, Result<WriteAck>>,
}

impl WriteSession {
    /// The schema every batch on this stream has.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Queue `batch` (of [`Self::schema`]) after the batches sent before it.
    pub async fn send(&mut self, batch: RecordBatch) -> Result<()> {
        self.tx.send(batch).await.map_err(|_| {
            CoordinatorError::Unavailable(format!("{}: the write stream closed", self.to))
        })
    }

    /// The next acknowledgement, in the order batches were sent; `None` once the shard
    /// ended the stream.
    pub async fn next_ack(&mut self) -> Option<Result<WriteAck>> {
        self.acks.next().await
    }
}

/// Pooled connections to shard nodes, and the shard nodes of this process by address.
#[derive(Default)]
pub struct ShardClients {
    channels: Channels,
    in_process: RwLock<HashMap<String, Arc<dyn InProcessShard>>>,
}

fn shard_err(to: &ShardTarget, e: FlightError) -> CoordinatorError {
    let status = match e {
        FlightError::Tonic(s) => *s,
        other => tonic::Status::unavailable(other.to_string()),
    };
    status_err(to, status)
}

fn status_err(to: &ShardTarget, status: tonic::Status) -> CoordinatorError {
    CoordinatorError::Shard {
        shard: to.to_string(),
        status: Box::new(status),
    }
}

impl ShardClients {
    /// Search the shard node at `addr` (the address it registers with) in-process through
    /// `shard` from now on. Only for a node running in this process.
    pub fn serve_in_process(&self, addr: String, shard: Arc<dyn InProcessShard>) {
        self.in_process.write().insert(addr, shard);
    }

    /// Whether searches of the shard node at `addr` are in-process calls.
    pub fn is_in_process(&self, addr: &str) -> bool {
        self.in_process.read().contains_key(addr)
    }

    fn client(&self, to: &ShardTarget) -> Result<FlightClient> {
        let inner = self
            .channels
            .client(&to.addr)
            .map_err(|s| CoordinatorError::Internal(s.message().to_string()))?;
        Ok(FlightClient::new_from_inner(inner))
    }

    /// Run a JSON action on a shard node.
    pub async fn action<T: DeserializeOwned>(
        &self,
        to: &ShardTarget,
        kind: &str,
        body: &impl Serialize,
    ) -> Result<T> {
        let mut c = self.client(to)?;
        let body =
            serde_json::to_vec(body).map_err(|e| CoordinatorError::Internal(e.to_string()))?;
        let mut stream = c
            .do_action(Action::new(kind, body))
            .await
            .map_err(|e| shard_err(to, e))?;
        let bytes = stream
            .next()
            .await
            .ok_or_else(|| CoordinatorError::Internal(format!("{to} sent no reply to {kind}")))?
            .map_err(|e| shard_err(to, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| CoordinatorError::Internal(format!("{to} reply to {kind}: {e}")))
    }

    /// Write one batch to a shard's primary at `epoch`; returns once it is durable on every
    /// in-sync replica.
    pub async fn write(
        &self,
        to: &ShardTarget,
        batch: RecordBatch,
        epoch: u64,
    ) -> Result<WriteAck> {
        let WriteSession { tx, mut acks, .. } = self.open_write(to, epoch, batch.schema()).await?;
        let closed =
            || CoordinatorError::Unavailable(format!("{to} closed the write without an ack"));
        tx.send(batch).await.map_err(|_| closed())?;
        drop(tx); // the end of the request stream
        acks.next().await.ok_or_else(closed)?
    }

    /// Open a long-lived write stream to a shard's primary at `epoch` for batches of
    /// `schema`: batches sent on it are stored in the order sent and acknowledged in that
    /// order, each once durable on every in-sync replica.
    pub async fn open_write(
        &self,
        to: &ShardTarget,
        epoch: u64,
        schema: SchemaRef,
    ) -> Result<WriteSession> {
        let mut c = self.client(to)?;
        let cmd = WriteCommand {
            op: "write".into(),
            namespace: to.namespace.clone(),
            shard: to.shard,
            epoch: Some(epoch),
        };
        let cmd =
            serde_json::to_vec(&cmd).map_err(|e| CoordinatorError::Internal(e.to_string()))?;
        let (tx, rx) = mpsc::channel::<RecordBatch>(WRITE_SESSION_BUFFER);
        // The schema message goes first, with the descriptor, so the shard answers at once.
        let data = FlightDataEncoderBuilder::new()
            .with_max_flight_data_size(MAX_MESSAGE_BYTES / 2)
            .with_flight_descriptor(Some(FlightDescriptor::new_cmd(cmd)))
            .with_schema(schema.clone())
            .build(ReceiverStream::new(rx).map(Ok));
        let target = to.clone();
        let acks = c
            .do_put(data)
            .await
            .map_err(|e| shard_err(to, e))?
            .map(move |r| {
                let ack = r.map_err(|e| shard_err(&target, e))?;
                serde_json::from_slice::<WriteAck>(&ack.app_metadata)
                    .map_err(|e| CoordinatorError::Internal(format!("shard ack: {e}")))
            })
            .boxed();
        Ok(WriteSession {
            to: to.clone(),
            schema,
            tx,
            acks,
        })
    }

    /// Search one replica with a batch of queries.
    pub async fn search(
        &self,
        to: &ShardTarget,
        cmd: &SearchCommand,
        queries: RecordBatch,
    ) -> Result<Vec<RecordBatch>> {
        let local = self.in_process.read().get(&to.addr).cloned();
        if let Some(shard) = local {
            return shard
                .search(cmd.clone(), queries)
                .await
                .map_err(|s| status_err(to, s));
        }
        let mut c = self.client(to)?;
        let cmd = serde_json::to_vec(cmd).map_err(|e| CoordinatorError::Internal(e.to_string()))?;
        let data = FlightDataEncoderBuilder::new()
            .with_max_flight_data_size(MAX_MESSAGE_BYTES / 2)
            .with_flight_descriptor(Some(FlightDescriptor::new_cmd(cmd)))
            .build(futures::stream::iter([Ok(queries)]));
        let stream = c.do_exchange(data).await.map_err(|e| shard_err(to, e))?;
        stream.try_collect().await.map_err(|e| shard_err(to, e))
    }

    /// Run a get or scan ticket on a shard.
    pub async fn get(&self, to: &ShardTarget, ticket: &ShardTicket) -> Result<Vec<RecordBatch>> {
        let mut c = self.client(to)?;
        let t =
            serde_json::to_vec(ticket).map_err(|e| CoordinatorError::Internal(e.to_string()))?;
        let stream = c
            .do_get(Ticket::new(t))
            .await
            .map_err(|e| shard_err(to, e))?;
        stream.try_collect().await.map_err(|e| shard_err(to, e))
    }
}
