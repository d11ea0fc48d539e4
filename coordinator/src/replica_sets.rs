//! Replica sets as the coordinator runs them: the configuration each member gets, pushing it,
//! the in-sync changes primaries ask for, and the failover that promotes an in-sync backup
//! when a primary's node dies ([`Coordinator::reconcile`], run by the catalog leader).
//!
//! Replacing members whose nodes stay dead, and dropping copies no shard counts on, is in
//! [`crate::rebuild`].
//!
//! Every change goes through Raft as a conditional command ([`CatalogCommand::Promote`],
//! [`CatalogCommand::SetInSync`]) before any replica hears of it, so two coordinators, or a
//! coordinator and a primary, acting on different views cannot both win. Pushing a
//! configuration is idempotent and retried until each member reports it.

use std::time::{Duration, Instant};

use futures::StreamExt;

use longbow_common::replication_api::{
    InSyncChange, Member, ReplicaConfig, ReplicaStatus, Role, ACTION_CONFIGURE_REPLICA,
};

use crate::catalog::{CatalogCommand, CatalogResponse, NamespaceMeta, NodeId, ReplicaSet};
use crate::error::{CoordinatorError, Result};
use crate::node::{Coordinator, ShardTarget};

/// A member whose reported configuration differs from the catalog's is sent it again at
/// most this often.
const PUSH_AGAIN_AFTER: Duration = Duration::from_secs(1);
/// Longest a member may take to apply its configuration.
const PUSH_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the catalog leader looks for dead primaries and stale configurations.
pub const RECONCILE_EVERY: Duration = Duration::from_millis(250);

impl Coordinator {
    /// The configuration of shard `shard` of `meta` addressed to member `node`; `None` while
    /// a member has no known address.
    pub fn replica_config(
        &self,
        meta: &NamespaceMeta,
        shard: u32,
        node: NodeId,
    ) -> Option<ReplicaConfig> {
        let set = meta.placement.get(shard as usize)?;
        let cat = self.group.catalog.read();
        let member = |id: NodeId| {
            cat.nodes.get(&id).map(|n| Member {
                node: id,
                addr: n.address.clone(),
            })
        };
        let members: Vec<Member> = set
            .members()
            .into_iter()
            .map(member)
            .collect::<Option<_>>()?;
        Some(ReplicaConfig {
            namespace: meta.name.clone(),
            shard,
            epoch: set.epoch,
            node,
            role: if node == set.primary {
                Role::Primary
            } else {
                Role::Backup
            },
            primary: member(set.primary)?,
            members,
            in_sync: set.in_sync(),
            coordinators: self.group.voter_addrs(&self.config.internal_addr),
            version: set.version,
        })
    }

    /// Send member `node` its configuration of a shard (backups first is the caller's
    /// business); returns what the replica reports after applying it.
    pub async fn push_config(
        &self,
        meta: &NamespaceMeta,
        shard: u32,
        node: NodeId,
    ) -> Result<ReplicaStatus> {
        let cfg = self.replica_config(meta, shard, node).ok_or_else(|| {
            CoordinatorError::Unavailable(format!(
                "namespace '{}' shard {shard}: a member has no known address",
                meta.name
            ))
        })?;
        let addr = self
            .node_addr(node)
            .map_err(CoordinatorError::Unavailable)?;
        let to = ShardTarget {
            namespace: meta.name.clone(),
            shard,
            node,
            addr,
        };
        self.pushed.lock().insert(
            (meta.name.clone(), shard, node),
            (Instant::now(), cfg.clone()),
        );
        // A member that stops answering (SIGSTOP, a partition) is given up on once it counts
        // as dead, so the failover it holds up can go on.
        let call = self.unless_dead(&to, self.shards.action(&to, ACTION_CONFIGURE_REPLICA, &cfg));
        tokio::time::timeout(PUSH_TIMEOUT, call)
            .await
            .map_err(|_| {
                CoordinatorError::Deadline(format!(
                    "{to}: configuring took longer than {PUSH_TIMEOUT:?}"
                ))
            })?
    }

