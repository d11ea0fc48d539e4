//! The `longbow` binary: one executable, one subcommand per role (`coordinator`, `shard`,
//! and `local`, which runs one coordinator and N shard nodes in one process on loopback).
//!
//! `anyhow` lives here only: library crates return typed errors.

mod roles;

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

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
    /// Run a coordinator: Raft catalog, routing, scatter-gather, the client Flight API.
    Coordinator(CoordinatorArgs),
    /// Run a shard node: hosts replicas and serves the internal shard Flight API.
    Shard(ShardArgs),
    /// Run one coordinator and N shard nodes in one process on loopback (the embedded default).
    Local(LocalArgs),
}

/// Settings shared by the roles that store replicas.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct StorageArgs {
    /// Rows per in-memory segment before a new segment starts.
    #[arg(long, env = "LONGBOW_SEGMENT_ROWS", default_value_t = 1 << 20)]
    pub(crate) segment_rows: usize,
    /// Bytes per WAL file before it rotates.
    #[arg(long, env = "LONGBOW_WAL_SEGMENT_BYTES", default_value_t = 64 << 20)]
    pub(crate) wal_segment_bytes: u64,
    /// A checkpoint (sealing the appendable segment to files and deleting the WAL it covers)
    /// is due once the WAL grew this many bytes since the last one.
    #[arg(long, env = "LONGBOW_CHECKPOINT_WAL_BYTES", default_value_t = 256 << 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) checkpoint_wal_bytes: u64,
    /// Bytes of the newest WAL that a checkpoint of a replica with backups keeps although it
    /// covers them, so a backup away for a moment catches up from the log rather than by a
    /// segment transfer (whole WAL files are kept or deleted; 0 keeps none).
    #[arg(long, env = "LONGBOW_WAL_RETENTION_BYTES", default_value_t = 64 << 20)]
    pub(crate) wal_retention_bytes: u64,
    /// A checkpoint is due this many seconds after the last one, if anything changed.
    #[arg(long, env = "LONGBOW_CHECKPOINT_INTERVAL_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) checkpoint_interval_secs: u64,
    /// A sealed segment whose dead fraction (deleted rows plus replaced versions) passes this
    /// is rewritten without them. Between 0 and 1.
    #[arg(long, env = "LONGBOW_COMPACTION_THRESHOLD", default_value_t = 0.2,
          value_parser = parse_fraction)]
    pub(crate) compaction_threshold: f64,
    /// Threads that commit writes for all replicas of a shard node (WAL append, fsync,
    /// apply), however many namespaces it hosts.
    #[arg(long, env = "LONGBOW_COMMIT_THREADS", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub(crate) commit_threads: u64,
    /// Threads that run background work for all replicas of a shard node (linking new rows,
    /// repairs, merges, checkpoints); linking itself also uses every core.
    #[arg(long, env = "LONGBOW_BACKGROUND_THREADS", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub(crate) background_threads: u64,
    /// Scheduling priority (nice, 0..=19) of the threads that link rows into graphs: higher
    /// yields the cores to searches and writes while they are busy. 0 runs indexing at
    /// normal priority.
    #[arg(long, env = "LONGBOW_INDEX_NICE", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    pub(crate) index_nice: i32,
    /// Distance kernels: `auto` (the best this CPU runs), `avx512f`, `avx2+fma` or `scalar`.
    /// A set this CPU cannot run stops start-up with an error.
    #[arg(long, env = "LONGBOW_SIMD", default_value = "auto",
          value_parser = clap::builder::PossibleValuesParser::new(["auto", "avx512f", "avx2+fma", "scalar"]))]
    pub(crate) simd: String,
    /// Milliseconds a primary waits for a backup (or a coordinator) to answer before it takes
    /// that backup out of the in-sync set; writes stall at most this long on a stalled backup.
    #[arg(long, env = "LONGBOW_REPLICATION_TIMEOUT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(50..=600_000))]
    pub(crate) replication_timeout_ms: u64,
}

/// Settings shared by the roles that run a coordinator.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct LimitArgs {
    /// Shard calls one request may have in flight at once.
    #[arg(long, env = "LONGBOW_MAX_FANOUT", default_value_t = 16)]
    pub(crate) max_fanout: usize,
    /// Shard calls the whole coordinator may have in flight at once.
    #[arg(long, env = "LONGBOW_INFLIGHT_BUDGET", default_value_t = 256)]
    pub(crate) inflight_budget: usize,
    /// Deadline of one client request, in seconds.
    #[arg(long, env = "LONGBOW_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub(crate) request_timeout_secs: u64,
    /// Raft log entries between two snapshots of the catalog; each snapshot lets the log it
    /// covers be deleted, so the catalog store stays near the size of the catalog.
    #[arg(long, env = "LONGBOW_RAFT_SNAPSHOT_LOGS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) raft_snapshot_logs: u64,
    /// Milliseconds without a heartbeat after which a shard node counts as dead: searches no
    /// longer wait on it and its primaries fail over to an in-sync backup.
    #[arg(long, env = "LONGBOW_NODE_FAILURE_TIMEOUT_MS", default_value_t = 1500,
          value_parser = clap::value_parser!(u64).range(300..=600_000))]
    pub(crate) node_failure_timeout_ms: u64,
    /// Seconds a shard node may stay dead before each replica it held is rebuilt on another
    /// live node (from the shard's primary); must exceed the node failure timeout.
    #[arg(long, visible_alias = "replica-timeout", env = "LONGBOW_REPLICA_TIMEOUT_SECS",
          default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=2_592_000))]
    pub(crate) replica_timeout_secs: u64,
    /// Percentile of a replica's recent search latency after which the same shard search is
    /// also sent to another in-sync replica (the first answer wins); 0 turns hedging off.
    #[arg(long, env = "LONGBOW_HEDGE_PERCENTILE", default_value_t = 90,
          value_parser = clap::value_parser!(u8).range(0..=99))]
    pub(crate) hedge_percentile: u8,
    /// Hedged searches allowed, as a percentage of shard searches (over the last 10 s).
    #[arg(long, env = "LONGBOW_HEDGE_BUDGET_PERCENT", default_value_t = 10,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub(crate) hedge_budget_percent: u8,
}

