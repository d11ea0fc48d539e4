//! Data lifecycle of a replica: checkpoints seal segments into files and delete the WAL they
//! cover, start-up loads sealed segments without relinking and replays only the WAL after
//! the checkpoint, the optimizer rewrites dead-heavy segments and merges small ones, and
//! shutdown never waits for background work.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow_array::{Array, RecordBatch, StringArray, UInt64Array};
use common::*;
use longbow_common::shard_api::ReplicaKey;
use longbow_common::vectors::Vectors;
use longbow_common::{Filter, IdValue, Metric};
use longbow_shard::replica::{CheckpointOutcome, Projection, ReplicaSettings, SearchParams};
use longbow_shard::{synth, NodeConfig, ShardNode};

fn key(ns: &str) -> ReplicaKey {
    ReplicaKey {
        namespace: ns.into(),
        shard: 0,
    }
}

/// Small segments and WAL files, and no checkpoint unless a test asks for one.
fn settings(segment_capacity: usize) -> ReplicaSettings {
    ReplicaSettings {
        segment_capacity,
        wal_segment_bytes: 16 << 10,
        checkpoint_wal_bytes: u64::MAX,
        checkpoint_interval: Duration::from_secs(3600),
        ..ReplicaSettings::default()
    }
}

fn open(dir: &Path, s: &ReplicaSettings) -> ShardNode {
    ShardNode::open(NodeConfig {
        workers: Default::default(),
        replication_timeout: std::time::Duration::from_secs(2),
        data_dir: dir.to_path_buf(),
        replica: s.clone(),
    })
    .expect("open node")
}

fn wal_files(dir: &Path, ns: &str) -> usize {
    std::fs::read_dir(dir.join("replicas").join(ns).join("0").join("wal"))
        .expect("wal dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        })
        .count()
}

fn params(k: usize) -> SearchParams {
    SearchParams {
        k,
        ef: 64,
        filter: None,
        columns: vec!["price".into()],
        include_vectors: false,
        allow_missing_columns: false,
    }
}

fn everything() -> Projection {
    Projection {
        columns: None,
        include_vectors: true,
        allow_missing_columns: false,
    }
}

/// Every live record, sorted by id, as comparable text (ids, payload, vectors).
fn contents(r: &longbow_shard::replica::Replica) -> Vec<String> {
    let batches = r.scan(None, &everything(), usize::MAX).expect("scan");
    let mut rows = Vec::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| {
                    arrow_cast::display::array_value_to_string(c.as_ref(), i).expect("display")
                })
                .collect();
            rows.push(cells.join("|"));
        }
    }
    rows.sort();
    rows
}

fn checkpoint(r: &longbow_shard::replica::Replica) -> CheckpointOutcome {
    r.checkpoint().expect("checkpoint")
}

#[test]
fn a_checkpoint_seals_segments_deletes_the_wal_and_a_restart_relinks_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (dim, n) = (16, 2_500u64);
    let data = synth::clustered(n as usize, dim, 10, 21);
    let ids: Vec<u64> = (0..n).collect();
    let s = settings(1_000);
    let (before, hits_before, lsn) = {
        let node = open(tmp.path(), &s);
        let r = node
            .create_replica(create_req("seal", dim, Metric::L2))
            .expect("create");
        let rt = runtime();
        for chunk in ids.chunks(250) {
            let lo = chunk[0] as usize;
            rt.block_on(r.upsert(&batch(
                chunk,
                &data[lo * dim..(lo + chunk.len()) * dim],
                dim,
            )))
            .expect("write");
        }
        assert!(wal_files(tmp.path(), "seal") > 3, "small WAL files rotate");
        let lsn = r.stats().lsn;
        // Full segments seal and may be checkpointed already; this one covers the rest.
        checkpoint(&r);
        assert_eq!(r.counters().checkpoint_lsn.load(Ordering::Relaxed), lsn);
        assert_eq!(
            wal_files(tmp.path(), "seal"),
            0,
            "the checkpoint covers the whole WAL, the file being appended to included"
        );
        assert_eq!(checkpoint(&r), CheckpointOutcome::Unchanged);
        let hits = r
            .search(
                Vectors {
                    dim,
                    data: data[..dim].to_vec(),
                },
                &params(10),
                0,
            )
            .expect("search");
        (contents(&r), hits, lsn)
    };
    let node = open(tmp.path(), &s);
    let r = node.replica(&key("seal")).expect("reopened");
    let stats = r.stats();
    assert_eq!(stats.indexing_lag, 0, "sealed segments load linked");
    assert_eq!((stats.count, stats.lsn), (n, lsn));
    // 2,500 rows in segments of 1,000; a checkpoint the background task took while the rows
    // came in may have sealed one more, smaller segment.
    assert!(stats.segments >= 3, "{} segments", stats.segments);
    assert_eq!(r.graph_health().1, n as usize, "every row reachable");
    assert_eq!(contents(&r), before);
    let hits = r
        .search(
            Vectors {
                dim,
                data: data[..dim].to_vec(),
            },
            &params(10),
            0,
        )
        .expect("search");
    assert_eq!(
        hits, hits_before,
        "the loaded graphs answer exactly as before"
    );
    // The LSN sequence continues after the checkpoint, although its WAL is gone.
    let rt = runtime();
    let (next, _) = rt
        .block_on(r.upsert(&batch(&[n], &data[..dim], dim)))
        .expect("write");
    assert_eq!(next, lsn + 1);
}

