//! A hash map that grows without stopping its writer: the old table is moved into the new one a
//! few buckets per write instead of all at once.
//!
//! Why: a `HashMap` that fills doubles in one call, re-hashing and moving every entry it holds.
//! On the snooped REPLY path that call lands on one unlucky REPLY: in a 50 000-client reboot storm
//! (`cargo bench --bench storm`) the installer's desired and installed maps and the store's
//! by-client index all reached seven eighths of 32 768 buckets at the same client, 28 673, and
//! the growth — a fresh allocation faulted in page by page, every key hashed again (a DUID's
//! bytes behind a pointer: a cache miss each), the old table unmapped — stalled the REPLYs
//! behind it for milliseconds, more than the storm's whole p99 goal. Sizing the maps up front
//! needs a bound the agent does not know when it starts empty, and the configured cap
//! (millions) would cost hundreds of megabytes.
//!
//! How: two [`hashbrown::HashTable`]s. Writes go to `new`; when it is full, it becomes `old` and
//! an empty `new` of twice the entries is allocated (only its control bytes are written, one
//! per bucket; the rest is faulted in as it is used). Every insert and remove then moves the
//! entries of the next few buckets of `old` by bucket index: as few as still empty `old`
//! before `new` fills (`new` has room for as many fresh keys as the map held when it grew, and
//! a full `old` has 8/7 as many buckets as that; [`MIN_STEP`] a write, more only for a table
//! its removals left mostly tombstones). The total is one move per entry however many a write
//! takes; fewer per write spread it thinner, more free the old table's memory sooner. Lookups try `new`, then `old` while it holds anything. A write therefore
//! does a bounded amount of work whatever the map's size: a probe or two and a few bucket
//! visits. Memory: while a migration is under way both tables are held (as they are, briefly,
//! in a plain resize); otherwise it is one hashbrown table.
//!
//! If a table is needed while `old` still holds entries (it cannot happen through
//! insert/remove, whose steps always finish first; a large [`IncMap::reserve`] can ask for it),
//! the rest of `old` is moved at once and counted in [`IncMap::forced_moves`], which the tests
//! hold at zero.

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;

use super::hash::KeyHashBuilder;

/// The fewest buckets of the old table visited per write. A growth starts when `new` holds as
/// many entries as its capacity (7/8 of its buckets), and the new table has room for as many
/// fresh keys again; `old` needs only 8/7 bucket visits per fresh key to be empty by then. But
/// `old` keeps all its memory until it is empty, so the slower the migration the longer the
/// map holds both tables: at two buckets a write, until it had grown by 4/7 past the doubling
/// (the cache bench's million bindings, 500 000 clients, fell inside the by-client index's
/// migration: 266 B/binding; 246 at sixteen). Sixteen (about fourteen entries moved, a
/// fraction of a microsecond) frees `old` once the map has grown by 1/14: the memory of a
/// plain doubling at every size but that stretch, for at most sixteen bucket visits a write.
const MIN_STEP: usize = 16;

/// The smallest table a growth allocates.
const MIN_CAPACITY: usize = 16;

/// A hash map whose growth is spread over the writes that follow it (see the module doc).
#[derive(Clone)]
pub(crate) struct IncMap<K, V, S = KeyHashBuilder> {
    new: HashTable<(K, V)>,
    old: HashTable<(K, V)>,
    /// The next bucket of `old` to move.
    cursor: usize,
    /// Buckets of `old` visited per write in this migration (see [`IncMap::grow`]).
    step: usize,
    hasher: S,
    /// Entries moved outside the bounded steps (see the module doc).
    forced: usize,
    /// The most entries one step has moved (the tests' bound).
    #[cfg(test)]
    most_moved: usize,
}

impl<K, V, S: Default> Default for IncMap<K, V, S> {
    fn default() -> Self {
        IncMap::with_hasher(S::default())
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug, S> std::fmt::Debug for IncMap<K, V, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter_inner()).finish()
    }
}

