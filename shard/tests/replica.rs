//! Replica semantics: upsert, delete, filters, segments, durability and restart.

mod common;

use common::*;
use longbow_common::shard_api::ReplicaKey;
use longbow_common::vectors::Vectors;
use longbow_common::{Filter, IdValue, Metric};
use longbow_shard::replica::{Projection, SearchParams};
use longbow_shard::synth;
use serde_json::json;

fn key(ns: &str) -> ReplicaKey {
    ReplicaKey {
        namespace: ns.into(),
        shard: 0,
    }
}

fn proj(columns: Option<Vec<String>>, include_vectors: bool) -> Projection {
    Projection {
        columns,
        include_vectors,
        allow_missing_columns: false,
    }
}

fn params(k: usize, filter: Option<serde_json::Value>) -> SearchParams {
    SearchParams {
        k,
        ef: 64,
        filter: filter.map(|f| Filter::parse("filter", &f).expect("filter")),
        columns: vec!["price".into()],
        include_vectors: false,
        allow_missing_columns: false,
    }
}

fn q(data: &[f32], dim: usize) -> Vectors {
    Vectors {
        dim,
        data: data.to_vec(),
    }
}

#[test]
fn upsert_replaces_the_old_version_at_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = open_node(tmp.path(), 1000);
    let r = node
        .create_replica(create_req("up", 4, Metric::L2))
        .expect("create");
    let rt = runtime();
    let ids: Vec<u64> = (0..100).collect();
    let data: Vec<f32> = (0..400).map(|i| (i / 4) as f32).collect();
    rt.block_on(r.upsert(&batch(&ids, &data, 4)))
        .expect("write");
    // Move id 7 far away.
    rt.block_on(r.upsert(&batch(&[7], &[1000.0; 4], 4)))
        .expect("upsert");
    let hits = r
        .search(q(&[7.0; 4], 4), &params(3, None), 0)
        .expect("search");
    let found = u64_column(&hits, "id");
    assert!(
        !found.contains(&7),
        "old version of 7 still matches: {found:?}"
    );
    let far = r
        .search(q(&[1000.0; 4], 4), &params(1, None), 0)
        .expect("search");
    assert_eq!(u64_column(&far, "id"), vec![7]);
    assert_eq!(f32_column(&far, "distance"), vec![0.0]);
    let stats = r.stats();
    assert_eq!((stats.count, stats.deleted), (100, 1));
    let got = r.get(&[IdValue::U64(7)], &proj(None, true)).expect("get");
    assert_eq!(got.num_rows(), 1);
}

#[test]
fn deleted_rows_are_never_returned() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = open_node(tmp.path(), 1 << 16);
    let r = node
        .create_replica(create_req("del", 8, Metric::L2))
        .expect("create");
    let rt = runtime();
    let dim = 8;
    let data = synth::clustered(2000, dim, 10, 9);
    let ids: Vec<u64> = (0..2000).collect();
    rt.block_on(r.upsert(&batch(&ids, &data, dim)))
        .expect("write");
    let doomed: Vec<IdValue> = (0..2000).filter(|i| i % 3 == 0).map(IdValue::U64).collect();
    let (_, n) = rt.block_on(r.delete(doomed, None, None)).expect("delete");
    assert_eq!(n, 667);
    wait_indexed(&r);
    for qi in 0..50 {
        let hits = r
            .search(
                q(&data[qi * 3 * dim..(qi * 3 + 1) * dim], dim),
                &params(10, None),
                0,
            )
            .expect("search");
        let found = u64_column(&hits, "id");
        assert_eq!(found.len(), 10);
        assert!(
            found.iter().all(|i| i % 3 != 0),
            "deleted id returned: {found:?}"
        );
    }
    // Delete by filter: price < 10 means id % 100 < 10.
    let f = Filter::parse("filter", &json!({"field": "price", "op": "<", "value": 10}))
        .expect("filter");
    let (_, n) = rt
        .block_on(r.delete(vec![], Some(f), None))
        .expect("delete by filter");
    let expect = (0..2000u64).filter(|i| i % 3 != 0 && i % 100 < 10).count() as u64;
    assert_eq!(n, expect);
    let everything = r.scan(None, &proj(None, false), usize::MAX).expect("scan");
    let live: Vec<u64> = everything
        .iter()
        .flat_map(|b| u64_column(b, "id"))
        .collect();
    assert_eq!(live.len() as u64, r.stats().count);
    assert!(live.iter().all(|i| i % 3 != 0 && i % 100 >= 10));
}

