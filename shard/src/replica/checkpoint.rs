//! Checkpoints: seal the appendable segment, write every sealed segment that is not on disk
//! yet, record the tombstones, switch the manifest, then delete the WAL the manifest covers.
//!
//! The rule that makes this safe to interrupt anywhere: a checkpoint at LSN `L` lists sealed
//! segments that hold every row version written at or before `L`, and none written after it.
//! Their deletes files may already include deletes made after `L`; that is harmless, because
//! replaying the WAL after `L` on top of them is idempotent (deleting a deleted row, or
//! replacing a row whose old version is already a tombstone, changes nothing more). Files
//! are written before the manifest that names them, the manifest is replaced atomically, and
//! WAL files are deleted only after it is durable, so a crash at any step restarts from the
//! previous manifest or the new one, with the WAL that goes with it.
//!
//! Only the replica's background task runs checkpoints; it never holds the state lock while
//! writing files.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use longbow_common::shard_api::{encode_schema, ReplicaInfo};
use longbow_common::IdValue;
use parking_lot::RwLock;

use super::indexer::INDEX_CHUNK;
use super::state::ReplicaState;
use crate::bitset::Bitset;
use crate::error::Result;
use crate::fault::crash_point;
use crate::payload::{PayloadSchema, PayloadStore};
use crate::segment::SegmentIndex;
use crate::storage::sealed::{merge_payload, write_deletes, write_segment};
use crate::storage::{manifest, Manifest, SegmentEntry};

/// What a checkpoint did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing changed since the last checkpoint.
    Unchanged,
    /// A new manifest is durable at this LSN.
    Written(u64),
    /// Shutdown began before the segments were linked; nothing was switched.
    Stopped,
}

/// A sealed segment as a checkpoint sees it (read under the lock, written without it).
struct View {
    id: u32,
    index: Arc<SegmentIndex>,
    ids: Arc<Vec<IdValue>>,
    /// Payload chunks, for a segment whose files are not written yet.
    payload: Option<PayloadStore>,
    tombstones: Bitset,
    persisted: Option<SegmentEntry>,
}

/// Seal the appendable segment and return the checkpoint LSN it fixes.
pub fn seal(state: &RwLock<ReplicaState>) -> u64 {
    let mut st = state.write();
    st.seal_appendable();
    st.applied_lsn
}

fn views(st: &ReplicaState, lsn: u64) -> Vec<View> {
    st.segments
        .iter()
        .filter(|s| s.sealed && s.last_lsn <= lsn)
        .map(|s| View {
            id: s.id,
            index: s.index.clone(),
            ids: s.ids.clone(),
            payload: s.persisted.is_none().then(|| s.payload.clone()),
            tombstones: s.tombstones.clone(),
            persisted: s.persisted.clone(),
        })
        .collect()
}

fn unchanged(views: &[View], current: &Manifest, lsn: u64) -> bool {
    lsn == current.checkpoint_lsn
        && views.len() == current.segments.len()
        && views.iter().zip(&current.segments).all(|(v, e)| {
            v.persisted.as_ref() == Some(e)
                && e.deletes.as_ref().map_or(0, |d| d.count) == v.tombstones.count() as u64
        })
}

/// Write a checkpoint at `lsn` (from [`seal`]) over the replica in `dir`, given the manifest
/// now durable. Returns the new manifest with the outcome.
pub fn write(
    dir: &Path,
    state: &RwLock<ReplicaState>,
    current: &Manifest,
    lsn: u64,
    stop: &AtomicBool,
) -> Result<(Outcome, Option<Manifest>)> {
    let (info, schema, next_segment, views) = {
        let st = state.read();
        (
            st.info.clone(),
            st.schema.clone(),
            st.next_segment,
            views(&st, lsn),
        )
    };
    if unchanged(&views, current, lsn) {
        return Ok((Outcome::Unchanged, None));
    }
    let mut entries = Vec::with_capacity(views.len());
    let mut payloads = HashMap::new();
    for v in &views {
        let mut entry = match &v.persisted {
            Some(e) => e.clone(),
            None => match persist(dir, v, &info, &schema, stop)? {
                Some((entry, payload)) => {
                    payloads.insert(v.id, payload);
                    entry
                }
                None => return Ok((Outcome::Stopped, None)),
            },
        };
        let count = v.tombstones.count() as u64;
        if entry.deletes.as_ref().map_or(0, |d| d.count) != count {
            entry.deletes = Some(write_deletes(dir, v.id, lsn, &v.tombstones)?);
        }
        entries.push(entry);
    }
    let manifest = Manifest {
        format: manifest::FORMAT,
        checkpoint_lsn: lsn,
        next_segment,
        payload_schema: if schema.fields().is_empty() {
            None
        } else {
            Some(encode_schema(&schema.to_arrow())?)
        },
        segments: entries,
    };
    crash_point!("checkpoint::before_manifest");
    manifest.store(dir)?;
    crash_point!("checkpoint::after_manifest");
    let mut st = state.write();
    for entry in &manifest.segments {
        if let Some(i) = st.slot(entry.id) {
            let seg = &mut st.segments[i];
            seg.persisted = Some(entry.clone());
            if let Some(batch) = payloads.remove(&entry.id) {
                // The merged chunk replaces the per-write chunks: filters walk one array.
                let mut store = PayloadStore::default();
                store.push(0, batch);
                seg.payload = store;
            }
        }
    }
    Ok((Outcome::Written(lsn), Some(manifest)))
}

/// Link the rest of a sealed segment and write its files. `None` if shutdown began.
fn persist(
    dir: &Path,
    v: &View,
    info: &ReplicaInfo,
    schema: &PayloadSchema,
    stop: &AtomicBool,
) -> Result<Option<(SegmentEntry, arrow_array::RecordBatch)>> {
    v.index.index_pending(INDEX_CHUNK, stop);
    if v.index.indexed() < v.index.len() {
        return Ok(None);
    }
    v.index.repair();
    let store = v.payload.clone().unwrap_or_default();
    let payload = merge_payload(&store, schema, v.index.len())?;
    crash_point!("checkpoint::before_segment_files");
    let entry = write_segment(dir, v.id, &v.index, &v.ids, info, &payload)?;
    crash_point!("checkpoint::after_segment_files");
    Ok(Some((entry, payload)))
}
