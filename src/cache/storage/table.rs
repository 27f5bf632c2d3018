//! The lease table: [`LeaseKey`] → [`Lease`], read by the hot path on every core, written by the
//! store's single writer.
//!
//! Why our own table rather than a `DashMap<LeaseKey, Lease>`: a lookup is the packet path's
//! question ("who holds this source address?"), asked for every packet from a source the
//! trigger does not know, and the cache must hold millions of leases in little memory. Entries in a
//! DashMap either sit inline in the buckets (~100 bytes × the empty half of the table) or behind
//! a `Box` each (allocator overhead, plus a third random memory access and TLB miss per probe).
//! Here each of 4 shards is a [`Slab`] of entries in huge-page chunks plus a [`TagIndex`] of
//! 8-byte words: a probe reads one index word and one entry, both usually in huge pages, under
//! the shard's read lock. A lookup that may probe several keys (an address, then the prefixes
//! that could cover it) hashes them all first and prefetches their index lines
//! ([`LeaseTable::probe`]), so those misses overlap: what stays serial is one index line, then
//! the one entry its word names. Entries never move, so a [`SlotRef`] (shard + slot number) names a
//! lease cheaply: the expiry heap and the by-client and by-link indexes hold those instead of
//! 18-byte keys.
//!
//! What a lookup still costs, and why it is not less: a miss is answered from the index alone
//! (the 32-bit tag in the word; a false match, one in 2^32 per word looked at, costs one entry
//! read, never a wrong answer), so the serial chain is one index line then one entry line, two
//! memory latencies. Consecutive lookups could overlap those, but a lookup's read lock pair (a
//! locked RMW to take it, another to drop it, one pair per probed shard) acts as a full fence
//! on x86: the next lookup's loads wait for this one's entry. A loop of independent
//! index-then-entry steps over arrays of this table's sizes (on the 2-core bench VM, loaded)
//! ran ~40 ns a step with no lock, ~55 with an uncontended lock pair per step, ~90-110 on two
//! threads sharing their lock words and ~70-75 with a word each (hence the [`ShardedLock`]).
//! Going below that needs reads without a lock (atomic index words, entry keys readable under
//! a sequence check, arrays freed only once no reader can hold them): a different table.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};

use super::hash::KeyHashBuilder;
use super::hugemem::prefetch;
use super::slab::Slab;
use super::tagindex::{TagIndex, bucket};
use crate::cache::binding::{Lease, LeaseKey};

/// Four shards: readers never block each other (read locks), the single writer blocks one
/// quarter of the table per write, and each shard's slab wastes at most one partly used 2 MiB
/// chunk. Measured at 1M leases: 243 B/lease with 4 shards, 252 with 8, lookups/s the same
/// within the bench machine's noise.
const SHARD_BITS: u32 = 2;
const SHARDS: usize = 1 << SHARD_BITS;
/// Slot numbers are below 2^29 (13-bit chunk, 16-bit offset); the shard goes above them.
const SLOT_BITS: u32 = 29;

/// Where a lease sits in the table. Valid until the lease is removed; afterwards the same number
/// may name another lease, so holders re-check what they find there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SlotRef(pub(crate) u32);

impl SlotRef {
    fn new(shard: usize, slot: u32) -> Self {
        debug_assert!(slot < 1 << SLOT_BITS);
        SlotRef(((shard as u32) << SLOT_BITS) | slot)
    }

    fn shard(self) -> usize {
        (self.0 >> SLOT_BITS) as usize
    }

    fn slot(self) -> u32 {
        self.0 & ((1 << SLOT_BITS) - 1)
    }
}

/// `repr(C)`, key first: a probe reads the key (and `Option`'s tag, which the compiler puts in a
/// small enum or option field at the lease's start), so those bytes sit together at the front
/// of the entry and fall in one cache line for most entries. Left to the compiler, the key went
/// last (offset 80 of 104) and the tag first: every probe that found its key fetched two lines.
#[derive(Debug)]
#[repr(C)]
struct Entry {
    key: LeaseKey,
    lease: Lease,
}

#[derive(Debug, Default)]
struct Shard {
    index: TagIndex,
    slab: Slab<Entry>,
}

impl Shard {
    fn find(&self, hash: u64, key: &LeaseKey) -> Option<u32> {
        self.index
            .find(hash, |s| self.slab.get(s).is_some_and(|e| e.key == *key))
    }
}

