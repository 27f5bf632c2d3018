//! One named, table-driven test per merge rule of `cache::merge` (R1–R14), plus property tests:
//! answers from different servers applied in any order give the same cache, and replaying an
//! answer changes nothing.

use std::net::Ipv6Addr;
use std::sync::Arc;

use lqagent::cache::{
    Applied, BindingStore, CacheConfig, ChangeKind, CltCheck, Confirmation, DoubtReason, IaType,
    LeaseKey, Link, MergeConfig, MergeVerdict, MoveKind, Observation, ObservedLease, RelayData,
    ServerId, Source, Sweep, Timestamp, WithdrawReason, Withdrawal,
};
use lqagent::prefix::Ipv6Prefix;
use lqagent::wire::{Duid, INFINITE_LIFETIME};
use proptest::prelude::*;

const T0: i64 = 1_795_000_000; // Unix seconds, Nov 2026

fn addr(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, n)
}
fn pfx(n: u16, len: u8) -> Ipv6Prefix {
    Ipv6Prefix::new(Ipv6Addr::new(0x2001, 0xdb8, 0x100 + n, 0, 0, 0, 0, 0), len).unwrap()
}
fn server(n: u8) -> Arc<ServerId> {
    Arc::new(ServerId {
        duid: vec![0, 3, 0, 1, n].into(),
        address: Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, u16::from(n)),
    })
}
fn link() -> Link {
    Link {
        address: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1),
        interface: Some("cm0".into()),
    }
}
fn na(n: u16, valid: u32) -> ObservedLease {
    ObservedLease {
        key: LeaseKey::Address(addr(n)),
        ia: IaType::Na,
        iaid: 1,
        preferred: valid / 2,
        valid,
    }
}
fn pd(n: u16, valid: u32) -> ObservedLease {
    ObservedLease {
        key: LeaseKey::Prefix(pfx(n, 56)),
        ia: IaType::Pd,
        iaid: 2,
        preferred: valid / 2,
        valid,
    }
}

/// An answer: client `c`, from server `s`, arriving at T0+`at` s, CLT `clt`.
fn obs(c: u8, s: u8, at: i64, clt: Option<u32>, leases: Vec<ObservedLease>) -> Observation {
    Observation {
        client_duid: vec![0, 1, 0, 1, c].into(),
        link: link(),
        relay: None,
        server: server(s),
        source: if clt.is_some() {
            Source::Leasequery
        } else {
            Source::Snoop
        },
        clt_time: clt,
        base_time: None,
        srsn: None,
        complete: clt.is_some(),
        leases,
        arrival: Timestamp::from_secs(T0 + at),
        query_address: None,
    }
}

fn store() -> BindingStore {
    BindingStore::new(CacheConfig::default())
}

/// Apply each step; check the verdict for `key` in the last step and who holds it at the end.
struct Case {
    name: &'static str,
    steps: Vec<Observation>,
    key: LeaseKey,
    last_verdict: MergeVerdict,
    /// (client byte, server byte) holding `key` at the end, or None when absent.
    holder: Option<(u8, u8)>,
}

fn run(cases: Vec<Case>) {
    for c in cases {
        let s = store();
        let mut last = Vec::new();
        for o in &c.steps {
            last = s.apply(o).verdicts;
        }
        let v = last.iter().find(|(k, _)| *k == c.key).map(|(_, v)| *v);
        assert_eq!(v, Some(c.last_verdict), "case {}: verdict", c.name);
        let held = s.get(&c.key).map(|l| {
            (
                *l.client.duid.last().unwrap(),
                *l.server.duid.last().unwrap(),
            )
        });
        assert_eq!(held, c.holder, "case {}: holder", c.name);
    }
}

#[test]
fn r1_disjoint_data_is_merged_as_union() {
    let s = store();
    let a = s.apply(&obs(1, 1, 0, Some(10), vec![na(1, 3600)]));
    assert_eq!(a.changes.len(), 1);
    // Another server (not complete for server 1's data) adds a prefix: union, NA stays.
    let b = s.apply(&obs(1, 2, 1, Some(10), vec![pd(1, 3600)]));
    assert_eq!(
        b.verdicts,
        vec![(LeaseKey::Prefix(pfx(1, 56)), MergeVerdict::Added)]
    );
    assert!(s.get(&LeaseKey::Address(addr(1))).is_some());
    assert!(s.get(&LeaseKey::Prefix(pfx(1, 56))).is_some());
    // Same type, different address from a third server: union too.
    s.apply(&obs(1, 3, 2, Some(10), vec![na(2, 3600)]));
    assert_eq!(s.by_client(&[0, 1, 0, 1, 1]).len(), 3);
}

#[test]
fn r2_overlapping_from_different_servers_newest_clt_wins() {
    run(vec![
        Case {
            name: "newer arrives second",
            steps: vec![
                obs(1, 1, 0, Some(500), vec![na(1, 3600)]),
                obs(2, 2, 0, Some(100), vec![na(1, 3600)]),
            ],
            key: LeaseKey::Address(addr(1)),
            last_verdict: MergeVerdict::Updated,
            holder: Some((2, 2)),
        },
        Case {
            name: "older arrives second",
            steps: vec![
                obs(2, 2, 0, Some(100), vec![na(1, 3600)]),
                obs(1, 1, 0, Some(500), vec![na(1, 3600)]),
            ],
            key: LeaseKey::Address(addr(1)),
            last_verdict: MergeVerdict::LostToNewerClt,
            holder: Some((2, 2)),
        },
        Case {
            name: "older CLT but later arrival still older",
            steps: vec![
                obs(2, 2, 0, Some(100), vec![na(1, 3600)]),
                obs(1, 1, 300, Some(500), vec![na(1, 3600)]), // T0+300-500 < T0-100
            ],
            key: LeaseKey::Address(addr(1)),
            last_verdict: MergeVerdict::LostToNewerClt,
            holder: Some((2, 2)),
        },
    ]);
}

#[test]
fn r3_tie_between_servers_is_broken_by_server_duid_not_order() {
    for order in [[1u8, 2], [2, 1]] {
        let s = store();
        for sv in order {
            s.apply(&obs(sv, sv, 0, Some(100), vec![na(1, 3600)]));
        }
        let l = s.get(&LeaseKey::Address(addr(1))).unwrap();
        assert_eq!(*l.server.duid.last().unwrap(), 2, "order {order:?}");
    }
}

fn with_srsn(mut o: Observation, n: u32) -> Observation {
    o.srsn = Some(n);
    o
}

#[test]
fn r4_same_server_older_sequence_number_never_overwrites_newer() {
    run(vec![
        Case {
            name: "srsn 7 after 9 within window",
            steps: vec![
                with_srsn(obs(2, 1, 0, Some(0), vec![na(1, 3600)]), 9),
                with_srsn(obs(1, 1, 5, Some(0), vec![na(1, 3600)]), 7),
            ],
            key: LeaseKey::Address(addr(1)),
            last_verdict: MergeVerdict::LostToNewerSrsn,
            holder: Some((2, 1)),
        },
        Case {
            name: "srsn newer even though it arrived earlier in wall time order",
            steps: vec![
                with_srsn(obs(1, 1, 5, Some(0), vec![na(1, 3600)]), 7),
                with_srsn(obs(2, 1, 3, Some(0), vec![na(1, 3600)]), 9),
            ],
            key: LeaseKey::Address(addr(1)),
            last_verdict: MergeVerdict::Updated,
            holder: Some((2, 1)),
        },
        Case {
            name: "serial arithmetic across wrap",
            steps: vec![
                with_srsn(obs(1, 1, 0, Some(0), vec![na(1, 3600)]), u32::MAX - 1),
                with_srsn(obs(2, 1, 1, Some(0), vec![na(1, 3600)]), 3),
            ],
            key: LeaseKey::Address(addr(1)),
            last_verdict: MergeVerdict::Updated,
            holder: Some((2, 1)),
        },
    ]);
}

#[test]
fn r4_r11_a_late_older_answer_does_not_move_the_next_hop() {
    let via = |o: Observation, peer: &str| Observation {
        relay: Some(RelayData {
            peer_address: Some(peer.parse().unwrap()),
            ..RelayData::default()
        }),
        ..o
    };
    // Same server: newer sequence number first, the older one (other relay peer) arrives later
    // with the same CLT_TIME; then another server with an older CLT (R2).
    let s = store();
    s.apply(&via(
        with_srsn(obs(1, 1, 0, Some(5), vec![pd(1, 3600)]), 1000),
        "fe80::a",
    ));
    let late = s.apply(&via(
        with_srsn(obs(1, 1, 2, Some(5), vec![pd(1, 3600)]), 1),
        "fe80::b",
    ));
    assert_eq!(late.verdicts[0].1, MergeVerdict::LostToNewerSrsn);
    assert!(late.changes.is_empty(), "{:?}", late.changes);
    let older = s.apply(&via(obs(1, 2, 3, Some(500), vec![pd(1, 3600)]), "fe80::c"));
    assert_eq!(older.verdicts[0].1, MergeVerdict::LostToNewerClt);
    assert!(older.changes.is_empty());
    let l = s.get(&LeaseKey::Prefix(pfx(1, 56))).unwrap();
    assert_eq!(l.next_hop, Some("fe80::a".parse().unwrap()));
}

