//! The trust boundary: every binding is a claim until this stage admits it.
//!
//! Whatever its source — a snooped REPLY, an on-demand LEASEQUERY-REPLY, a bulk answer, the
//! state file at start (the configuration may have changed since it was written) — an
//! [`Observation`] passes [`Admission::admit`] before the cache sees it, and nothing it refuses
//! reaches the cache or the kernel. The checks are about *what the data claims*, against the
//! link the route would go on; *where it came from* is checked earlier, where the envelope is
//! known (the snooper's direction/source/port rules in `snoop::classify`, the requestor's
//! reply-source rule in `requestor`).
//!
//! Rules (each has a table test below; `docs/security.md` says what each defends):
//!
//! - **A1 known link.** The observation's link-address (and Interface-Id, when links share a
//!   link-address) names a configured `[[links]]` entry; the route goes on *that* entry's
//!   interface and nothing else (never the uplink, never `lo`), whatever interface the input
//!   carried. Otherwise the whole observation is refused (`unknown_link`).
//! - **A2 inside the link.** Every address and delegated prefix lies inside one of the link's
//!   `subscriber_prefixes` (`outside_link`). A link without subscriber prefixes admits nothing.
//! - **A3 sane prefix length.** A delegated prefix's length lies in the link's
//!   `delegated_length` range (`prefix_length`); the configuration keeps that range at /32 or
//!   longer, so `::/0`, `2000::/3` and the like can never pass.
//! - **A4 no special addresses.** Never unspecified, loopback, link-local, multicast, IPv4-mapped
//!   (`special_address`); never an address of this box (`own_address`) or of a configured
//!   server (`server_address`); never a prefix that contains one of those.
//! - **A5 sane next hop.** The relay peer-address (the delegated-prefix next hop) is link-local
//!   or inside the link's subscriber prefixes, and not special, not ours (`bad_next_hop`;
//!   the whole observation is refused: every prefix of the client would follow it).
//! - **A7 no relay levels below this box's, unless an LDRA stands in front.** A message that
//!   arrived wrapped (a relay level inside the one this box wrote: `RelayData::access`) is
//!   accepted only on a link configured `ldra = true`, and then with exactly one such level
//!   (`nested_relay`, the whole observation; withdrawals through
//!   [`Admission::admit_wrapped_withdrawal`]). Otherwise a subscriber could wrap its own
//!   SOLICIT posing as an RFC 6221 relay and name the link-address, next hop and Interface-Id.
//!   On an LDRA link the next hop is the LDRA level's peer-address (the client's own address,
//!   RFC 6221 §6.1), and A5 applies to it.
//! - **A6 an answer covers its question.** A leasequery answer to a query by address must
//!   contain the address asked about in one of its leases, and that lease must itself pass
//!   A2–A4, or it is dropped whole (`not_covering`): a reply that talks about something else
//!   was not asked for (an answer whose relay data names another link, where the asked address
//!   is refused, cannot carry that link's prefixes in with it).
//!
//! A2–A4 refuse single leases: the rest of the observation is admitted, but no longer counts
//! as a complete answer (merge rule R7), so a refused lease never turns into the removal of one
//! the client really holds. An observation left with no lease is refused whole.

use crate::label::labels;
use std::collections::HashSet;
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::cache::storage::KeyHashBuilder;
use crate::cache::{Lease, LeaseKey, Observation, RelayData, Source, Timestamp};
use crate::prefix::Ipv6Prefix;

/// Default range of delegated prefix lengths a link admits (`links[].delegated_length`).
pub(crate) const DEFAULT_DELEGATED_LENGTH: (u8, u8) = (48, 64);
/// The shortest delegated prefix any configuration may admit.
pub(crate) const SHORTEST_DELEGATED_LENGTH: u8 = 32;

/// What admission knows about one configured link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRule {
    pub name: Arc<str>,
    /// The local interface routes for this link go on.
    pub interface: Arc<str>,
    pub link_address: Ipv6Addr,
    /// Tells apart links that share a link-address (unnumbered subscriber VLANs).
    pub interface_id: Option<Box<[u8]>>,
    pub subscriber_prefixes: Vec<Ipv6Prefix>,
    /// Inclusive range of delegated prefix lengths.
    pub delegated_length: (u8, u8),
    /// A Lightweight DHCPv6 Relay Agent (RFC 6221) stands in front of this link: one relay
    /// level below this box's is expected, not refused (rule A7).
    pub ldra: bool,
}

