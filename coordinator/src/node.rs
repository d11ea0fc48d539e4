//! The coordinator: the catalog group, the shard connection pool, liveness of shard nodes
//! and the limits every request shares. Request logic lives in the sibling modules
//! (`namespaces`, `ingest`, `search`, `reads`), which all work through this type.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use longbow_common::replication_api::{ReplicaConfig, ReplicaStatus};

use crate::catalog::{NamespaceMeta, NodeId};
use crate::error::{CoordinatorError, Result};
use crate::metrics::Metrics;
use crate::raft::CatalogGroup;
use crate::shards::ShardClients;

/// Coordinator settings.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// This coordinator's Raft id.
    pub node_id: u64,
    /// Where the Raft log and state machine live.
    pub data_dir: PathBuf,
    /// Address peers reach this coordinator's internal port at.
    pub internal_addr: String,
    /// Shards of a namespace created without `shards` (also on auto-create).
    pub default_shards: u32,
    /// Shard calls one request may have in flight at once.
    pub max_fanout: usize,
    /// Shard calls the whole coordinator may have in flight at once; beyond it requests
    /// wait, and past `request_timeout` they fail with RESOURCE_EXHAUSTED.
    pub inflight_budget: usize,
    /// Address clients reach the data port at (shown by `cluster-status`).
    pub data_addr: String,
    /// Address clients reach the meta port at (shown by `cluster-status`).
    pub meta_addr: String,
    /// Deadline of one client request (a client's own gRPC deadline may be shorter).
    pub request_timeout: Duration,
    /// A shard node without a heartbeat for this long counts as dead: it gets no new
    /// replicas, searches skip it, and its primaries fail over.
    pub heartbeat_timeout: Duration,
    /// A member whose node has been dead this long is rebuilt on another live node (from its
    /// primary: segment files, then the WAL tail), and the dead node's copy is dropped if it
    /// comes back.
    pub replica_timeout: Duration,
    /// Raft log entries between two snapshots of the catalog (each snapshot lets the log it
    /// covers be purged).
    pub raft_snapshot_logs: u64,
    /// How the coordinator group is formed when the catalog store is empty.
    pub formation: crate::raft::Formation,
    /// Speculative replica queries of searches.
    pub hedge: crate::hedging::HedgeConfig,
}

impl CoordinatorConfig {
    /// Defaults for a coordinator storing its catalog under `data_dir`.
    pub fn new(data_dir: PathBuf, internal_addr: String) -> Self {
        CoordinatorConfig {
            node_id: 1,
            data_dir,
            internal_addr,
            data_addr: String::new(),
            meta_addr: String::new(),
            default_shards: 2,
            max_fanout: 16,
            inflight_budget: 256,
            request_timeout: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_millis(1500),
            replica_timeout: Duration::from_secs(300),
            raft_snapshot_logs: 1000,
            formation: crate::raft::Formation::Alone,
            hedge: crate::hedging::HedgeConfig::default(),
        }
    }
}

/// One replica a shard call goes to: which namespace and shard, on which node at which address.
/// Errors of the call name all four, so a client can tell which node is down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardTarget {
    /// Namespace.
    pub namespace: String,
    /// Shard number.
    pub shard: u32,
    /// The node hosting the replica.
    pub node: NodeId,
    /// The node's shard API address.
    pub addr: String,
}

impl std::fmt::Display for ShardTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "namespace '{}' shard {} on node {} ({})",
            self.namespace, self.shard, self.node, self.addr
        )
    }
}

/// One member of one shard: `(namespace, shard, node)`.
pub(crate) type MemberKey = (String, u32, NodeId);

/// What the coordinator last heard from a shard node.
#[derive(Debug, Clone)]
struct NodeSeen {
    at: Instant,
    replicas: HashMap<(String, u32), ReplicaStatus>,
}

