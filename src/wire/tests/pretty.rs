//! `wire::pretty`: the tree, its text and JSON faces, and malformed parts shown in place.

use crate::wire::context::MAX_RELAY_DEPTH;
use crate::wire::pretty::{Decoded, MAX_DUMP, MessageNode, OptionNode, Value, utc};
use crate::wire::*;
use std::net::Ipv6Addr;

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn client_duid() -> Duid {
    Duid::from(DuidKind::Llt {
        hw_type: 1,
        time: 849_203_358,
        link_layer: vec![2, 0, 0, 0, 3, 1],
    })
}

/// A LEASEQUERY-REPLY with every kind of nesting the renderer unfolds.
fn reply() -> Message {
    let mut relay = RelayMessage::new(MessageType::RELAY_FORW, 0, a("2001:db8:1::1"), a("fe80::1"));
    relay
        .options
        .push(DhcpOption::InterfaceId(b"sub0".to_vec()));
    let mut addr = IaAddr::new(a("2001:db8:1::1cc"), 300, INFINITE_LIFETIME);
    addr.options.push(DhcpOption::StatusCode(Status::new(
        StatusCode::SUCCESS,
        "ok",
    )));
    let cd = ClientData {
        options: vec![
            DhcpOption::ClientId(client_duid()),
            DhcpOption::IaAddr(addr),
            DhcpOption::IaPrefix(IaPrefix::new(
                "2001:db8:100::/56".parse().unwrap(),
                300,
                600,
            )),
            DhcpOption::CltTime(42),
            DhcpOption::LqRelayData(Box::new(LqRelayData {
                peer_address: a("fe80::1"),
                relay,
            })),
        ]
        .into(),
    };
    let mut m = ClientMessage::new(MessageType::LEASEQUERY_REPLY, 0x8dbed1);
    m.options.push(DhcpOption::ClientData(cd));
    m.options
        .push(DhcpOption::ServerId(Duid::ll_ethernet([2, 0, 0, 0, 1, 1])));
    m.options.push(DhcpOption::LqBaseTime(1_795_888_164));
    m.options.push(DhcpOption::Unknown {
        code: OptionCode(65000),
        data: vec![0xde, 0xad],
    });
    m.into()
}

fn find(opts: &[OptionNode], code: OptionCode) -> &OptionNode {
    opts.iter()
        .find(|o| o.code == Some(code.0))
        .unwrap_or_else(|| panic!("no {code} in {opts:?}"))
}

