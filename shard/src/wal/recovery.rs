//! Recovering from a commit that failed because the disk was full.
//!
//! A full disk (ENOSPC, EDQUOT) is the one write failure the WAL recovers from without a
//! restart: the failed group was never acknowledged, so it is discarded, the file being
//! appended to is cut back to its durable length (the bytes a partial write left behind are
//! also what fills the disk), what remains is read back and checked, and the next commit
//! writes there again. Any other failure (EIO from `fdatasync` above all) still stops the
//! replica's writes: after such an error the kernel may have dropped pages it reported
//! durable, and only a restart that reads the log back can say what is on disk.

use std::fs::OpenOptions;

use super::entry::{self, ScanEnd};
use super::{io_err, Wal, WalError};

impl Wal {
    /// Discard the group whose commit failed on a full disk: roll the LSN sequence back to
    /// the last durable entry, cut the active file to its durable length, check it, and make
    /// the cut durable. An error here means the log cannot be trusted until a restart.
    pub fn discard_failed_group(&mut self) -> Result<(), WalError> {
        self.pending.clear();
        self.pending_first_lsn = None;
        self.last_lsn = self.durable_lsn;
        let gate = self.files.gate.clone();
        let _gate = gate.lock();
        self.take_retirement();
        self.file = None;
        let Some(path) = self.file_path.clone() else {
            return Ok(());
        };
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        f.set_len(self.file_len).map_err(io_err(&path))?;
        f.sync_all().map_err(io_err(&path))?;
        drop(f);
        let buf = std::fs::read(&path).map_err(io_err(&path))?;
        let (found, end) = entry::scan(&buf, 0);
        let last = found.last().map(|e| e.lsn);
        let expected = (self.file_len > 0).then_some(self.durable_lsn);
        if end != ScanEnd::Clean || last != expected {
            return Err(WalError::Corrupt {
                file: path,
                offset: buf.len(),
                reason: format!(
                    "after cutting a failed write the file ends at LSN {last:?}, expected {expected:?}"
                ),
            });
        }
        self.file = Some(self.backend.open_append(&path).map_err(io_err(&path))?);
        Ok(())
    }
}