#[test]
fn changes_after_a_checkpoint_replay_on_top_of_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dim = 8;
    let data = synth::clustered(1_200, dim, 6, 22);
    let ids: Vec<u64> = (0..1_000).collect();
    let s = settings(400);
    let before = {
        let node = open(tmp.path(), &s);
        let r = node
            .create_replica(create_req("replay", dim, Metric::L2))
            .expect("create");
        let rt = runtime();
        rt.block_on(r.upsert(&batch(&ids, &data[..1_000 * dim], dim)))
            .expect("write");
        checkpoint(&r);
        // After the checkpoint: replace some rows, delete by id and by filter, add rows
        // with a payload column the checkpoint does not know.
        let moved: Vec<u64> = (0..100).collect();
        rt.block_on(r.upsert(&batch(&moved, &data[1_000 * dim..1_100 * dim], dim)))
            .expect("upsert");
        rt.block_on(r.delete((100..150).map(IdValue::U64).collect(), None, None))
            .expect("delete");
        let filter = Filter::parse(
            "filter",
            &serde_json::json!({"field": "tag", "op": "=", "value": "t3"}),
        )
        .expect("filter");
        rt.block_on(r.delete(vec![], Some(filter), None))
            .expect("delete by filter");
        rt.block_on(r.upsert(&with_note(&[5_000, 5_001], &data[..2 * dim], dim)))
            .expect("new column");
        contents(&r)
    };
    let node = open(tmp.path(), &s);
    let r = node.replica(&key("replay")).expect("reopened");
    assert_eq!(contents(&r), before);
    assert!(before.iter().any(|row| row.contains("hello")));
}

#[test]
fn a_payload_column_added_before_a_checkpoint_survives_the_wal_it_came_in() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dim = 4;
    let s = settings(100);
    {
        let node = open(tmp.path(), &s);
        let r = node
            .create_replica(create_req("schema", dim, Metric::L2))
            .expect("create");
        let rt = runtime();
        rt.block_on(r.upsert(&with_note(&[1, 2], &[0.5; 8], dim)))
            .expect("write");
        let filler: Vec<u64> = (10..300).collect();
        rt.block_on(r.upsert(&batch(&filler, &vec![1.0; 290 * dim], dim)))
            .expect("write");
        checkpoint(&r);
    }
    let node = open(tmp.path(), &s);
    let r = node.replica(&key("schema")).expect("reopened");
    let got = r
        .get(
            &[IdValue::U64(1), IdValue::U64(10)],
            &Projection {
                columns: Some(vec!["note".into()]),
                include_vectors: false,
                allow_missing_columns: false,
            },
        )
        .expect("the column is still known");
    let notes = got
        .column_by_name("note")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .expect("note");
    assert_eq!(notes.value(0), "hello");
    assert!(notes.is_null(1), "rows written without it read as null");
}

/// Rows like `batch` with one more payload column, `note = "hello"`.
fn with_note(ids: &[u64], data: &[f32], dim: usize) -> RecordBatch {
    let b = batch(ids, data, dim);
    let mut fields: Vec<_> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut cols = b.columns().to_vec();
    fields.push(arrow_schema::Field::new(
        "note",
        arrow_schema::DataType::Utf8,
        true,
    ));
    cols.push(std::sync::Arc::new(StringArray::from(vec![
        "hello";
        ids.len()
    ])));
    RecordBatch::try_new(std::sync::Arc::new(arrow_schema::Schema::new(fields)), cols)
        .expect("batch")
}

