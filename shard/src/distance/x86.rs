//! x86-64 kernels: AVX-512F (16 lanes, masked tail) and AVX2+FMA (8 lanes, scalar tail).
//!
//! Each instruction set has one kernel body per metric, generic over how many rows it
//! compares with the query at once: the single-row kernel is the one-row instance and the
//! batched kernel the [`super::BATCH`]-row instance of the same code, so a batch gives
//! bit-identical results to single calls by construction. Loading the query once and keeping
//! every row's loads in flight is what makes the batch faster.
//!
//! Every function here is `unsafe` because it needs CPU features; callers go through
//! [`super::Distance`], which is only built after detection.

use std::arch::x86_64::*;

/// Defines, for AVX-512F, `$rows` (one query against `N` rows) and `$single` (its one-row
/// instance). Two accumulators per row over 32-float steps, then a 16-float step into the
/// first and a masked tail into the second.
macro_rules! avx512_kernel {
    ($single:ident, $rows:ident, |$a:ident, $b:ident, $acc:ident| $step:expr, |$sum:ident| $finish:expr) => {
        /// One query against `N` rows, AVX-512F.
        ///
        /// # Safety
        /// The CPU must support AVX-512F.
        #[target_feature(enable = "avx512f")]
        #[inline]
        pub(super) unsafe fn $rows<const N: usize>(q: &[f32], rows: [&[f32]; N]) -> [f32; N] {
            let n = rows.iter().fold(q.len(), |n, r| n.min(r.len()));
            let pq = q.as_ptr();
            let p = rows.map(|r| r.as_ptr());
            let mut lo = [_mm512_setzero_ps(); N];
            let mut hi = [_mm512_setzero_ps(); N];
            let mut i = 0;
            // SAFETY (all loads below): every offset read is < n, within every slice.
            unsafe {
                while i + 32 <= n {
                    let q0 = _mm512_loadu_ps(pq.add(i));
                    let q1 = _mm512_loadu_ps(pq.add(i + 16));
                    for r in 0..N {
                        let ($a, $b, $acc) = (q0, _mm512_loadu_ps(p[r].add(i)), lo[r]);
                        lo[r] = $step;
                        let ($a, $b, $acc) = (q1, _mm512_loadu_ps(p[r].add(i + 16)), hi[r]);
                        hi[r] = $step;
                    }
                    i += 32;
                }
                if i + 16 <= n {
                    let q0 = _mm512_loadu_ps(pq.add(i));
                    for r in 0..N {
                        let ($a, $b, $acc) = (q0, _mm512_loadu_ps(p[r].add(i)), lo[r]);
                        lo[r] = $step;
                    }
                    i += 16;
                }
                if i < n {
                    let mask: __mmask16 = (1u32 << (n - i)).wrapping_sub(1) as __mmask16;
                    let q0 = _mm512_maskz_loadu_ps(mask, pq.add(i));
                    for r in 0..N {
                        let ($a, $b, $acc) = (q0, _mm512_maskz_loadu_ps(mask, p[r].add(i)), hi[r]);
                        hi[r] = $step;
                    }
                }
            }
            std::array::from_fn(|r| {
                let $sum = _mm512_reduce_add_ps(_mm512_add_ps(lo[r], hi[r]));
                $finish
            })
        }

        /// One query against one row, AVX-512F.
        ///
        /// # Safety
        /// The CPU must support AVX-512F.
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn $single(a: &[f32], b: &[f32]) -> f32 {
            // SAFETY: this function has the same target features as `$rows`.
            let [d] = unsafe { $rows::<1>(a, [b]) };
            d
        }
    };
}

avx512_kernel!(
    l2sq_avx512,
    l2sq_rows_avx512,
    |a, b, acc| {
        let d = _mm512_sub_ps(a, b);
        _mm512_fmadd_ps(d, d, acc)
    },
    |sum| sum
);
avx512_kernel!(
    neg_dot_avx512,
    neg_dot_rows_avx512,
    |a, b, acc| _mm512_fmadd_ps(a, b, acc),
    |sum| -sum
);

#[target_feature(enable = "avx2")]
fn hsum256(v: __m256) -> f32 {
    let hi = _mm256_extractf128_ps(v, 1);
    let lo = _mm256_castps256_ps128(v);
    let s = _mm_add_ps(hi, lo);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
    _mm_cvtss_f32(s)
}

