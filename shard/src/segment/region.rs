//! Large zero-initialised memory regions that cost nothing until touched.
//!
//! A segment reserves room for its full capacity up front (so offsets are stable and the
//! storage never moves under concurrent readers), but only the pages actually written become
//! resident. On Linux this is an anonymous `mmap`; elsewhere a zeroed allocation.

use std::ptr::NonNull;

/// A page-aligned, zero-filled region of `len` bytes.
pub(crate) struct Region {
    ptr: NonNull<u8>,
    len: usize,
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
            let ptr = NonNull::new(p as *mut u8)
                .ok_or_else(|| std::io::Error::other("mmap returned null"))?;
            Ok(Region { ptr, len })
        }
        #[cfg(not(unix))]
        {
            let layout = std::alloc::Layout::from_size_align(len, 4096)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            // SAFETY: layout has non-zero size.
            let p = unsafe { std::alloc::alloc_zeroed(layout) };
            let ptr = NonNull::new(p).ok_or_else(|| std::io::Error::other("out of memory"))?;
            Ok(Region { ptr, len })
        }
    }

    /// Base address.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
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

    /// The atomics.
    #[inline(always)]
    pub(crate) fn as_slice(&self) -> &[A] {
        // SAFETY: the region holds `len * size_of::<A>()` zeroed, page-aligned bytes, and
        // `ZeroableAtomic` guarantees all-zero bits are a valid `A`. All access goes through
        // the atomics, so handing out shared references is sound.
        unsafe { std::slice::from_raw_parts(self.region.as_ptr() as *const A, self.len) }
    }
}
