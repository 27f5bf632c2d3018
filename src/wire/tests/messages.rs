//! Whole-message tests: round trips, relay chains, errors, bulk framing.

use crate::wire::bulk::{FrameConfig, FrameDecoder, frame_to_vec};
use crate::wire::context::{MAX_NESTING, MAX_RELAY_DEPTH};
use crate::wire::*;
use std::net::Ipv6Addr;

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn our_duid() -> Duid {
    Duid::ll_ethernet([0x02, 0, 0, 0, 0, 0x01])
}

fn leasequery_by_address() -> Message {
    let mut q = LqQuery::new(QueryType::BY_ADDRESS, Ipv6Addr::UNSPECIFIED);
    q.options
        .push(DhcpOption::IaAddr(IaAddr::new(a("2001:db8::10"), 0, 0)));
    let mut m = ClientMessage::new(MessageType::LEASEQUERY, 0x123456);
    m.options.push(DhcpOption::ClientId(our_duid()));
    m.options.push(DhcpOption::LqQuery(q));
    m.into()
}

fn relay_chain(depth: usize) -> Message {
    let mut m: Message = ClientMessage::new(MessageType::SOLICIT, 1).into();
    for i in 0..depth {
        let mut r = RelayMessage::new(
            MessageType::RELAY_FORW,
            (depth - 1 - i) as u8,
            a("2001:db8:1::1"),
            a("fe80::1"),
        );
        r.options.push(DhcpOption::RelayMsg(Box::new(m)));
        m = r.into();
    }
    m
}

#[test]
fn leasequery_bytes_are_exact() {
    let bytes = leasequery_by_address().to_vec().unwrap();
    let want: Vec<u8> = [
        &[14, 0x12, 0x34, 0x56][..],
        // CLIENTID, len 10: DUID-LL ethernet 02:00:00:00:00:01
        &[0, 1, 0, 10, 0, 3, 0, 1, 2, 0, 0, 0, 0, 1],
        // LQ_QUERY, len 17 + 28
        &[0, 44, 0, 45, 1],
        &[0; 16],
        // IAADDR, len 24
        &[
            0, 5, 0, 24, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ],
        &[0; 8],
    ]
    .concat();
    assert_eq!(bytes, want);
    assert_eq!(Message::parse(&bytes).unwrap(), leasequery_by_address());
}

#[test]
fn relay_chain_depths() {
    for depth in [1, 2, MAX_RELAY_DEPTH] {
        let m = relay_chain(depth);
        let bytes = m.to_vec().unwrap();
        let back = Message::parse(&bytes).unwrap();
        assert_eq!(back, m, "depth {depth}");
        assert_eq!(
            crate::wire::RelayChain::of_message(&back).levels().count(),
            depth
        );
        assert_eq!(back.innermost().unwrap().msg_type, MessageType::SOLICIT);
    }
    let bytes = relay_chain(MAX_RELAY_DEPTH + 1).to_vec().unwrap();
    let err = Message::parse(&bytes).unwrap_err();
    // The 33rd relay header sits after 32 headers and 32 option headers.
    assert_eq!(
        err,
        Error::TooDeep {
            at: MAX_RELAY_DEPTH * (RelayMessage::HEADER_LEN + 4),
            what: "relay chain",
            limit: MAX_RELAY_DEPTH,
        }
    );
    assert_eq!(err.label(), "too_deep");
}

#[test]
fn one_byte_status_code_is_an_error() {
    let bytes = [7, 0, 0, 1, 0, 13, 0, 1, 0];
    assert_eq!(
        Message::parse(&bytes).unwrap_err(),
        Error::BadLength {
            at: 4,
            code: 13,
            len: 1,
            expected: "at least 2"
        }
    );
}

#[test]
fn relay_msg_in_client_message_is_wrong_kind() {
    let bytes = [7, 0, 0, 1, 0, 9, 0, 4, 1, 0, 0, 0];
    assert!(matches!(
        Message::parse(&bytes),
        Err(Error::WrongKind { at: 4, .. })
    ));
}

#[test]
fn frames_split_across_pushes() {
    let m = leasequery_by_address();
    let framed = frame_to_vec(&m).unwrap();
    let mut stream = framed.clone();
    stream.extend_from_slice(&framed);
    let mut d = FrameDecoder::new(FrameConfig::default());
    let mut got = Vec::new();
    for chunk in stream.chunks(7) {
        d.push(chunk).unwrap();
        while let Some(f) = d.next_frame().unwrap() {
            got.push(Message::parse(f).unwrap());
        }
    }
    assert_eq!(got, vec![m.clone(), m]);
    assert_eq!(d.buffered(), 0);
}

