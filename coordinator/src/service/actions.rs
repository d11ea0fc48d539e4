//! DoAction handlers of the client API: JSON in, JSON out (Arrow IPC bytes for
//! `VectorSearch`). Both Longbow's action names and a few common spellings are accepted.

use arrow_array::{Array, FixedSizeListArray, Float32Array, RecordBatch};
use arrow_flight::Action;
use arrow_schema::{DataType, Field, Schema};
use longbow_common::{columns, ContractError, ErrorExt, IdValue};
use serde::Deserialize;
use std::sync::Arc;
use tonic::Status;

use crate::error::{CoordinatorError, Result};
use crate::namespaces::CreateNamespaceRequest;
use crate::node::Coordinator;
use crate::reads::{DeleteRecords, GetRecords};
use crate::search::SearchRequest;

/// Every action with its description (ListActions).
pub const ACTIONS: [(&str, &str); 12] = [
    ("CreateNamespace", "Create a namespace: {name, dim, metric, id_type, shards, replication_factor, index: {m, ef_construction, ef_search}}"),
    ("DeleteNamespace", "Delete a namespace and all its data: {name}"),
    ("ListNamespaces", "List namespaces with their dimension, metric and shard count"),
    ("GetNamespace", "Statistics of a namespace: {name} -> count, deleted, per-shard LSNs, memory and disk bytes, indexing lag"),
    ("Delete", "Delete records: {namespace, ids | filter} -> {deleted}"),
    ("VectorSearch", "Search: {namespace, vector, k, ef, filter, columns} -> Arrow IPC stream bytes"),
    ("VectorSearchByID", "Search with a stored record's vector: {namespace, id, k, ef, filter, columns} -> Arrow IPC stream bytes (the record itself excluded)"),
    ("Snapshot", "Snapshot a namespace (not available yet: arrives with the storage milestone)"),
    ("ListSnapshots", "List snapshots (not available yet: arrives with the storage milestone)"),
    ("RestoreSnapshot", "Restore a snapshot (not available yet: arrives with the storage milestone)"),
    ("check_readiness", "{namespace} -> {status: READY | BUSY | NOT_FOUND}; READY once every acknowledged write is in the graph"),
    ("cluster-status", "Coordinator Raft state, shard nodes and their liveness, namespace count"),
];

/// The canonical name of an action type, accepting common spellings.
pub fn canonical(kind: &str) -> Option<&'static str> {
    let k = kind.to_ascii_lowercase().replace(['_', '-'], "");
    Some(match k.as_str() {
        "createnamespace" | "createdataset" => "CreateNamespace",
        "deletenamespace" | "deletedataset" | "dropnamespace" | "dropdataset" => "DeleteNamespace",
        "listnamespaces" | "listdatasets" => "ListNamespaces",
        "getnamespace" | "getdataset" | "getnamespaceinfo" | "getstats" => "GetNamespace",
        "delete" | "deleterecords" => "Delete",
        "vectorsearch" | "search" => "VectorSearch",
        "vectorsearchbyid" | "searchbyid" => "VectorSearchByID",
        "snapshot" | "createsnapshot" => "Snapshot",
        "listsnapshots" => "ListSnapshots",
        "restoresnapshot" => "RestoreSnapshot",
        "checkreadiness" => "check_readiness",
        "clusterstatus" => "cluster-status",
        _ => return None,
    })
}

fn parse<T: for<'de> Deserialize<'de>>(what: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| ContractError::invalid(format!("{what} body"), e).into())
}

fn json(v: &impl serde::Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| CoordinatorError::Internal(e.to_string()))
}

#[derive(Deserialize)]
struct NameOnly {
    #[serde(alias = "namespace", alias = "dataset")]
    name: String,
}

/// `VectorSearch` body: a search request plus one query vector.
#[derive(Deserialize)]
struct VectorSearchBody {
    #[serde(flatten)]
    search: SearchRequest,
    vector: Vec<f32>,
}

#[derive(Deserialize)]
struct SearchByIdBody {
    #[serde(flatten)]
    search: SearchRequest,
    id: serde_json::Value,
}

/// A one-row query batch from a JSON vector.
pub fn query_batch(vector: &[f32]) -> Result<RecordBatch> {
    if vector.is_empty() {
        return Err(ContractError::invalid("vector", "is empty").into());
    }
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let list = FixedSizeListArray::try_new(
        item,
        vector.len() as i32,
        Arc::new(Float32Array::from(vector.to_vec())),
        None,
    )
    .map_err(|e| ContractError::invalid("vector", e))?;
    let schema = Schema::new(vec![Field::new(
        columns::VECTOR,
        list.data_type().clone(),
        false,
    )]);
    RecordBatch::try_new(Arc::new(schema), vec![Arc::new(list)])
        .map_err(|e| ContractError::invalid("vector", e).into())
}

fn ipc_bytes(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let internal = |e: arrow_schema::ArrowError| CoordinatorError::Internal(e.to_string());
    let mut w =
        arrow_ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).map_err(internal)?;
    w.write(batch).map_err(internal)?;
    w.finish().map_err(internal)?;
    drop(w);
    Ok(out)
}

