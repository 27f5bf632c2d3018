//! The merge rules: one pure function from (current leases, one observation) to (new leases,
//! changes). No clock, no I/O, no maps shared with other threads — the store feeds it copies:
//! for a client with many leases only those the rules can touch (see `store.rs`, "big
//! clients"), with the counts the caps need ([`Held`]), so one merge does not cost more as the
//! client holds more.
//!
//! Rules (each has a named test in `tests/unit_like/merge_table.rs`; each names its RFC section, and
//! docs/interop.md says what deployed servers send):
//!
//! - **R1 disjoint → union** (RFC 5007 §4.3.4): leases with a key the cache does not hold are
//!   added; leases of the client that the answer does not mention stay, except under R7.
//! - **R2 overlapping, different servers → newest client-last-transaction wins** (RFC 5007
//!   §4.3.4). CLT_TIME becomes an absolute instant on our clock: `arrival − CLT_TIME`, and lifetimes
//!   count from arrival. LQ_BASE_TIME (RFC 7653) is the server's clock when it answered — what its
//!   CLT_TIME and lifetimes are relative to — so it is used only as the offset between the
//!   server's clock and ours (R13), never as an instant on ours: a server whose clock runs behind
//!   does not shorten lifetimes.
//! - **R3 tie between servers**: equal instants are broken by the larger server DUID (bytes), so the
//!   outcome does not depend on arrival order.
//! - **R4 same server with sequence numbers** (local extension after
//!   draft-ietf-dhc-dhcpv6-srsn-option): the larger number in RFC 1982 serial arithmetic wins, so a
//!   late-arriving older reply never overwrites a newer one.
//! - **R5 server restart**: a sequence number that looks older is only trusted inside
//!   [`MergeConfig::srsn_reorder_window_ms`] of the stored data's arrival. Replies reordered in the
//!   network arrive seconds apart; a server that restarted and reset its counter is believed again
//!   once the window has passed, so it cannot freeze a binding forever.
//! - **R6 same server without sequence numbers**: the newer client-last-transaction wins, ties
//!   by later arrival. (plain arrival order was the first proposal; the property test found that
//!   arrival order for one server plus CLT order across servers is not transitive — A beats B by
//!   CLT, B beats C by arrival, C beats A by CLT — so replays were not idempotent. One server's
//!   CLT only moves forward unless it lost its state, so for a sane server this equals arrival
//!   order, and the rules become one total order.)
//! - **R7 omission**: completeness is a fact about a server and a query, not an assumption. RFC
//!   5007 §4.1.2.2 says a CLIENT_DATA lists every lease of the client on that link, but deployed
//!   servers do not: asked by address, ISC dhcpd 4.4 and Kea 3 both return only the lease asked
//!   about (Kea: the address, or the one prefix containing it), and in bulk replies Kea 3 sends one
//!   CLIENT_DATA per lease. So an answer that omits a lease removes it only when the observation
//!   claims completeness (`Observation::complete`: a leasequery CLIENT_DATA) **and** the operator
//!   said the answering server means it ([`MergeConfig::complete_servers`], the per-server
//!   `complete_answers` key, off by default). Then a lease S reported before and now omits, for
//!   the same client and link, is gone — removed, if the answer is newer by R4–R6. A bulk
//!   LEASEQUERY-DATA never implies omission; the end of a whole bulk query may (R16).
//! - **R8 zero or past valid lifetime → removal**, subject to the same precedence as an update,
//!   and to R17: only the holder's own zero lifetime (or a server's answer about that key)
//!   removes; anyone else's is a doubt.
//! - **R9 snooped data competes by recency**: a snooped REPLY has no CLT_TIME; its
//!   client-last-transaction is its arrival time (the client just talked to the server).
//! - **R10 caps** (RFC 8987 G-5..G-7): a client holds at most
//!   [`MergeConfig::max_prefixes_per_client`] delegated prefixes and
//!   [`MergeConfig::max_addresses_per_client`] addresses (IA_NA and IA_TA), a link at most
//!   [`MergeConfig::max_bindings_per_link`] bindings, a local subscriber interface (the
//!   observation's `link.interface`, the access port) at most
//!   [`MergeConfig::max_bindings_per_interface`] — the per-client caps count per DUID and an
//!   attacker chooses DUIDs, the per-interface cap holds however many it invents — and the cache
//!   at most [`MergeConfig::max_bindings`]. A *new* binding (a key the cache does not hold) past
//!   a cap is refused and counted (`OverPrefixCap`, `OverAddressCap`, `OverLinkCap`,
//!   `OverInterfaceCap`, `OverTotalCap`, checked in that order); a binding already held is always refreshed and never evicted (first
//!   come, first kept: a misbehaving client cannot push out its own routes, nor grow the table).
//!   Counts are those after the observation's removals (R8 runs first), so a release in the same
//!   answer frees room. A refusal makes the answer incomplete: R7 then removes nothing, as for a
//!   lease refused by admission.
//! - **R11 next hop**: a prefix routes via the relay peer-address, else via the client's IA_NA
//!   address on that link (smallest, for determinism); when that changes, the prefix is `Updated`.
//!   The relay data comes from the newest data about the client on that link (by R2/R3's
//!   order), and every lease of the client on the link carries that one client record, so
//!   answers from several servers give the same next hop in any order. An answer changes the
//!   record when it won a lease, or when it is the newest word about the client and lost no lease
//!   to the client's own newer data: an answer that loses its lease to *another* client's newer
//!   data is still true about its own client (where it is). A late, older answer (R2/R4/R6)
//!   leaves the routes where they are. A record newer than every lease its client still holds
//!   (its lease was taken or removed) is kept with its recency in the store ([`Remembered`], for
//!   the tombstone time), so an older answer cannot move the next hop back.
//! - **R12 replay**: data equal to what is stored changes nothing and emits nothing.
//! - **R13 CLT_TIME sanity**: a CLT_TIME ≥ [`MergeConfig::clt_unix_threshold`] (default 10⁹ s ≈ 31
//!   years) cannot be an elapsed time; ISC dhcpd 4.4 sends its absolute Unix time there. It is taken
//!   as that absolute time on the server's clock: with LQ_BASE_TIME, `arrival − (base − CLT_TIME)`
//!   (the server's clock shifted to ours); without, as is (capped at arrival; ignored when
//!   more than [`MergeConfig::clock_skew_ms`] ahead of us), flagged `UnixTimestamp`. The same on every
//!   path — UDP, bulk, persisted. A CLT_TIME
//!   above every finite valid lifetime in the answer is flagged `ExceedsValid` but kept: servers
//!   that report *remaining* lifetimes (as Kea does) make it legitimate, and if it is nonsense it only
//!   makes that server's data look older — it can lose a conflict, never win one wrongly. Lifetime
//!   deadlines never depend on CLT_TIME, so neither case makes a binding look decades old.
//! - **R14 withdrawal**: a snooped RELEASE/DECLINE reply removes the named leases of its sender
//!   when R17 says the sender is their holder there, unless the stored lease's client-last-
//!   transaction is later than the release (the one clock of R2/R6: a release's transaction is
//!   its arrival, as for any snooped message; comparing the lease's *arrival* instead let an
//!   answer read after a release but made before it block the release). An operator `clear`
//!   (no client named) removes unconditionally.
//! - **R15 tombstones**: a removal by a binding's holder or by a server's word about the key
//!   (zero lifetime, omission, release, R16 sweep, a [`Confirmation`]) is remembered for a while
//!   (the store keeps one per key for `tombstone_ttl_ms`, bounded in number) and competes like
//!   the lease it removed — **only with data about the client it belonged to** (same DUID, any
//!   link, whether or not another client holds the key now) — so a late, older answer cannot
//!   resurrect a released lease, and one client's removal never out-ranks another client's data.
//!   A zero lifetime about a key nobody holds leaves a tombstone in the name of the client it was
//!   about; the store keeps tombstones per key and client, so a stranger's never displaces the
//!   holder's. A doubt (R17) leaves none in the holder's name (not even when it carries the
//!   holder's DUID from another link or IA); a zero lifetime doubted because another DUID holds
//!   the key is still remembered in the claimant's own name, where it only stops the claimant's
//!   own older data — which keeps replays and orderings of each client's data order-free. Expiry and operator `clear` leave none: fresh data may re-add.
//!   Order-independence (R2/R3) therefore holds for positive data and for each client's own
//!   removals; between clients, only a server's positive answers order them.
//! - **R16 end of a bulk query** (RFC 5460 §7.2/§7.3): a query by link-address, or by relay-id,
//!   that finished with LEASEQUERY-DONE has listed every binding server S holds in its scope (that
//!   link; every link of the relay). A lease of S in that scope that no message of the query
//!   mentioned, and whose data arrived before the query started, is gone: removed (`sweep`), with
//!   a tombstone (R15). Only S's leases: another server's silence says nothing about them, and
//!   data that arrived while the query ran is newer than the server's listing.
//! - **R17 ownership** (the rule of `docs/security.md`): a binding belongs to its holder — the
//!   client (DUID) that holds it, on the link it holds it on. It changes holder, link or next
//!   hop only by a server's *positive* assignment (a lease with a valid lifetime: a snooped
//!   REPLY, which the snooper admits only through this box's own relay level, or a leasequery
//!   or bulk answer), by the precedence of R2–R6; every such change is counted and logged as a
//!   move (the store). It is *removed* only by
//!   (a) its holder on its own link — same DUID, the stored link-address, and, when both the
//!   stored lease and the new data came from snooped REPLYs (so both IAIDs are real; leasequery
//!   data carries IAID 0 = unknown), the same IAID — through a zero valid lifetime in a reply to
//!   it (R8) or a RELEASE/DECLINE (R14);
//!   (b) a server's answer about that exact key: a leasequery answer whose
//!   [`Observation::query_address`] lies in the key, a [`Confirmation`], R7 omission and R16
//!   sweep (which speak about that server's own leases of that client or link);
//!   (c) its lifetime ending.
//!   Anything else that would change it is a **doubt** ([`MergeVerdict::Doubted`], a [`Doubt`]
//!   in the outcome): nothing is written and no tombstone is left in the holder's name (R15);
//!   the confirmer asks the
//!   server and its answer (an ordinary leasequery observation about the key, or a
//!   [`Confirmation`]) decides. Doubts: a zero lifetime about a key another client holds, or the
//!   holder on another link or IA (`ZeroLifetimeOtherClient`); a release naming a key another
//!   client (or IA) holds (`ReleaseOtherClient`); a release by the holder from another link
//!   (`ReleaseOtherLink`); a *new* key inside another client's held delegated prefix — a /64
//!   inside another DUID's /56, a /128 inside another's prefix — or the reverse, a new prefix
//!   with another DUID's delegated prefix inside it, a /48 over another's /56 (`Overlap`), unless
//!   the data is the server's answer about that key. (The store finds the reverse by probing
//!   the prefix lengths it holds, within a bound; addresses inside a new prefix are not looked
//!   for — their /128 routes keep their traffic by longest match.)
//!   A doubt is raised only for data that would otherwise have won (R2–R6): stale data loses as
//!   before and asks nothing.
//!   A [`Confirmation`] (the server says nobody holds the key) removes it only while it is
//!   still held, by a lease of that same server, whose client-last-transaction is before the
//!   question was asked: a refresh after the question is newer than the answer, and another
//!   server's silence says nothing about this one's lease (as R16).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::sync::Arc;

