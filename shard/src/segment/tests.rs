use super::*;
use crate::synth;

fn build(data: &[f32], dim: usize, metric: Metric, params: &IndexParams) -> SegmentIndex {
    let n = data.len() / dim;
    let seg = SegmentIndex::new(dim, n + 16, metric, params, 7).expect("segment");
    seg.append(data);
    seg.index_pending(usize::MAX, &Default::default());
    seg.repair();
    seg
}

#[test]
fn recall_at_10_is_at_least_095_on_20k_clustered_vectors() {
    // M = 16, ef_construction = 200, ef = 64 (the namespace defaults).
    let (n, dim, nq) = (20_000, 64, 200);
    let all = synth::clustered(n + nq, dim, 50, 1);
    let (data, queries) = all.split_at(n * dim);
    let params = IndexParams::default();
    let seg = build(data, dim, Metric::L2, &params);
    assert_eq!(seg.indexed(), n);
    let truth = synth::ground_truth(data, queries, dim, 10, false);
    let r = synth::search_recall(&seg, queries, 10, 64, &truth);
    eprintln!("segment recall@10 = {r}");
    assert!(r >= 0.95, "recall@10 = {r}");
}

#[test]
fn every_node_is_reachable_from_the_entry_point() {
    let dim = 32;
    let data = synth::clustered(5_000, dim, 20, 3);
    let seg = build(
        &data,
        dim,
        Metric::L2,
        &IndexParams {
            m: 8,
            ef_construction: 100,
            ef_search: 32,
        },
    );
    assert_eq!(seg.reachable(), 5_000, "repair leaves no node unreachable");
}

#[test]
fn unlinked_rows_are_found_by_exact_scan() {
    let dim = 16;
    let data = synth::clustered(1_000, dim, 5, 4);
    let seg =
        SegmentIndex::new(dim, 2_000, Metric::L2, &IndexParams::default(), 1).expect("segment");
    seg.append(&data[..500 * dim]);
    seg.index_pending(usize::MAX, &Default::default());
    seg.append(&data[500 * dim..]);
    assert_eq!((seg.indexed(), seg.len()), (500, 1000));
    // A query equal to an unlinked row must find it first.
    let hit = seg.search(&data[700 * dim..701 * dim], 1, 32, &|_| true);
    assert_eq!(hit[0].node, 700);
    assert_eq!(hit[0].dist, 0.0);
}

#[test]
fn rejected_nodes_are_never_returned_but_still_traversed() {
    let dim = 16;
    let data = synth::clustered(3_000, dim, 10, 5);
    let seg = build(&data, dim, Metric::L2, &IndexParams::default());
    let even = |n: u32| n.is_multiple_of(2);
    let q = &data[11 * dim..12 * dim];
    let got = seg.search(q, 10, 64, &even);
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|c| c.node.is_multiple_of(2)));
    let exact = seg.exact(q, 10, (0..3_000u32).filter(|n| n.is_multiple_of(2)));
    let overlap = got
        .iter()
        .filter(|c| exact.iter().any(|e| e.node == c.node))
        .count();
    assert!(overlap >= 9, "filtered overlap {overlap}/10");
}

#[test]
fn dot_metric_ranks_by_inner_product() {
    let dim = 8;
    let data: Vec<f32> = (0..100).flat_map(|i| vec![i as f32 / 100.0; dim]).collect();
    let seg = build(&data, dim, Metric::Dot, &IndexParams::default());
    // Collinear rows are the worst case for a graph under inner product (parallel insertion
    // prunes their links differently run to run): a beam as wide as the segment makes the
    // check about ranking, not about how the graph happened to link.
    let got = seg.search(&[1.0; 8], 3, 100, &|_| true);
    let nodes: Vec<u32> = got.iter().map(|c| c.node).collect();
    assert_eq!(nodes, vec![99, 98, 97]);
}

/// 2,000 distinct clustered rows, then 3,000 copies of row 0 and 100 copies of each of rows
/// 1..=16 interleaved (a re-ingested data set, or many texts that embed identically).
fn with_duplicates(dim: usize) -> Vec<f32> {
    let mut data = synth::clustered(2_000, dim, 20, 9);
    let row = |data: &[f32], i: usize| data[i * dim..(i + 1) * dim].to_vec();
    for round in 0..3_000 {
        data.extend(row(&data, 0));
        if round < 1_600 {
            data.extend(row(&data, 1 + round % 16));
        }
    }
    data
}

#[test]
fn exact_duplicates_keep_every_row_reachable() {
    let dim = 16;
    let data = with_duplicates(dim);
    let n = data.len() / dim;
    let seg = build(&data, dim, Metric::L2, &IndexParams::default());
    assert_eq!(seg.reachable(), n, "duplicates cut rows off the graph");
}

