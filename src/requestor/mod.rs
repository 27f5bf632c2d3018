//! RFC 5007 leasequery requestor: a sans-IO core deciding what to ask and when, and its UDP shell.
//!
//! - [`core`]: the state machine. Fed queries, datagrams and the current time; returns
//!   datagrams to send, the next timer, and finished [`QueryOutcome`]s. No I/O, no clock.
//! - [`retransmit`]: the RFC 8415 §15 schedule with LQ_TIMEOUT / LQ_MAX_RT / LQ_MAX_RC.
//! - [`limiter`]: token buckets and the negative cache that keep query volume low (RFC 5007 §5).
//! - `filter`: the classic-BPF socket filter that keeps everything but the servers' replies out
//!   of the socket's buffer (a flood at port 546 would drown them).
//! - [`udp`]: the tokio shell owning the socket (default `[::]:546`, because ISC dhcpd sends
//!   LEASEQUERY-REPLY to port 546 whatever port the query came from).
//!
//! Results are the wire's CLIENT_DATA with its context ([`ClientAnswer`]); turning them into cache
//! observations is `cache::from_wire`'s job, merging them the cache's. Counters
//! are the shared atomics of [`RequestorStats`], keyed by [`RequestorCounter`], [`DropReason`]
//! and [`RefuseReason`], which the daemon exports at scrape time.

pub(crate) mod core;
mod filter;
pub(crate) mod limiter;
mod msg;
mod pktinfo;
pub(crate) mod retransmit;
pub mod udp;

use crate::time::Duration;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::label::labels;
use crate::wire::{Duid, StatusCode};

pub use self::core::Requestor;
pub use limiter::Rate;
pub use retransmit::RetransmitParams;

/// Names one submitted query until its outcome is delivered: the requestor's handle for a
/// UDP leasequery and bulk's for a TCP one (not the wire transaction id, which is 24 bits and
/// per server). Bulk imports it from here; nothing here imports bulk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(u64);

impl QueryId {
    /// The id numbered `n`; whoever hands out ids keeps them unique.
    pub const fn new(n: u64) -> Self {
        Self(n)
    }

    /// Its number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// What to look up (RFC 5007 §4.1.2.1 query types 1 and 2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QueryKind {
    /// QUERY_BY_ADDRESS: who leases this address, or was delegated a prefix holding it.
    ByAddress(Ipv6Addr),
    /// QUERY_BY_CLIENTID: what this client (DUID) holds.
    ByClientId(Duid),
}

/// One lookup. Equal queries in flight at once share one transaction (deduplication), and a
/// query that ended without a binding is answered from the negative cache for a while.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Query {
    pub kind: QueryKind,
    /// The link-address in OPTION_LQ_QUERY; `::` lets the server search every link.
    pub link: Ipv6Addr,
    /// Ask for OPTION_LQ_RELAY_DATA with an ORO inside OPTION_LQ_QUERY.
    pub relay_data: bool,
}

impl Query {
    pub fn by_address(addr: Ipv6Addr) -> Self {
        Query {
            kind: QueryKind::ByAddress(addr),
            link: Ipv6Addr::UNSPECIFIED,
            relay_data: false,
        }
    }

    pub fn by_client_id(duid: impl Into<Duid>) -> Self {
        Query {
            kind: QueryKind::ByClientId(duid.into()),
            link: Ipv6Addr::UNSPECIFIED,
            relay_data: false,
        }
    }

    pub fn with_link(mut self, link: Ipv6Addr) -> Self {
        self.link = link;
        self
    }

    pub fn with_relay_data(mut self, yes: bool) -> Self {
        self.relay_data = yes;
        self
    }
}

/// A bound answer's CLIENT_DATA with its envelope: the carrier bulk uses too. The requestor
/// does not interpret the leases: `cache::from_wire` is the one conversion.
pub use crate::cache::from_wire::ClientAnswer;

