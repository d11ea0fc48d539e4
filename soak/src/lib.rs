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
