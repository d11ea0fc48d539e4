//! A segment: up to `capacity` vectors in one arena plus the HNSW graph over them.
//!
//! Rows are appended and published by the replica's single writer; a background indexer
//! links them into the graph afterwards. Rows in `indexed..len` (published but not yet
//! linked) are searched exactly, so a row is findable from the moment it is published.
//!
//! A segment stores vectors and graph only. Ids, payload and tombstones belong to the replica,
//! which tells a search which offsets are acceptable.

mod arena;
mod graph;
mod region;
mod visited;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

pub use graph::Candidate;
use longbow_common::{IndexParams, Metric};

use crate::distance::{kernels, Distance};

/// Vectors and HNSW graph of one segment. Shared (`Arc`) between the replica, searches and the
/// indexer.
pub struct SegmentIndex {
    arena: arena::VectorArena,
    graph: graph::Graph,
    dist: Distance,
    indexed: AtomicUsize,
    repaired: AtomicUsize,
}

impl SegmentIndex {
    /// An empty segment for `capacity` vectors of `dim` floats. `seed` makes layer assignment
    /// deterministic.
    pub fn new(
        dim: usize,
        capacity: usize,
        metric: Metric,
        params: &IndexParams,
        seed: u64,
    ) -> std::io::Result<Self> {
        Ok(SegmentIndex {
            arena: arena::VectorArena::new(dim, capacity)?,
            graph: graph::Graph::new(capacity, params.m, params.ef_construction, seed)?,
            dist: kernels().distance(metric),
            indexed: AtomicUsize::new(0),
            repaired: AtomicUsize::new(0),
        })
    }

    /// Published rows.
    pub fn len(&self) -> usize {
        self.arena.len()
    }

    /// Whether no row is published.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows linked into the graph (a prefix: `0..indexed`).
    pub fn indexed(&self) -> usize {
        self.indexed.load(Ordering::Acquire)
    }

    /// Rows that still fit.
    pub fn free(&self) -> usize {
        self.arena.free()
    }

    /// Maximum rows.
    pub fn capacity(&self) -> usize {
        self.arena.capacity()
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.arena.dim()
    }

    /// The vector at `offset` (normalised for cosine segments).
    pub fn vector(&self, offset: u32) -> &[f32] {
        self.arena.row(offset)
    }

    /// Approximate resident bytes of vectors and graph.
    pub fn memory_bytes(&self) -> usize {
        self.arena.used_bytes() + self.graph.used_bytes(self.len())
    }

    /// Append and publish rows (row-major). Only the replica's writer calls this, and only with
    /// `rows <= free()`. Returns the first offset.
    pub fn append(&self, vectors: &[f32]) -> u32 {
        let start = self.arena.append(vectors);
        if self.arena.on_huge_pages() {
            // The segment is large enough for huge pages to pay: its neighbour lists, whose
            // rows the indexer has mostly not written yet, follow its vectors there.
            self.graph.use_huge_pages();
        }
        start
    }

    /// Link the rows published but unlinked when called, `chunk` rows at a time, in parallel
    /// on the indexing pool. Returns the number of rows linked. Rows published meanwhile
    /// wait for the next call, so a steady stream of writes cannot keep one call going (and
    /// its caller from its other work). Only one thread may index a segment at a time (the
    /// replica's background job). Stops between chunks once `stop` is set (the rest is
    /// linked by a later call, or after the next start).
    pub fn index_pending(&self, chunk: usize, stop: &AtomicBool) -> usize {
        self.index_some(chunk, usize::MAX, stop)
    }

    /// Like [`SegmentIndex::index_pending`], but link at most `max_rows` rows. The work
    /// runs on the indexing pool ([`crate::cpu_pools`]), below searches in priority.
    pub fn index_some(&self, chunk: usize, max_rows: usize, stop: &AtomicBool) -> usize {
        crate::cpu_pools::run_indexing(|| self.link_some(chunk, max_rows, stop))
    }

    fn link_some(&self, chunk: usize, max_rows: usize, stop: &AtomicBool) -> usize {
        use rayon::prelude::*;
        let target = self.len().min(self.indexed().saturating_add(max_rows));
        let mut linked = 0;
        loop {
            if stop.load(Ordering::Relaxed) {
                return linked;
            }
            let start = self.indexed();
            let end = target.min(start.saturating_add(chunk.max(1)));
            if start >= end {
                return linked;
            }
            if start == 0 {
                // The first node becomes the entry point; link it alone so the parallel
                // inserts below all start from a real graph.
                self.graph.insert(&self.arena, self.dist, 0);
                (1..end as u32)
                    .into_par_iter()
                    .for_each(|n| self.graph.insert(&self.arena, self.dist, n));
            } else {
                (start as u32..end as u32)
                    .into_par_iter()
                    .for_each(|n| self.graph.insert(&self.arena, self.dist, n));
            }
            self.indexed.store(end, Ordering::Release);
            linked += end - start;
        }
    }

