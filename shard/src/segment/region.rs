//! Large zero-initialised memory regions that cost nothing until touched.
//!
//! A segment reserves room for its full capacity up front (so offsets are stable and the
//! storage never moves under concurrent readers), but only the pages actually written become
//! resident. On Linux this is an anonymous `mmap`; elsewhere a zeroed allocation.
//!
//! Large regions start on a 2 MiB boundary so that, once their owner has written enough to
//! make it worthwhile ([`Region::grew_to`]), they can be backed by transparent huge pages:
//! graph searches touch rows at random, and with 4 KiB pages nearly every row visited in a
//! large segment is also a TLB miss. Small segments never get huge pages, so a thousand tiny
//! namespaces do not each pin megabytes.

use std::ptr::NonNull;

/// Regions reserved at least this large are aligned to [`HUGE_PAGE`]; once this many bytes
/// are in use they are advised to use transparent huge pages.
#[cfg(unix)]
const HUGE_PAGE_MIN: usize = 4 << 20;
/// Size and alignment of an x86-64 / aarch64 transparent huge page.
#[cfg(unix)]
const HUGE_PAGE: usize = 2 << 20;

/// A fresh anonymous private mapping of `len` bytes, reserved but not committed, on 4 KiB
/// pages.
#[cfg(unix)]
fn map_anonymous(len: usize) -> std::io::Result<NonNull<u8>> {
    // SAFETY: a fresh anonymous private mapping; arguments are valid by construction.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // No huge pages until the owner has used enough of the region (`Region::grew_to`), also
    // where THP is enabled for every mapping ("always"). A failure only leaves the default.
    // SAFETY: advising the mapping just created, over exactly its length.
    unsafe { libc::madvise(p, len, libc::MADV_NOHUGEPAGE) };
    NonNull::new(p as *mut u8).ok_or_else(|| std::io::Error::other("mmap returned null"))
}

