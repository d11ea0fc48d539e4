//! Fuzzing the client-facing wire: damaged DoPut and DoExchange streams sent to the real
//! `longbow local` binary (the coordinator decodes, splits by shard and forwards them).
//! Every refusal must be a contract error, no call may hang, the process must keep serving
//! and must stop cleanly, and a restart must bring back exactly the rows acknowledged.
//! `LONGBOW_FUZZ_CASES` and `LONGBOW_FUZZ_SEED` run longer or different sequences.

mod common;
#[path = "../shard/tests/support/fuzz.rs"]
mod fuzz;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightData, FlightDescriptor};
use common::*;
use futures::TryStreamExt;
use fuzz::{env_or, send_damaged_calls};
use serde_json::json;

async fn messages(
    descriptor: FlightDescriptor,
    batch: arrow_array::RecordBatch,
) -> Vec<FlightData> {
    FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(descriptor))
        .build(futures::stream::iter([Ok(batch)]))
        .try_collect()
        .await
        .expect("encode")
}

async fn count(local: &Local) -> u64 {
    let mut meta = local.meta_client().await;
    let info = action(&mut meta, "GetNamespace", json!({"name": "fz"}))
        .await
        .expect("GetNamespace");
    info["count"].as_u64().expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_client_streams_get_contract_errors_and_lose_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let local = Local::start(tmp.path(), 2);
    let mut meta = local.meta_client().await;
    action(
        &mut meta,
        "CreateNamespace",
        json!({"name": "fz", "dim": 4, "shards": 2}),
    )
    .await
    .expect("create");
    let mut data = local.data_client().await;

    let ids: Vec<u64> = (0..32).collect();
    let vectors: Vec<f32> = (0..128).map(|i| i as f32 / 16.0).collect();
    let put = messages(
        FlightDescriptor::new_path(vec!["fz".into()]),
        rows(&ids, &vectors, 4),
    )
    .await;
    let search = json!({"op": "search", "namespace": "fz", "k": 3, "columns": ["tag"]});
    let exchange = messages(
        FlightDescriptor::new_cmd(serde_json::to_vec(&search).expect("json")),
        queries(&vectors[..8], 4),
    )
    .await;

    send_damaged_calls(
        &mut data,
        &put,
        &exchange,
        env_or("LONGBOW_FUZZ_CASES", 150),
        env_or("LONGBOW_FUZZ_SEED", 0xc0ffee),
    )
    .await;

    // Still serving: a clean put and a clean search.
    let acks = put_with_limit(&mut data, "fz", vec![rows(&ids, &vectors, 4)], 2 << 20)
        .await
        .expect("clean put");
    assert_eq!(acks, vec![32]);
    let found: Vec<_> = data
        .do_exchange(futures::stream::iter(exchange.into_iter().map(Ok)))
        .await
        .map_err(status)
        .expect("clean search")
        .try_collect()
        .await
        .map_err(status)
        .expect("clean search results");
    assert_eq!(found.iter().map(|b| b.num_rows()).sum::<usize>(), 2 * 3);

    // Caught decoder panics are counted where operators look.
    let metrics = http_get(&local.http, "/metrics");
    assert!(
        metrics.contains("longbow_flight_decoder_panics_total"),
        "{metrics}"
    );

    // A clean stop, and a restart with exactly the acknowledged rows.
    let before = count(&local).await;
    eprintln!("rows before restart: {before}");
    assert!(before >= ids.len() as u64);
    local.stop();
    let local = Local::start(tmp.path(), 2);
    assert_eq!(count(&local).await, before);
    local.stop();
}
