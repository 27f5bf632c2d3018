//! The cache's data model: what one observation says, and what the cache remembers per lease.
//!
//! The unit of truth is the **lease**: one address (IA_NA/IA_TA, routed as a /128) or one delegated
//! prefix (IA_PD), keyed by [`LeaseKey`]. RFC 5007 §4.3.4 decides conflicts per address/prefix
//! ("overlapping data"), so that is the unit the merge rules and the route installer both work on.
//! The client (DUID, link, relay data) is shared by its leases through an `Arc<ClientInfo>`.
//!
//! Time: every instant is a [`Timestamp`], milliseconds on the *agent clock* (both defined in
//! [`crate::time`]), so it never steps backwards while running, yet its values stay meaningful
//! after a restart — which is what lets the state file store them directly as wall-clock
//! milliseconds. Nothing in this module or in `merge.rs` reads a clock: time is passed in.

use crate::label::labels;
use std::fmt;
use std::net::Ipv6Addr;
use std::sync::Arc;

use crate::prefix::Ipv6Prefix;
use crate::wire::Duid;

pub use crate::time::Timestamp;

labels! {
    /// The identity association a lease belongs to (RFC 8415 §21.4, §21.5, §21.21).
    #[derive(PartialOrd, Ord)]
    pub enum IaType {
        Na => "ia_na",
        Ta => "ia_ta",
        Pd => "ia_pd",
    }
}

/// What a lease is: an address (routed as /128) or a delegated prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LeaseKey {
    Address(Ipv6Addr),
    Prefix(Ipv6Prefix),
}

/// Hashes as two 64-bit words and a length: cheap with the cache's word hasher.
impl std::hash::Hash for LeaseKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let (a, len) = match self {
            LeaseKey::Address(a) => (*a, 128u8),
            LeaseKey::Prefix(p) => (p.addr(), p.len()),
        };
        h.write_u128(u128::from(a));
        h.write_u8(len);
    }
}

impl LeaseKey {
    /// The network a route for this lease covers (/128 for an address).
    pub fn network(&self) -> Ipv6Prefix {
        match *self {
            LeaseKey::Address(a) => Ipv6Prefix::host(a),
            LeaseKey::Prefix(p) => p,
        }
    }
}

impl fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseKey::Address(a) => write!(f, "{a}"),
            LeaseKey::Prefix(p) => write!(f, "{p}"),
        }
    }
}

labels! {
    /// Where a piece of data came from.
    #[derive(PartialOrd, Ord)]
    pub enum Source {
        /// A relayed REPLY seen on the wire: first-hand, recency = arrival time.
        Snoop => "snoop",
        /// An RFC 5007 LEASEQUERY-REPLY (UDP).
        Leasequery => "leasequery",
        /// An RFC 5460 bulk LEASEQUERY-REPLY/-DATA (TCP).
        Bulk => "bulk",
        /// Loaded from our own state file after a restart.
        StateFile => "state_file",
    }
}

impl Source {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Source::Snoop => 0,
            Source::Leasequery => 1,
            Source::Bulk => 2,
            Source::StateFile => 3,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Source::Snoop,
            1 => Source::Leasequery,
            2 => Source::Bulk,
            3 => Source::StateFile,
            _ => return None,
        })
    }
}

/// A DHCPv6 server as the cache tells servers apart: its DUID (SERVERID) and the address it
/// answered from. Two answers are "from the same server" (RFC 5007 §4.3.4) when the DUIDs match.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId {
    pub duid: Duid,
    pub address: Ipv6Addr,
}

/// Relay data for a client, from this box's own relay level (the outermost of a snooped
/// RELAY-FORW/-REPL or of LQ_RELAY_DATA, RFC 5007 §4.1.2.4, RFC 8415 §19): only that level was
/// written by this box, so only it may select a link (`crate::wire::RelayChain`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RelayData {
    /// The PD next hop: this box's level's peer-address as read off the wire; on a link with an
    /// LDRA in front, admission replaces it with the LDRA level's (the client's own address,
    /// RFC 6221), so after admission it is always the chosen next hop.
    pub peer_address: Option<Ipv6Addr>,
    /// This box's level's Interface-Id: what tells apart links that share a link-address.
    pub interface_id: Option<Box<[u8]>>,
    /// This box's level's Remote-Id (the whole option body: enterprise number, then id).
    pub remote_id: Option<Box<[u8]>>,
    /// The levels below this box's, when the message arrived wrapped: an LDRA's access port.
    /// Boxed because nearly every client has none.
    pub access: Option<Box<AccessPort>>,
}

