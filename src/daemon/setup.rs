//! From the operator's [`Config`] to each module's own settings (`...Config` structs). Pure:
//! the daemon calls these at start and, for what may change live, on reload.

use std::net::SocketAddr;

use crate::config::{Config, ServerPolicy};
use crate::kernel::{InstallerConfig, LinkMapping};
use crate::prefix::Ipv6Prefix;
use crate::requestor::{Policy, Rate, RequestorConfig, RetransmitParams};
use crate::wire::SERVER_PORT;

/// The requestor's settings; `duid` is our CLIENTID.
pub fn requestor_config(cfg: &Config, duid: Vec<u8>) -> RequestorConfig {
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
        ..RequestorConfig::default()
    }
}

/// `limits.global_qps` and `limits.per_link_qps` as token buckets holding one second's worth,
/// so no second ever sees more than twice the configured rate.
pub fn rates(cfg: &Config) -> (Option<Rate>, Option<Rate>) {
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
pub fn installer_config(cfg: &Config) -> InstallerConfig {
    let r = &cfg.routes;
    InstallerConfig {
        table: r.table,
        metric: r.metric,
        protocol: r.protocol,
        expiry: r.mirror_expiry,
        reconcile_interval: r.reconcile_interval,
        dry_run: r.dry_run,
        inherit_grace: r.inherit_grace,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_config_maps_onto_the_modules() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/lqagent.toml"))
                .expect("sample config");
        let cfg = Config::parse(&text).expect("sample parses");
        let r = requestor_config(&cfg, vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1]);
        assert_eq!(r.servers.len(), cfg.servers.len());
        assert!(r.servers.iter().all(|s| s.port() == 547));
        assert_eq!(r.retransmit.mrc, u32::from(cfg.requestor.attempts));
        assert_eq!(r.max_pending, cfg.limits.pending_max);
        assert_eq!(
            r.global_rate.map(|g| g.per_sec),
            Some(f64::from(cfg.limits.global_qps))
        );
        let i = installer_config(&cfg);
        assert_eq!(i.protocol, cfg.routes.protocol);
        assert_eq!(i.expiry, cfg.routes.mirror_expiry);
        assert_eq!(i.links.len(), cfg.links.len());
        assert_eq!(i.links[0].interface, cfg.links[0].interface);
        assert_eq!(i.links[0].link.len(), 128);
    }
}