use smallvec::SmallVec;

use super::binding::{
    Change, ChangeKind, ClientInfo, Confirmation, Doubt, DoubtReason, IaType, Lease, LeaseKey,
    Observation, ObservedLease, RouteView, ServerId, Source, Sweep, Timestamp, WithdrawReason,
    Withdrawal,
};
use crate::wire::{Duid, INFINITE_LIFETIME};

/// R10: default cap on bindings per local subscriber interface: an eighth of the default
/// 2 000 000 routes, so one port (whatever DUIDs its clients invent) can take at most an eighth
/// of the table while a large CMTS MAC domain or BNG port (tens of thousands of subscribers,
/// each an address and a prefix or two) stays far below it.
pub const DEFAULT_MAX_BINDINGS_PER_INTERFACE: usize = 262_144;

/// Tunables of the merge rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeConfig {
    /// R5: how long after the stored data an apparently older sequence number is still believed.
    pub srsn_reorder_window_ms: i64,
    /// R10: RFC 8987 G-5 cap on delegated prefixes per client DUID (default 8).
    pub max_prefixes_per_client: usize,
    /// R10: cap on addresses (IA_NA, IA_TA) per client DUID (default 8).
    pub max_addresses_per_client: usize,
    /// R10: cap on bindings per link (relay link-address) (default 1 000 000).
    pub max_bindings_per_link: usize,
    /// R10: cap on bindings learned through one local interface (default
    /// [`DEFAULT_MAX_BINDINGS_PER_INTERFACE`]); observations without an interface are not
    /// counted against it.
    pub max_bindings_per_interface: usize,
    /// R10: cap on bindings in the whole cache (default 2 000 000, the installer's
    /// `max_routes`: a binding past it would get no route).
    pub max_bindings: usize,
    /// R13: CLT_TIME values at or above this are read as Unix timestamps.
    pub clt_unix_threshold: u32,
    /// R13: how far ahead of us a server clock may be before its absolute time is ignored.
    pub clock_skew_ms: i64,
    /// R7: addresses of the servers whose leasequery answers list every lease of the client on
    /// the link (`servers[].complete_answers`). Empty by default: silence removes nothing.
    pub complete_servers: Vec<Ipv6Addr>,
}

