//! Memory footprint of segments, measured as this process's resident set. This file holds a
//! single test so that no other test allocates concurrently in the same process.

use longbow_common::{IndexParams, Metric};
use longbow_shard::segment::SegmentIndex;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("resident pages");
    pages * 4096
}

#[test]
fn many_tiny_segments_cost_kilobytes_each_not_huge_pages() {
    // 100 segments of the default capacity (1 Mi rows of 384 floats reserved each), ten rows
    // apiece: the reservation must stay virtual, and no segment this small may be backed by
    // 2 MiB huge pages (which would pin ~5 MiB per segment, ~500 MiB in all).
    let before = resident_bytes();
    let segments: Vec<SegmentIndex> = (0..100)
        .map(|seed| {
            let seg = SegmentIndex::new(384, 1 << 20, Metric::L2, &IndexParams::default(), seed)
                .expect("segment");
            let rows: Vec<f32> = (0..384 * 10).map(|i| (i % 97) as f32 / 97.0).collect();
            seg.append(&rows);
            seg.index_pending(usize::MAX, &Default::default());
            seg
        })
        .collect();
    let grown = resident_bytes().saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "100 ten-row segments made the process {} MiB larger",
        grown >> 20
    );
    assert_eq!(segments.iter().map(|s| s.indexed()).sum::<usize>(), 1000);
}