#[test]
fn upsert_churn_is_compacted_down_to_the_live_rows() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dim = 8;
    let live = 200u64;
    let s = settings(2_000);
    let node = open(tmp.path(), &s);
    let r = node
        .create_replica(create_req("churn", dim, Metric::L2))
        .expect("create");
    let rt = runtime();
    let ids: Vec<u64> = (0..live).collect();
    for round in 0..50 {
        let data: Vec<f32> = (0..live as usize * dim)
            .map(|i| (i * 31 + round * 7) as f32 % 101.0)
            .collect();
        rt.block_on(r.upsert(&batch(&ids, &data, dim)))
            .expect("write");
        if round % 10 == 9 {
            checkpoint(&r);
        }
    }
    let final_rows = contents(&r);
    checkpoint(&r);
    let stats = r.stats();
    assert_eq!(stats.count, live);
    assert!(
        r.counters().merges.load(Ordering::Relaxed) > 0,
        "the optimizer ran"
    );
    for (seg, density) in r.tombstone_density() {
        assert!(
            density <= s.compaction_threshold || seg == u32::MAX,
            "segment {seg} is {density} dead"
        );
    }
    assert!(
        stats.deleted <= live,
        "{} replaced versions are still kept for {live} live rows",
        stats.deleted
    );
    assert_eq!(contents(&r), final_rows, "compaction changes no answer");
    drop(node);
    let node = open(tmp.path(), &s);
    let r = node.replica(&key("churn")).expect("reopened");
    assert_eq!(contents(&r), final_rows);
}

#[test]
fn deleting_half_of_20k_real_embeddings_in_five_waves_keeps_recall_at_10_above_095() {
    let tmp = tempfile::tempdir().expect("tmp");
    let n = 20_000usize;
    let (mut base, mut queries, dim) = npy::real_embeddings(n);
    for v in base.chunks_mut(dim).chain(queries.chunks_mut(dim)) {
        longbow_shard::distance::normalize(v);
    }
    let s = settings(5_000);
    let node = open(tmp.path(), &s);
    let r = node
        .create_replica(create_req("waves", dim, Metric::Cosine))
        .expect("create");
    let rt = runtime();
    let ids: Vec<u64> = (0..n as u64).collect();
    for chunk in ids.chunks(2_000) {
        let lo = chunk[0] as usize;
        rt.block_on(r.upsert(&batch(
            chunk,
            &base[lo * dim..(lo + chunk.len()) * dim],
            dim,
        )))
        .expect("write");
    }
    checkpoint(&r);
    let mut alive: Vec<u64> = ids.clone();
    for wave in 0..5u64 {
        // Every wave deletes a tenth of the original rows, spread over all segments.
        let doomed: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| (id * 7 + 3) % 10 == wave)
            .collect();
        rt.block_on(r.delete(
            doomed.iter().map(|&i| IdValue::U64(i)).collect(),
            None,
            None,
        ))
        .expect("delete");
        alive.retain(|id| !doomed.contains(id));
        checkpoint(&r);
        let recall = recall_at_10(&r, &base, &queries, &alive, dim);
        eprintln!(
            "wave {wave}: {} rows left, recall@10 = {recall}",
            alive.len()
        );
        assert!(recall >= 0.95, "wave {wave}: recall@10 = {recall}");
    }
    assert_eq!(r.stats().count, n as u64 / 2);
    assert!(
        r.counters().merges.load(Ordering::Relaxed) > 0,
        "dead-heavy segments were rewritten"
    );
    let (linked, reachable, _) = r.graph_health();
    assert_eq!(reachable, linked, "the repair agent left no orphan");
    assert!(r.counters().repair_passes.load(Ordering::Relaxed) > 0);
}