#[test]
fn r5_server_restart_resets_sequence_history_after_the_window() {
    let window = MergeConfig::default().srsn_reorder_window_ms / 1000;
    run(vec![Case {
        name: "restarted server counting from 1 is believed after the window",
        steps: vec![
            with_srsn(obs(1, 1, 0, Some(0), vec![na(1, 3600)]), 50_000),
            with_srsn(obs(2, 1, window + 1, Some(0), vec![na(1, 3600)]), 1),
        ],
        key: LeaseKey::Address(addr(1)),
        last_verdict: MergeVerdict::Updated,
        holder: Some((2, 1)),
    }]);
}

#[test]
fn r6_same_server_without_sequence_numbers_newer_transaction_then_later_arrival_wins() {
    run(vec![
        Case {
            name: "later arrival with newer transaction replaces",
            steps: vec![
                obs(1, 1, 0, Some(10), vec![na(1, 3600)]),
                obs(2, 1, 5, Some(1), vec![na(1, 3600)]),
            ],
            key: LeaseKey::Address(addr(1)),
            last_verdict: MergeVerdict::Updated,
            holder: Some((2, 1)),
        },
        Case {
            name: "same transaction instant: later arrival wins",
            steps: vec![
                obs(1, 1, 0, Some(10), vec![na(1, 3600)]),
                obs(2, 1, 5, Some(15), vec![na(1, 3600)]),
            ],
            key: LeaseKey::Address(addr(1)),
            last_verdict: MergeVerdict::Updated,
            holder: Some((2, 1)),
        },
        Case {
            name: "earlier arrival applied late loses",
            steps: vec![
                obs(2, 1, 5, Some(10), vec![na(1, 3600)]),
                obs(1, 1, 0, Some(10), vec![na(1, 3600)]),
            ],
            key: LeaseKey::Address(addr(1)),
            last_verdict: MergeVerdict::LostToLaterArrival,
            holder: Some((2, 1)),
        },
        Case {
            name: "a later answer claiming an older transaction loses",
            steps: vec![
                obs(1, 1, 0, Some(10), vec![na(1, 3600)]),
                obs(2, 1, 5, Some(900), vec![na(1, 3600)]),
            ],
            key: LeaseKey::Address(addr(1)),
            last_verdict: MergeVerdict::LostToLaterArrival,
            holder: Some((1, 1)),
        },
    ]);
}

/// A store that believes server `n`'s answers list every lease (`complete_answers = true`).
fn store_believing(n: u8) -> BindingStore {
    let mut cfg = CacheConfig::default();
    cfg.merge.complete_servers = vec![server(n).address];
    BindingStore::new(cfg)
}

#[test]
fn r7_complete_answer_omitting_a_lease_removes_it() {
    let s = store_believing(1);
    s.apply(&obs(1, 1, 0, Some(10), vec![na(1, 3600), pd(1, 3600)]));
    // A snoop of another server's lease for the same client is not touched by server 1's omission.
    s.apply(&obs(1, 2, 1, None, vec![na(9, 3600)]));
    let out = s.apply(&obs(1, 1, 10, Some(10), vec![na(1, 3600)]));
    assert!(
        out.verdicts
            .contains(&(LeaseKey::Prefix(pfx(1, 56)), MergeVerdict::RemovedOmitted))
    );
    assert!(s.get(&LeaseKey::Prefix(pfx(1, 56))).is_none());
    assert!(s.get(&LeaseKey::Address(addr(9))).is_some());
    let removed: Vec<_> = out
        .changes
        .iter()
        .filter(|c| c.kind == ChangeKind::Removed)
        .map(|c| c.key)
        .collect();
    assert_eq!(removed, vec![LeaseKey::Prefix(pfx(1, 56))]);
    // An incomplete (snooped) answer never implies omission.
    let s2 = store_believing(1);
    s2.apply(&obs(1, 1, 0, None, vec![na(1, 3600), pd(1, 3600)]));
    s2.apply(&obs(1, 1, 5, None, vec![na(1, 3600)]));
    assert!(s2.get(&LeaseKey::Prefix(pfx(1, 56))).is_some());
    // An omission older than the stored data does not remove it.
    let s3 = store_believing(1);
    s3.apply(&obs(1, 1, 10, Some(1), vec![na(1, 3600), pd(1, 3600)]));
    s3.apply(&obs(1, 1, 0, Some(1), vec![na(1, 3600)]));
    assert!(s3.get(&LeaseKey::Prefix(pfx(1, 56))).is_some());
}

/// R7 as a table: whether an answer that omits the client's prefix removes it depends on the
/// answer claiming completeness (a leasequery CLIENT_DATA, not a snoop or a bulk DATA) and on the
/// operator believing that server (`complete_answers`); never on anything else.
#[test]
fn r7_omission_removes_only_where_the_server_is_known_complete() {
    // (case, servers believed complete, the omitting answer's server, it claims completeness,
    //  prefix still held afterwards)
    let cases: [(&str, &[u8], u8, bool, bool); 6] = [
        (
            "default: no server believed (ISC/Kea by address)",
            &[],
            1,
            true,
            true,
        ),
        ("server 1 believed complete", &[1], 1, true, false),
        ("another server believed, not this one", &[2], 1, true, true),
        (
            "believed server, but a bulk DATA / snoop",
            &[1],
            1,
            false,
            true,
        ),
        (
            "believed server 2 omits server 1's lease",
            &[2],
            2,
            true,
            true,
        ),
        (
            "both believed, server 2 omits server 1's lease",
            &[1, 2],
            2,
            true,
            true,
        ),
    ];
    for (name, believed, by, claims, held) in cases {
        let mut cfg = CacheConfig::default();
        cfg.merge.complete_servers = believed.iter().map(|n| server(*n).address).collect();
        let s = BindingStore::new(cfg);
        s.apply(&obs(1, 1, 0, Some(10), vec![na(1, 3600), pd(1, 3600)]));
        let mut o = obs(1, by, 10, Some(5), vec![na(1, 3600)]);
        o.complete = claims;
        let out = s.apply(&o);
        let key = LeaseKey::Prefix(pfx(1, 56));
        assert_eq!(s.get(&key).is_some(), held, "case {name}: prefix held");
        assert_eq!(
            out.verdicts.contains(&(key, MergeVerdict::RemovedOmitted)),
            !held,
            "case {name}: verdict"
        );
        assert!(s.get(&LeaseKey::Address(addr(1))).is_some(), "case {name}");
    }
}

/// The lab symptom: a client's /128 is re-learnt by a query by address to ISC dhcpd (which
/// answers with that address only); its delegated prefix, learnt before, keeps its route.
#[test]
fn r7_isc_answer_by_address_keeps_the_clients_prefix() {
    let s = store();
    let mut first = obs(1, 1, 0, Some(10), vec![na(1, 3600), pd(1, 3600)]);
    first.relay = Some(RelayData {
        peer_address: Some("fe80::1".parse().unwrap()),
        ..RelayData::default()
    });
    s.apply(&first);
    s.apply(&Observation {
        leases: vec![na(1, 0)],
        ..obs(1, 1, 5, None, vec![])
    }); // the /128 cleared (released)
    let out = s.apply(&obs(1, 1, 20, Some(1), vec![na(1, 3600)]));
    assert_eq!(
        out.verdicts,
        vec![(LeaseKey::Address(addr(1)), MergeVerdict::Added)]
    );
    let p = s.get(&LeaseKey::Prefix(pfx(1, 56))).expect("prefix kept");
    assert_eq!(p.next_hop, Some("fe80::1".parse().unwrap()));
}

/// A bulk recovery from a server that sends one CLIENT_DATA per lease (Kea 3): the address and
/// the prefix of one client arrive in separate DATA messages; both are kept.
#[test]
fn bulk_data_one_lease_per_message_keeps_every_lease() {
    let s = store_believing(1);
    let relay = Some(RelayData {
        peer_address: Some("fe80::7".parse().unwrap()),
        ..RelayData::default()
    });
    for leases in [vec![na(1, 3600)], vec![pd(1, 3600)], vec![pd(2, 3600)]] {
        let mut o = obs(1, 1, 0, Some(10), leases);
        o.source = Source::Bulk;
        o.complete = false;
        o.relay = relay.clone();
        s.apply(&o);
    }
    assert_eq!(s.by_client(&[0, 1, 0, 1, 1]).len(), 3);
    for p in [pfx(1, 56), pfx(2, 56)] {
        let l = s.get(&LeaseKey::Prefix(p)).unwrap();
        assert_eq!(l.next_hop, Some("fe80::7".parse().unwrap()));
    }
}

