//! The store's indexes agree with its leases after any mix of answers, withdrawals and expiry.
//!
//! The lease table reuses slots of removed leases and the by-client / by-link indexes and the
//! expiry heap hold slot numbers, so this drives random sequences (several clients moving
//! between links, leases changing hands, prefixes of several lengths, expiry in between) and
//! checks after every step that every way of finding a lease finds exactly what `all()` holds —
//! and that expiry in the far future empties every index.

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::sync::Arc;

use lqagent::cache::{
    BindingStore, CacheConfig, IaType, LeaseKey, Link, Observation, ObservedLease, ServerId,
    Source, Timestamp, WithdrawReason, Withdrawal,
};
use lqagent::prefix::Ipv6Prefix;
use proptest::prelude::*;

const T0: i64 = 1_795_000_000;

fn link(n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0xfffe, 0, 0, 0, 0, u16::from(n) + 1)
}

fn duid(c: u8) -> Vec<u8> {
    vec![0, 3, 0, 1, 2, c]
}

fn key(k: u8) -> LeaseKey {
    // 0..8 addresses, 8..16 prefixes of lengths 48/56/60/64, nested inside each other.
    if k < 8 {
        LeaseKey::Address(Ipv6Addr::new(
            0x2001,
            0xdb8,
            1,
            0,
            0,
            0,
            0,
            u16::from(k) + 1,
        ))
    } else {
        let len = [48u8, 56, 60, 64][usize::from(k % 4)];
        let base = Ipv6Addr::new(0x2001, 0xdb8, 0x100 + u16::from(k / 12), 0, 0, 0, 0, 0);
        LeaseKey::Prefix(Ipv6Prefix::new_truncating(base, len).unwrap())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Answer {
        client: u8,
        link: u8,
        server: u8,
        keys: Vec<(u8, u32)>,
        complete: bool,
    },
    Withdraw(Vec<u8>),
    Wait(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..5, 0u8..3, 1u8..3, prop::collection::vec((0u8..16, prop_oneof![Just(0u32), 5u32..400]), 1..4), any::<bool>())
            .prop_map(|(client, link, server, keys, complete)| Op::Answer { client, link, server, keys, complete }),
        1 => prop::collection::vec(0u8..16, 1..3).prop_map(Op::Withdraw),
        1 => (1u16..300).prop_map(Op::Wait),
    ]
}

fn observation(
    client: u8,
    l: u8,
    server: u8,
    keys: &[(u8, u32)],
    complete: bool,
    now: Timestamp,
) -> Observation {
    Observation {
        client_duid: duid(client).into(),
        link: Link {
            address: link(l),
            interface: None,
        },
        relay: None,
        server: Arc::new(ServerId {
            duid: vec![0, 1, 0, 1, server].into(),
            address: Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, u16::from(server)),
        }),
        source: if complete {
            Source::Leasequery
        } else {
            Source::Snoop
        },
        clt_time: complete.then_some(0),
        base_time: None,
        srsn: None,
        complete,
        leases: keys
            .iter()
            .map(|&(k, valid)| ObservedLease {
                key: key(k),
                ia: if k < 8 { IaType::Na } else { IaType::Pd },
                iaid: u32::from(k),
                preferred: valid / 2,
                valid,
            })
            .collect(),
        arrival: now,
        query_address: None,
    }
}

/// Every index finds exactly the leases `all()` holds.
fn check(s: &BindingStore) -> Result<(), TestCaseError> {
    let all = s.all();
    prop_assert_eq!(s.len(), all.len());
    let mut n = 0;
    s.for_each(|_, _| n += 1);
    prop_assert_eq!(n, all.len());
    for (k, l) in &all {
        prop_assert_eq!(s.get(k), Some(l.clone()));
        match k {
            LeaseKey::Address(a) => {
                prop_assert_eq!(s.lookup_address(*a).map(|(k, _)| k), Some(*k));
            }
            LeaseKey::Prefix(p) => {
                // The longest held prefix covering the prefix's first address: this one or a
                // longer one inside it.
                let (q, _) = s
                    .covering_prefix(p.addr())
                    .expect("a held prefix covers itself");
                prop_assert!(q.len() >= p.len() && p.contains(q.addr()), "{q} for {p}");
            }
        }
    }
    for c in 0..5u8 {
        let want: Vec<_> = all
            .iter()
            .filter(|(_, l)| *l.client.duid == *duid(c))
            .cloned()
            .collect();
        prop_assert_eq!(s.by_client(&duid(c)), want, "by_client {}", c);
    }
    for l in 0..3u8 {
        let want: Vec<_> = all
            .iter()
            .filter(|(_, x)| x.client.link.address == link(l))
            .cloned()
            .collect();
        prop_assert_eq!(s.by_link(link(l)), want, "by_link {}", l);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_index_agrees_with_the_leases(ops in prop::collection::vec(op(), 1..60)) {
        let s = BindingStore::new(CacheConfig::default());
        let mut now = Timestamp::from_secs(T0);
        let mut seen = BTreeSet::new();
        for op in &ops {
            now = now.plus_millis(1000);
            match op {
                Op::Answer { client, link, server, keys, complete } => {
                    s.apply(&observation(*client, *link, *server, keys, *complete, now));
                }
                Op::Withdraw(keys) => {
                    s.withdraw(&Withdrawal {
                        link: None,
                        iaids: Vec::new(),
                        keys: keys.iter().map(|k| key(*k)).collect(),
                        client_duid: None,
                        reason: WithdrawReason::Operator,
                        arrival: now,
                    });
                }
                Op::Wait(secs) => {
                    now = now.plus_millis(i64::from(*secs) * 1000);
                    let out = s.expire_due(now);
                    for (k, _) in out.writes.iter().filter(|(_, l)| l.is_none()) {
                        prop_assert!(s.get(k).is_none(), "expired {k} still held");
                    }
                }
            }
            for (k, l) in s.all() {
                seen.insert(k);
                prop_assert!(l.valid_until > now || !matches!(op, Op::Wait(_)), "{k} outlived its deadline");
            }
            check(&s)?;
        }
        // Far in the future every lease has lapsed: expiry alone empties every index.
        let end = now.plus_millis(10_000_000);
        while !s.expire_due(end).writes.is_empty() {}
        prop_assert!(s.is_empty(), "left: {:?}", s.all());
        check(&s)?;
        for k in seen {
            if let LeaseKey::Address(a) = k {
                prop_assert!(!s.knows(a));
            }
        }
    }
}