/// A running coordinator.
pub struct Coordinator {
    /// Settings.
    pub config: CoordinatorConfig,
    /// The Raft-replicated catalog.
    pub group: CatalogGroup,
    /// Connections to shard nodes.
    pub shards: ShardClients,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The in-flight budget and deadline every shard call shares.
    pub limits: crate::limits::ShardCallLimits,
    /// Replica load figures and search hedging.
    pub replicas: Arc<crate::hedging::Replicas>,
    heartbeats: Mutex<HashMap<NodeId, NodeSeen>>,
    /// When each member of each shard was last sent its configuration.
    pub(crate) pushed: Mutex<HashMap<MemberKey, (Instant, ReplicaConfig)>>,
    /// When this process started (Unix ms): snapshots it began before are cut off.
    pub started_ms: u64,
    /// When this coordinator first heard from any shard node. Until a heartbeat timeout has
    /// passed since, its view of which nodes are dead is not settled: a coordinator that just
    /// started, or just joined the group (shard nodes learn of it from the others' replies),
    /// has simply not heard from everyone yet.
    first_heard: Mutex<Option<Instant>>,
    /// Replicas nodes reported that are not members of any shard, with when each was first
    /// seen so: dropped once that has lasted [`crate::replica_sets::STRAY_GRACE`].
    pub(crate) strays: Mutex<HashMap<MemberKey, Instant>>,
    /// Held for the life of the coordinator: no second process opens its catalog.
    _lock: longbow_common::dirlock::DirLock,
}

impl Coordinator {
    /// Start the catalog group and wait until it has a leader.
    pub async fn start(
        config: CoordinatorConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Coordinator>> {
        let lock = longbow_common::dirlock::DirLock::acquire(&config.data_dir, "coordinator")
            .map_err(|e| CoordinatorError::Storage(e.to_string()))?;
        let group = CatalogGroup::start(
            config.node_id,
            &config.internal_addr,
            &config.data_dir,
            config.raft_snapshot_logs,
            &config.formation,
        )
        .await?;
        if group.alone() {
            // A one-voter group leads at once; a larger one elects its leader once a quorum
            // is up, and is not ready until then.
            group.wait_leader(Duration::from_secs(10)).await?;
        }
        let limits =
            crate::limits::ShardCallLimits::new(config.inflight_budget, config.request_timeout);
        let replicas = crate::hedging::Replicas::new(config.hedge, metrics.clone());
        Ok(Arc::new(Coordinator {
            started_ms: crate::snapshots::now_ms(),
            first_heard: Mutex::new(None),
            strays: Mutex::new(HashMap::new()),
            _lock: lock,
            config,
            group,
            shards: ShardClients::default(),
            replicas,
            metrics,
            limits,
            heartbeats: Mutex::new(HashMap::new()),
            pushed: Mutex::new(HashMap::new()),
        }))
    }

    /// Record a heartbeat (or registration, with no statuses) of a shard node.
    pub fn heartbeat(&self, node: NodeId, replicas: Option<Vec<ReplicaStatus>>) {
        self.first_heard.lock().get_or_insert_with(Instant::now);
        let mut beats = self.heartbeats.lock();
        let seen = beats.entry(node).or_insert_with(|| NodeSeen {
            at: Instant::now(),
            replicas: HashMap::new(),
        });
        seen.at = Instant::now();
        if let Some(replicas) = replicas {
            seen.replicas = replicas
                .into_iter()
                .map(|r| ((r.namespace.clone(), r.shard), r))
                .collect();
        }
        drop(beats);
        self.refresh_gauges();
    }

    /// Whether `node` sent a heartbeat within the failure timeout.
    pub fn is_live(&self, node: NodeId) -> bool {
        self.heartbeats
            .lock()
            .get(&node)
            .is_some_and(|s| s.at.elapsed() < self.config.heartbeat_timeout)
    }

    /// How long `node` has been dead: `None` while it is live; since its last heartbeat, or,
    /// when it has not been heard from, since this coordinator first heard from any node.
    pub fn dead_for(&self, node: NodeId) -> Option<Duration> {
        let since = match self.heartbeats.lock().get(&node) {
            Some(s) if s.at.elapsed() < self.config.heartbeat_timeout => return None,
            Some(s) => s.at.elapsed(),
            None => self
                .first_heard
                .lock()
                .map_or(Duration::ZERO, |t| t.elapsed()),
        };
        Some(since)
    }

    /// Whether this coordinator has listened to shard nodes for a full heartbeat timeout, so
    /// a node it counts as dead really missed its heartbeats (rather than not having found
    /// this coordinator yet). Failover and shrinking in-sync sets wait for it.
    pub fn liveness_settled(&self) -> bool {
        self.first_heard
            .lock()
            .is_some_and(|t| t.elapsed() >= self.config.heartbeat_timeout)
    }

    /// Every replica each live node last reported: `((namespace, shard, node), status)`.
    pub fn reported_replicas(&self) -> Vec<(MemberKey, ReplicaStatus)> {
        let timeout = self.config.heartbeat_timeout;
        self.heartbeats
            .lock()
            .iter()
            .filter(|(_, s)| s.at.elapsed() < timeout)
            .flat_map(|(node, s)| {
                s.replicas
                    .iter()
                    .map(move |((ns, shard), st)| ((ns.clone(), *shard, *node), st.clone()))
            })
            .collect()
    }

    /// Ids of shard nodes with a recent heartbeat.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        let timeout = self.config.heartbeat_timeout;
        let mut live: Vec<NodeId> = self
            .heartbeats
            .lock()
            .iter()
            .filter(|(_, s)| s.at.elapsed() < timeout)
            .map(|(id, _)| *id)
            .collect();
        live.sort_unstable();
        live
    }

