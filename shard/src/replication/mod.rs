//! Replication between the replicas of a shard: primary–backup with epochs (PacificA, Kafka
//! ISR). This layer sits above [`crate::replica`] and is the only shard code that talks to
//! other nodes.
//!
//! - [`Replication::configure`] applies the replica set a coordinator gives a replica: its
//!   epoch (made durable, never lowered), its role, and on a primary the links to its
//!   backups.
//! - A primary's [`PrimaryForward`] (plugged into the replica's gate) sends every group that
//!   is durable locally to every in-sync backup and lets it be acknowledged once they all
//!   have it; backups that fail are taken out of the in-sync set through a coordinator first,
//!   and if that does not go through the group is not acknowledged and the primary is fenced.
//! - Members outside the in-sync set are caught up from the primary's WAL ([`catch_up`]) and
//!   put back in with the primary's commits paused. When the WAL no longer holds what a
//!   member lacks, the primary sends it the files of a fresh checkpoint first ([`transfer`];
//!   the receiving side is `crate::node::incoming`).
//! - On a backup, [`Replication::probe`] tells a primary where its log ends (and fences
//!   older epochs).
//!
//! What is durable when, who may acknowledge and how epochs fence is recorded in
//! `docs/decisions/0014-replication.md`.

mod catch_up;
pub mod link;
mod transfer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use longbow_common::channels::Channels;
use longbow_common::replication_api::{
    InSyncChange, ProbeReply, ReplicaConfig, ReplicaStatus, Role, ACTION_UPDATE_IN_SYNC,
};
use longbow_common::shard_api::ReplicaKey;
use parking_lot::Mutex;

use self::link::BackupLink;
use crate::error::{Result, ShardError};
use crate::replica::epoch::Epochs;
use crate::replica::role::{Forward, ForwardWait, Gate};
use crate::replica::Replica;

/// A node's replication machinery, shared by its replicas.
pub struct Replication {
    runtime: Option<tokio::runtime::Handle>,
    peers: Arc<Channels>,
    timeout: Duration,
    /// Bumped on every configuration of a replica: tasks of an older one stop.
    generations: Mutex<HashMap<ReplicaKey, Arc<AtomicU64>>>,
    /// The newest replica-set version each replica has seen (configured with, or answered
    /// to its own in-sync change): older configurations are ignored.
    versions: Mutex<HashMap<ReplicaKey, Arc<AtomicU64>>>,
    /// The last status read of each replica, reported while its gate is busy.
    last_status: Mutex<HashMap<ReplicaKey, ReplicaStatus>>,
    /// Where checkpoints being sent to backups are linked.
    transfers_dir: std::path::PathBuf,
    counters: Arc<TransferCounters>,
}

/// Segment transfers this node sent and installed.
#[derive(Debug, Default)]
pub struct TransferCounters {
    /// Transfers sent to backups (completed).
    pub sent: AtomicU64,
    /// Bytes of segment files sent.
    pub sent_bytes: AtomicU64,
    /// Transfers installed on this node's replicas.
    pub received: AtomicU64,
}

impl Replication {
    /// Replication whose calls to other nodes give up after `timeout`, linking checkpoints
    /// it sends under `transfers_dir`. Network work runs on the current tokio runtime (none:
    /// replicas can only stand alone).
    pub fn new(timeout: Duration, transfers_dir: std::path::PathBuf) -> Replication {
        Replication {
            runtime: tokio::runtime::Handle::try_current().ok(),
            peers: Arc::new(Channels::default()),
            timeout,
            generations: Mutex::new(HashMap::new()),
            versions: Mutex::new(HashMap::new()),
            last_status: Mutex::new(HashMap::new()),
            transfers_dir,
            counters: Arc::default(),
        }
    }

    /// Transfers sent and installed so far.
    pub fn transfers(&self) -> &TransferCounters {
        &self.counters
    }

