//! Files of sealed segments and the manifest that lists them.
//!
//! A replica directory holds, besides `replica.json` and `wal/`:
//! ```text
//! manifest.json              live segments, checkpoint LSN, payload schema (atomic replace)
//! segments/<id>/vectors.f32  row-major little-endian f32
//! segments/<id>/graph.hnsw   the HNSW lists (see segment::graph::file)
//! segments/<id>/ids.arrow    Arrow IPC file: the `id` column
//! segments/<id>/payload.arrow Arrow IPC file: payload columns, one batch
//! segments/<id>/deletes-<lsn>.bits  tombstones as of checkpoint <lsn>
//! ```
//! Segment files never change once written; only the deletes file is replaced (under a new
//! name) by later checkpoints. Every file's length and CRC32C are in the manifest and checked
//! when it is read. This module writes and reads files; deciding *when* is the replica's.

pub mod files;
pub mod manifest;
pub mod sealed;
pub mod snapshot;

pub use files::FileSum;
pub use manifest::{Manifest, SegmentEntry};
