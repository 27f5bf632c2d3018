//! Route programming over rtnetlink: makes the kernel's routes agree with the cache.
//!
//! What the kernel gets (RFC 8987 ): for each IA_NA address a /128 on the interface of the
//! subscriber's link, no gateway; for each delegated prefix a route of its exact length via the
//! requesting router's address on that interface. Every route carries our route protocol number
//! ([`InstallerConfig::protocol`], default [`DEFAULT_PROTOCOL`]), our table and our metric, and
//! nothing here ever adds, replaces or deletes a route with another protocol number — deletes name
//! the protocol (the kernel then refuses to match anyone else's route), and a replace is only sent
//! for a route a dump showed to be ours.
//!
//! The input is kept independent of the cache: [`RouteSpec`]s and [`RouteChange`]s, plus "the
//! whole desired set" for reconcile. The layers:
//! - [`plan`] (pure): desired vs actual → a [`plan::RoutePlan`] of [`plan::RouteOp`]s, error
//!   classification; tested without root.
//! - [`link`] (pure): which interface a link-address or interface name means.
//! - `book` (pure): the installer's state — desired, installed, parked, inherited routes, retry
//!   deadlines, owed resync — and every decision on it; fed events and outcomes, returns ops.
//! - [`netlink`]: the rtnetlink messages we send and parse (each says which `ip` command it equals).
//! - [`install`]: the [`install::Installer`] shell: runs the book's ops (batches, acks, errors
//!   matched to ops), dumps, link table refresh.
//! - [`watch`]: link/address notifications that unpark routes.
//! - [`reconcile`]: the long-running task tying changes, notifications and periodic reconcile.
//!
//! ## Protocol number
//! Linux's `include/uapi/linux/rtnetlink.h` assigns 0–4, 8–18, 42, 99, 186–189 and 192; iproute2's
//! `rt_protos` lists the same, and FRR claims 186–198 in its own `rt_protos.d`. The default, 211,
//! is in none of those lists (see `docs/routes.md`).

mod book;
pub(crate) mod install;
pub(crate) mod link;
pub(crate) mod mapper;
pub(crate) mod netlink;
pub(crate) mod plan;
pub mod reconcile;
pub(crate) mod routesock;
pub(crate) mod stats;
pub mod unreachable;
pub(crate) mod watch;

use std::net::Ipv6Addr;
use std::sync::Arc;

use crate::prefix::Ipv6Prefix;
use crate::time::{Duration, Instant};

pub use install::Installer;
pub(crate) use link::LinkMapping;
pub use mapper::RouteMapper;
pub(crate) use stats::InstallerStats;
pub use stats::RouteCounter;

/// Default route protocol number (`proto 211` in `ip route`): unassigned by Linux, iproute2 and FRR.
pub const DEFAULT_PROTOCOL: u8 = 211;
/// The kernel's main table (`RT_TABLE_MAIN`).
pub(crate) const TABLE_MAIN: u32 = 254;

/// Which interface a route leaves by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LinkRef {
    /// The relay's address on the subscriber link (RELAY-FORW link-address). Resolved by
    /// [`InstallerConfig::links`] first, else to the interface holding an address whose prefix
    /// contains it (longest prefix wins; a tie between interfaces is unresolvable).
    LinkAddress(Ipv6Addr),
    /// An interface by name, shared: the cache holds each interface name once
    /// (`RouteView::interface`) and every route on that interface points at it, so a route
    /// spec made per lease allocates nothing for its link (a `String` per spec was an
    /// allocation and a free per route, and a copy in the installer's desired set).
    Interface(Arc<str>),
}

impl std::fmt::Display for LinkRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkRef::LinkAddress(a) => write!(f, "link-address {a}"),
            LinkRef::Interface(n) => write!(f, "interface {n}"),
        }
    }
}

/// One route the cache wants in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// The destination: an IA_NA address as /128, or a delegated prefix with its exact length.
    pub dst: Ipv6Prefix,
    /// Next hop: `None` for an IA_NA /128 (directly on the link), the requesting router's address
    /// on the link for a delegated prefix.
    pub via: Option<Ipv6Addr>,
    /// The subscriber link.
    pub link: LinkRef,
    /// End of the valid lifetime (`None` = infinite). Mirrored into RTA_EXPIRES only when
    /// [`InstallerConfig::expiry`] is on.
    pub valid_until: Option<Instant>,
}

