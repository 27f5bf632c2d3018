//! The unknown-source trigger: packets arriving on a subscriber-facing interface from a source
//! inside the link's subscriber prefixes that no cached address or delegated prefix covers become
//! [`TriggerEvent`] events, which the daemon turns into leasequeries by address (RFC 5007 §4.1.2.1,
//! with the link's link-address).
//!
//! Detection stays in the kernel, so normal traffic is never copied to user space: lqagent installs
//! an nftables table of its own ([`ruleset`]) with, per trigger interface, sets of known sources and
//! a rule sending anything else to `log group N` behind an nft `limit rate` — the kernel caps how
//! many reach us — and, in enforcement mode (RFC 8987 R-3 source verification, off by default),
//! dropping it. Link-local sources, DHCPv6 and ND are exempt. The logged packets (only their IPv6
//! header) are read over NFLOG netlink ([`nflog`], parsed here, bounds-checked), each as soon as
//! it is logged (queue threshold 1: no kernel flush timer). The sets follow the cache through
//! [`known`] in bounded batches, each one nf_tables transaction.
//!
//! Two writers, by what they write. The rule set (a handful of statements, written at start and
//! removed at stop) and the rare full resync go through `nft -f -`: `nft` is the documented
//! interface for expressions and rules, gives readable errors, and a resync may be far bigger
//! than a socket buffer. Set element updates — one per cache change that adds or removes a known
//! source, the steady traffic — are nf_tables netlink messages written by us ([`nfset`]): a
//! `NEWSETELEM`/`DELSETELEM` batch is a few dozen bytes of fixed layout, atomic like an `nft`
//! script, and costs one `sendmsg` instead of a fork and exec per batch (which, on a loaded box,
//! took CPU from the very path a subscriber waits on, and needed a batch timer to stay bounded).
//! A long-lived `nft -i` fed over a pipe was the other way to avoid the spawns; it was not taken
//! because nothing in its output says when a command has been applied or which one failed,
//! while every netlink message is acked by sequence number.
//!
//! [`shell`] is the tokio side: it owns the table (replaced on start, removed on shutdown), the
//! NFLOG socket and the set-sync task.

pub(crate) mod known;
pub mod nflog;
mod nfnl;
pub(crate) mod nfset;
pub(crate) mod nft;
pub mod ruleset;
pub(crate) mod shell;

use crate::label::labels;
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::prefix::Ipv6Prefix;

pub(crate) use shell::TriggerError;
pub use shell::{Trigger, TriggerHandle};

/// Trigger settings (the daemon fills group and enforcement from its configuration; the rest are defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerConfig {
    pub nflog_group: u16,
    /// Drop packets from unknown sources (source verification).
    pub enforcement: bool,
    /// Logged packets per second per link that the kernel lets through to us (`limit rate`).
    pub log_rate_per_sec: u32,
    pub log_burst: u32,
    /// Bytes copied per logged packet: the IPv6 header is all we read.
    pub snaplen: u32,
    /// NFLOG flush timeout, hundredths of a second: how long the kernel holds logged packets
    /// below the queue threshold. Moot at the default threshold of 1.
    pub nflog_flush_cs: u32,
    /// NFLOG messages the kernel batches before a flush. 1: every logged packet is sent at once.
    /// Batching bought nothing here — the rule's `limit rate` already caps how many packets
    /// reach us — and cost every unknown subscriber the flush timer (10–20 ms: a hundredth of a
    /// second rounded up to jiffies), most of its wait for a route.
    pub nflog_queue_threshold: u32,
    /// Receive buffer of the NFLOG socket, bytes.
    pub receive_buffer: usize,
    /// Events queued for the daemon; more are dropped and counted.
    pub event_queue: usize,
    /// The same (link, source) is reported at most once per window, milliseconds.
    pub dedupe_window_ms: u64,
    /// Slots of the dedupe table (fixed size: a flood of distinct sources overwrites, never grows).
    pub dedupe_slots: usize,
    /// Most element changes per set transaction.
    pub batch_max: usize,
    /// At least this long between two set transactions in a row, milliseconds; the first after
    /// a quiet spell never waits. 0 (the default): back to back — a transaction is one netlink
    /// round trip, and changes arriving during one already gather into the next.
    pub batch_interval_ms: u64,
    /// Dirty entries kept before falling back to a full resync.
    pub dirty_max: usize,
    /// A set transaction not answered within this (an `nft` run: killed) is counted as an
    /// error and followed by a resync, milliseconds.
    pub nft_timeout_ms: u64,
    /// The `nft` program, by absolute path (`[trigger] nft_path`).
    pub nft_program: String,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        TriggerConfig {
            nflog_group: 547,
            enforcement: false,
            log_rate_per_sec: 200,
            log_burst: 50,
            snaplen: 40,
            nflog_flush_cs: 1,
            nflog_queue_threshold: 1,
            receive_buffer: 1 << 20,
            event_queue: 1024,
            dedupe_window_ms: 1000,
            dedupe_slots: 4096,
            batch_max: 2048,
            batch_interval_ms: 0,
            dirty_max: 65_536,
            nft_timeout_ms: 10_000,
            nft_program: nft::DEFAULT_NFT.to_string(),
        }
    }
}