impl<K, V, S> IncMap<K, V, S> {
    pub(crate) fn with_hasher(hasher: S) -> Self {
        IncMap {
            new: HashTable::new(),
            old: HashTable::new(),
            cursor: 0,
            step: MIN_STEP,
            hasher,
            forced: 0,
            #[cfg(test)]
            most_moved: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.new.len() + self.old.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries moved at once because a table was needed before the steps had emptied `old`.
    #[cfg(test)]
    pub(crate) fn forced_moves(&self) -> usize {
        self.forced
    }

    /// The most entries one write has moved from the old table to the new.
    #[cfg(test)]
    pub(crate) fn most_moved(&self) -> usize {
        self.most_moved
    }

    /// Whether a migration is under way (`old` still holds entries).
    #[cfg(test)]
    pub(crate) fn migrating(&self) -> bool {
        !self.old.is_empty()
    }

    fn iter_inner(&self) -> Iter<'_, K, V> {
        fn pair<K, V>(e: &(K, V)) -> (&K, &V) {
            (&e.0, &e.1)
        }
        self.new.iter().chain(self.old.iter()).map(pair)
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> Iter<'_, K, V> {
        self.iter_inner()
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.iter_inner().map(|(k, _)| k)
    }

    /// Drop every entry (the tables keep their memory, as `HashMap::clear` does).
    pub(crate) fn clear(&mut self) {
        self.new.clear();
        self.old = HashTable::new();
        self.cursor = 0;
    }
}

impl<K: Hash + Eq, V, S: BuildHasher> IncMap<K, V, S> {
    /// An empty map with room for `n` entries before its first growth.
    pub(crate) fn with_capacity_and_hasher(n: usize, hasher: S) -> Self {
        IncMap {
            new: HashTable::with_capacity(n),
            ..IncMap::with_hasher(hasher)
        }
    }

    #[inline]
    fn hash<Q: Hash + ?Sized>(&self, k: &Q) -> u64 {
        self.hasher.hash_one(k)
    }

    /// Tests only: every product reader looks up by a hash it computed already (the sharded
    /// maps) or by a borrowed key through its own path (the classifier's pending table).
    #[cfg(test)]
    pub(crate) fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_hashed(self.hash(k), k)
    }

    /// [`get`](Self::get) of a key whose hash under this map's hasher is `h` (the sharded maps
    /// hash a key once, for the shard and its table: a DUID's bytes sit behind a pointer).
    #[inline]
    fn get_hashed<Q>(&self, h: u64, k: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        debug_assert_eq!(h, self.hash(k));
        let eq = |e: &(K, V)| e.0.borrow() == k;
        match self.new.find(h, eq) {
            Some((_, v)) => Some(v),
            None if !self.old.is_empty() => self.old.find(h, eq).map(|(_, v)| v),
            None => None,
        }
    }

