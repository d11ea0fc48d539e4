//! Raft storage in `sled`: the log (tree `log`, key = index big-endian), the vote and
//! purge/commit marks (tree `meta`), and the state machine (tree `sm`: the catalog, the last
//! applied log id and membership, written with every applied batch, so a restart resumes
//! where it stopped without replaying the log).
//!
//! Every write is flushed before it is reported done: Raft's safety needs a durable vote and log.

// openraft's storage traits fix the error type (`StorageError`, ~224 bytes); the helpers
// below return it too rather than converting back and forth.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
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

/// Persisted state-machine contents.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SmData {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
    catalog: Catalog,
}

/// The state machine.
pub struct StateMachine {
    db: sled::Db,
    sm: sled::Tree,
    data: SmData,
    catalog: Arc<RwLock<Catalog>>,
    snapshot_idx: u64,
}

/// Open both halves over one sled database.
pub fn open(db: sled::Db) -> Result<(LogStore, StateMachine)> {
    let t = |name: &str| {
        db.open_tree(name)
            .map_err(|e| CoordinatorError::Storage(e.to_string()))
    };
    let log = t("log")?;
    let meta = t("meta")?;
    let sm = t("sm")?;
    let data: SmData = match sm
        .get("data")
        .map_err(|e| CoordinatorError::Storage(e.to_string()))?
    {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| CoordinatorError::Storage(format!("state machine: {e}")))?,
        None => SmData::default(),
    };
    let catalog = Arc::new(RwLock::new(data.catalog.clone()));
    Ok((
        LogStore {
            db: db.clone(),
            log,
            meta,
        },
        StateMachine {
            db,
            sm,
            data,
            catalog,
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

    fn persist(&self) -> std::result::Result<(), SErr> {
        let bytes = serde_json::to_vec(&self.data).map_err(io_write)?;
        self.sm.insert("data", bytes).map_err(io_write)?;
        self.db.flush().map_err(io_write)?;
        Ok(())
    }
}

/// Builds snapshots from a copy of the state machine data.
pub struct SnapshotBuilder {
    data: SmData,
    idx: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> std::result::Result<Snapshot<TypeConfig>, SErr> {
        let bytes = serde_json::to_vec(&self.data).map_err(io_read)?;
        let snapshot_id = match &self.data.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.idx),
            None => format!("none-{}", self.idx),
        };
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id: self.data.last_applied,
                last_membership: self.data.membership.clone(),
                snapshot_id,
            },
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> std::result::Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), SErr> {
        Ok((self.data.last_applied, self.data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> std::result::Result<Vec<CatalogResponse>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for e in entries {
            self.data.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(CatalogResponse::Ok),
                EntryPayload::Normal(cmd) => out.push(self.data.catalog.apply(&cmd)),
                EntryPayload::Membership(m) => {
                    self.data.membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(CatalogResponse::Ok);
                }
            }
        }
        self.persist()?;
        *self.catalog.write() = self.data.catalog.clone();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_idx += 1;
        SnapshotBuilder {
            data: self.data.clone(),
            idx: self.snapshot_idx,
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
        self.data = data;
        self.persist()?;
        *self.catalog.write() = self.data.catalog.clone();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> std::result::Result<Option<Snapshot<TypeConfig>>, SErr> {
        let mut b = SnapshotBuilder {
            data: self.data.clone(),
            idx: self.snapshot_idx,
        };
        Ok(Some(b.build_snapshot().await?))
    }
}
