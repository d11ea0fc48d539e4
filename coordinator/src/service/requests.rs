//! The client API's JSON requests: one [`Shape`] for every action body, ticket and command,
//! and the typed bodies they deserialize into.
//!
//! Each shape lists exactly the keys its call understands, with the aliases of both dialects
//! (ours and Longbow 0.1's). Anything else is refused naming the key, so a key a client
//! believes does something never goes silently ignored. This module reads requests only; what
//! they do is the business of `actions` and `streams`.

use longbow_common::request::{Folded, Shape};
use longbow_common::{ContractError, IdType, IndexParams, Metric};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{CoordinatorError, Result};
use crate::search::{Columns, SearchRequest};
use crate::targets::Consistency;

const NAMESPACE_ALIASES: &[(&str, &str)] = &[("dataset", "namespace")];

/// `CreateNamespace`.
pub const CREATE_NAMESPACE: Shape = Shape {
    what: "CreateNamespace body",
    keys: &[
        "name",
        "dim",
        "metric",
        "id_type",
        "shards",
        "replication_factor",
        "index",
        "data_type",
        "overwrite",
    ],
    aliases: &[
        ("namespace", "name"),
        ("dataset", "name"),
        ("dims", "dim"),
        ("hnsw_config", "index"),
    ],
};

/// Bodies naming one namespace: `DeleteNamespace`, `GetNamespace`, `delete-dataset`,
/// `check_readiness` (where the name is optional).
pub const NAMESPACE_NAME: Shape = Shape {
    what: "body",
    keys: &["name"],
    aliases: &[("namespace", "name"), ("dataset", "name")],
};

/// `AddCoordinator` (`node_id`, `address`) and `RemoveCoordinator` (`node_id`).
pub const COORDINATOR: Shape = Shape {
    what: "body",
    keys: &["node_id", "address"],
    aliases: &[("id", "node_id"), ("addr", "address")],
};

/// `DecommissionNode`.
pub const SHARD_NODE: Shape = Shape {
    what: "body",
    keys: &["node_id"],
    aliases: &[("id", "node_id")],
};

/// Actions that take no keys: `ListNamespaces`, `GetTotalNamespaceCount`, `cluster-status`.
pub const NO_KEYS: Shape = Shape {
    what: "body (this action takes no keys)",
    keys: &[],
    aliases: &[],
};

/// `Delete` (ours: `ids` or `filter`; Longbow 0.1: one `id`).
pub const DELETE: Shape = Shape {
    what: "Delete body",
    keys: &["namespace", "ids", "filter", "id"],
    aliases: &[
        ("dataset", "namespace"),
        ("name", "namespace"),
        ("filters", "filter"),
    ],
};

/// The DoExchange search command.
pub const SEARCH_COMMAND: Shape = Shape {
    what: "DoExchange search command",
    keys: &[
        "op",
        "namespace",
        "k",
        "ef",
        "filter",
        "columns",
        "include_vectors",
        "allow_partial",
        "consistency",
    ],
    aliases: &[("dataset", "namespace"), ("filters", "filter")],
};

const SEARCH_KEYS: [&str; 14] = [
    "namespace",
    "vector",
    "k",
    "ef",
    "filter",
    "columns",
    "include_vectors",
    "allow_partial",
    "consistency",
    "local_only",
    "text_query",
    "alpha",
    "graph_alpha",
    "vector_format",
];
const SEARCH_ALIASES: &[(&str, &str)] = &[
    ("dataset", "namespace"),
    ("filters", "filter"),
    ("projection", "columns"),
];

/// The DoGet `search` ticket.
pub const SEARCH_TICKET: Shape = Shape {
    what: "search ticket",
    keys: &SEARCH_KEYS,
    aliases: SEARCH_ALIASES,
};

