//! The mixed workload: writer tasks (inserts, upserts, deletes) and searcher tasks, each paced
//! to its share of the set rates, for a set duration. Latencies go into HDR histograms (whole
//! run and current sampling window); every write's outcome goes into the [`Oracle`]; some
//! searches are checked against an exact search over the acknowledged rows.
//!
//! Writers own disjoint id sets (`id % writers`), so no two writes to one id are ever in
//! flight together and the oracle's "last value" is well defined. A writer waits for each
//! acknowledgement before its next write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::MissedTickBehavior;

use crate::client::{rows, Client};
use crate::oracle::{exact_top_k, vector, Oracle, SplitMix};

/// The operations the workload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// k-NN search.
    Search,
    /// Write a fresh id.
    Insert,
    /// Write a new version of a live id.
    Upsert,
    /// Delete a live id.
    Delete,
}

impl Op {
    /// Every operation, in report order.
    pub const ALL: [Op; 4] = [Op::Search, Op::Insert, Op::Upsert, Op::Delete];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Search => "search",
            Op::Insert => "insert",
            Op::Upsert => "upsert",
            Op::Delete => "delete",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Namespace under test.
    pub namespace: String,
    /// Vector dimension.
    pub dim: usize,
    /// Clusters of the synthetic data.
    pub clusters: u64,
    /// Neighbours per search.
    pub k: usize,
    /// How long the mixed workload runs.
    pub duration: Duration,
    /// Searches per second (all searchers together).
    pub search_rate: f64,
    /// Inserts per second.
    pub insert_rate: f64,
    /// Upserts per second.
    pub upsert_rate: f64,
    /// Deletes per second.
    pub delete_rate: f64,
    /// Concurrent writer tasks.
    pub writers: usize,
    /// Concurrent searcher tasks.
    pub searchers: usize,
    /// Every n-th search is checked against an exact search.
    pub recall_every: u64,
}

/// Counters and histograms shared by the tasks.
pub struct Stats {
    /// Latency (µs) per operation over the whole run.
    pub total: Vec<Histogram<u64>>,
    /// Latency (µs) per operation since the sampler last took it.
    pub window: Vec<Histogram<u64>>,
    /// Failed calls per operation.
    pub errors: [u64; 4],
    /// The first few failure messages.
    pub error_samples: Vec<String>,
    /// Recall@k of the checked searches.
    pub recall: Vec<f64>,
    /// Search results holding an id whose delete was acknowledged before the search was sent.
    pub deleted_returned: u64,
    /// Acknowledgements that disagreed with the request (rows written or deleted ≠ asked).
    pub ack_mismatches: u64,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits; `new_with_bounds` only fails on bad bounds.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

impl Stats {
    /// Empty statistics.
    pub fn new() -> Stats {
        Stats {
            total: (0..4).map(|_| histogram()).collect(),
            window: (0..4).map(|_| histogram()).collect(),
            errors: [0; 4],
            error_samples: Vec::new(),
            recall: Vec::new(),
            deleted_returned: 0,
            ack_mismatches: 0,
        }
    }

    fn record(&mut self, op: Op, took: Duration) {
        let us = (took.as_micros() as u64).clamp(1, 600_000_000);
        let _ = self.total[op.index()].record(us);
        let _ = self.window[op.index()].record(us);
    }

    fn failed(&mut self, op: Op, e: &anyhow::Error) {
        self.errors[op.index()] += 1;
        if self.error_samples.len() < 20 {
            self.error_samples.push(format!("{}: {e:#}", op.name()));
        }
    }

