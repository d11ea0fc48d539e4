//! The HNSW graph of one segment (Malkov & Yashunin): layered neighbour lists in flat arrays
//! of atomics, heuristic neighbour selection (algorithm 4), concurrent insertion.
//!
//! Concurrency model: neighbour lists are arrays of `AtomicU32` (`[count, n0, n1, ...]`).
//! Writers serialise per node through striped mutexes and store with release ordering;
//! readers (searches, other inserters) load without locks. A reader may see a list in the
//! middle of an update, which is harmless: every value ever stored is the offset of a node
//! whose vector was published before it was linked, so any offset read is valid.
//!
//! This module knows nothing of ids, payload or deletes: it maps dense offsets to neighbours.
//! Callers decide which offsets are acceptable as results through a predicate. Exact
//! duplicates are chained to one graph node instead of linked (`duplicates`); nodes that
//! pruning cut off are linked back by `repair`.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::arena::VectorArena;
use super::region::AtomicRegion;
use super::visited::{VisitedPool, VisitedSet};
use crate::distance::Distance;

mod duplicates;
mod file;
mod repair;

/// Highest layer a node may get (probability m^-16 makes more pointless).
const MAX_LEVEL: usize = 16;
/// Number of striped locks guarding neighbour-list writes.
const LOCK_STRIPES: usize = 4096;
/// Rows whose distances are computed in one batched kernel call.
const DIST_BATCH: usize = crate::distance::BATCH;
/// `entry` value meaning "graph is empty".
const NO_ENTRY: u64 = u64::MAX;

/// A candidate: a node and its distance to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Distance to the query (smaller is nearer).
    pub dist: f32,
    /// Node offset.
    pub node: u32,
}

impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.dist
            .total_cmp(&other.dist)
            .then(self.node.cmp(&other.node))
    }
}

/// Min-heap wrapper.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Nearest(std::cmp::Reverse<Candidate>);

/// The layered neighbour lists of a segment.
pub(crate) struct Graph {
    m: usize,
    m0: usize,
    ef_construction: usize,
    level_mult: f64,
    seed: u64,
    capacity: usize,
    /// Layer 0: `capacity * (1 + m0)` atomics.
    level0: AtomicRegion<AtomicU32>,
    /// Per node: address of its boxed upper-layer lists (`level * (1 + m)` atomics), or 0.
    upper: AtomicRegion<AtomicUsize>,
    locks: Box<[Mutex<()>]>,
    /// Packed `(level << 32) | node`, or [`NO_ENTRY`].
    entry: AtomicU64,
    entry_lock: Mutex<()>,
    visited: VisitedPool,
    upper_bytes: AtomicUsize,
    /// One past the highest node with upper-layer lists: dropping the graph looks no
    /// further, so it never touches (and faults in) the untouched rest of the reservation.
    upper_high: AtomicUsize,
    /// Per node: the next row of its exact-duplicate chain plus one, 0 at the end (see
    /// `duplicates`). For a node in the graph this is its chain's first row.
    dup_next: AtomicRegion<AtomicU32>,
    /// Set once any chain exists; until then searches skip every chain lookup.
    has_dups: AtomicBool,
}

impl Graph {
    /// An empty graph for up to `capacity` nodes.
    pub(crate) fn new(
        capacity: usize,
        m: usize,
        ef_construction: usize,
        seed: u64,
    ) -> std::io::Result<Self> {
        let m = m.max(2);
        let m0 = 2 * m;
        Ok(Graph {
            m,
            m0,
            ef_construction,
            level_mult: 1.0 / (m as f64).ln(),
            seed,
            capacity,
            level0: AtomicRegion::zeroed(capacity * (1 + m0))?,
            upper: AtomicRegion::zeroed(capacity)?,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            entry: AtomicU64::new(NO_ENTRY),
            entry_lock: Mutex::new(()),
            visited: VisitedPool::new(),
            upper_bytes: AtomicUsize::new(0),
            upper_high: AtomicUsize::new(0),
            dup_next: AtomicRegion::zeroed(capacity)?,
            has_dups: AtomicBool::new(false),
        })
    }

    /// Move the layer-0 neighbour lists to huge pages (the segment calls this once its
    /// vectors have; see `region`).
    pub(crate) fn use_huge_pages(&self) {
        self.level0.use_huge_pages();
    }

    /// Bytes used by the neighbour lists and duplicate-chain slots of the first `nodes` nodes.
    pub(crate) fn used_bytes(&self, nodes: usize) -> usize {
        nodes * (2 + self.m0) * 4 + self.upper_bytes.load(Ordering::Relaxed)
    }

