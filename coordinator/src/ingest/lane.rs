//! One shard's lane of an ingest stream: its parts go, in stream order, down one long-lived
//! write stream to the shard's primary, up to [`LANE_WINDOW`] unacknowledged at once, and
//! each part learns when it is durable.
//!
//! When that stream fails (the primary died, was deposed, stopped answering), the parts it
//! had not acknowledged are written again one at a time, in order, through
//! [`Coordinator::on_primary`] (which finds the new primary and retries until the request
//! deadline), before any later part is sent. Writes are upserts by id, so writing a part
//! again whose first write did land is harmless, and the order of writes to an id stays the
//! order the client sent them. Once a part fails for good, every later part of the lane
//! fails too, unsent: a lane never skips a part.
//!
//! A lane must never acknowledge a part its primary did not acknowledge.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use crate::error::{CoordinatorError, Result};
use crate::node::Coordinator;
use crate::shards::WriteSession;
use crate::targets::{retry_write, PrimaryNow};

/// Parts a lane keeps unacknowledged on its write stream (the shard pipelines as many into
/// its group commits).
pub(super) const LANE_WINDOW: usize = 8;

/// How often a lane waiting for acknowledgements checks that its primary is live.
const LIVENESS_POLL: Duration = Duration::from_millis(100);

/// How one part ended. `earlier` marks a part that was never sent because an earlier part
/// of its lane failed.
pub(super) type PartOutcome = std::result::Result<(), PartFailure>;

/// Why a part was not stored.
#[derive(Debug)]
pub(super) struct PartFailure {
    /// The error.
    pub error: CoordinatorError,
    /// Whether the part itself was never tried (an earlier part of its lane failed).
    pub earlier: bool,
}

/// A part waiting for its lane.
struct Part {
    batch: RecordBatch,
    done: oneshot::Sender<PartOutcome>,
}

/// A part sent on the write stream and not yet acknowledged.
struct Sent {
    part: Part,
    at: Instant,
    /// Its place in the coordinator's budget of shard calls.
    _place: OwnedSemaphorePermit,
}

/// The sending end of a lane; dropping it lets the lane finish what it was given and stop.
pub(super) struct Lane {
    tx: mpsc::Sender<Part>,
}

impl Lane {
    /// Start the lane of shard `shard` of namespace `namespace`.
    pub fn spawn(coord: Arc<Coordinator>, namespace: String, shard: u32) -> Lane {
        let (tx, rx) = mpsc::channel(LANE_WINDOW);
        let state = LaneState {
            coord,
            namespace,
            shard,
            session: None,
            unacked: VecDeque::new(),
            failed: None,
        };
        tokio::spawn(state.run(rx));
        Lane { tx }
    }

    /// Queue `batch` after the parts queued before it; the receiver resolves once it is
    /// durable or failed.
    pub async fn write(&self, batch: RecordBatch) -> oneshot::Receiver<PartOutcome> {
        let (done, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(part)) = self.tx.send(Part { batch, done }).await {
            let _ = part.done.send(Err(PartFailure {
                error: CoordinatorError::Internal("the shard lane stopped".into()),
                earlier: false,
            }));
        }
        rx
    }
}

struct LaneState {
    coord: Arc<Coordinator>,
    namespace: String,
    shard: u32,
    /// The open write stream; always `Some` while `unacked` is not empty.
    session: Option<WriteSession>,
    unacked: VecDeque<Sent>,
    /// The first error that failed a part for good.
    failed: Option<String>,
}

impl LaneState {
    async fn run(mut self, mut rx: mpsc::Receiver<Part>) {
        let mut input_open = true;
        let mut tick = tokio::time::interval(LIVENESS_POLL);
        loop {
            tokio::select! {
                biased;
                ack = next_ack(&mut self.session), if !self.unacked.is_empty() => {
                    self.on_ack(ack).await;
                }
                _ = tick.tick(), if !self.unacked.is_empty() => self.check_progress().await,
                part = rx.recv(), if input_open && self.unacked.len() < LANE_WINDOW => match part {
                    Some(part) => self.send(part).await,
                    None => input_open = false,
                },
                else => return,
            }
        }
    }

    /// Send `part` on the write stream, opening one if needed.
    async fn send(&mut self, part: Part) {
        let schema = part.batch.schema();
        if self.session.as_ref().is_some_and(|s| *s.schema() != schema) {
            // New payload columns: finish this stream, then open one for the new schema.
            while !self.unacked.is_empty() {
                let ack = next_ack(&mut self.session).await;
                self.on_ack(ack).await;
            }
            self.session = None;
        }
        if self.failed.is_some() {
            return self.send_after_failure(part);
        }
        let place = match self.coord.limits.place().await {
            Ok(p) => p,
            Err(e) => return self.fail(part, e),
        };
        let sent = Sent {
            part,
            at: Instant::now(),
            _place: place,
        };
        if self.session.is_none() {
            match open(&self.coord, &self.namespace, self.shard, schema).await {
                Ok(s) => self.session = Some(s),
                Err(e) => {
                    self.unacked.push_back(sent);
                    return self.recover(e).await;
                }
            }
        }
        let batch = sent.part.batch.clone();
        self.unacked.push_back(sent);
        let session = self.session.as_mut().expect("opened above");
        if let Err(e) = session.send(batch).await {
            self.recover(e).await;
        }
    }