fn listing(server_n: u8, link: Option<Ipv6Addr>, mentioned: &[LeaseKey], started: i64) -> Sweep {
    Sweep {
        server_duid: server(server_n).duid.clone(),
        link,
        mentioned: mentioned.iter().copied().collect(),
        started: Timestamp::from_secs(T0 + started),
        finished: Timestamp::from_secs(T0 + started + 1),
    }
}

fn other_link() -> Link {
    Link {
        address: Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1),
        interface: Some("cm1".into()),
    }
}

#[test]
fn r16_end_of_a_bulk_query_removes_what_that_server_did_not_list() {
    let s = store();
    // Server 1: client 1 (address 1 + prefix 1) and client 2 (address 2) on the link, client 3
    // (address 3) on another link; server 2: client 4 (address 4) on the link; client 5's
    // address 5 from server 1 arrives while the query runs.
    s.apply(&obs(1, 1, 0, Some(10), vec![na(1, 3600), pd(1, 3600)]));
    s.apply(&obs(2, 1, 0, Some(10), vec![na(2, 3600)]));
    s.apply(&Observation {
        link: other_link(),
        ..obs(3, 1, 0, Some(10), vec![na(3, 3600)])
    });
    s.apply(&obs(4, 2, 0, Some(10), vec![na(4, 3600)]));
    s.apply(&obs(5, 1, 30, Some(1), vec![na(5, 3600)]));
    let a = |n| LeaseKey::Address(addr(n));
    // A query by link-address, started at T0+20, listed only address 1.
    let out = s.sweep(&listing(1, Some(link().address), &[a(1)], 20));
    let mut removed: Vec<_> = out
        .verdicts
        .iter()
        .filter(|(_, v)| *v == MergeVerdict::RemovedOmitted)
        .map(|(k, _)| *k)
        .collect();
    removed.sort();
    assert_eq!(removed, vec![a(2), LeaseKey::Prefix(pfx(1, 56))]);
    for kept in [a(1), a(3), a(4), a(5)] {
        assert!(s.get(&kept).is_some(), "{kept} kept");
    }
    assert!(
        out.changes
            .iter()
            .all(|c| c.kind == ChangeKind::Removed && removed.contains(&c.key))
    );
    // Tombstone (R15): a late, older answer of server 1 about address 2 does not bring it back.
    let late = s.apply(&obs(2, 1, 22, Some(20), vec![na(2, 3600)]));
    assert_eq!(late.verdicts[0].1, MergeVerdict::LostToLaterArrival);
    assert!(s.get(&a(2)).is_none());
    // A query over every link of the relay (relay-id, link `::`) also covers the other link.
    let out = s.sweep(&listing(1, None, &[a(1)], 40));
    let removed: Vec<_> = out.verdicts.iter().map(|(k, _)| *k).collect();
    assert!(removed.contains(&a(3)) && removed.contains(&a(5)));
    assert!(
        s.get(&a(4)).is_some(),
        "server 2's lease is not server 1's to list"
    );
    assert!(s.get(&a(1)).is_some());
}

#[test]
fn r16_removing_an_address_moves_the_prefix_next_hop() {
    // No relay data: the prefix routes via the client's address (R11); when the sweep removes
    // that address, the prefix loses its next hop (an update, not a stale route).
    let s = store();
    s.apply(&obs(1, 1, 0, Some(10), vec![na(1, 3600), pd(1, 3600)]));
    assert_eq!(
        s.get(&LeaseKey::Prefix(pfx(1, 56))).unwrap().next_hop,
        Some(addr(1))
    );
    let out = s.sweep(&listing(
        1,
        Some(link().address),
        &[LeaseKey::Prefix(pfx(1, 56))],
        5,
    ));
    assert!(
        out.changes
            .iter()
            .any(|c| c.key == LeaseKey::Prefix(pfx(1, 56))
                && c.kind == ChangeKind::Updated
                && c.new.as_ref().unwrap().next_hop.is_none())
    );
    assert!(s.get(&LeaseKey::Address(addr(1))).is_none());
}

#[test]
fn r8_zero_valid_lifetime_removes_subject_to_precedence() {
    run(vec![
        Case {
            name: "same server, later, zero lifetime",
            steps: vec![
                obs(1, 1, 0, None, vec![na(1, 3600)]),
                obs(1, 1, 5, None, vec![na(1, 0)]),
            ],
            key: LeaseKey::Address(addr(1)),
            last_verdict: MergeVerdict::Removed,
            holder: None,
        },
        Case {
            name: "other server, older CLT, zero lifetime loses",
            steps: vec![
                obs(1, 1, 0, Some(5), vec![na(1, 3600)]),
                obs(1, 2, 1, Some(500), vec![na(1, 0)]),
            ],
            key: LeaseKey::Address(addr(1)),
            last_verdict: MergeVerdict::LostToNewerClt,
            holder: Some((1, 1)),
        },
        Case {
            name: "unknown lease with zero lifetime",
            steps: vec![obs(1, 1, 0, None, vec![na(1, 0)])],
            key: LeaseKey::Address(addr(1)),
            last_verdict: MergeVerdict::AlreadyGone,
            holder: None,
        },
    ]);
}

#[test]
fn r9_snooped_reply_competes_by_arrival_recency() {
    run(vec![
        Case {
            name: "snoop (recency = arrival) beats an older leasequery answer of another server",
            steps: vec![
                obs(1, 1, 0, Some(60), vec![na(1, 3600)]),
                obs(2, 2, 0, None, vec![na(1, 3600)]),
            ],
            key: LeaseKey::Address(addr(1)),
            last_verdict: MergeVerdict::Updated,
            holder: Some((2, 2)),
        },
        Case {
            name: "leasequery with CLT newer than the snoop beats it",
            steps: vec![
                obs(2, 2, 0, None, vec![na(1, 3600)]),
                obs(1, 1, 100, Some(10), vec![na(1, 3600)]),
            ],
            key: LeaseKey::Address(addr(1)),
            last_verdict: MergeVerdict::Updated,
            holder: Some((1, 1)),
        },
    ]);
}

#[test]
fn r10_prefix_cap_per_client_refuses_new_prefixes_keeps_old() {
    let cfg = CacheConfig {
        merge: MergeConfig {
            max_prefixes_per_client: 2,
            ..MergeConfig::default()
        },
        ..CacheConfig::default()
    };
    let s = BindingStore::new(cfg);
    let out = s.apply(&obs(
        1,
        1,
        0,
        None,
        vec![pd(1, 3600), pd(2, 3600), pd(3, 3600)],
    ));
    let over: Vec<_> = out
        .verdicts
        .iter()
        .filter(|(_, v)| *v == MergeVerdict::OverPrefixCap)
        .collect();
    assert_eq!(over.len(), 1);
    assert!(s.get(&LeaseKey::Prefix(pfx(3, 56))).is_none());
    // Refreshing a held prefix always works; releasing one frees room for a new one.
    let out = s.apply(&obs(1, 1, 5, None, vec![pd(1, 7200)]));
    assert_eq!(out.verdicts[0].1, MergeVerdict::Updated);
    let out = s.apply(&obs(1, 1, 6, None, vec![pd(2, 0), pd(3, 3600)]));
    assert!(
        out.verdicts
            .contains(&(LeaseKey::Prefix(pfx(3, 56)), MergeVerdict::Added))
    );
    assert_eq!(s.stats().verdict(MergeVerdict::OverPrefixCap), 1);
}

