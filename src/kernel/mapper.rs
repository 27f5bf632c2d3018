//! From the cache's change stream to the kernel's [`RouteChange`]s: the pure mapping, beside the
//! plan it feeds (`daemon::routes` carries it from the cache task to the route installer).
//!
//! What a lease asks of the kernel (RFC 8987 ):
//! - an IA_NA/IA_TA address: its /128 on the interface of the client's link, no gateway;
//! - a delegated prefix: the prefix via its next hop (the relay's peer-address, else the
//!   client's IA_NA address on that link — the cache works that out, see `cache::merge`) on
//!   the same interface; without a known next hop there is no route (and a route it had goes);
//! - a removed lease (release, expiry, operator clear): its route is withdrawn;
//! - a key the cache does not hold, released (or given a zero lifetime) on a link, or said by a
//!   server to be held by nobody ([`ChangeKind::Unheld`]): a route inherited for it from before
//!   the start is withdrawn if it sits on that link's interface;
//! - a changed next hop, link or interface: the route is replaced (an `Upsert` of the new one).
//!
//! The link: the interface the cache knows (configuration or snooping), else the `[[links]]`
//! entry whose `link_address` is the lease's link-address, else the link-address itself, which
//! the installer resolves against the kernel's addresses (`kernel::link`). When the valid
//! lifetime is mirrored into the kernel (`routes.mirror_expiry`), a lifetime-only refresh is an
//! `Upsert` too, so the kernel's expiry moves with the lease.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Arc;

use super::{LinkRef, RouteChange, RouteSpec};
use crate::cache::{Change, ChangeKind, LeaseKey, RouteView, Timestamp};
use crate::time::AgentClock;

/// How cache changes become route changes.
#[derive(Debug, Clone)]
pub struct RouteMapper {
    /// Configured link-address → interface (`[[links]]`).
    links: HashMap<Ipv6Addr, Arc<str>>,
    /// Mirror the valid lifetime into the route (needs the clock to turn it into an instant).
    expiry: Option<AgentClock>,
}

impl RouteMapper {
    /// `links`: (link-address, interface) of each configured link; `expiry`: the agent clock
    /// when lifetimes are mirrored into the kernel.
    pub fn new(
        links: impl IntoIterator<Item = (Ipv6Addr, String)>,
        expiry: Option<AgentClock>,
    ) -> Self {
        RouteMapper {
            links: links
                .into_iter()
                .map(|(a, i)| (a, Arc::from(i.as_str())))
                .collect(),
            expiry,
        }
    }

    /// The interface (or link-address to resolve) a view's route leaves by.
    pub fn link_of(&self, v: &RouteView) -> LinkRef {
        match v
            .interface
            .as_ref()
            .or_else(|| self.links.get(&v.link_address))
        {
            Some(i) => LinkRef::Interface(i.clone()),
            None => LinkRef::LinkAddress(v.link_address),
        }
    }

    /// The route a lease in state `v` calls for; `None` for a prefix without a next hop.
    pub fn spec(&self, key: &LeaseKey, v: &RouteView) -> Option<RouteSpec> {
        let link = self.link_of(v);
        let spec = match *key {
            LeaseKey::Address(a) => RouteSpec::address(a, link),
            LeaseKey::Prefix(p) => RouteSpec::delegated(p, v.next_hop?, link),
        };
        Some(match self.deadline(v.valid_until) {
            Some(t) => spec.valid_until(t),
            None => spec,
        })
    }

    fn deadline(&self, t: Timestamp) -> Option<crate::time::Instant> {
        self.expiry?.instant_of(t).map(|i| i.into_std())
    }

