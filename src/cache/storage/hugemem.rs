//! Fixed-length arrays and fixed-capacity vectors for the lease table, backed by transparent huge
//! pages when they are big.
//!
//! Why: a lookup in a cache of a million leases touches two random places in ~250 MB. With
//! 4 KiB pages each of them is also a TLB miss and a page walk (two-dimensional, and so dearer,
//! under a hypervisor); with 2 MiB pages the whole table is a few hundred TLB entries. Measured
//! with `cargo bench --bench cache` on our 2-core VM, four interleaved runs each: median
//! 6.43M lookups/s with these arrays in huge pages, 5.88M/s with the `madvise` below disabled.
//! The machine's run-to-run noise is ±15 %, so read that as "about 10 %", not more. Re-measured
//! side by side under heavy load (load average 14 on 2 cores), six alternating runs each: median
//! 1.29M lookups/s with these arrays, 0.84M/s with a plain `Box<[T]>`, every pair in favour of
//! huge pages; the gain grows when the TLB is contended, so the arrays stay.
//!
//! Most kernels ship THP in `madvise` mode, so the memory has to ask: arrays of (nearly) 2 MiB or
//! more are allocated 2 MiB-aligned, their size rounded up to whole huge pages, and marked
//! `MADV_HUGEPAGE`. Smaller arrays use the ordinary allocator (a huge page would be mostly
//! empty). If the kernel has THP off, `madvise` fails and the array simply uses small pages.
//!
//! Its `unsafe` code is an allocation with our own layout, its initialisation, and the matching
//! drop, and [`prefetch`] (a cache hint for the lookups' independent index lines); everything
//! else sees a safe `&[T]` / `&mut [T]`. (The other modules with `unsafe` are
//! listed in the crate docs.)
#![allow(unsafe_code)]

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// The x86-64 / aarch64 (4 KiB granule) PMD huge page size.
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// A heap array of exactly `len` initialised `T`s whose memory is huge-page backed when large:
/// a [`HugeVec`] filled to its capacity when made (one owner of the unsafe memory handling).
pub(crate) struct HugeArray<T>(HugeVec<T>);

impl<T> HugeArray<T> {
    /// `len` elements, each made by `fill`. Panics only if the size overflows `isize` (a
    /// capacity bug in the caller, never a network input) and aborts on allocation failure like
    /// every std collection. If `fill` panics, the elements made so far are dropped.
    pub(crate) fn new(len: usize, mut fill: impl FnMut() -> T) -> Self {
        let mut v = HugeVec::with_capacity(len);
        for _ in 0..len {
            // Never refused: the vector was made with room for exactly `len`.
            let pushed = v.push(fill());
            debug_assert!(pushed.is_ok());
        }
        HugeArray(v)
    }
}

/// Memory for `len` `T`s, huge-page aligned and advised when large (see the module doc), not
/// yet written. Panics only if the size overflows `isize` (a capacity bug in the caller, never
/// a network input) and aborts on allocation failure like every std collection.
fn allocate<T>(len: usize) -> (NonNull<T>, Layout) {
    let elem = std::mem::size_of::<T>().max(1);
    let bytes = elem
        .checked_mul(len.max(1))
        .expect("huge array size overflow");
    // A slab chunk is a few bytes short of 2 MiB (a whole number of entries): anything within
    // 1/8 of a huge page still gets one, the rest of the page left unused.
    let huge = bytes >= HUGE_PAGE - HUGE_PAGE / 8;
    let layout = if huge {
        Layout::from_size_align(bytes.next_multiple_of(HUGE_PAGE), HUGE_PAGE)
    } else {
        Layout::from_size_align(bytes, std::mem::align_of::<T>())
    }
    .expect("huge array layout");
    // SAFETY: layout has a non-zero size (bytes ≥ 1).
    let raw = unsafe { alloc(layout) }.cast::<T>();
    let Some(ptr) = NonNull::new(raw) else {
        handle_alloc_error(layout)
    };
    if huge {
        advise_huge(ptr.as_ptr().cast(), layout.size());
    }
    (ptr, layout)
}

/// A vector of fixed capacity whose memory is huge-page backed when large (see [`allocate`]),
/// its elements written one by one as they are pushed and never moved.
///
/// Why: a lease slab's 2 MiB chunk made whole, as a [`HugeArray`] of `None`s, had every entry
/// written when it was allocated: 2 MiB faulted in and filled at once inside the one `apply`
/// that needed the chunk (in a reboot storm, the four shards' second chunks all come at the same
/// client, ~4 100, on one window's REPLYs). Pushed one at a time, each part of a chunk is first
/// touched by the lease that uses it.
pub(crate) struct HugeVec<T> {
    ptr: NonNull<T>,
    len: usize,
    cap: usize,
    layout: Layout,
}

// SAFETY: HugeVec owns its elements exactly like a Vec<T> does.
unsafe impl<T: Send> Send for HugeVec<T> {}
// SAFETY: shared access only hands out &T, like Vec<T>.
unsafe impl<T: Sync> Sync for HugeVec<T> {}