    /// (The sharded maps call the hashed form; the tests drive this one.)
    #[cfg(test)]
    pub(crate) fn get_mut<Q>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_mut_hashed(self.hash(k), k)
    }

    /// [`get_mut`](Self::get_mut) of a key hashed to `h` (see [`get_hashed`](Self::get_hashed)).
    #[inline]
    fn get_mut_hashed<Q>(&mut self, h: u64, k: &Q) -> Option<&mut V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        debug_assert_eq!(h, self.hash(k));
        let eq = |e: &(K, V)| e.0.borrow() == k;
        if self.new.find(h, eq).is_some() {
            return self.new.find_mut(h, eq).map(|(_, v)| v);
        }
        self.old.find_mut(h, eq).map(|(_, v)| v)
    }

    /// Insert or replace; returns the value replaced.
    pub(crate) fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.insert_hashed(self.hash(&k), k, v)
    }

    /// [`insert`](Self::insert) of a key hashed to `h` (see [`get_hashed`](Self::get_hashed)).
    #[inline]
    fn insert_hashed(&mut self, h: u64, k: K, v: V) -> Option<V> {
        debug_assert_eq!(h, self.hash(&k));
        if let Some(e) = self.new.find_mut(h, |e| e.0 == k) {
            return Some(std::mem::replace(&mut e.1, v));
        }
        if !self.old.is_empty()
            && let Some(e) = self.old.find_mut(h, |e| e.0 == k)
        {
            return Some(std::mem::replace(&mut e.1, v));
        }
        self.insert_new(h, k, v);
        None
    }

    /// The value at `k`, inserting `make()` first when there is none. (The sharded maps call
    /// the hashed form; the tests drive this one.)
    #[cfg(test)]
    pub(crate) fn get_or_insert_with(&mut self, k: K, make: impl FnOnce() -> V) -> &mut V {
        self.get_or_insert_with_hashed(self.hash(&k), k, make)
    }

    /// [`get_or_insert_with`](Self::get_or_insert_with) of a key hashed to `h` (see
    /// [`get_hashed`](Self::get_hashed)).
    #[inline]
    fn get_or_insert_with_hashed(&mut self, h: u64, k: K, make: impl FnOnce() -> V) -> &mut V {
        debug_assert_eq!(h, self.hash(&k));
        if self.new.find(h, |e| e.0 == k).is_some() {
            return &mut self
                .new
                .find_mut(h, |e| e.0 == k)
                .expect("found just above")
                .1;
        }
        if !self.old.is_empty() && self.old.find(h, |e| e.0 == k).is_some() {
            return &mut self
                .old
                .find_mut(h, |e| e.0 == k)
                .expect("found just above")
                .1;
        }
        &mut self.insert_new(h, k, make()).1
    }

    /// Add a key known to be absent from both tables.
    fn insert_new(&mut self, h: u64, k: K, v: V) -> &mut (K, V) {
        self.step();
        if self.new.len() >= self.new.capacity() {
            self.grow(self.len() + 1);
        }
        let hasher = &self.hasher;
        self.new
            .insert_unique(h, (k, v), |e| hasher.hash_one(&e.0))
            .into_mut()
    }

    pub(crate) fn remove<Q>(&mut self, k: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.remove_hashed(self.hash(k), k)
    }

    /// [`remove`](Self::remove) of a key hashed to `h` (see [`get_hashed`](Self::get_hashed)).
    #[inline]
    fn remove_hashed<Q>(&mut self, h: u64, k: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        debug_assert_eq!(h, self.hash(k));
        let eq = |e: &(K, V)| e.0.borrow() == k;
        let v = match self.new.find_entry(h, eq) {
            Ok(e) => Some(e.remove().0.1),
            Err(_) if !self.old.is_empty() => match self.old.find_entry(h, eq) {
                Ok(e) => Some(e.remove().0.1),
                Err(_) => None,
            },
            Err(_) => None,
        };
        if v.is_some() {
            self.step();
        }
        v
    }

    /// Room for `additional` more entries. When `new` lacks it and nothing is being moved, a
    /// migration to a table with that room starts (the steps of the writes that follow carry
    /// it out); an empty map just allocates.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let want = self.len().saturating_add(additional);
        if want <= self.new.capacity() || !self.old.is_empty() {
            return;
        }
        if self.is_empty() {
            self.new = HashTable::with_capacity(want);
            return;
        }
        self.grow(want);
    }

    /// `new` becomes `old` and an empty `new` with room for `want` entries (at least twice
    /// what the map holds) takes its place. Only called with `new` full or too small.
    fn grow(&mut self, want: usize) {
        if !self.old.is_empty() {
            // Not reachable through insert/remove (see `step`); a reserve can ask for it.
            self.forced += self.old.len();
            self.finish();
        }
        let cap = want.max(self.len() * 2).max(MIN_CAPACITY);
        self.old = std::mem::replace(&mut self.new, HashTable::with_capacity(cap));
        self.cursor = 0;
        // Every bucket of `old` visited before the fresh keys `new` has room for are in: each
        // of them steps once (removals step too, and free no room). A table grown full needs
        // MIN_STEP; one that removals left mostly tombstones has more buckets per entry held.
        let room = self.new.capacity().saturating_sub(self.len()).max(1);
        self.step = self.old.num_buckets().div_ceil(room).max(MIN_STEP);
    }

    /// Move the entries of the next `self.step` buckets of `old` into `new`.
    fn step(&mut self) {
        if self.old.is_empty() {
            return;
        }
        let end = (self.cursor + self.step).min(self.old.num_buckets());
        #[cfg(test)]
        let mut moved = 0;
        for i in self.cursor..end {
            if let Ok(e) = self.old.get_bucket_entry(i) {
                #[cfg(test)]
                {
                    moved += 1;
                }
                let (kv, _) = e.remove();
                let hasher = &self.hasher;
                let h = hasher.hash_one(&kv.0);
                self.new.insert_unique(h, kv, |e| hasher.hash_one(&e.0));
            }
        }
        self.cursor = end;
        #[cfg(test)]
        {
            self.most_moved = self.most_moved.max(moved);
        }
        if self.old.is_empty() || self.cursor >= self.old.num_buckets() {
            debug_assert!(self.old.is_empty(), "every bucket visited");
            self.old = HashTable::new();
            self.cursor = 0;
        }
    }

    /// Move whatever is left in `old`.
    fn finish(&mut self) {
        while !self.old.is_empty() {
            self.step();
        }
    }
}

