//! The in-memory state of a replica: its segments with their ids, payload and tombstones,
//! the id → location map and the payload schema. Mutations are applied here, in LSN order,
//! by exactly one writer (the committer, or replay at start-up); the background task only
//! seals the appendable segment and swaps merged segments in, under the same write lock.
//!
//! Segments have stable ids (a [`Loc`] names one), so replacing some segments never moves
//! the rows of the others.

use std::sync::Arc;

use longbow_common::shard_api::ReplicaInfo;
use longbow_common::{ContractError, IdValue};
use rustc_hash::FxHashMap;

use super::mutation::{Mutation, UpsertRows};
use crate::bitset::Bitset;
use crate::error::{Result, ShardError};
use crate::payload::{PayloadSchema, PayloadStore};
use crate::segment::SegmentIndex;
use crate::storage::sealed::LoadedSegment;
use crate::storage::SegmentEntry;

/// Where a live row version lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    /// Segment id.
    pub seg: u32,
    /// Offset in the segment.
    pub off: u32,
}

/// One segment with everything the replica keeps per row.
pub struct Segment {
    /// Stable id (never reused within a replica).
    pub id: u32,
    /// Vectors and graph (shared with the background task).
    pub index: Arc<SegmentIndex>,
    /// Id of each offset (shared with checkpoints once sealed; only the appendable segment's
    /// grows).
    pub ids: Arc<Vec<IdValue>>,
    /// Payload of each offset.
    pub payload: PayloadStore,
    /// Offsets deleted or replaced by a newer version.
    pub tombstones: Bitset,
    /// No more rows are appended (it filled up, or a checkpoint sealed it).
    pub sealed: bool,
    /// Its manifest entry once its files are on disk (deletes as last written).
    pub persisted: Option<SegmentEntry>,
    /// Highest LSN of a row written into it.
    pub last_lsn: u64,
}

impl Segment {
    /// Whether `off` is a live row version.
    #[inline(always)]
    pub fn live(&self, off: u32) -> bool {
        !self.tombstones.get(off as usize)
    }

    /// Fraction of the segment's rows that are deleted or replaced (0 when empty).
    pub fn dead_fraction(&self) -> f64 {
        let rows = self.index.len();
        if rows == 0 {
            0.0
        } else {
            self.tombstones.count() as f64 / rows as f64
        }
    }

    /// Live rows.
    pub fn live_rows(&self) -> usize {
        self.index.len() - self.tombstones.count()
    }
}

/// A segment built by the optimizer from live rows of `sources`, ready to be swapped in.
pub struct Merged {
    /// The segments it replaces.
    pub sources: Vec<u32>,
    /// Vectors and graph of the kept rows.
    pub index: Arc<SegmentIndex>,
    /// Their ids.
    pub ids: Vec<IdValue>,
    /// Their payload, one chunk.
    pub payload: arrow_array::RecordBatch,
    /// Where each row came from: `(source segment id, offset)`.
    pub origin: Vec<(u32, u32)>,
    /// Highest LSN of a row in the sources.
    pub last_lsn: u64,
}

/// Everything a replica holds in memory.
pub struct ReplicaState {
    /// What the replica is.
    pub info: ReplicaInfo,
    /// Segments, oldest first; only the last one takes appends.
    pub segments: Vec<Segment>,
    /// Live id → location.
    pub ids: FxHashMap<IdValue, Loc>,
    /// Payload columns seen so far.
    pub schema: PayloadSchema,
    /// Highest LSN applied.
    pub applied_lsn: u64,
    /// Row versions tombstoned.
    pub deleted: u64,
    /// The next segment id.
    pub next_segment: u32,
    /// Segment id → position in `segments`.
    slots: FxHashMap<u32, usize>,
    segment_capacity: usize,
    seed: u64,
}

impl ReplicaState {
    /// An empty replica.
    pub fn new(
        info: ReplicaInfo,
        schema: PayloadSchema,
        segment_capacity: usize,
        seed: u64,
    ) -> Self {
        ReplicaState {
            info,
            segments: Vec::new(),
            ids: FxHashMap::default(),
            schema,
            applied_lsn: 0,
            deleted: 0,
            next_segment: 0,
            slots: FxHashMap::default(),
            segment_capacity: segment_capacity.max(1),
            seed,
        }
    }