#[derive(clap::Args, Debug)]
pub(crate) struct CoordinatorArgs {
    /// Address to bind every port on.
    #[arg(long, env = "LONGBOW_HOST", default_value = "127.0.0.1")]
    pub(crate) host: IpAddr,
    /// Client data port (DoPut, DoExchange, DoGet).
    #[arg(long, env = "LONGBOW_DATA_PORT", default_value_t = 3000)]
    pub(crate) data_port: u16,
    /// Client meta port (DoAction, ListFlights, GetFlightInfo).
    #[arg(long, env = "LONGBOW_META_PORT", default_value_t = 3001)]
    pub(crate) meta_port: u16,
    /// Internal port (Raft, shard registration).
    #[arg(long, env = "LONGBOW_INTERNAL_PORT", default_value_t = 3002)]
    pub(crate) internal_port: u16,
    /// HTTP port (/metrics, /healthz, /readyz).
    #[arg(long, env = "LONGBOW_HTTP_PORT", default_value_t = 9090)]
    pub(crate) http_port: u16,
    /// Directory of the Raft catalog.
    #[arg(long, env = "LONGBOW_DATA_DIR", default_value = "./data/coordinator")]
    pub(crate) data_dir: PathBuf,
    /// This coordinator's Raft id.
    #[arg(long, env = "LONGBOW_NODE_ID", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) node_id: u64,
    /// The initial voters of the coordinator group, `id=host:port` of each one's internal
    /// port, this coordinator's among them (`1=c1:3002,2=c2:3002,3=c3:3002`). Read only while
    /// the catalog store is empty: later changes go through AddCoordinator and
    /// RemoveCoordinator. Without it (and without --join) the coordinator is a group of one.
    #[arg(long, env = "LONGBOW_PEERS",
          value_parser = longbow_coordinator::raft::membership::parse_peers)]
    pub(crate) peers: Option<std::collections::BTreeMap<u64, String>>,
    /// Start with an empty catalog store and wait to be added to a running group with
    /// AddCoordinator (sent to any coordinator of that group).
    #[arg(long, env = "LONGBOW_JOIN", conflicts_with = "peers")]
    pub(crate) join: bool,
    /// Shards of namespaces created without `shards`.
    #[arg(long, env = "LONGBOW_DEFAULT_SHARDS", default_value_t = 2)]
    pub(crate) default_shards: u32,
    #[command(flatten)]
    pub(crate) limits: LimitArgs,
}

#[derive(clap::Args, Debug)]
pub(crate) struct ShardArgs {
    /// Address of the shard Flight API.
    #[arg(long, env = "LONGBOW_SHARD_LISTEN", default_value = "127.0.0.1:4000")]
    pub(crate) listen: std::net::SocketAddr,
    /// Address coordinators reach this node at (defaults to the listen address).
    #[arg(long, env = "LONGBOW_ADVERTISE")]
    pub(crate) advertise: Option<String>,
    /// Internal addresses of the coordinators (`host:port`, comma-separated: every
    /// coordinator of the group); the node registers through any and heartbeats to each.
    /// None = standalone.
    #[arg(long, env = "LONGBOW_COORDINATOR", value_delimiter = ',')]
    pub(crate) coordinator: Vec<String>,
    /// HTTP port (/metrics, /healthz, /readyz); 0 picks a free one.
    #[arg(long, env = "LONGBOW_HTTP_PORT", default_value_t = 9091)]
    pub(crate) http_port: u16,
    /// Directory holding this node's replicas.
    #[arg(long, env = "LONGBOW_DATA_DIR", default_value = "./data/shard")]
    pub(crate) data_dir: PathBuf,
    #[command(flatten)]
    pub(crate) storage: StorageArgs,
}

#[derive(clap::Args, Debug)]
pub(crate) struct LocalArgs {
    /// Root directory (coordinator/ and shard-N/ inside).
    #[arg(long, env = "LONGBOW_DATA_DIR", default_value = "./data")]
    pub(crate) data_dir: PathBuf,
    /// Shard nodes to run (also the default shard count of new namespaces).
    #[arg(long, env = "LONGBOW_SHARDS", default_value_t = 2)]
    pub(crate) shards: u32,
    /// Client data port; 0 picks a free one.
    #[arg(long, env = "LONGBOW_DATA_PORT", default_value_t = 3000)]
    pub(crate) data_port: u16,
    /// Client meta port; 0 picks a free one.
    #[arg(long, env = "LONGBOW_META_PORT", default_value_t = 3001)]
    pub(crate) meta_port: u16,
    /// HTTP port (/metrics, /healthz, /readyz); 0 picks a free one.
    #[arg(long, env = "LONGBOW_HTTP_PORT", default_value_t = 9090)]
    pub(crate) http_port: u16,
    #[command(flatten)]
    pub(crate) storage: StorageArgs,
    #[command(flatten)]
    pub(crate) limits: LimitArgs,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LONGBOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,sled=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let _crash_points = longbow_shard::fault::arm_from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.role {
            Role::Coordinator(args) => roles::coordinator(args).await,
            Role::Shard(args) => roles::shard(args).await,
            Role::Local(args) => roles::local(args).await,
        }
    })
}

/// A fraction in (0, 1].
fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|e| format!("{s:?} is not a number: {e}"))?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!("{v} is outside (0, 1]"))
    }
}
