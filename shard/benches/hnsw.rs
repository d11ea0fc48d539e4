//! HNSW segment benchmark: build time on all cores, then single-thread queries per second and
//! recall@10 across a sweep of `ef`, plus index memory.
//!
//! `cargo bench -p longbow-shard --bench hnsw` runs on built-in synthetic clustered data.
//! `bench/hnsw_vs_hnswlib.py` passes files (`--base`, `--queries`, `--truth`) so hnswlib and
//! Longbow index exactly the same vectors; results are printed as one JSON object per line.
//! With `--serve` the binary builds once, then runs one query pass per `ef` read from stdin
//! (one per line), so the script can alternate passes with hnswlib's on a noisy machine.

use std::time::Instant;

use longbow_common::{IndexParams, Metric};
use longbow_shard::segment::SegmentIndex;
use longbow_shard::synth;

struct Args {
    base: Option<String>,
    queries: Option<String>,
    truth: Option<String>,
    dim: usize,
    n: usize,
    metric: Metric,
    m: usize,
    ef_construction: usize,
    efs: Vec<usize>,
    k: usize,
    serve: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        base: None,
        queries: None,
        truth: None,
        dim: 128,
        n: 100_000,
        metric: Metric::L2,
        m: 16,
        ef_construction: 200,
        efs: vec![10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512],
        k: 10,
        serve: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--bench" => {}
            "--base" => a.base = Some(val()),
            "--queries" => a.queries = Some(val()),
            "--truth" => a.truth = Some(val()),
            "--dim" => a.dim = val().parse().expect("--dim"),
            "--n" => a.n = val().parse().expect("--n"),
            "--metric" => a.metric = Metric::parse("--metric", &val()).expect("--metric"),
            "--m" => a.m = val().parse().expect("--m"),
            "--ef-construction" => a.ef_construction = val().parse().expect("--ef-construction"),
            "--efs" => {
                a.efs = val()
                    .split(',')
                    .map(|s| s.parse().expect("--efs"))
                    .collect()
            }
            "--k" => a.k = val().parse().expect("--k"),
            "--serve" => a.serve = true,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn read_f32(path: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn read_u32(path: &str) -> Vec<u32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let a = parse_args();
    let (base, queries, truth) = match (&a.base, &a.queries, &a.truth) {
        (Some(b), Some(q), Some(t)) => {
            let base = read_f32(b);
            let queries = read_f32(q);
            let truth = read_u32(t);
            let nq = queries.len() / a.dim;
            let truth: Vec<Vec<u32>> = truth
                .chunks(truth.len() / nq)
                .map(|c| c[..a.k].to_vec())
                .collect();
            (base, queries, truth)
        }
        _ => {
            let all = synth::clustered(a.n + 1_000, a.dim, 100, 42);
            let (base, queries) = all.split_at(a.n * a.dim);
            let truth = synth::ground_truth(base, queries, a.dim, a.k, a.metric != Metric::L2);
            (base.to_vec(), queries.to_vec(), truth)
        }
    };
    let n = base.len() / a.dim;
    let mut base = base;
    let mut queries = queries;
    if a.metric == Metric::Cosine {
        base.chunks_mut(a.dim).for_each(|v| {
            longbow_shard::distance::normalize(v);
        });
        queries.chunks_mut(a.dim).for_each(|v| {
            longbow_shard::distance::normalize(v);
        });
    }
    let params = IndexParams {
        m: a.m,
        ef_construction: a.ef_construction,
        ef_search: 64,
    };
    let rss0 = rss_bytes();
    let seg = SegmentIndex::new(a.dim, n, a.metric, &params, 42).expect("segment");
    let t = Instant::now();
    seg.append(&base);
    seg.index_pending(usize::MAX, &Default::default());
    seg.repair();
    let build = t.elapsed().as_secs_f64();
    let rss1 = rss_bytes();
    // What one reachability check (the first step of every repair pass) costs at this size.
    let t = Instant::now();
    let reachable = seg.reachable();
    let reach_ms = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "{{\"engine\":\"longbow\",\"n\":{n},\"dim\":{},\"m\":{},\"ef_construction\":{},\"build_secs\":{build:.3},\"threads\":{},\"index_bytes\":{},\"rss_delta_bytes\":{},\"isa\":\"{}\",\"reachable\":{reachable},\"reachability_check_ms\":{reach_ms:.2}}}",
        a.dim,
        a.m,
        a.ef_construction,
        rayon::current_num_threads(),
        seg.memory_bytes(),
        rss1.saturating_sub(rss0),
        longbow_shard::distance::kernels().isa
    );
    let pass = |ef: usize| {
        let t = Instant::now();
        let found: Vec<Vec<u32>> = queries
            .chunks(a.dim)
            .map(|q| {
                seg.search(q, a.k, ef, &|_| true)
                    .iter()
                    .map(|c| c.node)
                    .collect()
            })
            .collect();
        let secs = t.elapsed().as_secs_f64();
        let recall = synth::recall(&found, &truth);
        println!(
            "{{\"engine\":\"longbow\",\"ef\":{ef},\"recall\":{recall:.4},\"qps\":{:.1}}}",
            found.len() as f64 / secs
        );
    };
    if a.serve {
        use std::io::{BufRead, Write};
        for line in std::io::stdin().lock().lines() {
            let line = line.expect("stdin");
            let Ok(ef) = line.trim().parse() else {
                break;
            };
            pass(ef);
            std::io::stdout().flush().expect("stdout");
        }
    } else {
        a.efs.iter().for_each(|&ef| pass(ef));
    }
}
