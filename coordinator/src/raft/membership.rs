//! The coordinator group: how it is formed on an empty store (`--peers`, `--join`, or alone),
//! who is in it, and adding or removing a coordinator through openraft's joint consensus.
//!
//! Membership lives in the Raft log, so once a store holds it, start-up flags no longer
//! change it; only `AddCoordinator` and `RemoveCoordinator` do.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};

use super::forward::MembershipChange;
use super::{hint, Attempt, CatalogGroup};
use crate::error::{CoordinatorError, Result};
use longbow_common::ContractError;

/// How a coordinator with an empty catalog store forms or joins its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Formation {
    /// A one-voter group of this coordinator (no `--peers`).
    Alone,
    /// The initial voters, by Raft id, with their internal addresses: every coordinator
    /// started with the same list initialises the same group, and the vote picks one leader.
    Peers(BTreeMap<u64, String>),
    /// Start empty and wait to be added with `AddCoordinator` (`--join`).
    Join,
}

/// Parse `--peers`: `1=host:port,2=host:port,…`; the error names the bad entry.
pub fn parse_peers(list: &str) -> std::result::Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('=')
            .ok_or_else(|| format!("entry '{entry}' is not of the form id=host:port"))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| format!("entry '{entry}': the id must be a positive integer"))?;
        let addr = addr.trim();
        check_address(addr).map_err(|why| format!("entry '{entry}': {why}"))?;
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("id {id} is listed twice"));
        }
    }
    if peers.is_empty() {
        return Err("no peers listed".into());
    }
    Ok(peers)
}

/// Whether `addr` looks like `host:port`.
pub fn check_address(addr: &str) -> std::result::Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("address '{addr}' is not host:port"))?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("address '{addr}' is not host:port"));
    }
    Ok(())
}

/// One coordinator of the group, as `cluster-status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CoordinatorMember {
    /// Raft id.
    pub id: u64,
    /// Internal address.
    pub address: String,
    /// Whether it votes (a coordinator being added is a learner until it has caught up).
    pub voter: bool,
}

impl CatalogGroup {
    /// Every coordinator of the group, by id.
    pub fn members(&self) -> Vec<CoordinatorMember> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| CoordinatorMember {
                id: *id,
                address: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect()
    }

    /// Internal addresses of the voting coordinators, the leader's first: where shard nodes
    /// send in-sync changes. A coordinator alone in its group is named by `own_addr` (the
    /// address it is bound to now: a group of one formed itself at whatever port it was
    /// given, 0 included); in a group formed with `--peers` or `--join` every coordinator is
    /// named as the group knows it.
    pub fn voter_addrs(&self, own_addr: &str) -> Vec<String> {
        let leader = self.term_and_leader().1;
        let members = self.members();
        let alone = members.len() == 1;
        let mut voters: Vec<CoordinatorMember> = members.into_iter().filter(|m| m.voter).collect();
        voters.sort_by_key(|m| (Some(m.id) != leader, m.id));
        voters
            .into_iter()
            .map(|m| {
                if m.id == self.id && alone {
                    own_addr.to_string()
                } else {
                    m.address
                }
            })
            .collect()
    }

    /// The group's membership for shard nodes: the log index it comes from, whether this
    /// coordinator is in it, and the internal addresses of every other coordinator (voters
    /// and learners). A node names the coordinator it heard this from its own way.
    pub fn others(&self) -> (u64, bool, Vec<String>) {
        let index = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            m.membership_config.log_id().map_or(0, |l| l.index)
        };
        let members = self.members();
        let member = members.iter().any(|m| m.id == self.id);
        let others = members
            .into_iter()
            .filter(|m| m.id != self.id)
            .map(|m| m.address)
            .collect();
        (index, member, others)
    }

    /// Whether this coordinator is the group's only voter (it then leads as soon as it
    /// starts).
    pub fn alone(&self) -> bool {
        let voters: Vec<u64> = self
            .members()
            .into_iter()
            .filter(|m| m.voter)
            .map(|m| m.id)
            .collect();
        voters == [self.id]
    }

    /// Add or remove a coordinator, wherever the leader is; `timeout` bounds the whole
    /// change, including a new coordinator's catch-up as a learner.
    pub async fn change_members(&self, change: &MembershipChange, timeout: Duration) -> Result<()> {
        if let MembershipChange::Add { node_id, address } = change {
            if *node_id == 0 {
                return Err(ContractError::invalid("node_id", "must be a positive integer").into());
            }
            check_address(address).map_err(|why| ContractError::invalid("address", why))?;
        }
        self.at_leader(
            "coordinator membership change",
            timeout,
            || self.change_members_here(change, timeout),
            |id, addr| async move {
                super::forward::membership(self.to(id, &addr), change, timeout).await
            },
        )
        .await
    }

    /// Make the change if this coordinator leads.
    pub async fn change_members_here(
        &self,
        change: &MembershipChange,
        timeout: Duration,
    ) -> Result<Attempt<()>> {
        let result = match change {
            MembershipChange::Add { node_id, address } => {
                let node = BasicNode {
                    addr: address.clone(),
                };
                // A learner first: it votes only once it has the log, so adding a slow or
                // unreachable coordinator never costs the group its quorum.
                let caught_up =
                    tokio::time::timeout(timeout, self.raft.add_learner(*node_id, node, true))
                        .await
                        .map_err(|_| {
                            CoordinatorError::Unavailable(format!(
                        "coordinator {node_id} at {address} did not catch up within {timeout:?}; \
                         it is a learner now: retry AddCoordinator once it is up"
                    ))
                        })?;
                match caught_up {
                    Ok(_) => {
                        self.raft
                            .change_membership(ChangeMembers::AddVoterIds([*node_id].into()), false)
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
            MembershipChange::Remove { node_id } => {
                if !self.members().iter().any(|m| m.id == *node_id) {
                    return Err(ContractError::invalid(
                        "node_id",
                        format!("coordinator {node_id} is not a member of the group"),
                    )
                    .into());
                }
                self.raft
                    .change_membership(ChangeMembers::RemoveVoters([*node_id].into()), false)
                    .await
            }
        };
        match result {
            Ok(r) => Ok(Attempt::Done((), r.log_id.index)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Ok(Attempt::Elsewhere(hint(f)))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => match e {
                // Another change is being committed; try again shortly.
                ChangeMembershipError::InProgress(_) => Ok(Attempt::Elsewhere(None)),
                ChangeMembershipError::EmptyMembership(_) => Err(ContractError::invalid(
                    "node_id",
                    "the last coordinator of the group cannot be removed",
                )
                .into()),
                other => Err(CoordinatorError::Raft(other.to_string())),
            },
            Err(RaftError::Fatal(e)) => Err(CoordinatorError::Raft(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_into_ids_and_addresses() {
        let p = parse_peers("1=10.0.0.1:3002, 2=c2:3002,3=[::1]:3002").expect("parses");
        assert_eq!(p.len(), 3);
        assert_eq!(p[&2], "c2:3002");
        assert_eq!(p[&3], "[::1]:3002");
    }

    #[test]
    fn a_bad_peer_entry_is_named() {
        for (list, says) in [
            ("1=a:1,1=b:2", "id 1 is listed twice"),
            ("0=a:1", "entry '0=a:1'"),
            ("1=a", "entry '1=a'"),
            ("x", "entry 'x'"),
            ("1=a:0", "entry '1=a:0'"),
            ("", "no peers"),
        ] {
            let e = parse_peers(list).expect_err(list);
            assert!(e.contains(says), "{list}: {e}");
        }
    }
}
