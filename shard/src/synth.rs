//! Deterministic synthetic data for tests and benchmarks: clustered, anisotropic Gaussian
//! vectors (real embeddings are clustered and have uneven variance across directions, which
//! is what makes ANN search hard; uniform random data is not representative).

/// A small, fast, deterministic random source (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}

/// `n` vectors of `dim` floats drawn from `clusters` Gaussian clusters whose per-dimension
/// spread decays geometrically (anisotropic). Row-major.
pub fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let centers: Vec<f32> = (0..clusters * dim).map(|_| rng.normal() * 2.0).collect();
    let spread: Vec<f32> = (0..dim)
        .map(|d| 0.9f32.powf(d as f32 * 24.0 / dim as f32) + 0.05)
        .collect();
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = rng.below(clusters);
        for d in 0..dim {
            out.push(centers[c * dim + d] + rng.normal() * spread[d]);
        }
    }
    out
}

/// Exact `k` nearest rows of `data` to each query under squared L2 (or negated dot when
/// `dot` is set), by brute force. Returns row indices, nearest first.
pub fn ground_truth(
    data: &[f32],
    queries: &[f32],
    dim: usize,
    k: usize,
    dot: bool,
) -> Vec<Vec<u32>> {
    use rayon::prelude::*;
    queries
        .par_chunks(dim)
        .map(|q| {
            let mut all: Vec<(f32, u32)> = data
                .chunks(dim)
                .enumerate()
                .map(|(i, v)| {
                    let d = if dot {
                        -q.iter().zip(v).map(|(a, b)| a * b).sum::<f32>()
                    } else {
                        q.iter().zip(v).map(|(a, b)| (a - b) * (a - b)).sum::<f32>()
                    };
                    (d, i as u32)
                })
                .collect();
            let k = k.min(all.len());
            if k == 0 {
                return Vec::new();
            }
            all.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
            all.truncate(k);
            all.sort_by(|a, b| a.0.total_cmp(&b.0));
            all.into_iter().map(|(_, i)| i).collect()
        })
        .collect()
}

/// Mean recall of `found` against `truth` (both lists of row ids per query).
pub fn recall(found: &[Vec<u32>], truth: &[Vec<u32>]) -> f64 {
    let mut hit = 0usize;
    let mut total = 0usize;
    for (f, t) in found.iter().zip(truth) {
        total += t.len();
        hit += f.iter().filter(|x| t.contains(x)).count();
    }
    hit as f64 / total.max(1) as f64
}

/// Recall@k of a segment's unfiltered graph search with beam `ef` over `queries` (row-major)
/// against `truth` (from [`ground_truth`]).
pub fn search_recall(
    seg: &crate::segment::SegmentIndex,
    queries: &[f32],
    k: usize,
    ef: usize,
    truth: &[Vec<u32>],
) -> f64 {
    let found: Vec<Vec<u32>> = queries
        .chunks(seg.dim())
        .map(|q| {
            seg.search(q, k, ef, &|_| true)
                .iter()
                .map(|c| c.node)
                .collect()
        })
        .collect();
    recall(&found, truth)
}

/// Flip one to four random bits of `buf`.
fn flip_bits(buf: &bytes::Bytes, rng: &mut Rng) -> bytes::Bytes {
    let mut v = buf.to_vec();
    if v.is_empty() {
        return buf.clone();
    }
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len());
        v[at] ^= 1 << rng.below(8);
    }
    v.into()
}

/// A copy of a Flight call's messages with one random kind of damage, for wire fuzz tests:
/// flipped bits in an IPC header or body, a truncated body, or a message dropped, repeated
/// or moved. The first message carries the descriptor, so its damage reaches that too.
pub fn damage_messages(
    msgs: &[arrow_flight::FlightData],
    rng: &mut Rng,
) -> Vec<arrow_flight::FlightData> {
    let mut out = msgs.to_vec();
    if out.is_empty() {
        return out;
    }
    let i = rng.below(out.len());
    match rng.below(6) {
        0 => out[i].data_header = flip_bits(&out[i].data_header, rng),
        1 => out[i].data_body = flip_bits(&out[i].data_body, rng),
        2 => {
            let body = &out[i].data_body;
            out[i].data_body = body.slice(..rng.below(body.len() + 1));
        }
        3 => {
            out.remove(i);
        }
        4 => {
            let copy = out[i].clone();
            out.insert(rng.below(out.len() + 1), copy);
        }
        _ => {
            let j = rng.below(out.len());
            out.swap(i, j);
        }
    }
    out
}
