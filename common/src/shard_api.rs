//! The shard node's Flight API (internal port 4000): what a coordinator, or a test, sends to a
//! shard and what it gets back. Both sides use these types, so they cannot drift apart.
//!
//! | call | shape |
//! |---|---|
//! | DoAction `CreateReplica` | [`CreateReplicaRequest`] → [`ReplicaInfo`] |
//! | DoAction `DropReplica` | [`ReplicaKey`] → `{"dropped": true}` |
//! | DoAction `ReplicaStats` | [`ReplicaKey`] → [`ReplicaStats`] |
//! | DoAction `ListReplicas` | `{}` → `[ReplicaInfo]` |
//! | DoAction `DeleteRows` | [`DeleteRequest`] → [`DeleteResponse`] |
//! | DoAction `Checkpoint` | [`ReplicaKey`] → [`CheckpointReply`] |
//! | DoAction `CreateSnapshot` | [`SnapshotRequest`] → [`SnapshotPart`] |
//! | DoAction `RestoreReplica` | [`RestoreReplicaRequest`] → [`ReplicaInfo`] |
//! | DoAction `DeleteSnapshot` | [`DeleteSnapshotRequest`] → `{"deleted": bool}` |
//! | DoAction `ConfigureReplica`, `Replicate`, `ProbeReplica`, `TruncateReplica` | see [`crate::replication_api`] |
//! | DoPut, descriptor CMD [`WriteCommand`] | batches of `id`, `vector`, payload → one `PutResult` per batch with [`WriteAck`] JSON, sent once the batch is durable |
//! | DoExchange, descriptor CMD [`SearchCommand`] | batches of query `vector`s → result batches (`query_id`, `id`, `distance`, `score`, columns) sorted by `(query_id, distance)` |
//! | DoGet, ticket [`ShardTicket`] | `get` by ids or `scan` with filter → record batches |

use arrow_flight::{IpcMessage, SchemaAsIpc};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::Schema;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::{ContractError, IdType, IndexParams, Metric};

/// Action creating a replica.
pub const ACTION_CREATE_REPLICA: &str = "CreateReplica";
/// Action dropping a replica and its files.
pub const ACTION_DROP_REPLICA: &str = "DropReplica";
/// Action returning one replica's statistics.
pub const ACTION_REPLICA_STATS: &str = "ReplicaStats";
/// Action listing the replicas this node hosts.
pub const ACTION_LIST_REPLICAS: &str = "ListReplicas";
/// Action deleting rows by ids or filter.
pub const ACTION_DELETE_ROWS: &str = "DeleteRows";

/// Action sealing and checkpointing one replica now.
pub const ACTION_CHECKPOINT: &str = "Checkpoint";
/// Action snapshotting one replica (a checkpoint, then hard links of its files).
pub const ACTION_CREATE_SNAPSHOT: &str = "CreateSnapshot";
/// Action creating a replica from a snapshot held by this node.
pub const ACTION_RESTORE_REPLICA: &str = "RestoreReplica";
/// Action deleting every part of a snapshot held by this node.
pub const ACTION_DELETE_SNAPSHOT: &str = "DeleteSnapshot";

/// Every action with its description, as ListActions reports them.
pub const ACTIONS: [(&str, &str); 15] = [
    (
        crate::replication_api::ACTION_CONFIGURE_REPLICA,
        "Give a replica its place in its replica set: {namespace, shard, epoch, node, role, primary, members, in_sync, coordinators}",
    ),
    (
        crate::replication_api::ACTION_REPLICATE,
        "Log entries from the primary of an epoch (binary: header length, header JSON, WAL entries) -> {lsn, appended}",
    ),
    (
        crate::replication_api::ACTION_PROBE_REPLICA,
        "Where this backup's log ends, for the primary of an epoch: {namespace, shard, epoch} -> {lsn, last_epoch, checkpoint_lsn}",
    ),
    (
        crate::replication_api::ACTION_TRUNCATE_REPLICA,
        "Cut this backup's log back for the primary of an epoch: {namespace, shard, epoch, after_lsn}",
    ),
    (
        crate::replication_api::ACTION_TRANSFER_FILE,
        "A piece of a segment file for a backup being rebuilt (binary: header length, header JSON {namespace, shard, epoch, primary, transfer, file, offset}, bytes) -> {len}",
    ),
    (
        crate::replication_api::ACTION_INSTALL_TRANSFER,
        "Check the transferred files and make them this backup's state: {namespace, shard, epoch, primary, transfer, manifest, epochs} -> {lsn, last_epoch, checkpoint_lsn}",
    ),
    (
        ACTION_CREATE_REPLICA,
        "Create a replica: {namespace, shard, dim, metric, id_type, index, payload_schema}",
    ),
    (
        ACTION_DROP_REPLICA,
        "Drop a replica and delete its files: {namespace, shard}",
    ),
    (
        ACTION_REPLICA_STATS,
        "Statistics of one replica: {namespace, shard}",
    ),
    (
        ACTION_LIST_REPLICAS,
        "List the replicas hosted by this node",
    ),
    (
        ACTION_DELETE_ROWS,
        "Delete rows by ids or filter: {namespace, shard, ids | filter}",
    ),
    (
        ACTION_CHECKPOINT,
        "Seal and checkpoint one replica now: {namespace, shard} -> {lsn, written}",
    ),
    (
        ACTION_CREATE_SNAPSHOT,
        "Snapshot one replica at a checkpoint: {namespace, shard, snapshot} -> {shard, lsn, rows, disk_bytes}",
    ),
    (
        ACTION_RESTORE_REPLICA,
        "Create a replica from a snapshot part on this node: {snapshot, shard, namespace}",
    ),
    (
        ACTION_DELETE_SNAPSHOT,
        "Delete every part of a snapshot on this node: {snapshot} -> {deleted}",
    ),
];

