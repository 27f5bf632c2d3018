//! Table tests of the admission rules: one row per rule and case, each naming what it defends.

use super::*;
use crate::cache::{
    AccessPort, ClientInfo, IaType, Link, ObservedLease, RelayData, ServerId, Timestamp,
};

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn p(s: &str) -> Ipv6Prefix {
    s.parse().unwrap()
}

const LINK1: &str = "2001:db8:1::1";
const LINK2: &str = "2001:db8:2::1";
const SERVER: &str = "2001:db8:ffff::2";
const RELAY_UP: &str = "2001:db8:ffff::1";

fn rule(name: &str, iface: &str, link: &str, prefixes: &[&str]) -> LinkRule {
    LinkRule {
        name: Arc::from(name),
        interface: Arc::from(iface),
        link_address: a(link),
        interface_id: None,
        subscriber_prefixes: prefixes.iter().map(|s| p(s)).collect(),
        delegated_length: DEFAULT_DELEGATED_LENGTH,
        ldra: false,
    }
}

/// Two links, as in the lab: each a /64 for addresses and a /40 for delegated prefixes. The
/// second link's /64 holds this box's own address on it; a server sits in a subscriber range to
/// show A4 (a misconfigured but possible setup).
fn admission() -> Admission {
    Admission::new(
        vec![
            rule(
                "cable1",
                "sub0",
                LINK1,
                &["2001:db8:1::/64", "2001:db8:100::/40"],
            ),
            rule(
                "cable2",
                "sub1",
                LINK2,
                &["2001:db8:2::/64", "2001:db8:200::/40"],
            ),
        ],
        [a(SERVER), a("2001:db8:1::547")],
        Arc::new(OwnAddresses::new([a(LINK1), a(LINK2), a(RELAY_UP)])),
    )
}

fn na(addr: &str) -> ObservedLease {
    ObservedLease {
        key: LeaseKey::Address(a(addr)),
        ia: IaType::Na,
        iaid: 1,
        preferred: 300,
        valid: 600,
    }
}

fn pd(prefix: &str) -> ObservedLease {
    ObservedLease {
        key: LeaseKey::Prefix(p(prefix)),
        ia: IaType::Pd,
        iaid: 2,
        preferred: 300,
        valid: 600,
    }
}

fn obs(source: Source, link: &str, peer: Option<&str>, leases: Vec<ObservedLease>) -> Observation {
    Observation {
        client_duid: vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 1].into(),
        link: Link {
            address: a(link),
            // Whatever the input says, the route goes on the configured interface.
            interface: Some(Arc::from("up0")),
        },
        relay: Some(RelayData {
            peer_address: peer.map(a),
            interface_id: None,
            remote_id: None,
            access: None,
        }),
        server: Arc::new(ServerId {
            duid: vec![0, 1].into(),
            address: a(SERVER),
        }),
        source,
        clt_time: Some(0),
        base_time: None,
        srsn: None,
        complete: true,
        leases,
        arrival: Timestamp::from_secs(1_800_000_000),
        query_address: None,
    }
}

fn refused_reason(out: &Admitted) -> Option<Rejection> {
    match out {
        Admitted::Refused(r) => r.first().map(|r| r.reason),
        _ => None,
    }
}

