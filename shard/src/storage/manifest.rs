//! The per-replica manifest: which sealed segments are live and up to which LSN they hold
//! every change (the checkpoint). Replaced atomically; the WAL below the checkpoint LSN may
//! be deleted only after the manifest naming it is durable.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::files::{self, corrupt, io_err, FileSum};
use crate::error::Result;

/// File name of the manifest in a replica directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Directory of the segment directories.
pub const SEGMENTS_DIR: &str = "segments";
/// Format version written; a newer one is refused instead of misread.
pub const FORMAT: u32 = 1;

/// The tombstones of a segment as of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletesEntry {
    /// File name inside the segment directory.
    pub file: String,
    /// Tombstoned offsets.
    pub count: u64,
    /// Length and checksum.
    pub sum: FileSum,
}

/// One live sealed segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentEntry {
    /// Segment id (its directory name).
    pub id: u32,
    /// Rows (offsets) in the segment, live or not.
    pub rows: u64,
    /// `vectors.f32`.
    pub vectors: FileSum,
    /// `graph.hnsw`.
    pub graph: FileSum,
    /// `ids.arrow`.
    pub ids: FileSum,
    /// `payload.arrow`.
    pub payload: FileSum,
    /// Tombstones, when there are any.
    pub deletes: Option<DeletesEntry>,
}

/// Names of the files every sealed segment has (besides its deletes file).
pub const SEGMENT_FILES: [&str; 4] = ["vectors.f32", "graph.hnsw", "ids.arrow", "payload.arrow"];

impl SegmentEntry {
    /// Every file of this segment, by name inside its directory, with its sum.
    pub fn files(&self) -> Vec<(String, FileSum)> {
        let sums = [self.vectors, self.graph, self.ids, self.payload];
        let mut out: Vec<(String, FileSum)> = SEGMENT_FILES
            .iter()
            .zip(sums)
            .map(|(n, s)| (n.to_string(), s))
            .collect();
        out.extend(self.deletes.as_ref().map(|d| (d.file.clone(), d.sum)));
        out
    }

    /// Bytes of this segment's files.
    pub fn disk_bytes(&self) -> u64 {
        self.vectors.len
            + self.graph.len
            + self.ids.len
            + self.payload.len
            + self.deletes.as_ref().map_or(0, |d| d.sum.len)
    }
}

/// The manifest of a replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version.
    pub format: u32,
    /// Every change with an LSN up to this one is in the listed segments.
    pub checkpoint_lsn: u64,
    /// The next segment id to hand out (ids are never reused).
    pub next_segment: u32,
    /// The payload schema as of the checkpoint (Arrow IPC, base64), when it has columns.
    pub payload_schema: Option<String>,
    /// Live sealed segments.
    pub segments: Vec<SegmentEntry>,
}

/// The directory of segment `id` under replica directory `dir`.
pub fn segment_dir(dir: &Path, id: u32) -> PathBuf {
    dir.join(SEGMENTS_DIR).join(id.to_string())
}

impl Manifest {
    /// Read the manifest of replica directory `dir`; `None` before its first checkpoint.
    pub fn load(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(&path, format!("is not a valid manifest: {e}")))?;
        if m.format != FORMAT {
            return Err(corrupt(
                &path,
                format!("has format {}, this build reads {FORMAT}", m.format),
            ));
        }
        Ok(Some(m))
    }

    /// Replace the manifest of `dir` atomically with this one.
    pub fn store(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| corrupt(&path, format!("cannot be encoded: {e}")))?;
        files::replace(&path, &bytes)
    }

    /// Every listed file as a path relative to the replica directory
    /// (`segments/<id>/<name>`), with its sum.
    pub fn files(&self) -> Vec<(String, FileSum)> {
        self.segments
            .iter()
            .flat_map(|e| {
                e.files()
                    .into_iter()
                    .map(move |(name, sum)| (format!("{SEGMENTS_DIR}/{}/{name}", e.id), sum))
            })
            .collect()
    }

    /// Bytes of every listed segment file.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(SegmentEntry::disk_bytes).sum()
    }
}