/// R10 per interface: a client chooses its DUID, so a port flooded with invented DUIDs is held by
/// the per-interface cap alone: past it a new DUID on `cm0` is refused (the pure merge and the
/// store's counts agree), a neighbour on `cm1` is admitted, a held binding on `cm0` still
/// refreshes, and a release on `cm0` frees room.
#[test]
fn r10_interface_cap_holds_against_invented_duids() {
    let merge_cfg = MergeConfig {
        max_bindings_per_interface: 3,
        ..MergeConfig::default()
    };
    let s = BindingStore::new(CacheConfig {
        merge: merge_cfg.clone(),
        ..CacheConfig::default()
    });
    let on = |port: &str, c: u8, at: i64, lease: ObservedLease| {
        let mut o = obs(c, 1, at, None, vec![lease]);
        o.link.interface = Some(port.into());
        o
    };
    for c in 1..=3u8 {
        let out = s.apply(&on("cm0", c, 0, na(u16::from(c), 3600)));
        assert_eq!(out.verdicts[0].1, MergeVerdict::Added, "DUID {c}");
    }
    // A fourth invented DUID on cm0: the pure merge over what the store holds refuses it too.
    let fourth = on("cm0", 4, 1, na(4, 3600));
    let current: std::collections::BTreeMap<_, _> = s.all().into_iter().collect();
    let pure = lqagent::cache::merge::merge(&current, &Default::default(), &fourth, &merge_cfg);
    assert_eq!(
        pure.verdicts,
        vec![(LeaseKey::Address(addr(4)), MergeVerdict::OverInterfaceCap)]
    );
    assert!(pure.writes.is_empty());
    let out = s.apply(&fourth);
    assert_eq!(
        out.verdicts,
        vec![(LeaseKey::Address(addr(4)), MergeVerdict::OverInterfaceCap)]
    );
    assert!(s.get(&LeaseKey::Address(addr(4))).is_none());
    // The neighbour on cm1 (same relay link): admitted.
    let out = s.apply(&on("cm1", 5, 1, na(5, 3600)));
    assert_eq!(out.verdicts[0].1, MergeVerdict::Added);
    // A held one on cm0 refreshes at the cap.
    let out = s.apply(&on("cm0", 1, 2, na(1, 7200)));
    assert_eq!(out.verdicts[0].1, MergeVerdict::Updated);
    // A release on cm0 frees room for the refused DUID.
    s.apply(&on("cm0", 2, 3, na(2, 0)));
    let out = s.apply(&on("cm0", 4, 4, na(4, 3600)));
    assert_eq!(out.verdicts[0].1, MergeVerdict::Added);
    let refused: Vec<_> = s.stats().cap_refused();
    assert!(
        refused.contains(&(lqagent::cache::Cap::BindingsPerInterface, 1)),
        "{refused:?}"
    );
}

#[test]
fn r11_prefix_next_hop_is_peer_address_else_client_na_address() {
    let s = store();
    // No relay data: the prefix routes via the client's IA_NA address.
    let out = s.apply(&obs(1, 1, 0, None, vec![na(1, 3600), pd(1, 3600)]));
    let p = out
        .changes
        .iter()
        .find(|c| c.key == LeaseKey::Prefix(pfx(1, 56)))
        .unwrap();
    assert_eq!(p.new.as_ref().unwrap().next_hop, Some(addr(1)));
    assert_eq!(p.new.as_ref().unwrap().interface.as_deref(), Some("cm0"));
    // Relay data arrives with a peer-address: the prefix is Updated with old and new next hop.
    let mut o = obs(1, 1, 5, None, vec![pd(1, 3600)]);
    let ll: Ipv6Addr = "fe80::1".parse().unwrap();
    o.relay = Some(RelayData {
        peer_address: Some(ll),
        ..RelayData::default()
    });
    let out = s.apply(&o);
    let c = out
        .changes
        .iter()
        .find(|c| c.key == LeaseKey::Prefix(pfx(1, 56)))
        .unwrap();
    assert_eq!(c.kind, ChangeKind::Updated);
    assert_eq!(c.old.as_ref().unwrap().next_hop, Some(addr(1)));
    assert_eq!(c.new.as_ref().unwrap().next_hop, Some(ll));
    assert!(c.route_affecting());
    // Another client: NA removal moves the next hop off the gone address.
    let s = store();
    s.apply(&obs(
        2,
        1,
        0,
        None,
        vec![na(2, 3600), na(3, 3600), pd(2, 3600)],
    ));
    assert_eq!(
        s.get(&LeaseKey::Prefix(pfx(2, 56))).unwrap().next_hop,
        Some(addr(2))
    );
    let out = s.apply(&obs(2, 1, 5, None, vec![na(2, 0)]));
    assert_eq!(out.changes.len(), 2, "{:?}", out.changes);
    assert_eq!(
        s.get(&LeaseKey::Prefix(pfx(2, 56))).unwrap().next_hop,
        Some(addr(3))
    );
}

#[test]
fn r12_replaying_an_answer_changes_nothing() {
    let s = store();
    let o = obs(1, 1, 0, Some(10), vec![na(1, 3600), pd(1, 3600)]);
    assert_eq!(s.apply(&o).changes.len(), 2);
    let before = s.all();
    let again = s.apply(&o);
    assert!(again.changes.is_empty());
    assert!(again.writes.is_empty());
    assert!(
        again
            .verdicts
            .iter()
            .all(|(_, v)| *v == MergeVerdict::Unchanged)
    );
    assert_eq!(s.all(), before);
}

#[test]
fn r13_clt_time_sanity() {
    // ISC dhcpd 4.4: CLT_TIME carries its absolute Unix time of the last transaction.
    let s = store();
    let mut o = obs(1, 1, 0, Some((T0 - 120) as u32), vec![na(1, 3600)]);
    o.complete = true;
    s.apply(&o);
    let l = s.get(&LeaseKey::Address(addr(1))).unwrap();
    assert_eq!(l.last_transaction, Timestamp::from_secs(T0 - 120));
    assert_eq!(l.valid_until, Timestamp::from_secs(T0 + 3600));
    assert_eq!(s.stats().clt_anomalies()[0], (CltCheck::UnixTimestamp, 1));
    // A Unix time in the future is not believed: recency = arrival.
    let mut o = obs(2, 2, 0, Some((T0 + 86_400) as u32), vec![na(2, 3600)]);
    o.complete = true;
    s.apply(&o);
    let l = s.get(&LeaseKey::Address(addr(2))).unwrap();
    assert_eq!(l.last_transaction, Timestamp::from_secs(T0));
    // CLT_TIME larger than the valid lifetime: flagged, kept (it only makes that data older).
    s.apply(&obs(3, 3, 0, Some(5000), vec![na(3, 600)]));
    let l = s.get(&LeaseKey::Address(addr(3))).unwrap();
    assert_eq!(l.last_transaction, Timestamp::from_secs(T0 - 5000));
    assert_eq!(l.valid_until, Timestamp::from_secs(T0 + 600));
    assert_eq!(s.stats().clt_anomalies()[1], (CltCheck::ExceedsValid, 1));
    // The check itself, for the record.
    let (_, c) = lqagent::cache::merge::last_transaction(
        &obs(1, 1, 0, Some(30), vec![na(1, INFINITE_LIFETIME)]),
        &MergeConfig::default(),
    );
    assert_eq!(c, CltCheck::Sane);
    // LQ_BASE_TIME is the server's clock when it answered (here 100 s behind ours): relative
    // CLT_TIME and lifetimes count from arrival on our clock, so a slow server clock shortens
    // nothing.
    let mut o = obs(4, 4, 0, Some(10), vec![na(4, 3600)]);
    o.base_time = Some((T0 - 100) as u32);
    s.apply(&o);
    let l = s.get(&LeaseKey::Address(addr(4))).unwrap();
    assert_eq!(l.last_transaction, Timestamp::from_secs(T0 - 10));
    assert_eq!(l.valid_until, Timestamp::from_secs(T0 + 3600));
    // An absolute (ISC) CLT_TIME with a base time: the difference between the server's clocks
    // is what counts, shifted to ours — 30 s before arrival although the server's clock says
    // T0 − 130.
    let mut o = obs(5, 5, 0, Some((T0 - 130) as u32), vec![na(5, 3600)]);
    o.base_time = Some((T0 - 100) as u32);
    s.apply(&o);
    let l = s.get(&LeaseKey::Address(addr(5))).unwrap();
    assert_eq!(l.last_transaction, Timestamp::from_secs(T0 - 30));
    assert_eq!(l.valid_until, Timestamp::from_secs(T0 + 3600));
}

#[test]
fn r14_withdrawal_release_and_operator_clear() {
    let s = store();
    s.apply(&obs(1, 1, 0, None, vec![na(1, 3600), pd(1, 3600)]));
    // A RELEASE reply older than the stored data does not remove it.
    let w = |at: i64, reason, duid: Option<u8>| Withdrawal {
        link: None,
        iaids: Vec::new(),
        keys: vec![LeaseKey::Prefix(pfx(1, 56))],
        client_duid: duid.map(|c| vec![0, 1, 0, 1, c].into()),
        reason,
        arrival: Timestamp::from_secs(T0 + at),
    };
    let out = s.withdraw(&w(-5, WithdrawReason::Released, Some(1)));
    assert_eq!(out.verdicts[0].1, MergeVerdict::LostToLaterArrival);
    // Another client's release does not remove it either.
    let out = s.withdraw(&w(5, WithdrawReason::Released, Some(7)));
    assert!(out.changes.is_empty());
    assert_eq!(out.verdicts[0].1, MergeVerdict::Doubted, "R17");
    let out = s.withdraw(&w(5, WithdrawReason::Released, Some(1)));
    assert_eq!(out.changes[0].kind, ChangeKind::Removed);
    // Operator clear removes unconditionally.
    let out = s.withdraw(&Withdrawal {
        link: None,
        iaids: Vec::new(),
        keys: vec![LeaseKey::Address(addr(1))],
        client_duid: None,
        reason: WithdrawReason::Operator,
        arrival: Timestamp::from_secs(T0 - 1000),
    });
    assert_eq!(out.changes.len(), 1);
    assert!(s.is_empty());
    assert_eq!(s.stats().withdrawn(), 2);
}

