//! An open-addressing hash index from a 64-bit hash to a `u32` slot number.
//!
//! Why not a `HashMap<Key, Slot>`: the keys already live in the slab next to their leases, so
//! storing them again would double the key bytes, and std/hashbrown tables put control bytes and
//! buckets in different pages (two TLB misses per probe). Here one 8-byte word per bucket holds
//! the upper 32 bits of the hash and the slot number + 1 (0 = empty): a probe reads a run of
//! adjacent words (linear probing, one cache line in the common case) and dereferences the slab
//! only when the 32-bit hash tag matches. The array is a [`HugeArray`], so at scale it sits in
//! huge pages.
//!
//! The bucket is the hash tag's low bits, so growing never needs the keys: every word carries
//! what it takes to re-place it. Deletion is backward-shift (no tombstones), so probe runs never
//! degrade with churn. Load is kept between 3/16 and 3/4.

use super::hugemem::HugeArray;

const MIN_CAPACITY: usize = 16;

#[derive(Debug)]
pub(crate) struct TagIndex {
    words: HugeArray<u64>,
    len: usize,
}

impl Default for TagIndex {
    fn default() -> Self {
        TagIndex::with_capacity(MIN_CAPACITY)
    }
}

#[inline]
fn tag(hash: u64) -> u64 {
    hash >> 32
}

/// The word a probe for `hash` starts at, in an index of `mask + 1` words.
#[inline]
pub(crate) fn bucket(hash: u64, mask: usize) -> usize {
    tag(hash) as usize & mask
}

