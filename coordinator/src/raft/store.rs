//! Raft storage: the log in `sled` (tree `log`, key = index big-endian; the vote and the
//! purge and commit marks in tree `meta`), the state machine in memory, and its latest
//! snapshot in `catalog-snapshot.json` beside the sled directory.
//!
//! Applying an entry only changes memory. Every `snapshot_logs` entries openraft builds a
//! snapshot, which is written atomically before openraft purges the log it covers; a restart
//! loads the snapshot and openraft re-applies the committed log after it. So the store holds
//! one copy of the catalog plus a bounded tail of log, and shrinks when namespaces go.
//!
//! Every log and vote write is flushed before it is reported done: Raft's safety needs them
//! durable.

// openraft's storage traits fix the error type (`StorageError`, ~224 bytes); the helpers
// below return it too rather than converting back and forth.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    Entry, EntryPayload, LogId, LogState, RaftLogReader, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use super::TypeConfig;
use crate::catalog::{Catalog, CatalogResponse};
use crate::error::{CoordinatorError, Result};

type NodeId = u64;
type Node = openraft::BasicNode;
type SErr = StorageError<NodeId>;

/// Page cache of the sled log.
const SLED_CACHE_BYTES: u64 = 16 << 20;

/// The snapshot file, in the coordinator's data directory.
pub const SNAPSHOT_FILE: &str = "catalog-snapshot.json";

fn io_read(e: impl std::error::Error + 'static) -> SErr {
    StorageIOError::read(&e).into()
}
fn io_write(e: impl std::error::Error + 'static) -> SErr {
    StorageIOError::write(&e).into()
}

/// The log store.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

/// The state machine's contents as a snapshot carries them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SmData {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
    catalog: Catalog,
}

/// The snapshot file's contents.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    snapshot_id: String,
    data: SmData,
}

/// A snapshot's meta and its encoded [`SmData`].
type Encoded = (SnapshotMeta<NodeId, Node>, Vec<u8>);

/// Where the latest snapshot is kept, and a copy of it to serve followers.
struct SnapshotStore {
    path: PathBuf,
    /// The latest snapshot: its meta and its encoded [`SmData`].
    latest: RwLock<Option<Encoded>>,
}

impl SnapshotStore {
    /// Make `data` the durable snapshot `snapshot_id` and return its meta and bytes.
    fn store(&self, snapshot_id: String, data: &SmData) -> std::result::Result<Encoded, SErr> {
        let meta = SnapshotMeta {
            last_log_id: data.last_applied,
            last_membership: data.membership.clone(),
            snapshot_id: snapshot_id.clone(),
        };
        let bytes = serde_json::to_vec(data).map_err(io_write)?;
        let file = serde_json::to_vec(&StoredSnapshot {
            snapshot_id,
            data: data.clone(),
        })
        .map_err(io_write)?;
        longbow_common::disk::replace_file(&self.path, &file).map_err(io_write)?;
        *self.latest.write() = Some((meta.clone(), bytes.clone()));
        Ok((meta, bytes))
    }
}

/// The state machine: the applied catalog, shared with the read path.
pub struct StateMachine {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
    catalog: Arc<RwLock<Catalog>>,
    snapshots: Arc<SnapshotStore>,
    snapshot_idx: u64,
}

