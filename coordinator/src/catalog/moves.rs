//! Moving a replica from one node to another, as replica-set changes: the new member joins
//! out of sync, its primary builds it (segment files, then the WAL tail) and puts it in sync,
//! and only then does the old member leave. Each step is conditional on the epoch it was
//! decided at, like every other replica-set change, so a step decided on a stale view is
//! refused.
//!
//! A set holds at most one move at a time; while it moves it has one member more than its
//! replication factor. Nothing here drops data: the member that left becomes a stray on its
//! node and is swept later ([`crate::rebuild`]).

use serde::{Deserialize, Serialize};

use super::{CatalogResponse, NodeId, ReplicaSet};

/// A replica on its way from one node to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// The member leaving once `to` is in sync.
    pub from: NodeId,
    /// The member being built.
    pub to: NodeId,
}

impl ReplicaSet {
    /// Start moving member `from` to node `to` (not a member) at `epoch + 1`: `to` becomes a
    /// backup out of the in-sync set.
    pub fn begin_move(&mut self, epoch: u64, from: NodeId, to: NodeId) -> CatalogResponse {
        if epoch != self.epoch {
            return self.stale("the move", epoch);
        }
        let members = self.members();
        if let Some(m) = self.moving {
            return CatalogResponse::Conflict(format!(
                "a move from node {} to node {} is in progress",
                m.from, m.to
            ));
        }
        if !members.contains(&from) || members.contains(&to) {
            return CatalogResponse::Conflict(format!(
                "cannot move node {from} to node {to} in members {members:?}"
            ));
        }
        self.backups.push(to);
        self.in_sync = self.in_sync();
        self.moving = Some(Move { from, to });
        self.epoch += 1;
        self.version += 1;
        CatalogResponse::Ok
    }

    /// Finish the move at `epoch + 1`: the new member is in sync and the leaving one is no
    /// longer primary, so it leaves.
    pub fn finish_move(&mut self, epoch: u64) -> CatalogResponse {
        if epoch != self.epoch {
            return self.stale("finishing the move", epoch);
        }
        let Some(m) = self.moving else {
            return CatalogResponse::Conflict("no move in progress".into());
        };
        if m.from == self.primary || !self.in_sync().contains(&m.to) {
            return CatalogResponse::Conflict(format!(
                "node {} must be in sync and node {} not primary (primary {}, in sync {:?})",
                m.to,
                m.from,
                self.primary,
                self.in_sync()
            ));
        }
        self.leave(m.from);
        CatalogResponse::Ok
    }

    /// Give up the move at `epoch + 1` (its new member's node died): the new member leaves.
    pub fn abort_move(&mut self, epoch: u64) -> CatalogResponse {
        if epoch != self.epoch {
            return self.stale("aborting the move", epoch);
        }
        let Some(m) = self.moving else {
            return CatalogResponse::Conflict("no move in progress".into());
        };
        if m.to == self.primary {
            return CatalogResponse::Conflict(format!(
                "node {} is primary already: finish the move instead",
                m.to
            ));
        }
        self.leave(m.to);
        CatalogResponse::Ok
    }

    fn leave(&mut self, node: NodeId) {
        self.backups.retain(|n| *n != node);
        self.in_sync = self.in_sync().into_iter().filter(|n| *n != node).collect();
        self.moving = None;
        self.epoch += 1;
        self.version += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> ReplicaSet {
        ReplicaSet::new(1, vec![2])
    }

    #[test]
    fn a_move_adds_the_new_member_out_of_sync_and_removes_the_old_once_it_is_in_sync() {
        let mut s = set();
        assert_eq!(s.begin_move(1, 2, 3), CatalogResponse::Ok);
        assert_eq!(
            (s.members(), s.in_sync(), s.epoch),
            (vec![1, 2, 3], vec![1, 2], 2)
        );
        assert!(
            matches!(s.finish_move(2), CatalogResponse::Conflict(_)),
            "3 not in sync"
        );
        assert_eq!(s.set_in_sync(2, &[1, 2, 3]), CatalogResponse::Ok);
        assert_eq!(s.finish_move(2), CatalogResponse::Ok);
        assert_eq!(
            (s.members(), s.in_sync(), s.epoch),
            (vec![1, 3], vec![1, 3], 3)
        );
        assert_eq!(s.moving, None);
    }

    #[test]
    fn a_moving_primary_hands_over_before_it_leaves() {
        let mut s = set();
        assert_eq!(s.begin_move(1, 1, 3), CatalogResponse::Ok);
        assert_eq!(s.set_in_sync(2, &[1, 2, 3]), CatalogResponse::Ok);
        assert!(
            matches!(s.finish_move(2), CatalogResponse::Conflict(_)),
            "1 is primary"
        );
        assert_eq!(s.promote(2, 3), CatalogResponse::Ok);
        assert_eq!(s.finish_move(3), CatalogResponse::Ok);
        assert_eq!((s.primary, s.members()), (3, vec![3, 2]));
    }

    #[test]
    fn one_move_at_a_time_and_only_on_the_epoch_it_was_decided_at() {
        let mut s = set();
        assert!(matches!(
            s.begin_move(0, 2, 3),
            CatalogResponse::Conflict(_)
        ));
        assert!(matches!(
            s.begin_move(1, 2, 1),
            CatalogResponse::Conflict(_)
        ));
        assert!(matches!(
            s.begin_move(1, 4, 3),
            CatalogResponse::Conflict(_)
        ));
        assert_eq!(s.begin_move(1, 2, 3), CatalogResponse::Ok);
        assert!(matches!(
            s.begin_move(2, 1, 4),
            CatalogResponse::Conflict(_)
        ));
    }

    #[test]
    fn an_aborted_move_removes_the_new_member_and_keeps_the_old() {
        let mut s = set();
        assert_eq!(s.begin_move(1, 2, 3), CatalogResponse::Ok);
        assert_eq!(s.abort_move(2), CatalogResponse::Ok);
        assert_eq!(
            (s.members(), s.in_sync(), s.moving),
            (vec![1, 2], vec![1, 2], None)
        );
    }
}