/// What the relay levels below this box's said (RFC 6221: a Lightweight DHCPv6 Relay Agent in
/// an access node in front of this box). Admission accepts one such level only on a link
/// configured `ldra = true`; the rest is kept with the binding to show the operator which
/// access port the client is on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AccessPort {
    /// How many relay levels lie below this box's (1 = one LDRA; admission refuses more).
    pub levels: u8,
    /// The peer-address of the level directly below this box's: the client's own address as
    /// the LDRA saw it, the next hop on an LDRA link.
    pub peer_address: Option<Ipv6Addr>,
    /// That level's Interface-Id (the access port).
    pub interface_id: Option<Box<[u8]>>,
    /// That level's Remote-Id (option body, as [`RelayData::remote_id`]).
    pub remote_id: Option<Box<[u8]>>,
}

/// The link a client sits on: the relay's link-address and, when known, the local interface.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Link {
    pub address: Ipv6Addr,
    /// Local interface name (from configuration or the snooped Interface-Id mapping).
    pub interface: Option<Arc<str>>,
}

/// Who holds a lease: shared by all leases the same client holds on the same link.
/// (The by-client index keys by a clone of the same [`Duid`]; relay data is boxed because most of
/// the time it is absent and the struct is kept per client.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientInfo {
    pub duid: Duid,
    pub link: Link,
    pub relay: Option<Box<RelayData>>,
}

/// What the cache remembers about one lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub client: Arc<ClientInfo>,
    pub server: Arc<ServerId>,
    pub ia: IaType,
    pub iaid: u32,
    pub preferred_until: Timestamp,
    pub valid_until: Timestamp,
    /// The client's last transaction with `server` (RFC 5007 CLT_TIME made absolute).
    pub last_transaction: Timestamp,
    /// When the data that set this lease arrived here.
    pub arrival: Timestamp,
    pub source: Source,
    /// Server reply sequence number of that data, when configured and present (local extension).
    pub srsn: Option<u32>,
    /// For delegated prefixes: where the route points (relay peer-address, else the client's
    /// IA_NA address on that link). `None` for addresses, or when nothing is known yet.
    pub next_hop: Option<Ipv6Addr>,
}

/// One address or prefix inside an observation, lifetimes as the wire carried them (seconds,
/// `0xffffffff` infinite). A zero valid lifetime means "no longer held" (RFC 8415 §18.2.10.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObservedLease {
    pub key: LeaseKey,
    pub ia: IaType,
    pub iaid: u32,
    pub preferred: u32,
    pub valid: u32,
}

/// Everything one answer says about one client on one link: the cache's input.
///
/// Made by the snooper from a relayed REPLY (`snoop::classify`), and by `cache::from_wire` from
/// each CLIENT_DATA of a leasequery answer (on-demand, the confirmer, bulk). The state loader
/// makes none: it restores leases as they were ([`Lease`]), past the merge rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub client_duid: Duid,
    pub link: Link,
    pub relay: Option<RelayData>,
    pub server: Arc<ServerId>,
    pub source: Source,
    /// CLT_TIME (RFC 5007 §4.1.2.3): seconds since the server last heard from the client.
    /// `None` for snooped REPLYs: their recency is `arrival`.
    pub clt_time: Option<u32>,
    /// LQ_BASE_TIME (RFC 7653 §5.2): the server's time (Unix seconds) the data refers to.
    pub base_time: Option<u32>,
    pub srsn: Option<u32>,
    /// True when the answer is a complete CLIENT_DATA: RFC 5007 §4.1.2.2 makes the server include
    /// every lease of that client on that link, so a lease it reported before and now omits is gone.
    /// False for snooped REPLYs, which only speak about the IAs they carry.
    pub complete: bool,
    pub leases: Vec<ObservedLease>,
    pub arrival: Timestamp,
    /// For an answer to a leasequery by address: the address asked about. Admission refuses an
    /// answer none of whose leases contains it (a reply about something that was not asked).
    pub query_address: Option<Ipv6Addr>,
}

/// The end of one bulk query by link-address or relay-id that finished with LEASEQUERY-DONE
/// (merge rule R16): what the server listed, so what it did not list can go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// The server that answered (its SERVERID).
    pub server_duid: Duid,
    /// The link the query covered; `None` = every link (a relay-id query with link `::`).
    pub link: Option<Ipv6Addr>,
    /// Every address and prefix the query's messages mentioned.
    pub mentioned: std::collections::HashSet<LeaseKey>,
    /// When the query was started: data that arrived later is newer than the server's listing.
    pub started: Timestamp,
    /// When the DONE arrived.
    pub finished: Timestamp,
}

