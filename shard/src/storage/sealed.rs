//! Writing a sealed segment's files and loading them back.
//!
//! A segment is written into `segments/.<id>.tmp/`, every file `fsync`ed, then the directory
//! is renamed to `segments/<id>/` and the parent `fsync`ed: a crash leaves either nothing or a
//! complete segment, and a complete one is still ignored (and removed) until a manifest lists
//! it.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{new_null_array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::{Field, Schema};
use longbow_common::ids::{ids_from_array, ids_to_array};
use longbow_common::shard_api::ReplicaInfo;
use longbow_common::{columns, IdValue};

use super::files::{self, corrupt, io_err, read_checked, write_new};
use super::manifest::{segment_dir, DeletesEntry, Manifest, SegmentEntry, SEGMENTS_DIR};
use crate::bitset::Bitset;
use crate::error::Result;
use crate::payload::{PayloadSchema, PayloadStore};
use crate::segment::SegmentIndex;

const VECTORS: &str = "vectors.f32";
const GRAPH: &str = "graph.hnsw";
const IDS: &str = "ids.arrow";
const PAYLOAD: &str = "payload.arrow";

/// What a sealed segment holds in memory, loaded from its files.
pub struct LoadedSegment {
    /// Vectors and graph, fully indexed.
    pub index: SegmentIndex,
    /// Id of each offset.
    pub ids: Vec<IdValue>,
    /// Payload of every offset, one batch.
    pub payload: RecordBatch,
    /// Tombstones as of the manifest's checkpoint.
    pub tombstones: Bitset,
}

/// The payload of a segment as one batch with every column of `schema` (columns a chunk
/// lacks become nulls, which filters treat exactly like a missing column).
pub fn merge_payload(
    store: &PayloadStore,
    schema: &PayloadSchema,
    rows: usize,
) -> Result<RecordBatch> {
    let target = schema.to_arrow();
    let mut parts = Vec::with_capacity(store.chunks().len());
    for (_, chunk) in store.chunks() {
        let arrays: Vec<ArrayRef> = target
            .fields()
            .iter()
            .map(|f| {
                chunk
                    .column_by_name(f.name())
                    .cloned()
                    .unwrap_or_else(|| new_null_array(f.data_type(), chunk.num_rows()))
            })
            .collect();
        let opts = RecordBatchOptions::new().with_row_count(Some(chunk.num_rows()));
        parts.push(RecordBatch::try_new_with_options(
            target.clone(),
            arrays,
            &opts,
        )?);
    }
    let merged = if parts.is_empty() {
        RecordBatch::try_new_with_options(
            target.clone(),
            target
                .fields()
                .iter()
                .map(|f| new_null_array(f.data_type(), 0))
                .collect(),
            &RecordBatchOptions::new().with_row_count(Some(0)),
        )?
    } else {
        arrow_select::concat::concat_batches(&target, &parts)?
    };
    if merged.num_rows() != rows {
        return Err(corrupt(
            Path::new("payload"),
            format!(
                "segment payload has {} rows, expected {rows}",
                merged.num_rows()
            ),
        ));
    }
    Ok(merged)
}

fn ipc_file(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut w = FileWriter::try_new(Vec::new(), &batch.schema())?;
    w.write(batch)?;
    w.finish()?;
    Ok(w.into_inner()?)
}

fn read_ipc_file(path: &Path, bytes: Vec<u8>, rows: usize) -> Result<RecordBatch> {
    let reader = FileReader::try_new(Cursor::new(bytes), None)
        .map_err(|e| corrupt(path, format!("is not an Arrow IPC file: {e}")))?;
    let schema = reader.schema();
    let mut batches = Vec::new();
    for b in reader {
        batches.push(b.map_err(|e| corrupt(path, e.to_string()))?);
    }
    let batch = match batches.len() {
        0 => RecordBatch::new_empty(schema),
        1 => batches.remove(0),
        _ => arrow_select::concat::concat_batches(&schema, &batches)?,
    };
    if batch.num_rows() != rows {
        return Err(corrupt(
            path,
            format!("has {} rows, expected {rows}", batch.num_rows()),
        ));
    }
    Ok(batch)
}

