//! Table tests for the classifier: built messages, emitted to bytes and parsed back, so the
//! classifier sees exactly what it sees on the wire.

use super::*;
use crate::wire::{Duid, Ia, IaAddr, IaPrefix, RelayMessage, Status};

const CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SERVER: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

fn client_msg(t: MessageType, xid: u32, ias: Vec<DhcpOption>) -> ClientMessage {
    let mut m = ClientMessage::new(t, xid);
    m.options
        .push(DhcpOption::ClientId(Duid::ll_ethernet(CLIENT)));
    if t == MessageType::REPLY {
        m.options
            .push(DhcpOption::ServerId(Duid::ll_ethernet(SERVER)));
    }
    m.options.extend(ias);
    m
}

fn ia_na(iaid: u32, addr: &str, valid: u32) -> DhcpOption {
    let mut ia = Ia::new(iaid, 0, 0);
    ia.options
        .push(DhcpOption::IaAddr(IaAddr::new(a(addr), valid / 2, valid)));
    DhcpOption::IaNa(ia)
}

fn ia_pd(iaid: u32, prefix: &str, valid: u32) -> DhcpOption {
    let mut ia = Ia::new(iaid, 0, 0);
    ia.options.push(DhcpOption::IaPrefix(IaPrefix::new(
        prefix.parse().unwrap(),
        valid / 2,
        valid,
    )));
    DhcpOption::IaPd(ia)
}

/// One relay level around `inner` (dhcrelay: link-address = its address on the client link).
fn relay(
    t: MessageType,
    link: &str,
    peer: &str,
    extra: Vec<DhcpOption>,
    inner: Message,
) -> Message {
    let mut r = RelayMessage::new(t, 0, a(link), a(peer));
    r.options.extend(extra);
    r.options.push(DhcpOption::RelayMsg(Box::new(inner)));
    Message::Relay(r)
}

/// Emit and parse back: the classifier only ever sees parsed wire bytes.
fn wire(m: Message) -> Message {
    Message::parse(&m.to_vec().unwrap()).unwrap()
}

fn forw(c: ClientMessage) -> Message {
    wire(relay(
        MessageType::RELAY_FORW,
        "2001:db8:1::1",
        "fe80::1",
        vec![
            DhcpOption::InterfaceId(b"eth1".to_vec()),
            DhcpOption::RemoteId {
                enterprise: 4491,
                remote_id: b"cm-01".to_vec(),
            },
        ],
        Message::Client(c),
    ))
}

fn repl(c: ClientMessage) -> Message {
    wire(relay(
        MessageType::RELAY_REPL,
        "2001:db8:1::1",
        "fe80::1",
        vec![DhcpOption::InterfaceId(b"eth1".to_vec())],
        Message::Client(c),
    ))
}

const SRV: &str = "2001:db8:ffff::2";

fn bind(l: Option<Learned>) -> Observation {
    match l {
        Some(Learned::Bind(o)) => o,
        other => panic!("expected a binding, got {other:?}"),
    }
}

#[test]
fn request_reply_learns_addresses_prefixes_relay_data_and_server() {
    let mut c = Classifier::new(ClassifyConfig::default());
    let req = client_msg(MessageType::REQUEST, 0x1234, vec![]);
    assert_eq!(c.on_message(&forw(req), a("2001:db8:1::1"), ts(0)), None);
    assert_eq!(c.pending_len(), 1);
    let reply = client_msg(
        MessageType::REPLY,
        0x1234,
        vec![
            ia_na(1, "2001:db8:1::100", 3600),
            ia_pd(2, "2001:db8:100::/56", 7200),
        ],
    );
    let o = bind(c.on_message(&repl(reply), a(SRV), ts(10)));
    assert_eq!(c.pending_len(), 0);
    assert_eq!(&*o.client_duid, &Duid::ll_ethernet(CLIENT).to_vec()[..]);
    assert_eq!(o.link.address, a("2001:db8:1::1"));
    assert_eq!(o.source, Source::Snoop);
    assert!(!o.complete);
    assert_eq!(o.arrival, ts(10));
    assert_eq!(o.server.address, a(SRV));
    assert_eq!(&*o.server.duid, &Duid::ll_ethernet(SERVER).to_vec()[..]);
    let relay = o.relay.unwrap();
    assert_eq!(relay.peer_address, Some(a("fe80::1")));
    assert_eq!(relay.interface_id.as_deref(), Some(&b"eth1"[..]));
    // Remote-Id only travels in the RELAY-FORW: enterprise number then the id.
    assert_eq!(
        relay.remote_id.as_deref(),
        Some(&[0, 0, 0x11, 0x8b, b'c', b'm', b'-', b'0', b'1'][..])
    );
    assert_eq!(
        o.leases,
        vec![
            ObservedLease {
                key: LeaseKey::Address(a("2001:db8:1::100")),
                ia: IaType::Na,
                iaid: 1,
                preferred: 1800,
                valid: 3600,
            },
            ObservedLease {
                key: LeaseKey::Prefix("2001:db8:100::/56".parse().unwrap()),
                ia: IaType::Pd,
                iaid: 2,
                preferred: 3600,
                valid: 7200,
            },
        ]
    );
    assert_eq!(c.stats().get(ClassifyCounter::RelayForw), 1);
    assert_eq!(c.stats().get(ClassifyCounter::ReplyBind), 1);
    assert_eq!(c.stats().get(ClassifyCounter::ReplyUnmatched), 0);
}