impl Default for MergeConfig {
    fn default() -> Self {
        MergeConfig {
            srsn_reorder_window_ms: 30_000,
            max_prefixes_per_client: 8,
            max_addresses_per_client: 8,
            max_bindings_per_link: 1_000_000,
            max_bindings_per_interface: DEFAULT_MAX_BINDINGS_PER_INTERFACE,
            max_bindings: 2_000_000,
            clt_unix_threshold: 1_000_000_000,
            clock_skew_ms: 300_000,
            complete_servers: Vec::new(),
        }
    }
}

impl MergeConfig {
    /// R7: whether an answer from `server` that claims completeness is believed.
    pub fn believes_complete(&self, server: &ServerId) -> bool {
        self.complete_servers.contains(&server.address)
    }
}

crate::label::labels! {
    /// What R13 concluded about an observation's CLT_TIME.
    pub enum CltCheck {
        Sane => "sane",
        /// No CLT_TIME: a snooped reply, recency = arrival (R9).
        Absent => "absent",
        UnixTimestamp => "unix_timestamp",
        ExceedsValid => "exceeds_valid",
    }
}

impl CltCheck {
    pub fn is_anomaly(self) -> bool {
        matches!(self, CltCheck::UnixTimestamp | CltCheck::ExceedsValid)
    }
}

crate::label::labels! {
    /// The fate of one lease the observation spoke about (or omitted).
    pub enum MergeVerdict {
        Added => "added",
        Updated => "updated",
        /// R12: equal to what is stored.
        Unchanged => "unchanged",
        /// R8: zero/past valid lifetime removed a stored lease.
        Removed => "removed",
        /// R8: zero/past valid lifetime about a lease we did not hold.
        AlreadyGone => "already_gone",
        /// R7: omitted from a complete answer of the server that held it.
        RemovedOmitted => "removed_omitted",
        /// R2: another server's data has a newer client-last-transaction.
        LostToNewerClt => "lost_to_newer_clt",
        /// R4: the same server's stored data has a newer sequence number.
        LostToNewerSrsn => "lost_to_newer_srsn",
        /// R6: the same server's stored data arrived later.
        LostToLaterArrival => "lost_to_later_arrival",
        /// R10: past the per-client prefix cap.
        OverPrefixCap => "over_prefix_cap",
        /// R10: past the per-client address cap.
        OverAddressCap => "over_address_cap",
        /// R10: past the per-link binding cap.
        OverLinkCap => "over_link_cap",
        /// R10: past the cap on bindings learned through one local interface.
        OverInterfaceCap => "over_interface_cap",
        /// R10: past the cap on bindings in the whole cache.
        OverTotalCap => "over_total_cap",
        /// R17: not from the binding's holder on its link, nor a server's answer about the key:
        /// nothing written, a [`Doubt`] raised.
        Doubted => "doubted",
    }
}

crate::label::labels! {
    /// R10: a cache cap, named as its setting is (the `cap` label of
    /// `lqagent_cap_refused_total`).
    pub enum Cap {
        PrefixesPerClient => "prefixes_per_client",
        AddressesPerClient => "addresses_per_client",
        BindingsPerLink => "bindings_per_link",
        BindingsPerInterface => "bindings_per_interface",
        Bindings => "bindings",
    }
}

impl MergeVerdict {
    /// R10: the cap that refused the lease.
    pub fn cap(self) -> Option<Cap> {
        match self {
            MergeVerdict::OverPrefixCap => Some(Cap::PrefixesPerClient),
            MergeVerdict::OverAddressCap => Some(Cap::AddressesPerClient),
            MergeVerdict::OverLinkCap => Some(Cap::BindingsPerLink),
            MergeVerdict::OverInterfaceCap => Some(Cap::BindingsPerInterface),
            MergeVerdict::OverTotalCap => Some(Cap::Bindings),
            _ => None,
        }
    }
}

/// What the cache holds around an observation before it is merged, for the caps (R10): the
/// store keeps these as counts, so a merge never has to look at every lease of a big client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Delegated prefixes of the observation's client DUID (all links).
    pub client_prefixes: usize,
    /// Addresses (IA_NA, IA_TA) of the observation's client DUID (all links).
    pub client_addresses: usize,
    /// Bindings on the observation's link.
    pub link_bindings: usize,
    /// Bindings learned through the observation's local interface (0 when it has none).
    pub interface_bindings: usize,
    /// Bindings in the cache.
    pub total: usize,
}

impl Held {
    /// The counts as far as `current` shows them (when `current` is all the cache holds).
    pub fn of(current: &BTreeMap<LeaseKey, Lease>, obs: &Observation) -> Held {
        let mut h = Held {
            total: current.len(),
            ..Held::default()
        };
        for l in current.values() {
            h.add(l, obs, 1);
        }
        h
    }

    /// Count `l` in (`sign` 1) or out (`sign` -1) of the totals of `obs`'s client and link.
    fn add(&mut self, l: &Lease, obs: &Observation, sign: isize) {
        let step = |n: &mut usize| *n = n.saturating_add_signed(sign);
        if *l.client.duid == *obs.client_duid {
            if l.ia == IaType::Pd {
                step(&mut self.client_prefixes);
            } else {
                step(&mut self.client_addresses);
            }
        }
        if l.client.link.address == obs.link.address {
            step(&mut self.link_bindings);
        }
        if obs.link.interface.is_some() && l.client.link.interface == obs.link.interface {
            step(&mut self.interface_bindings);
        }
    }

    /// The counts after `key` goes from `old` to `new`.
    fn replace(&mut self, old: Option<&Lease>, new: Option<&Lease>, obs: &Observation) {
        if let Some(o) = old {
            self.add(o, obs, -1);
            self.total = self.total.saturating_sub(1);
        }
        if let Some(n) = new {
            self.add(n, obs, 1);
            self.total = self.total.saturating_add(1);
        }
    }