#[test]
fn r15_tombstone_stops_a_late_older_answer_resurrecting_a_removed_lease() {
    let s = store();
    s.apply(&obs(1, 1, 0, Some(10), vec![na(1, 3600)]));
    s.apply(&obs(1, 1, 10, None, vec![na(1, 0)])); // released at T0+10
    // A leasequery answer sent before the release but arriving late (other server, older CLT).
    let out = s.apply(&obs(1, 2, 12, Some(30), vec![na(1, 3600)]));
    assert_eq!(out.verdicts[0].1, MergeVerdict::LostToNewerClt);
    assert!(s.get(&LeaseKey::Address(addr(1))).is_none());
    // Data newer than the removal re-adds it.
    let out = s.apply(&obs(1, 2, 20, Some(1), vec![na(1, 3600)]));
    assert_eq!(out.verdicts[0].1, MergeVerdict::Added);
    // Expired tombstones are forgotten: after the TTL older data is accepted again.
    let s = store();
    s.apply(&obs(1, 1, 0, None, vec![na(2, 0)]));
    let ttl = CacheConfig::default().tombstone_ttl_ms / 1000;
    let out = s.apply(&obs(
        1,
        2,
        ttl + 1,
        Some(ttl as u32 + 10),
        vec![na(2, 3600)],
    ));
    assert_eq!(out.verdicts[0].1, MergeVerdict::Added);
}

#[test]
fn expiry_removes_lapsed_leases_and_emits_removal() {
    let s = store();
    s.apply(&obs(
        1,
        1,
        0,
        None,
        vec![na(1, 60), pd(1, 120), na(2, INFINITE_LIFETIME)],
    ));
    assert_eq!(s.next_deadline(), Some(Timestamp::from_secs(T0 + 60)));
    assert!(
        s.expire_due(Timestamp::from_secs(T0 + 59))
            .changes
            .is_empty()
    );
    let out = s.expire_due(Timestamp::from_secs(T0 + 60));
    assert_eq!(
        out.changes.len(),
        2,
        "NA removed, PD next hop moves to the other NA"
    );
    assert!(s.get(&LeaseKey::Address(addr(1))).is_none());
    // Refresh extends: the old deadline entry is stale and ignored.
    s.apply(&obs(1, 1, 100, None, vec![pd(1, 3600)]));
    assert!(
        s.expire_due(Timestamp::from_secs(T0 + 120))
            .changes
            .is_empty()
    );
    let out = s.expire_due(Timestamp::from_secs(T0 + 3700));
    assert_eq!(out.changes[0].kind, ChangeKind::Removed);
    assert_eq!(s.len(), 1, "infinite lifetime never expires");
    assert_eq!(s.stats().expired(), 2);
}

#[test]
fn lookups_by_address_prefix_client_and_link() {
    let s = store();
    let mut o = obs(1, 1, 0, None, vec![na(1, 3600), pd(1, 3600)]);
    o.leases.push(ObservedLease {
        key: LeaseKey::Prefix(pfx(1, 64)),
        ia: IaType::Pd,
        iaid: 3,
        preferred: 10,
        valid: 10,
    });
    s.apply(&o);
    let inside = Ipv6Addr::new(0x2001, 0xdb8, 0x101, 0, 0, 0, 0, 7);
    let (k, _) = s.lookup_address(inside).unwrap();
    assert_eq!(k, LeaseKey::Prefix(pfx(1, 64)), "longest match wins");
    let inside56 = Ipv6Addr::new(0x2001, 0xdb8, 0x101, 0x55, 0, 0, 0, 7);
    assert_eq!(s.covering_prefix(inside56).unwrap().0, pfx(1, 56));
    assert!(s.knows(addr(1)));
    assert!(!s.knows(addr(99)));
    assert_eq!(s.by_client(&[0, 1, 0, 1, 1]).len(), 3);
    assert_eq!(s.by_link(link().address).len(), 3);
    assert!(s.by_link(addr(5)).is_empty());
}

// ---- R17 ownership -------------------------------------------------------------------------

fn duid(c: u8) -> Duid {
    vec![0, 1, 0, 1, c].into()
}

fn pd_key(n: u16) -> LeaseKey {
    LeaseKey::Prefix(pfx(n, 56))
}

/// A snooped RELEASE reply from client `c` through `link` (None: the link is not known).
fn release(c: u8, link: Option<Link>, keys: Vec<LeaseKey>, iaids: Vec<u32>, at: i64) -> Withdrawal {
    Withdrawal {
        keys,
        client_duid: Some(duid(c)),
        link: link.map(|l| l.address),
        iaids,
        reason: WithdrawReason::Released,
        arrival: Timestamp::from_secs(T0 + at),
    }
}

fn clear(key: LeaseKey) -> Withdrawal {
    Withdrawal {
        keys: vec![key],
        client_duid: None,
        link: None,
        iaids: Vec::new(),
        reason: WithdrawReason::Operator,
        arrival: Timestamp::from_secs(T0 + 1000),
    }
}

/// `o` moved to another link.
fn on(mut o: Observation, l: Link) -> Observation {
    o.link = l;
    o
}

/// `o` as the answer to a leasequery by `asked`.
fn asking(mut o: Observation, asked: Ipv6Addr) -> Observation {
    o.query_address = Some(asked);
    o
}

fn with_iaid(mut o: Observation, iaid: u32) -> Observation {
    for l in &mut o.leases {
        l.iaid = iaid;
    }
    o
}

enum Then {
    Obs(Observation),
    Rel(Withdrawal),
}

struct DoubtRow {
    name: &'static str,
    then: Then,
    key: LeaseKey,
    reason: DoubtReason,
    claimant: u8,
}

