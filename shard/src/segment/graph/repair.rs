//! Reachability repair: heuristic pruning can drop a node's last in-link, leaving it
//! unreachable from the entry point; a repair pass finds such nodes and links them back in
//! (see decision 0008 for when the indexer runs one).
//!
//! Must never run concurrently with `Graph::insert` on the same graph (the indexer thread
//! does both, one after the other); searches may run alongside.

use std::sync::atomic::Ordering;

use super::{Candidate, Graph};
use crate::distance::Distance;
use crate::segment::arena::VectorArena;

impl Graph {
    /// How many of the first `nodes` offsets are reachable from the entry point on layer 0
    /// (a chained duplicate counts as reachable when its graph node is).
    pub(crate) fn reachable(&self, nodes: usize) -> usize {
        self.reachability(nodes).iter().filter(|&&r| r).count()
    }

    /// Which of the first `nodes` offsets are reachable from the entry point on layer 0.
    fn reachability(&self, nodes: usize) -> Vec<bool> {
        let mut seen = vec![false; nodes.min(self.capacity)];
        let Some((ep, _)) = self.entry() else {
            return seen;
        };
        let mut stack = vec![ep];
        let mut buf = Vec::new();
        while let Some(n) = stack.pop() {
            let Some(s) = seen.get_mut(n as usize) else {
                continue;
            };
            if *s {
                continue;
            }
            *s = true;
            // A node's exact duplicates are found through it (see `duplicates`).
            for copy in self.copies(n) {
                if let Some(c) = seen.get_mut(copy as usize) {
                    *c = true;
                }
            }
            self.neighbours(n, 0, &mut buf);
            stack.extend(buf.iter().copied());
        }
        seen
    }

    /// Relink nodes that heuristic pruning left unreachable from the entry point: each one
    /// is added to the layer-0 lists of its nearest reachable nodes (replacing their farthest
    /// neighbour when full). Repeats a few rounds, since a replacement can orphan another
    /// node. Returns the nodes relinked. Must not run concurrently with `insert`.
    pub(crate) fn repair(&self, arena: &VectorArena, dist: Distance, nodes: usize) -> usize {
        let mut relinked = 0;
        for _ in 0..4 {
            let seen = self.reachability(nodes);
            let orphans: Vec<u32> = (0..seen.len() as u32)
                .filter(|&n| !seen[n as usize])
                .collect();
            if orphans.is_empty() {
                break;
            }
            for &node in &orphans {
                let q = arena.row(node);
                let reachable =
                    |n: u32| n != node && seen.get(n as usize).copied().unwrap_or(false);
                let near =
                    self.search_with(arena, dist, q, 3, self.ef_construction, &reachable, false);
                for c in near {
                    self.force_link(arena, dist, c.node, Candidate { dist: c.dist, node });
                }
            }
            relinked += orphans.len();
        }
        relinked
    }

    /// Put `new` into `at`'s layer-0 list, evicting the farthest neighbour if it is full.
    fn force_link(&self, arena: &VectorArena, dist: Distance, at: u32, new: Candidate) {
        let _guard = self.lock(at);
        let list = self.list(at, 0);
        let count = (list[0].load(Ordering::Acquire) as usize).min(self.m0);
        if list[1..=count]
            .iter()
            .any(|a| a.load(Ordering::Relaxed) == new.node)
        {
            return;
        }
        if count < self.m0 {
            list[1 + count].store(new.node, Ordering::Relaxed);
            list[0].store(count as u32 + 1, Ordering::Release);
            return;
        }
        let base = arena.row(at);
        let farthest = (1..=count)
            .map(|i| {
                (
                    i,
                    dist.eval(base, arena.row(list[i].load(Ordering::Relaxed))),
                )
            })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((slot, _)) = farthest {
            list[slot].store(new.node, Ordering::Release);
        }
    }
}
