//! The shard node: the set of replicas kept under one data directory.
//!
//! Layout: `<data_dir>/replicas/<namespace>/<shard>/{replica.json, wal/}`. At start-up every
//! replica directory is opened and its WAL replayed; a replica that cannot be opened stops
//! start-up (serving without it would silently hide acknowledged data).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use longbow_common::model::validate_dim;
use longbow_common::shard_api::{decode_schema, CreateReplicaRequest, ReplicaInfo, ReplicaKey};
use longbow_common::ContractError;
use parking_lot::RwLock;

use crate::error::{Result, ShardError};
use crate::payload::PayloadSchema;
use crate::replica::{Replica, ReplicaSettings};
use crate::wal::{LogBackend, StdBackend};

/// Node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Root of this node's files.
    pub data_dir: PathBuf,
    /// Per-replica tunables.
    pub replica: ReplicaSettings,
}

/// All replicas hosted by this process.
pub struct ShardNode {
    config: NodeConfig,
    backend: Arc<dyn LogBackend>,
    replicas: RwLock<BTreeMap<ReplicaKey, Arc<Replica>>>,
}

/// Check a namespace name is safe as a directory name and readable in URLs and logs.
pub fn validate_namespace(name: &str) -> Result<(), ContractError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ContractError::invalid(
            "namespace",
            format!(
                "'{name}' must be 1-128 characters of A-Z a-z 0-9 _ - . and not start with '.'"
            ),
        ))
    }
}

impl ShardNode {
    /// Open the node: create the data directory if needed and open every replica in it.
    pub fn open(config: NodeConfig) -> Result<ShardNode> {
        let backend: Arc<dyn LogBackend> = Arc::new(StdBackend);
        let root = config.data_dir.join("replicas");
        std::fs::create_dir_all(&root).map_err(|source| ShardError::Io {
            path: root.clone(),
            source,
        })?;
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
                let replica = Replica::open(&shard_dir, &config.replica, backend.clone())?;
                replicas.insert(replica.key().clone(), Arc::new(replica));
            }
        }
        tracing::info!(data_dir = %config.data_dir.display(), replicas = replicas.len(), wal_backend = backend.name(), "shard node opened");
        Ok(ShardNode {
            config,
            backend,
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
        };
        let replica = Arc::new(Replica::create(
            &self.replica_dir(&key),
            info,
            payload,
            &self.config.replica,
            self.backend.clone(),
        )?);
        replicas.insert(key, replica.clone());
        Ok(replica)
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

    /// Drop a replica: stop it and delete its files. Blocks while its threads stop.
    pub fn drop_replica(&self, key: &ReplicaKey) -> Result<()> {
        let replica = self
            .replicas
            .write()
            .remove(key)
            .ok_or_else(|| ShardError::ReplicaNotFound(key.clone()))?;
        replica.shutdown();
        let dir = replica.dir().to_path_buf();
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

    /// Stop every replica (queued writes are committed first).
    pub fn shutdown(&self) {
        for r in self.replicas() {
            r.shutdown();
        }
    }
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