/// Defines, for AVX2+FMA, `$rows` (one query against `N` rows) and `$single` (its one-row
/// instance). Two accumulators per row over 16-float steps, an 8-float step into the first,
/// then a scalar tail added to the horizontal sum.
macro_rules! avx2_kernel {
    ($single:ident, $rows:ident, |$a:ident, $b:ident, $acc:ident| $step:expr, |$x:ident, $y:ident| $tail:expr, |$sum:ident| $finish:expr) => {
        /// One query against `N` rows, AVX2+FMA.
        ///
        /// # Safety
        /// The CPU must support AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        pub(super) unsafe fn $rows<const N: usize>(q: &[f32], rows: [&[f32]; N]) -> [f32; N] {
            let n = rows.iter().fold(q.len(), |n, r| n.min(r.len()));
            let pq = q.as_ptr();
            let p = rows.map(|r| r.as_ptr());
            let mut lo = [_mm256_setzero_ps(); N];
            let mut hi = [_mm256_setzero_ps(); N];
            let mut i = 0;
            // SAFETY (all loads below): every offset read is < n, within every slice.
            unsafe {
                while i + 16 <= n {
                    let q0 = _mm256_loadu_ps(pq.add(i));
                    let q1 = _mm256_loadu_ps(pq.add(i + 8));
                    for r in 0..N {
                        let ($a, $b, $acc) = (q0, _mm256_loadu_ps(p[r].add(i)), lo[r]);
                        lo[r] = $step;
                        let ($a, $b, $acc) = (q1, _mm256_loadu_ps(p[r].add(i + 8)), hi[r]);
                        hi[r] = $step;
                    }
                    i += 16;
                }
                if i + 8 <= n {
                    let q0 = _mm256_loadu_ps(pq.add(i));
                    for r in 0..N {
                        let ($a, $b, $acc) = (q0, _mm256_loadu_ps(p[r].add(i)), lo[r]);
                        lo[r] = $step;
                    }
                    i += 8;
                }
            }
            std::array::from_fn(|r| {
                let mut $sum = hsum256(_mm256_add_ps(lo[r], hi[r]));
                for j in i..n {
                    let ($x, $y) = (q[j], rows[r][j]);
                    $sum += $tail;
                }
                $finish
            })
        }

        /// One query against one row, AVX2+FMA.
        ///
        /// # Safety
        /// The CPU must support AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        pub(super) unsafe fn $single(a: &[f32], b: &[f32]) -> f32 {
            // SAFETY: this function has the same target features as `$rows`.
            let [d] = unsafe { $rows::<1>(a, [b]) };
            d
        }
    };
}

avx2_kernel!(
    l2sq_avx2,
    l2sq_rows_avx2,
    |a, b, acc| {
        let d = _mm256_sub_ps(a, b);
        _mm256_fmadd_ps(d, d, acc)
    },
    |x, y| (x - y) * (x - y),
    |sum| sum
);
avx2_kernel!(
    neg_dot_avx2,
    neg_dot_rows_avx2,
    |a, b, acc| _mm256_fmadd_ps(a, b, acc),
    |x, y| x * y,
    |sum| -sum
);

/// Most cache lines of one row prefetched ahead of its distance computation.
const PREFETCH_LINES: usize = 4;

/// Hint the CPU to pull the cache lines of `row` (up to [`PREFETCH_LINES`]) into L1.
#[inline(always)]
pub(crate) fn prefetch(row: &[f32]) {
    let p = row.as_ptr() as *const i8;
    let lines = (row.len() * 4).div_ceil(64).min(PREFETCH_LINES);
    for l in 0..lines {
        // SAFETY: prefetch never faults, and the address is within `row`.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(l * 64)) };
    }
}

/// Hint the CPU to pull every cache line of `items` into L1 (for short slices such as one
/// neighbour list, read next).
#[inline(always)]
pub(crate) fn prefetch_all<T>(items: &[T]) {
    let p = items.as_ptr() as *const i8;
    let bytes = std::mem::size_of_val(items);
    let first = p as usize & !63;
    let mut line = first;
    while line < p as usize + bytes {
        // SAFETY: prefetch never faults; every address is within a line `items` occupies.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line as *const i8) };
        line += 64;
    }
}
