//! The vector arena: one contiguous, page-aligned block holding every vector of a segment,
//! addressed by dense `u32` offsets.
//!
//! Rows are written exactly once, by the single writer of the segment, *before* the row count
//! is published with release ordering; readers only touch rows below a count they loaded with
//! acquire ordering, or rows reached through graph links (which are only created after the
//! row was published). So every offset a reader can hold points at a fully written vector,
//! and the hot loops need no "missing vector" branch.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::region::Region;

/// Floats per row are padded to a multiple of this, so every row starts on a 64-byte line.
const ROW_ALIGN_FLOATS: usize = 16;

/// Fixed-capacity vector storage.
pub(crate) struct VectorArena {
    region: Region,
    dim: usize,
    stride: usize,
    capacity: usize,
    len: AtomicUsize,
}

impl VectorArena {
    /// Reserve room for `capacity` vectors of `dim` floats.
    pub(crate) fn new(dim: usize, capacity: usize) -> std::io::Result<Self> {
        let stride = dim.div_ceil(ROW_ALIGN_FLOATS) * ROW_ALIGN_FLOATS;
        let bytes = stride
            .checked_mul(capacity)
            .and_then(|n| n.checked_mul(4))
            .ok_or_else(|| std::io::Error::other("segment too large"))?;
        Ok(VectorArena {
            region: Region::zeroed(bytes)?,
            dim,
            stride,
            capacity,
            len: AtomicUsize::new(0),
        })
    }

    /// Published rows.
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Maximum rows.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Floats per vector.
    pub(crate) fn dim(&self) -> usize {
        self.dim
    }

    /// Bytes the published rows occupy.
    pub(crate) fn used_bytes(&self) -> usize {
        self.len() * self.stride * 4
    }

    /// The vector at `offset`.
    ///
    /// Callers pass offsets below a published length or taken from graph links; an offset
    /// beyond capacity is a bug and panics (bounds-checked), never reads foreign memory.
    #[inline(always)]
    pub(crate) fn row(&self, offset: u32) -> &[f32] {
        let o = offset as usize;
        assert!(
            o < self.capacity,
            "vector offset {o} beyond segment capacity"
        );
        // SAFETY: `o < capacity`, so the row lies inside the region. The row was fully written
        // before being published (module docs), and is never written again, so no write can
        // race with this shared read.
        unsafe {
            std::slice::from_raw_parts(
                (self.region.as_ptr() as *const f32).add(o * self.stride),
                self.dim,
            )
        }
    }

    /// Append vectors (row-major, `dim` floats each) and publish them. Returns the first new
    /// offset. Only the segment's single writer may call this (`&mut`-free because indexer
    /// threads read concurrently; exclusivity is guaranteed by the replica's write lock).
    pub(crate) fn append(&self, vectors: &[f32]) -> u32 {
        let rows = vectors.len() / self.dim;
        let start = self.len.load(Ordering::Relaxed);
        assert!(
            start + rows <= self.capacity,
            "segment overflow: caller must check free space"
        );
        // Before writing, so rows written past the huge-page threshold fault in as huge pages.
        self.region.grew_to((start + rows) * self.stride * 4);
        let base = self.region.as_ptr() as *mut f32;
        for r in 0..rows {
            // SAFETY: rows `start..start + rows` are inside capacity (asserted) and not yet
            // published, so no reader can observe them while they are written, and there is a
            // single writer.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    vectors.as_ptr().add(r * self.dim),
                    base.add((start + r) * self.stride),
                    self.dim,
                );
            }
        }
        self.len.store(start + rows, Ordering::Release);
        start as u32
    }

    /// Whether the arena is big enough to have been moved to huge pages.
    pub(crate) fn on_huge_pages(&self) -> bool {
        self.region.on_huge_pages()
    }

    /// Free rows left.
    pub(crate) fn free(&self) -> usize {
        self.capacity - self.len.load(Ordering::Relaxed)
    }
}
