//! The real sentence embeddings shipped in `shard/tests/data` (see its README).

const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/minilm-384d-20k.f16.npy"
);

/// Queries at the end of the sample file, never among its base rows.
pub const QUERIES: usize = 200;

/// IEEE 754 half → single precision (normal, subnormal, zero, inf and NaN).
pub fn f16_to_f32(h: u16) -> f32 {
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
pub fn read_npy_f16(path: &str) -> (Vec<f32>, usize) {
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

/// The first `n` base rows and the query rows of the sample, as f32 (not normalised), with
/// the dimension.
pub fn real_embeddings(n: usize) -> (Vec<f32>, Vec<f32>, usize) {
    let (all, dim) = read_npy_f16(DATA);
    let rows = all.len() / dim;
    assert!(
        n <= rows - QUERIES,
        "the sample has {} base rows",
        rows - QUERIES
    );
    let queries = all[(rows - QUERIES) * dim..].to_vec();
    (all[..n * dim].to_vec(), queries, dim)
}
