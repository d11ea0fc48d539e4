//! The cluster under test: either one this harness starts (a `longbow coordinator` and N
//! `longbow shard` processes on loopback, each with its own data directory and log file) or
//! one already running, given by its addresses. The harness signals and stops only the
//! processes it started, by pid; a started shard node can be killed (SIGKILL), restarted
//! on its data directory, and paused (SIGSTOP) and resumed (SIGCONT), for the chaos
//! harness.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::netns::Net;

mod coordinators;
pub use coordinators::Coordinator;

/// `v` as process arguments.
fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(Into::into).collect()
}

/// Where a process's `/metrics` is, and what to call it in reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Endpoint {
    /// `coordinator`, `shard-0`, …
    pub name: String,
    /// `host:port` of its HTTP port.
    pub http: String,
}

/// A process this harness started: how to start it again, and its state.
struct Started {
    name: String,
    program: PathBuf,
    cmd: Vec<std::ffi::OsString>,
    env: Vec<(String, String)>,
    log: PathBuf,
    /// `None` while it is killed.
    child: Option<Child>,
    paused: bool,
    /// Its shard Flight address (shard nodes only; changes on restart).
    flight: Option<String>,
}

impl Started {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.cmd);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn signal(&self, sig: i32) {
        if let Some(child) = &self.child {
            // SAFETY: `kill` only sends a signal to the pid of a child we started and have
            // not yet waited for, so the pid cannot have been reused.
            unsafe {
                libc::kill(child.id() as i32, sig);
            }
        }
    }
}

/// A cluster the workload runs against.
pub struct Cluster {
    /// Client data port (of the first coordinator).
    pub data: String,
    /// Client meta port (of the first coordinator).
    pub meta: String,
    /// Every coordinator's client addresses; any one takes any call.
    pub coordinators: Vec<Coordinator>,
    /// Every process's HTTP endpoint.
    pub endpoints: Vec<Endpoint>,
    children: Vec<Started>,
    /// The namespaces the processes run in (dropped after they stop).
    net: Option<Net>,
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

/// What to start: the binary, where, how many shard nodes, their extra arguments and log
/// filter, and whether each process gets a network namespace of its own.
pub struct Spec<'a> {
    /// The `longbow` binary.
    pub binary: &'a Path,
    /// Data directories and logs go under it.
    pub dir: &'a Path,
    /// Shard nodes.
    pub shards: usize,
    /// Arguments added to every shard node (for example storage settings).
    pub shard_args: &'a [String],
    /// Coordinators: 1 runs a group of one (on ports the system picks); 3 or 5 form a Raft
    /// group with `--peers` (on fixed ports, so a restarted one is where the others and the
    /// shard nodes expect it).
    pub coordinators: usize,
    /// Arguments added to every coordinator.
    pub coordinator_args: &'a [String],
    /// `LONGBOW_LOG` of every process; logs go to `<dir>/<process>.log`.
    pub log: &'a str,
    /// Run coordinator `i` in member `i`'s namespace and shard node `j` in the member after
    /// the last coordinator's plus `j`, so processes can be partitioned ([`Cluster::partition`]); `None`: all on loopback.
    pub net: Option<Net>,
}

impl Cluster {
    /// Start a coordinator and `shards` shard nodes from `binary` under `dir`, on loopback,
    /// with `extra` arguments for every shard node. `log` is their `LONGBOW_LOG` filter; logs
    /// go to `<dir>/<process>.log`.
    pub fn start(
        binary: &Path,
        dir: &Path,
        shards: usize,
        extra: &[String],
        log: &str,
    ) -> Result<Cluster> {
        Cluster::start_spec(Spec {
            binary,
            dir,
            shards,
            shard_args: extra,
            coordinators: 1,
            coordinator_args: &[],
            log,
            net: None,
        })
    }

    /// Start the cluster `spec` describes.
    pub fn start_spec(spec: Spec<'_>) -> Result<Cluster> {
        let dir = spec.dir;
        std::fs::create_dir_all(dir)?;
        let mut cluster = Cluster {
            data: String::new(),
            meta: String::new(),
            coordinators: Vec::new(),
            endpoints: Vec::new(),
            children: Vec::new(),
            net: None,
        };
        let env = vec![("LONGBOW_LOG".to_string(), spec.log.to_string())];
        let run = |i: usize, args: Vec<OsString>| match &spec.net {
            Some(net) => {
                let (program, mut wrapped) = net.wrap(i, spec.binary);
                wrapped.extend(args);
                (PathBuf::from(program), wrapped)
            }
            None => (spec.binary.to_path_buf(), args),
        };
        let group = coordinators::plan(&spec)?;
        let mut internal = Vec::new();
        for (i, c) in group.iter().enumerate() {
            let line = cluster.launch(&c.name, run(i, c.args.clone()), env.clone(), dir)?;
            let addrs = Coordinator {
                name: c.name.clone(),
                node_id: c.node_id,
                data: word(&line, "data")?,
                meta: word(&line, "meta")?,
            };
            internal.push(word(&line, "internal")?);
            cluster.coordinators.push(addrs);
        }
        cluster.data = cluster.coordinators[0].data.clone();
        cluster.meta = cluster.coordinators[0].meta.clone();
        let internal = internal.join(",");
        for i in 0..spec.shards {
            let name = format!("shard-{i}");
            let member = group.len() + i;
            let listen = match spec.net.as_ref() {
                Some(net) => format!("{}:0", net.addr(member)),
                None => "127.0.0.1:0".to_string(),
            };
            let mut args = os(&["shard", "--listen", &listen, "--http-port", "0"]);
            args.extend(["--coordinator".into(), internal.clone().into()]);
            args.extend(["--data-dir".into(), dir.join(&name).into()]);
            args.extend(spec.shard_args.iter().map(Into::into));
            cluster.launch(&name, run(member, args), env.clone(), dir)?;
        }
        cluster.net = spec.net;
        Ok(cluster)
    }

