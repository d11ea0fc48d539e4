//! A replica: one shard of one namespace on this node — segments, ids, payload and
//! tombstones in memory, made durable by its WAL and by checkpoints of sealed segments.
//!
//! Writes go through the committer job (group commit, then apply); a background job links
//! new rows into the graph, optimizes segments and writes checkpoints; both run on the
//! node's shared worker pools ([`crate::workers`]). Reads take the state's read lock. Start-up loads the sealed segments the manifest lists (no graph is
//! rebuilt) and replays only the WAL after its checkpoint. A replica never talks to other
//! nodes: replication is layered above it.

pub mod background;
pub mod checkpoint;
pub mod commit;
pub mod epoch;
pub mod indexer;
pub mod mutation;
mod open;
pub mod optimizer;
pub mod query;
pub mod role;
pub mod state;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use longbow_common::ids::ids_from_array;
use longbow_common::shard_api::{ReplicaInfo, ReplicaKey, ReplicaStats, SnapshotPart};
use longbow_common::vectors::{vectors_from_array, Vectors};
use longbow_common::{columns, ContractError, Filter, IdValue, Metric};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use self::background::{Counters, Signal, Signaller};
pub use self::checkpoint::Outcome as CheckpointOutcome;
use self::commit::{CommitOp, CommitRequest};
use self::mutation::UpsertRows;
pub use self::query::{Projection, SearchParams};
use self::state::ReplicaState;
use crate::distance::normalize;
use crate::error::{Result, ShardError};
use crate::wal::{LogBackend, WalFiles};
use crate::workers::{JobHandle, Pool};

/// Tunables shared by every replica of a node.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    /// Rows per in-memory segment before a new one starts.
    pub segment_capacity: usize,
    /// Bytes per WAL file before rotating.
    pub wal_segment_bytes: u64,
    /// Write requests queued per replica before callers wait (back-pressure).
    pub commit_queue: usize,
    /// A checkpoint is due once the WAL grew this many bytes since the last one.
    pub checkpoint_wal_bytes: u64,
    /// A checkpoint is due this long after the last one, if anything changed.
    pub checkpoint_interval: Duration,
    /// A sealed segment whose dead fraction (deleted plus replaced rows) passes this is
    /// rewritten without them.
    pub compaction_threshold: f64,
    /// Bytes of the newest WAL a checkpoint covers that a replica with backups keeps
    /// anyway, so a backup that was away for a moment catches up from the log instead of a
    /// segment transfer.
    pub wal_retention_bytes: u64,
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        ReplicaSettings {
            segment_capacity: 1 << 20,
            wal_segment_bytes: 64 << 20,
            commit_queue: 1024,
            checkpoint_wal_bytes: 256 << 20,
            checkpoint_interval: Duration::from_secs(60),
            compaction_threshold: 0.2,
            wal_retention_bytes: 64 << 20,
        }
    }
}

/// What a node gives every replica it hosts: the tunables, the WAL backend and the worker
/// pools its jobs run on.
#[derive(Clone)]
pub struct Host {
    /// Tunables.
    pub settings: ReplicaSettings,
    /// How WAL files are written.
    pub backend: Arc<dyn LogBackend>,
    /// Runs every replica's committer.
    pub commit_pool: Pool,
    /// Runs every replica's background job (linking, repair, optimizer, checkpoints).
    pub background_pool: Pool,
}

impl Host {
    /// A host with `commit_threads` and `background_threads` threads in its pools.
    pub fn new(
        settings: ReplicaSettings,
        backend: Arc<dyn LogBackend>,
        commit_threads: usize,
        background_threads: usize,
    ) -> std::io::Result<Host> {
        Ok(Host {
            settings,
            backend,
            commit_pool: Pool::new("commit", commit_threads)?,
            background_pool: Pool::new("segments", background_threads)?,
        })
    }
}

/// File holding what a replica is.
pub(crate) const META_FILE: &str = "replica.json";
/// Directory of the WAL under a replica directory.
pub(crate) const WAL_DIR: &str = "wal";