    /// The kernel change one cache change calls for, if any.
    pub fn route_change(&self, c: &Change) -> Option<RouteChange> {
        if c.kind == ChangeKind::Unheld {
            // Nobody holds it: only a route inherited without a lease can go, and only from
            // its own link (the installer checks both).
            return Some(RouteChange::WithdrawInherited {
                dst: c.key.network(),
                link: c.old.as_ref().map(|v| self.link_of(v)),
                via: c.old.as_ref().and_then(|v| v.next_hop),
            });
        }
        let Some(new) = &c.new else {
            return Some(RouteChange::Withdraw(c.key.network()));
        };
        if c.kind == ChangeKind::Updated && !c.route_affecting() {
            let lifetime_moved = c.old.as_ref().map(|o| o.valid_until) != Some(new.valid_until);
            if !(self.expiry.is_some() && lifetime_moved) {
                return None;
            }
        }
        match self.spec(&c.key, new) {
            Some(spec) => Some(RouteChange::Upsert(spec)),
            // A prefix that lost its next hop: the old route points nowhere right.
            None => c
                .old
                .as_ref()
                .and_then(|o| o.next_hop)
                .map(|_| RouteChange::Withdraw(c.key.network())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefix::Ipv6Prefix;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn view(net: &str, link: &str, iface: Option<&str>, hop: Option<&str>) -> RouteView {
        RouteView {
            network: net.parse().unwrap(),
            link_address: a(link),
            interface: iface.map(Arc::from),
            next_hop: hop.map(a),
            client_duid: crate::wire::Duid::from(&[0u8, 3, 0, 1]),
            valid_until: Timestamp::from_secs(2_000_000_000),
        }
    }

    fn change(
        kind: ChangeKind,
        key: LeaseKey,
        old: Option<RouteView>,
        new: Option<RouteView>,
    ) -> Change {
        Change {
            kind,
            key,
            old,
            new,
        }
    }

    fn mapper() -> RouteMapper {
        RouteMapper::new([(a("2001:db8:1::1"), "sub0".to_string())], None)
    }

    #[test]
    fn address_is_a_host_route_on_the_configured_interface() {
        let key = LeaseKey::Address(a("2001:db8:1::100"));
        let c = change(
            ChangeKind::Added,
            key,
            None,
            Some(view("2001:db8:1::100/128", "2001:db8:1::1", None, None)),
        );
        assert_eq!(
            mapper().route_change(&c),
            Some(RouteChange::Upsert(RouteSpec::address(
                a("2001:db8:1::100"),
                LinkRef::Interface("sub0".into())
            )))
        );
    }

    #[test]
    fn unknown_link_is_left_to_the_kernel_and_a_known_interface_wins() {
        let m = mapper();
        let v = view("2001:db8:9::5/128", "2001:db8:9::1", None, None);
        assert_eq!(m.link_of(&v), LinkRef::LinkAddress(a("2001:db8:9::1")));
        let v = view("2001:db8:1::5/128", "2001:db8:1::1", Some("cable7"), None);
        assert_eq!(m.link_of(&v), LinkRef::Interface("cable7".into()));
    }

    #[test]
    fn prefix_goes_via_its_next_hop_and_waits_without_one() {
        let p: Ipv6Prefix = "2001:db8:100::/56".parse().unwrap();
        let key = LeaseKey::Prefix(p);
        let with = view("2001:db8:100::/56", "2001:db8:1::1", None, Some("fe80::7"));
        let c = change(ChangeKind::Added, key, None, Some(with.clone()));
        assert_eq!(
            mapper().route_change(&c),
            Some(RouteChange::Upsert(RouteSpec::delegated(
                p,
                a("fe80::7"),
                LinkRef::Interface("sub0".into())
            )))
        );
        let without = view("2001:db8:100::/56", "2001:db8:1::1", None, None);
        let c = change(ChangeKind::Added, key, None, Some(without.clone()));
        assert_eq!(mapper().route_change(&c), None, "no next hop: no route yet");
        let c = change(ChangeKind::Updated, key, Some(with), Some(without));
        assert_eq!(mapper().route_change(&c), Some(RouteChange::Withdraw(p)));
    }

    #[test]
    fn changed_next_hop_replaces_and_removal_withdraws() {
        let p: Ipv6Prefix = "2001:db8:100::/56".parse().unwrap();
        let key = LeaseKey::Prefix(p);
        let old = view("2001:db8:100::/56", "2001:db8:1::1", None, Some("fe80::7"));
        let new = view("2001:db8:100::/56", "2001:db8:1::1", None, Some("fe80::8"));
        let c = change(ChangeKind::Updated, key, Some(old.clone()), Some(new));
        assert_eq!(
            mapper().route_change(&c),
            Some(RouteChange::Upsert(RouteSpec::delegated(
                p,
                a("fe80::8"),
                LinkRef::Interface("sub0".into())
            )))
        );
        let c = change(ChangeKind::Removed, key, Some(old), None);
        assert_eq!(mapper().route_change(&c), Some(RouteChange::Withdraw(p)));
        let addr = LeaseKey::Address(a("2001:db8:1::100"));
        let c = change(
            ChangeKind::Removed,
            addr,
            Some(view("2001:db8:1::100/128", "2001:db8:1::1", None, None)),
            None,
        );
        assert_eq!(
            mapper().route_change(&c),
            Some(RouteChange::Withdraw(Ipv6Prefix::host(a(
                "2001:db8:1::100"
            ))))
        );
    }

    #[test]
    fn lifetime_refresh_only_matters_when_mirrored() {
        let key = LeaseKey::Address(a("2001:db8:1::100"));
        let old = view("2001:db8:1::100/128", "2001:db8:1::1", None, None);
        let mut new = old.clone();
        new.valid_until = old.valid_until.plus_millis(60_000);
        let c = change(
            ChangeKind::Updated,
            key,
            Some(old.clone()),
            Some(new.clone()),
        );
        assert_eq!(mapper().route_change(&c), None);
        let clock = AgentClock::new();
        let mirrored = RouteMapper::new([], Some(clock));
        let Some(RouteChange::Upsert(spec)) = mirrored.route_change(&c) else {
            panic!("a moved lifetime refreshes a mirrored route");
        };
        assert_eq!(
            spec.valid_until,
            clock.instant_of(new.valid_until).map(|i| i.into_std())
        );
        let same = change(ChangeKind::Updated, key, Some(old.clone()), Some(old));
        assert_eq!(mirrored.route_change(&same), None, "nothing moved");
    }

    /// A notice that nobody holds a key becomes a withdrawal of an inherited route, anchored to
    /// the notice's link as the mapper resolves links (known interface, configured link, else
    /// the link-address); a server's notice carries no link.
    #[test]
    fn unheld_notices_withdraw_inherited_routes_on_their_link() {
        let p: Ipv6Prefix = "2001:db8:100::/56".parse().unwrap();
        let key = LeaseKey::Prefix(p);
        let from = |link: &str, iface: Option<&str>| {
            Change::unheld(key, Some(view("2001:db8:100::/56", link, iface, None)))
        };
        let m = mapper();
        let table = [
            (
                from("2001:db8:1::1", None),
                Some(LinkRef::Interface("sub0".into())),
            ),
            (
                from("2001:db8:9::1", None),
                Some(LinkRef::LinkAddress(a("2001:db8:9::1"))),
            ),
            (
                from("2001:db8:9::1", Some("cable7")),
                Some(LinkRef::Interface("cable7".into())),
            ),
            (Change::unheld(key, None), None),
        ];
        for (i, (c, link)) in table.into_iter().enumerate() {
            assert_eq!(
                m.route_change(&c),
                Some(RouteChange::WithdrawInherited {
                    dst: p,
                    link,
                    via: None
                }),
                "row {i}"
            );
        }
        // The client the message came from goes along: the route's next hop is compared.
        let c = Change::unheld(
            key,
            Some(view(
                "2001:db8:100::/56",
                "2001:db8:1::1",
                None,
                Some("fe80::66"),
            )),
        );
        assert_eq!(
            m.route_change(&c),
            Some(RouteChange::WithdrawInherited {
                dst: p,
                link: Some(LinkRef::Interface("sub0".into())),
                via: Some(a("fe80::66")),
            })
        );
    }
}
