//! Result shapes of Longbow 0.1's calls (see the "Longbow 0.1 compatibility" section of
//! `docs/client-api.md`), and the answers both dialects share
//! (namespace lists, readiness, cluster status), each carrying both dialects' keys.
//!
//! This module shapes answers only; the work behind them is the coordinator's.

use arrow_array::cast::AsArray;
use arrow_array::types::UInt32Type;
use arrow_array::RecordBatch;
use longbow_common::ids::ids_from_array;
use longbow_common::{columns, IdType};
use serde_json::{json, Value};

use crate::error::{CoordinatorError, Result};
use crate::node::Coordinator;

/// `ListNamespaces`: Longbow's `{namespaces: [name], count}` plus our `details`.
pub fn list_namespaces(coord: &Coordinator) -> Value {
    let cat = coord.group.catalog.read();
    let names: Vec<&str> = cat.namespaces.keys().map(String::as_str).collect();
    let details: Vec<Value> = cat
        .namespaces
        .values()
        .map(|m| {
            json!({"name": m.name, "dim": m.dim, "metric": m.metric, "id_type": m.id_type,
                   "shards": m.shards, "declared": m.is_declared()})
        })
        .collect();
    json!({"namespaces": names, "count": names.len(), "details": details})
}

/// `check_readiness` of one namespace, or of every namespace when `name` is `None`.
pub async fn readiness(coord: &Coordinator, name: Option<&str>) -> Result<Value> {
    if let Some(name) = name {
        return one_readiness(coord, name).await;
    }
    let names = coord.namespace_names();
    let mut per = serde_json::Map::new();
    let mut ready = true;
    for n in names {
        let r = one_readiness(coord, &n).await?;
        ready &= r["status"] == "READY";
        per.insert(n, r["status"].clone());
    }
    Ok(json!({
        "status": if ready { "READY" } else { "BUSY" },
        "namespaces": per,
        "count": per.len(),
    }))
}

async fn one_readiness(coord: &Coordinator, name: &str) -> Result<Value> {
    match coord.namespace_stats(name).await {
        Ok(s) => Ok(json!({
            "status": if s.indexing_lag == 0 { "READY" } else { "BUSY" },
            "namespace": s.name, "count": s.count, "indexing_lag": s.indexing_lag,
        })),
        Err(CoordinatorError::NamespaceNotFound(_)) => {
            Ok(json!({"status": "NOT_FOUND", "namespace": name}))
        }
        Err(e) => Err(e),
    }
}

/// `cluster-status`: our coordinator / shard node view plus Longbow's `{self, members, count}`
/// (member `Status`: 0 alive, 2 dead).
pub fn cluster_status(coord: &Coordinator) -> Value {
    coord.refresh_gauges();
    let (term, leader) = coord.group.term_and_leader();
    let live = coord.live_nodes();
    let holdings = coord.holdings();
    let cat = coord.group.catalog.read();
    let me = json!({
        "ID": format!("coordinator-{}", coord.group.id),
        "Addr": coord.config.data_addr,
        "GRPCAddr": coord.config.data_addr,
        "MetaAddr": coord.config.meta_addr,
        "Status": 0,
        "Role": "coordinator",
    });
    let mut members = vec![me.clone()];
    let mut nodes = Vec::new();
    for n in cat.nodes.values() {
        let alive = live.contains(&n.id);
        let (replicas, rows) = holdings.get(&n.id).copied().unwrap_or_default();
        nodes.push(json!({
            "id": n.id, "address": n.address, "live": alive, "draining": n.draining,
            "replicas": replicas, "rows": rows,
            "in_process": coord.shards.is_in_process(&n.address),
        }));
        members.push(json!({
            "ID": format!("shard-{}", n.id),
            "Addr": n.address,
            "GRPCAddr": n.address,
            "MetaAddr": n.address,
            "Status": if alive { 0 } else { 2 },
            "Role": "shard",
        }));
    }
    json!({
        "coordinator": {"id": coord.group.id, "raft_term": term, "raft_leader": leader},
        "coordinators": coord.group.members(),
        "shard_nodes": nodes,
        "namespaces": cat.namespaces.len(),
        "self": me,
        "count": members.len(),
        "members": members,
    })
}

/// A search result in Longbow's columns: `id`, `score`, and `vector` when asked for.
pub fn search_columns(out: &RecordBatch, include_vectors: bool) -> Result<RecordBatch> {
    let schema = out.schema();
    let mut keep = Vec::new();
    for name in [columns::ID, columns::SCORE] {
        keep.push(schema.index_of(name).map_err(internal)?);
    }
    if include_vectors {
        keep.push(schema.index_of(columns::VECTOR).map_err(internal)?);
    }
    out.project(&keep).map_err(internal)
}

/// Split a result sorted by `query_id` (0-based) into one batch per query, `queries` of them.
pub fn split_by_query(out: &RecordBatch, queries: usize) -> Result<Vec<RecordBatch>> {
    let qid = out
        .column_by_name(columns::QUERY_ID)
        .ok_or_else(|| CoordinatorError::Internal("result lacks query_id".into()))?;
    let qid = qid.as_primitive::<UInt32Type>().values().to_vec();
    let mut out_batches = Vec::with_capacity(queries);
    let mut start = 0usize;
    for q in 0..queries as u32 {
        let end = start + qid[start..].iter().take_while(|&&x| x == q).count();
        out_batches.push(out.slice(start, end - start));
        start = end;
    }
    Ok(out_batches)
}

/// `{"ids": [...], "scores": [...]}` (Longbow's `VectorSearchByID`); ids as strings.
pub fn ids_and_scores(out: &RecordBatch, id_type: IdType) -> Result<Value> {
    let ids = out
        .column_by_name(columns::ID)
        .ok_or_else(|| CoordinatorError::Internal("result lacks id".into()))?;
    let ids: Vec<String> = ids_from_array(ids.as_ref(), id_type)?
        .iter()
        .map(|id| match id {
            longbow_common::IdValue::Str(s) => s.to_string(),
            other => other.to_string(),
        })
        .collect();
    let scores = out
        .column_by_name(columns::SCORE)
        .ok_or_else(|| CoordinatorError::Internal("result lacks score".into()))?;
    let scores: Vec<f32> = scores
        .as_primitive::<arrow_array::types::Float32Type>()
        .values()
        .to_vec();
    debug_assert_eq!(ids.len(), scores.len());
    Ok(json!({"ids": ids, "scores": scores}))
}

fn internal(e: arrow_schema::ArrowError) -> CoordinatorError {
    CoordinatorError::Internal(format!("shaping a Longbow result: {e}"))
}
