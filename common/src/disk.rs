//! Free space of a filesystem, and a ballast file: space set aside while the disk has room
//! and given back when it fills, so that the calls that free space (deleting a namespace
//! or a snapshot) can still be written to a store that would otherwise fail for lack of it.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Bytes available to this process on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `statvfs` only writes into `out`, a properly sized and aligned struct, and
    // reads the NUL-terminated path `c`, which outlives the call.
    let mut out: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut out) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(out.f_bavail as u64 * out.f_frsize as u64)
}

/// Bytes of the filesystem holding `path`.
pub fn total_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: as in `free_bytes`.
    let mut out: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as in `free_bytes`.
    if unsafe { libc::statvfs(c.as_ptr(), &mut out) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(out.f_blocks as u64 * out.f_frsize as u64)
}

/// A file of `size` real (not sparse) bytes at `path`.
pub struct Ballast {
    path: PathBuf,
    size: u64,
}

impl Ballast {
    /// The ballast at `path`, `size` bytes when present.
    pub fn new(path: PathBuf, size: u64) -> Ballast {
        Ballast { path, size }
    }

    /// Its size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether it is on disk.
    pub fn present(&self) -> bool {
        self.path.exists()
    }

    /// Write it (zeros, so the blocks are really allocated) if it is missing. Fails on a disk
    /// without the room, leaving nothing behind.
    pub fn fill(&self) -> std::io::Result<()> {
        if self.present() {
            return Ok(());
        }
        let tmp = self.path.with_extension("tmp");
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            let chunk = vec![0u8; 1 << 20];
            let mut left = self.size;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Give its space back. Returns whether it was there.
    pub fn release(&self) -> std::io::Result<bool> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Replace `path` with `bytes` atomically: write a temporary file beside it, `fsync` it,
/// rename it over `path`, then `fsync` the directory. A crash leaves the old file or the new
/// one, never a mix.
pub fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    std::fs::File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ballast_takes_real_space_and_gives_it_back() {
        let tmp = tempfile::tempdir().expect("tmp");
        let b = Ballast::new(tmp.path().join("BALLAST"), 3 << 20);
        assert!(!b.present());
        b.fill().expect("fill");
        let meta = std::fs::metadata(tmp.path().join("BALLAST")).expect("meta");
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 >= 3 << 20, "allocated, not sparse");
        assert!(b.release().expect("release"));
        assert!(!b.present() && !b.release().expect("again"));
        assert!(free_bytes(tmp.path()).expect("statvfs") > 0);
        assert!(total_bytes(tmp.path()).expect("statvfs") >= free_bytes(tmp.path()).expect("free"));
    }
}
