//! A replica's epochs, kept in `epochs.json` beside its WAL: the highest epoch it accepted
//! (it refuses anything older, also after a restart) and where each epoch's entries begin in
//! its log (which lets a new primary find where a backup's log stops matching its own, as
//! Kafka's leader-epoch checkpoint does).
//!
//! The file is replaced atomically and made durable before the replica acts on a new epoch.
//! It holds no entries and never touches the WAL.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, ShardError};

/// File name under the replica directory.
pub const EPOCHS_FILE: &str = "epochs.json";

/// The durable epoch state of one replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epochs {
    /// Highest epoch accepted (0: never configured).
    pub current: u64,
    /// `(epoch, first LSN written in it)`, ascending in both.
    pub starts: Vec<(u64, u64)>,
}

impl Epochs {
    /// Load from `dir` (defaults when the file does not exist).
    pub fn load(dir: &Path) -> Result<Epochs> {
        let path = dir.join(EPOCHS_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ShardError::Corrupt {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Epochs::default()),
            Err(source) => Err(ShardError::Io { path, source }),
        }
    }

    /// Replace the file in `dir` with this state, durably.
    pub fn store(&self, dir: &Path) -> Result<()> {
        let path: PathBuf = dir.join(EPOCHS_FILE);
        let bytes = serde_json::to_vec(self).map_err(|e| ShardError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        longbow_common::disk::replace_file(&path, &bytes)
            .map_err(|source| ShardError::Io { path, source })
    }

    /// Record that entries of `epoch` begin at `first_lsn` (no-op when `epoch` has a start
    /// already); raises `current` to `epoch`. Returns whether anything changed.
    pub fn begin(&mut self, epoch: u64, first_lsn: u64) -> bool {
        let mut changed = self.raise(epoch);
        if self.starts.last().is_none_or(|(e, _)| *e < epoch) {
            self.starts.push((epoch, first_lsn));
            changed = true;
        }
        changed
    }

    /// Raise `current` to `epoch`; whether it grew.
    pub fn raise(&mut self, epoch: u64) -> bool {
        if epoch > self.current {
            self.current = epoch;
            true
        } else {
            false
        }
    }

    /// Epoch of the entry at `lsn` (0 when no epoch started at or before it).
    pub fn epoch_of(&self, lsn: u64) -> u64 {
        self.starts
            .iter()
            .take_while(|(_, start)| *start <= lsn)
            .last()
            .map(|(e, _)| *e)
            .unwrap_or(0)
    }

    /// The last LSN of this log that belongs to `epoch` or an earlier one, given the log
    /// ends at `last_lsn`: entries after it were written in a later epoch.
    pub fn end_of(&self, epoch: u64, last_lsn: u64) -> u64 {
        match self.starts.iter().find(|(e, _)| *e > epoch) {
            Some((_, start)) => start.saturating_sub(1).min(last_lsn),
            None => last_lsn,
        }
    }

    /// The epoch starts that label entries `first..=last`: the epoch of `first` (from
    /// `first`), then every epoch that begins after it up to `last`.
    pub fn covering(&self, first: u64, last: u64) -> Vec<(u64, u64)> {
        let mut out = vec![(self.epoch_of(first), first)];
        out.extend(
            self.starts
                .iter()
                .filter(|(_, s)| *s > first && *s <= last)
                .copied(),
        );
        out.retain(|(e, _)| *e > 0);
        out
    }

    /// Forget epoch starts after `keep` (the log was cut back to it).
    pub fn truncate(&mut self, keep: u64) {
        self.starts.retain(|(_, start)| *start <= keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diverging_suffix_is_found_from_the_epoch_starts() {
        // This log: epoch 1 from 1, epoch 3 from 101 (epoch 2 wrote nothing here).
        let mut mine = Epochs::default();
        assert!(mine.begin(1, 1));
        assert!(mine.begin(3, 101));
        assert!(!mine.begin(3, 150), "an epoch starts once");
        assert_eq!(mine.current, 3);
        assert_eq!(mine.epoch_of(100), 1);
        assert_eq!(mine.epoch_of(101), 3);
        assert_eq!(mine.epoch_of(0), 0);
        // A backup whose log ends at 105 in epoch 1: it keeps 1..=100 only.
        assert_eq!(mine.end_of(1, 200), 100);
        assert_eq!(mine.end_of(2, 200), 100);
        assert_eq!(mine.end_of(3, 200), 200);
        mine.truncate(100);
        assert_eq!(mine.starts, vec![(1, 1)]);
    }

    #[test]
    fn the_state_survives_a_reload() {
        let tmp = tempfile::tempdir().expect("tmp");
        assert_eq!(Epochs::load(tmp.path()).expect("load"), Epochs::default());
        let mut e = Epochs::default();
        e.begin(4, 9);
        e.raise(6);
        e.store(tmp.path()).expect("store");
        assert_eq!(Epochs::load(tmp.path()).expect("load"), e);
    }
}
