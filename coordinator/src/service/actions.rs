//! DoAction handlers of the client API: JSON in, JSON out (Arrow IPC bytes for the searches).
//!
//! Both our action names and Longbow 0.1's are served. Where the two dialects answer the same
//! call differently, the Longbow form answers the Longbow spelling (a body naming `dataset`,
//! the lower-case `delete`, `delete-dataset`, a single `id`), ours answers ours, and where both
//! are JSON objects the answer carries both sets of keys. `docs/client-api.md` lists each case.

use arrow_array::{Array, RecordBatch};
use arrow_flight::Action;
use longbow_common::{columns, ContractError, ErrorExt, IdValue};
use tonic::Status;

use super::longbow;
use super::requests::{self, fold, SearchBody};
use crate::error::{CoordinatorError, Result};
use crate::namespaces::CreateNamespaceRequest;
use crate::node::Coordinator;
use crate::reads::{DeleteRecords, GetRecords};

/// Every action with its description (ListActions).
pub const ACTIONS: [(&str, &str); 20] = [
    ("CreateNamespace", "Create a namespace: {name, dim, metric, id_type, shards, replication_factor, index: {m, ef_construction, ef_search}}; without dim it is declared and its first write fixes dim, metric and id type"),
    ("DeleteNamespace", "Delete a namespace and all its data: {name} -> {deleted, status}"),
    ("delete-dataset", "Longbow 0.1: delete a namespace: {dataset} -> bytes 'deleted'"),
    ("ListNamespaces", "List namespaces -> {namespaces: [name], count, details: [{name, dim, metric, id_type, shards}]}"),
    ("GetTotalNamespaceCount", "Number of namespaces -> {count}"),
    ("GetNamespace", "Statistics of a namespace: {name} -> count, deleted, per-shard LSNs, memory and disk bytes, indexing lag"),
    ("Delete", "Delete records: {namespace, ids | filter} -> {deleted}; Longbow 0.1's {dataset, id} -> bytes 'deleted' (NOT_FOUND for an unknown id); also spelled 'delete'"),
    ("VectorSearch", "Search: {namespace, vector | vectors, k, ef, filter, columns} -> Arrow IPC stream bytes, one result per query"),
    ("VectorSearchByID", "Search with a stored record's vector: {namespace, id, k, ef, filter, columns} -> Arrow IPC stream bytes (the record itself excluded); with dataset: {ids, scores}"),
    ("Snapshot", "Snapshot a namespace, every shard at a checkpoint: {namespace} -> {snapshot, namespace, created_ms, rows, disk_bytes, shards: [{shard, node, lsn, rows, disk_bytes}]}"),
    ("ListSnapshots", "Complete snapshots, oldest first: {namespace?} -> {snapshots: [...], count}"),
    ("RestoreSnapshot", "Restore a snapshot: {namespace, snapshot, target?, replace?} -> {restored, snapshot, rows}; into target (default: namespace), which must not exist unless replace is true"),
    ("DeleteSnapshot", "Delete a snapshot and its files: {snapshot, namespace?} -> {deleted}"),
    ("ForceSnapshot", "Longbow 0.1: snapshot every namespace -> {status, snapshots: [id]}"),
    ("Checkpoint", "Seal and checkpoint every shard of a namespace now: {namespace} -> {namespace, shards: [{shard, lsn, written}]}"),
    ("check_readiness", "{namespace?} -> {status: READY | BUSY | NOT_FOUND, ...}; READY once every acknowledged write is in the graph; no namespace: every namespace"),
    ("cluster-status", "Coordinator Raft state and group members, shard nodes and their liveness, namespace count; Longbow 0.1's {self, members, count}"),
    ("AddCoordinator", "Add a coordinator to the Raft group: {node_id, address (its internal host:port)} -> {added, coordinators}; it must be running with --join"),
    ("RemoveCoordinator", "Remove a coordinator from the Raft group: {node_id} -> {removed, coordinators}"),
    ("DecommissionNode", "Move every replica off a shard node before it leaves: {node_id} -> {node_id, draining, replicas (still on it; stop the node at 0)}"),
];

