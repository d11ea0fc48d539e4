//! The committer: a job on the node's commit pool (one per replica, see [`crate::workers`])
//! that turns write requests into WAL entries, makes each group durable with one
//! `fdatasync`, then applies the group in LSN order and answers the callers. A write is
//! therefore visible exactly when it is acknowledged.
//!
//! Group commit: every request waiting when a step starts (up to [`MAX_GROUP`]) shares one
//! sync. A delete by filter is a barrier: the group before it is committed and applied first,
//! so the filter sees every earlier write, and it is logged as the ids it resolved to.
//!
//! Replication: a step holds the replica's [`Gate`]. On a primary, a group durable here is
//! handed to the gate's [`super::role::Forward`] and acknowledged only once every in-sync
//! backup has it too; a group the replica set did not take fences the primary. On a backup,
//! the committer appends entries at the LSNs the primary chose, after checking their epoch
//! and that they follow its log.

use std::path::PathBuf;
use std::sync::Arc;

use longbow_common::replication_api::Role;
use longbow_common::shard_api::ReplicaKey;
use longbow_common::{Filter, IdValue};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};

use super::background::{Signal, Signaller};
use super::mutation::{Mutation, UpsertRows};
use super::role::Gate;
use super::state::ReplicaState;
use crate::error::{Result, ShardError};
use crate::payload::PayloadSchema;
use crate::wal::{Entry, Wal};
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
    /// Entries the primary of `epoch` logged, to append at their LSNs (backups only).
    Replicated {
        /// The primary's epoch.
        epoch: u64,
        /// `(epoch, first LSN)` of the epochs the entries belong to, as the primary's log
        /// records them.
        starts: Vec<(u64, u64)>,
        /// The entries, in LSN order.
        entries: Vec<Entry>,
    },
}

/// A request with its reply channel.
pub struct CommitRequest {
    /// The change.
    pub op: CommitOp,
    /// Epoch the writer believes the replica set is at (`None`: a stand-alone replica).
    pub epoch: Option<u64>,
    /// Receives `(lsn, rows affected)` once durable and applied (for replicated entries:
    /// the last LSN and the number of entries appended).
    pub reply: oneshot::Sender<Result<(u64, u64)>>,
}

struct Reply {
    tx: oneshot::Sender<Result<(u64, u64)>>,
    /// Replaces the affected-row count in the answer.
    count: Option<u64>,
}

struct Pending {
    lsn: u64,
    mutation: Mutation,
    reply: Option<Reply>,
}