/// An [`IncMap`]'s entries: the new table's, then the old one's.
pub(crate) type Iter<'a, K, V> = std::iter::Map<
    std::iter::Chain<
        hashbrown::hash_table::Iter<'a, (K, V)>,
        hashbrown::hash_table::Iter<'a, (K, V)>,
    >,
    fn(&'a (K, V)) -> (&'a K, &'a V),
>;

impl<'a, K, V, S> IntoIterator for &'a IncMap<K, V, S> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter_inner()
    }
}

/// Shards of [`ShardedMap`] and [`StaggeredMap`]: what the by-client DashMap the first
/// replaces had on a 2-core box, so readers on other cores contend no more than before.
const SHARDS: usize = 8;

/// Where shard `i`'s keys end on a 16-bit scale: shard `i` takes the share
/// `2^(i/8) · (2^(1/8) − 1)` of the keys (9.1 % for the first, 16.6 % for the last), the bound
/// after it `65536 · (2^((i+1)/8) − 1)`.
///
/// Why unequal: shards that share the keys evenly fill together, so all of them reach a
/// doubling at the same total and migrate at once — eight old tables held together and eight
/// migrations' moves in the same writes. With shares a factor 2^(1/8) apart, shard `i+1`
/// reaches each size when the map holds 9 % more than when shard `i` did: the doublings are
/// spread evenly over the map's own doubling, and a migration (over once its shard has grown
/// by 1/14, see [`MIN_STEP`]) is mostly alone.
const BOUNDS: [u32; SHARDS - 1] = [5931, 12399, 19453, 27145, 35534, 44681, 54657];

/// The shard of a key hashed to `h` (bits a shard's own table uses neither for its buckets,
/// the low ones, nor for its tags, the top seven).
#[inline]
fn staggered(h: u64) -> usize {
    let u = ((h >> 40) & 0xffff) as u32;
    BOUNDS.iter().take_while(|b| u >= **b).count()
}

/// Shard `i`'s share of `n` keys, with a little room over.
fn share(n: usize, i: usize) -> usize {
    let lo = if i == 0 { 0 } else { BOUNDS[i - 1] };
    let hi = BOUNDS.get(i).copied().unwrap_or(1 << 16);
    let part = ((n as u128 * u128::from(hi - lo)) >> 16) as usize;
    part + part / 16 + 16
}

/// [`IncMap`]s a key's hash chooses among with the staggered shares of [`BOUNDS`]: a map
/// whose growth is spread like an `IncMap`'s and, across its shards, over time: at any size at
/// most about one shard is migrating, so the map holds an old table of about a tenth of its
/// size at most, and a write steps only in its own shard. For one writer with no concurrent
/// readers (the route book); [`ShardedMap`] is the same behind locks.
#[derive(Debug)]
pub(crate) struct StaggeredMap<K, V> {
    shards: [IncMap<K, V>; SHARDS],
    hasher: KeyHashBuilder,
}

impl<K, V> Default for StaggeredMap<K, V> {
    fn default() -> Self {
        // Every shard hashes with the map's own hasher: a key is hashed once, for its shard and
        // for the shard's table (see `staggered`).
        let hasher = KeyHashBuilder::default();
        StaggeredMap {
            shards: std::array::from_fn(|_| IncMap::with_hasher(hasher)),
            hasher,
        }
    }
}