    /// The layer of `node`: deterministic in (seed, node), geometric with ratio 1/m.
    fn level_of(&self, node: u32) -> usize {
        let mut z = self.seed ^ (node as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let u = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64; // in (0, 1]
        ((-u.ln() * self.level_mult) as usize).min(MAX_LEVEL)
    }

    fn max_at(&self, level: usize) -> usize {
        if level == 0 {
            self.m0
        } else {
            self.m
        }
    }

    /// The list `[count, neighbours...]` of `node` at `level` (empty if the node has no such
    /// layer, which a correct caller never asks for).
    #[inline(always)]
    fn list(&self, node: u32, level: usize) -> &[AtomicU32] {
        if level == 0 {
            let w = 1 + self.m0;
            let start = node as usize * w;
            &self.level0.as_slice()[start..start + w]
        } else {
            let addr = self.upper.as_slice()[node as usize].load(Ordering::Acquire);
            let levels = self.level_of(node);
            if addr == 0 || level > levels {
                return &[];
            }
            let w = 1 + self.m;
            // SAFETY: `addr` came from `Box::into_raw` of a `[AtomicU32]` of exactly
            // `levels * w` elements (see `alloc_upper`), published with release ordering and
            // freed only in `Drop`, which has exclusive access.
            let all = unsafe { std::slice::from_raw_parts(addr as *const AtomicU32, levels * w) };
            &all[(level - 1) * w..level * w]
        }
    }

    /// Visit the current neighbours of `node` at `level`.
    #[inline(always)]
    fn neighbours(&self, node: u32, level: usize, buf: &mut Vec<u32>) {
        buf.clear();
        let list = self.list(node, level);
        if list.is_empty() {
            return;
        }
        let count = (list[0].load(Ordering::Acquire) as usize).min(list.len() - 1);
        buf.extend(list[1..=count].iter().map(|a| a.load(Ordering::Relaxed)));
    }

    fn set_list(&self, list: &[AtomicU32], nodes: &[Candidate]) {
        let n = nodes.len().min(list.len().saturating_sub(1));
        for (slot, c) in list[1..].iter().zip(&nodes[..n]) {
            slot.store(c.node, Ordering::Relaxed);
        }
        if let Some(count) = list.first() {
            count.store(n as u32, Ordering::Release);
        }
    }

    fn lock(&self, node: u32) -> parking_lot::MutexGuard<'_, ()> {
        self.locks[node as usize % LOCK_STRIPES].lock()
    }

    fn alloc_upper(&self, node: u32, levels: usize) {
        let slot = &self.upper.as_slice()[node as usize];
        if levels == 0 || slot.load(Ordering::Acquire) != 0 {
            return;
        }
        let lists: Box<[AtomicU32]> = (0..levels * (1 + self.m))
            .map(|_| AtomicU32::new(0))
            .collect();
        self.upper_bytes
            .fetch_add(lists.len() * 4, Ordering::Relaxed);
        self.upper_high
            .fetch_max(node as usize + 1, Ordering::Relaxed);
        slot.store(
            Box::into_raw(lists) as *mut AtomicU32 as usize,
            Ordering::Release,
        );
    }

    fn entry(&self) -> Option<(u32, usize)> {
        match self.entry.load(Ordering::Acquire) {
            NO_ENTRY => None,
            packed => Some(((packed & 0xFFFF_FFFF) as u32, (packed >> 32) as usize)),
        }
    }

    /// Greedy walk from `cur` down to layer `stop + 1`, one best neighbour per step.
    fn descend(
        &self,
        arena: &VectorArena,
        dist: Distance,
        q: &[f32],
        mut cur: Candidate,
        from: usize,
        stop: usize,
    ) -> Candidate {
        let mut buf = Vec::with_capacity(self.m0);
        for level in (stop + 1..=from).rev() {
            loop {
                let mut changed = false;
                self.neighbours(cur.node, level, &mut buf);
                for &n in buf.iter() {
                    let d = dist.eval(q, arena.row(n));
                    if d < cur.dist {
                        cur = Candidate { dist: d, node: n };
                        changed = true;
                    }
                }
                if !changed {
                    break;
                }
            }
        }
        cur
    }

