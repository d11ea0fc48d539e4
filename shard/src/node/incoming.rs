//! Segment transfers arriving on a backup: a primary whose WAL no longer holds what the
//! backup lacks (or whose log the backup cannot cut back far enough) sends the files of one
//! of its checkpoints, then asks the backup to install them.
//!
//! Files are written into a staging directory beside the replica,
//! `replicas/<namespace>/.incoming-<shard>/`, tagged with the transfer's name; pieces of
//! another transfer found there are discarded. Installing checks every file against the
//! manifest (length and CRC32C) and `fsync`s it, writes the manifest, the replica's own
//! `replica.json` and the primary's epoch history, then swaps the staging directory with the
//! replica directory in one `renameat2(RENAME_EXCHANGE)`: a crash leaves either the old
//! replica or the new one, and start-up removes the dot-named leftover. Nothing here runs on
//! a replica that takes writes from clients: only a primary of an epoch at least the
//! replica's own may send.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use longbow_common::replication_api::{
    InstallTransfer, ProbeReply, TransferFileHeader, TransferFileReply,
};
use longbow_common::shard_api::ReplicaKey;
use longbow_common::ContractError;

use super::{refuse_older_epoch, ShardNode};
use crate::error::{Result, ShardError};
use crate::replica::epoch::Epochs;
use crate::replica::{Replica, META_FILE, WAL_DIR};
use crate::storage::files::{self, io_err};
use crate::storage::manifest::SEGMENT_FILES;
use crate::storage::Manifest;

/// File in the staging directory naming the transfer its files belong to.
const TRANSFER_TAG: &str = "transfer.id";

impl ShardNode {
    fn staging_dir(&self, key: &ReplicaKey) -> PathBuf {
        self.replica_dir(key)
            .with_file_name(format!(".incoming-{}", key.shard))
    }

    /// Write one piece of a transferred file into the staging directory. Blocks.
    pub fn receive_transfer_file(
        &self,
        header: &TransferFileHeader,
        bytes: &[u8],
    ) -> Result<TransferFileReply> {
        let key = ReplicaKey {
            namespace: header.namespace.clone(),
            shard: header.shard,
        };
        let replica = self.replica(&key)?;
        refuse_older_epoch(&replica, header.epoch)?;
        let rel = checked_file_path(&header.file)?;
        validate_transfer_name(&header.transfer)?;
        let _one_at_a_time = self.incoming.lock();
        let staging = self.staging_dir(&key);
        open_staging(&staging, &header.transfer)?;
        let path = staging.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let len = f.metadata().map_err(io_err(&path))?.len();
        if header.offset > len {
            return Err(ContractError::invalid(
                "TransferFile.offset",
                format!(
                    "{} is past the {len} bytes received so far of '{}'",
                    header.offset, header.file
                ),
            )
            .into());
        }
        // A resent piece (the reply to the first try was lost) replaces what follows it.
        f.set_len(header.offset).map_err(io_err(&path))?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(header.offset))
            .map_err(io_err(&path))?;
        f.write_all(bytes).map_err(io_err(&path))?;
        Ok(TransferFileReply {
            len: header.offset + bytes.len() as u64,
        })
    }

    /// Make the transferred files this replica's state: check them, write the manifest and
    /// epochs, swap the directories and open the replica again (its WAL starts after the
    /// checkpoint). Blocks while files are checked.
    pub fn install_transfer(&self, req: &InstallTransfer) -> Result<ProbeReply> {
        let key = ReplicaKey {
            namespace: req.namespace.clone(),
            shard: req.shard,
        };
        let replica = self.replica(&key)?;
        refuse_older_epoch(&replica, req.epoch)?;
        validate_transfer_name(&req.transfer)?;
        let manifest: Manifest = serde_json::from_value(req.manifest.clone()).map_err(|e| {
            ContractError::invalid("InstallTransfer.manifest", format!("not a manifest: {e}"))
        })?;
        let _one_at_a_time = self.incoming.lock();
        let staging = self.staging_dir(&key);
        let tag = std::fs::read_to_string(staging.join(TRANSFER_TAG)).unwrap_or_default();
        if tag != req.transfer {
            return Err(ContractError::invalid(
                "InstallTransfer.transfer",
                format!(
                    "no files of transfer '{}' were received (staging holds '{tag}')",
                    req.transfer
                ),
            )
            .into());
        }
        for (rel, sum) in manifest.files() {
            files::check(&staging.join(&rel), &sum, true)?;
        }
        for dir in manifest_dirs(&staging, &manifest) {
            files::sync_dir(&dir)?;
        }
        let meta = std::fs::read(replica.dir().join(META_FILE))
            .map_err(io_err(&replica.dir().join(META_FILE)))?;
        files::write_new(&staging.join(META_FILE), &meta)?;
        let wal = staging.join(WAL_DIR);
        std::fs::create_dir_all(&wal).map_err(io_err(&wal))?;
        let mut epochs = Epochs {
            current: replica.gate().lock().epochs.current,
            starts: req.epochs.clone(),
        };
        epochs.truncate(manifest.checkpoint_lsn);
        epochs.raise(req.epoch);
        epochs.store(&staging)?;
        manifest.store(&staging)?;
        std::fs::remove_file(staging.join(TRANSFER_TAG)).map_err(io_err(&staging))?;
        files::sync_dir(&staging)?;

        drop(replica);
        let dir = self.close(&key)?;
        exchange(&staging, &dir)?;
        let opened = match Replica::open(&dir, &self.host) {
            Ok(r) => r,
            Err(e) => {
                // Never leave the replica closed: put the old files back.
                exchange(&staging, &dir)?;
                let old = Arc::new(Replica::open(&dir, &self.host)?);
                self.replicas.write().insert(key, old);
                return Err(e);
            }
        };
        std::fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
        let opened = Arc::new(opened);
        self.replicas.write().insert(key, opened.clone());
        self.replication.count_received();
        tracing::info!(replica = %opened.key(), checkpoint_lsn = manifest.checkpoint_lsn, segments = manifest.segments.len(), bytes = manifest.disk_bytes(), epoch = req.epoch, "installed the primary's segment files");
        self.replication.probe(&opened, req.epoch)
    }
}