    /// R10: the cap a new lease of type `ia` would pass, if any.
    fn over_cap(&self, ia: IaType, obs: &Observation, cfg: &MergeConfig) -> Option<MergeVerdict> {
        if ia == IaType::Pd && self.client_prefixes >= cfg.max_prefixes_per_client {
            Some(MergeVerdict::OverPrefixCap)
        } else if ia != IaType::Pd && self.client_addresses >= cfg.max_addresses_per_client {
            Some(MergeVerdict::OverAddressCap)
        } else if self.link_bindings >= cfg.max_bindings_per_link {
            Some(MergeVerdict::OverLinkCap)
        } else if obs.link.interface.is_some()
            && self.interface_bindings >= cfg.max_bindings_per_interface
        {
            Some(MergeVerdict::OverInterfaceCap)
        } else if self.total >= cfg.max_bindings {
            Some(MergeVerdict::OverTotalCap)
        } else {
            None
        }
    }
}

/// The result of one merge: what to write, what to tell the route installer, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// New state per key: `Some` = insert/replace, `None` = remove. In key order.
    pub writes: Vec<(LeaseKey, Option<Lease>)>,
    /// The change stream entries, one per written key, same order as `writes`.
    pub changes: Vec<Change>,
    pub verdicts: Vec<(LeaseKey, MergeVerdict)>,
    pub clt: Option<CltCheck>,
    /// R15: evidence of removals to remember for a while (key, the removing data).
    pub tombstones: Vec<(LeaseKey, Lease)>,
    /// R11: each (client record, prefix next hop) the client's leases on its link were brought
    /// to. A lease of that client and link that `current` did not hold was left alone, which is
    /// right only if it already carries both: the store checks that with its counts and merges
    /// again with all the client's leases when it does not.
    pub assigned: Vec<(Arc<ClientInfo>, Option<Ipv6Addr>)>,
    /// R17: what this input would have changed had it come from the binding's holder on its
    /// link; each is handed to the confirmer.
    pub doubts: Vec<Doubt>,
    /// R11: client records to remember with their recency (see [`Remembered`]).
    pub remembered: Vec<Remembered>,
}

/// R17 Overlap: for each key of an observation that the cache does not hold, a delegated prefix
/// of *another* client that strictly contains it, or else one strictly inside it (the store
/// finds them with its covering-prefix lookup and bounded probes; [`merge`] scans `current`).
pub type Covers = BTreeMap<LeaseKey, Lease>;

/// R17: whether `obs` speaks for the holder of `stored` about `ol`: same DUID, on the stored
/// link, and — when both came from snooped REPLYs, whose IAIDs are real — the same IAID.
fn from_holder(stored: &Lease, obs: &Observation, iaid: u32) -> bool {
    *stored.client.duid == *obs.client_duid
        && stored.client.link.address == obs.link.address
        && (stored.source != Source::Snoop || obs.source != Source::Snoop || stored.iaid == iaid)
}

/// R17 (b): whether `obs` is a server's answer to a leasequery about `ol`'s key.
fn about_key(obs: &Observation, ol: &ObservedLease) -> bool {
    obs.query_address
        .is_some_and(|a| ol.key.network().contains(a))
}

/// The doubt `reason` about `key`, held by `holder`, raised by `claimant` at `at`.
fn doubt(
    key: LeaseKey,
    reason: DoubtReason,
    holder: &Arc<ClientInfo>,
    claimant: Option<&Duid>,
    at: Timestamp,
) -> Doubt {
    Doubt {
        key,
        reason,
        holder: Some(holder.clone()),
        claimant: claimant.cloned(),
        link: holder.link.address,
        interface: holder.link.interface.clone(),
        at,
    }
}

/// R17 Overlap as far as `current` shows it: for each key of `obs` not in `current`, the
/// longest delegated prefix in `current` strictly containing it and held by another DUID, or
/// else one strictly inside it (for a new prefix with a lifetime).
pub fn covers_of(current: &BTreeMap<LeaseKey, Lease>, obs: &Observation) -> Covers {
    let mut out = Covers::new();
    for ol in &obs.leases {
        if current.contains_key(&ol.key) {
            continue;
        }
        let net = ol.key.network();
        let other = |l: &Lease| *l.client.duid != *obs.client_duid;
        let best = current
            .iter()
            .filter(|(k, l)| {
                let LeaseKey::Prefix(p) = k else { return false };
                p.len() < net.len() && p.covers(&net) && other(l)
            })
            .max_by_key(|(k, _)| k.network().len());
        // The reverse: another client's delegated prefix inside a new prefix (as the store
        // looks: prefixes only, and not for a zero lifetime, which adds nothing).
        let inner = || {
            current.iter().find(|(k, l)| {
                let LeaseKey::Prefix(p) = k else { return false };
                matches!(ol.key, LeaseKey::Prefix(_))
                    && ol.valid != 0
                    && net.len() < p.len()
                    && net.covers(p)
                    && other(l)
            })
        };
        if let Some((_, l)) = best.or_else(inner) {
            out.insert(ol.key, l.clone());
        }
    }
    out
}

/// RFC 1982 serial-number "newer or equal" for 32-bit counters.
pub(crate) fn serial_ge(a: u32, b: u32) -> bool {
    a == b || (a.wrapping_sub(b) as i32) > 0
}

/// The instant on our clock the observation's relative times (CLT_TIME, lifetimes) count from:
/// its arrival. LQ_BASE_TIME names the same instant on the server's clock (see R2, R13).
fn reference_time(obs: &Observation) -> Timestamp {
    obs.arrival
}

/// R9/R13: the absolute client-last-transaction instant and what we thought of CLT_TIME.
pub fn last_transaction(obs: &Observation, cfg: &MergeConfig) -> (Timestamp, CltCheck) {
    let reference = reference_time(obs);
    let Some(clt) = obs.clt_time else {
        return (reference, CltCheck::Absent);
    };
    if clt >= cfg.clt_unix_threshold {
        if let Some(base) = obs.base_time {
            // The server's clock says the client talked `base − clt` seconds before it answered.
            let ago = u32::try_from(i64::from(base) - i64::from(clt)).unwrap_or(0);
            return (reference.minus_secs(ago), CltCheck::UnixTimestamp);
        }
        let abs = Timestamp::from_secs(i64::from(clt));
        let t = if abs > obs.arrival.plus_millis(cfg.clock_skew_ms) {
            reference
        } else {
            abs.min(reference)
        };
        return (t, CltCheck::UnixTimestamp);
    }
    let max_valid = obs
        .leases
        .iter()
        .filter(|l| l.valid != 0)
        .map(|l| l.valid)
        .max();
    let check = match max_valid {
        Some(v) if v != INFINITE_LIFETIME && clt > v => CltCheck::ExceedsValid,
        _ => CltCheck::Sane,
    };
    (reference.minus_secs(clt), check)
}

