//! The chaos report: what ran, what each trial did and how long the cluster took to serve
//! again, the invariant checks, and whether the run passed. Written as `report.json` and
//! `report.md`.

use std::path::Path;

use anyhow::Result;
use longbow_soak::audit::Audit;
use serde::Serialize;

use crate::catalog::CatalogAudit;
use crate::schedule::FaultKind;

/// What one trial did and measured.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    /// Trial number.
    pub trial: usize,
    /// The fault.
    pub kind: FaultKind,
    /// The node it hit.
    pub victim: String,
    /// Shards whose primary that node held when it was hit.
    pub primaries_held: usize,
    /// How long the fault lasted.
    pub hold_secs: f64,
    /// From the fault to the first acknowledged probe write sent after it.
    pub writes_resumed_secs: Option<f64>,
    /// From the fault to the first answered probe search sent after it.
    pub reads_resumed_secs: Option<f64>,
    /// From the fault to the first acknowledged catalog change sent after it.
    pub catalog_resumed_secs: Option<f64>,
    /// From healing the fault to every replica set whole and caught up.
    pub whole_again_secs: f64,
}

/// p50 and p99 of resumption times over a kind of trial.
#[derive(Debug, Clone, Serialize)]
pub struct Resumption {
    /// The fault.
    pub kind: FaultKind,
    /// Trials of that kind.
    pub trials: usize,
    /// Writes: p50, p99, max (seconds).
    pub writes: [f64; 3],
    /// Reads: p50, p99, max (seconds).
    pub reads: [f64; 3],
    /// Catalog changes: p50, p99, max (seconds).
    pub catalog: [f64; 3],
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// CPU and cores.
    pub machine: String,
    /// The command line's settings.
    pub settings: serde_json::Value,
    /// Every trial.
    pub trials: Vec<Trial>,
    /// Resumption percentiles by fault kind.
    pub resumption: Vec<Resumption>,
    /// Acknowledged changes (writes and deletes) over the run.
    pub acknowledged: u64,
    /// Workload calls that failed (expected during faults; their writes are audited as
    /// uncertain).
    pub failed_calls: u64,
    /// The final audit of every id the run touched.
    pub audit: Audit,
    /// The catalog checks: coordinators agree, acknowledged changes kept, only retryable
    /// refusals.
    pub catalog: CatalogAudit,
    /// Search results holding an id whose delete was acknowledged before the search.
    pub deleted_returned: u64,
    /// Each shard's members as `(node, lsn, rows)` after healing.
    pub replicas: Vec<Vec<(u64, u64, u64)>>,
    /// Mean recall@k against exact search after healing.
    pub recall: f64,
    /// Lowest acceptable recall.
    pub min_recall: f64,
    /// Why the run failed (empty: it passed).
    pub failures: Vec<String>,
    /// Whether it passed.
    pub passed: bool,
}

/// Nearest-rank percentile `p` (0–100) of `v`; 0 for none.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Resumption percentiles of the trials of `kind`.
pub fn resumption(trials: &[Trial], kind: FaultKind) -> Resumption {
    let of = |f: fn(&Trial) -> Option<f64>| -> [f64; 3] {
        let v: Vec<f64> = trials
            .iter()
            .filter(|t| t.kind == kind)
            .filter_map(f)
            .collect();
        [
            percentile(&v, 50.0),
            percentile(&v, 99.0),
            percentile(&v, 100.0),
        ]
    };
    Resumption {
        kind,
        trials: trials.iter().filter(|t| t.kind == kind).count(),
        writes: of(|t| t.writes_resumed_secs),
        reads: of(|t| t.reads_resumed_secs),
        catalog: of(|t| t.catalog_resumed_secs),
    }
}

impl longbow_soak::Outcome for Report {
    fn markdown(&self) -> String {
        Report::markdown(self)
    }

    fn passed(&self) -> bool {
        self.passed
    }
}

