//! What the harness asks the cluster between and after trials: which node holds which
//! shard's primary, whether every replica set is whole and caught up, whether the replicas
//! of each shard hold the same log and rows, and recall against an exact search.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use longbow_soak::client::Client;
use longbow_soak::cluster::Cluster;
use longbow_soak::oracle::{exact_top_k, vector, Oracle};
use longbow_soak::workload::Settings;
use serde_json::{json, Value};

/// Shard node ids by the harness's process names (`shard-0`, …), from cluster-status.
pub async fn node_ids(client: &mut Client, cluster: &Cluster) -> Result<BTreeMap<String, u64>> {
    let status = client.action("cluster-status", json!({})).await?;
    let by_addr: BTreeMap<String, u64> = status["shard_nodes"]
        .as_array()
        .ok_or_else(|| anyhow!("cluster-status without shard_nodes: {status}"))?
        .iter()
        .filter_map(|n| Some((n["address"].as_str()?.to_string(), n["id"].as_u64()?)))
        .collect();
    Ok(cluster
        .shard_names()
        .into_iter()
        .filter_map(|name| {
            let id = by_addr.get(&cluster.flight_addr(&name)?)?;
            Some((name, *id))
        })
        .collect())
}

/// The node id holding each shard's primary.
pub fn primaries(stats: &Value) -> Vec<u64> {
    stats["per_shard"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["primary"].as_u64()).collect())
        .unwrap_or_default()
}

/// Whether every shard has `rf` live members in sync with lag 0.
fn whole(stats: &Value, rf: usize) -> bool {
    stats["per_shard"].as_array().is_some_and(|shards| {
        shards.iter().all(|s| {
            s["in_sync"].as_array().map_or(0, Vec::len) == rf
                && s["replicas"].as_array().is_some_and(|r| {
                    r.len() == rf && r.iter().all(|m| m["lag"] == 0 && m["live"] == true)
                })
        })
    })
}

/// Wait (bounded by `within`) until every replica set is whole and caught up; how long that
/// took, and the namespace's statistics then.
pub async fn wait_whole(
    client: &mut Client,
    ns: &str,
    rf: usize,
    within: Duration,
) -> Result<(Duration, Value)> {
    let started = Instant::now();
    let mut last = Value::Null;
    while started.elapsed() < within {
        match client.action("GetNamespace", json!({ "name": ns })).await {
            Ok(s) if whole(&s, rf) => return Ok((started.elapsed(), s)),
            Ok(s) => last = s,
            Err(e) => last = json!({ "error": e.to_string() }),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("replica sets not whole and caught up after {within:?}: {last}")
}

/// Each shard's members as `(node, lsn, rows)`, asked of every member's node directly.
pub async fn replica_positions(
    cluster: &Cluster,
    ids: &BTreeMap<String, u64>,
    ns: &str,
    stats: &Value,
) -> Result<Vec<Vec<(u64, u64, u64)>>> {
    let mut out = Vec::new();
    for (shard, s) in stats["per_shard"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mut members = Vec::new();
        for r in s["replicas"].as_array().into_iter().flatten() {
            let node = r["node"]
                .as_u64()
                .ok_or_else(|| anyhow!("replica without node"))?;
            let name = ids
                .iter()
                .find(|(_, id)| **id == node)
                .map(|(name, _)| name.clone())
                .ok_or_else(|| anyhow!("node {node} is not one the harness started"))?;
            let addr = cluster
                .flight_addr(&name)
                .ok_or_else(|| anyhow!("{name} has no address"))?;
            let mut c = Client::connect(&addr, &addr).await?;
            let st = c
                .action("ReplicaStats", json!({"namespace": ns, "shard": shard}))
                .await?;
            members.push((
                node,
                st["lsn"].as_u64().unwrap_or(0),
                st["count"].as_u64().unwrap_or(0),
            ));
        }
        out.push(members);
    }
    Ok(out)
}

/// Mean recall@k of `queries` searches against an exact search over the acknowledged rows.
pub async fn recall(
    client: &mut Client,
    s: &Settings,
    oracle: &Oracle,
    queries: u64,
) -> Result<f64> {
    let live: Vec<(u64, Vec<f32>)> = oracle
        .live
        .iter()
        .map(|(&id, &v)| (id, vector(id, v, s.dim, s.clusters)))
        .collect();
    let mut sum = 0.0;
    for q in 0..queries {
        let query = vector(q | (1 << 61), 0, s.dim, s.clusters);
        let truth = exact_top_k(&live, &query, s.k);
        let found = client.search(&s.namespace, &query, s.k).await?;
        let hit = found.iter().filter(|id| truth.contains(id)).count();
        sum += hit as f64 / truth.len().max(1) as f64;
    }
    Ok(sum / queries.max(1) as f64)
}
