//! Recall of the HNSW segment on real embeddings: 5,000 sentence embeddings (384-d, float16,
//! L2-normalised) shipped with the repository in `shard/tests/data` (see its README).
//! Synthetic clusters (see the unit tests) are easier than real text embeddings; this test
//! holds the engine to the bar on the data users bring.

use longbow_common::{IndexParams, Metric};
use longbow_shard::segment::SegmentIndex;
use longbow_shard::synth;

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/minilm-384d-5k.f16.npy"
);

/// IEEE 754 half → single precision (normal, subnormal, zero, inf and NaN).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: value = f * 2^-24, exactly representable in f32.
            let v = f as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// The rows of a little-endian float16 C-order `.npy` file as f32, with the row width.
fn read_npy_f16(path: &str) -> (Vec<f32>, usize) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| {
        panic!("{path}: {e} (the sample ships with the repository in shard/tests/data)")
    });
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{path} is not a .npy file");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).expect("ascii header");
    assert!(
        header.contains("'descr': '<f2'"),
        "float16 expected: {header}"
    );
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("shape");
    let dims: Vec<usize> = shape
        .split(',')
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    assert_eq!(dims.len(), 2, "a matrix: {header}");
    let body = &bytes[10 + header_len..];
    assert_eq!(body.len(), dims[0] * dims[1] * 2, "{path} is truncated");
    let data = body
        .chunks_exact(2)
        .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
        .collect();
    (data, dims[1])
}

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
    let (all, dim) = read_npy_f16(DATA);
    assert_eq!(dim, 384);
    let (n, nq) = (4_800, 200);
    // Base rows from the front, queries from the back: no query is in the base.
    let mut base = all[..n * dim].to_vec();
    let mut queries = all[all.len() - nq * dim..].to_vec();
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
