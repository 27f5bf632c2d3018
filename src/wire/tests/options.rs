//! Every typed option four ways against fixed bytes: construct (the owned
//! value and its `buffer_len`), parse, emit into a 0xa5-filled buffer, and deconstruct through
//! the borrowed view. Then the bad-length cases of every option with a fixed layout.

use crate::wire::view::{OptionRef, OptionsIter};
use crate::wire::*;
use std::net::Ipv6Addr;

const DB8_10: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// Parse, emit (0xa5 canary, short buffer) and construct checks; returns the view of `bytes`.
fn check(opt: &DhcpOption, bytes: &[u8]) {
    assert_eq!(opt.buffer_len(), bytes.len(), "buffer_len of {opt:?}");
    assert_eq!(&DhcpOption::parse(bytes).unwrap(), opt, "parse");
    let mut buf = vec![0xa5u8; bytes.len() + 8];
    let n = opt.emit(&mut buf).unwrap();
    assert_eq!(n, bytes.len());
    assert_eq!(&buf[..n], bytes, "emit");
    assert!(
        buf[n..].iter().all(|&b| b == 0xa5),
        "emit wrote past its end"
    );
    let mut short = vec![0xa5u8; bytes.len() - 1];
    assert!(matches!(
        opt.emit(&mut short),
        Err(Error::BufferTooSmall { .. })
    ));
}

/// The borrowed typed form of the single option in `bytes`.
fn view(bytes: &[u8]) -> OptionRef<'_> {
    let mut it = OptionsIter::over(bytes);
    let o = it.next().unwrap().unwrap();
    assert_eq!(o.offset(), 0);
    assert!(it.next().is_none());
    o.kind().unwrap()
}

#[test]
fn client_id_duid_llt() {
    let bytes = [
        0, 1, 0, 14, 0, 1, 0, 1, 0x2a, 0xbc, 0xde, 0xf0, 2, 0, 0, 0, 0, 1,
    ];
    let kind = DuidKind::Llt {
        hw_type: 1,
        time: 0x2abc_def0,
        link_layer: vec![2, 0, 0, 0, 0, 1],
    };
    let duid = Duid::from(&kind);
    check(&DhcpOption::ClientId(duid.clone()), &bytes);
    let OptionRef::ClientId(raw) = view(&bytes) else {
        panic!("not a CLIENTID")
    };
    assert_eq!(DuidKind::parse(raw), kind);
    assert_eq!(duid.kind(), kind);
    assert_eq!(duid.to_vec(), raw);
}

#[test]
fn server_id_duid_en_ll_uuid_other() {
    let en = [0, 2, 0, 10, 0, 2, 0, 0, 0x09, 0xbf, 0xaa, 0xbb, 0xcc, 0xdd];
    let kind = DuidKind::En {
        enterprise: 2495,
        identifier: vec![0xaa, 0xbb, 0xcc, 0xdd],
    };
    check(&DhcpOption::ServerId(kind.clone().into()), &en);
    assert!(matches!(view(&en), OptionRef::ServerId(d) if DuidKind::parse(d) == kind));

    let ll = [0, 2, 0, 10, 0, 3, 0, 1, 2, 0, 0, 0, 0, 2];
    check(
        &DhcpOption::ServerId(Duid::ll_ethernet([2, 0, 0, 0, 0, 2])),
        &ll,
    );

    let mut uuid = vec![0, 2, 0, 18, 0, 4];
    uuid.extend(1..=16u8);
    let u: [u8; 16] = core::array::from_fn(|i| i as u8 + 1);
    check(&DhcpOption::ServerId(DuidKind::Uuid(u).into()), &uuid);

    // An unknown DUID type and a UUID of the wrong size stay raw, byte for byte.
    let other = [0, 2, 0, 3, 0, 9, 0xff];
    check(
        &DhcpOption::ServerId(DuidKind::Other(vec![0, 9, 0xff]).into()),
        &other,
    );
    let short_uuid = [0, 2, 0, 4, 0, 4, 1, 2];
    check(
        &DhcpOption::ServerId(DuidKind::Other(vec![0, 4, 1, 2]).into()),
        &short_uuid,
    );
}

