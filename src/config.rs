//! The operator's configuration: one TOML file turned, in two stages, into a validated [`Config`].
//!
//! Stage one (`file`) is the file's shape with serde and `deny_unknown_fields`, so a misspelt key
//! is an error; stage two (`validate`) turns strings into addresses, prefixes, DUIDs and
//! durations and checks ranges and cross-references. Every error names the key path it is about
//! (`servers[1].address: not an IPv6 address`), in both stages. Defaults live in one place
//! (`file`'s `Default` impls) and [`Config::to_toml`] prints the effective configuration, which
//! `lqagent check-config` shows. The per-module settings (`RequestorSection` and friends) are
//! plain data: the daemon maps them onto each module's own `...Config`.
//!
//! Reference of every key: `docs/config.md`. Sample: `deploy/lqagent.toml`.

use crate::label::labels;
use crate::time::Duration;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::prefix::Ipv6Prefix;
use crate::wire::{Duid, LeasequeryType};

mod file;
pub(crate) mod host;
mod validate;

pub use file::{DEFAULT_CONTROL_SOCKET, DEFAULT_STATE_DIR};
pub(crate) use validate::interface_id_text;

/// Where `lqagent` looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/lqagent/lqagent.toml";

/// Why a configuration was refused. The `key` is a path such as `links[0].link_address`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// TOML syntax, a wrong type or an unknown key (stage one).
    #[error("{key}: {message} (line {line})")]
    Syntax {
        key: String,
        message: String,
        line: usize,
    },
    /// A value of the right type that is not acceptable (stage two).
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    /// The key path the error is about (`(file)` for read errors).
    pub fn key(&self) -> &str {
        match self {
            ConfigError::Read { .. } => "(file)",
            ConfigError::Syntax { key, .. } | ConfigError::Invalid { key, .. } => key,
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where persisted state lives (binding snapshot). Default `/var/lib/lqagent`.
    pub state_dir: PathBuf,
    /// Leasequery servers, in failover order. At least one.
    pub servers: Vec<Server>,
    /// How queries are spread over `servers`.
    pub policy: ServerPolicy,
    pub identity: IdentitySection,
    pub requestor: RequestorSection,
    pub limits: LimitsSection,
    pub bulk: BulkSection,
    pub routes: RoutesSection,
    pub snoop: SnoopSection,
    pub trigger: TriggerSection,
    pub links: Vec<LinkConfig>,
    pub metrics: MetricsSection,
    pub control: ControlSection,
    pub log: LogSection,
    pub leasequery: LeasequerySection,
}

/// One DHCPv6 server that answers leasequery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub address: Ipv6Addr,
    /// Label for logs and metrics; defaults to the address.
    pub name: String,
    /// Whether this server's leasequery answers list every lease of the client on the link (RFC
    /// 5007 §4.1.2.2), so that a lease it omits is gone (merge rule R7). Off by default: ISC
    /// dhcpd 4.4 and Kea 3 answer a query by address with that lease only.
    pub complete_answers: bool,
}

labels! {
    /// Which servers a query goes to.
    pub enum ServerPolicy {
        /// Ask the first server; on timeout go to the next (RFC 5007 section 4.1.1 leaves the choice open).
        Failover => "failover",
        /// Ask every server at once and merge the answers.
        Parallel => "parallel",
    }
}

/// Our own DUID (CLIENTID in queries) and the relay's (bulk query by relay-id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentitySection {
    /// None: the daemon derives a DUID-LL from the first snoop interface.
    pub client_duid: Option<Duid>,
    /// The relay DUID for RFC 5460 QUERY_BY_RELAY_ID; needed when `bulk.queries` has `relay-id`.
    pub relay_duid: Option<Duid>,
}

/// RFC 5007 section 4.1.1 retransmission: LQ_TIMEOUT, LQ_MAX_RT, LQ_MAX_RC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestorSection {
    /// First retransmission timeout (LQ_TIMEOUT, default 1 s), 1–10 s.
    pub timeout: Duration,
    /// Cap on the doubling timeout (LQ_MAX_RT, default 10 s), 1–10 s, not below `timeout`.
    pub max_timeout: Duration,
    /// Transmissions per server (LQ_MAX_RC, default 5), 1–10.
    pub attempts: u8,
    /// The address leasequeries come from (UDP and bulk TCP sockets bind to it). Servers
    /// authorize requesters by address; `None`: the kernel picks per route.
    pub source_address: Option<std::net::Ipv6Addr>,
}

/// Rate limits and table bounds for on-demand queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsSection {
    /// Leasequeries per second over all links.
    pub global_qps: u32,
    /// Leasequeries per second per link.
    pub per_link_qps: u32,
    /// Most queries in flight at once (pending table size).
    pub pending_max: usize,
    /// How long a "no binding" answer is remembered.
    pub negative_ttl: Duration,
    /// Cache caps (RFC 8987 G-5..G-7, merge rule R10): past one a new binding is refused,
    /// existing ones are kept. Delegated prefixes per client DUID.
    pub max_prefixes_per_client: usize,
    /// Addresses (IA_NA, IA_TA) per client DUID.
    pub max_addresses_per_client: usize,
    /// Bindings per link (relay link-address).
    pub max_bindings_per_link: usize,
    /// Bindings learned through one local subscriber interface (port): unlike the per-client
    /// caps it holds however many DUIDs an attacker on that port invents.
    pub max_bindings_per_interface: usize,
    /// Bindings in the whole cache.
    pub max_bindings: usize,
}

/// An RFC 4649 remote-id: enterprise number and the relay's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteId {
    pub enterprise: u32,
    pub id: Vec<u8>,
}