#[derive(Serialize, Deserialize)]
struct ReplicaMeta {
    info: ReplicaInfo,
    #[serde(default)]
    payload_schema: Option<String>,
}

/// A queued change; [`Pending::wait`] resolves to `(lsn, rows)` once it is durable.
pub struct Pending {
    rx: oneshot::Receiver<Result<(u64, u64)>>,
    key: ReplicaKey,
}

impl Pending {
    /// Wait until the change is durable and applied.
    pub async fn wait(self) -> Result<(u64, u64)> {
        self.rx.await.map_err(|_| ShardError::Unavailable {
            key: self.key,
            reason: "writer stopped".into(),
        })?
    }
}

/// One hosted replica.
pub struct Replica {
    key: ReplicaKey,
    info: ReplicaInfo,
    dir: PathBuf,
    state: Arc<RwLock<ReplicaState>>,
    commits: Mutex<Option<mpsc::Sender<CommitRequest>>>,
    commit_job: JobHandle,
    background_job: JobHandle,
    failed: Arc<Mutex<Option<String>>>,
    disk_full: Arc<Mutex<Option<String>>>,
    wal_files: WalFiles,
    syncs: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    signal: Mutex<Option<Signaller>>,
    counters: Arc<Counters>,
    checkpoint_error: Arc<Mutex<Option<String>>>,
    gate: Arc<Mutex<role::Gate>>,
    has_backups: Arc<AtomicBool>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ShardError + '_ {
    move |source| ShardError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn seed_of(key: &ReplicaKey) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.namespace.bytes().chain(key.shard.to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

impl Replica {
    /// Write a checkpoint now (sealing the appendable segment and running due merges), and
    /// wait for it. Blocks: call it off the async runtime.
    pub fn checkpoint(&self) -> Result<CheckpointOutcome> {
        self.ask(Signal::Checkpoint)
    }

    /// Send the background job a request made by `make` around a reply channel, and wait
    /// for the reply.
    fn ask<T>(&self, make: impl FnOnce(std::sync::mpsc::Sender<Result<T>>) -> Signal) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        let sender = self
            .signal
            .lock()
            .clone()
            .ok_or_else(|| self.unavailable("shutting down"))?;
        if !sender.send(make(tx)) {
            return Err(self.unavailable("shutting down"));
        }
        rx.recv().map_err(|_| self.unavailable("shutting down"))?
    }

    /// LSN of the durable checkpoint.
    pub fn checkpoint_lsn(&self) -> u64 {
        self.counters.checkpoint_lsn.load(Ordering::Relaxed)
    }

    /// Why the replica cannot take writes: its WAL failed (until a restart), or the last
    /// commit found the disk full (until one succeeds).
    pub fn write_fault(&self) -> Option<String> {
        self.failed.lock().clone().or_else(|| {
            self.disk_full
                .lock()
                .clone()
                .map(|e| format!("disk full: {e}"))
        })
    }

    /// Why the last checkpoint failed, until one succeeds.
    pub fn checkpoint_error(&self) -> Option<String> {
        self.checkpoint_error.lock().clone()
    }

    /// Snapshot this replica into part directory `dest` (which must not exist): a
    /// checkpoint, then hard links of its files. Blocks: call it off the async runtime.
    pub fn snapshot(&self, dest: PathBuf) -> Result<SnapshotPart> {
        self.ask(|tx| Signal::Snapshot(dest, tx))
    }

    /// Counters of checkpoints, merges and repairs.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Dead fraction (deleted plus replaced rows) of each segment, by segment id.
    pub fn tombstone_density(&self) -> Vec<(u32, f64)> {
        let st = self.state.read();
        st.segments
            .iter()
            .map(|s| (s.id, s.dead_fraction()))
            .collect()
    }

    /// Which replica this is.
    pub fn key(&self) -> &ReplicaKey {
        &self.key
    }

    /// What this replica is.
    pub fn info(&self) -> &ReplicaInfo {
        &self.info
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of WAL syncs so far (group commits).
    pub fn wal_syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    fn unavailable(&self, reason: &str) -> ShardError {
        ShardError::Unavailable {
            key: self.key.clone(),
            reason: reason.into(),
        }
    }

    /// Queue a change for the committer. Changes queued by one caller are logged and applied
    /// in the order they were queued; the returned [`Pending`] resolves once durable.
    async fn enqueue(&self, op: CommitOp, epoch: Option<u64>) -> Result<Pending> {
        if let Some(reason) = self.failed.lock().clone() {
            return Err(self.unavailable(&reason));
        }
        let tx = self
            .commits
            .lock()
            .clone()
            .ok_or_else(|| self.unavailable("shutting down"))?;
        let (reply, rx) = oneshot::channel();
        let sent = tx.send(CommitRequest { op, epoch, reply }).await;
        // Wake after dropping our sender: the committer finishes once it sees every sender
        // gone, and it only looks when woken.
        drop(tx);
        self.commit_job.wake();
        sent.map_err(|_| self.unavailable("shutting down"))?;
        Ok(Pending {
            rx,
            key: self.key.clone(),
        })
    }

    async fn submit(&self, op: CommitOp, epoch: Option<u64>) -> Result<(u64, u64)> {
        self.enqueue(op, epoch).await?.wait().await
    }

    /// Validate and queue rows for upsert without waiting for durability, so one stream can
    /// keep several batches in flight while their order is kept. `epoch` is the replica
    /// set's epoch the writer knows (`None` for a stand-alone replica).
    pub async fn enqueue_upsert(&self, batch: &RecordBatch, epoch: Option<u64>) -> Result<Pending> {
        let rows = self.validate_rows(batch)?;
        self.enqueue(CommitOp::Upsert(rows), epoch).await
    }

    /// Append entries the primary of `epoch` logged (this replica being its backup); returns
    /// the last LSN durable here once they are.
    pub async fn replicate(
        &self,
        epoch: u64,
        starts: Vec<(u64, u64)>,
        entries: Vec<crate::wal::Entry>,
    ) -> Result<u64> {
        let op = CommitOp::Replicated {
            epoch,
            starts,
            entries,
        };
        let (lsn, _) = self.submit(op, Some(epoch)).await?;
        Ok(lsn)
    }

    /// The replica's place in its replica set (held by the committer for a whole step).
    pub fn gate(&self) -> &Arc<Mutex<role::Gate>> {
        &self.gate
    }

    /// Say whether the replica's set has other members: its checkpoints then keep the
    /// newest [`ReplicaSettings::wal_retention_bytes`] of the WAL they cover for them.
    pub fn set_has_backups(&self, yes: bool) {
        self.has_backups.store(yes, Ordering::Relaxed);
    }

    /// Its WAL files (a primary reads a backup's catch-up from them).
    pub fn wal_files(&self) -> &WalFiles {
        &self.wal_files
    }

    /// Validate a batch of `id`, `vector` and payload columns into rows to upsert.
    pub fn validate_rows(&self, batch: &RecordBatch) -> Result<UpsertRows> {
        let id_col = batch
            .column_by_name(columns::ID)
            .ok_or_else(|| ContractError::invalid("id", "column is missing"))?;
        let ids = ids_from_array(id_col.as_ref(), self.info.id_type)?;
        let vcol = batch
            .column_by_name(columns::VECTOR)
            .ok_or_else(|| ContractError::invalid("vector", "column is missing"))?;
        let mut vectors = vectors_from_array(vcol.as_ref(), Some(self.info.dim))?;
        self.prepare_vectors(&mut vectors, "vector")?;
        let payload = columns::payload_only(batch)?;
        Ok(UpsertRows {
            ids,
            vectors: vectors.data,
            payload,
        })
    }

    /// Normalise vectors for cosine (rejecting zero vectors); a no-op for other metrics.
    pub fn prepare_vectors(&self, v: &mut Vectors, field: &str) -> Result<()> {
        if self.info.metric == Metric::Cosine {
            let dim = v.dim;
            for (i, row) in v.data.chunks_mut(dim).enumerate() {
                if !normalize(row) {
                    return Err(ContractError::invalid(
                        format!("{field}[{i}]"),
                        "has zero length; cosine needs a non-zero vector",
                    )
                    .into());
                }
            }
        }
        Ok(())
    }

    /// Insert or replace the rows of `batch`. Returns `(lsn, rows)` once they are durable
    /// (and visible to searches).
    pub async fn upsert(&self, batch: &RecordBatch) -> Result<(u64, u64)> {
        let rows = self.validate_rows(batch)?;
        if rows.ids.is_empty() {
            return Ok((self.state.read().applied_lsn, 0));
        }
        self.submit(CommitOp::Upsert(rows), None).await
    }

    /// Delete rows by ids and/or filter. Returns `(lsn, rows deleted)` once durable. `epoch`
    /// as for [`Replica::enqueue_upsert`].
    pub async fn delete(
        &self,
        ids: Vec<IdValue>,
        filter: Option<Filter>,
        epoch: Option<u64>,
    ) -> Result<(u64, u64)> {
        self.submit(CommitOp::Delete { ids, filter }, epoch).await
    }

    /// Search. Query vectors are checked against the dimension and normalised for cosine.
    /// `query_id_base` is added to each query's row number.
    pub fn search(
        &self,
        mut queries: Vectors,
        params: &SearchParams,
        query_id_base: u32,
    ) -> Result<RecordBatch> {
        if queries.rows() > 0 && queries.dim != self.info.dim {
            return Err(ContractError::invalid(
                "vector",
                format!("has dimension {}, expected {}", queries.dim, self.info.dim),
            )
            .into());
        }
        queries.dim = self.info.dim;
        self.prepare_vectors(&mut queries, "vector")?;
        query::search(&self.state.read(), &queries, params, query_id_base)
    }

    /// Records by id.
    pub fn get(&self, ids: &[IdValue], p: &Projection) -> Result<RecordBatch> {
        query::get(&self.state.read(), ids, p)
    }

    /// Records matching a filter.
    pub fn scan(
        &self,
        filter: Option<&Filter>,
        p: &Projection,
        limit: usize,
    ) -> Result<Vec<RecordBatch>> {
        query::scan(&self.state.read(), filter, p, limit, 8192)
    }

    /// Rows it holds (ids with a live version).
    pub fn live_rows(&self) -> u64 {
        self.state.read().ids.len() as u64
    }

    /// Current statistics.
    pub fn stats(&self) -> ReplicaStats {
        let st = self.state.read();
        ReplicaStats {
            info: self.info.clone(),
            count: st.ids.len() as u64,
            deleted: st.deleted,
            lsn: st.applied_lsn,
            indexing_lag: st.indexing_lag(),
            segments: st.segments.len() as u64,
            memory_bytes: st.memory_bytes(),
            disk_bytes: self.wal_files.disk_bytes()
                + self.counters.segment_bytes.load(Ordering::Relaxed),
            payload_columns: st
                .schema
                .fields()
                .iter()
                .map(|f| format!("{}: {}", f.name(), f.data_type()))
                .collect(),
        }
    }

    /// Graph health: `(linked, reachable, unrepaired)` summed over segments — rows linked into
    /// the graphs, how many of them a search can reach from the entry points, and how many were
    /// linked since their segment's last repair pass. Walks every graph: for checks, not for
    /// hot paths.
    pub fn graph_health(&self) -> (usize, usize, usize) {
        let st = self.state.read();
        st.segments.iter().fold((0, 0, 0), |(l, r, u), s| {
            (
                l + s.index.indexed(),
                r + s.index.reachable(),
                u + s.index.unrepaired(),
            )
        })
    }

    /// Tell the jobs to stop without waiting for them: the committer finishes the queued
    /// writes, background work stops at its next step. [`Replica::shutdown`] then waits.
    pub fn begin_shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.commits.lock().take();
        self.signal.lock().take();
        self.commit_job.wake();
        self.background_job.wake();
    }

    /// Stop the jobs after the queued writes are committed; background work (linking,
    /// merges, checkpoints) stops at its next step and resumes after the next start. Once it
    /// returns the replica's files are closed. Idempotent.
    pub fn shutdown(&self) {
        self.begin_shutdown();
        self.commit_job.wait_done();
        self.background_job.wait_done();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.shutdown();
    }
}