/// `VectorSearch` (the search ticket's keys, plus `vectors` for several queries).
pub const VECTOR_SEARCH: Shape = Shape {
    what: "VectorSearch body",
    keys: &[
        "namespace",
        "vector",
        "vectors",
        "k",
        "ef",
        "filter",
        "columns",
        "include_vectors",
        "allow_partial",
        "consistency",
        "local_only",
        "text_query",
        "alpha",
        "graph_alpha",
        "vector_format",
    ],
    aliases: SEARCH_ALIASES,
};

/// `VectorSearchByID`.
pub const SEARCH_BY_ID: Shape = Shape {
    what: "VectorSearchByID body",
    keys: &[
        "namespace",
        "id",
        "k",
        "ef",
        "filter",
        "columns",
        "include_vectors",
        "allow_partial",
        "consistency",
    ],
    aliases: &[("dataset", "namespace"), ("filters", "filter")],
};

/// A DoGet ticket's outer object.
pub const TICKET: Shape = Shape {
    what: "ticket",
    keys: &["search", "get", "scan", "name", "limit", "filters"],
    aliases: &[
        ("dataset", "name"),
        ("namespace", "name"),
        ("filter", "filters"),
    ],
};

/// The DoGet `get` ticket.
pub const GET_TICKET: Shape = Shape {
    what: "get ticket",
    keys: &["namespace", "ids", "columns", "include_vectors"],
    aliases: NAMESPACE_ALIASES,
};

/// The DoGet `scan` ticket.
pub const SCAN_TICKET: Shape = Shape {
    what: "scan ticket",
    keys: &["namespace", "filter", "columns", "include_vectors", "limit"],
    aliases: &[("dataset", "namespace"), ("filters", "filter")],
};

/// A DoPut descriptor's CMD form.
pub const PUT_COMMAND: Shape = Shape {
    what: "DoPut descriptor command",
    keys: &["namespace"],
    aliases: &[("dataset", "namespace"), ("name", "namespace")],
};

/// `RestoreSnapshot`.
pub const RESTORE_SNAPSHOT: Shape = Shape {
    what: "RestoreSnapshot body",
    keys: &["namespace", "snapshot", "target", "replace"],
    aliases: &[
        ("name", "namespace"),
        ("dataset", "namespace"),
        ("snapshot_id", "snapshot"),
    ],
};

/// `DeleteSnapshot` (the namespace is optional; when given, the snapshot must be of it).
pub const DELETE_SNAPSHOT: Shape = Shape {
    what: "DeleteSnapshot body",
    keys: &["snapshot", "namespace"],
    aliases: &[
        ("name", "namespace"),
        ("dataset", "namespace"),
        ("snapshot_id", "snapshot"),
    ],
};

/// Every shape, for the table-driven test of strictness.
pub const ALL: [&Shape; 15] = [
    &RESTORE_SNAPSHOT,
    &DELETE_SNAPSHOT,
    &CREATE_NAMESPACE,
    &NAMESPACE_NAME,
    &NO_KEYS,
    &DELETE,
    &SEARCH_COMMAND,
    &SEARCH_TICKET,
    &VECTOR_SEARCH,
    &SEARCH_BY_ID,
    &TICKET,
    &GET_TICKET,
    &SCAN_TICKET,
    &PUT_COMMAND,
    &crate::service::flights::CRITERIA,
];

fn default_k() -> usize {
    10
}