    /// Count a transfer installed on this node.
    pub fn count_received(&self) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
    }

    fn next_generation(&self, key: &ReplicaKey) -> (Arc<AtomicU64>, u64) {
        let g = self
            .generations
            .lock()
            .entry(key.clone())
            .or_default()
            .clone();
        let v = g.fetch_add(1, Ordering::AcqRel) + 1;
        (g, v)
    }

    /// Stop the background work of a replica being dropped or reopened.
    pub fn forget(&self, key: &ReplicaKey) {
        self.next_generation(key);
        self.last_status.lock().remove(key);
        // A replica created again under this key belongs to a new replica set.
        self.versions.lock().remove(key);
    }

    fn version_of(&self, key: &ReplicaKey) -> Arc<AtomicU64> {
        self.versions.lock().entry(key.clone()).or_default().clone()
    }

    /// Apply replica set `cfg` to `replica`. Blocks on the replica's gate (call it off the
    /// async runtime). An older epoch than the replica accepted is refused.
    pub fn configure(&self, replica: &Arc<Replica>, cfg: &ReplicaConfig) -> Result<ReplicaStatus> {
        let key = replica.key().clone();
        let mut gate = replica.gate().lock();
        if cfg.epoch < gate.epochs.current {
            return Err(ShardError::StaleEpoch {
                key,
                got: cfg.epoch,
                current: gate.epochs.current,
            });
        }
        let seen = self.version_of(&key);
        if cfg.epoch == gate.epochs.current && cfg.version < seen.load(Ordering::Acquire) {
            tracing::info!(replica = %key, epoch = cfg.epoch, version = cfg.version, seen = seen.load(Ordering::Acquire), "ignored a configuration older than one already seen");
            return Ok(status_of(replica, &gate));
        }
        seen.fetch_max(cfg.version, Ordering::AcqRel);
        let durable = replica.wal_files().durable_lsn();
        let changed = match cfg.role {
            Role::Primary => gate.epochs.begin(cfg.epoch, durable + 1),
            Role::Backup => gate.epochs.raise(cfg.epoch),
        };
        if changed {
            gate.epochs.store(replica.dir())?;
        }
        let (generation, version) = self.next_generation(&key);
        gate.role = Some(cfg.role);
        gate.in_sync = cfg.in_sync.clone();
        replica.set_has_backups(cfg.members.len() > 1);
        gate.fenced = None;
        gate.forward = None;
        if cfg.role == Role::Primary {
            let forward = self.primary_forward(replica, cfg, &gate.epochs, (generation, version));
            for m in cfg.backups() {
                if !cfg.in_sync.contains(&m.node) {
                    forward.spawn_catch_up(m.clone());
                }
            }
            gate.forward = Some(forward);
        }
        tracing::info!(replica = %key, epoch = cfg.epoch, role = ?cfg.role, in_sync = ?cfg.in_sync, lsn = durable, "replica configured");
        Ok(status_of(replica, &gate))
    }

    fn primary_forward(
        &self,
        replica: &Arc<Replica>,
        cfg: &ReplicaConfig,
        epochs: &Epochs,
        (generation, version): (Arc<AtomicU64>, u64),
    ) -> Arc<PrimaryForward> {
        let links = cfg
            .backups()
            .filter(|m| cfg.in_sync.contains(&m.node))
            .map(|m| {
                Arc::new(link_to(
                    replica.key(),
                    cfg,
                    m.clone(),
                    &self.peers,
                    self.timeout,
                ))
            })
            .collect();
        Arc::new(PrimaryForward {
            generation,
            version,
            replica: Arc::downgrade(replica),
            key: replica.key().clone(),
            cfg: cfg.clone(),
            epochs: epochs.clone(),
            links: Mutex::new(links),
            runtime: self.runtime.clone(),
            peers: self.peers.clone(),
            timeout: self.timeout,
            transfers_dir: self.transfers_dir.clone(),
            counters: self.counters.clone(),
            seen_version: self.version_of(replica.key()),
        })
    }

    /// Answer a probe from the primary of `epoch`: raise this replica's epoch to it (so
    /// older primaries are refused from now on), let that primary's entries in, and say
    /// where the log ends. Blocks on the gate.
    pub fn probe(&self, replica: &Replica, epoch: u64) -> Result<ProbeReply> {
        let mut gate = replica.gate().lock();
        if epoch < gate.epochs.current {
            return Err(ShardError::StaleEpoch {
                key: replica.key().clone(),
                got: epoch,
                current: gate.epochs.current,
            });
        }
        if gate.epochs.raise(epoch) {
            gate.epochs.store(replica.dir())?;
        }
        if gate.role == Some(Role::Primary) {
            tracing::info!(replica = %replica.key(), epoch, "a newer primary probed this replica; it is a backup now");
            self.forget(replica.key());
        }
        gate.role = Some(Role::Backup);
        gate.forward = None;
        gate.probed_epoch = epoch;
        let lsn = replica.wal_files().durable_lsn();
        Ok(ProbeReply {
            lsn,
            last_epoch: gate.epochs.epoch_of(lsn),
            checkpoint_lsn: replica.checkpoint_lsn(),
        })
    }
}

