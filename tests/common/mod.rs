//! Start the real `longbow local` binary on free loopback ports and talk to it over Flight.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{Action, FlightClient, FlightDescriptor, Ticket};
use arrow_schema::{DataType, Field, Schema};
use futures::{StreamExt, TryStreamExt};

pub mod group;
pub mod replicas;

/// `longbow coordinator` on free loopback ports (add `--data-dir`).
pub const COORDINATOR_ARGS: &[&str] = &[
    "coordinator",
    "--data-port",
    "0",
    "--meta-port",
    "0",
    "--internal-port",
    "0",
    "--http-port",
    "0",
];

/// `longbow shard` on free loopback ports (add `--data-dir`, and `--coordinator` to join).
pub const SHARD_ARGS: &[&str] = &["shard", "--listen", "127.0.0.1:0", "--http-port", "0"];

/// The `longbow` binary with `args` and `--data-dir dir`, logging warnings only.
pub fn longbow_cmd(args: &[&str], dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_longbow"));
    cmd.args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("LONGBOW_LOG", "warn");
    cmd
}

/// A running `longbow local` process.
pub struct Local {
    pub child: Child,
    pub data: String,
    pub meta: String,
    pub http: String,
}

impl Local {
    /// Start with `shards` shard nodes over `dir`; waits (bounded) for the ready line.
    pub fn start(dir: &Path, shards: u32) -> Local {
        Local::start_with(dir, shards, &[], &[])
    }

