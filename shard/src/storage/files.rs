//! Durable file writes and checked reads.
//!
//! A file is written whole, `fsync`ed, and only then referenced; a replaced file is written
//! beside its target and renamed over it, then the directory is `fsync`ed, so a crash leaves
//! either the old or the new version, never a mix.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, ShardError};

/// Length and CRC32C of a file, as recorded in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    /// Bytes.
    pub len: u64,
    /// CRC32C (Castagnoli) of every byte.
    pub crc: u32,
}

impl FileSum {
    /// The sum of `bytes`.
    pub fn of(bytes: &[u8]) -> FileSum {
        FileSum {
            len: bytes.len() as u64,
            crc: crc32c::crc32c(bytes),
        }
    }
}

/// An I/O error on `path`.
pub fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ShardError + '_ {
    move |source| ShardError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Damage found in `path`.
pub fn corrupt(path: &Path, reason: impl Into<String>) -> ShardError {
    ShardError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Create `path` with `bytes` and `fsync` it (not its directory). Returns its sum.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<FileSum> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    Ok(FileSum::of(bytes))
}

/// `fsync` a directory, so entries created, renamed or removed in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    crate::wal::io::sync_dir(dir).map_err(io_err(dir))
}

/// Replace `path` with `bytes` atomically: temporary file, `fsync`, rename, directory `fsync`.
pub fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    longbow_common::disk::replace_file(path, bytes).map_err(io_err(path))
}

/// Read `path` whole and check it against `sum`.
pub fn read_checked(path: &Path, sum: &FileSum) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    matches(path, bytes.len() as u64, crc32c::crc32c(&bytes), sum)?;
    Ok(bytes)
}

/// Check `path` against `sum` without holding it in memory (it may be large); `fsync`s it
/// when `sync` is set.
pub fn check(path: &Path, sum: &FileSum, sync: bool) -> Result<()> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut len, mut crc) = (0u64, 0u32);
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        len += n as u64;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
    matches(path, len, crc, sum)?;
    if sync {
        f.sync_all().map_err(io_err(path))?;
    }
    Ok(())
}

/// Refuse a file whose length or checksum is not the manifest's.
fn matches(path: &Path, len: u64, crc: u32, sum: &FileSum) -> Result<()> {
    if len != sum.len {
        return Err(corrupt(
            path,
            format!("has {len} bytes, the manifest says {}", sum.len),
        ));
    }
    if crc != sum.crc {
        return Err(corrupt(
            path,
            format!(
                "checksum {crc:08x} does not match the manifest's {:08x}",
                sum.crc
            ),
        ));
    }
    Ok(())
}
