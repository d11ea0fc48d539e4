//! Readiness after a restart, with real processes: a coordinator whose catalog places
//! replicas on shard nodes that have not registered since it started says not ready (naming
//! them) and answers their namespaces with a retryable UNAVAILABLE, never by calling the
//! address the catalog remembers from the earlier run; once every node is back it is ready.
//! A shard node's `/readyz` reports how far indexing is behind.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const DIM: usize = 4;

/// Kills the processes it holds when dropped, so a failing test leaves none behind.
struct Reaper(Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Reaper {
    fn stop_all(&mut self) {
        for c in &mut self.0 {
            terminate(c);
        }
        self.0.clear();
    }
}

/// A coordinator on a fixed internal port (so shard nodes find it again after a restart):
/// the child, its data URI and its HTTP address.
fn coordinator_on(dir: &Path, internal: u16) -> (Child, String, String) {
    let port = internal.to_string();
    let mut args = COORDINATOR_ARGS.to_vec();
    let at = args
        .iter()
        .position(|a| *a == "--internal-port")
        .expect("internal port argument");
    args[at + 1] = &port;
    let (child, line) = spawn_until_first_line(longbow_cmd(&args, dir));
    (
        child,
        format!("http://{}", word(&line, "data")),
        word(&line, "http"),
    )
}

fn readyz(http: &str) -> String {
    http_get(&format!("http://{http}"), "/readyz")
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_restarted_coordinator_is_ready_only_once_every_node_holding_replicas_is_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let internal = free_port();
    let addr = format!("127.0.0.1:{internal}");
    let rt = runtime();
    let (coord, data, http) = coordinator_on(&tmp.path().join("c"), internal);
    let mut procs = Reaper(vec![coord]);
    procs.0.push(shard(&tmp.path().join("a"), &addr));
    procs.0.push(shard(&tmp.path().join("b"), &addr));
    rt.block_on(async {
        let mut c = connect(&data).await;
        wait_live(&mut c, 2).await;
        action(
            &mut c,
            "CreateNamespace",
            json!({"name": "r", "dim": DIM, "shards": 2}),
        )
        .await
        .expect("create");
        let ids: Vec<u64> = (0..200).collect();
        let v: Vec<f32> = (0..200 * DIM).map(|i| i as f32).collect();
        put(&mut c, "r", vec![rows(&ids, &v, DIM)])
            .await
            .expect("put");
    });
    wait_for("ready before the restart", || {
        readyz(&http).starts_with("HTTP/1.1 200")
    });
    procs.stop_all();

    let (coord, data, http) = coordinator_on(&tmp.path().join("c"), internal);
    procs.0.push(coord);
    let r = readyz(&http);
    assert!(
        r.starts_with("HTTP/1.1 503") && r.contains("have not registered"),
        "{r}"
    );
    rt.block_on(async {
        let mut c = connect(&data).await;
        let err = action(&mut c, "GetNamespace", json!({"name": "r"}))
            .await
            .expect_err("its nodes are not back");
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        assert!(err.message().contains("has not registered"), "{err:?}");
    });
    procs.0.push(shard(&tmp.path().join("a"), &addr));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        readyz(&http).starts_with("HTTP/1.1 503"),
        "one node is still missing"
    );
    procs.0.push(shard(&tmp.path().join("b"), &addr));
    wait_for("ready", || readyz(&http).starts_with("HTTP/1.1 200"));
    assert!(readyz(&http).contains("live_shard_nodes 2"));
    rt.block_on(async {
        let mut c = connect(&data).await;
        let stats = action(&mut c, "GetNamespace", json!({"name": "r"}))
            .await
            .expect("stats");
        assert_eq!(stats["count"], 200);
    });
    procs.stop_all();
}

#[test]
fn a_shard_nodes_readyz_reports_its_indexing_lag() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut child, line) = spawn_until_first_line(longbow_cmd(SHARD_ARGS, tmp.path()));
    let http = line
        .split("http ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("http address")
        .to_string();
    let r = readyz(&http);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        r.contains("replicas 0") && r.contains("indexing_lag_rows 0"),
        "{r}"
    );
    let health = http_get(&format!("http://{http}"), "/healthz");
    assert!(health.ends_with("ok\n"), "{health}");
    terminate(&mut child);
}
