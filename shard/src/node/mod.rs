//! The shard node: the set of replicas kept under one data directory.
//!
//! Layout: `<data_dir>/replicas/<namespace>/<shard>/{replica.json, wal/}`. At start-up every
//! replica directory is opened and its WAL replayed; a replica that cannot be opened stops
//! start-up (serving without it would silently hide acknowledged data). The node holds an
//! exclusive lock on its data directory (`<data_dir>/LOCK`) while it runs. Snapshot parts
//! live under `<data_dir>/snapshots/<snapshot>/<shard>/`; checkpoints a primary is sending to
//! a backup under `<data_dir>/snapshots/.transfers/`, and files arriving from a primary in
//! `replicas/<namespace>/.incoming-<shard>/` ([`incoming`]).

mod incoming;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use longbow_common::model::validate_dim;
use longbow_common::shard_api::{
    decode_schema, CreateReplicaRequest, ReplicaInfo, ReplicaKey, RestoreReplicaRequest,
    SnapshotPart, SnapshotRequest,
};
use longbow_common::ContractError;
use parking_lot::RwLock;

use longbow_common::replication_api::{ProbeReply, ReplicaConfig, ReplicaStatus, TruncateRequest};

use crate::error::{Result, ShardError};
use crate::payload::PayloadSchema;
use crate::replica::epoch::Epochs;
use crate::replica::{Host, Replica, ReplicaSettings};
use crate::replication::Replication;
use crate::storage::snapshot::part_dir;
use crate::wal::{LogBackend, StdBackend};

/// Node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Root of this node's files.
    pub data_dir: PathBuf,
    /// Per-replica tunables.
    pub replica: ReplicaSettings,
    /// Threads shared by every replica's jobs.
    pub workers: WorkerThreads,
    /// How long a primary waits for a backup (or a coordinator) before taking it out of the
    /// in-sync set.
    pub replication_timeout: std::time::Duration,
}

/// Sizes of the node's worker pools: fixed, whatever the number of replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerThreads {
    /// Threads running committers (group commit: WAL append and fsync, then apply).
    pub commit: usize,
    /// Threads running background jobs (linking, repair, merges, checkpoints); linking
    /// itself fans out on the process's rayon pool.
    pub background: usize,
}

impl Default for WorkerThreads {
    fn default() -> Self {
        WorkerThreads {
            commit: 4,
            background: 2,
        }
    }
}

/// All replicas hosted by this process.
pub struct ShardNode {
    /// Held for the life of the node: no second process opens these files.
    _lock: longbow_common::dirlock::DirLock,
    config: NodeConfig,
    host: Host,
    replicas: RwLock<BTreeMap<ReplicaKey, Arc<Replica>>>,
    replication: Replication,
    /// Held while a transferred file is written or a transfer installed.
    incoming: parking_lot::Mutex<()>,
}

/// Check a namespace name (the rule lives in `longbow_common::model`).
pub fn validate_namespace(name: &str) -> Result<(), ContractError> {
    longbow_common::model::validate_namespace("namespace", name)
}

/// Check a snapshot id: it names a directory, so it follows the namespace rule.
pub fn validate_snapshot_id(id: &str) -> Result<(), ContractError> {
    longbow_common::model::validate_namespace("snapshot", id)
}

impl ShardNode {
    /// Open the node: create the data directory if needed and open every replica in it.
    pub fn open(config: NodeConfig) -> Result<ShardNode> {
        let lock = longbow_common::dirlock::DirLock::acquire(&config.data_dir, "shard")?;
        let backend: Arc<dyn LogBackend> = Arc::new(StdBackend);
        let host = Host::new(
            config.replica.clone(),
            backend.clone(),
            config.workers.commit,
            config.workers.background,
        )
        .map_err(|source| ShardError::Io {
            path: config.data_dir.clone(),
            source,
        })?;
        let root = config.data_dir.join("replicas");
        std::fs::create_dir_all(&root).map_err(|source| ShardError::Io {
            path: root.clone(),
            source,
        })?;
        crate::storage::snapshot::clean_leftovers(&config.data_dir)?;
        let mut replicas = BTreeMap::new();
        for ns in read_dirs(&root)? {
            for shard_dir in read_dirs(&ns)? {
                let name = shard_dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                if name.starts_with('.') {
                    // An interrupted create or drop: never acknowledged, safe to discard.
                    tracing::warn!(dir = %shard_dir.display(), "removing leftover of an interrupted create/drop");
                    std::fs::remove_dir_all(&shard_dir).map_err(|source| ShardError::Io {
                        path: shard_dir.clone(),
                        source,
                    })?;
                    continue;
                }
                let replica = Replica::open(&shard_dir, &host)?;
                replicas.insert(replica.key().clone(), Arc::new(replica));
            }
        }
        tracing::info!(data_dir = %config.data_dir.display(), replicas = replicas.len(), wal_backend = backend.name(), commit_threads = config.workers.commit, background_threads = config.workers.background, "shard node opened");
        Ok(ShardNode {
            _lock: lock,
            replication: Replication::new(
                config.replication_timeout,
                crate::storage::snapshot::transfers_dir(&config.data_dir),
            ),
            incoming: parking_lot::Mutex::new(()),
            config,
            host,
            replicas: RwLock::new(replicas),
        })
    }