/// Why the stored lease keeps its place, or `None` when the incoming data takes precedence.
fn precedence(stored: &Lease, incoming: &Lease, cfg: &MergeConfig) -> Option<MergeVerdict> {
    if stored.server.duid == incoming.server.duid {
        if let (Some(s), Some(i)) = (stored.srsn, incoming.srsn) {
            if s != i {
                let newer = serial_ge(i, s);
                let restarted = incoming.arrival.millis() - stored.arrival.millis()
                    > cfg.srsn_reorder_window_ms;
                return if newer || restarted {
                    None
                } else {
                    Some(MergeVerdict::LostToNewerSrsn)
                };
            }
        }
        return if total_order(incoming, stored) == Ordering::Less {
            Some(MergeVerdict::LostToLaterArrival)
        } else {
            None
        };
    }
    if total_order(incoming, stored) == Ordering::Less {
        Some(MergeVerdict::LostToNewerClt)
    } else {
        None
    }
}

/// R2/R3/R6: client-last-transaction, then server DUID, then arrival, then valid deadline.
/// One total order for every source without sequence numbers, so the rules are transitive:
/// answers commute and replays change nothing.
fn total_order(a: &Lease, b: &Lease) -> Ordering {
    a.last_transaction
        .cmp(&b.last_transaction)
        .then_with(|| a.server.duid.cmp(&b.server.duid))
        .then_with(|| a.arrival.cmp(&b.arrival))
        .then_with(|| a.valid_until.cmp(&b.valid_until))
}

/// R11: how recent a client record's data is, in R2/R3's order (client-last-transaction, server
/// DUID, arrival).
pub(crate) type Since = (Timestamp, Duid, Timestamp);

/// R11: a client record newer than every lease its client still holds on the link (the lease
/// it came with was taken by another client or removed), or held by a client with no lease
/// left. The store keeps these for the tombstone time and hands the merge those of the clients
/// it touches, so the record keeps its recency when its lease is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub client: Arc<ClientInfo>,
    pub since: Since,
    /// When it was noted (the observation's arrival): the store forgets it a tombstone time
    /// later.
    pub noted: Timestamp,
}

fn since_of(l: &Lease) -> Since {
    (l.last_transaction, l.server.duid.clone(), l.arrival)
}

/// [`Since`] borrowed, to compare without copying a server DUID per comparison (the merge runs
/// for every snooped reply).
fn recency(l: &Lease) -> (Timestamp, &[u8], Timestamp) {
    (l.last_transaction, &l.server.duid, l.arrival)
}

fn view(s: &Since) -> (Timestamp, &[u8], Timestamp) {
    (s.0, &s.1, s.2)
}

/// The record `duid` on `link` has now, with its recency: that of the newest lease it holds in
/// `current`, or the remembered one when that is newer and still the record its leases carry
/// (or it holds none).
fn stored_record(
    current: &BTreeMap<LeaseKey, Lease>,
    memory: &[Remembered],
    duid: &[u8],
    link: Ipv6Addr,
) -> Option<(Since, Arc<ClientInfo>)> {
    let held = current
        .values()
        .filter(|l| *l.client.duid == *duid && l.client.link.address == link)
        .max_by(|a, b| recency(a).cmp(&recency(b)))
        .map(|l| (since_of(l), l.client.clone()));
    let mem = memory
        .iter()
        .filter(|m| *m.client.duid == *duid && m.client.link.address == link)
        .find(|m| held.as_ref().is_none_or(|(_, c)| *c == m.client));
    match (held, mem) {
        (Some(h), Some(m)) if m.since <= h.0 => Some(h),
        (_, Some(m)) => Some((m.since.clone(), m.client.clone())),
        (h, None) => h,
    }
}

/// The client record for an observation: `client`, whether it is the observation's own word
/// (`adopted`: the observation is at least as new as what is stored), and its recency.
struct Record {
    client: Arc<ClientInfo>,
    adopted: bool,
    since: Since,
}

/// The client record for this observation, reusing a stored `Arc` when equal. Relay data (the
/// prefixes' next hop, R11) comes from the newest data about the client on that link — by
/// client-last-transaction, then server DUID, then arrival, as [`total_order`] — so answers from
/// several servers about one client give the same next hop in any order.
fn client_info(
    obs: &Observation,
    current: &BTreeMap<LeaseKey, Lease>,
    memory: &[Remembered],
    last_tx: Timestamp,
) -> Record {
    let stored = stored_record(current, memory, &obs.client_duid, obs.link.address);
    let obs_recency = (last_tx, &*obs.server.duid, obs.arrival);
    let adopted = stored.as_ref().is_none_or(|(s, _)| view(s) <= obs_recency);
    let stored_client = stored.as_ref().map(|(_, c)| c.clone());
    let stored_relay = stored_client.as_ref().and_then(|c| c.relay.clone());
    let relay = if adopted {
        obs.relay.clone().map(Box::new).or(stored_relay)
    } else {
        stored_relay.or_else(|| obs.relay.clone().map(Box::new))
    };
    let link = match (&obs.link.interface, &stored_client) {
        (None, Some(c)) => c.link.clone(),
        _ => obs.link.clone(),
    };
    let duid: Duid = match &stored_client {
        Some(c) => c.duid.clone(),
        None => obs.client_duid.clone(),
    };
    let fresh = ClientInfo { duid, link, relay };
    let client = match stored_client {
        Some(c) if *c == fresh => c,
        _ => Arc::new(fresh),
    };
    let since = match stored {
        Some((s, _)) if !adopted => s,
        _ => (last_tx, obs.server.duid.clone(), obs.arrival),
    };
    Record {
        client,
        adopted,
        since,
    }
}

/// R11 memory: `record` (of recency `since`) is to be remembered when its client holds no lease
/// on the link after the writes in `next`, or only older ones.
fn remember(
    next: &BTreeMap<LeaseKey, Option<Lease>>,
    current: &BTreeMap<LeaseKey, Lease>,
    record: &Arc<ClientInfo>,
    since: Since,
    noted: Timestamp,
    out: &mut Vec<Remembered>,
) {
    let newest_held = current
        .keys()
        .chain(next.keys())
        .filter_map(|k| state_of(next, current, k))
        .filter(|l| l.client.duid == record.duid && l.client.link.address == record.link.address)
        .map(recency)
        .max();
    if newest_held.is_none_or(|h| h < view(&since)) && !out.iter().any(|m| m.client == *record) {
        out.push(Remembered {
            client: record.clone(),
            since,
            noted,
        });
    }
}

