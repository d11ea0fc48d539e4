//! Which Raft group this coordinator belongs to, and the envelope every Raft RPC travels in.
//!
//! An address can outlive its owner: a coordinator dies, another process (of another group,
//! or another node of this one) binds its port, and peers keep sending it Raft messages. A
//! message must never be applied by a coordinator it was not meant for: a leader that took
//! appends carrying a foreign group's vote would mix two logs, and a follower that forwarded
//! a change to a foreign "leader" would acknowledge what its own group never stored. So every
//! RPC, and every call forwarded to the leader ([`super::forward`]), names the group and the
//! Raft id it is for, and the receiver refuses a mismatch with UNAVAILABLE (the sender sees
//! the peer as unreachable and keeps retrying, as for a dead one).
//!
//! The group id is fixed when the group forms: derived from the `--peers` list (every initial
//! member is given the same list, so all derive the same id without talking), made up by a
//! coordinator that forms a group alone, and learnt by a `--join`er from the first append or
//! snapshot its leader sends. It is kept in the file `group-id` of the catalog directory. A
//! store formed before group ids existed has none: its coordinator learns the id from a
//! leader that has one, and two coordinators that both have none still talk (as before).
//! This module never decides anything about Raft state; it only says whose a message is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::error::{CoordinatorError, Result};

/// The file that holds the group id, in the catalog directory.
const FILE: &str = "group-id";

/// One Raft RPC as it travels: the group and the coordinator it is for, and the request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// The sender's group id (none before a joiner has learnt it).
    pub group: Option<String>,
    /// The Raft id of the coordinator the sender means to reach.
    pub to: u64,
    /// The openraft request.
    pub rpc: T,
}

/// Who sends what arrived: only a leader's appends and snapshots may teach a joiner its
/// group; a vote request or a call forwarded to the leader never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// AppendEntries or InstallSnapshot, which only a leader sends.
    ByLeader,
    /// RequestVote, or a call a follower forwards to its leader: any member sends these.
    ByPeer,
}

/// This coordinator's group id and Raft id.
#[derive(Debug)]
pub struct GroupIdentity {
    me: u64,
    path: PathBuf,
    group: RwLock<Option<String>>,
}

impl GroupIdentity {
    /// The identity kept under `dir` (none yet: see [`GroupIdentity::form_with_peers`] and
    /// [`GroupIdentity::form_alone`], which a coordinator forming a group calls).
    pub fn open(me: u64, dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        let kept = match std::fs::read_to_string(&path) {
            Ok(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(storage(&path, &e)),
        };
        Ok(GroupIdentity {
            me,
            path,
            group: RwLock::new(kept),
        })
    }

    /// Take the id every member given the same `--peers` list derives.
    pub fn form_with_peers(&self, peers: &BTreeMap<u64, String>) -> Result<()> {
        self.keep(&from_peers(peers))
    }

    /// Give a group formed by this coordinator alone an id of its own, if it has none.
    pub fn form_alone(&self, addr: &str) -> Result<()> {
        if self.group.read().is_some() {
            return Ok(());
        }
        let seed = format!(
            "alone:{}:{addr}:{}:{}",
            self.me,
            std::process::id(),
            crate::snapshots::now_ms()
        );
        self.keep(&format!(
            "g-{:016x}",
            xxhash_rust::xxh3::xxh3_64(seed.as_bytes())
        ))
    }

    /// The group id, once known.
    pub fn group(&self) -> Option<String> {
        self.group.read().clone()
    }

    /// Wrap `rpc` for coordinator `to`.
    pub fn envelope<T>(&self, to: u64, rpc: T) -> Envelope<T> {
        Envelope {
            group: self.group(),
            to,
            rpc,
        }
    }

    /// Open an envelope that arrived here: its request if it is for this coordinator of this
    /// group. A coordinator that does not know its group yet (a joiner) learns it from its
    /// leader's first message.
    pub fn admit<T>(&self, env: Envelope<T>, sent: Sent) -> Result<T> {
        if env.to != self.me {
            return Err(CoordinatorError::ForeignGroup(format!(
                "a Raft message for coordinator {} reached coordinator {}: its address now belongs to another coordinator",
                env.to, self.me
            )));
        }
        let mine = self.group();
        match (mine, env.group) {
            (Some(m), Some(t)) if m == t => Ok(env.rpc),
            (None, None) => Ok(env.rpc),
            (None, Some(t)) if sent == Sent::ByLeader => {
                self.keep(&t)?;
                tracing::info!(group = %t, "joined the catalog group");
                Ok(env.rpc)
            }
            (mine, theirs) => Err(CoordinatorError::ForeignGroup(format!(
                "a Raft message of group {} reached coordinator {} of group {}",
                theirs.as_deref().unwrap_or("(not yet joined)"),
                self.me,
                mine.as_deref().unwrap_or("(not yet joined)")
            ))),
        }
    }

    fn keep(&self, group: &str) -> Result<()> {
        let mut g = self.group.write();
        if g.as_deref() == Some(group) {
            return Ok(());
        }
        longbow_common::disk::replace_file(&self.path, group.as_bytes())
            .map_err(|e| storage(&self.path, &e))?;
        *g = Some(group.to_string());
        Ok(())
    }
}

/// The id every member given the same `--peers` list derives.
fn from_peers(peers: &BTreeMap<u64, String>) -> String {
    let list = peers
        .iter()
        .map(|(id, addr)| format!("{id}={addr}"))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "g-{:016x}",
        xxhash_rust::xxh3::xxh3_64(format!("peers:{list}").as_bytes())
    )
}

