//! The fault schedule: which fault each trial injects, on which kind of node, for how long.
//! It is a pure function of the seed, so a failing run can be repeated exactly.

use std::time::Duration;

use longbow_soak::oracle::SplitMix;
use serde::Serialize;

/// A fault one trial injects into one shard node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// `kill -9`, then a restart on the same data directory.
    Kill,
    /// SIGSTOP (a node that hangs with its sockets open), then SIGCONT.
    Pause,
    /// Every packet between the node and the rest of the cluster dropped (nftables in its
    /// network namespace), then let through again.
    Partition,
}

impl FaultKind {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill -9 + restart",
            FaultKind::Pause => "SIGSTOP + SIGCONT",
            FaultKind::Partition => "partition + heal",
        }
    }
}

/// One planned trial.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    /// Trial number, from 0.
    pub trial: usize,
    /// The fault.
    pub kind: FaultKind,
    /// Which node to hit: an index into the nodes holding a primary at fault time (taken
    /// modulo their number).
    pub pick: usize,
    /// How long the fault lasts before it is healed.
    #[serde(serialize_with = "secs")]
    pub hold: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// `trials` trials from `seed`: each of `kinds` in about equal numbers, each held for a
/// time in `hold_min..=hold_max`.
pub fn plan(
    seed: u64,
    trials: usize,
    (hold_min, hold_max): (Duration, Duration),
    kinds: &[FaultKind],
) -> Vec<Planned> {
    let mut rng = SplitMix(seed ^ 0xC4A0_5EED);
    let span = hold_max.saturating_sub(hold_min).as_millis() as usize;
    (0..trials)
        .map(|trial| Planned {
            trial,
            kind: kinds[rng.below(kinds.len())],
            pick: rng.below(1 << 16),
            hold: hold_min + Duration::from_millis(rng.below(span + 1) as u64),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_schedule_and_holds_stay_in_bounds() {
        let (lo, hi) = (Duration::from_secs(2), Duration::from_secs(5));
        let kinds = [FaultKind::Kill, FaultKind::Pause];
        let a = plan(7, 40, (lo, hi), &kinds);
        let b = plan(7, 40, (lo, hi), &kinds);
        let c = plan(8, 40, (lo, hi), &kinds);
        let key = |p: &[Planned]| -> Vec<(FaultKind, usize, Duration)> {
            p.iter().map(|t| (t.kind, t.pick, t.hold)).collect()
        };
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&c));
        assert!(a.iter().all(|t| (lo..=hi).contains(&t.hold)));
        let kills = a.iter().filter(|t| t.kind == FaultKind::Kill).count();
        assert!((10..=30).contains(&kills), "both kinds are drawn: {kills}");
        let all = plan(
            7,
            60,
            (lo, hi),
            &[FaultKind::Kill, FaultKind::Pause, FaultKind::Partition],
        );
        assert!(all.iter().any(|t| t.kind == FaultKind::Partition));
    }
}
