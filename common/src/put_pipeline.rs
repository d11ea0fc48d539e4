//! The acknowledgement pipeline of a DoPut stream, shared by coordinators and shard nodes:
//! batches are started in stream order while fewer than a window are unacknowledged, and
//! their acknowledgements go back in that same order.
//!
//! It owns only the ordering and the window. What "start" and "durable" mean (the shard's
//! WAL queue, the coordinator's per-shard lanes) belongs to the caller; this module must
//! never look inside a batch.

use std::collections::VecDeque;
use std::future::Future;

use arrow_array::RecordBatch;
use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::Status;

use crate::flight::{stream_error, RequestBatches};

/// How one DoPut stream starts its batches.
pub trait PutStage: Send {
    /// What an acknowledged batch says.
    type Ack: Send + 'static;

    /// Start batch `batch` (number `n` of the stream). Starting fixes its place in the order
    /// of writes; the returned future resolves once it is durable. An error here refuses the
    /// batch and ends the stream.
    fn start(
        &mut self,
        n: u64,
        batch: RecordBatch,
    ) -> impl Future<Output = Result<BoxFuture<'static, Result<Self::Ack, Status>>, Status>> + Send;
}

/// Run `stage` over `batches`, at most `window` batches started and unacknowledged at once,
/// and send every acknowledgement to `acks` in stream order. The first error (bad input, a
/// refused start, a failed write) ends the stream after the acknowledgements of the batches
/// started before it; nothing after it is started.
pub async fn run<S: PutStage>(
    mut stage: S,
    mut batches: RequestBatches,
    window: usize,
    acks: mpsc::Sender<Result<S::Ack, Status>>,
) {
    let window = window.max(1);
    let mut inflight: VecDeque<BoxFuture<'static, Result<S::Ack, Status>>> = VecDeque::new();
    let mut n = 0u64;
    let mut input_done = false;
    loop {
        tokio::select! {
            biased;
            done = async {
                match inflight.front_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            }, if !inflight.is_empty() => {
                inflight.pop_front();
                let failed = done.is_err();
                if acks.send(done).await.is_err() || failed {
                    return;
                }
            }
            item = batches.next(), if !input_done && inflight.len() < window => {
                let refused = match item {
                    Some(Ok(batch)) => match stage.start(n, batch).await {
                        Ok(durable) => {
                            inflight.push_back(durable);
                            n += 1;
                            None
                        }
                        Err(e) => Some(e),
                    },
                    Some(Err(e)) => Some(stream_error(e)),
                    None => {
                        input_done = true;
                        None
                    }
                };
                if let Some(e) = refused {
                    // Acknowledge what was started before, then report the refusal.
                    while let Some(f) = inflight.pop_front() {
                        let done = f.await;
                        let failed = done.is_err();
                        if acks.send(done).await.is_err() || failed {
                            return;
                        }
                    }
                    let _ = acks.send(Err(e)).await;
                    return;
                }
            }
            else => return,
        }
    }
}