#[test]
fn any_live_copy_of_a_duplicated_vector_is_found() {
    let dim = 16;
    let data = with_duplicates(dim);
    let n = data.len() / dim;
    let seg = build(&data, dim, Metric::L2, &IndexParams::default());
    let q = &data[..dim];
    // All copies of row 0 but the last three are tombstoned (upsert churn): those three,
    // and nothing else, are at distance 0.
    let copies: Vec<u32> = (0..n as u32).filter(|&o| seg.vector(o) == q).collect();
    assert_eq!(copies.len(), 3_001);
    let live = &copies[copies.len() - 3..];
    let accept = |o: u32| seg.vector(o) != q || live.contains(&o);
    let got = seg.search(q, 10, 64, &accept);
    let at_zero: Vec<u32> = got
        .iter()
        .filter(|c| c.dist == 0.0)
        .map(|c| c.node)
        .collect();
    assert_eq!(at_zero.len(), 3, "{got:?}");
    assert!(at_zero.iter().all(|o| live.contains(o)));
    assert_eq!(got.len(), 10);
    // Without tombstones, k copies come back, all at distance 0.
    let got = seg.search(q, 10, 64, &|_| true);
    assert!(got.iter().all(|c| c.dist == 0.0), "{got:?}");
}

#[test]
fn duplicates_do_not_hurt_recall_of_distinct_rows() {
    let dim = 16;
    let data = with_duplicates(dim);
    let seg = build(&data, dim, Metric::L2, &IndexParams::default());
    let queries = synth::clustered(200, dim, 20, 9 + 1);
    // Copies tie at equal distance, so which copy the truth lists is arbitrary: a result
    // counts when it is no farther than the true 10th neighbour.
    let truth = synth::ground_truth(&data, &queries, dim, 10, false);
    let l2 = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>();
    let mut hits = 0;
    for (q, t) in queries.chunks(dim).zip(&truth) {
        let kth = l2(q, seg.vector(t[9]));
        let got = seg.search(q, 10, 64, &|_| true);
        hits += got.iter().filter(|c| c.dist <= kth * (1.0 + 1e-5)).count();
    }
    let r = hits as f64 / (10 * truth.len()) as f64;
    eprintln!("recall@10 of distinct rows among duplicates = {r}");
    assert!(r >= 0.95, "recall@10 = {r}");
}

#[test]
fn a_loaded_segment_answers_exactly_like_the_one_written() {
    let dim = 24;
    let mut data = synth::clustered(3_000, dim, 10, 5);
    // Exact duplicates make chains, which the file must keep too.
    let copy = data[..dim].to_vec();
    data.extend_from_slice(&copy);
    let seg = build(&data, dim, Metric::L2, &IndexParams::default());
    let loaded = SegmentIndex::load(dim, Metric::L2, &seg.encode_vectors(), &seg.encode_graph())
        .expect("load");
    assert_eq!((loaded.len(), loaded.indexed()), (seg.len(), seg.indexed()));
    assert_eq!(loaded.reachable(), seg.reachable());
    assert_eq!(loaded.encode_graph(), seg.encode_graph());
    for qi in (0..3_000).step_by(97) {
        let q = &data[qi * dim..(qi + 1) * dim];
        assert_eq!(
            loaded.search(q, 10, 64, &|_| true),
            seg.search(q, 10, 64, &|_| true)
        );
    }
}

#[test]
fn a_damaged_graph_file_is_an_error_not_a_panic() {
    let dim = 8;
    let data = synth::clustered(500, dim, 4, 6);
    let seg = build(&data, dim, Metric::L2, &IndexParams::default());
    let vectors = seg.encode_vectors();
    let graph = seg.encode_graph();
    for cut in [0, 7, 40, graph.len() / 2, graph.len() - 1] {
        assert!(SegmentIndex::load(dim, Metric::L2, &vectors, &graph[..cut]).is_err());
    }
    let mut bad = graph.clone();
    // A neighbour slot of node 3 pointing far beyond the segment.
    let w0 = 1 + 2 * IndexParams::default().m;
    let at = 40 + (3 * w0 + 1) * 4;
    bad[at..at + 4].copy_from_slice(&9_999u32.to_le_bytes());
    let err = SegmentIndex::load(dim, Metric::L2, &vectors, &bad).err();
    assert!(err.is_some_and(|e| e.contains("invalid word")));
    assert!(SegmentIndex::load(dim, Metric::L2, &vectors[..vectors.len() - 4], &graph).is_err());
}

/// Minor page faults of the calling thread so far.
fn thread_minor_faults() -> i64 {
    // SAFETY: `getrusage` only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_THREAD reports the calling thread.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) },
        0
    );
    usage.ru_minflt
}

/// A replica's segment reserves room for a million rows; dropping one that holds a few
/// must not walk (and fault in) the whole reservation: shutting down thousands of small
/// namespaces took seconds when it did.
#[test]
fn dropping_a_mostly_empty_segment_touches_only_what_it_used() {
    let dim = 8;
    let data = synth::clustered(100, dim, 2, 5);
    let seg =
        SegmentIndex::new(dim, 1 << 20, Metric::L2, &IndexParams::default(), 7).expect("segment");
    seg.append(&data);
    seg.index_pending(usize::MAX, &Default::default());
    let before = thread_minor_faults();
    drop(seg);
    let faults = thread_minor_faults() - before;
    // The upper-layer slots alone span 8 MiB (2,048 pages) at this capacity.
    assert!(
        faults < 256,
        "dropping the segment faulted in {faults} pages"
    );
}
