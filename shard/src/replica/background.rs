//! The background job of a replica, run by the node's background pool (see
//! [`crate::workers`]): it links new rows, repairs graphs, rewrites and merges segments (the
//! optimizer) and writes checkpoints, in that order, each time the committer signals new rows
//! or a timer expires. One step links at most [`LINK_BUDGET`] rows, then yields the thread to
//! the other replicas' jobs.
//!
//! It stops between steps (and between chunks of linking) once shutdown begins, so SIGTERM
//! never waits for a graph build: whatever is left resumes after the next start. Errors are
//! logged and counted and the step is retried later; they never touch acknowledged data,
//! which stays in the WAL until a checkpoint holding it is durable.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use longbow_common::shard_api::{ReplicaKey, SnapshotPart};
use parking_lot::{Mutex, RwLock};

use super::checkpoint::{self, Outcome};
use super::indexer::{link_some, repair, LINK_BUDGET, REPAIR_IDLE};
use super::optimizer;
use super::state::ReplicaState;
use super::ReplicaSettings;
use crate::error::Result;
use crate::fault::crash_point;
use crate::storage::sealed::collect_garbage;
use crate::storage::Manifest;
use crate::wal::WalFiles;
use crate::workers::{Job, JobHandle, Next};

/// Counters of the background work, read by `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Checkpoints written.
    pub checkpoints: AtomicU64,
    /// Checkpoints that failed (retried later).
    pub checkpoint_failures: AtomicU64,
    /// Segments rewritten or merged.
    pub merges: AtomicU64,
    /// Repair passes run.
    pub repair_passes: AtomicU64,
    /// Unreachable graph nodes found and relinked.
    pub repair_relinked: AtomicU64,
    /// WAL files deleted after checkpoints.
    pub wal_files_removed: AtomicU64,
    /// Bytes of sealed segment files listed in the manifest.
    pub segment_bytes: AtomicU64,
    /// LSN of the durable checkpoint.
    pub checkpoint_lsn: AtomicU64,
}

/// What wakes the background task.
pub enum Signal {
    /// The committer applied new rows.
    NewRows,
    /// Write a checkpoint now and report its outcome (tests, snapshots, operators).
    Checkpoint(std::sync::mpsc::Sender<Result<Outcome>>),
    /// Write a checkpoint, then link its files into this snapshot part directory.
    Snapshot(PathBuf, std::sync::mpsc::Sender<Result<SnapshotPart>>),
}

/// Sends the background job a [`Signal`] and wakes it.
#[derive(Clone)]
pub struct Signaller {
    /// The job's signal queue.
    pub tx: Sender<Signal>,
    /// The job.
    pub job: JobHandle,
}

impl Signaller {
    /// Queue `signal` and wake the job; false if the job is gone.
    pub fn send(&self, signal: Signal) -> bool {
        let sent = self.tx.send(signal).is_ok();
        self.job.wake();
        sent
    }
}

/// A caller waiting for the next checkpoint.
enum Waiter {
    Checkpoint(std::sync::mpsc::Sender<Result<Outcome>>),
    Snapshot(PathBuf, std::sync::mpsc::Sender<Result<SnapshotPart>>),
}

/// Everything the background job owns.
pub struct Background {
    /// Which replica (for logs).
    pub key: ReplicaKey,
    /// The replica directory.
    pub dir: PathBuf,
    /// Shared state.
    pub state: Arc<RwLock<ReplicaState>>,
    /// The WAL's closed files.
    pub wal_files: WalFiles,
    /// Thresholds.
    pub settings: ReplicaSettings,
    /// Set when shutdown begins.
    pub stop: Arc<AtomicBool>,
    /// The durable manifest.
    pub manifest: Manifest,
    /// Shared counters.
    pub counters: Arc<Counters>,
    /// The last checkpoint failure, for health.
    pub last_error: Arc<Mutex<Option<String>>>,
    /// Whether the replica has backups: its checkpoints then keep the newest
    /// `wal_retention_bytes` of the WAL they cover.
    pub has_backups: Arc<AtomicBool>,
}

/// When the background job last did what, to know when it is due again.
struct Clock {
    /// Some segment has rows linked since its last repair pass.
    repair_pending: bool,
    last_checkpoint: Instant,
    wal_at_checkpoint: u64,
    /// After a failed checkpoint, the earliest time to try the next one on our own.
    retry_at: Option<Instant>,
}