#[test]
fn selective_filter_returns_exactly_the_nearest_allowed_rows() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = open_node(tmp.path(), 1 << 16);
    let dim = 16;
    let r = node
        .create_replica(create_req("sel", dim, Metric::L2))
        .expect("create");
    let rt = runtime();
    let n = 10_000;
    let data = synth::clustered(n, dim, 20, 11);
    let ids: Vec<u64> = (0..n as u64).collect();
    for chunk in ids.chunks(2500) {
        let lo = chunk[0] as usize;
        rt.block_on(r.upsert(&batch(
            chunk,
            &data[lo * dim..(lo + chunk.len()) * dim],
            dim,
        )))
        .expect("write");
    }
    wait_indexed(&r);
    // tag = "t3" and price = 3 selects ids with id % 100 == 3: 1% of rows.
    let filter = json!({"and": [{"field": "tag", "op": "=", "value": "t3"}, {"field": "price", "op": "=", "value": 3}]});
    let allowed: Vec<u64> = ids.iter().copied().filter(|i| i % 100 == 3).collect();
    for qi in 0..20 {
        let query = &data[qi * 37 * dim..(qi * 37 + 1) * dim];
        let hits = r
            .search(q(query, dim), &params(10, Some(filter.clone())), 0)
            .expect("search");
        let mut exact: Vec<(f32, u64)> = allowed
            .iter()
            .map(|&i| {
                let v = &data[i as usize * dim..(i as usize + 1) * dim];
                (
                    v.iter()
                        .zip(query)
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum::<f32>(),
                    i,
                )
            })
            .collect();
        exact.sort_by(|a, b| a.0.total_cmp(&b.0));
        let want: Vec<u64> = exact.iter().take(10).map(|e| e.1).collect();
        assert_eq!(u64_column(&hits, "id"), want, "query {qi}");
    }
}

#[test]
fn broad_filter_keeps_high_recall_through_the_graph() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = open_node(tmp.path(), 1 << 16);
    let dim = 32;
    let r = node
        .create_replica(create_req("broad", dim, Metric::L2))
        .expect("create");
    let rt = runtime();
    let n = 10_000;
    let data = synth::clustered(n, dim, 20, 12);
    let ids: Vec<u64> = (0..n as u64).collect();
    rt.block_on(r.upsert(&batch(&ids, &data, dim)))
        .expect("write");
    wait_indexed(&r);
    // price < 50: half of the rows, answered by the filtered graph walk.
    let filter = json!({"field": "price", "op": "<", "value": 50});
    let allowed: Vec<usize> = (0..n).filter(|i| i % 100 < 50).collect();
    let allowed_data: Vec<f32> = allowed
        .iter()
        .flat_map(|&i| data[i * dim..(i + 1) * dim].to_vec())
        .collect();
    let queries = synth::clustered(100, dim, 20, 12);
    let truth = synth::ground_truth(&allowed_data, &queries, dim, 10, false);
    let truth: Vec<Vec<u32>> = truth
        .iter()
        .map(|t| t.iter().map(|&j| allowed[j as usize] as u32).collect())
        .collect();
    let hits = r
        .search(q(&queries, dim), &params(10, Some(filter)), 0)
        .expect("search");
    let qids = hits
        .column_by_name("query_id")
        .expect("qid")
        .as_any()
        .downcast_ref::<arrow_array::UInt32Array>()
        .expect("u32")
        .values()
        .to_vec();
    let got_ids = u64_column(&hits, "id");
    let mut found = vec![Vec::new(); 100];
    for (qi, id) in qids.iter().zip(got_ids) {
        assert!(id % 100 < 50, "filter violated by {id}");
        found[*qi as usize].push(id as u32);
    }
    let recall = synth::recall(&found, &truth);
    eprintln!("filtered recall@10 = {recall}");
    assert!(recall >= 0.95, "filtered recall {recall}");
}