    /// Push the configuration of a shard to every live member, backups first (so they fence
    /// the old epoch before the new primary sends them anything). Failures are logged; the
    /// reconciler pushes again.
    pub async fn push_shard(&self, meta: &NamespaceMeta, shard: u32) {
        let Some(set) = meta.placement.get(shard as usize) else {
            return;
        };
        let live = self.live_nodes();
        let mut order = set.backups.clone();
        order.push(set.primary);
        for node in order.into_iter().filter(|n| live.contains(n)) {
            if let Err(e) = self.push_config(meta, shard, node).await {
                tracing::warn!(namespace = %meta.name, shard, node, error = %e, "configuring a replica failed; retrying later");
            }
        }
    }

    /// A primary asks to take failed members out of its in-sync set, or to put a caught-up
    /// one back: applied only if it is still the primary at that epoch. Returns its new
    /// configuration; the other members hear of it from the reconciler.
    pub async fn update_in_sync(&self, change: &InSyncChange) -> Result<ReplicaConfig> {
        let meta = self.namespace(&change.namespace)?;
        let set = meta.placement.get(change.shard as usize).ok_or_else(|| {
            CoordinatorError::Conflict(format!(
                "namespace '{}' has no shard {}",
                meta.name, change.shard
            ))
        })?;
        if set.epoch != change.epoch || set.primary != change.primary {
            return Err(CoordinatorError::Conflict(format!(
                "node {} is not the primary of '{}' shard {} at epoch {} (the catalog has node {} at epoch {})",
                change.primary, meta.name, change.shard, change.epoch, set.primary, set.epoch
            )));
        }
        let mut in_sync: Vec<NodeId> = set
            .in_sync()
            .into_iter()
            .filter(|n| !change.remove.contains(n))
            .collect();
        for n in &change.add {
            if !in_sync.contains(n) {
                in_sync.push(*n);
            }
        }
        let cmd = CatalogCommand::SetInSync {
            namespace: meta.name.clone(),
            shard: change.shard,
            epoch: change.epoch,
            in_sync: in_sync.clone(),
        };
        expect_ok(self.group.write(cmd).await?)?;
        tracing::info!(namespace = %meta.name, shard = change.shard, epoch = change.epoch, ?in_sync, removed = ?change.remove, added = ?change.add, "in-sync set changed at the primary's request");
        let meta = self.namespace(&change.namespace)?;
        self.replica_config(&meta, change.shard, change.primary)
            .ok_or_else(|| CoordinatorError::Unavailable("a member has no known address".into()))
    }

    /// One pass of the failover: for every shard, promote an in-sync backup when the
    /// primary's node is dead, drop dead backups from the in-sync set, and push the
    /// configuration to members that report another one. Only the catalog leader acts.
    pub async fn reconcile(&self) {
        // A leader that has not heard from every node yet would take the unheard for dead.
        if !self.group.is_leader() || !self.liveness_settled() {
            return;
        }
        let namespaces: Vec<NamespaceMeta> = self.namespaces();
        let live = self.live_nodes();
        // Shards are reconciled side by side: a member slow to take its configuration holds
        // up its own shard only, never another shard's failover.
        let mut shards = Vec::new();
        for meta in namespaces.iter().filter(|m| !m.is_declared()) {
            for (shard, set) in meta.placement.iter().enumerate() {
                shards.push(self.reconcile_logged(meta, shard as u32, set, &live));
            }
        }
        futures::stream::iter(shards)
            .buffer_unordered(self.config.max_fanout.max(1))
            .collect::<()>()
            .await;
        if let Err(e) = self.rebalance(&live).await {
            tracing::warn!(error = %e, "starting a replica move failed; retrying");
        }
        self.sweep_strays().await;
    }

    async fn reconcile_logged(
        &self,
        meta: &NamespaceMeta,
        shard: u32,
        set: &ReplicaSet,
        live: &[NodeId],
    ) {
        if let Err(e) = self.reconcile_shard(meta, shard, set, live).await {
            tracing::warn!(namespace = %meta.name, shard, error = %e, "reconciling a replica set failed; retrying");
        }
    }

