//! Running each role: bind ports, start services, wait for SIGINT/SIGTERM, stop cleanly
//! (queued writes are committed before replicas close, so nothing acknowledged is lost).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use longbow_coordinator::raft::Formation;
use longbow_coordinator::server::{self, Listeners};
use longbow_coordinator::CoordinatorConfig;
use longbow_shard::replica::ReplicaSettings;
use longbow_shard::{NodeConfig, ShardNode};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::{CoordinatorArgs, LimitArgs, LocalArgs, ShardArgs, StorageArgs};

/// Heartbeat period of shard nodes (a coordinator's `--node-failure-timeout-ms` must be a
/// few of these).
const HEARTBEAT: Duration = Duration::from_millis(250);

/// SIGTERM and SIGINT handlers, installed before a role prints its ready line, so a signal
/// sent right after that line stops the process cleanly instead of killing it.
struct ShutdownSignals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

fn listen_for_shutdown() -> ShutdownSignals {
    use tokio::signal::unix::{signal, SignalKind};
    let install = |kind: SignalKind, name: &str| match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, signal = name, "cannot listen for this signal");
            None
        }
    };
    ShutdownSignals {
        term: install(SignalKind::terminate(), "SIGTERM"),
        int: install(SignalKind::interrupt(), "SIGINT"),
    }
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

