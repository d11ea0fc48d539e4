//! Snapshot parts on a shard node: a replica snapshotted at a checkpoint restores, into a new
//! replica, exactly the rows it had then, whatever the replica did afterwards (more writes,
//! deletes, compactions that removed its files), across restarts; deleting a snapshot
//! removes its files and a deleted snapshot cannot be restored.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use longbow_common::shard_api::{ReplicaKey, RestoreReplicaRequest, SnapshotRequest};
use longbow_common::{IdValue, Metric};
use longbow_shard::replica::{Projection, ReplicaSettings};
use longbow_shard::{synth, NodeConfig, ShardError, ShardNode};

fn open(dir: &Path) -> ShardNode {
    ShardNode::open(NodeConfig {
        workers: Default::default(),
        replication_timeout: std::time::Duration::from_secs(2),
        data_dir: dir.to_path_buf(),
        replica: ReplicaSettings {
            segment_capacity: 300,
            wal_segment_bytes: 16 << 10,
            checkpoint_wal_bytes: u64::MAX,
            checkpoint_interval: Duration::from_secs(3600),
            ..ReplicaSettings::default()
        },
    })
    .expect("open node")
}

fn key(ns: &str) -> ReplicaKey {
    ReplicaKey {
        namespace: ns.into(),
        shard: 0,
    }
}

/// Every live record, sorted, as text (ids, payload, vectors).
fn contents(node: &ShardNode, ns: &str) -> Vec<String> {
    let r = node.replica(&key(ns)).expect("replica");
    let p = Projection {
        columns: None,
        include_vectors: true,
        allow_missing_columns: false,
    };
    let mut rows = Vec::new();
    for b in r.scan(None, &p, usize::MAX).expect("scan") {
        for i in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| arrow_cast::display::array_value_to_string(c, i).expect("display"))
                .collect();
            rows.push(cells.join("|"));
        }
    }
    rows.sort();
    rows
}

fn restore(node: &ShardNode, snapshot: &str, ns: &str) -> Result<(), ShardError> {
    restore_as(node, snapshot, ns, 1)
}

/// Restore into incarnation `incarnation` of namespace `ns`.
fn restore_as(
    node: &ShardNode,
    snapshot: &str,
    ns: &str,
    incarnation: u64,
) -> Result<(), ShardError> {
    node.restore_replica(&RestoreReplicaRequest {
        snapshot: snapshot.into(),
        shard: 0,
        namespace: ns.into(),
        incarnation,
    })
    .map(|_| ())
}

#[test]
fn a_restored_snapshot_holds_exactly_the_rows_of_its_checkpoint() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dim = 8;
    let data = synth::clustered(1_000, dim, 5, 31);
    let rt = runtime();
    let at_snapshot = {
        let node = open(tmp.path());
        let r = node
            .create_replica(create_req("live", dim, Metric::L2))
            .expect("create");
        let ids: Vec<u64> = (0..700).collect();
        rt.block_on(r.upsert(&batch(&ids, &data[..700 * dim], dim)))
            .expect("write");
        rt.block_on(r.delete((0..50).map(IdValue::U64).collect(), None, None))
            .expect("delete");
        let before = contents(&node, "live");
        let part = node
            .create_snapshot(&SnapshotRequest {
                namespace: "live".into(),
                shard: 0,
                snapshot: "s1".into(),
            })
            .expect("snapshot");
        assert_eq!((part.rows, part.lsn), (650, r.stats().lsn));
        // After the snapshot: replace every row (the optimizer then rewrites the sealed
        // segments and deletes their files), add rows, delete others.
        let again: Vec<u64> = (0..1_000).collect();
        rt.block_on(r.upsert(&batch(&again, &data, dim)))
            .expect("write");
        rt.block_on(r.delete((900..1_000).map(IdValue::U64).collect(), None, None))
            .expect("delete");
        r.checkpoint().expect("checkpoint");
        assert_ne!(contents(&node, "live"), before);
        restore(&node, "s1", "copy").expect("restore");
        assert_eq!(contents(&node, "copy"), before);
        before
    };
    // Snapshots and restored replicas survive restarts.
    let node = open(tmp.path());
    assert_eq!(contents(&node, "copy"), at_snapshot);
    restore(&node, "s1", "copy2").expect("restore after restart");
    assert_eq!(contents(&node, "copy2"), at_snapshot);
    // A restored replica takes writes and continues its LSNs after the checkpoint.
    let copy = node.replica(&key("copy2")).expect("replica");
    let lsn = copy.stats().lsn;
    let (next, _) = rt
        .block_on(copy.upsert(&batch(&[5_000], &data[..dim], dim)))
        .expect("write");
    assert_eq!(next, lsn + 1);
    // Deleting the snapshot removes its files; the replicas restored from it stay whole.
    assert!(node.delete_snapshot("s1").expect("delete"));
    assert!(!tmp.path().join("snapshots/s1").exists());
    assert!(matches!(
        restore(&node, "s1", "copy3"),
        Err(ShardError::SnapshotNotFound(_))
    ));
    assert_eq!(contents(&node, "copy"), at_snapshot);
    assert!(!node.delete_snapshot("s1").expect("delete is idempotent"));
}