#[test]
fn zero_and_oversize_frames_fail_for_good() {
    let mut d = FrameDecoder::new(FrameConfig::default());
    d.push(&[0, 0, 1]).unwrap();
    assert_eq!(d.next_frame().unwrap_err(), Error::FrameEmpty { at: 0 });
    assert_eq!(d.next_frame().unwrap_err(), Error::StreamFailed);
    let mut d = FrameDecoder::new(FrameConfig {
        max_frame: 100,
        buffer_capacity: 0,
    });
    assert_eq!(d.room(), 102);
    d.push(&[0, 101]).unwrap();
    assert!(matches!(
        d.next_frame(),
        Err(Error::FrameOversize { len: 101, .. })
    ));
    let mut d = FrameDecoder::new(FrameConfig {
        max_frame: 100,
        buffer_capacity: 0,
    });
    assert!(matches!(
        d.push(&[1; 103]),
        Err(Error::StreamBufferFull {
            pushed: 103,
            room: 102
        })
    ));
}

#[test]
fn view_follows_relay_chains_to_the_same_limit() {
    for depth in [1, 2, MAX_RELAY_DEPTH] {
        let bytes = relay_chain(depth).to_vec().unwrap();
        let mut v = MessageView::new_checked(&bytes).unwrap();
        assert!(v.walk().is_ok());
        let mut levels = 0;
        while let MessageView::Relay(r) = v {
            levels += 1;
            v = r.relay_message().unwrap().unwrap();
        }
        assert_eq!(levels, depth);
        assert_eq!(v.msg_type(), MessageType::SOLICIT);
    }
    let bytes = relay_chain(MAX_RELAY_DEPTH + 1).to_vec().unwrap();
    let owned = Message::parse(&bytes).unwrap_err();
    assert_eq!(
        MessageView::new_checked(&bytes)
            .unwrap()
            .walk()
            .unwrap_err(),
        owned
    );
    // Following the chain by hand meets the same error at the 33rd header.
    let mut v = MessageView::new_checked(&bytes).unwrap();
    let mut err = None;
    while let MessageView::Relay(r) = v {
        match r.relay_message() {
            Ok(Some(next)) => v = next,
            Ok(None) => break,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    assert_eq!(err, Some(owned));
}

#[test]
fn option_nesting_is_bounded() {
    fn nest(levels: usize) -> Vec<u8> {
        let mut opt = DhcpOption::ClientData(ClientData::default());
        for _ in 1..levels {
            opt = DhcpOption::ClientData(ClientData {
                options: Options(vec![opt]),
            });
        }
        let mut m = ClientMessage::new(MessageType::LEASEQUERY_REPLY, 1);
        m.options.push(opt);
        Message::from(m).to_vec().unwrap()
    }
    let ok = nest(MAX_NESTING);
    assert!(Message::parse(&ok).is_ok());
    assert!(MessageView::new_checked(&ok).unwrap().walk().is_ok());
    let deep = nest(MAX_NESTING + 1);
    let err = Message::parse(&deep).unwrap_err();
    assert_eq!(
        err,
        Error::TooDeep {
            at: 4 + 4 * MAX_NESTING,
            what: "option encapsulation",
            limit: MAX_NESTING
        }
    );
    assert_eq!(
        MessageView::new_checked(&deep).unwrap().walk().unwrap_err(),
        err
    );
}

#[test]
fn lq_relay_data_starts_its_own_relay_chain() {
    // A LEASEQUERY-REPLY relayed through 32 levels whose CLIENT_DATA holds a relay chain of 3.
    let mut inner = RelayMessage::new(MessageType::RELAY_FORW, 0, a("2001:db8:1::1"), a("fe80::9"));
    for _ in 0..2 {
        let mut outer = RelayMessage::new(
            MessageType::RELAY_FORW,
            1,
            Ipv6Addr::UNSPECIFIED,
            a("2001:db8:1::2"),
        );
        outer
            .options
            .push(DhcpOption::RelayMsg(Box::new(inner.into())));
        inner = outer;
    }
    let cd = ClientData {
        options: Options(vec![
            DhcpOption::CltTime(5),
            DhcpOption::LqRelayData(Box::new(LqRelayData {
                peer_address: a("2001:db8:1::2"),
                relay: inner,
            })),
        ]),
    };
    let mut reply = ClientMessage::new(MessageType::LEASEQUERY_REPLY, 7);
    reply.options.push(DhcpOption::ClientData(cd));
    let mut m: Message = reply.into();
    for _ in 0..MAX_RELAY_DEPTH {
        let mut r = RelayMessage::new(
            MessageType::RELAY_REPL,
            0,
            Ipv6Addr::UNSPECIFIED,
            a("2001:db8::1"),
        );
        r.options.push(DhcpOption::RelayMsg(Box::new(m)));
        m = r.into();
    }
    let bytes = m.to_vec().unwrap();
    let back = Message::parse(&bytes).unwrap();
    assert_eq!(back, m);
    let rd = back
        .innermost()
        .unwrap()
        .options
        .client_data()
        .unwrap()
        .relay_data()
        .unwrap();
    assert_eq!(rd.chain().levels().count(), 3);
    assert!(MessageView::new_checked(&bytes).unwrap().walk().is_ok());
}