/// Result of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointReply {
    /// The checkpoint LSN now durable.
    pub lsn: u64,
    /// Whether a new manifest was written (false: nothing changed since the last one).
    pub written: bool,
}

/// Snapshot one replica under the id `snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// Namespace name.
    pub namespace: String,
    /// Shard number.
    pub shard: u32,
    /// Snapshot id (chosen by the coordinator; a plain file name).
    pub snapshot: String,
}

/// One shard's part of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPart {
    /// Shard number.
    pub shard: u32,
    /// Checkpoint LSN the part holds.
    pub lsn: u64,
    /// Live rows in it.
    pub rows: u64,
    /// Bytes of its files.
    pub disk_bytes: u64,
}

/// Create replica `namespace`/`shard` from part `shard` of snapshot `snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreReplicaRequest {
    /// Snapshot id.
    pub snapshot: String,
    /// Shard number (the same in the snapshot and the new replica).
    pub shard: u32,
    /// Namespace the new replica belongs to.
    pub namespace: String,
    /// That namespace's incarnation ([`ReplicaInfo::incarnation`]).
    #[serde(default)]
    pub incarnation: u64,
}

/// Delete snapshot `snapshot` from this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteSnapshotRequest {
    /// Snapshot id.
    pub snapshot: String,
}

/// Names one replica: a shard of a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReplicaKey {
    /// Namespace name.
    pub namespace: String,
    /// Shard number within the namespace.
    pub shard: u32,
}

impl std::fmt::Display for ReplicaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.shard)
    }
}

/// Everything needed to create a replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateReplicaRequest {
    /// Namespace name.
    pub namespace: String,
    /// Shard number.
    pub shard: u32,
    /// Vector dimension.
    pub dim: usize,
    /// Distance metric.
    #[serde(default)]
    pub metric: Metric,
    /// Id type.
    #[serde(default)]
    pub id_type: IdType,
    /// HNSW parameters.
    #[serde(default)]
    pub index: IndexParams,
    /// Known payload columns, as a base64 Arrow IPC schema message (see [`encode_schema`]).
    /// Columns may be added later by writes (additive evolution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_schema: Option<String>,
    /// Which namespace of this name the replica belongs to (see
    /// [`ReplicaInfo::incarnation`]): a replica of an older incarnation found under the same
    /// key is dropped and replaced; one of a newer incarnation is kept and the request refused.
    #[serde(default)]
    pub incarnation: u64,
}

/// What a replica is (returned by create and list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    /// Namespace name.
    pub namespace: String,
    /// Shard number.
    pub shard: u32,
    /// Vector dimension.
    pub dim: usize,
    /// Distance metric.
    pub metric: Metric,
    /// Id type.
    pub id_type: IdType,
    /// HNSW parameters.
    pub index: IndexParams,
    /// Which namespace of this name it belongs to: a number the coordinator chose when the
    /// namespace was created, so a replica left behind by a deleted namespace is never taken
    /// for one of a new namespace of the same name (0: created before incarnations).
    #[serde(default)]
    pub incarnation: u64,
}

/// Statistics of one replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStats {
    /// What the replica is.
    #[serde(flatten)]
    pub info: ReplicaInfo,
    /// Live rows (each id counted once).
    pub count: u64,
    /// Row versions that are deleted or replaced and not yet compacted away.
    pub deleted: u64,
    /// Highest LSN that is durable and applied.
    pub lsn: u64,
    /// Rows stored but not yet linked into the HNSW graph (searched exactly meanwhile).
    pub indexing_lag: u64,
    /// In-memory segments.
    pub segments: u64,
    /// Approximate memory held by vectors, graph, ids and payload.
    pub memory_bytes: u64,
    /// Bytes on disk (WAL and metadata).
    pub disk_bytes: u64,
    /// Payload columns as `name: type` strings.
    pub payload_columns: Vec<String>,
}