#[test]
fn relay_id() {
    let bytes = [0, 53, 0, 10, 0, 3, 0, 1, 2, 0, 0, 0, 0, 3];
    let duid = Duid::ll_ethernet([2, 0, 0, 0, 0, 3]);
    check(&DhcpOption::RelayId(duid.clone()), &bytes);
    assert!(matches!(view(&bytes), OptionRef::RelayId(d) if *d == duid));
}

fn iaaddr_bytes() -> Vec<u8> {
    // IAADDR 2001:db8::10, preferred 3600, valid 7200, with STATUS_CODE Success "ok".
    let mut b = vec![0, 5, 0, 24 + 8];
    b.extend(DB8_10);
    b.extend([0, 0, 0x0e, 0x10, 0, 0, 0x1c, 0x20]);
    b.extend([0, 13, 0, 4, 0, 0, b'o', b'k']);
    b
}

fn iaaddr_value() -> IaAddr {
    let mut ia = IaAddr::new(a("2001:db8::10"), 3600, 7200);
    ia.options.push(DhcpOption::StatusCode(Status::new(
        StatusCode::SUCCESS,
        "ok",
    )));
    ia
}

#[test]
fn iaaddr_with_status() {
    let bytes = iaaddr_bytes();
    check(&DhcpOption::IaAddr(iaaddr_value()), &bytes);
    let OptionRef::IaAddr(v) = view(&bytes) else {
        panic!("not IAADDR")
    };
    assert_eq!(
        (v.addr, v.preferred, v.valid),
        (a("2001:db8::10"), 3600, 7200)
    );
    let st = v.options.next_status();
    assert_eq!(st, Some((StatusCode::SUCCESS, &b"ok"[..])));
}

trait NextStatus<'a> {
    fn next_status(self) -> Option<(StatusCode, &'a [u8])>;
}

impl<'a> NextStatus<'a> for OptionsIter<'a> {
    fn next_status(self) -> Option<(StatusCode, &'a [u8])> {
        let o = self.find(OptionCode::STATUS_CODE).unwrap()?;
        match o.kind().unwrap() {
            OptionRef::StatusCode(s) => Some((s.code, s.message)),
            _ => None,
        }
    }
}

#[test]
fn ia_na_with_iaaddr() {
    let inner = iaaddr_bytes();
    let mut bytes = vec![0, 3, 0, 12 + inner.len() as u8];
    bytes.extend([0, 0, 0, 7, 0, 0, 0x07, 0x08, 0, 0, 0x0b, 0x40]);
    bytes.extend(&inner);
    let mut ia = Ia::new(7, 1800, 2880);
    ia.options.push(DhcpOption::IaAddr(iaaddr_value()));
    check(&DhcpOption::IaNa(ia), &bytes);
    let OptionRef::IaNa(v) = view(&bytes) else {
        panic!("not IA_NA")
    };
    assert_eq!((v.iaid, v.t1, v.t2), (7, 1800, 2880));
    let o = v.options.find(OptionCode::IAADDR).unwrap().unwrap();
    assert_eq!(o.offset(), 16);
    assert!(matches!(o.kind().unwrap(), OptionRef::IaAddr(x) if x.valid == 7200));
}

#[test]
fn ia_ta() {
    let bytes = [0, 4, 0, 4, 0xde, 0xad, 0xbe, 0xef];
    let ia = IaTa {
        iaid: 0xdead_beef,
        options: Options::new(),
    };
    check(&DhcpOption::IaTa(ia), &bytes);
    assert!(matches!(
        view(&bytes),
        OptionRef::IaTa { iaid: 0xdead_beef, options } if options.count() == 0
    ));
}

