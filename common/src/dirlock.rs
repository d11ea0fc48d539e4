//! The exclusive lock every role takes on its data directory, so two processes never open
//! the same files (two shard nodes on one directory would share a node identity and write one
//! WAL with clashing LSNs).
//!
//! The lock is `flock(LOCK_EX | LOCK_NB)` on `<dir>/LOCK`, held for the life of the process
//! (the kernel drops it when the process exits, even on `kill -9`, so a stale file never
//! blocks a restart). The file holds the holder's pid and role, which a refused process names.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Name of the lock file inside a data directory.
pub const LOCK_FILE: &str = "LOCK";

/// Why a data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DirLockError {
    /// Another process holds the lock.
    #[error(
        "data directory {dir} is in use by another longbow process ({holder}); stop it or give \
         this one another data directory"
    )]
    Held {
        /// The directory.
        dir: PathBuf,
        /// What the lock file says of the holder (`pid 123, shard`).
        holder: String,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock data directory {dir}: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A held lock on a data directory; dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    dir: PathBuf,
}

impl DirLock {
    /// Create `dir` if needed and lock it for `role` (`"shard"`, `"coordinator"`).
    pub fn acquire(dir: &Path, role: &str) -> Result<DirLock, DirLockError> {
        let io = |source| DirLockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        // SAFETY: flock on a file descriptor this function owns for the call's duration.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(DirLockError::Held {
                    dir: dir.to_path_buf(),
                    holder: if holder.is_empty() {
                        "holder unknown".into()
                    } else {
                        holder.to_string()
                    },
                });
            }
            return Err(io(err));
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "pid {}, {role}", std::process::id()).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(DirLock {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_directory_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DirLock::acquire(dir.path(), "shard").expect("first");
        let err = DirLock::acquire(dir.path(), "shard").expect_err("held");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}, shard", std::process::id())),
            "{msg}"
        );
        drop(first);
        DirLock::acquire(dir.path(), "shard").expect("released on drop");
    }
}