/// Merge one observation into the leases it concerns, with `current` taken as all the cache
/// holds (the caps of R10 count in it).
///
/// `current` must hold every stored lease at the observation's keys and every stored lease of
/// the same client DUID, and of the clients holding those keys (all links): R7 and R11 look
/// at them. Leases not in `current` are treated as absent. `tombstones` holds the evidence of
/// recent removals at the observation's keys, held or not, in the name of the observation's
/// client (R15: others' are ignored).
pub fn merge(
    current: &BTreeMap<LeaseKey, Lease>,
    tombstones: &BTreeMap<LeaseKey, Lease>,
    obs: &Observation,
    cfg: &MergeConfig,
) -> MergeOutcome {
    let covers = covers_of(current, obs);
    merge_held(
        current,
        tombstones,
        &[],
        obs,
        cfg,
        Held::of(current, obs),
        &covers,
    )
}

/// [`merge`] with the counts of R10, the covering prefixes of R17 and the remembered client
/// records of R11 (those of the observation's client and of the keys' holders) given by the
/// caller (the store keeps the counts and the records and looks the prefixes up).
pub(crate) fn merge_held(
    current: &BTreeMap<LeaseKey, Lease>,
    tombstones: &BTreeMap<LeaseKey, Lease>,
    memory: &[Remembered],
    obs: &Observation,
    cfg: &MergeConfig,
    mut held: Held,
    covers: &Covers,
) -> MergeOutcome {
    let (last_tx, clt) = last_transaction(obs, cfg);
    let reference = reference_time(obs);
    let record = client_info(obs, current, memory, last_tx);
    let client = record.client.clone();
    // A lease lost to the client's own newer data: the answer is not the newest word about it.
    let mut lost_to_itself = false;
    let mut next: BTreeMap<LeaseKey, Option<Lease>> = BTreeMap::new();
    let mut verdicts = Vec::new();
    let mut tombs: Vec<(LeaseKey, Lease)> = Vec::new();
    let mut displaced: Vec<Arc<ClientInfo>> = Vec::new();
    let mut assigned = Vec::new();
    let mut doubts = Vec::new();

    // Removals first (R8, R7) so that prefixes given up free room under the cap (R10). Inline
    // storage: an exchange names a lease or two, and this runs for every snooped REPLY.
    let mut incoming: SmallVec<[&ObservedLease; 4]> = obs.leases.iter().collect();
    incoming.sort_by_key(|l| (l.valid != 0, l.key));
    for ol in incoming {
        let valid_until = reference.after_lifetime(ol.valid);
        let candidate = Lease {
            client: client.clone(),
            server: obs.server.clone(),
            ia: ol.ia,
            iaid: ol.iaid,
            preferred_until: reference.after_lifetime(ol.preferred.min(ol.valid)),
            valid_until,
            last_transaction: last_tx,
            arrival: obs.arrival,
            source: obs.source,
            srsn: obs.srsn,
            next_hop: None,
        };
        let stored = state_of(&next, current, &ol.key);
        let gone = ol.valid == 0 || valid_until <= obs.arrival;
        // R15: a tombstone competes only with data about the client it belonged to, also when
        // another client holds the key now (when the client itself holds it again, its stored
        // lease is the newer evidence to beat).
        let tomb = tombstones.get(&ol.key);
        let tomb_wins = tomb
            .filter(|t| t.client.duid == client.duid)
            .filter(|_| stored.is_none_or(|s| s.client.duid != client.duid))
            .and_then(|t| precedence(t, &candidate, cfg));
        let answer = about_key(obs, ol);
        let verdict = match (stored, tomb_wins) {
            (_, Some(lost)) => {
                lost_to_itself = true;
                lost
            }
            (Some(s), None) => match precedence(s, &candidate, cfg) {
                Some(lost) => {
                    lost_to_itself |= s.client.duid == client.duid
                        && s.client.link.address == client.link.address;
                    lost
                }
                // R17: only the holder on its link, or the server's answer about this key.
                None if gone && !(from_holder(s, obs, ol.iaid) || answer) => {
                    // Nothing in the holder's name. The claimant's own statement about itself
                    // (another DUID) is remembered against its own older data only, as for a
                    // key nobody holds: so the rules stay order-free for each client (R15).
                    if s.client.duid != client.duid {
                        tombs.push((ol.key, candidate));
                    }
                    doubts.push(doubt(
                        ol.key,
                        DoubtReason::ZeroLifetimeOtherClient,
                        &s.client,
                        Some(&obs.client_duid),
                        obs.arrival,
                    ));
                    MergeVerdict::Doubted
                }
                None if gone => {
                    if s.client.duid != client.duid {
                        displaced.push(s.client.clone());
                    }
                    held.replace(Some(s), None, obs);
                    // In the holder's name (R15): it competes with the holder's data.
                    let mut t = candidate;
                    t.client = s.client.clone();
                    next.insert(ol.key, None);
                    tombs.push((ol.key, t));
                    MergeVerdict::Removed
                }
                None => {
                    if s.client.duid != client.duid || s.client.link.address != client.link.address
                    {
                        displaced.push(s.client.clone());
                    }
                    held.replace(Some(s), Some(&candidate), obs);
                    next.insert(ol.key, Some(candidate));
                    MergeVerdict::Updated
                }
            },
            (None, None) if gone => {
                // In this client's name only (R15): another client's evidence stays as it is.
                tombs.push((ol.key, candidate));
                MergeVerdict::AlreadyGone
            }
            (None, None) => match covers.get(&ol.key).filter(|_| !answer) {
                Some(cover) => {
                    doubts.push(doubt(
                        ol.key,
                        DoubtReason::Overlap,
                        &cover.client,
                        Some(&obs.client_duid),
                        obs.arrival,
                    ));
                    MergeVerdict::Doubted
                }
                None => match held.over_cap(ol.ia, obs, cfg) {
                    Some(over) => over,
                    None => {
                        held.replace(None, Some(&candidate), obs);
                        next.insert(ol.key, Some(candidate));
                        MergeVerdict::Added
                    }
                },
            },
        };
        verdicts.push((ol.key, verdict));
    }

    // R10: an answer we did not take whole is not complete (like a lease refused by admission).
    let refused = verdicts.iter().any(|(_, v)| v.cap().is_some());
    if obs.complete && !refused && cfg.believes_complete(&obs.server) {
        let probe = Lease {
            client: client.clone(),
            server: obs.server.clone(),
            ia: IaType::Na,
            iaid: 0,
            preferred_until: reference,
            valid_until: reference,
            last_transaction: last_tx,
            arrival: obs.arrival,
            source: obs.source,
            srsn: obs.srsn,
            next_hop: None,
        };
        // Only a complete answer asks what it did not mention (a snooped REPLY never is): the
        // set is built here, not for every observation.
        let mentioned: std::collections::BTreeSet<LeaseKey> =
            obs.leases.iter().map(|l| l.key).collect();
        for (key, l) in current {
            let omitted = !mentioned.contains(key)
                && *l.client.duid == *obs.client_duid
                && l.client.link.address == obs.link.address
                && l.server.duid == obs.server.duid;
            if omitted && precedence(l, &probe, cfg).is_none() {
                next.insert(*key, None);
                verdicts.push((*key, MergeVerdict::RemovedOmitted));
                let mut t = probe.clone();
                t.ia = l.ia;
                t.iaid = l.iaid;
                tombs.push((*key, t));
            }
        }
    }

    // R11 for data that won somewhere, or that is the newest word about its client and lost
    // nothing to the client's own newer data: a late, older answer (R2/R4/R6) must not move the
    // client's prefixes to the relay peer-address it remembered.
    let won = verdicts.iter().any(|(_, v)| {
        matches!(
            v,
            MergeVerdict::Added
                | MergeVerdict::Updated
                | MergeVerdict::Removed
                | MergeVerdict::RemovedOmitted
        )
    });
    let mut remembered = Vec::new();
    if won || (record.adopted && !lost_to_itself) {
        assign_next_hops(&mut next, current, &client, &mut assigned);
        remember(
            &next,
            current,
            &client,
            record.since,
            obs.arrival,
            &mut remembered,
        );
    }
    for c in displaced {
        // Its record keeps the recency it had, also when the lease that carried it went.
        let before = stored_record(current, memory, &c.duid, c.link.address);
        reassign_next_hops(&mut next, current, &c, &mut assigned);
        if let Some((since, rec)) = before {
            remember(&next, current, &rec, since, obs.arrival, &mut remembered);
        }
    }
    let mut out = finish(current, next, verdicts, Some(clt));
    out.tombstones = tombs;
    out.assigned = assigned;
    out.doubts = doubts;
    out.remembered = remembered;
    out
}