/// The background work with its signal queue: the job the background pool runs.
pub struct BackgroundJob {
    work: Background,
    signals: Receiver<Signal>,
    clock: Clock,
}

impl BackgroundJob {
    /// Wrap `work`, fed by `signals`.
    pub fn new(work: Background, signals: Receiver<Signal>) -> BackgroundJob {
        let clock = Clock {
            repair_pending: false,
            last_checkpoint: Instant::now(),
            wal_at_checkpoint: work.wal_files.appended_bytes(),
            retry_at: None,
        };
        BackgroundJob {
            work,
            signals,
            clock,
        }
    }

    /// Whether a checkpoint is due now without anyone asking.
    fn checkpoint_due(&self) -> bool {
        let w = &self.work;
        if self.clock.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        let wal_grown = w
            .wal_files
            .appended_bytes()
            .saturating_sub(self.clock.wal_at_checkpoint);
        let st = w.state.read();
        let full_unwritten = st
            .segments
            .iter()
            .any(|s| s.sealed && s.persisted.is_none());
        let behind = st.applied_lsn > w.manifest.checkpoint_lsn;
        full_unwritten
            || (behind && wal_grown >= w.settings.checkpoint_wal_bytes)
            || (behind && self.clock.last_checkpoint.elapsed() >= w.settings.checkpoint_interval)
            || optimizer::plan(&st, w.settings.compaction_threshold).is_some()
    }

    /// When the job should look again without a signal: at the checkpoint interval if
    /// changes wait for one, soon if a repair waits for idleness, at the retry time after a
    /// failure. `None`: only a signal can make work.
    fn next_look(&self) -> Option<Instant> {
        let now = Instant::now();
        let w = &self.work;
        let behind = w.state.read().applied_lsn > w.manifest.checkpoint_lsn;
        let mut at = behind.then(|| self.clock.last_checkpoint + w.settings.checkpoint_interval);
        let mut earliest = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        if self.clock.repair_pending {
            earliest(now + REPAIR_IDLE);
        }
        if let Some(t) = self.clock.retry_at {
            earliest(t);
        }
        at.map(|t| t.max(now + Duration::from_millis(10)))
    }

    /// Checkpoint for the waiters (or because one is due) and answer them; false once
    /// shutdown stopped it.
    fn checkpoint_for(&mut self, asked: Vec<Waiter>) -> bool {
        let result = self.work.checkpoint();
        for waiter in asked {
            self.work.answer(waiter, &result);
        }
        match result {
            Ok(Outcome::Stopped) => return false,
            Ok(_) => {
                self.clock.retry_at = None;
                self.clock.last_checkpoint = Instant::now();
                self.clock.wal_at_checkpoint = self.work.wal_files.appended_bytes();
                *self.work.last_error.lock() = None;
            }
            Err(e) => {
                tracing::error!(replica = %self.work.key, error = %e, "checkpoint failed; retrying later (the WAL keeps every change)");
                self.work
                    .counters
                    .checkpoint_failures
                    .fetch_add(1, Ordering::Relaxed);
                *self.work.last_error.lock() = Some(e.to_string());
                self.clock.retry_at = Some(Instant::now() + Duration::from_secs(5));
            }
        }
        true
    }
}

