//! The coordinator's catalog store, through a real `longbow local`: the Raft log is compacted
//! by snapshots, a restart rebuilds the catalog from the latest snapshot plus the committed
//! log after it (also after `kill -9`), and the store holds the live catalog, not every
//! change ever made to it.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use serde_json::json;

const DIM: usize = 4;
/// Small, so these tests cross many snapshots.
const SNAPSHOT_LOGS: &str = "10";

fn start(dir: &Path) -> Local {
    Local::start_with(dir, 2, &["--raft-snapshot-logs", SNAPSHOT_LOGS], &[])
}

fn snapshot_bytes(dir: &Path) -> u64 {
    std::fs::metadata(snapshot_file(dir))
        .expect("snapshot")
        .len()
}

fn snapshot_file(dir: &Path) -> std::path::PathBuf {
    dir.join("coordinator").join("catalog-snapshot.json")
}

fn long_name(round: usize, i: u64) -> String {
    format!("namespace-with-a-long-name-{round}-{i:04}")
}

async fn names(local: &Local) -> BTreeSet<String> {
    let mut meta = local.meta_client().await;
    let listed = action(&mut meta, "ListNamespaces", json!({}))
        .await
        .expect("list");
    listed["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .map(|n| n.as_str().expect("name").to_string())
        .collect()
}

async fn create(local: &Local, name: &str) {
    let mut meta = local.meta_client().await;
    action(
        &mut meta,
        "CreateNamespace",
        json!({"name": name, "dim": DIM, "metric": "l2"}),
    )
    .await
    .unwrap_or_else(|e| panic!("create {name}: {e}"));
}

async fn delete(local: &Local, name: &str) {
    let mut meta = local.meta_client().await;
    action(&mut meta, "DeleteNamespace", json!({"name": name}))
        .await
        .unwrap_or_else(|e| panic!("delete {name}: {e}"));
}

fn some_rows(n: u64) -> arrow_array::RecordBatch {
    let ids: Vec<u64> = (0..n).collect();
    let data: Vec<f32> = ids
        .iter()
        .flat_map(|&i| [i as f32, 1.0, 2.0, 3.0])
        .collect();
    rows(&ids, &data, DIM)
}

#[test]
fn a_restart_rebuilds_the_catalog_from_its_snapshot_and_the_log_after_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let rt = runtime();
    let local = start(&dir);
    let expected = rt.block_on(async {
        for i in 0..30 {
            create(&local, &format!("ns-{i}")).await;
        }
        for i in 0..10 {
            delete(&local, &format!("ns-{i}")).await;
        }
        let mut data = local.data_client().await;
        put(&mut data, "ns-29", vec![some_rows(50)])
            .await
            .expect("put");
        names(&local).await
    });
    assert_eq!(expected.len(), 20);
    assert!(
        snapshot_file(&dir).exists(),
        "40+ catalog changes with a snapshot every {SNAPSHOT_LOGS} entries"
    );
    local.stop();

    let local = start(&dir);
    let after_kill = rt.block_on(async {
        assert_eq!(names(&local).await, expected, "after a clean restart");
        assert_eq!(stored_vectors(&local, "ns-29", 100).await.len(), 50);
        // Changes after the latest snapshot exist only in the log: kill -9 must keep them.
        create(&local, "late-1").await;
        delete(&local, "ns-10").await;
        create(&local, "late-2").await;
        names(&local).await
    });
    local.kill9();

    let local = start(&dir);
    rt.block_on(async {
        assert_eq!(names(&local).await, after_kill, "after kill -9");
        assert!(after_kill.contains("late-2") && !after_kill.contains("ns-10"));
        let mut data = local.data_client().await;
        put(&mut data, "late-1", vec![some_rows(10)])
            .await
            .expect("the recreated catalog routes writes");
        assert_eq!(stored_vectors(&local, "late-1", 100).await.len(), 10);
    });
    local.stop();
}

#[test]
fn the_catalog_store_holds_the_live_catalog_not_its_history() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("data");
    let rt = runtime();
    let local = start(&dir);
    let count = 200;
    let rounds = 9;
    let mut stores = Vec::new();
    let mut snapshots = Vec::new();
    for round in 0..rounds {
        rt.block_on(async {
            for i in 0..count {
                create(&local, &long_name(round, i)).await;
            }
        });
        let full = snapshot_bytes(&dir);
        rt.block_on(async {
            for i in 0..count {
                delete(&local, &long_name(round, i)).await;
            }
            assert!(names(&local).await.is_empty());
        });
        let empty = snapshot_bytes(&dir);
        snapshots.push((full, empty));
        stores.push(store_bytes(&dir));
    }
    for &(full, empty) in &snapshots {
        // Each namespace costs its catalog entry, whatever its history.
        assert!(full > count * 100, "{count} namespaces in {full} bytes");
        assert!(
            empty * 10 < full,
            "the snapshot once everything is deleted ({empty} bytes) is a fraction of the full one ({full} bytes)"
        );
    }
    // Every round writes as many log entries as the first. Without compaction the store
    // would grow by about the first round's size every round; with it, once sled has its
    // working set of files, the same catalog takes the same space: the last round is no
    // bigger than the largest of the rounds three before it (sled's files come and go, so
    // one round against one other is noise).
    let first = stores[0];
    let earlier_peak = stores[..rounds - 3].iter().copied().max().unwrap_or(0);
    let late_growth = stores[rounds - 1].saturating_sub(earlier_peak);
    assert!(
        late_growth < first / 2,
        "the store kept growing: {stores:?} bytes after each of {rounds} rounds of the same catalog"
    );
    local.stop();
}

/// Bytes of the coordinator's store (the Raft log and the snapshot; not the fixed ballast).
fn store_bytes(dir: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        std::fs::read_dir(p)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| {
                        let path = e.path();
                        if path.is_dir() {
                            walk(&path)
                        } else if e.file_name() == "BALLAST" {
                            0
                        } else {
                            e.metadata().map(|m| m.len()).unwrap_or(0)
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&dir.join("coordinator"))
}