#[test]
fn searches_span_every_segment() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = open_node(tmp.path(), 1_000);
    let dim = 8;
    let r = node
        .create_replica(create_req("segs", dim, Metric::Cosine))
        .expect("create");
    let rt = runtime();
    let data = synth::clustered(4_500, dim, 10, 13);
    let ids: Vec<u64> = (0..4_500).collect();
    rt.block_on(r.upsert(&batch(&ids, &data, dim)))
        .expect("write");
    assert_eq!(r.stats().segments, 5);
    wait_indexed(&r);
    for probe in [10usize, 1_500, 2_999, 4_499] {
        let hits = r
            .search(
                q(&data[probe * dim..(probe + 1) * dim], dim),
                &params(1, None),
                0,
            )
            .expect("search");
        assert_eq!(u64_column(&hits, "id"), vec![probe as u64]);
        assert!(f32_column(&hits, "distance")[0].abs() < 1e-5);
    }
}

#[test]
fn bad_rows_are_rejected_with_the_field_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = open_node(tmp.path(), 1000);
    let r = node
        .create_replica(create_req("bad", 4, Metric::Cosine))
        .expect("create");
    let rt = runtime();
    let err = rt
        .block_on(r.upsert(&batch(&[1], &[0.0; 4], 4)))
        .expect_err("zero vector under cosine");
    assert!(err.to_string().contains("vector[0]"), "{err}");
    let err = rt
        .block_on(r.upsert(&batch(&[1, 2], &[1.0; 6], 3)))
        .expect_err("wrong dim");
    assert!(err.to_string().contains("dimension"), "{err}");
    let err = rt
        .block_on(r.upsert(&batch(&[1], &[f32::INFINITY, 1.0, 1.0, 1.0], 4)))
        .expect_err("inf");
    assert!(err.to_string().contains("vector[0]"), "{err}");
    assert_eq!(r.stats().count, 0);
    assert_eq!(r.stats().lsn, 0, "nothing was logged");
}

#[test]
fn acknowledged_writes_and_deletes_survive_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dim = 8;
    let data = synth::clustered(3_000, dim, 10, 14);
    let ids: Vec<u64> = (0..3_000).collect();
    {
        let node = open_node(tmp.path(), 1_000);
        let r = node
            .create_replica(create_req("dur", dim, Metric::L2))
            .expect("create");
        let rt = runtime();
        rt.block_on(r.upsert(&batch(&ids, &data, dim)))
            .expect("write");
        rt.block_on(r.delete((0..100).map(IdValue::U64).collect(), None, None))
            .expect("delete");
        rt.block_on(r.upsert(&batch(&[200], &[9.0; 8], dim)))
            .expect("upsert");
        node.shutdown();
    }
    let node = open_node(tmp.path(), 1_000);
    let r = node.replica(&key("dur")).expect("reopened");
    let stats = r.stats();
    assert_eq!((stats.count, stats.lsn), (2_900, 3));
    assert_eq!(
        r.get(&[IdValue::U64(50)], &proj(None, false))
            .expect("get")
            .num_rows(),
        0
    );
    let hits = r
        .search(q(&[9.0; 8], dim), &params(1, None), 0)
        .expect("search");
    assert_eq!(u64_column(&hits, "id"), vec![200]);
    let probe = &data[1_234 * dim..1_235 * dim];
    let hits = r
        .search(q(probe, dim), &params(1, None), 0)
        .expect("search");
    assert_eq!(u64_column(&hits, "id"), vec![1_234]);
}