labels! {
    /// Why a lease is taken away without a successor.
    pub enum WithdrawReason {
        /// A snooped REPLY to RELEASE (RFC 8415 §18.3.7) or DECLINE (§18.3.8).
        Released => "released",
        /// An operator `clear` (RFC 8987 O-2).
        Operator => "operator",
    }
}

/// An instruction to drop leases: released/declined ones or an operator `clear`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdrawal {
    pub keys: Vec<LeaseKey>,
    /// When set, only leases held by this client are withdrawn (a RELEASE speaks for its sender).
    pub client_duid: Option<Duid>,
    /// The link the RELEASE/DECLINE came through (the link-address of this box's own relay
    /// level). A release applies only on the binding's own link; from another link it is a
    /// [`Doubt`]. `None` for an operator `clear`.
    pub link: Option<Ipv6Addr>,
    /// The IAID the client named for each of `keys` (same order), when known: a release by
    /// the holder's DUID but for another IA is a [`Doubt`]. Empty when not known.
    pub iaids: Vec<u32>,
    pub reason: WithdrawReason,
    pub arrival: Timestamp,
}

labels! {
    /// Why something that would change a binding did not, by itself (the ownership rule,
    /// `docs/security.md`): it did not come from the binding's holder on its link, nor from a
    /// server's positive assignment or its answer about that key. A doubt asks the server.
    pub enum DoubtReason {
        /// A zero lifetime in a REPLY to another client than the holder (a stranger's REBIND of
        /// a neighbour's prefix, a stale CPE coming back), or to the holder on another link.
        ZeroLifetimeOtherClient => "zero_lifetime_other_client",
        /// A RELEASE/DECLINE naming a key that another client holds (other DUID or IAID).
        ReleaseOtherClient => "release_other_client",
        /// A RELEASE/DECLINE by the holder's DUID that came through another link.
        ReleaseOtherLink => "release_other_link",
        /// The holder's own RELEASE/DECLINE that the server answered with a per-IA error
        /// (NoBinding): the server does not have that IA for this client, so what the cache
        /// holds under it is in question — but a refusal removes nothing (RFC 8415 §18.3.7).
        ReleaseNotDone => "release_not_done",
        /// An assignment inside another client's network (a /64 inside another's /56, a /128
        /// inside another's delegated prefix).
        Overlap => "overlap",
        /// A REPLY between a configured server and a subscriber address seen unrelayed
        /// (the server sent OPTION_UNICAST): not through this box's relay level.
        Unicast => "unicast",
        /// A route of ours found in the kernel at start that no lease explains.
        Inherited => "inherited",
    }
}

labels! {
    /// How a doubt ended: what the confirming leasequery said, or why it was not asked.
    pub enum DoubtOutcome {
        /// The server says the holder still holds the key: kept (and refreshed).
        Held => "held",
        /// The server says another client holds it now: moved by that answer.
        Moved => "moved",
        /// The server says nobody holds it: removed.
        Gone => "gone",
        /// The server cannot say (e.g. ISC's NotConfigured for a delegated prefix, an error
        /// status): kept until its own lifetime ends.
        Unknown => "unknown",
        /// No server answered: kept.
        NoAnswer => "no_answer",
        /// Not asked (rate limit, negative cache, queue full, already being asked): kept.
        NotAsked => "not_asked",
    }
}

/// Something that would have changed a binding had it come from the binding's holder on its
/// link. It changes nothing by itself and leaves no tombstone; the confirmer asks the server
/// (a leasequery by address for the key; for a prefix, an address inside it) and the answer
/// decides. No answer, or one that cannot say, keeps what is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doubt {
    pub key: LeaseKey,
    pub reason: DoubtReason,
    /// The binding's holder as the cache has it; `None` when nobody holds it in the cache (an
    /// inherited route, a unicast exchange about an unknown key).
    pub holder: Option<Arc<ClientInfo>>,
    /// The client whose message raised the doubt, when known (the stranger's DUID).
    pub claimant: Option<Duid>,
    /// The link to ask about: the holder's link-address (or the link the kernel route is on).
    pub link: Ipv6Addr,
    /// The interface of that link, when known (for the query's link and the route).
    pub interface: Option<Arc<str>>,
    pub at: Timestamp,
}

/// How many doubts ended how, by reason: `lqagent_binding_doubts_total{reason,outcome}`.
/// Counted where the outcome is known: the cache task (a doubt it could not hand on is
/// `not_asked`) and the confirmer (every other outcome).
#[derive(Debug, Default)]
pub struct DoubtStats {
    counts: [[std::sync::atomic::AtomicU64; DoubtOutcome::ALL.len()]; DoubtReason::ALL.len()],
}

