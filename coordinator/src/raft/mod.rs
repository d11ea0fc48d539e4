//! The catalog's Raft group: type configuration, start-up, the write path and linearizable
//! reads.
//!
//! Log and vote live in `sled`, the state machine in memory with snapshots in a file
//! ([`store`]); RPCs between coordinators travel over the internal Flight port ([`network`]).
//! One coordinator is a one-voter group; three or five form one with `--peers`
//! ([`membership`]). Any coordinator takes any change: a follower forwards it to the leader
//! that openraft names ([`forward`]). No process-local lock guards catalog state: every
//! change that depends on what the catalog holds is a conditional command.

pub mod disk;
pub mod forward;
pub mod identity;
pub mod membership;
pub mod network;
pub mod store;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use parking_lot::RwLock;
use tokio::time::Instant;

use crate::catalog::{Catalog, CatalogCommand, CatalogResponse};
use crate::error::{CoordinatorError, Result};
use forward::LeaderReply;
pub use membership::Formation;

openraft::declare_raft_types!(
    /// Raft types of the catalog group.
    pub TypeConfig:
        D = CatalogCommand,
        R = CatalogResponse,
);

/// Log entries kept after a snapshot covers them, so a follower slightly behind catches up
/// from the log instead of a whole snapshot.
pub const LOGS_KEPT: u64 = 100;

/// The running Raft node.
pub type CatalogRaft = Raft<TypeConfig>;

/// A started catalog: the Raft handle plus a read view of the applied state.
#[derive(Clone)]
pub struct CatalogGroup {
    /// Raft handle.
    pub raft: CatalogRaft,
    /// The state machine's catalog, read locally (reads never go through Raft).
    pub catalog: Arc<RwLock<Catalog>>,
    /// This coordinator's Raft id.
    pub id: u64,
    /// The group this coordinator belongs to: every Raft RPC is checked against it.
    pub identity: Arc<identity::GroupIdentity>,
    /// Refuses growth of the catalog on a full disk, keeps deletes writable.
    disk: Arc<disk::DiskGuard>,
    /// Numbers this process's proposals and knows which are still waiting for an answer.
    proposals: Arc<Proposals>,
    /// This process's proposer session: its id and start time (Unix ms).
    origin: String,
}

/// The numbers of this process's proposals: the next one, and those still in flight (the
/// lowest of which tells the catalog which outcomes it may forget).
#[derive(Default)]
struct Proposals {
    next: AtomicU64,
    in_flight: std::sync::Mutex<std::collections::BTreeSet<u64>>,
}

/// A proposal number, in flight until dropped.
struct InFlight<'a> {
    proposals: &'a Proposals,
    seq: u64,
    done_below: u64,
}

impl Proposals {
    fn start(&self) -> InFlight<'_> {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        in_flight.insert(seq);
        // `seq` is in the set, so it has a first element no greater than `seq`.
        let done_below = in_flight.first().copied().unwrap_or(seq);
        InFlight {
            proposals: self,
            seq,
            done_below,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut in_flight = self
            .proposals
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        in_flight.remove(&self.seq);
    }
}

/// Longest a catalog change or linearizable read waits for a leader to take it (an election
/// takes about a second).
pub const LEADER_WAIT: Duration = Duration::from_secs(10);
/// Pause between two attempts to reach a leader.
const RETRY_EVERY: Duration = Duration::from_millis(50);

/// One attempt of a request at one coordinator.
#[derive(Debug)]
pub enum Attempt<T> {
    /// Done here; the log index to wait for locally.
    Done(T, u64),
    /// This coordinator does not lead: openraft's hint of who does, if it knows.
    Elsewhere(Option<(u64, String)>),
}

impl<T> From<Attempt<T>> for LeaderReply<T> {
    fn from(a: Attempt<T>) -> Self {
        match a {
            Attempt::Done(value, index) => LeaderReply::Done { value, index },
            Attempt::Elsewhere(_) => LeaderReply::NotLeader,
        }
    }
}

/// The leader openraft names in a `ForwardToLeader`, with its internal address.
pub(crate) fn hint(f: ForwardToLeader<u64, BasicNode>) -> Option<(u64, String)> {
    Some((f.leader_id?, f.leader_node?.addr))
}

