//! Joining a cluster: register with a coordinator's internal port, then heartbeat. A
//! coordinator that forgot the node (NOT_FOUND) gets a fresh registration; unreachable
//! coordinators are retried with capped backoff. Never touches replicas.

use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::Action;
use longbow_common::cluster_api::{
    Heartbeat, RegisterShard, Registered, ACTION_HEARTBEAT, ACTION_REGISTER,
};
use tokio::sync::watch;
use tonic::transport::Channel;

async fn call<T: serde::de::DeserializeOwned>(
    client: &mut FlightServiceClient<Channel>,
    kind: &str,
    body: &impl serde::Serialize,
) -> Result<T, tonic::Status> {
    let body = serde_json::to_vec(body).map_err(|e| tonic::Status::internal(e.to_string()))?;
    let mut stream = client
        .do_action(Action::new(kind, body))
        .await?
        .into_inner();
    let reply = stream
        .message()
        .await?
        .ok_or_else(|| tonic::Status::unavailable("empty reply"))?;
    serde_json::from_slice(&reply.body).map_err(|e| tonic::Status::internal(e.to_string()))
}

/// Register once; returns the node id.
pub async fn register(
    coordinator: &str,
    node_key: &str,
    address: &str,
) -> Result<u64, tonic::Status> {
    let ch = Channel::from_shared(format!("http://{coordinator}"))
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = FlightServiceClient::new(ch);
    let r: Registered = call(
        &mut client,
        ACTION_REGISTER,
        &RegisterShard {
            node_key: node_key.to_string(),
            address: address.to_string(),
        },
    )
    .await?;
    Ok(r.node_id)
}

/// Register and heartbeat every `interval` until `shutdown` turns true.
pub async fn run(
    coordinator: String,
    node_key: String,
    address: String,
    interval: Duration,
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
            Some(id) => heartbeat(&coordinator, id).await,
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

async fn heartbeat(coordinator: &str, node_id: u64) -> Result<(), tonic::Status> {
    let ch = Channel::from_shared(format!("http://{coordinator}"))
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = FlightServiceClient::new(ch);
    let _: serde_json::Value = call(&mut client, ACTION_HEARTBEAT, &Heartbeat { node_id }).await?;
    Ok(())
}
