//! Crash points: named places in the storage code where a test can make the process die
//! as abruptly as `kill -9` (no destructors, no flush), to prove that every step of sealing,
//! checkpointing, merging and WAL deletion is safe to interrupt.
//!
//! They are `fail` fail points, armed from the `FAILPOINTS` environment variable read at
//! start-up (`FAILPOINTS='checkpoint::before_manifest=return'`): the `return` action aborts
//! the process; `sleep(ms)` and `pause` also work, to open a window for a real `kill -9`.
//! Unarmed, a point costs one read of an empty registry. Never arm them in production.

/// Abort the process at crash point `name` (what an armed point's `return` action does).
pub fn crash(name: &str) -> ! {
    eprintln!("crash point {name} reached: aborting");
    std::process::abort()
}

/// A crash point named `$name`; see the module docs.
macro_rules! crash_point {
    ($name:literal) => {
        ::fail::fail_point!($name, |_| $crate::fault::crash($name))
    };
}
pub(crate) use crash_point;

/// Arm the crash points named in `FAILPOINTS`, if it is set; keep the returned guard for the
/// life of the process. A malformed `FAILPOINTS` stops start-up (fail's own check).
pub fn arm_from_env() -> Option<fail::FailScenario<'static>> {
    std::env::var_os("FAILPOINTS").map(|_| {
        tracing::warn!("crash points armed from FAILPOINTS: for tests only");
        fail::FailScenario::setup()
    })
}