/// Map `len` bytes (a multiple of [`HUGE_PAGE`]) starting on a huge-page boundary: over-map
/// by one huge page, then unmap the unaligned head and the tail.
#[cfg(unix)]
fn map_huge_aligned(len: usize) -> std::io::Result<NonNull<u8>> {
    let padded = len
        .checked_add(HUGE_PAGE)
        .ok_or_else(|| std::io::Error::other("region too large"))?;
    let raw = map_anonymous(padded)?.as_ptr() as usize;
    let start = raw.next_multiple_of(HUGE_PAGE);
    let (head, tail) = (start - raw, padded - (start - raw) - len);
    // SAFETY: both ranges lie inside the mapping just created and outside `start..start+len`,
    // which is the only part handed out; all their bounds are page-aligned (`raw` is, `start`
    // and `len` are huge-page multiples), as `munmap` and `madvise` require.
    unsafe {
        if head > 0 {
            libc::munmap(raw as *mut libc::c_void, head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
    }
    NonNull::new(start as *mut u8).ok_or_else(|| std::io::Error::other("mmap returned null"))
}

/// A page-aligned, zero-filled region of `len` bytes.
pub(crate) struct Region {
    ptr: NonNull<u8>,
    len: usize,
    /// Whether the region is huge-page aligned (large enough to be worth it).
    huge_capable: bool,
    /// Whether the region is huge-page aligned and not yet advised to use huge pages.
    huge_pending: std::sync::atomic::AtomicBool,
}

// SAFETY: `Region` is a plain owned allocation; synchronising access to its contents is the
// responsibility of the typed wrappers built on it (atomics, or write-once-before-publish).
unsafe impl Send for Region {}
// SAFETY: see `Send`.
unsafe impl Sync for Region {}

impl Region {
    /// Reserve `len` zeroed bytes (at least one page).
    pub(crate) fn zeroed(len: usize) -> std::io::Result<Region> {
        let len = len.max(1);
        #[cfg(unix)]
        {
            if len >= HUGE_PAGE_MIN {
                // Whole huge pages, so the tail of the mapping ends on a page boundary too.
                let len = len.next_multiple_of(HUGE_PAGE);
                return Ok(Region {
                    ptr: map_huge_aligned(len)?,
                    len,
                    huge_capable: true,
                    huge_pending: true.into(),
                });
            }
            Ok(Region {
                ptr: map_anonymous(len)?,
                len,
                huge_capable: false,
                huge_pending: false.into(),
            })
        }
        #[cfg(not(unix))]
        {
            let layout = std::alloc::Layout::from_size_align(len, 4096)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            // SAFETY: layout has non-zero size.
            let p = unsafe { std::alloc::alloc_zeroed(layout) };
            let ptr = NonNull::new(p).ok_or_else(|| std::io::Error::other("out of memory"))?;
            Ok(Region {
                ptr,
                len,
                huge_capable: false,
                huge_pending: false.into(),
            })
        }
    }

    /// Base address.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Tell the region its owner is about to use `used` bytes. The first time that reaches
    /// [`HUGE_PAGE_MIN`], the region is advised to use huge pages ([`Region::use_huge_pages`]).
    /// Cheap to call often.
    #[inline]
    pub(crate) fn grew_to(&self, used: usize) {
        #[cfg(unix)]
        if used >= HUGE_PAGE_MIN {
            self.use_huge_pages();
        }
        #[cfg(not(unix))]
        let _ = used;
    }

    /// Advise a huge-page aligned region to use transparent huge pages from now on: later
    /// faults get huge pages at once, pages already written are collapsed by the kernel in
    /// the background (so owners advise before writing). Only a hint: where THP is disabled
    /// the region keeps 4 KiB pages and nothing else changes. Does nothing for small regions
    /// or after the first call; cheap to call often.
    #[inline]
    pub(crate) fn use_huge_pages(&self) {
        use std::sync::atomic::Ordering;
        if self.huge_pending.load(Ordering::Relaxed)
            && self.huge_pending.swap(false, Ordering::Relaxed)
        {
            #[cfg(unix)]
            // SAFETY: advising exactly this region's own mapping, which is huge-page aligned
            // and a multiple of the huge page size (`huge_pending` is set only on that path).
            unsafe {
                libc::madvise(
                    self.ptr.as_ptr() as *mut libc::c_void,
                    self.len,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }

    /// Whether the region has been advised to use huge pages.
    pub(crate) fn on_huge_pages(&self) -> bool {
        self.huge_capable && !self.huge_pending.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the region still waits to be advised to use huge pages (tests).
    #[cfg(test)]
    fn huge_pending(&self) -> bool {
        self.huge_pending.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        #[cfg(unix)]
        // SAFETY: unmapping exactly the mapping created in `zeroed`.
        unsafe {
            libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.len);
        }
        #[cfg(not(unix))]
        // SAFETY: deallocating with the layout used to allocate.
        unsafe {
            let layout = std::alloc::Layout::from_size_align_unchecked(self.len, 4096);
            std::alloc::dealloc(self.ptr.as_ptr(), layout);
        }
    }
}

/// Atomic integer types whose all-zero bit pattern is a valid value (zero).
///
/// # Safety
/// Implementors must have the size and alignment of their integer and accept all-zero bits.
pub(crate) unsafe trait ZeroableAtomic: Sync {}
// SAFETY: `AtomicU32` has the layout of `u32`; zero bits are the value 0.
unsafe impl ZeroableAtomic for std::sync::atomic::AtomicU32 {}
// SAFETY: `AtomicUsize` has the layout of `usize`; zero bits are the value 0.
unsafe impl ZeroableAtomic for std::sync::atomic::AtomicUsize {}

/// A fixed-length slice of atomics backed by a lazily-zeroed region.
pub(crate) struct AtomicRegion<A: ZeroableAtomic> {
    region: Region,
    len: usize,
    _marker: std::marker::PhantomData<A>,
}

impl<A: ZeroableAtomic> AtomicRegion<A> {
    /// `len` atomics, all zero.
    pub(crate) fn zeroed(len: usize) -> std::io::Result<Self> {
        let bytes = len
            .checked_mul(std::mem::size_of::<A>())
            .ok_or_else(|| std::io::Error::other("region too large"))?;
        Ok(AtomicRegion {
            region: Region::zeroed(bytes)?,
            len,
            _marker: std::marker::PhantomData,
        })
    }

    /// Tell the region its owner is about to use the first `used` atomics (see [`Region::grew_to`]).
    #[inline]
    pub(crate) fn grew_to(&self, used: usize) {
        self.region.grew_to(used * std::mem::size_of::<A>());
    }

    /// See [`Region::use_huge_pages`].
    pub(crate) fn use_huge_pages(&self) {
        self.region.use_huge_pages();
    }

    /// The atomics.
    #[inline(always)]
    pub(crate) fn as_slice(&self) -> &[A] {
        // SAFETY: the region holds `len * size_of::<A>()` zeroed, page-aligned bytes, and
        // `ZeroableAtomic` guarantees all-zero bits are a valid `A`. All access goes through
        // the atomics, so handing out shared references is sound.
        unsafe { std::slice::from_raw_parts(self.region.as_ptr() as *const A, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_regions_are_page_aligned_and_zeroed() {
        let r = Region::zeroed(10_000).expect("map");
        assert_eq!(r.as_ptr() as usize % 4096, 0);
        // SAFETY: the region is 10,000 bytes long and exclusively owned here.
        let bytes = unsafe { std::slice::from_raw_parts_mut(r.as_ptr(), 10_000) };
        assert!(bytes.iter().all(|&b| b == 0));
        bytes[9_999] = 7;
        assert_eq!(bytes[9_999], 7);
    }

    #[cfg(unix)]
    #[test]
    fn large_regions_start_on_a_huge_page_and_cover_whole_huge_pages() {
        let asked = HUGE_PAGE_MIN + 12_345;
        let r = Region::zeroed(asked).expect("map");
        assert_eq!(r.as_ptr() as usize % HUGE_PAGE, 0);
        assert_eq!(r.len % HUGE_PAGE, 0);
        assert!(r.len >= asked);
        // SAFETY: the region is `r.len` bytes long and exclusively owned here.
        let bytes = unsafe { std::slice::from_raw_parts_mut(r.as_ptr(), r.len) };
        assert_eq!((bytes[0], bytes[asked - 1], bytes[r.len - 1]), (0, 0, 0));
        bytes[0] = 1;
        bytes[r.len - 1] = 2;
        assert_eq!((bytes[0], bytes[r.len - 1]), (1, 2));
    }

    #[cfg(unix)]
    #[test]
    fn huge_pages_are_advised_once_the_owner_uses_enough_of_the_region() {
        let small = Region::zeroed(1 << 20).expect("map");
        small.grew_to(1 << 20);
        assert!(
            !small.huge_pending(),
            "small regions never wait for huge pages"
        );
        let large = Region::zeroed(64 << 20).expect("map");
        assert!(large.huge_pending());
        large.grew_to(HUGE_PAGE_MIN - 1);
        assert!(
            large.huge_pending(),
            "a barely used region keeps 4 KiB pages"
        );
        large.grew_to(HUGE_PAGE_MIN);
        assert!(!large.huge_pending());
        large.grew_to(32 << 20);
        // Writing after the advice still works and reads back.
        // SAFETY: the region is 64 MiB long and exclusively owned here.
        let bytes = unsafe { std::slice::from_raw_parts_mut(large.as_ptr(), 64 << 20) };
        bytes[40 << 20] = 9;
        assert_eq!(bytes[40 << 20], 9);
    }
}