/// The canonical name of an action type, accepting common spellings.
pub fn canonical(kind: &str) -> Option<&'static str> {
    if kind == "delete-dataset" {
        return Some("delete-dataset");
    }
    let k = kind.to_ascii_lowercase().replace(['_', '-'], "");
    Some(match k.as_str() {
        "createnamespace" | "createdataset" => "CreateNamespace",
        "deletenamespace" | "deletedataset" | "dropnamespace" | "dropdataset" => "DeleteNamespace",
        "listnamespaces" | "listdatasets" => "ListNamespaces",
        "gettotalnamespacecount" => "GetTotalNamespaceCount",
        "getnamespace" | "getdataset" | "getnamespaceinfo" | "getstats" => "GetNamespace",
        "delete" | "deleterecords" => "Delete",
        "vectorsearch" | "search" => "VectorSearch",
        "vectorsearchbyid" | "searchbyid" => "VectorSearchByID",
        "snapshot" | "createsnapshot" => "Snapshot",
        "listsnapshots" => "ListSnapshots",
        "restoresnapshot" => "RestoreSnapshot",
        "forcesnapshot" => "ForceSnapshot",
        "deletesnapshot" | "dropsnapshot" => "DeleteSnapshot",
        "checkpoint" => "Checkpoint",
        "checkreadiness" => "check_readiness",
        "clusterstatus" => "cluster-status",
        "addcoordinator" => "AddCoordinator",
        "removecoordinator" => "RemoveCoordinator",
        "decommissionnode" => "DecommissionNode",
        _ => return None,
    })
}

pub(super) fn json(v: &impl serde::Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| CoordinatorError::Internal(e.to_string()))
}

/// A one-row query batch from a JSON vector.
pub fn query_batch(vector: &[f32]) -> Result<RecordBatch> {
    query_rows(std::slice::from_ref(&vector.to_vec()), "vector")
}

/// A query batch with one row per JSON vector; `field` names them in errors.
pub fn query_rows(vectors: &[Vec<f32>], field: &str) -> Result<RecordBatch> {
    let dim = vectors.first().map_or(0, Vec::len);
    if dim == 0 {
        return Err(ContractError::invalid(field, "is empty").into());
    }
    let mut flat = Vec::with_capacity(vectors.len() * dim);
    for (i, v) in vectors.iter().enumerate() {
        if v.len() != dim {
            return Err(ContractError::invalid(
                format!("{field}[{i}]"),
                format!("has dimension {}, expected {dim}", v.len()),
            )
            .into());
        }
        flat.extend_from_slice(v);
    }
    longbow_common::vectors::check_finite(field, &flat, dim)?;
    let item = std::sync::Arc::new(arrow_schema::Field::new(
        "item",
        arrow_schema::DataType::Float32,
        false,
    ));
    let list = arrow_array::FixedSizeListArray::try_new(
        item,
        dim as i32,
        std::sync::Arc::new(arrow_array::Float32Array::from(flat)),
        None,
    )
    .map_err(|e| ContractError::invalid(field, e))?;
    let schema = arrow_schema::Schema::new(vec![arrow_schema::Field::new(
        columns::VECTOR,
        list.data_type().clone(),
        false,
    )]);
    RecordBatch::try_new(std::sync::Arc::new(schema), vec![std::sync::Arc::new(list)])
        .map_err(|e| ContractError::invalid(field, e).into())
}

pub(super) fn ipc_bytes(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let internal = |e: arrow_schema::ArrowError| CoordinatorError::Internal(e.to_string());
    let mut w =
        arrow_ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).map_err(internal)?;
    w.write(batch).map_err(internal)?;
    w.finish().map_err(internal)?;
    drop(w);
    Ok(out)
}

/// Run one action; its results in order (most actions have one).
pub(super) async fn handle(
    coord: &Coordinator,
    action: Action,
) -> std::result::Result<Vec<Vec<u8>>, Status> {
    run(coord, action).await.map_err(|e| e.to_status())
}

