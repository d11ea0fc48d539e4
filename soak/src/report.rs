//! The run's report: a JSON document with everything measured, a Markdown summary of it,
//! and the verdict (what must hold for the run to pass, and what did not).

use std::path::Path;

use anyhow::Result;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::audit::Audit;
use crate::sampler::Sample;
use crate::workload::{Op, Settings, Stats};

/// Latency and counts of one operation over the whole run.
#[derive(Debug, Clone, Serialize)]
pub struct OpSummary {
    /// Which operation.
    pub op: Op,
    /// Calls completed.
    pub count: u64,
    /// Calls per second achieved.
    pub rate: f64,
    /// Calls that failed.
    pub errors: u64,
    /// Latency percentiles (ms).
    pub p50_ms: f64,
    /// 90th percentile (ms).
    pub p90_ms: f64,
    /// 99th percentile (ms).
    pub p99_ms: f64,
    /// 99.9th percentile (ms).
    pub p999_ms: f64,
    /// Slowest call (ms).
    pub max_ms: f64,
}

fn summary(op: Op, h: &Histogram<u64>, errors: u64, secs: f64) -> OpSummary {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    OpSummary {
        op,
        count: h.len(),
        rate: h.len() as f64 / secs.max(1e-9),
        errors,
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: h.max() as f64 / 1000.0,
    }
}

/// Recall@k of the checked searches.
#[derive(Debug, Clone, Serialize)]
pub struct RecallSummary {
    /// Searches checked.
    pub samples: usize,
    /// Mean recall.
    pub mean: f64,
    /// Worst recall.
    pub min: f64,
}

/// How one process's RSS moved over the final window of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Flatness {
    /// Which process.
    pub name: String,
    /// Seconds the window spans.
    pub window_secs: f64,
    /// RSS at the window's start and end (MiB, least-squares fit).
    pub start_mib: f64,
    /// RSS at the window's end (fit).
    pub end_mib: f64,
    /// `(end - start) / start`.
    pub growth: f64,
}

/// RSS trend of every process over the samples in the last `window_secs`.
pub fn flatness(samples: &[Sample], window_secs: f64) -> Vec<Flatness> {
    let Some(last) = samples.last() else {
        return Vec::new();
    };
    let from = last.t_secs - window_secs;
    let window: Vec<&Sample> = samples.iter().filter(|s| s.t_secs >= from).collect();
    let mut names: Vec<String> = window
        .iter()
        .flat_map(|s| s.processes.iter().map(|p| p.name.clone()))
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let pts: Vec<(f64, f64)> = window
                .iter()
                .filter_map(|s| {
                    s.processes
                        .iter()
                        .find(|p| p.name == name)
                        .map(|p| (s.t_secs, p.rss_bytes as f64 / 1_048_576.0))
                })
                .collect();
            if pts.len() < 2 {
                return None;
            }
            let n = pts.len() as f64;
            let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
            let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
            let sxx = pts.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
            let sxy = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>();
            let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
            let (t0, t1) = (pts[0].0, pts[pts.len() - 1].0);
            let start = my + slope * (t0 - mx);
            let end = my + slope * (t1 - mx);
            Some(Flatness {
                name,
                window_secs: t1 - t0,
                start_mib: start,
                end_mib: end,
                growth: if start > 0.0 {
                    (end - start) / start
                } else {
                    0.0
                },
            })
        })
        .collect()
}

/// What must hold for a run to pass.
#[derive(Debug, Clone, Serialize)]
pub struct Criteria {
    /// Lowest acceptable mean recall@k.
    pub min_recall: f64,
    /// Largest acceptable RSS growth over the final window.
    pub max_rss_growth: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The machine it ran on.
    pub machine: String,
    /// What ran.
    pub settings: Settings,
    /// What must hold.
    pub criteria: Criteria,
    /// Rows loaded before the mixed workload.
    pub initial_rows: u64,
    /// Seconds the initial load took until READY.
    pub load_secs: f64,
    /// Seconds the mixed workload ran.
    pub run_secs: f64,
    /// Per operation.
    pub ops: Vec<OpSummary>,
    /// Checked searches.
    pub recall: RecallSummary,
    /// Search results holding an id deleted (and acknowledged) before the search was sent.
    pub deleted_returned: u64,
    /// Acknowledgements that disagreed with the request.
    pub ack_mismatches: u64,
    /// The final audit.
    pub audit: Audit,
    /// RSS over the final window, per process.
    pub rss_flatness: Vec<Flatness>,
    /// The first failure messages of calls and scrapes.
    pub error_samples: Vec<String>,
    /// How the processes exited (`None`: killed after not stopping).
    pub exits: Vec<(String, Option<i32>)>,
    /// Every sample.
    pub samples: Vec<Sample>,
    /// Whether the run passed.
    pub passed: bool,
    /// Why it did not.
    pub failures: Vec<String>,
}