/// One subscriber link the trigger watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerLink {
    pub name: Arc<str>,
    pub interface: Arc<str>,
    pub link_address: Ipv6Addr,
    pub subscriber_prefixes: Vec<Ipv6Prefix>,
}

/// A packet from a source nothing in the cache covers, with which trigger link saw it and when.
/// The daemon turns it into its on-demand request (`daemon::ondemand::UnknownSource`), which
/// keeps only the source, the link-address and the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerEvent {
    /// Index into the trigger's links.
    pub link: usize,
    pub link_name: Arc<str>,
    pub interface: Arc<str>,
    /// The link-address to put in the leasequery.
    pub link_address: Ipv6Addr,
    pub source: Ipv6Addr,
    pub at: crate::time::Instant,
}

labels! {
    /// What the trigger counts, by [`TriggerCounter::label`].
    pub enum TriggerCounter {
        /// Unknown sources handed to the daemon.
        Events => "events",
        /// Reported again within the dedupe window: not passed on.
        Deduped => "deduped",
        /// Logged, but the cache knew the source by then (the kernel set lagged): not passed on.
        Known => "known",
        /// The event queue was full: dropped.
        Dropped => "dropped",
        /// NFLOG messages that did not parse.
        Malformed => "malformed",
        /// Logged packets not from one of our rules (unknown prefix, other group, outside the link).
        Foreign => "foreign",
        /// The kernel could not queue NFLOG messages for us (socket buffer overrun, ENOBUFS).
        Overrun => "overrun",
        /// Elements added to / removed from the known sets.
        SetAdds => "set_adds",
        SetRemoves => "set_removes",
        /// Full resyncs of the known sets.
        Resyncs => "resyncs",
        /// Set transactions (netlink updates, `nft -f -` installs and resyncs), and those that
        /// failed or timed out. The labels keep their old names for dashboards.
        NftRuns => "nft_runs",
        NftErrors => "nft_errors",
    }
}

/// The trigger's counters.
#[derive(Debug, Default)]
pub struct TriggerStats {
    counts: [AtomicU64; 12],
}

impl TriggerStats {
    pub fn get(&self, c: TriggerCounter) -> u64 {
        self.counts[c as usize].load(Ordering::Relaxed)
    }

    /// Every counter and its count (for a test's or a log's look at all of them at once).
    pub fn snapshot(&self) -> Vec<(TriggerCounter, u64)> {
        TriggerCounter::ALL
            .iter()
            .map(|c| (*c, self.get(*c)))
            .collect()
    }

    pub(crate) fn add(&self, c: TriggerCounter, n: u64) {
        self.counts[c as usize].fetch_add(n, Ordering::Relaxed);
    }
}