    /// [`Local::start`] with more arguments and environment variables.
    pub fn start_with(dir: &Path, shards: u32, args: &[&str], env: &[(&str, &str)]) -> Local {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_longbow"));
        cmd.envs(env.iter().copied());
        cmd.args([
            "local",
            "--data-port",
            "0",
            "--meta-port",
            "0",
            "--http-port",
            "0",
            "--shards",
        ])
        .arg(shards.to_string())
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("LONGBOW_LOG", "warn");
        let (child, line) = spawn_until_first_line(cmd);
        Local {
            data: word(&line, "data"),
            meta: word(&line, "meta"),
            http: word(&line, "http"),
            child,
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        terminate(&mut self.child);
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }

    pub async fn data_client(&self) -> FlightClient {
        connect(&self.data).await
    }

    pub async fn meta_client(&self) -> FlightClient {
        connect(&self.meta).await
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port to give a server we start, free now. It is picked below the kernel's
/// ephemeral range (32768 and up), so no outgoing connection takes it while a process we
/// killed is down, and never handed out twice by this test process, so no other test's
/// server binds the port a killed one comes back to (Raft peers keep calling that address).
pub fn free_port() -> u16 {
    use std::collections::BTreeSet;
    use std::hash::BuildHasher;
    use std::sync::Mutex;
    const LOW: u16 = 12_000;
    const SPAN: u16 = 20_000;
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let start = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    for step in 0..SPAN as u64 {
        let port = LOW + ((start + step) % SPAN as u64) as u16;
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

/// The word after `key ` in a ready line (`... data 127.0.0.1:4711 ...`).
pub fn word(line: &str, key: &str) -> String {
    line.split(&format!("{key} "))
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{key} in {line}"))
        .to_string()
}

/// A two-thread runtime for tests that drive async clients from plain `#[test]`s.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Spawn `cmd` with stdout piped and wait (bounded) for its first line, which the roles print
/// once they serve. Stderr is inherited so a failing start shows its error in the test output.
pub fn spawn_until_first_line(mut cmd: Command) -> (Child, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn longbow");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("longbow printed its endpoints");
    (child, line)
}

/// Send SIGTERM to a child we started and wait (bounded) for a clean exit.
pub fn terminate(child: &mut Child) {
    // SAFETY: sending a signal to our own child process by pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "longbow exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "longbow did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP/1.1 GET; returns the whole response (status line, headers, body).
pub fn http_get(base: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).expect("connect http");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

pub async fn connect(uri: &str) -> FlightClient {
    let channel = tonic::transport::Channel::from_shared(uri.replace("grpc://", "http://"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let inner = arrow_flight::flight_service_client::FlightServiceClient::new(channel)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20);
    FlightClient::new_from_inner(inner)
}

pub fn status(e: FlightError) -> tonic::Status {
    match e {
        FlightError::Tonic(s) => *s,
        other => tonic::Status::unknown(other.to_string()),
    }
}

pub async fn action(
    c: &mut FlightClient,
    kind: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, tonic::Status> {
    let mut s = c
        .do_action(Action::new(kind, serde_json::to_vec(&body).expect("json")))
        .await
        .map_err(status)?;
    let bytes = s.next().await.expect("a result").map_err(status)?;
    Ok(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

pub fn vectors(data: &[f32], dim: usize) -> ArrayRef {
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

/// The `vector` column's field: `dim` non-null float32s.
pub fn vector_field(dim: usize) -> Field {
    Field::new(
        "vector",
        DataType::FixedSizeList(
            Arc::new(Field::new("item", DataType::Float32, false)),
            dim as i32,
        ),
        false,
    )
}

/// Rows with payload `price = id % 100` and `tag = "t{id % 10}"`.
pub fn rows(ids: &[u64], data: &[f32], dim: usize) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        vector_field(dim),
        Field::new("price", DataType::Int64, true),
        Field::new("tag", DataType::Utf8, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(UInt64Array::from(ids.to_vec())),
            vectors(data, dim),
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

pub fn queries(data: &[f32], dim: usize) -> RecordBatch {
    let schema = Schema::new(vec![vector_field(dim)]);
    RecordBatch::try_new(Arc::new(schema), vec![vectors(data, dim)]).expect("batch")
}

/// DoPut to `ns`; returns the `rows` of each PutResult.
pub async fn put(
    c: &mut FlightClient,
    ns: &str,
    batches: Vec<RecordBatch>,
) -> Result<Vec<u64>, tonic::Status> {
    put_with_limit(c, ns, batches, 2 << 20).await
}

/// DoPut sending batches in Flight messages of up to `max_message` bytes.
pub async fn put_with_limit(
    c: &mut FlightClient,
    ns: &str,
    batches: Vec<RecordBatch>,
    max_message: usize,
) -> Result<Vec<u64>, tonic::Status> {
    let data = FlightDataEncoderBuilder::new()
        .with_max_flight_data_size(max_message)
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec![ns.to_string()])))
        .build(futures::stream::iter(batches.into_iter().map(Ok)));
    let results = c.do_put(data).await.map_err(status)?;
    let acks: Vec<_> = results.try_collect().await.map_err(status)?;
    Ok(acks
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.app_metadata).expect("json")["rows"]
                .as_u64()
                .expect("rows")
        })
        .collect())
}

/// DoExchange search.
pub async fn search(
    c: &mut FlightClient,
    cmd: serde_json::Value,
    q: RecordBatch,
) -> Result<RecordBatch, tonic::Status> {
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(
            serde_json::to_vec(&cmd).expect("json"),
        )))
        .build(futures::stream::iter([Ok(q)]));
    let stream = c.do_exchange(data).await.map_err(status)?;
    let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(status)?;
    let schema = batches.first().map(|b| b.schema()).expect("a result batch");
    Ok(arrow_select::concat::concat_batches(&schema, &batches).expect("concat"))
}

pub async fn do_get(
    c: &mut FlightClient,
    ticket: serde_json::Value,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let s = c
        .do_get(Ticket::new(serde_json::to_vec(&ticket).expect("json")))
        .await
        .map_err(status)?;
    s.try_collect().await.map_err(status)
}

pub fn u64s(b: &RecordBatch, name: &str) -> Vec<u64> {
    b.column_by_name(name)
        .expect("column")
        .as_any()
        .downcast_ref::<UInt64Array>()
        .expect("u64")
        .values()
        .to_vec()
}

pub fn f32s(b: &RecordBatch, name: &str) -> Vec<f32> {
    b.column_by_name(name)
        .expect("column")
        .as_any()
        .downcast_ref::<Float32Array>()
        .expect("f32")
        .values()
        .to_vec()
}

pub fn u32s(b: &RecordBatch, name: &str) -> Vec<u32> {
    b.column_by_name(name)
        .expect("column")
        .as_any()
        .downcast_ref::<arrow_array::UInt32Array>()
        .expect("u32")
        .values()
        .to_vec()
}

/// Poll check_readiness until READY (bounded).
pub async fn wait_ready(c: &mut FlightClient, ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = action(c, "check_readiness", serde_json::json!({"namespace": ns}))
            .await
            .expect("readiness");
        if r["status"] == "READY" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "namespace {ns} never became READY: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `longbow coordinator` on `dir`: the child, its data URI and its internal address.
pub fn coordinator(dir: &Path) -> (Child, String, String) {
    coordinator_with(dir, &[])
}

/// [`coordinator`] with extra flags.
pub fn coordinator_with(dir: &Path, extra: &[&str]) -> (Child, String, String) {
    let mut cmd = longbow_cmd(COORDINATOR_ARGS, dir);
    cmd.args(extra);
    let (child, line) = spawn_until_first_line(cmd);
    (
        child,
        format!("http://{}", word(&line, "data")),
        word(&line, "internal"),
    )
}

/// A `longbow shard` on `dir` joined to the coordinator at internal address `coordinator`.
pub fn shard(dir: &Path, coordinator: &str) -> Child {
    let mut cmd = longbow_cmd(SHARD_ARGS, dir);
    cmd.arg("--coordinator").arg(coordinator);
    spawn_until_first_line(cmd).0
}

/// Shard nodes the coordinator reports live.
pub async fn live_nodes(c: &mut arrow_flight::FlightClient) -> usize {
    let s = action(c, "cluster-status", serde_json::json!({}))
        .await
        .expect("cluster-status");
    s["shard_nodes"]
        .as_array()
        .map_or(0, |n| n.iter().filter(|n| n["live"] == true).count())
}

/// Wait (bounded) until `n` shard nodes are live.
pub async fn wait_live(c: &mut arrow_flight::FlightClient, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while live_nodes(c).await != n {
        assert!(Instant::now() < deadline, "{n} live shard nodes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The vectors of ids `0..hi` stored in `ns`, by id (ids not stored are absent).
pub async fn stored_vectors(
    local: &Local,
    ns: &str,
    hi: u64,
) -> std::collections::BTreeMap<u64, Vec<f32>> {
    let mut data = local.data_client().await;
    let ids: Vec<u64> = (0..hi).collect();
    let batches = do_get(
        &mut data,
        serde_json::json!({"get": {"namespace": ns, "ids": ids, "include_vectors": true}}),
    )
    .await
    .expect("get");
    let mut out = std::collections::BTreeMap::new();
    for b in &batches {
        let v = b
            .column_by_name("vector")
            .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
            .expect("vector");
        let dim = v.value_length() as usize;
        let floats = v
            .values()
            .as_any()
            .downcast_ref::<Float32Array>()
            .expect("f32");
        for (row, id) in u64s(b, "id").into_iter().enumerate() {
            out.insert(id, floats.values()[row * dim..(row + 1) * dim].to_vec());
        }
    }
    out
}

/// A process we started, killed if it is still running when dropped (a test that failed
/// half-way leaves nothing behind). Derefs to its [`Child`].
pub struct Proc(pub Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
