//! The fault schedule: which fault each trial injects, on which kind of node, for how long.
//! It is a pure function of the seed, so a failing run can be repeated exactly. Every run of
//! as many trials as there are kinds holds each kind once (in a seeded order), so a short run
//! still covers every fault.

use std::time::Duration;

use longbow_soak::oracle::SplitMix;
use serde::Serialize;

/// A fault one trial injects: into one shard node, or into the coordinator group.
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
    /// `kill -9` of the coordinator leading the catalog's Raft group, then a restart.
    KillLeader,
    /// The catalog leader cut off from every other process (clients still reach it), then
    /// let through again.
    PartitionLeader,
    /// `kill -9` of every coordinator, then all started again.
    RestartCoordinators,
}

impl FaultKind {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill -9 + restart",
            FaultKind::Pause => "SIGSTOP + SIGCONT",
            FaultKind::Partition => "partition + heal",
            FaultKind::KillLeader => "kill -9 catalog leader + restart",
            FaultKind::PartitionLeader => "partition catalog leader + heal",
            FaultKind::RestartCoordinators => "kill -9 all coordinators + restart",
        }
    }

    /// Whether it hits coordinators (rather than a shard node).
    pub fn on_coordinators(self) -> bool {
        matches!(
            self,
            FaultKind::KillLeader | FaultKind::PartitionLeader | FaultKind::RestartCoordinators
        )
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

/// `trials` trials from `seed`: each run of `kinds.len()` trials holds every kind once, in a
/// seeded order; each held for a time in `hold_min..=hold_max`.
pub fn plan(
    seed: u64,
    trials: usize,
    (hold_min, hold_max): (Duration, Duration),
    kinds: &[FaultKind],
) -> Vec<Planned> {
    let mut rng = SplitMix(seed ^ 0xC4A0_5EED);
    let span = hold_max.saturating_sub(hold_min).as_millis() as usize;
    let mut round: Vec<FaultKind> = Vec::new();
    (0..trials)
        .map(|trial| {
            if round.is_empty() {
                round = kinds.to_vec();
                // Fisher-Yates, drawn from the seed.
                for i in (1..round.len()).rev() {
                    round.swap(i, rng.below(i + 1));
                }
            }
            Planned {
                trial,
                kind: round.pop().unwrap_or(FaultKind::Kill),
                pick: rng.below(1 << 16),
                hold: hold_min + Duration::from_millis(rng.below(span + 1) as u64),
            }
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
    }

    #[test]
    fn every_run_of_as_many_trials_as_kinds_holds_each_kind_once() {
        let all = [
            FaultKind::Kill,
            FaultKind::Pause,
            FaultKind::Partition,
            FaultKind::KillLeader,
            FaultKind::PartitionLeader,
            FaultKind::RestartCoordinators,
        ];
        let d = Duration::from_secs(1);
        let p = plan(3, 6 * 5 + 2, (d, d), &all);
        for round in p.chunks(all.len()).filter(|r| r.len() == all.len()) {
            let mut kinds: Vec<&str> = round.iter().map(|t| t.kind.name()).collect();
            kinds.sort_unstable();
            kinds.dedup();
            assert_eq!(kinds.len(), all.len(), "{round:?}");
        }
        let orders: std::collections::BTreeSet<Vec<&str>> = p
            .chunks(all.len())
            .map(|r| r.iter().map(|t| t.kind.name()).collect())
            .collect();
        assert!(orders.len() > 1, "the order is drawn, not fixed");
    }
}