/// The lease at `key` as it stands after the writes decided so far.
fn state_of<'a>(
    next: &'a BTreeMap<LeaseKey, Option<Lease>>,
    current: &'a BTreeMap<LeaseKey, Lease>,
    key: &LeaseKey,
) -> Option<&'a Lease> {
    match next.get(key) {
        Some(v) => v.as_ref(),
        None => current.get(key),
    }
}

/// R11: recompute the next hop of the client's prefixes on this link.
fn assign_next_hops(
    next: &mut BTreeMap<LeaseKey, Option<Lease>>,
    current: &BTreeMap<LeaseKey, Lease>,
    client: &Arc<ClientInfo>,
    assigned: &mut Vec<(Arc<ClientInfo>, Option<Ipv6Addr>)>,
) {
    let on_link =
        |l: &Lease| l.client.duid == client.duid && l.client.link.address == client.link.address;
    // Inline storage: a client holds a few leases, and this runs for every merge that wins.
    let keys: SmallVec<[LeaseKey; 8]> = current.keys().chain(next.keys()).copied().collect();
    let mut na: Option<Ipv6Addr> = None;
    for k in &keys {
        if let (LeaseKey::Address(a), Some(l)) = (k, state_of(next, current, k)) {
            if l.ia == IaType::Na && on_link(l) {
                na = Some(na.map_or(*a, |b| b.min(*a)));
            }
        }
    }
    let peer = client
        .relay
        .as_ref()
        .and_then(|r| r.peer_address)
        .filter(|p| !p.is_unspecified());
    let hop = peer.or(na);
    assigned.push((client.clone(), hop));
    for k in keys {
        let Some(l) = state_of(next, current, &k) else {
            continue;
        };
        if !on_link(l) {
            continue;
        }
        // Every lease of the client on the link carries the same (newest) client record, so a
        // replay of older data finds nothing to change; prefixes also get the next hop.
        let want_hop = match k {
            LeaseKey::Prefix(_) => hop,
            LeaseKey::Address(_) => l.next_hop,
        };
        let same_client = Arc::ptr_eq(&l.client, client) || *l.client == **client;
        if l.next_hop == want_hop && same_client {
            continue;
        }
        let mut updated = l.clone();
        updated.next_hop = want_hop;
        updated.client = client.clone();
        next.insert(k, Some(updated));
    }
}

/// R11 after some of `c`'s leases went (removed, or taken by another client): the relay data of
/// the newest lease the client still holds on that link decides — not the record the removed
/// lease carried, which may be older.
fn reassign_next_hops(
    next: &mut BTreeMap<LeaseKey, Option<Lease>>,
    current: &BTreeMap<LeaseKey, Lease>,
    c: &Arc<ClientInfo>,
    assigned: &mut Vec<(Arc<ClientInfo>, Option<Ipv6Addr>)>,
) {
    // Inline storage: a client holds a few leases, and this runs for every merge that wins.
    let keys: SmallVec<[LeaseKey; 8]> = current.keys().chain(next.keys()).copied().collect();
    let newest = keys
        .iter()
        .filter_map(|k| state_of(next, current, k))
        .filter(|l| l.client.duid == c.duid && l.client.link.address == c.link.address)
        .max_by_key(|l| (l.last_transaction, l.server.duid.clone(), l.arrival))
        .map(|l| l.client.clone());
    if let Some(client) = newest {
        assign_next_hops(next, current, &client, assigned);
    }
}

/// Turn the decided writes into `writes` + `changes`, dropping no-ops (R12).
fn finish(
    current: &BTreeMap<LeaseKey, Lease>,
    next: BTreeMap<LeaseKey, Option<Lease>>,
    mut verdicts: Vec<(LeaseKey, MergeVerdict)>,
    clt: Option<CltCheck>,
) -> MergeOutcome {
    let mut out = MergeOutcome {
        clt,
        ..MergeOutcome::default()
    };
    for (key, new) in next {
        let old = current.get(&key);
        if old == new.as_ref() {
            for v in verdicts.iter_mut().filter(|(k, _)| *k == key) {
                if v.1 == MergeVerdict::Updated {
                    v.1 = MergeVerdict::Unchanged;
                }
            }
            continue;
        }
        let kind = match (old, &new) {
            (None, Some(_)) => ChangeKind::Added,
            (Some(_), Some(_)) => ChangeKind::Updated,
            (Some(_), None) => ChangeKind::Removed,
            (None, None) => continue,
        };
        out.changes.push(Change {
            kind,
            key,
            old: old.map(|l| RouteView::of(&key, l)),
            new: new.as_ref().map(|l| RouteView::of(&key, l)),
        });
        out.writes.push((key, new));
    }
    out.verdicts = verdicts;
    out
}