/// Merge R17, every doubt: client 1 holds a /56 (snooped, IAID 2) on `link()`; each row is
/// something that would have changed it (or placed a key inside it) without coming from its
/// holder on its link nor being a server's word about the key. Each changes nothing, is counted
/// `doubted`, names the holder (client 1, its link and interface) and the claimant, and leaves
/// no tombstone in the holder's name: once the key is cleared, the holder's older data is taken.
#[test]
fn r17_every_doubt_changes_nothing_names_both_clients_and_leaves_no_tombstone() {
    let inside64 = LeaseKey::Prefix(pfx(1, 64));
    let inside128 = Ipv6Addr::new(0x2001, 0xdb8, 0x101, 0, 0, 0, 0, 7);
    let over48 = LeaseKey::Prefix(pfx(1, 48));
    let rows = vec![
        DoubtRow {
            name: "a stranger's REBIND answered with lifetime 0 (same link)",
            then: Then::Obs(obs(2, 1, 5, None, vec![pd(1, 0)])),
            key: pd_key(1),
            reason: DoubtReason::ZeroLifetimeOtherClient,
            claimant: 2,
        },
        DoubtRow {
            name: "a leasequery answer about another client, not about this key",
            then: Then::Obs(obs(2, 1, 5, Some(0), vec![pd(1, 0)])),
            key: pd_key(1),
            reason: DoubtReason::ZeroLifetimeOtherClient,
            claimant: 2,
        },
        DoubtRow {
            name: "the holder's DUID, lifetime 0, from another link",
            then: Then::Obs(on(obs(1, 1, 5, None, vec![pd(1, 0)]), other_link())),
            key: pd_key(1),
            reason: DoubtReason::ZeroLifetimeOtherClient,
            claimant: 1,
        },
        DoubtRow {
            name: "the holder's DUID, lifetime 0, in another IA (both snooped)",
            then: Then::Obs(with_iaid(obs(1, 1, 5, None, vec![pd(1, 0)]), 9)),
            key: pd_key(1),
            reason: DoubtReason::ZeroLifetimeOtherClient,
            claimant: 1,
        },
        DoubtRow {
            name: "a RELEASE naming a neighbour's prefix",
            then: Then::Rel(release(2, Some(link()), vec![pd_key(1)], vec![2], 5)),
            key: pd_key(1),
            reason: DoubtReason::ReleaseOtherClient,
            claimant: 2,
        },
        DoubtRow {
            name: "a RELEASE with the holder's DUID for another IAID",
            then: Then::Rel(release(1, Some(link()), vec![pd_key(1)], vec![9], 5)),
            key: pd_key(1),
            reason: DoubtReason::ReleaseOtherClient,
            claimant: 1,
        },
        DoubtRow {
            name: "a RELEASE with the holder's DUID and IAID from another link",
            then: Then::Rel(release(1, Some(other_link()), vec![pd_key(1)], vec![2], 5)),
            key: pd_key(1),
            reason: DoubtReason::ReleaseOtherLink,
            claimant: 1,
        },
        DoubtRow {
            name: "a /64 delegated inside another client's /56",
            then: Then::Obs(obs(
                2,
                1,
                5,
                None,
                vec![ObservedLease {
                    key: inside64,
                    ia: IaType::Pd,
                    iaid: 2,
                    preferred: 1800,
                    valid: 3600,
                }],
            )),
            key: inside64,
            reason: DoubtReason::Overlap,
            claimant: 2,
        },
        DoubtRow {
            name: "a /48 delegated over another client's /56",
            then: Then::Obs(obs(
                2,
                1,
                5,
                None,
                vec![ObservedLease {
                    key: over48,
                    ia: IaType::Pd,
                    iaid: 2,
                    preferred: 1800,
                    valid: 3600,
                }],
            )),
            key: over48,
            reason: DoubtReason::Overlap,
            claimant: 2,
        },
        DoubtRow {
            name: "a /128 inside another client's prefix",
            then: Then::Obs(obs(
                2,
                1,
                5,
                None,
                vec![ObservedLease {
                    key: LeaseKey::Address(inside128),
                    ia: IaType::Na,
                    iaid: 1,
                    preferred: 1800,
                    valid: 3600,
                }],
            )),
            key: LeaseKey::Address(inside128),
            reason: DoubtReason::Overlap,
            claimant: 2,
        },
    ];
    for r in rows {
        let name = r.name;
        let s = store();
        s.apply(&obs(1, 1, 0, None, vec![pd(1, 3600)]));
        let before = s.all();
        let out: Applied = match &r.then {
            Then::Obs(o) => s.apply(o),
            Then::Rel(w) => s.withdraw(w),
        };
        assert_eq!(
            out.verdicts,
            vec![(r.key, MergeVerdict::Doubted)],
            "{name}: verdict"
        );
        assert!(
            out.writes.is_empty() && out.changes.is_empty(),
            "{name}: wrote"
        );
        assert_eq!(s.all(), before, "{name}: the cache changed");
        assert_eq!(s.stats().verdict(MergeVerdict::Doubted), 1, "{name}");
        assert_eq!(out.doubts.len(), 1, "{name}: {:?}", out.doubts);
        let d = &out.doubts[0];
        assert_eq!((d.key, d.reason), (r.key, r.reason), "{name}");
        let holder = d.holder.as_ref().expect("holder");
        assert_eq!(&holder.duid[..], &duid(1)[..], "{name}: holder");
        assert_eq!(d.claimant.as_deref(), Some(&duid(r.claimant)[..]), "{name}");
        assert_eq!(
            (d.link, d.interface.as_deref()),
            (link().address, Some("cm0")),
            "{name}: the holder's link"
        );
        assert_eq!(d.at, Timestamp::from_secs(T0 + 5), "{name}");
        if r.reason == DoubtReason::Overlap {
            continue;
        }
        // No tombstone in the holder's name: once the key is cleared, the holder's own data
        // from before the doubt is taken.
        s.withdraw(&clear(r.key));
        let late = with_iaid(obs(1, 1, 3, None, vec![pd(1, 3600)]), 2);
        let out = s.apply(&late);
        assert_eq!(
            out.verdicts,
            vec![(r.key, MergeVerdict::Added)],
            "{name}: a tombstone was left"
        );
    }
}

/// Merge R17, what may remove: the holder on its link (its zero lifetime, also from a
/// leasequery answer whose IAID is unknown; its release, with or without the link known), a
/// leasequery answer about the key whoever it names, an operator clear.
#[test]
fn r17_removal_by_the_holder_on_its_link_or_the_servers_word_about_the_key() {
    let inside = Ipv6Addr::new(0x2001, 0xdb8, 0x101, 0, 0, 0, 0, 1);
    let rows: Vec<(&str, Then)> = vec![
        (
            "holder's zero lifetime, snooped, same IAID",
            Then::Obs(obs(1, 1, 5, None, vec![pd(1, 0)])),
        ),
        (
            "holder's zero lifetime in a leasequery answer (IAID 0: unknown)",
            Then::Obs(with_iaid(obs(1, 1, 5, Some(0), vec![pd(1, 0)]), 0)),
        ),
        (
            "a leasequery answer about the key, naming another client",
            Then::Obs(asking(obs(2, 1, 5, Some(0), vec![pd(1, 0)]), inside)),
        ),
        (
            "holder's RELEASE on its link, its IAID",
            Then::Rel(release(1, Some(link()), vec![pd_key(1)], vec![2], 5)),
        ),
        (
            "holder's RELEASE, link not known",
            Then::Rel(release(1, None, vec![pd_key(1)], Vec::new(), 5)),
        ),
        ("operator clear", Then::Rel(clear(pd_key(1)))),
    ];
    for (name, then) in rows {
        let s = store();
        s.apply(&obs(1, 1, 0, None, vec![pd(1, 3600)]));
        let out = match &then {
            Then::Obs(o) => s.apply(o),
            Then::Rel(w) => s.withdraw(w),
        };
        assert_eq!(
            out.verdicts,
            vec![(pd_key(1), MergeVerdict::Removed)],
            "{name}"
        );
        assert!(out.doubts.is_empty(), "{name}");
        assert!(s.is_empty(), "{name}");
    }
}

/// Merge R17, how a doubt ends: the confirming leasequery's answer decides. Client 1 holds a
/// /56; client 2's zero lifetime raised a doubt at T0+5; the confirmer asked at T0+6.
#[test]
fn r17_every_outcome_of_a_confirming_answer() {
    let inside = Ipv6Addr::new(0x2001, 0xdb8, 0x101, 0, 0, 0, 0, 1);
    let doubted = || {
        let s = store();
        s.apply(&obs(1, 1, 0, None, vec![pd(1, 3600)]));
        let out = s.apply(&obs(2, 1, 5, None, vec![pd(1, 0)]));
        assert_eq!(out.doubts.len(), 1);
        s
    };
    let gone = |srv: u8| Confirmation {
        key: pd_key(1),
        reason: DoubtReason::ZeroLifetimeOtherClient,
        server: server(srv),
        asked: Timestamp::from_secs(T0 + 6),
        arrival: Timestamp::from_secs(T0 + 7),
    };
    let holder = |s: &BindingStore| s.get(&pd_key(1)).map(|l| l.client.duid.last().copied());

    // Held: the server names the holder: kept and refreshed, nothing moves.
    let s = doubted();
    let out = s.apply(&asking(obs(1, 1, 7, Some(0), vec![pd(1, 7200)]), inside));
    assert_eq!(out.verdicts, vec![(pd_key(1), MergeVerdict::Updated)]);
    assert_eq!(holder(&s), Some(Some(1)));
    assert_eq!(
        s.get(&pd_key(1)).unwrap().valid_until,
        Timestamp::from_secs(T0 + 7 + 7200)
    );
    assert_eq!(s.stats().moves_of(MoveKind::Client), 0);

    // Moved: the server names another client: moved by that answer, counted and logged.
    let s = doubted();
    let out = s.apply(&asking(obs(2, 1, 7, Some(0), vec![pd(1, 3600)]), inside));
    assert_eq!(out.verdicts, vec![(pd_key(1), MergeVerdict::Updated)]);
    assert_eq!(holder(&s), Some(Some(2)));
    assert_eq!(s.stats().moves_of(MoveKind::Client), 1);

    // Gone: nobody holds it: removed, with a tombstone — the holder's late, older answer does
    // not bring it back.
    let s = doubted();
    let out = s.confirm(&gone(1));
    assert_eq!(out.verdicts, vec![(pd_key(1), MergeVerdict::Removed)]);
    assert_eq!(out.changes[0].kind, ChangeKind::Removed);
    assert!(s.is_empty());
    let late = s.apply(&obs(1, 1, 8, Some(5), vec![pd(1, 3600)]));
    assert_ne!(late.verdicts[0].1, MergeVerdict::Added, "resurrected");
    assert!(s.is_empty());

    // A refresh after the question is newer than the answer: kept.
    let s = doubted();
    s.apply(&obs(1, 1, 6, None, vec![pd(1, 3600)]));
    let out = s.confirm(&gone(1));
    assert!(out.changes.is_empty(), "{:?}", out.verdicts);
    assert_eq!(holder(&s), Some(Some(1)));

    // Another server's "nobody" says nothing about server 1's lease: kept.
    let s = doubted();
    let out = s.confirm(&gone(2));
    assert!(out.changes.is_empty());
    assert_eq!(holder(&s), Some(Some(1)));

    // Not held any more: nothing to do.
    let s = doubted();
    s.withdraw(&clear(pd_key(1)));
    let out = s.confirm(&gone(1));
    assert_eq!(out.verdicts, vec![(pd_key(1), MergeVerdict::AlreadyGone)]);
}