fn storage(path: &Path, e: &std::io::Error) -> CoordinatorError {
    CoordinatorError::Storage(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(me: u64, dir: &Path, peers: &BTreeMap<u64, String>) -> GroupIdentity {
        let id = GroupIdentity::open(me, dir).expect("open");
        if id.group().is_none() {
            id.form_with_peers(peers).expect("formed");
        }
        id
    }

    fn peers(list: &[(u64, &str)]) -> BTreeMap<u64, String> {
        list.iter().map(|(i, a)| (*i, a.to_string())).collect()
    }

    #[test]
    fn members_given_the_same_peers_agree_on_the_group_and_keep_it_across_restarts() {
        let (a, b) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        let list = peers(&[(1, "127.0.0.1:1"), (2, "127.0.0.1:2"), (3, "127.0.0.1:3")]);
        let one = opened(1, a.path(), &list);
        let two = opened(2, b.path(), &list);
        assert_eq!(one.group(), two.group());
        let other = peers(&[(1, "127.0.0.1:9"), (2, "127.0.0.1:2"), (3, "127.0.0.1:3")]);
        let reopened = opened(1, a.path(), &other);
        assert_eq!(reopened.group(), one.group(), "the kept id wins over flags");
        let c = tempfile::tempdir().expect("tmp");
        let elsewhere = opened(1, c.path(), &other);
        assert_ne!(elsewhere.group(), one.group(), "other peers, other group");
    }

    #[test]
    fn a_message_for_another_coordinator_or_group_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let list = peers(&[(1, "a:1"), (2, "a:2"), (3, "a:3")]);
        let me = opened(2, dir.path(), &list);
        let ok = me.envelope(2, 7u8);
        assert_eq!(me.admit(ok, Sent::ByLeader).expect("ok"), 7);
        let wrong_node = me.envelope(3, 7u8);
        assert!(me.admit(wrong_node, Sent::ByLeader).is_err());
        let foreign = Envelope {
            group: Some("g-other".into()),
            to: 2,
            rpc: 7u8,
        };
        let e = me.admit(foreign, Sent::ByLeader).expect_err("refused");
        assert!(e.to_string().contains("g-other"), "{e}");
        let unjoined = Envelope {
            group: None,
            to: 2,
            rpc: 7u8,
        };
        assert!(me.admit(unjoined, Sent::ByPeer).is_err());
        // Two coordinators whose store predates group ids still talk.
        let old = tempfile::tempdir().expect("tmp");
        let old = GroupIdentity::open(2, old.path()).expect("open");
        let unnamed = Envelope {
            group: None,
            to: 2,
            rpc: 7u8,
        };
        assert_eq!(old.admit(unnamed, Sent::ByPeer).expect("admitted"), 7);
    }

    #[test]
    fn a_joiner_learns_its_group_from_a_leader_never_from_a_peer() {
        let dir = tempfile::tempdir().expect("tmp");
        let joiner = GroupIdentity::open(4, dir.path()).expect("ok");
        let vote = Envelope {
            group: Some("g-a".into()),
            to: 4,
            rpc: (),
        };
        assert!(joiner.admit(vote, Sent::ByPeer).is_err());
        assert_eq!(joiner.group(), None);
        let append = Envelope {
            group: Some("g-a".into()),
            to: 4,
            rpc: (),
        };
        joiner.admit(append, Sent::ByLeader).expect("ok");
        let foreign = Envelope {
            group: Some("g-b".into()),
            to: 4,
            rpc: (),
        };
        assert!(joiner.admit(foreign, Sent::ByLeader).is_err());
        let reopened = GroupIdentity::open(4, dir.path()).expect("ok");
        assert_eq!(reopened.group().as_deref(), Some("g-a"));
    }

    #[test]
    fn a_group_formed_alone_gets_an_id_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let me = GroupIdentity::open(1, dir.path()).expect("ok");
        me.form_alone("127.0.0.1:5").expect("formed");
        let first = me.group().expect("formed");
        me.form_alone("127.0.0.1:5").expect("formed");
        assert_eq!(me.group(), Some(first.clone()));
        let reopened = GroupIdentity::open(1, dir.path()).expect("ok");
        assert_eq!(reopened.group(), Some(first));
    }
}
