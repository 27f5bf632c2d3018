//! From the operator's [`Config`] to each module's own settings (`...Config` structs): the one
//! place where configuration keys meet module types. Library modules take their settings
//! struct and never see [`Config`], so a key can be renamed or re-shaped here alone, and a
//! module can be tested without writing a configuration file.
//!
//! Pure: the daemon calls these at start and, for what may change live, on reload (the reload
//! plan uses [`rates`], the same function start-up uses).

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;

use crate::admission::{Admission, LinkRule, OwnAddresses};
use crate::bulk::BulkConfig;
use crate::bulk::recovery::RecoveryPlan;
use crate::cache::CacheConfig;
use crate::config::{Config, LogFormat, ServerPolicy};
use crate::daemon::control::ControlLink;
use crate::kernel::{InstallerConfig, LinkMapping, unreachable};
use crate::logging::LogConfig;
use crate::prefix::Ipv6Prefix;
use crate::requestor::udp::UdpConfig;
use crate::requestor::{Policy, Rate, RequestorConfig, RetransmitParams};
use crate::snoop::capture::CaptureConfig;
use crate::snoop::classify::{ClassifyConfig, SnoopTrust};
use crate::trigger::{TriggerConfig, TriggerLink};
use crate::wire::{Duid, LeasequeryType, SERVER_PORT};

/// Logging: `[log]` format and level.
pub(crate) fn log_config(cfg: &Config) -> LogConfig {
    LogConfig {
        json: cfg.log.format == LogFormat::Json,
        level: cfg.log.level.clone(),
    }
}

/// The requestor's settings; `duid` is our CLIENTID.
pub(crate) fn requestor_config(cfg: &Config, duid: Duid) -> RequestorConfig {
    let (global_rate, link_rate) = rates(cfg);
    RequestorConfig {
        servers: cfg
            .servers
            .iter()
            .map(|s| SocketAddr::from((s.address, SERVER_PORT)))
            .collect(),
        policy: match cfg.policy {
            ServerPolicy::Failover => Policy::Failover,
            ServerPolicy::Parallel => Policy::Parallel,
        },
        duid,
        retransmit: RetransmitParams {
            irt: cfg.requestor.timeout,
            mrt: cfg.requestor.max_timeout,
            mrc: u32::from(cfg.requestor.attempts),
            mrd: None,
        },
        max_pending: cfg.limits.pending_max,
        negative_ttl: cfg.limits.negative_ttl,
        global_rate,
        link_rate,
        srsn_option: cfg.leasequery.srsn_option,
        ..RequestorConfig::default()
    }
}

/// The requestor socket: port 546 (ISC dhcpd replies there whatever port the query came from),
/// on `requestor.source_address` when set — servers authorize requesters by address, and Kea
/// answers nothing at all to one it does not list. Replies arriving on a subscriber link are
/// refused: servers sit upstream, so such a reply is a forgery.
pub(crate) fn udp_config(cfg: &Config) -> UdpConfig {
    let mut udp = UdpConfig {
        refuse_interfaces: cfg.links.iter().map(|l| l.interface.clone()).collect(),
        ..UdpConfig::default()
    };
    if let Some(src) = cfg.requestor.source_address {
        udp.bind = SocketAddr::V6(SocketAddrV6::new(src, udp.bind.port(), 0, 0));
    }
    udp
}

/// The cache's settings: merge rule R7 believes the servers marked `complete_answers`.
pub(crate) fn cache_config(cfg: &Config) -> CacheConfig {
    let mut c = CacheConfig::default();
    c.merge.complete_servers = cfg
        .servers
        .iter()
        .filter(|s| s.complete_answers)
        .map(|s| s.address)
        .collect();
    c.merge.max_prefixes_per_client = cfg.limits.max_prefixes_per_client;
    c.merge.max_addresses_per_client = cfg.limits.max_addresses_per_client;
    c.merge.max_bindings_per_link = cfg.limits.max_bindings_per_link;
    c.merge.max_bindings_per_interface = cfg.limits.max_bindings_per_interface;
    c.merge.max_bindings = cfg.limits.max_bindings;
    c
}