    fn replica_dir(&self, key: &ReplicaKey) -> PathBuf {
        self.config
            .data_dir
            .join("replicas")
            .join(&key.namespace)
            .join(key.shard.to_string())
    }

    /// Create a replica.
    pub fn create_replica(&self, req: CreateReplicaRequest) -> Result<Arc<Replica>> {
        validate_namespace(&req.namespace)?;
        validate_dim("dim", req.dim)?;
        req.index.validate()?;
        let payload = match &req.payload_schema {
            Some(s) => PayloadSchema::from_schema(&decode_schema(s)?)?,
            None => PayloadSchema::default(),
        };
        let key = ReplicaKey {
            namespace: req.namespace.clone(),
            shard: req.shard,
        };
        self.make_room(&key, req.incarnation)?;
        let mut replicas = self.replicas.write();
        if replicas.contains_key(&key) {
            return Err(ShardError::ReplicaExists(key));
        }
        let info = ReplicaInfo {
            namespace: req.namespace,
            shard: req.shard,
            dim: req.dim,
            metric: req.metric,
            id_type: req.id_type,
            index: req.index,
            incarnation: req.incarnation,
        };
        let replica = Arc::new(Replica::create(
            &self.replica_dir(&key),
            info,
            payload,
            &self.host,
        )?);
        replicas.insert(key, replica.clone());
        Ok(replica)
    }

