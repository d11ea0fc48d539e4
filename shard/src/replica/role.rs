//! Who may change a replica: its role and epoch in the replica set, whether it is fenced, and
//! the hook through which a primary makes each group durable on its in-sync backups before
//! the group is acknowledged.
//!
//! The committer holds the [`Gate`] for a whole step, so a new configuration, a probe or the
//! last step of a backup's catch-up never lands in the middle of a group. The gate knows no
//! network: the replication layer plugs a [`Forward`] into it.

use std::sync::Arc;

use longbow_common::replication_api::Role;

use super::epoch::Epochs;

/// Makes a primary's groups durable on its in-sync backups (implemented by the replication
/// layer).
pub trait Forward: Send + Sync {
    /// Start sending `entries` (LSNs `first..=last` in the WAL encoding) to every in-sync
    /// backup. The returned wait resolves once each of them has them durable, or once the
    /// ones that failed were taken out of the in-sync set through the catalog (it then names
    /// them); an error means the group must not be acknowledged. Called with the gate held.
    fn forward(self: Arc<Self>, first: u64, last: u64, entries: Vec<u8>) -> ForwardWait;
}

/// What a forward ends with: the members taken out of the in-sync set on the way, or why the
/// group must not be acknowledged.
pub type Forwarded = Result<Vec<u64>, String>;

/// The outcome of a [`Forward::forward`], waited for after the local sync.
pub struct ForwardWait(Box<dyn FnOnce() -> Forwarded + Send>);

impl ForwardWait {
    /// A wait that runs `f`.
    pub fn new(f: impl FnOnce() -> Forwarded + Send + 'static) -> Self {
        ForwardWait(Box::new(f))
    }

    /// Already done.
    pub fn ready() -> Self {
        ForwardWait::new(|| Ok(Vec::new()))
    }

    /// Block until the backups answered.
    pub fn wait(self) -> Forwarded {
        (self.0)()
    }
}

/// The replica's place in its replica set.
pub struct Gate {
    /// Durable epoch state.
    pub epochs: Epochs,
    /// Role at `epochs.current` (`None` until a coordinator configures the replica after it
    /// opened: it then takes writes without an epoch only, as a stand-alone replica).
    pub role: Option<Role>,
    /// The in-sync set a primary works with.
    pub in_sync: Vec<u64>,
    /// A primary's link to its backups (`None`: no backups, or not a primary).
    pub forward: Option<Arc<dyn Forward>>,
    /// Why a primary refuses writes until it is configured again.
    pub fenced: Option<String>,
    /// A backup appends entries of an epoch only after that epoch's primary probed it since
    /// the replica opened (so a log that diverged is always cut back first).
    pub probed_epoch: u64,
}

impl Gate {
    /// A gate for a replica just opened with `epochs`.
    pub fn new(epochs: Epochs) -> Gate {
        Gate {
            epochs,
            role: None,
            in_sync: Vec::new(),
            forward: None,
            fenced: None,
            probed_epoch: 0,
        }
    }
}
