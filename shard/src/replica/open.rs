//! Creating, opening and restoring a replica: writing its directory, loading the sealed
//! segments its manifest lists, replaying the WAL after the checkpoint, and starting its
//! committer and background jobs. Nothing here runs once the replica serves.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use longbow_common::shard_api::{decode_schema, encode_schema, ReplicaInfo, ReplicaKey};
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;

use super::background::{Background, BackgroundJob, Counters, Signal, Signaller};
use super::commit::{CommitJob, Committer};
use super::epoch::Epochs;
use super::mutation::Mutation;
use super::role::Gate;
use super::state::ReplicaState;
use super::{io_err, seed_of, Host, Replica, ReplicaMeta, META_FILE, WAL_DIR};
use crate::error::{Result, ShardError};
use crate::payload::PayloadSchema;
use crate::storage::sealed::{collect_garbage, load_segment};
use crate::storage::Manifest;
use crate::wal::Wal;

impl Replica {
    /// Create a new replica in `dir` (which must not exist) and start it.
    pub fn create(
        dir: &Path,
        info: ReplicaInfo,
        payload: PayloadSchema,
        host: &Host,
    ) -> Result<Replica> {
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        let tmp = parent.join(format!(".creating-{}", info.shard));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let schema = if payload.fields().is_empty() {
            None
        } else {
            Some(encode_schema(&payload.to_arrow())?)
        };
        let meta = ReplicaMeta {
            info: info.clone(),
            payload_schema: schema,
        };
        let meta_path = tmp.join(META_FILE);
        let bytes = serde_json::to_vec_pretty(&meta).map_err(|e| ShardError::Io {
            path: meta_path.clone(),
            source: e.into(),
        })?;
        std::fs::write(&meta_path, bytes).map_err(io_err(&meta_path))?;
        std::fs::File::open(&meta_path)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&meta_path))?;
        crate::wal::io::sync_dir(&tmp).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, dir).map_err(io_err(dir))?;
        crate::wal::io::sync_dir(parent).map_err(io_err(parent))?;
        Replica::open(dir, host)
    }

    /// Open an existing replica: read its metadata, load the sealed segments its manifest
    /// lists, replay the WAL after the checkpoint, start its jobs.
    pub fn open(dir: &Path, host: &Host) -> Result<Replica> {
        let settings = &host.settings;
        let meta_path = dir.join(META_FILE);
        let bytes = std::fs::read(&meta_path).map_err(io_err(&meta_path))?;
        let meta: ReplicaMeta = serde_json::from_slice(&bytes).map_err(|e| ShardError::Io {
            path: meta_path.clone(),
            source: std::io::Error::other(e),
        })?;
        let info = meta.info;
        let key = ReplicaKey {
            namespace: info.namespace.clone(),
            shard: info.shard,
        };
        let manifest = Manifest::load(dir)?.unwrap_or_default();
        let schema = match manifest
            .payload_schema
            .as_ref()
            .or(meta.payload_schema.as_ref())
        {
            Some(s) => PayloadSchema::from_schema(&decode_schema(s)?)?,
            None => PayloadSchema::default(),
        };
        let mut state = ReplicaState::new(
            info.clone(),
            schema,
            settings.segment_capacity,
            seed_of(&key),
        );
        state.applied_lsn = manifest.checkpoint_lsn;
        state.next_segment = manifest.next_segment;
        for entry in &manifest.segments {
            let loaded = load_segment(dir, entry, &info)?;
            state.push_loaded(entry.clone(), loaded)?;
        }
        collect_garbage(dir, &manifest)?;
        let (wal, entries) = Wal::open(
            &dir.join(WAL_DIR),
            host.backend.clone(),
            settings.wal_segment_bytes,
            manifest.checkpoint_lsn,
        )?;
        let replayed = entries.len();
        for e in entries {
            let m = Mutation::decode(e.kind, &e.body, info.id_type, info.dim)?;
            state.apply(e.lsn, &m)?;
        }
        tracing::info!(replica = %key, segments = manifest.segments.len(), checkpoint_lsn = manifest.checkpoint_lsn, replayed, lsn = state.applied_lsn, "replica opened");
        Replica::start(dir, key, info, state, wal, manifest, host)
    }

    /// Start the committer and background jobs over a loaded state.
    fn start(
        dir: &Path,
        key: ReplicaKey,
        info: ReplicaInfo,
        state: ReplicaState,
        wal: Wal,
        manifest: Manifest,
        host: &Host,
    ) -> Result<Replica> {
        let settings = &host.settings;
        let committer_schema = state.schema.clone();
        let state = Arc::new(RwLock::new(state));
        let (signal_tx, signal_rx) = std::sync::mpsc::channel();
        let (tx, rx) = mpsc::channel(settings.commit_queue.max(1));
        let failed = Arc::new(Mutex::new(None));
        let disk_full = Arc::new(Mutex::new(None));
        let wal_files = wal.files();
        let syncs = wal.sync_counter();
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        counters
            .checkpoint_lsn
            .store(manifest.checkpoint_lsn, Ordering::Relaxed);
        counters
            .segment_bytes
            .store(manifest.disk_bytes(), Ordering::Relaxed);
        let checkpoint_error = Arc::new(Mutex::new(None));
        let gate = Arc::new(Mutex::new(Gate::new(Epochs::load(dir)?)));
        let has_backups = Arc::new(AtomicBool::new(false));
        let background = Background {
            key: key.clone(),
            dir: dir.to_path_buf(),
            state: state.clone(),
            wal_files: wal_files.clone(),
            settings: settings.clone(),
            stop: stop.clone(),
            manifest,
            counters: counters.clone(),
            last_error: checkpoint_error.clone(),
            has_backups: has_backups.clone(),
        };
        let background_job = host
            .background_pool
            .spawn(BackgroundJob::new(background, signal_rx));
        let signaller = Signaller {
            tx: signal_tx,
            job: background_job.clone(),
        };
        let committer = Committer {
            key: key.clone(),
            dir: dir.to_path_buf(),
            wal,
            gate: gate.clone(),
            state: state.clone(),
            schema: committer_schema,
            background: signaller.clone(),
            failed: failed.clone(),
            disk_full: disk_full.clone(),
        };
        let commit_job = host.commit_pool.spawn(CommitJob {
            committer,
            requests: rx,
        });
        // Link whatever replay loaded.
        signaller.send(Signal::NewRows);
        Ok(Replica {
            key,
            info,
            dir: dir.to_path_buf(),
            state,
            commits: Mutex::new(Some(tx)),
            commit_job,
            background_job,
            failed,
            disk_full,
            wal_files,
            syncs,
            stop,
            signal: Mutex::new(Some(signaller)),
            counters,
            checkpoint_error,
            gate,
            has_backups,
        })
    }

    /// Create a replica of namespace `(name, incarnation)` in `dir` (which must not exist)
    /// from snapshot part `part`, linking its files, and start it.
    pub fn restore(
        part: &Path,
        dir: &Path,
        (namespace, incarnation): (&str, u64),
        host: &Host,
    ) -> Result<Replica> {
        let meta_path = part.join(META_FILE);
        let bytes = std::fs::read(&meta_path).map_err(io_err(&meta_path))?;
        let mut meta: ReplicaMeta =
            serde_json::from_slice(&bytes).map_err(|e| ShardError::Corrupt {
                path: meta_path.clone(),
                reason: e.to_string(),
            })?;
        meta.info.namespace = namespace.to_string();
        meta.info.incarnation = incarnation;
        let rewritten = serde_json::to_vec_pretty(&meta).map_err(|e| ShardError::Corrupt {
            path: meta_path.clone(),
            reason: e.to_string(),
        })?;
        let manifest = crate::storage::snapshot::part_manifest(part)?;
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let tmp = parent.join(format!(".restoring-{name}"));
        crate::storage::snapshot::link_files(part, &manifest, &rewritten, META_FILE, &tmp)?;
        crate::storage::snapshot::publish(&tmp, dir)?;
        Replica::open(dir, host)
    }
}
