//! RFC 5460 bulk leasequery requestor over TCP: a sans-IO core and its TCP shell.
//!
//! [`core`] holds one connection's protocol state (queries, REPLY → DATA* → DONE, statuses,
//! BULK_LQ_DATA_TIMEOUT); [`tcp`] drives one connection per server with attempts and
//! backoff, every server in parallel, streaming each binding out through a bounded channel
//! as it arrives; [`stats`] counts progress; [`recovery`] runs it at start, [`linkup`] when a
//! subscriber link comes up, and turns each binding into the cache's input with the cache's
//! own CLIENT_DATA conversion (`cache::from_wire`).

pub mod core;
pub mod linkup;
pub mod recovery;
pub mod stats;
pub mod tcp;

use crate::time::Duration;

use crate::wire::Duid;

/// RFC 5460 §6.3 BULK_LQ_DATA_TIMEOUT.
pub(crate) const BULK_LQ_DATA_TIMEOUT: Duration = Duration::from_secs(300);
/// RFC 5460 §7.1 BULK_LQ_MAX_CONNS (we use one connection per server per recovery at a time;
/// `stats::BulkStats` bounds them all together).
pub const BULK_LQ_MAX_CONNS: usize = 10;

/// Bulk leasequery settings (the daemon derives them from its configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkConfig {
    /// Our DUID, sent as CLIENTID in every query.
    pub requestor_duid: Duid,
    /// Send all of a server's queries at once on its connection (off by default: some
    /// servers silently drop queries pipelined behind another).
    pub pipelining: bool,
    /// Longest wait for the next message of a query in flight.
    pub data_timeout: Duration,
    /// Longest wait for a TCP connection to a server.
    pub connect_timeout: Duration,
    /// Attempts per query before giving up (operators use hundreds at boot).
    pub max_attempts: u32,
    /// First wait between attempts; doubles after each attempt without progress.
    pub retry_initial: Duration,
    /// Longest wait between attempts.
    pub retry_max: Duration,
    /// Bindings in flight between the TCP readers and the cache.
    pub channel_capacity: usize,
    /// Server reply sequence number option code (local extension; off when `None`).
    pub srsn_option: Option<u16>,
    /// The local address connections come from (`[requestor] source_address`); `None`: the
    /// kernel picks per route.
    pub source_address: Option<std::net::Ipv6Addr>,
    /// How long a subscriber link must stay up before its link-up recovery starts.
    pub linkup_debounce: Duration,
}

impl Default for BulkConfig {
    fn default() -> Self {
        BulkConfig {
            requestor_duid: Duid::default(),
            pipelining: false,
            data_timeout: BULK_LQ_DATA_TIMEOUT,
            connect_timeout: Duration::from_secs(5),
            max_attempts: 120,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            channel_capacity: 1024,
            srsn_option: None,
            source_address: None,
            linkup_debounce: linkup::LINKUP_DEBOUNCE,
        }
    }
}
