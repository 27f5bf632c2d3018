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
//! are the plain [`RequestorStats`], labelled by [`DropReason::label`] and
//! [`RefuseReason::label`], for `metrics` to export.

pub(crate) mod core;
mod filter;
pub(crate) mod limiter;
mod msg;
mod pktinfo;
pub(crate) mod retransmit;
pub mod udp;

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::label::labels;
use crate::wire::StatusCode;

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
    ByClientId(Vec<u8>),
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

    pub fn by_client_id(duid: Vec<u8>) -> Self {
        Query {
            kind: QueryKind::ByClientId(duid),
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
    pub server_duid: Option<Vec<u8>>,
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
    pub duid: Vec<u8>,
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
            duid: Vec::new(),
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

/// The requestor's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestorStats {
    /// Queries started (each may use several exchanges).
    pub queries: u64,
    /// Submissions that joined an equal query already in flight.
    pub deduplicated: u64,
    /// Submissions answered by the negative cache.
    pub negative_hits: u64,
    /// Negative-cache entries evicted to make room.
    pub negative_evicted: u64,
    /// Datagrams sent, first transmissions and retransmissions.
    pub sent: u64,
    pub retransmits: u64,
    /// Datagrams the socket refused to send.
    pub send_errors: u64,
    /// Exchanges that ended without a valid reply.
    pub timeouts: u64,
    /// Replies accepted.
    pub replies: u64,
    /// Links of an OPTION_LQ_CLIENT_LINK left out over `max_client_links`.
    pub client_links_dropped: u64,
    dropped: [u64; DropReason::ALL.len()],
    refused: [u64; RefuseReason::ALL.len()],
    verdicts: [u64; 4],
}

impl RequestorStats {
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped[r as usize]
    }

    pub fn refused(&self, r: RefuseReason) -> u64 {
        self.refused[r as usize]
    }

    pub fn verdicts(&self, v: AnswerVerdict) -> u64 {
        self.verdicts[v as usize]
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    pub(crate) fn drop(&mut self, r: DropReason) {
        self.dropped[r as usize] += 1;
    }

    pub(crate) fn drop_n(&mut self, r: DropReason, n: u64) {
        self.dropped[r as usize] += n;
    }

    pub(crate) fn refuse(&mut self, r: RefuseReason) {
        self.refused[r as usize] += 1;
    }

    pub(crate) fn verdict(&mut self, v: AnswerVerdict) {
        self.verdicts[v as usize] += 1;
    }
}