    /// Take the window histograms, leaving empty ones.
    pub fn take_window(&mut self) -> Vec<Histogram<u64>> {
        std::mem::replace(&mut self.window, (0..4).map(|_| histogram()).collect())
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

/// Shared state of a run.
#[derive(Clone)]
pub struct Run {
    /// What to run.
    pub settings: Arc<Settings>,
    /// The acknowledged state.
    pub oracle: Arc<Mutex<Oracle>>,
    /// Latencies and counters.
    pub stats: Arc<Mutex<Stats>>,
    /// Set to end the workload before its deadline (each task finishes its current call, so
    /// the oracle stays exact).
    pub stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Run {
    /// A run of `settings` with an empty oracle.
    pub fn new(settings: Arc<Settings>) -> Run {
        Run {
            settings,
            oracle: Arc::default(),
            stats: Arc::new(Mutex::new(Stats::new())),
            stop: Arc::default(),
        }
    }

    fn going(&self, deadline: Instant) -> bool {
        Instant::now() < deadline && !self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Load ids `0..n` (version 0) in batches, recording them in the oracle.
pub async fn load(run: &Run, client: &mut Client, n: u64) -> Result<()> {
    let s = &run.settings;
    let batch = 1_000;
    for lo in (0..n).step_by(batch) {
        let ids: Vec<u64> = (lo..(lo + batch as u64).min(n)).collect();
        let data: Vec<f32> = ids
            .iter()
            .flat_map(|&id| vector(id, 0, s.dim, s.clusters))
            .collect();
        let acked = client.put(&s.namespace, rows(&ids, &data, s.dim)?).await?;
        anyhow::ensure!(
            acked == ids.len() as u64,
            "initial load: {acked} of {} rows acknowledged",
            ids.len()
        );
        let mut o = run.oracle.lock();
        for id in ids {
            o.wrote(id, 0);
        }
    }
    Ok(())
}

/// First id handed out by inserts (above any initial load).
const FRESH_IDS: u64 = 1 << 40;

fn ticker(rate: f64) -> tokio::time::Interval {
    let period = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

/// Writer `w` of `run.settings.writers`: owns the live ids `≡ w` mod writers.
pub async fn writer(run: Run, mut client: Client, w: usize, deadline: Instant) {
    let s = run.settings.clone();
    let writers = s.writers.max(1) as u64;
    let mut own: Vec<u64> = {
        let o = run.oracle.lock();
        let mut ids: Vec<u64> = o
            .live
            .keys()
            .copied()
            .filter(|id| id % writers == w as u64)
            .collect();
        ids.sort_unstable();
        ids
    };
    let mut rng = SplitMix(0x5EED ^ w as u64);
    let mut fresh = 0u64;
    let total = s.insert_rate + s.upsert_rate + s.delete_rate;
    if total <= 0.0 {
        return;
    }
    let mut tick = ticker(total / writers as f64);
    while run.going(deadline) {
        tick.tick().await;
        let r = rng.unit() as f64 * total;
        let op = if own.is_empty() || r < s.insert_rate {
            Op::Insert
        } else if r < s.insert_rate + s.upsert_rate {
            Op::Upsert
        } else {
            Op::Delete
        };
        match op {
            Op::Insert => {
                let id = FRESH_IDS + fresh * writers + w as u64;
                fresh += 1;
                if change(&run, &mut client, op, id, None, Some(0)).await {
                    own.push(id);
                }
            }
            Op::Upsert => {
                let i = rng.below(own.len());
                let id = own[i];
                let old = run.oracle.lock().live.get(&id).copied();
                let Some(old) = old else { continue };
                if !change(&run, &mut client, op, id, Some(old), Some(old + 1)).await {
                    own.swap_remove(i);
                }
            }
            Op::Delete => {
                let id = own.swap_remove(rng.below(own.len()));
                let old = run.oracle.lock().live.get(&id).copied();
                change(&run, &mut client, op, id, old, None).await;
            }
            Op::Search => {}
        }
    }
}

/// Write `id` at version `new` (delete it if `None`), whose acknowledged version was `old`;
/// true if acknowledged.
async fn change(
    run: &Run,
    client: &mut Client,
    op: Op,
    id: u64,
    old: Option<u32>,
    new: Option<u32>,
) -> bool {
    let s = &run.settings;
    let started = Instant::now();
    let result = match new {
        Some(version) => {
            let data = vector(id, version, s.dim, s.clusters);
            match rows(&[id], &data, s.dim) {
                Ok(batch) => client.put(&s.namespace, batch).await,
                Err(e) => Err(e),
            }
        }
        None => client.delete(&s.namespace, &[id]).await,
    };
    let mut st = run.stats.lock();
    st.record(op, started.elapsed());
    let mut oracle = run.oracle.lock();
    match result {
        Ok(n) => {
            if n != 1 {
                st.ack_mismatches += 1;
            }
            match new {
                Some(version) => oracle.wrote(id, version),
                None => oracle.deleted(id),
            }
            true
        }
        Err(e) => {
            st.failed(op, &e);
            oracle.unknown(id, old, new);
            false
        }
    }
}

/// Searcher `n` of `run.settings.searchers`.
pub async fn searcher(run: Run, mut client: Client, n: usize, deadline: Instant) {
    let s = run.settings.clone();
    if s.search_rate <= 0.0 {
        return;
    }
    let mut tick = ticker(s.search_rate / s.searchers.max(1) as f64);
    let mut rng = SplitMix(0xFEED ^ n as u64);
    let mut sent = 0u64;
    while run.going(deadline) {
        tick.tick().await;
        sent += 1;
        // A point from the data's distribution that is not itself a row.
        let q = vector(rng.next_u64() | (1 << 63), 0, s.dim, s.clusters);
        let check = s.recall_every > 0 && sent.is_multiple_of(s.recall_every);
        let (seq, live) = {
            let o = run.oracle.lock();
            let live: Option<Vec<(u64, u32)>> =
                check.then(|| o.live.iter().map(|(&id, &v)| (id, v)).collect());
            (o.seq, live)
        };
        let started = Instant::now();
        let result = client.search(&s.namespace, &q, s.k).await;
        let took = started.elapsed();
        let ids = match result {
            Ok(ids) => ids,
            Err(e) => {
                let mut st = run.stats.lock();
                st.record(Op::Search, took);
                st.failed(Op::Search, &e);
                continue;
            }
        };
        let stale = {
            let o = run.oracle.lock();
            ids.iter().filter(|&&id| o.deleted_by(id, seq)).count() as u64
        };
        {
            let mut st = run.stats.lock();
            st.record(Op::Search, took);
            st.deleted_returned += stale;
        }
        if let Some(live) = live {
            let (dim, clusters, k) = (s.dim, s.clusters, s.k);
            let truth = tokio::task::spawn_blocking(move || {
                let rows: Vec<(u64, Vec<f32>)> = live
                    .into_iter()
                    .map(|(id, v)| (id, vector(id, v, dim, clusters)))
                    .collect();
                exact_top_k(&rows, &q, k)
            })
            .await
            .unwrap_or_default();
            if !truth.is_empty() {
                let found = ids.iter().filter(|id| truth.contains(id)).count();
                run.stats
                    .lock()
                    .recall
                    .push(found as f64 / truth.len() as f64);
            }
        }
    }
}
