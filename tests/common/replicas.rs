//! Helpers for tests of replica sets through real processes: shard nodes we start, the
//! test namespace's statistics, what it stores, and waiting for its replicas to converge.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use arrow_flight::FlightClient;
use serde_json::{json, Value};

use super::*;

/// Vector dimension of the test namespace.
pub const DIM: usize = 4;
/// The test namespace.
pub const NS: &str = "rep";

/// Shard node flags for checkpoints that keep no WAL, so a replica built or caught up after
/// one needs the primary's segment files.
pub const NO_RETENTION: [&str; 2] = ["--wal-retention-bytes", "0"];

/// A shard node we started: its process, its shard API address and its HTTP address. A
/// node still running when dropped (a test that failed half-way) is killed.
pub struct Node {
    pub child: Child,
    pub addr: String,
    pub http: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn start_node(dir: &Path, coordinator: &str) -> Node {
    start_node_with(dir, coordinator, &[])
}

/// [`start_node`] with extra flags.
pub fn start_node_with(dir: &Path, coordinator: &str, extra: &[&str]) -> Node {
    let mut cmd = longbow_cmd(SHARD_ARGS, dir);
    cmd.arg("--coordinator").arg(coordinator).args(extra);
    let (child, line) = spawn_until_first_line(cmd);
    Node {
        child,
        addr: word(&line, "flight"),
        http: word(&line, "http"),
    }
}

/// A counter's value in a node's `/metrics`.
pub fn metric(node: &Node, name: &str) -> u64 {
    let text = http_get(&format!("http://{}", node.http), "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics:\n{text}"))
}

/// The acknowledged value of each id written by `batch(lo, hi, salt)`.
pub fn values(lo: u64, hi: u64, salt: u64) -> impl Iterator<Item = (u64, f32)> {
    (lo..hi).map(move |i| (i, ((i * 7 + salt) % 1000) as f32 * 0.01))
}

pub fn batch(lo: u64, hi: u64, salt: u64) -> arrow_array::RecordBatch {
    let ids: Vec<u64> = (lo..hi).collect();
    let data: Vec<f32> = ids
        .iter()
        .flat_map(|&i| (0..DIM).map(move |d| ((i * 7 + d as u64 + salt) % 1000) as f32 * 0.01))
        .collect();
    rows(&ids, &data, DIM)
}

pub async fn stats(c: &mut FlightClient) -> Value {
    action(c, "GetNamespace", json!({ "name": NS }))
        .await
        .expect("GetNamespace")
}

/// Node id of each shard node address, from cluster-status.
pub async fn node_ids(c: &mut FlightClient) -> BTreeMap<String, u64> {
    let s = action(c, "cluster-status", json!({}))
        .await
        .expect("status");
    s["shard_nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["address"].as_str().expect("address").to_string(),
                n["id"].as_u64().expect("id"),
            )
        })
        .collect()
}

/// The ids stored in the namespace among `0..hi`, with their first vector component.
pub async fn stored(c: &mut FlightClient, hi: u64) -> BTreeMap<u64, f32> {
    let ids: Vec<u64> = (0..hi).collect();
    let batches = do_get(
        c,
        json!({"get": {"namespace": NS, "ids": ids, "include_vectors": true}}),
    )
    .await
    .expect("get");
    let mut out = BTreeMap::new();
    for b in &batches {
        let vectors = b
            .column_by_name("vector")
            .and_then(|v| v.as_any().downcast_ref::<arrow_array::FixedSizeListArray>())
            .expect("vector");
        let first = vectors
            .values()
            .as_any()
            .downcast_ref::<arrow_array::Float32Array>()
            .expect("f32");
        for (row, id) in u64s(b, "id").into_iter().enumerate() {
            out.insert(id, first.value(row * DIM));
        }
    }
    out
}

/// Wait (bounded) until every shard has all its members in sync with lag 0; returns stats.
pub async fn wait_converged(c: &mut FlightClient, members: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = stats(c).await;
        let done = s["per_shard"].as_array().expect("shards").iter().all(|sh| {
            sh["in_sync"].as_array().map_or(0, |a| a.len()) == members
                && sh["replicas"]
                    .as_array()
                    .expect("replicas")
                    .iter()
                    .all(|r| r["lag"] == 0 && r["live"] == true)
        });
        if done {
            return s;
        }
        assert!(Instant::now() < deadline, "replicas never converged: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Each replica's own statistics, asked of its node directly.
pub async fn replica_stats(addr: &str, shard: u64) -> Value {
    let mut c = connect(&format!("http://{addr}")).await;
    action(
        &mut c,
        "ReplicaStats",
        json!({"namespace": NS, "shard": shard}),
    )
    .await
    .expect("replica stats")
}

/// Start a coordinator (with `coordinator_args`) and `n` shard nodes (with `node_args`)
/// under `dir`, and wait until all are live: the coordinator, a client of it, its internal
/// address and the nodes.
pub async fn start_cluster(
    dir: &Path,
    n: usize,
    coordinator_args: &[&str],
    node_args: &[&str],
) -> (Proc, FlightClient, String, Vec<Node>) {
    let (coord, data_uri, internal) = coordinator_with(&dir.join("coordinator"), coordinator_args);
    let coord = Proc(coord);
    let nodes: Vec<Node> = (0..n)
        .map(|i| start_node_with(&dir.join(format!("shard-{i}")), &internal, node_args))
        .collect();
    let mut c = connect(&data_uri).await;
    wait_live(&mut c, n).await;
    (coord, c, internal, nodes)
}

/// Create the test namespace with `shards` shards of `rf` replicas.
pub async fn create_namespace(c: &mut FlightClient, shards: u32, rf: u32) {
    action(
        c,
        "CreateNamespace",
        json!({"name": NS, "dim": DIM, "shards": shards, "replication_factor": rf}),
    )
    .await
    .expect("create the test namespace");
}

/// Which of `nodes` holds shard `shard`'s primary, by position.
pub async fn primary_of(c: &mut FlightClient, nodes: &[Node], shard: usize) -> usize {
    let ids = node_ids(c).await;
    let primary = stats(c).await["per_shard"][shard]["primary"]
        .as_u64()
        .expect("primary");
    nodes
        .iter()
        .position(|n| ids[&n.addr] == primary)
        .expect("a node we started")
}

/// Wait (bounded) until shard 0's primary is no longer `old`.
pub async fn wait_failover(c: &mut FlightClient, old: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = stats(c).await;
        let now = s["per_shard"][0]["primary"].as_u64();
        if now.is_some_and(|p| p != old) {
            return;
        }
        assert!(Instant::now() < deadline, "no failover: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Write `batch(lo, hi, salt)`, retrying (bounded) through a failover or an in-sync change.
pub async fn put_until_acked(c: &mut FlightClient, lo: u64, hi: u64, salt: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = put(c, NS, vec![batch(lo, hi, salt)]).await {
        assert!(Instant::now() < deadline, "writes never resumed: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
