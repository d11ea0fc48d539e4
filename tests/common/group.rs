//! Helpers for tests of a coordinator group through real processes: coordinators started
//! with `--peers` (or `--join`) on free loopback ports, who leads, and reading the catalog
//! through any one of them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow_flight::FlightClient;
use serde_json::{json, Value};

use super::*;

/// One coordinator of a group we started.
pub struct Member {
    /// Raft id.
    pub id: u64,
    /// Internal address (Raft, shard registration).
    pub internal: String,
    /// Client data URI, once started.
    pub data: String,
    /// Its process, while running.
    pub proc: Option<Proc>,
    dir: PathBuf,
    extra: Vec<String>,
}

impl Member {
    /// Start (or restart) this coordinator with the flags it was created with.
    pub fn start(&mut self) {
        let port = self
            .internal
            .rsplit_once(':')
            .map(|(_, p)| p.to_string())
            .expect("host:port");
        // The shared flags, with this member's fixed internal port in place of port 0.
        let mut args: Vec<&str> = COORDINATOR_ARGS.to_vec();
        let at = args
            .iter()
            .position(|a| *a == "--internal-port")
            .expect("COORDINATOR_ARGS names --internal-port");
        args[at + 1] = &port;
        let mut cmd = longbow_cmd(&args, &self.dir);
        cmd.arg("--node-id")
            .arg(self.id.to_string())
            .args(&self.extra);
        let (child, line) = spawn_until_first_line(cmd);
        self.data = format!("http://{}", word(&line, "data"));
        self.proc = Some(Proc(child));
    }

    /// Kill -9 this coordinator.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// A client of this coordinator.
    pub async fn client(&self) -> FlightClient {
        connect(&self.data).await
    }

    /// A client of this coordinator whose calls ask for linearizable catalog reads.
    pub async fn linearizable_client(&self) -> FlightClient {
        let mut c = self.client().await;
        c.add_header("x-longbow-read-consistency", "linearizable")
            .expect("header");
        c
    }
}

/// `n` coordinators forming one group with `--peers`, under `dir`, each with `extra` flags;
/// all started.
pub fn start_group(dir: &Path, n: u64, extra: &[&str]) -> Vec<Member> {
    let addrs: Vec<String> = (0..n)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let peers = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut members: Vec<Member> = addrs
        .into_iter()
        .enumerate()
        .map(|(i, internal)| {
            let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            extra.extend(["--peers".to_string(), peers.clone()]);
            Member {
                id: i as u64 + 1,
                internal,
                data: String::new(),
                proc: None,
                dir: dir.join(format!("coordinator-{}", i + 1)),
                extra,
            }
        })
        .collect();
    for m in &mut members {
        m.start();
    }
    members
}

/// A coordinator started with `--join` as id `id` (added to a group with AddCoordinator).
pub fn start_joining(dir: &Path, id: u64) -> Member {
    let mut m = Member {
        id,
        internal: format!("127.0.0.1:{}", free_port()),
        data: String::new(),
        proc: None,
        dir: dir.join(format!("coordinator-{id}")),
        extra: vec!["--join".to_string()],
    };
    m.start();
    m
}

/// A coordinator that forms a group of its own, as Raft id `id` at internal address
/// `internal` (typically a dead member's, to see what it makes of that group's messages).
pub fn start_alone_at(dir: &Path, id: u64, internal: &str) -> Member {
    let mut m = Member {
        id,
        internal: internal.to_string(),
        data: String::new(),
        proc: None,
        dir: dir.to_path_buf(),
        extra: Vec::new(),
    };
    m.start();
    m
}

/// Every internal address of `members`, comma-separated (for `longbow shard --coordinator`).
pub fn internal_list(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| m.internal.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// `cluster-status` of one coordinator.
pub async fn status_of(m: &Member) -> Result<Value, tonic::Status> {
    let mut c = m.client().await;
    action(&mut c, "cluster-status", json!({})).await
}

/// Wait (bounded) until every running coordinator of `members` names the same leader, one
/// of `members` with `voters` voters; its id.
pub async fn wait_leader(members: &[Member], voters: usize) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut leaders = Vec::new();
        let mut counts = Vec::new();
        for m in members.iter().filter(|m| m.proc.is_some()) {
            if let Ok(s) = status_of(m).await {
                leaders.push(s["coordinator"]["raft_leader"].as_u64());
                counts.push(
                    s["coordinators"]
                        .as_array()
                        .map_or(0, |c| c.iter().filter(|m| m["voter"] == true).count()),
                );
            }
        }
        let running = members.iter().filter(|m| m.proc.is_some()).count();
        if let Some(Some(l)) = leaders.first().copied() {
            let agreed = leaders.len() == running
                && leaders.iter().all(|x| *x == Some(l))
                && counts.iter().all(|c| *c == voters)
                && members.iter().any(|m| m.id == l && m.proc.is_some());
            if agreed {
                return l;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the group never agreed on a leader: {leaders:?}, voters {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The namespace names `c` lists.
pub async fn namespace_names(c: &mut FlightClient) -> Result<Vec<String>, tonic::Status> {
    let r = action(c, "ListNamespaces", json!({})).await?;
    let mut names: Vec<String> = r["namespaces"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    Ok(names)
}

/// Run an action, again (bounded, 20 s) while it fails with an error that says a retry may
/// help: what a client does through a leader change.
pub async fn action_retried(
    c: &mut FlightClient,
    kind: &str,
    body: Value,
) -> Result<Value, tonic::Status> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match action(c, kind, body.clone()).await {
            Err(s) if retryable(&s) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// Whether a failed call says retrying it may succeed: the retry flag Longbow sets, or a
/// transport failure (the coordinator it went to is gone).
pub fn retryable(s: &tonic::Status) -> bool {
    let flagged = s
        .metadata()
        .get(longbow_common::error::RETRYABLE_HEADER)
        .and_then(|v| v.to_str().ok())
        == Some("true");
    flagged || s.code() == tonic::Code::Unavailable
}