/// One shard and its lock, on cache lines of their own so that neighbouring shards never share
/// one.
///
/// Why a [`ShardedLock`] rather than a `RwLock`: taking a read lock writes the lock word, and
/// with one word per shard every lookup on one core pulled that line away from the other cores
/// looking up in the same shard (perf on the cache bench: the lock's load, CAS and release were
/// about a quarter of a lookup's cycles, two readers and one writer on two cores). A
/// `ShardedLock` gives each thread its own reader lock on its own line, so a lookup writes only a
/// line its core already holds; the writer pays instead, locking all of them (8) for each write:
/// ~53 ns per write lock and unlock uncontended instead of ~8 (more when readers hold those
/// lines), on an `apply` of a few microseconds that takes one per lease it changes.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(ShardedLock<Shard>);

/// Where one shard's index words are, copied out by the writer whenever the index moves: a
/// lookup reads it without the lock to prefetch the index lines of all the keys it will probe
/// (see [`LeaseTable::probe`]) before it probes the first. Only ever a prefetch address, never
/// dereferenced, so a stale pair (a resize under way, the two loads from either side of it)
/// costs one wasted prefetch and nothing else. The four shards' hints share one line of their
/// own, written only on a resize: not the shard's line, which the writer modifies on every insert
/// and remove, so the prefetch address never waits for a line another core holds.
#[derive(Debug)]
struct IndexHint {
    words: AtomicPtr<u64>,
    mask: AtomicUsize,
}

impl IndexHint {
    fn of(shard: &Shard) -> Self {
        let (words, mask) = shard.index.place_hint();
        IndexHint {
            words: AtomicPtr::new(words.cast_mut()),
            mask: AtomicUsize::new(mask),
        }
    }

    /// Copy the index's place out after a write that may have resized it (called with the
    /// shard's write lock held, so the copy is of the index as it now is). Stores only on a
    /// change, so the line stays shared in every reader's cache.
    fn publish(&self, shard: &Shard) {
        let (words, mask) = shard.index.place_hint();
        if self.words.load(Ordering::Relaxed).cast_const() != words {
            self.words.store(words.cast_mut(), Ordering::Relaxed);
            self.mask.store(mask, Ordering::Relaxed);
        }
    }
}

/// A key's hash and shard, computed once by [`LeaseTable::probe`] (which also asked the CPU for
/// the index line the probe will start at) and used by [`LeaseTable::try_with_probe`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    hash: u64,
    shard: usize,
}

/// `repr(align(128))`, `len` on a line of its own: what every lookup reads (`shards`, `hasher`)
/// never shares a line with the count the writer bumps on each insert and remove, nor with a
/// neighbouring field of the store.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct LeaseTable {
    shards: Box<[Padded]>,
    hints: Line<[IndexHint; SHARDS]>,
    hasher: KeyHashBuilder,
    len: Line<AtomicUsize>,
}

/// A value alone on its cache lines (128 bytes: the adjacent-line prefetcher pairs lines).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Line<T>(pub(crate) T);

impl Default for LeaseTable {
    fn default() -> Self {
        let shards: Box<[Padded]> = (0..SHARDS).map(|_| Padded::default()).collect();
        let hints = Line(std::array::from_fn(|s| {
            IndexHint::of(&shards[s].0.read().unwrap_or_else(|e| e.into_inner()))
        }));
        LeaseTable {
            shards,
            hints,
            hasher: KeyHashBuilder::default(),
            len: Line(AtomicUsize::new(0)),
        }
    }
}

impl LeaseTable {
    #[inline]
    fn locate(&self, key: &LeaseKey) -> (u64, usize) {
        let h = self.hasher.hash_one(key);
        (h, h as usize & (SHARDS - 1))
    }