fn link_to(
    key: &ReplicaKey,
    cfg: &ReplicaConfig,
    m: longbow_common::replication_api::Member,
    peers: &Arc<Channels>,
    timeout: Duration,
) -> BackupLink {
    BackupLink::new(key.clone(), cfg.epoch, cfg.node, m, peers.clone(), timeout)
}

impl Replication {
    /// What `replica` reports about itself. Never waits long for its gate (a primary holds it
    /// while a backup is slow, and heartbeats must not stall with it): while the gate is busy
    /// the last status read is reported, with the current LSN.
    pub fn status(&self, replica: &Replica) -> ReplicaStatus {
        let key = replica.key();
        match replica.gate().try_lock_for(Duration::from_millis(20)) {
            Some(gate) => {
                let s = status_of(replica, &gate);
                drop(gate);
                self.last_status.lock().insert(key.clone(), s.clone());
                s
            }
            None => {
                let cached = self.last_status.lock().get(key).cloned();
                let mut s = cached.unwrap_or_else(|| ReplicaStatus {
                    namespace: key.namespace.clone(),
                    shard: key.shard,
                    epoch: 0,
                    role: None,
                    lsn: 0,
                    in_sync: Vec::new(),
                    fenced: None,
                    incarnation: replica.info().incarnation,
                    rows: 0,
                });
                s.lsn = replica.wal_files().durable_lsn();
                s
            }
        }
    }
}

fn status_of(replica: &Replica, gate: &Gate) -> ReplicaStatus {
    ReplicaStatus {
        namespace: replica.key().namespace.clone(),
        shard: replica.key().shard,
        epoch: gate.epochs.current,
        role: gate.role,
        lsn: replica.wal_files().durable_lsn(),
        in_sync: gate.in_sync.clone(),
        fenced: gate.fenced.clone(),
        incarnation: replica.info().incarnation,
        rows: replica.live_rows(),
    }
}

/// A primary's forwarding of groups to its in-sync backups.
pub struct PrimaryForward {
    /// The replica's configuration counter, and the value it had when this was made: work of
    /// a superseded configuration stops.
    generation: Arc<AtomicU64>,
    version: u64,
    replica: std::sync::Weak<Replica>,
    key: ReplicaKey,
    cfg: ReplicaConfig,
    epochs: Epochs,
    links: Mutex<Vec<Arc<BackupLink>>>,
    runtime: Option<tokio::runtime::Handle>,
    peers: Arc<Channels>,
    timeout: Duration,
    transfers_dir: std::path::PathBuf,
    counters: Arc<TransferCounters>,
    /// The replica's newest seen set version (see [`Replication::configure`]).
    seen_version: Arc<AtomicU64>,
}

impl PrimaryForward {
    /// Ask a coordinator to change the in-sync set; the new configuration on success.
    async fn update_in_sync(
        &self,
        remove: Vec<u64>,
        add: Vec<u64>,
    ) -> Result<ReplicaConfig, String> {
        let change = InSyncChange {
            namespace: self.key.namespace.clone(),
            shard: self.key.shard,
            epoch: self.cfg.epoch,
            primary: self.cfg.node,
            remove,
            add,
        };
        let mut last = String::from("no coordinator address is known");
        for addr in &self.cfg.coordinators {
            match self
                .peers
                .action::<ReplicaConfig>(addr, ACTION_UPDATE_IN_SYNC, &change, self.timeout)
                .await
            {
                Ok(cfg) => {
                    // A push computed before this change may still be on its way: it must
                    // not undo it.
                    self.seen_version.fetch_max(cfg.version, Ordering::AcqRel);
                    return Ok(cfg);
                }
                Err(s) => last = format!("coordinator {addr}: {}", s.message()),
            }
        }
        Err(last)
    }

