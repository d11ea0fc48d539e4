//! Building replicas from a primary, through real processes (`longbow coordinator`, `longbow
//! shard`), with faults injected by SIGKILL:
//!
//! - a backup whose node stays dead past `--replica-timeout-secs` is rebuilt on another live
//!   node (segment files, then the WAL tail), which joins the in-sync set and can take over
//!   as primary with every acknowledged write; the dead node's copy is dropped when it
//!   returns;
//! - a snapshot of a replicated namespace restores with its backups built from the restored
//!   primaries, which can then take over with exactly the snapshot's rows.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::replicas::*;
use common::*;
use serde_json::{json, Value};

/// The namespaces of the replicas a node hosts, asked of the node itself.
async fn hosted(addr: &str) -> Vec<Value> {
    let mut c = connect(&format!("http://{addr}")).await;
    let list = action(&mut c, "ListReplicas", json!({}))
        .await
        .expect("list replicas");
    list.as_array().expect("a list").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_whose_node_stays_dead_is_rebuilt_on_another_node_and_the_old_copy_is_dropped_when_it_returns(
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut coord, mut c, internal, mut nodes) = start_cluster(
        dir.path(),
        3,
        &["--replica-timeout-secs", "3"],
        &NO_RETENTION,
    )
    .await;
    create_namespace(&mut c, 1, 2).await;
    put(&mut c, NS, vec![batch(0, 300, 0)]).await.expect("put");
    // A checkpoint deletes the WAL it covers: the new replica needs the segment files.
    action(&mut c, "Checkpoint", json!({ "namespace": NS }))
        .await
        .expect("checkpoint");
    put(&mut c, NS, vec![batch(250, 400, 1)])
        .await
        .expect("put");
    let mut acked: BTreeMap<u64, f32> = values(0, 300, 0).chain(values(250, 400, 1)).collect();
    let ids = node_ids(&mut c).await;
    let id_of = |n: &Node| ids[&n.addr];
    let primary = primary_of(&mut c, &nodes, 0).await;
    let first = stats(&mut c).await;
    let members: Vec<u64> = std::iter::once(&first["per_shard"][0]["primary"])
        .chain(
            first["per_shard"][0]["backups"]
                .as_array()
                .expect("backups"),
        )
        .map(|v| v.as_u64().expect("id"))
        .collect();
    let backup = (0..3)
        .find(|&i| i != primary && members.contains(&id_of(&nodes[i])))
        .expect("a backup");
    let spare = 3 - primary - backup;
    assert!(hosted(&nodes[spare].addr).await.is_empty(), "{first}");

    // The backup's node dies and stays dead: writes go on without it, and after the replica
    // timeout the spare node gets a new replica built from the primary.
    nodes[backup].child.kill().expect("kill -9");
    let _ = nodes[backup].child.wait();
    put_until_acked(&mut c, 400, 500, 2).await;
    acked.extend(values(400, 500, 2));
    let deadline = Instant::now() + Duration::from_secs(60);
    let s = loop {
        let s = wait_converged(&mut c, 2).await;
        let backups = &s["per_shard"][0]["backups"];
        if backups == &json!([id_of(&nodes[spare])]) {
            break s;
        }
        assert!(Instant::now() < deadline, "never rebuilt: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(s["per_shard"][0]["epoch"].as_u64() >= Some(2), "{s}");
    assert_eq!(s["count"].as_u64(), Some(acked.len() as u64), "{s}");
    assert!(
        metric(&nodes[spare], "longbow_replica_transfers_installed_total") >= 1,
        "the new replica was built from the primary's segment files"
    );

    // The old node returns: its copy belongs to no shard any more and is dropped.
    nodes[backup] = start_node_with(
        &dir.path().join(format!("shard-{backup}")),
        &internal,
        &NO_RETENTION,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = hosted(&nodes[backup].addr).await;
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "stray replica kept: {left:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!dir
        .path()
        .join(format!("shard-{backup}/replicas/{NS}/0"))
        .exists());

    // The primary dies: the rebuilt replica takes over with every acknowledged write.
    let old = id_of(&nodes[primary]);
    nodes[primary].child.kill().expect("kill -9");
    let _ = nodes[primary].child.wait();
    wait_failover(&mut c, old).await;
    assert_eq!(
        stats(&mut c).await["per_shard"][0]["primary"].as_u64(),
        Some(id_of(&nodes[spare]))
    );
    assert_eq!(stored(&mut c, 500).await, acked);
    put_until_acked(&mut c, 500, 510, 3).await;
    for i in [backup, spare] {
        terminate(&mut nodes[i].child);
    }
    terminate(&mut coord);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_a_replicated_namespace_restores_with_backups_built_from_the_restored_primaries(
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut coord, mut c, _, mut nodes) = start_cluster(dir.path(), 2, &[], &[]).await;
    create_namespace(&mut c, 2, 2).await;
    put(&mut c, NS, vec![batch(0, 300, 0)]).await.expect("put");
    let snap = action(&mut c, "Snapshot", json!({ "namespace": NS }))
        .await
        .expect("snapshot");
    let id = snap["snapshot"].as_str().expect("id").to_string();
    put(&mut c, NS, vec![batch(300, 400, 1)])
        .await
        .expect("a write after the snapshot");
    let restored = action(
        &mut c,
        "RestoreSnapshot",
        json!({"namespace": NS, "snapshot": id, "replace": true}),
    )
    .await
    .expect("restore a replicated namespace");
    assert_eq!(restored["rows"], 300, "{restored}");

    // Both replicas of each shard hold the snapshot's rows once the backups are built.
    let s = wait_converged(&mut c, 2).await;
    assert_eq!(s["count"], 300, "{s}");
    assert_eq!(stored(&mut c, 400).await, values(0, 300, 0).collect());
    for n in &nodes {
        for shard in 0..2 {
            let r = replica_stats(&n.addr, shard).await;
            let sh = &s["per_shard"][shard as usize]["replica"];
            assert_eq!(
                r["count"], sh["count"],
                "node {} shard {shard}: {r}",
                n.addr
            );
        }
    }

    // Whichever node dies, the other holds every row of both shards.
    let ids = node_ids(&mut c).await;
    let victim = primary_of(&mut c, &nodes, 0).await;
    nodes[victim].child.kill().expect("kill -9");
    let _ = nodes[victim].child.wait();
    wait_failover(&mut c, ids[&nodes[victim].addr]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = stats(&mut c).await;
        let survivor = ids[&nodes[1 - victim].addr];
        if s["per_shard"]
            .as_array()
            .expect("shards")
            .iter()
            .all(|sh| sh["primary"].as_u64() == Some(survivor))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no failover of every shard: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored(&mut c, 400).await, values(0, 300, 0).collect());
    terminate(&mut nodes[1 - victim].child);
    terminate(&mut coord);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_deleted_while_a_node_was_away_never_comes_back_in_a_new_one_of_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut coord, mut c, internal, mut nodes) = start_cluster(dir.path(), 2, &[], &[]).await;
    let create = json!({"name": NS, "dim": DIM, "shards": 2, "replication_factor": 1});
    action(&mut c, "CreateNamespace", create.clone())
        .await
        .expect("create");
    put(&mut c, NS, vec![batch(0, 200, 0)]).await.expect("put");

    // One node is away while the namespace is deleted; it returns still holding its replica.
    nodes[1].child.kill().expect("kill -9");
    let _ = nodes[1].child.wait();
    action(&mut c, "DeleteNamespace", json!({ "name": NS }))
        .await
        .expect("delete with a node away");
    nodes[1] = start_node(&dir.path().join("shard-1"), &internal);
    wait_live(&mut c, 2).await;
    assert!(
        !hosted(&nodes[1].addr).await.is_empty(),
        "the old copy is there"
    );

    // A new namespace of the same name, placed on that node at once: it starts empty.
    action(&mut c, "CreateNamespace", create)
        .await
        .expect("create again");
    assert_eq!(stats(&mut c).await["count"], 0);
    assert!(
        stored(&mut c, 200).await.is_empty(),
        "no row of the deleted namespace"
    );
    put(&mut c, NS, vec![batch(0, 10, 1)]).await.expect("put");
    assert_eq!(stored(&mut c, 200).await, values(0, 10, 1).collect());
    for n in &mut nodes {
        terminate(&mut n.child);
    }
    terminate(&mut coord);
}
