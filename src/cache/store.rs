//! The binding store: concurrent indexes over the leases, and the one write path through the
//! merge rules.
//!
//! Readers (the snooper asking "do we know this source?", the control socket, snapshots) read
//! concurrently, each holding one shard read lock for the length of one probe. Writers are
//! serialised by one `std::sync::Mutex` held only inside the synchronous
//! [`BindingStore::apply`]/[`withdraw`](BindingStore::withdraw)/
//! [`expire_due`](BindingStore::expire_due) calls — never across an `.await` (every shard guard
//! also stays inside these small functions). Serialising writers is what makes the change stream
//! ordered per lease: changes come out in the order the writes were decided.
//!
//! Indexes:
//! - `leases`: the [`LeaseTable`] (see [`super::storage`] for why it is our own): addresses and prefixes
//!   alike by [`LeaseKey`], each lease at a stable [`SlotRef`]. An update replaces the lease in
//!   place under the shard's write lock, so readers never see the key missing.
//! - prefix lengths present, a count per length and a 129-bit mask: a covering-prefix lookup
//!   probes one hash per length present (typically 1–3), longest first — O(number of prefix
//!   lengths), never a scan.
//! - `by_client` (dashmap): DUID → the slots of its leases (two inline, as most clients hold an
//!   address and a prefix); `by_link` (dashmap): link-address → the slots of the leases on it. A
//!   slot may be reused after its lease is gone, so readers check what they find there against
//!   the DUID/link they asked for.
//!
//! All maps use the seeded word hasher of [`super::storage::hash`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use super::binding::{
    Change, ChangeKind, ClientInfo, Lease, LeaseKey, Observation, RouteView, Sweep, Timestamp,
    Withdrawal,
};
use super::expiry::ExpiryQueue;
use super::merge::{self, CltCheck, MergeConfig, MergeOutcome, Verdict};
use super::storage::{KeyHashBuilder, LeaseTable, SlotRef};
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
    /// Leases that changed hands (another client or link), by the source of the new data.
    moves: [AtomicU64; 4],
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

    /// Leases that moved to another client or link, by source label.
    pub fn moves(&self) -> Vec<(&'static str, u64)> {
        [
            super::Source::Snoop,
            super::Source::Leasequery,
            super::Source::Bulk,
            super::Source::StateFile,
        ]
        .iter()
        .map(|s| {
            (
                s.as_str(),
                self.moves[usize::from(s.to_u8())].load(Ordering::Relaxed),
            )
        })
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
    /// Rate limit of move log lines: (second, lines logged in it).
    move_log: (i64, u32),
}

/// The table slots of one client's leases: two inline (most clients hold one address and one
/// delegated prefix), any more in a spill vector. 16 bytes per client instead of a boxed list.
#[derive(Debug)]
struct ClientRefs {
    inline: [u32; 2],
    #[expect(
        clippy::box_collection,
        reason = "a thin 8-byte pointer: a Vec inline would make every client's entry 16 bytes bigger for the rare client with more than two leases"
    )]
    more: Option<Box<Vec<SlotRef>>>,
}

impl ClientRefs {
    /// An empty inline place (no slot number reaches it: slots stop far below 2^29 per shard).
    const NONE: u32 = u32::MAX;

    fn new() -> Self {
        ClientRefs {
            inline: [Self::NONE; 2],
            more: None,
        }
    }

    fn push(&mut self, r: SlotRef) {
        if let Some(x) = self.inline.iter_mut().find(|x| **x == Self::NONE) {
            *x = r.0;
        } else {
            self.more.get_or_insert_with(Box::default).push(r);
        }
    }

