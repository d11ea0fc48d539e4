//! A partitioned primary, through real processes each in its own network namespace, cut off
//! by nftables drops: the old primary cannot get a write acknowledged (not even one sent to
//! it directly at its old epoch), the rest of the cluster fails over and goes on, and once
//! the partition heals the old primary rejoins as a backup, drops what it logged but never
//! acknowledged, and catches up.
//!
//! Needs root (network namespaces, nftables). Without it the test fails, unless
//! `LONGBOW_SKIP_NETNS_TESTS=1` asks to skip it, which it then says.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightClient, FlightDescriptor};
use common::replicas::*;
use common::*;
use futures::TryStreamExt;
use longbow_soak::netns::{self, Net};
use serde_json::json;

/// A DoPut straight to a shard node, as a coordinator holding epoch `epoch` would send it.
async fn put_to_shard(
    c: &mut FlightClient,
    epoch: u64,
    batch: arrow_array::RecordBatch,
) -> Result<(), tonic::Status> {
    let cmd = json!({"op": "write", "namespace": NS, "shard": 0, "epoch": epoch});
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(
            serde_json::to_vec(&cmd).expect("json"),
        )))
        .build(futures::stream::iter([Ok(batch)]));
    let acks: Result<Vec<_>, _> = match c.do_put(data).await {
        Ok(s) => s.try_collect().await,
        Err(e) => Err(e),
    };
    acks.map(|_| ()).map_err(|e| match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => tonic::Status::unknown(other.to_string()),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_primary_cannot_acknowledge_and_rejoins_as_a_caught_up_backup() {
    if let Err(why) = netns::available() {
        if std::env::var("LONGBOW_SKIP_NETNS_TESTS").as_deref() == Ok("1") {
            eprintln!("SKIPPED (LONGBOW_SKIP_NETNS_TESTS=1): {why}");
            return;
        }
        panic!("{why}; run as root, or set LONGBOW_SKIP_NETNS_TESTS=1 to skip this test");
    }
    let net = Net::new(4).expect("network namespaces");
    let binary = env!("CARGO_BIN_EXE_longbow");
    let dir = tempfile::tempdir().expect("tempdir");
    // Member 0: the coordinator; members 1–3: shard nodes.
    let mut cmd = net.command(0, binary);
    cmd.args(COORDINATOR_ARGS)
        .args(["--host", &net.addr(0), "--data-dir"])
        .arg(dir.path().join("coordinator"))
        .env("LONGBOW_LOG", "warn");
    let (coord, line) = spawn_until_first_line(cmd);
    let mut coord = Proc(coord);
    let (data_uri, internal) = (
        format!("http://{}", word(&line, "data")),
        word(&line, "internal"),
    );
    let start_node = |i: usize| {
        let mut cmd = net.command(i, binary);
        cmd.args([
            "shard",
            "--listen",
            &format!("{}:0", net.addr(i)),
            "--http-port",
            "0",
        ])
        .args(["--coordinator", &internal, "--data-dir"])
        .arg(dir.path().join(format!("shard-{i}")))
        .env("LONGBOW_LOG", "warn");
        let (child, line) = spawn_until_first_line(cmd);
        Node {
            child,
            addr: word(&line, "flight"),
            http: word(&line, "http"),
        }
    };
    let mut nodes: Vec<Node> = (1..=3).map(start_node).collect();
    let mut c = connect(&data_uri).await;
    wait_live(&mut c, 3).await;
    action(
        &mut c,
        "CreateNamespace",
        json!({"name": NS, "dim": DIM, "shards": 1, "replication_factor": 3}),
    )
    .await
    .expect("create");
    put(&mut c, NS, vec![batch(0, 200, 0)]).await.expect("put");
    let mut acked: BTreeMap<u64, f32> = values(0, 200, 0).collect();
    let before = stats(&mut c).await;
    let epoch = before["per_shard"][0]["epoch"].as_u64().expect("epoch");
    let ids = node_ids(&mut c).await;
    let old_id = before["per_shard"][0]["primary"].as_u64().expect("primary");
    let old = nodes
        .iter()
        .position(|n| ids[&n.addr] == old_id)
        .expect("ours");

    // Cut the primary off. Sent straight to it at its epoch, a write is never acknowledged:
    // its backups cannot be reached, and neither can the catalog to drop them.
    net.partition(old + 1).expect("partition");
    let mut direct = connect(&format!("http://{}", nodes[old].addr)).await;
    let refused = tokio::time::timeout(
        Duration::from_secs(30),
        put_to_shard(&mut direct, epoch, batch(1000, 1010, 9)),
    )
    .await
    .expect("the old primary answers within 30 s")
    .expect_err("a partitioned primary must not acknowledge");
    eprintln!("the partitioned primary refused: {refused}");
    assert!(
        matches!(
            refused.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
        ),
        "{refused}"
    );

    // The others fail over and take writes at the next epoch.
    wait_failover(&mut c, old_id).await;
    let s = stats(&mut c).await;
    assert!(s["per_shard"][0]["epoch"].as_u64() > Some(epoch), "{s}");
    put_until_acked(&mut c, 200, 300, 1).await;
    acked.extend(values(200, 300, 1));
    let again = put_to_shard(&mut direct, epoch, batch(1010, 1020, 9)).await;
    assert!(again.is_err(), "still no acknowledgement at the old epoch");

    // Healed: it rejoins as a backup, drops its unacknowledged entries and catches up.
    net.heal(old + 1).expect("heal");
    let s = wait_converged(&mut c, 3).await;
    assert_ne!(s["per_shard"][0]["primary"].as_u64(), Some(old_id), "{s}");
    assert_eq!(stored(&mut c, 2000).await, acked);
    let mut seen = std::collections::BTreeSet::new();
    for n in &nodes {
        let r = replica_stats(&n.addr, 0).await;
        seen.insert((r["lsn"].as_u64(), r["count"].as_u64()));
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec![(
            s["per_shard"][0]["replicas"][0]["lsn"].as_u64(),
            Some(acked.len() as u64)
        )],
        "every replica, the old primary too, holds exactly the acknowledged rows"
    );
    for n in &mut nodes {
        terminate(&mut n.child);
    }
    terminate(&mut coord);
    drop(net);
}
