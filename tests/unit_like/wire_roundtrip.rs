//! Property tests for the codec (issue 2): random messages — random unknown options, nested
//! options, relay chains, LQ_RELAY_DATA — survive emit → parse unchanged; any bytes that parse
//! re-emit byte for byte; the borrowed view accepts exactly what the owned parser accepts,
//! failing with the same error; and a message checked in place (`CheckedMessage`, the
//! snooper's path) reads the same relay chain and option values as the owned tree.

use lqagent::prefix::Ipv6Prefix;
use lqagent::wire::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use std::net::Ipv6Addr;

/// Option codes with a typed form: an `Unknown` must not use them or it would parse differently.
const TYPED: &[u16] = &[
    1, 2, 3, 4, 5, 6, 8, 9, 13, 18, 25, 26, 37, 38, 44, 45, 46, 47, 48, 53, 79, 100, 101, 102,
];

fn addr() -> impl Strategy<Value = Ipv6Addr> {
    prop_oneof![
        any::<u128>().prop_map(Ipv6Addr::from),
        (0u16..4).prop_map(|n| Ipv6Addr::new(0x2001, 0xdb8, 0, n, 0, 0, 0, 1)),
        Just(Ipv6Addr::UNSPECIFIED),
    ]
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn duid() -> impl Strategy<Value = DuidKind> {
    prop_oneof![
        (any::<u16>(), any::<u32>(), bytes(10)).prop_map(|(hw_type, time, link_layer)| {
            DuidKind::Llt {
                hw_type,
                time,
                link_layer,
            }
        }),
        (any::<u32>(), bytes(10)).prop_map(|(enterprise, identifier)| DuidKind::En {
            enterprise,
            identifier
        }),
        (any::<u16>(), bytes(10)).prop_map(|(hw_type, link_layer)| DuidKind::Ll {
            hw_type,
            link_layer
        }),
        any::<[u8; 16]>().prop_map(DuidKind::Uuid),
        // Raw: an unknown type, or a known type too short for its layout.
        (5u16.., bytes(8))
            .prop_map(|(t, rest)| DuidKind::Other([&t.to_be_bytes()[..], &rest].concat())),
        (1u16..=3, bytes(2))
            .prop_map(|(t, rest)| DuidKind::Other([&t.to_be_bytes()[..], &rest].concat())),
        bytes(2).prop_map(DuidKind::Other),
    ]
}

fn unknown_option() -> impl Strategy<Value = DhcpOption> {
    (any::<u16>(), bytes(12)).prop_map(|(c, data)| {
        let code = if TYPED.contains(&c) { c | 0x8000 } else { c };
        DhcpOption::Unknown {
            code: OptionCode(code),
            data,
        }
    })
}

fn leaf_option() -> impl Strategy<Value = DhcpOption> {
    prop_oneof![
        duid().prop_map(|k| DhcpOption::ClientId(k.into())),
        duid().prop_map(|k| DhcpOption::ServerId(k.into())),
        duid().prop_map(|k| DhcpOption::RelayId(k.into())),
        vec(any::<u16>().prop_map(OptionCode), 0..5).prop_map(DhcpOption::Oro),
        any::<u16>().prop_map(DhcpOption::ElapsedTime),
        (any::<u16>(), bytes(12)).prop_map(|(c, message)| DhcpOption::StatusCode(Status {
            code: StatusCode(c),
            message
        })),
        bytes(8).prop_map(DhcpOption::InterfaceId),
        bytes(8).prop_map(DhcpOption::SubscriberId),
        (any::<u32>(), bytes(8)).prop_map(|(enterprise, remote_id)| DhcpOption::RemoteId {
            enterprise,
            remote_id
        }),
        (any::<u16>(), bytes(8))
            .prop_map(|(hw_type, addr)| DhcpOption::ClientLinklayerAddr { hw_type, addr }),
        any::<u32>().prop_map(DhcpOption::CltTime),
        any::<u32>().prop_map(DhcpOption::LqBaseTime),
        any::<u32>().prop_map(DhcpOption::LqStartTime),
        any::<u32>().prop_map(DhcpOption::LqEndTime),
        vec(addr(), 0..3).prop_map(DhcpOption::LqClientLink),
        unknown_option(),
        unknown_option(),
    ]
}

/// A relay message (no client message inside, as in LQ_RELAY_DATA), possibly a short chain.
fn bare_relay(levels: u32) -> BoxedStrategy<RelayMessage> {
    let head = (
        any::<bool>(),
        any::<u8>(),
        addr(),
        addr(),
        vec(leaf_option(), 0..3),
    )
        .prop_map(|(forw, hops, link, peer, opts)| {
            let t = if forw {
                MessageType::RELAY_FORW
            } else {
                MessageType::RELAY_REPL
            };
            let mut r = RelayMessage::new(t, hops, link, peer);
            r.options = Options(opts);
            r
        });
    if levels == 0 {
        return head.boxed();
    }
    (
        head,
        prop::option::of(bare_relay(levels - 1)),
        any::<Index>(),
    )
        .prop_map(|(mut r, inner, at)| {
            if let Some(inner) = inner {
                let i = at.index(r.options.len() + 1);
                r.options
                    .insert(i, DhcpOption::RelayMsg(Box::new(inner.into())));
            }
            r
        })
        .boxed()
}

fn option_tree() -> impl Strategy<Value = DhcpOption> {
    let leaf = prop_oneof![
        4 => leaf_option(),
        1 => (addr(), bare_relay(2)).prop_map(|(peer_address, relay)| {
            DhcpOption::LqRelayData(Box::new(LqRelayData { peer_address, relay }))
        }),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        let opts = vec(inner, 0..4).prop_map(Options);
        prop_oneof![
            (any::<u32>(), any::<u32>(), any::<u32>(), opts.clone()).prop_map(
                |(iaid, t1, t2, options)| DhcpOption::IaNa(Ia {
                    iaid,
                    t1,
                    t2,
                    options
                })
            ),
            (any::<u32>(), any::<u32>(), any::<u32>(), opts.clone()).prop_map(
                |(iaid, t1, t2, options)| DhcpOption::IaPd(Ia {
                    iaid,
                    t1,
                    t2,
                    options
                })
            ),
            (any::<u32>(), opts.clone())
                .prop_map(|(iaid, options)| DhcpOption::IaTa(IaTa { iaid, options })),
            (addr(), any::<u32>(), any::<u32>(), opts.clone()).prop_map(
                |(addr, preferred, valid, options)| DhcpOption::IaAddr(IaAddr {
                    addr,
                    preferred,
                    valid,
                    options
                })
            ),
            (
                any::<u32>(),
                any::<u32>(),
                any::<u8>(),
                addr(),
                opts.clone()
            )
                .prop_map(|(preferred, valid, prefix_len, prefix_addr, options)| {
                    DhcpOption::IaPrefix(IaPrefix {
                        preferred,
                        valid,
                        prefix_len,
                        prefix_addr,
                        options,
                    })
                }),
            (any::<u8>(), addr(), opts.clone()).prop_map(|(q, link_address, options)| {
                DhcpOption::LqQuery(LqQuery {
                    query_type: QueryType(q),
                    link_address,
                    options,
                })
            }),
            opts.prop_map(|options| DhcpOption::ClientData(ClientData { options })),
        ]
    })
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    (
        any::<u8>().prop_filter("relay types use the other layout", |t| *t != 12 && *t != 13),
        0..=MAX_TRANSACTION_ID,
        vec(option_tree(), 0..6),
    )
        .prop_map(|(t, xid, opts)| {
            let mut m = ClientMessage::new(MessageType(t), xid);
            m.options = Options(opts);
            m
        })
}

