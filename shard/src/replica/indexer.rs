//! The indexer: one thread per replica that links published rows into their segment's HNSW
//! graph, in parallel on the shared rayon pool, whenever the committer signals new rows.
//!
//! When caught up it repairs reachability (see `SegmentIndex::repair`). It never holds
//! the replica lock while linking (it only clones the segment handles), so
//! writes and searches proceed meanwhile; rows not linked yet are searched exactly.

use std::sync::Arc;

use parking_lot::RwLock;

use super::state::ReplicaState;

/// Rows linked per step before the `indexed` watermark advances.
pub const INDEX_CHUNK: usize = 4096;

/// Run until the signal sender is dropped.
pub fn run(state: Arc<RwLock<ReplicaState>>, signal: std::sync::mpsc::Receiver<()>) {
    while signal.recv().is_ok() {
        while signal.try_recv().is_ok() {}
        loop {
            let segments: Vec<_> = state
                .read()
                .segments
                .iter()
                .map(|s| s.index.clone())
                .collect();
            let linked: usize = segments.iter().map(|s| s.index_pending(INDEX_CHUNK)).sum();
            if linked == 0 {
                // Caught up: relink rows that neighbour pruning left unreachable.
                for s in &segments {
                    let n = s.repair();
                    if n > 0 {
                        tracing::debug!(relinked = n, "relinked unreachable graph nodes");
                    }
                }
                break;
            }
        }
    }
}
