//! Metrics of the process itself (resident memory, CPU time, threads, open files), in the
//! names Prometheus clients use, appended to every role's `/metrics`. Read from
//! `/proc/self` on each scrape; nothing here is cached or sampled in the background.

/// OpenMetrics text of the process metrics; empty where `/proc` cannot be read.
pub fn metrics_text() -> String {
    let Some(stat) = Stat::read() else {
        return String::new();
    };
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, sample: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{sample} {value}\n"
        ));
    };
    family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory of the process",
        "process_resident_memory_bytes",
        stat.rss_bytes.to_string(),
    );
    family(
        "process_cpu_seconds",
        "counter",
        "User and system CPU time of the process",
        "process_cpu_seconds_total",
        format!("{:.3}", stat.cpu_seconds),
    );
    family(
        "process_threads",
        "gauge",
        "Threads of the process",
        "process_threads",
        stat.threads.to_string(),
    );
    family(
        "process_open_fds",
        "gauge",
        "Open file descriptors of the process",
        "process_open_fds",
        fds.to_string(),
    );
    out
}

/// What `/proc/self/stat` says about the process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    /// Threads.
    pub threads: u64,
    /// Resident set size.
    pub rss_bytes: u64,
}

impl Stat {
    /// Read this process's figures.
    pub fn read() -> Option<Stat> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        // SAFETY: `sysconf` only reads configuration values.
        let (tick, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        Stat::parse(&text, tick.max(1) as f64, page.max(1) as u64)
    }

    /// Parse a `/proc/<pid>/stat` line, given the clock tick rate and the page size.
    pub fn parse(line: &str, ticks_per_second: f64, page_bytes: u64) -> Option<Stat> {
        // The command name (field 2) may hold spaces and parentheses: fields start after the
        // last `)`, with field 3 (state) first.
        let rest = &line[line.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        Some(Stat {
            cpu_seconds: (num(11)? + num(12)?) as f64 / ticks_per_second,
            threads: num(17)?,
            rss_bytes: num(21)? * page_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_and_parentheses_in_the_name_parses() {
        let line = "4711 (a (b) c) S 1 4711 4711 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 \
                    1234 100000 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        let s = Stat::parse(line, 100.0, 4096).expect("parse");
        assert_eq!(s.threads, 7);
        assert_eq!(s.rss_bytes, 300 * 4096);
        assert!((s.cpu_seconds - 3.0).abs() < 1e-9);
    }

    #[test]
    fn this_process_reports_itself() {
        let s = Stat::read().expect("/proc/self/stat");
        assert!(s.threads >= 1 && s.rss_bytes > 0);
        let text = metrics_text();
        assert!(text.contains("process_resident_memory_bytes "));
        assert!(text.contains("process_cpu_seconds_total "));
    }
}