/// What one server said for one exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Success with OPTION_CLIENT_DATA.
    Bound(Box<ClientAnswer>),
    /// Success without client data or client links (or with a CLIENT_DATA lacking CLT_TIME,
    /// which RFC 5007 §4.3.3 makes us discard): this server knows no binding.
    NoBinding,
    /// Success with OPTION_LQ_CLIENT_LINK: the client is on these links; follow-up queries,
    /// one per link, were sent to the same server (their answers follow in the list).
    ClientLinks(Vec<Ipv6Addr>),
    /// An error status (RFC 5007 §4.1.2.7, RFC 8415 §21.13) and its message.
    Status { code: StatusCode, message: String },
    /// No valid reply after every transmission.
    NoAnswer,
}

/// One server's answer to one exchange of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAnswer {
    pub server: SocketAddr,
    /// The server's DUID (OPTION_SERVERID), when it answered.
    pub server_duid: Option<Duid>,
    /// The link-address this exchange asked with.
    pub link: Ipv6Addr,
    pub answer: Answer,
    /// Transmissions of this exchange.
    pub attempts: u32,
    /// From the first transmission to the reply (or to giving up).
    pub elapsed: Duration,
}

labels! {
    /// The query's overall result, strongest first: any binding beats "no binding", which beats an
    /// error status, which beats silence. (What the servers answered; what the cache then makes
    /// of a binding is the merge's verdict, `cache::merge`.)
    #[derive(serde::Serialize)]
    #[serde(rename_all = "snake_case")]
    pub enum AnswerVerdict {
        Bound => "bound",
        NoBinding => "no_binding",
        Error => "error",
        NoAnswer => "no_answer",
    }
}

/// A finished query: every answer collected, in the order they came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryOutcome {
    pub query: Query,
    pub verdict: AnswerVerdict,
    pub answers: Vec<ServerAnswer>,
}

impl QueryOutcome {
    /// Every binding any server returned.
    pub fn bindings(&self) -> impl Iterator<Item = &ClientAnswer> {
        self.answers.iter().filter_map(|a| match &a.answer {
            Answer::Bound(b) => Some(&**b),
            _ => None,
        })
    }
}

/// How to use several servers (RFC 5007 §4.3.2 leaves it to local policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// One server at a time in configured order; the next after "no binding", exhausted
    /// retransmissions, or NotAllowed / NotConfigured / UnknownQueryType. Servers with split
    /// pools hold disjoint bindings: one server's "no binding" is an answer about that server.
    #[default]
    Failover,
    /// All servers at once; collect every answer until all replied or gave up.
    Parallel,
}

/// Requestor settings (composed into the daemon's config by `config`).
#[derive(Debug, Clone)]
pub struct RequestorConfig {
    /// Servers, in failover order.
    pub servers: Vec<SocketAddr>,
    pub policy: Policy,
    /// Our DUID, sent in OPTION_CLIENTID of every LEASEQUERY.
    pub duid: Duid,
    pub retransmit: RetransmitParams,
    /// Queries (not exchanges) in flight at once; beyond it new queries are refused.
    pub max_pending: usize,
    /// How many links of one OPTION_LQ_CLIENT_LINK are followed up.
    pub max_client_links: usize,
    /// How long a lookup that ended without a binding ("no binding" from every server, an
    /// error status, silence) is answered locally the first time (zero disables); doubled per
    /// repeated failure of the same lookup up to `negative_ttl × negative_max_factor`.
    pub negative_ttl: Duration,
    pub negative_max_factor: u32,
    pub negative_capacity: usize,
    /// Cap on new queries per second, all links together (`None`: no cap).
    pub global_rate: Option<Rate>,
    /// Cap on new queries per second per link-address (`None`: no cap).
    pub link_rate: Option<Rate>,
    /// How many links' buckets are kept at most.
    pub max_links: usize,
    /// Replies to a query sent to a multicast destination are accepted from these sources
    /// (a configured server's unicast address).
    pub multicast_sources: Vec<SocketAddr>,
    /// Option code of the server reply sequence number (a local extension; off when `None`).
    pub srsn_option: Option<u16>,
}

impl Default for RequestorConfig {
    fn default() -> Self {
        RequestorConfig {
            servers: Vec::new(),
            policy: Policy::Failover,
            duid: Duid::default(),
            retransmit: RetransmitParams::LEASEQUERY,
            max_pending: 4096,
            max_client_links: 16,
            negative_ttl: Duration::from_secs(30),
            negative_max_factor: 16,
            negative_capacity: 65536,
            global_rate: Some(Rate {
                per_sec: 500.0,
                burst: 1000.0,
            }),
            link_rate: Some(Rate {
                per_sec: 50.0,
                burst: 100.0,
            }),
            max_links: 65536,
            multicast_sources: Vec::new(),
            srsn_option: None,
        }
    }
}