    /// What `node` last reported about its replica of `meta`'s shard `shard`.
    pub fn reported(
        &self,
        node: NodeId,
        meta: &NamespaceMeta,
        shard: u32,
    ) -> Option<ReplicaStatus> {
        self.heartbeats
            .lock()
            .get(&node)?
            .replicas
            .get(&(meta.name.clone(), shard))
            .cloned()
    }

    /// Update the Raft and liveness gauges.
    pub fn refresh_gauges(&self) {
        let (term, leader) = self.group.term_and_leader();
        self.metrics.raft_term.set(term as i64);
        self.metrics.raft_leader.set(leader.unwrap_or(0) as i64);
        self.metrics
            .shard_nodes_live
            .set(self.live_nodes().len() as i64);
    }

    /// The names of every published namespace, sorted.
    pub fn namespace_names(&self) -> Vec<String> {
        self.group
            .catalog
            .read()
            .namespaces
            .keys()
            .cloned()
            .collect()
    }

    /// Every published namespace's catalog entry, in name order.
    pub fn namespaces(&self) -> Vec<NamespaceMeta> {
        self.group
            .catalog
            .read()
            .namespaces
            .values()
            .cloned()
            .collect()
    }

    /// A namespace's catalog entry (accepting the `dataset` spelling's value as-is).
    pub fn namespace(&self, name: &str) -> Result<NamespaceMeta> {
        self.group
            .catalog
            .read()
            .namespaces
            .get(name)
            .cloned()
            .ok_or_else(|| CoordinatorError::NamespaceNotFound(name.to_string()))
    }

    /// Make sure a namespace missing here is missing everywhere: when `name` is not in this
    /// coordinator's catalog, wait until it holds every change committed so far (it may lag
    /// the leader: just restarted, or cut off a moment ago). A namespace created through
    /// another coordinator is then never NOT_FOUND here; a name that is held costs nothing.
    pub async fn catch_up_for(&self, name: &str) -> Result<()> {
        if self.group.catalog.read().namespaces.contains_key(name) {
            return Ok(());
        }
        self.group.linearize().await
    }

    /// [`Coordinator::namespace`], after [`Coordinator::catch_up_for`].
    pub async fn namespace_now(&self, name: &str) -> Result<NamespaceMeta> {
        self.catch_up_for(name).await?;
        self.namespace(name)
    }

    /// The current address of shard node `node`, or why it cannot be called: not in the
    /// catalog, or not registered since this coordinator started (its catalog address is
    /// from an earlier run and may belong to another process by now).
    pub fn node_addr(&self, node: NodeId) -> std::result::Result<String, String> {
        if !self.heartbeats.lock().contains_key(&node) {
            return Err(format!(
                "its node {node} has not registered with this coordinator since it started; \
                 retry shortly"
            ));
        }
        self.group
            .catalog
            .read()
            .nodes
            .get(&node)
            .map(|n| n.address.clone())
            .ok_or_else(|| format!("its node {node} is not registered"))
    }

    /// The address of the node holding shard `shard`'s primary.
    pub fn primary_addr(&self, ns: &NamespaceMeta, shard: u32) -> Result<ShardTarget> {
        let set = ns.placement.get(shard as usize).ok_or_else(|| {
            CoordinatorError::Internal(format!(
                "namespace {} has no placement for shard {shard}",
                ns.name
            ))
        })?;
        let addr = self.node_addr(set.primary).map_err(|why| {
            CoordinatorError::Unavailable(format!("namespace '{}' shard {shard}: {why}", ns.name))
        })?;
        Ok(ShardTarget {
            namespace: ns.name.clone(),
            shard,
            node: set.primary,
            addr,
        })
    }

    /// Run `f` within the shared shard-call limits ([`crate::limits`]).
    pub async fn bounded<'a, T: 'a>(
        &self,
        f: impl std::future::Future<Output = Result<T>> + Send + 'a,
    ) -> Result<T> {
        let started = Instant::now();
        let out = self.limits.run(f).await;
        self.metrics
            .search_fanout_duration
            .observe(started.elapsed().as_secs_f64());
        out
    }
}
