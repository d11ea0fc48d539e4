//! Fuzzing the shard's wire parsers: valid DoPut and DoExchange streams with random damage
//! (flipped bytes in Arrow IPC headers and bodies, truncated bodies, dropped, repeated or
//! reordered messages). Every reply may be an error, but it must be a contract error
//! (INVALID_ARGUMENT or NOT_FOUND), no call may hang, no panic may escape the decoder guard,
//! the node must keep serving, and a restart must replay exactly what was acknowledged.
//!
//! One test per binary on purpose: the panic counter sees every thread of this process.
//! `LONGBOW_FUZZ_CASES` and `LONGBOW_FUZZ_SEED` run longer or different sequences.

mod common;
#[path = "support/fuzz.rs"]
mod fuzz;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{Action, FlightData, FlightDescriptor};
use common::*;
use futures::{StreamExt, TryStreamExt};
use fuzz::{env_or, send_damaged_calls};
use longbow_common::shard_api::ReplicaStats;
use serde_json::json;

/// The FlightData messages of one well-formed call.
async fn messages(cmd: serde_json::Value, batch: arrow_array::RecordBatch) -> Vec<FlightData> {
    FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(
            serde_json::to_vec(&cmd).expect("json"),
        )))
        .build(futures::stream::iter([Ok(batch)]))
        .try_collect()
        .await
        .expect("encode")
}

async fn stats(c: &mut arrow_flight::FlightClient) -> ReplicaStats {
    let body = serde_json::to_vec(&json!({"namespace": "fz", "shard": 0})).expect("json");
    let mut s = c
        .do_action(Action::new("ReplicaStats", body))
        .await
        .map_err(status)
        .expect("stats");
    let bytes = s
        .next()
        .await
        .expect("a result")
        .map_err(status)
        .expect("ok");
    serde_json::from_slice(&bytes).expect("stats json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_put_and_exchange_streams_never_panic_hang_or_lose_acknowledged_rows() {
    let panics = Arc::new(AtomicUsize::new(0));
    let seen = panics.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        seen.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));

    let tmp = tempfile::tempdir().expect("tmp");
    let server = start(tmp.path()).await;
    let mut c = client(server.addr).await;
    let create = json!({"namespace": "fz", "shard": 0, "dim": 4});
    let created = c
        .do_action(Action::new(
            "CreateReplica",
            serde_json::to_vec(&create).expect("json"),
        ))
        .await
        .map_err(status)
        .expect("create");
    let _: Vec<_> = created
        .try_collect()
        .await
        .map_err(status)
        .expect("created");

    let ids: Vec<u64> = (0..16).collect();
    let vectors: Vec<f32> = (0..64).map(|i| i as f32 / 8.0).collect();
    let put = messages(
        json!({"op": "write", "namespace": "fz", "shard": 0}),
        batch(&ids, &vectors, 4),
    )
    .await;
    let exchange = messages(
        json!({"op": "search", "namespace": "fz", "shard": 0, "k": 3, "columns": ["tag"]}),
        query_batch(&vectors[..8], 4),
    )
    .await;

    let seed = env_or("LONGBOW_FUZZ_SEED", 0x5eed);
    // A batch whose body was cut short is refused with the message naming what is wrong.
    let mut cut = put.clone();
    let last = cut.len() - 1;
    cut[last].data_body = cut[last].data_body.slice(..8);
    let st = match c
        .do_put(futures::stream::iter(cut.into_iter().map(Ok)))
        .await
    {
        Ok(replies) => replies.try_collect::<Vec<_>>().await.map(|_| ()),
        Err(e) => Err(e),
    }
    .map_err(status)
    .expect_err("a truncated body is refused");
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    assert!(
        st.message().contains("lies outside the 8-byte data_body"),
        "{}",
        st.message()
    );

    send_damaged_calls(
        &mut c,
        &put,
        &exchange,
        env_or("LONGBOW_FUZZ_CASES", 400),
        seed,
    )
    .await;
    let caught = longbow_common::flight::decoder_panics();
    eprintln!("panics caught by the decoder guard: {caught}");
    assert_eq!(
        panics.load(Ordering::SeqCst) as u64,
        caught,
        "a panic escaped the decoder guard"
    );

    // The node still serves well-formed calls.
    let acks: Vec<_> = c
        .do_put(futures::stream::iter(put.clone().into_iter().map(Ok)))
        .await
        .map_err(status)
        .expect("clean put")
        .try_collect()
        .await
        .map_err(status)
        .expect("clean put acks");
    assert_eq!(acks.len(), 1);
    let found: Vec<_> = c
        .do_exchange(futures::stream::iter(exchange.clone().into_iter().map(Ok)))
        .await
        .map_err(status)
        .expect("clean exchange")
        .try_collect()
        .await
        .map_err(status)
        .expect("clean exchange results");
    assert_eq!(found.iter().map(|b| b.num_rows()).sum::<usize>(), 2 * 3);

    // Whatever was acknowledged comes back, exactly, after a restart.
    let before = stats(&mut c).await;
    assert!(before.count >= ids.len() as u64);
    server.stop().await;
    let server = start(tmp.path()).await;
    let mut c = client(server.addr).await;
    let after = stats(&mut c).await;
    assert_eq!((after.count, after.lsn), (before.count, before.lsn));
    server.stop().await;
    assert_eq!(
        panics.load(Ordering::SeqCst) as u64,
        caught,
        "the restart panicked"
    );
}