#[test]
fn a_good_binding_is_admitted_whole_on_its_links_interface() {
    let ad = admission();
    let o = obs(
        Source::Snoop,
        LINK1,
        Some("fe80::1"),
        vec![na("2001:db8:1::100"), pd("2001:db8:100::/56")],
    );
    match ad.admit(o) {
        Admitted::Whole(o) => {
            assert_eq!(
                o.link.interface.as_deref(),
                Some("sub0"),
                "never the uplink"
            );
            assert_eq!(o.leases.len(), 2);
            assert!(o.complete);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ad.stats().admitted(), 1);
    assert!(ad.stats().snapshot().is_empty());
}

/// Every whole-observation rule: (what, observation, reason).
#[test]
fn whole_observation_rules() {
    let mut not_covering = obs(Source::Leasequery, LINK1, None, vec![na("2001:db8:1::100")]);
    not_covering.query_address = Some(a("2001:db8:1::222"));
    let mut covering_prefix = obs(
        Source::Leasequery,
        LINK1,
        Some("fe80::1"),
        vec![pd("2001:db8:100::/56")],
    );
    covering_prefix.query_address = Some(a("2001:db8:100::99"));
    // The answer's relay data names link 2, where the asked address (on link 1) is refused:
    // the neighbour's prefix it carries must not come in with a next hop of its choosing.
    let mut rehomed = obs(
        Source::Leasequery,
        LINK2,
        Some("fe80::bad"),
        vec![na("2001:db8:1::76"), pd("2001:db8:200::/56")],
    );
    rehomed.query_address = Some(a("2001:db8:1::76"));
    let rows: Vec<(&str, Observation, Option<Rejection>)> = vec![
        (
            "A1 unknown link-address",
            obs(
                Source::Leasequery,
                "2001:db8:9::1",
                None,
                vec![na("2001:db8:9::100")],
            ),
            Some(Rejection::UnknownLink),
        ),
        (
            "A1 link-address ::",
            obs(Source::Bulk, "::", None, vec![na("2001:db8:1::100")]),
            Some(Rejection::UnknownLink),
        ),
        (
            "A6 answer does not cover the asked address",
            not_covering,
            Some(Rejection::NotCovering),
        ),
        (
            "A6 the covering lease is itself refused (relay data moved it to another link)",
            rehomed,
            Some(Rejection::NotCovering),
        ),
        (
            "A6 a delegated prefix covers the asked address",
            covering_prefix,
            None,
        ),
        (
            "A5 next hop outside the link (attacker's choice)",
            obs(
                Source::Snoop,
                LINK1,
                Some("2001:db8:ffff::66"),
                vec![pd("2001:db8:100::/56")],
            ),
            Some(Rejection::BadNextHop),
        ),
        (
            "A5 next hop is this box",
            obs(
                Source::Snoop,
                LINK1,
                Some(LINK1),
                vec![pd("2001:db8:100::/56")],
            ),
            Some(Rejection::BadNextHop),
        ),
        (
            "A5 next hop multicast",
            obs(
                Source::Snoop,
                LINK1,
                Some("ff02::1"),
                vec![pd("2001:db8:100::/56")],
            ),
            Some(Rejection::BadNextHop),
        ),
        (
            "A5 next hop inside the link is fine",
            obs(
                Source::Snoop,
                LINK1,
                Some("2001:db8:1::100"),
                vec![pd("2001:db8:100::/56")],
            ),
            None,
        ),
    ];
    for (what, o, want) in rows {
        let out = admission().admit(o);
        assert_eq!(refused_reason(&out), want, "{what}: {out:?}");
    }
}

/// Every per-lease rule, on its own lease: (what, lease, reason).
#[test]
fn per_lease_rules() {
    let rows: Vec<(&str, ObservedLease, Option<Rejection>)> = vec![
        ("inside the /64", na("2001:db8:1::100"), None),
        (
            "A2 address outside the link",
            na("fd00::1"),
            Some(Rejection::OutsideLink),
        ),
        (
            "A2 another link's address",
            na("2001:db8:2::100"),
            Some(Rejection::OutsideLink),
        ),
        (
            "A2 another link's delegated prefix re-homed here",
            pd("2001:db8:200::/56"),
            Some(Rejection::OutsideLink),
        ),
        (
            "A3 default route",
            pd("::/0"),
            Some(Rejection::SpecialAddress),
        ),
        ("A3 2000::/3", pd("2000::/3"), Some(Rejection::PrefixLength)),
        (
            "A3 the whole delegated aggregate",
            pd("2001:db8:100::/40"),
            Some(Rejection::PrefixLength),
        ),
        (
            "A3 shorter than 48",
            pd("2001:db8:100::/44"),
            Some(Rejection::PrefixLength),
        ),
        (
            "A3 longer than 64",
            pd("2001:db8:100::/80"),
            Some(Rejection::PrefixLength),
        ),
        ("A3 48 is in range", pd("2001:db8:100::/48"), None),
        ("A3 64 is in range", pd("2001:db8:100::/64"), None),
        (
            "A4 link-local",
            na("fe80::1"),
            Some(Rejection::SpecialAddress),
        ),
        (
            "A4 multicast",
            na("ff02::1:2"),
            Some(Rejection::SpecialAddress),
        ),
        ("A4 loopback", na("::1"), Some(Rejection::SpecialAddress)),
        ("A4 unspecified", na("::"), Some(Rejection::SpecialAddress)),
        (
            "A4 IPv4-mapped",
            na("::ffff:192.0.2.1"),
            Some(Rejection::SpecialAddress),
        ),
        (
            "A4 this box's address on the link",
            na(LINK1),
            Some(Rejection::OwnAddress),
        ),
        (
            "A4 a configured server's address",
            na("2001:db8:1::547"),
            Some(Rejection::ServerAddress),
        ),
        (
            "A4 a prefix holding a server",
            pd("2001:db8:1::/64"),
            Some(Rejection::ServerAddress),
        ),
    ];
    for (what, lease, want) in rows {
        let ad = admission();
        let out = ad.admit(obs(Source::Bulk, LINK1, Some("fe80::1"), vec![lease]));
        assert_eq!(refused_reason(&out), want, "{what}: {out:?}");
        if let Some(r) = want {
            assert_eq!(ad.stats().get(Origin::Bulk, r), 1, "{what}: counted");
        }
    }
}

#[test]
fn a_refused_lease_leaves_the_rest_admitted_but_incomplete() {
    let ad = admission();
    let out = ad.admit(obs(
        Source::Leasequery,
        LINK1,
        Some("fe80::1"),
        vec![na("2001:db8:1::100"), pd("::/0"), na("fd00::1")],
    ));
    match out {
        Admitted::Partial(o, refused) => {
            assert_eq!(o.leases, vec![na("2001:db8:1::100")]);
            assert!(
                !o.complete,
                "R7 must not read the refused leases' absence as removal"
            );
            assert_eq!(
                refused.iter().map(|r| r.reason).collect::<Vec<_>>(),
                vec![Rejection::SpecialAddress, Rejection::OutsideLink]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ad.stats().snapshot(),
        vec![
            (Origin::Leasequery, Rejection::OutsideLink, 1),
            (Origin::Leasequery, Rejection::SpecialAddress, 1)
        ]
    );
}

#[test]
fn links_sharing_a_link_address_are_told_apart_by_interface_id() {
    let mut vlan10 = rule(
        "vlan10",
        "sub10",
        LINK1,
        &["2001:db8:1::/64", "2001:db8:100::/40"],
    );
    vlan10.interface_id = Some(b"vlan10".to_vec().into());
    let mut vlan20 = rule(
        "vlan20",
        "sub20",
        LINK1,
        &["2001:db8:1::/64", "2001:db8:100::/40"],
    );
    vlan20.interface_id = Some(b"vlan20".to_vec().into());
    let ad = Admission::new(vec![vlan10, vlan20], [], Arc::new(OwnAddresses::default()));
    for (id, want) in [
        (&b"vlan20"[..], Some("sub20")),
        (b"vlan10", Some("sub10")),
        (b"vlan99", None),
    ] {
        let mut o = obs(
            Source::Snoop,
            LINK1,
            Some("fe80::1"),
            vec![na("2001:db8:1::100")],
        );
        o.relay.as_mut().unwrap().interface_id = Some(id.into());
        let got = match ad.admit(o) {
            Admitted::Whole(o) => o.link.interface.map(|i| i.to_string()),
            _ => None,
        };
        assert_eq!(got.as_deref(), want);
    }
    // Without relay data (an on-demand answer that carried none), the interface the query
    // came from decides; with neither, nothing does.
    for (iface, want) in [
        (Some("sub20"), Some("sub20")),
        (Some("up0"), None),
        (None, None),
    ] {
        let mut o = obs(Source::Leasequery, LINK1, None, vec![na("2001:db8:1::100")]);
        o.relay = None;
        o.link.interface = iface.map(Arc::from);
        let got = match ad.admit(o) {
            Admitted::Whole(o) => o.link.interface.map(|i| i.to_string()),
            _ => None,
        };
        assert_eq!(got.as_deref(), want, "{iface:?}");
    }
}

#[test]
fn restored_leases_are_checked_against_todays_configuration() {
    let ad = admission();
    let lease = |link: &str, hop: Option<&str>| Lease {
        client: Arc::new(ClientInfo {
            duid: vec![1, 2, 3].into(),
            link: Link {
                address: a(link),
                interface: Some(Arc::from("old0")),
            },
            relay: None,
        }),
        server: Arc::new(ServerId {
            duid: vec![0, 1].into(),
            address: a(SERVER),
        }),
        ia: IaType::Pd,
        iaid: 1,
        preferred_until: Timestamp::NEVER,
        valid_until: Timestamp::NEVER,
        last_transaction: Timestamp::from_secs(0),
        arrival: Timestamp::from_secs(0),
        source: Source::Snoop,
        srsn: None,
        next_hop: hop.map(a),
    };
    let k = LeaseKey::Prefix(p("2001:db8:100::/56"));
    let mut ok = lease(LINK1, Some("fe80::1"));
    assert_eq!(ad.admit_restored(&k, &mut ok), Ok(()));
    assert_eq!(ok.client.link.interface.as_deref(), Some("sub0"));
    let mut gone = lease("2001:db8:9::1", Some("fe80::1"));
    assert_eq!(
        ad.admit_restored(&k, &mut gone),
        Err(Rejection::UnknownLink)
    );
    let mut moved = lease(LINK2, Some("fe80::1"));
    assert_eq!(
        ad.admit_restored(&k, &mut moved),
        Err(Rejection::OutsideLink)
    );
    let mut hop = lease(LINK1, Some("2001:db8:ffff::66"));
    assert_eq!(ad.admit_restored(&k, &mut hop), Err(Rejection::BadNextHop));
    assert_eq!(ad.stats().get(Origin::StateFile, Rejection::UnknownLink), 1);
}

#[test]
fn own_addresses_follow_the_kernel() {
    let own = Arc::new(OwnAddresses::default());
    let ad = Admission::new(
        vec![rule("cable1", "sub0", LINK1, &["2001:db8:1::/64"])],
        [],
        own.clone(),
    );
    let o = || obs(Source::Snoop, LINK1, None, vec![na("2001:db8:1::5")]);
    assert!(matches!(ad.admit(o()), Admitted::Whole(_)));
    own.replace([a("2001:db8:1::5")].into_iter().collect());
    assert_eq!(refused_reason(&ad.admit(o())), Some(Rejection::OwnAddress));
}

/// Two links sharing one link-address behind an LDRA (told apart by this box's Interface-Id),
/// and a plain link: what rule A7 is checked against.
fn ldra_admission() -> Admission {
    let mut port_a = rule(
        "ldra-a",
        "sub10",
        LINK1,
        &["2001:db8:1::/64", "2001:db8:100::/40"],
    );
    port_a.interface_id = Some(b"sub10".to_vec().into());
    port_a.ldra = true;
    let mut port_b = rule(
        "ldra-b",
        "sub20",
        LINK1,
        &["2001:db8:1::/64", "2001:db8:100::/40"],
    );
    port_b.interface_id = Some(b"sub20".to_vec().into());
    port_b.ldra = true;
    let plain = rule(
        "cable2",
        "sub1",
        LINK2,
        &["2001:db8:2::/64", "2001:db8:200::/40"],
    );
    Admission::new(
        vec![port_a, port_b, plain],
        [a(SERVER)],
        Arc::new(OwnAddresses::new([a(LINK1), a(LINK2), a(RELAY_UP)])),
    )
}

/// An observation as the snooper makes it from a wrapped message: this box's level (link,
/// peer-address, Interface-Id) and `levels` levels below it, the nearest with `inner_peer`.
fn wrapped(
    link: &str,
    ours_id: &[u8],
    ours_peer: &str,
    levels: u8,
    inner_peer: Option<&str>,
    leases: Vec<ObservedLease>,
) -> Observation {
    let mut o = obs(Source::Snoop, link, Some(ours_peer), leases);
    let r = o.relay.as_mut().unwrap();
    r.interface_id = Some(ours_id.into());
    r.access = Some(Box::new(AccessPort {
        levels,
        peer_address: inner_peer.map(a),
        interface_id: Some(b"port-3".to_vec().into()),
        remote_id: Some(vec![0, 0, 0, 9, b'x'].into()),
    }));
    o
}

/// A7: (what, observation, what admission makes of it: the interface and next hop, or why not).
#[test]
fn nested_relay_levels_only_on_an_ldra_link() {
    type Want = Result<(&'static str, Option<&'static str>), Rejection>;
    let pfx = || vec![pd("2001:db8:100::/56")];
    let pfx2 = || vec![pd("2001:db8:200::/56")];
    let rows: Vec<(&str, Observation, Want)> = vec![
        (
            "a subscriber posing as an LDRA on a plain link: refused whole",
            wrapped(LINK2, b"sub1", "fe80::66", 1, Some("fe80::99"), pfx2()),
            Err(Rejection::NestedRelay),
        ),
        (
            "a genuine LDRA on an LDRA link: the LDRA level's peer-address is the next hop",
            wrapped(LINK1, b"sub10", "fe80::a", 1, Some("fe80::7"), pfx()),
            Ok(("sub10", Some("fe80::7"))),
        ),
        (
            "this box's Interface-Id picks the link, never the access port's",
            wrapped(LINK1, b"sub20", "fe80::a", 1, Some("fe80::8"), pfx()),
            Ok(("sub20", Some("fe80::8"))),
        ),
        (
            "two levels below ours (an LDRA behind an LDRA, or a forged one inside): refused",
            wrapped(LINK1, b"sub10", "fe80::a", 2, Some("fe80::7"), pfx()),
            Err(Rejection::NestedRelay),
        ),
        (
            "A5 applies to the chosen next hop: an LDRA naming a server is refused",
            wrapped(LINK1, b"sub10", "fe80::a", 1, Some(SERVER), pfx()),
            Err(Rejection::BadNextHop),
        ),
        (
            "A5 applies to the chosen next hop: an LDRA naming this box is refused",
            wrapped(LINK1, b"sub10", "fe80::a", 1, Some(LINK1), pfx()),
            Err(Rejection::BadNextHop),
        ),
        (
            "an LDRA level without a peer-address leaves no next hop (never ours instead)",
            wrapped(LINK1, b"sub10", "fe80::a", 1, None, pfx()),
            Ok(("sub10", None)),
        ),
        (
            "an unwrapped message on an LDRA link keeps this box's peer-address",
            {
                let mut o = obs(Source::Snoop, LINK1, Some("fe80::5"), pfx());
                o.relay.as_mut().unwrap().interface_id = Some(b"sub10".to_vec().into());
                o
            },
            Ok(("sub10", Some("fe80::5"))),
        ),
        (
            "a leasequery answer's relay data obeys the same rule",
            {
                let mut o = wrapped(LINK2, b"sub1", "fe80::66", 1, Some("fe80::99"), pfx2());
                o.source = Source::Leasequery;
                o
            },
            Err(Rejection::NestedRelay),
        ),
    ];
    for (what, o, want) in rows {
        let ad = ldra_admission();
        let origin = Origin::of(o.source);
        let got: Result<(String, Option<Ipv6Addr>), Rejection> = match ad.admit(o) {
            Admitted::Whole(o) => Ok((
                o.link.interface.as_deref().unwrap_or("").to_string(),
                o.relay.as_ref().and_then(|r| r.peer_address),
            )),
            other => Err(refused_reason(&other).expect(what)),
        };
        let want = want.map(|(i, h)| (i.to_string(), h.map(a)));
        assert_eq!(got, want, "{what}");
        if let Err(r) = want {
            assert_eq!(ad.stats().get(origin, r), 1, "{what}: counted");
        }
    }
}

#[test]
fn a_wrapped_withdrawal_passes_only_on_an_ldra_link() {
    let ad = ldra_admission();
    let at = Timestamp::from_secs(1_800_000_000);
    let relay = |id: &[u8], levels: Option<u8>| RelayData {
        peer_address: Some(a("fe80::a")),
        interface_id: Some(id.into()),
        remote_id: None,
        access: levels.map(|levels| {
            Box::new(AccessPort {
                levels,
                ..AccessPort::default()
            })
        }),
    };
    assert!(ad.admit_wrapped_withdrawal(at, a(LINK1), &relay(b"sub10", Some(1)), &[1]));
    assert!(ad.admit_wrapped_withdrawal(at, a(LINK2), &relay(b"sub1", None), &[1]));
    assert!(!ad.admit_wrapped_withdrawal(at, a(LINK2), &relay(b"sub1", Some(1)), &[1]));
    assert!(!ad.admit_wrapped_withdrawal(at, a(LINK1), &relay(b"sub10", Some(2)), &[1]));
    assert!(
        !ad.admit_wrapped_withdrawal(at, a("2001:db8:9::1"), &relay(b"x", Some(1)), &[1]),
        "unknown link"
    );
    assert_eq!(ad.stats().get(Origin::Snoop, Rejection::NestedRelay), 3);
}

#[test]
fn a_restored_wrapped_lease_needs_its_link_to_still_have_an_ldra() {
    let ad = ldra_admission();
    let lease = |link: &str, id: &[u8], levels: u8| Lease {
        client: Arc::new(ClientInfo {
            duid: vec![1, 2, 3].into(),
            link: Link {
                address: a(link),
                interface: None,
            },
            relay: Some(Box::new(RelayData {
                peer_address: Some(a("fe80::7")),
                interface_id: Some(id.into()),
                remote_id: None,
                access: Some(Box::new(AccessPort {
                    levels,
                    peer_address: Some(a("fe80::7")),
                    interface_id: Some(b"port-3".to_vec().into()),
                    remote_id: None,
                })),
            })),
        }),
        server: Arc::new(ServerId {
            duid: vec![0, 1].into(),
            address: a(SERVER),
        }),
        ia: IaType::Pd,
        iaid: 1,
        preferred_until: Timestamp::NEVER,
        valid_until: Timestamp::NEVER,
        last_transaction: Timestamp::from_secs(0),
        arrival: Timestamp::from_secs(0),
        source: Source::Snoop,
        srsn: None,
        next_hop: Some(a("fe80::7")),
    };
    let mut ok = lease(LINK1, b"sub20", 1);
    let k = LeaseKey::Prefix(p("2001:db8:100::/56"));
    assert_eq!(ad.admit_restored(&k, &mut ok), Ok(()));
    assert_eq!(ok.client.link.interface.as_deref(), Some("sub20"));
    let k2 = LeaseKey::Prefix(p("2001:db8:200::/56"));
    let mut plain = lease(LINK2, b"sub1", 1);
    assert_eq!(
        ad.admit_restored(&k2, &mut plain),
        Err(Rejection::NestedRelay),
        "the link no longer has an LDRA in front"
    );
    let mut deep = lease(LINK1, b"sub10", 2);
    assert_eq!(
        ad.admit_restored(&k, &mut deep),
        Err(Rejection::NestedRelay)
    );
}

/// Lookups read the set a thread last saw while its version stands: a replace is seen at the
/// next lookup on every thread, and two sets read in turn on one thread are never taken for
/// each other.
#[test]
fn own_addresses_read_without_a_lock_see_every_replace_and_never_another_set() {
    let x = a("2001:db8:1::5");
    let one = Arc::new(OwnAddresses::new([x]));
    let two = OwnAddresses::default();
    for _ in 0..2 {
        assert!(one.contains(&x));
        assert!(!two.contains(&x));
    }
    two.replace([x].into_iter().collect());
    one.replace(std::collections::HashSet::new());
    assert!(!one.contains(&x));
    assert!(two.contains(&x));
    assert!(two.with(|own| one.with(|inner| own.contains(&x) && !inner.contains(&x))));
    let there = one.clone();
    std::thread::spawn(move || {
        assert!(!there.contains(&x));
        there.replace([x].into_iter().collect());
        assert!(there.contains(&x));
    })
    .join()
    .unwrap();
    assert!(one.contains(&x), "replaced on another thread, seen here");
}