/// State owned by the committer job.
pub struct Committer {
    /// Which replica (for errors).
    pub key: ReplicaKey,
    /// The replica's directory (its epochs file lives there).
    pub dir: PathBuf,
    /// The WAL, positioned after replay.
    pub wal: Wal,
    /// Shared replica state.
    pub state: Arc<RwLock<ReplicaState>>,
    /// Role, epoch and backups; held for a whole step.
    pub gate: Arc<Mutex<Gate>>,
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
        let gate = self.committer.gate.clone();
        let mut gate = gate.lock();
        let mut group: Vec<Pending> = Vec::new();
        let mut taken = 0;
        let mut closed = false;
        while taken < MAX_GROUP {
            match self.requests.try_recv() {
                Ok(req) => {
                    taken += 1;
                    self.committer.stage(req, &mut group, &mut gate);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        self.committer.flush(&mut group, &mut gate);
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
                    for r in group.drain(..).filter_map(|p| p.reply) {
                        let _ = r.tx.send(Err(ShardError::DiskFull {
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
        for r in group.drain(..).filter_map(|p| p.reply) {
            let _ = r.tx.send(Err(self.unavailable(&reason)));
        }
    }

    fn unavailable(&self, reason: &str) -> ShardError {
        ShardError::Unavailable {
            key: self.key.clone(),
            reason: reason.to_string(),
        }
    }

    /// Whether a client write carrying `epoch` may go in now.
    fn admit(&self, epoch: Option<u64>, gate: &Gate) -> Result<()> {
        let current = gate.epochs.current;
        let not_primary = |detail: String| ShardError::NotPrimary {
            key: self.key.clone(),
            detail,
        };
        match (gate.role, epoch) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(not_primary(": it is not configured yet".into())),
            (Some(Role::Backup), _) => {
                Err(not_primary(format!(": it is a backup at epoch {current}")))
            }
            (Some(Role::Primary), None) => Err(not_primary(
                ": writes to a replicated shard must carry the replica set's epoch".into(),
            )),
            (Some(Role::Primary), Some(e)) if e != current => Err(ShardError::StaleEpoch {
                key: self.key.clone(),
                got: e,
                current,
            }),
            (Some(Role::Primary), Some(_)) => match &gate.fenced {
                Some(why) => Err(self.unavailable(&format!(
                    "the replica set is changing ({why}); retry shortly"
                ))),
                None => Ok(()),
            },
        }
    }

    fn stage(&mut self, req: CommitRequest, group: &mut Vec<Pending>, gate: &mut Gate) {
        if let Some(reason) = self.failed.lock().clone() {
            let _ = req.reply.send(Err(self.unavailable(&reason)));
            return;
        }
        if let CommitOp::Replicated {
            epoch,
            starts,
            entries,
        } = req.op
        {
            self.stage_replicated(epoch, &starts, entries, req.reply, group, gate);
            return;
        }
        if let Err(e) = self.admit(req.epoch, gate) {
            let _ = req.reply.send(Err(e));
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
                    self.flush(group, gate);
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
            CommitOp::Replicated { .. } => return,
        };
        let info = self.state.read().info.clone();
        match mutation.encode(info.id_type, info.dim) {
            Ok((kind, body)) => {
                let lsn = self.wal.append(kind, &body);
                group.push(Pending {
                    lsn,
                    mutation,
                    reply: Some(Reply {
                        tx: req.reply,
                        count: None,
                    }),
                });
            }
            Err(e) => {
                let _ = req.reply.send(Err(e));
            }
        }
    }

    /// Stage entries a primary replicated (see [`Committer::check_replicated`]); the reply
    /// goes with the last of them.
    fn stage_replicated(
        &mut self,
        epoch: u64,
        starts: &[(u64, u64)],
        entries: Vec<Entry>,
        reply: oneshot::Sender<Result<(u64, u64)>>,
        group: &mut Vec<Pending>,
        gate: &mut Gate,
    ) {
        let staged = match self.check_replicated(epoch, starts, entries, gate) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(replica = %self.key, error = %e, "replicated entries refused");
                let _ = reply.send(Err(e));
                return;
            }
        };
        if staged.is_empty() {
            let _ = reply.send(Ok((self.wal.last_lsn(), 0)));
            return;
        }
        let mut reply = Some(Reply {
            tx: reply,
            count: Some(staged.len() as u64),
        });
        let n = staged.len();
        for (i, (e, mutation)) in staged.into_iter().enumerate() {
            if let Err(err) = self.wal.append_at(e.lsn, e.kind, &e.body) {
                // check_replicated made sure they follow: this is a bug.
                tracing::error!(replica = %self.key, error = %err, "appending a replicated entry failed");
                if let Some(r) = reply.take() {
                    let _ = r.tx.send(Err(err.into()));
                }
                return;
            }
            group.push(Pending {
                lsn: e.lsn,
                mutation,
                reply: if i + 1 == n { reply.take() } else { None },
            });
        }
    }

    /// Check entries a primary replicated: refused when their epoch is stale, when the
    /// primary of that epoch has not probed this replica since it opened, or when they do not
    /// follow the log; entries already logged are skipped. Every entry is decoded before any
    /// is appended, and a new epoch's start is made durable first.
    fn check_replicated(
        &mut self,
        epoch: u64,
        starts: &[(u64, u64)],
        entries: Vec<Entry>,
        gate: &mut Gate,
    ) -> Result<Vec<(Entry, Mutation)>> {
        let last = self.wal.last_lsn();
        let gap = || ShardError::LogGap {
            key: self.key.clone(),
            lsn: last,
        };
        if epoch < gate.epochs.current {
            return Err(ShardError::StaleEpoch {
                key: self.key.clone(),
                got: epoch,
                current: gate.epochs.current,
            });
        }
        if gate.role == Some(Role::Primary) || gate.probed_epoch != epoch {
            return Err(gap());
        }
        let fresh: Vec<Entry> = entries.into_iter().filter(|e| e.lsn > last).collect();
        let Some(first) = fresh.first().map(|e| e.lsn) else {
            return Ok(Vec::new());
        };
        if first != last + 1 {
            return Err(gap());
        }
        let info = self.state.read().info.clone();
        let mut staged = Vec::with_capacity(fresh.len());
        for e in fresh {
            let m = match Mutation::decode(e.kind, &e.body, info.id_type, info.dim)? {
                Mutation::Upsert(mut rows) => {
                    rows.payload = self.schema.conform(&rows.payload)?;
                    Mutation::Upsert(rows)
                }
                m => m,
            };
            staged.push((e, m));
        }
        let mut changed = false;
        for &(e, start) in starts.iter().filter(|(e, _)| *e <= epoch) {
            changed |= gate.epochs.begin(e, start.max(first));
        }
        changed |= gate.epochs.begin(epoch, first);
        if changed {
            gate.epochs.store(&self.dir)?;
        }
        Ok(staged)
    }

    fn flush(&mut self, group: &mut Vec<Pending>, gate: &mut Gate) {
        let (Some(first), Some(last)) = (group.first().map(|p| p.lsn), group.last().map(|p| p.lsn))
        else {
            return;
        };
        // The bytes the backups get are exactly what this log holds.
        let forward = match (gate.role, &gate.forward) {
            (Some(Role::Primary), Some(f)) => {
                Some((f.clone(), self.wal.pending_entries().to_vec()))
            }
            _ => None,
        };
        if let Err(e) = self.wal.commit() {
            self.commit_failed(e, group);
            return;
        }
        *self.disk_full.lock() = None;
        // Durable here first, then on the backups: a group this log failed to keep never
        // reaches a backup, so no LSN is ever handed out twice.
        let replicated = match forward {
            Some((f, bytes)) => f.forward(first, last, bytes).wait(),
            None => Ok(Vec::new()),
        };
        match &replicated {
            Ok(removed) => gate.in_sync.retain(|n| !removed.contains(n)),
            Err(why) => {
                tracing::warn!(replica = %self.key, first, last, reason = %why, "group not acknowledged by the replica set; writes are fenced until the replica is configured again");
                gate.fenced = Some(why.clone());
            }
        }
        let mut state = self.state.write();
        let results: Vec<_> = group
            .drain(..)
            .map(|p| {
                let r = state.apply(p.lsn, &p.mutation);
                if let Err(e) = &r {
                    // Validated before logging, so this is a bug; replay would hit it too.
                    tracing::error!(replica = %self.key, lsn = p.lsn, error = %e, "applying a logged mutation failed");
                }
                (p.lsn, p.reply, r)
            })
            .collect();
        drop(state);
        self.background.send(Signal::NewRows);
        for (lsn, reply, r) in results {
            let Some(reply) = reply else { continue };
            let answer = match (&replicated, r) {
                (Err(why), _) => Err(self.unavailable(&format!(
                    "the write is durable on the primary but not on every in-sync replica ({why}), so it is not acknowledged; retry"
                ))),
                (Ok(_), Ok(n)) => Ok((lsn, reply.count.unwrap_or(n))),
                (Ok(_), Err(e)) => Err(e),
            };
            let _ = reply.tx.send(answer);
        }
    }
}