impl TagIndex {
    fn with_capacity(cap: usize) -> Self {
        debug_assert!(cap.is_power_of_two());
        TagIndex {
            words: HugeArray::new(cap, || 0),
            len: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn mask(&self) -> usize {
        self.words.len() - 1
    }

    /// Where the words live and the bucket mask: what a reader outside the shard lock needs to
    /// compute a probe's first line ([`bucket`]) for a prefetch. Changes only on a resize.
    pub(crate) fn place_hint(&self) -> (*const u64, usize) {
        (self.words.as_ptr(), self.mask())
    }

    /// The slot whose hash is `hash` and for which `is_it(slot)` holds.
    #[inline]
    pub(crate) fn find(&self, hash: u64, mut is_it: impl FnMut(u32) -> bool) -> Option<u32> {
        let t = tag(hash);
        let mask = self.mask();
        let mut i = bucket(hash, mask);
        loop {
            // The load bound keeps at least one empty word, so every probe run ends.
            let w = *self.words.get(i)?;
            if w == 0 {
                return None;
            }
            if w >> 32 == t {
                let slot = (w as u32).wrapping_sub(1);
                if is_it(slot) {
                    return Some(slot);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Add `slot` under `hash` (the caller knows it is not there yet). `slot` must be below
    /// `u32::MAX`.
    pub(crate) fn insert(&mut self, hash: u64, slot: u32) {
        debug_assert!(slot < u32::MAX);
        if (self.len + 1) * 4 > self.words.len() * 3 {
            self.resize(self.words.len() * 2);
        }
        self.place((tag(hash) << 32) | u64::from(slot.wrapping_add(1)));
        self.len += 1;
    }

    /// Room for `additional` more slots without a resize on the way (a resize re-places every
    /// word: filling a big index one insert at a time did that at every doubling).
    pub(crate) fn reserve(&mut self, additional: usize) {
        let want = self.len.saturating_add(additional);
        let mut cap = self.words.len();
        while want.saturating_mul(4) > cap.saturating_mul(3) {
            cap *= 2;
        }
        if cap > self.words.len() {
            self.resize(cap);
        }
    }

    fn place(&mut self, word: u64) {
        let mask = self.mask();
        let mut i = (word >> 32) as usize & mask;
        while self.words[i] != 0 {
            i = (i + 1) & mask;
        }
        self.words[i] = word;
    }

    /// Remove `slot` filed under `hash`; false if it was not there.
    pub(crate) fn remove(&mut self, hash: u64, slot: u32) -> bool {
        let word = (tag(hash) << 32) | u64::from(slot.wrapping_add(1));
        let mask = self.mask();
        let mut hole = tag(hash) as usize & mask;
        loop {
            match self.words[hole] {
                0 => return false,
                w if w == word => break,
                _ => hole = (hole + 1) & mask,
            }
        }
        // Backward shift: pull later members of the run into the hole when their home bucket
        // does not lie strictly between the hole and where they sit.
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let w = self.words[j];
            if w == 0 {
                break;
            }
            let home = (w >> 32) as usize & mask;
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.words[hole] = w;
                hole = j;
            }
        }
        self.words[hole] = 0;
        self.len -= 1;
        if self.words.len() > MIN_CAPACITY && self.len * 16 < self.words.len() * 3 {
            self.resize(self.words.len() / 2);
        }
        true
    }

    fn resize(&mut self, cap: usize) {
        let old = std::mem::replace(&mut self.words, HugeArray::new(cap.max(MIN_CAPACITY), || 0));
        for &w in old.iter().filter(|w| **w != 0) {
            self.place(w);
        }
    }

    #[cfg(test)]
    /// Bytes held by the index.
    pub(crate) fn bytes(&self) -> usize {
        self.words.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// Against a HashMap model, with hashes drawn from a small set so runs collide and wrap.
        #[test]
        fn behaves_like_a_map(ops in prop::collection::vec((0u8..3, 0u32..300, 0u64..40), 1..600)) {
            let mut idx = TagIndex::default();
            let mut model: HashMap<u32, u64> = HashMap::new();
            // Few distinct tags, low bits varied: long shared runs, wrap-around at the end.
            let h = |k: u64| (k.wrapping_mul(0x9e37_79b9) << 32) | k;
            for (op, slot, key) in ops {
                match op {
                    0 if !model.contains_key(&slot) => {
                        idx.insert(h(key), slot);
                        model.insert(slot, key);
                    }
                    1 => {
                        let was = model.remove(&slot);
                        let hash = h(was.unwrap_or(key));
                        prop_assert_eq!(idx.remove(hash, slot), was.is_some());
                    }
                    _ => {}
                }
                prop_assert_eq!(idx.len(), model.len());
            }
            for (&slot, &key) in &model {
                prop_assert_eq!(idx.find(h(key), |s| s == slot), Some(slot));
            }
            prop_assert_eq!(idx.find(h(1000), |_| true), None);
        }
    }

    /// Reserved room is used without a resize: the words stay where they are.
    #[test]
    fn reserved_room_takes_that_many_inserts_without_growing() {
        let mut idx = TagIndex::default();
        let h = |k: u32| u64::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        idx.insert(h(0), 0);
        idx.reserve(10_000);
        let bytes = idx.bytes();
        assert!(bytes >= 10_001 * 8 * 4 / 3);
        for k in 1..=10_000 {
            idx.insert(h(k), k);
        }
        assert_eq!(idx.bytes(), bytes, "no resize");
        for k in 0..=10_000 {
            assert_eq!(idx.find(h(k), |s| s == k), Some(k));
        }
        idx.reserve(0);
        assert_eq!(idx.bytes(), bytes, "room enough: nothing to do");
    }

    #[test]
    fn grows_and_shrinks_with_its_contents() {
        let mut idx = TagIndex::default();
        let h = |k: u32| u64::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for k in 0..10_000 {
            idx.insert(h(k), k);
        }
        assert!(idx.bytes() >= 10_000 * 8 * 4 / 3);
        for k in 0..10_000 {
            assert_eq!(idx.find(h(k), |s| s == k), Some(k));
        }
        for k in 0..9_990 {
            assert!(idx.remove(h(k), k));
        }
        assert!(idx.bytes() <= 128 * 8, "shrunk to {} bytes", idx.bytes());
        for k in 9_990..10_000 {
            assert_eq!(idx.find(h(k), |s| s == k), Some(k));
        }
    }
}