/// Merge R15 with R17: a tombstone competes only with data about the client it belonged to.
/// Client 1 released its /56; another client's answer from before the release is taken (the
/// server may have given it on); client 1's own late, older answer is not — also while the
/// other client holds the key; and a stranger's zero lifetime does not overwrite client 1's
/// tombstone.
#[test]
fn r15_r17_a_tombstone_competes_only_with_its_own_clients_data() {
    let s = store();
    s.apply(&obs(1, 1, 0, Some(10), vec![pd(1, 3600)]));
    s.withdraw(&release(1, Some(link()), vec![pd_key(1)], Vec::new(), 10));
    assert!(s.is_empty());
    // Client 2's answer: last transaction T0+5, before the release.
    let out = s.apply(&obs(2, 2, 20, Some(15), vec![pd(1, 3600)]));
    assert_eq!(
        out.verdicts[0].1,
        MergeVerdict::Added,
        "a stranger's tombstone"
    );
    // Client 1's late answer (last transaction T0+8) beats client 2's by R2 but not its own
    // release.
    let out = s.apply(&obs(1, 1, 20, Some(12), vec![pd(1, 3600)]));
    assert_ne!(out.verdicts[0].1, MergeVerdict::Updated);
    assert_eq!(
        s.get(&pd_key(1)).map(|l| l.client.duid.last().copied()),
        Some(Some(2))
    );

    // A stranger's zero lifetime about the unheld key keeps client 1's tombstone.
    let s = store();
    s.apply(&obs(1, 1, 0, Some(10), vec![pd(1, 3600)]));
    s.withdraw(&release(1, Some(link()), vec![pd_key(1)], Vec::new(), 10));
    let out = s.apply(&obs(3, 1, 12, None, vec![pd(1, 0)]));
    assert_eq!(out.verdicts[0].1, MergeVerdict::AlreadyGone);
    let out = s.apply(&obs(1, 1, 20, Some(12), vec![pd(1, 3600)]));
    assert_ne!(
        out.verdicts[0].1,
        MergeVerdict::Added,
        "tombstone overwritten"
    );
    assert!(s.is_empty());
}

/// Merge R15 with R17: replaying a client's answers changes nothing, also when another client
/// held the key when one of them said "not mine" (a doubt: remembered in the claimant's own
/// name, so its older answer cannot take the key afterwards — and the replay agrees).
#[test]
fn r15_r17_replays_stay_idempotent_across_clients() {
    for first_valid in [0, 3600] {
        let s = store();
        let answers = [
            obs(2, 1, 0, Some(390), vec![pd(5, first_valid)]),
            obs(1, 1, 0, Some(0), vec![pd(5, 0)]),
            obs(1, 1, 0, Some(1), vec![pd(5, 3600)]),
        ];
        for o in &answers {
            s.apply(o);
        }
        let before = s.all();
        for o in &answers {
            let out = s.apply(o);
            assert!(out.changes.is_empty(), "{first_valid}: {:?}", out.changes);
        }
        assert_eq!(s.all(), before);
    }
}

/// Merge R14, one clock: a release competes with the lease's client-last-transaction, not with
/// when its data arrived. An answer read after the release but about a transaction before it
/// does not block it; one about a later transaction does.
#[test]
fn r14_a_release_competes_with_the_leases_last_transaction_not_its_arrival() {
    let s = store();
    // Arrived at T0+20, last transaction T0+5.
    s.apply(&obs(1, 1, 20, Some(15), vec![pd(1, 3600)]));
    let out = s.withdraw(&release(1, Some(link()), vec![pd_key(1)], Vec::new(), 10));
    assert_eq!(out.verdicts, vec![(pd_key(1), MergeVerdict::Removed)]);
    let s = store();
    // Arrived at T0+20, last transaction T0+12: after the release.
    s.apply(&obs(1, 1, 20, Some(8), vec![pd(1, 3600)]));
    let out = s.withdraw(&release(1, Some(link()), vec![pd_key(1)], Vec::new(), 10));
    assert_eq!(
        out.verdicts,
        vec![(pd_key(1), MergeVerdict::LostToLaterArrival)]
    );
}

/// Merge R17: every change of holder, link or next hop is counted (and logged) by kind — a
/// next-hop change of the same client included — and a refresh is not.
#[test]
fn r17_every_move_is_counted_by_kind() {
    let s = store();
    let count = |s: &BindingStore| {
        [MoveKind::Client, MoveKind::Link, MoveKind::NextHop].map(|k| s.stats().moves_of(k))
    };
    s.apply(&obs(1, 1, 0, None, vec![pd(1, 3600)]));
    s.apply(&obs(1, 1, 1, None, vec![pd(1, 3600)]));
    assert_eq!(count(&s), [0, 0, 0], "a refresh is no move");
    let mut o = obs(1, 1, 2, None, vec![pd(1, 3600)]);
    o.relay = Some(RelayData {
        peer_address: Some("fe80::9".parse().unwrap()),
        ..RelayData::default()
    });
    let out = s.apply(&o);
    assert!(out.changes[0].route_affecting());
    assert_eq!(count(&s), [0, 0, 1], "the same client via another next hop");
    s.apply(&on(obs(1, 1, 3, None, vec![pd(1, 3600)]), other_link()));
    assert_eq!(count(&s), [0, 1, 1], "the same client on another link");
    s.apply(&obs(2, 1, 4, None, vec![pd(1, 3600)]));
    assert_eq!(count(&s), [1, 1, 1], "another client");
    let rows = s.stats().moves();
    assert!(
        rows.contains(&(Source::Snoop, lqagent::cache::MoveKind::NextHop, 1)),
        "{rows:?}"
    );
}

fn arb_answer() -> impl Strategy<Value = Observation> {
    (
        1u8..4,
        0i64..50,
        0u32..1000,
        proptest::collection::vec((0u16..6, any::<bool>(), 0u32..4000), 1..4),
    )
        .prop_map(|(srv, at, clt, leases)| {
            let ls = leases
                .into_iter()
                .map(|(n, is_pd, v)| if is_pd { pd(n, v) } else { na(n, v) })
                .collect();
            let mut o = obs(srv, srv, at, Some(clt), ls);
            o.complete = false;
            o
        })
}

/// An answer from server 1–3 about client 1–2 (several servers answer for the same client, with
/// different data), claiming completeness or not.
fn arb_shared_answer() -> impl Strategy<Value = Observation> {
    (
        1u8..4,
        1u8..3,
        0i64..50,
        0u32..1000,
        any::<bool>(),
        proptest::collection::vec((0u16..6, any::<bool>(), 0u32..4000), 1..4),
    )
        .prop_map(|(srv, client, at, clt, complete, leases)| {
            let ls = leases
                .into_iter()
                .map(|(n, is_pd, v)| if is_pd { pd(n, v) } else { na(n, v) })
                .collect();
            let mut o = obs(client, srv, at, Some(clt), ls);
            o.complete = complete;
            // Each server saw the client behind another relay peer: the next hop depends on
            // which answer is newest, never on the order they are applied in.
            o.relay = Some(RelayData {
                peer_address: Some(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, u16::from(srv))),
                ..RelayData::default()
            });
            o
        })
}