impl<K, V> StaggeredMap<K, V> {
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(IncMap::len).sum()
    }

    /// Every entry, shard by shard.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.shards.iter().flat_map(IncMap::iter)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }

    pub(crate) fn clear(&mut self) {
        self.shards.iter_mut().for_each(IncMap::clear);
    }

    /// How many shards are migrating now (the tests' measure of the staggering).
    #[cfg(test)]
    fn migrating(&self) -> usize {
        self.shards.iter().filter(|s| s.migrating()).count()
    }
}

impl<K: Hash + Eq, V> StaggeredMap<K, V> {
    /// The key's hash and its shard: one hash for both (the shards share the map's hasher).
    #[inline]
    fn locate<Q: Hash + ?Sized>(&self, k: &Q) -> (u64, usize) {
        let h = self.hasher.hash_one(k);
        (h, staggered(h))
    }

    pub(crate) fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (h, s) = self.locate(k);
        self.shards[s].get_hashed(h, k)
    }

    pub(crate) fn contains_key<Q>(&self, k: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(k).is_some()
    }

    /// Insert or replace; returns the value replaced.
    pub(crate) fn insert(&mut self, k: K, v: V) -> Option<V> {
        let (h, s) = self.locate(&k);
        self.shards[s].insert_hashed(h, k, v)
    }

    /// The value at `k`, inserting `make()` first when there is none.
    pub(crate) fn get_or_insert_with(&mut self, k: K, make: impl FnOnce() -> V) -> &mut V {
        let (h, s) = self.locate(&k);
        self.shards[s].get_or_insert_with_hashed(h, k, make)
    }

    pub(crate) fn remove<Q>(&mut self, k: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (h, s) = self.locate(k);
        self.shards[s].remove_hashed(h, k)
    }

    /// Room for `additional` more entries, each shard its share (see [`IncMap::reserve`]).
    pub(crate) fn reserve(&mut self, additional: usize) {
        for (i, s) in self.shards.iter_mut().enumerate() {
            s.reserve(share(additional, i));
        }
    }
}

impl<'a, K, V> IntoIterator for &'a StaggeredMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::FlatMap<
        std::slice::Iter<'a, IncMap<K, V>>,
        Iter<'a, K, V>,
        fn(&'a IncMap<K, V>) -> Iter<'a, K, V>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.shards.iter().flat_map(IncMap::iter)
    }
}

/// One shard of a [`ShardedMap`], on cache lines of its own.
type Shard<K, V> = super::table::Line<std::sync::RwLock<IncMap<K, V>>>;

/// [`IncMap`]s behind read-write locks, a key's shard chosen by its hash with the staggered
/// shares of [`BOUNDS`]: the concurrent by-client index of the store (readers on every core,
/// one writer), growing a few buckets per write like `IncMap` instead of a DashMap shard's
/// doubling, one shard at a time. A DashMap's shards all fill together (keys spread evenly),
/// so all of them doubled within the same few writes: eight rehashes of every DUID's bytes,
/// behind a pointer each, in one storm window.
pub(crate) struct ShardedMap<K, V> {
    shards: Box<[Shard<K, V>]>,
    hasher: KeyHashBuilder,
}