    /// The `k` nearest acceptable rows to `q`: graph search over linked rows plus an exact scan
    /// of rows not linked yet. Nearest first.
    pub fn search(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<Candidate> {
        let indexed = self.indexed() as u32;
        let len = self.len() as u32;
        let linked_only = |n: u32| n < indexed && accept(n);
        let mut found = self
            .graph
            .search(&self.arena, self.dist, q, k, ef, &linked_only);
        if indexed < len {
            let tail = self.exact(q, k, (indexed..len).filter(|&n| accept(n)));
            found = merge_nearest(found, tail, k);
        }
        found
    }

    /// Exact `k` nearest among `offsets`. Nearest first.
    pub fn exact(&self, q: &[f32], k: usize, offsets: impl Iterator<Item = u32>) -> Vec<Candidate> {
        let mut top: std::collections::BinaryHeap<Candidate> =
            std::collections::BinaryHeap::with_capacity(k + 1);
        for n in offsets {
            let d = self.dist.eval(q, self.arena.row(n));
            if top.len() < k {
                top.push(Candidate { dist: d, node: n });
            } else if top.peek().is_some_and(|w| d < w.dist) {
                top.pop();
                top.push(Candidate { dist: d, node: n });
            }
        }
        top.into_sorted_vec()
    }

    /// Relink rows that pruning left unreachable, if rows were linked since the last repair.
    /// Only the thread that runs `index_pending` may call this (never concurrently with it).
    /// Returns the rows relinked.
    pub fn repair(&self) -> usize {
        let indexed = self.indexed();
        if self.repaired.swap(indexed, Ordering::AcqRel) == indexed {
            return 0;
        }
        self.graph.repair(&self.arena, self.dist, indexed)
    }

    /// Rows linked since the last repair pass (the indexer's cue to run one).
    pub fn unrepaired(&self) -> usize {
        self.indexed()
            .saturating_sub(self.repaired.load(Ordering::Acquire))
    }

    /// Rows on layer 0 reachable from the entry point (a graph health check).
    pub fn reachable(&self) -> usize {
        self.graph.reachable(self.indexed())
    }

    /// The on-disk form of the vectors: `len × dim` little-endian `f32`, row-major.
    pub fn encode_vectors(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * self.dim() * 4);
        for o in 0..self.len() as u32 {
            for v in self.arena.row(o) {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// The on-disk form of the graph. Only for a segment that takes no more rows and is fully
    /// indexed (a sealed one): rows linked later would be missing from the file.
    pub fn encode_graph(&self) -> Vec<u8> {
        self.graph.encode(self.indexed())
    }

    /// A sealed segment loaded from its files (see [`SegmentIndex::encode_vectors`] and
    /// [`SegmentIndex::encode_graph`]), fully indexed, without linking anything.
    pub fn load(dim: usize, metric: Metric, vectors: &[u8], graph: &[u8]) -> Result<Self, String> {
        if dim == 0 || !vectors.len().is_multiple_of(dim * 4) {
            return Err(format!(
                "vector file has {} bytes, not a multiple of {dim} floats",
                vectors.len()
            ));
        }
        let rows = vectors.len() / (dim * 4);
        let floats: Vec<f32> = vectors
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let arena = arena::VectorArena::new(dim, rows).map_err(|e| e.to_string())?;
        arena.append(&floats);
        let graph = graph::Graph::decode(graph, rows, rows)?;
        if arena.on_huge_pages() {
            graph.use_huge_pages();
        }
        Ok(SegmentIndex {
            arena,
            graph,
            dist: kernels().distance(metric),
            indexed: AtomicUsize::new(rows),
            repaired: AtomicUsize::new(rows),
        })
    }

    /// The distance function of this segment.
    pub fn distance(&self) -> Distance {
        self.dist
    }
}

/// Merge two nearest-first lists, keeping the `k` nearest.
pub fn merge_nearest(a: Vec<Candidate>, b: Vec<Candidate>, k: usize) -> Vec<Candidate> {
    let mut all = a;
    all.extend(b);
    all.sort_unstable();
    all.truncate(k);
    all
}

#[cfg(test)]
mod tests;