/// Whether a failed call to the leader may be tried again: the leader was unreachable, or
/// its answer was lost. Every request sent this way is safe to repeat (changes are keyed).
fn worth_retrying(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
    )
}

impl CatalogGroup {
    /// Open the Raft storage under `dir` and start the node. A coordinator whose storage is
    /// empty forms its group as `formation` says (alone: a one-voter group of itself at
    /// `internal_addr`). A snapshot of the catalog is written every `snapshot_logs` entries
    /// and the log it covers is purged (all but the last [`LOGS_KEPT`], for followers
    /// slightly behind).
    pub async fn start(
        id: u64,
        internal_addr: &str,
        dir: &Path,
        snapshot_logs: u64,
        formation: &Formation,
    ) -> Result<CatalogGroup> {
        let (log_store, state_machine) = store::open(dir)?;
        let identity = Arc::new(identity::GroupIdentity::open(id, dir)?);
        let catalog = state_machine.catalog();
        let config = Config {
            cluster_name: "longbow-catalog".into(),
            heartbeat_interval: 250,
            election_timeout_min: 500,
            election_timeout_max: 1000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_logs.max(1)),
            max_in_snapshot_log_to_keep: LOGS_KEPT,
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| CoordinatorError::Storage(e.to_string()))?,
        );
        let raft = Raft::new(
            id,
            config,
            network::Network::new(identity.clone()),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| CoordinatorError::Raft(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| CoordinatorError::Raft(e.to_string()))?;
        let members = match formation {
            _ if initialized => None,
            Formation::Alone => Some(BTreeMap::from([(id, internal_addr.to_string())])),
            Formation::Peers(peers) => Some(peers.clone()),
            Formation::Join => None,
        };
        match formation {
            _ if initialized => {}
            Formation::Alone => identity.form_alone(internal_addr)?,
            Formation::Peers(peers) => identity.form_with_peers(peers)?,
            Formation::Join => {}
        }
        if let Some(members) = members {
            let members: BTreeMap<u64, BasicNode> = members
                .into_iter()
                .map(|(id, addr)| (id, BasicNode { addr }))
                .collect();
            // Every peer initialises the same membership; the vote elects one leader.
            raft.initialize(members)
                .await
                .map_err(|e| CoordinatorError::Raft(e.to_string()))?;
        } else if initialized && formation != &Formation::Alone {
            tracing::info!("the catalog store holds the group's membership already; --peers and --join only form a group on an empty store");
        }
        Ok(CatalogGroup {
            raft,
            catalog,
            id,
            identity,
            disk: Arc::new(disk::DiskGuard::new(dir)),
            proposals: Arc::new(Proposals::default()),
            origin: format!("{id}:{}", crate::snapshots::now_ms()),
        })
    }

    /// Propose a change, through whichever coordinator leads, and wait until it is committed
    /// and applied here (so what this coordinator reads next includes it). The change is
    /// keyed, so the retries a leader change forces cannot apply it twice.
    pub async fn write(&self, cmd: CatalogCommand) -> Result<CatalogResponse> {
        self.disk.admit(&cmd)?;
        let proposal = self.proposals.start();
        let keyed = CatalogCommand::Once {
            origin: self.origin.clone(),
            seq: proposal.seq,
            done_below: proposal.done_below,
            command: Box::new(cmd),
        };
        let keyed = &keyed;
        self.at_leader(
            "catalog change",
            LEADER_WAIT,
            || self.propose_here(keyed),
            |id, addr| async move { forward::write(self.to(id, &addr), keyed).await },
        )
        .await
    }

    /// Propose a change if this coordinator leads (the serving side of a forwarded write).
    pub async fn propose_here(&self, cmd: &CatalogCommand) -> Result<Attempt<CatalogResponse>> {
        self.disk.admit(cmd)?;
        match self.raft.client_write(cmd.clone()).await {
            Ok(r) => Ok(Attempt::Done(r.data, r.log_id.index)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Ok(Attempt::Elsewhere(hint(f)))
            }
            Err(e) => Err(CoordinatorError::Raft(e.to_string())),
        }
    }

    /// Wait until this coordinator's state machine holds every change committed before now:
    /// what it reads next is at least as new as any acknowledged change (a linearizable
    /// read). The leader confirms its leadership with a quorum; a follower asks it for the
    /// index to wait for.
    pub async fn linearize(&self) -> Result<()> {
        self.at_leader(
            "linearizable read",
            LEADER_WAIT,
            || self.read_index_here(),
            |id, addr| async move { forward::read_index(self.to(id, &addr)).await },
        )
        .await
    }

    /// Confirm leadership with a quorum and name the read index, if this coordinator leads.
    pub async fn read_index_here(&self) -> Result<Attempt<()>> {
        match self.raft.ensure_linearizable().await {
            Ok(log_id) => Ok(Attempt::Done((), log_id.map_or(0, |l| l.index))),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Ok(Attempt::Elsewhere(hint(f)))
            }
            // A leader cut off from its quorum cannot confirm; wait for the group to settle.
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                Ok(Attempt::Elsewhere(None))
            }
            Err(e) => Err(CoordinatorError::Raft(e.to_string())),
        }
    }

    /// Run a request where the leader is: here while this coordinator leads (`here`), else
    /// at the leader openraft names (`there`), trying again until `timeout` through leader
    /// changes and lost answers; then wait until this coordinator has applied the log up to
    /// the answer.
    /// The leader `id` at `addr`, as this coordinator addresses it.
    fn to<'a>(&'a self, id: u64, addr: &'a str) -> forward::To<'a> {
        forward::To {
            identity: &self.identity,
            id,
            addr,
        }
    }

    async fn at_leader<T, H, HF, F, FF>(
        &self,
        what: &str,
        timeout: Duration,
        here: H,
        there: F,
    ) -> Result<T>
    where
        H: Fn() -> HF,
        HF: Future<Output = Result<Attempt<T>>>,
        F: Fn(u64, String) -> FF,
        FF: Future<Output = std::result::Result<LeaderReply<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + timeout;
        let mut target: Option<(u64, String)> = None;
        let mut last = String::from("no leader is known");
        loop {
            let reply = match target.take() {
                Some((id, addr)) if id != self.id => match there(id, addr.clone()).await {
                    Ok(reply) => reply,
                    Err(s) if worth_retrying(&s) => {
                        last = format!("leader {id} at {addr}: {}", s.message());
                        LeaderReply::NotLeader
                    }
                    Err(s) => return Err(CoordinatorError::Leader(Box::new(s))),
                },
                _ => match here().await? {
                    Attempt::Done(value, index) => LeaderReply::Done { value, index },
                    Attempt::Elsewhere(leader) => {
                        if leader.is_some() {
                            // openraft named the leader: go there at once.
                            target = leader;
                            continue;
                        }
                        last = "no leader is elected".into();
                        LeaderReply::NotLeader
                    }
                },
            };
            if let LeaderReply::Done { value, index } = reply {
                self.wait_applied(index, deadline).await?;
                return Ok(value);
            }
            if Instant::now() + RETRY_EVERY >= deadline {
                return Err(CoordinatorError::Raft(format!(
                    "{what}: no catalog leader took it within {timeout:?} ({last})"
                )));
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// Wait until this coordinator has applied the log up to `index`.
    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<()> {
        let applied = |m: &openraft::RaftMetrics<u64, BasicNode>| {
            m.last_applied.map_or(0, |l| l.index) >= index
        };
        if applied(&self.raft.metrics().borrow()) {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left.max(Duration::from_millis(100))))
            .applied_index_at_least(Some(index), "catalog change applied here")
            .await
            .map(|_| ())
            .map_err(|e| CoordinatorError::Raft(format!("applying the catalog log here: {e}")))
    }

    /// Why the catalog's disk counts as full, if it does (the catalog then only deletes).
    pub fn disk_full(&self) -> Option<String> {
        self.disk.full()
    }

    /// Wait (bounded) until this node leads, so writes can be served.
    pub async fn wait_leader(&self, timeout: std::time::Duration) -> Result<()> {
        let mut metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if metrics.borrow().current_leader.is_some() {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .is_err()
            {
                return Err(CoordinatorError::Raft(
                    "no Raft leader elected in time".into(),
                ));
            }
        }
    }

    /// Whether this coordinator leads the catalog group now.
    pub fn is_leader(&self) -> bool {
        self.term_and_leader().1 == Some(self.id)
    }

    /// `(term, leader)` for metrics and status.
    pub fn term_and_leader(&self) -> (u64, Option<u64>) {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.current_term, m.current_leader)
    }

    /// Stop the Raft node.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}
