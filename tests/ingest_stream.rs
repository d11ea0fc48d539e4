//! One long DoPut stream through real processes (`longbow coordinator`, three `longbow
//! shard`), its batches sent without waiting for their acknowledgements, while a shard
//! primary fails under it (SIGKILL, or SIGSTOP: its sockets stay open and it answers
//! nothing).
//!
//! Specification: the stream rides out the failover: every batch is acknowledged, in the
//! order sent, nothing acknowledged is lost, and every id rewritten by many batches holds
//! the value of the last one (the coordinator never reorders the writes of a stream, not
//! even when it writes a failed primary's unacknowledged batches again to the new one).

mod common;

use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::FlightDescriptor;
use futures::{SinkExt, StreamExt};
use serde_json::Value;

use common::replicas::*;
use common::*;

/// Batches in the stream.
const ROUNDS: u64 = 40;
/// Ids every batch rewrites.
const REWRITTEN: u64 = 200;
/// New ids each batch adds (from [`FRESH_BASE`]).
const FRESH: u64 = 20;
const FRESH_BASE: u64 = 1_000;

/// The ids batch `r` adds.
fn fresh(r: u64) -> std::ops::Range<u64> {
    FRESH_BASE + r * FRESH..FRESH_BASE + (r + 1) * FRESH
}

/// Batch `r`, all with the values of salt `r`: ids `0..REWRITTEN`, the ids batch `r - 1`
/// added (so two batches in a row must land in order) and `FRESH` new ids.
fn round(r: u64) -> RecordBatch {
    let ids: Vec<u64> = (0..REWRITTEN)
        .chain(fresh(r - 1).filter(move |_| r > 1))
        .chain(fresh(r))
        .collect();
    let data: Vec<f32> = ids
        .iter()
        .flat_map(|&i| (0..DIM).map(move |d| ((i * 7 + d as u64 + r) % 1000) as f32 * 0.01))
        .collect();
    rows(&ids, &data, DIM)
}

/// A DoPut the test feeds batch by batch, and the acknowledgements (rows) as they come.
struct Stream {
    batches: futures::channel::mpsc::Sender<RecordBatch>,
    acks: tokio::sync::mpsc::UnboundedReceiver<Result<u64, tonic::Status>>,
}

impl Stream {
    async fn open(c: &mut arrow_flight::FlightClient, first: RecordBatch) -> Stream {
        let (mut batches, rx) = futures::channel::mpsc::channel(ROUNDS as usize);
        batches.send(first).await.expect("queue the first batch");
        let data = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_path(vec![NS.to_string()])))
            .build(rx.map(Ok));
        let results = c.do_put(data).await.map_err(status).expect("DoPut");
        let (tx, acks) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut results = results;
            while let Some(r) = results.next().await {
                let ack = r.map_err(status).map(|r| {
                    let v: Value = serde_json::from_slice(&r.app_metadata).expect("ack json");
                    v["rows"].as_u64().expect("rows")
                });
                let failed = ack.is_err();
                if tx.send(ack).is_err() || failed {
                    return;
                }
            }
        });
        Stream { batches, acks }
    }

    async fn send(&mut self, b: RecordBatch) {
        self.batches.send(b).await.expect("queue a batch");
    }

    /// The next acknowledgement, waiting at most 90 s; `None` once the stream ended.
    async fn ack(&mut self) -> Option<Result<u64, tonic::Status>> {
        tokio::time::timeout(Duration::from_secs(90), self.acks.recv())
            .await
            .expect("an acknowledgement within 90 s")
    }
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: the pid is a child this test started and has not reaped.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Send `ROUNDS` batches on one stream, failing shard 0's primary with `fault` after the
/// first acknowledgements, and check what the specification says.
async fn one_stream_survives(fault: i32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut coord, mut c, _internal, mut nodes) = start_cluster(dir.path(), 3, &[], &[]).await;
    create_namespace(&mut c, 2, 3).await;
    let victim = primary_of(&mut c, &nodes, 0).await;
    let victim_id = node_ids(&mut c).await[&nodes[victim].addr];

    let mut stream = Stream::open(&mut c, round(1)).await;
    for r in 2..=10 {
        stream.send(round(r)).await;
    }
    let mut acked = Vec::new();
    while acked.len() < 5 {
        acked.push(stream.ack().await.expect("open").expect("acknowledged"));
    }
    signal(&nodes[victim].child, fault);
    let faulted = Instant::now();
    for r in 11..=ROUNDS {
        stream.send(round(r)).await;
    }
    stream.batches.close_channel();
    while let Some(ack) = stream.ack().await {
        acked.push(ack.unwrap_or_else(|e| {
            panic!(
                "batch {} failed {:?} after the fault: {e}",
                acked.len() + 1,
                faulted.elapsed()
            )
        }));
    }
    let sizes: Vec<u64> = (1..=ROUNDS)
        .map(|r| REWRITTEN + if r > 1 { 2 * FRESH } else { FRESH })
        .collect();
    assert_eq!(acked, sizes, "every batch acknowledged once, in order");

    // Shard 0 failed over, so its unacknowledged writes went to the new primary.
    let s = stats(&mut c).await;
    let sh0 = &s["per_shard"][0];
    assert_ne!(sh0["primary"].as_u64(), Some(victim_id), "{sh0}");
    assert!(sh0["epoch"].as_u64().expect("epoch") >= 2, "{sh0}");

    let got = stored(&mut c, fresh(ROUNDS).end).await;
    for (id, v) in values(0, REWRITTEN, ROUNDS) {
        assert_eq!(
            got.get(&id),
            Some(&v),
            "id {id} holds the last batch's value"
        );
    }
    for r in 1..=ROUNDS {
        // The next batch wrote these ids again.
        let last = (r + 1).min(ROUNDS);
        for (id, v) in values(fresh(r).start, fresh(r).end, last) {
            assert_eq!(got.get(&id), Some(&v), "id {id} holds batch {last}'s value");
        }
    }
    assert_eq!(got.len() as u64, REWRITTEN + ROUNDS * FRESH);

    if fault == libc::SIGSTOP {
        signal(&nodes[victim].child, libc::SIGCONT);
    } else {
        let _ = nodes[victim].child.wait();
    }
    for (i, n) in nodes.iter_mut().enumerate() {
        if i != victim || fault == libc::SIGSTOP {
            terminate(&mut n.child);
        }
    }
    terminate(&mut coord);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_rides_out_a_killed_primary_with_every_batch_acknowledged_in_order() {
    one_stream_survives(libc::SIGKILL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_rides_out_a_stopped_primary_with_every_batch_acknowledged_in_order() {
    one_stream_survives(libc::SIGSTOP).await;
}