/// Everything a report is built from.
pub struct Inputs<'a> {
    /// The machine.
    pub machine: String,
    /// What ran.
    pub settings: &'a Settings,
    /// What must hold.
    pub criteria: Criteria,
    /// Rows loaded first.
    pub initial_rows: u64,
    /// Seconds of the load.
    pub load_secs: f64,
    /// Seconds of the mixed workload.
    pub run_secs: f64,
    /// Latencies and counters.
    pub stats: &'a Stats,
    /// The audit.
    pub audit: Audit,
    /// Samples and scrape failures.
    pub samples: Vec<Sample>,
    /// Scrape failures.
    pub scrape_failures: Vec<String>,
    /// How the processes exited.
    pub exits: Vec<(String, Option<i32>)>,
    /// The final window for the RSS check.
    pub flat_window_secs: f64,
}

impl Report {
    /// Build the report and its verdict.
    pub fn new(i: Inputs<'_>) -> Report {
        let ops: Vec<OpSummary> = Op::ALL
            .iter()
            .zip(&i.stats.total)
            .zip(i.stats.errors)
            .map(|((&op, h), e)| summary(op, h, e, i.run_secs))
            .collect();
        let r = &i.stats.recall;
        let recall = RecallSummary {
            samples: r.len(),
            mean: r.iter().sum::<f64>() / r.len().max(1) as f64,
            min: r.iter().copied().fold(f64::NAN, f64::min),
        };
        let rss_flatness = flatness(&i.samples, i.flat_window_secs);
        let mut failures = Vec::new();
        let errors: u64 = ops.iter().map(|o| o.errors).sum();
        if errors > 0 {
            failures.push(format!("{errors} calls failed"));
        }
        if !i.scrape_failures.is_empty() {
            failures.push(format!("{} metric scrapes failed", i.scrape_failures.len()));
        }
        if i.stats.deleted_returned > 0 {
            failures.push(format!(
                "{} search results held deleted ids",
                i.stats.deleted_returned
            ));
        }
        if i.stats.ack_mismatches > 0 {
            failures.push(format!(
                "{} acknowledgements disagreed with the request",
                i.stats.ack_mismatches
            ));
        }
        if !i.audit.clean() {
            failures.push(format!(
                "audit: {} lost, {} stale, {} resurrected, {} in an impossible state",
                i.audit.lost, i.audit.stale, i.audit.resurrected, i.audit.uncertain_bad
            ));
        }
        let searched = i.settings.search_rate > 0.0;
        if searched && (recall.samples == 0 || recall.mean < i.criteria.min_recall) {
            failures.push(format!(
                "mean recall@{} {:.4} over {} samples (need ≥ {})",
                i.settings.k, recall.mean, recall.samples, i.criteria.min_recall
            ));
        }
        for f in &rss_flatness {
            if f.growth > i.criteria.max_rss_growth {
                failures.push(format!(
                    "{} RSS grew {:.1} % over the last {:.0} s ({:.1} → {:.1} MiB)",
                    f.name,
                    f.growth * 100.0,
                    f.window_secs,
                    f.start_mib,
                    f.end_mib
                ));
            }
        }
        if i.exits.iter().any(|(_, code)| *code != Some(0)) {
            failures.push(format!("not every process exited cleanly: {:?}", i.exits));
        }
        let mut error_samples = i.stats.error_samples.clone();
        error_samples.extend(i.scrape_failures);
        Report {
            machine: i.machine,
            settings: i.settings.clone(),
            criteria: i.criteria,
            initial_rows: i.initial_rows,
            load_secs: i.load_secs,
            run_secs: i.run_secs,
            ops,
            recall,
            deleted_returned: i.stats.deleted_returned,
            ack_mismatches: i.stats.ack_mismatches,
            audit: i.audit,
            rss_flatness,
            error_samples,
            exits: i.exits,
            samples: i.samples,
            passed: failures.is_empty(),
            failures,
        }
    }

