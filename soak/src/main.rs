//! `longbow-soak`: runs a mixed search / insert / upsert / delete workload against a Longbow
//! cluster for a set time, then audits it and writes a report (JSON, Markdown, PNG plots).
//!
//! With `--binary` it starts the cluster itself (one `longbow coordinator` and `--shards`
//! `longbow shard` processes on loopback, under `<out>/cluster/`); with `--data`, `--meta`
//! and `--metrics` it runs against one already running. It exits 0 when the run passed
//! (no failed call, nothing acknowledged lost or changed, no deleted id returned, recall and
//! RSS within bounds) and 1 otherwise, so CI can run it as a check.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::json;

use longbow_soak::client::Client;
use longbow_soak::cluster::{self, Cluster, Endpoint};
use longbow_soak::report::{Criteria, Inputs, Report};
use longbow_soak::sampler::Sampler;
use longbow_soak::workload::{self, Run, Settings};
use longbow_soak::{audit, machine, plot};

/// Soak a Longbow cluster: a mixed workload at set rates, then an audit and a report.
#[derive(Parser, Debug)]
#[command(name = "longbow-soak", version)]
struct Args {
    /// Start the cluster from this `longbow` binary (instead of `--data`/`--meta`).
    #[arg(long, conflicts_with_all = ["data", "meta"])]
    binary: Option<PathBuf>,
    /// Shard nodes to start with `--binary`; also the namespace's shard count.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=64))]
    shards: u64,
    /// An argument for every shard node started (repeat it), e.g. `--shard-arg=--segment-rows=4096`.
    #[arg(long = "shard-arg", allow_hyphen_values = true)]
    shard_args: Vec<String>,
    /// Log filter (`LONGBOW_LOG`) of the processes started with `--binary`; their logs are
    /// in `<out>/cluster/<process>.log`.
    #[arg(long, default_value = "warn")]
    log: String,
    /// Data port of a running coordinator (`host:port`).
    #[arg(long, requires = "meta")]
    data: Option<String>,
    /// Meta port of a running coordinator.
    #[arg(long, requires = "data")]
    meta: Option<String>,
    /// HTTP ports of the running cluster's processes to sample, as `name=host:port`,
    /// comma-separated.
    #[arg(long, value_delimiter = ',')]
    metrics: Vec<String>,
    /// Directory for the report (and the started cluster's files).
    #[arg(long, default_value = "soak-report")]
    out: PathBuf,
    /// Namespace to create and soak (it must not exist).
    #[arg(long, default_value = "soak")]
    namespace: String,
    /// Seconds of mixed workload.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    duration_secs: u64,
    /// Rows loaded before the mixed workload starts.
    #[arg(long, default_value_t = 15_000)]
    initial_rows: u64,
    /// Vector dimension.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=4096))]
    dim: u64,
    /// Clusters of the synthetic vectors.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    clusters: u64,
    /// Neighbours per search.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    k: u64,
    /// Searches per second.
    #[arg(long, default_value_t = 50.0)]
    search_rate: f64,
    /// Inserts (fresh ids) per second.
    #[arg(long, default_value_t = 10.0)]
    insert_rate: f64,
    /// Upserts (new versions of live ids) per second.
    #[arg(long, default_value_t = 20.0)]
    upsert_rate: f64,
    /// Deletes of live ids per second.
    #[arg(long, default_value_t = 10.0)]
    delete_rate: f64,
    /// Concurrent writers (each owns a disjoint set of ids).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    writers: u64,
    /// Concurrent searchers.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=256))]
    searchers: u64,
    /// Check every n-th search against an exact search over the acknowledged rows.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    recall_every: u64,
    /// Seconds between resource and latency samples.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    sample_secs: u64,
    /// RSS must be flat over this final stretch of the run (at most half the run is used).
    #[arg(long, default_value_t = 600)]
    flat_window_secs: u64,
    /// Lowest acceptable mean recall@k.
    #[arg(long, default_value_t = 0.9)]
    min_recall: f64,
    /// Largest acceptable RSS growth of any process over the final window (0.1 = 10 %).
    #[arg(long, default_value_t = 0.1)]
    max_rss_growth: f64,
    /// TrueType font for the plots (default: a DejaVu or Liberation font from the system).
    #[arg(long)]
    font: Option<PathBuf>,
}

fn check(args: &Args) -> Result<()> {
    longbow_soak::check_rates(
        &[
            ("--search-rate", args.search_rate),
            ("--insert-rate", args.insert_rate),
            ("--upsert-rate", args.upsert_rate),
            ("--delete-rate", args.delete_rate),
        ],
        args.min_recall,
    )?;
    if !(args.max_rss_growth.is_finite() && args.max_rss_growth >= 0.0) {
        bail!("--max-rss-growth must be ≥ 0, got {}", args.max_rss_growth);
    }
    if args.binary.is_none() && args.data.is_none() {
        bail!("give --binary (start a cluster) or --data and --meta (use a running one)");
    }
    Ok(())
}

