//! Shared worker pools: a fixed set of threads that runs the jobs of every replica on a node
//! (the committers on one pool, the background work on another), so the number of threads
//! does not grow with the number of namespaces.
//!
//! A [`Job`] runs one bounded step at a time, never on two threads at once, and says when it
//! wants to run again: at once (behind the jobs already waiting), at a given time, when next
//! woken, or never. A wake-up that arrives while the job runs makes it run once more, so no
//! wake-up is lost. Jobs are served in arrival order, which keeps one busy replica from
//! starving the others.
//!
//! A step must never wait for another job of the same pool (with every thread waiting, none
//! would be left to run it), and it must not hold a lock a caller of [`JobHandle::wake`]
//! could be holding.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// What a job wants after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Run again once woken.
    Wait,
    /// Run again as soon as a thread is free (more work is left).
    Again,
    /// Run again at this time, or earlier if woken.
    At(Instant),
    /// Never run again; the job is dropped.
    Done,
}

/// One replica's share of a pool's work.
pub trait Job: Send + 'static {
    /// Run one bounded step. `timer` is true when the step runs because the time the last
    /// step asked for ([`Next::At`]) has come, with no wake-up since.
    fn step(&mut self, timer: bool) -> Next;
}

/// A fixed set of named threads running jobs. Cloning shares the threads; they exit once the
/// pool and every handle of its jobs are dropped.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.shared.name)
            .field("threads", &self.shared.threads)
            .finish()
    }
}

struct Shared {
    name: String,
    threads: usize,
    queue: Mutex<Queue>,
    ready: Condvar,
}

#[derive(Default)]
struct Queue {
    ready: VecDeque<Arc<Entry>>,
    timers: BinaryHeap<Timer>,
    closed: bool,
}

/// Closes the pool when the last clone of it goes away.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.queue.lock().closed = true;
        self.0.ready.notify_all();
    }
}

struct Timer {
    at: Instant,
    entry: Weak<Entry>,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    /// Earliest first in the (max-)heap.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Queued,
    Running,
    /// Woken while running: run again after this step.
    RunningWoken,
    Done,
}

struct Control {
    phase: Phase,
    /// The time the job asked to run at, while idle.
    timer_at: Option<Instant>,
    /// The queued run was started by the timer.
    fired: bool,
}

struct Entry {
    job: Mutex<Option<Box<dyn Job>>>,
    control: Mutex<Control>,
    done: Condvar,
}

/// A job registered with a pool.
#[derive(Clone)]
pub struct JobHandle {
    entry: Arc<Entry>,
    pool: Pool,
}

impl Pool {
    /// Start a pool of `threads` threads (at least one) named `<name>-<n>`.
    pub fn new(name: &str, threads: usize) -> std::io::Result<Pool> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            name: name.to_string(),
            threads,
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        });
        for n in 0..threads {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || work(&s))?;
        }
        Ok(Pool {
            _owner: Arc::new(Owner(shared.clone())),
            shared,
        })
    }

    /// Threads in the pool.
    pub fn threads(&self) -> usize {
        self.shared.threads
    }

    /// Jobs waiting for a thread right now.
    pub fn queued(&self) -> usize {
        self.shared.queue.lock().ready.len()
    }

    /// Register a job. It first runs when woken.
    pub fn spawn(&self, job: impl Job) -> JobHandle {
        JobHandle {
            entry: Arc::new(Entry {
                job: Mutex::new(Some(Box::new(job))),
                control: Mutex::new(Control {
                    phase: Phase::Idle,
                    timer_at: None,
                    fired: false,
                }),
                done: Condvar::new(),
            }),
            pool: self.clone(),
        }
    }
}

impl JobHandle {
    /// Make the job run soon (once more if it is running now). Cheap; never blocks on a step.
    pub fn wake(&self) {
        let mut c = self.entry.control.lock();
        match c.phase {
            Phase::Idle => {
                c.phase = Phase::Queued;
                drop(c);
                push_ready(&self.pool.shared, self.entry.clone());
            }
            Phase::Running => c.phase = Phase::RunningWoken,
            Phase::Queued | Phase::RunningWoken | Phase::Done => {}
        }
    }

