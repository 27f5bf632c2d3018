//! What a snooped relayed exchange says about a client's bindings: pure, no I/O, time as input.
//!
//! The snooper listens on the relay's server-facing side, where every exchange shows up twice
//! with its full relay chain (RFC 8415 §19):
//!
//! ```text
//! relay → server  RELAY-FORW(link-address, peer-address, Interface-Id, Remote-Id, ...,
//!                   RELAY_MSG = [RELAY-FORW (LDRA, link ::) ...] client message)
//! server → relay  RELAY-REPL(same link/peer addresses, Interface-Id echoed,
//!                   RELAY_MSG = [RELAY-REPL ...] REPLY)
//! ```
//!
//! **Trust (where a message can come from).** The capture sees every DHCPv6 datagram that
//! crosses a snoop interface, including ones a subscriber or an upstream host forged. So:
//!
//! - a RELAY-FORW counts only when this box sent it: outgoing, from one of the box's own
//!   addresses, UDP 547 → 547, towards a configured server, a trusted source or the
//!   All_DHCP_Servers multicast group;
//! - a RELAY-REPL counts only when it arrives: incoming, from a configured server or trusted
//!   source, UDP 547 → 547, addressed to one of the box's own addresses. A forged RELAY-REPL a
//!   subscriber sends towards the server crosses the uplink *outgoing*; one an upstream host
//!   sends to a subscriber's port 546 is not addressed to us: both are counted and dropped;
//! - a REPLY binds only when the RELAY-FORW of its exchange (same transaction id, client DUID
//!   and link) was seen: an unmatched REPLY is counted and dropped, never bound.
//!
//! **What is learnt.**
//! - A RELAY-FORW is remembered (bounded, with a time-to-live) under the client's transaction
//!   id, DUID and link: it tells which message the client sent (so a REPLY to RELEASE/DECLINE
//!   is known as one, RFC 8415 §18.3.7–18.3.8) and carries the relay options only the forward
//!   direction has (Remote-Id, RFC 4649). A retransmitted FORW refreshes its entry; RELEASE and
//!   DECLINE are remembered in a memory of their own, so a flood of other FORWs cannot push a
//!   pending RELEASE out. A SOLICIT without Rapid Commit is not remembered (only an ADVERTISE
//!   can answer it, RFC 8415 §18.3.1), and a trusted ADVERTISE ends the exchange of a
//!   rapid-commit one: in a reboot storm every client solicits first, and those entries would
//!   otherwise fill the memory and push out the REQUESTs whose REPLYs bind.
//! - A matched RELAY-REPL carrying a REPLY yields an [`Observation`] with every IA_NA/IA_TA
//!   address and IA_PD prefix and its lifetimes (REQUEST, RENEW, REBIND, rapid-commit SOLICIT,
//!   CONFIRM...). A zero valid lifetime stays in the observation: the cache reads it as "no
//!   longer held" (RFC 8415 §18.2.10.1).
//! - A REPLY to a RELEASE or DECLINE yields a [`Withdrawal`] of the leases the client named, on
//!   the link this box heard it, with the IAID of each: minus every IA the REPLY gives a status
//!   other than Success (NoBinding, RFC 8415 §18.3.7: the server released nothing there), and
//!   nothing at all when the REPLY's own status is not Success.
//!
//! - A REPLY a configured server sends straight to a subscriber (UDP 547 → 546, arriving, not
//!   to this box: the server had offered OPTION_UNICAST) did not pass this box's relay level:
//!   nothing is bound from it, each of its leases is a [`Doubt`] (`unicast`) for the confirmer
//!   to ask the server about, on the link whose subscriber prefixes hold it.
//!
//! What the bindings themselves claim (inside the link's prefixes, sane lengths...) is the
//! admission stage's job (`crate::admission`), after this.
//!
//! **The link is where this box heard the client.** The outermost relay level is this box's own
//! (the trust checks above guarantee it), and only it gives the link-address (the key that ties
//! a REPLY to its RELAY-FORW, and the link), the Interface-Id that tells apart links sharing a
//! link-address, and the Remote-Id. Levels inside it were written by whoever sent us the
//! message: a Lightweight DHCPv6 Relay Agent (RFC 6221) in an access node, or a subscriber
//! posing as one to name another link, next hop and port. They are passed on as the
//! [`AccessPort`](crate::cache::AccessPort) and admission decides: a link accepts them only
//! when configured `ldra = true`, and then the LDRA level's peer-address is the next hop. A
//! withdrawal that arrived wrapped is checked here against the same rule (it does not pass
//! admission's observation path), through [`SnoopTrust::admission`].

