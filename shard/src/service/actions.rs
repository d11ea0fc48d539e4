//! DoAction handlers: replica lifecycle, stats and deletes. JSON in, JSON out.

use arrow_flight::Action;
use longbow_common::replication_api::{
    decode_framed, decode_replicate, InstallTransfer, ProbeRequest, ReplicaConfig, ReplicateReply,
    TransferFileHeader, TruncateRequest, ACTION_CONFIGURE_REPLICA, ACTION_INSTALL_TRANSFER,
    ACTION_PROBE_REPLICA, ACTION_REPLICATE, ACTION_TRANSFER_FILE, ACTION_TRUNCATE_REPLICA,
};
use longbow_common::shard_api::{
    parse_json, CheckpointReply, CreateReplicaRequest, DeleteRequest, DeleteResponse,
    DeleteSnapshotRequest, ReplicaKey, RestoreReplicaRequest, SnapshotRequest, ACTIONS,
    ACTION_CHECKPOINT, ACTION_CREATE_REPLICA, ACTION_CREATE_SNAPSHOT, ACTION_DELETE_ROWS,
    ACTION_DELETE_SNAPSHOT, ACTION_DROP_REPLICA, ACTION_LIST_REPLICAS, ACTION_REPLICA_STATS,
    ACTION_RESTORE_REPLICA,
};
use longbow_common::{ErrorExt, Filter, IdValue};
use tonic::Status;

use super::ShardService;
use crate::error::ShardError;

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(v).map_err(|e| Status::internal(format!("encoding reply: {e}")))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ShardError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("task failed: {e}")))?
        .map_err(|e| e.to_status())
}