fn cluster(args: &Args) -> Result<Cluster> {
    if let Some(binary) = &args.binary {
        let dir = cluster::work_dir(&args.out);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
        }
        return Cluster::start(
            binary,
            &dir,
            args.shards as usize,
            &args.shard_args,
            &args.log,
        );
    }
    let endpoints = args
        .metrics
        .iter()
        .map(|m| match m.split_once('=') {
            Some((name, http)) => Ok(Endpoint {
                name: name.to_string(),
                http: http.to_string(),
            }),
            None => bail!("--metrics entries are name=host:port, got {m:?}"),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Cluster::existing(
        args.data.clone().unwrap_or_default(),
        args.meta.clone().unwrap_or_default(),
        endpoints,
    ))
}

async fn soak(args: &Args) -> Result<Report> {
    std::fs::create_dir_all(&args.out)?;
    plot::use_font(args.font.as_deref())?;
    let mut cluster = cluster(args)?;
    let mut client = Client::connect(&cluster.data, &cluster.meta).await?;
    if args.binary.is_some() {
        client.wait_live(args.shards as usize).await?;
    }
    let settings = Arc::new(Settings {
        namespace: args.namespace.clone(),
        dim: args.dim as usize,
        clusters: args.clusters,
        k: args.k as usize,
        duration: Duration::from_secs(args.duration_secs),
        search_rate: args.search_rate,
        insert_rate: args.insert_rate,
        upsert_rate: args.upsert_rate,
        delete_rate: args.delete_rate,
        writers: args.writers as usize,
        searchers: args.searchers as usize,
        recall_every: args.recall_every,
    });
    client
        .action(
            "CreateNamespace",
            json!({"name": settings.namespace, "dim": settings.dim, "metric": "l2", "shards": args.shards}),
        )
        .await
        .context("creating the namespace")?;
    let run = Run::new(settings.clone());
    let started = Instant::now();
    workload::load(&run, &mut client, args.initial_rows).await?;
    client.wait_ready(&settings.namespace).await?;
    let load_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "loaded {} rows in {load_secs:.1} s; mixed workload for {} s",
        args.initial_rows, args.duration_secs
    );

    let start = Instant::now();
    let deadline = start + settings.duration;
    let mut tasks = Vec::new();
    for w in 0..settings.writers {
        let c = Client::connect(&cluster.data, &cluster.meta).await?;
        tasks.push(tokio::spawn(workload::writer(run.clone(), c, w, deadline)));
    }
    for s in 0..settings.searchers {
        let c = Client::connect(&cluster.data, &cluster.meta).await?;
        tasks.push(tokio::spawn(workload::searcher(
            run.clone(),
            c,
            s,
            deadline,
        )));
    }
    let sampler = Sampler {
        endpoints: cluster.endpoints.clone(),
        stats: run.stats.clone(),
        every: Duration::from_secs(args.sample_secs),
    };
    let sampled = tokio::spawn(sampler.run(start, deadline));
    for t in tasks {
        t.await.context("a workload task panicked")?;
    }
    let run_secs = start.elapsed().as_secs_f64();
    let (samples, scrape_failures) = sampled.await.context("the sampler panicked")?;
    cluster.check_alive()?;

    // Every task has finished: the oracle is final.
    let oracle = std::mem::take(&mut *run.oracle.lock());
    let mut c = Client::connect(&cluster.data, &cluster.meta).await?;
    let audit = audit::audit(&mut c, &settings, &oracle).await?;
    let exits = cluster.stop();
    let stats = run.stats.lock();
    let report = Report::new(Inputs {
        machine: machine(),
        settings: &settings,
        criteria: Criteria {
            min_recall: args.min_recall,
            max_rss_growth: args.max_rss_growth,
        },
        initial_rows: args.initial_rows,
        load_secs,
        run_secs,
        stats: &stats,
        audit,
        samples,
        scrape_failures,
        exits,
        flat_window_secs: (args.flat_window_secs as f64).min(run_secs / 2.0),
    });
    report.write(&args.out)?;
    plot::latency(&report.samples, &args.out.join("latency.png"))?;
    plot::resources(&report.samples, &args.out.join("resources.png"))?;
    Ok(report)
}

fn main() -> Result<()> {
    let args = Args::parse();
    check(&args)?;
    longbow_soak::run_to_exit(&args.out, soak(&args))
}
