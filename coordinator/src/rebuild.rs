//! Keeping every shard at its replication factor after nodes go away for good, and tidying
//! what they leave behind. Run by the catalog leader's reconciler, after failover.
//!
//! - A backup whose node has been dead for `--replica-timeout-secs` is replaced by an empty
//!   replica on the least-loaded live node outside the set ([`CatalogCommand::ReplaceMember`],
//!   epoch + 1); the primary builds it like any lagging member: segment files, then the WAL
//!   tail, then back into the in-sync set.
//! - A replica a live node reports that no shard counts as a member (its node was replaced
//!   while away, or its namespace was deleted or re-created meanwhile) is dropped once it has
//!   been a stray for [`STRAY_GRACE`], which covers replicas created just before the catalog
//!   change that names them.
//!
//! Nothing here drops a member's data or changes an in-sync set: the primary alone puts a
//! member back in sync, and only non-members are dropped.

use std::time::{Duration, Instant};

use longbow_common::replication_api::ReplicaStatus;

use crate::catalog::{
    least_loaded_outside, Catalog, CatalogCommand, NamespaceMeta, NodeId, ReplicaSet,
};
use crate::error::{CoordinatorError, Result};
use crate::node::{Coordinator, MemberKey, ShardTarget};
use crate::replica_sets::expect_ok;

/// How long a replica must be a stray before it is dropped.
pub const STRAY_GRACE: Duration = Duration::from_secs(10);

impl Coordinator {
    /// Replace the first backup of `set` whose node has been dead past the replica timeout
    /// with a new replica on another live node; whether it did. Waits (does nothing) while
    /// no live node outside the set is left.
    pub(crate) async fn rebuild_lost_backup(
        &self,
        meta: &NamespaceMeta,
        shard: u32,
        set: &ReplicaSet,
        live: &[NodeId],
    ) -> Result<bool> {
        let timeout = self.config.replica_timeout;
        if set.moving.is_some() {
            return Ok(false); // The move ends first: it adds a copy and removes one.
        }
        let Some(old) = set
            .backups
            .iter()
            .copied()
            .find(|n| self.dead_for(*n).is_some_and(|d| d >= timeout))
        else {
            return Ok(false);
        };
        let loads = self.replicas_hosted(live);
        let Some(new) = least_loaded_outside(&loads, &set.members()) else {
            return Ok(false);
        };
        // Created first: a replica the catalog does not name yet is a stray only after the
        // grace, and a failed change leaves it to the stray sweep.
        self.create_replica(meta, shard, new).await?;
        let cmd = CatalogCommand::ReplaceMember {
            namespace: meta.name.clone(),
            shard,
            epoch: set.epoch,
            old,
            new,
        };
        expect_ok(self.group.write(cmd).await?)?;
        self.metrics.replicas_rebuilt.inc();
        tracing::warn!(namespace = %meta.name, shard, old, new, epoch = set.epoch + 1, timeout_secs = timeout.as_secs(), "a backup's node stayed dead; rebuilding the replica on another node");
        let meta = self.namespace(&meta.name)?;
        self.push_shard(&meta, shard).await;
        Ok(true)
    }

    /// Drop replicas that live nodes report and no shard counts as a member, once each has
    /// been one for [`STRAY_GRACE`].
    pub(crate) async fn sweep_strays(&self) {
        let now = Instant::now();
        let reported = self.reported_replicas();
        let strays: Vec<MemberKey> = {
            let cat = self.group.catalog.read();
            reported
                .into_iter()
                .filter(|(key, status)| is_stray(&cat, key, status))
                .map(|(key, _)| key)
                .collect()
        };
        let due: Vec<MemberKey> = {
            let mut seen = self.strays.lock();
            seen.retain(|k, _| strays.contains(k));
            strays
                .into_iter()
                .filter(|k| {
                    now.duration_since(*seen.entry(k.clone()).or_insert(now)) >= STRAY_GRACE
                })
                .collect()
        };
        for key in due {
            if let Err(e) = self.drop_stray(&key).await {
                tracing::warn!(namespace = %key.0, shard = key.1, node = key.2, error = %e, "dropping a stray replica failed; retrying");
            }
        }
    }

    async fn drop_stray(&self, (namespace, shard, node): &MemberKey) -> Result<()> {
        let addr = self
            .node_addr(*node)
            .map_err(CoordinatorError::Unavailable)?;
        let to = ShardTarget {
            namespace: namespace.clone(),
            shard: *shard,
            node: *node,
            addr,
        };
        self.drop_replica_at(&to).await?;
        self.strays
            .lock()
            .remove(&(namespace.clone(), *shard, *node));
        self.metrics.strays_dropped.inc();
        tracing::info!(namespace = %namespace, shard, node, "dropped a replica no shard counts as a member");
        Ok(())
    }
}

/// Whether a replica node `key.2` reports is one no shard counts on: its namespace is gone
/// (or is another of the same name), its shard does not exist, or its node is not a member.
fn is_stray(cat: &Catalog, key: &MemberKey, status: &ReplicaStatus) -> bool {
    let (namespace, shard, node) = key;
    let Some(meta) = cat
        .namespaces
        .get(namespace)
        .or_else(|| cat.creating.get(namespace).map(|p| &p.meta))
    else {
        return true;
    };
    let other_incarnation =
        meta.incarnation != 0 && status.incarnation != 0 && meta.incarnation != status.incarnation;
    other_incarnation
        || meta
            .placement
            .get(*shard as usize)
            .is_none_or(|set| !set.members().contains(node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::PendingNamespace;

    fn meta(name: &str, incarnation: u64, placement: Vec<ReplicaSet>) -> NamespaceMeta {
        NamespaceMeta {
            name: name.into(),
            dim: 4,
            metric: Default::default(),
            id_type: Default::default(),
            index: Default::default(),
            shards: placement.len() as u32,
            replication_factor: 2,
            payload_schema: None,
            placement,
            incarnation,
        }
    }

    fn status(incarnation: u64) -> ReplicaStatus {
        ReplicaStatus {
            namespace: String::new(),
            shard: 0,
            epoch: 1,
            role: None,
            lsn: 0,
            in_sync: Vec::new(),
            fenced: None,
            incarnation,
            rows: 0,
        }
    }

    #[test]
    fn only_replicas_no_shard_counts_on_are_strays() {
        let mut cat = Catalog::default();
        cat.namespaces
            .insert("a".into(), meta("a", 7, vec![ReplicaSet::new(1, vec![2])]));
        cat.creating.insert(
            "b".into(),
            PendingNamespace {
                meta: meta("b", 8, vec![ReplicaSet::new(3, vec![1])]),
                owner: 1,
                since_ms: 0,
            },
        );
        let key = |ns: &str, shard: u32, node: NodeId| (ns.to_string(), shard, node);
        assert!(!is_stray(&cat, &key("a", 0, 2), &status(7)), "a member");
        assert!(
            !is_stray(&cat, &key("a", 0, 1), &status(0)),
            "before incarnations"
        );
        assert!(
            !is_stray(&cat, &key("b", 0, 1), &status(8)),
            "being created"
        );
        assert!(is_stray(&cat, &key("a", 0, 3), &status(7)), "not a member");
        assert!(is_stray(&cat, &key("a", 1, 1), &status(7)), "no such shard");
        assert!(
            is_stray(&cat, &key("a", 0, 2), &status(6)),
            "an earlier namespace 'a'"
        );
        assert!(is_stray(&cat, &key("gone", 0, 1), &status(5)), "deleted");
    }
}
