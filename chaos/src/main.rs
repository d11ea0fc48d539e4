//! `longbow-chaos`: starts a real Longbow cluster (a group of `longbow coordinator`s, N
//! `longbow shard` processes), runs the soak workload on a replicated namespace and a probe
//! that changes the catalog, while it injects faults from a seeded schedule: on shard nodes
//! holding primaries (kill -9 then restart, SIGSTOP then SIGCONT, partition then heal) and
//! on the coordinators (kill -9 of the catalog leader, the leader partitioned, every
//! coordinator killed and restarted). Then it checks the invariants: every acknowledged
//! write readable with its last acknowledged value, no deleted id returned, every shard's
//! replicas at the same LSN with the same rows, recall@k against exact search after healing,
//! every coordinator holding the same catalog with every acknowledged catalog change in it,
//! and no catalog change refused with a non-retryable error. It times how long writes,
//! reads and catalog changes took to work again after each fault, writes a report (JSON and
//! Markdown) and exits 0 only when every check passed.
//!
//! Faults are one at a time: each trial waits until every replica set is whole and caught
//! up, hits one node, holds the fault, heals it. Where it can create network namespaces (as
//! root, with `ip` and `nft`) every process runs in one of its own and partitions are among
//! the faults; `--partitions off` keeps everything on loopback.

mod catalog;
mod checks;
mod probe;
mod report;
mod schedule;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use longbow_soak::client::Client;
use longbow_soak::cluster::{Cluster, Spec};
use longbow_soak::netns::{self, Net};
use longbow_soak::workload::{self, Run, Settings};
use longbow_soak::{audit, machine};
use parking_lot::Mutex;
use serde_json::json;

use crate::report::{Report, Trial};
use crate::schedule::{FaultKind, Planned};

/// Inject faults into a real Longbow cluster under load, then check that nothing
/// acknowledged was lost.
#[derive(Parser, Debug, serde::Serialize)]
#[command(name = "longbow-chaos", version)]
struct Args {
    /// The `longbow` binary to start the cluster from.
    #[arg(long)]
    binary: PathBuf,
    /// Directory for the report and the cluster's files (emptied first).
    #[arg(long, default_value = "chaos-report")]
    out: PathBuf,
    /// Seed of the fault schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Faults to inject, one after another.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    trials: u64,
    /// Coordinator processes: 3 or 5 form a Raft group and add the coordinator faults; 1
    /// runs without them.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=5))]
    coordinators: u64,
    /// Shard node processes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=16))]
    nodes: u64,
    /// Shards of the namespace under test.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=64))]
    shards: u64,
    /// Replicas per shard (at most `--nodes`).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=5))]
    replication_factor: u64,
    /// Shortest time a fault lasts, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    hold_min_ms: u64,
    /// Longest time a fault lasts, in milliseconds.
    #[arg(long, default_value_t = 6_000)]
    hold_max_ms: u64,
    /// Longest wait for every replica set to be whole and caught up after a fault.
    #[arg(long, default_value_t = 120)]
    converge_secs: u64,
    /// `--node-failure-timeout-ms` of the coordinator.
    #[arg(long, default_value_t = 1_500)]
    node_failure_timeout_ms: u64,
    /// `--checkpoint-interval-secs` of the shard nodes: short, so restarted nodes often need
    /// segment transfers rather than the WAL alone.
    #[arg(long, default_value_t = 5)]
    checkpoint_interval_secs: u64,
    /// Rows loaded before the faults start.
    #[arg(long, default_value_t = 5_000)]
    initial_rows: u64,
    /// Vector dimension.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    dim: u64,
    /// Clusters of the synthetic vectors.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    clusters: u64,
    /// Neighbours per search.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    k: u64,
    /// Workload searches per second.
    #[arg(long, default_value_t = 20.0)]
    search_rate: f64,
    /// Workload inserts per second.
    #[arg(long, default_value_t = 20.0)]
    insert_rate: f64,
    /// Workload upserts per second.
    #[arg(long, default_value_t = 20.0)]
    upsert_rate: f64,
    /// Workload deletes per second.
    #[arg(long, default_value_t = 5.0)]
    delete_rate: f64,
    /// Concurrent workload writers.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    writers: u64,
    /// Searches checked against exact search after healing.
    #[arg(long, default_value_t = 50)]
    recall_queries: u64,
    /// Lowest acceptable recall@k after healing.
    #[arg(long, default_value_t = 0.95)]
    min_recall: f64,
    /// Partitions among the faults: `auto` (when network namespaces can be created), `on`
    /// (fail if they cannot) or `off`.
    #[arg(long, default_value = "auto",
          value_parser = clap::builder::PossibleValuesParser::new(["auto", "on", "off"]))]
    partitions: String,
    /// Log filter (`LONGBOW_LOG`) of the cluster's processes (logs in `<out>/cluster/`).
    #[arg(long, default_value = "warn")]
    log: String,
}

