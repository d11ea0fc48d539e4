//! Joining a cluster: register through a coordinator's internal port (any coordinator of the
//! group: a follower forwards to the leader), then heartbeat to every coordinator with the
//! status of every replica. A node started before its coordinator waits for it, saying so; a
//! coordinator that forgot the node (NOT_FOUND) gets a fresh registration; unreachable
//! coordinators are retried with capped backoff. Never changes replicas.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use longbow_common::channels::Channels;
use longbow_common::cluster_api::{
    Heartbeat, RegisterShard, Registered, ACTION_HEARTBEAT, ACTION_REGISTER,
};
use longbow_common::replication_api::ReplicaStatus;
use tokio::sync::watch;

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

/// Register and heartbeat every `interval` until `shutdown` turns true.
pub async fn run(
    coordinator: String,
    node_key: String,
    address: String,
    interval: Duration,
    statuses: Statuses,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut node_id: Option<u64> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let outcome = match node_id {
            None => register(&coordinator, &node_key, &address).await.map(|id| {
                tracing::info!(node_id = id, %coordinator, "registered with coordinator");
                node_id = Some(id);
            }),
            Some(id) => {
                let collect = statuses.clone();
                let replicas = tokio::task::spawn_blocking(move || collect())
                    .await
                    .unwrap_or_default();
                let beat = Heartbeat {
                    node_id: id,
                    node_key: node_key.clone(),
                    replicas,
                };
                heartbeat(&coordinator, &beat).await
            }
        };
        let wait = match outcome {
            Ok(()) => {
                backoff = Duration::from_millis(100);
                interval
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
        }
    }
}

async fn heartbeat(coordinator: &str, beat: &Heartbeat) -> Result<(), tonic::Status> {
    let _: serde_json::Value = channels()
        .action(coordinator, ACTION_HEARTBEAT, beat, CALL_TIMEOUT)
        .await?;
    Ok(())
}
