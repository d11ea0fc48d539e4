//! Probes that time how long writes and reads stay unavailable after a fault: one task sends
//! a small write spread over every shard, one sends a search, each as soon as the previous
//! call finished, and logs when each call was sent, when it finished and whether it worked.
//! The probe's writes are real acknowledged writes: they go into the oracle like the
//! workload's, so the audit checks them too.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use longbow_soak::client::{rows, Client};
use longbow_soak::oracle::vector;
use longbow_soak::workload::Run;
use parking_lot::Mutex;

/// First id the write probe uses (far above the workload's ids).
const PROBE_IDS: u64 = 1 << 50;
/// Rows per probe write: enough that every shard gets one with near certainty.
const ROWS_PER_WRITE: u64 = 16;
/// Pause between two probe calls.
const GAP: Duration = Duration::from_millis(20);

/// One probe call.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it was sent.
    pub sent: Instant,
    /// When it finished.
    pub done: Instant,
    /// Whether it succeeded.
    pub ok: bool,
}

/// The calls of every probe.
#[derive(Default)]
pub struct Log {
    /// Write probe calls.
    pub writes: Vec<Sample>,
    /// Read probe calls.
    pub reads: Vec<Sample>,
    /// Catalog probe calls ([`crate::catalog::changes`]).
    pub catalog: Vec<Sample>,
}

impl Log {
    /// How long after `at` writes (or reads) worked again: the first successful call sent at
    /// or after `at`, until it finished. `None` if none succeeded.
    pub fn resumed_after(samples: &[Sample], at: Instant) -> Option<Duration> {
        samples
            .iter()
            .filter(|s| s.ok && s.sent >= at)
            .map(|s| s.done.duration_since(at))
            .min()
    }
}

/// Send probe writes until the run stops.
pub async fn writes(run: Run, mut client: Client, log: Arc<Mutex<Log>>) {
    let s = run.settings.clone();
    let mut next = PROBE_IDS;
    while !run.stop.load(Ordering::Relaxed) {
        let ids: Vec<u64> = (next..next + ROWS_PER_WRITE).collect();
        next += ROWS_PER_WRITE;
        let data: Vec<f32> = ids
            .iter()
            .flat_map(|&id| vector(id, 0, s.dim, s.clusters))
            .collect();
        let sent = Instant::now();
        let result = match rows(&ids, &data, s.dim) {
            Ok(batch) => client.put(&s.namespace, batch).await,
            Err(e) => Err(e),
        };
        let ok = matches!(result, Ok(n) if n == ids.len() as u64);
        {
            let mut o = run.oracle.lock();
            for &id in &ids {
                if ok {
                    o.wrote(id, 0);
                } else {
                    o.unknown(id, None, Some(0));
                }
            }
        }
        log.lock().writes.push(Sample {
            sent,
            done: Instant::now(),
            ok,
        });
        tokio::time::sleep(GAP).await;
    }
}

/// Send probe searches until the run stops.
pub async fn reads(run: Run, mut client: Client, log: Arc<Mutex<Log>>) {
    let s = run.settings.clone();
    let mut n = 0u64;
    while !run.stop.load(Ordering::Relaxed) {
        n += 1;
        let q = vector(n | (1 << 62), 0, s.dim, s.clusters);
        let sent = Instant::now();
        let ok = client.search(&s.namespace, &q, s.k).await.is_ok();
        log.lock().reads.push(Sample {
            sent,
            done: Instant::now(),
            ok,
        });
        tokio::time::sleep(GAP).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumption_is_timed_from_the_fault_to_the_first_success_sent_after_it() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let log = vec![
            Sample {
                sent: at(0),
                done: at(10),
                ok: true,
            },
            Sample {
                sent: at(150),
                done: at(900),
                ok: false,
            },
            Sample {
                sent: at(920),
                done: at(2_400),
                ok: true,
            },
            Sample {
                sent: at(2_420),
                done: at(2_430),
                ok: true,
            },
        ];
        assert_eq!(
            Log::resumed_after(&log, at(100)),
            Some(Duration::from_millis(2_300))
        );
        assert_eq!(Log::resumed_after(&log, at(3_000)), None);
    }
}
