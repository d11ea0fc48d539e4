//! Replica sets through real processes (`longbow coordinator`, three `longbow shard`), with
//! faults injected by SIGKILL and SIGSTOP:
//!
//! - a write is acknowledged once every in-sync replica has it, so all of them report the
//!   same LSN right after the acknowledgement;
//! - killing a primary's node under continuous writes loses no acknowledged write and brings
//!   no deleted id back; writes resume on the promoted backup at the next epoch;
//! - the killed node comes back as a backup, is caught up from the new primary's WAL and put
//!   back in the in-sync set, and every replica converges to the same LSN and rows;
//! - a backup that lacks entries its primary's checkpoint deleted from the WAL gets the
//!   primary's segment files and then the WAL after them, and can take over as primary with
//!   every acknowledged write;
//! - a second process claiming a live node's identity is refused.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::replicas::*;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_primary_under_writes_loses_no_acknowledged_write_and_the_node_rejoins_as_a_caught_up_backup(
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut coord, mut c, internal, mut nodes) = start_cluster(dir.path(), 3, &[], &[]).await;
    let refused = action(
        &mut c,
        "CreateNamespace",
        json!({"name": "toomany", "dim": DIM, "replication_factor": 4}),
    )
    .await
    .expect_err("four replicas on three nodes");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("replication_factor"),
        "{}",
        refused.message()
    );
    create_namespace(&mut c, 2, 3).await;

    // Acknowledged means durable on every in-sync replica: their LSNs match at once.
    put(&mut c, NS, vec![batch(0, 300, 0)]).await.expect("put");
    let s = stats(&mut c).await;
    assert_eq!(s["count"], 300, "{s}");
    for sh in s["per_shard"].as_array().expect("shards") {
        assert_eq!(sh["epoch"], 1);
        assert_eq!(sh["in_sync"].as_array().expect("in sync").len(), 3, "{sh}");
        let lsns: BTreeSet<u64> = sh["replicas"]
            .as_array()
            .expect("replicas")
            .iter()
            .map(|r| r["lsn"].as_u64().expect("lsn"))
            .collect();
        assert_eq!(
            lsns.len(),
            1,
            "every replica has the acknowledged write: {sh}"
        );
    }
    // A delete acknowledged before the failover must stay deleted after it.
    let deleted = action(
        &mut c,
        "Delete",
        json!({"namespace": NS, "ids": (0..50).collect::<Vec<u64>>()}),
    )
    .await
    .expect("delete");
    assert_eq!(deleted["deleted"], 50, "{deleted}");

    // Continuous writes (upserts of new and old ids) while the primary of shard 0 dies.
    let ids = node_ids(&mut c).await;
    let victim_id = s["per_shard"][0]["primary"].as_u64().expect("primary");
    let victim = nodes
        .iter()
        .position(|n| ids[&n.addr] == victim_id)
        .expect("the primary is one of ours");
    let mut acked: BTreeMap<u64, f32> = (50..300)
        .map(|i| (i, ((i * 7) % 1000) as f32 * 0.01))
        .collect();
    let mut killed_at = None;
    let mut resumed_after = None;
    let started = Instant::now();
    let mut round = 0u64;
    while round < 60 && started.elapsed() < Duration::from_secs(60) {
        if round == 10 {
            nodes[victim].child.kill().expect("kill -9");
            let _ = nodes[victim].child.wait();
            killed_at = Some(Instant::now());
        }
        let (lo, hi, salt) = (300 + round * 20, 320 + round * 20, round + 1);
        match put(&mut c, NS, vec![batch(lo, hi, salt)]).await {
            Ok(_) => {
                for i in lo..hi {
                    acked.insert(i, ((i * 7 + salt) % 1000) as f32 * 0.01);
                }
                if let (Some(k), None) = (killed_at, resumed_after) {
                    resumed_after = Some(k.elapsed());
                }
            }
            Err(e) => assert!(
                e.metadata()
                    .get("x-longbow-retryable")
                    .is_some_and(|v| v == "true"),
                "a failed write is retryable: {e}"
            ),
        }
        round += 1;
    }
    assert!(killed_at.is_some(), "the fault was injected");
    let resumed = resumed_after.expect("writes resumed after the primary died");
    assert!(
        resumed < Duration::from_secs(30),
        "writes resumed after {resumed:?}"
    );

    // Nothing acknowledged is lost, nothing deleted is back, values are the last acknowledged.
    let got = stored(&mut c, 300 + 60 * 20).await;
    for (id, v) in &acked {
        assert_eq!(
            got.get(id),
            Some(v),
            "acknowledged id {id} has its last value"
        );
    }
    assert!(
        (0..50).all(|i| !got.contains_key(&i)),
        "a deleted id came back"
    );
    let s = stats(&mut c).await;
    let sh0 = &s["per_shard"][0];
    assert_ne!(sh0["primary"].as_u64(), Some(victim_id), "{sh0}");
    assert!(sh0["epoch"].as_u64().expect("epoch") >= 2, "{sh0}");
    assert!(
        !sh0["in_sync"]
            .as_array()
            .expect("in sync")
            .contains(&json!(victim_id)),
        "the dead node is out of the in-sync set: {sh0}"
    );

    // The node comes back: it is caught up and put back in sync; all replicas converge.
    let back = start_node(&dir.path().join(format!("shard-{victim}")), &internal);
    assert_ne!(back.addr, "", "restarted");
    nodes[victim] = back;
    let s = wait_converged(&mut c, 3).await;
    assert_eq!(s["count"].as_u64(), Some(acked.len() as u64), "{s}");
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    for shard in 0..2u64 {
        let mut seen = BTreeSet::new();
        for a in &addrs {
            let r = replica_stats(a, shard).await;
            seen.insert((r["lsn"].as_u64(), r["count"].as_u64()));
        }
        assert_eq!(
            seen.len(),
            1,
            "shard {shard}: every replica has the same LSN and rows: {seen:?}"
        );
    }
    for n in &mut nodes {
        terminate(&mut n.child);
    }
    terminate(&mut coord);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_behind_a_checkpoint_gets_the_primarys_segment_files_then_its_wal_and_can_take_over(
) {
    let dir = tempfile::tempdir().expect("tempdir");
    // No WAL retention: the checkpoint deletes what the backup lacks.
    let (mut coord, mut c, internal, mut nodes) =
        start_cluster(dir.path(), 2, &[], &NO_RETENTION).await;
    create_namespace(&mut c, 1, 2).await;
    put(&mut c, NS, vec![batch(0, 400, 0)]).await.expect("put");
    let mut acked: BTreeMap<u64, f32> = values(0, 400, 0).collect();
    let ids = node_ids(&mut c).await;
    let primary = primary_of(&mut c, &nodes, 0).await;
    let backup = 1 - primary;
    let backup_id = ids[&nodes[backup].addr];

    // The backup dies; the primary takes writes, deletes and upserts, and a checkpoint
    // deletes the WAL the backup would need.
    nodes[backup].child.kill().expect("kill -9");
    let _ = nodes[backup].child.wait();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut round = 0u64;
    while round < 10 {
        let (lo, hi, salt) = (200 + round * 100, 300 + round * 100, round + 1);
        match put(&mut c, NS, vec![batch(lo, hi, salt)]).await {
            Ok(_) => {
                acked.extend(values(lo, hi, salt));
                round += 1;
            }
            // Until the catalog takes the dead backup out of the in-sync set.
            Err(e) => assert!(Instant::now() < deadline, "writes never resumed: {e}"),
        }
    }
    let deleted = action(
        &mut c,
        "Delete",
        json!({"namespace": NS, "ids": (0..30).collect::<Vec<u64>>()}),
    )
    .await
    .expect("delete");
    assert_eq!(deleted["deleted"], 30, "{deleted}");
    for i in 0..30 {
        acked.remove(&i);
    }
    let cp = action(&mut c, "Checkpoint", json!({ "namespace": NS }))
        .await
        .expect("checkpoint");
    assert!(cp["shards"][0]["lsn"].as_u64().expect("lsn") > 0, "{cp}");
    // Entries after the checkpoint: the backup needs them from the WAL after the files.
    put(&mut c, NS, vec![batch(1200, 1300, 77)])
        .await
        .expect("put after the checkpoint");
    acked.extend(values(1200, 1300, 77));

    // It comes back: it gets the segment files, then the tail, and is in sync again.
    nodes[backup] = start_node_with(
        &dir.path().join(format!("shard-{backup}")),
        &internal,
        &NO_RETENTION,
    );
    let s = wait_converged(&mut c, 2).await;
    assert_eq!(s["count"].as_u64(), Some(acked.len() as u64), "{s}");
    assert!(
        metric(&nodes[backup], "longbow_replica_transfers_installed_total") >= 1,
        "the restarted backup installed a transfer"
    );
    assert!(metric(&nodes[primary], "longbow_replica_transfers_sent_total") >= 1);
    let mut seen = BTreeSet::new();
    for n in &nodes {
        let r = replica_stats(&n.addr, 0).await;
        seen.insert((r["lsn"].as_u64(), r["count"].as_u64()));
    }
    assert_eq!(seen.len(), 1, "both replicas agree: {seen:?}");

    // The primary dies: the rebuilt backup takes over with every acknowledged write.
    nodes[primary].child.kill().expect("kill -9");
    let _ = nodes[primary].child.wait();
    wait_failover(&mut c, ids[&nodes[primary].addr]).await;
    assert_eq!(
        stats(&mut c).await["per_shard"][0]["primary"].as_u64(),
        Some(backup_id)
    );
    let got = stored(&mut c, 1300).await;
    assert_eq!(
        got, acked,
        "the rebuilt replica holds exactly what was acknowledged"
    );
    put(&mut c, NS, vec![batch(1300, 1310, 5)])
        .await
        .expect("it takes writes as primary");
    terminate(&mut nodes[backup].child);
    terminate(&mut coord);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_away_during_a_checkpoint_catches_up_from_the_retained_wal_without_a_transfer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut coord, mut c, internal, mut nodes) = start_cluster(dir.path(), 2, &[], &[]).await;
    create_namespace(&mut c, 1, 2).await;
    put(&mut c, NS, vec![batch(0, 300, 0)]).await.expect("put");
    let mut acked: BTreeMap<u64, f32> = values(0, 300, 0).collect();
    let primary = primary_of(&mut c, &nodes, 0).await;
    let backup = 1 - primary;

    // The backup is away while the primary writes and checkpoints everything it has.
    nodes[backup].child.kill().expect("kill -9");
    let _ = nodes[backup].child.wait();
    put_until_acked(&mut c, 300, 400, 1).await;
    acked.extend(values(300, 400, 1));
    action(&mut c, "Checkpoint", json!({ "namespace": NS }))
        .await
        .expect("checkpoint");

    // Back, it gets what it missed from the log the checkpoint kept: no transfer.
    nodes[backup] = start_node(&dir.path().join(format!("shard-{backup}")), &internal);
    let s = wait_converged(&mut c, 2).await;
    assert_eq!(s["count"].as_u64(), Some(acked.len() as u64), "{s}");
    assert_eq!(
        metric(&nodes[backup], "longbow_replica_transfers_installed_total"),
        0
    );
    assert_eq!(
        metric(&nodes[primary], "longbow_replica_transfers_sent_total"),
        0
    );
    let r = replica_stats(&nodes[backup].addr, 0).await;
    assert_eq!(r["count"].as_u64(), Some(acked.len() as u64), "{r}");
    for n in &mut nodes {
        terminate(&mut n.child);
    }
    terminate(&mut coord);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_claiming_a_live_nodes_identity_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut coord, data_uri, internal) = coordinator(&dir.path().join("coordinator"));
    let original = dir.path().join("shard-a");
    let mut a = start_node(&original, &internal);
    let mut c = connect(&data_uri).await;
    wait_live(&mut c, 1).await;
    // A copy of the data directory, started elsewhere while the original runs.
    let copy = dir.path().join("shard-copy");
    std::fs::create_dir_all(&copy).expect("mkdir");
    std::fs::copy(original.join("node.json"), copy.join("node.json")).expect("copy identity");
    let mut cmd = longbow_cmd(SHARD_ARGS, &copy);
    cmd.arg("--coordinator").arg(&internal);
    let mut impostor = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids = node_ids(&mut c).await;
    assert_eq!(ids.len(), 1, "no second node: {ids:?}");
    assert_eq!(
        ids.keys().next(),
        Some(&a.addr),
        "the node kept its address: {ids:?}"
    );
    let _ = impostor.kill();
    let mut err = String::new();
    use std::io::Read;
    if let Some(mut e) = impostor.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let _ = impostor.wait();
    assert!(
        err.contains("is live at"),
        "the newcomer is told why: {err}"
    );
    terminate(&mut a.child);
    terminate(&mut coord);
}
