//! The binding store: concurrent indexes over the leases, and the one write path through the
//! merge rules.
//!
//! Readers (the snooper asking "do we know this source?", the control socket, snapshots) read
//! concurrently, each holding one shard read lock for the length of one probe. Writers are
//! serialised by one `std::sync::Mutex` held only inside the synchronous
//! [`BindingStore::apply`]/[`withdraw`](BindingStore::withdraw)/
//! [`confirm`](BindingStore::confirm)/[`expire_due`](BindingStore::expire_due) calls — never across an `.await` (every shard guard
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
//! - address leases per /64, a count per hashed /64 ([`AddressNets`]): a lookup whose /64
//!   holds no address lease skips the exact-address probe (a source inside a delegated prefix:
//!   one probe instead of two).
//! - `by_client` (a [`ShardedMap`]: read-locked shards of incrementally growing maps): DUID →
//!   the slots of its leases (two inline, as most clients hold an address and a prefix);
//!   `by_link` (dashmap, one entry per link): link-address → the set of slots of the leases on
//!   it (an [`IncMap`]). Both grow a few buckets per write, never all at once on one REPLY
//!   (see `super::storage::incmap`). A slot may be reused after its lease is gone, so readers
//!   check what they find there against the DUID/link they asked for.
//! - `by_interface` (dashmap): local interface name → how many leases were learned through it,
//!   for the per-interface cap (merge R10). A count, not slots: the cap needs only the number,
//!   one entry per interface that holds a lease (so bounded by the host's interfaces), O(1) per
//!   write.
//!
//! - big clients (writer side, under the writer lock): a client holding more than
//!   [`BIG_CLIENT`] leases gets, per link, its leases in R11 recency order, its IA_NA addresses
//!   in order, and counts of its client records and prefix next hops. A merge about it then
//!   copies only what the rules can touch — the observation's keys, the newest leases and the
//!   smallest addresses down to the first the observation does not name — and the counts the
//!   caps need, instead of every lease: one client with 10 000 leases merges as fast as one with
//!   ten. R11 may rewrite every lease of the client on the link (a new relay peer, a new
//!   smallest address); the merge reports what it brought them to (`MergeOutcome::assigned`),
//!   and only if the counts show that some lease not copied differs is the merge done again
//!   with all of them (a change that touches every lease costs that anyway). R7 omission needs
//!   every lease of the server, so a complete answer copies the client whole. Small clients are
//!   copied whole as before: the index costs memory only where it saves time.
//!
//! - ownership (merge R17): for a key it does not hold, `apply` looks up the delegated prefix of
//!   another client covering it with the same per-length probes (`cover_of`), so an overlap is
//!   found without a scan; tombstones are looked up for every key, held or not. What the merge
//!   doubts comes back in [`Applied::doubts`] for the cache task to hand to the confirmer, and
//!   every move (holder, link or next hop) is counted by kind and logged.
//!
//! All maps use the seeded word hasher of [`super::storage::hash`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use smallvec::SmallVec;

use super::binding::{
    Change, ChangeKind, ClientInfo, Confirmation, Doubt, IaType, Lease, LeaseKey, Observation,
    RouteView, ServerId, Sweep, Timestamp, Withdrawal,
};
use super::expiry::ExpiryQueue;
use super::merge::{self, CltCheck, MergeConfig, MergeOutcome, MergeVerdict};
use super::storage::{IncMap, KeyHashBuilder, LeaseTable, Line, Probe, ShardedMap, SlotRef};
use crate::prefix::Ipv6Prefix;
use crate::wire::Duid;

// The writer's own maps (tombstones, big clients and their groups, the CLT log) are probed
// several times per `apply` with keys from the network: std's SipHash was most of a merge's
// CPU. The cache's seeded word hasher keeps them keyed per process, as the lease table is.
type HashMap<K, V> = std::collections::HashMap<K, V, KeyHashBuilder>;
type HashSet<K, S = KeyHashBuilder> = std::collections::HashSet<K, S>;

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

const VERDICTS: &[MergeVerdict] = MergeVerdict::ALL;

/// Warning lines of one kind logged per second of arrival time, at most.
const LOG_LINES_PER_SECOND: u32 = 10;

/// The rate limit of the move and cap warnings: `log` is (second, lines logged in it); counts
/// the line and says whether it may be logged.
fn log_line_allowed(log: &mut (i64, u32), sec: i64) -> bool {
    if log.0 != sec {
        *log = (sec, 0);
    }
    if log.1 >= LOG_LINES_PER_SECOND {
        return false;
    }
    log.1 += 1;
    true
}

fn verdict_index(v: MergeVerdict) -> usize {
    VERDICTS.iter().position(|x| *x == v).unwrap_or(0)
}

/// Counters the cache keeps; `metrics.rs` exports them with the `label()` labels.
#[derive(Debug, Default)]
pub struct CacheStats {
    verdicts: [AtomicU64; VERDICTS.len()],
    clt_unix_timestamp: AtomicU64,
    clt_exceeds_valid: AtomicU64,
    expired: AtomicU64,
    withdrawn: AtomicU64,
    observations: AtomicU64,
    tombstones_evicted: AtomicU64,
    /// Leases that changed hands (another client or link) or next hop, by the source of the new
    /// data and [`MoveKind`].
    moves: [[AtomicU64; MoveKind::ALL.len()]; 4],
}

crate::label::labels! {
    /// What a move changed (merge R17): the `kind` label of `lqagent_binding_moves_total`. One
    /// move counts once, under the first of these that changed.
    pub enum MoveKind {
        /// Another client (DUID) holds the lease now.
        Client => "client",
        /// The same client, on another link.
        Link => "link",
        /// The same client and link, another next hop (a prefix's route moves).
        NextHop => "next_hop",
    }
}

impl CacheStats {
    /// Leases handled, by merge verdict.
    pub fn verdicts(&self) -> Vec<(MergeVerdict, u64)> {
        VERDICTS
            .iter()
            .zip(self.verdicts.iter())
            .map(|(v, c)| (*v, c.load(Ordering::Relaxed)))
            .collect()
    }

    /// Leases that moved to another client, link or next hop: `(source, kind, count)` for every
    /// pair, zeros included.
    pub fn moves(&self) -> Vec<(super::Source, MoveKind, u64)> {
        [
            super::Source::Snoop,
            super::Source::Leasequery,
            super::Source::Bulk,
            super::Source::StateFile,
        ]
        .iter()
        .flat_map(|s| {
            MoveKind::ALL.iter().map(move |k| {
                (
                    *s,
                    *k,
                    self.moves[usize::from(s.to_u8())][*k as usize].load(Ordering::Relaxed),
                )
            })
        })
        .collect()
    }

    /// Moves of `kind`, all sources.
    pub fn moves_of(&self, kind: MoveKind) -> u64 {
        self.moves
            .iter()
            .map(|m| m[kind as usize].load(Ordering::Relaxed))
            .sum()
    }

    /// New bindings refused by a cap (merge R10), by `cap` label. The same counts as the
    /// `over_*_cap` verdicts, under the name an operator alerts on.
    pub fn cap_refused(&self) -> Vec<(super::merge::Cap, u64)> {
        VERDICTS
            .iter()
            .filter_map(|v| v.cap().map(|c| (c, self.verdict(*v))))
            .collect()
    }

    pub fn verdict(&self, v: MergeVerdict) -> u64 {
        self.verdicts[verdict_index(v)].load(Ordering::Relaxed)
    }

    /// CLT_TIME anomalies, by check.
    pub fn clt_anomalies(&self) -> Vec<(CltCheck, u64)> {
        vec![
            (
                CltCheck::UnixTimestamp,
                self.clt_unix_timestamp.load(Ordering::Relaxed),
            ),
            (
                CltCheck::ExceedsValid,
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

/// How many covering-prefix probes a lookup prefetches ahead (see
/// [`BindingStore::lookup_with`]): the longest lengths present, the ones probed first. Typically
/// one to three lengths are held at all; a cap, because the lengths come from the servers.
const EARLY_PROBES: usize = 3;

/// A client holding more leases than this gets the [`BigClient`] index (and loses it below half).
pub(crate) const BIG_CLIENT: usize = 16;

/// One lease in a big client's R11 recency order: client-last-transaction, server DUID, arrival,
/// then the key (the merge's key-ordered scan keeps the last of equals, i.e. the largest key).
#[derive(Debug, Clone)]
struct Rec {
    t: Timestamp,
    server: Arc<ServerId>,
    arrival: Timestamp,
    key: LeaseKey,
}

impl Rec {
    fn of(key: LeaseKey, l: &Lease) -> Rec {
        Rec {
            t: l.last_transaction,
            server: l.server.clone(),
            arrival: l.arrival,
            key,
        }
    }
}

impl Ord for Rec {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.t
            .cmp(&o.t)
            .then_with(|| self.server.duid.cmp(&o.server.duid))
            .then_with(|| self.arrival.cmp(&o.arrival))
            .then_with(|| self.key.cmp(&o.key))
    }
}

impl PartialOrd for Rec {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl PartialEq for Rec {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
    }
}

impl Eq for Rec {}

/// A big client's leases on one link, as merge R11 looks at them.
#[derive(Debug, Default)]
struct Group {
    len: usize,
    /// Leases keyed by a prefix (those R11 gives the link's next hop).
    prefixes: usize,
    recency: BTreeSet<Rec>,
    /// IA_NA addresses (R11's fallback next hop is the smallest).
    na: BTreeSet<Ipv6Addr>,
    /// How many leases carry each client record (by value).
    clients: HashMap<Arc<ClientInfo>, usize>,
    /// How many prefixes route via each next hop.
    hops: HashMap<Option<Ipv6Addr>, usize>,
}

/// The writer's index of one big client (see the module doc).
#[derive(Debug, Default)]
struct BigClient {
    /// Delegated prefixes (IA_PD) and addresses (IA_NA, IA_TA), all links: the caps' counts.
    prefixes: usize,
    addresses: usize,
    links: HashMap<Ipv6Addr, Group>,
}

impl BigClient {
    /// File (`on`) or unfile the lease `l` at `key`.
    fn file(&mut self, key: LeaseKey, l: &Lease, on: bool) {
        fn step<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: K, on: bool) {
            if on {
                *m.entry(k).or_default() += 1;
            } else if let Some(n) = m.get_mut(&k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&k);
                }
            }
        }
        let add = |n: &mut usize| *n = if on { *n + 1 } else { n.saturating_sub(1) };
        if l.ia == IaType::Pd {
            add(&mut self.prefixes);
        } else {
            add(&mut self.addresses);
        }
        let link = l.client.link.address;
        let g = self.links.entry(link).or_default();
        add(&mut g.len);
        if matches!(key, LeaseKey::Prefix(_)) {
            add(&mut g.prefixes);
            step(&mut g.hops, l.next_hop, on);
        }
        step(&mut g.clients, l.client.clone(), on);
        let rec = Rec::of(key, l);
        let na = match key {
            LeaseKey::Address(a) if l.ia == IaType::Na => Some(a),
            _ => None,
        };
        if on {
            g.recency.insert(rec);
            if let Some(a) = na {
                g.na.insert(a);
            }
        } else {
            g.recency.remove(&rec);
            if let Some(a) = na {
                g.na.remove(&a);
            }
            if g.len == 0 {
                self.links.remove(&link);
            }
        }
    }