fn iaprefix_bytes() -> Vec<u8> {
    // IAPREFIX 2001:db8:100::/56, preferred 0, valid infinity.
    let mut b = vec![0, 26, 0, 25, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 56];
    b.extend([
        0x20, 0x01, 0x0d, 0xb8, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    b
}

#[test]
fn ia_pd_with_iaprefix() {
    let inner = iaprefix_bytes();
    let mut bytes = vec![0, 25, 0, 12 + inner.len() as u8, 0, 0, 0, 1];
    bytes.extend([0; 8]);
    bytes.extend(&inner);
    let pfx = crate::prefix::Ipv6Prefix::new(a("2001:db8:100::"), 56).unwrap();
    let mut ia = Ia::new(1, 0, 0);
    ia.options.push(DhcpOption::IaPrefix(IaPrefix::new(
        pfx,
        0,
        INFINITE_LIFETIME,
    )));
    check(&DhcpOption::IaPd(ia), &bytes);
    let OptionRef::IaPd(v) = view(&bytes) else {
        panic!("not IA_PD")
    };
    assert_eq!(v.iaid, 1);
    let o = v.options.find(OptionCode::IAPREFIX).unwrap().unwrap();
    let OptionRef::IaPrefix(p) = o.kind().unwrap() else {
        panic!("not IAPREFIX")
    };
    assert_eq!(p.prefix().unwrap(), pfx);
    assert_eq!((p.preferred, p.valid), (0, INFINITE_LIFETIME));
}

#[test]
fn iaprefix_keeps_host_bits() {
    let mut bytes = iaprefix_bytes();
    bytes[28] = 0x01; // a host bit past /56
    let DhcpOption::IaPrefix(p) = DhcpOption::parse(&bytes).unwrap() else {
        panic!("not IAPREFIX")
    };
    assert_eq!(p.prefix_addr, a("2001:db8:100::1"));
    assert_eq!(p.prefix().unwrap().addr(), a("2001:db8:100::"));
    check(&DhcpOption::IaPrefix(p), &bytes);
}

#[test]
fn oro() {
    let bytes = [0, 6, 0, 6, 0, 47, 0, 46, 0x12, 0x34];
    let codes = vec![
        OptionCode::LQ_RELAY_DATA,
        OptionCode::CLT_TIME,
        OptionCode(0x1234),
    ];
    check(&DhcpOption::Oro(codes.clone()), &bytes);
    let OptionRef::Oro(v) = view(&bytes) else {
        panic!("not ORO")
    };
    assert!(v.codes().eq(codes));
}

#[test]
fn elapsed_time() {
    let bytes = [0, 8, 0, 2, 0x01, 0x2c];
    check(&DhcpOption::ElapsedTime(300), &bytes);
    assert!(matches!(view(&bytes), OptionRef::ElapsedTime(300)));
}

#[test]
fn status_code_text_and_non_utf8() {
    let bytes = [0, 13, 0, 9, 0, 3, b'n', b'o', b' ', b'l', b'e', b'a', b's'];
    let st = Status::new(StatusCode::NO_BINDING, "no leas");
    check(&DhcpOption::StatusCode(st.clone()), &bytes);
    assert!(matches!(view(&bytes),
        OptionRef::StatusCode(s) if s.code == StatusCode::NO_BINDING && s.message == b"no leas"));

    // Invalid UTF-8 keeps its bytes and its code.
    let bad = [0, 13, 0, 4, 0, 10, 0xff, 0xfe];
    let st = Status {
        code: StatusCode::NOT_ALLOWED,
        message: vec![0xff, 0xfe],
    };
    check(&DhcpOption::StatusCode(st.clone()), &bad);
    assert_eq!(st.text(), "\u{fffd}\u{fffd}");
    // Unknown status codes round-trip too.
    let unknown = [0, 13, 0, 2, 0x01, 0x00];
    check(
        &DhcpOption::StatusCode(Status::new(StatusCode(256), "")),
        &unknown,
    );
}

#[test]
fn interface_id_and_subscriber_id() {
    let bytes = [0, 18, 0, 4, b'e', b't', b'h', b'0'];
    check(&DhcpOption::InterfaceId(b"eth0".to_vec()), &bytes);
    assert!(matches!(view(&bytes), OptionRef::InterfaceId(b"eth0")));
    let bytes = [0, 38, 0, 3, b's', b'u', b'b'];
    check(&DhcpOption::SubscriberId(b"sub".to_vec()), &bytes);
    assert!(matches!(view(&bytes), OptionRef::SubscriberId(b"sub")));
    let empty = [0, 18, 0, 0];
    check(&DhcpOption::InterfaceId(vec![]), &empty);
}

#[test]
fn remote_id() {
    let bytes = [0, 37, 0, 7, 0, 0, 0x0d, 0xe9, 0xaa, 0xbb, 0xcc];
    check(
        &DhcpOption::RemoteId {
            enterprise: 3561,
            remote_id: vec![0xaa, 0xbb, 0xcc],
        },
        &bytes,
    );
    assert!(matches!(
        view(&bytes),
        OptionRef::RemoteId {
            enterprise: 3561,
            remote_id: [0xaa, 0xbb, 0xcc]
        }
    ));
}

#[test]
fn client_linklayer_addr() {
    let bytes = [0, 79, 0, 8, 0, 1, 2, 0, 0, 0, 0, 9];
    check(
        &DhcpOption::ClientLinklayerAddr {
            hw_type: 1,
            addr: vec![2, 0, 0, 0, 0, 9],
        },
        &bytes,
    );
    assert!(matches!(
        view(&bytes),
        OptionRef::ClientLinklayerAddr {
            hw_type: 1,
            addr: [2, 0, 0, 0, 0, 9]
        }
    ));
}

#[test]
fn lq_query_by_address() {
    let inner = iaaddr_bytes();
    let mut bytes = vec![0, 44, 0, 17 + inner.len() as u8, 1];
    bytes.extend([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    bytes.extend(&inner);
    let mut q = LqQuery::new(QueryType::BY_ADDRESS, a("2001:db8:1::1"));
    q.options.push(DhcpOption::IaAddr(iaaddr_value()));
    check(&DhcpOption::LqQuery(q), &bytes);
    let OptionRef::LqQuery(v) = view(&bytes) else {
        panic!("not LQ_QUERY")
    };
    assert_eq!(v.query_type, QueryType::BY_ADDRESS);
    assert_eq!(v.link_address, a("2001:db8:1::1"));
    assert_eq!(v.options.walk().unwrap(), 2);
}

#[test]
fn client_data_clt_time_and_relay_data() {
    // CLIENT_DATA { CLIENTID, IAADDR, CLT_TIME 60, LQ_RELAY_DATA { peer, RELAY-FORW } }
    let clientid = [0, 1, 0, 10, 0, 3, 0, 1, 2, 0, 0, 0, 0, 1];
    let clt = [0, 46, 0, 4, 0, 0, 0, 60];
    let mut relay = vec![12, 0];
    relay.extend([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    relay.extend([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    relay.extend([0, 18, 0, 2, b'p', b'1']);
    let mut lqrd = vec![0, 47, 0, 16 + relay.len() as u8];
    lqrd.extend([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    lqrd.extend(&relay);
    let body: Vec<u8> = [&clientid[..], &iaaddr_bytes(), &clt, &lqrd].concat();
    let mut bytes = vec![0, 45, 0, body.len() as u8];
    bytes.extend(&body);

    let mut rm = RelayMessage::new(MessageType::RELAY_FORW, 0, a("2001:db8:1::1"), a("fe80::2"));
    rm.options.push(DhcpOption::InterfaceId(b"p1".to_vec()));
    let cd = ClientData {
        options: Options(vec![
            DhcpOption::ClientId(Duid::ll_ethernet([2, 0, 0, 0, 0, 1])),
            DhcpOption::IaAddr(iaaddr_value()),
            DhcpOption::CltTime(60),
            DhcpOption::LqRelayData(Box::new(LqRelayData {
                peer_address: a("2001:db8:1::1"),
                relay: rm,
            })),
        ]),
    };
    assert_eq!(cd.clt_time(), Some(60));
    assert_eq!(cd.addresses().count(), 1);
    assert_eq!(
        cd.relay_data().unwrap().relay.options.interface_id(),
        Some(&b"p1"[..])
    );
    check(&DhcpOption::ClientData(cd), &bytes);

    let OptionRef::ClientData(opts) = view(&bytes) else {
        panic!("not CLIENT_DATA")
    };
    let kinds: Vec<OptionRef<'_>> = opts.map(|o| o.unwrap().kind().unwrap()).collect();
    assert!(matches!(kinds[0], OptionRef::ClientId(d) if d == &clientid[4..]));
    assert!(matches!(kinds[1], OptionRef::IaAddr(x) if x.addr == a("2001:db8::10")));
    assert!(matches!(kinds[2], OptionRef::CltTime(60)));
    let OptionRef::LqRelayData(rd) = kinds[3] else {
        panic!("not LQ_RELAY_DATA")
    };
    assert_eq!(rd.peer_address, a("2001:db8:1::1"));
    assert_eq!(rd.relay.peer_address(), a("fe80::2"));
    assert_eq!(rd.relay.msg_type(), MessageType::RELAY_FORW);
    assert!(rd.relay.relay_message().unwrap().is_none());
}

#[test]
fn lq_relay_data_holding_a_client_message_is_wrong_kind() {
    let mut bytes = vec![0, 47, 0, 50];
    bytes.extend([0; 16]);
    bytes.push(1); // SOLICIT
    bytes.extend([0; 33]);
    let err = DhcpOption::parse(&bytes).unwrap_err();
    assert_eq!(
        err,
        Error::WrongKind {
            at: 20,
            what: "client/server message where a relay message was expected"
        }
    );
    assert_eq!(OptionsIter::over(&bytes).walk().unwrap_err(), err);
}

#[test]
fn lq_client_link() {
    let mut bytes = vec![0, 48, 0, 32];
    bytes.extend([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    bytes.extend([0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    let links = vec![a("2001:db8:1::1"), a("2001:db8:2::1")];
    check(&DhcpOption::LqClientLink(links.clone()), &bytes);
    let OptionRef::LqClientLink(v) = view(&bytes) else {
        panic!("not LQ_CLIENT_LINK")
    };
    assert!(v.addresses().eq(links));
}

#[test]
fn time_options() {
    type Make = fn(u32) -> DhcpOption;
    let cases: [(u16, Make); 4] = [
        (46, DhcpOption::CltTime),
        (100, DhcpOption::LqBaseTime),
        (101, DhcpOption::LqStartTime),
        (102, DhcpOption::LqEndTime),
    ];
    for (code, make) in cases {
        let [c0, c1] = code.to_be_bytes();
        let bytes = [c0, c1, 0, 4, 0x69, 0x29, 0xb0, 0x00];
        check(&make(0x6929_b000), &bytes);
        let got = match view(&bytes) {
            OptionRef::CltTime(t)
            | OptionRef::LqBaseTime(t)
            | OptionRef::LqStartTime(t)
            | OptionRef::LqEndTime(t) => t,
            other => panic!("code {code}: {other:?}"),
        };
        assert_eq!(got, 0x6929_b000);
    }
}

#[test]
fn unknown_options_round_trip() {
    // PREFERENCE (7) and a code nobody assigned, including an empty body.
    for bytes in [&[0u8, 7, 0, 1, 255][..], &[0xfe, 0xed, 0, 0]] {
        let code = OptionCode(u16::from_be_bytes([bytes[0], bytes[1]]));
        check(
            &DhcpOption::Unknown {
                code,
                data: bytes[4..].to_vec(),
            },
            bytes,
        );
        assert!(matches!(view(bytes), OptionRef::Unknown(o) if o.code() == code));
    }
}

#[test]
fn relay_msg_inside_relay() {
    let bytes_inner = [1u8, 0, 0, 9];
    let mut bytes = vec![12, 1];
    bytes.extend([0; 16]);
    bytes.extend([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    bytes.extend([0, 9, 0, 4]);
    bytes.extend(bytes_inner);
    let mut r = RelayMessage::new(
        MessageType::RELAY_FORW,
        1,
        Ipv6Addr::UNSPECIFIED,
        a("fe80::1"),
    );
    r.options.push(DhcpOption::RelayMsg(Box::new(
        ClientMessage::new(MessageType::SOLICIT, 9).into(),
    )));
    let m: Message = r.into();
    assert_eq!(m.to_vec().unwrap(), bytes);
    let mut canary = vec![0xa5u8; bytes.len() + 3];
    assert_eq!(m.emit(&mut canary).unwrap(), bytes.len());
    assert!(canary[bytes.len()..].iter().all(|&b| b == 0xa5));
    assert_eq!(Message::parse(&bytes).unwrap(), m);
    let MessageView::Relay(v) = MessageView::new_checked(&bytes).unwrap() else {
        panic!("not a relay")
    };
    assert_eq!((v.hop_count(), v.peer_address()), (1, a("fe80::1")));
    let MessageView::Client(c) = v.relay_message().unwrap().unwrap() else {
        panic!("inner not a client message")
    };
    assert_eq!(
        (c.msg_type(), c.transaction_id()),
        (MessageType::SOLICIT, 9)
    );
}

/// Bodies of the wrong size for each option with a fixed layout part.
#[test]
fn bad_lengths() {
    let cases: &[(u16, &[usize], &str)] = &[
        (3, &[0, 11], "at least 12"),
        (25, &[0, 11], "at least 12"),
        (4, &[0, 3], "at least 4"),
        (5, &[0, 23], "at least 24"),
        (26, &[0, 24], "at least 25"),
        (6, &[1, 3], "a multiple of 2"),
        (8, &[0, 1, 3], "2"),
        (13, &[0, 1], "at least 2"),
        (37, &[0, 3], "at least 4"),
        (79, &[0, 1], "at least 2"),
        (44, &[0, 16], "at least 17"),
        (
            47,
            &[0, 49],
            "at least 50 (peer-address and a relay header)",
        ),
        (48, &[1, 15, 17], "a multiple of 16"),
        (46, &[0, 3, 5], "4"),
        (100, &[0, 3, 5], "4"),
        (101, &[3], "4"),
        (102, &[5], "4"),
    ];
    for &(code, lens, expected) in cases {
        for &len in lens {
            // The option right after a LEASEQUERY-REPLY header, at offset 4.
            let mut bytes = vec![15, 0, 0, 1];
            bytes.extend(code.to_be_bytes());
            bytes.extend((len as u16).to_be_bytes());
            bytes.extend(std::iter::repeat_n(0u8, len));
            let want = Error::BadLength {
                at: 4,
                code,
                len,
                expected,
            };
            assert_eq!(
                Message::parse(&bytes).unwrap_err(),
                want,
                "owned, code {code} len {len}"
            );
            let v = MessageView::new_checked(&bytes).unwrap();
            assert_eq!(v.walk().unwrap_err(), want, "view, code {code} len {len}");
            assert_eq!(want.label(), "bad_length");
        }
    }
}

#[test]
fn truncated_and_overrunning_options() {
    // 3 bytes of option header.
    let bytes = [7, 0, 0, 1, 0, 1, 0];
    let want = Error::Truncated {
        at: 4,
        what: "option header",
        need: 4,
        have: 3,
    };
    assert_eq!(Message::parse(&bytes).unwrap_err(), want);
    let mut it = MessageView::new_checked(&bytes).unwrap().options();
    assert_eq!(it.next().unwrap().unwrap_err(), want);
    assert!(
        it.next().is_none(),
        "the walker stops for good after an error"
    );

    // Length 10 with 2 bytes left; a good option after it must not be reached.
    let bytes = [7, 0, 0, 1, 0, 1, 0, 10, 1, 2];
    let want = Error::OptionOverrun {
        at: 4,
        code: 1,
        len: 10,
        room: 2,
    };
    assert_eq!(Message::parse(&bytes).unwrap_err(), want);
    let mut it = MessageView::new_checked(&bytes).unwrap().options();
    assert_eq!(it.next().unwrap().unwrap_err(), want);
    assert!(it.next().is_none());

    // Nested: an IAADDR inside IA_NA overruns the IA_NA, not the message.
    let mut bytes = vec![7, 0, 0, 1, 0, 3, 0, 16];
    bytes.extend([0; 12]);
    bytes.extend([0, 5, 0, 24]);
    bytes.extend([0; 30]);
    let want = Error::OptionOverrun {
        at: 20,
        code: 5,
        len: 24,
        room: 0,
    };
    assert_eq!(Message::parse(&bytes).unwrap_err(), want);
    assert_eq!(
        MessageView::new_checked(&bytes)
            .unwrap()
            .walk()
            .unwrap_err(),
        want
    );
}

#[test]
fn message_headers_truncated() {
    for len in 0..4 {
        let bytes = vec![7u8; len];
        assert_eq!(Message::parse(&bytes).unwrap_err().label(), "truncated");
        assert_eq!(
            MessageView::new_checked(&bytes).unwrap_err().label(),
            "truncated"
        );
    }
    for len in 1..34 {
        let mut bytes = vec![0u8; len];
        bytes[0] = 12;
        let want = Error::Truncated {
            at: 0,
            what: "relay message header",
            need: 34,
            have: len,
        };
        assert_eq!(Message::parse(&bytes).unwrap_err(), want);
        assert_eq!(MessageView::new_checked(&bytes).unwrap_err(), want);
    }
}

#[test]
fn emit_refuses_values_the_wire_cannot_carry() {
    let m: Message = ClientMessage::new(MessageType::REPLY, 0x0100_0000).into();
    assert!(matches!(m.to_vec(), Err(Error::FieldRange { .. })));
    let m: Message = ClientMessage::new(MessageType::RELAY_FORW, 1).into();
    assert!(matches!(m.to_vec(), Err(Error::FieldRange { .. })));
    let mut m = ClientMessage::new(MessageType::REPLY, 1);
    m.options.push(DhcpOption::Unknown {
        code: OptionCode(999),
        data: vec![0; 70_000],
    });
    assert!(matches!(
        Message::from(m).to_vec(),
        Err(Error::TooLong { len: 70_000, .. })
    ));
}

#[test]
fn typed_accessors_match_kind_and_check_the_code() {
    let addr = iaaddr_bytes();
    let o = OptionsIter::over(&addr).next().unwrap().unwrap();
    let v = o.ia_addr().unwrap();
    assert_eq!((v.addr, v.valid), (a("2001:db8::10"), 7200));
    let st = v
        .options
        .into_iter()
        .next()
        .unwrap()
        .unwrap()
        .status()
        .unwrap();
    assert_eq!((st.code, st.message), (StatusCode::SUCCESS, &b"ok"[..]));
    for wrong in [
        o.ia_prefix().err(),
        o.status().err(),
        o.client_data().err(),
        o.clt_time().err(),
        o.lq_relay_data().err(),
        o.ia().err(),
        o.duid().err(),
    ] {
        assert!(
            matches!(wrong, Some(Error::WrongKind { at: 0, .. })),
            "{wrong:?}"
        );
    }
    let pfx = iaprefix_bytes();
    let o = OptionsIter::over(&pfx).next().unwrap().unwrap();
    assert_eq!(o.ia_prefix().unwrap().prefix_len, 56);
    assert!(o.ia_addr().is_err());
    let clt = [0, 46, 0, 4, 0, 0, 1, 0];
    let o = OptionsIter::over(&clt).next().unwrap().unwrap();
    assert_eq!(o.clt_time().unwrap(), 256);
    let short = [0, 46, 0, 2, 0, 0];
    let o = OptionsIter::over(&short).next().unwrap().unwrap();
    assert_eq!(o.clt_time().unwrap_err().label(), "bad_length");
    let duid = [0, 2, 0, 2, 0xab, 0xcd];
    let o = OptionsIter::over(&duid).next().unwrap().unwrap();
    assert_eq!(o.duid().unwrap(), &[0xab, 0xcd]);
}