/// The box's own addresses, refreshed from the kernel while the agent runs (`kernel::addresses`).
/// Shared by the snooper (is a datagram addressed to us?) and admission (A4/A5).
///
/// A lookup takes no lock: each thread keeps the set it last read with its version and reads
/// the set again only when [`replace`](Self::replace) has moved the version on. Why: the
/// classifier asks for every snooped message and admission for every observation, on two
/// threads; a read lock per lookup is two atomic writes to the lock's one cache line, which
/// then bounced between the two cores through a reboot storm.
#[derive(Debug)]
pub struct OwnAddresses {
    set: RwLock<Arc<HashSet<Ipv6Addr>>>,
    /// The set's version, written with the set under its write lock: unique in the process (a
    /// fresh one for every set made or replaced), so a thread's copy can never be taken for
    /// another instance's set.
    version: AtomicU64,
}

/// The next [`OwnAddresses`] version (0 is never one: a thread that has read nothing).
fn next_version() -> u64 {
    static VERSIONS: AtomicU64 = AtomicU64::new(1);
    VERSIONS.fetch_add(1, Ordering::Relaxed)
}

/// A thread's copy of the set, on the cache's keyed hasher: SipHash cost more than the rest of
/// a lookup of a 16-byte address (the copy is made only when the set changes).
type OwnSet = HashSet<Ipv6Addr, KeyHashBuilder>;

thread_local! {
    /// The set this thread last read, with its version.
    static OWN_SEEN: std::cell::RefCell<(u64, OwnSet)> =
        std::cell::RefCell::new((0, OwnSet::default()));
}

impl Default for OwnAddresses {
    fn default() -> Self {
        OwnAddresses::new([])
    }
}

impl OwnAddresses {
    pub fn new(addrs: impl IntoIterator<Item = Ipv6Addr>) -> Self {
        OwnAddresses {
            set: RwLock::new(Arc::new(addrs.into_iter().collect())),
            version: AtomicU64::new(next_version()),
        }
    }

    pub fn contains(&self, a: &Ipv6Addr) -> bool {
        self.with(|own| own.contains(a))
    }

    /// `f` over the current set, read without a lock while this thread's copy is current.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&OwnSet) -> R) -> R {
        let current = self.version.load(Ordering::Acquire);
        OWN_SEEN.with(|seen| match seen.try_borrow_mut() {
            Ok(mut seen) => {
                if seen.0 != current {
                    let guard = self.set.read().unwrap_or_else(|e| e.into_inner());
                    // Read under the lock, the version is the one of this set.
                    *seen = (
                        self.version.load(Ordering::Acquire),
                        guard.iter().copied().collect(),
                    );
                }
                f(&seen.1)
            }
            // Only if `f` itself looks again: a copy read under the lock.
            Err(_) => f(&self.snapshot().iter().copied().collect()),
        })
    }

    /// Replace the set (a refresh from the kernel).
    pub fn replace(&self, addrs: HashSet<Ipv6Addr>) {
        let mut guard = self.set.write().unwrap_or_else(|e| e.into_inner());
        *guard = Arc::new(addrs);
        self.version.store(next_version(), Ordering::Release);
    }

    pub fn snapshot(&self) -> Arc<HashSet<Ipv6Addr>> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

labels! {
    /// Why a claim was refused. The label is [`Rejection::label`].
    #[derive(PartialOrd, Ord)]
    pub enum Rejection {
        /// A1: no configured link has this link-address (and Interface-Id).
        UnknownLink => "unknown_link",
        /// A2: not inside the link's subscriber prefixes.
        OutsideLink => "outside_link",
        /// A3: delegated prefix length outside the link's range.
        PrefixLength => "prefix_length",
        /// A4: unspecified, loopback, link-local, multicast or IPv4-mapped.
        SpecialAddress => "special_address",
        /// A4: an address of this box, or a prefix containing one.
        OwnAddress => "own_address",
        /// A4: a configured server's address, or a prefix containing one.
        ServerAddress => "server_address",
        /// A5: the next hop is neither link-local nor inside the link.
        BadNextHop => "bad_next_hop",
        /// A6: a query-by-address answer that does not contain the address asked about.
        NotCovering => "not_covering",
        /// A7: wrapped in a relay level below this box's on a link without an LDRA in front,
        /// or in more than one.
        NestedRelay => "nested_relay",
    }
}

/// One refused lease (or the whole observation, when `key` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub key: Option<LeaseKey>,
    pub reason: Rejection,
}

