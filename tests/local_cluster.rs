//! `longbow local` end to end through Arrow Flight, as a client sees it: the whole wire
//! contract, recall through the coordinator, restart and `kill -9` durability.

mod common;

use common::*;
use longbow_shard::synth;
use serde_json::json;

fn search_cmd(ns: &str, k: usize) -> serde_json::Value {
    json!({"op": "search", "namespace": ns, "k": k, "ef": 64, "columns": ["price", "tag"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_recall_upsert_delete_filters_scan_and_restarts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (n, dim, nq) = (20_000usize, 32usize, 200usize);
    let all = synth::clustered(n + nq, dim, 40, 77);
    let (data, qdata) = all.split_at(n * dim);
    let local = Local::start(tmp.path(), 2);
    let mut meta = local.meta_client().await;
    let mut c = local.data_client().await;

    let created = action(
        &mut meta,
        "CreateNamespace",
        json!({"name": "docs", "dim": dim, "metric": "l2", "shards": 3}),
    )
    .await
    .expect("create");
    assert_eq!(created["shards"], 3);
    // The shard nodes live in this process: the coordinator searches them in-process.
    let cluster = action(&mut meta, "cluster-status", json!({}))
        .await
        .expect("cluster-status");
    let nodes = cluster["shard_nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2);
    assert!(
        nodes.iter().all(|n| n["in_process"] == json!(true)),
        "{nodes:?}"
    );

    let batches: Vec<_> = (0..n)
        .step_by(5_000)
        .map(|lo| {
            let ids: Vec<u64> = (lo as u64..(lo + 5_000) as u64).collect();
            rows(&ids, &data[lo * dim..(lo + 5_000) * dim], dim)
        })
        .collect();
    assert_eq!(
        put(&mut c, "docs", batches).await.expect("put"),
        vec![5_000; 4],
        "one PutResult per batch"
    );

    // Recall through the coordinator, over 3 shards on 2 nodes.
    let res = search(&mut c, search_cmd("docs", 10), queries(qdata, dim))
        .await
        .expect("search");
    let truth = synth::ground_truth(data, qdata, dim, 10, false);
    let mut found = vec![Vec::new(); nq];
    for (q, id) in u32s(&res, "query_id").into_iter().zip(u64s(&res, "id")) {
        found[q as usize].push(id as u32);
    }
    let recall = synth::recall(&found, &truth);
    assert!(
        recall >= 0.95,
        "recall@10 through the coordinator = {recall}"
    );
    let dists = f32s(&res, "distance");
    let qids = u32s(&res, "query_id");
    assert!(qids
        .windows(2)
        .zip(dists.windows(2))
        .all(|(q, d)| q[0] < q[1] || (q[0] == q[1] && d[0] <= d[1])));

    // Upsert moves id 7 far away, visible at once; delete removes id 8 at once.
    put(&mut c, "docs", vec![rows(&[7], &vec![500.0; dim], dim)])
        .await
        .expect("upsert");
    let hit = search(
        &mut c,
        search_cmd("docs", 1),
        queries(&vec![500.0; dim], dim),
    )
    .await
    .expect("search");
    assert_eq!(u64s(&hit, "id"), vec![7]);
    let old7 = search(
        &mut c,
        search_cmd("docs", 5),
        queries(&data[7 * dim..8 * dim], dim),
    )
    .await
    .expect("search");
    assert!(
        !u64s(&old7, "id").contains(&7),
        "old version of 7 still found"
    );
    let deleted = action(
        &mut meta,
        "Delete",
        json!({"namespace": "docs", "ids": [8]}),
    )
    .await
    .expect("delete");
    assert_eq!(deleted["deleted"], 1);
    let q8 = search(
        &mut c,
        search_cmd("docs", 5),
        queries(&data[8 * dim..9 * dim], dim),
    )
    .await
    .expect("search");
    assert!(!u64s(&q8, "id").contains(&8));

    // Filters, get, GetFlightInfo -> DoGet scan.
    let filtered = search(
        &mut c,
        json!({"op": "search", "namespace": "docs", "k": 10, "filter": {"field": "tag", "op": "=", "value": "t3"}, "columns": ["tag"]}),
        queries(&qdata[..dim], dim),
    )
    .await
    .expect("filtered search");
    assert_eq!(filtered.num_rows(), 10);
    assert!(u64s(&filtered, "id").iter().all(|i| i % 10 == 3));
    let got = do_get(
        &mut c,
        json!({"get": {"namespace": "docs", "ids": [9, 8, 19999, 123456]}}),
    )
    .await
    .expect("get");
    assert_eq!(
        u64s(&got[0], "id"),
        vec![9, 19999],
        "request order, missing and deleted ids skipped"
    );
    let info = meta
        .get_flight_info(arrow_flight::FlightDescriptor::new_path(
            vec!["docs".into()],
        ))
        .await
        .map_err(status)
        .expect("flight info");
    assert_eq!(info.total_records, (n - 1) as i64);
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let scanned: Vec<_> = c
        .do_get(ticket)
        .await
        .map_err(status)
        .expect("scan")
        .try_collect_all()
        .await;
    assert_eq!(scanned.iter().map(|b| b.num_rows()).sum::<usize>(), n - 1);
    wait_ready(&mut meta, "docs").await;
    drop((c, meta));

    // Clean restart: catalog, rows and deletes survive.
    local.stop();
    let local = Local::start(tmp.path(), 2);
    let mut meta = local.meta_client().await;
    let mut c = local.data_client().await;
    let stats = action(&mut meta, "GetNamespace", json!({"name": "docs"}))
        .await
        .expect("stats");
    assert_eq!(stats["count"], (n - 1) as u64);
    assert_eq!(stats["shards"], 3);
    let hit = search(
        &mut c,
        search_cmd("docs", 1),
        queries(&vec![500.0; dim], dim),
    )
    .await
    .expect("search");
    assert_eq!(u64s(&hit, "id"), vec![7]);

    // kill -9 after acknowledged writes: they are all there after restart.
    let extra: Vec<u64> = (100_000..100_500).collect();
    let extra_data = synth::clustered(500, dim, 5, 5);
    put(&mut c, "docs", vec![rows(&extra, &extra_data, dim)])
        .await
        .expect("put before kill");
    action(
        &mut meta,
        "Delete",
        json!({"namespace": "docs", "filter": {"field": "price", "op": "=", "value": 42}}),
    )
    .await
    .expect("delete by filter before kill");
    drop((c, meta));
    local.kill9();
    let local = Local::start(tmp.path(), 2);
    let mut meta = local.meta_client().await;
    let mut c = local.data_client().await;
    let stats = action(&mut meta, "GetNamespace", json!({"name": "docs"}))
        .await
        .expect("stats");
    let price42 = (0..n as u64)
        .chain(extra.iter().copied())
        .filter(|i| i % 100 == 42)
        .count() as u64;
    assert_eq!(stats["count"], (n - 1 + 500) as u64 - price42);
    let got = do_get(
        &mut c,
        json!({"get": {"namespace": "docs", "ids": [100_000, 100_499, 142]}}),
    )
    .await
    .expect("get");
    assert_eq!(u64s(&got[0], "id"), vec![100_000, 100_499]);
    local.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_across_three_shards_returns_the_known_order() {
    let tmp = tempfile::tempdir().expect("tmp");
    let local = Local::start(tmp.path(), 3);
    let mut meta = local.meta_client().await;
    let mut c = local.data_client().await;
    action(
        &mut meta,
        "CreateNamespace",
        json!({"name": "line", "dim": 2, "shards": 3}),
    )
    .await
    .expect("create");
    // Points on a line: id i at (i, 0). Ids hash to all three shards.
    let ids: Vec<u64> = (0..30).collect();
    let data: Vec<f32> = ids.iter().flat_map(|&i| [i as f32, 0.0]).collect();
    put(&mut c, "line", vec![rows(&ids, &data, 2)])
        .await
        .expect("put");
    let stats = action(&mut meta, "GetNamespace", json!({"name": "line"}))
        .await
        .expect("stats");
    let per_shard: Vec<u64> = stats["per_shard"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| s["replica"]["count"].as_u64().expect("n"))
        .collect();
    assert!(
        per_shard.iter().all(|&n| n > 0),
        "every shard holds rows: {per_shard:?}"
    );
    let res = search(
        &mut c,
        json!({"op": "search", "namespace": "line", "k": 6}),
        queries(&[10.2, 0.0, 0.0, 0.0], 2),
    )
    .await
    .expect("search");
    assert_eq!(
        u32s(&res, "query_id"),
        vec![0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    );
    assert_eq!(
        u64s(&res, "id"),
        vec![10, 11, 9, 12, 8, 13, 0, 1, 2, 3, 4, 5]
    );
    let d = f32s(&res, "distance");
    assert!((d[0] - 0.2).abs() < 1e-5 && (d[1] - 0.8).abs() < 1e-5 && (d[6]).abs() < 1e-6);

    // VectorSearch and VectorSearchByID answer Arrow IPC stream bytes.
    let ipc = |bytes: bytes::Bytes| {
        let reader =
            arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None)
                .expect("ipc");
        reader.map(|b| b.expect("batch")).collect::<Vec<_>>()
    };
    let raw = raw_action(
        &mut meta,
        "VectorSearch",
        json!({"namespace": "line", "vector": [3.1, 0.0], "k": 2}),
    )
    .await;
    assert_eq!(u64s(&ipc(raw)[0], "id"), vec![3, 4]);
    let raw = raw_action(
        &mut meta,
        "VectorSearchByID",
        json!({"namespace": "line", "id": 20, "k": 2}),
    )
    .await;
    let mut ids = u64s(&ipc(raw)[0], "id");
    ids.sort_unstable();
    assert_eq!(ids, vec![19, 21], "neighbours of 20, itself left out");

    // ListFlights describes the namespace with its schema and row count.
    let flights: Vec<_> = {
        use futures::TryStreamExt;
        meta.list_flights("")
            .await
            .map_err(status)
            .expect("list")
            .try_collect()
            .await
            .map_err(status)
            .expect("flights")
    };
    assert_eq!(flights.len(), 1);
    assert_eq!(flights[0].total_records, 30);
    let schema = flights[0].clone().try_decode_schema().expect("schema");
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, vec!["id", "vector", "price", "tag"]);

    // The HTTP side port serves metrics that count what just happened, and readiness.
    let metrics = http_get(&local.http, "/metrics");
    assert!(
        metrics.contains("longbow_ingest_rows_total 30"),
        "{metrics}"
    );
    assert!(
        metrics.contains("longbow_rpc_requests_total{method=\"DoExchange\",status=\"Ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("longbow_raft_leader 1"), "{metrics}");
    assert!(http_get(&local.http, "/readyz").starts_with("HTTP/1.1 200"));
    local.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_precise_errors_and_the_process_keeps_serving() {
    use tonic::Code;
    let tmp = tempfile::tempdir().expect("tmp");
    let local = Local::start(tmp.path(), 2);
    let mut meta = local.meta_client().await;
    let mut c = local.data_client().await;
    put(
        &mut c,
        "ok",
        vec![rows(&[1, 2, 3], &[0.0, 0.0, 1.0, 1.0, 2.0, 2.0], 2)],
    )
    .await
    .expect("auto-create");
    let mut nan = vec![1.0f32; 2];
    nan[1] = f32::NAN;
    let string_ids = {
        use arrow_array::{RecordBatch, StringArray};
        use arrow_schema::{DataType, Field, Schema};
        use std::sync::Arc;
        let s = Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new(
                "vector",
                DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), 2),
                false,
            ),
        ]);
        RecordBatch::try_new(
            Arc::new(s),
            vec![
                Arc::new(StringArray::from(vec!["a"])),
                vectors(&[1.0, 1.0], 2),
            ],
        )
        .expect("batch")
    };
    let cases: Vec<(Result<_, tonic::Status>, Code, &str)> = vec![
        (put(&mut c, "ok", vec![rows(&[4], &[1.0, 1.0, 1.0], 3)]).await.map(|_| ()), Code::InvalidArgument, "dimension"),
        (put(&mut c, "ok", vec![queries(&[1.0, 1.0], 2)]).await.map(|_| ()), Code::InvalidArgument, "id"),
        (put(&mut c, "ok", vec![rows(&[4], &nan, 2)]).await.map(|_| ()), Code::InvalidArgument, "vector[0]"),
        (put(&mut c, "ok", vec![string_ids]).await.map(|_| ()), Code::InvalidArgument, "id"),
        (search(&mut c, json!({"op": "search", "namespace": "nope", "k": 1}), queries(&[1.0, 1.0], 2)).await.map(|_| ()), Code::NotFound, "nope"),
        (search(&mut c, json!({"op": "search", "namespace": "ok", "k": 0}), queries(&[1.0, 1.0], 2)).await.map(|_| ()), Code::InvalidArgument, "k"),
        (search(&mut c, json!({"op": "search", "namespace": "ok", "k": 100_001}), queries(&[1.0, 1.0], 2)).await.map(|_| ()), Code::InvalidArgument, "k"),
        (search(&mut c, json!({"op": "search", "namespace": "ok", "k": 1, "filter": {"field": "nope", "op": "=", "value": 1}}), queries(&[1.0, 1.0], 2)).await.map(|_| ()), Code::InvalidArgument, "nope"),
        (search(&mut c, json!({"op": "search", "namespace": "ok", "k": 1}), queries(&[1.0, 1.0, 1.0], 3)).await.map(|_| ()), Code::InvalidArgument, "dimension"),
        (do_get(&mut c, json!({"get": "not an object"})).await.map(|_| ()), Code::InvalidArgument, "ticket"),
        (action(&mut meta, "CreateNamespace", json!({"name": "ok", "dim": 2})).await.map(|_| ()), Code::AlreadyExists, "ok"),
        (action(&mut meta, "CreateNamespace", json!({"name": "m", "dim": 2, "metric": "hamming"})).await.map(|_| ()), Code::InvalidArgument, "metric"),
        (action(&mut meta, "CreateNamespace", json!({"name": "m", "dim": 0})).await.map(|_| ()), Code::InvalidArgument, "dim"),
        (action(&mut meta, "Frobnicate", json!({})).await.map(|_| ()), Code::Unimplemented, "Frobnicate"),
        (action(&mut meta, "RestoreSnapshot", json!({"namespace": "ok", "snapshot": "nope-snap"})).await.map(|_| ()), Code::NotFound, "nope-snap"),
        (action(&mut meta, "Snapshot", json!({"name": "ok", "label": 1})).await.map(|_| ()), Code::InvalidArgument, "label"),
        (action(&mut meta, "GetNamespace", json!({"name": "nope"})).await.map(|_| ()), Code::NotFound, "nope"),
    ];
    for (r, code, needle) in cases {
        let st = r.expect_err("must fail");
        assert_eq!(st.code(), code, "{st:?}");
        assert!(
            st.message().contains(needle),
            "{:?} should mention {needle:?}",
            st.message()
        );
    }
    // Malformed JSON body.
    let st = meta
        .do_action(arrow_flight::Action::new("CreateNamespace", "{oops"))
        .await
        .err()
        .map(status)
        .expect("err");
    assert_eq!(st.code(), Code::InvalidArgument);
    // An oversized message is back-pressure, not a crash.
    let big: Vec<u64> = (0..600_000).collect();
    let big_data = vec![0.5f32; 600_000 * 32];
    put(&mut c, "wide", vec![rows(&[1], &[1.0; 32], 32)])
        .await
        .expect("create wide");
    let st = put_with_limit(&mut c, "wide", vec![rows(&big, &big_data, 32)], usize::MAX)
        .await
        .expect_err("oversized");
    assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
    // Still serving, earlier data intact.
    let res = search(
        &mut c,
        json!({"op": "search", "namespace": "ok", "k": 3}),
        queries(&[0.0, 0.0], 2),
    )
    .await
    .expect("search");
    assert_eq!(u64s(&res, "id"), vec![1, 2, 3]);
    local.stop();
}

async fn raw_action(
    c: &mut arrow_flight::FlightClient,
    kind: &str,
    body: serde_json::Value,
) -> bytes::Bytes {
    let mut s = c
        .do_action(arrow_flight::Action::new(
            kind,
            serde_json::to_vec(&body).expect("json"),
        ))
        .await
        .map_err(status)
        .expect("action");
    futures::StreamExt::next(&mut s)
        .await
        .expect("a result")
        .map_err(status)
        .expect("result")
}

trait CollectAll {
    async fn try_collect_all(self) -> Vec<arrow_array::RecordBatch>;
}

impl CollectAll for arrow_flight::decode::FlightRecordBatchStream {
    async fn try_collect_all(self) -> Vec<arrow_array::RecordBatch> {
        use futures::TryStreamExt;
        self.try_collect().await.map_err(status).expect("stream")
    }
}
