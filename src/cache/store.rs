//! The binding store: concurrent indexes over the leases, and the one write path through the
//! merge rules.
//!
//! Readers (the snooper asking "do we know this source?", the control socket, snapshots) use the
//! dashmaps directly and concurrently. Writers are serialised by one `std::sync::Mutex` held only
//! inside the synchronous [`BindingStore::apply`]/[`withdraw`](BindingStore::withdraw)/
//! [`expire_due`](BindingStore::expire_due) calls — never across an `.await` (every dashmap guard
//! also stays inside these small functions). Serialising writers is what makes the change stream
//! ordered per lease: changes come out in the order the writes were decided.
//!
//! Indexes:
//! - `leases`: a set of boxed (key, lease) slots looked up by [`LeaseKey`] (the slot borrows as
//!   its key), addresses and prefixes alike. A set of pointers rather than a key→value map keeps
//!   the table's empty buckets at 8 bytes: at 1M leases hashbrown sits at ~48 % load, so bucket
//!   size dominates memory. An update swaps the slot in place under the shard lock
//!   (`replace_entry`), so readers never see the key missing.
//! - prefix lengths present, a count per length and a 129-bit mask: a covering-prefix lookup
//!   probes one hash per length present (typically 1–3), longest first — O(number of prefix
//!   lengths), never a scan.
//! - `by_client`: DUID → its lease keys; `by_link`: link-address → DUIDs of clients on it.
//!
//! All maps use the seeded word hasher of [`super::hash`].

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use super::binding::{
    Change, ChangeKind, Lease, LeaseKey, Observation, RouteView, Timestamp, Withdrawal,
};
use super::expiry::ExpiryQueue;
use super::hash::KeyHashBuilder;
use super::merge::{self, CltCheck, MergeConfig, MergeOutcome, Verdict};
use crate::prefix::Ipv6Prefix;

/// Settings of the binding cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    pub merge: MergeConfig,
    /// Most leases removed by one expiry pass (the rest follow on the next pass).
    pub expiry_batch: usize,
    /// How long a removal is remembered against late, older answers (merge R15).
    pub tombstone_ttl_ms: i64,
    /// Most tombstones kept; past it the oldest is forgotten early (counted).
    pub max_tombstones: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            merge: MergeConfig::default(),
            expiry_batch: 4096,
            tombstone_ttl_ms: 600_000,
            max_tombstones: 65_536,
        }
    }
}

const VERDICTS: [Verdict; 10] = [
    Verdict::Added,
    Verdict::Updated,
    Verdict::Unchanged,
    Verdict::Removed,
    Verdict::AlreadyGone,
    Verdict::RemovedOmitted,
    Verdict::LostToNewerClt,
    Verdict::LostToNewerSrsn,
    Verdict::LostToLaterArrival,
    Verdict::OverPrefixCap,
];

fn verdict_index(v: Verdict) -> usize {
    VERDICTS.iter().position(|x| *x == v).unwrap_or(0)
}

/// Counters the cache keeps; `metrics.rs` exports them with the `as_str()` labels.
#[derive(Debug, Default)]
pub struct CacheStats {
    verdicts: [AtomicU64; 10],
    clt_unix_timestamp: AtomicU64,
    clt_exceeds_valid: AtomicU64,
    expired: AtomicU64,
    withdrawn: AtomicU64,
    observations: AtomicU64,
    tombstones_evicted: AtomicU64,
}

impl CacheStats {
    /// Leases handled, by merge verdict label.
    pub fn verdicts(&self) -> Vec<(&'static str, u64)> {
        VERDICTS
            .iter()
            .zip(self.verdicts.iter())
            .map(|(v, c)| (v.as_str(), c.load(Ordering::Relaxed)))
            .collect()
    }

    pub fn verdict(&self, v: Verdict) -> u64 {
        self.verdicts[verdict_index(v)].load(Ordering::Relaxed)
    }

    /// CLT_TIME anomalies by label (`unix_timestamp`, `exceeds_valid`).
    pub fn clt_anomalies(&self) -> Vec<(&'static str, u64)> {
        vec![
            (
                CltCheck::UnixTimestamp.as_str(),
                self.clt_unix_timestamp.load(Ordering::Relaxed),
            ),
            (
                CltCheck::ExceedsValid.as_str(),
                self.clt_exceeds_valid.load(Ordering::Relaxed),
            ),
        ]
    }

    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    pub fn withdrawn(&self) -> u64 {
        self.withdrawn.load(Ordering::Relaxed)
    }

