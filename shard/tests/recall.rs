//! Recall of the HNSW segment on real embeddings: sentence embeddings (384-d, float16,
//! L2-normalised) shipped with the repository in `shard/tests/data` (see its README).
//! Synthetic clusters (see the unit tests) are easier than real text embeddings; this test
//! holds the engine to the bar on the data users bring.

mod common;

use common::npy::{f16_to_f32, real_embeddings};
use longbow_common::{IndexParams, Metric};
use longbow_shard::segment::SegmentIndex;
use longbow_shard::synth;

#[test]
fn half_floats_convert_exactly() {
    assert_eq!(f16_to_f32(0x3c00), 1.0);
    assert_eq!(f16_to_f32(0xc000), -2.0);
    assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
    assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
    assert_eq!(f16_to_f32(0x7bff), 65504.0);
    assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
    assert!(f16_to_f32(0x7e00).is_nan());
    assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
}

#[test]
fn recall_at_10_on_real_sentence_embeddings_is_at_least_095() {
    // M = 16, ef_construction = 200, ef = 64 (the namespace defaults), cosine.
    let (base, queries, dim) = real_embeddings(4_800);
    let n = 4_800;
    let (mut base, mut queries) = (base, queries);
    for v in base.chunks_mut(dim).chain(queries.chunks_mut(dim)) {
        longbow_shard::distance::normalize(v);
    }
    let params = IndexParams::default();
    assert_eq!((params.m, params.ef_construction), (16, 200));
    let seg = SegmentIndex::new(dim, n, Metric::Cosine, &params, 11).expect("segment");
    seg.append(&base);
    seg.index_pending(usize::MAX, &Default::default());
    seg.repair();
    assert_eq!(seg.reachable(), n, "every row reachable after repair");

    let truth = synth::ground_truth(&base, &queries, dim, 10, true);
    let r = synth::search_recall(&seg, &queries, 10, 64, &truth);
    eprintln!("real embeddings: recall@10 = {r} at ef 64");
    assert!(r >= 0.95, "recall@10 = {r}");
}