#[test]
fn valid_reply_unfolds_every_level() {
    let bytes = reply().to_vec().unwrap();
    let d = Decoded::new(&bytes);
    assert_eq!(d.malformed, 0);
    let m = &d.message;
    assert_eq!(m.type_name, Some("LEASEQUERY-REPLY"));
    assert_eq!(m.transaction_id, Some(0x8dbed1));
    assert_eq!(m.length, bytes.len());
    let cd = find(&m.options, OptionCode::CLIENT_DATA);
    assert_eq!(cd.offset, 4);
    let Some(Value::Duid(duid)) = &find(&cd.options, OptionCode::CLIENTID).value else {
        panic!("CLIENTID not decoded as a DUID")
    };
    assert_eq!(duid.kind, "LLT");
    assert_eq!(duid.time_utc.as_deref(), Some("2026-11-28T17:49:18Z"));
    assert_eq!(duid.link_layer.as_deref(), Some("02:00:00:00:03:01"));
    assert_eq!(duid.hex, hex::encode(client_duid().to_vec()));
    let ia = find(&cd.options, OptionCode::IAADDR);
    assert_eq!(
        ia.value,
        Some(Value::Address {
            address: a("2001:db8:1::1cc"),
            preferred: 300,
            valid: INFINITE_LIFETIME
        })
    );
    assert!(matches!(
        &find(&ia.options, OptionCode::STATUS_CODE).value,
        Some(Value::Status { code: 0, name: Some("Success"), message }) if message == "ok"
    ));
    assert!(matches!(
        &find(&cd.options, OptionCode::IAPREFIX).value,
        Some(Value::Prefix { prefix, .. }) if prefix == "2001:db8:100::/56"
    ));
    let rd = find(&cd.options, OptionCode::LQ_RELAY_DATA);
    let relay: &MessageNode = rd.message.as_deref().unwrap();
    assert_eq!(relay.type_name, Some("RELAY-FORW"));
    assert_eq!(relay.link_address, Some(a("2001:db8:1::1")));
    assert_eq!(relay.offset, rd.offset + 4 + 16);
    assert!(matches!(
        &find(&relay.options, OptionCode::INTERFACE_ID).value,
        Some(Value::Bytes { text: Some(t), .. }) if t == "sub0"
    ));
    assert!(matches!(
        &find(&m.options, OptionCode::LQ_BASE_TIME).value,
        Some(Value::Time { utc, .. }) if utc == "2026-11-28T17:49:24Z"
    ));
    let unknown = find(&m.options, OptionCode(65000));
    assert_eq!(unknown.name, None);

    let text = d.to_text();
    for want in [
        "LEASEQUERY-REPLY(15) xid 0x8dbed1",
        "\n  CLIENT_DATA(45) len ",
        "\n    CLIENTID(1) len 14 @8: DUID-LLT hw-type 1 time 849203358 (2026-11-28T17:49:18Z) link-layer 02:00:00:00:03:01",
        "2001:db8:1::1cc preferred 300s valid infinite",
        "\n      STATUS_CODE(13) len 4 @",
        ": Success(0) \"ok\"",
        "2001:db8:100::/56 preferred 300s valid 600s",
        "CLT_TIME(46) len 4 @",
        "\n      RELAY-FORW(12) hop-count 0 link-address 2001:db8:1::1 peer-address fe80::1",
        "INTERFACE_ID(18) len 4 @",
        "\"sub0\" [73756230]",
        "LQ_BASE_TIME(100) len 4 @",
        "unknown(65000) len 2 @",
        "[dead]",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("MALFORMED"));

    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["malformed"], 0);
    assert_eq!(json["message"]["type_name"], "LEASEQUERY-REPLY");
    let cd_json = &json["message"]["options"][0];
    assert_eq!(cd_json["name"], "CLIENT_DATA");
    assert_eq!(cd_json["options"][0]["value"]["type"], "duid");
    assert_eq!(cd_json["options"][1]["value"]["address"], "2001:db8:1::1cc");
    assert_eq!(
        cd_json["options"][4]["message"]["link_address"],
        "2001:db8:1::1"
    );
}