/// `limits.global_qps` and `limits.per_link_qps` as token buckets holding one second's worth,
/// so no second ever sees more than twice the configured rate.
pub(crate) fn rates(cfg: &Config) -> (Option<Rate>, Option<Rate>) {
    let rate = |qps: u32| {
        let q = f64::from(qps.max(1));
        Some(Rate {
            per_sec: q,
            burst: q,
        })
    };
    (rate(cfg.limits.global_qps), rate(cfg.limits.per_link_qps))
}

/// The route installer's settings: `[routes]` and each `[[links]]` link-address as a /128
/// mapping to its interface.
pub(crate) fn installer_config(cfg: &Config) -> InstallerConfig {
    let r = &cfg.routes;
    InstallerConfig {
        table: r.table,
        metric: r.metric,
        protocol: r.protocol,
        expiry: r.mirror_expiry,
        reconcile_interval: r.reconcile_interval,
        dry_run: r.dry_run,
        inherit_grace: r.inherit_grace,
        max_routes: r.max_routes,
        links: cfg
            .links
            .iter()
            .map(|l| LinkMapping {
                link: Ipv6Prefix::host(l.link_address),
                interface: l.interface.clone(),
            })
            .collect(),
        ..InstallerConfig::default()
    }
}

/// Where the RFC 8987 R-5 unreachable aggregates go and which they are: none when
/// `routes.unreachable_aggregates` is off (which also removes any left from before), `None`
/// under `routes.dry_run` (the kernel is not touched).
pub(crate) fn unreachable_aggregates(
    cfg: &Config,
) -> Option<(unreachable::Placement, Vec<Ipv6Prefix>)> {
    if cfg.routes.dry_run {
        return None;
    }
    let want = if cfg.routes.unreachable_aggregates {
        unreachable::aggregates(cfg.links.iter().flat_map(|l| l.subscriber_prefixes.iter()))
    } else {
        Vec::new()
    };
    let at = unreachable::Placement {
        table: cfg.routes.table,
        protocol: cfg.routes.protocol,
        metric: cfg.routes.metric,
    };
    Some((at, want))
}

/// Admission's rules: one per configured link, and the configured servers (rule A4).
pub(crate) fn admission(cfg: &Config, own: Arc<OwnAddresses>) -> Admission {
    let links = cfg
        .links
        .iter()
        .map(|l| LinkRule {
            name: Arc::from(l.name.as_str()),
            interface: Arc::from(l.interface.as_str()),
            link_address: l.link_address,
            interface_id: l.interface_id.clone().map(Vec::into_boxed_slice),
            subscriber_prefixes: l.subscriber_prefixes.clone(),
            delegated_length: l.delegated_length,
            ldra: l.ldra,
        })
        .collect();
    Admission::new(links, cfg.servers.iter().map(|s| s.address), own)
}

/// The trigger's settings: defaults with the operator's `[trigger]` group and enforcement.
pub(crate) fn trigger_config(cfg: &Config) -> TriggerConfig {
    TriggerConfig {
        nflog_group: cfg.trigger.nflog_group,
        enforcement: cfg.trigger.enforcement,
        nft_program: cfg.trigger.nft_path.to_string_lossy().into_owned(),
        ..TriggerConfig::default()
    }
}

/// The links the trigger watches: those with `trigger = true` and subscriber prefixes (none
/// when `[trigger] enabled = false`).
pub(crate) fn trigger_links(cfg: &Config) -> Vec<TriggerLink> {
    if !cfg.trigger.enabled {
        return Vec::new();
    }
    cfg.links
        .iter()
        .filter(|l| l.trigger && !l.subscriber_prefixes.is_empty())
        .map(|l| TriggerLink {
            name: l.name.as_str().into(),
            interface: l.interface.as_str().into(),
            link_address: l.link_address,
            subscriber_prefixes: l.subscriber_prefixes.clone(),
        })
        .collect()
}

/// Everything recovery needs, derived from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecoverySetup {
    pub bulk: BulkConfig,
    /// What to ask at start (empty when `bulk.enabled` is false).
    pub plan: RecoveryPlan,
    /// (interface, link-address) of each configured subscriber link, for the link-up trigger.
    pub interfaces: Vec<(String, Ipv6Addr)>,
}

