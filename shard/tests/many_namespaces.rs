//! Many namespaces on one node share its worker pools: hosting more replicas adds no
//! threads, and every replica still commits and indexes.
//!
//! This file holds one test so that `cargo test` runs it in a process of its own (the
//! thread count it checks is the process's).

mod common;

use common::*;
use longbow_common::Metric;
use longbow_shard::synth;

fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads: line")
}

#[test]
fn hosting_hundreds_of_replicas_adds_no_threads() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = open_node(tmp.path(), 1_000);
    let rt = runtime();
    let dim = 8;
    let data = synth::clustered(20, dim, 2, 31);
    let ids: Vec<u64> = (0..20).collect();
    let write = |ns: &str| {
        let r = node
            .create_replica(create_req(ns, dim, Metric::L2))
            .expect("create replica");
        rt.block_on(r.upsert(&batch(&ids, &data, dim)))
            .expect("upsert");
        r
    };
    // The first replica starts everything started lazily (the rayon pool, the runtime).
    let first = write("ns-0");
    wait_indexed(&first);
    let before = threads();
    let count = 300;
    let replicas: Vec<_> = (1..count).map(|i| write(&format!("ns-{i}"))).collect();
    for r in &replicas {
        wait_indexed(r);
    }
    let after = threads();
    assert_eq!(
        after, before,
        "{count} replicas must share the node's pools ({before} threads with one, {after} with all)"
    );
    for r in &replicas {
        let s = r.stats();
        assert_eq!((s.count, s.indexing_lag), (20, 0), "{}", r.key());
    }
    drop(replicas);
    drop(first);
    drop(node);
    // Every replica's files are closed: its directory can go.
    std::fs::remove_dir_all(tmp.path().join("replicas")).expect("remove replicas");
}