    /// Whether every lease on `c`'s link carries the record `c` and, for prefixes, `hop`: then
    /// R11 bringing the link to (`c`, `hop`) changes none of those a merge did not copy.
    fn conforms(&self, c: &Arc<ClientInfo>, hop: Option<Ipv6Addr>) -> bool {
        let Some(g) = self.links.get(&c.link.address) else {
            return true;
        };
        g.clients.get(c) == Some(&g.len)
            && (g.prefixes == 0 || g.hops.get(&hop) == Some(&g.prefixes))
    }
}

/// The result of one write: the change stream entries and the raw writes (for the journal).
#[derive(Debug, Default)]
pub struct Applied {
    pub changes: Vec<Change>,
    pub writes: Vec<(LeaseKey, Option<Lease>)>,
    pub verdicts: Vec<(LeaseKey, MergeVerdict)>,
    /// Merge R17: what the input would have changed had it come from the holder; for the
    /// confirmer (the cache task hands them to its `DoubtSink`).
    pub doubts: Vec<Doubt>,
}

/// Merge R17 Overlap, the reverse: most hash probes spent looking for other clients' prefixes
/// inside one new prefix (`BindingStore::inner_of`): 1 024 covers a /56 over held /64s four
/// times over and costs well under a millisecond.
const INNER_PROBES: u64 = 1024;

/// The prefix lengths a store holds (bit `len` of a 192-bit mask; lengths stop at 128), in
/// order either way, read from one snapshot of the mask.
#[derive(Clone, Copy)]
struct PrefixLens([u64; 3]);

impl Iterator for PrefixLens {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let w = self.0.iter().position(|b| *b != 0)?;
        let low = self.0[w].trailing_zeros();
        self.0[w] &= self.0[w] - 1;
        u8::try_from(w as u32 * 64 + low).ok()
    }
}

impl DoubleEndedIterator for PrefixLens {
    fn next_back(&mut self) -> Option<u8> {
        let w = self.0.iter().rposition(|b| *b != 0)?;
        let top = 63 - self.0[w].leading_zeros();
        self.0[w] &= !(1u64 << top);
        u8::try_from(w as u32 * 64 + top).ok()
    }
}

/// Which /64s may hold an address lease: a count of the address leases held per /64, the /64s
/// hashed into [`ADDRESS_NETS`] buckets. A lookup whose /64 counts none skips the exact-address
/// probe (its shard lock pair, a fence, and its index line) and goes straight to the covering
/// prefixes: the common case for a source inside a delegated prefix, since servers hand out
/// IA_NA addresses from per-link /64s and delegated prefixes from other pools. Two /64s in one
/// bucket only make it answer "maybe" (probe as before), never "no" for a held address.
///
/// The counts follow the lease table's own membership (a key inserted or removed, in `put`),
/// not the secondary indexes: a lease that moves between clients is unindexed and indexed
/// again, and a count that dipped to zero on the way would hide a held address from a
/// concurrent lookup. Only the single writer (under the writer lock) changes them, so a plain
/// load and store suffice; a bucket at `u16::MAX` stays there (it counts more leases than it
/// can remember, so it must never reach zero again).
struct AddressNets(Box<[AtomicU16]>);

/// Buckets of [`AddressNets`]: 128 KiB, read-mostly (written only when an address lease comes
/// or goes), few enough to stay in a core's L2 beside the table's traffic, many enough that a
/// box with thousands of links leaves most buckets empty.
const ADDRESS_NETS: usize = 1 << 16;

impl AddressNets {
    fn new() -> Self {
        AddressNets((0..ADDRESS_NETS).map(|_| AtomicU16::new(0)).collect())
    }

    /// The bucket of `addr`'s /64 (Fibonacci hashing of its upper 64 bits; a network may choose
    /// its addresses, but a collision only costs the probe this skips).
    fn bucket(&self, addr: Ipv6Addr) -> &AtomicU16 {
        let net = (u128::from(addr) >> 64) as u64;
        let i = (net.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - ADDRESS_NETS.trailing_zeros()))
            as usize;
        &self.0[i & (ADDRESS_NETS - 1)]
    }

    /// Whether an address lease may be held in `addr`'s /64.
    #[inline]
    fn may_hold(&self, addr: Ipv6Addr) -> bool {
        self.bucket(addr).load(Ordering::Relaxed) != 0
    }

    /// An address lease came into (`true`) or left the table (writer only).
    fn count(&self, addr: Ipv6Addr, came: bool) {
        let b = self.bucket(addr);
        let n = b.load(Ordering::Relaxed);
        if n != u16::MAX {
            b.store(
                if came { n + 1 } else { n.saturating_sub(1) },
                Ordering::Relaxed,
            );
        }
    }
}

impl std::fmt::Debug for AddressNets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used = self.0.iter().filter(|b| b.load(Ordering::Relaxed) != 0);
        f.debug_struct("AddressNets")
            .field("buckets_used", &used.count())
            .finish()
    }
}

/// A tombstone's place: the key and the client (DUID) it belonged to.
type TombKey = (LeaseKey, Duid);

#[derive(Debug, Default)]
struct WriterState {
    expiry: ExpiryQueue,
    /// Servers already logged for a CLT_TIME anomaly (logged once per server DUID).
    clt_logged: HashSet<Duid>,
    /// R15, per key *and client*: a tombstone competes only with data about its own client
    /// (merge R17), so one client's evidence never displaces another's.
    tombstones: HashMap<TombKey, Lease>,
    /// (forget-at, key) in insertion order; entries whose tombstone was replaced are skipped.
    tomb_order: VecDeque<(Timestamp, TombKey)>,
    /// Merge R11: client records newer than the leases their clients still hold, by DUID (then
    /// link, usually one), forgotten a tombstone time after they were noted.
    records: HashMap<Duid, Vec<merge::Remembered>>,
    /// (forget-at, DUID) in insertion order, as `tomb_order`.
    record_order: VecDeque<(Timestamp, Duid)>,
    /// Rate limit of move log lines: (second, lines logged in it).
    move_log: (i64, u32),
    /// Rate limit of cap refusal log lines: (second, lines logged in it).
    cap_log: (i64, u32),
    /// The index of clients with more than `big_client` leases.
    big: HashMap<Duid, BigClient>,
    /// Leases the last `apply` copied for the merge (what a merge costs; tests read it).
    copied: usize,
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

