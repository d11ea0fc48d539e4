//! The background indexer: rows are linked after they are acknowledged, and graph repair
//! runs in amortised passes that still reach every row once writes pause.

mod common;

use std::time::{Duration, Instant};

use common::*;
use longbow_common::Metric;
use longbow_shard::replica::indexer::{REPAIR_FRACTION, REPAIR_IDLE};
use longbow_shard::synth;

#[test]
fn a_trickle_below_the_repair_threshold_is_repaired_once_writes_pause() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dim = 16;
    let base = 4_000u64;
    let trickle = 20u64;
    // The trickle alone never reaches the amortised threshold, so only the idle pass can
    // repair it.
    assert!((trickle as usize) < (base as usize) / REPAIR_FRACTION);
    let data = synth::clustered((base + trickle) as usize, dim, 20, 5);
    let node = open_node(tmp.path(), 1 << 16);
    let r = node
        .create_replica(create_req("trickle", dim, Metric::L2))
        .expect("create");
    let rt = runtime();
    let ids: Vec<u64> = (0..base).collect();
    rt.block_on(r.upsert(&batch(&ids, &data[..base as usize * dim], dim)))
        .expect("bulk write");
    wait_indexed(&r);
    wait_repaired(&r);
    for id in base..base + trickle {
        let row = &data[id as usize * dim..(id as usize + 1) * dim];
        rt.block_on(r.upsert(&batch(&[id], row, dim)))
            .expect("small write");
    }
    let last_write = Instant::now();
    wait_indexed(&r);
    let (_, _, unrepaired) = r.graph_health();
    assert!(
        unrepaired > 0 || last_write.elapsed() >= REPAIR_IDLE,
        "the trickle was repaired before the indexer went idle: repair is not amortised"
    );

    let (linked, reachable, unrepaired) = wait_repaired(&r);
    assert_eq!(linked as u64, base + trickle, "every row is linked");
    assert_eq!(unrepaired, 0, "the idle pass repaired the trickle");
    assert_eq!(reachable, linked, "every linked row is reachable");
    node.shutdown();
}

/// Poll (bounded) until no segment has unrepaired rows; returns the last graph health.
fn wait_repaired(r: &longbow_shard::replica::Replica) -> (usize, usize, usize) {
    let deadline = Instant::now() + REPAIR_IDLE * 20;
    loop {
        let health = r.graph_health();
        if health.2 == 0 || Instant::now() > deadline {
            return health;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn upsert_churn_of_the_same_vectors_keeps_every_live_version_findable() {
    // The same 16 rows written 250 times: 4,000 row versions of 16 vectors, 3,984 of them
    // tombstoned, over two segments. Each live version must still be its own nearest row,
    // before and after the optimizer rewrote the segments without their dead versions.
    let tmp = tempfile::tempdir().expect("tmp");
    let dim = 8;
    let node = open_node(tmp.path(), 2_000);
    let r = node
        .create_replica(create_req("churn", dim, Metric::L2))
        .expect("create");
    let rt = runtime();
    let ids: Vec<u64> = (0..16).collect();
    let data = synth::clustered(16, dim, 4, 21);
    for _ in 0..250 {
        rt.block_on(r.upsert(&batch(&ids, &data, dim)))
            .expect("upsert");
    }
    wait_indexed(&r);
    let stats = r.stats();
    assert_eq!(stats.count, 16);
    let (linked, reachable, _) = wait_repaired(&r);
    assert_eq!(reachable, linked, "every row version stays reachable");
    assert_live_versions_found(&r, &ids, &data, dim);
    r.checkpoint().expect("checkpoint");
    let stats = r.stats();
    assert_eq!(
        (stats.count, stats.deleted),
        (16, 0),
        "dead versions compacted away"
    );
    assert_live_versions_found(&r, &ids, &data, dim);
    node.shutdown();
}

fn assert_live_versions_found(
    r: &longbow_shard::replica::Replica,
    ids: &[u64],
    data: &[f32],
    dim: usize,
) {
    for (id, v) in ids.iter().zip(data.chunks(dim)) {
        let hits = r
            .search(
                longbow_common::vectors::Vectors {
                    dim,
                    data: v.to_vec(),
                },
                &longbow_shard::replica::SearchParams {
                    k: 1,
                    ef: 16,
                    filter: None,
                    columns: vec![],
                    include_vectors: false,
                    allow_missing_columns: false,
                },
                0,
            )
            .expect("search");
        assert_eq!(u64_column(&hits, "id"), vec![*id], "live version of {id}");
    }
}