    /// Block until the job has returned [`Next::Done`] (call [`JobHandle::wake`] first if it
    /// needs a step to notice why it should finish).
    pub fn wait_done(&self) {
        let mut c = self.entry.control.lock();
        while c.phase != Phase::Done {
            self.entry.done.wait(&mut c);
        }
    }

    /// Whether the job has finished.
    pub fn is_done(&self) -> bool {
        self.entry.control.lock().phase == Phase::Done
    }
}

fn push_ready(shared: &Shared, entry: Arc<Entry>) {
    shared.queue.lock().ready.push_back(entry);
    shared.ready.notify_one();
}

/// A worker thread: take the next ready job (firing due timers first), run a step, file the
/// job by what it asked for.
fn work(shared: &Shared) {
    while let Some(entry) = next_ready(shared) {
        let timer = {
            let mut c = entry.control.lock();
            c.phase = Phase::Running;
            c.timer_at = None;
            std::mem::take(&mut c.fired)
        };
        let next = {
            let mut job = entry.job.lock();
            match job.as_mut() {
                Some(j) => match catch_unwind(AssertUnwindSafe(|| j.step(timer))) {
                    Ok(next) => next,
                    Err(_) => {
                        tracing::error!(pool = %shared.name, "a job panicked; it is stopped");
                        Next::Done
                    }
                },
                None => Next::Done,
            }
        };
        file(shared, &entry, next);
    }
}

/// Put a job that just ran where its answer says.
fn file(shared: &Shared, entry: &Arc<Entry>, next: Next) {
    let mut c = entry.control.lock();
    let woken = c.phase == Phase::RunningWoken;
    match next {
        Next::Done => {
            drop(c);
            // Dropping the job closes what it owns (its WAL, its channels) before anyone
            // waiting for it goes on.
            entry.job.lock().take();
            entry.control.lock().phase = Phase::Done;
            entry.done.notify_all();
        }
        Next::Again => {
            c.phase = Phase::Queued;
            drop(c);
            push_ready(shared, entry.clone());
        }
        Next::Wait | Next::At(_) if woken => {
            c.phase = Phase::Queued;
            drop(c);
            push_ready(shared, entry.clone());
        }
        Next::Wait => c.phase = Phase::Idle,
        Next::At(at) => {
            c.phase = Phase::Idle;
            c.timer_at = Some(at);
            drop(c);
            shared.queue.lock().timers.push(Timer {
                at,
                entry: Arc::downgrade(entry),
            });
            shared.ready.notify_one();
        }
    }
}

/// Wait for the next job to run; `None` once the pool is closed.
fn next_ready(shared: &Shared) -> Option<Arc<Entry>> {
    let mut q = shared.queue.lock();
    loop {
        if q.closed {
            return None;
        }
        if let Some(e) = q.ready.pop_front() {
            return Some(e);
        }
        let now = Instant::now();
        let mut due = Vec::new();
        while q.timers.peek().is_some_and(|t| t.at <= now) {
            if let Some(t) = q.timers.pop() {
                due.push(t);
            }
        }
        if !due.is_empty() {
            drop(q);
            for t in due {
                fire(shared, t);
            }
            q = shared.queue.lock();
            continue;
        }
        match q.timers.peek().map(|t| t.at) {
            Some(at) => {
                shared.ready.wait_until(&mut q, at);
            }
            None => shared.ready.wait(&mut q),
        }
    }
}