impl DoubtStats {
    pub fn count(&self, reason: DoubtReason, outcome: DoubtOutcome) {
        self.counts[reason as usize][outcome as usize]
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self, reason: DoubtReason, outcome: DoubtOutcome) -> u64 {
        self.counts[reason as usize][outcome as usize].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `(reason, outcome, count)` for every pair, zeros included.
    pub fn snapshot(&self) -> Vec<(DoubtReason, DoubtOutcome, u64)> {
        DoubtReason::ALL
            .iter()
            .flat_map(|r| {
                DoubtOutcome::ALL
                    .iter()
                    .map(move |o| (*r, *o, self.get(*r, *o)))
            })
            .collect()
    }
}

/// A server's answer to a confirming leasequery that says nobody holds `key` (success, no
/// CLIENT_DATA). An answer that names a holder comes back as an ordinary leasequery
/// [`Observation`]; one that cannot say changes nothing and is not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    pub key: LeaseKey,
    pub reason: DoubtReason,
    pub server: Arc<ServerId>,
    /// When the query was sent: a lease whose data arrived after it is newer than the answer
    /// and stays.
    pub asked: Timestamp,
    pub arrival: Timestamp,
}

labels! {
    /// What happened to one lease.
    pub enum ChangeKind {
        Added => "added",
        Updated => "updated",
        Removed => "removed",
        /// A notice, not a change of the cache (see [`Change::unheld`]).
        Unheld => "unheld",
    }
}

/// What a route needs to know about one lease, before or after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteView {
    /// The /128 of an address or the delegated prefix.
    pub network: Ipv6Prefix,
    pub link_address: Ipv6Addr,
    pub interface: Option<Arc<str>>,
    /// For prefixes: the next hop; `None` for addresses (on-link /128) or when unknown.
    pub next_hop: Option<Ipv6Addr>,
    pub client_duid: Duid,
    pub valid_until: Timestamp,
}

impl RouteView {
    pub fn of(key: &LeaseKey, lease: &Lease) -> Self {
        RouteView {
            network: key.network(),
            link_address: lease.client.link.address,
            interface: lease.client.link.interface.clone(),
            next_hop: lease.next_hop,
            client_duid: lease.client.duid.clone(),
            valid_until: lease.valid_until,
        }
    }
}

/// One entry of the change stream: per lease, in the order the cache decided them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub key: LeaseKey,
    /// The lease before (for `Updated`/`Removed`).
    pub old: Option<RouteView>,
    /// The lease after (for `Added`/`Updated`).
    pub new: Option<RouteView>,
}

impl Change {
    /// A notice, not a change: the cache holds no lease for `key`, and a message says nobody
    /// does — a RELEASE/DECLINE or a zero lifetime snooped from the link in `from` (its
    /// `link_address`/`interface`; `client_duid` is the sender, `next_hop` the address the
    /// client sent from when known), or, with `from` `None`, a
    /// server's answer to a confirming leasequery. The route side removes a route it keeps for
    /// `key` without a lease (inherited from before the start), only if that route sits on the
    /// interface of `from`'s link: an inherited route is anchored where the kernel shows it.
    pub fn unheld(key: LeaseKey, from: Option<RouteView>) -> Change {
        Change {
            kind: ChangeKind::Unheld,
            key,
            old: from,
            new: None,
        }
    }

    /// Whether this change alters anything a route depends on (network, link, interface, next
    /// hop). Lifetime-only refreshes are `Updated` but need no kernel work.
    pub fn route_affecting(&self) -> bool {
        match (&self.old, &self.new) {
            (Some(o), Some(n)) => {
                o.link_address != n.link_address
                    || o.interface != n.interface
                    || o.next_hop != n.next_hop
                    || o.client_duid != n.client_duid
            }
            _ => true,
        }
    }
}

/// A snooped REPLY's observation for unit tests: one fixed server, no relay data, each lease as
/// given (shared by the store's and the cache task's tests).
#[cfg(test)]
pub(crate) fn snooped(
    client_duid: impl Into<Duid>,
    link: Ipv6Addr,
    leases: Vec<ObservedLease>,
    arrival: Timestamp,
) -> Observation {
    Observation {
        client_duid: client_duid.into(),
        link: Link {
            address: link,
            interface: None,
        },
        relay: None,
        server: Arc::new(ServerId {
            duid: vec![0, 1, 0, 1, 9].into(),
            address: Ipv6Addr::LOCALHOST,
        }),
        source: Source::Snoop,
        clt_time: None,
        base_time: None,
        srsn: None,
        complete: false,
        leases,
        arrival,
        query_address: None,
    }
}
