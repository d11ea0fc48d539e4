//! The rayon pools CPU-heavy shard work fans out on: searches on rayon's global pool,
//! indexing (linking rows into graphs, for new rows, merges and checkpoints alike) on a pool
//! of its own whose threads run at a lower scheduling priority (`nice`, default
//! [`DEFAULT_INDEX_NICE`]).
//!
//! Two pools, so a search never waits in a queue behind indexing tasks; the lower priority,
//! so that when every core is busy the kernel runs searches and the write path (decode, WAL,
//! acknowledgements) first, and indexing takes the time left. Indexing still gets every idle
//! core: a priority only matters while something else wants the CPU.
//!
//! This module owns only the pools and their priority; it must never decide what runs.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

/// The niceness of indexing threads unless set otherwise (0 is normal, 19 the lowest).
pub const DEFAULT_INDEX_NICE: i32 = 10;

static INDEX_NICE: AtomicI32 = AtomicI32::new(DEFAULT_INDEX_NICE);

/// Set the niceness of indexing threads (0..=19), before the first indexing work of the
/// process. Once the pool runs, another value is refused with the one it runs at.
pub fn set_index_nice(nice: i32) -> Result<(), i32> {
    let nice = nice.clamp(0, 19);
    if INDEXING.get().is_some() {
        let now = index_nice();
        return if now == nice { Ok(()) } else { Err(now) };
    }
    INDEX_NICE.store(nice, Ordering::Relaxed);
    Ok(())
}

/// The niceness indexing threads run at.
pub fn index_nice() -> i32 {
    INDEX_NICE.load(Ordering::Relaxed)
}

static INDEXING: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();

/// The indexing pool: one thread per core, started on first use (`None` when the OS
/// refused its threads: indexing then shares the search pool).
fn indexing() -> Option<&'static rayon::ThreadPool> {
    INDEXING
        .get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let nice = index_nice();
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|n| format!("index-{n}"))
                .start_handler(move |_| lower_priority(nice))
                .build()
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "could not start the indexing pool; indexing shares the search pool");
                })
                .ok()
        })
        .as_ref()
}

/// Run `work` in the indexing pool: rayon's parallel iterators inside it use that pool.
pub fn run_indexing<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    match indexing() {
        Some(pool) => pool.install(work),
        None => work(),
    }
}

/// Run this thread at niceness `nice` (raising niceness needs no privilege).
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    // SAFETY: gettid has no preconditions; setpriority with PRIO_PROCESS and a thread id
    // changes that thread only (Linux).
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice)
    };
    if rc != 0 {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(nice, error = %std::io::Error::last_os_error(),
                "could not lower the priority of indexing threads; they run at normal priority");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn my_nice() -> i32 {
        // SAFETY: as in lower_priority.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::getpriority(libc::PRIO_PROCESS, tid)
        }
    }

    #[test]
    fn indexing_runs_on_its_own_lower_priority_threads_and_searches_do_not() {
        let nice = index_nice();
        assert_eq!(nice, DEFAULT_INDEX_NICE);
        let (name, seen) = run_indexing(|| {
            let name = std::thread::current().name().map(str::to_string);
            (name, my_nice())
        });
        assert!(name.is_some_and(|n| n.starts_with("index-")));
        assert_eq!(seen, nice);
        let global = rayon::scope(|_| my_nice());
        assert_eq!(global, 0, "the global (search) pool keeps normal priority");
        assert_eq!(set_index_nice(3), Err(nice), "too late once the pool runs");
        assert_eq!(set_index_nice(nice), Ok(()));
    }
}
