//! Indexing: linking published rows into their segment's HNSW graph, in parallel on the
//! shared rayon pool, and repairing reachability. Run by the replica's background job
//! whenever the committer signals new rows.
//!
//! It also repairs reachability (see `SegmentIndex::repair`), but not after every catch-up:
//! a repair pass starts with a walk over the whole layer-0 graph (241 ms at 1M rows), so under
//! a steady trickle of small writes repairing on every catch-up would keep a core busy. A pass
//! runs once the rows linked since the last one reach 1/[`REPAIR_FRACTION`] of the segment, and
//! otherwise once the indexer has been idle for [`REPAIR_IDLE`]; the walk is then amortised
//! over many linked rows, and every row is repaired soon after writes pause.
//!
//! It never holds the replica lock while linking or repairing (it only clones the segment
//! handles), so writes and searches proceed meanwhile; rows not linked yet are searched
//! exactly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use super::state::ReplicaState;
use crate::segment::SegmentIndex;

/// Rows linked per step before the `indexed` watermark advances.
pub const INDEX_CHUNK: usize = 4096;

/// A repair pass is due once the rows linked since the last one reach `1 / REPAIR_FRACTION` of
/// the segment's linked rows (so the whole-graph walk costs at most this many node visits per
/// linked row, small next to the thousands of distances linking one row takes).
pub const REPAIR_FRACTION: usize = 32;

/// Idle time after which every segment with unrepaired rows is repaired.
pub const REPAIR_IDLE: Duration = Duration::from_millis(500);

/// Whether a segment with `indexed` linked rows, `unrepaired` of them linked since its last
/// repair pass, should be repaired now (`idle`: no new rows arrived for [`REPAIR_IDLE`]).
pub fn repair_due(unrepaired: usize, indexed: usize, idle: bool) -> bool {
    unrepaired > 0 && (idle || unrepaired >= indexed / REPAIR_FRACTION)
}

/// The segments worth linking: all but sealed ones past the compaction threshold, which the
/// optimizer rewrites (and links) from their live rows instead.
pub fn segments(state: &RwLock<ReplicaState>, threshold: f64) -> Vec<Arc<SegmentIndex>> {
    state
        .read()
        .segments
        .iter()
        .filter(|s| !(s.sealed && s.dead_fraction() > threshold))
        .map(|s| s.index.clone())
        .collect()
}

/// Rows one background step links at most, over all of a replica's segments, before it
/// yields its thread to the other replicas' jobs.
pub const LINK_BUDGET: usize = 4 * INDEX_CHUNK;

/// Link up to `budget` of the rows published so far in the segments worth linking (rows
/// published meanwhile are linked on a later step, which their commit signals), unless
/// `stop` is set. Returns the segments looked at and whether rows are left to link.
pub fn link_some(
    state: &RwLock<ReplicaState>,
    threshold: f64,
    budget: usize,
    stop: &AtomicBool,
) -> (Vec<Arc<SegmentIndex>>, bool) {
    let segments = segments(state, threshold);
    let mut left = budget;
    for s in &segments {
        if stop.load(Ordering::Relaxed) || left == 0 {
            break;
        }
        left = left.saturating_sub(s.index_some(INDEX_CHUNK, left, stop));
    }
    let more = segments.iter().any(|s| s.indexed() < s.len());
    (segments, more)
}

/// Repair the segments that are due; returns `(relinked, still pending)`: the rows relinked,
/// and whether any segment still has unrepaired rows.
pub fn repair(segments: &[Arc<SegmentIndex>], idle: bool) -> (usize, bool) {
    let mut pending = false;
    let mut relinked = 0;
    for s in segments {
        if repair_due(s.unrepaired(), s.indexed(), idle) {
            let n = s.repair();
            if n > 0 {
                tracing::debug!(relinked = n, "relinked unreachable graph nodes");
            }
            relinked += n;
        } else if s.unrepaired() > 0 {
            pending = true;
        }
    }
    (relinked, pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_repair_is_never_due() {
        assert!(!repair_due(0, 0, true));
        assert!(!repair_due(0, 1_000_000, true));
        assert!(!repair_due(0, 10, false));
    }

    #[test]
    fn small_segments_repair_on_every_catch_up() {
        // Below REPAIR_FRACTION rows the threshold is zero: one new row is enough.
        assert!(repair_due(1, 1, false));
        assert!(repair_due(1, REPAIR_FRACTION - 1, false));
    }

    #[test]
    fn large_segments_wait_for_a_fraction_of_new_rows_or_idleness() {
        let indexed = 1_000_000;
        let threshold = indexed / REPAIR_FRACTION;
        assert!(!repair_due(1, indexed, false));
        assert!(!repair_due(threshold - 1, indexed, false));
        assert!(repair_due(threshold, indexed, false));
        assert!(
            repair_due(1, indexed, true),
            "idleness repairs any remainder"
        );
    }
}
