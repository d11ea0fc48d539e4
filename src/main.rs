//! The `longbow` binary: one executable, one subcommand per role.
//!
//! `anyhow` lives here only: library crates return typed errors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use longbow_shard::replica::ReplicaSettings;
use longbow_shard::{NodeConfig, ShardNode};

/// Longbow: a distributed vector database that speaks Apache Arrow Flight.
#[derive(Parser, Debug)]
#[command(name = "longbow", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "LONGBOW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    #[command(subcommand)]
    role: Role,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// Run a shard node: hosts replicas and serves the internal shard Flight API.
    Shard(ShardArgs),
}

#[derive(clap::Args, Debug)]
struct ShardArgs {
    /// Address of the shard Flight API.
    #[arg(long, env = "LONGBOW_SHARD_LISTEN", default_value = "127.0.0.1:4000")]
    listen: SocketAddr,
    /// Directory holding this node's replicas.
    #[arg(long, env = "LONGBOW_DATA_DIR", default_value = "./data/shard")]
    data_dir: PathBuf,
    /// Rows per in-memory segment before a new segment starts.
    #[arg(long, env = "LONGBOW_SEGMENT_ROWS", default_value_t = 1 << 20)]
    segment_rows: usize,
    /// Bytes per WAL file before it rotates.
    #[arg(long, env = "LONGBOW_WAL_SEGMENT_BYTES", default_value_t = 64 << 20)]
    wal_segment_bytes: u64,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LONGBOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop the process");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
}

async fn run_shard(args: ShardArgs) -> anyhow::Result<()> {
    let config = NodeConfig {
        data_dir: args.data_dir.clone(),
        replica: ReplicaSettings {
            segment_capacity: args.segment_rows,
            wal_segment_bytes: args.wal_segment_bytes,
            ..ReplicaSettings::default()
        },
    };
    let node = tokio::task::spawn_blocking(move || ShardNode::open(config))
        .await?
        .with_context(|| format!("opening data directory {}", args.data_dir.display()))?;
    let node = Arc::new(node);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, simd = longbow_shard::distance::kernels().isa, "shard node serving");
    println!("longbow shard listening on {addr}");
    longbow_shard::service::serve(node.clone(), listener, shutdown_signal()).await?;
    tokio::task::spawn_blocking(move || node.shutdown()).await?;
    tracing::info!("shard node stopped");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.role {
            Role::Shard(args) => run_shard(args).await,
        }
    })
}
