//! Snapshots through the client API of a real `longbow local`: a snapshot restores exactly
//! its rows (into a new namespace, or over the old one with `replace`) whatever was written
//! and deleted after it, survives restarts, and is gone once deleted; `kill -9` in the
//! middle of a snapshot leaves no broken snapshot behind.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::json;
use tonic::Code;

const DIM: usize = 4;

fn batch(lo: u64, hi: u64, version: f32) -> arrow_array::RecordBatch {
    let ids: Vec<u64> = (lo..hi).collect();
    let data: Vec<f32> = ids
        .iter()
        .flat_map(|&i| [i as f32, version, 1.0, 1.0])
        .collect();
    rows(&ids, &data, DIM)
}

/// Every row of `ns` among ids `0..hi`: id → the version its vector carries.
async fn versions(local: &Local, ns: &str, hi: u64) -> BTreeMap<u64, f32> {
    stored_vectors(local, ns, hi)
        .await
        .into_iter()
        .map(|(id, v)| (id, v[1]))
        .collect()
}

#[test]
fn a_snapshot_restores_exactly_its_rows_and_survives_restarts_until_deleted() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let rt = runtime();
    let local = Local::start(&dir, 2);
    let (id, at_snapshot) = rt.block_on(async {
        let mut meta = local.meta_client().await;
        let mut data = local.data_client().await;
        action(
            &mut meta,
            "CreateNamespace",
            json!({"name": "docs", "dim": DIM, "metric": "l2", "shards": 2}),
        )
        .await
        .expect("create");
        put(&mut data, "docs", vec![batch(0, 1_000, 1.0)])
            .await
            .expect("put");
        let snap = action(&mut meta, "Snapshot", json!({"namespace": "docs"}))
            .await
            .expect("snapshot");
        assert_eq!(snap["rows"], 1_000);
        assert_eq!(snap["shards"].as_array().map(Vec::len), Some(2));
        let id = snap["snapshot"].as_str().expect("id").to_string();
        let at_snapshot = versions(&local, "docs", 2_000).await;
        // After the snapshot: new rows, replaced rows, deleted rows.
        put(&mut data, "docs", vec![batch(500, 1_500, 2.0)])
            .await
            .expect("put");
        action(
            &mut meta,
            "Delete",
            json!({"namespace": "docs", "ids": (0..100).collect::<Vec<u64>>()}),
        )
        .await
        .expect("delete");
        assert_ne!(versions(&local, "docs", 2_000).await, at_snapshot);
        let listed = action(&mut meta, "ListSnapshots", json!({"namespace": "docs"}))
            .await
            .expect("list");
        assert_eq!(listed["snapshots"][0]["snapshot"], id.as_str());
        // Into a new namespace.
        action(
            &mut meta,
            "RestoreSnapshot",
            json!({"namespace": "docs", "snapshot": id, "target": "copy"}),
        )
        .await
        .expect("restore");
        assert_eq!(versions(&local, "copy", 2_000).await, at_snapshot);
        // Over an existing namespace only with replace.
        let err = action(
            &mut meta,
            "RestoreSnapshot",
            json!({"namespace": "docs", "snapshot": id}),
        )
        .await
        .expect_err("docs exists");
        assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
        action(
            &mut meta,
            "RestoreSnapshot",
            json!({"namespace": "docs", "snapshot": id, "replace": true}),
        )
        .await
        .expect("restore over");
        assert_eq!(versions(&local, "docs", 2_000).await, at_snapshot);
        // The restored namespace takes writes.
        put(&mut data, "docs", vec![batch(1_000, 1_001, 3.0)])
            .await
            .expect("put");
        (id, at_snapshot)
    });
    local.stop();
    let local = Local::start(&dir, 2);
    rt.block_on(async {
        let mut meta = local.meta_client().await;
        let listed = action(&mut meta, "ListSnapshots", json!({}))
            .await
            .expect("list");
        assert_eq!(listed["count"], 1, "{listed}");
        action(
            &mut meta,
            "RestoreSnapshot",
            json!({"namespace": "docs", "snapshot": id, "target": "copy2"}),
        )
        .await
        .expect("restore after restart");
        assert_eq!(versions(&local, "copy2", 2_000).await, at_snapshot);
        let err = action(
            &mut meta,
            "RestoreSnapshot",
            json!({"namespace": "copy", "snapshot": id, "target": "x"}),
        )
        .await
        .expect_err("a snapshot of another namespace");
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        action(&mut meta, "DeleteSnapshot", json!({"snapshot": id}))
            .await
            .expect("delete");
        let listed = action(&mut meta, "ListSnapshots", json!({}))
            .await
            .expect("list");
        assert_eq!(listed["count"], 0);
        let err = action(
            &mut meta,
            "RestoreSnapshot",
            json!({"namespace": "docs", "snapshot": id, "target": "copy3"}),
        )
        .await
        .expect_err("deleted");
        assert_eq!(err.code(), Code::NotFound);
        // Restored namespaces outlive the snapshot they came from.
        assert_eq!(versions(&local, "copy2", 2_000).await, at_snapshot);
    });
    local.stop();
    assert!(snapshot_dirs(&dir).is_empty(), "{:?}", snapshot_dirs(&dir));
}

/// Every snapshot directory (and leftover) under the shard data directories.
fn snapshot_dirs(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(dir).expect("dir").flatten() {
        let snaps = shard.path().join("snapshots");
        for e in std::fs::read_dir(&snaps).into_iter().flatten().flatten() {
            out.push(e.path().display().to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn kill_9_during_a_snapshot_leaves_no_broken_snapshot() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let rt = runtime();
    // Linking a part waits 3 s before it is published: time to kill the process mid-way.
    let mut local = Local::start_with(
        &dir,
        2,
        &[],
        &[("FAILPOINTS", "snapshot::before_publish=sleep(3000)")],
    );
    rt.block_on(async {
        let mut meta = local.meta_client().await;
        let mut data = local.data_client().await;
        action(
            &mut meta,
            "CreateNamespace",
            json!({"name": "docs", "dim": DIM, "metric": "l2", "shards": 2}),
        )
        .await
        .expect("create");
        put(&mut data, "docs", vec![batch(0, 500, 1.0)])
            .await
            .expect("put");
        let pending = tokio::spawn(async move {
            action(&mut meta, "Snapshot", json!({"namespace": "docs"})).await
        });
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        local.child.kill().expect("kill -9");
        let _ = local.child.wait();
        assert!(
            pending.await.expect("task").is_err(),
            "the snapshot never completed"
        );
    });
    drop(local);
    let local = Local::start(&dir, 2);
    rt.block_on(async {
        let mut meta = local.meta_client().await;
        let listed = action(&mut meta, "ListSnapshots", json!({}))
            .await
            .expect("list");
        assert_eq!(listed["count"], 0, "no broken snapshot is listed: {listed}");
        let snap = action(&mut meta, "Snapshot", json!({"namespace": "docs"}))
            .await
            .expect("a new snapshot works");
        let id = snap["snapshot"].as_str().expect("id").to_string();
        let found = snapshot_dirs(&dir);
        assert!(
            found.iter().all(|d| d.ends_with(&id)),
            "only the new snapshot's parts remain: {found:?}"
        );
        action(
            &mut meta,
            "RestoreSnapshot",
            json!({"namespace": "docs", "snapshot": id, "target": "copy"}),
        )
        .await
        .expect("restore");
        assert_eq!(versions(&local, "copy", 500).await.len(), 500);
    });
    local.stop();
}
