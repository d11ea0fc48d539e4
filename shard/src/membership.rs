//! Joining a cluster: register through a coordinator's internal port (any coordinator of the
//! group: a follower forwards to the leader), then heartbeat to every coordinator with the
//! status of every replica, following the group as its coordinators report it (one added
//! later starts hearing from the node, one removed stops). A node started before its coordinator waits for it, saying so; a
//! coordinator that forgot the node (NOT_FOUND) gets a fresh registration; unreachable
//! coordinators are retried with capped backoff. Never changes replicas.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use longbow_common::channels::Channels;
use longbow_common::cluster_api::{
    Heartbeat, HeartbeatReply, RegisterShard, Registered, ACTION_HEARTBEAT, ACTION_REGISTER,
};
use longbow_common::replication_api::ReplicaStatus;
use tokio::sync::{mpsc, watch};

/// Longest a registration or heartbeat call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

fn channels() -> &'static Channels {
    static CHANNELS: OnceLock<Channels> = OnceLock::new();
    CHANNELS.get_or_init(Channels::default)
}

/// Register once; returns the node id.
pub async fn register(
    coordinator: &str,
    node_key: &str,
    address: &str,
) -> Result<u64, tonic::Status> {
    let body = RegisterShard {
        node_key: node_key.to_string(),
        address: address.to_string(),
    };
    let r: Registered = channels()
        .action(coordinator, ACTION_REGISTER, &body, CALL_TIMEOUT)
        .await?;
    Ok(r.node_id)
}

/// Register through any of `coordinators` (each forwards to the catalog leader), retrying
/// with capped backoff until one answers (logging what it waits for) or `shutdown` turns
/// true (`None`).
pub async fn register_when_up(
    coordinators: &[String],
    node_key: &str,
    address: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<u64> {
    let mut backoff = Duration::from_millis(100);
    loop {
        for coordinator in coordinators {
            match register(coordinator, node_key, address).await {
                Ok(id) => return Some(id),
                Err(s) => {
                    tracing::warn!(%coordinator, error = %s.message(), retry_in = ?backoff, "waiting for a coordinator to register with it");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return None;
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// What a heartbeat reports: the status of every hosted replica.
pub type Statuses = Arc<dyn Fn() -> Vec<ReplicaStatus> + Send + Sync>;

/// What every heartbeat task needs: who this node is and what it reports.
#[derive(Clone)]
pub struct Beat {
    /// The node's stable identity.
    pub node_key: String,
    /// The address it advertises.
    pub address: String,
    /// Time between two heartbeats to one coordinator.
    pub interval: Duration,
    /// The status of every hosted replica.
    pub statuses: Statuses,
}

/// Heartbeat to every coordinator of the group until `shutdown` turns true, starting from
/// `seed` (the `--coordinator` list) and following the group's membership as coordinators
/// report it: a coordinator added later starts hearing from the node, one removed stops.
pub async fn follow_group(seed: Vec<String>, beat: Beat, shutdown: watch::Receiver<bool>) {
    let (tx, mut rx) = mpsc::channel::<(String, HeartbeatReply)>(16);
    let mut tasks: BTreeMap<String, (watch::Sender<bool>, tokio::task::JoinHandle<()>)> =
        BTreeMap::new();
    let mut adopted = 0u64;
    let start = |addr: String, tasks: &mut BTreeMap<_, _>| {
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(
            addr.clone(),
            beat.clone(),
            tx.clone(),
            stop_rx,
            shutdown.clone(),
        ));
        tasks.insert(addr, (stop_tx, task));
    };
    for addr in seed {
        start(addr, &mut tasks);
    }
    let mut stopping = shutdown.clone();
    loop {
        let (from, reply) = tokio::select! {
            got = rx.recv() => match got {
                Some(got) => got,
                None => break,
            },
            _ = wait_true(&mut stopping) => break,
        };
        if reply.membership_index <= adopted {
            continue;
        }
        adopted = reply.membership_index;
        let mut group: BTreeSet<String> = reply.others.into_iter().collect();
        if reply.member {
            group.insert(from);
        }
        if group.is_empty() {
            continue;
        }
        let gone: Vec<String> = tasks
            .keys()
            .filter(|a| !group.contains(*a))
            .cloned()
            .collect();
        for addr in gone {
            if let Some((stop, _)) = tasks.remove(&addr) {
                tracing::info!(coordinator = %addr, "no longer in the coordinator group; heartbeats stop");
                let _ = stop.send(true);
            }
        }
        for addr in group {
            if !tasks.contains_key(&addr) {
                tracing::info!(coordinator = %addr, "joined the coordinator group; heartbeats start");
                start(addr, &mut tasks);
            }
        }
    }
    for (_, (_, task)) in tasks {
        let _ = task.await;
    }
}

async fn wait_true(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Register with and heartbeat to one coordinator every `beat.interval`, passing on what
/// it says of the group, until `stop` or `shutdown` turns true.
async fn run(
    coordinator: String,
    beat: Beat,
    group: mpsc::Sender<(String, HeartbeatReply)>,
    mut stop: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut node_id: Option<u64> = None;
    loop {
        if *shutdown.borrow() || *stop.borrow() {
            return;
        }
        let outcome = match node_id {
            None => register(&coordinator, &beat.node_key, &beat.address)
                .await
                .map(|id| {
                    tracing::info!(node_id = id, %coordinator, "registered with coordinator");
                    node_id = Some(id);
                }),
            Some(id) => {
                let collect = beat.statuses.clone();
                let replicas = tokio::task::spawn_blocking(move || collect())
                    .await
                    .unwrap_or_default();
                let body = Heartbeat {
                    node_id: id,
                    node_key: beat.node_key.clone(),
                    replicas,
                };
                match heartbeat(&coordinator, &body).await {
                    Ok(reply) => {
                        let _ = group.try_send((coordinator.clone(), reply));
                        Ok(())
                    }
                    Err(s) => Err(s),
                }
            }
        };
        let wait = match outcome {
            Ok(()) => {
                backoff = Duration::from_millis(100);
                beat.interval
            }
            Err(s) => {
                if s.code() == tonic::Code::NotFound {
                    node_id = None;
                }
                if s.code() == tonic::Code::AlreadyExists {
                    tracing::error!(%coordinator, error = %s.message(), "the coordinator refuses this node's identity");
                }
                tracing::warn!(%coordinator, error = %s.message(), "coordinator unreachable; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(5));
                backoff
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
            _ = stop.changed() => {}
        }
    }
}

async fn heartbeat(coordinator: &str, beat: &Heartbeat) -> Result<HeartbeatReply, tonic::Status> {
    channels()
        .action(coordinator, ACTION_HEARTBEAT, beat, CALL_TIMEOUT)
        .await
}
