//! Snooped datagrams end to end, as the daemon runs them: raw IPv6/UDP packet → header reader
//! (`snoop::datagram`) → codec (checked in place) → classifier (trust rules, FORW memory) → admission. Input: a
//! sequence of `[flags][len: u16 BE][packet]` records (flags bit 0 = outgoing), so one run can
//! carry a RELAY-FORW and its RELAY-REPL. Properties, beyond "no panic":
//! - whatever admission lets through lies inside the link's subscriber prefixes, with a sane
//!   length, on the link's configured interface, and never is a special address;
//! - the classifier's memory stays within its bounds whatever the sequence.
#![no_main]

use std::net::Ipv6Addr;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use lqagent::admission::{Admission, Admitted, LinkRule, OwnAddresses};
use lqagent::cache::{LeaseKey, Timestamp};
use lqagent::snoop::classify::{Classifier, ClassifyConfig, Envelope, Learned, SnoopTrust};
use lqagent::snoop::datagram;
use lqagent::wire::CheckedMessage;

const CAP: usize = 8;

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fuzz_target!(|data: &[u8]| {
    let own = Arc::new(OwnAddresses::new([
        a("2001:db8:ffff::1"),
        a("2001:db8:1::1"),
    ]));
    let rule = LinkRule {
        name: Arc::from("cable1"),
        interface: Arc::from("sub0"),
        link_address: a("2001:db8:1::1"),
        interface_id: None,
        subscriber_prefixes: vec![
            "2001:db8:1::/64".parse().unwrap(),
            "2001:db8:100::/40".parse().unwrap(),
        ],
        delegated_length: (48, 64),
        ldra: false,
    };
    let admission = Arc::new(Admission::new(
        vec![rule.clone()],
        [a("2001:db8:ffff::2")],
        own.clone(),
    ));
    let mut classifier = Classifier::new(
        ClassifyConfig {
            pending_capacity: CAP,
            release_capacity: CAP,
            pending_ttl_ms: 1_000,
            ..ClassifyConfig::default()
        },
        SnoopTrust {
            servers: [a("2001:db8:ffff::2")].into_iter().collect(),
            own,
            admission: admission.clone(),
        },
    );
    let mut rest = data;
    let mut now = 0i64;
    while rest.len() >= 3 {
        let flags = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let pkt = &rest[3..3 + len];
        rest = &rest[3 + len..];
        now += i64::from(flags >> 1) * 10;
        let Ok(d) = datagram::parse(pkt) else {
            continue;
        };
        let Ok(msg) = CheckedMessage::new(d.payload) else {
            continue;
        };
        let env = Envelope {
            outgoing: flags & 1 == 1,
            src: d.src,
            dst: d.dst,
            src_port: d.src_port,
            dst_port: d.dst_port,
        };
        let learned = classifier.on_snooped(Timestamp::from_millis(now), msg, &env);
        assert!(classifier.memory_len() <= 2 * (CAP + 2 * CAP + 1));
        let Some(Learned::Bind(obs)) = learned else {
            continue;
        };
        let admitted = match admission.admit(obs) {
            Admitted::Whole(o) | Admitted::Partial(o, _) => o,
            Admitted::Refused(_) => continue,
        };
        assert_eq!(admitted.link.interface.as_deref(), Some("sub0"));
        assert!(!admitted.leases.is_empty());
        for l in &admitted.leases {
            let net = l.key.network();
            assert!(
                rule.subscriber_prefixes.iter().any(|p| p.covers(&net)),
                "{net}"
            );
            assert!(!net.addr().is_unicast_link_local() && !net.addr().is_multicast());
            if let LeaseKey::Prefix(p) = l.key {
                assert!((48..=64).contains(&p.len()), "{p}");
            }
        }
    }
});