#[test]
fn concurrent_small_writes_share_group_commits_and_all_survive() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dim = 4;
    let writers = 64u64;
    let per_writer = 10u64;
    let syncs;
    {
        let node = open_node(tmp.path(), 1 << 16);
        let r = std::sync::Arc::new(
            node.create_replica(create_req("race", dim, Metric::L2))
                .expect("create"),
        );
        let rt = runtime();
        let lsns = rt.block_on(async {
            let mut tasks = Vec::new();
            for w in 0..writers {
                let r = r.clone();
                tasks.push(tokio::spawn(async move {
                    let mut lsns = Vec::new();
                    for i in 0..per_writer {
                        let id = w * 1000 + i;
                        let (lsn, rows) = r
                            .upsert(&batch(&[id], &[id as f32; 4], 4))
                            .await
                            .expect("write");
                        assert_eq!(rows, 1);
                        lsns.push(lsn);
                    }
                    lsns
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.expect("task"));
            }
            all
        });
        let mut sorted = lsns.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len() as u64,
            writers * per_writer,
            "every write got its own LSN"
        );
        syncs = r.wal_syncs();
        assert!(
            syncs < writers * per_writer,
            "{syncs} syncs for {} writes: no grouping",
            writers * per_writer
        );
        node.shutdown();
    }
    let node = open_node(tmp.path(), 1 << 16);
    let r = node.replica(&key("race")).expect("reopened");
    assert_eq!(r.stats().count, writers * per_writer);
    let all: Vec<IdValue> = (0..writers)
        .flat_map(|w| (0..per_writer).map(move |i| IdValue::U64(w * 1000 + i)))
        .collect();
    assert_eq!(
        r.get(&all, &proj(None, false)).expect("get").num_rows() as u64,
        writers * per_writer
    );
    eprintln!(
        "{} writes committed with {syncs} syncs",
        writers * per_writer
    );
}

fn wal_files(dir: &std::path::Path, ns: &str) -> Vec<std::path::PathBuf> {
    let wal = dir.join("replicas").join(ns).join("0").join("wal");
    let mut files: Vec<_> = std::fs::read_dir(wal)
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
}

#[test]
fn torn_wal_tail_is_cut_and_every_acknowledged_write_remains() {
    let tmp = tempfile::tempdir().expect("tmp");
    {
        let node = open_node(tmp.path(), 1000);
        let r = node
            .create_replica(create_req("torn", 4, Metric::L2))
            .expect("create");
        let rt = runtime();
        for i in 0..10u64 {
            rt.block_on(r.upsert(&batch(&[i], &[i as f32; 4], 4)))
                .expect("write");
        }
        node.shutdown();
    }
    // A crash in the middle of the next append leaves half an entry behind.
    let last = wal_files(tmp.path(), "torn").pop().expect("a wal file");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .expect("open");
    std::io::Write::write_all(&mut f, &[0x40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 11, 0, 0])
        .expect("write");
    drop(f);
    let node = open_node(tmp.path(), 1000);
    let r = node.replica(&key("torn")).expect("reopened");
    assert_eq!(r.stats().count, 10);
    let rt = runtime();
    let (lsn, _) = rt
        .block_on(r.upsert(&batch(&[99], &[99.0; 4], 4)))
        .expect("write after repair");
    assert_eq!(lsn, 11);
}

#[test]
fn corrupt_wal_entry_before_the_tail_stops_start_up() {
    let tmp = tempfile::tempdir().expect("tmp");
    {
        let node = open_node(tmp.path(), 1000);
        let r = node
            .create_replica(create_req("rot", 4, Metric::L2))
            .expect("create");
        let rt = runtime();
        for i in 0..5u64 {
            rt.block_on(r.upsert(&batch(&[i], &[i as f32; 4], 4)))
                .expect("write");
        }
        node.shutdown();
    }
    let file = wal_files(tmp.path(), "rot").pop().expect("a wal file");
    let mut bytes = std::fs::read(&file).expect("read");
    bytes[40] ^= 0xFF; // inside the first entry's body
    std::fs::write(&file, bytes).expect("write");
    let err = longbow_shard::ShardNode::open(longbow_shard::NodeConfig {
        workers: Default::default(),
        replication_timeout: std::time::Duration::from_secs(2),
        data_dir: tmp.path().to_path_buf(),
        replica: Default::default(),
    })
    .err()
    .expect("start-up must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("corrupt") && msg.contains("offset 0") && msg.contains(".wal"),
        "{msg}"
    );
}

