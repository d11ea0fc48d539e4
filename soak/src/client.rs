//! The Flight calls the soak workload makes, in the client API's public forms: DoAction for
//! namespaces and deletes, DoPut for writes, DoExchange for searches, DoGet for reads by id.
//! Nothing here retries: every failure is reported to the caller, which counts it. A client
//! knows every coordinator of the cluster (any one takes any call); after a call fails in a
//! way that may be that coordinator's fault, the next call goes to the next one, as a client
//! in the field fails over.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use arrow_array::{Array, FixedSizeListArray, Float32Array, RecordBatch, UInt64Array};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{Action, FlightClient, FlightDescriptor, Ticket};
use arrow_schema::{DataType, Field, Schema};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use tonic::transport::Channel;

/// Longest one call may take (a coordinator that hangs, or is cut off, fails the call).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Connections to every coordinator's data and meta ports, and which one calls go to.
pub struct Client {
    channels: Vec<(Channel, Channel)>,
    coordinators: Vec<(FlightClient, FlightClient)>,
    at: usize,
}

fn connect(addr: &str) -> Result<Channel> {
    let uri = if addr.starts_with("http") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    // Lazy: a coordinator that is down now is dialled again on the next call to it.
    let channel = tonic::transport::Endpoint::from_shared(uri.clone())
        .with_context(|| format!("address {uri}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(CALL_TIMEOUT)
        .connect_lazy();
    Ok(channel)
}

/// A failed call as the server (or the transport) answered it.
#[derive(Debug, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct CallError {
    /// gRPC status code.
    pub code: tonic::Code,
    /// Its message.
    pub message: String,
    /// What the server's retry flag (`x-longbow-retryable`) said, when it set one.
    pub retryable: Option<bool>,
}

impl CallError {
    /// Whether the error says a retry may succeed: the server's flag when it set one, else
    /// a transport failure or a deadline (the coordinator is gone, or cut off).
    pub fn may_retry(&self) -> bool {
        self.retryable.unwrap_or(matches!(
            self.code,
            tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Unknown
        ))
    }
}

/// Whether `e` (a failed call's error) says retrying it may succeed; see
/// [`CallError::may_retry`]. Errors that are not call errors (a malformed answer) may not.
pub fn may_retry(e: &anyhow::Error) -> bool {
    e.downcast_ref::<CallError>()
        .is_some_and(CallError::may_retry)
}

/// Rows `ids` with `vectors` (row-major, `dim` wide).
pub fn rows(ids: &[u64], vectors: &[f32], dim: usize) -> Result<RecordBatch> {
    let schema = Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        Field::new("vector", vector_type(dim), false),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(UInt64Array::from(ids.to_vec())),
            Arc::new(vector_array(vectors, dim)?),
        ],
    )?)
}

fn vector_type(dim: usize) -> DataType {
    DataType::FixedSizeList(
        Arc::new(Field::new("item", DataType::Float32, false)),
        dim as i32,
    )
}

fn vector_array(vectors: &[f32], dim: usize) -> Result<FixedSizeListArray> {
    Ok(FixedSizeListArray::try_new(
        Arc::new(Field::new("item", DataType::Float32, false)),
        dim as i32,
        Arc::new(Float32Array::from(vectors.to_vec())),
        None,
    )?)
}

fn status(e: arrow_flight::error::FlightError) -> anyhow::Error {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => CallError {
            code: s.code(),
            message: s.message().to_string(),
            retryable: s
                .metadata()
                .get("x-longbow-retryable")
                .and_then(|v| v.to_str().ok())
                .map(|v| v == "true"),
        }
        .into(),
        other => anyhow!(other.to_string()),
    }
}

impl Client {
    /// A client of one coordinator's data and meta ports (`host:port` or a URI).
    pub async fn connect(data: &str, meta: &str) -> Result<Client> {
        Client::connect_all(&[(data.to_string(), meta.to_string())])
    }

    /// A client of every coordinator `(data, meta)` of a group; calls start at the first.
    pub fn connect_all(coordinators: &[(String, String)]) -> Result<Client> {
        if coordinators.is_empty() {
            anyhow::bail!("a client needs at least one coordinator");
        }
        let channels = coordinators
            .iter()
            .map(|(data, meta)| Ok((connect(data)?, connect(meta)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Client::on(channels, 0))
    }

    fn on(channels: Vec<(Channel, Channel)>, at: usize) -> Client {
        let coordinators = channels
            .iter()
            .map(|(d, m)| (FlightClient::new(d.clone()), FlightClient::new(m.clone())))
            .collect();
        Client {
            at: at % channels.len(),
            channels,
            coordinators,
        }
    }

    /// A client of the same coordinators (sharing their connections), starting at the
    /// `n`-th: spreads clients over the group.
    pub fn another(&self, n: usize) -> Client {
        Client::on(self.channels.clone(), n)
    }

    fn data(&mut self) -> &mut FlightClient {
        &mut self.coordinators[self.at].0
    }

    fn meta(&mut self) -> &mut FlightClient {
        &mut self.coordinators[self.at].1
    }

    /// After a failed call: move on to the next coordinator when the failure may have been
    /// this one's (it is gone, hangs, or cannot reach the rest of the cluster).
    fn after<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            if may_retry(e) {
                self.at = (self.at + 1) % self.coordinators.len();
            }
        }
        r
    }