async fn shutdown_signal(mut signals: ShutdownSignals, tx: watch::Sender<bool>) {
    tokio::select! {
        _ = recv(&mut signals.term) => {}
        _ = recv(&mut signals.int) => {}
    }
    tracing::info!("shutdown requested");
    let _ = tx.send(true);
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

fn coordinator_config(
    data_dir: std::path::PathBuf,
    default_shards: u32,
    node_id: u64,
    limits: &LimitArgs,
) -> anyhow::Result<CoordinatorConfig> {
    anyhow::ensure!(
        limits.replica_timeout_secs * 1000 > limits.node_failure_timeout_ms,
        "--replica-timeout-secs ({} s) must exceed --node-failure-timeout-ms ({} ms): a replica \
         is rebuilt elsewhere only after its node counts as dead",
        limits.replica_timeout_secs,
        limits.node_failure_timeout_ms
    );
    let mut c = CoordinatorConfig::new(data_dir, String::new());
    c.node_id = node_id;
    c.default_shards = default_shards;
    c.max_fanout = limits.max_fanout;
    c.inflight_budget = limits.inflight_budget;
    c.request_timeout = Duration::from_secs(limits.request_timeout_secs.max(1));
    c.raft_snapshot_logs = limits.raft_snapshot_logs;
    c.heartbeat_timeout = Duration::from_millis(limits.node_failure_timeout_ms);
    c.replica_timeout = Duration::from_secs(limits.replica_timeout_secs);
    c.hedge = longbow_coordinator::hedging::HedgeConfig {
        percentile: (limits.hedge_percentile > 0).then_some(f32::from(limits.hedge_percentile)),
        budget_percent: f32::from(limits.hedge_budget_percent),
    };
    Ok(c)
}

/// How the coordinator group forms on an empty store, from `--peers` and `--join`.
fn formation(
    node_id: u64,
    peers: Option<std::collections::BTreeMap<u64, String>>,
    join: bool,
) -> anyhow::Result<Formation> {
    Ok(match peers {
        Some(peers) => {
            anyhow::ensure!(
                peers.contains_key(&node_id),
                "--peers does not list this coordinator's --node-id {node_id}; to add a \
                 coordinator to a running group, start it with --join and send AddCoordinator \
                 to the group"
            );
            Formation::Peers(peers)
        }
        None if join => Formation::Join,
        None => Formation::Alone,
    })
}

fn replica_settings(s: &StorageArgs) -> ReplicaSettings {
    ReplicaSettings {
        segment_capacity: s.segment_rows,
        wal_segment_bytes: s.wal_segment_bytes,
        checkpoint_wal_bytes: s.checkpoint_wal_bytes,
        wal_retention_bytes: s.wal_retention_bytes,
        checkpoint_interval: Duration::from_secs(s.checkpoint_interval_secs),
        compaction_threshold: s.compaction_threshold,
        ..ReplicaSettings::default()
    }
}

/// A shard node serving in this process.
struct ShardHandle {
    node: Arc<ShardNode>,
    addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn start_shard(
    data_dir: std::path::PathBuf,
    listener: TcpListener,
    advertise: Option<String>,
    coordinators: Vec<String>,
    http: Option<TcpListener>,
    storage: &StorageArgs,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<ShardHandle> {
    longbow_shard::distance::select(&storage.simd)?;
    if let Err(now) = longbow_shard::cpu_pools::set_index_nice(storage.index_nice) {
        anyhow::bail!(
            "--index-nice {}: this process's indexing threads already run at nice {now}",
            storage.index_nice
        );
    }
    let config = NodeConfig {
        data_dir: data_dir.clone(),
        replica: replica_settings(storage),
        workers: longbow_shard::WorkerThreads {
            commit: storage.commit_threads as usize,
            background: storage.background_threads as usize,
        },
        replication_timeout: Duration::from_millis(storage.replication_timeout_ms),
    };
    let node = tokio::task::spawn_blocking(move || ShardNode::open(config))
        .await?
        .with_context(|| format!("opening shard data directory {}", data_dir.display()))?;
    let node = Arc::new(node);
    let addr = listener.local_addr()?;
    let mut tasks = Vec::new();
    let (n, rx) = (node.clone(), stop.clone());
    tasks.push(tokio::spawn(async move {
        if let Err(e) = longbow_shard::service::serve(n, listener, wait(rx)).await {
            tracing::error!(error = %e, "shard service stopped with an error");
        }
    }));
    if let Some(http) = http {
        let (health, rx): (Arc<dyn longbow_common::http::Health>, _) = (node.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = longbow_common::http::serve(http, health, wait(rx)).await {
                tracing::error!(error = %e, "http server stopped with an error");
            }
        }));
    }
    if !coordinators.is_empty() {
        let key = node.node_key()?;
        let advertised = advertise.unwrap_or_else(|| addr.to_string());
        // Register before returning, so callers can place replicas at once; coordinators
        // that are not up yet are waited for.
        if longbow_shard::membership::register_when_up(&coordinators, &key, &advertised, &mut stop)
            .await
            .is_none()
        {
            return Ok(ShardHandle { node, addr, tasks });
        }
        let n = node.clone();
        let beat = longbow_shard::membership::Beat {
            node_key: key,
            address: advertised,
            interval: HEARTBEAT,
            statuses: Arc::new(move || n.replica_statuses()),
        };
        // Every coordinator hears from the node: each one's view of which nodes are live
        // serves its own searches, and whichever leads acts on it.
        tasks.push(tokio::spawn(longbow_shard::membership::follow_group(
            coordinators,
            beat,
            stop.clone(),
        )));
    }
    Ok(ShardHandle { node, addr, tasks })
}

async fn wait(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl ShardHandle {
    async fn stop(self) -> anyhow::Result<()> {
        for t in self.tasks {
            let _ = t.await;
        }
        let node = self.node;
        tokio::task::spawn_blocking(move || node.shutdown()).await?;
        Ok(())
    }
}

pub async fn coordinator(args: CoordinatorArgs) -> anyhow::Result<()> {
    let signals = listen_for_shutdown();
    let (tx, rx) = watch::channel(false);
    let listeners = Listeners {
        data: bind((args.host, args.data_port).into()).await?,
        meta: bind((args.host, args.meta_port).into()).await?,
        internal: bind((args.host, args.internal_port).into()).await?,
        http: bind((args.host, args.http_port).into()).await?,
    };
    let mut config = coordinator_config(
        args.data_dir,
        args.default_shards,
        args.node_id,
        &args.limits,
    )?;
    config.formation = formation(args.node_id, args.peers, args.join)?;
    let running = server::start(config, listeners, rx).await?;
    let e = running.endpoints;
    println!(
        "longbow coordinator: data {} meta {} internal {} http {}",
        e.data, e.meta, e.internal, e.http
    );
    shutdown_signal(signals, tx).await;
    running.join().await;
    Ok(())
}

pub async fn shard(args: ShardArgs) -> anyhow::Result<()> {
    let signals = listen_for_shutdown();
    let (tx, rx) = watch::channel(false);
    let listener = bind(args.listen).await?;
    let http = bind((args.listen.ip(), args.http_port).into()).await?;
    let http_addr = http.local_addr()?;
    let handle = start_shard(
        args.data_dir,
        listener,
        args.advertise,
        args.coordinator,
        Some(http),
        &args.storage,
        rx,
    )
    .await?;
    tracing::info!(addr = %handle.addr, simd = longbow_shard::distance::kernels().isa, "shard node serving");
    println!("longbow shard: flight {} http {}", handle.addr, http_addr);
    shutdown_signal(signals, tx).await;
    handle.stop().await?;
    tracing::info!("shard node stopped");
    Ok(())
}

pub async fn local(args: LocalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.shards >= 1, "--shards must be at least 1");
    let signals = listen_for_shutdown();
    let (tx, rx) = watch::channel(false);
    let lo: std::net::IpAddr = [127, 0, 0, 1].into();
    let listeners = Listeners {
        data: bind((lo, args.data_port).into()).await?,
        meta: bind((lo, args.meta_port).into()).await?,
        internal: bind((lo, 0).into()).await?,
        http: bind((lo, args.http_port).into()).await?,
    };
    let config = coordinator_config(
        args.data_dir.join("coordinator"),
        args.shards,
        1,
        &args.limits,
    )?;
    let running = server::start(config, listeners, rx.clone()).await?;
    let internal = running.endpoints.internal.to_string();
    let mut shards = Vec::new();
    for i in 0..args.shards {
        let listener = bind((lo, 0).into()).await?;
        let dir = args.data_dir.join(format!("shard-{i}"));
        shards.push(
            start_shard(
                dir,
                listener,
                None,
                vec![internal.clone()],
                None,
                &args.storage,
                rx.clone(),
            )
            .await?,
        );
    }
    // The shard nodes live in this process: the coordinator searches them directly.
    for s in &shards {
        running.coord.shards.serve_in_process(
            s.addr.to_string(),
            Arc::new(longbow_shard::service::ShardService::new(s.node.clone())),
        );
    }
    let e = running.endpoints;
    println!(
        "longbow local ready: data grpc://{} meta grpc://{} http http://{} ({} shard nodes: {})",
        e.data,
        e.meta,
        e.http,
        shards.len(),
        shards
            .iter()
            .map(|s| s.addr.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    shutdown_signal(signals, tx).await;
    running.join().await;
    for s in shards {
        s.stop().await?;
    }
    tracing::info!("longbow local stopped");
    Ok(())
}