fn check(args: &Args) -> Result<()> {
    if ![1, 3, 5].contains(&args.coordinators) {
        bail!("--coordinators is 1, 3 or 5 (got {})", args.coordinators);
    }
    if args.replication_factor > args.nodes {
        bail!(
            "--replication-factor {} needs at least as many --nodes (got {})",
            args.replication_factor,
            args.nodes
        );
    }
    if args.hold_min_ms > args.hold_max_ms {
        bail!("--hold-min-ms must not exceed --hold-max-ms");
    }
    longbow_soak::check_rates(
        &[
            ("--search-rate", args.search_rate),
            ("--insert-rate", args.insert_rate),
            ("--upsert-rate", args.upsert_rate),
            ("--delete-rate", args.delete_rate),
        ],
        args.min_recall,
    )?;
    Ok(())
}

/// The running workload: its shared state, the probes' log and every task.
struct Load {
    run: Run,
    log: Arc<Mutex<probe::Log>>,
    catalog: Arc<Mutex<catalog::Outcomes>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn start_load(args: &Args, client: &mut Client) -> Result<Load> {
    let settings = Arc::new(Settings {
        namespace: "chaos".into(),
        dim: args.dim as usize,
        clusters: args.clusters,
        k: args.k as usize,
        duration: Duration::from_secs(86_400),
        search_rate: args.search_rate,
        insert_rate: args.insert_rate,
        upsert_rate: args.upsert_rate,
        delete_rate: args.delete_rate,
        writers: args.writers as usize,
        searchers: 1,
        recall_every: 0,
    });
    client
        .action(
            "CreateNamespace",
            json!({"name": settings.namespace, "dim": settings.dim, "metric": "l2",
                   "shards": args.shards, "replication_factor": args.replication_factor}),
        )
        .await
        .context("creating the namespace")?;
    let run = Run::new(settings.clone());
    workload::load(&run, client, args.initial_rows).await?;
    client.wait_ready(&settings.namespace).await?;
    let log = Arc::new(Mutex::new(probe::Log::default()));
    let outcomes = Arc::new(Mutex::new(catalog::Outcomes::default()));
    let deadline = Instant::now() + settings.duration;
    let mut tasks = Vec::new();
    // Each task starts at another coordinator, so a fault on one hits some of them.
    for w in 0..settings.writers {
        tasks.push(tokio::spawn(workload::writer(
            run.clone(),
            client.another(w),
            w,
            deadline,
        )));
    }
    let n = settings.writers;
    tasks.push(tokio::spawn(workload::searcher(
        run.clone(),
        client.another(n),
        0,
        deadline,
    )));
    tasks.push(tokio::spawn(probe::writes(
        run.clone(),
        client.another(n + 1),
        log.clone(),
    )));
    tasks.push(tokio::spawn(probe::reads(
        run.clone(),
        client.another(n + 2),
        log.clone(),
    )));
    tasks.push(tokio::spawn(catalog::changes(
        run.clone(),
        client.another(n + 3),
        log.clone(),
        outcomes.clone(),
    )));
    Ok(Load {
        run,
        log,
        catalog: outcomes,
        tasks,
    })
}

/// The process a trial hits and the primaries it held: a shard node holding primaries (the
/// `pick`-th of them), or the coordinator leading the catalog.
async fn victim(
    cluster: &Cluster,
    client: &mut Client,
    plan: &Planned,
    stats: &serde_json::Value,
) -> Result<(String, usize)> {
    if plan.kind == FaultKind::RestartCoordinators {
        return Ok(("every coordinator".into(), 0));
    }
    if plan.kind.on_coordinators() {
        let status = client.action("cluster-status", json!({})).await?;
        let leader = status["coordinator"]["raft_leader"]
            .as_u64()
            .ok_or_else(|| anyhow!("no catalog leader: {status}"))?;
        let c = cluster
            .coordinators
            .iter()
            .find(|c| c.node_id == leader)
            .ok_or_else(|| anyhow!("leader {leader} is not a coordinator the harness started"))?;
        return Ok((c.name.clone(), 0));
    }
    let ids = checks::node_ids(client, cluster).await?;
    let primaries = checks::primaries(stats);
    let candidates: Vec<(&String, usize)> = ids
        .iter()
        .map(|(name, id)| (name, primaries.iter().filter(|p| *p == id).count()))
        .filter(|(_, held)| *held > 0)
        .collect();
    let Some(&(victim, held)) = candidates.get(plan.pick % candidates.len().max(1)) else {
        bail!("no node holds a primary: {stats}");
    };
    Ok((victim.clone(), held))
}

/// Inject `kind` into `victim` (for [`FaultKind::RestartCoordinators`]: into every
/// coordinator).
fn inject(cluster: &mut Cluster, kind: FaultKind, victim: &str) -> Result<()> {
    match kind {
        FaultKind::Kill | FaultKind::KillLeader => cluster.kill(victim),
        FaultKind::Pause => cluster.pause(victim),
        FaultKind::Partition | FaultKind::PartitionLeader => cluster.partition(victim),
        FaultKind::RestartCoordinators => {
            let names = cluster.coordinator_names();
            names.iter().try_for_each(|n| cluster.kill(n))
        }
    }
}

/// Undo [`inject`].
fn heal(cluster: &mut Cluster, kind: FaultKind, victim: &str) -> Result<()> {
    match kind {
        FaultKind::Kill | FaultKind::KillLeader => cluster.restart(victim),
        FaultKind::Pause => cluster.resume(victim),
        FaultKind::Partition | FaultKind::PartitionLeader => cluster.heal(victim),
        FaultKind::RestartCoordinators => {
            let names = cluster.coordinator_names();
            names.iter().try_for_each(|n| cluster.restart(n))
        }
    }
}

/// One trial: wait until the cluster is whole, hit a node holding primaries (or the
/// coordinators), hold, heal. Returns the trial with its resumption times still unset, and
/// when the fault began.
async fn trial(
    args: &Args,
    cluster: &mut Cluster,
    client: &mut Client,
    plan: &Planned,
) -> Result<(Trial, Instant)> {
    let within = Duration::from_secs(args.converge_secs);
    let rf = args.replication_factor as usize;
    let (_, stats) = checks::wait_whole(client, "chaos", rf, within).await?;
    let (victim, held) = victim(cluster, client, plan, &stats).await?;
    inject(cluster, plan.kind, &victim)?;
    // Timed from when the fault is in place (loading nftables rules takes a moment).
    let at = Instant::now();
    tokio::time::sleep(plan.hold).await;
    heal(cluster, plan.kind, &victim)?;
    let (whole, _) = checks::wait_whole(client, "chaos", rf, within).await?;
    eprintln!(
        "trial {}: {} of {victim} ({held} primaries) for {:.1} s; whole again {:.1} s after healing",
        plan.trial,
        plan.kind.name(),
        plan.hold.as_secs_f64(),
        whole.as_secs_f64()
    );
    let t = Trial {
        trial: plan.trial,
        kind: plan.kind,
        victim,
        primaries_held: held,
        hold_secs: plan.hold.as_secs_f64(),
        writes_resumed_secs: None,
        reads_resumed_secs: None,
        catalog_resumed_secs: None,
        whole_again_secs: whole.as_secs_f64(),
    };
    Ok((t, at))
}

async fn chaos(args: &Args) -> Result<Report> {
    let dir = args.out.join("cluster");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    }
    std::fs::create_dir_all(&args.out)?;
    let shard_args = vec![format!(
        "--checkpoint-interval-secs={}",
        args.checkpoint_interval_secs
    )];
    let coordinator_args = vec![
        format!("--node-failure-timeout-ms={}", args.node_failure_timeout_ms),
        "--request-timeout-secs=10".to_string(),
    ];
    let net = match (args.partitions.as_str(), netns::available()) {
        ("off", _) => None,
        (_, Ok(())) => {
            Some(Net::new((args.coordinators + args.nodes) as usize).map_err(|e| anyhow!(e))?)
        }
        ("on", Err(why)) => bail!("--partitions on: {why}"),
        (_, Err(why)) => {
            eprintln!("no partitions in this run: {why}");
            None
        }
    };
    let mut kinds = vec![FaultKind::Kill, FaultKind::Pause];
    if net.is_some() {
        kinds.push(FaultKind::Partition);
    }
    if args.coordinators > 1 {
        kinds.extend([FaultKind::KillLeader, FaultKind::RestartCoordinators]);
        if net.is_some() {
            kinds.push(FaultKind::PartitionLeader);
        }
    }
    let mut cluster = Cluster::start_spec(Spec {
        binary: &args.binary,
        dir: &dir,
        shards: args.nodes as usize,
        shard_args: &shard_args,
        coordinators: args.coordinators as usize,
        coordinator_args: &coordinator_args,
        log: &args.log,
        net,
    })?;
    let addrs: Vec<(String, String)> = cluster
        .coordinators
        .iter()
        .map(|c| (c.data.clone(), c.meta.clone()))
        .collect();
    let mut client = Client::connect_all(&addrs)?;
    client.wait_live(args.nodes as usize).await?;
    let load = start_load(args, &mut client).await?;

