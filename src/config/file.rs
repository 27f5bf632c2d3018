//! Stage one: the TOML file's shape, exactly as an operator writes it.
//!
//! Every table is `deny_unknown_fields` so a misspelt key is an error, and every optional key
//! has its default here, in one place (`Default` impls below), so `lqagent check-config` can print
//! the effective configuration. Values stay in their written form (strings for addresses, whole
//! seconds for durations); stage two ([`super::validate`]) turns them into typed values.

use serde::{Deserialize, Serialize};

/// Default metrics listener: loopback only, port 9567 (Prometheus default-port allocations wiki).
pub(crate) const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9567";
/// Default control socket, inside systemd's `RuntimeDirectory=lqagent`.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/lqagent/control.sock";
/// Default state directory, systemd's `StateDirectory=lqagent`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/lqagent";

/// The whole file. Plain keys first, then tables, then arrays of tables (TOML order).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct File {
    pub(crate) state_dir: String,
    pub(crate) identity: Identity,
    pub(crate) requestor: Requestor,
    pub(crate) limits: Limits,
    pub(crate) bulk: Bulk,
    pub(crate) routes: Routes,
    pub(crate) snoop: Snoop,
    pub(crate) trigger: Trigger,
    pub(crate) metrics: Metrics,
    pub(crate) control: Control,
    pub(crate) log: Log,
    pub(crate) leasequery: Leasequery,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) servers: Vec<Server>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) links: Vec<LinkSection>,
}

impl Default for File {
    fn default() -> Self {
        File {
            state_dir: DEFAULT_STATE_DIR.to_string(),
            identity: Identity::default(),
            requestor: Requestor::default(),
            limits: Limits::default(),
            bulk: Bulk::default(),
            routes: Routes::default(),
            snoop: Snoop::default(),
            trigger: Trigger::default(),
            metrics: Metrics::default(),
            control: Control::default(),
            log: Log::default(),
            leasequery: Leasequery::default(),
            servers: Vec::new(),
            links: Vec::new(),
        }
    }
}

/// `[[servers]]`: one DHCPv6 server that answers leasequery.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Server {
    pub(crate) address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    /// The server's leasequery answers list every lease of the client on the link.
    #[serde(default)]
    pub(crate) complete_answers: bool,
}

/// `[[links]]`: one subscriber-facing link of the access concentrator.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkSection {
    pub(crate) name: String,
    pub(crate) interface: String,
    pub(crate) link_address: String,
    #[serde(default)]
    pub(crate) subscriber_prefixes: Vec<String>,
    #[serde(default = "yes")]
    pub(crate) trigger: bool,
    #[serde(default = "default_delegated_length")]
    pub(crate) delegated_length: [u8; 2],
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) interface_id: Option<String>,
    #[serde(default)]
    pub(crate) ldra: bool,
}

fn default_delegated_length() -> [u8; 2] {
    let (min, max) = crate::admission::DEFAULT_DELEGATED_LENGTH;
    [min, max]
}

fn yes() -> bool {
    true
}

/// `[identity]`: DUIDs, as hex (`0003000102aabbccddee` or with `:` between octets).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Identity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) client_duid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) relay_duid: Option<String>,
}

/// `[requestor]`: RFC 5007 section 4.1.1 timers (LQ_TIMEOUT, LQ_MAX_RT, LQ_MAX_RC) and server policy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Requestor {
    pub(crate) policy: String,
    pub(crate) timeout_secs: u64,
    pub(crate) max_timeout_secs: u64,
    pub(crate) attempts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) source_address: Option<String>,
}

impl Default for Requestor {
    fn default() -> Self {
        Requestor {
            policy: "failover".to_string(),
            timeout_secs: 1,
            max_timeout_secs: 10,
            attempts: 5,
            source_address: None,
        }
    }
}

