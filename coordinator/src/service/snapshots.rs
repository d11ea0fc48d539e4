//! The snapshot and checkpoint actions of the client API: read the body through its shape,
//! call the coordinator, answer JSON. What a snapshot is lives in `crate::snapshots`.

use super::actions::json;
use super::requests::{self, fold};
use crate::error::Result;
use crate::node::Coordinator;
use crate::snapshots::{describe, RestoreRequest};

/// Run one of `Snapshot`, `ListSnapshots`, `RestoreSnapshot`, `DeleteSnapshot`,
/// `ForceSnapshot` and `Checkpoint`.
pub(super) async fn handle(coord: &Coordinator, kind: &str, body: &[u8]) -> Result<Vec<u8>> {
    match kind {
        "Snapshot" => {
            let req: requests::NameBody = fold(&requests::NAMESPACE_NAME, body)?.into_typed("")?;
            json(&describe(&coord.snapshot(&req.name).await?))
        }
        "ListSnapshots" => {
            let req: requests::ReadinessBody =
                fold(&requests::NAMESPACE_NAME, body)?.into_typed("")?;
            coord.sweep_snapshots().await;
            let list: Vec<_> = coord
                .list_snapshots(req.name.as_deref())
                .iter()
                .map(describe)
                .collect();
            json(&serde_json::json!({ "count": list.len(), "snapshots": list }))
        }
        "RestoreSnapshot" => {
            let req: requests::RestoreBody =
                fold(&requests::RESTORE_SNAPSHOT, body)?.into_typed("")?;
            let snap = coord.find_snapshot(&req.snapshot, Some(&req.namespace))?;
            let meta = coord
                .restore_snapshot(&RestoreRequest {
                    namespace: req.namespace,
                    snapshot: req.snapshot,
                    target: req.target,
                    replace: req.replace,
                })
                .await?;
            json(&serde_json::json!({
                "restored": meta.name,
                "snapshot": snap.id,
                "rows": snap.parts.iter().map(|p| p.rows).sum::<u64>(),
            }))
        }
        "DeleteSnapshot" => {
            let req: requests::DeleteSnapshotBody =
                fold(&requests::DELETE_SNAPSHOT, body)?.into_typed("")?;
            coord
                .delete_snapshot(&req.snapshot, req.namespace.as_deref())
                .await?;
            json(&serde_json::json!({ "deleted": req.snapshot }))
        }
        "ForceSnapshot" => {
            fold(&requests::NO_KEYS, body)?;
            let names = coord.namespace_names();
            let mut ids = Vec::with_capacity(names.len());
            for name in names {
                ids.push(coord.snapshot(&name).await?.id);
            }
            json(&serde_json::json!({ "status": "snapshot created", "snapshots": ids }))
        }
        "Checkpoint" => {
            let req: requests::NameBody = fold(&requests::NAMESPACE_NAME, body)?.into_typed("")?;
            let shards: Vec<_> = coord
                .checkpoint(&req.name)
                .await?
                .into_iter()
                .map(|(shard, r)| serde_json::json!({"shard": shard, "lsn": r.lsn, "written": r.written}))
                .collect();
            json(&serde_json::json!({ "namespace": req.name, "shards": shards }))
        }
        other => Err(crate::error::CoordinatorError::Internal(format!(
            "{other} is not a snapshot action"
        ))),
    }
}
