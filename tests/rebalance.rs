//! Rebalancing and decommissioning through real processes: a coordinator and shard nodes on
//! loopback, under a bounded load of writes and searches from another client.
//!
//! Specification: when a shard node joins, replicas move onto it until the rows per node are
//! within 10 % of even, while no client request fails and every acknowledged write stays
//! readable; `DecommissionNode` moves every replica off a node (primaries included) so it
//! can be stopped without losing a row, and the node gets no new replicas meanwhile.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::replicas::{
    batch, create_namespace, node_ids, start_node, stats, stored, values, wait_converged, Node,
    DIM, NS,
};
use common::*;
use serde_json::{json, Value};

/// The first id the load writes (the rows before it are written up front).
const LOAD_FROM: u64 = 3000;
/// Rows per load write.
const LOAD_BATCH: u64 = 20;

/// What the load did: writes acknowledged (ids `LOAD_FROM..acked_hi`), searches answered,
/// and every failure.
struct Load {
    acked_hi: u64,
    searches: usize,
    failures: Vec<String>,
}

/// Writes and searches one after the other on their own client until `stop` (bounded: 4,000
/// rounds, 180 s).
fn start_load(data_uri: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Load> {
    tokio::spawn(async move {
        let mut c = connect(&data_uri).await;
        let mut load = Load {
            acked_hi: LOAD_FROM,
            searches: 0,
            failures: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        for round in 0..4000u64 {
            if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                break;
            }
            let lo = load.acked_hi;
            match put(&mut c, NS, vec![batch(lo, lo + LOAD_BATCH, 1)]).await {
                Ok(_) => load.acked_hi = lo + LOAD_BATCH,
                Err(e) => load.failures.push(format!("write {lo}: {e}")),
            }
            let q = queries(&[round as f32 * 0.01, 0.0, 0.0, 0.0], DIM);
            match search(&mut c, json!({"namespace": NS, "k": 5}), q).await {
                Ok(_) => load.searches += 1,
                Err(e) => load.failures.push(format!("search {round}: {e}")),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        load
    })
}

/// Stop the load; what it did, once checked: no request failed, and it did some work.
async fn stop_load(stop: &AtomicBool, load: tokio::task::JoinHandle<Load>) -> Load {
    stop.store(true, Ordering::Relaxed);
    let load = load.await.expect("load");
    assert_eq!(
        load.failures,
        Vec::<String>::new(),
        "client requests during the moves"
    );
    assert!(
        load.searches >= 5 && load.acked_hi >= LOAD_FROM + 5 * LOAD_BATCH,
        "the load ran ({} searches, {} rows)",
        load.searches,
        load.acked_hi - LOAD_FROM
    );
    load
}

/// A running coordinator: its process and the addresses of its ready line.
struct Coordinator {
    _proc: Proc,
    data_uri: String,
    internal: String,
    http: String,
}

/// A coordinator and `n` shard nodes under `dir`, all live, and a client.
async fn cluster(
    dir: &std::path::Path,
    n: usize,
) -> (Coordinator, arrow_flight::FlightClient, Vec<Node>) {
    let (child, line) =
        spawn_until_first_line(longbow_cmd(COORDINATOR_ARGS, &dir.join("coordinator")));
    let coord = Coordinator {
        _proc: Proc(child),
        data_uri: format!("http://{}", word(&line, "data")),
        internal: word(&line, "internal"),
        http: word(&line, "http"),
    };
    let nodes: Vec<Node> = (0..n)
        .map(|i| start_node(&dir.join(format!("shard-{i}")), &coord.internal))
        .collect();
    let mut c = connect(&coord.data_uri).await;
    wait_live(&mut c, n).await;
    (coord, c, nodes)
}

/// A counter's value in the coordinator's `/metrics`.
fn counter(coord: &Coordinator, name: &str) -> u64 {
    let text = http_get(&format!("http://{}", coord.http), "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics:\n{text}"))
}

/// The shard nodes as cluster-status lists them.
async fn shard_nodes(c: &mut arrow_flight::FlightClient) -> Vec<Value> {
    let s = action(c, "cluster-status", json!({}))
        .await
        .expect("status");
    s["shard_nodes"].as_array().expect("nodes").clone()
}

/// Whether no shard of the test namespace is moving and each has `rf` members in sync.
async fn settled(c: &mut arrow_flight::FlightClient, rf: usize) -> bool {
    let s = stats(c).await;
    s["per_shard"].as_array().expect("shards").iter().all(|sh| {
        sh["in_sync"].as_array().map_or(0, |a| a.len()) == rf
            && sh["replicas"].as_array().map_or(0, |a| a.len()) == rf
    })
}

/// Every acknowledged write reads back with its value.
async fn assert_all_readable(c: &mut arrow_flight::FlightClient, hi: u64) {
    let got = stored(c, hi).await;
    for (id, want) in values(0, hi, 1) {
        assert_eq!(got.get(&id), Some(&want), "acknowledged row {id}");
    }
}

#[test]
fn a_node_that_joins_gets_replicas_until_rows_are_even_and_no_request_fails() {
    let tmp = tempfile::tempdir().expect("tmp");
    runtime().block_on(async {
        let (coord, mut c, _nodes) = cluster(tmp.path(), 2).await;
        create_namespace(&mut c, 6, 2).await;
        put(&mut c, NS, vec![batch(0, LOAD_FROM, 1)])
            .await
            .expect("rows");
        wait_converged(&mut c, 2).await;
        let stop = Arc::new(AtomicBool::new(false));
        let load = start_load(coord.data_uri.clone(), stop.clone());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _joined = start_node(&tmp.path().join("shard-2"), &coord.internal);
        let deadline = Instant::now() + Duration::from_secs(120);
        let rows = loop {
            let nodes = shard_nodes(&mut c).await;
            // Separate processes: searched over Flight, never in-process.
            assert!(
                nodes.iter().all(|n| n["in_process"] == json!(false)),
                "{nodes:?}"
            );
            let rows: Vec<u64> = nodes
                .iter()
                .map(|n| n["rows"].as_u64().unwrap_or(0))
                .collect();
            let mean = rows.iter().sum::<u64>() as f64 / rows.len() as f64;
            let even =
                rows.len() == 3 && rows.iter().all(|r| (*r as f64 - mean).abs() <= 0.1 * mean);
            // A move adds its copy before it removes one: never fewer than 2 in sync.
            let s = stats(&mut c).await;
            for sh in s["per_shard"].as_array().expect("shards") {
                let in_sync = sh["in_sync"].as_array().map_or(0, |a| a.len());
                assert!(
                    in_sync >= 2,
                    "a shard fell to {in_sync} in-sync copies: {s}"
                );
            }
            if even && settled(&mut c, 2).await {
                break rows;
            }
            assert!(Instant::now() < deadline, "never balanced: {nodes:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let load = stop_load(&stop, load).await;
        let moved = counter(&coord, "longbow_replicas_moved_total");
        assert!(moved >= 2, "{moved} replicas moved for rows {rows:?}");
        wait_converged(&mut c, 2).await;
        assert_all_readable(&mut c, load.acked_hi).await;
    });
}

#[test]
fn a_decommissioned_node_is_emptied_of_primaries_and_backups_and_can_leave() {
    let tmp = tempfile::tempdir().expect("tmp");
    runtime().block_on(async {
        let (coord, mut c, mut nodes) = cluster(tmp.path(), 3).await;
        create_namespace(&mut c, 3, 1).await;
        put(&mut c, NS, vec![batch(0, LOAD_FROM, 1)])
            .await
            .expect("rows");
        wait_converged(&mut c, 1).await;
        let leaving = node_ids(&mut c).await[&nodes[0].addr];

        let unknown = action(&mut c, "DecommissionNode", json!({"node_id": 999}))
            .await
            .expect_err("an unknown node");
        assert_eq!(unknown.code(), tonic::Code::InvalidArgument);
        assert!(
            unknown.message().contains("node_id"),
            "{}",
            unknown.message()
        );

        let stop = Arc::new(AtomicBool::new(false));
        let load = start_load(coord.data_uri.clone(), stop.clone());
        let answer = action(&mut c, "DecommissionNode", json!({"node_id": leaving}))
            .await
            .expect("decommission");
        assert_eq!(answer["draining"], true);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let again = action(&mut c, "DecommissionNode", json!({"node_id": leaving}))
                .await
                .expect("decommission again");
            if again["replicas"] == 0 && settled(&mut c, 1).await {
                break;
            }
            assert!(Instant::now() < deadline, "node never emptied: {again}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let load = stop_load(&stop, load).await;

        // A new namespace is not placed on the leaving node.
        action(
            &mut c,
            "CreateNamespace",
            json!({"name": "after", "dim": DIM, "shards": 4, "replication_factor": 1}),
        )
        .await
        .expect("create after");
        let placed = action(&mut c, "GetNamespace", json!({"name": "after"}))
            .await
            .expect("after");
        for sh in placed["per_shard"].as_array().expect("shards") {
            assert_ne!(sh["primary"].as_u64(), Some(leaving), "{placed}");
        }

        // It can leave now: every acknowledged row is still there without it.
        terminate(&mut nodes[0].child);
        assert_all_readable(&mut c, load.acked_hi).await;
    });
}
