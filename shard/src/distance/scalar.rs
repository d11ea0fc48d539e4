//! Portable kernels. Eight independent accumulators let the compiler vectorise them with the
//! baseline instruction set and keep summation error close to the SIMD kernels'.

/// Sum of `term(a[i], b[i])` over the common length, in eight lanes plus a tail.
#[inline(always)]
fn sum_terms(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> f32) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        for j in 0..8 {
            acc[j] += term(a[c * 8 + j], b[c * 8 + j]);
        }
    }
    let mut tail = 0.0;
    for i in chunks * 8..n {
        tail += term(a[i], b[i]);
    }
    acc.iter().sum::<f32>() + tail
}

/// Squared Euclidean distance.
pub(super) fn l2sq(a: &[f32], b: &[f32]) -> f32 {
    sum_terms(a, b, |x, y| (x - y) * (x - y))
}

/// Negated inner product.
pub(super) fn neg_dot(a: &[f32], b: &[f32]) -> f32 {
    -sum_terms(a, b, |x, y| x * y)
}