/// Run one action and return its JSON reply.
pub(super) async fn handle(svc: &ShardService, action: Action) -> Result<Vec<u8>, Status> {
    let body = action.body.as_ref();
    match action.r#type.as_str() {
        ACTION_CREATE_REPLICA => {
            let req: CreateReplicaRequest =
                parse_json("CreateReplica body", body).map_err(|e| e.to_status())?;
            let node = svc.node.clone();
            let replica = blocking(move || node.create_replica(req)).await?;
            to_json(replica.info())
        }
        ACTION_DROP_REPLICA => {
            let key: ReplicaKey =
                parse_json("DropReplica body", body).map_err(|e| e.to_status())?;
            let node = svc.node.clone();
            blocking(move || node.drop_replica(&key)).await?;
            to_json(&serde_json::json!({"dropped": true}))
        }
        ACTION_REPLICA_STATS => {
            let key: ReplicaKey =
                parse_json("ReplicaStats body", body).map_err(|e| e.to_status())?;
            to_json(&svc.replica(&key.namespace, key.shard)?.stats())
        }
        ACTION_LIST_REPLICAS => {
            let infos: Vec<_> = svc
                .node
                .replicas()
                .iter()
                .map(|r| r.info().clone())
                .collect();
            to_json(&infos)
        }
        ACTION_DELETE_ROWS => {
            let req: DeleteRequest =
                parse_json("DeleteRows body", body).map_err(|e| e.to_status())?;
            let replica = svc.replica(&req.namespace, req.shard)?;
            let id_type = replica.info().id_type;
            let ids = req
                .ids
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, v)| IdValue::from_json(&format!("ids[{i}]"), v, id_type))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_status())?;
            let filter = match &req.filter {
                Some(f) => Some(Filter::parse("filter", f).map_err(|e| e.to_status())?),
                None => None,
            };
            if ids.is_empty() && filter.is_none() {
                return Err(Status::invalid_argument(
                    "invalid DeleteRows body: give ids or filter",
                ));
            }
            let (lsn, deleted) = replica.delete(ids, filter, req.epoch).await?;
            to_json(&DeleteResponse { deleted, lsn })
        }
        ACTION_CHECKPOINT => {
            let key: ReplicaKey = parse_json("Checkpoint body", body).map_err(|e| e.to_status())?;
            let replica = svc.replica(&key.namespace, key.shard)?;
            let outcome = blocking(move || replica.checkpoint()).await?;
            use crate::replica::CheckpointOutcome;
            let (lsn, written) = match outcome {
                CheckpointOutcome::Written(lsn) => (lsn, true),
                CheckpointOutcome::Unchanged => (
                    svc.replica(&key.namespace, key.shard)?.checkpoint_lsn(),
                    false,
                ),
                CheckpointOutcome::Stopped => {
                    return Err(Status::unavailable("the shard node is shutting down"))
                }
            };
            to_json(&CheckpointReply { lsn, written })
        }
        ACTION_CREATE_SNAPSHOT => {
            let req: SnapshotRequest =
                parse_json("CreateSnapshot body", body).map_err(|e| e.to_status())?;
            let node = svc.node.clone();
            to_json(&blocking(move || node.create_snapshot(&req)).await?)
        }
        ACTION_RESTORE_REPLICA => {
            let req: RestoreReplicaRequest =
                parse_json("RestoreReplica body", body).map_err(|e| e.to_status())?;
            let node = svc.node.clone();
            let replica = blocking(move || node.restore_replica(&req)).await?;
            to_json(replica.info())
        }
        ACTION_CONFIGURE_REPLICA => {
            let cfg: ReplicaConfig =
                parse_json("ConfigureReplica body", body).map_err(|e| e.to_status())?;
            let node = svc.node.clone();
            to_json(&blocking(move || node.configure_replica(&cfg)).await?)
        }
        ACTION_REPLICATE => replicate(svc, body).await,
        ACTION_PROBE_REPLICA => {
            let req: ProbeRequest =
                parse_json("ProbeReplica body", body).map_err(|e| e.to_status())?;
            let node = svc.node.clone();
            let key = ReplicaKey {
                namespace: req.namespace,
                shard: req.shard,
            };
            to_json(&blocking(move || node.probe_replica(&key, req.epoch)).await?)
        }
        ACTION_TRUNCATE_REPLICA => {
            let req: TruncateRequest =
                parse_json("TruncateReplica body", body).map_err(|e| e.to_status())?;
            let node = svc.node.clone();
            to_json(&blocking(move || node.truncate_replica(&req)).await?)
        }
        ACTION_TRANSFER_FILE => {
            let (header, bytes): (TransferFileHeader, &[u8]) =
                decode_framed("TransferFile body", body).map_err(|e| e.to_status())?;
            let (node, bytes) = (svc.node.clone(), bytes.to_vec());
            to_json(&blocking(move || node.receive_transfer_file(&header, &bytes)).await?)
        }
        ACTION_INSTALL_TRANSFER => {
            let req: InstallTransfer =
                parse_json("InstallTransfer body", body).map_err(|e| e.to_status())?;
            let node = svc.node.clone();
            to_json(&blocking(move || node.install_transfer(&req)).await?)
        }
        ACTION_DELETE_SNAPSHOT => {
            let req: DeleteSnapshotRequest =
                parse_json("DeleteSnapshot body", body).map_err(|e| e.to_status())?;
            let node = svc.node.clone();
            let deleted = blocking(move || node.delete_snapshot(&req.snapshot)).await?;
            to_json(&serde_json::json!({ "deleted": deleted }))
        }
        other => {
            let known: Vec<&str> = ACTIONS.iter().map(|(n, _)| *n).collect();
            Err(Status::unimplemented(format!(
                "unknown action '{other}'; this shard node knows {}",
                known.join(", ")
            )))
        }
    }
}

/// Entries from a primary: checked whole (header, then every entry's CRC) before the replica
/// sees them. Entries that do not follow this log are not an error: the reply says where the
/// log ends so the primary can catch it up.
async fn replicate(svc: &ShardService, body: &[u8]) -> Result<Vec<u8>, Status> {
    let (header, bytes) = decode_replicate(body).map_err(|e| e.to_status())?;
    let (entries, end) = crate::wal::entry::scan(bytes, 0);
    if end != crate::wal::entry::ScanEnd::Clean {
        return Err(Status::invalid_argument(format!(
            "invalid Replicate body: its entries are damaged ({end:?})"
        )));
    }
    let replica = svc.replica(&header.namespace, header.shard)?;
    match replica
        .replicate(header.epoch, header.starts, entries)
        .await
    {
        Ok(lsn) => to_json(&ReplicateReply {
            lsn,
            appended: true,
        }),
        Err(ShardError::LogGap { lsn, .. }) => to_json(&ReplicateReply {
            lsn,
            appended: false,
        }),
        Err(e) => Err(e.to_status()),
    }
}