/// A store believing every server complete (`complete_answers = true` for all) or none.
fn store_completeness(on: bool) -> BindingStore {
    let mut cfg = CacheConfig::default();
    if on {
        cfg.merge.complete_servers = (1..4).map(|n| server(n).address).collect();
    }
    BindingStore::new(cfg)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Servers answering for the same clients with different data, completeness on and off: one
    /// answer per server in any order gives the same cache.
    #[test]
    fn shared_clients_answers_from_different_servers_commute(
        answers in proptest::collection::vec(arb_shared_answer(), 1..4),
        on in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut by_server = std::collections::BTreeMap::new();
        for a in answers { by_server.insert(a.server.duid.clone(), a); }
        let list: Vec<_> = by_server.into_values().collect();
        let a = store_completeness(on);
        for o in &list { a.apply(o); }
        let mut shuffled = list.clone();
        let mut x = seed;
        for i in (1..shuffled.len()).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (x >> 33) as usize % (i + 1));
        }
        let b = store_completeness(on);
        for o in &shuffled { b.apply(o); }
        let strip = |s: &BindingStore| s.all().into_iter()
            .map(|(k, l)| (k, l.client.duid.clone(), l.server.duid.clone(), l.valid_until, l.last_transaction, l.next_hop))
            .collect::<Vec<_>>();
        prop_assert_eq!(strip(&a), strip(&b));
    }

    /// Replaying answers (several per server, shared clients) changes nothing. Completeness off
    /// only: with it on, an older answer applied after a newer complete one can add a lease the
    /// newer one left out (nothing remembers an omission of a lease we never held), and replaying
    /// the newer one then removes it — one reason `complete_answers` is off by default.
    #[test]
    fn shared_clients_replay_is_idempotent(
        answers in proptest::collection::vec(arb_shared_answer(), 1..6),
    ) {
        let s = store_completeness(false);
        // One holder per key per server: when one server passes a key from one client to
        // another, its later answer about the first client leaves no evidence against the
        // second (R15 keeps removal evidence per client, which is what makes answers from
        // different servers commute), so replaying the second client's older claim to the
        // now free key adds it back. Same-server order is not free (R4/R6: its later word wins).
        let mut holder = std::collections::BTreeMap::new();
        let answers: Vec<Observation> = answers
            .into_iter()
            .map(|mut o| {
                o.leases.retain(|l| {
                    *holder
                        .entry((o.server.duid.clone(), l.key))
                        .or_insert_with(|| o.client_duid.clone())
                        == o.client_duid
                });
                o
            })
            .filter(|o| !o.leases.is_empty())
            .collect();
        for o in &answers { s.apply(o); }
        let before = s.all();
        for o in &answers {
            let out = s.apply(o);
            prop_assert!(out.changes.is_empty(), "replay changed {:?}", out.changes);
        }
        prop_assert_eq!(s.all(), before);
    }

    /// One answer per server (RFC 5007 §4.3.4 is order-free between servers): any order, same cache.
    #[test]
    fn answers_from_different_servers_commute(answers in proptest::collection::vec(arb_answer(), 1..4), seed in any::<u64>()) {
        let mut by_server = std::collections::BTreeMap::new();
        for a in answers { by_server.insert(a.server.duid.clone(), a); }
        let list: Vec<_> = by_server.into_values().collect();
        let a = store();
        for o in &list { a.apply(o); }
        let mut shuffled = list.clone();
        let mut x = seed;
        for i in (1..shuffled.len()).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (x >> 33) as usize % (i + 1));
        }
        let b = store();
        for o in &shuffled { b.apply(o); }
        let strip = |s: &BindingStore| s.all().into_iter()
            .map(|(k, l)| (k, l.server.duid.clone(), l.valid_until, l.last_transaction, l.next_hop))
            .collect::<Vec<_>>();
        prop_assert_eq!(strip(&a), strip(&b));
    }

    /// Replaying any answer a second time changes nothing (answers and replays in any order).
    #[test]
    fn replay_is_idempotent(answers in proptest::collection::vec(arb_answer(), 1..6)) {
        let s = store();
        for o in &answers { s.apply(o); }
        let before = s.all();
        for o in &answers {
            let out = s.apply(o);
            prop_assert!(out.changes.is_empty(), "replay changed {:?}", out.changes);
        }
        prop_assert_eq!(s.all(), before);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Merge R17's invariant over random sequences of snooped replies, answers, releases,
    /// confirmations and expiry (see `ownership_model.rs`, shared with the `ownership` fuzz
    /// target): nothing that is not from a binding's holder on its link changes it without a
    /// server's word about it; moves are all counted; doubts change nothing.
    #[test]
    fn ownership_holds_over_random_input_sequences(
        data in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        crate::ownership_model::check(&crate::ownership_model::decode(&data));
    }
}

/// R11, found by `shared_clients_answers_from_different_servers_commute`: an answer about client 2
/// that loses its only lease to another client's newer data is still the newest word about
/// client 2 itself, and a client record outlives the lease it came with — so the next hop of
/// client 2's other prefix is the same in every order, and replaying any answer moves nothing.
#[test]
fn r11_the_newest_word_about_a_client_decides_its_next_hop_in_any_order() {
    let via = |mut o: Observation, peer: u16| {
        o.relay = Some(RelayData {
            peer_address: Some(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, peer)),
            ..RelayData::default()
        });
        o.complete = false;
        o
    };
    // Server 1: client 1 holds 104::/56 (newest data about that key).
    let a = via(obs(1, 1, 0, Some(0), vec![pd(4, 1)]), 1);
    // Server 2: client 2 holds 100::/56, behind fe80::2, 469 s ago.
    let b = via(obs(2, 2, 0, Some(469), vec![pd(0, 1)]), 2);
    // Server 3: client 2 behind fe80::3 1 s ago — newer about client 2, older about 104::/56.
    let c = via(obs(2, 3, 1, Some(2), vec![pd(4, 1)]), 3);
    let orders: [[&Observation; 3]; 6] = [
        [&a, &b, &c],
        [&a, &c, &b],
        [&b, &a, &c],
        [&b, &c, &a],
        [&c, &a, &b],
        [&c, &b, &a],
    ];
    for order in orders {
        let s = store();
        for o in order {
            s.apply(o);
        }
        let names: Vec<_> = order.iter().map(|o| o.server.duid[4]).collect();
        let hop = |s: &BindingStore| s.get(&pd_key(0)).and_then(|l| l.next_hop);
        let holder = s.get(&pd_key(4)).map(|l| l.client.duid[4]);
        assert_eq!(holder, Some(1), "order {names:?}");
        assert_eq!(hop(&s), Some("fe80::3".parse().unwrap()), "order {names:?}");
        for o in [&a, &b, &c] {
            let r = s.apply(o);
            assert!(
                r.changes.is_empty(),
                "order {names:?}, replay of server {}: {:?}",
                o.server.duid[4],
                r.changes
            );
        }
        assert_eq!(
            hop(&s),
            Some("fe80::3".parse().unwrap()),
            "order {names:?} after replays"
        );
    }
}

#[test]
fn tmp_replay_case() {
    let s = store();
    let mut o1 = obs(1, 1, 0, Some(78), vec![pd(1, 1)]);
    let mut o2 = obs(2, 1, 0, Some(79), vec![pd(1, 1)]);
    let mut o3 = obs(1, 1, 33, Some(0), vec![pd(1, 0)]);
    for o in [&mut o1, &mut o2, &mut o3] {
        o.complete = false;
    }
    for o in [&o1, &o2, &o3] {
        let r = s.apply(o);
        eprintln!("{:?}", r.verdicts);
    }
    for o in [&o1, &o2, &o3] {
        let r = s.apply(o);
        eprintln!("replay {:?} {:?}", r.verdicts, r.changes.len());
    }
}

/// R17 Overlap, the reverse: a new prefix over another client's delegated prefix is a doubt
/// (asked about, never installed on the claim alone), while the server's answer about that
/// prefix installs it, the same client may grow its own prefix, and the store's search stays
/// bounded (a /40 over held /64s would take 2^24 probes: not looked for, added as before).
#[test]
fn r17_a_new_prefix_over_another_clients_prefix() {
    let claim = |c: u8, key: LeaseKey, at: i64| {
        obs(
            c,
            1,
            at,
            None,
            vec![ObservedLease {
                key,
                ia: IaType::Pd,
                iaid: 2,
                preferred: 1800,
                valid: 3600,
            }],
        )
    };
    let over48 = LeaseKey::Prefix(pfx(1, 48));
    // Client 1 holds 2001:db8:101::/56, inside 2001:db8:101::/48.
    let s = store();
    s.apply(&obs(1, 1, 0, None, vec![pd(1, 3600)]));
    // Another client's /48 over it: doubted, nothing written, the holder named.
    let out = s.apply(&claim(2, over48, 5));
    assert_eq!(out.verdicts, vec![(over48, MergeVerdict::Doubted)]);
    assert!(out.writes.is_empty());
    assert_eq!(out.doubts[0].reason, DoubtReason::Overlap);
    assert_eq!(
        &out.doubts[0].holder.as_ref().unwrap().duid[..],
        &duid(1)[..]
    );
    // A zero lifetime for it adds nothing and asks nothing.
    let mut gone = claim(2, over48, 6);
    gone.leases[0].valid = 0;
    assert!(s.apply(&gone).doubts.is_empty());
    // The server's answer about the /48 installs it (the /56 keeps its own route).
    let mut answer = claim(2, over48, 7);
    answer.source = Source::Leasequery;
    answer.clt_time = Some(0);
    answer.query_address = Some(pfx(1, 48).addr());
    assert_eq!(
        s.apply(&answer).verdicts,
        vec![(over48, MergeVerdict::Added)]
    );
    assert!(s.get(&pd_key(1)).is_some());

    // The holder itself growing its /56 into the /48: its own keys are no overlap.
    let s = store();
    s.apply(&obs(1, 1, 0, None, vec![pd(1, 3600)]));
    let out = s.apply(&claim(1, over48, 5));
    assert!(
        out.verdicts.contains(&(over48, MergeVerdict::Added)),
        "{:?}",
        out.verdicts
    );

    // Bounded: a /40 over another client's /64 is not looked for.
    let s = store();
    s.apply(&claim(1, LeaseKey::Prefix(pfx(1, 64)), 0));
    let over40 = LeaseKey::Prefix(Ipv6Prefix::new("2001:db8:100::".parse().unwrap(), 40).unwrap());
    assert_eq!(
        s.apply(&claim(2, over40, 5)).verdicts,
        vec![(over40, MergeVerdict::Added)]
    );
}