    pub fn observations(&self) -> u64 {
        self.observations.load(Ordering::Relaxed)
    }

    /// Tombstones forgotten before their TTL because the table was full.
    pub fn tombstones_evicted(&self) -> u64 {
        self.tombstones_evicted.load(Ordering::Relaxed)
    }
}

/// The result of one write: the change stream entries and the raw writes (for the journal).
#[derive(Debug, Default)]
pub struct Applied {
    pub changes: Vec<Change>,
    pub writes: Vec<(LeaseKey, Option<Lease>)>,
    pub verdicts: Vec<(LeaseKey, Verdict)>,
}

#[derive(Debug, Default)]
struct WriterState {
    expiry: ExpiryQueue,
    /// Servers already logged for a CLT_TIME anomaly (logged once per server DUID).
    clt_logged: HashSet<Box<[u8]>>,
    tombstones: HashMap<LeaseKey, Lease>,
    /// (forget-at, key) in insertion order; entries whose tombstone was replaced are skipped.
    tomb_order: VecDeque<(Timestamp, LeaseKey)>,
}

/// One lease in the table: found by its key, owning its data.
#[derive(Debug)]
struct Slot(Box<(LeaseKey, Lease)>);

impl Slot {
    fn lease(&self) -> &Lease {
        &self.0.1
    }
}

impl Borrow<LeaseKey> for Slot {
    fn borrow(&self) -> &LeaseKey {
        &self.0.0
    }
}

impl PartialEq for Slot {
    fn eq(&self, o: &Slot) -> bool {
        self.0.0 == o.0.0
    }
}

impl Eq for Slot {}

impl Hash for Slot {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.0.hash(h)
    }
}

type Map<K, V> = DashMap<K, V, KeyHashBuilder>;

/// The concurrent binding cache.
#[derive(Debug)]
pub struct BindingStore {
    cfg: CacheConfig,
    leases: Map<Slot, ()>,
    prefix_lens: [AtomicU32; 129],
    /// Bit `len` set ⇔ some prefix of that length is held.
    len_mask: [AtomicU64; 3],
    by_client: Map<Arc<[u8]>, Box<[LeaseKey]>>,
    by_link: Map<Ipv6Addr, HashSet<Arc<[u8]>, KeyHashBuilder>>,
    writer: Mutex<WriterState>,
    stats: CacheStats,
}

impl Default for BindingStore {
    fn default() -> Self {
        BindingStore::new(CacheConfig::default())
    }
}

impl BindingStore {
    pub fn new(cfg: CacheConfig) -> Self {
        BindingStore {
            cfg,
            // Many shards: a lookup read-locks one, and two cores hammering the same few lock
            // words would bounce their cache lines.
            leases: DashMap::with_hasher_and_shard_amount(KeyHashBuilder::default(), 256),
            prefix_lens: std::array::from_fn(|_| AtomicU32::new(0)),
            len_mask: std::array::from_fn(|_| AtomicU64::new(0)),
            by_client: DashMap::with_hasher(KeyHashBuilder::default()),
            by_link: DashMap::with_hasher(KeyHashBuilder::default()),
            writer: Mutex::new(WriterState::default()),
            stats: CacheStats::default(),
        }
    }

    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// Number of leases held.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WriterState> {
        // A panic while holding the lock leaves the maps consistent (each write is applied
        // key by key); keep going rather than poisoning the whole cache.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Merge one observation (RFC 5007 §4.3.4 and our rules, see `merge.rs`).
    pub fn apply(&self, obs: &Observation) -> Applied {
        let mut w = self.lock();
        self.forget_tombstones(&mut w, obs.arrival);
        let mut current = BTreeMap::new();
        let mut tombs = BTreeMap::new();
        let mut holders = Vec::new();
        for l in &obs.leases {
            if let Some(v) = self.get(&l.key) {
                if *v.client.duid != *obs.client_duid {
                    holders.push(v.client.duid.clone());
                }
                current.insert(l.key, v);
            } else if let Some(t) = w.tombstones.get(&l.key) {
                tombs.insert(l.key, t.clone());
            }
        }
        self.gather_client(&obs.client_duid, &mut current);
        for d in holders {
            self.gather_client(&d, &mut current);
        }
        let out = merge::merge(&current, &tombs, obs, &self.cfg.merge);
        self.stats.observations.fetch_add(1, Ordering::Relaxed);
        if let Some(check) = out.clt {
            self.note_clt(&mut w, obs, check);
        }
        self.commit(&mut w, &current, out)
    }

