//! Stable-numbered storage for the lease table's entries, in huge-page chunks.
//!
//! Why not a `Box` per lease: the allocator adds 8–16 bytes of header and rounding to every small
//! allocation, and scatters leases over small pages. Here entries sit back to back in chunks of
//! 2 MiB (one huge page, see [`hugemem`](super::hugemem)); a freed entry's number is reused by the
//! next insert. Numbers are `chunk << 16 | offset` and never move, so an index can hold them.
//! The first chunk is small, so an almost empty cache (tests, a small box) stays small. A chunk
//! is filled as leases come ([`HugeVec`]): a new chunk writes nothing when it is allocated, so
//! the insert that needs it does not fault in and fill 2 MiB.

use super::hugemem::{HUGE_PAGE, HugeVec};

/// Entries in the first chunk.
const FIRST_CHUNK: usize = 1024;
/// Chunk numbers fit in 13 bits: the table packs its shard number above a 29-bit slot number.
pub(crate) const MAX_CHUNKS: usize = 1 << 13;

#[derive(Debug)]
pub(crate) struct Slab<T> {
    /// Entries handed out so far: each chunk's length (all but the last are full).
    chunks: Vec<HugeVec<Option<T>>>,
    /// Numbers of vacated entries, reused first.
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            chunks: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Entries per full chunk: as many as one huge page holds (at most 2^16 for the numbering).
    fn chunk_len(k: usize) -> usize {
        if k == 0 {
            FIRST_CHUNK
        } else {
            (HUGE_PAGE / std::mem::size_of::<Option<T>>().max(1)).clamp(FIRST_CHUNK, 1 << 16)
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Store `v` and return its number. Panics past `MAX_CHUNKS` chunks (over a hundred million
    /// leases per shard — memory runs out long before).
    pub(crate) fn insert(&mut self, v: T) -> u32 {
        self.len += 1;
        if let Some(n) = self.free.pop() {
            if let Some(e) = self.entry_mut(n) {
                *e = Some(v);
                return n;
            }
        }
        let mut v = Some(v);
        loop {
            if let Some(last) = self.chunks.last_mut() {
                let off = last.len();
                match last.push(v) {
                    Ok(()) => return (((self.chunks.len() - 1) as u32) << 16) | off as u32,
                    Err(back) => v = back,
                }
            }
            let k = self.chunks.len();
            assert!(k < MAX_CHUNKS, "lease slab full");
            self.chunks.push(HugeVec::with_capacity(Self::chunk_len(k)));
        }
    }

    fn entry_mut(&mut self, n: u32) -> Option<&mut Option<T>> {
        self.chunks
            .get_mut((n >> 16) as usize)?
            .get_mut((n & 0xffff) as usize)
    }

    #[inline]
    pub(crate) fn get(&self, n: u32) -> Option<&T> {
        self.chunks
            .get((n >> 16) as usize)?
            .get((n & 0xffff) as usize)?
            .as_ref()
    }

    pub(crate) fn get_mut(&mut self, n: u32) -> Option<&mut T> {
        self.entry_mut(n)?.as_mut()
    }

    pub(crate) fn remove(&mut self, n: u32) -> Option<T> {
        let v = self.entry_mut(n)?.take()?;
        self.free.push(n);
        self.len -= 1;
        Some(v)
    }

    /// Every entry with its number.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> + '_ {
        self.chunks.iter().enumerate().flat_map(|(k, c)| {
            c.iter()
                .enumerate()
                .filter_map(move |(o, e)| e.as_ref().map(|v| (((k as u32) << 16) | o as u32, v)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable_and_reused() {
        let mut s: Slab<[u64; 13]> = Slab::default();
        let ns: Vec<u32> = (0..5000u64).map(|i| s.insert([i; 13])).collect();
        assert_eq!(s.len(), 5000);
        assert_eq!(
            ns[1024],
            1 << 16,
            "the second chunk starts after the small first one"
        );
        for (i, &n) in ns.iter().enumerate() {
            assert_eq!(s.get(n).map(|v| v[0]), Some(i as u64));
        }
        assert_eq!(s.remove(ns[7]).map(|v| v[0]), Some(7));
        assert_eq!(s.remove(ns[7]), None);
        assert_eq!(s.get(ns[7]), None);
        assert_eq!(s.insert([99; 13]), ns[7], "a vacated number is reused");
        assert_eq!(s.iter().count(), 5000);
        assert_eq!(s.get(u32::MAX), None);
        if let Some(v) = s.get_mut(ns[0]) {
            v[0] = 42;
        }
        assert_eq!(s.get(ns[0]).map(|v| v[0]), Some(42));
    }
}
