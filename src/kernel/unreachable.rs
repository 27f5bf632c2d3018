//! Loop protection (RFC 8987 R-5): an `unreachable` route of our protocol for each link's
//! delegated aggregate, so a packet to delegated space that no subscriber holds (not yet, or no
//! longer) is answered with ICMPv6 destination unreachable instead of following the default
//! route upstream and looping back until its hop limit runs out.
//!
//! Which prefixes: every `subscriber_prefixes` entry wider than /64 (delegation pools and
//! address pools alike; a /64 or narrower is an on-link prefix, which the connected route
//! already covers). Each delegated prefix and address is a more specific route, so it wins by
//! longest match whatever the metrics.
//!
//! The routes are kept apart from the per-lease installer: they are `unreachable` routes (no
//! device), which the installer's dump ignores ([`super::netlink::our_route`] takes only unicast
//! routes), so reconcile never deletes them; [`sync`] adds the missing ones and removes ours
//! that are no longer wanted (a prefix dropped from the configuration). Another daemon's route
//! with the same destination and metric is never replaced: the add is exclusive and a clash is
//! reported.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{
    RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use netlink_proto::sys::AsyncSocket;
use rtnetlink::RouteMessageBuilder;

use super::netlink::table_of;
use crate::prefix::Ipv6Prefix;

/// Why the unreachable routes could not be brought in line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnreachableError {
    #[error("rtnetlink connection: {0}")]
    Connect(std::io::Error),
    #[error("dumping routes: {0}")]
    Dump(rtnetlink::Error),
}

/// Where our unreachable routes live: the installer's table, protocol and metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub table: u32,
    pub protocol: u8,
    pub metric: u32,
}

/// What [`sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub added: Vec<Ipv6Prefix>,
    pub removed: Vec<Ipv6Prefix>,
    /// Wanted but refused by the kernel (e.g. another protocol's route with the same
    /// destination and metric), with the kernel's reason.
    pub failed: Vec<(Ipv6Prefix, String)>,
}

/// The aggregates of the configured links: subscriber prefixes wider than /64, each once.
pub fn aggregates<'a>(
    subscriber_prefixes: impl IntoIterator<Item = &'a Ipv6Prefix>,
) -> Vec<Ipv6Prefix> {
    subscriber_prefixes
        .into_iter()
        .filter(|p| p.len() < 64)
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn message(at: Placement, p: Ipv6Prefix) -> RouteMessage {
    RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(p.addr(), p.len())
        .table_id(at.table)
        .protocol(RouteProtocol::from(at.protocol))
        .priority(at.metric)
        .kind(RouteType::Unreachable)
        .build()
}

/// `ip -6 route show type unreachable proto P table T` as a dump request: the kernel's filter
/// (with NETLINK_GET_STRICT_CHK) for [`ours`].
fn dump_filter(at: Placement) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet6;
    m.header.protocol = RouteProtocol::from(at.protocol);
    m.header.kind = RouteType::Unreachable;
    if at.table > 255 {
        m.header.table = RouteHeader::RT_TABLE_UNSPEC;
        m.attributes.push(RouteAttribute::Table(at.table));
    } else {
        m.header.table = at.table as u8;
    }
    m
}

/// Our unreachable routes now in the kernel (protocol, table and type all ours).
fn ours(at: Placement, m: &RouteMessage) -> Option<Ipv6Prefix> {
    if m.header.kind != RouteType::Unreachable
        || m.header.protocol != RouteProtocol::from(at.protocol)
        || table_of(m) != at.table
    {
        return None;
    }
    let dst = m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(netlink_packet_route::route::RouteAddress::Inet6(d)) => {
            Some(*d)
        }
        _ => None,
    })?;
    Ipv6Prefix::new_truncating(dst, m.header.destination_prefix_length).ok()
}

/// Make our unreachable routes exactly `want`.
pub async fn sync(at: Placement, want: &[Ipv6Prefix]) -> Result<SyncReport, UnreachableError> {
    let (mut conn, handle, _) = rtnetlink::new_connection().map_err(UnreachableError::Connect)?;
    // The dump below is filtered by the kernel when it checks dump requests strictly: only our
    // unreachable routes come back, not the whole table — at a restart that table holds every
    // subscriber route (a million), which were all read and parsed to find a handful. A kernel
    // that cannot filter sends everything, and `ours` picks them out as before.
    let _ = conn
        .socket_mut()
        .socket_mut()
        .set_netlink_get_strict_chk(true);
    let conn = tokio::spawn(conn);
    let r = sync_with(&handle, at, want).await;
    conn.abort();
    r
}

async fn sync_with(
    handle: &rtnetlink::Handle,
    at: Placement,
    want: &[Ipv6Prefix],
) -> Result<SyncReport, UnreachableError> {
    let mut dump = handle.route().get(dump_filter(at)).execute();
    let mut have = BTreeSet::new();
    while let Some(m) = dump.try_next().await.map_err(UnreachableError::Dump)? {
        if let Some(p) = ours(at, &m) {
            have.insert(p);
        }
    }
    let want: BTreeSet<Ipv6Prefix> = want.iter().copied().collect();
    let mut report = SyncReport::default();
    for p in have.difference(&want) {
        match handle.route().del(message(at, *p)).execute().await {
            Ok(()) => report.removed.push(*p),
            Err(e) => report.failed.push((*p, e.to_string())),
        }
    }
    for p in want.difference(&have) {
        // Exclusive add: never take over someone else's route.
        match handle.route().add(message(at, *p)).execute().await {
            Ok(()) => report.added.push(*p),
            Err(e) => report.failed.push((*p, e.to_string())),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_are_the_prefixes_wider_than_64() {
        let ps: Vec<Ipv6Prefix> = [
            "2001:db8:100::/48",
            "2001:db8:f100::/40",
            "2001:db8:100::/64",
            "2001:db8:100::/48",
            "2001:db8:1::5/128",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let a: Vec<String> = aggregates(&ps).iter().map(|p| p.to_string()).collect();
        assert_eq!(a, ["2001:db8:100::/48", "2001:db8:f100::/40"]);
    }

    #[test]
    fn only_our_unreachable_routes_are_ours() {
        let at = Placement {
            table: 254,
            protocol: 211,
            metric: 1024,
        };
        let p: Ipv6Prefix = "2001:db8:100::/48".parse().unwrap();
        let m = message(at, p);
        assert_eq!(ours(at, &m), Some(p));
        let mut unicast = m.clone();
        unicast.header.kind = RouteType::Unicast;
        assert_eq!(ours(at, &unicast), None);
        let other = message(Placement { protocol: 12, ..at }, p);
        assert_eq!(ours(at, &other), None);
        let table = message(Placement { table: 100, ..at }, p);
        assert_eq!(ours(at, &table), None);
    }
}