use crate::label::labels;
use std::collections::{BTreeMap, HashSet};
use std::net::Ipv6Addr;
use std::sync::Arc;

use crate::admission::{Admission, OwnAddresses};
use crate::cache::from_wire::{relay_data_of, relay_data_over};
use crate::cache::storage::{IncMap, KeyHashBuilder};
use crate::cache::{
    Doubt, DoubtReason, IaType, LeaseKey, Link, Observation, ObservedLease, RelayData, ServerId,
    Source, Timestamp, WithdrawReason, Withdrawal,
};
use crate::wire::{
    ALL_DHCP_SERVERS, CLIENT_PORT, CheckedMessage, ClientView, Duid, MessageType, MessageView,
    OptionCode, OptionsIter, RelayChainView, SERVER_PORT, StatusCode,
};

/// Settings of the RELAY-FORW memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassifyConfig {
    /// Most RELAY-FORWs of exchanges that bind (REQUEST, RENEW...) remembered while waiting for
    /// their RELAY-REPL; the oldest goes first.
    pub pending_capacity: usize,
    /// Most RELEASE/DECLINE RELAY-FORWs remembered, in a memory of their own.
    pub release_capacity: usize,
    /// How long a RELAY-FORW waits for its RELAY-REPL, in milliseconds.
    pub pending_ttl_ms: i64,
    /// Option code of the server reply sequence number in a REPLY (`[leasequery] srsn_option`).
    pub srsn_option: Option<u16>,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        ClassifyConfig {
            pending_capacity: 8192,
            release_capacity: 4096,
            pending_ttl_ms: 60_000,
            srsn_option: None,
        }
    }
}

/// Who may speak on the snoop interfaces: the configured servers (and trusted sources), and
/// this box, whose addresses come from the kernel.
#[derive(Debug, Clone)]
pub struct SnoopTrust {
    /// Configured servers and `snoop.trusted_sources`.
    pub servers: HashSet<Ipv6Addr>,
    pub own: Arc<OwnAddresses>,
    /// The admission stage, which knows which links have an LDRA in front: a withdrawal that
    /// arrived wrapped in a level below this box's is refused unless its link says so.
    pub admission: Arc<Admission>,
}

/// A snooped datagram's envelope: what the capture knows besides the DHCPv6 payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    /// Sent by this box (`PACKET_OUTGOING`).
    pub outgoing: bool,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// What one snooped message taught us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learned {
    /// Leases seen in a REPLY (zero valid lifetime = gone).
    Bind(Observation),
    /// Leases given up by a RELEASE or DECLINE that the server answered, and a doubt for each
    /// key in an IA the server answered with an error (NoBinding): it did not give those up, and
    /// says it does not know them for this client.
    Withdraw(Withdrawal, Vec<Doubt>),
    /// Leases in a REPLY a server sent straight to a client (it had sent OPTION_UNICAST): not
    /// through this box's relay level, so never bound from; each is a [`Doubt`] the cache task
    /// hands to the confirmer, whose leasequery answer refreshes the lease.
    Doubt(Vec<Doubt>),
}

