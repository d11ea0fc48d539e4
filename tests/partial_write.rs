//! A batch half-written because a shard node died: real processes (`longbow coordinator`, two
//! `longbow shard`), the node killed with SIGKILL. The client gets a retryable `partial_write`
//! error naming the namespace, shard and node; once the node is back, sending the same batch
//! again is idempotent (writes are upserts by id): every row once, none lost, none doubled.

mod common;

use std::time::{Duration, Instant};

use common::*;

const DIM: usize = 4;

async fn count(c: &mut arrow_flight::FlightClient) -> u64 {
    action(c, "GetNamespace", serde_json::json!({"name": "pw"}))
        .await
        .expect("stats")["count"]
        .as_u64()
        .expect("count")
}

fn batch(lo: u64, hi: u64) -> arrow_array::RecordBatch {
    let ids: Vec<u64> = (lo..hi).collect();
    let data: Vec<f32> = ids
        .iter()
        .flat_map(|&i| (0..DIM).map(move |d| (i * 7 + d as u64) as f32 * 0.01))
        .collect();
    rows(&ids, &data, DIM)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_half_written_by_a_dead_node_is_retryable_and_its_retry_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut coord, data_uri, internal) = coordinator(&dir.path().join("coordinator"));
    let a = shard(&dir.path().join("shard-a"), &internal);
    let mut b = shard(&dir.path().join("shard-b"), &internal);
    let mut c = connect(&data_uri).await;
    wait_live(&mut c, 2).await;
    action(
        &mut c,
        "CreateNamespace",
        serde_json::json!({"name": "pw", "dim": DIM, "shards": 2}),
    )
    .await
    .expect("create");
    put(&mut c, "pw", vec![batch(0, 200)]).await.expect("put");
    assert_eq!(count(&mut c).await, 200);

    // SIGKILL one node: its shard's part of the next batch fails, the other shard's is stored.
    b.kill().expect("kill -9");
    let _ = b.wait();
    let err = put(&mut c, "pw", vec![batch(200, 400)])
        .await
        .expect_err("a node is down");
    let md = |k: &str| {
        err.metadata()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());
    assert_eq!(md("x-longbow-error-code").as_deref(), Some("partial_write"));
    assert_eq!(md("x-longbow-retryable").as_deref(), Some("true"));
    let msg = err.message();
    assert!(
        msg.contains("namespace 'pw' shard") && msg.contains("on node"),
        "the error names the shard and the node: {msg}"
    );
    assert!(msg.contains("retrying the whole batch is safe"), "{msg}");

    // The node comes back from its data directory; the client sends the same batch again.
    let b = shard(&dir.path().join("shard-b"), &internal);
    let deadline = Instant::now() + Duration::from_secs(30);
    let acks = loop {
        match put(&mut c, "pw", vec![batch(200, 400)]).await {
            Ok(a) => break a,
            Err(e) => {
                assert!(Instant::now() < deadline, "retry kept failing: {e}");
                assert_eq!(
                    e.metadata()
                        .get("x-longbow-retryable")
                        .and_then(|v| v.to_str().ok()),
                    Some("true"),
                    "{e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(acks, vec![200]);
    assert_eq!(
        count(&mut c).await,
        400,
        "every row once: none lost, none doubled"
    );
    let ids: Vec<u64> = (0..400).collect();
    let got = do_get(
        &mut c,
        serde_json::json!({"get": {"namespace": "pw", "ids": ids, "include_vectors": false}}),
    )
    .await
    .expect("get");
    let found: usize = got.iter().map(|b| b.num_rows()).sum();
    assert_eq!(found, 400);

    for mut child in [a, b] {
        terminate(&mut child);
    }
    terminate(&mut coord);
}