/// Open both halves: the sled log under `dir/raft`, the snapshot in `dir`.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachine)> {
    let storage = |e: &dyn std::fmt::Display| CoordinatorError::Storage(e.to_string());
    // The log stays small (snapshots purge it), so sled needs little cache.
    let db = sled::Config::new()
        .path(dir.join("raft"))
        .cache_capacity(SLED_CACHE_BYTES)
        .open()
        .map_err(|e| storage(&e))?;
    let t = |name: &str| db.open_tree(name).map_err(|e| storage(&e));
    let log = t("log")?;
    let meta = t("meta")?;
    // Stores written before snapshots kept the whole state machine in tree `sm`, updated
    // with every applied entry.
    let legacy = match db.tree_names().iter().any(|n| n.as_ref() == b"sm") {
        true => t("sm")?.get("data").map_err(|e| storage(&e))?,
        false => None,
    };
    let path = dir.join(SNAPSHOT_FILE);
    let (data, latest) = match std::fs::read(&path) {
        Ok(bytes) => {
            let stored: StoredSnapshot = serde_json::from_slice(&bytes)
                .map_err(|e| CoordinatorError::Storage(format!("{}: {e}", path.display())))?;
            let encoded = serde_json::to_vec(&stored.data).map_err(|e| storage(&e))?;
            let meta = SnapshotMeta {
                last_log_id: stored.data.last_applied,
                last_membership: stored.data.membership.clone(),
                snapshot_id: stored.snapshot_id,
            };
            (stored.data, Some((meta, encoded)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let data = match &legacy {
                Some(bytes) => serde_json::from_slice(bytes)
                    .map_err(|e| CoordinatorError::Storage(format!("state machine: {e}")))?,
                None => SmData::default(),
            };
            (data, None)
        }
        Err(e) => {
            return Err(CoordinatorError::Storage(format!(
                "{}: {e}",
                path.display()
            )))
        }
    };
    let snapshots = Arc::new(SnapshotStore {
        path,
        latest: RwLock::new(latest),
    });
    if legacy.is_some() {
        if snapshots.latest.read().is_none() {
            // Carry the legacy state machine over into the first snapshot.
            let id = format!("legacy-{}", data.last_applied.map_or(0, |l| l.index));
            snapshots.store(id, &data).map_err(|e| storage(&e))?;
        }
        db.drop_tree("sm").map_err(|e| storage(&e))?;
        db.flush().map_err(|e| storage(&e))?;
    }
    Ok((
        LogStore {
            db: db.clone(),
            log,
            meta,
        },
        StateMachine {
            last_applied: data.last_applied,
            membership: data.membership,
            catalog: Arc::new(RwLock::new(data.catalog)),
            snapshots,
            snapshot_idx: 0,
        },
    ))
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl LogStore {
    fn get_meta<T: for<'de> Deserialize<'de>>(
        &self,
        k: &str,
    ) -> std::result::Result<Option<T>, SErr> {
        match self.meta.get(k).map_err(io_read)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(io_read)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(&self, k: &str, v: &T) -> std::result::Result<(), SErr> {
        let bytes = serde_json::to_vec(v).map_err(io_write)?;
        self.meta.insert(k, bytes).map_err(io_write)?;
        self.db.flush().map_err(io_write)?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> std::result::Result<Vec<Entry<TypeConfig>>, SErr> {
        let start = match range.start_bound() {
            std::ops::Bound::Included(&i) => i,
            std::ops::Bound::Excluded(&i) => i + 1,
            std::ops::Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for item in self.log.range(key(start)..) {
            let (k, v) = item.map_err(io_read)?;
            let mut idx = [0u8; 8];
            idx.copy_from_slice(&k);
            if !range.contains(&u64::from_be_bytes(idx)) {
                break;
            }
            out.push(serde_json::from_slice(&v).map_err(io_read)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> std::result::Result<LogState<TypeConfig>, SErr> {
        let last_purged: Option<LogId<NodeId>> = self.get_meta("last_purged")?;
        let last = match self.log.last().map_err(io_read)? {
            Some((_, v)) => Some(
                serde_json::from_slice::<Entry<TypeConfig>>(&v)
                    .map_err(io_read)?
                    .log_id,
            ),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> std::result::Result<(), SErr> {
        self.put_meta("vote", vote)
    }

    async fn read_vote(&mut self) -> std::result::Result<Option<Vote<NodeId>>, SErr> {
        self.get_meta("vote")
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> std::result::Result<(), SErr> {
        self.put_meta("committed", &committed)
    }

    async fn read_committed(&mut self) -> std::result::Result<Option<LogId<NodeId>>, SErr> {
        Ok(self
            .get_meta::<Option<LogId<NodeId>>>("committed")?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> std::result::Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        for e in entries {
            batch.insert(
                &key(e.log_id.index),
                serde_json::to_vec(&e).map_err(io_write)?,
            );
        }
        self.log.apply_batch(batch).map_err(io_write)?;
        let flushed = self.db.flush().map(|_| ()).map_err(std::io::Error::other);
        callback.log_io_completed(flushed);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> std::result::Result<(), SErr> {
        let keys: Vec<_> = self
            .log
            .range(key(log_id.index)..)
            .keys()
            .collect::<std::result::Result<_, _>>()
            .map_err(io_write)?;
        for k in keys {
            self.log.remove(k).map_err(io_write)?;
        }
        self.db.flush().map_err(io_write)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> std::result::Result<(), SErr> {
        self.put_meta("last_purged", &log_id)?;
        let keys: Vec<_> = self
            .log
            .range(..=key(log_id.index))
            .keys()
            .collect::<std::result::Result<_, _>>()
            .map_err(io_write)?;
        for k in keys {
            self.log.remove(k).map_err(io_write)?;
        }
        self.db.flush().map_err(io_write)?;
        Ok(())
    }
}

impl StateMachine {
    /// The shared read view of the catalog.
    pub fn catalog(&self) -> Arc<RwLock<Catalog>> {
        self.catalog.clone()
    }

    fn data(&self) -> SmData {
        SmData {
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            catalog: self.catalog.read().clone(),
        }
    }
}

/// Builds a snapshot from a copy of the state machine taken when openraft asked for it.
pub struct SnapshotBuilder {
    data: SmData,
    idx: u64,
    snapshots: Arc<SnapshotStore>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    /// Write the snapshot durably (openraft purges the log it covers once this returns).
    async fn build_snapshot(&mut self) -> std::result::Result<Snapshot<TypeConfig>, SErr> {
        let snapshot_id = match &self.data.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.idx),
            None => format!("none-{}", self.idx),
        };
        let (store, data) = (self.snapshots.clone(), self.data.clone());
        let (meta, bytes) = tokio::task::spawn_blocking(move || store.store(snapshot_id, &data))
            .await
            .map_err(io_write)??;
        tracing::debug!(snapshot = %meta.snapshot_id, bytes = bytes.len(), "catalog snapshot written");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> std::result::Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), SErr> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> std::result::Result<Vec<CatalogResponse>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        let mut catalog = self.catalog.write();
        for e in entries {
            self.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(CatalogResponse::Ok),
                EntryPayload::Normal(cmd) => out.push(catalog.apply(&cmd)),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(CatalogResponse::Ok);
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_idx += 1;
        SnapshotBuilder {
            data: self.data(),
            idx: self.snapshot_idx,
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> std::result::Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> std::result::Result<(), SErr> {
        let mut data: SmData = serde_json::from_slice(snapshot.get_ref()).map_err(io_read)?;
        data.last_applied = meta.last_log_id;
        data.membership = meta.last_membership.clone();
        let (store, id, copy) = (
            self.snapshots.clone(),
            meta.snapshot_id.clone(),
            data.clone(),
        );
        tokio::task::spawn_blocking(move || store.store(id, &copy))
            .await
            .map_err(io_write)??;
        self.last_applied = data.last_applied;
        self.membership = data.membership;
        *self.catalog.write() = data.catalog;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> std::result::Result<Option<Snapshot<TypeConfig>>, SErr> {
        Ok(self
            .snapshots
            .latest
            .read()
            .clone()
            .map(|(meta, bytes)| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(bytes)),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CatalogCommand;

    /// `open`, waiting (bounded) for the sled lock a store dropped just before may still
    /// hold: sled's flusher thread lets it go a moment after the drop.
    fn reopen(dir: &Path) -> (LogStore, StateMachine) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match open(dir) {
                Ok(opened) => return opened,
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    assert!(std::time::Instant::now() < deadline, "{e}");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("open: {e}"),
            }
        }
    }

    /// A store written before snapshots (the whole state machine in tree `sm`) opens with
    /// its catalog, which moves into the first snapshot file.
    #[test]
    fn a_legacy_state_machine_becomes_the_first_snapshot() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut catalog = Catalog::default();
        catalog.apply(&CatalogCommand::RegisterShardNode {
            node_key: "k1".into(),
            address: "127.0.0.1:1".into(),
        });
        let legacy = SmData {
            last_applied: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 7)),
            membership: StoredMembership::default(),
            catalog,
        };
        {
            let db = sled::open(tmp.path().join("raft")).expect("sled");
            let sm = db.open_tree("sm").expect("tree");
            sm.insert("data", serde_json::to_vec(&legacy).expect("json"))
                .expect("insert");
            db.flush().expect("flush");
        }
        for _ in 0..2 {
            let (_, machine) = reopen(tmp.path());
            assert_eq!(machine.last_applied.map(|l| l.index), Some(7));
            assert_eq!(machine.catalog.read().nodes[&1].address, "127.0.0.1:1");
            let stored = machine.snapshots.latest.read().clone().expect("snapshot");
            assert_eq!(stored.0.last_log_id.map(|l| l.index), Some(7));
        }
        assert!(tmp.path().join(SNAPSHOT_FILE).exists());
        let db = sled::open(tmp.path().join("raft")).expect("sled");
        assert!(!db.tree_names().iter().any(|n| n.as_ref() == b"sm"));
    }
}
