//! The soak harness's parts, shared with the chaos harness (`longbow-chaos`): a cluster of
//! real processes it starts and can fault ([`cluster`]), the Flight calls of the workload
//! ([`client`]), the acknowledged state ([`oracle`]), the mixed workload ([`workload`]), the
//! final audit ([`audit`]), and the soak report ([`report`], [`plot`], [`sampler`]).

pub mod audit;
pub mod client;
pub mod cluster;
pub mod netns;
pub mod oracle;
pub mod plot;
pub mod report;
pub mod sampler;
pub mod workload;

/// The CPU model, core count and whether it has AVX-512F: every recorded figure names it.
pub fn machine() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    let avx512 = info.split_whitespace().any(|f| f == "avx512f");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "{model}, {cores} cores, {}",
        if avx512 { "AVX-512F" } else { "no AVX-512F" }
    )
}

/// Check the workload rates (each finite and ≥ 0, named by its flag) and the recall bound
/// (in `[0, 1]`) a harness was given.
pub fn check_rates(rates: &[(&str, f64)], min_recall: f64) -> anyhow::Result<()> {
    for (name, v) in rates {
        if !(v.is_finite() && *v >= 0.0) {
            anyhow::bail!("{name} must be a rate ≥ 0, got {v}");
        }
    }
    if !(0.0..=1.0).contains(&min_recall) {
        anyhow::bail!("--min-recall must be in [0, 1], got {min_recall}");
    }
    Ok(())
}

/// What a harness run reports: its Markdown, and whether it passed.
pub trait Outcome {
    /// The report as Markdown.
    fn markdown(&self) -> String;
    /// Whether every check passed.
    fn passed(&self) -> bool;
}

impl Outcome for report::Report {
    fn markdown(&self) -> String {
        report::Report::markdown(self)
    }

    fn passed(&self) -> bool {
        self.passed
    }
}

/// Run a harness on a two-thread runtime, print its report (written to `out`), and exit
/// with status 1 unless it passed, so CI can run it as a check.
pub fn run_to_exit<R: Outcome>(
    out: &std::path::Path,
    run: impl std::future::Future<Output = anyhow::Result<R>>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(run)?;
    print!("{}", report.markdown());
    eprintln!("report in {}", out.display());
    if !report.passed() {
        std::process::exit(1);
    }
    Ok(())
}
