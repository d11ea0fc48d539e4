//! Replica sets: which nodes hold a shard, which of them is primary at which epoch, and
//! which hold every acknowledged write (the in-sync set). The two changes the failover and
//! the primaries ask for are conditional on the state they were decided on, so a change
//! decided on a stale view is refused instead of applied (Raft orders them).

use serde::{Deserialize, Serialize};

use super::{CatalogResponse, NodeId};

/// Where the replicas of one shard live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSet {
    /// Node holding the primary.
    pub primary: NodeId,
    /// Nodes holding backups (empty while the replication factor is 1).
    pub backups: Vec<NodeId>,
    /// Members holding every acknowledged write, the primary included (empty in catalogs
    /// written before replication: read it through [`ReplicaSet::in_sync`]).
    #[serde(default)]
    pub in_sync: Vec<NodeId>,
    /// Bumped on every change of primary; replicas refuse writes and entries from an older
    /// epoch.
    pub epoch: u64,
    /// Bumped on every change of the set (0 in catalogs written before it): replicas ignore
    /// configurations of an older version.
    #[serde(default)]
    pub version: u64,
    /// A move of one member to another node in progress ([`super::moves`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<super::moves::Move>,
}

impl ReplicaSet {
    /// A new set at epoch 1 with every member in sync.
    pub fn new(primary: NodeId, backups: Vec<NodeId>) -> ReplicaSet {
        let mut in_sync = vec![primary];
        in_sync.extend(&backups);
        ReplicaSet {
            primary,
            backups,
            in_sync,
            epoch: 1,
            version: 0,
            moving: None,
        }
    }

    /// A new set at epoch 1 whose backups are still to be built from the primary (only the
    /// primary in sync): a restored snapshot.
    pub fn rebuilding(primary: NodeId, backups: Vec<NodeId>) -> ReplicaSet {
        ReplicaSet {
            in_sync: vec![primary],
            ..ReplicaSet::new(primary, backups)
        }
    }

    /// Every member, primary first.
    pub fn members(&self) -> Vec<NodeId> {
        let mut m = vec![self.primary];
        m.extend(&self.backups);
        m
    }

    /// The in-sync set (the primary alone for a set from before replication).
    pub fn in_sync(&self) -> Vec<NodeId> {
        if self.in_sync.is_empty() {
            vec![self.primary]
        } else {
            self.in_sync.clone()
        }
    }

    /// The answer to a change decided at `epoch` when the set has moved on.
    pub(super) fn stale(&self, what: &str, epoch: u64) -> CatalogResponse {
        CatalogResponse::Conflict(format!(
            "{what} was decided at epoch {epoch}, the shard is at epoch {} with primary {}",
            self.epoch, self.primary
        ))
    }

    /// Make in-sync member `primary` the primary at `epoch + 1` (if still at `epoch`).
    pub fn promote(&mut self, epoch: u64, primary: NodeId) -> CatalogResponse {
        if epoch != self.epoch {
            return self.stale("the promotion", epoch);
        }
        let in_sync = self.in_sync();
        if !in_sync.contains(&primary) || primary == self.primary {
            return CatalogResponse::Conflict(format!(
                "node {primary} is not an in-sync backup (in sync: {in_sync:?})"
            ));
        }
        let old = self.primary;
        self.backups.retain(|n| *n != primary);
        self.backups.insert(0, old);
        self.primary = primary;
        self.in_sync = in_sync.into_iter().filter(|n| *n != old).collect();
        self.in_sync.retain(|n| *n != primary);
        self.in_sync.insert(0, primary);
        self.epoch += 1;
        self.version += 1;
        CatalogResponse::Ok
    }

    /// Replace the in-sync set (if still at `epoch`); it must hold the primary and members
    /// only.
    pub fn set_in_sync(&mut self, epoch: u64, in_sync: &[NodeId]) -> CatalogResponse {
        if epoch != self.epoch {
            return self.stale("the in-sync change", epoch);
        }
        let members = self.members();
        if !in_sync.contains(&self.primary) || in_sync.iter().any(|n| !members.contains(n)) {
            return CatalogResponse::Conflict(format!(
                "in-sync set {in_sync:?} must hold primary {} and members of {members:?} only",
                self.primary
            ));
        }
        let mut next: Vec<NodeId> = members
            .into_iter()
            .filter(|n| in_sync.contains(n))
            .collect();
        next.dedup();
        self.in_sync = next;
        self.version += 1;
        CatalogResponse::Ok
    }
}

impl ReplicaSet {
    /// Replace member `old` (not the primary) with `new` (not a member), out of the in-sync
    /// set, at `epoch + 1` (if still at `epoch`): the new member is caught up by the primary
    /// and put in sync by it, and nothing decided on the old membership can apply any more.
    pub fn replace(&mut self, epoch: u64, old: NodeId, new: NodeId) -> CatalogResponse {
        if epoch != self.epoch {
            return self.stale("the replacement", epoch);
        }
        if old == self.primary || !self.backups.contains(&old) || self.members().contains(&new) {
            return CatalogResponse::Conflict(format!(
                "cannot replace node {old} with node {new} in members {:?} (primary {})",
                self.members(),
                self.primary
            ));
        }
        for b in self.backups.iter_mut().filter(|b| **b == old) {
            *b = new;
        }
        self.in_sync = self.in_sync().into_iter().filter(|n| *n != old).collect();
        self.epoch += 1;
        self.version += 1;
        CatalogResponse::Ok
    }
}

