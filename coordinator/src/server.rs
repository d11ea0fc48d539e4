//! Running a coordinator: bind its ports, start the catalog, serve the client API on the data
//! and meta ports, the internal API, and HTTP health/metrics, until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use longbow_common::http::Health;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::{CoordinatorError, Result};
use crate::internal::InternalService;
use crate::metrics::Metrics;
use crate::node::{Coordinator, CoordinatorConfig};
use crate::service::ClientService;

/// The four listeners of a coordinator.
pub struct Listeners {
    /// Data port (DoPut, DoExchange, DoGet; actions too).
    pub data: TcpListener,
    /// Meta port (actions, ListFlights, GetFlightInfo).
    pub meta: TcpListener,
    /// Internal port (Raft, shard registration).
    pub internal: TcpListener,
    /// HTTP port (`/metrics`, `/healthz`, `/readyz`).
    pub http: TcpListener,
}

/// Addresses a running coordinator serves on.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    /// Data port.
    pub data: SocketAddr,
    /// Meta port.
    pub meta: SocketAddr,
    /// Internal port.
    pub internal: SocketAddr,
    /// HTTP port.
    pub http: SocketAddr,
}

impl Health for Coordinator {
    fn metrics_text(&self) -> String {
        self.refresh_gauges();
        self.metrics.encode()
    }

    fn not_ready(&self) -> Option<String> {
        let (_, leader) = self.group.term_and_leader();
        if leader.is_none() {
            return Some("no catalog Raft leader".into());
        }
        let live = self.live_nodes();
        // Every node holding replicas must have registered: until then its shards answer
        // UNAVAILABLE, so the coordinator is not ready to serve them.
        let cat = self.group.catalog.read();
        let mut waiting: Vec<u64> = cat
            .namespaces
            .values()
            .flat_map(|ns| &ns.placement)
            .map(|r| r.primary)
            .filter(|n| !live.contains(n))
            .collect();
        waiting.sort_unstable();
        waiting.dedup();
        if !waiting.is_empty() {
            let names: Vec<String> = waiting.iter().map(|n| format!("node {n}")).collect();
            return Some(format!(
                "shard nodes holding replicas have not registered yet: {}",
                names.join(", ")
            ));
        }
        if live.is_empty() {
            return Some("no live shard node".into());
        }
        None
    }

    fn ready_detail(&self) -> String {
        format!("live_shard_nodes {}\n", self.live_nodes().len())
    }

    fn degraded(&self) -> Option<String> {
        self.group
            .disk_full()
            .map(|why| format!("{why}: writes and namespace creation are refused, deletes work"))
    }
}

/// A started coordinator; dropping the shutdown sender stops it.
pub struct RunningCoordinator {
    /// The coordinator.
    pub coord: Arc<Coordinator>,
    /// Where it serves.
    pub endpoints: Endpoints,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn addr(l: &TcpListener) -> Result<SocketAddr> {
    l.local_addr()
        .map_err(|e| CoordinatorError::Internal(e.to_string()))
}

/// Start a coordinator on `listeners`; it stops when `shutdown` turns true.
pub async fn start(
    mut config: CoordinatorConfig,
    listeners: Listeners,
    shutdown: watch::Receiver<bool>,
) -> Result<RunningCoordinator> {
    let endpoints = Endpoints {
        data: addr(&listeners.data)?,
        meta: addr(&listeners.meta)?,
        internal: addr(&listeners.internal)?,
        http: addr(&listeners.http)?,
    };
    config.internal_addr = endpoints.internal.to_string();
    config.data_addr = endpoints.data.to_string();
    config.meta_addr = endpoints.meta.to_string();
    let coord = Coordinator::start(config, Arc::new(Metrics::default())).await?;
    let stop = |mut rx: watch::Receiver<bool>| async move {
        while !*rx.borrow() {
            if rx.changed().await.is_err() {
                break;
            }
        }
    };
    let mut tasks = Vec::new();
    let grpc = |svc: tonic::transport::server::Router,
                l: TcpListener,
                rx: watch::Receiver<bool>,
                name: &'static str| {
        tokio::spawn(async move {
            let incoming = longbow_common::net::nodelay_incoming(l);
            if let Err(e) = svc.serve_with_incoming_shutdown(incoming, stop(rx)).await {
                tracing::error!(port = name, error = %e, "server stopped with an error");
            }
        })
    };
    let client = ClientService::new(coord.clone());
    tasks.push(grpc(
        tonic::transport::Server::builder().add_service(client.clone().into_server()),
        listeners.data,
        shutdown.clone(),
        "data",
    ));
    tasks.push(grpc(
        tonic::transport::Server::builder().add_service(client.into_server()),
        listeners.meta,
        shutdown.clone(),
        "meta",
    ));
    tasks.push(grpc(
        tonic::transport::Server::builder()
            .add_service(InternalService::new(coord.clone()).into_server()),
        listeners.internal,
        shutdown.clone(),
        "internal",
    ));
    let health: Arc<dyn Health> = coord.clone();
    let http_stop = stop(shutdown.clone());
    tasks.push(tokio::spawn(async move {
        if let Err(e) = longbow_common::http::serve(listeners.http, health, http_stop).await {
            tracing::error!(error = %e, "http server stopped with an error");
        }
    }));
    tasks.push(tokio::spawn(sweep_periodically(
        coord.clone(),
        stop(shutdown.clone()),
    )));
    tasks.push(tokio::spawn(reconcile_periodically(
        coord.clone(),
        stop(shutdown.clone()),
    )));
    Ok(RunningCoordinator {
        coord,
        endpoints,
        tasks,
    })
}

/// How often cut-off namespace creations and snapshots are looked for.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// Roll back what a crash cut off (namespace creations, snapshots), every [`SWEEP_EVERY`]
/// until shutdown.
async fn sweep_periodically(coord: Arc<Coordinator>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        coord.sweep_namespaces().await;
        coord.sweep_snapshots().await;
    }
}

/// Fail over dead primaries and bring members to the catalog's replica sets, every
/// [`crate::replica_sets::RECONCILE_EVERY`] until shutdown.
async fn reconcile_periodically(
    coord: Arc<Coordinator>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(crate::replica_sets::RECONCILE_EVERY) => {}
        }
        coord.reconcile().await;
    }
}

impl RunningCoordinator {
    /// Wait for the servers to finish (after shutdown was signalled), then stop Raft.
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        self.coord.group.shutdown().await;
    }
}