    /// Withdraw leases (released/declined, or operator `clear`).
    pub fn withdraw(&self, wd: &Withdrawal) -> Applied {
        let mut w = self.lock();
        let mut current = BTreeMap::new();
        for k in &wd.keys {
            if let Some(v) = self.get(k) {
                let duid = v.client.duid.clone();
                current.insert(*k, v);
                self.gather_client(&duid, &mut current);
            }
        }
        let out = merge::withdraw(&current, wd);
        let n = out
            .writes
            .iter()
            .filter(|(k, v)| v.is_none() && wd.keys.contains(k))
            .count();
        self.stats.withdrawn.fetch_add(n as u64, Ordering::Relaxed);
        self.commit(&mut w, &current, out)
    }

    /// Remove every lease whose valid lifetime has run out by `now` (RFC 8987 G-8), at most
    /// `expiry_batch` deadlines per call.
    pub fn expire_due(&self, now: Timestamp) -> Applied {
        let mut w = self.lock();
        let due = w.expiry.pop_due(now, self.cfg.expiry_batch);
        let mut current = BTreeMap::new();
        for (_, key) in due {
            match self.get(&key) {
                Some(l) if l.valid_until <= now => {
                    let duid = l.client.duid.clone();
                    current.insert(key, l);
                    self.gather_client(&duid, &mut current);
                }
                _ => {} // stale entry: the lease was refreshed or removed since
            }
        }
        let out = merge::expire(&current, now);
        let n = out.writes.iter().filter(|(_, v)| v.is_none()).count();
        self.stats.expired.fetch_add(n as u64, Ordering::Relaxed);
        self.commit(&mut w, &current, out)
    }