    /// Beam search on one layer. Returns up to `ef` accepted candidates, nearest first.
    /// Rejected nodes are still traversed (they carry the walk) but never returned; with
    /// `skipped`, those that have duplicate chains are collected there (their copies may be
    /// accepted).
    #[allow(clippy::too_many_arguments)]
    fn search_layer(
        &self,
        arena: &VectorArena,
        dist: Distance,
        q: &[f32],
        entries: &[Candidate],
        ef: usize,
        level: usize,
        visited: &mut VisitedSet,
        accept: &dyn Fn(u32) -> bool,
        mut skipped: Option<&mut Vec<Candidate>>,
    ) -> Vec<Candidate> {
        let mut frontier: BinaryHeap<Nearest> = BinaryHeap::with_capacity(ef * 2);
        let mut top: BinaryHeap<Candidate> = BinaryHeap::with_capacity(ef + 1);
        for &e in entries {
            if visited.insert(e.node) {
                frontier.push(Nearest(std::cmp::Reverse(e)));
                self.offer(e, accept, &mut top, &mut skipped);
            }
        }
        while top.len() > ef {
            top.pop();
        }
        let mut bound = top.peek().map_or(f32::INFINITY, |c| c.dist);
        let mut fresh: Vec<u32> = Vec::with_capacity(self.m0);
        let mut buf: Vec<u32> = Vec::with_capacity(self.m0);
        while let Some(Nearest(std::cmp::Reverse(c))) = frontier.pop() {
            if c.dist > bound && top.len() >= ef {
                break;
            }
            self.neighbours(c.node, level, &mut buf);
            fresh.clear();
            for &n in &buf {
                if visited.insert(n) {
                    #[cfg(target_arch = "x86_64")]
                    crate::distance::prefetch(arena.row(n));
                    fresh.push(n);
                }
            }
            for_each_distance(arena, dist, q, &fresh, |n, d| {
                if top.len() < ef || d < bound {
                    // A new nearest frontier node is the next one expanded: start loading its
                    // neighbour list now, while the remaining distances are computed.
                    #[cfg(target_arch = "x86_64")]
                    if frontier.peek().is_none_or(|f| d < f.0 .0.dist) {
                        crate::distance::prefetch_all(self.list(n, level));
                    }
                    frontier.push(Nearest(std::cmp::Reverse(Candidate { dist: d, node: n })));
                    let c = Candidate { dist: d, node: n };
                    if self.offer(c, accept, &mut top, &mut skipped) && top.len() > ef {
                        top.pop();
                    }
                    if let Some(worst) = top.peek() {
                        bound = worst.dist;
                    }
                }
            });
        }
        top.into_sorted_vec()
    }

    /// Offer a reached node to a beam search's results: an accepted node goes to `top`
    /// (returns true); a rejected one with a duplicate chain goes to `skipped`, when collected,
    /// since its copies may be accepted.
    #[inline(always)]
    fn offer(
        &self,
        c: Candidate,
        accept: &dyn Fn(u32) -> bool,
        top: &mut BinaryHeap<Candidate>,
        skipped: &mut Option<&mut Vec<Candidate>>,
    ) -> bool {
        if accept(c.node) {
            top.push(c);
            return true;
        }
        if let Some(skipped) = skipped.as_deref_mut() {
            if self.has_copies(c.node) {
                skipped.push(c);
            }
        }
        false
    }

    /// Heuristic neighbour selection (algorithm 4): keep a candidate only if it is nearer to
    /// the base than to every neighbour kept so far. `sorted` is nearest first.
    fn select(
        &self,
        arena: &VectorArena,
        dist: Distance,
        sorted: &[Candidate],
        max: usize,
    ) -> Vec<Candidate> {
        let mut kept: Vec<Candidate> = Vec::with_capacity(max);
        for &c in sorted {
            if kept.len() >= max {
                break;
            }
            let row = arena.row(c.node);
            if kept
                .iter()
                .all(|k| dist.eval(row, arena.row(k.node)) >= c.dist)
            {
                kept.push(c);
            }
        }
        kept
    }

    /// Add `new` to `node`'s list at `level`, pruning with the heuristic when full.
    fn connect(
        &self,
        arena: &VectorArena,
        dist: Distance,
        node: u32,
        new: Candidate,
        level: usize,
    ) {
        let max = self.max_at(level);
        let _guard = self.lock(node);
        let list = self.list(node, level);
        if list.is_empty() {
            return;
        }
        let count = (list[0].load(Ordering::Acquire) as usize).min(max);
        if list[1..=count]
            .iter()
            .any(|a| a.load(Ordering::Relaxed) == new.node)
        {
            return;
        }
        if count < max {
            list[1 + count].store(new.node, Ordering::Relaxed);
            list[0].store(count as u32 + 1, Ordering::Release);
            return;
        }
        let current: Vec<u32> = list[1..=count]
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        let mut cands: Vec<Candidate> = Vec::with_capacity(count + 1);
        for_each_distance(arena, dist, arena.row(node), &current, |n, d| {
            cands.push(Candidate { dist: d, node: n })
        });
        cands.push(new);
        cands.sort_unstable();
        let kept = self.select(arena, dist, &cands, max);
        self.set_list(list, &kept);
    }

