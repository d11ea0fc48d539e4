//! File I/O behind the WAL, kept to a small trait so another backend (io_uring) can replace
//! the portable one without touching the log logic.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

/// An append-only log file.
pub trait LogFile: Send {
    /// Append bytes at the end of the file (not yet durable).
    fn append(&mut self, data: &[u8]) -> std::io::Result<()>;
    /// Make every appended byte durable (`fdatasync`).
    fn sync_data(&mut self) -> std::io::Result<()>;
}

/// Opens log files.
pub trait LogBackend: Send + Sync {
    /// Backend name, for logs and metrics.
    fn name(&self) -> &'static str;
    /// Open `path` for appending, creating it if needed.
    fn open_append(&self, path: &Path) -> std::io::Result<Box<dyn LogFile>>;
}

/// The portable backend: `std::fs` writes and `fdatasync`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdBackend;

struct StdLogFile(File);

impl LogFile for StdLogFile {
    fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.write_all(data)
    }

    fn sync_data(&mut self) -> std::io::Result<()> {
        self.0.sync_data()
    }
}

impl LogBackend for StdBackend {
    fn name(&self) -> &'static str {
        "std"
    }

    fn open_append(&self, path: &Path) -> std::io::Result<Box<dyn LogFile>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Box::new(StdLogFile(file)))
    }
}

/// `fsync` a directory so a file created or renamed in it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
