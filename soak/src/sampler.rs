//! Resource and latency samples taken every few seconds during a run: each process's RSS and
//! CPU (from its `/metrics`: `process_resident_memory_bytes`, `process_cpu_seconds_total`),
//! the shards' index memory and rows, and p50/p99 of each operation over the last window.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cluster::Endpoint;
use crate::workload::{Op, Stats};

/// One process at one sample.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessSample {
    /// Which process.
    pub name: String,
    /// Resident memory.
    pub rss_bytes: u64,
    /// CPU used since the previous sample, in cores (1.0 = one core busy).
    pub cpu_cores: f64,
    /// `longbow_shard_memory_bytes` (index memory), on shard nodes.
    pub index_bytes: Option<u64>,
    /// `longbow_shard_rows`, on shard nodes.
    pub rows: Option<u64>,
}

/// One operation over one sample window.
#[derive(Debug, Clone, Serialize)]
pub struct OpWindow {
    /// Which operation.
    pub op: Op,
    /// Calls completed in the window.
    pub count: u64,
    /// Median latency (ms).
    pub p50_ms: f64,
    /// 99th percentile latency (ms).
    pub p99_ms: f64,
}

/// Everything sampled at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the mixed workload started.
    pub t_secs: f64,
    /// Per process.
    pub processes: Vec<ProcessSample>,
    /// Per operation, over the window since the previous sample.
    pub ops: Vec<OpWindow>,
}

/// GET `path` from `host:port` over HTTP/1.1; the body.
pub async fn http_get(addr: &str, path: &str) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{addr}{path}: not an HTTP answer"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "{addr}{path}: {}",
        head.lines().next().unwrap_or_default()
    );
    Ok(body.to_string())
}

/// Sum of each metric's samples (over all label sets) in Prometheus text.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = name.split('{').next().unwrap_or(name).trim();
        if let Ok(v) = value.trim().parse::<f64>() {
            *out.entry(name.to_string()).or_insert(0.0) += v;
        }
    }
    out
}

/// Takes samples until the deadline.
pub struct Sampler {
    /// The processes to scrape.
    pub endpoints: Vec<Endpoint>,
    /// Latencies to take windows of.
    pub stats: Arc<Mutex<Stats>>,
    /// Time between samples.
    pub every: Duration,
}

impl Sampler {
    /// Sample every `every` from `start` until `deadline`; scrape failures are returned as
    /// messages next to the samples (a process that stops answering is a finding).
    pub async fn run(self, start: Instant, deadline: Instant) -> (Vec<Sample>, Vec<String>) {
        let mut samples = Vec::new();
        let mut failures = Vec::new();
        let mut last_cpu: HashMap<String, (f64, Instant)> = HashMap::new();
        let mut tick = tokio::time::interval(self.every);
        tick.tick().await;
        // A first scrape sets the CPU baseline.
        let _ = self.scrape(&mut last_cpu, &mut failures).await;
        self.stats.lock().take_window();
        while Instant::now() < deadline {
            tick.tick().await;
            let processes = self.scrape(&mut last_cpu, &mut failures).await;
            let windows = self.stats.lock().take_window();
            let ops = Op::ALL
                .iter()
                .zip(windows)
                .map(|(&op, h)| OpWindow {
                    op,
                    count: h.len(),
                    p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
                    p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
                })
                .collect();
            samples.push(Sample {
                t_secs: start.elapsed().as_secs_f64(),
                processes,
                ops,
            });
        }
        (samples, failures)
    }

    async fn scrape(
        &self,
        last_cpu: &mut HashMap<String, (f64, Instant)>,
        failures: &mut Vec<String>,
    ) -> Vec<ProcessSample> {
        let mut out = Vec::new();
        for e in &self.endpoints {
            let m = match http_get(&e.http, "/metrics").await {
                Ok(body) => parse_metrics(&body),
                Err(err) => {
                    if failures.len() < 20 {
                        failures.push(format!("{}: {err:#}", e.name));
                    }
                    continue;
                }
            };
            if !m.contains_key("process_resident_memory_bytes") && failures.len() < 20 {
                failures.push(format!(
                    "{}: /metrics has no process_resident_memory_bytes",
                    e.name
                ));
            }
            let now = Instant::now();
            let cpu = m.get("process_cpu_seconds_total").copied().unwrap_or(0.0);
            let cores = match last_cpu.insert(e.name.clone(), (cpu, now)) {
                Some((before, at)) => {
                    (cpu - before).max(0.0) / now.duration_since(at).as_secs_f64().max(1e-3)
                }
                None => 0.0,
            };
            out.push(ProcessSample {
                name: e.name.clone(),
                rss_bytes: m
                    .get("process_resident_memory_bytes")
                    .copied()
                    .unwrap_or(0.0) as u64,
                cpu_cores: cores,
                index_bytes: m.get("longbow_shard_memory_bytes").map(|&v| v as u64),
                rows: m.get("longbow_shard_rows").map(|&v| v as u64),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_samples_are_summed_and_comments_skipped() {
        let text = "# HELP a x\n# TYPE a gauge\na 1\nb{pool=\"x\"} 2\nb{pool=\"y\"} 3.5\n# EOF\n";
        let m = parse_metrics(text);
        assert_eq!(m["a"], 1.0);
        assert_eq!(m["b"], 5.5);
        assert_eq!(m.len(), 2);
    }
}
