//! What a follower asks of the catalog leader over the internal port: a catalog change to
//! propose (`catalog.write`), a read index for a linearizable read (`catalog.read_index`),
//! and a change of the coordinator group (`catalog.membership`).
//!
//! The follower learns who leads from openraft's `ForwardToLeader`, never from a message
//! string. A leader that has lost its leadership by the time the call arrives answers
//! [`LeaderReply::NotLeader`], and the follower asks again once a new leader is known. This
//! module only carries requests; it never decides anything about the catalog. Each request
//! travels in an [`Envelope`] naming the group and the leader it is for: an address that now
//! belongs to another coordinator refuses it instead of answering for the wrong catalog.

use std::sync::OnceLock;
use std::time::Duration;

use longbow_common::channels::Channels;
use serde::{Deserialize, Serialize};

use super::identity::{Envelope, GroupIdentity};
use crate::catalog::{CatalogCommand, CatalogResponse};

/// Propose a catalog change at the leader.
pub const ACTION_WRITE: &str = "catalog.write";
/// Confirm leadership and name the index a linearizable read must wait for.
pub const ACTION_READ_INDEX: &str = "catalog.read_index";
/// Add or remove a coordinator.
pub const ACTION_MEMBERSHIP: &str = "catalog.membership";

/// Longest one forwarded call may take (the whole write retries within its own deadline).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// A change of the coordinator group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add coordinator `node_id`, reachable at `address` (its internal port), as a voter.
    Add {
        /// Raft id.
        node_id: u64,
        /// Internal address (`host:port`).
        address: String,
    },
    /// Remove coordinator `node_id` from the group.
    Remove {
        /// Raft id.
        node_id: u64,
    },
}

/// The leader's answer to a forwarded request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderReply<T> {
    /// Done (or, for a read index, confirmed); `index` is the log index the follower waits
    /// to have applied before it answers, so its client reads its own writes.
    Done {
        /// The answer.
        value: T,
        /// Log index to wait for locally.
        index: u64,
    },
    /// The receiver no longer leads; ask again once a leader is known.
    NotLeader,
}

/// A forwarded change's answer.
pub type WriteReply = LeaderReply<CatalogResponse>;

fn channels() -> &'static Channels {
    static CHANNELS: OnceLock<Channels> = OnceLock::new();
    CHANNELS.get_or_init(Channels::default)
}

/// The leader a request is for: its Raft id and internal address, and who asks.
pub struct To<'a> {
    /// The asking coordinator's group.
    pub identity: &'a GroupIdentity,
    /// The leader's Raft id.
    pub id: u64,
    /// The leader's internal address.
    pub addr: &'a str,
}

impl To<'_> {
    fn envelope<'b, T>(&self, body: &'b T) -> Envelope<&'b T> {
        self.identity.envelope(self.id, body)
    }
}

/// Send `command` (already keyed, so a retry cannot apply it twice) to the leader.
pub async fn write(to: To<'_>, command: &CatalogCommand) -> Result<WriteReply, tonic::Status> {
    channels()
        .action(to.addr, ACTION_WRITE, &to.envelope(command), CALL_TIMEOUT)
        .await
}

/// Ask the leader for a read index.
pub async fn read_index(to: To<'_>) -> Result<LeaderReply<()>, tonic::Status> {
    channels()
        .action(to.addr, ACTION_READ_INDEX, &to.envelope(&()), CALL_TIMEOUT)
        .await
}

/// Ask the leader to change the coordinator group; `timeout` bounds a new coordinator's
/// catch-up.
pub async fn membership(
    to: To<'_>,
    change: &MembershipChange,
    timeout: Duration,
) -> Result<LeaderReply<()>, tonic::Status> {
    channels()
        .action(to.addr, ACTION_MEMBERSHIP, &to.envelope(change), timeout)
        .await
}
