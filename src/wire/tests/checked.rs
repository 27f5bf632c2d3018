//! `CheckedMessage::new`'s fast check against the walk, which is the authority: for every
//! code and length, at every place an option can sit, and for every one-byte change and every
//! truncation of real relayed and leasequery messages, both give the same verdict, a refused
//! message fails with the walk's own error, and the relay chain the check notes on its way
//! down is the one read level by level.

use crate::prefix::Ipv6Prefix;
use crate::wire::context::{MAX_NESTING, MAX_RELAY_DEPTH};
use crate::wire::view::fast_verdict;
use crate::wire::*;
use std::net::Ipv6Addr;

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// The walk's answer: `Ok` or the error it names.
fn walked(bytes: &[u8]) -> Result<(), Error> {
    MessageView::new_checked(bytes)?.walk().map(|_| ())
}

/// The chain read the slow way, level by level: (levels, link-address of the level below
/// ours, innermost type and xid).
type Chain = (usize, Option<Ipv6Addr>, Option<(MessageType, u32)>);

fn chain_by_levels(bytes: &[u8]) -> Chain {
    let mut m = MessageView::new_checked(bytes).unwrap();
    let (mut levels, mut below) = (0, None);
    loop {
        match m {
            MessageView::Client(c) => {
                return (levels, below, Some((c.msg_type(), c.transaction_id())));
            }
            MessageView::Relay(r) => {
                if levels == 1 {
                    below = Some(r.link_address());
                }
                levels += 1;
                match r.relay_message().unwrap() {
                    Some(next) => m = next,
                    None => return (levels, below, None),
                }
            }
        }
    }
}

/// Asserts the fast check and the walk agree on `bytes`, and what `CheckedMessage::new` makes
/// of it is the walk's verdict (with its error) and the chain read level by level.
fn agree(bytes: &[u8], what: &str) {
    let want = walked(bytes);
    if let Ok(m) = MessageView::new_checked(bytes) {
        assert_eq!(fast_verdict(m), want.is_ok(), "{what}: fast {want:?}");
    }
    match CheckedMessage::new(bytes) {
        Ok(m) => {
            assert_eq!(want, Ok(()), "{what}");
            let c = RelayChainView::of(m);
            let got = (
                c.len(),
                c.below_ours().map(|r| r.link_address()),
                c.innermost().map(|i| (i.msg_type(), i.transaction_id())),
            );
            assert_eq!(got, chain_by_levels(bytes), "{what}: chain");
            assert_eq!(
                m.innermost().map(|i| (i.msg_type(), i.transaction_id())),
                got.2,
                "{what}: innermost"
            );
            assert_eq!(
                c.ours().map(|r| r.link_address()),
                match m.view() {
                    MessageView::Relay(r) => Some(r.link_address()),
                    MessageView::Client(_) => None,
                },
                "{what}: ours"
            );
        }
        Err(e) => assert_eq!(Err(e), want, "{what}"),
    }
}

/// Every code this crate types, the ones around them and a few unknown ones.
fn codes() -> impl Iterator<Item = u16> {
    (0..=60).chain([79, 100, 101, 102, 0x1234, 0xffff])
}

#[test]
fn every_code_and_length_gets_the_walks_verdict() {
    for code in codes() {
        for len in 0..=56usize {
            for fill in [0u8, 1, 12, 0xff] {
                let body: Vec<u8> = (0..len)
                    .map(|i| if i % 7 == 3 { fill ^ 0x5a } else { fill })
                    .collect();
                let mut opt = code.to_be_bytes().to_vec();
                opt.extend((len as u16).to_be_bytes());
                opt.extend(&body);
                // At the top of a client message, ...
                let mut client = vec![15, 0, 0, 1];
                client.extend(&opt);
                agree(
                    &client,
                    &format!("client, code {code} len {len} fill {fill}"),
                );
                // ... in a relay message's own list (where RELAY_MSG may sit), ...
                let mut relay = vec![13, 0];
                relay.extend([0x20; 32]);
                relay.extend(&opt);
                agree(&relay, &format!("relay, code {code} len {len} fill {fill}"));
                // ... and nested one level down (inside IA_NA).
                let mut nested = vec![7, 0, 0, 1, 0, 3];
                nested.extend(((12 + opt.len()) as u16).to_be_bytes());
                nested.extend([0; 12]);
                nested.extend(&opt);
                agree(
                    &nested,
                    &format!("nested, code {code} len {len} fill {fill}"),
                );
            }
        }
    }
}