#[test]
fn string_ids_are_kept_whole_and_upsert_by_string_works() {
    use arrow_array::{RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;
    let tmp = tempfile::tempdir().expect("tmp");
    let node = open_node(tmp.path(), 1000);
    let mut req = create_req("strs", 2, Metric::L2);
    req.id_type = longbow_common::IdType::String;
    let r = node.create_replica(req).expect("create");
    let long_id = "doc/".to_string() + &"x".repeat(300) + "/ünïcode";
    let mk = |ids: Vec<&str>, data: &[f32]| {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("vector", longbow_common::columns::vector_type(2), false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(StringArray::from(ids)), vector_array(data, 2)],
        )
        .expect("batch")
    };
    let rt = runtime();
    rt.block_on(r.upsert(&mk(vec![&long_id, "b"], &[0.0, 0.0, 5.0, 5.0])))
        .expect("write");
    rt.block_on(r.upsert(&mk(vec![&long_id], &[9.0, 9.0])))
        .expect("upsert");
    let hits = r
        .search(
            q(&[9.0, 9.0], 2),
            &SearchParams {
                columns: vec![],
                ..params(2, None)
            },
            0,
        )
        .expect("search");
    let ids = hits
        .column_by_name("id")
        .expect("id")
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("utf8");
    assert_eq!(ids.value(0), long_id);
    assert_eq!(ids.value(1), "b");
    assert_eq!(r.stats().count, 2);
    // Integer ids are refused by a string namespace.
    let err = rt
        .block_on(r.upsert(&batch(&[1], &[1.0, 1.0], 2)))
        .expect_err("u64 ids into string replica");
    assert!(err.to_string().contains("id"), "{err}");
}

#[test]
fn payload_columns_evolve_additively_and_conflicting_types_are_refused() {
    use arrow_array::{Float64Array, RecordBatch, StringArray, UInt64Array};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;
    let tmp = tempfile::tempdir().expect("tmp");
    let node = open_node(tmp.path(), 1000);
    let r = node
        .create_replica(create_req("evo", 2, Metric::L2))
        .expect("create");
    let rt = runtime();
    rt.block_on(r.upsert(&batch(&[1], &[1.0, 1.0], 2)))
        .expect("first schema");
    let with_score = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::UInt64, false),
            Field::new("vector", longbow_common::columns::vector_type(2), false),
            Field::new("rating", DataType::Float64, true),
        ])),
        vec![
            Arc::new(UInt64Array::from(vec![2])),
            vector_array(&[2.0, 2.0], 2),
            Arc::new(Float64Array::from(vec![0.5])),
        ],
    )
    .expect("batch");
    rt.block_on(r.upsert(&with_score)).expect("added column");
    let cols = r.stats().payload_columns;
    assert_eq!(cols, vec!["price: Int64", "tag: Utf8", "rating: Float64"]);
    // Old rows read the new column as null; filters treat null as not matching.
    let got = r
        .get(
            &[IdValue::U64(1), IdValue::U64(2)],
            &proj(Some(vec!["rating".to_string()]), false),
        )
        .expect("get");
    assert!(got.column(1).is_null(0) && got.column(1).is_valid(1));
    let bad = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::UInt64, false),
            Field::new("vector", longbow_common::columns::vector_type(2), false),
            Field::new("price", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(UInt64Array::from(vec![3])),
            vector_array(&[3.0, 3.0], 2),
            Arc::new(StringArray::from(vec!["cheap"])),
        ],
    )
    .expect("batch");
    let err = rt.block_on(r.upsert(&bad)).expect_err("type conflict");
    assert!(err.to_string().contains("price"), "{err}");
    assert_eq!(r.stats().count, 2);
}
