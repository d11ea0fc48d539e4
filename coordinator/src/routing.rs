//! Row → shard routing: `jump_consistent_hash(xxh3_64(id), shards)`.
//!
//! Jump consistent hash (Lamping & Veach) moves only `1/n` of the keys when a shard is added
//! and needs no table. Integer ids hash their little-endian bytes, string ids their UTF-8.

use arrow_array::{RecordBatch, UInt32Array};
use longbow_common::IdValue;
use xxhash_rust::xxh3::xxh3_64;

/// The shard of `key` among `buckets`.
pub fn jump_consistent_hash(mut key: u64, buckets: u32) -> u32 {
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as u32
}

/// The shard an id belongs to.
pub fn shard_of(id: &IdValue, shards: u32) -> u32 {
    let h = match id {
        IdValue::U64(v) => xxh3_64(&v.to_le_bytes()),
        IdValue::I64(v) => xxh3_64(&v.to_le_bytes()),
        IdValue::Str(s) => xxh3_64(s.as_bytes()),
    };
    jump_consistent_hash(h, shards.max(1))
}

/// Split a batch by shard: `(shard, rows of that shard)` for every shard that has rows.
pub fn split(
    batch: &RecordBatch,
    ids: &[IdValue],
    shards: u32,
) -> Result<Vec<(u32, RecordBatch)>, arrow_schema::ArrowError> {
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); shards.max(1) as usize];
    for (i, id) in ids.iter().enumerate() {
        rows[shard_of(id, shards) as usize].push(i as u32);
    }
    let mut out = Vec::new();
    for (s, r) in rows.into_iter().enumerate() {
        if r.is_empty() {
            continue;
        }
        let part = if r.len() == batch.num_rows() {
            batch.clone()
        } else {
            arrow_select::take::take_record_batch(batch, &UInt32Array::from(r))?
        };
        out.push((s as u32, part));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_hash_is_stable_and_balanced() {
        let mut counts = [0usize; 4];
        for k in 0..40_000u64 {
            counts[shard_of(&IdValue::U64(k), 4) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
        // Growing from 4 to 5 shards moves only keys that go to the new shard.
        for k in 0..10_000u64 {
            let (a, b) = (shard_of(&IdValue::U64(k), 4), shard_of(&IdValue::U64(k), 5));
            assert!(a == b || b == 4);
        }
        assert_eq!(jump_consistent_hash(12345, 1), 0);
    }
}
