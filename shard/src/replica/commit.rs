//! The committer: a job on the node's commit pool (one per replica, see [`crate::workers`])
//! that turns write requests into WAL entries, makes each group durable with one
//! `fdatasync`, then applies the group in LSN order and answers the callers. A write is
//! therefore visible exactly when it is acknowledged.
//!
//! Group commit: every request waiting when a step starts (up to [`MAX_GROUP`]) shares one
//! sync. A delete by filter is a barrier: the group before it is committed and applied first,
//! so the filter sees every earlier write, and it is logged as the ids it resolved to.

use std::sync::Arc;

use longbow_common::shard_api::ReplicaKey;
use longbow_common::{Filter, IdValue};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};

use super::background::{Signal, Signaller};
use super::mutation::{Mutation, UpsertRows};
use super::state::ReplicaState;
use crate::error::{Result, ShardError};
use crate::payload::PayloadSchema;
use crate::wal::Wal;
use crate::workers::{Job, Next};

/// Most requests committed with one sync.
pub const MAX_GROUP: usize = 512;

/// What a caller asks the committer to do.
pub enum CommitOp {
    /// Insert or replace rows (payload not yet conformed).
    Upsert(UpsertRows),
    /// Delete rows by id and/or by filter.
    Delete {
        /// Ids to delete.
        ids: Vec<IdValue>,
        /// Filter selecting more rows to delete.
        filter: Option<Filter>,
    },
}

/// A request with its reply channel.
pub struct CommitRequest {
    /// The change.
    pub op: CommitOp,
    /// Receives `(lsn, rows affected)` once durable and applied.
    pub reply: oneshot::Sender<Result<(u64, u64)>>,
}

struct Pending {
    lsn: u64,
    mutation: Mutation,
    reply: oneshot::Sender<Result<(u64, u64)>>,
}

/// State owned by the committer job.
pub struct Committer {
    /// Which replica (for errors).
    pub key: ReplicaKey,
    /// The WAL, positioned after replay.
    pub wal: Wal,
    /// Shared replica state.
    pub state: Arc<RwLock<ReplicaState>>,
    /// Payload schema including not-yet-applied writes.
    pub schema: PayloadSchema,
    /// Wakes the background job after each applied group.
    pub background: Signaller,
    /// Set to the reason once the WAL fails; the replica then refuses writes.
    pub failed: Arc<Mutex<Option<String>>>,
    /// Set while the last commit failed on a full disk (cleared by the next that succeeds).
    pub disk_full: Arc<Mutex<Option<String>>>,
}

/// The committer with its queue: the job the commit pool runs.
pub struct CommitJob {
    /// The committer.
    pub committer: Committer,
    /// Write requests; the job finishes once every sender is dropped and the queue drained.
    pub requests: mpsc::Receiver<CommitRequest>,
}

impl Job for CommitJob {
    /// Commit one group: the requests queued now (at most [`MAX_GROUP`]), with one sync.
    fn step(&mut self, _timer: bool) -> Next {
        let mut group: Vec<Pending> = Vec::new();
        let mut taken = 0;
        let mut closed = false;
        while taken < MAX_GROUP {
            match self.requests.try_recv() {
                Ok(req) => {
                    taken += 1;
                    self.committer.stage(req, &mut group);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        self.committer.flush(&mut group);
        if closed {
            Next::Done
        } else if taken == MAX_GROUP {
            Next::Again
        } else {
            Next::Wait
        }
    }
}

impl Committer {
    /// Answer a group whose commit failed. On a full disk the group is discarded and the
    /// next write tries again (so writes resume by themselves once space is freed); any other
    /// failure stops writes until a restart.
    fn commit_failed(&mut self, e: crate::wal::WalError, group: &mut Vec<Pending>) {
        if e.is_disk_full() {
            match self.wal.discard_failed_group() {
                Ok(()) => {
                    tracing::warn!(replica = %self.key, error = %e, "disk full: write refused; writes resume once space is freed");
                    let reason = e.to_string();
                    *self.disk_full.lock() = Some(reason.clone());
                    for p in group.drain(..) {
                        let _ = p.reply.send(Err(ShardError::DiskFull {
                            key: self.key.clone(),
                            reason: reason.clone(),
                        }));
                    }
                    return;
                }
                Err(cut) => {
                    tracing::error!(replica = %self.key, error = %cut, "could not cut the WAL back after a full disk");
                }
            }
        }
        let reason = format!("WAL write failed, replica needs a restart: {e}");
        tracing::error!(replica = %self.key, error = %e, "WAL commit failed; refusing further writes");
        *self.failed.lock() = Some(reason.clone());
        for p in group.drain(..) {
            let _ = p.reply.send(Err(self.unavailable(&reason)));
        }
    }

    fn unavailable(&self, reason: &str) -> ShardError {
        ShardError::Unavailable {
            key: self.key.clone(),
            reason: reason.to_string(),
        }
    }

    fn stage(&mut self, req: CommitRequest, group: &mut Vec<Pending>) {
        if let Some(reason) = self.failed.lock().clone() {
            let _ = req.reply.send(Err(self.unavailable(&reason)));
            return;
        }
        let mutation = match req.op {
            CommitOp::Upsert(mut rows) => match self.schema.conform(&rows.payload) {
                Ok(p) => {
                    rows.payload = p;
                    Mutation::Upsert(rows)
                }
                Err(e) => {
                    let _ = req.reply.send(Err(e.into()));
                    return;
                }
            },
            CommitOp::Delete { mut ids, filter } => {
                if let Some(filter) = filter {
                    // Barrier: the filter must see every earlier write.
                    self.flush(group);
                    match super::query::resolve_filter(&self.state.read(), &filter) {
                        Ok(found) => ids.extend(found),
                        Err(e) => {
                            let _ = req.reply.send(Err(e));
                            return;
                        }
                    }
                }
                if ids.is_empty() {
                    let lsn = self.state.read().applied_lsn;
                    let _ = req.reply.send(Ok((lsn, 0)));
                    return;
                }
                Mutation::Delete(ids)
            }
        };
        let info = self.state.read().info.clone();
        match mutation.encode(info.id_type, info.dim) {
            Ok((kind, body)) => {
                let lsn = self.wal.append(kind, &body);
                group.push(Pending {
                    lsn,
                    mutation,
                    reply: req.reply,
                });
            }
            Err(e) => {
                let _ = req.reply.send(Err(e));
            }
        }
    }

    fn flush(&mut self, group: &mut Vec<Pending>) {
        if group.is_empty() {
            return;
        }
        if let Err(e) = self.wal.commit() {
            self.commit_failed(e, group);
            return;
        }
        *self.disk_full.lock() = None;
        let mut state = self.state.write();
        let results: Vec<_> = group
            .drain(..)
            .map(|p| {
                let r = state.apply(p.lsn, &p.mutation).map(|n| (p.lsn, n));
                if let Err(e) = &r {
                    // Validated before logging, so this is a bug; replay would hit it too.
                    tracing::error!(replica = %self.key, lsn = p.lsn, error = %e, "applying a logged mutation failed");
                }
                (p.reply, r)
            })
            .collect();
        drop(state);
        self.background.send(Signal::NewRows);
        for (reply, r) in results {
            let _ = reply.send(r);
        }
    }
}
