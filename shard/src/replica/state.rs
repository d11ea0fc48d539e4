//! The in-memory state of a replica: its segments with their ids, payload and tombstones,
//! the id → location map and the payload schema. Mutations are applied here, in LSN order,
//! by exactly one writer (the committer, or replay at start-up).

use std::sync::Arc;

use longbow_common::shard_api::ReplicaInfo;
use longbow_common::{ContractError, IdValue};
use rustc_hash::FxHashMap;

use super::mutation::{Mutation, UpsertRows};
use crate::bitset::Bitset;
use crate::error::{Result, ShardError};
use crate::payload::{PayloadSchema, PayloadStore};
use crate::segment::SegmentIndex;

/// Where a live row version lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    /// Segment number.
    pub seg: u32,
    /// Offset in the segment.
    pub off: u32,
}

/// One segment with everything the replica keeps per row.
pub struct Segment {
    /// Vectors and graph (shared with the indexer).
    pub index: Arc<SegmentIndex>,
    /// Id of each offset.
    pub ids: Vec<IdValue>,
    /// Payload of each offset.
    pub payload: PayloadStore,
    /// Offsets deleted or replaced by a newer version.
    pub tombstones: Bitset,
}

impl Segment {
    /// Whether `off` is a live row version.
    #[inline(always)]
    pub fn live(&self, off: u32) -> bool {
        !self.tombstones.get(off as usize)
    }
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
            segment_capacity: segment_capacity.max(1),
            seed,
        }
    }

    /// Apply one mutation logged at `lsn`. Returns the rows affected (written, or deleted).
    pub fn apply(&mut self, lsn: u64, m: &Mutation) -> Result<u64> {
        let n = match m {
            Mutation::Upsert(rows) => self.apply_upsert(rows)?,
            Mutation::Delete(ids) => self.apply_delete(ids),
        };
        self.applied_lsn = self.applied_lsn.max(lsn);
        Ok(n)
    }

    fn tombstone(&mut self, loc: Loc) {
        if let Some(seg) = self.segments.get_mut(loc.seg as usize) {
            if seg.tombstones.set(loc.off as usize) {
                self.deleted += 1;
            }
        }
    }

    fn new_segment(&mut self) -> Result<()> {
        let n = self.segments.len() as u64;
        let index = SegmentIndex::new(
            self.info.dim,
            self.segment_capacity,
            self.info.metric,
            &self.info.index,
            self.seed ^ n.wrapping_mul(0xA24B_AED4_963E_E407),
        )
        .map_err(|source| ShardError::Io {
            path: "segment memory".into(),
            source,
        })?;
        self.segments.push(Segment {
            index: Arc::new(index),
            ids: Vec::new(),
            payload: PayloadStore::default(),
            tombstones: Bitset::default(),
        });
        Ok(())
    }

    fn apply_upsert(&mut self, rows: &UpsertRows) -> Result<u64> {
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
            if self.segments.last().is_none_or(|s| s.index.free() == 0) {
                self.new_segment()?;
            }
            let seg_no = self.segments.len() - 1;
            let take = self.segments[seg_no].index.free().min(total - done);
            let seg = &mut self.segments[seg_no];
            let first = seg
                .index
                .append(&rows.vectors[done * dim..(done + take) * dim]);
            seg.ids.extend_from_slice(&rows.ids[done..done + take]);
            seg.payload.push(first, payload.slice(done, take));
            for i in 0..take {
                let loc = Loc {
                    seg: seg_no as u32,
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