fn relayed_reply(levels: usize) -> Vec<u8> {
    let mut reply = ClientMessage::new(MessageType::REPLY, 0x4242);
    reply
        .options
        .push(DhcpOption::ClientId(Duid::ll_ethernet([2, 0, 0, 0, 0, 1])));
    reply.options.push(DhcpOption::ServerId(Duid::ll_ethernet([
        2, 0, 0, 0, 0, 0xfe,
    ])));
    let mut na = Ia::new(1, 1800, 2880);
    na.options.push(DhcpOption::IaAddr(IaAddr::new(
        a("2001:db8:1::10"),
        3600,
        7200,
    )));
    reply.options.push(DhcpOption::IaNa(na));
    let mut pd = Ia::new(2, 1800, 2880);
    let pfx = Ipv6Prefix::new(a("2001:db8:100::"), 56).unwrap();
    pd.options
        .push(DhcpOption::IaPrefix(IaPrefix::new(pfx, 3600, 7200)));
    reply.options.push(DhcpOption::IaPd(pd));
    reply.options.push(DhcpOption::StatusCode(Status::new(
        StatusCode::SUCCESS,
        "ok",
    )));
    super::relay_repl_levels(Message::from(reply), levels, &[DhcpOption::ElapsedTime(5)])
}

fn leasequery_reply() -> Vec<u8> {
    let mut relay = RelayMessage::new(MessageType::RELAY_FORW, 0, a("2001:db8:1::1"), a("fe80::1"));
    relay
        .options
        .push(DhcpOption::InterfaceId(b"ge-0/0/1.100".to_vec()));
    let cd = ClientData {
        options: Options(vec![
            DhcpOption::ClientId(Duid::ll_ethernet([2, 0, 0, 0, 0, 1])),
            DhcpOption::IaAddr(IaAddr::new(a("2001:db8:1::10"), 3600, 7200)),
            DhcpOption::CltTime(42),
            DhcpOption::LqRelayData(Box::new(LqRelayData {
                peer_address: a("2001:db8:1::1"),
                relay,
            })),
        ]),
    };
    let mut m = ClientMessage::new(MessageType::LEASEQUERY_REPLY, 0xabcdef);
    m.options.push(DhcpOption::ServerId(Duid::ll_ethernet([
        2, 0, 0, 0, 0, 0xfe,
    ])));
    m.options.push(DhcpOption::ClientData(cd));
    m.options
        .push(DhcpOption::LqClientLink(vec![a("2001:db8:1::1")]));
    Message::from(m).to_vec().unwrap()
}

#[test]
fn every_one_byte_change_and_truncation_gets_the_walks_verdict() {
    for (name, msg) in [
        ("bare REPLY", relayed_reply(0)),
        ("relayed REPLY", relayed_reply(1)),
        ("REPLY through an LDRA", relayed_reply(2)),
        ("LEASEQUERY-REPLY", leasequery_reply()),
    ] {
        agree(&msg, name);
        assert!(CheckedMessage::new(&msg).is_ok(), "{name} checks");
        for cut in 0..msg.len() {
            agree(&msg[..cut], &format!("{name} cut at {cut}"));
        }
        for at in 0..msg.len() {
            for v in [
                0u8,
                1,
                12,
                13,
                0x7f,
                0xff,
                msg[at] ^ 1,
                msg[at].wrapping_add(2),
            ] {
                let mut m = msg.clone();
                m[at] = v;
                agree(&m, &format!("{name} byte {at} = {v}"));
            }
        }
    }
}

#[test]
fn nesting_and_relay_depth_limits_get_the_walks_verdict() {
    // Relay chains around the relay-depth limit.
    for levels in MAX_RELAY_DEPTH - 1..=MAX_RELAY_DEPTH + 1 {
        let m = relayed_reply(levels);
        agree(&m, &format!("{levels} relay levels"));
        assert_eq!(CheckedMessage::new(&m).is_ok(), levels <= MAX_RELAY_DEPTH);
    }
    // IA_NA inside IA_NA around the nesting limit.
    for depth in MAX_NESTING - 1..=MAX_NESTING + 2 {
        let mut opt: Vec<u8> = Vec::new();
        for _ in 0..depth {
            let mut o = vec![0, 3];
            o.extend(((12 + opt.len()) as u16).to_be_bytes());
            o.extend([0; 12]);
            o.extend(&opt);
            opt = o;
        }
        let mut m = vec![7, 0, 0, 1];
        m.extend(&opt);
        agree(&m, &format!("IA_NA nested {depth} deep"));
    }
}
