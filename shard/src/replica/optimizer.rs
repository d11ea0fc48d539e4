//! The optimizer: rewrites sealed segments whose dead fraction (deleted rows plus replaced
//! versions) passes the compaction threshold, and merges small sealed segments.
//!
//! Small segments merge by tiers, as log-structured stores do: a segment is small below
//! 1/[`SMALL_FRACTION`] of the segment capacity; its tier is `log4` of its live rows; once a
//! tier holds [`MERGE_FACTOR`] segments they merge into one of the next tier. Each row is
//! therefore rebuilt into a graph a handful of times, not once per checkpoint.
//!
//! A merge reads its sources under the read lock, builds the new segment (vectors, graph,
//! payload) without any lock, and swaps it in under the write lock, carrying over deletes
//! that happened meanwhile (`ReplicaState::install`). Shutdown abandons a merge in progress;
//! nothing is changed until the swap.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arrow_array::UInt32Array;
use parking_lot::RwLock;

use super::indexer::INDEX_CHUNK;
use super::state::{Merged, ReplicaState};
use crate::error::{Result, ShardError};
use crate::segment::SegmentIndex;
use crate::storage::sealed::merge_payload;

/// A segment is small below this fraction of the segment capacity.
pub const SMALL_FRACTION: usize = 8;
/// Small segments of one tier merge once this many exist.
pub const MERGE_FACTOR: usize = 4;
/// Most segments merged at once.
pub const MAX_MERGE: usize = 8;

fn tier(live: usize) -> u32 {
    live.max(1).ilog2() / 2
}

/// The sources of the next rewrite or merge, if one is due.
pub fn plan(st: &ReplicaState, threshold: f64) -> Option<Vec<u32>> {
    let sealed = || st.segments.iter().filter(|s| s.sealed);
    if let Some(worst) = sealed()
        .filter(|s| s.dead_fraction() > threshold)
        .max_by(|a, b| a.dead_fraction().total_cmp(&b.dead_fraction()))
    {
        return Some(vec![worst.id]);
    }
    let small = st.segment_capacity() / SMALL_FRACTION;
    let mut tiers: std::collections::BTreeMap<u32, Vec<(usize, u32)>> = Default::default();
    for s in sealed().filter(|s| s.persisted.is_some() && s.live_rows() < small) {
        tiers
            .entry(tier(s.live_rows()))
            .or_default()
            .push((s.live_rows(), s.id));
    }
    tiers
        .into_values()
        .find(|t| t.len() >= MERGE_FACTOR)
        .map(|mut t| {
            t.sort_unstable();
            t.truncate(MAX_MERGE);
            t.into_iter().map(|(_, id)| id).collect()
        })
}

/// Build the segment that replaces `sources`: their live rows, relinked. `None` if shutdown
/// began meanwhile.
pub fn build(
    state: &RwLock<ReplicaState>,
    sources: &[u32],
    stop: &AtomicBool,
) -> Result<Option<Merged>> {
    let (info, schema, seed, parts) = {
        let st = state.read();
        let mut parts = Vec::new();
        for &id in sources {
            let seg = st.slot(id).map(|i| &st.segments[i]).ok_or_else(|| {
                ShardError::Contract(longbow_common::ContractError::invalid(
                    "merge",
                    format!("segment {id} is gone"),
                ))
            })?;
            parts.push((
                id,
                seg.index.clone(),
                seg.ids.clone(),
                seg.payload.clone(),
                seg.tombstones.clone(),
                seg.last_lsn,
            ));
        }
        (
            st.info.clone(),
            st.schema.clone(),
            st.segment_seed(st.next_segment),
            parts,
        )
    };
    let mut origin = Vec::new();
    let mut vectors = Vec::new();
    let mut ids = Vec::new();
    let mut payloads = Vec::new();
    let mut last_lsn = 0;
    for (id, index, seg_ids, store, tombstones, lsn) in &parts {
        last_lsn = last_lsn.max(*lsn);
        let live: Vec<u32> = (0..index.len() as u32)
            .filter(|&o| !tombstones.get(o as usize))
            .collect();
        for &o in &live {
            origin.push((*id, o));
            vectors.extend_from_slice(index.vector(o));
            ids.push(seg_ids[o as usize].clone());
        }
        let all = merge_payload(store, &schema, index.len())?;
        payloads.push(arrow_select::take::take_record_batch(
            &all,
            &UInt32Array::from(live),
        )?);
    }
    let target = schema.to_arrow();
    let payload = arrow_select::concat::concat_batches(&target, &payloads)?;
    let index = SegmentIndex::new(
        info.dim,
        origin.len().max(1),
        info.metric,
        &info.index,
        seed,
    )
    .map_err(|source| ShardError::Io {
        path: "segment memory".into(),
        source,
    })?;
    if !origin.is_empty() {
        index.append(&vectors);
    }
    drop(vectors);
    index.index_pending(INDEX_CHUNK, stop);
    if index.indexed() < index.len() {
        return Ok(None);
    }
    index.repair();
    Ok(Some(Merged {
        sources: sources.to_vec(),
        index: Arc::new(index),
        ids,
        payload,
        origin,
        last_lsn,
    }))
}

#[cfg(test)]
mod tests {
    use super::tier;

    #[test]
    fn tiers_grow_by_a_factor_of_four() {
        assert_eq!(tier(0), 0);
        assert_eq!(tier(3), 0);
        assert_eq!(tier(4), 1);
        assert_eq!(tier(15), 1);
        assert_eq!(tier(16), 2);
        assert_eq!(tier(1 << 20), 10);
    }
}