/// What admission made of an observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// Everything passed; the observation now names the link's interface.
    Whole(Observation),
    /// Some leases were refused (listed); the rest is admitted, marked incomplete.
    Partial(Observation, Vec<Refused>),
    /// Nothing is admitted.
    Refused(Vec<Refused>),
}

labels! {
    /// Where a claim came from, for the rejection counters.
    pub enum Origin {
        Snoop => "snoop",
        Leasequery => "leasequery",
        Bulk => "bulk",
        StateFile => "state_file",
    }
}

impl Origin {
    pub fn of(s: Source) -> Origin {
        match s {
            Source::Snoop => Origin::Snoop,
            Source::Leasequery => Origin::Leasequery,
            Source::Bulk => Origin::Bulk,
            Source::StateFile => Origin::StateFile,
        }
    }
}

/// Rejections counted by (origin, reason).
#[derive(Debug, Default)]
pub struct AdmissionStats {
    counts: [[AtomicU64; Rejection::ALL.len()]; Origin::ALL.len()],
    admitted: AtomicU64,
}

impl AdmissionStats {
    pub fn count(&self, origin: Origin, reason: Rejection) {
        self.counts[origin as usize][reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, origin: Origin, reason: Rejection) -> u64 {
        self.counts[origin as usize][reason as usize].load(Ordering::Relaxed)
    }

    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    /// `(source, reason, count)` for every pair counted at least once.
    pub fn snapshot(&self) -> Vec<(Origin, Rejection, u64)> {
        let mut out = Vec::new();
        for o in Origin::ALL {
            for r in Rejection::ALL {
                let n = self.get(*o, *r);
                if n > 0 {
                    out.push((*o, *r, n));
                }
            }
        }
        out
    }
}

/// The admission stage: pure checks over the configured links and the box's addresses.
#[derive(Debug)]
pub struct Admission {
    links: Vec<LinkRule>,
    servers: HashSet<Ipv6Addr>,
    own: Arc<OwnAddresses>,
    stats: AdmissionStats,
    /// Rate limit of rejection log lines: (second, lines logged in it).
    log_budget: std::sync::Mutex<(i64, u32)>,
}

/// Rejection log lines per second at most (the counters count them all).
const LOG_PER_SEC: u32 = 10;

impl Admission {
    pub fn new(
        links: Vec<LinkRule>,
        servers: impl IntoIterator<Item = Ipv6Addr>,
        own: Arc<OwnAddresses>,
    ) -> Self {
        Admission {
            links,
            servers: servers.into_iter().collect(),
            own,
            stats: AdmissionStats::default(),
            log_budget: std::sync::Mutex::new((0, 0)),
        }
    }

    pub fn stats(&self) -> &AdmissionStats {
        &self.stats
    }

    pub fn own_addresses(&self) -> &Arc<OwnAddresses> {
        &self.own
    }

    /// A1: the configured link an input on `link_address` belongs to. Links that share a
    /// link-address are told apart by the relay's Interface-Id, else by the interface the input
    /// arrived on (an on-demand answer carries the interface its query came from); a link
    /// without an `interface_id` is the fallback for its address.
    pub fn link(
        &self,
        link_address: Ipv6Addr,
        interface_id: Option<&[u8]>,
        interface: Option<&str>,
    ) -> Option<&LinkRule> {
        let mut by_interface = None;
        let mut fallback = None;
        for l in self.links.iter().filter(|l| l.link_address == link_address) {
            match (&l.interface_id, interface_id) {
                (Some(want), Some(got)) if **want == *got => return Some(l),
                (Some(_), Some(_)) => continue,
                _ => {}
            }
            if interface.is_some_and(|i| *l.interface == *i) {
                by_interface = by_interface.or(Some(l));
            }
            if l.interface_id.is_none() {
                fallback = fallback.or(Some(l));
            }
        }
        by_interface.or(fallback)
    }

    /// The first configured link whose subscriber prefixes hold `key`: where to ask about a
    /// lease seen without a relay level to name its link (a unicast REPLY).
    pub fn link_of(&self, key: &LeaseKey) -> Option<&LinkRule> {
        let net = key.network();
        self.links
            .iter()
            .find(|l| l.subscriber_prefixes.iter().any(|p| p.covers(&net)))
    }

