//! From the operator's configuration (`config::Config`) to what bulk recovery needs: the
//! [`BulkConfig`], the [`RecoveryPlan`] and the subscriber interfaces the link-up trigger
//! watches. The daemon calls [`from_config`] once at start.

use std::net::{Ipv6Addr, SocketAddr};

use super::BulkConfig;
use super::recovery::RecoveryPlan;
use crate::config::{BulkQueryKind, Config};
use crate::wire::{Duid, SERVER_PORT};

/// Everything recovery needs, derived from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecoverySetup {
    pub bulk: BulkConfig,
    /// What to ask at start (empty when `bulk.enabled` is false).
    pub plan: RecoveryPlan,
    /// (interface, link-address) of each configured subscriber link, for the link-up trigger.
    pub interfaces: Vec<(String, Ipv6Addr)>,
}

/// Build the recovery setup; `requestor_duid` is the DUID the agent uses as CLIENTID.
pub(crate) fn from_config(cfg: &Config, requestor_duid: Duid) -> RecoverySetup {
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
        if b.queries.contains(&BulkQueryKind::RelayId) {
            plan.relay_id = cfg.identity.relay_duid.as_deref().map(Duid::parse);
        }
        if b.queries.contains(&BulkQueryKind::LinkAddress) {
            // Links that share a link-address (told apart by Interface-Id) are one query: the
            // server answers a link-address with every client on it, whichever link it is on.
            for l in &cfg.links {
                if !plan.links.contains(&l.link_address) {
                    plan.links.push(l.link_address);
                }
            }
        }
        if b.queries.contains(&BulkQueryKind::RemoteId) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_config_gives_a_plan() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/lqagent.toml"))
                .expect("sample config");
        let cfg = Config::parse(&text).expect("sample parses");
        let duid = Duid::ll_ethernet([2, 0, 0, 0, 0, 1]);
        let s = from_config(&cfg, duid.clone());
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
        let s = from_config(&cfg, Duid::ll_ethernet([2, 0, 0, 0, 0, 1]));
        let a = |t: &str| t.parse::<Ipv6Addr>().unwrap();
        assert_eq!(s.plan.links, vec![a("2001:db8:1::1"), a("2001:db8:3::1")]);
        // Each interface still comes up on its own (link-up asks for its link-address).
        assert_eq!(s.interfaces.len(), 3);
    }
}