async fn run(coord: &Coordinator, action: Action) -> Result<Vec<Vec<u8>>> {
    let body = action.body.as_ref();
    let Some(kind) = canonical(&action.r#type) else {
        let known: Vec<&str> = ACTIONS.iter().map(|(n, _)| *n).collect();
        return Err(CoordinatorError::Unimplemented(format!(
            "unknown action {}; known actions: {}",
            longbow_common::error::quote(&action.r#type),
            known.join(", ")
        )));
    };
    let one = |r: Result<Vec<u8>>| r.map(|b| vec![b]);
    match kind {
        "CreateNamespace" => one(create_namespace(coord, body).await),
        "DeleteNamespace" => {
            let req: requests::NameBody = fold(&requests::NAMESPACE_NAME, body)?.into_typed("")?;
            coord.delete_namespace(&req.name).await?;
            one(json(
                &serde_json::json!({"deleted": req.name, "status": "deleted"}),
            ))
        }
        "delete-dataset" => {
            let req: requests::NameBody = fold(&requests::NAMESPACE_NAME, body)?.into_typed("")?;
            coord.delete_namespace(&req.name).await?;
            Ok(vec![b"deleted".to_vec()])
        }
        "ListNamespaces" => {
            fold(&requests::NO_KEYS, body)?;
            one(json(&longbow::list_namespaces(coord)))
        }
        "GetTotalNamespaceCount" => {
            fold(&requests::NO_KEYS, body)?;
            let count = coord.group.catalog.read().namespaces.len();
            one(json(&serde_json::json!({ "count": count })))
        }
        "GetNamespace" => {
            let req: requests::NameBody = fold(&requests::NAMESPACE_NAME, body)?.into_typed("")?;
            one(json(&coord.namespace_stats(&req.name).await?))
        }
        "Delete" => one(delete(coord, body).await),
        "VectorSearch" => vector_search(coord, body).await,
        "VectorSearchByID" => one(search_by_id(coord, body).await),
        "Snapshot" | "ListSnapshots" | "RestoreSnapshot" | "DeleteSnapshot" | "ForceSnapshot"
        | "Checkpoint" => one(super::snapshots::handle(coord, kind, body).await),
        "check_readiness" => {
            let req: requests::ReadinessBody =
                fold(&requests::NAMESPACE_NAME, body)?.into_typed("")?;
            one(json(&longbow::readiness(coord, req.name.as_deref()).await?))
        }
        "cluster-status" => {
            fold(&requests::NO_KEYS, body)?;
            one(json(&longbow::cluster_status(coord)))
        }
        "AddCoordinator" | "RemoveCoordinator" => {
            one(super::coordinators::handle(coord, kind, body).await)
        }
        "DecommissionNode" => one(super::nodes::decommission(coord, body).await),
        other => Err(CoordinatorError::Internal(format!(
            "action {other} has no handler"
        ))),
    }
}

async fn create_namespace(coord: &Coordinator, body: &[u8]) -> Result<Vec<u8>> {
    let req: requests::CreateNamespaceBody =
        fold(&requests::CREATE_NAMESPACE, body)?.into_typed("")?;
    if let Some(t) = &req.data_type {
        if !t.eq_ignore_ascii_case("float32") {
            return Err(ContractError::invalid(
                "data_type",
                format!(
                    "only float32 storage is supported, got {}",
                    longbow_common::error::quote(t)
                ),
            )
            .into());
        }
    }
    if req.overwrite && coord.namespace(&req.name).is_ok() {
        coord.delete_namespace(&req.name).await?;
    }
    let meta = coord
        .create_namespace(
            CreateNamespaceRequest {
                name: req.name,
                dim: req.dim,
                metric: req.metric.unwrap_or_default(),
                id_type: req.id_type.unwrap_or_default(),
                shards: req.shards,
                replication_factor: req.replication_factor,
                index: req.index.unwrap_or_default(),
            },
            None,
        )
        .await?;
    json(&serde_json::json!({
        "status": "created",
        "name": meta.name, "dim": meta.dim, "metric": meta.metric, "id_type": meta.id_type,
        "shards": meta.shards, "replication_factor": meta.replication_factor, "index": meta.index,
    }))
}

async fn delete(coord: &Coordinator, body: &[u8]) -> Result<Vec<u8>> {
    let req: requests::DeleteBody = fold(&requests::DELETE, body)?.into_typed("")?;
    let Some(id) = req.id else {
        let deleted = coord
            .delete(&DeleteRecords {
                namespace: req.namespace,
                ids: req.ids,
                filter: req.filter,
            })
            .await?;
        return json(&serde_json::json!({ "deleted": deleted }));
    };
    // Longbow 0.1's form: one id, answered with the bytes `deleted`.
    if req.ids.is_some() || req.filter.is_some() {
        return Err(ContractError::invalid(
            "id",
            "give either one id (Longbow 0.1's form) or ids / filter, not both",
        )
        .into());
    }
    let meta = coord.namespace_now(&req.namespace).await?;
    let parsed = IdValue::from_json("id", &id, meta.id_type)?;
    let deleted = coord
        .delete(&DeleteRecords {
            namespace: req.namespace,
            ids: Some(vec![parsed.to_json()]),
            filter: None,
        })
        .await?;
    if deleted == 0 {
        return Err(CoordinatorError::RecordNotFound(format!(
            "record {parsed} not found in namespace '{}'",
            meta.name
        )));
    }
    Ok(b"deleted".to_vec())
}

async fn vector_search(coord: &Coordinator, body: &[u8]) -> Result<Vec<Vec<u8>>> {
    let folded = fold(&requests::VECTOR_SEARCH, body)?;
    let longbow_shape = folded.used("dataset");
    let b: SearchBody = folded.into_typed("")?;
    let req = b.request()?;
    let prepared = coord.prepare_search_now(&req).await?;
    let (queries, per_query) = match (&b.vector, &b.vectors) {
        (Some(v), None) => (query_batch(v)?, false),
        (None, Some(vs)) => (query_rows(vs, "vectors")?, true),
        (Some(_), Some(_)) => {
            return Err(
                ContractError::invalid("vectors", "give vector or vectors, not both").into(),
            )
        }
        (None, None) => return Err(ContractError::invalid("vector", "is missing").into()),
    };
    let out = coord.search(&prepared, &queries, 0).await?;
    let parts = if per_query {
        longbow::split_by_query(&out, queries.num_rows())?
    } else {
        vec![out]
    };
    parts
        .iter()
        .map(|part| {
            if longbow_shape {
                ipc_bytes(&longbow::search_columns(part, req.include_vectors)?)
            } else {
                ipc_bytes(part)
            }
        })
        .collect()
}

async fn search_by_id(coord: &Coordinator, body: &[u8]) -> Result<Vec<u8>> {
    let folded = fold(&requests::SEARCH_BY_ID, body)?;
    let longbow_shape = folded.used("dataset");
    let b: SearchBody = folded.into_typed("")?;
    let mut req = b.request()?;
    let raw_id =
        b.id.clone()
            .ok_or_else(|| ContractError::invalid("id", "is missing"))?;
    let meta = coord.namespace_now(&req.namespace).await?;
    let id = IdValue::from_json("id", &raw_id, meta.id_type)?;
    let get = GetRecords {
        namespace: meta.name.clone(),
        ids: vec![id.to_json()],
        columns: Some(crate::search::Columns::List(vec![])),
        include_vectors: true,
    };
    let (_, found) = coord.get(&get).await?;
    let vector = found
        .iter()
        .find(|b| b.num_rows() > 0)
        .and_then(|b| b.column_by_name(columns::VECTOR).cloned())
        .ok_or_else(|| {
            CoordinatorError::RecordNotFound(format!(
                "record {id} not found in namespace '{}'",
                meta.name
            ))
        })?;
    let queries = RecordBatch::try_new(
        std::sync::Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            columns::VECTOR,
            vector.data_type().clone(),
            false,
        )])),
        vec![vector.slice(0, 1)],
    )
    .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
    let k = req.k;
    req.k = req.k.saturating_add(1);
    let prepared = coord.prepare_search_now(&req).await?;
    let out = coord.search(&prepared, &queries, 0).await?;
    let ids = longbow_common::ids::ids_from_array(out.column(1).as_ref(), meta.id_type)?;
    let keep: Vec<u32> = ids
        .iter()
        .enumerate()
        .filter(|(_, x)| **x != id)
        .map(|(i, _)| i as u32)
        .take(k)
        .collect();
    let out = arrow_select::take::take_record_batch(&out, &arrow_array::UInt32Array::from(keep))
        .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
    if longbow_shape {
        return json(&longbow::ids_and_scores(&out, meta.id_type)?);
    }
    ipc_bytes(&out)
}