    /// Link `node` (whose vector is already published in `arena`) into the graph.
    /// Safe to call concurrently for different nodes.
    pub(crate) fn insert(&self, arena: &VectorArena, dist: Distance, node: u32) {
        let level = self.level_of(node);
        self.level0.grew_to((node as usize + 1) * (1 + self.m0));
        let q = arena.row(node);
        let entry = match self.entry() {
            Some(e) => e,
            None => {
                let _g = self.entry_lock.lock();
                match self.entry() {
                    Some(e) => e,
                    None => {
                        self.alloc_upper(node, level);
                        self.entry
                            .store(((level as u64) << 32) | node as u64, Ordering::Release);
                        return;
                    }
                }
            }
        };
        let (ep, top_level) = entry;
        let start = Candidate {
            dist: dist.eval(q, arena.row(ep)),
            node: ep,
        };
        let cur = self.descend(arena, dist, q, start, top_level, level);
        let mut entries = vec![cur];
        let mut visited = self.visited.get();
        let not_self = |n: u32| n != node;
        let first = level.min(top_level);
        for lc in (0..=first).rev() {
            visited.clear();
            let found = self.search_layer(
                arena,
                dist,
                q,
                &entries,
                self.ef_construction,
                lc,
                &mut visited,
                &not_self,
                None,
            );
            if lc == first {
                // An exact duplicate joins its original's chain instead of the graph.
                if let Some(original) = self.duplicate_of(arena, q, &found) {
                    self.chain(original, node);
                    return;
                }
                self.alloc_upper(node, level);
            }
            let chosen = self.select(arena, dist, &found, self.max_at(lc));
            {
                let _g = self.lock(node);
                self.set_list(self.list(node, lc), &chosen);
            }
            for c in &chosen {
                self.connect(arena, dist, c.node, Candidate { dist: c.dist, node }, lc);
            }
            if !found.is_empty() {
                entries = found;
            }
        }
        if level > top_level {
            let _g = self.entry_lock.lock();
            if self.entry().is_none_or(|(_, l)| level > l) {
                self.entry
                    .store(((level as u64) << 32) | node as u64, Ordering::Release);
            }
        }
    }

    /// The `k` nearest accepted rows to `q` with a beam of `ef`, nearest first: graph nodes
    /// and their exact duplicates (see `duplicates`).
    pub(crate) fn search(
        &self,
        arena: &VectorArena,
        dist: Distance,
        q: &[f32],
        k: usize,
        ef: usize,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<Candidate> {
        self.search_with(arena, dist, q, k, ef, accept, true)
    }

    /// The search behind [`Graph::search`]; without `copies` it returns graph nodes only
    /// (never a chained duplicate): what a new link may point at.
    #[allow(clippy::too_many_arguments)]
    fn search_with(
        &self,
        arena: &VectorArena,
        dist: Distance,
        q: &[f32],
        k: usize,
        ef: usize,
        accept: &dyn Fn(u32) -> bool,
        copies: bool,
    ) -> Vec<Candidate> {
        let Some((ep, top_level)) = self.entry() else {
            return Vec::new();
        };
        let start = Candidate {
            dist: dist.eval(q, arena.row(ep)),
            node: ep,
        };
        let cur = self.descend(arena, dist, q, start, top_level, 0);
        let mut visited = self.visited.get();
        let copies = copies && self.has_dups.load(Ordering::Acquire);
        let mut skipped = Vec::new();
        let mut found = self.search_layer(
            arena,
            dist,
            q,
            &[cur],
            ef.max(k),
            0,
            &mut visited,
            accept,
            copies.then_some(&mut skipped),
        );
        if copies {
            return self.with_copies(found, skipped, k, accept);
        }
        found.truncate(k);
        found
    }
}

/// Distances from `q` to `nodes`, handed to `each` in order. Computed [`DIST_BATCH`] rows per
/// kernel call (one query load, every row's cache misses in flight); bit-identical to one
/// [`Distance::eval`] per node, so batching never changes a result.
#[inline(always)]
fn for_each_distance(
    arena: &VectorArena,
    dist: Distance,
    q: &[f32],
    nodes: &[u32],
    mut each: impl FnMut(u32, f32),
) {
    for batch in nodes.chunks(DIST_BATCH) {
        let mut dists = [0.0f32; DIST_BATCH];
        if let Ok(full) = <[u32; DIST_BATCH]>::try_from(batch) {
            dists = dist.eval_batch(q, full.map(|n| arena.row(n)));
        } else {
            for (slot, &n) in dists.iter_mut().zip(batch) {
                *slot = dist.eval(q, arena.row(n));
            }
        }
        for (&n, &d) in batch.iter().zip(&dists) {
            each(n, d);
        }
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        let high = self.upper_high.load(Ordering::Relaxed);
        for (node, slot) in self.upper.as_slice()[..high].iter().enumerate() {
            let addr = slot.load(Ordering::Acquire);
            if addr != 0 {
                let len = self.level_of(node as u32) * (1 + self.m);
                // SAFETY: `addr` is the pointer `alloc_upper` leaked for this node with exactly
                // this length; `&mut self` means no reader remains.
                unsafe {
                    drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                        addr as *mut AtomicU32,
                        len,
                    )));
                }
            }
        }
    }
}
