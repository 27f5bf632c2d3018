//! From the operator's configuration (`config::Config`) to what bulk recovery needs: the
//! [`BulkConfig`], the [`RecoveryPlan`] and the subscriber interfaces the link-up trigger
//! watches. The daemon calls [`from_config`] once at start.

use std::net::{Ipv6Addr, SocketAddr};

use super::BulkConfig;
use super::recovery::RecoveryPlan;
use crate::config::{BulkQuery, Config};
use crate::wire::{Duid, SERVER_PORT};

/// Everything recovery needs, derived from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverySetup {
    pub bulk: BulkConfig,
    /// What to ask at start (empty when `bulk.enabled` is false).
    pub plan: RecoveryPlan,
    /// (interface, link-address) of each configured subscriber link, for the link-up trigger.
    pub interfaces: Vec<(String, Ipv6Addr)>,
}

/// Build the recovery setup; `requestor_duid` is the DUID the agent uses as CLIENTID.
pub fn from_config(cfg: &Config, requestor_duid: Duid) -> RecoverySetup {
    let b = &cfg.bulk;
    let bulk = BulkConfig {
        requestor_duid,
        pipelining: b.pipeline_depth > 1,
        data_timeout: b.data_timeout,
        connect_timeout: b.connect_timeout,
        max_attempts: u32::from(b.attempts).max(1),
        srsn_option: cfg.leasequery.srsn_option,
        source_address: cfg.requestor.source_address,
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
        if b.queries.contains(&BulkQuery::RelayId) {
            plan.relay_id = cfg.identity.relay_duid.as_deref().map(Duid::parse);
        }
        if b.queries.contains(&BulkQuery::LinkAddress) {
            plan.links = cfg.links.iter().map(|l| l.link_address).collect();
        }
        if b.queries.contains(&BulkQuery::RemoteId) {
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
}