fn message() -> impl Strategy<Value = Message> {
    client_message()
        .prop_map(Message::Client)
        .prop_recursive(6, 12, 1, |inner| {
            (
                bare_relay(0),
                vec(option_tree(), 0..3),
                prop::option::of(inner),
                any::<Index>(),
            )
                .prop_map(|(mut r, opts, inner, at)| {
                    r.options.extend(opts);
                    if let Some(m) = inner {
                        let i = at.index(r.options.len() + 1);
                        r.options.insert(i, DhcpOption::RelayMsg(Box::new(m)));
                    }
                    Message::Relay(r)
                })
        })
}

/// The view's verdict on `b`: `Ok(())` if a full walk succeeds.
fn view_verdict(b: &[u8]) -> Result<(), Error> {
    MessageView::new_checked(b)?.walk().map(|_| ())
}

fn check_bytes(b: &[u8]) -> Result<(), TestCaseError> {
    let owned = Message::parse(b);
    prop_assert_eq!(
        owned.as_ref().map(|_| ()).map_err(Clone::clone),
        view_verdict(b)
    );
    if let Ok(m) = owned {
        prop_assert_eq!(m.buffer_len(), b.len());
        prop_assert_eq!(m.to_vec().unwrap(), b);
    }
    Ok(())
}

/// One option list read both ways: the in-place readers the snooper uses against the owned
/// finders, for every code they read (untyped codes present as SRSN candidates).
fn same_list(v: OptionsIter<'_>, o: &Options) -> Result<(), TestCaseError> {
    let bytes = |d: Option<&Duid>| d.map(Duid::to_vec);
    prop_assert_eq!(
        v.checked_data(OptionCode::CLIENTID).map(<[u8]>::to_vec),
        bytes(o.client_id())
    );
    prop_assert_eq!(
        v.checked_data(OptionCode::SERVERID).map(<[u8]>::to_vec),
        bytes(o.server_id())
    );
    prop_assert_eq!(v.checked_data(OptionCode::INTERFACE_ID), o.interface_id());
    prop_assert_eq!(v.checked_status_code(), o.status_code());
    prop_assert_eq!(v.checked_remote_id(), o.remote_id());
    for opt in o.iter() {
        if let DhcpOption::Unknown { code, .. } = opt {
            prop_assert_eq!(v.checked_srsn(code.0), o.srsn(code.0));
        }
    }
    Ok(())
}

