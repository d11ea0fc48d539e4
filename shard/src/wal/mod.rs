//! The write-ahead log of one replica: segment files of CRC-checked entries with strictly
//! increasing LSNs, written in groups and made durable with one `fdatasync` per group.
//!
//! Start-up reads every file back ([`Wal::open`]): a torn final write is cut off with a
//! warning (it was never acknowledged); damage anywhere else stops start-up with an error
//! naming the file and offset, because silently skipping it would lose acknowledged data.
//!
//! The WAL stores opaque `(kind, body)` entries: what they mean is the replica's business.
//! Once a checkpoint holds every change up to an LSN, [`WalFiles::remove_through`] deletes
//! the files wholly at or below it, but for a retained tail that backups catch up from.

pub mod entry;
pub mod io;
mod recovery;
mod tail;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use entry::Entry;
use entry::ScanEnd;
pub use io::{LogBackend, StdBackend};
pub use tail::{truncate_after, Tail};

/// Errors of the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file operation failed.
    #[error("WAL I/O error on {path}: {source}")]
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An entry before the tail is damaged.
    #[error("WAL corrupt in {file} at offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damaged entry.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The closed files of a WAL: their total size, and removing those a checkpoint covers.
/// Shared between the WAL's writer and the replica's background task.
#[derive(Clone)]
pub struct WalFiles {
    dir: PathBuf,
    /// Bytes in closed files.
    closed_bytes: Arc<parking_lot::Mutex<u64>>,
    /// Bytes in the file being appended to.
    active_bytes: Arc<AtomicU64>,
    /// Bytes appended since the WAL was opened.
    appended: Arc<AtomicU64>,
    /// Highest durable LSN.
    durable_lsn: Arc<AtomicU64>,
    /// Set when removal deleted the file being appended to: the next commit starts a new one.
    retired: Arc<std::sync::atomic::AtomicBool>,
    /// Held by a commit from start to end, and by removal: removal never sees a commit
    /// half done.
    gate: Arc<parking_lot::Mutex<()>>,
}

impl WalFiles {
    /// Bytes in closed files.
    pub fn closed_bytes(&self) -> u64 {
        *self.closed_bytes.lock()
    }

    /// Bytes in every WAL file.
    pub fn disk_bytes(&self) -> u64 {
        self.closed_bytes() + self.active_bytes.load(Ordering::Relaxed)
    }

    /// Bytes appended since the WAL was opened (grows monotonically; checkpoints are due by
    /// its growth).
    pub fn appended_bytes(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    /// Delete the files whose entries all have LSNs `<= lsn` (a durable checkpoint holds
    /// them), except the newest of them up to `keep` bytes in all, kept so backups can catch
    /// up from the log. The file being appended to counts as covered once every durable entry
    /// is; when it is deleted the next commit starts a new file. Returns `(files, bytes)`
    /// removed.
    pub fn remove_through(&self, lsn: u64, keep: u64) -> Result<(usize, u64), WalError> {
        let _gate = self.gate.lock();
        let mut closed = self.closed_bytes.lock();
        let files = list_files(&self.dir)?;
        let len = |path: &Path| {
            std::fs::metadata(path)
                .map(|m| m.len())
                .map_err(io_err(path))
        };
        // Covered files, oldest first. A file's entries end just before the next file's
        // first LSN; the last file (being appended to) ends at the durable LSN.
        let mut covered: Vec<(&Path, u64, bool)> = Vec::new();
        for pair in files.windows(2) {
            let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
            if *next_first > lsn.saturating_add(1) {
                break;
            }
            covered.push((path, len(path)?, false));
        }
        if self.durable_lsn.load(Ordering::Acquire) <= lsn {
            if let Some((_, path)) = files.last() {
                covered.push((path, len(path)?, true));
            }
        }
        // Keep the newest covered files that fit in `keep`: a contiguous log tail.
        let mut cut = covered.len();
        let mut kept = 0u64;
        while cut > 0 && kept + covered[cut - 1].1 <= keep {
            kept += covered[cut - 1].1;
            cut -= 1;
        }
        let mut removed = (0, 0);
        for &(path, bytes, active) in &covered[..cut] {
            crate::fault::crash_point!("wal::before_remove_file");
            std::fs::remove_file(path).map_err(io_err(path))?;
            if active {
                self.retired.store(true, Ordering::Release);
                self.active_bytes.store(0, Ordering::Relaxed);
            } else {
                *closed = closed.saturating_sub(bytes);
            }
            removed.0 += 1;
            removed.1 += bytes;
        }
        if removed.0 > 0 {
            io::sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        }
        Ok(removed)
    }
}

impl WalError {
    /// Whether this is a full disk (or quota): the failed group can be discarded and
    /// writing resumed once space is freed (see [`Wal::discard_failed_group`]).
    pub fn is_disk_full(&self) -> bool {
        match self {
            WalError::Io { source, .. } => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::ENOSPC) | Some(libc::EDQUOT)
                )
            }
            WalError::Corrupt { .. } => false,
        }
    }
}