/// The node with the fewest replicas among `nodes` (`(id, replicas hosted)`) that is not in
/// `exclude`; ties go to the lowest id.
pub fn least_loaded_outside(nodes: &[(NodeId, u64)], exclude: &[NodeId]) -> Option<NodeId> {
    nodes
        .iter()
        .filter(|(id, _)| !exclude.contains(id))
        .min_by_key(|&&(id, load)| (load, id))
        .map(|(id, _)| *id)
}

/// Choose `rf` distinct nodes for each of `shards` shards among `nodes` (`(id, replicas
/// hosted)`), least loaded first, spreading primaries as evenly as the members allow. `None`
/// when there are fewer than `rf` nodes.
pub fn place(shards: u32, rf: u32, nodes: &[(NodeId, u64)]) -> Option<Vec<ReplicaSet>> {
    let rf = rf.max(1) as usize;
    if nodes.len() < rf {
        return None;
    }
    let mut load: Vec<(u64, NodeId)> = nodes.iter().map(|&(id, l)| (l, id)).collect();
    let mut primaries: std::collections::HashMap<NodeId, u64> = Default::default();
    let mut out = Vec::with_capacity(shards as usize);
    for _ in 0..shards {
        load.sort_unstable();
        let chosen: Vec<NodeId> = load[..rf].iter().map(|(_, id)| *id).collect();
        for slot in load[..rf].iter_mut() {
            slot.0 += 1;
        }
        let primary = *chosen
            .iter()
            .min_by_key(|id| (primaries.get(id).copied().unwrap_or(0), **id))
            .unwrap_or(&chosen[0]);
        *primaries.entry(primary).or_default() += 1;
        let backups = chosen.into_iter().filter(|id| *id != primary).collect();
        out.push(ReplicaSet::new(primary, backups));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_spreads_over_the_least_loaded_nodes() {
        let p = place(4, 1, &[(1, 3), (2, 0), (3, 1)]).expect("nodes");
        let primaries: Vec<NodeId> = p.iter().map(|r| r.primary).collect();
        assert_eq!(primaries, vec![2, 2, 3, 2]);
        assert!(place(1, 1, &[]).is_none());
    }

    #[test]
    fn replicas_of_a_shard_sit_on_distinct_nodes_and_primaries_spread() {
        let nodes = [(1, 0), (2, 0), (3, 0)];
        let p = place(6, 3, &nodes).expect("three nodes");
        for set in &p {
            let mut m = set.members();
            m.sort_unstable();
            assert_eq!(m, vec![1, 2, 3]);
            assert_eq!(set.in_sync(), set.members());
        }
        let mut per_node = [0; 4];
        for set in &p {
            per_node[set.primary as usize] += 1;
        }
        assert_eq!(&per_node[1..], &[2, 2, 2]);
        assert!(
            place(1, 4, &nodes).is_none(),
            "four replicas need four nodes"
        );
    }

    #[test]
    fn a_promotion_decided_on_a_stale_epoch_is_refused() {
        let mut set = ReplicaSet::new(1, vec![2, 3]);
        assert_eq!(set.promote(1, 2), CatalogResponse::Ok);
        assert_eq!((set.primary, set.epoch), (2, 2));
        assert_eq!(set.in_sync(), vec![2, 3]);
        assert_eq!(set.members(), vec![2, 1, 3]);
        assert!(matches!(set.promote(1, 3), CatalogResponse::Conflict(_)));
        assert!(
            matches!(set.promote(2, 1), CatalogResponse::Conflict(_)),
            "the old primary is out of sync"
        );
        assert!(matches!(
            set.set_in_sync(1, &[2]),
            CatalogResponse::Conflict(_)
        ));
        assert!(matches!(
            set.set_in_sync(2, &[3]),
            CatalogResponse::Conflict(_)
        ));
        assert_eq!(set.set_in_sync(2, &[2, 1, 3]), CatalogResponse::Ok);
        assert_eq!(set.in_sync(), vec![2, 1, 3]);
    }

    #[test]
    fn a_replaced_member_leaves_the_set_and_its_successor_starts_out_of_sync() {
        let mut set = ReplicaSet::new(1, vec![2, 3]);
        assert!(
            matches!(set.replace(1, 1, 4), CatalogResponse::Conflict(_)),
            "the primary is replaced by a failover, not here"
        );
        assert!(matches!(set.replace(1, 2, 3), CatalogResponse::Conflict(_)));
        assert!(matches!(set.replace(1, 5, 4), CatalogResponse::Conflict(_)));
        assert!(matches!(set.replace(0, 2, 4), CatalogResponse::Conflict(_)));
        assert_eq!(set.replace(1, 2, 4), CatalogResponse::Ok);
        assert_eq!(
            (set.members(), set.in_sync(), set.epoch),
            (vec![1, 4, 3], vec![1, 3], 2)
        );
        assert_eq!(
            least_loaded_outside(&[(1, 0), (4, 2), (5, 1), (6, 1)], &set.members()),
            Some(5)
        );
        assert_eq!(least_loaded_outside(&[(1, 0), (4, 0)], &[1, 4]), None);
    }
}