/// Delete rows by ids, by filter, or both (rows matching either are deleted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteRequest {
    /// Namespace name.
    pub namespace: String,
    /// Shard number.
    pub shard: u32,
    /// Ids to delete (numbers or strings, per the namespace's id type).
    #[serde(default)]
    pub ids: Option<Vec<serde_json::Value>>,
    /// Filter selecting rows to delete (see [`crate::Filter`]).
    #[serde(default)]
    pub filter: Option<serde_json::Value>,
    /// Epoch of the replica set the sender knows (absent for a stand-alone replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// Result of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResponse {
    /// Rows that existed and are now deleted.
    pub deleted: u64,
    /// LSN of the delete (0 when nothing matched and nothing was logged).
    pub lsn: u64,
}

/// DoPut descriptor command for a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteCommand {
    /// Always `"write"`.
    pub op: String,
    /// Namespace name.
    pub namespace: String,
    /// Shard number.
    pub shard: u32,
    /// Epoch of the replica set the sender knows (absent for a stand-alone replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// Acknowledgement of one written batch, sent once it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteAck {
    /// Rows in the batch.
    pub rows: u64,
    /// LSN assigned to the batch.
    pub lsn: u64,
}

/// DoExchange descriptor command for a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchCommand {
    /// Always `"search"`.
    pub op: String,
    /// Namespace name.
    pub namespace: String,
    /// Shard number.
    pub shard: u32,
    /// Neighbours per query.
    pub k: usize,
    /// Candidate list size; the replica's `ef_search` when absent.
    #[serde(default)]
    pub ef: Option<usize>,
    /// Filter (see [`crate::Filter`]).
    #[serde(default)]
    pub filter: Option<serde_json::Value>,
    /// Payload columns to return.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Return each hit's vector too.
    #[serde(default)]
    pub include_vectors: bool,
    /// Answer an all-null column for requested columns this replica has never seen (a
    /// coordinator sets this: other shards of the namespace may have them).
    #[serde(default)]
    pub allow_missing_columns: bool,
}

/// DoGet tickets understood by a shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardTicket {
    /// Fetch records by id (missing ids are skipped).
    Get(GetRequest),
    /// Stream records matching a filter.
    Scan(ScanRequest),
}

/// Fetch records by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetRequest {
    /// Namespace name.
    pub namespace: String,
    /// Shard number.
    pub shard: u32,
    /// Ids to fetch.
    pub ids: Vec<serde_json::Value>,
    /// Payload columns to return; all when absent.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Return vectors too.
    #[serde(default = "default_true")]
    pub include_vectors: bool,
    /// All-null columns for names this replica has never seen.
    #[serde(default)]
    pub allow_missing_columns: bool,
}

/// Stream records matching a filter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanRequest {
    /// Namespace name.
    pub namespace: String,
    /// Shard number.
    pub shard: u32,
    /// Filter; every live row when absent.
    #[serde(default)]
    pub filter: Option<serde_json::Value>,
    /// Payload columns to return; all when absent.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Return vectors too.
    #[serde(default)]
    pub include_vectors: bool,
    /// At most this many rows.
    #[serde(default)]
    pub limit: Option<usize>,
    /// All-null columns for names this replica has never seen.
    #[serde(default)]
    pub allow_missing_columns: bool,
}

fn default_true() -> bool {
    true
}

/// Parse a JSON request body, naming `what` in the error.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    what: &str,
    body: &[u8],
) -> Result<T, ContractError> {
    serde_json::from_slice(body).map_err(|e| ContractError::invalid(what, format!("{e}")))
}

/// Encode an Arrow schema as base64 IPC (the `payload_schema` field).
pub fn encode_schema(schema: &Schema) -> Result<String, ContractError> {
    let opts = IpcWriteOptions::default();
    let msg = IpcMessage::try_from(SchemaAsIpc::new(schema, &opts))
        .map_err(|e| ContractError::invalid("payload_schema", e))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(&msg.0))
}

/// Decode the `payload_schema` field.
pub fn decode_schema(encoded: &str) -> Result<Schema, ContractError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| ContractError::invalid("payload_schema", format!("not base64: {e}")))?;
    Schema::try_from(IpcMessage(bytes.into()))
        .map_err(|e| ContractError::invalid("payload_schema", format!("not an Arrow schema: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::{DataType, Field};

    #[test]
    fn schema_round_trips_through_base64_ipc() {
        let schema = Schema::new(vec![
            Field::new("price", DataType::Float64, true),
            Field::new("tag", DataType::Utf8, true),
        ]);
        let enc = encode_schema(&schema).expect("encode");
        assert_eq!(decode_schema(&enc).expect("decode"), schema);
        assert!(decode_schema("!!").is_err());
    }

    #[test]
    fn ticket_json_shape() {
        let t: ShardTicket =
            serde_json::from_str(r#"{"get": {"namespace": "a", "shard": 1, "ids": [1, 2]}}"#)
                .expect("valid");
        assert!(matches!(t, ShardTicket::Get(ref g) if g.include_vectors && g.ids.len() == 2));
    }
}