/// RFC 5460 bulk leasequery over TCP, run at start-up to recover the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkSection {
    pub enabled: bool,
    /// The RFC 5460 query types asked: `RelayId` with `identity.relay_duid`, `LinkAddress` once
    /// per configured link, `RemoteId` once per `remote_ids` entry.
    pub queries: Vec<LeasequeryType>,
    /// Attempts per bulk query before it is given up, 1–1000 (operators use hundreds at boot,
    /// while the servers come up too).
    pub attempts: u16,
    pub connect_timeout: Duration,
    /// BULK_LQ_DATA_TIMEOUT (RFC 5460 section 6.3, default 300 s).
    pub data_timeout: Duration,
    /// Queries sent on one connection before the first answer is complete (1 = no pipelining).
    pub pipeline_depth: u8,
    pub remote_ids: Vec<RemoteId>,
    /// Bulk connections open at once over every server and recovery (start-up and link-up),
    /// 1–1024: a flapping port or many links coming up must not exhaust file descriptors.
    pub max_connections: u16,
}

/// How bindings become kernel routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutesSection {
    /// Routing table (254 = main).
    pub table: u32,
    /// Route metric (priority).
    pub metric: u32,
    /// rtm_protocol stamped on our routes so we can find exactly ours after a restart.
    pub protocol: u8,
    /// Give routes a kernel expiry equal to the lease's valid lifetime.
    pub mirror_expiry: bool,
    /// How often the kernel's routes are compared with the cache.
    pub reconcile_interval: Duration,
    /// Plan and log route changes without making them.
    pub dry_run: bool,
    /// RFC 8987 R-5: an unreachable route of our protocol for each link's subscriber prefix
    /// wider than /64, so traffic to undelegated space is refused instead of looping.
    pub unreachable_aggregates: bool,
    /// After a start, how long routes of ours that no binding explains are kept (zero: not at
    /// all); recovery completing ends it sooner.
    pub inherit_grace: Duration,
    /// Most routes the installer keeps desired; a route refused at it is retried when a
    /// withdrawal makes room. No binding cap may exceed it (a binding without its route is
    /// a subscriber without service).
    pub max_routes: usize,
}

/// Where relayed DHCPv6 is snooped (empty: snooping off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnoopSection {
    pub interfaces: Vec<String>,
    /// Sources trusted besides the configured servers: a RELAY-REPL is believed from them, a
    /// RELAY-FORW towards them (anycast servers, chained relays upstream).
    pub trusted_sources: Vec<Ipv6Addr>,
    /// Drop packets arriving on a subscriber interface with one of this box's addresses as
    /// source (nftables table `ip6 lqagent_guard`), so no subscriber can pass for the relay.
    pub spoof_guard: bool,
}

/// Unknown-source trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerSection {
    pub enabled: bool,
    /// NFLOG group the nftables `log group N` rule sends unknown sources to.
    pub nflog_group: u16,
    /// Drop packets from unknown sources until a binding confirms them.
    pub enforcement: bool,
    /// The `nft` program, by absolute path (the trigger's sets and the spoof guard).
    pub nft_path: PathBuf,
}

/// One subscriber-facing link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    pub name: String,
    pub interface: String,
    /// The link-address put in leasequery (RFC 5007 section 4.1.2.1) for sources on this link.
    pub link_address: Ipv6Addr,
    /// Address space subscribers on this link use; only sources in it trigger queries.
    pub subscriber_prefixes: Vec<Ipv6Prefix>,
    /// Whether unknown sources on this link trigger queries.
    pub trigger: bool,
    /// Inclusive range of delegated prefix lengths admitted on this link (default 48–64).
    pub delegated_length: (u8, u8),
    /// The relay's Interface-Id for this link (RFC 8415 §21.18), to tell apart links that share
    /// a link-address; `None` matches any.
    pub interface_id: Option<Vec<u8>>,
    /// A Lightweight DHCPv6 Relay Agent (RFC 6221) stands in front of this link: messages
    /// wrapped in one relay level below this box's are accepted, the next hop is the LDRA's
    /// peer-address and its Interface-Id/Remote-Id are kept as the access port. Off, a wrapped
    /// message is refused (`nested_relay`): a subscriber could pose as a relay.
    pub ldra: bool,
}

/// Prometheus `/metrics` listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSection {
    pub listen: SocketAddr,
}

/// Control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSection {
    pub socket: PathBuf,
    /// A group (name or gid) whose members may `show`; `clear` stays root's and the service's.
    pub show_group: Option<String>,
}

labels! {
    /// Log output format.
    pub enum LogFormat {
        Text => "text",
        Json => "json",
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSection {
    pub format: LogFormat,
    /// A `tracing` filter directive (`info`, `lqagent=debug,warn`); `RUST_LOG` overrides it.
    pub level: String,
}

/// How leasequery answers are read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeasequerySection {
    /// Option code of the server reply sequence number (a local extension: the draft never got
    /// an IANA code), read from LEASEQUERY-REPLY/-DATA and snooped REPLYs. `None`: off.
    pub srsn_option: Option<u16>,
}

impl Config {
    /// Parse and validate TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let file = validate::parse_file(text)?;
        validate::validate(&file)
    }

    /// Read, parse and validate a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text)
    }

    /// The effective configuration, every default filled in, as TOML that parses back to `self`.
    pub fn to_toml(&self) -> String {
        let file = validate::to_file(self);
        toml::to_string_pretty(&file).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }

    /// The link a subscriber-facing interface belongs to, for the trigger and snooping.
    pub fn links_on(&self, interface: &str) -> impl Iterator<Item = &LinkConfig> {
        self.links.iter().filter(move |l| l.interface == interface)
    }
}

#[cfg(test)]
mod tests;