impl<T> HugeVec<T> {
    /// Room for `cap` elements, none written.
    pub(crate) fn with_capacity(cap: usize) -> Self {
        let (ptr, layout) = allocate::<T>(cap);
        HugeVec {
            ptr,
            len: 0,
            cap,
            layout,
        }
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// Append `v`; `Err(v)` when the vector is full (it never reallocates: elements never move).
    pub(crate) fn push(&mut self, v: T) -> Result<(), T> {
        if self.len == self.cap {
            return Err(v);
        }
        // SAFETY: len < cap, so the slot lies inside the allocation (which holds cap elements,
        // see `allocate`) and holds no element yet.
        unsafe { self.ptr.as_ptr().add(self.len).write(v) };
        self.len += 1;
        Ok(())
    }
}

impl<T> Deref for HugeVec<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: the first len elements are initialised and owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> DerefMut for HugeVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in deref, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for HugeVec<T> {
    fn drop(&mut self) {
        // SAFETY: the first len elements are initialised and dropped once here; the memory was
        // allocated with exactly self.layout.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                self.ptr.as_ptr(),
                self.len,
            ));
            dealloc(self.ptr.as_ptr().cast(), self.layout);
        }
    }
}

impl<T> std::fmt::Debug for HugeVec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugeVec")
            .field("len", &self.len)
            .field("capacity", &self.cap)
            .field("bytes", &self.layout.size())
            .finish()
    }
}

/// Ask the CPU to start loading the cache line at `p` into its caches, without waiting for it.
///
/// Why: a lookup probes several index lines that do not depend on each other (the exact
/// address, then its covering prefixes); fetched one after the other each is a full memory
/// latency, asked for together their misses overlap. `p` need not point into anything live: the
/// lease table computes it from a hint that a concurrent resize may have made stale, and a
/// prefetch of such an address is simply wasted.
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint with no effect on the program's behaviour: it reads nothing
    // into a register and never faults, whatever the address (an unmapped or freed one is
    // dropped by the CPU). SSE, which provides it, is part of the x86-64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(target_os = "linux")]
fn advise_huge(p: *mut u8, len: usize) {
    // SAFETY: [p, p+len) is a mapping we just allocated and own; MADV_HUGEPAGE only changes how
    // the kernel backs it. Failure (THP compiled out or disabled) leaves small pages: ignored.
    let _ = unsafe { libc::madvise(p.cast(), len, libc::MADV_HUGEPAGE) };
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_: *mut u8, _: usize) {}

impl<T> Deref for HugeArray<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T> DerefMut for HugeArray<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

impl<T> std::fmt::Debug for HugeArray<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugeArray")
            .field("len", &self.0.len)
            .field("bytes", &self.0.layout.size())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn small_and_huge_arrays_hold_and_drop_their_elements() {
        let probe = Arc::new(());
        {
            let mut small = HugeArray::new(10, || Some(probe.clone()));
            assert_eq!(small.len(), 10);
            small[3] = None;
            assert_eq!(Arc::strong_count(&probe), 10);
            let big = HugeArray::new(HUGE_PAGE / 8 + 1, || 7u64);
            assert_eq!(
                big.as_ptr() as usize % HUGE_PAGE,
                0,
                "huge arrays are aligned"
            );
            assert!(big.iter().all(|v| *v == 7));
        }
        assert_eq!(Arc::strong_count(&probe), 1, "every element was dropped");
        let empty: HugeArray<u64> = HugeArray::new(0, || 0);
        assert!(empty.is_empty());
    }

    /// A vector holds what was pushed and nothing more, refuses a push past its capacity
    /// (its elements never move), and drops exactly the elements pushed.
    #[test]
    fn huge_vectors_hold_what_was_pushed_up_to_their_capacity() {
        let probe = Arc::new(());
        {
            let cap = HUGE_PAGE / std::mem::size_of::<Option<Arc<()>>>();
            let mut v: HugeVec<Option<Arc<()>>> = HugeVec::with_capacity(cap);
            assert!(v.is_empty());
            assert_eq!(v.capacity(), cap);
            assert_eq!(
                v.as_ptr() as usize % HUGE_PAGE,
                0,
                "huge vectors are aligned"
            );
            let first = v.as_ptr();
            for _ in 0..cap {
                assert!(v.push(Some(probe.clone())).is_ok());
            }
            assert_eq!(v.len(), cap);
            assert!(v.push(None).is_err(), "full");
            assert_eq!(v.as_ptr(), first, "never moved");
            v[5] = None;
            assert_eq!(Arc::strong_count(&probe), cap);
            let mut small: HugeVec<Option<Arc<()>>> = HugeVec::with_capacity(3);
            assert!(small.push(Some(probe.clone())).is_ok());
            assert_eq!(small.len(), 1);
            assert_eq!(small.iter().flatten().count(), 1);
        }
        assert_eq!(
            Arc::strong_count(&probe),
            1,
            "every element pushed was dropped"
        );
    }
}
