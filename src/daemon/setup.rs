//! From the operator's [`Config`] to each module's own settings (`...Config` structs). Pure:
//! the daemon calls these at start and, for what may change live, on reload.

use std::net::{SocketAddr, SocketAddrV6};

use crate::cache::CacheConfig;
use crate::config::{Config, ServerPolicy};
use crate::kernel::{InstallerConfig, LinkMapping, unreachable};
use crate::prefix::Ipv6Prefix;
use crate::requestor::udp::UdpConfig;
use crate::requestor::{Policy, Rate, RequestorConfig, RetransmitParams};
use crate::wire::SERVER_PORT;

/// The requestor's settings; `duid` is our CLIENTID.
pub(crate) fn requestor_config(cfg: &Config, duid: Vec<u8>) -> RequestorConfig {
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

/// Bring the RFC 8987 R-5 unreachable aggregates in line with the configuration (none when
/// `routes.unreachable_aggregates` is off, which also removes any left from before). Failing to
/// is logged, not fatal: the per-lease routes do not depend on them.
pub(crate) async fn unreachable_aggregates(cfg: &Config) {
    if cfg.routes.dry_run {
        return;
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
    match unreachable::sync(at, &want).await {
        Ok(r) => {
            tracing::info!(
                aggregates = want.len(),
                added = r.added.len(),
                removed = r.removed.len(),
                "unreachable routes for the delegated aggregates in place (RFC 8987 R-5)"
            );
            for (p, why) in &r.failed {
                tracing::error!(prefix = %p, error = %why, "unreachable aggregate route refused");
            }
        }
        Err(e) => tracing::error!(error = %e, "unreachable aggregate routes not synced"),
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
        let bulk = crate::bulk::settings::from_config(&cfg, crate::wire::Duid::parse(&[0, 1]));
        assert_eq!(
            bulk.bulk.source_address,
            Some("2001:db8:5::7".parse().unwrap())
        );
    }
}