/// Write the immutable files of segment `id` of the replica in `dir` (vectors, graph, ids,
/// payload) and return its manifest entry, without deletes.
pub fn write_segment(
    dir: &Path,
    id: u32,
    index: &SegmentIndex,
    ids: &[IdValue],
    info: &ReplicaInfo,
    payload: &RecordBatch,
) -> Result<SegmentEntry> {
    let rows = index.len();
    if ids.len() != rows || payload.num_rows() != rows || index.indexed() != rows {
        return Err(corrupt(
            dir,
            format!(
                "segment {id} is not ready to seal: {rows} rows, {} ids, {} payload rows, {} linked",
                ids.len(),
                payload.num_rows(),
                index.indexed()
            ),
        ));
    }
    let parent = dir.join(SEGMENTS_DIR);
    std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
    let tmp = parent.join(format!(".{id}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let written = write_files(&tmp, id, index, ids, info, payload);
    let entry = match written {
        Ok(e) => e,
        Err(e) => {
            // Never leave a half-written segment taking space (a full disk is the usual cause).
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    files::sync_dir(&tmp)?;
    let target = segment_dir(dir, id);
    std::fs::rename(&tmp, &target).map_err(io_err(&target))?;
    files::sync_dir(&parent)?;
    Ok(entry)
}

fn write_files(
    tmp: &Path,
    id: u32,
    index: &SegmentIndex,
    ids: &[IdValue],
    info: &ReplicaInfo,
    payload: &RecordBatch,
) -> Result<SegmentEntry> {
    let id_schema = Schema::new(vec![Field::new(
        columns::ID,
        info.id_type.data_type(),
        false,
    )]);
    let id_batch =
        RecordBatch::try_new(Arc::new(id_schema), vec![ids_to_array(ids, info.id_type)])?;
    Ok(SegmentEntry {
        id,
        rows: index.len() as u64,
        vectors: write_new(&tmp.join(VECTORS), &index.encode_vectors())?,
        graph: write_new(&tmp.join(GRAPH), &index.encode_graph())?,
        ids: write_new(&tmp.join(IDS), &ipc_file(&id_batch)?)?,
        payload: write_new(&tmp.join(PAYLOAD), &ipc_file(payload)?)?,
        deletes: None,
    })
}

/// Write the tombstones of segment `id` as of checkpoint `lsn`.
pub fn write_deletes(dir: &Path, id: u32, lsn: u64, tombstones: &Bitset) -> Result<DeletesEntry> {
    let file = format!("deletes-{lsn:020}.bits");
    let seg = segment_dir(dir, id);
    let sum = write_new(&seg.join(&file), &tombstones.to_bytes())?;
    files::sync_dir(&seg)?;
    Ok(DeletesEntry {
        file,
        count: tombstones.count() as u64,
        sum,
    })
}

/// Load segment `entry` of the replica in `dir`, checking every file against the manifest.
pub fn load_segment(dir: &Path, entry: &SegmentEntry, info: &ReplicaInfo) -> Result<LoadedSegment> {
    let seg = segment_dir(dir, entry.id);
    let rows = entry.rows as usize;
    let vectors = read_checked(&seg.join(VECTORS), &entry.vectors)?;
    let graph_path = seg.join(GRAPH);
    let graph = read_checked(&graph_path, &entry.graph)?;
    let index = SegmentIndex::load(info.dim, info.metric, &vectors, &graph)
        .map_err(|reason| corrupt(&graph_path, reason))?;
    drop((vectors, graph));
    if index.len() != rows {
        return Err(corrupt(
            &seg,
            format!("holds {} vectors, the manifest says {rows}", index.len()),
        ));
    }
    let ids_path = seg.join(IDS);
    let id_batch = read_ipc_file(&ids_path, read_checked(&ids_path, &entry.ids)?, rows)?;
    let id_col = id_batch
        .column_by_name(columns::ID)
        .ok_or_else(|| corrupt(&ids_path, "has no id column"))?;
    let ids = ids_from_array(id_col.as_ref(), info.id_type)
        .map_err(|e| corrupt(&ids_path, e.to_string()))?;
    let payload_path = seg.join(PAYLOAD);
    let payload = read_ipc_file(
        &payload_path,
        read_checked(&payload_path, &entry.payload)?,
        rows,
    )?;
    let tombstones = match &entry.deletes {
        None => Bitset::with_len(rows),
        Some(d) => {
            let path = seg.join(&d.file);
            let bits = Bitset::from_bytes(&read_checked(&path, &d.sum)?)
                .ok_or_else(|| corrupt(&path, "is not a whole number of 64-bit words"))?;
            if bits.count() as u64 != d.count || bits.iter().any(|o| o >= rows) {
                return Err(corrupt(&path, "does not match the manifest's delete count"));
            }
            bits
        }
    };
    Ok(LoadedSegment {
        index,
        ids,
        payload,
        tombstones,
    })
}

/// Remove every segment directory and deletes file that `manifest` does not list (leftovers
/// of interrupted seals, merges and replaced checkpoints). Only call it with the manifest
/// that is durable on disk, and never while a seal is being written.
pub fn collect_garbage(dir: &Path, manifest: &Manifest) -> Result<u64> {
    let parent = dir.join(SEGMENTS_DIR);
    let listing = match std::fs::read_dir(&parent) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(&parent)(e)),
    };
    let mut removed = 0;
    for item in listing {
        let item = item.map_err(io_err(&parent))?;
        let path = item.path();
        let name = item.file_name().to_string_lossy().into_owned();
        let live = name
            .parse::<u32>()
            .ok()
            .and_then(|id| manifest.segments.iter().find(|s| s.id == id));
        match live {
            None => {
                std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
                removed += 1;
            }
            Some(entry) => removed += remove_stale_deletes(&path, entry)?,
        }
    }
    if removed > 0 {
        files::sync_dir(&parent)?;
    }
    Ok(removed)
}

fn remove_stale_deletes(seg: &Path, entry: &SegmentEntry) -> Result<u64> {
    let keep = entry.deletes.as_ref().map(|d| d.file.as_str());
    let mut removed = 0;
    for item in std::fs::read_dir(seg).map_err(io_err(seg))? {
        let item = item.map_err(io_err(seg))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with("deletes-") && Some(name.as_str()) != keep {
            std::fs::remove_file(item.path()).map_err(io_err(seg))?;
            removed += 1;
        }
    }
    if removed > 0 {
        files::sync_dir(seg)?;
    }
    Ok(removed)
}
