//! How a replica takes the configurations coordinators push: a configuration of an older
//! replica-set version than one the replica has seen is ignored, so a push computed before
//! an in-sync change but delivered after it cannot undo the change.

mod common;

use common::*;
use longbow_common::replication_api::{Member, ReplicaConfig, Role};
use longbow_common::Metric;

fn config(version: u64, in_sync: &[u64]) -> ReplicaConfig {
    let member = |node: u64| Member {
        node,
        addr: format!("127.0.0.1:{}", 40_000 + node),
    };
    ReplicaConfig {
        namespace: "ns".into(),
        shard: 0,
        epoch: 1,
        node: 2,
        role: Role::Backup,
        primary: member(1),
        members: vec![member(1), member(2), member(3)],
        in_sync: in_sync.to_vec(),
        coordinators: Vec::new(),
        version,
    }
}

#[test]
fn a_configuration_older_than_one_already_seen_is_ignored() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = open_node(tmp.path(), 1_000);
    node.create_replica(create_req("ns", 4, Metric::L2))
        .expect("create");
    let s = node
        .configure_replica(&config(3, &[1, 2]))
        .expect("configure");
    assert_eq!(s.in_sync, vec![1, 2]);
    let stale = node
        .configure_replica(&config(2, &[1, 2, 3]))
        .expect("an older version is not an error");
    assert_eq!(stale.in_sync, vec![1, 2], "the older set was not applied");
    let same = node.configure_replica(&config(3, &[1, 2])).expect("again");
    assert_eq!(same.in_sync, vec![1, 2]);
    let newer = node.configure_replica(&config(4, &[1])).expect("newer");
    assert_eq!(newer.in_sync, vec![1]);
    // A replica created again under the key belongs to a new set, whose versions start over.
    node.drop_replica(&longbow_common::shard_api::ReplicaKey {
        namespace: "ns".into(),
        shard: 0,
    })
    .expect("drop");
    node.create_replica(create_req("ns", 4, Metric::L2))
        .expect("create again");
    let fresh = node
        .configure_replica(&config(0, &[1, 2, 3]))
        .expect("configure the new replica");
    assert_eq!(fresh.in_sync, vec![1, 2, 3]);
}