labels! {
    /// Why a received datagram was dropped (RFC 5007 §4.2, §4.3.3).
    pub enum DropReason {
        Malformed => "malformed",
        NotReply => "not_reply",
        LeasequeryReceived => "leasequery_received",
        UnknownXid => "unknown_xid",
        Duplicate => "duplicate",
        WrongSource => "wrong_source",
        NoServerId => "no_serverid",
        NoClientId => "no_clientid",
        ForeignClientId => "foreign_clientid",
        NoCltTime => "client_data_without_clt_time",
        /// Not a datagram: an IAPREFIX in a CLIENT_DATA that names no prefix (a length over
        /// 128), skipped while the answer's other leases are used (one count per IAPREFIX;
        /// `cache::from_wire::observed_leases` has the policy).
        BadPrefix => "bad_prefix",
        WrongInterface => "wrong_interface",
        /// Dropped by the kernel at our socket before we read it: refused by the socket filter
        /// (not from a configured server's address and port: junk at port 546) or the receive
        /// buffer was full (replies faster than we read, or a flood forging a server's source —
        /// then replies drown too and cost retransmissions). The kernel counts both in one
        /// number (SO_RXQ_OVFL, SO_MEMINFO), so they cannot be told apart here.
        KernelDropped => "kernel_dropped",
    }
}

labels! {
    /// Why a new query was refused without being sent.
    pub enum RefuseReason {
        PendingFull => "pending_full",
        GlobalRate => "global_rate",
        LinkRate => "link_rate",
        LinkTableFull => "link_table_full",
        NoServers => "no_servers",
    }
}

labels! {
    /// What the requestor counts besides drops, refusals and verdicts.
    pub enum RequestorCounter {
        /// Queries started (each may use several exchanges).
        Queries => "queries",
        /// Submissions that joined an equal query already in flight.
        Deduplicated => "deduplicated",
        /// Submissions answered by the negative cache.
        NegativeHits => "negative_hits",
        /// Datagrams sent, first transmissions and retransmissions.
        Sent => "sent",
        Retransmits => "retransmits",
        /// Datagrams the socket refused to send.
        SendErrors => "send_errors",
        /// Exchanges that ended without a valid reply.
        Timeouts => "timeouts",
        /// Replies accepted.
        Replies => "replies",
        /// Links of an OPTION_LQ_CLIENT_LINK left out over `max_client_links`.
        ClientLinksDropped => "client_links_dropped",
    }
}

/// Reads the socket's running count of datagrams the kernel dropped (SO_MEMINFO).
type KernelDropReader = Box<dyn Fn() -> Option<u32> + Send + Sync>;

/// The requestor's counters: atomics the core bumps where it counts, shared (`Arc`) with
/// whoever reads them (metrics at scrape time, tests) and with the next run of the task, so a
/// restart neither resets them nor counts a past kernel drop twice.
#[derive(Default)]
pub struct RequestorStats {
    counters: [AtomicU64; RequestorCounter::ALL.len()],
    /// Negative-cache entries evicted to make room (by the current run's cache).
    negative_evicted: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    refused: [AtomicU64; RefuseReason::ALL.len()],
    verdicts: [AtomicU64; AnswerVerdict::ALL.len()],
    /// The socket's kernel drop count (a wrapping u32) as last counted.
    kernel_seen: AtomicU32,
    kernel_reader: OnceLock<KernelDropReader>,
}

impl std::fmt::Debug for RequestorStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestorStats")
            .field("queries", &self.get(RequestorCounter::Queries))
            .field("dropped", &self.dropped_total())
            .finish_non_exhaustive()
    }
}

impl RequestorStats {
    pub fn get(&self, c: RequestorCounter) -> u64 {
        self.counters[c as usize].load(Ordering::Relaxed)
    }