    let plan = schedule::plan(
        args.seed,
        args.trials as usize,
        (
            Duration::from_millis(args.hold_min_ms),
            Duration::from_millis(args.hold_max_ms),
        ),
        &kinds,
    );
    let mut trials = Vec::new();
    let mut failures = Vec::new();
    for p in &plan {
        match trial(args, &mut cluster, &mut client, p).await {
            Ok(t) => trials.push(t),
            Err(e) => {
                failures.push(format!("trial {}: {e:#}", p.trial));
                break;
            }
        }
    }
    // Let the probes send a few calls after the last healing, then stop everything.
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.run.stop.store(true, Ordering::Relaxed);
    for t in load.tasks {
        t.await.context("a workload task panicked")?;
    }
    let trials: Vec<Trial> = {
        let log = load.log.lock();
        trials
            .into_iter()
            .map(|(mut t, at)| {
                let secs = |v: Option<Duration>| v.map(|d| d.as_secs_f64());
                t.writes_resumed_secs = secs(probe::Log::resumed_after(&log.writes, at));
                t.reads_resumed_secs = secs(probe::Log::resumed_after(&log.reads, at));
                t.catalog_resumed_secs = secs(probe::Log::resumed_after(&log.catalog, at));
                t
            })
            .collect()
    };
    cluster.check_alive()?;
    let rf = args.replication_factor as usize;
    let (_, stats) = checks::wait_whole(
        &mut client,
        "chaos",
        rf,
        Duration::from_secs(args.converge_secs),
    )
    .await?;
    let ids = checks::node_ids(&mut client, &cluster).await?;
    let replicas = checks::replica_positions(&cluster, &ids, "chaos", &stats).await?;
    let oracle = std::mem::take(&mut *load.run.oracle.lock());
    let settings = load.run.settings.clone();
    let audit = audit::audit(&mut client, &settings, &oracle).await?;
    let recall = checks::recall(&mut client, &settings, &oracle, args.recall_queries).await?;
    let catalog = {
        let outcomes = std::mem::take(&mut *load.catalog.lock());
        catalog::audit(
            &cluster,
            "chaos",
            &outcomes,
            Duration::from_secs(args.converge_secs),
        )
        .await?
    };
    cluster.stop();
    let st = load.run.stats.lock();
    let mut report = Report {
        machine: machine(),
        settings: serde_json::to_value(args)?,
        resumption: kinds
            .iter()
            .map(|k| report::resumption(&trials, *k))
            .collect(),
        trials,
        acknowledged: oracle.seq,
        failed_calls: st.errors.iter().sum(),
        audit,
        catalog,
        deleted_returned: st.deleted_returned,
        replicas,
        recall,
        min_recall: args.min_recall,
        failures,
        passed: false,
    };
    report.judge();
    report.write(&args.out)?;
    Ok(report)
}

fn main() -> Result<()> {
    let args = Args::parse();
    check(&args)?;
    longbow_soak::run_to_exit(&args.out, chaos(&args))
}