    /// Check `obs` (rules A1–A7), count and log what is refused, and return what may go on.
    pub fn admit(&self, mut obs: Observation) -> Admitted {
        let origin = Origin::of(obs.source);
        let interface_id = obs.relay.as_ref().and_then(|r| r.interface_id.as_deref());
        let whole = |reason| vec![Refused { key: None, reason }];
        let Some(link) = self.link(
            obs.link.address,
            interface_id,
            obs.link.interface.as_deref(),
        ) else {
            return self.refuse(&obs, origin, whole(Rejection::UnknownLink));
        };
        if let Some(asked) = obs.query_address {
            if !obs.leases.iter().any(|l| l.key.network().contains(asked)) {
                return self.refuse(&obs, origin, whole(Rejection::NotCovering));
            }
        }
        if let Some(relay) = obs.relay.as_mut() {
            if let Err(reason) = behind_ldra(link, relay) {
                return self.refuse(&obs, origin, whole(reason));
            }
        }
        if let Some(hop) = obs.relay.as_ref().and_then(|r| r.peer_address) {
            if !self.next_hop_ok(link, hop) {
                return self.refuse(&obs, origin, whole(Rejection::BadNextHop));
            }
        }
        let mut refused = Vec::new();
        obs.leases.retain(|l| match self.check_key(link, &l.key) {
            Ok(()) => true,
            Err(reason) => {
                refused.push(Refused {
                    key: Some(l.key),
                    reason,
                });
                false
            }
        });
        // A6 again, on what is left: the lease that answered the question may itself be refused
        // (relay data in the answer can move it to another link), and the rest of such an
        // answer was not asked for — e.g. a neighbour's prefix re-homed to a next hop of the
        // server's choosing.
        if let Some(asked) = obs.query_address {
            if !obs.leases.iter().any(|l| l.key.network().contains(asked)) {
                refused.insert(
                    0,
                    Refused {
                        key: None,
                        reason: Rejection::NotCovering,
                    },
                );
                return self.refuse(&obs, origin, refused);
            }
        }
        obs.link.interface = Some(link.interface.clone());
        if obs.leases.is_empty() {
            return self.refuse(&obs, origin, refused);
        }
        self.stats.admitted.fetch_add(1, Ordering::Relaxed);
        if refused.is_empty() {
            return Admitted::Whole(obs);
        }
        self.log(&obs, origin, &refused);
        for r in &refused {
            self.stats.count(origin, r.reason);
        }
        // R7 must not read a refused lease's absence as "the server no longer holds it".
        obs.complete = false;
        Admitted::Partial(obs, refused)
    }

    /// Check a lease restored from the state file (A1–A5), giving it the link's interface.
    pub fn admit_restored(&self, key: &LeaseKey, lease: &mut Lease) -> Result<(), Rejection> {
        let interface_id = lease
            .client
            .relay
            .as_ref()
            .and_then(|r| r.interface_id.as_deref());
        let r = self
            .link(
                lease.client.link.address,
                interface_id,
                lease.client.link.interface.as_deref(),
            )
            .ok_or(Rejection::UnknownLink)
            .and_then(|link| {
                if let Some(access) = lease.client.relay.as_ref().and_then(|r| r.access.as_ref()) {
                    if !link.ldra || access.levels != 1 {
                        return Err(Rejection::NestedRelay);
                    }
                }
                if let Some(hop) = lease
                    .next_hop
                    .filter(|_| matches!(key, LeaseKey::Prefix(_)))
                {
                    if !self.next_hop_ok(link, hop) {
                        return Err(Rejection::BadNextHop);
                    }
                }
                self.check_key(link, key)?;
                Ok(link.interface.clone())
            });
        match r {
            Ok(interface) => {
                if lease.client.link.interface.as_ref() != Some(&interface) {
                    let mut client = (*lease.client).clone();
                    client.link.interface = Some(interface);
                    lease.client = Arc::new(client);
                }
                Ok(())
            }
            Err(reason) => {
                self.stats.count(Origin::StateFile, reason);
                Err(reason)
            }
        }
    }

    /// A7 for a REPLY to RELEASE/DECLINE that arrived wrapped (`relay.access` set): whether
    /// the link this box heard it on (`link_address` and this box's Interface-Id) has an LDRA
    /// in front and the chain is one LDRA deep. A refusal is counted (`snoop`, `nested_relay`)
    /// and logged; the withdrawal must then be dropped.
    pub fn admit_wrapped_withdrawal(
        &self,
        at: Timestamp,
        link_address: Ipv6Addr,
        relay: &RelayData,
        client: &[u8],
    ) -> bool {
        let Some(access) = relay.access.as_ref() else {
            return true;
        };
        let link = self.link(link_address, relay.interface_id.as_deref(), None);
        if link.is_some_and(|l| l.ldra) && access.levels == 1 {
            return true;
        }
        self.stats.count(Origin::Snoop, Rejection::NestedRelay);
        if self.log_allowed(at) {
            tracing::warn!(
                source = Origin::Snoop.label(),
                reason = Rejection::NestedRelay.label(),
                client = %hex::encode(client),
                link = %link_address,
                levels = access.levels,
                "wrapped release refused by admission"
            );
        }
        false
    }

