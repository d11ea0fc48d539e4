//! Speculative (hedged) replica reads for searches, on `tower::hedge`.
//!
//! Every replica (shard node) has a load: tower's peak-EWMA latency times its outstanding
//! calls plus one (`tower::load::PeakEwma`). A shard search goes to the in-sync replica with
//! the lowest load. The estimate decays over time, so a replica that was slow (and therefore
//! got no searches) is tried again within seconds. When it has not answered within the hedge delay, the same request goes to the next
//! best in-sync replica; the first answer wins and the other call is dropped (cancelled).
//! The delay is a percentile (`--hedge-percentile`, default p90) of the recent latency of
//! the shard's searches: tower's rotating histogram, one per shard.
//! Hedges are bounded by a budget (tower's `TpsBudget`, `--hedge-budget-percent` of shard
//! searches, 10 % by default), so a slow cluster is never sent twice its load.
//! A replica whose first leg just lost to a hedge goes after the others for a short
//! cooldown (like an outlier ejection): it stalled, and the next searches should not each
//! find that out again by waiting for the hedge delay.
//!
//! This module only orders replicas and decides hedges; it never changes which replicas a
//! read may use (that is [`crate::targets`]), and it never retries an error: a failed call
//! is returned to the caller, which moves on to the next replica.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use parking_lot::Mutex;
use tower::hedge::{Hedge, Policy};
use tower::load::peak_ewma::{Cost, PeakEwma};
use tower::load::{CompleteOnResponse, Load as _};
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Service, ServiceExt};

use crate::catalog::NodeId;
use crate::error::{CoordinatorError, Result};
use crate::metrics::Metrics;
use crate::node::ShardTarget;

/// How fast a replica's peak latency estimate decays towards its newer samples (and, when
/// it gets no searches, towards zero, so a replica once slow is tried again).
const LOAD_DECAY: Duration = Duration::from_secs(10);
/// The latency a replica is assumed to have before its first sample.
const DEFAULT_RTT: Duration = Duration::from_millis(1);
/// Searches a shard's histogram needs (in the last period) before its reads are hedged.
const MIN_SAMPLES: u64 = 10;
/// Each latency histogram covers this long (tower rotates two of them).
const HISTOGRAM_PERIOD: Duration = Duration::from_secs(10);
/// How long one search counts towards the hedge budget.
const BUDGET_TTL: Duration = Duration::from_secs(10);
/// How long a replica that lost a hedge race goes after the others.
const LOST_RACE_COOLDOWN: Duration = Duration::from_secs(2);

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

/// A shard search on whichever replica a leg picks.
pub type SearchCall<'a> = dyn Fn(ShardTarget) -> Pin<Box<dyn Future<Output = Result<Vec<RecordBatch>>> + Send + 'a>>
    + Send
    + Sync
    + 'a;

/// The innermost service: one shard search on one replica.
struct OnReplica;

impl<'a> Service<(ShardTarget, &'a SearchCall<'a>)> for OnReplica {
    type Response = Vec<RecordBatch>;
    type Error = CoordinatorError;
    type Future = Pin<Box<dyn Future<Output = Result<Vec<RecordBatch>>> + Send + 'a>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (to, call): (ShardTarget, &'a SearchCall<'a>)) -> Self::Future {
        call(to)
    }
}

/// One replica's load: tower's peak-EWMA latency times (outstanding first legs + 1). A first
/// leg dropped unanswered (it lost to the hedge) counts with the time it waited, so a
/// replica that never answers does not look fast.
type Load = PeakEwma<OnReplica>;

/// One shard search: the replicas in order of preference, the call, and which leg this is
/// (0: the first request, 1: the hedge).
#[derive(Clone)]
pub struct Read<'a> {
    order: Arc<Vec<ShardTarget>>,
    leg: usize,
    call: &'a SearchCall<'a>,
}

/// The service both legs go through: calls the leg's replica through its [`Load`].
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
            let node = to.node;
            let started = Instant::now();
            // Only first legs count towards a replica's load: a hedge is cancelled because
            // the other replica answered, not because its own was slow, so the short time it
            // ran says nothing and must not make its replica look fast.
            let out = if read.leg == 0 {
                let pending = replicas.load(node).lock().call((to, read.call));
                pending.await
            } else {
                (read.call)(to).await
            };
            replicas.metrics.observe_replica(node, started.elapsed());
            out.map(|batches| (read.leg, batches))
        })
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

/// A shard: namespace and shard number.
type ShardKey = (String, u32);