    /// Rows per appendable segment.
    pub fn segment_capacity(&self) -> usize {
        self.segment_capacity
    }

    /// The seed of segment `id`'s graph layers.
    pub fn segment_seed(&self, id: u32) -> u64 {
        self.seed ^ (id as u64).wrapping_mul(0xA24B_AED4_963E_E407)
    }

    /// The position of segment `id` in `segments`.
    pub fn slot(&self, id: u32) -> Option<usize> {
        self.slots.get(&id).copied()
    }

    /// The segment a location points into.
    pub fn segment_of(&self, loc: Loc) -> Option<&Segment> {
        self.slot(loc.seg).map(|i| &self.segments[i])
    }

    fn reindex(&mut self) {
        self.slots = self
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id, i))
            .collect();
        self.deleted = self
            .segments
            .iter()
            .map(|s| s.tombstones.count() as u64)
            .sum();
    }

    /// Add a sealed segment loaded from its files (start-up, in manifest order), indexing its
    /// live ids.
    pub fn push_loaded(&mut self, entry: SegmentEntry, loaded: LoadedSegment) -> Result<()> {
        let id = entry.id;
        let mut payload = PayloadStore::default();
        payload.push(0, loaded.payload);
        self.segments.push(Segment {
            id,
            index: Arc::new(loaded.index),
            ids: Arc::new(loaded.ids),
            payload,
            tombstones: loaded.tombstones,
            sealed: true,
            persisted: Some(entry),
            last_lsn: self.applied_lsn,
        });
        self.next_segment = self.next_segment.max(id + 1);
        self.reindex();
        let pos = self.segments.len() - 1;
        let rows = self.segments[pos].index.len() as u32;
        for off in 0..rows {
            if !self.segments[pos].live(off) {
                continue;
            }
            let idv = self.segments[pos].ids[off as usize].clone();
            if let Some(old) = self.ids.insert(idv, Loc { seg: id, off }) {
                // Never written so; keep the newer version rather than two live ones.
                tracing::warn!(
                    segment = id,
                    "an id was live in two sealed segments; keeping the newer"
                );
                self.tombstone(old);
            }
        }
        Ok(())
    }

    /// Seal the appendable segment (if it has rows): the next write starts a new one.
    pub fn seal_appendable(&mut self) {
        if let Some(last) = self.segments.last_mut() {
            if !last.index.is_empty() {
                last.sealed = true;
            }
        }
    }

    /// Swap a merged segment in for its sources. Rows deleted or replaced since the merge
    /// read its sources are tombstoned in the new segment; the others move their id's
    /// location to it. Returns the new segment's id.
    pub fn install(&mut self, merged: Merged) -> Result<u32> {
        let id = self.next_segment;
        let mut tombstones = Bitset::with_len(merged.origin.len());
        for (new_off, &(sid, soff)) in merged.origin.iter().enumerate() {
            let src = self.slot(sid).map(|i| &self.segments[i]).ok_or_else(|| {
                ShardError::Contract(ContractError::invalid(
                    "merge",
                    format!("source segment {sid} is gone"),
                ))
            })?;
            if !src.live(soff) {
                tombstones.set(new_off);
                continue;
            }
            let idv = &merged.ids[new_off];
            match self.ids.get_mut(idv) {
                Some(loc)
                    if *loc
                        == (Loc {
                            seg: sid,
                            off: soff,
                        }) =>
                {
                    *loc = Loc {
                        seg: id,
                        off: new_off as u32,
                    }
                }
                _ => {
                    tombstones.set(new_off);
                }
            }
        }
        let at = merged
            .sources
            .iter()
            .filter_map(|&s| self.slot(s))
            .min()
            .unwrap_or(0);
        self.segments.retain(|s| !merged.sources.contains(&s.id));
        if !merged.origin.is_empty() {
            let mut payload = PayloadStore::default();
            payload.push(0, merged.payload);
            let segment = Segment {
                id,
                index: merged.index,
                ids: Arc::new(merged.ids),
                payload,
                tombstones,
                sealed: true,
                persisted: None,
                last_lsn: merged.last_lsn,
            };
            self.segments.insert(at.min(self.segments.len()), segment);
        }
        self.next_segment += 1;
        self.reindex();
        Ok(id)
    }

    /// Apply one mutation logged at `lsn`. Returns the rows affected (written, or deleted).
    pub fn apply(&mut self, lsn: u64, m: &Mutation) -> Result<u64> {
        let n = match m {
            Mutation::Upsert(rows) => self.apply_upsert(lsn, rows)?,
            Mutation::Delete(ids) => self.apply_delete(ids),
        };
        self.applied_lsn = self.applied_lsn.max(lsn);
        Ok(n)
    }

    fn tombstone(&mut self, loc: Loc) {
        if let Some(i) = self.slot(loc.seg) {
            if self.segments[i].tombstones.set(loc.off as usize) {
                self.deleted += 1;
            }
        }
    }

    fn new_segment(&mut self) -> Result<()> {
        let id = self.next_segment;
        let index = SegmentIndex::new(
            self.info.dim,
            self.segment_capacity,
            self.info.metric,
            &self.info.index,
            self.segment_seed(id),
        )
        .map_err(|source| ShardError::Io {
            path: "segment memory".into(),
            source,
        })?;
        self.segments.push(Segment {
            id,
            index: Arc::new(index),
            ids: Arc::new(Vec::new()),
            payload: PayloadStore::default(),
            tombstones: Bitset::default(),
            sealed: false,
            persisted: None,
            last_lsn: 0,
        });
        self.next_segment += 1;
        self.slots.insert(id, self.segments.len() - 1);
        Ok(())
    }

    fn apply_upsert(&mut self, lsn: u64, rows: &UpsertRows) -> Result<u64> {
        let dim = self.info.dim;
        let payload = self.schema.conform(&rows.payload)?;
        let total = rows.ids.len();
        if rows.vectors.len() != total * dim || payload.num_rows() != total {
            return Err(ShardError::Contract(ContractError::invalid(
                "rows",
                "ids, vectors and payload disagree in length",
            )));
        }
        let mut done = 0;
        while done < total {
            if self
                .segments
                .last()
                .is_none_or(|s| s.sealed || s.index.free() == 0)
            {
                self.new_segment()?;
            }
            let seg_no = self.segments.len() - 1;
            let take = self.segments[seg_no].index.free().min(total - done);
            let seg = &mut self.segments[seg_no];
            let first = seg
                .index
                .append(&rows.vectors[done * dim..(done + take) * dim]);
            Arc::make_mut(&mut seg.ids).extend_from_slice(&rows.ids[done..done + take]);
            seg.payload.push(first, payload.slice(done, take));
            seg.last_lsn = seg.last_lsn.max(lsn);
            if seg.index.free() == 0 {
                seg.sealed = true;
            }
            let seg_id = seg.id;
            for i in 0..take {
                let loc = Loc {
                    seg: seg_id,
                    off: first + i as u32,
                };
                if let Some(old) = self.ids.insert(rows.ids[done + i].clone(), loc) {
                    self.tombstone(old);
                }
            }
            done += take;
        }
        Ok(total as u64)
    }

    fn apply_delete(&mut self, ids: &[IdValue]) -> u64 {
        let mut n = 0;
        for id in ids {
            if let Some(loc) = self.ids.remove(id) {
                self.tombstone(loc);
                n += 1;
            }
        }
        n
    }

    /// Rows published but not yet linked into a graph.
    pub fn indexing_lag(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| (s.index.len() - s.index.indexed()) as u64)
            .sum()
    }

    /// Approximate resident bytes.
    pub fn memory_bytes(&self) -> u64 {
        let per_seg: usize = self
            .segments
            .iter()
            .map(|s| {
                s.index.memory_bytes()
                    + s.ids.capacity() * std::mem::size_of::<IdValue>()
                    + s.payload.memory_bytes()
                    + s.tombstones.memory_bytes()
            })
            .sum();
        let map =
            self.ids.capacity() * (std::mem::size_of::<IdValue>() + std::mem::size_of::<Loc>() + 1);
        (per_seg + map) as u64
    }
}