/// Bulk recovery's settings; `requestor_duid` is the DUID the agent uses as CLIENTID.
pub(crate) fn recovery(cfg: &Config, requestor_duid: Duid) -> RecoverySetup {
    let b = &cfg.bulk;
    let bulk = BulkConfig {
        requestor_duid,
        pipelining: b.pipeline_depth > 1,
        data_timeout: b.data_timeout,
        connect_timeout: b.connect_timeout,
        max_attempts: u32::from(b.attempts).max(1),
        source_address: cfg.requestor.source_address,
        srsn_option: cfg.leasequery.srsn_option,
        ..BulkConfig::default()
    };
    let mut plan = RecoveryPlan {
        servers: cfg
            .servers
            .iter()
            .map(|s| SocketAddr::from((s.address, SERVER_PORT)))
            .collect(),
        ..RecoveryPlan::default()
    };
    if b.enabled {
        if b.queries.contains(&LeasequeryType::RelayId) {
            plan.relay_id = cfg.identity.relay_duid.clone();
        }
        if b.queries.contains(&LeasequeryType::LinkAddress) {
            // Links that share a link-address (told apart by Interface-Id) are one query: the
            // server answers a link-address with every client on it, whichever link it is on.
            for l in &cfg.links {
                if !plan.links.contains(&l.link_address) {
                    plan.links.push(l.link_address);
                }
            }
        }
        if b.queries.contains(&LeasequeryType::RemoteId) {
            plan.remote_ids = b
                .remote_ids
                .iter()
                .map(|r| (r.enterprise, r.id.clone()))
                .collect();
        }
    } else {
        plan.servers.clear();
    }
    let interfaces = cfg
        .links
        .iter()
        .map(|l| (l.interface.clone(), l.link_address))
        .collect();
    RecoverySetup {
        bulk,
        plan,
        interfaces,
    }
}

/// The snooper's sockets: the `snoop.interfaces`.
pub(crate) fn capture_config(cfg: &Config) -> CaptureConfig {
    CaptureConfig {
        interfaces: cfg.snoop.interfaces.clone(),
        ..CaptureConfig::default()
    }
}

/// The classifier's settings: where the server's sequence number (SRSN) option is read.
pub(crate) fn classify_config(cfg: &Config) -> ClassifyConfig {
    ClassifyConfig {
        srsn_option: cfg.leasequery.srsn_option,
        ..ClassifyConfig::default()
    }
}

/// Whose relayed replies are believed: the configured servers and `snoop.trusted_sources`;
/// never the box itself.
pub(crate) fn snoop_trust(
    cfg: &Config,
    own: Arc<OwnAddresses>,
    admission: &Arc<Admission>,
) -> SnoopTrust {
    SnoopTrust {
        servers: cfg
            .servers
            .iter()
            .map(|s| s.address)
            .chain(cfg.snoop.trusted_sources.iter().copied())
            .collect(),
        own,
        admission: admission.clone(),
    }
}

/// Server address → configured name (metric labels, on-demand answers).
pub(crate) fn server_names(cfg: &Config) -> HashMap<Ipv6Addr, String> {
    cfg.servers
        .iter()
        .map(|s| (s.address, s.name.clone()))
        .collect()
}

/// Link-address → configured name (metric labels).
pub(crate) fn link_names(cfg: &Config) -> HashMap<Ipv6Addr, String> {
    cfg.links
        .iter()
        .map(|l| (l.link_address, l.name.clone()))
        .collect()
}

/// The links as the control socket shows them.
pub(crate) fn control_links(cfg: &Config) -> Arc<[ControlLink]> {
    cfg.links
        .iter()
        .map(|l| ControlLink {
            name: l.name.clone(),
            address: l.link_address,
            interface: l.interface.clone(),
        })
        .collect()
}

