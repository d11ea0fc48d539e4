//! Speculative replica queries through real processes: a coordinator and two shard nodes
//! holding both replicas of one shard, one of them stopped with SIGSTOP (still counted live,
//! its sockets open, answering nothing).
//!
//! Specification: with hedging on, searches keep being answered while a replica hangs (the
//! hedge to the other replica wins, and the metrics say so); with `--hedge-percentile 0`
//! no hedge is ever sent.

mod common;

use std::time::{Duration, Instant};

use common::replicas::{batch, create_namespace, start_node, wait_converged, DIM, NS};
use common::*;
use serde_json::json;

/// A counter's value in the coordinator's `/metrics` at `http`.
fn counter(http: &str, name: &str) -> u64 {
    let text = http_get(&format!("http://{http}"), "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics:\n{text}"))
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: the pid is a child this test started and has not reaped.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Searches answered (bounded: `n` searches, 60 s) and the first failure, if any.
async fn searches(c: &mut arrow_flight::FlightClient, n: usize) -> (usize, Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ok = 0;
    for i in 0..n {
        if Instant::now() > deadline {
            return (ok, Some("out of time".into()));
        }
        let q = queries(&[i as f32 * 0.01, 0.0, 0.0, 0.0], DIM);
        match search(c, json!({"namespace": NS, "k": 3}), q).await {
            Ok(_) => ok += 1,
            Err(e) => return (ok, Some(e.to_string())),
        }
    }
    (ok, None)
}

/// Coordinator (with `extra` flags), two nodes, the namespace with both replicas of one
/// shard on them, warmed up with searches so every replica has a latency histogram. Returns
/// the coordinator's process and HTTP address, a client and the nodes.
async fn cluster(
    dir: &std::path::Path,
    extra: &[&str],
) -> (
    Proc,
    String,
    arrow_flight::FlightClient,
    Vec<common::replicas::Node>,
) {
    // A stopped node stays live for the whole test: the hedge, not failure detection, must
    // answer for it.
    let mut cmd = longbow_cmd(COORDINATOR_ARGS, &dir.join("coordinator"));
    cmd.args(["--node-failure-timeout-ms", "60000"]).args(extra);
    let (child, line) = spawn_until_first_line(cmd);
    let coord = Proc(child);
    let http = word(&line, "http");
    let internal = word(&line, "internal");
    let nodes: Vec<_> = (0..2)
        .map(|i| start_node(&dir.join(format!("shard-{i}")), &internal))
        .collect();
    let mut c = connect(&format!("http://{}", word(&line, "data"))).await;
    wait_live(&mut c, 2).await;
    create_namespace(&mut c, 1, 2).await;
    put(&mut c, NS, vec![batch(0, 500, 1)]).await.expect("rows");
    wait_converged(&mut c, 2).await;
    // More than one hedge histogram period (10 s) of searches: the shard's latency
    // histogram then has a completed period to take the hedge delay from.
    let until = Instant::now() + Duration::from_secs(11);
    while Instant::now() < until {
        let (_, failed) = searches(&mut c, 20).await;
        assert_eq!(failed, None, "searches on a healthy cluster");
    }
    (coord, http, c, nodes)
}

#[test]
fn a_hung_replica_is_hedged_around_and_the_hedges_are_counted() {
    let tmp = tempfile::tempdir().expect("tmp");
    runtime().block_on(async {
        let (_coord, http, mut c, nodes) = cluster(tmp.path(), &[]).await;
        let sent_before = counter(&http, "longbow_search_hedges_sent_total");
        let won_before = counter(&http, "longbow_search_hedges_won_total");
        signal(&nodes[0].child, libc::SIGSTOP);
        // The stopped replica gets searches again once its load estimate has decayed below
        // the other's (seconds); from then on its searches are hedged.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut answered = 0;
        while counter(&http, "longbow_search_hedges_won_total") == won_before
            && Instant::now() < deadline
        {
            let (ok, failed) = searches(&mut c, 20).await;
            answered += ok;
            assert_eq!(
                failed, None,
                "searches while one replica hangs ({answered} answered)"
            );
        }
        signal(&nodes[0].child, libc::SIGCONT);
        let sent = counter(&http, "longbow_search_hedges_sent_total") - sent_before;
        let won = counter(&http, "longbow_search_hedges_won_total") - won_before;
        assert!(
            won >= 1,
            "a hedge answered for the hung replica (sent {sent}, won {won})"
        );
        assert!(sent >= won, "sent {sent}, won {won}");
        let text = http_get(&format!("http://{http}"), "/metrics");
        assert!(
            text.contains("longbow_search_replica_duration_seconds_count{node="),
            "per-replica latency in /metrics"
        );
    });
}

#[test]
fn with_hedging_off_no_hedge_is_sent() {
    let tmp = tempfile::tempdir().expect("tmp");
    runtime().block_on(async {
        let (_coord, http, mut c, _nodes) = cluster(tmp.path(), &["--hedge-percentile", "0"]).await;
        let (ok, failed) = searches(&mut c, 40).await;
        assert_eq!((ok, failed), (40, None));
        assert_eq!(counter(&http, "longbow_search_hedges_sent_total"), 0);
        assert_eq!(counter(&http, "longbow_search_hedges_won_total"), 0);
    });
}
