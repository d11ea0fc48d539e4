//! Snapshot parts: a replica's sealed files at a checkpoint, hard-linked (never copied) into
//! `<data-dir>/snapshots/<snapshot>/<shard>/` with its manifest and `replica.json`, and linked
//! back into a new replica directory to restore it.
//!
//! Sealed files never change and deletes files are replaced under new names, so a hard link
//! taken after a checkpoint stays exactly that checkpoint's bytes, whatever the replica does
//! later. A part is assembled in a dot-named temporary directory and renamed into place, so
//! a crash leaves a whole part or only a temporary directory, which start-up removes.

use std::path::{Path, PathBuf};

use super::files::{self, io_err};
use super::manifest::{segment_dir, Manifest, MANIFEST_FILE, SEGMENTS_DIR};
use crate::error::Result;

/// Directory of every snapshot under a data directory.
pub const SNAPSHOTS_DIR: &str = "snapshots";

/// Where a primary keeps the checkpoints it is sending to backups (a dot-named directory:
/// start-up removes it, and it is never listed as a snapshot).
pub fn transfers_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(SNAPSHOTS_DIR).join(".transfers")
}

/// Where part `shard` of snapshot `id` lives under `data_dir`.
pub fn part_dir(data_dir: &Path, id: &str, shard: u32) -> PathBuf {
    data_dir
        .join(SNAPSHOTS_DIR)
        .join(id)
        .join(shard.to_string())
}

/// Link the files `manifest` lists from replica (or part) directory `src` into `tmp` (which
/// must not exist), with the manifest and a copy of `meta_file` (`replica.json`, possibly
/// rewritten by the caller afterwards). Every file and directory is `fsync`ed.
pub fn link_files(
    src: &Path,
    manifest: &Manifest,
    meta: &[u8],
    meta_file: &str,
    tmp: &Path,
) -> Result<u64> {
    if tmp.exists() {
        std::fs::remove_dir_all(tmp).map_err(io_err(tmp))?;
    }
    let segments = tmp.join(SEGMENTS_DIR);
    std::fs::create_dir_all(&segments).map_err(io_err(&segments))?;
    let mut bytes = 0;
    for entry in &manifest.segments {
        let from = segment_dir(src, entry.id);
        let to = segment_dir(tmp, entry.id);
        std::fs::create_dir(&to).map_err(io_err(&to))?;
        for (name, _) in entry.files() {
            let target = to.join(&name);
            std::fs::hard_link(from.join(&name), &target).map_err(io_err(&target))?;
        }
        files::sync_dir(&to)?;
        bytes += entry.disk_bytes();
    }
    files::sync_dir(&segments)?;
    files::write_new(&tmp.join(meta_file), meta)?;
    manifest.store(tmp)?;
    files::sync_dir(tmp)?;
    Ok(bytes)
}

/// Move a completed temporary directory `tmp` to `dest` and make the rename durable.
pub fn publish(tmp: &Path, dest: &Path) -> Result<()> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    std::fs::rename(tmp, dest).map_err(io_err(dest))?;
    files::sync_dir(parent)
}

/// Read the manifest of a snapshot part.
pub fn part_manifest(part: &Path) -> Result<Manifest> {
    Manifest::load(part)?.ok_or_else(|| {
        files::corrupt(
            &part.join(MANIFEST_FILE),
            "is missing: the snapshot part is incomplete",
        )
    })
}

/// Remove temporary directories of interrupted snapshot writes and deletions.
pub fn clean_leftovers(data_dir: &Path) -> Result<()> {
    let root = data_dir.join(SNAPSHOTS_DIR);
    let Ok(listing) = std::fs::read_dir(&root) else {
        return Ok(());
    };
    for snap in listing.flatten() {
        let path = snap.path();
        if snap.file_name().to_string_lossy().starts_with('.') {
            std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
            continue;
        }
        for part in std::fs::read_dir(&path).map_err(io_err(&path))?.flatten() {
            if part.file_name().to_string_lossy().starts_with('.') {
                let p = part.path();
                std::fs::remove_dir_all(&p).map_err(io_err(&p))?;
            }
        }
    }
    Ok(())
}

/// Delete snapshot `id` from `data_dir` (renamed aside first, so a crash never leaves half a
/// part that looks whole). Returns whether it existed.
pub fn delete(data_dir: &Path, id: &str) -> Result<bool> {
    let root = data_dir.join(SNAPSHOTS_DIR);
    let dir = root.join(id);
    if !dir.exists() {
        return Ok(false);
    }
    let doomed = root.join(format!(".deleting-{id}"));
    std::fs::rename(&dir, &doomed).map_err(io_err(&dir))?;
    files::sync_dir(&root)?;
    std::fs::remove_dir_all(&doomed).map_err(io_err(&doomed))?;
    Ok(true)
}