    /// Run action `kind` with a JSON body; its first result as JSON.
    pub async fn action(&mut self, kind: &str, body: Value) -> Result<Value> {
        let r = self.action_here(kind, body).await;
        self.after(r)
    }

    async fn action_here(&mut self, kind: &str, body: Value) -> Result<Value> {
        let mut s = self
            .meta()
            .do_action(Action::new(kind.to_string(), serde_json::to_vec(&body)?))
            .await
            .map_err(status)?;
        let bytes = s
            .next()
            .await
            .ok_or_else(|| anyhow!("{kind}: no result"))?
            .map_err(status)?;
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Write rows (one DoPut stream, one batch); the rows the server acknowledged.
    pub async fn put(&mut self, ns: &str, batch: RecordBatch) -> Result<u64> {
        let r = self.put_here(ns, batch).await;
        self.after(r)
    }

    async fn put_here(&mut self, ns: &str, batch: RecordBatch) -> Result<u64> {
        let stream = one_batch(FlightDescriptor::new_path(vec![ns.to_string()]), batch);
        let results: Vec<_> = self
            .data()
            .do_put(stream)
            .await
            .map_err(status)?
            .try_collect()
            .await
            .map_err(status)?;
        let mut rows = 0;
        for r in results {
            let v: Value = serde_json::from_slice(&r.app_metadata).unwrap_or(Value::Null);
            rows += v["rows"].as_u64().unwrap_or(0);
        }
        Ok(rows)
    }

    /// Delete rows by id; the rows the server says it deleted.
    pub async fn delete(&mut self, ns: &str, ids: &[u64]) -> Result<u64> {
        let r = self
            .action("Delete", json!({"namespace": ns, "ids": ids}))
            .await?;
        Ok(r["deleted"].as_u64().unwrap_or(0))
    }

    /// The `k` nearest ids to `query`, nearest first.
    pub async fn search(&mut self, ns: &str, query: &[f32], k: usize) -> Result<Vec<u64>> {
        let r = self.search_here(ns, query, k).await;
        self.after(r)
    }

    async fn search_here(&mut self, ns: &str, query: &[f32], k: usize) -> Result<Vec<u64>> {
        let cmd = json!({"op": "search", "namespace": ns, "k": k});
        let schema = Schema::new(vec![Field::new("vector", vector_type(query.len()), false)]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(vector_array(query, query.len())?)],
        )?;
        let stream = one_batch(FlightDescriptor::new_cmd(serde_json::to_vec(&cmd)?), batch);
        let batches: Vec<RecordBatch> = self
            .data()
            .do_exchange(stream)
            .await
            .map_err(status)?
            .try_collect()
            .await
            .map_err(status)?;
        let mut out = Vec::new();
        for b in &batches {
            out.extend(u64_column(b, "id")?);
        }
        Ok(out)
    }

    /// The stored vector of each of `ids` that exists.
    pub async fn get(&mut self, ns: &str, ids: &[u64]) -> Result<Vec<(u64, Vec<f32>)>> {
        let r = self.get_here(ns, ids).await;
        self.after(r)
    }

    async fn get_here(&mut self, ns: &str, ids: &[u64]) -> Result<Vec<(u64, Vec<f32>)>> {
        let ticket = json!({"get": {"namespace": ns, "ids": ids, "include_vectors": true}});
        let batches: Vec<RecordBatch> = self
            .data()
            .do_get(Ticket::new(serde_json::to_vec(&ticket)?))
            .await
            .map_err(status)?
            .try_collect()
            .await
            .map_err(status)?;
        let mut out = Vec::new();
        for b in &batches {
            let ids = u64_column(b, "id")?;
            let v = b
                .column_by_name("vector")
                .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
                .ok_or_else(|| anyhow!("get: no vector column"))?;
            let dim = v.value_length() as usize;
            let floats = v
                .values()
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| anyhow!("get: vectors are not float32"))?;
            for (row, id) in ids.into_iter().enumerate() {
                let start = (v.offset() + row) * dim;
                out.push((id, floats.values()[start..start + dim].to_vec()));
            }
        }
        Ok(out)
    }
}

/// A Flight stream of `batch` under `descriptor`.
fn one_batch(
    descriptor: FlightDescriptor,
    batch: RecordBatch,
) -> arrow_flight::encode::FlightDataEncoder {
    FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(descriptor))
        .build(futures::stream::iter([Ok(batch)]))
}

fn u64_column(b: &RecordBatch, name: &str) -> Result<Vec<u64>> {
    let c = b
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
        .ok_or_else(|| anyhow!("result has no UInt64 column {name}"))?;
    Ok(c.values().to_vec())
}

impl Client {
    /// Wait (bounded: 60 s) until the coordinator reports at least `n` live shard nodes.
    pub async fn wait_live(&mut self, n: usize) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let live = match self.action("cluster-status", json!({})).await {
                Ok(s) => s["shard_nodes"]
                    .as_array()
                    .map_or(0, |a| a.iter().filter(|n| n["live"] == true).count()),
                Err(_) => 0,
            };
            if live >= n {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("{live} of {n} shard nodes live after 60 s");
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Wait (bounded: 30 min) until every row of `ns` is linked.
    pub async fn wait_ready(&mut self, ns: &str) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1_800);
        while self
            .action("check_readiness", json!({"namespace": ns}))
            .await?["status"]
            != "READY"
        {
            if std::time::Instant::now() > deadline {
                anyhow::bail!("{ns} not READY after 30 minutes");
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        Ok(())
    }
}