/// `[[links]]` link-address → interface, the route mapper's table.
pub(crate) fn route_links(cfg: &Config) -> Vec<(Ipv6Addr, String)> {
    cfg.links
        .iter()
        .map(|l| (l.link_address, l.interface.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_config_maps_onto_the_modules() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/lqagent.toml"))
                .expect("sample config");
        let cfg = Config::parse(&text).expect("sample parses");
        let r = requestor_config(&cfg, vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1].into());
        assert_eq!(r.servers.len(), cfg.servers.len());
        assert!(r.servers.iter().all(|s| s.port() == 547));
        assert_eq!(r.retransmit.mrc, u32::from(cfg.requestor.attempts));
        assert_eq!(r.max_pending, cfg.limits.pending_max);
        assert_eq!(
            r.global_rate.map(|g| g.per_sec),
            Some(f64::from(cfg.limits.global_qps))
        );
        let c = cache_config(&cfg);
        assert_eq!(
            c.merge.complete_servers.len(),
            cfg.servers.iter().filter(|s| s.complete_answers).count()
        );
        let mut believed = cfg.clone();
        believed.servers[1].complete_answers = true;
        assert_eq!(
            cache_config(&believed).merge.complete_servers,
            vec![cfg.servers[1].address]
        );
        let i = installer_config(&cfg);
        assert_eq!(i.protocol, cfg.routes.protocol);
        assert_eq!(i.expiry, cfg.routes.mirror_expiry);
        assert_eq!(i.links.len(), cfg.links.len());
        assert_eq!(i.links[0].interface, cfg.links[0].interface);
        assert_eq!(i.links[0].link.len(), 128);
        let l = log_config(&cfg);
        assert_eq!(l.level, cfg.log.level);
        assert_eq!(l.json, cfg.log.format == LogFormat::Json);
        let json =
            Config::parse("[log]\nformat = \"json\"\n[[servers]]\naddress = \"2001:db8::1\"\n")
                .expect("json log config parses");
        assert!(log_config(&json).json);
    }

    #[test]
    fn source_address_is_where_the_requestor_socket_binds() {
        let base = "[[servers]]\naddress = \"2001:db8::1\"\n";
        let cfg = Config::parse(base).unwrap();
        assert_eq!(cfg.requestor.source_address, None);
        assert_eq!(udp_config(&cfg).bind, "[::]:546".parse().unwrap());
        let cfg = Config::parse(&format!(
            "[requestor]\nsource_address = \"2001:db8:5::7\"\n{base}"
        ))
        .unwrap();
        assert_eq!(
            udp_config(&cfg).bind,
            "[2001:db8:5::7]:546".parse().unwrap()
        );
        let bulk = recovery(&cfg, Duid::from(&[0, 1]));
        assert_eq!(
            bulk.bulk.source_address,
            Some("2001:db8:5::7".parse().unwrap())
        );
    }

    #[test]
    fn sample_config_gives_a_plan() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/lqagent.toml"))
                .expect("sample config");
        let cfg = Config::parse(&text).expect("sample parses");
        let duid = Duid::ll_ethernet([2, 0, 0, 0, 0, 1]);
        let s = recovery(&cfg, duid.clone());
        assert_eq!(s.bulk.requestor_duid, duid);
        assert_eq!(s.bulk.data_timeout, cfg.bulk.data_timeout);
        assert_eq!(s.interfaces.len(), cfg.links.len());
        if cfg.bulk.enabled {
            assert_eq!(s.plan.servers.len(), cfg.servers.len());
            assert!(s.plan.servers.iter().all(|a| a.port() == 547));
            let startup = s.plan.startup();
            assert_eq!(startup.len(), cfg.servers.len());
            assert!(startup.iter().all(|q| !q.queries.is_empty()));
        }
    }

    #[test]
    fn links_sharing_a_link_address_are_asked_for_once() {
        let cfg = Config::parse(
            "state_dir = \"/var/lib/lqagent\"\n\
             [bulk]\nenabled = true\nqueries = [\"link-address\"]\n\
             [[servers]]\nname = \"s\"\naddress = \"2001:db8:ff::2\"\n\
             [[links]]\nname = \"a\"\ninterface = \"sub1\"\nlink_address = \"2001:db8:1::1\"\n\
             interface_id = \"sub1\"\nsubscriber_prefixes = [\"2001:db8:1::/64\"]\n\
             [[links]]\nname = \"b\"\ninterface = \"sub2\"\nlink_address = \"2001:db8:1::1\"\n\
             interface_id = \"sub2\"\nsubscriber_prefixes = [\"2001:db8:2::/64\"]\n\
             [[links]]\nname = \"c\"\ninterface = \"sub3\"\nlink_address = \"2001:db8:3::1\"\n\
             subscriber_prefixes = [\"2001:db8:3::/64\"]\n",
        )
        .expect("config parses");
        let s = recovery(&cfg, Duid::ll_ethernet([2, 0, 0, 0, 0, 1]));
        let a = |t: &str| t.parse::<Ipv6Addr>().unwrap();
        assert_eq!(s.plan.links, vec![a("2001:db8:1::1"), a("2001:db8:3::1")]);
        // Each interface still comes up on its own (link-up asks for its link-address).
        assert_eq!(s.interfaces.len(), 3);
    }
}
