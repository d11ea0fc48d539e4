//! Coordinator metrics in the Prometheus text format (`/metrics`). Names follow
//! `longbow_<subsystem>_<name>_<unit>`; every metric here is updated by real code paths.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of RPC metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// Flight method (`DoPut`, `DoExchange`, `DoGet`, `DoAction:<type>`, ...).
    pub method: String,
    /// gRPC status code name (`Ok`, `InvalidArgument`, ...).
    pub status: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 18))
}

/// Labels of per-replica metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// Shard node id.
    pub node: u64,
}

/// All coordinator metrics.
pub struct Metrics {
    registry: Registry,
    /// RPCs by method and status.
    pub rpc_requests: Family<RpcLabels, Counter>,
    /// RPC latency by method and status.
    pub rpc_duration: Family<RpcLabels, Histogram, fn() -> Histogram>,
    /// Rows acknowledged to clients.
    pub ingest_rows: Counter,
    /// Queries answered.
    pub search_queries: Counter,
    /// Latency of one shard call within a scatter-gather search.
    pub search_fanout_duration: Histogram,
    /// Hedge requests sent (a shard search also sent to a second replica).
    pub search_hedges_sent: Counter,
    /// Hedged shard searches the second replica answered first.
    pub search_hedges_won: Counter,
    /// Latency of shard searches by replica node (both legs of a hedged search).
    pub search_replica_duration: Family<NodeLabels, Histogram, fn() -> Histogram>,
    /// Current Raft term.
    pub raft_term: Gauge,
    /// Current Raft leader id (0 when unknown).
    pub raft_leader: Gauge,
    /// Shard nodes currently considered live.
    pub shard_nodes_live: Gauge,
    /// Primaries replaced by an in-sync backup after their node died.
    pub failovers: Counter,
    /// Time from deciding a failover to every live member being configured.
    pub failover_seconds: Histogram,
    /// Replicas rebuilt on another node after theirs stayed dead past the replica timeout.
    pub replicas_rebuilt: Counter,
    /// Replicas moved to another node (rebalancing, decommissioning).
    pub replicas_moved: Counter,
    /// Replicas dropped from nodes because no shard counts them as a member.
    pub strays_dropped: Counter,
    /// Caught Arrow IPC decoder panics (synced from `longbow_common::flight` when encoding).
    flight_decoder_panics: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        let rpc_duration = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let ingest_rows = Counter::default();
        let search_queries = Counter::default();
        let search_fanout_duration = latency_histogram();
        let search_hedges_sent = Counter::default();
        let search_hedges_won = Counter::default();
        let search_replica_duration =
            Family::<NodeLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "longbow_search_hedges_sent",
            "Shard searches also sent to a second in-sync replica because the first was late",
            search_hedges_sent.clone(),
        );
        registry.register(
            "longbow_search_hedges_won",
            "Hedged shard searches the second replica answered first",
            search_hedges_won.clone(),
        );
        registry.register(
            "longbow_search_replica_duration_seconds",
            "Latency of shard searches by replica node, both legs of hedged ones",
            search_replica_duration.clone(),
        );
        let raft_term = Gauge::default();
        let raft_leader = Gauge::default();
        let shard_nodes_live = Gauge::default();
        let failovers = Counter::default();
        let failover_seconds = latency_histogram();
        let flight_decoder_panics = Counter::default();
        let replicas_rebuilt = Counter::default();
        let strays_dropped = Counter::default();
        let replicas_moved = Counter::default();
        registry.register(
            "longbow_replicas_moved",
            "Replicas moved to another node by rebalancing or decommissioning",
            replicas_moved.clone(),
        );
        registry.register(
            "longbow_replicas_rebuilt",
            "Replicas rebuilt on another node after theirs stayed dead past --replica-timeout-secs",
            replicas_rebuilt.clone(),
        );
        registry.register(
            "longbow_stray_replicas_dropped",
            "Replicas dropped from nodes because no shard counts them as a member",
            strays_dropped.clone(),
        );
        registry.register(
            "longbow_rpc_requests",
            "Client RPCs by method and status",
            rpc_requests.clone(),
        );
        registry.register(
            "longbow_rpc_duration_seconds",
            "Client RPC latency by method and status",
            rpc_duration.clone(),
        );
        registry.register(
            "longbow_ingest_rows",
            "Rows acknowledged durable to clients",
            ingest_rows.clone(),
        );
        registry.register(
            "longbow_search_queries",
            "Search queries answered",
            search_queries.clone(),
        );
        registry.register(
            "longbow_search_fanout_duration_seconds",
            "Latency of one shard call in a scatter-gather search",
            search_fanout_duration.clone(),
        );
        registry.register(
            "longbow_raft_term",
            "Current Raft term of the catalog group",
            raft_term.clone(),
        );
        registry.register(
            "longbow_raft_leader",
            "Node id of the catalog Raft leader (0 = none)",
            raft_leader.clone(),
        );
        registry.register(
            "longbow_shard_nodes_live",
            "Shard nodes with a recent heartbeat",
            shard_nodes_live.clone(),
        );
        registry.register(
            "longbow_replica_failovers",
            "Primaries replaced by an in-sync backup after their node died",
            failovers.clone(),
        );
        registry.register(
            "longbow_replica_failover_duration_seconds",
            "Time from deciding a failover to every live member being configured",
            failover_seconds.clone(),
        );
        registry.register(
            "longbow_flight_decoder_panics",
            "Malformed client messages on which the Arrow IPC decoder panicked (caught and refused)",
            flight_decoder_panics.clone(),
        );
        Metrics {
            registry,
            rpc_requests,
            rpc_duration,
            ingest_rows,
            search_queries,
            search_fanout_duration,
            search_hedges_sent,
            search_hedges_won,
            search_replica_duration,
            raft_term,
            raft_leader,
            shard_nodes_live,
            failovers,
            failover_seconds,
            replicas_rebuilt,
            replicas_moved,
            strays_dropped,
            flight_decoder_panics,
        }
    }
}

impl Metrics {
    /// Record one finished RPC.
    pub fn rpc(&self, method: &str, started: Instant, code: tonic::Code) {
        let labels = RpcLabels {
            method: method.to_string(),
            status: format!("{code:?}"),
        };
        self.rpc_requests.get_or_create(&labels).inc();
        self.rpc_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
    }

    /// Record one shard search on replica node `node`.
    pub fn observe_replica(&self, node: u64, took: std::time::Duration) {
        self.search_replica_duration
            .get_or_create(&NodeLabels { node })
            .observe(took.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let caught = longbow_common::flight::decoder_panics();
        let shown = self.flight_decoder_panics.get();
        if caught > shown {
            self.flight_decoder_panics.inc_by(caught - shown);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }
}