    async fn reconcile_shard(
        &self,
        meta: &NamespaceMeta,
        shard: u32,
        set: &ReplicaSet,
        live: &[NodeId],
    ) -> Result<()> {
        let in_sync = set.in_sync();
        if !live.contains(&set.primary) {
            let candidate = in_sync
                .iter()
                .filter(|n| **n != set.primary && live.contains(n))
                .max_by_key(|n| {
                    (
                        self.reported(**n, meta, shard).map(|s| s.lsn).unwrap_or(0),
                        std::cmp::Reverse(**n),
                    )
                })
                .copied();
            let Some(new) = candidate else {
                return Ok(()); // Nothing in sync is alive: wait for the primary to return.
            };
            let started = Instant::now();
            let cmd = CatalogCommand::Promote {
                namespace: meta.name.clone(),
                shard,
                epoch: set.epoch,
                primary: new,
            };
            expect_ok(self.group.write(cmd).await?)?;
            let meta = self.namespace(&meta.name)?;
            tracing::warn!(namespace = %meta.name, shard, old = set.primary, new, epoch = set.epoch + 1, "primary's node is dead; promoted an in-sync backup");
            self.metrics.failovers.inc();
            self.push_shard(&meta, shard).await;
            self.metrics
                .failover_seconds
                .observe(started.elapsed().as_secs_f64());
            return Ok(());
        }
        let dead: Vec<NodeId> = in_sync
            .iter()
            .filter(|n| !live.contains(n))
            .copied()
            .collect();
        if !dead.is_empty() {
            let cmd = CatalogCommand::SetInSync {
                namespace: meta.name.clone(),
                shard,
                epoch: set.epoch,
                in_sync: in_sync
                    .iter()
                    .filter(|n| !dead.contains(n))
                    .copied()
                    .collect(),
            };
            expect_ok(self.group.write(cmd).await?)?;
            tracing::warn!(namespace = %meta.name, shard, ?dead, "backups' nodes are dead; taken out of the in-sync set");
            let meta = self.namespace(&meta.name)?;
            self.push_shard(&meta, shard).await;
            return Ok(());
        }
        if self.advance_move(meta, shard, set, live).await? {
            return Ok(());
        }
        if self.rebuild_lost_backup(meta, shard, set, live).await? {
            return Ok(());
        }
        // A configuration computed from this pass's view may reach a member after a newer
        // change of the set; members ignore configurations of an older set version.
        for node in set.members().into_iter().filter(|n| live.contains(n)) {
            let Some(cfg) = self.replica_config(meta, shard, node) else {
                continue;
            };
            let current = self.reported(node, meta, shard).is_some_and(|s| {
                s.epoch == cfg.epoch
                    && s.role == Some(cfg.role)
                    && s.fenced.is_none()
                    && (cfg.role == Role::Backup || s.in_sync == cfg.in_sync)
            });
            let (recently, same) = self
                .pushed
                .lock()
                .get(&(meta.name.clone(), shard, node))
                .map_or((false, false), |(t, last)| {
                    (t.elapsed() < PUSH_AGAIN_AFTER, *last == cfg)
                });
            // A member moved (a node restarted on another address) or the set changed: push
            // at once; a member reporting something else: push again now and then.
            if !same || (!current && !recently) {
                if let Err(e) = self.push_config(meta, shard, node).await {
                    tracing::debug!(namespace = %meta.name, shard, node, error = %e, "configuring a replica failed; retrying");
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn expect_ok(r: CatalogResponse) -> Result<()> {
    match r {
        CatalogResponse::Ok => Ok(()),
        CatalogResponse::Conflict(why) => Err(CoordinatorError::Conflict(why)),
        CatalogResponse::NotFound(n) => Err(CoordinatorError::NamespaceNotFound(n)),
        other => Err(CoordinatorError::Internal(format!(
            "unexpected catalog reply {other:?}"
        ))),
    }
}