    /// The earliest time [`expire_due`](Self::expire_due) may have work.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.lock().expiry.next_deadline()
    }

    /// Put back a lease loaded from the state file, unless it has expired by `now`.
    /// Returns the `Added` change to hand to the installer.
    pub fn restore(&self, key: LeaseKey, lease: Lease, now: Timestamp) -> Option<Change> {
        if lease.valid_until <= now {
            return None;
        }
        let mut w = self.lock();
        let change = Change {
            kind: ChangeKind::Added,
            key,
            old: self.get(&key).map(|o| RouteView::of(&key, &o)),
            new: Some(RouteView::of(&key, &lease)),
        };
        self.put(&mut w, key, Some(lease));
        Some(change)
    }

    /// Drop tombstones whose time is up by `now`.
    fn forget_tombstones(&self, w: &mut WriterState, now: Timestamp) {
        while let Some((at, k)) = w.tomb_order.front().copied() {
            if at > now && w.tomb_order.len() <= 2 * self.cfg.max_tombstones {
                break;
            }
            w.tomb_order.pop_front();
            let expired = w
                .tombstones
                .get(&k)
                .is_some_and(|t| t.arrival.plus_millis(self.cfg.tombstone_ttl_ms) <= at);
            if expired {
                w.tombstones.remove(&k);
            }
        }
    }

    fn gather_client(&self, duid: &[u8], into: &mut BTreeMap<LeaseKey, Lease>) {
        let keys = self
            .by_client
            .get(duid)
            .map(|v| v.clone())
            .unwrap_or_default();
        for k in keys {
            if let Some(v) = self.get(&k) {
                into.insert(k, v);
            }
        }
    }

    fn note_clt(&self, w: &mut WriterState, obs: &Observation, check: CltCheck) {
        let counter = match check {
            CltCheck::UnixTimestamp => &self.stats.clt_unix_timestamp,
            CltCheck::ExceedsValid => &self.stats.clt_exceeds_valid,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if w.clt_logged.len() < 4096 && w.clt_logged.insert(obs.server.duid.clone()) {
            tracing::warn!(
                server = %obs.server.address,
                server_duid = %hex::encode(&obs.server.duid),
                clt_time = obs.clt_time.unwrap_or(0),
                anomaly = check.as_str(),
                "server sends a CLT_TIME that is not seconds since the last transaction; \
                 handled per cache::merge R13 (logged once per server)"
            );
        }
    }

    fn commit(
        &self,
        w: &mut WriterState,
        current: &BTreeMap<LeaseKey, Lease>,
        out: MergeOutcome,
    ) -> Applied {
        for (_, v) in &out.verdicts {
            self.stats.verdicts[verdict_index(*v)].fetch_add(1, Ordering::Relaxed);
        }
        for (k, v) in &out.writes {
            debug_assert!(current.contains_key(k) || v.is_some());
            self.put(w, *k, v.clone());
        }
        for (k, t) in out.tombstones {
            let forget_at = t.arrival.plus_millis(self.cfg.tombstone_ttl_ms);
            w.tombstones.insert(k, t);
            w.tomb_order.push_back((forget_at, k));
        }
        if w.expiry.needs_rebuild(self.leases.len()) {
            // Refreshes leave stale deadlines behind; bound them (amortised: at most once per
            // `len` pushes).
            let live: Vec<_> = self
                .leases
                .iter()
                .map(|e| (e.key().lease().valid_until, e.key().0.0))
                .collect();
            w.expiry.rebuild(live);
        }
        while w.tombstones.len() > self.cfg.max_tombstones {
            let Some((_, k)) = w.tomb_order.pop_front() else {
                break;
            };
            if w.tombstones.remove(&k).is_some() {
                self.stats
                    .tombstones_evicted
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        Applied {
            changes: out.changes,
            writes: out.writes,
            verdicts: out.verdicts,
        }
    }

    /// Write one key into every index.
    fn put(&self, w: &mut WriterState, key: LeaseKey, new: Option<Lease>) {
        let old = match &new {
            Some(l) => {
                w.expiry.push(l.valid_until, key);
                match self.leases.entry(Slot(Box::new((key, l.clone())))) {
                    dashmap::Entry::Occupied(o) => Some(o.replace_entry(()).0.0.1),
                    dashmap::Entry::Vacant(v) => {
                        v.insert(());
                        None
                    }
                }
            }
            None => self.leases.remove(&key).map(|(s, ())| s.0.1),
        };
        let moved = match (&old, &new) {
            (Some(o), Some(n)) => {
                o.client.duid != n.client.duid || o.client.link.address != n.client.link.address
            }
            _ => true,
        };
        if !moved {
            return;
        }
        if let Some(o) = &old {
            self.unindex(key, o);
        }
        if let Some(n) = &new {
            self.index(key, n);
        }
    }

    fn set_len_bit(&self, len: u8, on: bool) {
        let (word, bit) = (usize::from(len / 64), 1u64 << (len % 64));
        if on {
            self.len_mask[word].fetch_or(bit, Ordering::Relaxed);
        } else {
            self.len_mask[word].fetch_and(!bit, Ordering::Relaxed);
        }
    }

    fn index(&self, key: LeaseKey, l: &Lease) {
        if let LeaseKey::Prefix(p) = key {
            if self.prefix_lens[usize::from(p.len())].fetch_add(1, Ordering::Relaxed) == 0 {
                self.set_len_bit(p.len(), true);
            }
        }
        let mut e = self.by_client.entry(l.client.duid.clone()).or_default();
        let mut v = e.value().to_vec();
        v.push(key);
        *e.value_mut() = v.into_boxed_slice();
        drop(e);
        self.by_link
            .entry(l.client.link.address)
            .or_default()
            .insert(l.client.duid.clone());
    }

    fn unindex(&self, key: LeaseKey, l: &Lease) {
        if let LeaseKey::Prefix(p) = key {
            if self.prefix_lens[usize::from(p.len())].fetch_sub(1, Ordering::Relaxed) == 1 {
                self.set_len_bit(p.len(), false);
            }
        }
        let mut rest: Box<[LeaseKey]> = Box::new([]);
        self.by_client.remove_if_mut(&l.client.duid, |_, v| {
            *v = v.iter().copied().filter(|k| *k != key).collect();
            rest = v.clone();
            v.is_empty()
        });
        let link = l.client.link.address;
        let still_on_link = rest.iter().any(|k| {
            self.leases
                .get(k)
                .is_some_and(|s| s.key().lease().client.link.address == link)
        });
        if !still_on_link {
            self.by_link.remove_if_mut(&link, |_, v| {
                v.remove(&l.client.duid);
                v.is_empty()
            });
        }
    }

    /// The lease at `key`.
    pub fn get(&self, key: &LeaseKey) -> Option<Lease> {
        self.leases.get(key).map(|e| e.key().lease().clone())
    }

    /// Look at the lease at `key` without copying it (the shard stays read-locked during `f`,
    /// which must not call back into the store).
    pub fn with<R>(&self, key: &LeaseKey, f: impl FnOnce(&Lease) -> R) -> Option<R> {
        self.leases.get(key).map(|e| f(e.key().lease()))
    }

    /// The lease for an address: an IA_NA/IA_TA lease of exactly it, else the delegated prefix
    /// covering it (RFC 5007 §4.1.2.5 matches both the same way).
    pub fn lookup_address(&self, addr: Ipv6Addr) -> Option<(LeaseKey, Lease)> {
        self.lookup_with(addr, |k, l| (*k, l.clone()))
    }

    /// [`lookup_address`](Self::lookup_address) without copying: `f` sees the key and lease.
    pub fn lookup_with<R>(
        &self,
        addr: Ipv6Addr,
        f: impl FnOnce(&LeaseKey, &Lease) -> R,
    ) -> Option<R> {
        let k = LeaseKey::Address(addr);
        if let Some(e) = self.leases.get(&k) {
            return Some(f(&k, e.key().lease()));
        }
        self.covering_with(addr, |p, l| f(&LeaseKey::Prefix(p), l))
    }

    /// Whether any lease is known for `addr` (address or covering prefix), without cloning.
    pub fn knows(&self, addr: Ipv6Addr) -> bool {
        self.lookup_with(addr, |_, _| ()).is_some()
    }

    /// The longest delegated prefix covering `addr`: one hash probe per prefix length present.
    pub fn covering_prefix(&self, addr: Ipv6Addr) -> Option<(Ipv6Prefix, Lease)> {
        self.covering_with(addr, |p, l| (p, l.clone()))
    }

    fn covering_with<R>(
        &self,
        addr: Ipv6Addr,
        f: impl FnOnce(Ipv6Prefix, &Lease) -> R,
    ) -> Option<R> {
        for word in (0..3).rev() {
            let mut bits = self.len_mask[word].load(Ordering::Relaxed);
            while bits != 0 {
                let top = 63 - bits.leading_zeros();
                bits &= !(1u64 << top);
                let len = (word * 64) as u32 + top;
                let Ok(p) = Ipv6Prefix::new_truncating(addr, len as u8) else {
                    continue;
                };
                if let Some(e) = self.leases.get(&LeaseKey::Prefix(p)) {
                    return Some(f(p, e.key().lease()));
                }
            }
        }
        None
    }

    /// Every lease of a client DUID (all links).
    pub fn by_client(&self, duid: &[u8]) -> Vec<(LeaseKey, Lease)> {
        let keys = self
            .by_client
            .get(duid)
            .map(|v| v.clone())
            .unwrap_or_default();
        keys.into_iter()
            .filter_map(|k| self.get(&k).map(|l| (k, l)))
            .collect()
    }

    /// Every lease on a link (by relay link-address).
    pub fn by_link(&self, link: Ipv6Addr) -> Vec<(LeaseKey, Lease)> {
        let duids: Vec<Arc<[u8]>> = self
            .by_link
            .get(&link)
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default();
        let mut out: Vec<_> = duids
            .iter()
            .flat_map(|d| self.by_client(d))
            .filter(|(_, l)| l.client.link.address == link)
            .collect();
        out.sort_by_key(|e| e.0);
        out
    }

    /// A copy of every lease (for `show bindings`, snapshots and reconcile), sorted by key.
    pub fn all(&self) -> Vec<(LeaseKey, Lease)> {
        let mut v: Vec<_> = self
            .leases
            .iter()
            .map(|e| (e.key().0.0, e.key().lease().clone()))
            .collect();
        v.sort_by_key(|e| e.0);
        v
    }

    /// Visit every lease without collecting (each shard is read-locked while visited; `f` must
    /// not call back into the store).
    pub fn for_each(&self, mut f: impl FnMut(&LeaseKey, &Lease)) {
        for e in self.leases.iter() {
            f(&e.key().0.0, e.key().lease());
        }
    }
}

/// Shared handle type used across tasks.
pub type SharedStore = Arc<BindingStore>;