    /// The Markdown summary.
    pub fn markdown(&self) -> String {
        let s = &self.settings;
        let mut md = format!(
            "# Soak run: {}\n\n{} · {} s of mixed workload after loading {} rows ({:.1} s to READY) · \
             {}-d, k = {} · rates/s: search {}, insert {}, upsert {}, delete {}\n\n",
            if self.passed { "passed" } else { "FAILED" },
            self.machine,
            self.run_secs.round(),
            self.initial_rows,
            self.load_secs,
            s.dim,
            s.k,
            s.search_rate,
            s.insert_rate,
            s.upsert_rate,
            s.delete_rate,
        );
        md.push_str("| operation | calls | per s | errors | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |\n");
        md.push_str("|---|---|---|---|---|---|---|---|---|\n");
        for o in &self.ops {
            md.push_str(&format!(
                "| {} | {} | {:.1} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                o.op.name(),
                o.count,
                o.rate,
                o.errors,
                o.p50_ms,
                o.p90_ms,
                o.p99_ms,
                o.p999_ms,
                o.max_ms
            ));
        }
        let a = &self.audit;
        md.push_str(&format!(
            "\nRecall@{}: mean {:.4}, worst {:.2} over {} checked searches. Deleted ids in results: {}. \
             Acknowledgement mismatches: {}.\n\nAudit of {} ids: {} as acknowledged, {} lost, {} stale, \
             {} resurrected; {} with a failed last write ({} in an impossible state).\n\n",
            s.k,
            self.recall.mean,
            self.recall.min,
            self.recall.samples,
            self.deleted_returned,
            self.ack_mismatches,
            a.checked,
            a.ok,
            a.lost,
            a.stale,
            a.resurrected,
            a.uncertain_ok + a.uncertain_bad,
            a.uncertain_bad
        ));
        md.push_str("| process | RSS over the final window (MiB, fit) | growth |\n|---|---|---|\n");
        for f in &self.rss_flatness {
            md.push_str(&format!(
                "| {} | {:.1} → {:.1} over {:.0} s | {:+.1} % |\n",
                f.name,
                f.start_mib,
                f.end_mib,
                f.window_secs,
                f.growth * 100.0
            ));
        }
        if !self.failures.is_empty() {
            md.push_str("\nWhy it failed:\n\n");
            for f in &self.failures {
                md.push_str(&format!("- {f}\n"));
            }
        }
        md.push_str("\nPlots: `latency.png`, `resources.png`.\n");
        md
    }

    /// Write `report.json` and `report.md` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::ProcessSample;

    fn sample(t: f64, rss_mib: f64) -> Sample {
        Sample {
            t_secs: t,
            processes: vec![ProcessSample {
                name: "p".into(),
                rss_bytes: (rss_mib * 1_048_576.0) as u64,
                cpu_cores: 0.0,
                index_bytes: None,
                rows: None,
            }],
            ops: Vec::new(),
        }
    }

    #[test]
    fn flatness_fits_the_final_window_only() {
        // Growth early on, flat at the end.
        let samples: Vec<Sample> = (0..20)
            .map(|i| {
                sample(
                    i as f64 * 10.0,
                    if i < 10 {
                        100.0 + 10.0 * i as f64
                    } else {
                        200.0
                    },
                )
            })
            .collect();
        let f = flatness(&samples, 90.0);
        assert_eq!(f.len(), 1);
        assert!(f[0].growth.abs() < 1e-9, "{:?}", f[0]);
        let all = flatness(&samples, 1_000.0);
        assert!(all[0].growth > 0.5, "{:?}", all[0]);
    }
}
