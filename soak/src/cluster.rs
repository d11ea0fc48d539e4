//! The cluster under test: either one this harness starts (a `longbow coordinator` and N
//! `longbow shard` processes on loopback, each with its own data directory and log file) or
//! one already running, given by its addresses. The harness stops only the processes it
//! started, by pid.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Where a process's `/metrics` is, and what to call it in reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Endpoint {
    /// `coordinator`, `shard-0`, …
    pub name: String,
    /// `host:port` of its HTTP port.
    pub http: String,
}

/// A cluster the workload runs against.
pub struct Cluster {
    /// Client data port.
    pub data: String,
    /// Client meta port.
    pub meta: String,
    /// Every process's HTTP endpoint.
    pub endpoints: Vec<Endpoint>,
    children: Vec<(String, Child)>,
}

fn word(line: &str, key: &str) -> Result<String> {
    let mut it = line.split_whitespace();
    while let Some(w) = it.next() {
        if w == key {
            return it
                .next()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("no value after {key:?} in {line:?}"));
        }
    }
    bail!("no {key:?} in {line:?}")
}

/// Start `cmd`, logging to `log`, and return it with the first line it prints (its
/// addresses). The rest of its stdout is drained on a thread.
fn spawn(mut cmd: Command, log: &Path) -> Result<(Child, String)> {
    let stderr = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.is_empty() {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "{cmd:?} exited before printing its addresses; see {}",
            log.display()
        );
    }
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    Ok((child, line))
}

impl Cluster {
    /// Start a coordinator and `shards` shard nodes from `binary` under `dir`, each with
    /// `extra` arguments added (for example storage settings).
    /// `log` is their `LONGBOW_LOG` filter; logs go to `<dir>/<process>.log`.
    pub fn start(
        binary: &Path,
        dir: &Path,
        shards: usize,
        extra: &[String],
        log: &str,
    ) -> Result<Cluster> {
        std::fs::create_dir_all(dir)?;
        let mut cmd = Command::new(binary);
        cmd.args(["coordinator", "--data-port", "0", "--meta-port", "0"])
            .args(["--internal-port", "0", "--http-port", "0", "--data-dir"])
            .arg(dir.join("coordinator"))
            .env("LONGBOW_LOG", log);
        let (child, line) = spawn(cmd, &dir.join("coordinator.log"))?;
        let mut cluster = Cluster {
            data: word(&line, "data")?,
            meta: word(&line, "meta")?,
            endpoints: vec![Endpoint {
                name: "coordinator".into(),
                http: word(&line, "http")?,
            }],
            children: vec![("coordinator".into(), child)],
        };
        let internal = word(&line, "internal")?;
        for i in 0..shards {
            let name = format!("shard-{i}");
            let mut cmd = Command::new(binary);
            cmd.args(["shard", "--listen", "127.0.0.1:0", "--http-port", "0"])
                .args(["--coordinator", &internal, "--data-dir"])
                .arg(dir.join(&name))
                .args(extra)
                .env("LONGBOW_LOG", log);
            let (child, line) = spawn(cmd, &dir.join(format!("{name}.log")))?;
            cluster.endpoints.push(Endpoint {
                name: name.clone(),
                http: word(&line, "http")?,
            });
            cluster.children.push((name, child));
        }
        Ok(cluster)
    }

    /// A cluster started elsewhere.
    pub fn existing(data: String, meta: String, endpoints: Vec<Endpoint>) -> Cluster {
        Cluster {
            data,
            meta,
            endpoints,
            children: Vec::new(),
        }
    }

    /// Whether every process this harness started is still running.
    pub fn check_alive(&mut self) -> Result<()> {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited during the run: {status}");
            }
        }
        Ok(())
    }

    /// SIGTERM every process this harness started and wait (bounded) for each.
    pub fn stop(&mut self) -> Vec<(String, Option<i32>)> {
        let mut out = Vec::new();
        for (_, child) in &self.children {
            // SAFETY: `kill` only sends a signal to the pid of a child we started and have
            // not yet waited for, so the pid cannot have been reused.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
        }
        for (name, mut child) in self.children.drain(..) {
            let deadline = Instant::now() + Duration::from_secs(30);
            let code = loop {
                match child.try_wait() {
                    Ok(Some(s)) => break s.code(),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break None;
                    }
                }
            };
            out.push((name, code));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.children.is_empty() {
            self.stop();
        }
    }
}

/// Where a run keeps the cluster's files when the harness starts it.
pub fn work_dir(out: &Path) -> PathBuf {
    out.join("cluster")
}
