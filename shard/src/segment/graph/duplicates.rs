//! Exact duplicates. A row whose vector equals, value for value, that of a node already in
//! the graph is not linked into the graph: it joins that node's duplicate chain, and a search
//! that reaches the node takes accepted rows from the chain at the node's distance.
//!
//! Why: the neighbour heuristic keeps a candidate at distance 0 from the base (nothing is
//! nearer), so thousands of copies of one vector — a data set ingested twice, upsert churn
//! leaving tombstoned versions, many texts that embed identically — fill each other's lists
//! and split the graph into cliques of copies. Measured on 2,000 distinct rows plus 4,600
//! copies: 2,676 of 6,600 rows reachable and recall@10 of the distinct rows 0.60; with
//! chains every row is reachable (decision 0009).
//!
//! Chains live in one array, `dup_next`: a graph node's slot holds its first copy plus one,
//! a copy's slot the next copy plus one, 0 ends the chain. Copies are added at the head
//! (newest first, so after upserts the live version is met first) under the node's stripe
//! lock and published with release ordering; readers walk without locks and see a valid
//! prefix. Only the first layer an insert searches is checked, so a copy that reaches a
//! higher layer than every earlier copy is linked normally; such nodes are few (1 in M per
//! layer) and chains form under them too.

use std::sync::atomic::Ordering;

use super::{Candidate, Graph};
use crate::segment::arena::VectorArena;

impl Graph {
    /// The graph node among the nearest of `found` whose vector equals `q`, if any. Equal
    /// vectors have bit-identical distances, so only the candidates tied with the nearest
    /// are compared (almost always just one).
    pub(super) fn duplicate_of(
        &self,
        arena: &VectorArena,
        q: &[f32],
        found: &[Candidate],
    ) -> Option<u32> {
        let nearest = found.first()?.dist.to_bits();
        found
            .iter()
            .take_while(|c| c.dist.to_bits() == nearest)
            .find(|c| arena.row(c.node) == q)
            .map(|c| c.node)
    }

    /// Put `copy` at the head of `original`'s chain (`original` is a graph node).
    pub(super) fn chain(&self, original: u32, copy: u32) {
        let slots = self.dup_next.as_slice();
        let _guard = self.lock(original);
        let head = slots[original as usize].load(Ordering::Acquire);
        slots[copy as usize].store(head, Ordering::Relaxed);
        // Offsets are below the segment's capacity, itself below u32::MAX.
        slots[original as usize].store(copy + 1, Ordering::Release);
        self.has_dups.store(true, Ordering::Release);
    }

    /// Whether graph node `node` has a duplicate chain.
    #[inline(always)]
    pub(super) fn has_copies(&self, node: u32) -> bool {
        self.dup_next.as_slice()[node as usize].load(Ordering::Acquire) != 0
    }

    /// The chain of graph node `node`, newest copy first.
    pub(super) fn copies(&self, node: u32) -> impl Iterator<Item = u32> + '_ {
        let slots = self.dup_next.as_slice();
        let mut next = slots[node as usize].load(Ordering::Acquire);
        std::iter::from_fn(move || {
            let copy = next.checked_sub(1)?;
            next = slots[copy as usize].load(Ordering::Acquire);
            Some(copy)
        })
    }

    /// The `k` nearest accepted rows from a search's accepted graph nodes (`found`) and the
    /// rejected nodes that have chains (`skipped`): each node in distance order, then its
    /// accepted copies at the same distance.
    pub(super) fn with_copies(
        &self,
        found: Vec<Candidate>,
        skipped: Vec<Candidate>,
        k: usize,
        accept: &dyn Fn(u32) -> bool,
    ) -> Vec<Candidate> {
        let mut nodes = found;
        nodes.extend(skipped);
        nodes.sort_unstable();
        let mut out = Vec::with_capacity(k);
        for c in nodes {
            if out.len() >= k {
                break;
            }
            if accept(c.node) {
                out.push(c);
            }
            for copy in self.copies(c.node) {
                if out.len() >= k {
                    break;
                }
                if accept(copy) {
                    out.push(Candidate {
                        dist: c.dist,
                        node: copy,
                    });
                }
            }
        }
        out
    }
}