    /// Send one group to one backup, syncing the link first when it needs it.
    async fn send(
        &self,
        link: &BackupLink,
        first: u64,
        last: u64,
        bytes: &[u8],
    ) -> Result<(), String> {
        let wal = match self.replica.upgrade() {
            Some(r) => r.wal_files().clone(),
            None => return Err("the replica is closing".into()),
        };
        let starts = self.epochs.covering(first, last);
        // At most one re-sync: a backup that refuses the group right after being brought in
        // line has a problem a retry will not fix.
        let mut refused = None;
        for _ in 0..2 {
            if !link.is_synced() {
                link.sync(&wal, &self.epochs, first - 1)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let reply = link
                .replicate(bytes, starts.clone())
                .await
                .map_err(|e| e.to_string())?;
            if reply.appended && reply.lsn >= last {
                return Ok(());
            }
            link.unsync();
            refused = Some(reply.lsn);
        }
        Err(format!(
            "backup node {} refused entries {first}..={last} (its log ends at {})",
            link.member.node,
            refused.unwrap_or(0)
        ))
    }

    async fn forward_async(
        self: Arc<Self>,
        first: u64,
        last: u64,
        bytes: Vec<u8>,
    ) -> Result<Vec<u64>, String> {
        let links = self.links.lock().clone();
        // Groups overlap: one may still be waiting on a backup that an earlier group's
        // failure has taken out of the in-sync set; it stops waiting for it then.
        let sends = links.iter().map(|l| async {
            tokio::select! {
                r = self.send(l, first, last, &bytes) => r,
                _ = l.dropped() => Ok(()),
            }
        });
        let results = futures::future::join_all(sends).await;
        let failed: Vec<(u64, String)> = links
            .iter()
            .zip(results)
            .filter_map(|(l, r)| r.err().map(|e| (l.member.node, e)))
            .collect();
        if failed.is_empty() {
            return Ok(Vec::new());
        }
        let nodes: Vec<u64> = failed.iter().map(|(n, _)| *n).collect();
        tracing::warn!(replica = %self.key, failed = ?failed, "backups failed a group; taking them out of the in-sync set");
        let cfg = self
            .update_in_sync(nodes.clone(), Vec::new())
            .await
            .map_err(|e| {
                format!(
                    "{}; taking them out of the in-sync set failed: {e}",
                    failed
                        .iter()
                        .map(|(_, e)| e.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })?;
        if cfg.epoch != self.cfg.epoch || nodes.iter().any(|n| cfg.in_sync.contains(n)) {
            return Err(format!(
                "the catalog kept the failed backups in sync (epoch {}, in sync {:?})",
                cfg.epoch, cfg.in_sync
            ));
        }
        let dropped: Vec<Arc<BackupLink>> = {
            let mut links = self.links.lock();
            let (gone, kept) = links
                .drain(..)
                .partition(|l| nodes.contains(&l.member.node));
            *links = kept;
            gone
        };
        for l in dropped {
            l.drop_from_sync();
            self.spawn_catch_up(l.member.clone());
        }
        Ok(nodes)
    }
}

impl Forward for PrimaryForward {
    fn forward(self: Arc<Self>, first: u64, last: u64, entries: Vec<u8>) -> ForwardWait {
        if self.links.lock().is_empty() {
            return ForwardWait::ready();
        }
        let Some(rt) = self.runtime.clone() else {
            return ForwardWait::new(|| Err("no runtime to replicate on".into()));
        };
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let _ = tx.send(self.forward_async(first, last, entries).await);
        });
        ForwardWait::new(move || {
            rx.recv()
                .unwrap_or_else(|_| Err("the replication task stopped".into()))
        })
    }
}
