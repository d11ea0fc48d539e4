//! Speculative (hedged) replica reads for searches, on `tower::hedge`.
//!
//! Every replica (shard node) has a latency EWMA and a count of outstanding calls; a shard
//! search goes to the in-sync replica with the lowest expected cost (EWMA × (outstanding +
//! 1)). When it has not answered within the hedge delay, the same request goes to the next
//! best in-sync replica; the first answer wins and the other call is dropped (cancelled).
//! The delay is a percentile (`--hedge-percentile`, default p90) of the recent latency of
//! searches first sent to that replica: tower's rotating histogram, one per replica.
//! Hedges are bounded by a budget (tower's `TpsBudget`, `--hedge-budget-percent` of shard
//! searches, 10 % by default), so a slow cluster is never sent twice its load.
//!
//! This module only orders replicas and decides hedges; it never changes which replicas a
//! read may use (that is [`crate::targets`]), and it never retries an error: a failed call
//! is returned to the caller, which moves on to the next replica.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use parking_lot::Mutex;
use tower::hedge::{Hedge, Policy};
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Service, ServiceExt};

use crate::catalog::NodeId;
use crate::error::{CoordinatorError, Result};
use crate::metrics::Metrics;
use crate::node::ShardTarget;

/// Weight of the newest sample in a replica's latency EWMA.
const EWMA_WEIGHT: f64 = 0.2;
/// Searches a replica's histogram needs before its reads are hedged.
const MIN_SAMPLES: u64 = 20;
/// Each latency histogram covers this long (tower rotates two of them).
const HISTOGRAM_PERIOD: Duration = Duration::from_secs(3);
/// How long one search counts towards the hedge budget.
const BUDGET_TTL: Duration = Duration::from_secs(10);

/// Hedging settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgeConfig {
    /// Percentile (0–100, exclusive) of a replica's recent latency after which a hedge is
    /// sent; `None` turns hedging off.
    pub percentile: Option<f32>,
    /// Hedges allowed, as a percentage of shard searches.
    pub budget_percent: f32,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            percentile: Some(90.0),
            budget_percent: 10.0,
        }
    }
}

/// Latency EWMA and outstanding calls of one replica.
#[derive(Debug, Default)]
struct Load {
    /// EWMA of call latency in microseconds, as `f64` bits (0: no sample yet).
    ewma_us: AtomicU64,
    outstanding: AtomicU64,
}

impl Load {
    fn cost(&self) -> f64 {
        let ewma = f64::from_bits(self.ewma_us.load(Ordering::Relaxed));
        ewma * (self.outstanding.load(Ordering::Relaxed) + 1) as f64
    }

    fn observe(&self, took: Duration) {
        let sample = took.as_secs_f64() * 1e6;
        let _ = self
            .ewma_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                let old = f64::from_bits(old);
                let new = if old == 0.0 {
                    sample
                } else {
                    old + EWMA_WEIGHT * (sample - old)
                };
                Some(new.to_bits())
            });
    }
}

/// A shard search on whichever replica a leg picks.
pub type SearchCall<'a> = dyn Fn(ShardTarget) -> Pin<Box<dyn Future<Output = Result<Vec<RecordBatch>>> + Send + 'a>>
    + Send
    + Sync
    + 'a;

/// One shard search: the replicas in order of preference, the call, and which leg this is
/// (0: the first request, 1: the hedge).
#[derive(Clone)]
pub struct Read<'a> {
    order: Arc<Vec<ShardTarget>>,
    leg: usize,
    call: &'a SearchCall<'a>,
}

/// The service both legs go through: calls the leg's replica, keeping its load figures.
#[derive(Clone)]
struct Legs {
    replicas: Arc<Replicas>,
}

/// What a leg answered, and which leg it was.
type LegAnswer = (usize, Vec<RecordBatch>);

impl<'a> Service<Read<'a>> for Legs {
    type Response = LegAnswer;
    type Error = CoordinatorError;
    type Future = Pin<Box<dyn Future<Output = Result<LegAnswer>> + Send + 'a>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, read: Read<'a>) -> Self::Future {
        let replicas = self.replicas.clone();
        Box::pin(async move {
            let to = read.order.get(read.leg).cloned().ok_or_else(|| {
                CoordinatorError::Internal(format!("no replica for leg {}", read.leg))
            })?;
            let load = replicas.load(to.node);
            load.outstanding.fetch_add(1, Ordering::Relaxed);
            let node = to.node;
            // Counted back down, and its time so far taken as a sample, even when the leg
            // loses and is dropped: a replica that never answers must not look fast.
            let mut pending = Outstanding {
                load,
                started: Instant::now(),
                done: false,
            };
            let out = (read.call)(to).await;
            let took = pending.finish();
            replicas.metrics.observe_replica(node, took);
            out.map(|batches| (read.leg, batches))
        })
    }
}

