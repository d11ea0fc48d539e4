//! The shard Flight API end to end over a real socket: create, write, search, get, scan,
//! delete, restart from the same directory, and precise errors for bad input; and the
//! in-process search (`longbow local`) answering exactly what the Flight search answers.

mod common;

use arrow_array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{Action, FlightClient, FlightDescriptor, Ticket};
use common::*;
use futures::{StreamExt, TryStreamExt};
use longbow_common::in_process::InProcessShard;
use longbow_common::shard_api::{DeleteResponse, ReplicaStats, SearchCommand, WriteAck};
use longbow_shard::synth;
use serde_json::json;

async fn action(
    c: &mut FlightClient,
    kind: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, tonic::Status> {
    let action = Action::new(kind, serde_json::to_vec(&body).expect("json"));
    let mut stream = c.do_action(action).await.map_err(status)?;
    let bytes = stream.next().await.expect("one result").map_err(status)?;
    Ok(serde_json::from_slice(&bytes).expect("json reply"))
}

async fn put(
    c: &mut FlightClient,
    ns: &str,
    batches: Vec<RecordBatch>,
) -> Result<Vec<WriteAck>, tonic::Status> {
    let cmd =
        serde_json::to_vec(&json!({"op": "write", "namespace": ns, "shard": 0})).expect("json");
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(cmd)))
        .build(futures::stream::iter(batches.into_iter().map(Ok)));
    let results = c.do_put(data).await.map_err(status)?;
    let acks: Vec<_> = results.try_collect().await.map_err(status)?;
    Ok(acks
        .iter()
        .map(|r| serde_json::from_slice(&r.app_metadata).expect("ack json"))
        .collect())
}

async fn search(
    c: &mut FlightClient,
    cmd: serde_json::Value,
    queries: RecordBatch,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(
            serde_json::to_vec(&cmd).expect("json"),
        )))
        .build(futures::stream::iter([Ok(queries)]));
    let stream = c.do_exchange(data).await.map_err(status)?;
    stream.try_collect().await.map_err(status)
}

async fn get(
    c: &mut FlightClient,
    ticket: serde_json::Value,
) -> Result<Vec<RecordBatch>, tonic::Status> {
    let stream = c
        .do_get(Ticket::new(serde_json::to_vec(&ticket).expect("json")))
        .await
        .map_err(status)?;
    stream.try_collect().await.map_err(status)
}