#[test]
fn snapshot_ids_are_plain_names_and_parts_are_never_overwritten() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = open(tmp.path());
    node.create_replica(create_req("ns", 4, Metric::L2))
        .expect("create");
    let req = |snapshot: &str| SnapshotRequest {
        namespace: "ns".into(),
        shard: 0,
        snapshot: snapshot.into(),
    };
    for bad in ["../escape", ".hidden", "", "a/b"] {
        let err = node.create_snapshot(&req(bad)).expect_err("refused");
        assert!(err.to_string().contains("snapshot"), "{err}");
    }
    node.create_snapshot(&req("once")).expect("snapshot");
    assert!(matches!(
        node.create_snapshot(&req("once")),
        Err(ShardError::SnapshotExists(_))
    ));
    assert!(matches!(
        restore(&node, "once", "ns"),
        Err(ShardError::ReplicaExists(_))
    ));
}

#[test]
fn a_replica_left_by_a_deleted_namespace_gives_way_to_a_newer_namespace_of_its_name_only() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = open(tmp.path());
    let at = |incarnation: u64| longbow_common::shard_api::CreateReplicaRequest {
        incarnation,
        ..create_req("ns", 4, Metric::L2)
    };
    let r = node.create_replica(at(5)).expect("create");
    let data = [1.0f32, 2.0, 3.0, 4.0];
    runtime()
        .block_on(r.upsert(&batch(&[7], &data, 4)))
        .expect("write");
    drop(r);
    node.create_snapshot(&SnapshotRequest {
        namespace: "ns".into(),
        shard: 0,
        snapshot: "old".into(),
    })
    .expect("snapshot");
    assert!(matches!(
        node.create_replica(at(5)),
        Err(ShardError::ReplicaExists(_))
    ));
    for older in [4, 1] {
        assert!(matches!(
            node.create_replica(at(older)),
            Err(ShardError::NewerIncarnation { have: 5, .. })
        ));
        assert!(matches!(
            restore_as(&node, "old", "ns", older),
            Err(ShardError::NewerIncarnation { .. })
        ));
    }
    assert_eq!(contents(&node, "ns").len(), 1, "the replica stayed");
    // A newer namespace of the same name replaces it, empty or restored.
    node.create_replica(at(6)).expect("a newer namespace");
    assert!(contents(&node, "ns").is_empty());
    assert_eq!(node.replica(&key("ns")).expect("ns").info().incarnation, 6);
    restore_as(&node, "old", "ns", 9).expect("restored into a newer namespace");
    assert_eq!(contents(&node, "ns").len(), 1);
    assert_eq!(node.replica(&key("ns")).expect("ns").info().incarnation, 9);
    drop(node);
    let node = open(tmp.path());
    assert_eq!(
        node.replica(&key("ns"))
            .expect("reopened")
            .info()
            .incarnation,
        9
    );
}
