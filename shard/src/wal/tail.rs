//! The log as replication sees it: appending entries whose LSNs a primary chose, handing the
//! encoded bytes of a group to the sender, reading the durable log back while it is written
//! (a primary catching a backup up), and cutting a closed log back to an LSN (a backup
//! dropping entries its new primary never had).
//!
//! Reading never blocks a commit for longer than a directory listing: files are read whole
//! outside the commit gate, and only entries at or below the durable LSN are handed out.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::entry::{self, HEADER_LEN};
use super::{io, io_err, list_files, Wal, WalError, WalFiles};

/// What [`WalFiles::read_from`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// Encoded entries from the asked LSN on (possibly none), and the last LSN among them
    /// (the asked LSN minus one when empty).
    Entries {
        /// Entries in the WAL encoding.
        bytes: Vec<u8>,
        /// LSN of the last entry in `bytes`.
        last: u64,
    },
    /// The asked LSN is no longer in the log: a checkpoint holds it and its file is gone.
    Gone,
}

impl Wal {
    /// Buffer one entry whose LSN the primary chose; it must follow the last one. Nothing is
    /// durable until [`Wal::commit`] returns.
    pub fn append_at(&mut self, lsn: u64, kind: u8, body: &[u8]) -> Result<(), WalError> {
        if lsn != self.last_lsn + 1 {
            return Err(WalError::Corrupt {
                file: self.dir.clone(),
                offset: 0,
                reason: format!(
                    "replicated entry {lsn} does not follow the log's last LSN {}",
                    self.last_lsn
                ),
            });
        }
        self.last_lsn = lsn;
        self.pending_first_lsn.get_or_insert(lsn);
        entry::encode(&mut self.pending, lsn, kind, body);
        Ok(())
    }

    /// The encoded entries buffered since the last commit (what a primary sends its backups).
    pub fn pending_entries(&self) -> &[u8] {
        &self.pending
    }

    /// Highest durable LSN.
    pub fn durable_lsn(&self) -> u64 {
        self.durable_lsn
    }
}

impl WalFiles {
    /// Highest durable LSN.
    pub fn durable_lsn(&self) -> u64 {
        self.durable_lsn.load(Ordering::Acquire)
    }

    /// Durable entries from LSN `from` on, in the WAL encoding, about `max_bytes` of them (at
    /// least one when there is one). [`Tail::Gone`] when `from` was checkpointed away.
    pub fn read_from(&self, from: u64, max_bytes: usize) -> Result<Tail, WalError> {
        let durable = self.durable_lsn();
        let empty = Tail::Entries {
            bytes: Vec::new(),
            last: from.saturating_sub(1),
        };
        if from > durable {
            return Ok(empty);
        }
        let files = list_files(&self.dir)?;
        // The file holding `from` is the last one starting at or before it.
        let Some(start) = files.iter().rposition(|(first, _)| *first <= from) else {
            return Ok(Tail::Gone);
        };
        let mut bytes = Vec::new();
        let mut last = from - 1;
        for (_, path) in &files[start..] {
            let buf = match std::fs::read(path) {
                Ok(b) => b,
                // Removed by a checkpoint between the listing and the read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(if last < from {
                        Tail::Gone
                    } else {
                        break_out(bytes, last)
                    })
                }
                Err(e) => return Err(io_err(path)(e)),
            };
            // A torn or in-progress tail ends the scan; it lies past the durable LSN.
            let (found, _) = entry::scan(&buf, 0);
            for e in found {
                if e.lsn < from || e.lsn <= last {
                    continue;
                }
                if e.lsn > durable || (bytes.len() >= max_bytes && !bytes.is_empty()) {
                    return Ok(break_out(bytes, last));
                }
                if e.lsn != last + 1 {
                    return Err(WalError::Corrupt {
                        file: path.clone(),
                        offset: 0,
                        reason: format!("entry {} follows {last} while reading the tail", e.lsn),
                    });
                }
                entry::encode(&mut bytes, e.lsn, e.kind, &e.body);
                last = e.lsn;
            }
        }
        Ok(break_out(bytes, last))
    }
}