/// Every key any search form may carry; the form's [`Shape`] decides which it accepts.
#[derive(Debug, Clone, Deserialize)]
pub struct SearchBody {
    /// Namespace.
    pub namespace: String,
    /// Neighbours per query.
    #[serde(default = "default_k")]
    pub k: usize,
    /// Beam width.
    #[serde(default)]
    pub ef: Option<usize>,
    /// Filter.
    #[serde(default)]
    pub filter: Option<Value>,
    /// Payload columns: a list, or `"*"` for all.
    #[serde(default)]
    pub columns: Option<Value>,
    /// Return vectors.
    #[serde(default)]
    pub include_vectors: bool,
    /// Answer from the shards that respond.
    #[serde(default)]
    pub allow_partial: bool,
    /// Which replicas may answer: `"any"` in-sync replica (default) or the `"primary"`.
    #[serde(default)]
    pub consistency: Option<Value>,
    /// One query.
    #[serde(default)]
    pub vector: Option<Vec<f32>>,
    /// Several queries (`VectorSearch`).
    #[serde(default)]
    pub vectors: Option<Vec<Vec<f32>>>,
    /// A stored record's id (`VectorSearchByID`).
    #[serde(default)]
    pub id: Option<Value>,
    /// Always `"search"` (DoExchange command).
    #[serde(default)]
    pub op: Option<String>,
    /// Longbow 0.1: search only the answering node. A coordinator answers from every shard
    /// of the namespace either way (documented no-op).
    #[serde(default)]
    pub local_only: Option<bool>,
    /// Longbow 0.1 hybrid keyword search: refused (UNIMPLEMENTED).
    #[serde(default)]
    pub text_query: Option<Value>,
    /// Longbow 0.1 hybrid weight: refused (UNIMPLEMENTED).
    #[serde(default)]
    pub alpha: Option<Value>,
    /// Longbow 0.1 graph re-ranking weight: refused (UNIMPLEMENTED).
    #[serde(default)]
    pub graph_alpha: Option<Value>,
    /// Longbow 0.1 encoding of `vector`: only `float32` (JSON numbers) exists.
    #[serde(default)]
    pub vector_format: Option<String>,
}

impl SearchBody {
    /// The search request, refusing what this server cannot do.
    pub fn request(&self) -> Result<SearchRequest> {
        if let Some(op) = &self.op {
            if op != "search" {
                return Err(ContractError::invalid(
                    "op",
                    format!(
                        "expected \"search\", got {}",
                        longbow_common::error::quote(op)
                    ),
                )
                .into());
            }
        }
        for (key, v) in [
            ("text_query", &self.text_query),
            ("alpha", &self.alpha),
            ("graph_alpha", &self.graph_alpha),
        ] {
            if v.as_ref().is_some_and(|v| !v.is_null()) {
                return Err(CoordinatorError::Unimplemented(format!(
                    "{key}: hybrid keyword and graph search is not supported by this server; \
                     send a dense vector search without text_query, alpha and graph_alpha"
                )));
            }
        }
        if let Some(f) = &self.vector_format {
            if !f.eq_ignore_ascii_case("float32") {
                return Err(ContractError::invalid(
                    "vector_format",
                    format!(
                        "only \"float32\" (a JSON list of numbers) is supported, got {}",
                        longbow_common::error::quote(f)
                    ),
                )
                .into());
            }
        }
        Ok(SearchRequest {
            namespace: self.namespace.clone(),
            k: self.k,
            ef: self.ef,
            filter: self.filter.clone(),
            columns: Columns::from_json("columns", self.columns.as_ref())?,
            include_vectors: self.include_vectors,
            allow_partial: self.allow_partial,
            consistency: Consistency::from_json("consistency", self.consistency.as_ref())?,
        })
    }
}

/// `CreateNamespace`.
#[derive(Debug, Clone, Deserialize)]
pub struct CreateNamespaceBody {
    /// Name.
    pub name: String,
    /// Dimension; absent declares the namespace (its first write fixes it).
    #[serde(default)]
    pub dim: Option<usize>,
    /// Metric.
    #[serde(default)]
    pub metric: Option<Metric>,
    /// Id type.
    #[serde(default)]
    pub id_type: Option<IdType>,
    /// Shards.
    #[serde(default)]
    pub shards: Option<u32>,
    /// Replicas per shard.
    #[serde(default)]
    pub replication_factor: Option<u32>,
    /// HNSW parameters.
    #[serde(default)]
    pub index: Option<IndexParams>,
    /// Longbow 0.1 storage type: only `float32`.
    #[serde(default)]
    pub data_type: Option<String>,
    /// Longbow 0.1: replace an existing namespace of that name (its data is deleted).
    #[serde(default)]
    pub overwrite: bool,
}