    /// Before creating replica `key` of namespace incarnation `incarnation`: drop a replica
    /// of an older namespace of the same name (deleted while this node was away), refuse if
    /// the one here is of a newer one. A replica of the same incarnation (or of unknown ones)
    /// is left for the caller to find.
    fn make_room(&self, key: &ReplicaKey, incarnation: u64) -> Result<()> {
        let Ok(existing) = self.replica(key) else {
            return Ok(());
        };
        let have = existing.info().incarnation;
        drop(existing);
        if have == incarnation || have == 0 || incarnation == 0 {
            return Ok(());
        }
        if have > incarnation {
            return Err(ShardError::NewerIncarnation {
                key: key.clone(),
                have,
                got: incarnation,
            });
        }
        tracing::info!(replica = %key, have, incarnation, "dropping a replica of a deleted namespace of the same name");
        match self.drop_replica(key) {
            Ok(()) | Err(ShardError::ReplicaNotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The replica `key`.
    pub fn replica(&self, key: &ReplicaKey) -> Result<Arc<Replica>> {
        self.replicas
            .read()
            .get(key)
            .cloned()
            .ok_or_else(|| ShardError::ReplicaNotFound(key.clone()))
    }

    /// Every hosted replica.
    pub fn replicas(&self) -> Vec<Arc<Replica>> {
        self.replicas.read().values().cloned().collect()
    }

    /// Take replica `key` out of service and stop it (its background work included);
    /// returns its directory, whose files are closed. Blocks while its threads stop.
    fn close(&self, key: &ReplicaKey) -> Result<PathBuf> {
        let replica = self
            .replicas
            .write()
            .remove(key)
            .ok_or_else(|| ShardError::ReplicaNotFound(key.clone()))?;
        self.replication.forget(key);
        replica.shutdown();
        Ok(replica.dir().to_path_buf())
    }

    /// Drop a replica: stop it and delete its files. Blocks while its threads stop.
    pub fn drop_replica(&self, key: &ReplicaKey) -> Result<()> {
        let dir = self.close(key)?;
        let parent = dir.parent().unwrap_or(Path::new("."));
        let doomed = parent.join(format!(".dropping-{}", key.shard));
        std::fs::rename(&dir, &doomed).map_err(|source| ShardError::Io {
            path: dir.clone(),
            source,
        })?;
        std::fs::remove_dir_all(&doomed).map_err(|source| ShardError::Io {
            path: doomed.clone(),
            source,
        })?;
        Ok(())
    }

    /// Give a replica its place in its replica set. Blocks on the replica's gate.
    pub fn configure_replica(&self, cfg: &ReplicaConfig) -> Result<ReplicaStatus> {
        let replica = self.replica(&ReplicaKey {
            namespace: cfg.namespace.clone(),
            shard: cfg.shard,
        })?;
        self.replication.configure(&replica, cfg)
    }

    /// Answer a primary's probe. Blocks on the replica's gate.
    pub fn probe_replica(&self, key: &ReplicaKey, epoch: u64) -> Result<ProbeReply> {
        let replica = self.replica(key)?;
        self.replication.probe(&replica, epoch)
    }

    /// What every hosted replica reports about itself (blocks on each gate in turn).
    pub fn replica_statuses(&self) -> Vec<ReplicaStatus> {
        self.replicas()
            .iter()
            .map(|r| self.replication.status(r))
            .collect()
    }

    /// Cut a backup's log back to `req.after_lsn` for the primary of `req.epoch`, which
    /// probed it: the replica is closed, its WAL and epochs cut, and it is opened again.
    /// Entries a checkpoint holds cannot be cut ([`ShardError::NeedsTransfer`]). Blocks.
    pub fn truncate_replica(&self, req: &TruncateRequest) -> Result<ProbeReply> {
        let key = ReplicaKey {
            namespace: req.namespace.clone(),
            shard: req.shard,
        };
        let replica = self.replica(&key)?;
        refuse_older_epoch(&replica, req.epoch)?;
        let needs_transfer = |checkpoint: u64| {
            ShardError::NeedsTransfer {
            key: key.clone(),
            reason: format!(
                "its log must be cut back to LSN {}, but its checkpoint holds LSNs up to {checkpoint}",
                req.after_lsn
            ),
        }
        };
        if req.after_lsn < replica.checkpoint_lsn() {
            return Err(needs_transfer(replica.checkpoint_lsn()));
        }
        if req.after_lsn >= replica.wal_files().durable_lsn() {
            return self.replication.probe(&replica, req.epoch);
        }
        drop(replica);
        let dir = self.close(&key)?;
        let checkpoint = crate::storage::Manifest::load(&dir)?
            .map(|m| m.checkpoint_lsn)
            .unwrap_or(0);
        let cut = if req.after_lsn < checkpoint {
            Err(needs_transfer(checkpoint))
        } else {
            self.cut_log(&dir, req.after_lsn, req.epoch)
        };
        // Open it again whatever happened: a replica is never left closed.
        let reopened = Arc::new(Replica::open(&dir, &self.host)?);
        self.replicas.write().insert(key, reopened.clone());
        cut?;
        tracing::info!(replica = %reopened.key(), lsn = req.after_lsn, epoch = req.epoch, "log cut back for a new primary");
        self.replication.probe(&reopened, req.epoch)
    }

    fn cut_log(&self, dir: &Path, after_lsn: u64, epoch: u64) -> Result<()> {
        crate::wal::truncate_after(&dir.join(crate::replica::WAL_DIR), after_lsn)?;
        let mut epochs = Epochs::load(dir)?;
        epochs.truncate(after_lsn);
        epochs.raise(epoch);
        epochs.store(dir)
    }

    /// Snapshot one replica: a checkpoint, then hard links of its files under
    /// `<data-dir>/snapshots/<snapshot>/<shard>/`. Blocks while the checkpoint is written.
    pub fn create_snapshot(&self, req: &SnapshotRequest) -> Result<SnapshotPart> {
        validate_snapshot_id(&req.snapshot)?;
        let replica = self.replica(&ReplicaKey {
            namespace: req.namespace.clone(),
            shard: req.shard,
        })?;
        let dest = part_dir(&self.config.data_dir, &req.snapshot, req.shard);
        if dest.exists() {
            return Err(ShardError::SnapshotExists(req.snapshot.clone()));
        }
        replica.snapshot(dest)
    }

    /// Create a replica from a snapshot part this node holds.
    pub fn restore_replica(&self, req: &RestoreReplicaRequest) -> Result<Arc<Replica>> {
        validate_snapshot_id(&req.snapshot)?;
        validate_namespace(&req.namespace)?;
        let key = ReplicaKey {
            namespace: req.namespace.clone(),
            shard: req.shard,
        };
        let part = part_dir(&self.config.data_dir, &req.snapshot, req.shard);
        if !part.exists() {
            return Err(ShardError::SnapshotNotFound(req.snapshot.clone()));
        }
        self.make_room(&key, req.incarnation)?;
        let mut replicas = self.replicas.write();
        if replicas.contains_key(&key) {
            return Err(ShardError::ReplicaExists(key));
        }
        let replica = Arc::new(Replica::restore(
            &part,
            &self.replica_dir(&key),
            (&req.namespace, req.incarnation),
            &self.host,
        )?);
        replicas.insert(key, replica.clone());
        Ok(replica)
    }

    /// Delete every part of a snapshot on this node; whether there was one.
    pub fn delete_snapshot(&self, id: &str) -> Result<bool> {
        validate_snapshot_id(id)?;
        crate::storage::snapshot::delete(&self.config.data_dir, id)
    }

    /// This node's stable identity, created on first use and kept in `node.json`.
    pub fn node_key(&self) -> Result<String> {
        let path = self.config.data_dir.join("node.json");
        let io = |source| ShardError::Io {
            path: path.clone(),
            source,
        };
        if let Ok(bytes) = std::fs::read(&path) {
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| io(std::io::Error::other(e)))?;
            if let Some(k) = v.get("node_key").and_then(|k| k.as_str()) {
                return Ok(k.to_string());
            }
        }
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        let key = format!("{:016x}", h.finish());
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::json!({ "node_key": key }).to_string()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        crate::wal::io::sync_dir(&self.config.data_dir).map_err(io)?;
        Ok(key)
    }

    /// Stop every replica (queued writes are committed first).
    pub fn shutdown(&self) {
        let replicas = self.replicas();
        // Every replica stops its background work at once, then each is waited for.
        for r in &replicas {
            r.begin_shutdown();
        }
        for r in &replicas {
            r.shutdown();
        }
    }
}

/// Refuse a call from a primary of an older epoch than `replica` accepted.
fn refuse_older_epoch(replica: &Replica, epoch: u64) -> Result<()> {
    let current = replica.gate().lock().epochs.current;
    if epoch < current {
        return Err(ShardError::StaleEpoch {
            key: replica.key().clone(),
            got: epoch,
            current,
        });
    }
    Ok(())
}

fn read_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|source| ShardError::Io {
        path: dir.to_path_buf(),
        source,
    })? {
        let e = e.map_err(|source| ShardError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        if e.path().is_dir() {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

impl longbow_common::http::Health for ShardNode {
    fn metrics_text(&self) -> String {
        let replicas = self.replicas();
        let stats: Vec<_> = replicas
            .iter()
            .map(|r| (r.stats(), r.wal_syncs()))
            .collect();
        let sum = |f: &dyn Fn(&longbow_common::shard_api::ReplicaStats) -> u64| {
            stats.iter().map(|(s, _)| f(s)).sum::<u64>()
        };
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, kind: &str, v: u64| {
            // OpenMetrics: a counter's family name drops the `_total` its sample carries.
            let family = name.strip_suffix("_total").unwrap_or(name);
            out.push_str(&format!(
                "# HELP {family} {help}\n# TYPE {family} {kind}\n{name} {v}\n"
            ));
        };
        gauge(
            "longbow_shard_replicas",
            "Replicas hosted by this node",
            "gauge",
            replicas.len() as u64,
        );
        gauge(
            "longbow_shard_rows",
            "Live rows over all replicas",
            "gauge",
            sum(&|s| s.count),
        );
        gauge(
            "longbow_shard_deleted_rows",
            "Tombstoned row versions over all replicas",
            "gauge",
            sum(&|s| s.deleted),
        );
        gauge(
            "longbow_shard_indexing_lag_rows",
            "Rows not yet linked into a graph",
            "gauge",
            sum(&|s| s.indexing_lag),
        );
        gauge(
            "longbow_shard_memory_bytes",
            "Approximate memory of all replicas",
            "gauge",
            sum(&|s| s.memory_bytes),
        );
        gauge(
            "longbow_wal_disk_bytes",
            "Bytes in WAL files",
            "gauge",
            sum(&|s| s.disk_bytes),
        );
        gauge(
            "longbow_wal_syncs_total",
            "WAL group commits (fdatasync calls)",
            "counter",
            stats.iter().map(|(_, n)| n).sum(),
        );
        let counter =
            |f: &dyn Fn(&crate::replica::background::Counters) -> &std::sync::atomic::AtomicU64| {
                replicas
                    .iter()
                    .map(|r| f(r.counters()).load(std::sync::atomic::Ordering::Relaxed))
                    .sum::<u64>()
            };
        gauge(
            "longbow_shard_checkpoints_total",
            "Checkpoints written (segments sealed to files, manifest switched)",
            "counter",
            counter(&|c| &c.checkpoints),
        );
        gauge(
            "longbow_shard_checkpoint_failures_total",
            "Checkpoints that failed and will be retried",
            "counter",
            counter(&|c| &c.checkpoint_failures),
        );
        gauge(
            "longbow_shard_segment_merges_total",
            "Segments rewritten without dead rows or merged by the optimizer",
            "counter",
            counter(&|c| &c.merges),
        );
        gauge(
            "longbow_shard_repair_passes_total",
            "Reachability checks of segment graphs by the repair agent",
            "counter",
            counter(&|c| &c.repair_passes),
        );
        gauge(
            "longbow_shard_repair_relinked_total",
            "Unreachable graph nodes the repair agent found and relinked",
            "counter",
            counter(&|c| &c.repair_relinked),
        );
        gauge(
            "longbow_wal_files_removed_total",
            "WAL files deleted because a checkpoint holds their changes",
            "counter",
            counter(&|c| &c.wal_files_removed),
        );
        gauge(
            "longbow_shard_segment_disk_bytes",
            "Bytes of sealed segment files",
            "gauge",
            counter(&|c| &c.segment_bytes),
        );
        let transfers = self.replication.transfers();
        gauge(
            "longbow_replica_transfers_sent_total",
            "Segment transfers this node sent to backups that needed its checkpoint files",
            "counter",
            transfers.sent.load(std::sync::atomic::Ordering::Relaxed),
        );
        gauge(
            "longbow_replica_transfer_sent_bytes_total",
            "Bytes of segment files sent in transfers",
            "counter",
            transfers
                .sent_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        gauge(
            "longbow_replica_transfers_installed_total",
            "Segment transfers installed on this node's replicas",
            "counter",
            transfers
                .received
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let mut per_segment = String::from(
            "# HELP longbow_shard_segment_tombstone_ratio Dead fraction (deleted plus replaced rows) of each segment\n\
             # TYPE longbow_shard_segment_tombstone_ratio gauge\n",
        );
        for r in &replicas {
            let k = r.key();
            for (seg, density) in r.tombstone_density() {
                per_segment.push_str(&format!(
                    "longbow_shard_segment_tombstone_ratio{{namespace=\"{}\",shard=\"{}\",segment=\"{seg}\"}} {density}\n",
                    k.namespace, k.shard
                ));
            }
        }
        gauge(
            "longbow_flight_decoder_panics_total",
            "Malformed client messages on which the Arrow IPC decoder panicked (caught and refused)",
            "counter",
            longbow_common::flight::decoder_panics(),
        );
        out.push_str(&per_segment);
        let pools = [
            ("commit", &self.host.commit_pool),
            ("background", &self.host.background_pool),
        ];
        out.push_str(
            "# HELP longbow_shard_worker_threads Threads of each worker pool shared by all replicas
             # TYPE longbow_shard_worker_threads gauge
",
        );
        for (name, pool) in pools {
            out.push_str(&format!(
                "longbow_shard_worker_threads{{pool=\"{name}\"}} {}\n",
                pool.threads()
            ));
        }
        out.push_str(
            "# HELP longbow_shard_worker_queued_jobs Replica jobs waiting for a thread of each worker pool
             # TYPE longbow_shard_worker_queued_jobs gauge
",
        );
        for (name, pool) in pools {
            out.push_str(&format!(
                "longbow_shard_worker_queued_jobs{{pool=\"{name}\"}} {}\n",
                pool.queued()
            ));
        }
        let isa = crate::distance::kernels().isa;
        out.push_str(&format!(
            "# HELP longbow_shard_distance_kernels_info Distance kernel set in use (chosen once at start-up)\n\
             # TYPE longbow_shard_distance_kernels_info gauge\n\
             longbow_shard_distance_kernels_info{{isa=\"{isa}\"}} 1\n"
        ));
        out.push_str("# EOF\n");
        out
    }

    /// A shard node serves only once every replica opened and replayed its WAL (`open`
    /// returns after that), so it is ready whenever it answers.
    fn not_ready(&self) -> Option<String> {
        None
    }

    fn ready_detail(&self) -> String {
        let replicas = self.replicas();
        let lag: u64 = replicas.iter().map(|r| r.stats().indexing_lag).sum();
        format!("replicas {}\nindexing_lag_rows {lag}\n", replicas.len())
    }

    fn degraded(&self) -> Option<String> {
        self.replicas().iter().find_map(|r| {
            r.write_fault()
                .map(|e| format!("replica {} cannot take writes: {e}", r.key()))
                .or_else(|| {
                    r.checkpoint_error()
                        .map(|e| format!("replica {} cannot checkpoint: {e}", r.key()))
                })
        })
    }
}