/// Run one action.
pub(super) async fn handle(
    coord: &Coordinator,
    action: Action,
) -> std::result::Result<Vec<u8>, Status> {
    run(coord, action).await.map_err(|e| e.to_status())
}

async fn run(coord: &Coordinator, action: Action) -> Result<Vec<u8>> {
    let body = action.body.as_ref();
    let Some(kind) = canonical(&action.r#type) else {
        let known: Vec<&str> = ACTIONS.iter().map(|(n, _)| *n).collect();
        return Err(CoordinatorError::Unimplemented(format!(
            "unknown action '{}'; known actions: {}",
            action.r#type,
            known.join(", ")
        )));
    };
    match kind {
        "CreateNamespace" => {
            let req: CreateNamespaceRequest = parse("CreateNamespace", body)?;
            let meta = coord.create_namespace(req, None).await?;
            json(&serde_json::json!({
                "name": meta.name, "dim": meta.dim, "metric": meta.metric, "id_type": meta.id_type,
                "shards": meta.shards, "replication_factor": meta.replication_factor, "index": meta.index,
            }))
        }
        "DeleteNamespace" => {
            let req: NameOnly = parse("DeleteNamespace", body)?;
            coord.delete_namespace(&req.name).await?;
            json(&serde_json::json!({"deleted": req.name}))
        }
        "ListNamespaces" => {
            let cat = coord.group.catalog.read();
            let list: Vec<_> = cat
                .namespaces
                .values()
                .map(|m| serde_json::json!({"name": m.name, "dim": m.dim, "metric": m.metric, "id_type": m.id_type, "shards": m.shards}))
                .collect();
            json(&list)
        }
        "GetNamespace" => {
            let req: NameOnly = parse("GetNamespace", body)?;
            json(&coord.namespace_stats(&req.name).await?)
        }
        "Delete" => {
            let req: DeleteRecords = parse("Delete", body)?;
            json(&serde_json::json!({"deleted": coord.delete(&req).await?}))
        }
        "VectorSearch" => {
            let req: VectorSearchBody = parse("VectorSearch", body)?;
            let prepared = coord.prepare_search(&req.search)?;
            let out = coord.search(&prepared, &query_batch(&req.vector)?, 0).await?;
            ipc_bytes(&out)
        }
        "VectorSearchByID" => {
            let req: SearchByIdBody = parse("VectorSearchByID", body)?;
            let meta = coord.namespace(&req.search.namespace)?;
            let id = IdValue::from_json("id", &req.id, meta.id_type)?;
            let get = GetRecords { namespace: meta.name.clone(), ids: vec![req.id.clone()], columns: Some(vec![]), include_vectors: true };
            let (_, found) = coord.get(&get).await?;
            let vector = found
                .iter()
                .find(|b| b.num_rows() > 0)
                .and_then(|b| b.column_by_name(columns::VECTOR).cloned())
                .ok_or_else(|| CoordinatorError::NamespaceNotFound(format!("{}: record {id} not found", meta.name)))?;
            let queries = RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new(columns::VECTOR, vector.data_type().clone(), false)])),
                vec![vector.slice(0, 1)],
            )
            .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
            let mut search = req.search.clone();
            search.k = search.k.saturating_add(1);
            let prepared = coord.prepare_search(&search)?;
            let out = coord.search(&prepared, &queries, 0).await?;
            let ids = longbow_common::ids::ids_from_array(out.column(1).as_ref(), meta.id_type)?;
            let keep: Vec<u32> = ids.iter().enumerate().filter(|(_, x)| **x != id).map(|(i, _)| i as u32).take(req.search.k).collect();
            let out = arrow_select::take::take_record_batch(&out, &arrow_array::UInt32Array::from(keep))
                .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
            ipc_bytes(&out)
        }
        "Snapshot" | "ListSnapshots" | "RestoreSnapshot" => Err(CoordinatorError::Unimplemented(format!(
            "{kind} is not available yet: consistent per-shard snapshots arrive with the storage milestone"
        ))),
        "check_readiness" => {
            let req: NameOnly = parse("check_readiness", body)?;
            match coord.namespace_stats(&req.name).await {
                Ok(s) => json(&serde_json::json!({
                    "status": if s.indexing_lag == 0 { "READY" } else { "BUSY" },
                    "namespace": s.name, "count": s.count, "indexing_lag": s.indexing_lag,
                })),
                Err(CoordinatorError::NamespaceNotFound(_)) => json(&serde_json::json!({"status": "NOT_FOUND", "namespace": req.name})),
                Err(e) => Err(e),
            }
        }
        "cluster-status" => {
            coord.refresh_gauges();
            let (term, leader) = coord.group.term_and_leader();
            let live = coord.live_nodes();
            let cat = coord.group.catalog.read();
            let nodes: Vec<_> = cat
                .nodes
                .values()
                .map(|n| serde_json::json!({"id": n.id, "address": n.address, "live": live.contains(&n.id)}))
                .collect();
            json(&serde_json::json!({
                "coordinator": {"id": coord.group.id, "raft_term": term, "raft_leader": leader},
                "shard_nodes": nodes,
                "namespaces": cat.namespaces.len(),
            }))
        }
        other => Err(CoordinatorError::Internal(format!("action {other} has no handler"))),
    }
}