    async fn on_ack(&mut self, ack: Option<Result<longbow_common::shard_api::WriteAck>>) {
        match ack {
            Some(Ok(_)) => {
                if let Some(sent) = self.unacked.pop_front() {
                    let _ = sent.part.done.send(Ok(()));
                }
            }
            Some(Err(e)) => self.recover(e).await,
            None => {
                let to = self.session.as_ref().map(|s| s.to.to_string());
                self.recover(CoordinatorError::Unavailable(format!(
                    "{}: the write stream ended before every write was acknowledged",
                    to.unwrap_or_default()
                )))
                .await
            }
        }
    }

    /// Give up on the write stream when its node stopped sending heartbeats or its oldest
    /// write is past the deadline.
    async fn check_progress(&mut self) {
        let Some(session) = &self.session else { return };
        let to = session.to.clone();
        if !self.coord.is_live(to.node) {
            let e = CoordinatorError::Unavailable(format!(
                "{to}: the node stopped sending heartbeats; not waiting for it"
            ));
            return self.recover(e).await;
        }
        let deadline = self.coord.limits.deadline();
        if self
            .unacked
            .front()
            .is_some_and(|s| s.at.elapsed() > deadline)
        {
            let e = CoordinatorError::Deadline(format!(
                "{to}: a write waited longer than {deadline:?} for its acknowledgement"
            ));
            self.recover(e).await;
        }
    }

    /// The write stream failed with `e`: write every unacknowledged part again, in order,
    /// through the retrying single-write path, or fail them all when no retry can help.
    async fn recover(&mut self, e: CoordinatorError) {
        self.session = None;
        tracing::debug!(namespace = %self.namespace, shard = self.shard, error = %e,
            unacked = self.unacked.len(), "write stream failed; writing its unacknowledged parts again");
        let retry = retry_write(&e);
        let mut first = Some(e);
        while let Some(Sent { part, _place, .. }) = self.unacked.pop_front() {
            // The retry takes its own place in the budget.
            drop(_place);
            if self.failed.is_some() {
                self.send_after_failure(part);
                continue;
            }
            if !retry {
                let e = first.take().expect("the first failed part takes the error");
                self.fail(part, e);
                continue;
            }
            let batch = part.batch.clone();
            let coord = &self.coord;
            let out = coord
                .on_primary(&self.namespace, self.shard, |to, epoch| {
                    let batch = batch.clone();
                    async move { coord.bounded(coord.shards.write(&to, batch, epoch)).await }
                })
                .await;
            match out {
                Ok(_) => {
                    let _ = part.done.send(Ok(()));
                }
                Err(e) => self.fail(part, e),
            }
        }
    }

    /// Fail `part` with `error`; every later part of the lane fails unsent.
    fn fail(&mut self, part: Part, error: CoordinatorError) {
        self.failed = Some(error.to_string());
        let _ = part.done.send(Err(PartFailure {
            error,
            earlier: false,
        }));
    }

    fn send_after_failure(&self, part: Part) {
        let why = self.failed.clone().unwrap_or_default();
        let error = CoordinatorError::Unavailable(format!(
            "namespace '{}' shard {}: an earlier write of this stream failed ({why}); \
             this part was not written",
            self.namespace, self.shard
        ));
        let _ = part.done.send(Err(PartFailure {
            error,
            earlier: true,
        }));
    }
}

/// A write stream to the current primary of shard `shard` of `namespace`.
async fn open(
    coord: &Coordinator,
    namespace: &str,
    shard: u32,
    schema: arrow_schema::SchemaRef,
) -> Result<WriteSession> {
    match coord.primary_now(namespace, shard)? {
        PrimaryNow::Live(to, epoch) => {
            let deadline = coord.limits.deadline();
            let opening =
                tokio::time::timeout(deadline, coord.shards.open_write(&to, epoch, schema));
            match coord.unless_dead(&to, async { Ok(opening.await) }).await? {
                Ok(session) => session,
                Err(_) => Err(CoordinatorError::Deadline(format!(
                    "{to}: opening a write stream took longer than {deadline:?}"
                ))),
            }
        }
        PrimaryNow::Unreachable(e) => Err(e),
    }
}

/// The next acknowledgement of `session`; never resolves without one.
async fn next_ack(
    session: &mut Option<WriteSession>,
) -> Option<Result<longbow_common::shard_api::WriteAck>> {
    match session {
        Some(s) => s.next_ack().await,
        None => std::future::pending().await,
    }
}
