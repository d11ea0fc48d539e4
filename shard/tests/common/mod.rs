//! Helpers shared by the shard integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema};
use longbow_common::shard_api::CreateReplicaRequest;
use longbow_common::{IdType, IndexParams, Metric};
use longbow_shard::replica::ReplicaSettings;
use longbow_shard::{NodeConfig, ShardNode};

pub mod npy;

/// A node over `dir` with small segments so tests cross segment boundaries.
pub fn open_node(dir: &Path, segment_capacity: usize) -> ShardNode {
    ShardNode::open(NodeConfig {
        workers: Default::default(),
        replication_timeout: std::time::Duration::from_secs(2),
        data_dir: dir.to_path_buf(),
        replica: ReplicaSettings {
            segment_capacity,
            wal_segment_bytes: 1 << 20,
            commit_queue: 1024,
            ..ReplicaSettings::default()
        },
    })
    .expect("open node")
}

pub fn create_req(ns: &str, dim: usize, metric: Metric) -> CreateReplicaRequest {
    CreateReplicaRequest {
        namespace: ns.into(),
        shard: 0,
        dim,
        metric,
        id_type: IdType::Uint64,
        index: IndexParams {
            m: 16,
            ef_construction: 100,
            ef_search: 64,
        },
        payload_schema: None,
        incarnation: 1,
    }
}

pub fn vector_array(data: &[f32], dim: usize) -> ArrayRef {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    Arc::new(
        FixedSizeListArray::try_new(
            item,
            dim as i32,
            Arc::new(Float32Array::from(data.to_vec())),
            None,
        )
        .expect("list"),
    )
}

/// Rows `ids` with vectors `data`, payload `price = id % 100` and `tag = "t{id % 10}"`.
pub fn batch(ids: &[u64], data: &[f32], dim: usize) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        Field::new("vector", longbow_common::columns::vector_type(dim), false),
        Field::new("price", DataType::Int64, true),
        Field::new("tag", DataType::Utf8, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(UInt64Array::from(ids.to_vec())),
            vector_array(data, dim),
            Arc::new(Int64Array::from(
                ids.iter().map(|i| (i % 100) as i64).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                ids.iter()
                    .map(|i| format!("t{}", i % 10))
                    .collect::<Vec<_>>(),
            )),
        ],
    )
    .expect("batch")
}

/// A batch with only `vector` (queries).
pub fn query_batch(data: &[f32], dim: usize) -> RecordBatch {
    let schema = Schema::new(vec![Field::new(
        "vector",
        longbow_common::columns::vector_type(dim),
        false,
    )]);
    RecordBatch::try_new(Arc::new(schema), vec![vector_array(data, dim)]).expect("batch")
}

pub fn u64_column(b: &RecordBatch, name: &str) -> Vec<u64> {
    b.column_by_name(name)
        .expect("column")
        .as_any()
        .downcast_ref::<UInt64Array>()
        .expect("u64")
        .values()
        .to_vec()
}

pub fn f32_column(b: &RecordBatch, name: &str) -> Vec<f32> {
    b.column_by_name(name)
        .expect("column")
        .as_any()
        .downcast_ref::<Float32Array>()
        .expect("f32")
        .values()
        .to_vec()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Wait (bounded) until the replica's graph has linked every row.
pub fn wait_indexed(replica: &longbow_shard::replica::Replica) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while replica.stats().indexing_lag > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "indexing did not catch up"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A shard node serving its Flight API in this process on a free loopback port.
pub struct Server {
    /// Where the Flight API listens.
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    node: Arc<longbow_shard::ShardNode>,
}

/// Open a node over `dir` (segments of 2,000 rows) and serve it.
pub async fn start(dir: &std::path::Path) -> Server {
    let node = Arc::new(open_node(dir, 2_000));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let n = node.clone();
    let task = tokio::spawn(async move {
        longbow_shard::service::serve(n, listener, async {
            let _ = rx.await;
        })
        .await
        .expect("serve");
    });
    Server {
        addr,
        stop: Some(tx),
        task,
        node,
    }
}

impl Server {
    /// The same node's service, to call in-process.
    pub fn service(&self) -> longbow_shard::service::ShardService {
        longbow_shard::service::ShardService::new(self.node.clone())
    }

    /// Stop serving, then shut the node down (queued writes are committed).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || node.shutdown())
            .await
            .expect("shutdown");
    }
}

/// A Flight client connected to `addr`.
pub async fn client(addr: std::net::SocketAddr) -> arrow_flight::FlightClient {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    arrow_flight::FlightClient::new(channel)
}

/// The gRPC status inside a Flight error (panics on any other error).
pub fn status(e: arrow_flight::error::FlightError) -> tonic::Status {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => panic!("expected a gRPC status, got {other}"),
    }
}