fn recall_at_10(
    r: &longbow_shard::replica::Replica,
    base: &[f32],
    queries: &[f32],
    alive: &[u64],
    dim: usize,
) -> f64 {
    let kept: Vec<f32> = alive
        .iter()
        .flat_map(|&i| {
            base[i as usize * dim..(i as usize + 1) * dim]
                .iter()
                .copied()
        })
        .collect();
    let truth = synth::ground_truth(&kept, queries, dim, 10, true);
    let mut found = 0;
    let nq = queries.len() / dim;
    let hits = r
        .search(
            Vectors {
                dim,
                data: queries.to_vec(),
            },
            &params(10),
            0,
        )
        .expect("search");
    let qcol = hits.column_by_name("query_id").expect("query_id");
    let qcol = arrow_cast::cast(qcol, &arrow_schema::DataType::UInt64).expect("cast");
    let qids = qcol
        .as_any()
        .downcast_ref::<UInt64Array>()
        .expect("u64")
        .values()
        .to_vec();
    let hit_ids = u64_column(&hits, "id");
    for (q, want) in truth.iter().enumerate() {
        let want: Vec<u64> = want.iter().map(|&o| alive[o as usize]).collect();
        found += qids
            .iter()
            .zip(&hit_ids)
            .filter(|(qi, id)| **qi == q as u64 && want.contains(id))
            .count();
    }
    found as f64 / (nq * 10) as f64
}

#[test]
fn a_damaged_segment_file_stops_start_up_and_names_the_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = settings(100);
    {
        let node = open(tmp.path(), &s);
        let r = node
            .create_replica(create_req("bad", 4, Metric::L2))
            .expect("create");
        let ids: Vec<u64> = (0..150).collect();
        runtime()
            .block_on(r.upsert(&batch(&ids, &vec![0.25; 600], 4)))
            .expect("write");
        checkpoint(&r);
    }
    let graph = tmp.path().join("replicas/bad/0/segments/0/graph.hnsw");
    let mut bytes = std::fs::read(&graph).expect("graph file");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&graph, bytes).expect("damage");
    let err = ShardNode::open(NodeConfig {
        workers: Default::default(),
        replication_timeout: std::time::Duration::from_secs(2),
        data_dir: tmp.path().to_path_buf(),
        replica: s,
    })
    .err()
    .expect("start-up must refuse damaged data");
    let msg = err.to_string();
    assert!(
        msg.contains("graph.hnsw") && msg.contains("checksum"),
        "{msg}"
    );
}

#[test]
fn shutdown_stops_background_indexing_instead_of_finishing_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (dim, n) = (64, 60_000usize);
    let data = synth::clustered(n, dim, 30, 23);
    let ids: Vec<u64> = (0..n as u64).collect();
    let s = settings(1 << 17);
    let lag = {
        let node = open(tmp.path(), &s);
        let r = node
            .create_replica(create_req("stop", dim, Metric::L2))
            .expect("create");
        runtime()
            .block_on(r.upsert(&batch(&ids, &data, dim)))
            .expect("write");
        node.shutdown();
        r.stats().indexing_lag
    };
    assert!(lag > 0, "shutdown waited for every row to be linked");
    let node = open(tmp.path(), &s);
    let r = node.replica(&key("stop")).expect("reopened");
    assert_eq!(r.stats().count, n as u64, "every acknowledged row is back");
    wait_indexed(&r);
    let probe = r
        .get(&[IdValue::U64(n as u64 - 1)], &everything())
        .expect("get");
    let got = probe
        .column_by_name("id")
        .and_then(|c| c.as_any().downcast_ref::<UInt64Array>().map(|a| a.value(0)));
    assert_eq!(got, Some(n as u64 - 1));
}

#[test]
fn checkpoints_keep_happening_while_writes_outpace_indexing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dim = 64;
    let s = ReplicaSettings {
        checkpoint_wal_bytes: 1 << 20,
        ..settings(1 << 16)
    };
    let node = open(tmp.path(), &s);
    let r = node
        .create_replica(create_req("busy", dim, Metric::L2))
        .expect("create");
    let rt = runtime();
    let data = synth::clustered(5_000, dim, 20, 24);
    // Keep writing (bounded) until a checkpoint lands while linking is still behind.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut next = 0u64;
    let mut seen_behind = false;
    while r.counters().checkpoints.load(Ordering::Relaxed) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint while writes kept coming ({next} rows written)"
        );
        let ids: Vec<u64> = (next..next + 5_000).collect();
        rt.block_on(r.upsert(&batch(&ids, &data, dim)))
            .expect("write");
        next += 5_000;
        seen_behind |= r.stats().indexing_lag > 0;
    }
    assert!(seen_behind, "the writes outpaced indexing at some point");
    assert_eq!(r.stats().count, next);
}
