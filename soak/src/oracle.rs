//! What the cluster must hold: every acknowledged write's last value, every acknowledged
//! delete, and the writes whose outcome is unknown (their call failed, so they may or may
//! not have been applied). Vectors are a pure function of `(id, version)`, so the oracle
//! keeps only versions and recomputes vectors when it needs them.
//!
//! Ids are never reused: inserts take fresh ids, so a deleted id must never come back.

use std::collections::HashMap;

/// A deterministic vector for `(id, version)`: one of `clusters` centres plus noise, so the
/// data has the structure real embeddings have (and the graph has work to do).
pub fn vector(id: u64, version: u32, dim: usize, clusters: u64) -> Vec<f32> {
    let centre = id % clusters.max(1);
    let mut c = SplitMix(centre.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xC0FFEE);
    let mut n = SplitMix(id.wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ ((version as u64) << 40));
    (0..dim)
        .map(|_| (c.unit() * 2.0 - 1.0) + 0.25 * (n.unit() * 2.0 - 1.0))
        .collect()
}

/// A small, fast, well-mixed generator (SplitMix64).
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// The acknowledged state of the namespace.
#[derive(Default)]
pub struct Oracle {
    /// Live ids and their last acknowledged version.
    pub live: HashMap<u64, u32>,
    /// Deleted ids and the sequence number at which their delete was acknowledged.
    pub deleted: HashMap<u64, u64>,
    /// Ids whose last write failed: present with one of these versions, or absent if `None`
    /// is among them.
    pub uncertain: HashMap<u64, Vec<Option<u32>>>,
    /// Bumped by every acknowledged change.
    pub seq: u64,
}

impl Oracle {
    /// An acknowledged insert or upsert of `id` at `version`.
    pub fn wrote(&mut self, id: u64, version: u32) {
        self.seq += 1;
        self.live.insert(id, version);
    }

    /// An acknowledged delete of `id`.
    pub fn deleted(&mut self, id: u64) {
        self.seq += 1;
        self.live.remove(&id);
        self.deleted.insert(id, self.seq);
    }

    /// A write of `id` whose outcome is unknown: afterwards the row holds `before` or
    /// `after` (`None`: absent).
    pub fn unknown(&mut self, id: u64, before: Option<u32>, after: Option<u32>) {
        self.live.remove(&id);
        let states = self.uncertain.entry(id).or_default();
        for s in [before, after] {
            if !states.contains(&s) {
                states.push(s);
            }
        }
    }

    /// Whether `id` was deleted, acknowledged at or before sequence `seq`.
    pub fn deleted_by(&self, id: u64, seq: u64) -> bool {
        self.deleted.get(&id).is_some_and(|&at| at <= seq)
    }
}

/// The `k` nearest of `live` to `q` by squared L2, nearest first.
pub fn exact_top_k(live: &[(u64, Vec<f32>)], q: &[f32], k: usize) -> Vec<u64> {
    let mut scored: Vec<(f32, u64)> = live
        .iter()
        .map(|(id, v)| {
            let d = v.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum::<f32>();
            (d, *id)
        })
        .collect();
    let k = k.min(scored.len());
    if k == 0 {
        return Vec::new();
    }
    scored.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
    scored.truncate(k);
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    scored.into_iter().map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_depend_on_id_and_version_only() {
        assert_eq!(vector(7, 1, 16, 10), vector(7, 1, 16, 10));
        assert_ne!(vector(7, 1, 16, 10), vector(7, 2, 16, 10));
        assert_ne!(vector(7, 1, 16, 10), vector(8, 1, 16, 10));
    }

    #[test]
    fn a_delete_counts_only_for_searches_sent_after_it() {
        let mut o = Oracle::default();
        o.wrote(1, 0);
        let before = o.seq;
        o.deleted(1);
        assert!(!o.deleted_by(1, before));
        assert!(o.deleted_by(1, o.seq));
        assert!(!o.live.contains_key(&1));
    }

    #[test]
    fn exact_search_orders_by_distance() {
        let live = vec![
            (1, vec![0.0, 0.0]),
            (2, vec![3.0, 0.0]),
            (3, vec![1.0, 0.0]),
        ];
        assert_eq!(exact_top_k(&live, &[0.0, 0.0], 2), vec![1, 3]);
        assert_eq!(exact_top_k(&live, &[0.0, 0.0], 5), vec![1, 3, 2]);
    }
}