/// Make sure `staging` exists and holds pieces of `transfer` only.
fn open_staging(staging: &Path, transfer: &str) -> Result<()> {
    let tag_path = staging.join(TRANSFER_TAG);
    let tag = std::fs::read_to_string(&tag_path).ok();
    if tag.as_deref() == Some(transfer) {
        return Ok(());
    }
    if staging.exists() {
        std::fs::remove_dir_all(staging).map_err(io_err(staging))?;
    }
    std::fs::create_dir_all(staging).map_err(io_err(staging))?;
    files::write_new(&tag_path, transfer.as_bytes())?;
    Ok(())
}

/// The segment directories (and their parent) of `manifest` under `staging`.
fn manifest_dirs(staging: &Path, manifest: &Manifest) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = manifest
        .segments
        .iter()
        .map(|e| crate::storage::manifest::segment_dir(staging, e.id))
        .collect();
    dirs.push(staging.join(crate::storage::manifest::SEGMENTS_DIR));
    dirs
}

/// A transfer's name tags a directory: short, plain characters.
fn validate_transfer_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(
            ContractError::invalid("transfer", "must be 1 to 64 letters, digits, '-' or '_'")
                .into(),
        )
    }
}

/// `segments/<id>/<file>` with a known file name: nothing else may be written.
fn checked_file_path(file: &str) -> Result<&str> {
    let bad = || {
        ShardError::from(ContractError::invalid(
            "TransferFile.file",
            format!(
                "'{}' is not segments/<id>/<one of {}, deletes-<lsn>.bits>",
                longbow_common::error::quote(file),
                SEGMENT_FILES.join(", ")
            ),
        ))
    };
    let mut parts = file.split('/');
    let (Some(dir), Some(id), Some(name), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let deletes = name
        .strip_prefix("deletes-")
        .and_then(|r| r.strip_suffix(".bits"))
        .is_some_and(|lsn| !lsn.is_empty() && lsn.bytes().all(|b| b.is_ascii_digit()));
    if dir != crate::storage::manifest::SEGMENTS_DIR
        || id.is_empty()
        || !id.bytes().all(|b| b.is_ascii_digit())
        || id.parse::<u32>().is_err()
        || !(SEGMENT_FILES.contains(&name) || deletes)
    {
        return Err(bad());
    }
    Ok(file)
}

/// Swap two directories atomically (Linux `renameat2` with `RENAME_EXCHANGE`) and make the
/// swap durable.
fn exchange(a: &Path, b: &Path) -> Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|e| ShardError::Io {
            path: p.to_path_buf(),
            source: std::io::Error::other(e),
        })
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc != 0 {
        return Err(ShardError::Io {
            path: b.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    files::sync_dir(b.parent().unwrap_or(Path::new(".")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_segment_files_may_be_written() {
        for ok in [
            "segments/0/vectors.f32",
            "segments/12/graph.hnsw",
            "segments/3/ids.arrow",
            "segments/3/payload.arrow",
            "segments/3/deletes-00000000000000000042.bits",
        ] {
            assert!(checked_file_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "manifest.json",
            "segments/../replica.json",
            "segments/1/../../x",
            "segments//vectors.f32",
            "segments/1/vectors.f32/x",
            "/segments/1/vectors.f32",
            "segments/99999999999/vectors.f32",
            "segments/1/deletes-.bits",
            "segments/1/deletes-1x.bits",
            "wal/00000001.log",
        ] {
            let e = checked_file_path(bad).expect_err(bad);
            assert!(e.to_string().contains("TransferFile.file"), "{e}");
        }
    }

    #[test]
    fn transfer_names_are_plain() {
        assert!(validate_transfer_name("7-2-1700000000").is_ok());
        for bad in ["", "../x", "a/b", &"x".repeat(65)] {
            assert!(validate_transfer_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exchanging_directories_swaps_their_contents() {
        let t = tempfile::tempdir().expect("tempdir");
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir(&a).expect("a");
        std::fs::create_dir(&b).expect("b");
        std::fs::write(a.join("f"), b"A").expect("write a");
        std::fs::write(b.join("f"), b"B").expect("write b");
        exchange(&a, &b).expect("exchange");
        assert_eq!(std::fs::read(a.join("f")).expect("read a"), b"B");
        assert_eq!(std::fs::read(b.join("f")).expect("read b"), b"A");
    }
}