/// Queue the job of a timer that came due, unless it was woken or re-armed since.
fn fire(shared: &Shared, t: Timer) {
    let Some(entry) = t.entry.upgrade() else {
        return;
    };
    let mut c = entry.control.lock();
    if c.phase == Phase::Idle && c.timer_at == Some(t.at) {
        c.phase = Phase::Queued;
        c.timer_at = None;
        c.fired = true;
        drop(c);
        push_ready(shared, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
    use std::time::Duration;

    struct Counter {
        runs: Arc<AtomicUsize>,
        timers: Arc<AtomicUsize>,
        plan: Vec<Next>,
    }

    impl Job for Counter {
        fn step(&mut self, timer: bool) -> Next {
            self.runs.fetch_add(1, AtomicOrdering::SeqCst);
            if timer {
                self.timers.fetch_add(1, AtomicOrdering::SeqCst);
            }
            if self.plan.is_empty() {
                Next::Done
            } else {
                self.plan.remove(0)
            }
        }
    }

    fn counter(plan: Vec<Next>) -> (Counter, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let runs = Arc::new(AtomicUsize::new(0));
        let timers = Arc::new(AtomicUsize::new(0));
        (
            Counter {
                runs: runs.clone(),
                timers: timers.clone(),
                plan,
            },
            runs,
            timers,
        )
    }

    #[test]
    fn a_job_runs_only_when_woken_and_again_until_it_is_done() {
        let pool = Pool::new("test", 2).expect("pool");
        let (job, runs, _) = counter(vec![Next::Again, Next::Again, Next::Wait]);
        let h = pool.spawn(job);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(runs.load(AtomicOrdering::SeqCst), 0, "not woken yet");
        h.wake();
        let deadline = Instant::now() + Duration::from_secs(5);
        while runs.load(AtomicOrdering::SeqCst) < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            runs.load(AtomicOrdering::SeqCst),
            3,
            "Again twice, then Wait"
        );
        assert!(!h.is_done());
        h.wake();
        h.wait_done();
        assert_eq!(runs.load(AtomicOrdering::SeqCst), 4);
    }

    #[test]
    fn a_timer_runs_the_job_and_says_so() {
        let pool = Pool::new("test", 1).expect("pool");
        let at = Instant::now() + Duration::from_millis(30);
        let (job, runs, timers) = counter(vec![Next::At(at)]);
        let h = pool.spawn(job);
        h.wake();
        h.wait_done();
        assert!(Instant::now() >= at);
        assert_eq!(runs.load(AtomicOrdering::SeqCst), 2);
        assert_eq!(timers.load(AtomicOrdering::SeqCst), 1);
    }

    #[test]
    fn a_wake_supersedes_a_pending_timer() {
        let pool = Pool::new("test", 1).expect("pool");
        let far = Instant::now() + Duration::from_secs(3600);
        let (job, runs, timers) = counter(vec![Next::At(far)]);
        let h = pool.spawn(job);
        h.wake();
        while runs.load(AtomicOrdering::SeqCst) < 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        h.wake();
        h.wait_done();
        assert_eq!(timers.load(AtomicOrdering::SeqCst), 0);
    }

    /// Wakes racing with steps: every wake-up is followed by at least one step that starts
    /// after it, so a job never misses work it was woken for.
    #[test]
    fn no_wake_up_is_lost() {
        struct Drain {
            pending: Arc<AtomicUsize>,
            seen: Arc<AtomicUsize>,
        }
        impl Job for Drain {
            fn step(&mut self, _: bool) -> Next {
                let n = self.pending.swap(0, AtomicOrdering::SeqCst);
                self.seen.fetch_add(n, AtomicOrdering::SeqCst);
                Next::Wait
            }
        }
        let pool = Pool::new("test", 2).expect("pool");
        let pending = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicUsize::new(0));
        let h = pool.spawn(Drain {
            pending: pending.clone(),
            seen: seen.clone(),
        });
        let total = 20_000;
        for _ in 0..total {
            pending.fetch_add(1, AtomicOrdering::SeqCst);
            h.wake();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.load(AtomicOrdering::SeqCst) < total && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(seen.load(AtomicOrdering::SeqCst), total);
    }

    #[test]
    fn a_panicking_job_is_stopped_and_the_pool_keeps_serving() {
        struct Boom;
        impl Job for Boom {
            fn step(&mut self, _: bool) -> Next {
                panic!("boom")
            }
        }
        let pool = Pool::new("test", 1).expect("pool");
        let bad = pool.spawn(Boom);
        bad.wake();
        bad.wait_done();
        let (job, runs, _) = counter(vec![]);
        let good = pool.spawn(job);
        good.wake();
        good.wait_done();
        assert_eq!(runs.load(AtomicOrdering::SeqCst), 1);
    }
}