/// `AddCoordinator` / `RemoveCoordinator`.
#[derive(Debug, Clone, Deserialize)]
pub struct CoordinatorBody {
    /// Raft id of the coordinator.
    pub node_id: u64,
    /// Its internal address (`AddCoordinator` only).
    pub address: Option<String>,
}

/// `DecommissionNode`.
#[derive(Debug, Clone, Deserialize)]
pub struct ShardNodeBody {
    /// Id of the shard node (as `cluster-status` lists it).
    pub node_id: u64,
}

/// Bodies naming one namespace.
#[derive(Debug, Clone, Deserialize)]
pub struct NameBody {
    /// Namespace.
    pub name: String,
}

/// `RestoreSnapshot`.
#[derive(Debug, Clone, Deserialize)]
pub struct RestoreBody {
    /// The namespace the snapshot is of.
    pub namespace: String,
    /// Snapshot id.
    pub snapshot: String,
    /// Namespace to restore into (default: `namespace`).
    #[serde(default)]
    pub target: Option<String>,
    /// Replace the target namespace if it exists.
    #[serde(default)]
    pub replace: bool,
}

/// `DeleteSnapshot`.
#[derive(Debug, Clone, Deserialize)]
pub struct DeleteSnapshotBody {
    /// Snapshot id.
    pub snapshot: String,
    /// The namespace it must be of.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `check_readiness` (no name: every namespace).
#[derive(Debug, Clone, Deserialize)]
pub struct ReadinessBody {
    /// Namespace.
    #[serde(default)]
    pub name: Option<String>,
}

/// `Delete`.
#[derive(Debug, Clone, Deserialize)]
pub struct DeleteBody {
    /// Namespace.
    pub namespace: String,
    /// Ids.
    #[serde(default)]
    pub ids: Option<Vec<Value>>,
    /// One id (Longbow 0.1; a string for integer namespaces too).
    #[serde(default)]
    pub id: Option<Value>,
    /// Filter.
    #[serde(default)]
    pub filter: Option<Value>,
}

/// The DoGet `get` ticket.
#[derive(Debug, Clone, Deserialize)]
pub struct GetBody {
    /// Namespace.
    pub namespace: String,
    /// Ids.
    pub ids: Vec<Value>,
    /// Payload columns (all when absent, or `"*"`).
    #[serde(default)]
    pub columns: Option<Value>,
    /// Return vectors.
    #[serde(default = "yes")]
    pub include_vectors: bool,
}

/// The DoGet `scan` ticket.
#[derive(Debug, Clone, Deserialize)]
pub struct ScanBody {
    /// Namespace.
    pub namespace: String,
    /// Filter.
    #[serde(default)]
    pub filter: Option<Value>,
    /// Payload columns (all when absent, or `"*"`).
    #[serde(default)]
    pub columns: Option<Value>,
    /// Return vectors.
    #[serde(default)]
    pub include_vectors: bool,
    /// At most this many rows.
    #[serde(default)]
    pub limit: Option<usize>,
}

fn yes() -> bool {
    true
}

/// Read an action body through its shape.
pub fn fold(shape: &Shape, body: &[u8]) -> Result<Folded> {
    Ok(shape.fold_bytes("", body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_lists_each_key_once_and_aliases_name_real_keys() {
        for shape in ALL {
            for (i, k) in shape.keys.iter().enumerate() {
                assert!(!shape.keys[..i].contains(k), "{}: {k} twice", shape.what);
            }
            for (alias, canon) in shape.aliases {
                assert!(shape.keys.contains(canon), "{}: {alias}", shape.what);
                assert!(!shape.keys.contains(alias), "{}: {alias}", shape.what);
            }
        }
    }
}