#[test]
fn every_exchange_type_binds_even_without_its_relay_forw() {
    for t in [
        MessageType::SOLICIT,
        MessageType::REQUEST,
        MessageType::RENEW,
        MessageType::REBIND,
    ] {
        let mut c = Classifier::new(ClassifyConfig::default());
        c.on_message(&forw(client_msg(t, 7, vec![])), a("2001:db8:1::1"), ts(0));
        let o = bind(c.on_message(
            &repl(client_msg(
                MessageType::REPLY,
                7,
                vec![ia_na(1, "2001:db8:1::7", 600)],
            )),
            a(SRV),
            ts(1),
        ));
        assert_eq!(o.leases.len(), 1, "{t:?}");
    }
    // A binding first seen in a RENEW whose RELAY-FORW we never saw (agent started late).
    let mut c = Classifier::new(ClassifyConfig::default());
    let o = bind(c.on_message(
        &repl(client_msg(
            MessageType::REPLY,
            99,
            vec![ia_pd(3, "2001:db8:200::/60", 600)],
        )),
        a(SRV),
        ts(0),
    ));
    assert_eq!(
        o.relay.unwrap().peer_address,
        Some(a("fe80::1")),
        "RELAY-REPL echoes the peer-address: the PD next hop"
    );
    assert_eq!(c.stats().get(ClassifyCounter::ReplyUnmatched), 1);
}

#[test]
fn ldra_level_gives_peer_and_interface_id_outer_level_the_link() {
    let mut c = Classifier::new(ClassifyConfig::default());
    let reply = client_msg(MessageType::REPLY, 5, vec![ia_na(1, "2001:db8:1::5", 600)]);
    // LDRA (RFC 6221): link-address ::, peer = client link-local, mandatory Interface-Id.
    let ldra = relay(
        MessageType::RELAY_REPL,
        "::",
        "fe80::5",
        vec![DhcpOption::InterfaceId(b"port-7".to_vec())],
        Message::Client(reply),
    );
    let outer = wire(relay(
        MessageType::RELAY_REPL,
        "2001:db8:1::1",
        "fe80::aaaa",
        vec![],
        ldra,
    ));
    let o = bind(c.on_message(&outer, a(SRV), ts(0)));
    assert_eq!(o.link.address, a("2001:db8:1::1"));
    let r = o.relay.unwrap();
    assert_eq!(r.peer_address, Some(a("fe80::5")));
    assert_eq!(r.interface_id.as_deref(), Some(&b"port-7"[..]));
}

#[test]
fn reply_to_release_or_decline_withdraws_the_named_leases() {
    for t in [MessageType::RELEASE, MessageType::DECLINE] {
        let mut c = Classifier::new(ClassifyConfig::default());
        let rel = client_msg(
            t,
            0x42,
            vec![
                ia_na(1, "2001:db8:1::100", 0),
                ia_pd(2, "2001:db8:100::/56", 0),
            ],
        );
        c.on_message(&forw(rel), a("2001:db8:1::1"), ts(0));
        let mut ok = client_msg(MessageType::REPLY, 0x42, vec![]);
        ok.options.push(DhcpOption::StatusCode(Status::new(
            StatusCode::SUCCESS,
            "ok",
        )));
        match c.on_message(&repl(ok), a(SRV), ts(5)) {
            Some(Learned::Withdraw(w)) => {
                assert_eq!(
                    w.keys,
                    vec![
                        LeaseKey::Address(a("2001:db8:1::100")),
                        LeaseKey::Prefix("2001:db8:100::/56".parse().unwrap())
                    ]
                );
                assert_eq!(w.reason, WithdrawReason::Released);
                assert_eq!(
                    w.client_duid.as_deref(),
                    Some(&Duid::ll_ethernet(CLIENT).to_vec()[..])
                );
            }
            other => panic!("{t:?}: expected a withdrawal, got {other:?}"),
        }
        assert_eq!(c.stats().get(ClassifyCounter::ReplyRelease), 1);
    }
}