    /// Start process `name` (`program` with `cmd`) and record it; the line it printed first.
    fn launch(
        &mut self,
        name: &str,
        (program, cmd): (PathBuf, Vec<std::ffi::OsString>),
        env: Vec<(String, String)>,
        dir: &Path,
    ) -> Result<String> {
        let mut p = Started {
            name: name.to_string(),
            program,
            cmd,
            env,
            log: dir.join(format!("{name}.log")),
            child: None,
            paused: false,
            flight: None,
        };
        let (child, line) = spawn(p.command(), &p.log)?;
        p.child = Some(child);
        p.flight = word(&line, "flight").ok();
        self.endpoints.push(Endpoint {
            name: name.to_string(),
            http: word(&line, "http")?,
        });
        self.children.push(p);
        Ok(line)
    }

    /// A cluster started elsewhere.
    pub fn existing(data: String, meta: String, endpoints: Vec<Endpoint>) -> Cluster {
        Cluster {
            coordinators: vec![Coordinator {
                name: "coordinator".into(),
                node_id: 1,
                data: data.clone(),
                meta: meta.clone(),
            }],
            data,
            meta,
            endpoints,
            children: Vec::new(),
            net: None,
        }
    }

    fn process(&mut self, name: &str) -> Result<&mut Started> {
        self.children
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| anyhow!("no process {name} was started by this harness"))
    }

    /// The coordinators' process names.
    pub fn coordinator_names(&self) -> Vec<String> {
        self.coordinators.iter().map(|c| c.name.clone()).collect()
    }

    /// The shard nodes this harness started, by name.
    pub fn shard_names(&self) -> Vec<String> {
        self.children
            .iter()
            .filter(|p| p.name.starts_with("shard-"))
            .map(|p| p.name.clone())
            .collect()
    }

    /// The shard Flight address of started shard node `name` (its latest start).
    pub fn flight_addr(&self, name: &str) -> Option<String> {
        let p = self.children.iter().find(|p| p.name == name)?;
        p.flight.clone()
    }

    /// The pid of a started process that is running.
    pub fn pid(&self, name: &str) -> Option<u32> {
        let p = self.children.iter().find(|p| p.name == name)?;
        p.child.as_ref().map(Child::id)
    }

    /// `kill -9` process `name` and reap it.
    pub fn kill(&mut self, name: &str) -> Result<()> {
        let p = self.process(name)?;
        if let Some(mut child) = p.child.take() {
            child.kill()?;
            child.wait()?;
        }
        p.paused = false;
        Ok(())
    }

    /// Start a killed process `name` again on its data directory (on new ports).
    pub fn restart(&mut self, name: &str) -> Result<()> {
        let p = self.process(name)?;
        if p.child.is_some() {
            bail!("{name} is running");
        }
        let (child, line) = spawn(p.command(), &p.log)?;
        p.child = Some(child);
        p.flight = word(&line, "flight").ok();
        let http = word(&line, "http")?;
        if let Some(e) = self.endpoints.iter_mut().find(|e| e.name == name) {
            e.http = http;
        }
        Ok(())
    }

    /// SIGSTOP process `name` (it keeps its sockets but answers nothing).
    pub fn pause(&mut self, name: &str) -> Result<()> {
        let p = self.process(name)?;
        p.signal(libc::SIGSTOP);
        p.paused = true;
        Ok(())
    }

    /// SIGCONT a paused process `name`.
    pub fn resume(&mut self, name: &str) -> Result<()> {
        let p = self.process(name)?;
        p.signal(libc::SIGCONT);
        p.paused = false;
        Ok(())
    }

    /// Cut process `name` off from every other process (nftables drops in
    /// its namespace); only for a cluster started with namespaces.
    pub fn partition(&mut self, name: &str) -> Result<()> {
        let (net, i) = self.member(name)?;
        net.partition(i).map_err(|e| anyhow!(e))
    }

    /// Undo [`Cluster::partition`].
    pub fn heal(&mut self, name: &str) -> Result<()> {
        let (net, i) = self.member(name)?;
        net.heal(i).map_err(|e| anyhow!(e))
    }

    fn member(&self, name: &str) -> Result<(&Net, usize)> {
        let net = self
            .net
            .as_ref()
            .ok_or_else(|| anyhow!("the cluster runs without network namespaces"))?;
        let i = self
            .children
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| anyhow!("no process {name} was started by this harness"))?;
        Ok((net, i))
    }

    /// Whether every process this harness started (and did not kill) is still running.
    pub fn check_alive(&mut self) -> Result<()> {
        for p in &mut self.children {
            if let Some(child) = &mut p.child {
                if let Some(status) = child.try_wait()? {
                    bail!("{} exited during the run: {status}", p.name);
                }
            }
        }
        Ok(())
    }

    /// SIGTERM every process this harness started (resuming paused ones first) and wait
    /// (bounded) for each.
    pub fn stop(&mut self) -> Vec<(String, Option<i32>)> {
        let mut out = Vec::new();
        for p in &self.children {
            if p.paused {
                p.signal(libc::SIGCONT);
            }
            p.signal(libc::SIGTERM);
        }
        for (name, mut child) in self
            .children
            .drain(..)
            .filter_map(|p| Some((p.name, p.child?)))
        {
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