fn break_out(bytes: Vec<u8>, last: u64) -> Tail {
    Tail::Entries { bytes, last }
}

/// Cut the closed log in `dir` back so that its last entry is `keep` (or earlier): files
/// starting after it are removed and the file holding it is cut after it. Every change is
/// made durable. The log must not be open.
pub fn truncate_after(dir: &Path, keep: u64) -> Result<u64, WalError> {
    let files = list_files(dir)?;
    let mut dropped = 0u64;
    for (first, path) in files.iter().rev() {
        if *first > keep {
            std::fs::remove_file(path).map_err(io_err(path))?;
            dropped += 1;
            continue;
        }
        let buf = std::fs::read(path).map_err(io_err(path))?;
        let (found, _) = entry::scan(&buf, 0);
        let mut end = 0usize;
        for e in &found {
            if e.lsn > keep {
                dropped += 1;
                continue;
            }
            end += HEADER_LEN + e.body.len();
        }
        if end < buf.len() {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err(path))?;
            f.set_len(end as u64).map_err(io_err(path))?;
            f.sync_all().map_err(io_err(path))?;
        }
        break;
    }
    io::sync_dir(dir).map_err(io_err(dir))?;
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::StdBackend;
    use std::sync::Arc;

    fn wal_with(dir: &Path, n: u32, segment: u64) -> Wal {
        let (mut wal, _) = Wal::open(dir, Arc::new(StdBackend), segment, 0).expect("open");
        for i in 0..n {
            wal.append(1, &[i as u8; 40]);
            wal.commit().expect("commit");
        }
        wal
    }

    fn lsns(bytes: &[u8]) -> Vec<u64> {
        entry::scan(bytes, 0).0.iter().map(|e| e.lsn).collect()
    }

    #[test]
    fn the_tail_reads_back_across_files_in_bounded_chunks() {
        let tmp = tempfile::tempdir().expect("tmp");
        let wal = wal_with(tmp.path(), 30, 256);
        let files = wal.files();
        let Tail::Entries { bytes, last } = files.read_from(5, 1 << 20).expect("read") else {
            panic!("tail gone")
        };
        assert_eq!(lsns(&bytes), (5..=30).collect::<Vec<_>>());
        assert_eq!(last, 30);
        let Tail::Entries { bytes, last } = files.read_from(5, 100).expect("read") else {
            panic!("tail gone")
        };
        assert!((5..30).contains(&last), "a chunk, not everything: {last}");
        assert_eq!(lsns(&bytes), (5..=last).collect::<Vec<_>>());
        assert_eq!(
            files.read_from(31, 100).expect("read"),
            Tail::Entries {
                bytes: Vec::new(),
                last: 30
            }
        );
        files.remove_through(20, 0).expect("remove");
        assert_eq!(files.read_from(2, 100).expect("read"), Tail::Gone);
    }

    #[test]
    fn pending_entries_are_not_handed_out_before_they_are_durable() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut wal = wal_with(tmp.path(), 3, 1 << 20);
        wal.append(1, b"pending");
        assert!(!wal.pending_entries().is_empty());
        let Tail::Entries { last, .. } = wal.files().read_from(1, 1 << 20).expect("read") else {
            panic!("tail gone")
        };
        assert_eq!(last, 3);
        assert!(wal.append_at(9, 1, b"x").is_err(), "LSNs must follow");
        wal.append_at(5, 1, b"next").expect("follows");
    }

    #[test]
    fn truncation_keeps_exactly_the_prefix_and_appending_resumes_after_it() {
        let tmp = tempfile::tempdir().expect("tmp");
        drop(wal_with(tmp.path(), 30, 256));
        truncate_after(tmp.path(), 17).expect("truncate");
        let (mut wal, found) = Wal::open(tmp.path(), Arc::new(StdBackend), 256, 0).expect("reopen");
        assert_eq!(
            found.iter().map(|e| e.lsn).collect::<Vec<_>>(),
            (1..=17).collect::<Vec<_>>()
        );
        assert_eq!(wal.append(1, b"after"), 18);
    }
}