#[test]
fn zero_lifetimes_are_kept_for_the_cache_to_remove() {
    let mut c = Classifier::new(ClassifyConfig::default());
    let o = bind(c.on_message(
        &repl(client_msg(
            MessageType::REPLY,
            1,
            vec![ia_na(1, "2001:db8:1::9", 0)],
        )),
        a(SRV),
        ts(0),
    ));
    assert_eq!(o.leases[0].valid, 0);
}

#[test]
fn non_replies_errors_and_unrelayed_messages_teach_nothing() {
    let mut c = Classifier::new(ClassifyConfig::default());
    let adv = client_msg(
        MessageType::ADVERTISE,
        1,
        vec![ia_na(1, "2001:db8:1::1", 60)],
    );
    assert_eq!(c.on_message(&repl(adv.clone()), a(SRV), ts(0)), None);
    assert_eq!(c.stats().get(ClassifyCounter::Ignored), 1);
    assert_eq!(c.on_message(&Message::Client(adv), a(SRV), ts(0)), None);
    assert_eq!(c.stats().get(ClassifyCounter::NotRelayed), 1);

    let mut fail = client_msg(MessageType::REPLY, 2, vec![ia_na(1, "2001:db8:1::2", 60)]);
    fail.options.push(DhcpOption::StatusCode(Status::new(
        StatusCode::NO_BINDING,
        "no",
    )));
    assert_eq!(c.on_message(&repl(fail), a(SRV), ts(0)), None);
    assert_eq!(c.stats().get(ClassifyCounter::ErrorStatus), 1);

    let mut anon = ClientMessage::new(MessageType::REPLY, 3);
    anon.options.push(ia_na(1, "2001:db8:1::3", 60));
    assert_eq!(c.on_message(&repl(anon), a(SRV), ts(0)), None);
    assert_eq!(c.stats().get(ClassifyCounter::MissingId), 1);

    // A REPLY with no IA at all (to INFORMATION-REQUEST or CONFIRM).
    let empty = client_msg(MessageType::REPLY, 4, vec![]);
    assert_eq!(c.on_message(&repl(empty), a(SRV), ts(0)), None);
}

#[test]
fn relay_forw_memory_is_bounded_and_forgets_after_its_ttl() {
    let cfg = ClassifyConfig {
        pending_capacity: 3,
        pending_ttl_ms: 1_000,
        ..ClassifyConfig::default()
    };
    let mut c = Classifier::new(cfg);
    for xid in 0..10 {
        c.on_message(
            &forw(client_msg(MessageType::REQUEST, xid, vec![])),
            a("2001:db8:1::1"),
            ts(0),
        );
        assert!(c.pending_len() <= 3);
    }
    assert_eq!(c.stats().get(ClassifyCounter::PendingEvicted), 7);
    // After the TTL a RELEASE's REPLY no longer matches: it is an ordinary (empty) REPLY.
    c.on_message(
        &forw(client_msg(
            MessageType::RELEASE,
            50,
            vec![ia_na(1, "2001:db8:1::100", 0)],
        )),
        a("2001:db8:1::1"),
        ts(100),
    );
    let late = c.on_message(
        &repl(client_msg(MessageType::REPLY, 50, vec![])),
        a(SRV),
        ts(5_000),
    );
    assert_eq!(late, None);
    assert_eq!(c.pending_len(), 0);
}

#[test]
fn snooped_reply_carries_the_server_reply_sequence_number_when_configured() {
    let srsn = DhcpOption::Unknown {
        code: crate::wire::OptionCode(65001),
        data: 7u32.to_be_bytes().to_vec(),
    };
    for (code, want) in [(Some(65001), Some(7)), (None, None), (Some(65002), None)] {
        let mut c = Classifier::new(ClassifyConfig {
            srsn_option: code,
            ..ClassifyConfig::default()
        });
        let reply = client_msg(
            MessageType::REPLY,
            9,
            vec![ia_na(1, "2001:db8:1::100", 3600), srsn.clone()],
        );
        let o = bind(c.on_message(&repl(reply), a(SRV), ts(0)));
        assert_eq!(o.srsn, want, "option code {code:?}");
    }
}