impl<K, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        // One hasher for the shard choice and every shard's table, as `StaggeredMap`'s.
        let hasher = KeyHashBuilder::default();
        ShardedMap {
            shards: (0..SHARDS)
                .map(|_| super::table::Line(std::sync::RwLock::new(IncMap::with_hasher(hasher))))
                .collect(),
            hasher,
        }
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for ShardedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedMap")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<K, V> ShardedMap<K, V> {
    // A panic under a shard lock leaves the IncMap whole (each of its writes completes or
    // leaves it unchanged before anything can panic), so a poisoned lock is used as is.
    fn read_shard(&self, s: usize) -> std::sync::RwLockReadGuard<'_, IncMap<K, V>> {
        self.shards[s].0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_shard(&self, s: usize) -> std::sync::RwLockWriteGuard<'_, IncMap<K, V>> {
        self.shards[s].0.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn len(&self) -> usize {
        (0..self.shards.len())
            .map(|s| self.read_shard(s).len())
            .sum()
    }

    /// Visit every entry, one shard read-locked at a time.
    #[cfg(test)]
    pub(crate) fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        for s in 0..self.shards.len() {
            for (k, v) in self.read_shard(s).iter() {
                f(k, v);
            }
        }
    }
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    /// Room for `n` entries before any shard grows (each shard its share and a little more).
    pub(crate) fn with_capacity(n: usize) -> Self {
        let hasher = KeyHashBuilder::default();
        ShardedMap {
            shards: (0..SHARDS)
                .map(|i| {
                    super::table::Line(std::sync::RwLock::new(IncMap::with_capacity_and_hasher(
                        share(n, i),
                        hasher,
                    )))
                })
                .collect(),
            hasher,
        }
    }

    /// The key's hash and its shard: one hash for both (the shards share the map's hasher).
    #[inline]
    fn locate<Q: Hash + ?Sized>(&self, k: &Q) -> (u64, usize) {
        let h = self.hasher.hash_one(k);
        (h, staggered(h))
    }

    /// `f` of the value at `k` (its shard read-locked meanwhile).
    pub(crate) fn read<Q, R>(&self, k: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (h, s) = self.locate(k);
        self.read_shard(s).get_hashed(h, k).map(f)
    }

    /// `f` of the value at `k`, made by `make` first if there is none; returns what `f` does.
    pub(crate) fn update<R>(
        &self,
        k: K,
        make: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        let (h, s) = self.locate(&k);
        let mut shard = self.write_shard(s);
        f(shard.get_or_insert_with_hashed(h, k, make))
    }

    /// `f` of the value at `k`; the entry is removed when `f` says so (`f`'s first answer).
    /// Returns `f`'s answer, `None` when there was no entry.
    pub(crate) fn remove_if_mut<Q, R>(
        &self,
        k: &Q,
        f: impl FnOnce(&mut V) -> (bool, R),
    ) -> Option<R>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (h, s) = self.locate(k);
        let mut shard = self.write_shard(s);
        let (gone, r) = f(shard.get_mut_hashed(h, k)?);
        if gone {
            shard.remove_hashed(h, k);
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u32),
        Remove(u16),
        Get(u16),
        Upsert(u16, u32),
        Reserve(u16),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Keys from a range a few hundred wide, so sequences grow through several doublings,
        // shrink by removals (tombstones), and hit present and absent keys alike.
        prop_oneof![
            6 => (0u16..2000, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => (0u16..2000).prop_map(Op::Remove),
            3 => (0u16..2000).prop_map(Op::Get),
            2 => (0u16..2000, any::<u32>()).prop_map(|(k, v)| Op::Upsert(k, v)),
            1 => (0u16..300).prop_map(Op::Reserve),
            1 => Just(Op::Clear),
        ]
    }

    /// A map the proptests drive with [`Op`]s beside a `HashMap` model (see [`drive`]).
    trait Driven: Default {
        fn put(&mut self, k: u16, v: u32) -> Option<u32>;
        fn take(&mut self, k: u16) -> Option<u32>;
        /// A read of `k` through what the map offers, checked against the model's.
        fn read(&mut self, k: u16, model: &mut HashMap<u16, u32>) -> Result<(), TestCaseError>;
        fn upsert(&mut self, k: u16, v: u32) -> &mut u32;
        fn make_room(&mut self, n: usize);
        fn empty(&mut self);
        fn size(&self) -> usize;
        /// Every entry, through the map's iterator, and how many its other iterator yields.
        fn pairs(&self) -> (Vec<(u16, u32)>, usize);
    }

    /// The [`Driven`] methods both maps answer with their own methods of the same names.
    macro_rules! forward_to_the_map {
        () => {
            fn put(&mut self, k: u16, v: u32) -> Option<u32> {
                self.insert(k, v)
            }
            fn take(&mut self, k: u16) -> Option<u32> {
                self.remove(&k)
            }
            fn upsert(&mut self, k: u16, v: u32) -> &mut u32 {
                self.get_or_insert_with(k, || v)
            }
            fn make_room(&mut self, n: usize) {
                self.reserve(n);
            }
            fn empty(&mut self) {
                self.clear();
            }
            fn size(&self) -> usize {
                self.len()
            }
        };
    }

    impl Driven for IncMap<u16, u32> {
        forward_to_the_map!();
        fn read(&mut self, k: u16, model: &mut HashMap<u16, u32>) -> Result<(), TestCaseError> {
            prop_assert_eq!(self.get(&k), model.get(&k));
            if let Some(v) = self.get_mut(&k) {
                *v = v.wrapping_add(1);
            }
            if let Some(v) = model.get_mut(&k) {
                *v = v.wrapping_add(1);
            }
            Ok(())
        }
        fn pairs(&self) -> (Vec<(u16, u32)>, usize) {
            (
                self.iter().map(|(k, v)| (*k, *v)).collect(),
                self.keys().count(),
            )
        }
    }

    impl Driven for StaggeredMap<u16, u32> {
        forward_to_the_map!();
        fn read(&mut self, k: u16, model: &mut HashMap<u16, u32>) -> Result<(), TestCaseError> {
            prop_assert_eq!(self.get(&k), model.get(&k));
            prop_assert_eq!(self.contains_key(&k), model.contains_key(&k));
            Ok(())
        }
        fn pairs(&self) -> (Vec<(u16, u32)>, usize) {
            (
                self.into_iter().map(|(k, v)| (*k, *v)).collect(),
                self.values().count(),
            )
        }
    }

    /// Applies `ops` to a fresh `M` and to a `HashMap`, holding every answer, the length after
    /// each op and the final contents equal.
    fn drive<M: Driven>(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mut m = M::default();
        let mut model: HashMap<u16, u32> = HashMap::new();
        for op in ops {
            match op {
                Op::Insert(k, v) => prop_assert_eq!(m.put(k, v), model.insert(k, v)),
                Op::Remove(k) => prop_assert_eq!(m.take(k), model.remove(&k)),
                Op::Get(k) => m.read(k, &mut model)?,
                Op::Upsert(k, v) => {
                    let a = m.upsert(k, v);
                    *a = a.wrapping_mul(3);
                    let b = model.entry(k).or_insert(v);
                    *b = b.wrapping_mul(3);
                }
                Op::Reserve(n) => m.make_room(usize::from(n)),
                Op::Clear => {
                    m.empty();
                    model.clear();
                }
            }
            prop_assert_eq!(m.size(), model.len());
        }
        let (mut got, counted) = m.pairs();
        let mut want: Vec<(u16, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
        got.sort_unstable();
        want.sort_unstable();
        prop_assert_eq!(got, want);
        prop_assert_eq!(counted, model.len());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Every answer equals a plain HashMap's over random insert/remove/grow sequences.
        #[test]
        fn answers_like_a_hashmap(ops in prop::collection::vec(op(), 1..3000)) {
            drive::<IncMap<u16, u32>>(ops)?;
        }

        /// Inserts and removes alone (no reserve) never need the old table moved at once: the
        /// growth is all done a few buckets per write.
        #[test]
        fn growth_is_only_ever_stepped(ops in prop::collection::vec((any::<bool>(), 0u32..20_000), 1..20_000)) {
            let mut m: IncMap<u32, u32> = IncMap::default();
            for (add, k) in ops {
                if add {
                    m.insert(k, k);
                } else {
                    m.remove(&k);
                }
            }
            prop_assert_eq!(m.forced_moves(), 0);
        }
    }

    proptest! {
        /// The sharded map answers like a HashMap: `update` counts up, `remove_if_mut` counts
        /// down and removes at zero, across shards, through growth and back.
        #[test]
        fn sharded_answers_like_a_hashmap(ops in prop::collection::vec((any::<bool>(), 0u32..3000), 1..6000)) {
            let m: ShardedMap<u32, u32> = ShardedMap::default();
            let mut model: HashMap<u32, u32> = HashMap::new();
            for (up, k) in ops {
                if up {
                    m.update(k, || 0, |v| *v += 1);
                    *model.entry(k).or_insert(0) += 1;
                } else {
                    m.remove_if_mut(&k, |v| {
                        *v -= 1;
                        (*v == 0, ())
                    });
                    if let Some(v) = model.get_mut(&k) {
                        *v -= 1;
                        if *v == 0 {
                            model.remove(&k);
                        }
                    }
                }
                prop_assert_eq!(m.read(&k, |v| *v), model.get(&k).copied());
            }
            prop_assert_eq!(m.len(), model.len());
            let mut n = 0;
            m.for_each(|k, v| {
                n += 1;
                assert_eq!(model.get(k), Some(v));
            });
            prop_assert_eq!(n, model.len());
        }
    }

    proptest! {
        /// The staggered map answers like a HashMap over random insert/remove/grow sequences.
        #[test]
        fn staggered_answers_like_a_hashmap(ops in prop::collection::vec(op(), 1..3000)) {
            drive::<StaggeredMap<u16, u32>>(ops)?;
        }
    }

    /// The shards' shares are a factor 2^(1/8) apart, so they reach each size one after the
    /// other: filling a map to 300 000 keys, every shard migrates at every doubling, yet never
    /// more than three at once (evenly shared, all eight would), and no growth is forced.
    #[test]
    fn staggered_shards_migrate_one_after_another() {
        let mut m: StaggeredMap<u64, u64> = StaggeredMap::default();
        let (mut most, mut started) = (0, 0);
        let mut was = [false; SHARDS];
        for k in 0..300_000u64 {
            m.insert(k, k);
            // Below a few thousand keys a shard's whole migration is one or two of its own writes
            // and it reads as migrating until its next one (about eight inserts later): several
            // tiny tables can show it at once, with nothing left to move. What must not line up
            // is the big migrations, the ones that would cost a window of a storm.
            if k >= 4096 {
                most = most.max(m.migrating());
            }
            for (w, s) in was.iter_mut().zip(&m.shards) {
                started += usize::from(s.migrating() && !*w);
                *w = s.migrating();
            }
        }
        assert!(started >= SHARDS * 10, "{started} migrations");
        assert!(most <= 3, "{most} shards migrating at once");
        assert!(m.shards.iter().all(|s| s.forced_moves() == 0));
        for k in (0..300_000u64).step_by(7) {
            assert_eq!(m.get(&k), Some(&k));
        }
    }

    /// Each shard's share of the keys is what `BOUNDS` says (within sampling noise).
    #[test]
    fn shares_follow_the_bounds() {
        let h = KeyHashBuilder::default();
        let mut n = [0usize; SHARDS];
        for k in 0..200_000u64 {
            n[staggered(h.hash_one(k))] += 1;
        }
        for (i, got) in n.iter().enumerate() {
            let want = share(200_000, i) - 16;
            let want = want - want / 17;
            assert!(got.abs_diff(want) < want / 20, "shard {i}: {got} vs {want}");
        }
        assert!(n[SHARDS - 1] > n[0] * 17 / 10, "{n:?}");
    }

    /// Filling a map from empty to 100 000 keys: every growth is spread over the writes after
    /// it (a migration is seen under way, and none is ever forced), no write moves more than
    /// `MIN_STEP` entries, and every key is found throughout, in whichever table it sits.
    #[test]
    fn filling_moves_a_bounded_number_per_insert() {
        let mut m: IncMap<u64, u64> = IncMap::default();
        let mut saw_migration = 0;
        for k in 0..100_000u64 {
            assert_eq!(m.insert(k, k * 2), None);
            if m.migrating() {
                saw_migration += 1;
                // Keys in both tables answer.
                assert_eq!(m.get(&(k / 2)), Some(&(k / 2 * 2)));
                assert_eq!(m.get(&k), Some(&(k * 2)));
            }
        }
        assert!(saw_migration > 1000, "growth was spread: {saw_migration}");
        assert_eq!(m.forced_moves(), 0);
        assert!(m.most_moved() <= MIN_STEP, "{}", m.most_moved());
        assert!(m.most_moved() > 0);
        for k in 0..100_000u64 {
            assert_eq!(m.get(&k), Some(&(k * 2)));
        }
        assert_eq!(m.len(), 100_000);
    }
}