    fn len(&self) -> usize {
        self.inline.iter().filter(|x| **x != Self::NONE).count()
            + self.more.as_ref().map_or(0, |m| m.len())
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
    /// Bit `len` set ⇔ some prefix of that length is held. Every lookup reads it: on a line of
    /// its own, since the counts above and the writer's state beside it change on every write.
    len_mask: Line<[AtomicU64; 3]>,
    /// Every lookup reads it: its pointer on a line of its own, as `len_mask`.
    address_nets: Line<AddressNets>,
    /// Both grow a few buckets per write (`IncMap`): as plain maps they doubled all at once,
    /// at the same client (every client has a DUID and a link entry), and stalled a reboot
    /// storm's REPLYs at 28 673 clients (`cargo bench --bench storm`).
    by_client: ShardedMap<Duid, ClientRefs>,
    by_link: Map<Ipv6Addr, IncMap<SlotRef, ()>>,
    by_interface: Map<Arc<str>, usize>,
    writer: Mutex<WriterState>,
    stats: CacheStats,
    /// [`BIG_CLIENT`]; tests set it to 0 or `usize::MAX` to compare both merge paths.
    big_client: usize,
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
            len_mask: Line(std::array::from_fn(|_| AtomicU64::new(0))),
            address_nets: Line(AddressNets::new()),
            by_client: ShardedMap::default(),
            by_link: DashMap::with_hasher(KeyHashBuilder::default()),
            by_interface: DashMap::with_hasher(KeyHashBuilder::default()),
            writer: Mutex::new(WriterState::default()),
            stats: CacheStats::default(),
            big_client: BIG_CLIENT,
        }
    }

    /// An empty store with room for `leases` leases of `clients` clients, so that filling it
    /// (a restart's [`restore_all`](Self::restore_all)) never rehashes a growing index: at a
    /// million leases each doubling re-placed every entry filed so far.
    pub fn with_capacity(cfg: CacheConfig, leases: usize, clients: usize) -> Self {
        let store = BindingStore {
            by_client: ShardedMap::with_capacity(clients),
            ..BindingStore::new(cfg)
        };
        store.leases.reserve(leases);
        store
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
        let mut covers = merge::Covers::new();
        // The observation's client, to find its tombstones (a shared copy, no allocation).
        let me: Option<Duid> = (!w.tombstones.is_empty()).then(|| obs.client_duid.clone());
        for l in &obs.leases {
            if let Some(v) = self.get(&l.key) {
                if *v.client.duid != *obs.client_duid || v.client.link.address != obs.link.address {
                    holders.push((v.client.duid.clone(), v.client.link.address));
                }
                current.insert(l.key, v);
            } else if let Some(c) = self
                .cover_of(l.key.network(), &obs.client_duid)
                .or_else(|| match l.key {
                    LeaseKey::Prefix(p) if l.valid != 0 => self.inner_of(p, &obs.client_duid),
                    _ => None,
                })
            {
                covers.insert(l.key, c);
            }
            // R15: held or not (a tombstone also stops a late answer moving the key back).
            if let Some(t) = me
                .as_ref()
                .and_then(|d| w.tombstones.get(&(l.key, d.clone())))
            {
                tombs.insert(l.key, t.clone());
            }
        }
        // R7 looks at every lease of the answering server: copy the clients whole.
        let whole = obs.complete && self.cfg.merge.believes_complete(&obs.server);
        // The keys as a set only for a big client's partial copy (rare: no allocation for the
        // rest, which is every snooped REPLY of an ordinary subscriber).
        let mut keys: Option<BTreeSet<LeaseKey>> = None;
        let mut partial = false;
        // Inline: the observation's client and the keys' holders, one or two.
        let mut gathered: SmallVec<[&[u8]; 4]> = SmallVec::new();
        let groups = std::iter::once((&obs.client_duid[..], obs.link.address))
            .chain(holders.iter().map(|(d, l)| (&d[..], *l)));
        for (duid, link) in groups {
            if !whole && w.big.contains_key(duid) {
                let keys = keys.get_or_insert_with(|| obs.leases.iter().map(|l| l.key).collect());
                self.gather_touchable(&w, duid, link, keys, &mut current);
                partial = true;
            } else if !gathered.contains(&duid) {
                self.gather_client(duid, &mut current);
                gathered.push(duid);
            }
        }
        let held = self.held(&w, obs, &current);
        let memory: Vec<merge::Remembered> = if w.records.is_empty() {
            Vec::new()
        } else {
            let mut m: Vec<merge::Remembered> = Vec::new();
            let duids =
                std::iter::once(&obs.client_duid[..]).chain(holders.iter().map(|(d, _)| &d[..]));
            for d in duids {
                for r in w.records.get(d).into_iter().flatten() {
                    if !m.contains(r) {
                        m.push(r.clone());
                    }
                }
            }
            m
        };
        let merge = |current: &BTreeMap<LeaseKey, Lease>| {
            merge::merge_held(
                current,
                &tombs,
                &memory,
                obs,
                &self.cfg.merge,
                held,
                &covers,
            )
        };
        let mut out = merge(&current);
        let conforms = |(c, hop): &(Arc<ClientInfo>, Option<Ipv6Addr>)| {
            w.big.get(&c.duid).is_none_or(|b| b.conforms(c, *hop))
        };
        if partial && !out.assigned.iter().all(conforms) {
            // R11 moves leases the merge did not see: merge again with them all.
            self.gather_client(&obs.client_duid, &mut current);
            for (d, _) in &holders {
                self.gather_client(d, &mut current);
            }
            out = merge(&current);
        }
        w.copied = current.len();
        self.stats.observations.fetch_add(1, Ordering::Relaxed);
        if let Some(check) = out.clt {
            self.note_clt(&mut w, obs, check);
        }
        self.note_refusals(&mut w, obs, &out.verdicts);
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

    /// A server's answer to a confirming leasequery that nobody holds `c.key` (merge R17):
    /// removes the key only while a lease of that server still holds it whose
    /// client-last-transaction is before the question; otherwise changes nothing.
    pub fn confirm(&self, c: &Confirmation) -> Applied {
        let mut w = self.lock();
        self.forget_tombstones(&mut w, c.arrival);
        let mut current = BTreeMap::new();
        if let Some(v) = self.get(&c.key) {
            let duid = v.client.duid.clone();
            current.insert(c.key, v);
            self.gather_client(&duid, &mut current);
        }
        let out = merge::confirm(&current, c);
        self.commit(&mut w, &current, out)
    }

    /// The end of a bulk query (merge rule R16): remove the server's leases in the query's
    /// scope that the query did not mention.
    pub fn sweep(&self, sw: &Sweep) -> Applied {
        let mut w = self.lock();
        // Only the leases the sweep may remove are copied: at the end of a recovery the query
        // mentioned nearly every lease in its scope, and copying (and sorting) the whole link
        // or store to find none held the cache task at the end of every bulk query.
        let mut current = BTreeMap::new();
        let mut clients = Vec::new();
        let mut consider = |k: &LeaseKey, l: &Lease| {
            if *l.server.duid == *sw.server_duid && !sw.mentioned.contains(k) {
                clients.push(l.client.duid.clone());
                current.insert(*k, l.clone());
            }
        };
        match sw.link {
            Some(link) => {
                let refs: Vec<SlotRef> = self
                    .by_link
                    .get(&link)
                    .map(|v| v.keys().copied().collect())
                    .unwrap_or_default();
                for r in refs {
                    // A slot may hold another link's lease by now.
                    self.leases.at(r, |k, l| {
                        if l.client.link.address == link {
                            consider(k, l);
                        }
                    });
                }
            }
            None => self.for_each(|k, l| consider(k, l)),
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
        // Each client copied once per pass (many of one client's leases may be due together).
        let mut gathered: HashSet<Duid> = HashSet::default();
        for (_, r) in due {
            // Whatever lease sits in the slot now counts only if its own deadline has passed
            // (else the entry is stale: refreshed, or removed and the slot reused).
            let found = self
                .leases
                .at(r, |k, l| (l.valid_until <= now).then(|| (*k, l.clone())));
            if let Some(Some((key, l))) = found {
                let duid = l.client.duid.clone();
                current.insert(key, l);
                if gathered.insert(duid.clone()) {
                    self.gather_client(&duid, &mut current);
                }
            }
        }
        let out = merge::expire(now, &current);
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

    /// Put back the leases loaded from the state file, all under one writer lock, skipping
    /// those expired by `now`; returns how many were put. [`restore`](Self::restore) per lease
    /// without what a start does not use: no change is built (the installer and the trigger
    /// take the loaded leases themselves) and no lease is looked up first.
    pub fn restore_all(
        &self,
        leases: impl IntoIterator<Item = (LeaseKey, Lease)>,
        now: Timestamp,
    ) -> usize {
        let mut w = self.lock();
        let mut n = 0;
        for (key, lease) in leases {
            if lease.valid_until > now {
                self.put(&mut w, key, Some(lease));
                n += 1;
            }
        }
        n
    }

    /// Drop tombstones whose time is up by `now`.
    fn forget_tombstones(&self, w: &mut WriterState, now: Timestamp) {
        while let Some((at, k)) = w.tomb_order.front().cloned() {
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
        let ttl = self.cfg.tombstone_ttl_ms;
        while let Some((at, d)) = w.record_order.front().cloned() {
            if at > now && w.record_order.len() <= 2 * self.cfg.max_tombstones {
                break;
            }
            w.record_order.pop_front();
            Self::forget_records(w, &d, |r| r.noted.plus_millis(ttl) <= at);
        }
    }

    /// Forget `duid`'s remembered records that `due` picks.
    fn forget_records(
        w: &mut WriterState,
        duid: &[u8],
        due: impl Fn(&merge::Remembered) -> bool,
    ) -> usize {
        let Some(list) = w.records.get_mut(duid) else {
            return 0;
        };
        let before = list.len();
        list.retain(|r| !due(r));
        let n = before - list.len();
        if list.is_empty() {
            w.records.remove(duid);
        }
        n
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
            .read(duid, ClientRefs::to_vec)
            .unwrap_or_default();
        self.leases_at(refs, |l| *l.client.duid == *duid)
    }

    fn gather_client(&self, duid: &[u8], into: &mut BTreeMap<LeaseKey, Lease>) {
        into.extend(self.client_leases(duid));
    }

    /// The leases of big client `duid` on `link` that a merge about `keys` can need besides the
    /// keys' own (see the module doc): the newest (R11's client record; after removals at
    /// `keys`, the newest left) and the smallest IA_NA addresses (R11's next hop), each down to
    /// the first that `keys` does not name.
    fn gather_touchable(
        &self,
        w: &WriterState,
        duid: &[u8],
        link: Ipv6Addr,
        keys: &BTreeSet<LeaseKey>,
        into: &mut BTreeMap<LeaseKey, Lease>,
    ) {
        let Some(g) = w.big.get(duid).and_then(|b| b.links.get(&link)) else {
            return;
        };
        let mut copy = |k: LeaseKey| {
            if let std::collections::btree_map::Entry::Vacant(e) = into.entry(k) {
                if let Some(l) = self.get(&k) {
                    e.insert(l);
                }
            }
            keys.contains(&k)
        };
        for r in g.recency.iter().rev() {
            if !copy(r.key) {
                break;
            }
        }
        for a in &g.na {
            if !copy(LeaseKey::Address(*a)) {
                break;
            }
        }
    }

    /// The counts the caps (merge R10) look at, before `obs` is merged: a big client's from its
    /// index, a small one's from `current` (which holds all its leases).
    fn held(
        &self,
        w: &WriterState,
        obs: &Observation,
        current: &BTreeMap<LeaseKey, Lease>,
    ) -> merge::Held {
        let mut h = merge::Held {
            link_bindings: self.by_link.get(&obs.link.address).map_or(0, |v| v.len()),
            interface_bindings: obs
                .link
                .interface
                .as_ref()
                .and_then(|i| self.by_interface.get(i).map(|n| *n))
                .unwrap_or(0),
            total: self.leases.len(),
            ..merge::Held::default()
        };
        if let Some(b) = w.big.get(&obs.client_duid[..]) {
            h.client_prefixes = b.prefixes;
            h.client_addresses = b.addresses;
            return h;
        }
        for l in current.values() {
            if *l.client.duid == *obs.client_duid {
                if l.ia == IaType::Pd {
                    h.client_prefixes += 1;
                } else {
                    h.client_addresses += 1;
                }
            }
        }
        h
    }

    /// A binding refused by a cap is never silent: counted (with the verdicts) and logged, at
    /// most 10 lines a second like admission refusals.
    fn note_refusals(
        &self,
        w: &mut WriterState,
        obs: &Observation,
        verdicts: &[(LeaseKey, MergeVerdict)],
    ) {
        for (key, v) in verdicts {
            let Some(cap) = v.cap() else {
                continue;
            };
            if !log_line_allowed(&mut w.cap_log, obs.arrival.secs()) {
                return;
            }
            tracing::warn!(
                lease = %key,
                cap = cap.label(),
                client = %hex::encode(&obs.client_duid),
                link = %obs.link.address,
                source = obs.source.label(),
                server = %obs.server.address,
                "new binding refused: cache cap reached (existing bindings are kept)"
            );
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
                anomaly = check.label(),
                "server sends a CLT_TIME that is not seconds since the last transaction; \
                 handled per cache::merge R13 (logged once per server)"
            );
        }
    }

    /// A lease that changes hands, link or next hop is never silent (merge R17): counted by
    /// source and kind and logged (rate limited) with both clients, links and next hops, so a
    /// prefix moving between subscribers, or its route moving, can be alerted on.
    fn note_move(&self, w: &mut WriterState, key: &LeaseKey, old: &Lease, new: &Lease) {
        let kind = if old.client.duid != new.client.duid {
            MoveKind::Client
        } else if old.client.link.address != new.client.link.address {
            MoveKind::Link
        } else if old.next_hop != new.next_hop {
            MoveKind::NextHop
        } else {
            return;
        };
        self.stats.moves[usize::from(new.source.to_u8())][kind as usize]
            .fetch_add(1, Ordering::Relaxed);
        if !log_line_allowed(&mut w.move_log, new.arrival.secs()) {
            return;
        }
        let hop = |h: Option<Ipv6Addr>| h.map_or_else(|| "-".to_string(), |a| a.to_string());
        let (from_hop, to_hop) = (hop(old.next_hop), hop(new.next_hop));
        if kind == MoveKind::NextHop {
            tracing::warn!(
                lease = %key,
                kind = kind.label(),
                client = %hex::encode(&new.client.duid),
                link = %new.client.link.address,
                from_next_hop = %from_hop,
                to_next_hop = %to_hop,
                source = new.source.label(),
                server = %new.server.address,
                "lease next hop moved"
            );
        } else {
            tracing::warn!(
                lease = %key,
                kind = kind.label(),
                from_client = %hex::encode(&old.client.duid),
                to_client = %hex::encode(&new.client.duid),
                from_link = %old.client.link.address,
                to_link = %new.client.link.address,
                from_next_hop = %from_hop,
                to_next_hop = %to_hop,
                source = new.source.label(),
                server = %new.server.address,
                "lease changed hands"
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
            if let (Some(old), Some(new)) = (current.get(k), v) {
                self.note_move(w, k, old, new);
            }
            self.put(w, *k, v.clone());
        }
        for (k, t) in out.tombstones {
            let forget_at = t.arrival.plus_millis(self.cfg.tombstone_ttl_ms);
            let tk = (k, t.client.duid.clone());
            w.tombstones.insert(tk.clone(), t);
            w.tomb_order.push_back((forget_at, tk));
        }
        for r in out.remembered {
            let forget_at = r.noted.plus_millis(self.cfg.tombstone_ttl_ms);
            let duid = r.client.duid.clone();
            let list = w.records.entry(duid.clone()).or_default();
            list.retain(|m| m.client.link.address != r.client.link.address);
            list.push(r);
            w.record_order.push_back((forget_at, duid));
        }
        if w.expiry.needs_rebuild(self.leases.len()) {
            // Refreshes leave stale deadlines behind; bound them (amortised: at most once per
            // `len` pushes).
            let mut live = Vec::with_capacity(self.leases.len());
            self.leases
                .for_each(|r, _, l| live.push((l.valid_until, r)));
            w.expiry.rebuild(live);
        }
        // Remembered records are removal evidence too: bounded the same way, counted the same.
        while w.records.len() > self.cfg.max_tombstones {
            let Some((_, d)) = w.record_order.pop_front() else {
                break;
            };
            let n = Self::forget_records(w, &d, |_| true);
            self.stats
                .tombstones_evicted
                .fetch_add(n as u64, Ordering::Relaxed);
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
            doubts: out.doubts,
        }
    }

    /// Write one key into every index.
    fn put(&self, w: &mut WriterState, key: LeaseKey, new: Option<Lease>) {
        let big_new = new
            .as_ref()
            .filter(|l| w.big.contains_key(&l.client.duid))
            .cloned();
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
        // Into or out of the table (a replacement is neither): the per-/64 address counts (see
        // `AddressNets`) and the per-length prefix counts follow the table, not the secondary
        // indexes, so a lease moving to another client or link never reads as absent to a
        // concurrent lookup between its unindex and index.
        if old.is_some() != new_client.is_some() {
            match key {
                LeaseKey::Address(a) => self.address_nets.0.count(a, new_client.is_some()),
                LeaseKey::Prefix(p) => self.count_len(p.len(), new_client.is_some()),
            }
        }
        if let Some(o) = &old {
            if let Some(b) = w.big.get_mut(&o.client.duid) {
                b.file(key, o, false);
            }
        }
        if let Some(n) = &big_new {
            if let Some(b) = w.big.get_mut(&n.client.duid) {
                b.file(key, n, true);
            }
        }
        let moved = match (&old, &new_client) {
            (Some(o), Some(n)) => {
                // The whole link: a lease that moves to another interface moves its count.
                o.client.duid != n.duid || o.client.link != n.link
            }
            _ => true,
        };
        if !moved {
            return;
        }
        if let Some(o) = &old {
            let n = self.unindex(r, &o.client);
            self.resize_big(w, &o.client.duid, n);
        }
        if let Some(c) = &new_client {
            let n = self.index(r, c);
            self.resize_big(w, &c.duid, n);
        }
    }

    /// Start the big-client index of `duid` past `big_client` leases, drop it below half that;
    /// `n`: the leases the by-client index files for it now (what `index`/`unindex` left).
    fn resize_big(&self, w: &mut WriterState, duid: &Duid, n: usize) {
        if w.big.contains_key(duid) {
            if n < self.big_client / 2 || n == 0 {
                w.big.remove(duid);
            }
        } else if n > self.big_client {
            let mut b = BigClient::default();
            for (k, l) in self.client_leases(duid) {
                b.file(k, &l, true);
            }
            w.big.insert(duid.clone(), b);
        }
    }

    fn set_len_bit(&self, len: u8, on: bool) {
        let (word, bit) = (usize::from(len / 64), 1u64 << (len % 64));
        if on {
            self.len_mask.0[word].fetch_or(bit, Ordering::Relaxed);
        } else {
            self.len_mask.0[word].fetch_and(!bit, Ordering::Relaxed);
        }
    }

    /// One prefix of length `len` more (`held`) or fewer in the table; the mask's bit follows
    /// whether any is held.
    fn count_len(&self, len: u8, held: bool) {
        let count = &self.prefix_lens[usize::from(len)];
        if held {
            if count.fetch_add(1, Ordering::Relaxed) == 0 {
                self.set_len_bit(len, true);
            }
        } else if count.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.set_len_bit(len, false);
        }
    }

    /// File slot `r` under its client, link and interface; returns how many slots the client
    /// has filed now (read under the same shard lock: no second lookup for [`Self::resize_big`]).
    fn index(&self, r: SlotRef, c: &ClientInfo) -> usize {
        let n = self.by_client.update(c.duid.clone(), ClientRefs::new, |v| {
            v.push(r);
            v.len()
        });
        self.by_link
            .entry(c.link.address)
            .or_default()
            .insert(r, ());
        if let Some(i) = &c.link.interface {
            *self.by_interface.entry(i.clone()).or_default() += 1;
        }
        n
    }

    /// Unfile slot `r` (as [`Self::index`] filed it); returns how many slots the client keeps.
    fn unindex(&self, r: SlotRef, c: &ClientInfo) -> usize {
        let n = self
            .by_client
            .remove_if_mut(&c.duid[..], |v| {
                v.remove(r);
                (v.is_empty(), v.len())
            })
            .unwrap_or(0);
        self.by_link.remove_if_mut(&c.link.address, |_, v| {
            v.remove(&r);
            v.is_empty()
        });
        if let Some(i) = &c.link.interface {
            self.by_interface.remove_if_mut(i, |_, n| {
                *n = n.saturating_sub(1);
                *n == 0
            });
        }
        n
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
    ///
    /// The address itself is probed only when its /64 may hold an address lease
    /// ([`AddressNets`]). Every key it may probe (the address, then the covering prefixes of the
    /// [`EARLY_PROBES`] longest lengths present) is hashed first and its index line prefetched,
    /// so that an address inside a delegated prefix costs one index miss's latency, not one per
    /// key: each probe's line no longer waits for the previous probe to have missed. An address
    /// lease found first wastes those prefetches (memory bandwidth, not latency).
    pub fn lookup_with<R>(
        &self,
        addr: Ipv6Addr,
        f: impl FnOnce(&LeaseKey, &Lease) -> R,
    ) -> Option<R> {
        let exact = LeaseKey::Address(addr);
        // No address lease in `addr`'s /64: straight to the covering prefixes.
        let first = self
            .address_nets
            .0
            .may_hold(addr)
            .then(|| self.leases.probe(&exact));
        // One read of the lengths for the prefetches and the probes alike, so each early probe
        // is used for the length it was made for.
        let lens = self.prefix_lens();
        let mut early: [Option<(LeaseKey, Probe)>; EARLY_PROBES] = [None; EARLY_PROBES];
        for (e, len) in early.iter_mut().zip(lens.rev()) {
            if let Ok(p) = Ipv6Prefix::new_truncating(addr, len) {
                let k = LeaseKey::Prefix(p);
                *e = Some((k, self.leases.probe(&k)));
            }
        }
        let mut f = match first {
            Some(first) => match self.leases.try_with_probe(&exact, first, f) {
                Ok(r) => return Some(r),
                Err(f) => f,
            },
            None => f,
        };
        for (i, len) in lens.rev().enumerate() {
            let (k, p) = match early.get(i) {
                Some(e) => match e {
                    Some(kp) => *kp,
                    None => continue,
                },
                None => {
                    let Ok(p) = Ipv6Prefix::new_truncating(addr, len) else {
                        continue;
                    };
                    let k = LeaseKey::Prefix(p);
                    (k, self.leases.probe(&k))
                }
            };
            match self.leases.try_with_probe(&k, p, f) {
                Ok(r) => return Some(r),
                Err(back) => f = back,
            }
        }
        None
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
        for len in self.prefix_lens().rev() {
            let Ok(p) = Ipv6Prefix::new_truncating(addr, len) else {
                continue;
            };
            match self.leases.try_with(&LeaseKey::Prefix(p), f) {
                Ok(r) => return Some(r),
                Err(back) => f = back,
            }
        }
        None
    }

    /// Merge R17 Overlap: the longest delegated prefix strictly containing `net` held by a DUID
    /// other than `not_duid` — one hash probe per prefix length present below `net`'s, never a
    /// scan.
    fn cover_of(&self, net: Ipv6Prefix, not_duid: &[u8]) -> Option<Lease> {
        self.prefix_lens()
            .rev()
            .filter(|len| *len < net.len())
            .filter_map(|len| Ipv6Prefix::new_truncating(net.addr(), len).ok())
            .find_map(|p| self.held_by_other(p, not_duid))
    }

    /// The lease at prefix `p` when a DUID other than `not_duid` holds it.
    fn held_by_other(&self, p: Ipv6Prefix, not_duid: &[u8]) -> Option<Lease> {
        self.leases
            .with(&LeaseKey::Prefix(p), |l| {
                (*l.client.duid != *not_duid).then(|| l.clone())
            })
            .flatten()
    }

    /// The lengths of the delegated prefixes held, shortest first (`rev()`: longest first).
    fn prefix_lens(&self) -> PrefixLens {
        PrefixLens(std::array::from_fn(|w| {
            self.len_mask.0[w].load(Ordering::Relaxed)
        }))
    }

    /// Merge R17 Overlap, the reverse: a delegated prefix held by a DUID other than `not_duid`
    /// strictly inside `net`. Bounded: for each prefix length present that is longer than `net`'s,
    /// every prefix of that length inside `net` is probed (one hash probe each) while the probes
    /// stay within [`INNER_PROBES`]; a length that would need more is not looked at (a /48
    /// claimed over held /56s costs 256 probes, over held /64s 65 536: not checked). Addresses
    /// (IA_NA, /128) inside `net` are not looked for: their count is unbounded and their own
    /// /128 routes keep their traffic by longest match whatever `net` routes to.
    fn inner_of(&self, net: Ipv6Prefix, not_duid: &[u8]) -> Option<Lease> {
        let mut budget = INNER_PROBES;
        for len in self.prefix_lens().filter(|len| *len > net.len()) {
            let extra = u32::from(len - net.len());
            if extra >= 32 || (1u64 << extra) > budget {
                continue;
            }
            let n = 1u64 << extra;
            budget -= n;
            let base = u128::from(net.addr());
            let found = (0..n)
                .map(|i| Ipv6Addr::from(base | (u128::from(i) << (128 - u32::from(len)))))
                .filter_map(|a| Ipv6Prefix::new(a, len).ok())
                .find_map(|p| self.held_by_other(p, not_duid));
            if found.is_some() {
                return found;
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
            .map(|v| v.keys().copied().collect())
            .unwrap_or_default();
        let mut out = self.leases_at(refs, |l| l.client.link.address == link);
        out.sort_by_key(|e| e.0);
        out
    }

    /// A copy of every lease (for `show bindings`, snapshots and reconcile), sorted by key.
    /// Keys are unique, so an unstable sort gives the one order, in place: the stable sort's
    /// buffer was a second copy of the store (100 MB at a million leases) on every snapshot,
    /// and the cache task waits for the copy.
    pub fn all(&self) -> Vec<(LeaseKey, Lease)> {
        let mut v = Vec::with_capacity(self.leases.len());
        self.leases.for_each(|_, k, l| v.push((*k, l.clone())));
        v.sort_unstable_by_key(|e| e.0);
        v
    }

    /// Visit every lease without collecting (each shard is read-locked while visited; `f` must
    /// not call back into the store).
    pub fn for_each(&self, mut f: impl FnMut(&LeaseKey, &Lease)) {
        self.leases.for_each(|_, k, l| f(k, l));
    }
}

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
        let mut c = 0;
        s.by_client.for_each(|_, v| c += v.len());
        let l = s.by_link.iter().map(|e| e.value().len()).sum();
        (c, l)
    }

    /// A delegated-prefix lease of `len` at `net` for client `client`.
    fn pd(client: u8, net: Ipv6Addr, len: u8) -> Observation {
        let mut o = obs(
            client,
            1,
            &[LeaseKey::Prefix(Ipv6Prefix::new(net, len).unwrap())],
            1000,
        );
        o.leases[0].ia = IaType::Pd;
        o
    }

    /// The lookup prefetches the probes of the three longest prefix lengths held and makes the
    /// rest as it goes: with four lengths held, an address whose only cover is of the shortest
    /// must still be found (through the late probe), each early probe must be used for its own
    /// length (a probe of one length used for another key misses), and the longest cover wins.
    #[test]
    fn lookups_find_covers_of_every_length_held_early_probed_or_not() {
        let s = BindingStore::default();
        let a = |w2: u16, w7: u16| Ipv6Addr::new(0x2001, 0xdb8, w2, 0, 0, 0, 0, w7);
        s.apply(&pd(1, a(0x10, 0), 48));
        s.apply(&pd(2, a(0x20, 0), 56));
        s.apply(&pd(3, a(0x30, 0), 60));
        s.apply(&pd(4, a(0x40, 0), 64));
        s.apply(&obs(5, 1, &[LeaseKey::Address(a(0x60, 7))], 1000));
        assert_eq!(s.len(), 5);
        assert_eq!(s.prefix_lens().rev().collect::<Vec<_>>(), [64, 60, 56, 48]);
        let found = |q: Ipv6Addr| s.lookup_address(q).map(|(k, _)| k);
        let net = |q: Ipv6Addr, len| {
            Some(LeaseKey::Prefix(
                Ipv6Prefix::new_truncating(q, len).unwrap(),
            ))
        };
        for (q, len) in [
            (a(0x10, 5), 48),
            (a(0x20, 5), 56),
            (a(0x30, 5), 60),
            (a(0x40, 5), 64),
        ] {
            assert_eq!(found(q), net(q, len), "{q}");
            assert!(s.knows(q));
            assert_eq!(s.covering_prefix(q).map(|(p, _)| p.len()), Some(len));
        }
        assert_eq!(found(a(0x60, 7)), Some(LeaseKey::Address(a(0x60, 7))));
        for q in [
            a(0x11, 5),
            Ipv6Addr::new(0x2001, 0xdb8, 0x20, 0x100, 0, 0, 0, 1),
            a(0x50, 1),
            Ipv6Addr::UNSPECIFIED,
        ] {
            assert_eq!(found(q), None, "{q}");
            assert!(!s.knows(q));
        }
    }

    /// The per-/64 address counts follow the lease table: two address leases come, are renewed,
    /// move to another link (unindexed and indexed again), one is withdrawn and the other
    /// expires, and the /64 counts 2, 2, 2, 1, 0. A source inside a delegated prefix whose /64
    /// holds no address skips the exact probe and finds the prefix; one whose /64 holds an
    /// address lease finds that address first, and the prefix once the address is gone.
    #[test]
    fn address_counts_per_64_follow_the_table_and_lookups_skip_empty_64s() {
        let s = BindingStore::default();
        let count = |k: LeaseKey| match k {
            LeaseKey::Address(a) => s.address_nets.0.bucket(a).load(Ordering::Relaxed),
            LeaseKey::Prefix(_) => unreachable!(),
        };
        assert!(
            !s.address_nets
                .0
                .may_hold(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1))
        );
        s.apply(&obs(1, 1, &[addr(1), addr(2)], 1000));
        assert_eq!(count(addr(1)), 2, "both in 2001:db8:1::/64");
        s.apply(&obs(1, 1, &[addr(1), addr(2)], 1001));
        assert_eq!(count(addr(1)), 2, "a renewal is no new member");
        let moved = s.stats().moves_of(MoveKind::Link);
        s.apply(&obs(1, 2, &[addr(1), addr(2)], 1002));
        assert_eq!(s.stats().moves_of(MoveKind::Link), moved + 2, "they moved");
        assert_eq!(count(addr(1)), 2, "a move is no new member");
        s.withdraw(&Withdrawal {
            link: None,
            iaids: Vec::new(),
            keys: vec![addr(1)],
            client_duid: None,
            reason: WithdrawReason::Operator,
            arrival: Timestamp::from_secs(1003),
        });
        assert_eq!(count(addr(1)), 1);
        s.expire_due(Timestamp::from_secs(5000));
        assert!(s.is_empty());
        assert_eq!(count(addr(1)), 0);
        assert!(
            !s.address_nets
                .0
                .may_hold(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2))
        );

        // A /56 delegated to a client, and an address of the same client in the /56's first
        // /64 (merge R17 refuses another client's address inside it).
        let net = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0);
        let na = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 5);
        let mut d = obs(2, 1, &[pfx(0), LeaseKey::Address(na)], 6000);
        d.leases[0].ia = IaType::Pd;
        s.apply(&d);
        assert_eq!(s.len(), 2);
        let found = |q: Ipv6Addr| s.lookup_address(q).map(|(k, _)| k);
        let elsewhere = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0x42, 0, 0, 0, 5);
        assert!(
            !s.address_nets.0.may_hold(elsewhere),
            "no address in its /64"
        );
        assert_eq!(found(elsewhere), Some(pfx(0)));
        assert!(s.knows(elsewhere));
        assert_eq!(found(na), Some(LeaseKey::Address(na)));
        assert_eq!(found(Ipv6Addr::from(u128::from(net) | 6)), Some(pfx(0)));
        s.withdraw(&Withdrawal {
            link: None,
            iaids: Vec::new(),
            keys: vec![LeaseKey::Address(na)],
            client_duid: None,
            reason: WithdrawReason::Operator,
            arrival: Timestamp::from_secs(6001),
        });
        assert_eq!(
            found(na),
            Some(pfx(0)),
            "the prefix, once the address is gone"
        );
        assert!(!s.knows(Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 5)));
    }

    /// Readers on two threads ask `knows`/`lookup_address` while a writer adds and removes
    /// hundreds of leases (every shard's index grows and shrinks through several resizes, so
    /// the prefetch hints change under the readers): a lease held throughout is always found,
    /// with its own key, an address never held is never found, and a churned one, when found,
    /// is found under its own key. The writer checks that its churn really happened.
    #[test]
    fn lookups_under_a_concurrent_writer_are_never_wrong() {
        use std::sync::atomic::AtomicBool;
        let s = BindingStore::default();
        let held = |n: u16| Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, n);
        let churned = |n: u16| Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, n);
        let inside = |n: u16| Ipv6Addr::new(0x2001, 0xdb8, 0x100 + n, 0x42, 0, 0, 0, 9);
        for c in 0..40u8 {
            s.apply(&obs(c, 1, &[LeaseKey::Address(held(u16::from(c)))], 1000));
            let mut o = obs(c, 1, &[pfx(u16::from(c))], 1000);
            o.leases[0].ia = IaType::Pd;
            s.apply(&o);
        }
        let stable = s.len();
        assert_eq!(stable, 80);
        // Each add and each removal newer than the last (R8 removes by the holder's own newer
        // REPLY; an equal time would lose to the tombstone of the previous removal).
        let churn = |n: u16, valid: u32, at: i64| {
            let mut o = snooped(
                vec![0, 3, 0, 2, (n >> 8) as u8, n as u8],
                Ipv6Addr::new(0x2001, 0xdb8, 0xfffe, 0, 0, 0, 0, 2),
                vec![ObservedLease {
                    key: LeaseKey::Address(churned(n)),
                    ia: IaType::Na,
                    iaid: 1,
                    preferred: valid,
                    valid,
                }],
                Timestamp::from_secs(at),
            );
            o.complete = false;
            o
        };
        // Alone in its /64, held throughout, moved from link to link by the writer: a lookup
        // must find it between the move's unindex and index too (the /64's count follows the
        // table, see `AddressNets`).
        let mover = Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 1);
        // The same for the only /60 held: the prefix lengths' counts follow the table too.
        let moving_prefix =
            Ipv6Prefix::new(Ipv6Addr::new(0x2001, 0xdb8, 4, 0x10, 0, 0, 0, 0), 60).expect("a /60");
        let in_moving_prefix = Ipv6Addr::new(0x2001, 0xdb8, 4, 0x1f, 0, 0, 0, 7);
        let move_to = |k: i64| {
            let mut o = obs(
                200,
                1 + (k % 2) as u16,
                &[LeaseKey::Address(mover), LeaseKey::Prefix(moving_prefix)],
                2000 + k,
            );
            o.leases[1].ia = IaType::Pd;
            o
        };
        s.apply(&move_to(0));
        let stable = stable + 2;
        let done = AtomicBool::new(false);
        let reads = std::thread::scope(|t| {
            let readers: Vec<_> = (0..2u16)
                .map(|r| {
                    let (s, done) = (&s, &done);
                    t.spawn(move || {
                        let mut reads = 0u64;
                        let mut n = r;
                        while !done.load(Ordering::Relaxed) || reads < 1000 {
                            // Room for the writer on a busy machine (std's lock prefers it, but
                            // it must get the CPU to take it).
                            std::thread::yield_now();
                            n = n.wrapping_add(1);
                            let h = held(n % 40);
                            assert_eq!(
                                s.lookup_address(h).map(|(k, _)| k),
                                Some(LeaseKey::Address(h))
                            );
                            assert_eq!(
                                s.lookup_address(inside(n % 40)).map(|(k, _)| k),
                                Some(pfx(n % 40))
                            );
                            assert!(!s.knows(held(100 + n % 4000)), "never held");
                            assert!(s.knows(mover), "held while it moves");
                            assert_eq!(
                                s.lookup_address(in_moving_prefix).map(|(k, _)| k),
                                Some(LeaseKey::Prefix(moving_prefix)),
                                "a prefix held while it moves"
                            );
                            let c = churned(n % 600);
                            if let Some((k, _)) = s.lookup_address(c) {
                                assert_eq!(k, LeaseKey::Address(c));
                            }
                            reads += 1;
                        }
                        reads
                    })
                })
                .collect();
            // The readers stop when the writer is done, also when its checks fail.
            struct Done<'a>(&'a AtomicBool);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let guard = Done(&done);
            let mut sizes = Vec::new();
            for round in 0..3i64 {
                for n in 0..600 {
                    s.apply(&churn(n, 200, 1001 + 2 * round));
                    s.apply(&move_to(1 + round * 600 + i64::from(n)));
                }
                sizes.push(s.len());
                for n in 0..600 {
                    s.apply(&churn(n, 0, 1002 + 2 * round));
                }
                sizes.push(s.len());
            }
            drop(guard);
            assert_eq!(
                sizes,
                [stable + 600, stable].repeat(3),
                "the churn came and went"
            );
            assert!(
                s.stats().moves_of(MoveKind::Link) >= 1800,
                "the mover moved"
            );
            readers.into_iter().map(|r| r.join().unwrap()).sum::<u64>()
        });
        assert!(reads >= 2000);
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
            link: None,
            iaids: Vec::new(),
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

    /// A restart's bulk restore files every lease as restoring them one by one does (lease
    /// table, by client, by link, expiry) and skips the expired ones.
    #[test]
    fn restore_all_fills_every_index_as_restore_does_and_skips_the_expired() {
        let src = BindingStore::default();
        for c in 0..40u8 {
            let keys: Vec<_> = (0..u16::from(c % 4) + 1)
                .map(|i| addr(u16::from(c) * 4 + i + 1))
                .collect();
            src.apply(&obs(c, u16::from(c % 3) + 1, &keys, 1000 + i64::from(c)));
        }
        let mut leases = src.all();
        let now = Timestamp::from_secs(1100);
        // One more that ran out before `now`.
        let mut gone = leases[0].1.clone();
        gone.valid_until = now;
        leases.push((addr(999), gone));
        let one_by_one = BindingStore::default();
        for (k, l) in leases.iter().cloned() {
            let _ = one_by_one.restore(k, l, now);
        }
        let bulk = BindingStore::with_capacity(CacheConfig::default(), leases.len(), 40);
        assert_eq!(
            bulk.restore_all(leases.iter().cloned(), now),
            leases.len() - 1
        );
        assert_eq!(bulk.all(), src.all());
        assert_eq!(bulk.all(), one_by_one.all());
        assert_eq!(filed(&bulk), filed(&one_by_one));
        assert_eq!(filed(&bulk), (src.len(), src.len()));
        for c in 0..40u8 {
            assert_eq!(
                bulk.by_client(&[0, 3, 0, 1, c]),
                src.by_client(&[0, 3, 0, 1, c])
            );
        }
        for l in 1..=3 {
            let link = Ipv6Addr::new(0x2001, 0xdb8, 0xfffe, 0, 0, 0, 0, l);
            assert_eq!(bulk.by_link(link), src.by_link(link));
        }
        assert_eq!(bulk.next_deadline(), one_by_one.next_deadline());
        assert!(bulk.next_deadline().is_some());
        assert!(bulk.knows(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1)));
        assert!(!bulk.knows(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 999)));
        // Expiry works on what was restored: everything goes at the end of its lifetime.
        bulk.expire_due(Timestamp::from_secs(100_000));
        assert!(bulk.is_empty());
        assert_eq!(filed(&bulk), (0, 0));
    }

    /// One row of the caps table: the cap under test set to 3, the others out of the way, and
    /// how the `i`th new binding looks (client, link, key) so that it counts against that cap.
    struct CapRow {
        verdict: MergeVerdict,
        label: &'static str,
        set: fn(&mut MergeConfig),
        nth: fn(u16) -> (u8, u16, LeaseKey, IaType),
    }

    fn pfx(n: u16) -> LeaseKey {
        LeaseKey::Prefix(
            Ipv6Prefix::new(Ipv6Addr::new(0x2001, 0xdb8, 0x100 + n, 0, 0, 0, 0, 0), 56).unwrap(),
        )
    }

    /// One lease learned through local interface `port1` (every link of the table sits on it).
    fn one(client: u8, link: u16, key: LeaseKey, ia: IaType, valid: u32, at: i64) -> Observation {
        let mut o = obs(client, link, &[key], at);
        o.leases[0].ia = ia;
        o.leases[0].valid = valid;
        o.link.interface = Some("port1".into());
        o
    }

    const CAP_ROWS: [CapRow; 5] = [
        CapRow {
            verdict: MergeVerdict::OverPrefixCap,
            label: "prefixes_per_client",
            set: |m| m.max_prefixes_per_client = 3,
            nth: |i| (1, 1, pfx(i), IaType::Pd),
        },
        CapRow {
            verdict: MergeVerdict::OverAddressCap,
            label: "addresses_per_client",
            set: |m| m.max_addresses_per_client = 3,
            nth: |i| (1, 1, addr(i + 1), IaType::Na),
        },
        CapRow {
            verdict: MergeVerdict::OverLinkCap,
            label: "bindings_per_link",
            set: |m| m.max_bindings_per_link = 3,
            nth: |i| (10 + i as u8, 1, addr(i + 1), IaType::Na),
        },
        CapRow {
            // Another client and another relay link each time: only the interface is shared,
            // as when an attacker on one port invents DUIDs.
            verdict: MergeVerdict::OverInterfaceCap,
            label: "bindings_per_interface",
            set: |m| m.max_bindings_per_interface = 3,
            nth: |i| (10 + i as u8, 1 + i, addr(i + 1), IaType::Na),
        },
        CapRow {
            verdict: MergeVerdict::OverTotalCap,
            label: "bindings",
            set: |m| m.max_bindings = 3,
            nth: |i| (10 + i as u8, 1 + i, addr(i + 1), IaType::Na),
        },
    ];

    /// RFC 8987 G-5..G-7 (merge R10): for every cap, below it a new binding is admitted; at it
    /// a new one is refused, counted and changes nothing, while the bindings held are refreshed
    /// and never evicted; a release frees room for the next new one.
    #[test]
    fn caps_refuse_new_bindings_keep_and_refresh_old_ones_release_frees_room() {
        for row in &CAP_ROWS {
            let mut cfg = CacheConfig::default();
            (row.set)(&mut cfg.merge);
            let s = BindingStore::new(cfg);
            let send = |i: u16, valid: u32, at: i64| {
                let (c, l, k, ia) = (row.nth)(i);
                (k, s.apply(&one(c, l, k, ia, valid, at)))
            };
            let name = row.label;
            // Up to the cap: the third (taken at cap − 1 = 2 held) is still admitted.
            for i in 0..3 {
                let (k, out) = send(i, 200, 1000);
                assert_eq!(out.verdicts, vec![(k, MergeVerdict::Added)], "{name}: #{i}");
            }
            // At the cap: refused, counted, nothing written, nothing to the route installer.
            let (k3, out) = send(3, 200, 1001);
            assert_eq!(out.verdicts, vec![(k3, row.verdict)], "{name}");
            assert!(out.changes.is_empty() && out.writes.is_empty(), "{name}");
            assert!(s.get(&k3).is_none(), "{name}");
            // An update of a binding held at the cap adds nothing: admitted.
            let (k0, out) = send(0, 900, 1002);
            assert_eq!(out.verdicts, vec![(k0, MergeVerdict::Updated)], "{name}");
            assert_eq!(out.changes.len(), 1, "{name}");
            assert_eq!(
                s.get(&k0).map(|l| l.valid_until),
                Some(Timestamp::from_secs(1902)),
                "{name}"
            );
            // Never an existing one evicted.
            for i in 0..3 {
                assert!(s.get(&(row.nth)(i).2).is_some(), "{name}: #{i} evicted");
            }
            assert_eq!(s.len(), 3, "{name}");
            // A release frees room: the refused one is admitted now.
            let (c1, _, k1, _) = (row.nth)(1);
            let out = s.withdraw(&Withdrawal {
                link: None,
                iaids: Vec::new(),
                keys: vec![k1],
                client_duid: Some(vec![0, 3, 0, 1, c1].into()),
                reason: WithdrawReason::Released,
                arrival: Timestamp::from_secs(1003),
            });
            assert_eq!(out.verdicts, vec![(k1, MergeVerdict::Removed)], "{name}");
            let (_, out) = send(3, 200, 1004);
            assert_eq!(out.verdicts, vec![(k3, MergeVerdict::Added)], "{name}");
            // And full again.
            let (k4, out) = send(4, 200, 1005);
            assert_eq!(out.verdicts, vec![(k4, row.verdict)], "{name}");
            let counted: Vec<_> = s.stats().cap_refused();
            for (cap, n) in counted {
                let want = if cap.label() == row.label { 2 } else { 0 };
                assert_eq!(n, want, "{name}: lqagent_cap_refused_total{{cap={cap:?}}}");
            }
            assert_eq!(s.stats().verdict(row.verdict), 2, "{name}");
        }
    }

    /// R10 per interface: with one port at its cap, a new DUID on it is refused while a
    /// neighbour on another port is admitted; a lease that moves to the other port takes its
    /// count with it (room frees on the first port), and the counts drop to nothing when the
    /// leases go (no entry kept per interface once empty).
    #[test]
    fn interface_cap_refuses_one_port_admits_its_neighbour_and_follows_moves() {
        let mut cfg = CacheConfig::default();
        cfg.merge.max_bindings_per_interface = 2;
        let s = BindingStore::new(cfg);
        let on = |port: &str, client: u8, link: u16, key: LeaseKey, at: i64| {
            let mut o = one(client, link, key, IaType::Na, 200, at);
            o.link.interface = Some(port.into());
            s.apply(&o).verdicts
        };
        assert_eq!(on("port1", 1, 1, addr(1), 1000)[0].1, MergeVerdict::Added);
        assert_eq!(on("port1", 2, 2, addr(2), 1000)[0].1, MergeVerdict::Added);
        // A third DUID on port1: refused, though its client and relay link are new.
        assert_eq!(
            on("port1", 3, 3, addr(3), 1001),
            vec![(addr(3), MergeVerdict::OverInterfaceCap)]
        );
        // A neighbour on port2 (same relay link as one on port1): admitted.
        assert_eq!(
            on("port2", 4, 1, addr(4), 1001),
            vec![(addr(4), MergeVerdict::Added)]
        );
        // Client 2 moves to port2: port1 has room again, port2 is now full.
        assert_eq!(on("port2", 2, 2, addr(2), 1002)[0].1, MergeVerdict::Updated);
        assert_eq!(
            on("port1", 3, 3, addr(3), 1003),
            vec![(addr(3), MergeVerdict::Added)]
        );
        assert_eq!(
            on("port2", 5, 5, addr(5), 1003),
            vec![(addr(5), MergeVerdict::OverInterfaceCap)]
        );
        let counts = |s: &BindingStore| {
            let mut v: Vec<_> = s
                .by_interface
                .iter()
                .map(|e| (e.key().to_string(), *e.value()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            counts(&s),
            vec![("port1".to_string(), 2), ("port2".to_string(), 2)]
        );
        assert_eq!(s.stats().verdict(MergeVerdict::OverInterfaceCap), 2);
        s.expire_due(Timestamp::from_secs(5000));
        assert_eq!(s.len(), 0);
        assert!(counts(&s).is_empty(), "{:?}", counts(&s));
    }

    /// R10 with R8: a release in the same answer counts first, so it frees room for a new lease
    /// in that answer; and a refusal makes a complete answer incomplete (R7 removes nothing).
    #[test]
    fn caps_count_after_the_answers_own_removals_and_a_refusal_disables_omission() {
        let mut cfg = CacheConfig::default();
        cfg.merge.max_addresses_per_client = 2;
        let server_addr = Ipv6Addr::LOCALHOST;
        cfg.merge.complete_servers = vec![server_addr];
        let s = BindingStore::new(cfg);
        let out = s.apply(&obs(1, 1, &[addr(1), addr(2)], 1000));
        assert_eq!(out.changes.len(), 2);
        // addr 1 released (valid 0) and addr 3 new in one answer: admitted.
        let mut o = obs(1, 1, &[addr(1), addr(2), addr(3)], 1001);
        o.leases[0].valid = 0;
        let out = s.apply(&o);
        assert!(
            out.verdicts.contains(&(addr(3), MergeVerdict::Added)),
            "{:?}",
            out.verdicts
        );
        // A complete answer omitting addr 2 whose new addr 4 and 5 pass the cap: 5 is refused,
        // so the answer is not complete and addr 2 stays.
        // A complete leasequery answer from server 1 for client 1.
        let complete = |keys: &[LeaseKey], at| {
            let mut o = obs(1, 1, keys, at);
            o.complete = true;
            o.source = super::super::Source::Leasequery;
            o.clt_time = Some(0);
            o
        };
        let out = s.apply(&complete(&[addr(3), addr(4), addr(5)], 1002));
        assert!(
            out.verdicts
                .contains(&(addr(4), MergeVerdict::OverAddressCap)),
            "{:?}",
            out.verdicts
        );
        assert!(
            s.get(&addr(2)).is_some(),
            "omission after a refusal removed a lease"
        );
        // The same complete answer within the cap does remove the omitted lease (R7 still works).
        let out = s.apply(&complete(&[addr(3)], 1003));
        assert!(
            out.verdicts
                .contains(&(addr(2), MergeVerdict::RemovedOmitted)),
            "{:?}",
            out.verdicts
        );
    }

    /// The big-client path (copy only what a merge can touch) decides exactly what copying every
    /// lease of the client decides: random observations, releases and expiry from three clients
    /// on two links, through stores that index clients from 0 and from 3 leases, against one
    /// that never does; every result and the whole cache compared after each step.
    #[test]
    fn big_client_merges_equal_whole_client_merges() {
        use crate::cache::binding::RelayData;
        let servers: Vec<Arc<ServerId>> = (1..=2u8)
            .map(|n| {
                Arc::new(ServerId {
                    duid: vec![0, 1, 0, 1, n].into(),
                    address: Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, u16::from(n)),
                })
            })
            .collect();
        let mut cfg = CacheConfig::default();
        cfg.merge.max_prefixes_per_client = 10;
        cfg.merge.max_addresses_per_client = 10;
        cfg.merge.complete_servers = vec![servers[0].address];
        for seed in 1..=4u64 {
            let stores: Vec<BindingStore> = [usize::MAX, 0, 3]
                .into_iter()
                .map(|n| {
                    let mut s = BindingStore::new(cfg.clone());
                    s.big_client = n;
                    s
                })
                .collect();
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut rnd = move |n: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % n
            };
            let mut at = 1000i64;
            for step in 0..2500 {
                at += rnd(3) as i64;
                let key = |r: u64| {
                    if r % 2 == 0 {
                        (addr(r as u16 / 2 + 1), IaType::Na)
                    } else {
                        (pfx(r as u16 / 2), IaType::Pd)
                    }
                };
                let results: Vec<Applied> = match rnd(10) {
                    0 => {
                        let (k, _) = key(rnd(28));
                        let w = Withdrawal {
                            link: None,
                            iaids: Vec::new(),
                            keys: vec![k],
                            client_duid: Some(vec![0, 3, 0, 1, rnd(3) as u8 + 1].into()),
                            reason: if rnd(4) == 0 {
                                WithdrawReason::Operator
                            } else {
                                WithdrawReason::Released
                            },
                            arrival: Timestamp::from_secs(at),
                        };
                        stores.iter().map(|s| s.withdraw(&w)).collect()
                    }
                    1 => {
                        let now = Timestamp::from_secs(at);
                        stores.iter().map(|s| s.expire_due(now)).collect()
                    }
                    _ => {
                        let n = rnd(3) + 1;
                        let mut o = obs(rnd(3) as u8 + 1, rnd(2) as u16 + 1, &[], at);
                        for _ in 0..n {
                            let (k, ia) = key(rnd(28));
                            if o.leases.iter().any(|l| l.key == k) {
                                continue;
                            }
                            o.leases.push(ObservedLease {
                                key: k,
                                ia,
                                iaid: 1,
                                preferred: 50,
                                valid: [0, 60, 3600][rnd(3) as usize],
                            });
                        }
                        o.server = servers[rnd(2) as usize].clone();
                        if rnd(2) == 0 {
                            o.source = crate::cache::Source::Leasequery;
                            o.clt_time = Some(rnd(5) as u32);
                            o.complete = rnd(3) == 0;
                        }
                        o.relay = match rnd(3) {
                            0 => None,
                            r => Some(RelayData {
                                peer_address: Some(Ipv6Addr::new(
                                    0xfe80, 0, 0, 0, 0, 0, 0, r as u16,
                                )),
                                ..RelayData::default()
                            }),
                        };
                        stores.iter().map(|s| s.apply(&o)).collect()
                    }
                };
                for (i, r) in results.iter().enumerate().skip(1) {
                    assert_eq!(
                        r.verdicts, results[0].verdicts,
                        "seed {seed} step {step} store {i}"
                    );
                    assert_eq!(
                        r.writes, results[0].writes,
                        "seed {seed} step {step} store {i}"
                    );
                    assert_eq!(
                        r.changes, results[0].changes,
                        "seed {seed} step {step} store {i}"
                    );
                    assert_eq!(
                        stores[i].all(),
                        stores[0].all(),
                        "seed {seed} step {step} store {i}"
                    );
                }
            }
            assert!(
                stores[0].len() > 10,
                "seed {seed}: the cache stayed nearly empty"
            );
        }
    }

    /// One merge about a client copies a bounded number of leases, however many the client
    /// holds (what made filling one client with n leases cost O(n²)).
    #[test]
    fn a_merge_copies_a_bounded_number_of_leases_however_many_the_client_holds() {
        let mut cfg = CacheConfig::default();
        cfg.merge.max_prefixes_per_client = 65_536;
        cfg.merge.max_addresses_per_client = 65_536;
        let s = BindingStore::new(cfg);
        let mut copied = Vec::new();
        // The client's IA_NA address first (the prefixes' next hop, R11), then prefixes.
        s.apply(&obs(1, 1, &[addr(1)], 1000));
        for i in 0..4000u16 {
            let mut o = obs(1, 1, &[], 1001 + i64::from(i));
            o.leases.push(ObservedLease {
                key: LeaseKey::Prefix(
                    Ipv6Prefix::new(Ipv6Addr::new(0x2001, 0xdb8, 0x8000 + i, 0, 0, 0, 0, 0), 64)
                        .unwrap(),
                ),
                ia: IaType::Pd,
                iaid: 2,
                preferred: 3000,
                valid: 3600,
            });
            let out = s.apply(&o);
            assert_eq!(out.changes.len(), 1, "#{i}: only the new prefix changes");
            assert_eq!(
                out.changes[0].new.as_ref().and_then(|v| v.next_hop),
                Some(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1))
            );
            copied.push(s.lock().copied);
        }
        assert_eq!(s.len(), 4001);
        let most = copied[100..].iter().max().copied().unwrap_or(0);
        assert!(
            most <= 3,
            "a merge copied {most} leases of a client holding thousands"
        );
        assert!(
            copied[4] >= 5,
            "small clients are copied whole ({})",
            copied[4]
        );
        // A refresh of one held prefix of the big client: still bounded.
        let mut o = obs(1, 1, &[], 9000);
        o.leases.push(ObservedLease {
            key: LeaseKey::Prefix(
                Ipv6Prefix::new(Ipv6Addr::new(0x2001, 0xdb8, 0x8007, 0, 0, 0, 0, 0), 64).unwrap(),
            ),
            ia: IaType::Pd,
            iaid: 2,
            preferred: 3000,
            valid: 7200,
        });
        assert_eq!(s.apply(&o).changes.len(), 1);
        assert!(s.lock().copied <= 3, "refresh copied {}", s.lock().copied);
        // A new relay peer moves every prefix (R11): all of them change, merged whole.
        let mut o = obs(1, 1, &[addr(1)], 9001);
        o.relay = Some(crate::cache::binding::RelayData {
            peer_address: Some(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 9)),
            ..Default::default()
        });
        assert_eq!(s.apply(&o).changes.len(), 4001);
    }

    /// Merge R11's remembered records (a client whose lease another client took) are bounded
    /// like tombstones: at most `max_tombstones` clients, the oldest forgotten first and counted,
    /// and all of them forgotten a tombstone time after they were noted.
    #[test]
    fn remembered_client_records_are_bounded_and_forgotten() {
        let s = BindingStore::new(CacheConfig {
            max_tombstones: 4,
            tombstone_ttl_ms: 60_000,
            ..Default::default()
        });
        for n in 1..=10u16 {
            let at = i64::from(n) * 2;
            s.apply(&obs(n as u8, 1, &[addr(n)], at));
            // Another client takes the address: client n holds nothing, its record is noted.
            s.apply(&obs(100 + n as u8, 1, &[addr(n)], at + 1));
            let w = s.lock();
            assert_eq!(w.records.len(), usize::from(n).min(4), "after client {n}");
            assert!(w.records.contains_key(&[0, 3, 0, 1, n as u8][..]));
        }
        assert_eq!(s.stats.tombstones_evicted(), 6);
        // A tombstone time later they are gone without pressure.
        s.apply(&obs(200, 1, &[addr(500)], 21 + 61));
        assert!(s.lock().records.is_empty());
    }

    /// The prefix lengths come out in order both ways, across the mask's words.
    #[test]
    fn prefix_lengths_in_order_either_way() {
        let mut m = [0u64; 3];
        for len in [0u8, 48, 56, 63, 64, 100, 127, 128] {
            m[usize::from(len / 64)] |= 1 << (len % 64);
        }
        let up: Vec<u8> = PrefixLens(m).collect();
        assert_eq!(up, vec![0, 48, 56, 63, 64, 100, 127, 128]);
        let down: Vec<u8> = PrefixLens(m).rev().collect();
        assert_eq!(down, vec![128, 127, 100, 64, 63, 56, 48, 0]);
    }
}