labels! {
    /// Counters of the classifier, labelled by [`ClassifyCounter::label`].
    pub enum ClassifyCounter {
        /// RELAY-FORW remembered.
        RelayForw => "relay_forw",
        /// RELAY-REPL carrying a REPLY, turned into an observation.
        ReplyBind => "reply_bind",
        /// RELAY-REPL carrying a REPLY to RELEASE/DECLINE.
        ReplyRelease => "reply_release",
        /// REPLY that matched no remembered RELAY-FORW: dropped.
        ReplyUnmatched => "reply_unmatched",
        /// Relayed message that is neither a client request nor a REPLY (ADVERTISE, RECONFIGURE...).
        Ignored => "ignored",
        /// Not a relay message at all (we only read the relay's upstream side).
        NotRelayed => "not_relayed",
        /// REPLY or request without CLIENTID, or REPLY without SERVERID.
        MissingId => "missing_id",
        /// REPLY with a non-success top-level status: nothing learned.
        ErrorStatus => "error_status",
        /// IAPREFIX with a length over 128.
        BadPrefix => "bad_prefix",
        /// RELAY-FORW dropped from a full memory.
        PendingEvicted => "pending_evicted",
        /// RELAY-REPL seen leaving the box, or RELAY-FORW arriving: not the relay's own traffic.
        WrongDirection => "wrong_direction",
        /// RELAY-REPL from an address that is not a configured server or trusted source; RELAY-FORW
        /// from an address that is not this box's.
        UntrustedSource => "untrusted_source",
        /// RELAY-REPL not addressed to this box; RELAY-FORW not towards a server.
        WrongDestination => "wrong_destination",
        /// Not UDP 547 → 547.
        WrongPort => "wrong_port",
        /// REPLY to a RELEASE/DECLINE that arrived wrapped in a relay level below this box's,
        /// on a link without an LDRA in front (or deeper than one LDRA): nothing withdrawn.
        NestedRelay => "nested_relay",
        /// IA in a REPLY to RELEASE/DECLINE with a status other than Success: its leases are
        /// not withdrawn.
        IaNotReleased => "ia_not_released",
        /// A REPLY from a configured server straight to a subscriber (unicast, not relayed):
        /// its leases raised doubts, nothing was bound.
        UnicastReply => "unicast_reply",
    }
}

impl ClassifyCounter {
    fn index(self) -> usize {
        self as usize
    }

    /// Whether this counter is a refusal of a message's origin (counted as admission rejects).
    pub fn is_untrusted(self) -> bool {
        matches!(
            self,
            ClassifyCounter::WrongDirection
                | ClassifyCounter::UntrustedSource
                | ClassifyCounter::WrongDestination
                | ClassifyCounter::WrongPort
                | ClassifyCounter::ReplyUnmatched
        )
    }
}

/// The classifier's counters, indexed by [`ClassifyCounter`]: atomics the classifier bumps
/// and a clone (sharing them) reads at any time, e.g. at a metrics scrape, so nothing is
/// copied per message.
#[derive(Debug, Clone, Default)]
pub struct ClassifyStats {
    counts: std::sync::Arc<[std::sync::atomic::AtomicU64; ClassifyCounter::ALL.len()]>,
}

impl ClassifyStats {
    pub fn get(&self, c: ClassifyCounter) -> u64 {
        self.counts[c.index()].load(std::sync::atomic::Ordering::Relaxed)
    }

    fn bump(&self, c: ClassifyCounter) {
        self.counts[c.index()].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A remembered RELAY-FORW.
#[derive(Debug, Clone)]
struct Pending {
    client_type: MessageType,
    relay: RelayData,
    /// Leases a RELEASE/DECLINE names, with their IA.
    named: Vec<ObservedLease>,
    at: Timestamp,
}

/// Transaction id, client DUID, link-address: what ties a REPLY to its RELAY-FORW.
#[derive(Debug, Clone)]
struct PendingKey {
    xid: u32,
    duid: Duid,
    link: Ipv6Addr,
}

/// A [`PendingKey`] borrowed from a packet: the memory is searched with it, so a REPLY or an
/// ADVERTISE builds no `Duid` (an allocation and a copy) just to look its exchange up — the
/// REPLY takes the remembered entry's own `Duid` for its observation instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct KeyRef<'a> {
    xid: u32,
    duid: &'a [u8],
    link: Ipv6Addr,
}

impl<'a> KeyRef<'a> {
    fn of(client: &ClientView<'_>, duid: &'a [u8], chain: &RelayChainView<'_>) -> Self {
        KeyRef {
            xid: client.transaction_id(),
            duid,
            link: chain.link_or_unspecified(),
        }
    }

    fn owned(self) -> PendingKey {
        PendingKey {
            xid: self.xid,
            duid: Duid::from(self.duid),
            link: self.link,
        }
    }
}

/// What both key forms show the map: hashing and equality are those of the [`KeyRef`], so a
/// `PendingKey` borrows as a `dyn AsKeyRef` and is found by either.
trait AsKeyRef {
    fn key_ref(&self) -> KeyRef<'_>;
}

impl AsKeyRef for PendingKey {
    fn key_ref(&self) -> KeyRef<'_> {
        KeyRef {
            xid: self.xid,
            duid: self.duid.as_bytes(),
            link: self.link,
        }
    }
}