/// `[limits]`: what stands between a flood of spoofed sources and the servers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Limits {
    pub(crate) global_qps: u64,
    pub(crate) per_link_qps: u64,
    pub(crate) pending_max: u64,
    pub(crate) negative_ttl_secs: u64,
    pub(crate) max_prefixes_per_client: u64,
    pub(crate) max_addresses_per_client: u64,
    pub(crate) max_bindings_per_link: u64,
    pub(crate) max_bindings_per_interface: u64,
    pub(crate) max_bindings: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            global_qps: 200,
            per_link_qps: 50,
            pending_max: 4096,
            negative_ttl_secs: 30,
            max_prefixes_per_client: 8,
            max_addresses_per_client: 8,
            max_bindings_per_link: 1_000_000,
            max_bindings_per_interface: crate::cache::merge::DEFAULT_MAX_BINDINGS_PER_INTERFACE
                as u64,
            max_bindings: 2_000_000,
        }
    }
}

/// `[bulk]`: RFC 5460 bulk leasequery over TCP, used to recover after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Bulk {
    pub(crate) enabled: bool,
    pub(crate) queries: Vec<String>,
    pub(crate) attempts: u64,
    pub(crate) connect_timeout_secs: u64,
    pub(crate) data_timeout_secs: u64,
    pub(crate) pipeline_depth: u64,
    pub(crate) remote_ids: Vec<RemoteId>,
    pub(crate) max_connections: u64,
}

impl Default for Bulk {
    fn default() -> Self {
        Bulk {
            enabled: true,
            queries: vec!["link_address".to_string()],
            attempts: 3,
            connect_timeout_secs: 5,
            data_timeout_secs: 300,
            pipeline_depth: 1,
            remote_ids: Vec::new(),
            max_connections: crate::bulk::stats::DEFAULT_MAX_CONNECTIONS as u64,
        }
    }
}

/// One RFC 4649 remote-id: enterprise number and the relay's remote-id bytes (hex).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RemoteId {
    pub(crate) enterprise: u64,
    pub(crate) id: String,
}

/// `[routes]`: how cache entries become kernel routes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Routes {
    pub(crate) table: u64,
    pub(crate) metric: u64,
    pub(crate) protocol: u64,
    pub(crate) mirror_expiry: bool,
    pub(crate) reconcile_interval_secs: u64,
    pub(crate) dry_run: bool,
    /// RFC 8987 R-5: unreachable routes for each link's delegated aggregates.
    pub(crate) unreachable_aggregates: bool,
    pub(crate) inherit_grace_secs: u64,
    pub(crate) max_routes: u64,
}

impl Default for Routes {
    fn default() -> Self {
        Routes {
            table: 254,
            metric: 1024,
            protocol: 211,
            mirror_expiry: true,
            reconcile_interval_secs: 60,
            dry_run: false,
            unreachable_aggregates: true,
            inherit_grace_secs: 600,
            max_routes: 2_000_000,
        }
    }
}

/// `[snoop]`: where relayed DHCPv6 is watched.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Snoop {
    pub(crate) interfaces: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) trusted_sources: Vec<String>,
    pub(crate) spoof_guard: bool,
}

impl Default for Snoop {
    fn default() -> Self {
        Snoop {
            interfaces: Vec::new(),
            trusted_sources: Vec::new(),
            spoof_guard: true,
        }
    }
}

/// `[trigger]`: unknown-source detection (nftables `log group N` read over NFLOG).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Trigger {
    pub(crate) enabled: bool,
    pub(crate) nflog_group: u64,
    pub(crate) enforcement: bool,
    pub(crate) nft_path: String,
}

impl Default for Trigger {
    fn default() -> Self {
        Trigger {
            enabled: true,
            nflog_group: 547,
            enforcement: false,
            nft_path: crate::trigger::nft::DEFAULT_NFT.to_string(),
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Metrics {
    pub(crate) listen: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: DEFAULT_METRICS_LISTEN.to_string(),
        }
    }
}

/// `[control]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Control {
    pub(crate) socket: String,
    /// Group whose members may `show` (not `clear`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) show_group: Option<String>,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            socket: DEFAULT_CONTROL_SOCKET.to_string(),
            show_group: None,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Log {
    pub(crate) format: String,
    pub(crate) level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: "text".to_string(),
            level: "info".to_string(),
        }
    }
}

/// `[leasequery]`: what every leasequery answer (UDP, bulk, snooped) is read with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Leasequery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) srsn_option: Option<u16>,
}