impl Job for BackgroundJob {
    /// Link up to [`LINK_BUDGET`] new rows, repair what is due, then checkpoint (with the
    /// optimizer's merges) if one is due or asked for.
    fn step(&mut self, timer: bool) -> Next {
        let stop = self.work.stop.clone();
        if stop.load(Ordering::Relaxed) {
            return Next::Done;
        }
        let mut asked = Vec::new();
        let mut signalled = false;
        let mut closed = false;
        loop {
            match self.signals.try_recv() {
                Ok(s) => {
                    signalled = true;
                    asked.extend(requester(s));
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        // Woken by the timer alone: no rows arrived for a while.
        let idle = timer && !signalled;
        let threshold = self.work.settings.compaction_threshold;
        let (segments, more) = link_some(&self.work.state, threshold, LINK_BUDGET, &stop);
        let (relinked, pending) = repair(&segments, idle);
        self.clock.repair_pending = pending;
        self.work.count_repair(relinked);
        if stop.load(Ordering::Relaxed) {
            return Next::Done;
        }
        if (!asked.is_empty() || self.checkpoint_due()) && !self.checkpoint_for(asked) {
            return Next::Done;
        }
        if closed {
            Next::Done
        } else if more {
            Next::Again
        } else {
            self.next_look().map_or(Next::Wait, Next::At)
        }
    }
}

impl Background {
    fn answer(&self, waiter: Waiter, result: &Result<Outcome>) {
        let failed = |e: &dyn std::fmt::Display| crate::error::ShardError::Unavailable {
            key: self.key.clone(),
            reason: format!("checkpoint failed: {e}"),
        };
        match waiter {
            Waiter::Checkpoint(reply) => {
                let _ = reply.send(match result {
                    Ok(o) => Ok(*o),
                    Err(e) => Err(failed(e)),
                });
            }
            Waiter::Snapshot(dest, reply) => {
                let _ = reply.send(match result {
                    Ok(Outcome::Stopped) => Err(failed(&"shutting down")),
                    Ok(_) => self.snapshot_part(&dest),
                    Err(e) => Err(failed(e)),
                });
            }
        }
    }

    /// Link the files of the durable checkpoint into snapshot part directory `dest`.
    fn snapshot_part(&self, dest: &std::path::Path) -> Result<SnapshotPart> {
        use crate::storage::snapshot::{link_files, publish};
        let meta_path = self.dir.join(super::META_FILE);
        let meta = std::fs::read(&meta_path).map_err(crate::storage::files::io_err(&meta_path))?;
        let parent = dest.parent().unwrap_or(std::path::Path::new("."));
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let tmp = parent.join(format!(".{name}.tmp"));
        std::fs::create_dir_all(parent).map_err(crate::storage::files::io_err(parent))?;
        let bytes = link_files(&self.dir, &self.manifest, &meta, super::META_FILE, &tmp)?;
        crash_point!("snapshot::before_publish");
        publish(&tmp, dest)?;
        let rows = self
            .manifest
            .segments
            .iter()
            .map(|s| s.rows - s.deletes.as_ref().map_or(0, |d| d.count))
            .sum();
        Ok(SnapshotPart {
            shard: self.key.shard,
            lsn: self.manifest.checkpoint_lsn,
            rows,
            disk_bytes: bytes,
        })
    }

    fn count_repair(&self, relinked: usize) {
        if relinked > 0 {
            self.counters
                .repair_relinked
                .fetch_add(relinked as u64, Ordering::Relaxed);
        }
        self.counters.repair_passes.fetch_add(1, Ordering::Relaxed);
    }

    /// Seal, optimise, write the manifest, then delete what it makes obsolete.
    pub fn checkpoint(&mut self) -> Result<Outcome> {
        let lsn = checkpoint::seal(&self.state);
        let threshold = self.settings.compaction_threshold;
        loop {
            let plan = optimizer::plan(&self.state.read(), threshold);
            let Some(sources) = plan else { break };
            let Some(merged) = optimizer::build(&self.state, &sources, &self.stop)? else {
                return Ok(Outcome::Stopped);
            };
            let rows = merged.origin.len();
            crash_point!("merge::before_install");
            let id = self.state.write().install(merged)?;
            self.counters.merges.fetch_add(1, Ordering::Relaxed);
            tracing::info!(replica = %self.key, sources = ?sources, segment = id, rows, "merged segments");
        }
        let (outcome, manifest) =
            checkpoint::write(&self.dir, &self.state, &self.manifest, lsn, &self.stop)?;
        let Some(manifest) = manifest else {
            return Ok(outcome);
        };
        self.manifest = manifest;
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.counters.checkpoint_lsn.store(lsn, Ordering::Relaxed);
        self.counters
            .segment_bytes
            .store(self.manifest.disk_bytes(), Ordering::Relaxed);
        crash_point!("checkpoint::before_wal_removal");
        let keep = if self.has_backups.load(Ordering::Relaxed) {
            self.settings.wal_retention_bytes
        } else {
            0
        };
        let (files, _) = self.wal_files.remove_through(lsn, keep)?;
        self.counters
            .wal_files_removed
            .fetch_add(files as u64, Ordering::Relaxed);
        collect_garbage(&self.dir, &self.manifest)?;
        tracing::debug!(replica = %self.key, lsn, wal_files_removed = files, "checkpoint written");
        Ok(outcome)
    }
}

fn requester(s: Signal) -> Option<Waiter> {
    match s {
        Signal::NewRows => None,
        Signal::Checkpoint(reply) => Some(Waiter::Checkpoint(reply)),
        Signal::Snapshot(dest, reply) => Some(Waiter::Snapshot(dest, reply)),
    }
}