    // A panic under a shard lock cannot leave a shard half-written (index and slab are updated
    // after every fallible step), so a poisoned lock is used as is.
    fn read(&self, shard: usize) -> ShardedLockReadGuard<'_, Shard> {
        self.shards[shard]
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, shard: usize) -> ShardedLockWriteGuard<'_, Shard> {
        self.shards[shard]
            .0
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn len(&self) -> usize {
        self.len.0.load(Ordering::Relaxed)
    }

    /// Hash `key` and ask the CPU for the index line its probe will start at, without waiting
    /// for it and without the shard lock. A lookup that will probe several keys (an address, then
    /// its covering prefixes) calls this for each of them first, so their index misses overlap
    /// instead of following one another; then [`try_with_probe`](Self::try_with_probe) each.
    #[inline]
    pub(crate) fn probe(&self, key: &LeaseKey) -> Probe {
        let (hash, shard) = self.locate(key);
        let p = &self.hints.0[shard];
        let words = p.words.load(Ordering::Relaxed);
        let at = bucket(hash, p.mask.load(Ordering::Relaxed));
        // `wrapping_add`: with a stale hint the address may lie outside any array; it is only
        // prefetched, never read.
        prefetch(words.wrapping_add(at).cast_const().cast());
        Probe { hash, shard }
    }

    /// Look at the lease at `key` (its shard read-locked during `f`); `f` comes back unused when
    /// the key is absent, so a caller can try the next key with it.
    #[inline]
    pub(crate) fn try_with<R, F>(&self, key: &LeaseKey, f: F) -> Result<R, F>
    where
        F: FnOnce(&LeaseKey, &Lease) -> R,
    {
        let (hash, shard) = self.locate(key);
        self.try_with_probe(key, Probe { hash, shard }, f)
    }

    /// [`try_with`](Self::try_with) for a key already hashed by [`probe`](Self::probe) (`p` must
    /// be `key`'s).
    #[inline]
    pub(crate) fn try_with_probe<R, F>(&self, key: &LeaseKey, p: Probe, f: F) -> Result<R, F>
    where
        F: FnOnce(&LeaseKey, &Lease) -> R,
    {
        let (h, s) = (p.hash, p.shard);
        debug_assert_eq!((h, s), self.locate(key));
        let shard = self.read(s);
        match shard.find(h, key).and_then(|slot| shard.slab.get(slot)) {
            Some(e) => Ok(f(&e.key, &e.lease)),
            None => Err(f),
        }
    }

    /// Look at the lease at `key` (its shard read-locked during `f`).
    #[inline]
    pub(crate) fn with<R>(&self, key: &LeaseKey, f: impl FnOnce(&Lease) -> R) -> Option<R> {
        self.try_with(key, |_, l| f(l)).ok()
    }

    /// Look at whatever lease sits at `r` now.
    pub(crate) fn at<R>(&self, r: SlotRef, f: impl FnOnce(&LeaseKey, &Lease) -> R) -> Option<R> {
        let shard = self.read(r.shard());
        shard.slab.get(r.slot()).map(|e| f(&e.key, &e.lease))
    }

    /// Room for `additional` more leases without growing an index (keys spread evenly over
    /// the shards, so each gets its share and a little more).
    pub(crate) fn reserve(&self, additional: usize) {
        let per_shard = additional / SHARDS + additional / (SHARDS * 16) + 16;
        for s in 0..SHARDS {
            let mut shard = self.write(s);
            shard.index.reserve(per_shard);
            self.hints.0[s].publish(&shard);
        }
    }

    /// Insert or replace; returns the previous lease and where the key lives.
    pub(crate) fn upsert(&self, key: LeaseKey, lease: Lease) -> (Option<Lease>, SlotRef) {
        let (h, s) = self.locate(&key);
        let mut shard = self.write(s);
        if let Some(slot) = shard.find(h, &key) {
            if let Some(e) = shard.slab.get_mut(slot) {
                return (
                    Some(std::mem::replace(&mut e.lease, lease)),
                    SlotRef::new(s, slot),
                );
            }
        }
        let slot = shard.slab.insert(Entry { key, lease });
        shard.index.insert(h, slot);
        self.hints.0[s].publish(&shard);
        self.len.0.fetch_add(1, Ordering::Relaxed);
        (None, SlotRef::new(s, slot))
    }

    /// Remove `key`; returns its lease and where it was.
    pub(crate) fn remove(&self, key: &LeaseKey) -> Option<(Lease, SlotRef)> {
        let (h, s) = self.locate(key);
        let mut shard = self.write(s);
        let slot = shard.find(h, key)?;
        let e = shard.slab.remove(slot)?;
        shard.index.remove(h, slot);
        self.hints.0[s].publish(&shard);
        self.len.0.fetch_sub(1, Ordering::Relaxed);
        Some((e.lease, SlotRef::new(s, slot)))
    }

    /// Visit every lease, one shard read-locked at a time (`f` must not call back into the table).
    pub(crate) fn for_each(&self, mut f: impl FnMut(SlotRef, &LeaseKey, &Lease)) {
        for s in 0..SHARDS {
            let shard = self.read(s);
            for (slot, e) in shard.slab.iter() {
                f(SlotRef::new(s, slot), &e.key, &e.lease);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::binding::{ClientInfo, IaType, Link, ServerId, Source, Timestamp};
    use std::net::Ipv6Addr;
    use std::sync::Arc;

    fn lease(valid: i64) -> Lease {
        Lease {
            client: Arc::new(ClientInfo {
                duid: crate::wire::Duid::from(&[0u8, 3, 0, 1, 2]),
                link: Link {
                    address: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1),
                    interface: None,
                },
                relay: None,
            }),
            server: Arc::new(ServerId {
                duid: crate::wire::Duid::from(&[0, 1]),
                address: Ipv6Addr::LOCALHOST,
            }),
            ia: IaType::Na,
            iaid: 1,
            preferred_until: Timestamp::from_secs(valid),
            valid_until: Timestamp::from_secs(valid),
            last_transaction: Timestamp::from_secs(0),
            arrival: Timestamp::from_secs(0),
            source: Source::Snoop,
            srsn: None,
            next_hop: None,
        }
    }

    fn key(i: u32) -> LeaseKey {
        LeaseKey::Address(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            (i >> 16) as u16,
            i as u16,
        ))
    }

    #[test]
    fn upsert_find_replace_remove_across_shards() {
        let t = LeaseTable::default();
        let refs: Vec<SlotRef> = (0..3000)
            .map(|i| t.upsert(key(i), lease(i64::from(i))).1)
            .collect();
        assert_eq!(t.len(), 3000);
        let shards: std::collections::HashSet<usize> = refs.iter().map(|r| r.shard()).collect();
        assert_eq!(shards.len(), SHARDS, "keys spread over every shard");
        for i in 0..3000 {
            assert_eq!(
                t.with(&key(i), |l| l.valid_until),
                Some(Timestamp::from_secs(i64::from(i)))
            );
            assert_eq!(t.at(refs[i as usize], |k, _| *k), Some(key(i)));
        }
        let (old, r) = t.upsert(key(5), lease(99));
        assert_eq!(old.map(|l| l.valid_until), Some(Timestamp::from_secs(5)));
        assert_eq!(r, refs[5], "a replaced lease keeps its place");
        assert_eq!(t.len(), 3000);
        assert_eq!(t.remove(&key(5)).map(|(_, r)| r), Some(refs[5]));
        assert!(t.remove(&key(5)).is_none());
        assert!(t.with(&key(5), |_| ()).is_none());
        assert!(t.at(refs[5], |_, _| ()).is_none());
        let mut n = 0;
        t.for_each(|r, k, _| {
            assert_eq!(t_at_key(&refs, r), Some(*k));
            n += 1;
        });
        assert_eq!(n, 2999);
    }

    /// What a probe reads sits at the front of an entry (key, then the lease whose first field
    /// holds `Option`'s tag), the entry is no bigger for it, and the count the writer bumps is
    /// not on the lookup's line.
    #[test]
    fn probed_bytes_lead_the_entry_and_the_writers_count_has_its_own_line() {
        use std::mem::{offset_of, size_of};
        assert_eq!(offset_of!(Entry, key), 0, "the key first");
        assert!(offset_of!(Entry, lease) <= 24);
        assert_eq!(
            size_of::<Option<Entry>>(),
            size_of::<Entry>(),
            "tag in a niche"
        );
        assert!(size_of::<Entry>() <= 104, "{} bytes", size_of::<Entry>());
        let line = |o: usize| o / 128;
        assert_ne!(
            line(offset_of!(LeaseTable, len)),
            line(offset_of!(LeaseTable, shards))
        );
        assert_ne!(
            line(offset_of!(LeaseTable, len)),
            line(offset_of!(LeaseTable, hasher))
        );
        assert_eq!(std::mem::align_of::<LeaseTable>(), 128);
    }

    /// The prefetch hint of every shard names the index as it is after each write, through
    /// growth from the smallest index and shrinking back: a stale hint would prefetch memory a
    /// lookup never reads (or memory already freed) on every probe.
    #[test]
    fn prefetch_hints_follow_each_index_through_its_resizes() {
        let t = LeaseTable::default();
        let same = |t: &LeaseTable| {
            (0..SHARDS).all(|s| {
                let (words, mask) = t.read(s).index.place_hint();
                let h = &t.hints.0[s];
                h.words.load(Ordering::Relaxed).cast_const() == words
                    && h.mask.load(Ordering::Relaxed) == mask
            })
        };
        assert!(same(&t));
        let first = t.hints.0[0].mask.load(Ordering::Relaxed);
        for i in 0..5000 {
            t.upsert(key(i), lease(1));
            assert!(same(&t), "after inserting {i}");
        }
        assert!(
            t.hints.0[0].mask.load(Ordering::Relaxed) > first * 64,
            "it grew"
        );
        for i in 0..4990 {
            t.remove(&key(i));
            assert!(same(&t), "after removing {i}");
        }
        t.reserve(100_000);
        assert!(same(&t), "after a reserve");
        for i in 4990..5000 {
            let p = t.probe(&key(i));
            assert_eq!(t.try_with_probe(&key(i), p, |k, _| *k).ok(), Some(key(i)));
        }
    }

    fn t_at_key(refs: &[SlotRef], r: SlotRef) -> Option<LeaseKey> {
        refs.iter().position(|x| *x == r).map(|i| key(i as u32))
    }
}