/// Replica load figures and one hedging service per shard (each with the latency histogram
/// of the shard's first legs, whichever replica took them: a replica that load-aware
/// ordering avoids still gets a delay from its shard's recent searches).
pub struct Replicas {
    config: HedgeConfig,
    metrics: Arc<Metrics>,
    budget: Arc<TpsBudget>,
    loads: Mutex<HashMap<NodeId, Arc<Mutex<Load>>>>,
    /// When each replica last lost a hedge race (its first leg was beaten by the hedge).
    lost_races: Mutex<HashMap<NodeId, tokio::time::Instant>>,
    hedges: Mutex<HashMap<ShardKey, Arc<tokio::sync::Mutex<Hedged>>>>,
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
            lost_races: Mutex::new(HashMap::new()),
            hedges: Mutex::new(HashMap::new()),
        })
    }

    fn load(&self, node: NodeId) -> Arc<Mutex<Load>> {
        self.loads
            .lock()
            .entry(node)
            .or_insert_with(|| {
                Arc::new(Mutex::new(PeakEwma::new(
                    OnReplica,
                    DEFAULT_RTT,
                    LOAD_DECAY.as_nanos() as f64,
                    CompleteOnResponse::default(),
                )))
            })
            .clone()
    }

    /// `nodes` best first: those that lost no hedge race in the last [`LOST_RACE_COOLDOWN`]
    /// before those that did, each by lowest load; ties keep the given order (the caller
    /// rotates it).
    pub fn best_first(&self, nodes: &mut [NodeId]) {
        let now = tokio::time::Instant::now();
        let lost = self.lost_races.lock();
        let keys: HashMap<NodeId, (bool, Cost)> = nodes
            .iter()
            .map(|n| {
                let cooling = lost
                    .get(n)
                    .is_some_and(|at| now.saturating_duration_since(*at) < LOST_RACE_COOLDOWN);
                (*n, (cooling, self.load(*n).lock().load()))
            })
            .collect();
        drop(lost);
        nodes.sort_by(|a, b| {
            keys[a]
                .partial_cmp(&keys[b])
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    }

    /// Forget the hedging state of a deleted namespace's shards.
    pub fn forget_namespace(&self, namespace: &str) {
        self.hedges.lock().retain(|(ns, _), _| ns != namespace);
    }

    fn hedge_for(
        self: &Arc<Self>,
        first: &ShardTarget,
        percentile: f32,
    ) -> Arc<tokio::sync::Mutex<Hedged>> {
        self.hedges
            .lock()
            .entry((first.namespace.clone(), first.shard))
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
        let first = read.order.first().cloned();
        let (Some(percentile), Some(first)) = (self.config.percentile, first) else {
            let mut legs = Legs {
                replicas: self.clone(),
            };
            return legs.call(read).await.map(|(_, b)| b);
        };
        self.budget.deposit();
        let hedge = self.hedge_for(&first, percentile);
        let answer = {
            let mut h = hedge.lock().await;
            let ready = h.ready().await.map_err(from_box)?;
            ready.call(read)
        };
        let (leg, batches) = answer.await.map_err(from_box)?;
        if leg == 1 {
            self.metrics.search_hedges_won.inc();
            self.lost_races
                .lock()
                .insert(first.node, tokio::time::Instant::now());
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

#[cfg(test)]
mod tests {
    //! Hedging on tokio's paused clock: replica `1` answers in 1 ms or hangs for a second,
    //! replica `2` always answers in 1 ms.

    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    fn target(node: NodeId) -> ShardTarget {
        ShardTarget {
            namespace: "ns".into(),
            shard: 0,
            node,
            addr: format!("node-{node}"),
        }
    }

    /// Runs `n` searches ordered replica 1 then 2; returns how many replica 2 answered.
    async fn run(replicas: &Arc<Replicas>, slow: &AtomicBool, n: usize) -> u64 {
        run_ordered(replicas, slow, n, [1, 2]).await
    }

    /// Runs `n` searches in `order`; returns how many replica 2 answered.
    async fn run_ordered(
        replicas: &Arc<Replicas>,
        slow: &AtomicBool,
        n: usize,
        order: [NodeId; 2],
    ) -> u64 {
        let answered_by_two = AtomicU64::new(0);
        let by_two = &answered_by_two;
        let call = |to: ShardTarget| -> Pin<Box<dyn Future<Output = Result<Vec<RecordBatch>>> + Send + '_>> {
            Box::pin(async move {
                let hang = to.node == 1 && slow.load(Ordering::Relaxed);
                let took = if hang { 1000 } else { 1 };
                tokio::time::sleep(Duration::from_millis(took)).await;
                if to.node == 2 {
                    by_two.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Vec::new())
            })
        };
        for _ in 0..n {
            replicas
                .search(order.iter().map(|n| target(*n)).collect(), &call)
                .await
                .expect("search");
        }
        answered_by_two.load(Ordering::Relaxed)
    }

    /// Enough fast searches on replica 1 for its latency histogram to fill and rotate.
    async fn warm_up(replicas: &Arc<Replicas>, slow: &AtomicBool) {
        run(replicas, slow, 2000).await;
        tokio::time::sleep(HISTOGRAM_PERIOD).await;
        run(replicas, slow, 100).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_replica_is_hedged_and_the_hedge_answers() {
        let metrics = Arc::new(Metrics::default());
        let replicas = Replicas::new(HedgeConfig::default(), metrics.clone());
        let slow = AtomicBool::new(false);
        warm_up(&replicas, &slow).await;
        let (sent, won) = (
            metrics.search_hedges_sent.get(),
            metrics.search_hedges_won.get(),
        );
        slow.store(true, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        assert_eq!(
            run(&replicas, &slow, 10).await,
            10,
            "replica 2 answered every search"
        );
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "ten hedged searches took {:?}, not ten hangs of a second",
            started.elapsed()
        );
        assert_eq!(metrics.search_hedges_sent.get() - sent, 10);
        assert_eq!(metrics.search_hedges_won.get() - won, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_searches_avoided_is_hedged_from_its_shards_recent_latency() {
        let metrics = Arc::new(Metrics::default());
        let replicas = Replicas::new(HedgeConfig::default(), metrics.clone());
        let slow = AtomicBool::new(true);
        // Every warm-up search goes to replica 2 first: replica 1 has no samples of its own.
        run_ordered(&replicas, &slow, 2000, [2, 1]).await;
        tokio::time::sleep(HISTOGRAM_PERIOD).await;
        run_ordered(&replicas, &slow, 100, [2, 1]).await;
        let started = tokio::time::Instant::now();
        assert_eq!(run(&replicas, &slow, 5).await, 5, "replica 2 answered");
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn hedges_stay_within_the_budget_when_a_replica_keeps_hanging() {
        let metrics = Arc::new(Metrics::default());
        let replicas = Replicas::new(HedgeConfig::default(), metrics.clone());
        let slow = AtomicBool::new(false);
        warm_up(&replicas, &slow).await;
        slow.store(true, Ordering::Relaxed);
        run(&replicas, &slow, 1000).await;
        let searches = 2000 + 100 + 1000;
        let sent = metrics.search_hedges_sent.get();
        assert!(
            sent <= searches / 10,
            "{sent} hedges for {searches} searches (budget 10 %)"
        );
        // At least the budget of the last 10 s of searches (the warm-up's older deposits
        // expired) was used.
        assert!(sent >= 10, "the budget was used ({sent} hedges)");
    }

    #[tokio::test(start_paused = true)]
    async fn with_hedging_off_a_late_replica_is_waited_for() {
        let metrics = Arc::new(Metrics::default());
        let config = HedgeConfig {
            percentile: None,
            ..HedgeConfig::default()
        };
        let replicas = Replicas::new(config, metrics.clone());
        let slow = AtomicBool::new(false);
        warm_up(&replicas, &slow).await;
        slow.store(true, Ordering::Relaxed);
        assert_eq!(run(&replicas, &slow, 3).await, 0, "replica 1 answered");
        assert_eq!(metrics.search_hedges_sent.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_that_was_slow_is_tried_again_once_its_estimate_decays() {
        let replicas = Replicas::new(HedgeConfig::default(), Arc::new(Metrics::default()));
        let slow = AtomicBool::new(true);
        run(&replicas, &slow, 1).await;
        let mut nodes = vec![1, 2];
        replicas.best_first(&mut nodes);
        assert_eq!(nodes, [2, 1], "right after a late answer replica 1 is last");
        // Replica 2 keeps its 1 ms; replica 1 gets no searches and its estimate decays.
        slow.store(false, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        while nodes[0] == 2 && started.elapsed() < Duration::from_secs(120) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            run_on(&replicas, 2, 1).await;
            replicas.best_first(&mut nodes);
        }
        assert_eq!(
            nodes[0],
            1,
            "replica 1 tried again after {:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_that_lost_a_hedge_race_goes_last_for_the_cooldown() {
        let metrics = Arc::new(Metrics::default());
        let replicas = Replicas::new(HedgeConfig::default(), metrics.clone());
        let slow = AtomicBool::new(false);
        warm_up(&replicas, &slow).await;
        slow.store(true, Ordering::Relaxed);
        assert_eq!(
            run(&replicas, &slow, 1).await,
            1,
            "the hedge to replica 2 won"
        );
        assert_eq!(metrics.search_hedges_won.get(), 1);
        // Replica 2 answers once in 20 ms: by load alone replica 1 (charged the few ms its
        // lost leg waited) would now come first.
        run_on(&replicas, 2, 20).await;
        let mut nodes = vec![1, 2];
        replicas.best_first(&mut nodes);
        assert_eq!(nodes, [2, 1], "within the cooldown the loser goes last");
        tokio::time::sleep(LOST_RACE_COOLDOWN).await;
        replicas.best_first(&mut nodes);
        assert_eq!(nodes, [1, 2], "after the cooldown load alone orders them");
    }

    /// One search on `node` alone, answered in `ms` milliseconds.
    async fn run_on(replicas: &Arc<Replicas>, node: NodeId, ms: u64) {
        let call = |_: ShardTarget| -> Pin<Box<dyn Future<Output = Result<Vec<RecordBatch>>> + Send + '_>> {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(Vec::new())
            })
        };
        replicas
            .search(vec![target(node)], &call)
            .await
            .expect("search");
    }
}