impl Report {
    /// Decide pass or fail from the checks.
    pub fn judge(&mut self) {
        let a = &self.audit;
        let mut f = Vec::new();
        if !a.clean() {
            f.push(format!(
                "audit: {} lost, {} stale, {} resurrected, {} uncertain in a state they do not allow",
                a.lost, a.stale, a.resurrected, a.uncertain_bad
            ));
        }
        if self.deleted_returned > 0 {
            f.push(format!(
                "{} search results held ids deleted before the search",
                self.deleted_returned
            ));
        }
        for (shard, members) in self.replicas.iter().enumerate() {
            let first = members.first().map(|m| (m.1, m.2));
            if members.iter().any(|m| Some((m.1, m.2)) != first) {
                f.push(format!("shard {shard}: replicas differ: {members:?}"));
            }
        }
        if self.recall < self.min_recall {
            f.push(format!(
                "recall@k {:.3} < {:.3}",
                self.recall, self.min_recall
            ));
        }
        for t in &self.trials {
            if t.writes_resumed_secs.is_none()
                || t.reads_resumed_secs.is_none()
                || t.catalog_resumed_secs.is_none()
            {
                f.push(format!("trial {}: the cluster never served again", t.trial));
            }
        }
        f.extend(self.catalog.failures());
        self.failures.extend(f);
        self.passed = self.failures.is_empty();
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let a = &self.audit;
        let mut m = format!(
            "# Chaos run: {}\n\nMachine: {}\n\n",
            if self.passed { "passed" } else { "FAILED" },
            self.machine
        );
        m += &format!(
            "| trials | acknowledged changes | failed calls | ids audited | lost | stale | deleted returned | uncertain (allowed) | recall@k |\n|---|---|---|---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {} | {} | {} | {:.3} |\n\n",
            self.trials.len(),
            self.acknowledged,
            self.failed_calls,
            a.checked,
            a.lost,
            a.stale,
            a.resurrected + self.deleted_returned,
            a.uncertain_ok,
            self.recall
        );
        let c = &self.catalog;
        m += &format!(
            "| coordinators | catalog changes kept / deleted (checked) | lost | undone | refused (non-retryable) | agree |\n|---|---|---|---|---|---|\n| {} | {} / {} | {} | {} | {} | {} |\n\n",
            c.coordinators,
            c.kept,
            c.deleted,
            c.lost.len(),
            c.undeleted.len(),
            c.refused,
            if c.diverged.is_none() { "yes" } else { "NO" }
        );
        let three = |v: [f64; 3]| format!("{:.2} / {:.2} / {:.2}", v[0], v[1], v[2]);
        m += "| fault | trials | writes resumed p50 / p99 / max (s) | reads resumed p50 / p99 / max (s) | catalog changes resumed p50 / p99 / max (s) |\n|---|---|---|---|---|\n";
        for r in &self.resumption {
            m += &format!(
                "| {} | {} | {} | {} | {} |\n",
                r.kind.name(),
                r.trials,
                three(r.writes),
                three(r.reads),
                three(r.catalog)
            );
        }
        m += "\n| trial | fault | process | primaries held | held (s) | writes resumed (s) | reads resumed (s) | catalog resumed (s) | whole again (s) |\n|---|---|---|---|---|---|---|---|---|\n";
        let opt = |v: Option<f64>| v.map_or("never".to_string(), |v| format!("{v:.2}"));
        for t in &self.trials {
            m += &format!(
                "| {} | {} | {} | {} | {:.1} | {} | {} | {} | {:.1} |\n",
                t.trial,
                t.kind.name(),
                t.victim,
                t.primaries_held,
                t.hold_secs,
                opt(t.writes_resumed_secs),
                opt(t.reads_resumed_secs),
                opt(t.catalog_resumed_secs),
                t.whole_again_secs
            );
        }
        if !self.failures.is_empty() {
            m += "\n## Failures\n\n";
            for f in &self.failures {
                m += &format!("- {f}\n");
            }
            for e in &a.examples {
                m += &format!("- {e}\n");
            }
        }
        m
    }

    /// Write `report.json` and `report.md` into `out`.
    pub fn write(&self, out: &Path) -> Result<()> {
        std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(out.join("report.md"), self.markdown())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[0.4, 2.5], 99.0), 2.5);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