impl AsKeyRef for KeyRef<'_> {
    fn key_ref(&self) -> KeyRef<'_> {
        *self
    }
}

impl<'a> std::borrow::Borrow<dyn AsKeyRef + 'a> for PendingKey {
    fn borrow(&self) -> &(dyn AsKeyRef + 'a) {
        self
    }
}

impl std::hash::Hash for dyn AsKeyRef + '_ {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.key_ref().hash(h)
    }
}

impl PartialEq for dyn AsKeyRef + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key_ref() == other.key_ref()
    }
}

impl Eq for dyn AsKeyRef + '_ {}

impl std::hash::Hash for PendingKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.key_ref().hash(h)
    }
}

impl PartialEq for PendingKey {
    fn eq(&self, other: &Self) -> bool {
        self.key_ref() == other.key_ref()
    }
}

impl Eq for PendingKey {}

/// One bounded memory of RELAY-FORWs. Each entry carries the sequence number of its place in
/// `order` (arrival order, oldest first: what eviction and expiry take), so a refreshed or
/// answered entry takes its place out with it and both structures hold exactly the live
/// entries. Every operation is a bounded amount of work: the map grows a few buckets per write
/// (`IncMap`), and nothing is ever swept. Before, `order` kept the places of answered entries
/// until it reached twice the capacity and was then swept whole, a map lookup per place
/// (16 384 of them, every ~6 500 clients of a reboot storm, on the snooped REPLY path), and the
/// map doubled all at once as a storm filled it.
#[derive(Debug)]
struct PendingTable {
    capacity: usize,
    entries: IncMap<PendingKey, (u64, Pending)>,
    /// Arrival order, with each entry's arrival time beside its key: expiry reads the oldest's
    /// age here, without a map lookup per snooped message.
    order: BTreeMap<u64, (Timestamp, PendingKey)>,
    next: u64,
    /// Entries of rapid-commit SOLICITs, the only ones an ADVERTISE ends: while there are none
    /// (every storm), an ADVERTISE looks nothing up.
    solicits: usize,
}

impl PendingTable {
    fn new(capacity: usize) -> Self {
        PendingTable {
            capacity: capacity.max(1),
            entries: IncMap::default(),
            order: BTreeMap::new(),
            next: 0,
            solicits: 0,
        }
    }

    /// `p` has left the memory: counted out of [`PendingTable::solicits`].
    fn gone(&mut self, p: &Pending) {
        if p.client_type == MessageType::SOLICIT {
            self.solicits = self.solicits.saturating_sub(1);
        }
    }

    /// Remember `entry`; returns how many entries were evicted to make room.
    fn insert(&mut self, key: PendingKey, entry: Pending) -> u64 {
        let seq = self.next;
        self.next += 1;
        let at = entry.at;
        if entry.client_type == MessageType::SOLICIT {
            self.solicits += 1;
        }
        if let Some((old, p)) = self.entries.insert(key.clone(), (seq, entry)) {
            self.gone(&p);
            self.order.remove(&old);
        }
        self.order.insert(seq, (at, key));
        let mut evicted = 0;
        while self.entries.len() > self.capacity {
            let Some((_, (_, old))) = self.order.pop_first() else {
                break;
            };
            if let Some((_, p)) = self.entries.remove(&old) {
                self.gone(&p);
            }
            evicted += 1;
        }
        evicted
    }

    /// Take the entry of `key` out, with the key as it was remembered (its `Duid` shared).
    fn remove(&mut self, key: &dyn AsKeyRef) -> Option<(Pending, Option<PendingKey>)> {
        // Every REQUEST and REPLY looks in both memories, and the RELEASE one is nearly always
        // empty: no key hashed for it then.
        if self.entries.is_empty() {
            return None;
        }
        let (seq, p) = self.entries.remove(key)?;
        self.gone(&p);
        Some((p, self.order.remove(&seq).map(|(_, k)| k)))
    }