/// One call in flight on a replica.
struct Outstanding {
    load: Arc<Load>,
    started: Instant,
    done: bool,
}

impl Outstanding {
    /// The call answered: count it down and take its latency; the latency.
    fn finish(&mut self) -> Duration {
        let took = self.started.elapsed();
        self.load.observe(took);
        self.load.outstanding.fetch_sub(1, Ordering::Relaxed);
        self.done = true;
        took
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        if !self.done {
            self.finish();
        }
    }
}

/// Which reads get a hedge: those with a second replica, within the budget.
#[derive(Clone)]
struct HedgePolicy {
    budget: Arc<TpsBudget>,
    metrics: Arc<Metrics>,
}

impl<'a> Policy<Read<'a>> for HedgePolicy {
    fn clone_request(&self, read: &Read<'a>) -> Option<Read<'a>> {
        (read.leg == 0 && read.order.len() > 1).then(|| Read {
            leg: 1,
            ..read.clone()
        })
    }

    fn can_retry(&self, _: &Read<'a>) -> bool {
        let ok = self.budget.withdraw();
        if ok {
            self.metrics.search_hedges_sent.inc();
        }
        ok
    }
}

type Hedged = Hedge<Legs, HedgePolicy>;

/// Replica load figures and one hedging service per replica (each with the latency
/// histogram of the searches first sent to it).
pub struct Replicas {
    config: HedgeConfig,
    metrics: Arc<Metrics>,
    budget: Arc<TpsBudget>,
    loads: Mutex<HashMap<NodeId, Arc<Load>>>,
    hedges: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<Hedged>>>>,
}

impl Replicas {
    /// Replica bookkeeping with `config`, counting into `metrics`.
    pub fn new(config: HedgeConfig, metrics: Arc<Metrics>) -> Arc<Replicas> {
        Arc::new(Replicas {
            budget: Arc::new(TpsBudget::new(
                BUDGET_TTL,
                0,
                (config.budget_percent / 100.0).clamp(0.0, 1000.0),
            )),
            config,
            metrics,
            loads: Mutex::new(HashMap::new()),
            hedges: Mutex::new(HashMap::new()),
        })
    }

    fn load(&self, node: NodeId) -> Arc<Load> {
        self.loads.lock().entry(node).or_default().clone()
    }

    /// `nodes` best first: lowest expected cost, nodes without a sample yet first (so every
    /// replica gets measured); ties keep the given order (the caller rotates it).
    pub fn best_first(&self, nodes: &mut [NodeId]) {
        let costs: HashMap<NodeId, f64> =
            nodes.iter().map(|n| (*n, self.load(*n).cost())).collect();
        nodes.sort_by(|a, b| costs[a].total_cmp(&costs[b]));
    }

    fn hedge_for(
        self: &Arc<Self>,
        node: NodeId,
        percentile: f32,
    ) -> Arc<tokio::sync::Mutex<Hedged>> {
        self.hedges
            .lock()
            .entry(node)
            .or_insert_with(|| {
                let legs = Legs {
                    replicas: self.clone(),
                };
                let policy = HedgePolicy {
                    budget: self.budget.clone(),
                    metrics: self.metrics.clone(),
                };
                Arc::new(tokio::sync::Mutex::new(Hedge::new::<Read<'static>>(
                    legs,
                    policy,
                    MIN_SAMPLES,
                    percentile / 100.0,
                    HISTOGRAM_PERIOD,
                )))
            })
            .clone()
    }

    /// Search on `order[0]`, hedged to `order[1]` when it is late (and hedging is on, and
    /// the budget allows). The first answer wins; an error is returned as it came.
    pub async fn search<'a>(
        self: &Arc<Self>,
        order: Vec<ShardTarget>,
        call: &'a SearchCall<'a>,
    ) -> Result<Vec<RecordBatch>> {
        let read = Read {
            order: Arc::new(order),
            leg: 0,
            call,
        };
        let first = read.order.first().map(|t| t.node);
        let (Some(percentile), Some(first)) = (self.config.percentile, first) else {
            let mut legs = Legs {
                replicas: self.clone(),
            };
            return legs.call(read).await.map(|(_, b)| b);
        };
        self.budget.deposit();
        let hedge = self.hedge_for(first, percentile);
        let answer = {
            let mut h = hedge.lock().await;
            let ready = h.ready().await.map_err(from_box)?;
            ready.call(read)
        };
        let (leg, batches) = answer.await.map_err(from_box)?;
        if leg == 1 {
            self.metrics.search_hedges_won.inc();
        }
        Ok(batches)
    }
}

/// The coordinator error a leg returned, out of tower's boxed error.
fn from_box(e: tower::BoxError) -> CoordinatorError {
    match e.downcast::<CoordinatorError>() {
        Ok(e) => *e,
        Err(other) => CoordinatorError::Internal(other.to_string()),
    }
}