fn search_cmd(ns: &str, k: usize) -> serde_json::Value {
    json!({"op": "search", "namespace": ns, "shard": 0, "k": k, "columns": ["price", "tag"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_search_delete_restart_over_flight() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dim = 16;
    let n = 5_000usize;
    let data = synth::clustered(n, dim, 10, 21);
    let server = start(tmp.path()).await;
    let mut c = client(server.addr).await;

    let info = action(
        &mut c,
        "CreateReplica",
        json!({"namespace": "docs", "shard": 0, "dim": dim, "metric": "l2"}),
    )
    .await
    .expect("create");
    assert_eq!(info["dim"], dim);

    let batches: Vec<RecordBatch> = (0..5)
        .map(|b| {
            let ids: Vec<u64> = (b * 1000..(b + 1) * 1000).map(|i| i as u64).collect();
            batch(&ids, &data[b * 1000 * dim..(b + 1) * 1000 * dim], dim)
        })
        .collect();
    let acks = put(&mut c, "docs", batches).await.expect("put");
    assert_eq!(acks.len(), 5, "one PutResult per batch");
    assert!(acks.iter().all(|a| a.rows == 1000));
    assert!(acks.windows(2).all(|w| w[0].lsn < w[1].lsn));

    // Search 3 queries that are stored rows: each must come back first with distance 0.
    let probes = [17usize, 2_222, 4_999];
    let qdata: Vec<f32> = probes
        .iter()
        .flat_map(|&p| data[p * dim..(p + 1) * dim].to_vec())
        .collect();
    let res = search(&mut c, search_cmd("docs", 5), query_batch(&qdata, dim))
        .await
        .expect("search");
    let res = arrow_select::concat::concat_batches(&res[0].schema(), &res).expect("concat");
    assert_eq!(res.num_rows(), 15);
    let qids: Vec<u32> = res
        .column(0)
        .as_any()
        .downcast_ref::<arrow_array::UInt32Array>()
        .expect("u32")
        .values()
        .to_vec();
    let ids = u64_column(&res, "id");
    let dists = f32_column(&res, "distance");
    for (qi, &p) in probes.iter().enumerate() {
        assert_eq!(qids[qi * 5], qi as u32);
        assert_eq!(ids[qi * 5], p as u64);
        assert_eq!(dists[qi * 5], 0.0);
        assert!(
            dists[qi * 5..qi * 5 + 5].windows(2).all(|w| w[0] <= w[1]),
            "sorted by distance"
        );
    }
    assert_eq!(res.schema().field(4).name(), "price");
    assert_eq!(res.schema().field(5).name(), "tag");

    // Delete by id and by filter, then the rows are gone from search and get.
    let del: DeleteResponse = serde_json::from_value(
        action(
            &mut c,
            "DeleteRows",
            json!({"namespace": "docs", "shard": 0, "ids": [17, 2222]}),
        )
        .await
        .expect("delete"),
    )
    .expect("reply");
    assert_eq!(del.deleted, 2);
    let del: DeleteResponse = serde_json::from_value(
        action(&mut c, "DeleteRows", json!({"namespace": "docs", "shard": 0, "filter": {"field": "tag", "op": "=", "value": "t9"}}))
            .await
            .expect("delete by filter"),
    )
    .expect("reply");
    assert_eq!(del.deleted, 500);
    let res = search(
        &mut c,
        search_cmd("docs", 1),
        query_batch(&qdata[..dim], dim),
    )
    .await
    .expect("search");
    assert_ne!(u64_column(&res[0], "id")[0], 17);
    let got = get(
        &mut c,
        json!({"get": {"namespace": "docs", "shard": 0, "ids": [17, 18, 4999]}}),
    )
    .await
    .expect("get");
    assert_eq!(
        u64_column(&got[0], "id"),
        vec![18],
        "17 deleted, 4999 has tag t9"
    );
    assert!(got[0].column_by_name("vector").is_some());

    let scanned = get(&mut c, json!({"scan": {"namespace": "docs", "shard": 0, "filter": {"field": "price", "op": "<", "value": 2}}}))
        .await
        .expect("scan");
    let scanned: usize = scanned.iter().map(|b| b.num_rows()).sum();
    assert_eq!(scanned, 100, "ids with id % 100 < 2");

    let stats: ReplicaStats = serde_json::from_value(
        action(
            &mut c,
            "ReplicaStats",
            json!({"namespace": "docs", "shard": 0}),
        )
        .await
        .expect("stats"),
    )
    .expect("stats json");
    assert_eq!(stats.count, 5_000 - 2 - 500);
    drop(c);
    server.stop().await;

    // Restart on the same directory: everything acknowledged is still there.
    let server = start(tmp.path()).await;
    let mut c = client(server.addr).await;
    let stats: ReplicaStats = serde_json::from_value(
        action(
            &mut c,
            "ReplicaStats",
            json!({"namespace": "docs", "shard": 0}),
        )
        .await
        .expect("stats"),
    )
    .expect("stats json");
    assert_eq!(stats.count, 4_498);
    assert_eq!(stats.lsn, 7);
    let res = search(
        &mut c,
        search_cmd("docs", 1),
        query_batch(&data[3_000 * dim..3_001 * dim], dim),
    )
    .await
    .expect("search");
    assert_eq!(u64_column(&res[0], "id"), vec![3_000]);
    let got = get(
        &mut c,
        json!({"get": {"namespace": "docs", "shard": 0, "ids": [17, 2222, 4999, 4998]}}),
    )
    .await
    .expect("get");
    assert_eq!(u64_column(&got[0], "id"), vec![4998]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_precise_errors_and_the_node_keeps_serving() {
    let tmp = tempfile::tempdir().expect("tmp");
    let server = start(tmp.path()).await;
    let mut c = client(server.addr).await;
    action(
        &mut c,
        "CreateReplica",
        json!({"namespace": "a", "shard": 0, "dim": 4}),
    )
    .await
    .expect("create");
    put(&mut c, "a", vec![batch(&[1, 2], &[1.0; 8], 4)])
        .await
        .expect("put");

    let cases: Vec<(tonic::Status, tonic::Code, &str)> = vec![
        (action(&mut c, "CreateReplica", json!({"namespace": "a", "shard": 0, "dim": 4})).await.expect_err("dup"), tonic::Code::AlreadyExists, "already exists"),
        (action(&mut c, "CreateReplica", json!({"namespace": "b", "shard": 0, "dim": 4, "metric": "manhattan"})).await.expect_err("metric"), tonic::Code::InvalidArgument, "metric"),
        (action(&mut c, "CreateReplica", json!({"namespace": "../x", "shard": 0, "dim": 4})).await.expect_err("name"), tonic::Code::InvalidArgument, "namespace"),
        (action(&mut c, "CreateReplica", json!({"namespace": "c", "shard": 0, "dim": 0})).await.expect_err("dim"), tonic::Code::InvalidArgument, "dim"),
        (action(&mut c, "ReplicaStats", json!({"namespace": "nope", "shard": 0})).await.expect_err("missing"), tonic::Code::NotFound, "nope"),
        (action(&mut c, "Frobnicate", json!({})).await.expect_err("unknown action"), tonic::Code::Unimplemented, "Frobnicate"),
        (action(&mut c, "DeleteRows", json!({"namespace": "a", "shard": 0, "ids": ["x"]})).await.expect_err("string id"), tonic::Code::InvalidArgument, "ids[0]"),
        (put(&mut c, "a", vec![batch(&[3], &[1.0; 3], 3)]).await.expect_err("dim"), tonic::Code::InvalidArgument, "dimension"),
        (put(&mut c, "a", vec![batch(&[3], &[f32::NAN, 1.0, 1.0, 1.0], 4)]).await.expect_err("nan"), tonic::Code::InvalidArgument, "vector[0]"),
        (put(&mut c, "a", vec![query_batch(&[1.0; 4], 4)]).await.expect_err("no id"), tonic::Code::InvalidArgument, "id"),
        (put(&mut c, "zzz", vec![batch(&[3], &[1.0; 4], 4)]).await.expect_err("unknown"), tonic::Code::NotFound, "zzz"),
        (search(&mut c, search_cmd("a", 0), query_batch(&[1.0; 4], 4)).await.expect_err("k=0"), tonic::Code::InvalidArgument, "k"),
        (search(&mut c, json!({"op": "search", "namespace": "a", "shard": 0, "k": 1, "filter": {"field": "price", "op": "~"}}), query_batch(&[1.0; 4], 4)).await.expect_err("filter"), tonic::Code::InvalidArgument, "filter.op"),
        (search(&mut c, search_cmd("a", 1), query_batch(&[1.0; 5], 5)).await.expect_err("query dim"), tonic::Code::InvalidArgument, "dimension"),
        (search(&mut c, json!({"op": "search", "namespace": "a", "shard": 0, "k": 1, "columns": ["nope"]}), query_batch(&[1.0; 4], 4)).await.expect_err("column"), tonic::Code::InvalidArgument, "nope"),
        (get(&mut c, json!({"get": {"namespace": "a"}})).await.expect_err("ticket"), tonic::Code::InvalidArgument, "ticket"),
    ];
    for (st, code, needle) in cases {
        assert_eq!(st.code(), code, "{st:?}");
        assert!(
            st.message().contains(needle),
            "message {:?} should mention {needle:?}",
            st.message()
        );
    }
    // Malformed JSON in an action body.
    let st = c
        .do_action(Action::new("CreateReplica", "{not json"))
        .await
        .err()
        .map(status)
        .expect("err");
    assert_eq!(st.code(), tonic::Code::InvalidArgument);

    // Earlier data is intact and the node still serves.
    let res = search(&mut c, search_cmd("a", 2), query_batch(&[1.0; 4], 4))
        .await
        .expect("search");
    let mut ids = u64_column(&res[0], "id");
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2]);

    // Dropping a replica removes it and its files; the name can be created again.
    action(&mut c, "DropReplica", json!({"namespace": "a", "shard": 0}))
        .await
        .expect("drop");
    let st = action(
        &mut c,
        "ReplicaStats",
        json!({"namespace": "a", "shard": 0}),
    )
    .await
    .expect_err("gone");
    assert_eq!(st.code(), tonic::Code::NotFound);
    assert!(!tmp.path().join("replicas/a/0").exists());
    action(
        &mut c,
        "CreateReplica",
        json!({"namespace": "a", "shard": 0, "dim": 8}),
    )
    .await
    .expect("recreate");
    let listed = action(&mut c, "ListReplicas", json!({}))
        .await
        .expect("list");
    assert_eq!(listed[0]["dim"], 8);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_search_answers_exactly_what_the_flight_search_answers() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dim = 8;
    let n = 3_000usize;
    let data = synth::clustered(n, dim, 10, 5);
    let server = start(tmp.path()).await;
    let mut c = client(server.addr).await;
    action(
        &mut c,
        "CreateReplica",
        json!({"namespace": "p", "shard": 0, "dim": dim}),
    )
    .await
    .expect("create");
    let ids: Vec<u64> = (0..n as u64).collect();
    put(&mut c, "p", vec![batch(&ids, &data, dim)])
        .await
        .expect("put");
    let local = server.service();
    let queries = query_batch(&data[..5 * dim], dim);
    let filtered = json!({"op": "search", "namespace": "p", "shard": 0, "k": 7, "ef": 40,
        "filter": {"field": "price", "op": "<", "value": 30}, "columns": ["tag"],
        "include_vectors": true});
    let mut ef_zero = search_cmd("p", 3);
    ef_zero["ef"] = json!(0);
    let mut not_search = search_cmd("p", 3);
    not_search["op"] = json!("scan");
    let cmds = [
        search_cmd("p", 10),
        filtered,
        ef_zero,
        not_search,
        search_cmd("p", 0),
        search_cmd("nope", 3),
    ];
    for cmd in cmds {
        let typed: SearchCommand = serde_json::from_value(cmd.clone()).expect("command");
        let over_flight = search(&mut c, cmd.clone(), queries.clone()).await;
        let in_process = local.search(typed, queries.clone()).await;
        match (over_flight, in_process) {
            (Ok(a), Ok(b)) => {
                let a = arrow_select::concat::concat_batches(&a[0].schema(), &a).expect("concat");
                let b = arrow_select::concat::concat_batches(&b[0].schema(), &b).expect("concat");
                assert!(a.num_rows() > 0, "{cmd}");
                assert_eq!(a, b, "{cmd}");
            }
            (Err(a), Err(b)) => {
                assert_eq!((a.code(), a.message()), (b.code(), b.message()), "{cmd}");
            }
            (a, b) => panic!("{cmd}: over Flight {a:?}, in-process {b:?}"),
        }
    }
    server.stop().await;
}