/// `b` checked in place and parsed owned: the same verdict, and when accepted the same chain
/// (levels, this box's and the next level's headers and lists, the innermost message).
fn same_reading(b: &[u8]) -> Result<(), TestCaseError> {
    let owned = Message::parse(b);
    let checked = CheckedMessage::new(b);
    prop_assert_eq!(
        checked.as_ref().map(|_| ()).map_err(Clone::clone),
        owned.as_ref().map(|_| ()).map_err(Clone::clone)
    );
    let (Ok(c), Ok(m)) = (checked, owned) else {
        return Ok(());
    };
    prop_assert_eq!(c.msg_type(), m.msg_type());
    let (vi, oi) = (c.innermost(), m.innermost());
    prop_assert_eq!(
        vi.map(|v| (v.msg_type(), v.transaction_id())),
        oi.map(|o| (o.msg_type, o.transaction_id))
    );
    if let (Some(v), Some(o)) = (vi, oi) {
        same_list(v.options(), &o.options)?;
    }
    let (vc, oc) = (RelayChainView::of(c), RelayChain::of_message(&m));
    prop_assert_eq!((vc.len(), vc.nested()), (oc.len(), oc.nested()));
    prop_assert_eq!(vc.link_address(), oc.link_address());
    prop_assert_eq!(vc.peer_address(), oc.peer_address());
    prop_assert_eq!(
        vc.innermost().map(|v| (v.msg_type(), v.transaction_id())),
        oc.innermost().map(|o| (o.msg_type, o.transaction_id))
    );
    for (v, o) in [(vc.ours(), oc.ours()), (vc.below_ours(), oc.below_ours())] {
        prop_assert_eq!(v.is_some(), o.is_some());
        if let (Some(v), Some(o)) = (v, o) {
            prop_assert_eq!(
                (
                    v.msg_type(),
                    v.hop_count(),
                    v.link_address(),
                    v.peer_address()
                ),
                (o.msg_type, o.hop_count, o.link_address, o.peer_address)
            );
            same_list(v.options(), &o.options)?;
        }
    }
    Ok(())
}

proptest! {
    // PROPTEST_CASES raises the count for a long local run; CI keeps the quick default.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_messages_round_trip(m in message()) {
        let b = m.to_vec().unwrap();
        prop_assert_eq!(b.len(), m.buffer_len());
        let back = Message::parse(&b).unwrap();
        prop_assert_eq!(&back, &m);
        prop_assert!(view_verdict(&b).is_ok());
        let mut canary = vec![0xa5u8; b.len() + 16];
        let n = m.emit(&mut canary).unwrap();
        prop_assert_eq!(&canary[..n], &b[..]);
        prop_assert!(canary[n..].iter().all(|&x| x == 0xa5));
    }

    #[test]
    fn mutated_messages_reemit_exactly(m in message(), flips in vec((any::<Index>(), any::<u8>()), 1..4), cut in any::<Index>()) {
        let mut b = m.to_vec().unwrap();
        for (i, v) in flips {
            let i = i.index(b.len());
            b[i] = v;
        }
        check_bytes(&b)?;
        let cut = cut.index(b.len() + 1);
        check_bytes(&b[..cut])?;
    }

    #[test]
    fn arbitrary_bytes_reemit_exactly(b in vec(any::<u8>(), 0..200)) {
        check_bytes(&b)?;
    }

    #[test]
    fn checked_in_place_reads_what_the_owned_tree_reads(
        m in message(),
        flips in vec((any::<Index>(), any::<u8>()), 0..3),
        cut in any::<Index>(),
    ) {
        let mut b = m.to_vec().unwrap();
        same_reading(&b)?;
        for (i, v) in flips {
            let i = i.index(b.len());
            b[i] = v;
        }
        let cut = cut.index(b.len() + 1);
        same_reading(&b[..cut])?;
    }

    #[test]
    fn frames_split_anywhere(ms in vec(message(), 1..4), sizes in vec(1usize..64, 1..50)) {
        let mut stream = Vec::new();
        for m in &ms {
            stream.extend(bulk::frame_to_vec(m).unwrap());
        }
        let mut d = bulk::FrameDecoder::new(bulk::FrameConfig::default());
        let mut got = Vec::new();
        let mut rest = &stream[..];
        let mut k = 0;
        while !rest.is_empty() {
            let n = sizes[k % sizes.len()].min(rest.len());
            k += 1;
            d.push(&rest[..n]).unwrap();
            rest = &rest[n..];
            while let Some(f) = d.next_frame().unwrap() {
                got.push(Message::parse(f).unwrap());
            }
        }
        prop_assert_eq!(got, ms);
    }
}

#[test]
fn iaprefix_new_keeps_the_network() {
    let p = Ipv6Prefix::new("2001:db8:ff00::".parse().unwrap(), 40).unwrap();
    let ia = IaPrefix::new(p, 1, 2);
    assert_eq!(ia.prefix().unwrap(), p);
}