    pub fn negative_evicted(&self) -> u64 {
        self.negative_evicted.load(Ordering::Relaxed)
    }

    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped[r as usize].load(Ordering::Relaxed)
    }

    pub fn refused(&self, r: RefuseReason) -> u64 {
        self.refused[r as usize].load(Ordering::Relaxed)
    }

    pub fn verdicts(&self, v: AnswerVerdict) -> u64 {
        self.verdicts[v as usize].load(Ordering::Relaxed)
    }

    pub fn dropped_total(&self) -> u64 {
        DropReason::ALL.iter().map(|r| self.dropped(*r)).sum()
    }

    /// Count what the kernel dropped at the socket since last counted. The kernel drops
    /// (its socket filter, a full buffer) with no datagram to tell the task, so whoever reads
    /// `kernel_dropped` (a scrape) asks the socket first; the task also counts the total a
    /// datagram carries. A no-op until the shell has set the reader.
    pub fn count_kernel_drops(&self) {
        if let Some(total) = self.kernel_reader.get().and_then(|read| read()) {
            self.kernel_total(total);
        }
    }

    /// Have `read` tell the socket's kernel drop count (set once, by the shell that owns it).
    pub(crate) fn read_kernel_drops_with(&self, read: KernelDropReader) {
        let _ = self.kernel_reader.set(read);
    }

    /// The kernel's running (wrapping) drop count is `total`: count what is new. Only a total
    /// ahead of the last counted one moves it on, so a scrape and the task reading the count
    /// at once never count backwards (nor a wrap as four billion drops).
    pub(crate) fn kernel_total(&self, total: u32) {
        let mut seen = self.kernel_seen.load(Ordering::Relaxed);
        loop {
            let new = total.wrapping_sub(seen);
            if new == 0 || new > u32::MAX / 2 {
                return;
            }
            match self.kernel_seen.compare_exchange_weak(
                seen,
                total,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return self.count_drops(DropReason::KernelDropped, u64::from(new)),
                Err(now) => seen = now,
            }
        }
    }

    pub(crate) fn count(&self, c: RequestorCounter) {
        self.add(c, 1);
    }

    pub(crate) fn add(&self, c: RequestorCounter, n: u64) {
        self.counters[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set_negative_evicted(&self, n: u64) {
        self.negative_evicted.store(n, Ordering::Relaxed);
    }

    pub(crate) fn count_drop(&self, r: DropReason) {
        self.count_drops(r, 1);
    }

    pub(crate) fn count_drops(&self, r: DropReason, n: u64) {
        self.dropped[r as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn refuse(&self, r: RefuseReason) {
        self.refused[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn verdict(&self, v: AnswerVerdict) {
        self.verdicts[v as usize].fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The task (a datagram's SO_RXQ_OVFL) and a scrape (SO_MEMINFO) both report the kernel's
    /// running count: a total older than one already counted moves nothing, a wrap counts
    /// only what is new, and what the reader reports is counted at a read.
    #[test]
    fn kernel_drop_totals_count_only_what_is_new() {
        let s = RequestorStats::default();
        let kernel = || s.dropped(DropReason::KernelDropped);
        s.kernel_total(10);
        assert_eq!(kernel(), 10);
        s.kernel_total(7);
        assert_eq!(
            kernel(),
            10,
            "an older total (read before the last) is not a drop"
        );
        s.kernel_total(10);
        assert_eq!(kernel(), 10);
        s.kernel_total(12);
        assert_eq!(kernel(), 12);

        // Near the wrap (reached in steps of less than half the range, as a real count is).
        let w = RequestorStats::default();
        w.kernel_total(u32::MAX / 2);
        w.kernel_total(u32::MAX - 1);
        w.kernel_total(3);
        assert_eq!(
            w.dropped(DropReason::KernelDropped),
            u64::from(u32::MAX - 1) + 5,
            "the wrap counts 5 more"
        );

        let total = std::sync::Arc::new(AtomicU32::new(0));
        let t = total.clone();
        s.read_kernel_drops_with(Box::new(move || Some(t.load(Ordering::Relaxed))));
        total.store(20, Ordering::Relaxed);
        s.count_kernel_drops();
        assert_eq!(kernel(), 20, "read from the socket when the stats are read");
    }
}
