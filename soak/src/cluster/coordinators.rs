//! The coordinators of a cluster the harness starts: one on ports the system picks, or a Raft
//! group of 3 or 5 formed with `--peers` on fixed ports (free loopback ports, or the fixed
//! Longbow ports on each one's own network-namespace address), so that a coordinator killed
//! and started again is where the group, the shard nodes and the clients expect it.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::TcpListener;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use super::{os, Spec};

/// A coordinator's client addresses, as a client of the cluster needs them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Coordinator {
    /// Process name: `coordinator` alone, `coordinator-<id>` in a group.
    pub name: String,
    /// Raft id.
    pub node_id: u64,
    /// Client data port, `host:port`.
    pub data: String,
    /// Client meta port, `host:port`.
    pub meta: String,
}

/// One coordinator to start: its name, Raft id and arguments.
pub(super) struct Planned {
    pub name: String,
    pub node_id: u64,
    pub args: Vec<OsString>,
}

/// A loopback port free now, for a coordinator that binds it right after and again after a
/// restart: below the kernel's ephemeral range (32768 and up), so no outgoing connection
/// takes it while the coordinator is down, and never handed out twice by this process.
fn free_port() -> Result<u16> {
    use std::hash::BuildHasher;
    const LOW: u16 = 12_000;
    const SPAN: u16 = 20_000;
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let start = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    (0..SPAN as u64)
        .map(|step| LOW + ((start + step) % SPAN as u64) as u16)
        .find(|port| !given.contains(port) && TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .inspect(|port| {
            given.insert(*port);
        })
        .context("no free loopback port for a coordinator")
}

/// The coordinators `spec` asks for, with their arguments.
pub(super) fn plan(spec: &Spec<'_>) -> Result<Vec<Planned>> {
    let n = spec.coordinators;
    if ![1, 3, 5].contains(&n) {
        bail!("a coordinator group has 1, 3 or 5 coordinators, not {n}");
    }
    // (host, data, meta, internal) of each.
    let mut hosts = Vec::new();
    for i in 0..n {
        let host = spec.net.as_ref().map(|net| net.addr(i));
        let ports = match (&host, n) {
            (_, 1) => (0, 0, 0),
            (Some(_), _) => (3000, 3001, 3002),
            (None, _) => (free_port()?, free_port()?, free_port()?),
        };
        hosts.push((host, ports));
    }
    let peers = hosts
        .iter()
        .enumerate()
        .map(|(i, (host, (_, _, internal)))| {
            format!(
                "{}={}:{internal}",
                i + 1,
                host.as_deref().unwrap_or("127.0.0.1")
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    Ok(hosts
        .into_iter()
        .enumerate()
        .map(|(i, (host, (data, meta, internal)))| {
            let name = if n == 1 {
                "coordinator".to_string()
            } else {
                format!("coordinator-{}", i + 1)
            };
            let port = |p: u16| p.to_string();
            let mut args = os(&["coordinator", "--data-port", &port(data)]);
            args.extend(os(&["--meta-port", &port(meta)]));
            args.extend(os(&[
                "--internal-port",
                &port(internal),
                "--http-port",
                "0",
            ]));
            args.extend(["--data-dir".into(), spec.dir.join(&name).into()]);
            if let Some(h) = host {
                args.extend(["--host".into(), h.into()]);
            }
            if n > 1 {
                args.extend(os(&["--node-id", &(i + 1).to_string(), "--peers", &peers]));
            }
            args.extend(spec.coordinator_args.iter().map(Into::into));
            Planned {
                name,
                node_id: i as u64 + 1,
                args,
            }
        })
        .collect())
}