impl RouteSpec {
    /// The /128 for an IA_NA address on `link`.
    pub fn address(addr: Ipv6Addr, link: LinkRef) -> RouteSpec {
        RouteSpec {
            dst: Ipv6Prefix::host(addr),
            via: None,
            link,
            valid_until: None,
        }
    }

    /// The route for a delegated prefix via the requesting router `next_hop` on `link`.
    pub fn delegated(prefix: Ipv6Prefix, next_hop: Ipv6Addr, link: LinkRef) -> RouteSpec {
        RouteSpec {
            dst: prefix,
            via: Some(next_hop),
            link,
            valid_until: None,
        }
    }

    /// The same route with a valid-lifetime deadline.
    pub fn valid_until(mut self, deadline: Instant) -> RouteSpec {
        self.valid_until = Some(deadline);
        self
    }
}

/// A change the cache asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    /// Add the route, or change it to this one (a new next hop replaces the old route).
    Upsert(RouteSpec),
    /// Remove our route for this destination (release, expiry).
    Withdraw(Ipv6Prefix),
    /// Nobody holds this destination, says a RELEASE/DECLINE or zero lifetime snooped from
    /// `link`, or (`link` `None`) a server's answer to a confirming leasequery: remove our route
    /// for it if it is one inherited from before the start (the cache holds no lease for it)
    /// and, when `link` is given, sits on that link's interface — and, when `via` (the address
    /// the message's client sent from) is given and the route has a next hop, goes via it. A
    /// desired route is not touched.
    WithdrawInherited {
        dst: Ipv6Prefix,
        link: Option<LinkRef>,
        via: Option<Ipv6Addr>,
    },
}

/// Installer settings; `src/config.rs` composes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallerConfig {
    /// Routing table (254 = main).
    pub table: u32,
    /// Route metric (`metric` in `ip route`).
    pub metric: u32,
    /// Route protocol number that marks our routes.
    pub protocol: u8,
    /// Mirror the valid lifetime into RTA_EXPIRES so the kernel drops a route the agent forgot.
    pub expiry: bool,
    /// Route messages per netlink datagram.
    pub batch_size: usize,
    /// Datagrams sent before the first acknowledgement must be back.
    pub max_in_flight: usize,
    /// How long to wait for each batch's acknowledgement (and each dump message).
    pub ack_timeout: Duration,
    /// Receive buffer in bytes of each of the installer's netlink sockets (dumps, route
    /// answers; SO_RCVBUFFORCE as root, else SO_RCVBUF).
    pub recv_buffer: usize,
    /// Period of the full reconcile against a dump of our routes.
    pub reconcile_interval: Duration,
    /// First retry delay after a failed route; doubles per attempt.
    pub retry_base: Duration,
    /// Cap of the retry delay.
    pub retry_max: Duration,
    /// Upper bound of desired routes; upserts past it are dropped and counted.
    pub max_routes: usize,
    /// Link-address → interface mappings, checked before automatic resolution.
    pub links: Vec<LinkMapping>,
    /// Log what would be done, change nothing.
    pub dry_run: bool,
    /// Longest time after start that routes of ours nothing desires are kept as "inherited"
    /// rather than deleted (zero: never inherit). Ended early by
    /// [`Installer::end_inheritance`] once recovery is complete.
    pub inherit_grace: Duration,
}

impl Default for InstallerConfig {
    fn default() -> Self {
        InstallerConfig {
            table: TABLE_MAIN,
            metric: 1024,
            protocol: DEFAULT_PROTOCOL,
            expiry: false,
            batch_size: 256,
            max_in_flight: 8,
            ack_timeout: Duration::from_secs(2),
            recv_buffer: 8 << 20,
            reconcile_interval: Duration::from_secs(300),
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
            max_routes: 2_000_000,
            links: Vec::new(),
            dry_run: false,
            inherit_grace: Duration::ZERO,
        }
    }
}

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    #[error("rtnetlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("rtnetlink connection closed while {0}")]
    ConnectionClosed(&'static str),
    #[error("no answer from the kernel within {timeout:?} while {what}")]
    Timeout {
        what: &'static str,
        timeout: Duration,
    },
    #[error("kernel refused {what}: {}", std::io::Error::from_raw_os_error(*errno))]
    Refused { what: &'static str, errno: i32 },
    #[error("cannot decode kernel message while {what}: {detail}")]
    Decode { what: &'static str, detail: String },
}