    fn expire(&mut self, now: Timestamp, ttl_ms: i64) {
        while let Some((_, (at, _))) = self.order.first_key_value() {
            if now.millis().saturating_sub(at.millis()) < ttl_ms {
                break;
            }
            if let Some((_, (_, key))) = self.order.pop_first()
                && let Some((_, p)) = self.entries.remove(&key)
            {
                self.gone(&p);
            }
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Pairs RELAY-FORW with RELAY-REPL and turns REPLYs into cache input.
#[derive(Debug)]
pub struct Classifier {
    cfg: ClassifyConfig,
    trust: SnoopTrust,
    /// FORWs of exchanges that bind (REQUEST, RENEW, REBIND, SOLICIT, CONFIRM...).
    pending: PendingTable,
    /// FORWs of RELEASE and DECLINE: their REPLY withdraws, so a flood of the others must not
    /// push them out.
    releases: PendingTable,
    stats: ClassifyStats,
    /// Why the last message was refused for its origin, if it was (for the shell's log line).
    refusal: Option<ClassifyCounter>,
    /// The server of the last REPLY bound, handed to the next one from the same server
    /// (see [`Classifier::server_id`]).
    last_server: Option<Arc<ServerId>>,
    /// `trust.servers` again, hashed with the cache's keyed hasher instead of SipHash: asked
    /// for every trust check of a relayed message (its destination or its source).
    servers: HashSet<Ipv6Addr, KeyHashBuilder>,
}

impl Classifier {
    pub fn new(cfg: ClassifyConfig, trust: SnoopTrust) -> Self {
        Classifier {
            cfg,
            servers: trust.servers.iter().copied().collect(),
            trust,
            pending: PendingTable::new(cfg.pending_capacity),
            releases: PendingTable::new(cfg.release_capacity),
            stats: ClassifyStats::default(),
            refusal: None,
            last_server: None,
        }
    }

    /// The server that sent a REPLY, shared with the last REPLY's when it is the same server
    /// (DUID and address). Why: in a storm nearly every REPLY comes from one of a few servers,
    /// and a fresh `ServerId` per REPLY cost two allocations on the snooped path and one more
    /// copy of the server's DUID in every lease the cache keeps. (The merge still compares
    /// servers by DUID, never by pointer, so sharing changes no answer.)
    fn server_id(&mut self, duid: &[u8], address: Ipv6Addr) -> Arc<ServerId> {
        if let Some(s) = &self.last_server {
            if s.address == address && s.duid.as_bytes() == duid {
                return Arc::clone(s);
            }
        }
        let s = Arc::new(ServerId {
            duid: Duid::from(duid),
            address,
        });
        self.last_server = Some(Arc::clone(&s));
        s
    }

    /// The counters; clone it to read them from elsewhere while the classifier runs.
    pub fn stats(&self) -> &ClassifyStats {
        &self.stats
    }

    /// RELAY-FORWs waiting for their answer.
    pub fn pending_len(&self) -> usize {
        self.pending.len() + self.releases.len()
    }

    /// Entries of every structure of the memory (maps and order queues): what bounds it.
    pub fn memory_len(&self) -> usize {
        self.pending.entries.len()
            + self.pending.order.len()
            + self.releases.entries.len()
            + self.releases.order.len()
    }

    /// Feeds one snooped DHCPv6 message with its envelope (see the module doc for what is
    /// believed from where).
    ///
    /// The message is read in place, from the captured bytes: only what is kept is copied (a
    /// remembered RELAY-FORW, an observation, a withdrawal), so the many messages that teach
    /// nothing — refused, ignored, unmatched — cost no allocation.
    pub fn on_snooped(
        &mut self,
        now: Timestamp,
        msg: CheckedMessage<'_>,
        env: &Envelope,
    ) -> Option<Learned> {
        self.refusal = None;
        self.pending.expire(now, self.cfg.pending_ttl_ms);
        self.releases.expire(now, self.cfg.pending_ttl_ms);
        let outer = match msg.view() {
            MessageView::Relay(outer) => outer,
            MessageView::Client(reply) => {
                if reply.msg_type() == MessageType::REPLY && self.unicast_reply(env) {
                    return self.on_unicast_reply(now, reply);
                }
                self.stats.bump(ClassifyCounter::NotRelayed);
                return None;
            }
        };
        let chain = RelayChainView::of(msg);
        let Some(client) = chain.innermost() else {
            self.stats.bump(ClassifyCounter::Ignored);
            return None;
        };
        match outer.msg_type() {
            MessageType::RELAY_FORW => {
                if let Err(c) = self.forw_trusted(env) {
                    self.refuse(c);
                    return None;
                }
                self.on_forw(now, &chain, client);
                None
            }
            MessageType::RELAY_REPL if client.msg_type() == MessageType::REPLY => {
                if let Err(c) = self.repl_trusted(env) {
                    self.refuse(c);
                    return None;
                }
                self.on_reply(now, &chain, client, env.src)
            }
            MessageType::RELAY_REPL if client.msg_type() == MessageType::ADVERTISE => {
                // The server chose to advertise: a rapid-commit SOLICIT gets no REPLY now, so
                // its entry goes (only a server we trust may end it).
                if self.pending.solicits > 0
                    && self.repl_trusted(env).is_ok()
                    && let Some(duid) = client.options().checked_data(OptionCode::CLIENTID)
                {
                    self.pending.remove(&KeyRef::of(&client, duid, &chain));
                }
                self.stats.bump(ClassifyCounter::Ignored);
                None
            }
            _ => {
                self.stats.bump(ClassifyCounter::Ignored);
                None
            }
        }
    }

    /// Why the last message passed to [`on_message`](Self::on_message) was refused for where
    /// it came from (direction, source, destination, ports, or a REPLY without its FORW).
    pub fn refusal(&self) -> Option<ClassifyCounter> {
        self.refusal
    }

    fn refuse(&mut self, c: ClassifyCounter) {
        self.stats.bump(c);
        self.refusal = Some(c);
    }

    fn ports_ok(env: &Envelope) -> bool {
        env.src_port == SERVER_PORT && env.dst_port == SERVER_PORT
    }

    /// A RELAY-FORW is the relay's own: leaving this box, from its address, to a server.
    fn forw_trusted(&self, env: &Envelope) -> Result<(), ClassifyCounter> {
        if !env.outgoing {
            return Err(ClassifyCounter::WrongDirection);
        }
        if !Self::ports_ok(env) {
            return Err(ClassifyCounter::WrongPort);
        }
        if !self.trust.own.contains(&env.src) {
            return Err(ClassifyCounter::UntrustedSource);
        }
        if !(self.servers.contains(&env.dst) || env.dst == ALL_DHCP_SERVERS) {
            return Err(ClassifyCounter::WrongDestination);
        }
        Ok(())
    }

    /// A RELAY-REPL is a server's answer to this box: arriving, from a server, to our address.
    fn repl_trusted(&self, env: &Envelope) -> Result<(), ClassifyCounter> {
        if env.outgoing {
            return Err(ClassifyCounter::WrongDirection);
        }
        if !Self::ports_ok(env) {
            return Err(ClassifyCounter::WrongPort);
        }
        if !self.servers.contains(&env.src) {
            return Err(ClassifyCounter::UntrustedSource);
        }
        if !self.trust.own.contains(&env.dst) {
            return Err(ClassifyCounter::WrongDestination);
        }
        Ok(())
    }

    /// A REPLY a server sends a client directly (RFC 8415 §18.3.x after OPTION_UNICAST):
    /// arriving, from a configured server's port 547 to a client's port 546 at an address
    /// that is neither this box's nor multicast or link-local (a subscriber's).
    fn unicast_reply(&self, env: &Envelope) -> bool {
        !env.outgoing
            && env.src_port == SERVER_PORT
            && env.dst_port == CLIENT_PORT
            && self.servers.contains(&env.src)
            && !self.trust.own.contains(&env.dst)
            && !env.dst.is_multicast()
            && !env.dst.is_unicast_link_local()
            && !env.dst.is_unspecified()
            && !env.dst.is_loopback()
    }

    /// The leases a successful REPLY carries, or `None` (counted) when its top-level status is
    /// an error or it carries none: one reading for relayed and unicast REPLYs alike.
    fn reply_leases(&mut self, reply: ClientView<'_>) -> Option<Vec<ObservedLease>> {
        if reply
            .options()
            .checked_status_code()
            .is_some_and(|c| c != StatusCode::SUCCESS)
        {
            self.stats.bump(ClassifyCounter::ErrorStatus);
            return None;
        }
        let leases = leases_of(reply.options(), &mut self.stats);
        if leases.is_empty() {
            self.stats.bump(ClassifyCounter::Ignored);
            return None;
        }
        Some(leases)
    }

    /// A unicast REPLY is not through this box's relay level: nothing in it is bound. Each of
    /// its leases becomes a doubt (no holder known here: the cache task fills it), asked about
    /// on the link whose subscriber prefixes hold it.
    fn on_unicast_reply(&mut self, now: Timestamp, reply: ClientView<'_>) -> Option<Learned> {
        let Some(duid) = reply.options().checked_data(OptionCode::CLIENTID) else {
            self.stats.bump(ClassifyCounter::MissingId);
            return None;
        };
        let leases = self.reply_leases(reply)?;
        self.stats.bump(ClassifyCounter::UnicastReply);
        let doubts = leases
            .into_iter()
            .map(|l| {
                let link = self.trust.admission.link_of(&l.key);
                Doubt {
                    key: l.key,
                    reason: DoubtReason::Unicast,
                    holder: None,
                    claimant: Some(Duid::from(duid)),
                    link: link.map_or(Ipv6Addr::UNSPECIFIED, |r| r.link_address),
                    interface: link.map(|r| r.interface.clone()),
                    at: now,
                }
            })
            .collect();
        Some(Learned::Doubt(doubts))
    }

    fn on_forw(&mut self, now: Timestamp, chain: &RelayChainView<'_>, client: ClientView<'_>) {
        let Some(duid) = client.options().checked_data(OptionCode::CLIENTID) else {
            self.stats.bump(ClassifyCounter::MissingId);
            return;
        };
        if client.msg_type() == MessageType::SOLICIT
            && client
                .options()
                .checked_data(OptionCode::RAPID_COMMIT)
                .is_none()
        {
            // Answered only by an ADVERTISE, which binds nothing: nothing to remember.
            self.stats.bump(ClassifyCounter::RelayForw);
            return;
        }
        let releases = matches!(
            client.msg_type(),
            MessageType::RELEASE | MessageType::DECLINE
        );
        let named = if releases {
            leases_of(client.options(), &mut self.stats)
        } else {
            Vec::new()
        };
        let key = KeyRef::of(&client, duid, chain);
        let entry = Pending {
            client_type: client.msg_type(),
            relay: relay_data_of(chain),
            named,
            at: now,
        };
        self.stats.bump(ClassifyCounter::RelayForw);
        // A key lives in one memory only: a client reusing an id for another kind of message
        // replaces what it sent before.
        let (table, other) = if releases {
            (&mut self.releases, &mut self.pending)
        } else {
            (&mut self.pending, &mut self.releases)
        };
        other.remove(&key);
        for _ in 0..table.insert(key.owned(), entry) {
            self.stats.bump(ClassifyCounter::PendingEvicted);
        }
    }

    fn on_reply(
        &mut self,
        now: Timestamp,
        chain: &RelayChainView<'_>,
        reply: ClientView<'_>,
        sender: Ipv6Addr,
    ) -> Option<Learned> {
        let opts = reply.options();
        let (Some(duid), Some(server)) = (
            opts.checked_data(OptionCode::CLIENTID),
            opts.checked_data(OptionCode::SERVERID),
        ) else {
            self.stats.bump(ClassifyCounter::MissingId);
            return None;
        };
        let key = KeyRef::of(&reply, duid, chain);
        let Some((forw, remembered)) = self
            .releases
            .remove(&key)
            .or_else(|| self.pending.remove(&key))
        else {
            self.refuse(ClassifyCounter::ReplyUnmatched);
            return None;
        };
        // The remembered key's DUID is these same bytes: shared, not copied again.
        let duid = remembered.map_or_else(|| Duid::from(duid), |k| k.duid);
        if matches!(
            forw.client_type,
            MessageType::RELEASE | MessageType::DECLINE
        ) {
            return self.on_release_reply(now, chain, reply, forw, duid);
        }
        let leases = self.reply_leases(reply)?;
        // The REPL echoes this box's link/peer addresses and Interface-Id; the FORW adds the
        // Remote-Id, and the levels below ours as this box relayed them.
        let relay = relay_data_over(chain, forw.relay);
        self.stats.bump(ClassifyCounter::ReplyBind);
        Some(Learned::Bind(Observation {
            client_duid: duid,
            link: Link {
                address: chain.link_or_unspecified(),
                interface: None,
            },
            relay: Some(relay),
            server: self.server_id(server, sender),
            source: Source::Snoop,
            clt_time: None,
            base_time: None,
            srsn: self.cfg.srsn_option.and_then(|c| opts.checked_srsn(c)),
            complete: false,
            leases,
            arrival: now,
            query_address: None,
        }))
    }

    /// A REPLY to a RELEASE/DECLINE: what the server really gave up, on the link this box
    /// heard it. A wrapped one is refused unless its link has an LDRA in front (admission).
    fn on_release_reply(
        &mut self,
        now: Timestamp,
        chain: &RelayChainView<'_>,
        reply: ClientView<'_>,
        forw: Pending,
        duid: Duid,
    ) -> Option<Learned> {
        self.stats.bump(ClassifyCounter::ReplyRelease);
        if reply
            .options()
            .checked_status_code()
            .is_some_and(|c| c != StatusCode::SUCCESS)
        {
            self.stats.bump(ClassifyCounter::ErrorStatus);
            return None;
        }
        let link = chain.link_or_unspecified();
        if forw.relay.access.is_some() {
            let allowed =
                self.trust
                    .admission
                    .admit_wrapped_withdrawal(now, link, &forw.relay, &duid);
            if !allowed {
                self.stats.bump(ClassifyCounter::NestedRelay);
                return None;
            }
        }
        let not_done = ias_not_done(reply.options());
        let mut keys = Vec::with_capacity(forw.named.len());
        let mut iaids = Vec::with_capacity(forw.named.len());
        let mut doubts = Vec::new();
        for l in forw.named {
            if not_done.contains(&(l.ia, l.iaid)) {
                self.stats.bump(ClassifyCounter::IaNotReleased);
                // The holder asked, the server said it has no such binding for this client:
                // whatever the cache holds under that key is a doubt for the confirmer, never
                // a removal (only the server's answer about the key removes it).
                doubts.push(Doubt {
                    key: l.key,
                    reason: DoubtReason::ReleaseNotDone,
                    holder: None,
                    claimant: Some(duid.clone()),
                    link,
                    interface: None,
                    at: now,
                });
                continue;
            }
            keys.push(l.key);
            iaids.push(l.iaid);
        }
        if keys.is_empty() {
            return (!doubts.is_empty()).then_some(Learned::Doubt(doubts));
        }
        Some(Learned::Withdraw(
            Withdrawal {
                link: Some(link),
                iaids,
                keys,
                client_duid: Some(duid),
                reason: WithdrawReason::Released,
                arrival: now,
            },
            doubts,
        ))
    }
}

/// The IA_NA, IA_TA and IA_PD options of a checked list: (type, IAID, the IA's options).
/// Read with the view's IA scan, which compares codes before reading anything (no typed form
/// built for the options an IA list is not).
fn ias(opts: OptionsIter<'_>) -> impl Iterator<Item = (IaType, u32, OptionsIter<'_>)> {
    opts.checked_ias().filter_map(|ia| {
        let t = match ia.code {
            OptionCode::IA_NA => IaType::Na,
            OptionCode::IA_PD => IaType::Pd,
            OptionCode::IA_TA => IaType::Ta,
            _ => return None,
        };
        Some((t, ia.iaid, ia.options))
    })
}

/// The IAs (type, IAID) a REPLY gives a status other than Success: the server did not release
/// or decline what the client named there (NoBinding, RFC 8415 §18.3.7–18.3.8).
fn ias_not_done(opts: OptionsIter<'_>) -> Vec<(IaType, u32)> {
    ias(opts)
        .filter(|(_, _, o)| {
            o.checked_status_code()
                .is_some_and(|c| c != StatusCode::SUCCESS)
        })
        .map(|(t, iaid, _)| (t, iaid))
        .collect()
}

/// Every address and prefix in the IA_NA, IA_TA and IA_PD options of `opts`.
fn leases_of(opts: OptionsIter<'_>, stats: &mut ClassifyStats) -> Vec<ObservedLease> {
    let mut out = Vec::new();
    for (ia, iaid, inner) in ias(opts) {
        // An IA_PD delegates prefixes, the others assign addresses: only those are read.
        if ia == IaType::Pd {
            for p in inner.checked_ia_prefixes() {
                match p.prefix() {
                    Ok(prefix) => out.push(ObservedLease {
                        key: LeaseKey::Prefix(prefix),
                        ia,
                        iaid,
                        preferred: p.preferred,
                        valid: p.valid,
                    }),
                    Err(_) => stats.bump(ClassifyCounter::BadPrefix),
                }
            }
        } else {
            out.extend(inner.checked_ia_addrs().map(|a| ObservedLease {
                key: LeaseKey::Address(a.addr),
                ia,
                iaid,
                preferred: a.preferred,
                valid: a.valid,
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests;