    fn remove(&mut self, r: SlotRef) {
        if let Some(x) = self.inline.iter_mut().find(|x| **x == r.0) {
            *x = Self::NONE;
        } else if let Some(m) = &mut self.more {
            m.retain(|x| *x != r);
            if m.is_empty() {
                self.more = None;
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.inline.iter().all(|x| *x == Self::NONE) && self.more.is_none()
    }

    fn to_vec(&self) -> Vec<SlotRef> {
        let mut v: Vec<SlotRef> = self
            .inline
            .iter()
            .filter(|x| **x != Self::NONE)
            .map(|x| SlotRef(*x))
            .collect();
        if let Some(m) = &self.more {
            v.extend(m.iter().copied());
        }
        v
    }
}

type Map<K, V> = DashMap<K, V, KeyHashBuilder>;

/// The concurrent binding cache.
#[derive(Debug)]
pub struct BindingStore {
    cfg: CacheConfig,
    leases: LeaseTable,
    prefix_lens: [AtomicU32; 129],
    /// Bit `len` set ⇔ some prefix of that length is held.
    len_mask: [AtomicU64; 3],
    by_client: Map<Arc<[u8]>, ClientRefs>,
    by_link: Map<Ipv6Addr, HashSet<SlotRef, KeyHashBuilder>>,
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
            leases: LeaseTable::default(),
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
        self.leases.len() == 0
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

    /// The end of a bulk query (merge rule R16): remove the server's leases in the query's
    /// scope that the query did not mention.
    pub fn sweep(&self, sw: &Sweep) -> Applied {
        let mut w = self.lock();
        let in_scope = match sw.link {
            Some(l) => self.by_link(l),
            None => self.all(),
        };
        let mut current = BTreeMap::new();
        let mut clients = Vec::new();
        for (k, l) in in_scope {
            if *l.server.duid == *sw.server_duid && !sw.mentioned.contains(&k) {
                clients.push(l.client.duid.clone());
                current.insert(k, l);
            }
        }
        clients.sort();
        clients.dedup();
        for d in clients {
            self.gather_client(&d, &mut current);
        }
        let out = merge::sweep(&current, sw);
        self.commit(&mut w, &current, out)
    }

    /// Remove every lease whose valid lifetime has run out by `now` (RFC 8987 G-8), at most
    /// `expiry_batch` deadlines per call.
    pub fn expire_due(&self, now: Timestamp) -> Applied {
        let mut w = self.lock();
        let due = w.expiry.pop_due(now, self.cfg.expiry_batch);
        let mut current = BTreeMap::new();
        for (_, r) in due {
            // Whatever lease sits in the slot now counts only if its own deadline has passed
            // (else the entry is stale: refreshed, or removed and the slot reused).
            let found = self
                .leases
                .at(r, |k, l| (l.valid_until <= now).then(|| (*k, l.clone())));
            if let Some(Some((key, l))) = found {
                let duid = l.client.duid.clone();
                current.insert(key, l);
                self.gather_client(&duid, &mut current);
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

    /// The leases now in slots `refs` that `keep` accepts (a slot may have been reused by another
    /// client's or link's lease since it was filed).
    fn leases_at(
        &self,
        refs: impl IntoIterator<Item = SlotRef>,
        keep: impl Fn(&Lease) -> bool,
    ) -> Vec<(LeaseKey, Lease)> {
        refs.into_iter()
            .filter_map(|r| {
                self.leases
                    .at(r, |k, l| keep(l).then(|| (*k, l.clone())))
                    .flatten()
            })
            .collect()
    }

    /// Every lease of `duid`.
    fn client_leases(&self, duid: &[u8]) -> Vec<(LeaseKey, Lease)> {
        let refs = self
            .by_client
            .get(duid)
            .map(|v| v.to_vec())
            .unwrap_or_default();
        self.leases_at(refs, |l| *l.client.duid == *duid)
    }

    fn gather_client(&self, duid: &[u8], into: &mut BTreeMap<LeaseKey, Lease>) {
        into.extend(self.client_leases(duid));
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

    /// A lease that changes hands is never silent: counted by source and logged (rate limited)
    /// with both clients, so a prefix moving between subscribers can be alerted on.
    fn note_move(&self, w: &mut WriterState, key: &LeaseKey, old: &Lease, new: &Lease) {
        let other_client = old.client.duid != new.client.duid;
        let other_link = old.client.link.address != new.client.link.address;
        if !(other_client || other_link) {
            return;
        }
        self.stats.moves[usize::from(new.source.to_u8())].fetch_add(1, Ordering::Relaxed);
        let sec = new.arrival.secs();
        if w.move_log.0 != sec {
            w.move_log = (sec, 0);
        }
        if w.move_log.1 >= 10 {
            return;
        }
        w.move_log.1 += 1;
        tracing::warn!(
            lease = %key,
            from_client = %hex::encode(&old.client.duid),
            to_client = %hex::encode(&new.client.duid),
            from_link = %old.client.link.address,
            to_link = %new.client.link.address,
            source = new.source.as_str(),
            server = %new.server.address,
            "lease changed hands"
        );
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
            if let (Some(old), Some(new)) = (current.get(k), v) {
                self.note_move(w, k, old, new);
            }
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
            let mut live = Vec::with_capacity(self.leases.len());
            self.leases
                .for_each(|r, _, l| live.push((l.valid_until, r)));
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
        let (old, new_client, r) = match new {
            Some(l) => {
                let deadline = l.valid_until;
                let client = l.client.clone();
                let (old, r) = self.leases.upsert(key, l);
                w.expiry.push(deadline, r);
                (old, Some(client), r)
            }
            None => match self.leases.remove(&key) {
                Some((old, r)) => (Some(old), None, r),
                None => return,
            },
        };
        let moved = match (&old, &new_client) {
            (Some(o), Some(n)) => {
                o.client.duid != n.duid || o.client.link.address != n.link.address
            }
            _ => true,
        };
        if !moved {
            return;
        }
        if let Some(o) = &old {
            self.unindex(key, r, &o.client);
        }
        if let Some(n) = &new_client {
            self.index(key, r, n);
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

    fn index(&self, key: LeaseKey, r: SlotRef, c: &ClientInfo) {
        if let LeaseKey::Prefix(p) = key {
            if self.prefix_lens[usize::from(p.len())].fetch_add(1, Ordering::Relaxed) == 0 {
                self.set_len_bit(p.len(), true);
            }
        }
        self.by_client
            .entry(c.duid.clone())
            .or_insert_with(ClientRefs::new)
            .push(r);
        self.by_link.entry(c.link.address).or_default().insert(r);
    }

    fn unindex(&self, key: LeaseKey, r: SlotRef, c: &ClientInfo) {
        if let LeaseKey::Prefix(p) = key {
            if self.prefix_lens[usize::from(p.len())].fetch_sub(1, Ordering::Relaxed) == 1 {
                self.set_len_bit(p.len(), false);
            }
        }
        self.by_client.remove_if_mut(&c.duid, |_, v| {
            v.remove(r);
            v.is_empty()
        });
        self.by_link.remove_if_mut(&c.link.address, |_, v| {
            v.remove(&r);
            v.is_empty()
        });
    }

    /// The lease at `key`.
    pub fn get(&self, key: &LeaseKey) -> Option<Lease> {
        self.leases.with(key, |l| l.clone())
    }

    /// Look at the lease at `key` without copying it (the shard stays read-locked during `f`,
    /// which must not call back into the store).
    pub fn with<R>(&self, key: &LeaseKey, f: impl FnOnce(&Lease) -> R) -> Option<R> {
        self.leases.with(key, f)
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
        match self.leases.try_with(&LeaseKey::Address(addr), f) {
            Ok(r) => Some(r),
            Err(f) => self.covering_with(addr, f),
        }
    }

    /// Whether any lease is known for `addr` (address or covering prefix), without cloning.
    pub fn knows(&self, addr: Ipv6Addr) -> bool {
        self.lookup_with(addr, |_, _| ()).is_some()
    }

    /// The longest delegated prefix covering `addr`: one hash probe per prefix length present.
    pub fn covering_prefix(&self, addr: Ipv6Addr) -> Option<(Ipv6Prefix, Lease)> {
        self.covering_with(addr, |k, l| (k.network(), l.clone()))
    }

    fn covering_with<R, F>(&self, addr: Ipv6Addr, mut f: F) -> Option<R>
    where
        F: FnOnce(&LeaseKey, &Lease) -> R,
    {
        for word in (0..3).rev() {
            let mut bits = self.len_mask[word].load(Ordering::Relaxed);
            while bits != 0 {
                let top = 63 - bits.leading_zeros();
                bits &= !(1u64 << top);
                let len = (word * 64) as u32 + top;
                let Ok(p) = Ipv6Prefix::new_truncating(addr, len as u8) else {
                    continue;
                };
                match self.leases.try_with(&LeaseKey::Prefix(p), f) {
                    Ok(r) => return Some(r),
                    Err(back) => f = back,
                }
            }
        }
        None
    }

    /// Every lease of a client DUID (all links).
    pub fn by_client(&self, duid: &[u8]) -> Vec<(LeaseKey, Lease)> {
        let mut v = self.client_leases(duid);
        v.sort_by_key(|e| e.0);
        v
    }

    /// Every lease on a link (by relay link-address).
    pub fn by_link(&self, link: Ipv6Addr) -> Vec<(LeaseKey, Lease)> {
        let refs: Vec<SlotRef> = self
            .by_link
            .get(&link)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        let mut out = self.leases_at(refs, |l| l.client.link.address == link);
        out.sort_by_key(|e| e.0);
        out
    }

    /// A copy of every lease (for `show bindings`, snapshots and reconcile), sorted by key.
    pub fn all(&self) -> Vec<(LeaseKey, Lease)> {
        let mut v = Vec::with_capacity(self.leases.len());
        self.leases.for_each(|_, k, l| v.push((*k, l.clone())));
        v.sort_by_key(|e| e.0);
        v
    }

    /// Visit every lease without collecting (each shard is read-locked while visited; `f` must
    /// not call back into the store).
    pub fn for_each(&self, mut f: impl FnMut(&LeaseKey, &Lease)) {
        self.leases.for_each(|_, k, l| f(k, l));
    }
}

/// Shared handle type used across tasks.
pub type SharedStore = Arc<BindingStore>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::binding::{IaType, ObservedLease, WithdrawReason, snooped};

    fn obs(client: u8, link: u16, keys: &[LeaseKey], at: i64) -> Observation {
        let leases = keys
            .iter()
            .map(|k| ObservedLease {
                key: *k,
                ia: IaType::Na,
                iaid: 1,
                preferred: 100,
                valid: 200,
            })
            .collect();
        snooped(
            vec![0, 3, 0, 1, client],
            Ipv6Addr::new(0x2001, 0xdb8, 0xfffe, 0, 0, 0, 0, link),
            leases,
            Timestamp::from_secs(at),
        )
    }

    fn addr(n: u16) -> LeaseKey {
        LeaseKey::Address(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, n))
    }

    /// Entries in by_client and by_link (slots filed), which `by_client()`/`by_link()` cannot
    /// show: they skip stale slots, so a leak would only show as memory.
    fn filed(s: &BindingStore) -> (usize, usize) {
        let c = s.by_client.iter().map(|e| e.value().to_vec().len()).sum();
        let l = s.by_link.iter().map(|e| e.value().len()).sum();
        (c, l)
    }

    #[test]
    fn secondary_indexes_file_each_lease_once_and_forget_it_when_it_goes() {
        let s = BindingStore::default();
        // 50 clients with 3 leases each (one spills past the two inline slots) on 5 links.
        for c in 0..50u8 {
            let keys: Vec<_> = (0..3).map(|i| addr(u16::from(c) * 3 + i + 1)).collect();
            s.apply(&obs(c, u16::from(c % 5) + 1, &keys, 1000));
        }
        assert_eq!(s.len(), 150);
        assert_eq!(filed(&s), (150, 150));
        // Every client moves to another link: each lease is re-filed, none twice.
        for c in 0..50u8 {
            let keys: Vec<_> = (0..3).map(|i| addr(u16::from(c) * 3 + i + 1)).collect();
            s.apply(&obs(c, u16::from(c % 5) + 2, &keys, 1001));
        }
        assert_eq!(filed(&s), (150, 150));
        assert_eq!(
            s.by_link(Ipv6Addr::new(0x2001, 0xdb8, 0xfffe, 0, 0, 0, 0, 1)),
            vec![]
        );
        // Half the leases released, the rest expire.
        let keys: Vec<_> = (1..=75).map(addr).collect();
        s.withdraw(&Withdrawal {
            keys,
            client_duid: None,
            reason: WithdrawReason::Operator,
            arrival: Timestamp::from_secs(1002),
        });
        assert_eq!(filed(&s), (75, 75));
        s.expire_due(Timestamp::from_secs(5000));
        assert!(s.is_empty());
        assert_eq!(filed(&s), (0, 0));
        assert_eq!(
            (s.by_client.len(), s.by_link.len()),
            (0, 0),
            "empty entries removed"
        );
    }
}