/// An open WAL, positioned for appending.
pub struct Wal {
    dir: PathBuf,
    backend: Arc<dyn LogBackend>,
    file: Option<Box<dyn LogFile>>,
    /// Path of the file being appended to (`None` between closing one and opening the next).
    file_path: Option<PathBuf>,
    /// Bytes of that file that are durable.
    file_len: u64,
    /// Highest LSN that is durable.
    durable_lsn: u64,
    files: WalFiles,
    segment_bytes: u64,
    last_lsn: u64,
    pending: Vec<u8>,
    pending_first_lsn: Option<u64>,
    syncs: Arc<AtomicU64>,
}

use io::LogFile;

fn file_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.wal")
}

fn list_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut files = Vec::new();
    for item in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let item = item.map_err(io_err(dir))?;
        let name = item.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        if let Ok(first) = stem.parse::<u64>() {
            files.push((first, item.path()));
        }
    }
    files.sort();
    Ok(files)
}

impl Wal {
    /// Open (creating if needed) the WAL in `dir`, returning it with every durable entry
    /// after `checkpoint_lsn` in LSN order (earlier ones are in a checkpoint already). A torn
    /// tail is truncated; corruption before the tail is an error, and so is a gap between
    /// the checkpoint and the first entry kept.
    pub fn open(
        dir: &Path,
        backend: Arc<dyn LogBackend>,
        segment_bytes: u64,
        checkpoint_lsn: u64,
    ) -> Result<(Wal, Vec<Entry>), WalError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let files = list_files(dir)?;
        let mut entries = Vec::new();
        let mut last_lsn = 0;
        let mut closed_bytes = 0;
        let mut tail: Option<(PathBuf, u64)> = None;
        for (i, (_, path)) in files.iter().enumerate() {
            let is_last = i + 1 == files.len();
            let buf = std::fs::read(path).map_err(io_err(path))?;
            let (found, end) = entry::scan(&buf, last_lsn);
            if let Some(e) = found.last() {
                last_lsn = e.lsn;
            }
            entries.extend(found.into_iter().filter(|e| e.lsn > checkpoint_lsn));
            let valid_len = match end {
                ScanEnd::Clean => buf.len(),
                ScanEnd::TornTail { offset } if is_last => {
                    tracing::warn!(
                        file = %path.display(),
                        offset,
                        dropped_bytes = buf.len() - offset,
                        "WAL ends in a torn write; truncating it (it was never acknowledged)"
                    );
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(io_err(path))?;
                    f.set_len(offset as u64).map_err(io_err(path))?;
                    f.sync_all().map_err(io_err(path))?;
                    offset
                }
                ScanEnd::TornTail { offset } => {
                    return Err(WalError::Corrupt {
                        file: path.clone(),
                        offset,
                        reason: "incomplete entry in a file that is not the last".into(),
                    })
                }
                ScanEnd::Corrupt { offset, reason } => {
                    return Err(WalError::Corrupt {
                        file: path.clone(),
                        offset,
                        reason,
                    })
                }
            };
            if is_last {
                tail = Some((path.clone(), valid_len as u64));
            } else {
                closed_bytes += valid_len as u64;
            }
        }
        if let Some(first) = entries.first() {
            if first.lsn != checkpoint_lsn + 1 {
                return Err(WalError::Corrupt {
                    file: dir.to_path_buf(),
                    offset: 0,
                    reason: format!(
                        "the checkpoint holds LSNs up to {checkpoint_lsn} but the log resumes at {}",
                        first.lsn
                    ),
                });
            }
        }
        let (file, file_path, file_len) = match tail {
            Some((path, len)) => (
                Some(backend.open_append(&path).map_err(io_err(&path))?),
                Some(path),
                len,
            ),
            None => (None, None, 0),
        };
        let wal = Wal {
            dir: dir.to_path_buf(),
            backend,
            file,
            file_path,
            file_len,
            durable_lsn: last_lsn.max(checkpoint_lsn),
            files: WalFiles {
                dir: dir.to_path_buf(),
                closed_bytes: Arc::new(parking_lot::Mutex::new(closed_bytes)),
                active_bytes: Arc::new(AtomicU64::new(file_len)),
                appended: Arc::new(AtomicU64::new(0)),
                durable_lsn: Arc::new(AtomicU64::new(last_lsn.max(checkpoint_lsn))),
                retired: Arc::new(std::sync::atomic::AtomicBool::new(false)),
                gate: Arc::new(parking_lot::Mutex::new(())),
            },
            segment_bytes: segment_bytes.max(1),
            last_lsn: last_lsn.max(checkpoint_lsn),
            pending: Vec::new(),
            pending_first_lsn: None,
            syncs: Arc::new(AtomicU64::new(0)),
        };
        Ok((wal, entries))
    }

    /// Highest LSN appended (durable or pending).
    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    /// Bytes in the WAL files.
    pub fn disk_bytes(&self) -> u64 {
        self.files.disk_bytes()
    }

    /// The handle that removes files a checkpoint covers.
    pub fn files(&self) -> WalFiles {
        self.files.clone()
    }

    /// Counter of `fdatasync` calls (group commits).
    pub fn sync_counter(&self) -> Arc<AtomicU64> {
        self.syncs.clone()
    }

    /// Buffer one entry with the next LSN; returns that LSN. Nothing is durable until
    /// [`Wal::commit`] returns.
    pub fn append(&mut self, kind: u8, body: &[u8]) -> u64 {
        let lsn = self.last_lsn + 1;
        self.last_lsn = lsn;
        self.pending_first_lsn.get_or_insert(lsn);
        entry::encode(&mut self.pending, lsn, kind, body);
        lsn
    }

    /// Write every buffered entry and `fdatasync` once. On error the WAL must not be used for
    /// writing again (the file state is unknown); the caller fails the replica.
    pub fn commit(&mut self) -> Result<(), WalError> {
        let Some(first) = self.pending_first_lsn.take() else {
            return Ok(());
        };
        let gate = self.files.gate.clone();
        let _gate = gate.lock();
        self.take_retirement();
        let need_new = self.file.is_none()
            || (self.file_len > 0
                && self.file_len + self.pending.len() as u64 > self.segment_bytes);
        if need_new {
            let mut closed = self.files.closed_bytes.lock();
            if let Some(mut old) = self.file.take() {
                let path = self.dir.clone();
                old.sync_data().map_err(io_err(&path))?;
                *closed += self.file_len;
                self.file_len = 0;
                self.file_path = None;
                self.files.active_bytes.store(0, Ordering::Relaxed);
            }
            let path = self.dir.join(file_name(first));
            self.file = Some(self.backend.open_append(&path).map_err(io_err(&path))?);
            self.file_path = Some(path);
            io::sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        }
        let dir = self.dir.clone();
        let Some(file) = self.file.as_mut() else {
            return Err(WalError::Io {
                path: dir,
                source: std::io::Error::other("no WAL file open"),
            });
        };
        file.append(&self.pending).map_err(io_err(&dir))?;
        file.sync_data().map_err(io_err(&dir))?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.file_len += self.pending.len() as u64;
        self.files
            .active_bytes
            .store(self.file_len, Ordering::Relaxed);
        self.files
            .appended
            .fetch_add(self.pending.len() as u64, Ordering::Relaxed);
        self.pending.clear();
        self.durable_lsn = self.last_lsn;
        self.files
            .durable_lsn
            .store(self.durable_lsn, Ordering::Release);
        Ok(())
    }

    /// If removal deleted the file being appended to, forget it: the next commit opens a new
    /// one. Call with the gate held.
    fn take_retirement(&mut self) {
        if self.files.retired.swap(false, Ordering::AcqRel) {
            self.file = None;
            self.file_path = None;
            self.file_len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, seg: u64) -> (Wal, Vec<Entry>) {
        Wal::open(dir, Arc::new(StdBackend), seg, 0).expect("open")
    }

    #[test]
    fn entries_survive_reopen_across_segment_files() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (mut wal, found) = open(tmp.path(), 256);
        assert!(found.is_empty());
        for i in 0..50u32 {
            wal.append(1, &[i as u8; 40]);
            wal.commit().expect("commit");
        }
        let files = list_files(tmp.path()).expect("list");
        assert!(files.len() > 5, "rotation made {} files", files.len());
        drop(wal);
        let (wal, found) = open(tmp.path(), 256);
        assert_eq!(found.len(), 50);
        assert_eq!(found[49].body, vec![49u8; 40]);
        assert_eq!(wal.last_lsn(), 50);
    }

    #[test]
    fn torn_tail_is_truncated_and_appending_resumes_after_it() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (mut wal, _) = open(tmp.path(), 1 << 20);
        for i in 0..3u8 {
            wal.append(1, &[i; 100]);
        }
        wal.commit().expect("commit");
        drop(wal);
        let (_, path) = list_files(tmp.path()).expect("list").pop().expect("a file");
        let len = std::fs::metadata(&path).expect("meta").len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        f.set_len(len - 30).expect("cut");
        let (mut wal, found) = open(tmp.path(), 1 << 20);
        assert_eq!(found.len(), 2);
        assert_eq!(wal.last_lsn(), 2);
        wal.append(1, b"after");
        wal.commit().expect("commit");
        drop(wal);
        let (_, found) = open(tmp.path(), 1 << 20);
        assert_eq!(
            found.iter().map(|e| e.lsn).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(found[2].body, b"after");
    }

    #[test]
    fn corrupt_middle_entry_stops_open_naming_file_and_offset() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (mut wal, _) = open(tmp.path(), 1 << 20);
        for i in 0..3u8 {
            wal.append(1, &[i; 100]);
        }
        wal.commit().expect("commit");
        drop(wal);
        let (_, path) = list_files(tmp.path()).expect("list").pop().expect("a file");
        let mut bytes = std::fs::read(&path).expect("read");
        let second = entry::HEADER_LEN + 100;
        bytes[second + entry::HEADER_LEN + 5] ^= 0xAA;
        std::fs::write(&path, &bytes).expect("write");
        let err = Wal::open(tmp.path(), Arc::new(StdBackend), 1 << 20, 0)
            .err()
            .expect("must fail");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("offset {second}")), "{msg}");
    }

    #[test]
    fn files_a_checkpoint_covers_are_removed_and_the_rest_replays() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (mut wal, _) = open(tmp.path(), 256);
        for i in 0..50u32 {
            wal.append(1, &[i as u8; 40]);
            wal.commit().expect("commit");
        }
        let files = list_files(tmp.path()).expect("list");
        let before = wal.disk_bytes();
        // Checkpoint at 30: every file whose entries all are <= 30 goes.
        let (removed, bytes) = wal.files().remove_through(30, 0).expect("remove");
        let left = list_files(tmp.path()).expect("list");
        assert_eq!(removed, files.len() - left.len());
        assert!(removed > 0);
        assert_eq!(wal.disk_bytes(), before - bytes);
        assert!(left[0].0 <= 31, "entry 31 is still on disk");
        drop(wal);
        let (wal, found) = Wal::open(tmp.path(), Arc::new(StdBackend), 256, 30).expect("open");
        assert_eq!(found.first().map(|e| e.lsn), Some(31));
        assert_eq!(found.len(), 20);
        assert_eq!(wal.last_lsn(), 50);
        // A checkpoint of every entry removes the file being appended to as well; the next
        // commit starts a new one and the sequence goes on.
        drop(wal);
        let (mut wal, _) = Wal::open(tmp.path(), Arc::new(StdBackend), 256, 30).expect("open");
        wal.files().remove_through(50, 0).expect("remove");
        assert!(list_files(tmp.path()).expect("list").is_empty());
        assert_eq!(wal.disk_bytes(), 0);
        assert_eq!(wal.append(1, b"next"), 51);
        wal.commit().expect("commit");
        drop(wal);
        let (_, found) = Wal::open(tmp.path(), Arc::new(StdBackend), 256, 50).expect("open");
        assert_eq!(found.iter().map(|e| e.lsn).collect::<Vec<_>>(), vec![51]);
    }

    #[test]
    fn a_checkpoint_keeps_the_newest_covered_files_that_fit_the_retention_for_catch_up() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (mut wal, _) = open(tmp.path(), 256);
        for i in 0..50u32 {
            wal.append(1, &[i as u8; 40]);
            wal.commit().expect("commit");
        }
        let sizes: Vec<u64> = list_files(tmp.path())
            .expect("list")
            .iter()
            .map(|(_, p)| std::fs::metadata(p).expect("size").len())
            .collect();
        let last_two: u64 = sizes[sizes.len() - 2..].iter().sum();
        // Everything is covered; room for the two newest files keeps exactly those.
        let (removed, _) = wal.files().remove_through(50, last_two).expect("remove");
        assert_eq!(removed, sizes.len() - 2);
        let left = list_files(tmp.path()).expect("list");
        assert_eq!(left.len(), 2);
        let first = left[0].0;
        assert!(first < 50, "entries below the checkpoint are kept");
        match wal.files().read_from(first, 1 << 20).expect("read") {
            Tail::Entries { last, .. } => assert_eq!(last, 50),
            Tail::Gone => panic!("the retained tail can be read from {first}"),
        }
        assert!(matches!(
            wal.files().read_from(first - 1, 1 << 20).expect("read"),
            Tail::Gone
        ));
        // The log goes on in the kept file, and a reopen replays only what follows the
        // checkpoint.
        assert_eq!(wal.append(1, b"next"), 51);
        wal.commit().expect("commit");
        drop(wal);
        let (_, found) = Wal::open(tmp.path(), Arc::new(StdBackend), 256, 50).expect("open");
        assert_eq!(found.iter().map(|e| e.lsn).collect::<Vec<_>>(), vec![51]);
    }

    #[test]
    fn a_gap_between_the_checkpoint_and_the_log_is_an_error() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (mut wal, _) = open(tmp.path(), 256);
        for i in 0..20u32 {
            wal.append(1, &[i as u8; 40]);
            wal.commit().expect("commit");
        }
        wal.files().remove_through(15, 0).expect("remove");
        drop(wal);
        let first = list_files(tmp.path()).expect("list")[0].0;
        assert!(first > 3);
        let err = Wal::open(tmp.path(), Arc::new(StdBackend), 256, 2)
            .err()
            .expect("entries 3.. are missing");
        assert!(err.to_string().contains("resumes at"), "{err}");
    }

    #[test]
    fn the_lsn_sequence_continues_after_the_checkpoint_when_no_entry_is_left() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (mut wal, found) = Wal::open(tmp.path(), Arc::new(StdBackend), 256, 77).expect("open");
        assert!(found.is_empty());
        assert_eq!(wal.append(1, b"next"), 78);
    }
}
