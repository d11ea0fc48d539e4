//! Segment transfer from a primary to one backup: used when the backup lacks entries the
//! primary's WAL no longer holds (a checkpoint deleted them), when its log diverged below
//! its own checkpoint, and for a new, empty member.
//!
//! The primary takes a checkpoint and hard-links its files under
//! `<data_dir>/snapshots/.transfers/` (the snapshot mechanism: the linked bytes never change
//! whatever the replica does next), sends every file in pieces of [`CATCH_UP_CHUNK`], asks
//! the backup to install them, and removes its links. The backup then holds the shard as of
//! that checkpoint and the usual catch-up sends the WAL after it. This never touches the
//! primary's own files and never holds its commit gate.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::link::{BackupLink, LinkError, CATCH_UP_CHUNK};
use super::PrimaryForward;
use crate::storage::snapshot::part_manifest;

impl PrimaryForward {
    /// Send `link`'s backup the files of a fresh checkpoint and have it install them.
    pub(super) async fn transfer(&self, link: &BackupLink) -> Result<(), LinkError> {
        let node = link.member.node;
        let local = |what: &str, e: &dyn std::fmt::Display| {
            link.error(format!("{what} on this primary: {e}"))
        };
        let replica = self
            .replica
            .upgrade()
            .ok_or_else(|| local("transfer", &"the replica is closing"))?;
        let name = format!(
            "{}-{}-{}-{}",
            self.cfg.epoch,
            node,
            self.key.shard,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros())
                .unwrap_or(0)
        );
        let dir = self
            .transfers_dir
            .join(format!("{}.{}", self.key.namespace, name));
        let started = Instant::now();
        let taken = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || {
                let part = replica.snapshot(dir.clone())?;
                Ok::<_, crate::error::ShardError>((part, part_manifest(&dir)?))
            })
            .await
            .map_err(|e| local("checkpointing for a transfer", &e))?
        };
        let outcome = match taken {
            Ok((_, manifest)) => self.send_files(link, &name, &dir, manifest).await,
            Err(e) => Err(local("checkpointing for a transfer", &e)),
        };
        let cleanup = dir.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(cleanup)).await;
        let (lsn, bytes) = outcome?;
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        self.counters.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
        tracing::info!(replica = %self.key, backup = node, checkpoint_lsn = lsn, bytes, secs = started.elapsed().as_secs_f64(), "sent a backup this primary's segment files");
        link.unsync();
        Ok(())
    }

    /// Send every file `manifest` lists from `dir`, then install; the checkpoint's LSN and
    /// the bytes sent.
    async fn send_files(
        &self,
        link: &BackupLink,
        name: &str,
        dir: &Path,
        manifest: crate::storage::Manifest,
    ) -> Result<(u64, u64), LinkError> {
        let local = |e: std::io::Error, path: &Path| {
            link.error(format!("reading {} on this primary: {e}", path.display()))
        };
        let mut sent = 0u64;
        for (rel, sum) in manifest.files() {
            let path: PathBuf = dir.join(&rel);
            let mut offset = 0u64;
            // Empty files are sent too: the backup must create them.
            loop {
                let piece = {
                    let at = path.clone();
                    tokio::task::spawn_blocking(move || read_piece(&at, offset))
                        .await
                        .map_err(|e| local(std::io::Error::other(e), &path))?
                        .map_err(|e| local(e, &path))?
                };
                let n = piece.len() as u64;
                link.transfer_file(name, &rel, offset, &piece).await?;
                offset += n;
                if n == 0 || offset >= sum.len {
                    break;
                }
            }
            sent += offset;
        }
        let json = serde_json::to_value(&manifest)
            .map_err(|e| link.error(format!("encoding the manifest: {e}")))?;
        let mut epochs = self.epochs.clone();
        epochs.truncate(manifest.checkpoint_lsn);
        let reply = link.install(name, json, epochs.starts, sent).await?;
        if reply.lsn != manifest.checkpoint_lsn {
            return Err(link.error(format!(
                "installed checkpoint {} but reports LSN {}",
                manifest.checkpoint_lsn, reply.lsn
            )));
        }
        Ok((manifest.checkpoint_lsn, sent))
    }
}

/// Up to [`CATCH_UP_CHUNK`] bytes of `path` from `offset` (empty at the end).
fn read_piece(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; CATCH_UP_CHUNK];
    let mut filled = 0;
    while filled < buf.len() {
        let n = f.read_at(&mut buf[filled..], offset + filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
}