    /// A2–A4 for one lease on `link`.
    pub fn check_key(&self, link: &LinkRule, key: &LeaseKey) -> Result<(), Rejection> {
        let net = key.network();
        if special(net.addr()) {
            return Err(Rejection::SpecialAddress);
        }
        if let LeaseKey::Prefix(p) = key {
            let (min, max) = link.delegated_length;
            if p.len() < min.max(SHORTEST_DELEGATED_LENGTH) || p.len() > max {
                return Err(Rejection::PrefixLength);
            }
        }
        if !link.subscriber_prefixes.iter().any(|s| s.covers(&net)) {
            return Err(Rejection::OutsideLink);
        }
        if self.servers.iter().any(|s| net.contains(*s)) {
            return Err(Rejection::ServerAddress);
        }
        let ours = self.own.with(|own| {
            if net.len() == 128 {
                own.contains(&net.addr())
            } else {
                own.iter().any(|a| net.contains(*a))
            }
        });
        if ours {
            return Err(Rejection::OwnAddress);
        }
        Ok(())
    }

    /// A5: a next hop is link-local or inside the link, and neither special nor ours.
    fn next_hop_ok(&self, link: &LinkRule, hop: Ipv6Addr) -> bool {
        let link_local = hop.is_unicast_link_local();
        let inside = link.subscriber_prefixes.iter().any(|p| p.contains(hop));
        (link_local || (inside && !special(hop)))
            && !self.own.contains(&hop)
            && !self.servers.contains(&hop)
    }

    fn refuse(&self, obs: &Observation, origin: Origin, refused: Vec<Refused>) -> Admitted {
        self.log(obs, origin, &refused);
        for r in &refused {
            self.stats.count(origin, r.reason);
        }
        Admitted::Refused(refused)
    }

    /// A warning per refusal, at most [`LOG_PER_SEC`] a second (the counters count them all).
    fn log(&self, obs: &Observation, origin: Origin, refused: &[Refused]) {
        if !self.log_allowed(obs.arrival) {
            return;
        }
        for r in refused {
            tracing::warn!(
                source = origin.label(),
                reason = r.reason.label(),
                lease = %r.key.map_or_else(|| "-".to_string(), |k| k.to_string()),
                leases = ?obs.leases.iter().map(|l| l.key.to_string()).collect::<Vec<_>>(),
                client = %hex::encode(&obs.client_duid),
                link = %obs.link.address,
                server = %obs.server.address,
                next_hop = ?obs.relay.as_ref().and_then(|r| r.peer_address),
                interface_id = %obs
                    .relay
                    .as_ref()
                    .and_then(|r| r.interface_id.as_deref())
                    .map(hex::encode)
                    .unwrap_or_default(),
                asked = ?obs.query_address,
                "binding refused by admission"
            );
        }
    }
}

impl Admission {
    /// Whether the rejection log may take one more line in `at`'s second.
    fn log_allowed(&self, at: Timestamp) -> bool {
        let sec = at.secs();
        let mut b = self.log_budget.lock().unwrap_or_else(|e| e.into_inner());
        if b.0 != sec {
            *b = (sec, 0);
        }
        if b.1 >= LOG_PER_SEC {
            return false;
        }
        b.1 += 1;
        true
    }
}

/// A7: relay levels below this box's only on a link with an LDRA in front, one at most; there
/// the next hop is the LDRA level's peer-address (the client's own, RFC 6221 §6.1).
fn behind_ldra(link: &LinkRule, relay: &mut RelayData) -> Result<(), Rejection> {
    let Some(access) = relay.access.as_ref() else {
        return Ok(());
    };
    if !link.ldra || access.levels != 1 {
        return Err(Rejection::NestedRelay);
    }
    relay.peer_address = access.peer_address;
    Ok(())
}

/// A4: addresses that are never a subscriber's.
fn special(a: Ipv6Addr) -> bool {
    a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || a.is_unicast_link_local()
        || a.to_ipv4_mapped().is_some()
}

#[cfg(test)]
mod tests;