#[test]
fn malformed_option_is_shown_in_place_and_siblings_still_read() {
    // IA_NA { IAADDR with a 3-byte body, STATUS_CODE } then ELAPSED_TIME.
    let mut b = vec![7, 0, 0, 1];
    b.extend([0, 3, 0, 12 + 7 + 6]);
    b.extend([0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    b.extend([0, 5, 0, 3, 0xaa, 0xbb, 0xcc]);
    b.extend([0, 13, 0, 2, 0, 2]);
    b.extend([0, 8, 0, 2, 0, 5]);
    assert!(Message::parse(&b).is_err());
    let d = Decoded::new(&b);
    assert_eq!(d.malformed, 1);
    let ia = find(&d.message.options, OptionCode::IA_NA);
    let bad = find(&ia.options, OptionCode::IAADDR);
    let err = bad.error.as_ref().unwrap();
    assert_eq!(err.offset, 20);
    assert_eq!(err.reason, "bad_length");
    assert_eq!(err.bytes, "aabbcc");
    assert!(matches!(
        find(&ia.options, OptionCode::STATUS_CODE).value,
        Some(Value::Status { code: 2, .. })
    ));
    assert_eq!(
        find(&d.message.options, OptionCode::ELAPSED_TIME).value,
        Some(Value::ElapsedTime { hundredths: 5 })
    );
    let text = d.to_text();
    assert!(
        text.contains("IAADDR(5) len 3 @20\n      !! MALFORMED @20: option 5 at offset 20 has length 3, expected at least 24\n         bytes aabbcc"),
        "{text}"
    );
    assert!(text.contains("ELAPSED_TIME(8) len 2 @33: 0.05s"), "{text}");
}

#[test]
fn overrun_ends_the_list_with_the_rest_dumped() {
    let mut b = vec![1, 0, 0, 9];
    b.extend([0, 8, 0, 2, 0, 0]);
    b.extend([0, 1, 0, 200]);
    b.extend([0x11; 100]);
    let d = Decoded::new(&b);
    assert_eq!(d.malformed, 1);
    assert_eq!(d.message.options.len(), 2);
    let last = &d.message.options[1];
    assert_eq!(last.code, None);
    assert_eq!(last.offset, 10);
    assert_eq!(last.length, 104);
    let err = last.error.as_ref().unwrap();
    assert_eq!(err.reason, "option_overrun");
    assert_eq!(err.bytes.len(), 2 * MAX_DUMP + 3, "dump is cut");
    assert!(err.bytes.starts_with("000100c8"));
    assert!(err.bytes.ends_with("..."));
}

#[test]
fn header_errors_and_deep_chains() {
    for (bytes, reason) in [
        (&[][..], "truncated"),
        (&[1, 0, 0][..], "truncated"),
        (&[12, 0, 0, 0][..], "truncated"),
    ] {
        let d = Decoded::new(bytes);
        assert_eq!(d.malformed, 1);
        assert_eq!(d.message.error.as_ref().unwrap().reason, reason);
        assert!(d.to_text().contains("!! MALFORMED @0"));
    }
    // A chain one deeper than allowed: every level shown, the last one an error.
    let mut m: Message = ClientMessage::new(MessageType::SOLICIT, 1).into();
    for _ in 0..=MAX_RELAY_DEPTH {
        let mut r = RelayMessage::new(MessageType::RELAY_FORW, 0, a("2001:db8::1"), a("fe80::1"));
        r.options.push(DhcpOption::RelayMsg(Box::new(m)));
        m = r.into();
    }
    let d = Decoded::new(&m.to_vec().unwrap());
    assert_eq!(d.malformed, 1);
    let mut node = &d.message;
    let mut levels = 0;
    while let Some(inner) = node.options.first().and_then(|o| o.message.as_deref()) {
        levels += 1;
        node = inner;
    }
    assert_eq!(levels, MAX_RELAY_DEPTH - 1);
    let err = node.options[0].error.as_ref().unwrap();
    assert_eq!(err.reason, "too_deep");
}

/// The invariant the fuzz target pins, exhaustively over truncations and byte flips of a
/// message with every kind of nesting.
#[test]
fn malformed_count_agrees_with_parse() {
    let bytes = reply().to_vec().unwrap();
    let mut cases = Vec::new();
    for n in 0..bytes.len() {
        cases.push(bytes[..n].to_vec());
    }
    for i in 0..bytes.len() {
        for v in [0x00, 0x01, 0x0c, 0xff] {
            let mut c = bytes.clone();
            c[i] = v;
            cases.push(c);
        }
    }
    for c in cases {
        let d = Decoded::new(&c);
        assert_eq!(
            d.malformed == 0,
            Message::parse(&c).is_ok(),
            "{}\n{}",
            hex::encode(&c),
            d.to_text()
        );
        let _ = serde_json::to_string(&d).unwrap();
    }
}

#[test]
fn utc_dates() {
    assert_eq!(utc(0), "1970-01-01T00:00:00Z");
    assert_eq!(utc(946_684_800), "2000-01-01T00:00:00Z");
    assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(utc(1_795_888_164), "2026-11-28T17:49:24Z");
    assert_eq!(utc(i64::from(u32::MAX)), "2106-02-07T06:28:15Z");
    assert_eq!(
        utc(946_684_800 + i64::from(u32::MAX)),
        "2136-02-07T06:28:15Z"
    );
    assert_eq!(utc(-1), "1969-12-31T23:59:59Z");
}