/// R14/R17: apply a withdrawal to the leases it names (`current` holds the stored ones and the
/// other leases of their clients, for R11). A release removes a lease only when it comes from
/// the lease's holder (DUID; IAID when both are known) on the lease's link and is not older than
/// the lease's client-last-transaction; from anyone else it is a doubt. An operator `clear`
/// (no client named) removes unconditionally.
pub fn withdraw(current: &BTreeMap<LeaseKey, Lease>, w: &Withdrawal) -> MergeOutcome {
    let mut gone = Vec::new();
    let mut tombs = Vec::new();
    let mut verdicts = Vec::new();
    let mut doubts = Vec::new();
    // The IAIDs each key was named in (a key named in two IAs is decided once, with both).
    let mut named: BTreeMap<LeaseKey, Vec<u32>> = BTreeMap::new();
    for (k, a) in w.keys.iter().zip(&w.iaids) {
        named.entry(*k).or_default().push(*a);
    }
    let mut seen = std::collections::BTreeSet::new();
    for key in &w.keys {
        if !seen.insert(*key) {
            continue;
        }
        let Some(l) = current.get(key) else {
            verdicts.push((*key, MergeVerdict::AlreadyGone));
            continue;
        };
        let operator = w.reason == WithdrawReason::Operator;
        let verdict = if operator {
            MergeVerdict::Removed
        } else if l.last_transaction > w.arrival {
            // One clock (R2/R6): data about a transaction after the release is newer.
            MergeVerdict::LostToLaterArrival
        } else {
            let other_client = w.client_duid.as_ref().is_some_and(|d| **d != *l.client.duid)
                // The stored IAID is real only for snooped data (leasequery data carries 0).
                || (l.source == Source::Snoop
                    && named.get(key).is_some_and(|ids| !ids.contains(&l.iaid)));
            let other_link = w.link.is_some_and(|a| a != l.client.link.address);
            let reason = if other_client {
                Some(DoubtReason::ReleaseOtherClient)
            } else if other_link {
                Some(DoubtReason::ReleaseOtherLink)
            } else {
                None
            };
            match reason {
                Some(r) => {
                    doubts.push(doubt(*key, r, &l.client, w.client_duid.as_ref(), w.arrival));
                    MergeVerdict::Doubted
                }
                None => MergeVerdict::Removed,
            }
        };
        if verdict == MergeVerdict::Removed {
            gone.push(*key);
            if !operator {
                tombs.push((*key, tombstone(l, w.arrival, w.arrival)));
            }
        }
        verdicts.push((*key, verdict));
    }
    let mut out = remove_keys(current, &gone, verdicts);
    out.tombstones = tombs;
    out.doubts = doubts;
    out
}

/// R17: a server's answer to a confirming leasequery that nobody holds `c.key`. Removes the
/// lease (with a tombstone, R15: it is the server's word) only while it is held by a lease of
/// that same server whose client-last-transaction is before the question was asked; otherwise
/// changes nothing (`current` holds the stored lease and its client's others, for R11).
pub fn confirm(current: &BTreeMap<LeaseKey, Lease>, c: &Confirmation) -> MergeOutcome {
    let Some(l) = current.get(&c.key) else {
        return MergeOutcome {
            verdicts: vec![(c.key, MergeVerdict::AlreadyGone)],
            ..MergeOutcome::default()
        };
    };
    if l.server.duid != c.server.duid {
        // Another server's "not mine" says nothing about this one's lease (as R16).
        return MergeOutcome {
            verdicts: vec![(c.key, MergeVerdict::Unchanged)],
            ..MergeOutcome::default()
        };
    }
    if l.last_transaction >= c.asked {
        return MergeOutcome {
            verdicts: vec![(c.key, MergeVerdict::LostToLaterArrival)],
            ..MergeOutcome::default()
        };
    }
    let mut out = remove_keys(current, &[c.key], vec![(c.key, MergeVerdict::Removed)]);
    out.tombstones = vec![(c.key, tombstone(l, c.arrival, c.asked))];
    out
}

/// R16: the end of a bulk query. `current` holds the stored leases in the query's scope (the
/// caller picks them: that link, or every link) and the other leases of their clients (R11);
/// those of `sweep.server_duid` that the query did not mention and whose data arrived before
/// it started are removed, each leaving a tombstone (R15).
pub fn sweep(current: &BTreeMap<LeaseKey, Lease>, sweep: &Sweep) -> MergeOutcome {
    let mut gone = Vec::new();
    let mut tombs = Vec::new();
    let mut verdicts = Vec::new();
    for (key, l) in current {
        let in_scope = sweep.link.is_none_or(|a| a == l.client.link.address);
        if !in_scope
            || *l.server.duid != *sweep.server_duid
            || sweep.mentioned.contains(key)
            || l.arrival >= sweep.started
        {
            continue;
        }
        gone.push(*key);
        verdicts.push((*key, MergeVerdict::RemovedOmitted));
        tombs.push((*key, tombstone(l, sweep.finished, sweep.started)));
    }
    let mut out = remove_keys(current, &gone, verdicts);
    out.tombstones = tombs;
    out
}

/// R15: the tombstone a removed lease leaves: the lease as stored, gone (valid until and
/// arrived) at `at`, its last transaction at `last_transaction`, with no sequence number.
fn tombstone(l: &Lease, at: Timestamp, last_transaction: Timestamp) -> Lease {
    let mut t = l.clone();
    t.arrival = at;
    t.last_transaction = last_transaction;
    t.srsn = None;
    t.valid_until = at;
    t
}

/// Expiry (RFC 8987 G-8): the leases in `current` whose valid deadline is at or before `now`.
pub fn expire(now: Timestamp, current: &BTreeMap<LeaseKey, Lease>) -> MergeOutcome {
    let gone: Vec<LeaseKey> = current
        .iter()
        .filter(|(_, l)| l.valid_until <= now)
        .map(|(k, _)| *k)
        .collect();
    let verdicts = gone.iter().map(|k| (*k, MergeVerdict::Removed)).collect();
    remove_keys(current, &gone, verdicts)
}

/// Remove `gone` and re-derive next hops of prefixes whose IA_NA address went away (R11).
fn remove_keys(
    current: &BTreeMap<LeaseKey, Lease>,
    gone: &[LeaseKey],
    verdicts: Vec<(LeaseKey, MergeVerdict)>,
) -> MergeOutcome {
    let mut next: BTreeMap<LeaseKey, Option<Lease>> = gone.iter().map(|k| (*k, None)).collect();
    let clients: Vec<Arc<ClientInfo>> = gone
        .iter()
        .filter_map(|k| current.get(k))
        .filter(|l| l.ia == IaType::Na)
        .map(|l| l.client.clone())
        .collect();
    let mut assigned = Vec::new();
    for c in clients {
        reassign_next_hops(&mut next, current, &c, &mut assigned);
    }
    let mut out = finish(current, next, verdicts, None);
    out.assigned = assigned;
    out
}
