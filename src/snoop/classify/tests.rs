//! Table tests for the classifier: built messages, emitted to bytes and parsed back, so the
//! classifier sees exactly what it sees on the wire.

use super::*;
use crate::admission::{Admission, OwnAddresses};
use crate::wire::{
    ClientMessage, DhcpOption, Duid, Ia, IaAddr, IaPrefix, Message, Options, RelayMessage, Status,
};

/// The tables speak owned messages; the classifier reads bytes as the shell hands them over:
/// each message is emitted and checked, exactly as a captured payload is.
trait Feed {
    fn on_message(&mut self, m: &Message, env: &Envelope, now: Timestamp) -> Option<Learned>;
}

impl Feed for Classifier {
    fn on_message(&mut self, m: &Message, env: &Envelope, now: Timestamp) -> Option<Learned> {
        let bytes = m.to_vec().expect("a test message encodes");
        let msg = CheckedMessage::new(&bytes).expect("a test message checks");
        self.on_snooped(now, msg, env)
    }
}

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
/// The relay's (this box's) address towards the server.
const RELAY_UP: &str = "2001:db8:ffff::1";

fn classifier(cfg: ClassifyConfig) -> Classifier {
    let own = Arc::new(OwnAddresses::new([a(RELAY_UP), a("2001:db8:1::1")]));
    Classifier::new(
        cfg,
        SnoopTrust {
            servers: [a(SRV)].into_iter().collect(),
            own: own.clone(),
            admission: no_links(own),
        },
    )
}

/// An admission that knows no link: every wrapped withdrawal is refused, no unicast lease has
/// a link.
fn no_links(own: Arc<OwnAddresses>) -> Arc<Admission> {
    Arc::new(Admission::new(Vec::new(), [a(SRV)], own))
}

fn trusted() -> Classifier {
    classifier(ClassifyConfig::default())
}

/// The relay's RELAY-FORW leaving the box towards the server.
fn up() -> Envelope {
    Envelope {
        outgoing: true,
        src: a(RELAY_UP),
        dst: a(SRV),
        src_port: 547,
        dst_port: 547,
    }
}

/// The server's RELAY-REPL arriving at the box.
fn down() -> Envelope {
    Envelope {
        outgoing: false,
        src: a(SRV),
        dst: a(RELAY_UP),
        src_port: 547,
        dst_port: 547,
    }
}

fn bind(l: Option<Learned>) -> Observation {
    match l {
        Some(Learned::Bind(o)) => o,
        other => panic!("expected a binding, got {other:?}"),
    }
}

fn reply_na(xid: u32, addr: &str) -> Message {
    repl(client_msg(
        MessageType::REPLY,
        xid,
        vec![ia_na(1, addr, 600)],
    ))
}

#[test]
fn request_reply_learns_addresses_prefixes_relay_data_and_server() {
    let mut c = trusted();
    let req = client_msg(MessageType::REQUEST, 0x1234, vec![]);
    assert_eq!(c.on_message(&forw(req), &up(), ts(0)), None);
    assert_eq!(c.pending_len(), 1);
    let reply = client_msg(
        MessageType::REPLY,
        0x1234,
        vec![
            ia_na(1, "2001:db8:1::100", 3600),
            ia_pd(2, "2001:db8:100::/56", 7200),
        ],
    );
    let o = bind(c.on_message(&repl(reply), &down(), ts(10)));
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
fn every_exchange_type_binds_when_its_relay_forw_was_seen() {
    for t in [
        MessageType::SOLICIT,
        MessageType::REQUEST,
        MessageType::RENEW,
        MessageType::REBIND,
        MessageType::CONFIRM,
    ] {
        let mut c = trusted();
        // A SOLICIT gets a REPLY only with Rapid Commit (RFC 8415 §18.3.1).
        let opts = if t == MessageType::SOLICIT {
            vec![rapid_commit()]
        } else {
            vec![]
        };
        c.on_message(&forw(client_msg(t, 7, opts)), &up(), ts(0));
        let o = bind(c.on_message(&reply_na(7, "2001:db8:1::7"), &down(), ts(1)));
        assert_eq!(o.leases.len(), 1, "{t:?}");
        assert_eq!(
            o.relay.unwrap().peer_address,
            Some(a("fe80::1")),
            "RELAY-REPL echoes the peer-address: the PD next hop"
        );
    }
}

#[test]
fn a_reply_without_its_relay_forw_binds_nothing() {
    let mut c = trusted();
    // Never forwarded (forged, or the agent started mid-exchange): counted, dropped.
    assert_eq!(
        c.on_message(&reply_na(99, "2001:db8:1::9"), &down(), ts(0)),
        None
    );
    assert_eq!(c.stats().get(ClassifyCounter::ReplyUnmatched), 1);
    // Same xid, other client DUID: no match.
    c.on_message(
        &forw(client_msg(MessageType::REQUEST, 5, vec![])),
        &up(),
        ts(0),
    );
    let mut other = ClientMessage::new(MessageType::REPLY, 5);
    other.options.push(DhcpOption::ClientId(Duid::ll_ethernet([
        2, 0, 0, 0, 0, 0x99,
    ])));
    other
        .options
        .push(DhcpOption::ServerId(Duid::ll_ethernet(SERVER)));
    other.options.push(ia_na(1, "2001:db8:1::5", 600));
    assert_eq!(c.on_message(&repl(other), &down(), ts(1)), None);
    // Same xid and DUID, other link: no match either.
    let elsewhere = wire(relay(
        MessageType::RELAY_REPL,
        "2001:db8:2::1",
        "fe80::1",
        vec![],
        Message::Client(client_msg(
            MessageType::REPLY,
            5,
            vec![ia_na(1, "2001:db8:2::5", 600)],
        )),
    ));
    assert_eq!(c.on_message(&elsewhere, &down(), ts(1)), None);
    assert_eq!(c.stats().get(ClassifyCounter::ReplyUnmatched), 3);
    // The real reply still matches, once.
    bind(c.on_message(&reply_na(5, "2001:db8:1::5"), &down(), ts(2)));
    assert_eq!(
        c.on_message(&reply_na(5, "2001:db8:1::5"), &down(), ts(3)),
        None
    );
    assert_eq!(c.stats().get(ClassifyCounter::ReplyUnmatched), 4);
}

/// Each envelope rule on its own: a RELAY-REPL (or FORW) that differs from the real one in one
/// field is refused with that field's counter, and teaches nothing.
#[test]
fn messages_are_believed_only_from_where_they_can_come_from() {
    type Tweak = fn(&mut Envelope);
    let repl_cases: [(&str, Tweak, ClassifyCounter); 7] = [
        (
            "leaving the box (a subscriber's forgery crossing the uplink)",
            |e| e.outgoing = true,
            ClassifyCounter::WrongDirection,
        ),
        (
            "from a host that is not a server",
            |e| e.src = "2001:db8:ffff::66".parse().unwrap(),
            ClassifyCounter::UntrustedSource,
        ),
        (
            "to a subscriber, not to us",
            |e| e.dst = "2001:db8:1::100".parse().unwrap(),
            ClassifyCounter::WrongDestination,
        ),
        (
            "to the client port 546",
            |e| e.dst_port = 546,
            ClassifyCounter::WrongPort,
        ),
        (
            "from another port",
            |e| e.src_port = 5547,
            ClassifyCounter::WrongPort,
        ),
        (
            "spoofed server source to a subscriber's 546",
            |e| {
                e.dst = "2001:db8:1::100".parse().unwrap();
                e.dst_port = 546;
            },
            ClassifyCounter::WrongPort,
        ),
        (
            "from a subscriber address",
            |e| e.src = "2001:db8:1::100".parse().unwrap(),
            ClassifyCounter::UntrustedSource,
        ),
    ];
    for (what, tweak, counter) in repl_cases {
        let mut c = trusted();
        c.on_message(
            &forw(client_msg(MessageType::REQUEST, 7, vec![])),
            &up(),
            ts(0),
        );
        let mut env = down();
        tweak(&mut env);
        assert_eq!(
            c.on_message(&reply_na(7, "2001:db8:1::7"), &env, ts(1)),
            None,
            "{what}"
        );
        assert_eq!(c.stats().get(counter), 1, "{what}: {counter:?}");
        assert_eq!(
            c.pending_len(),
            1,
            "{what}: the real exchange is still pending"
        );
        bind(c.on_message(&reply_na(7, "2001:db8:1::7"), &down(), ts(2)));
    }
    let forw_cases: [(&str, Tweak, ClassifyCounter); 4] = [
        (
            "arriving, not sent by us",
            |e| e.outgoing = false,
            ClassifyCounter::WrongDirection,
        ),
        (
            "from an address that is not ours",
            |e| e.src = "2001:db8:1::100".parse().unwrap(),
            ClassifyCounter::UntrustedSource,
        ),
        (
            "towards a host that is not a server",
            |e| e.dst = "2001:db8:ffff::66".parse().unwrap(),
            ClassifyCounter::WrongDestination,
        ),
        (
            "from the client port",
            |e| e.src_port = 546,
            ClassifyCounter::WrongPort,
        ),
    ];
    for (what, tweak, counter) in forw_cases {
        let mut c = trusted();
        let mut env = up();
        tweak(&mut env);
        c.on_message(
            &forw(client_msg(MessageType::REQUEST, 7, vec![])),
            &env,
            ts(0),
        );
        assert_eq!(c.stats().get(counter), 1, "{what}: {counter:?}");
        assert_eq!(c.pending_len(), 0, "{what}");
        assert_eq!(
            c.on_message(&reply_na(7, "2001:db8:1::7"), &down(), ts(1)),
            None,
            "{what}"
        );
    }
    // A relay may forward to All_DHCP_Servers.
    let mut c = trusted();
    let mut env = up();
    env.dst = "ff05::1:3".parse().unwrap();
    c.on_message(
        &forw(client_msg(MessageType::REQUEST, 7, vec![])),
        &env,
        ts(0),
    );
    bind(c.on_message(&reply_na(7, "2001:db8:1::7"), &down(), ts(1)));
}

#[test]
fn repeated_relay_forws_refresh_one_entry_and_expire() {
    let cfg = ClassifyConfig {
        pending_capacity: 4,
        release_capacity: 4,
        pending_ttl_ms: 1_000,
        ..ClassifyConfig::default()
    };
    let mut c = classifier(cfg);
    // A client retransmitting (same xid and DUID) 1000 times, and a relay forwarding to
    // several servers: one entry, no orphans, bounded queues.
    for i in 0..1000 {
        c.on_message(
            &forw(client_msg(MessageType::REQUEST, 7, vec![])),
            &up(),
            ts(i),
        );
        assert_eq!(c.pending_len(), 1);
        assert!(c.memory_len() <= 1 + 2 * 4 + 1, "memory {}", c.memory_len());
    }
    assert_eq!(c.stats().get(ClassifyCounter::PendingEvicted), 0);
    // Its time-to-live counts from the last retransmission, and then it is gone for good.
    bind(c.on_message(&reply_na(7, "2001:db8:1::7"), &down(), ts(1_900)));
    c.on_message(
        &forw(client_msg(MessageType::REQUEST, 8, vec![])),
        &up(),
        ts(2_000),
    );
    c.on_message(
        &forw(client_msg(MessageType::REQUEST, 8, vec![])),
        &up(),
        ts(2_500),
    );
    assert_eq!(
        c.on_message(&reply_na(9, "2001:db8:1::9"), &down(), ts(3_600)),
        None
    );
    assert_eq!(c.pending_len(), 0, "expired 1 s after the last FORW");
    assert!(
        c.memory_len() <= 1,
        "no orphaned order entries: {}",
        c.memory_len()
    );
}

#[test]
fn a_flood_of_forws_cannot_push_out_a_pending_release() {
    let cfg = ClassifyConfig {
        pending_capacity: 16,
        release_capacity: 16,
        pending_ttl_ms: 60_000,
        ..ClassifyConfig::default()
    };
    let mut c = classifier(cfg);
    let rel = client_msg(
        MessageType::RELEASE,
        0x42,
        vec![
            ia_na(1, "2001:db8:1::100", 0),
            ia_pd(2, "2001:db8:100::/56", 0),
        ],
    );
    c.on_message(&forw(rel), &up(), ts(0));
    for xid in 1000..11_000 {
        let mut m = ClientMessage::new(MessageType::REQUEST, xid);
        m.options.push(DhcpOption::ClientId(Duid::ll_ethernet([
            2,
            0,
            0,
            (xid >> 8) as u8,
            xid as u8,
            1,
        ])));
        c.on_message(&forw(m), &up(), ts(1));
        assert!(c.memory_len() <= 16 + 2 * 16 + 1 + 2);
    }
    assert_eq!(c.stats().get(ClassifyCounter::PendingEvicted), 10_000 - 16);
    let mut ok = client_msg(MessageType::REPLY, 0x42, vec![]);
    ok.options.push(DhcpOption::StatusCode(Status::new(
        StatusCode::SUCCESS,
        "ok",
    )));
    match c.on_message(&repl(ok), &down(), ts(2)) {
        Some(Learned::Withdraw(w, _)) => assert_eq!(w.keys.len(), 2),
        other => panic!("the RELEASE must still match: {other:?}"),
    }
}

#[test]
fn relay_forw_memory_is_bounded_and_forgets_after_its_ttl() {
    let cfg = ClassifyConfig {
        pending_capacity: 3,
        release_capacity: 3,
        pending_ttl_ms: 1_000,
        ..ClassifyConfig::default()
    };
    let mut c = classifier(cfg);
    for xid in 0..10 {
        c.on_message(
            &forw(client_msg(MessageType::REQUEST, xid, vec![])),
            &up(),
            ts(0),
        );
        assert!(c.pending_len() <= 3);
    }
    assert_eq!(c.stats().get(ClassifyCounter::PendingEvicted), 7);
    // After the TTL a RELEASE's REPLY no longer matches: dropped as unmatched.
    c.on_message(
        &forw(client_msg(
            MessageType::RELEASE,
            50,
            vec![ia_na(1, "2001:db8:1::100", 0)],
        )),
        &up(),
        ts(100),
    );
    let late = c.on_message(
        &repl(client_msg(MessageType::REPLY, 50, vec![])),
        &down(),
        ts(5_000),
    );
    assert_eq!(late, None);
    assert_eq!(c.pending_len(), 0);
}
/// A client message wrapped by an LDRA (or a subscriber posing as one: the inner level says
/// what it likes), then by this box's relay level (link 2001:db8:1::1, peer fe80::1, eth1).
fn wrapped(t: MessageType, inner_link: &str, inner_peer: &str, c: ClientMessage) -> Message {
    let ldra = relay(
        t,
        inner_link,
        inner_peer,
        vec![
            DhcpOption::InterfaceId(b"port-7".to_vec()),
            DhcpOption::RemoteId {
                enterprise: 9,
                remote_id: b"x".to_vec(),
            },
        ],
        Message::Client(c),
    );
    let extra = if t == MessageType::RELAY_FORW {
        vec![
            DhcpOption::InterfaceId(b"eth1".to_vec()),
            DhcpOption::RemoteId {
                enterprise: 4491,
                remote_id: b"cm-01".to_vec(),
            },
        ]
    } else {
        vec![DhcpOption::InterfaceId(b"eth1".to_vec())]
    };
    wire(relay(t, "2001:db8:1::1", "fe80::1", extra, ldra))
}

#[test]
fn only_this_boxs_level_names_the_link_levels_below_are_the_access_port() {
    // A genuine LDRA (RFC 6221: link-address ::, peer = the client's link-local) and a
    // subscriber posing as one, naming another link and next hop: the same reading.
    for (inner_link, inner_peer) in [("::", "fe80::5"), ("2001:db8:2::1", "2001:db8:2::66")] {
        let mut c = trusted();
        let req = client_msg(MessageType::REQUEST, 5, vec![]);
        c.on_message(
            &wrapped(MessageType::RELAY_FORW, inner_link, inner_peer, req),
            &up(),
            ts(0),
        );
        let reply = client_msg(MessageType::REPLY, 5, vec![ia_na(1, "2001:db8:1::5", 600)]);
        let o = bind(c.on_message(
            &wrapped(MessageType::RELAY_REPL, inner_link, inner_peer, reply),
            &down(),
            ts(1),
        ));
        assert_eq!(
            o.link.address,
            a("2001:db8:1::1"),
            "{inner_link}: this box's link"
        );
        let r = o.relay.unwrap();
        assert_eq!(
            r.peer_address,
            Some(a("fe80::1")),
            "this box's peer-address"
        );
        assert_eq!(
            r.interface_id.as_deref(),
            Some(&b"eth1"[..]),
            "this box's Interface-Id"
        );
        assert_eq!(
            r.remote_id.as_deref(),
            Some(&[0, 0, 0x11, 0x8b, b'c', b'm', b'-', b'0', b'1'][..])
        );
        let access = r
            .access
            .expect("the level below ours, for admission to judge");
        assert_eq!(access.levels, 1);
        assert_eq!(access.peer_address, Some(a(inner_peer)));
        assert_eq!(access.interface_id.as_deref(), Some(&b"port-7"[..]));
        assert_eq!(access.remote_id.as_deref(), Some(&[0, 0, 0, 9, b'x'][..]));
    }
}

#[test]
fn a_reply_is_matched_by_this_boxs_link_address_not_an_inner_one() {
    // The FORW went out wrapped with an inner level naming link 2; a REPL whose own (outer)
    // level names link 2 is another exchange: unmatched.
    let mut c = trusted();
    let req = client_msg(MessageType::REQUEST, 6, vec![]);
    c.on_message(
        &wrapped(MessageType::RELAY_FORW, "2001:db8:2::1", "fe80::5", req),
        &up(),
        ts(0),
    );
    let reply = client_msg(MessageType::REPLY, 6, vec![ia_na(1, "2001:db8:2::5", 600)]);
    let other_link = wire(relay(
        MessageType::RELAY_REPL,
        "2001:db8:2::1",
        "fe80::5",
        vec![],
        Message::Client(reply),
    ));
    assert_eq!(c.on_message(&other_link, &down(), ts(1)), None);
    assert_eq!(c.stats().get(ClassifyCounter::ReplyUnmatched), 1);
}

/// Two links sharing 2001:db8:1::1 told apart by this box's Interface-Id: `eth1` behind an
/// LDRA, `eth2` not.
fn ldra_trust_admission() -> Arc<Admission> {
    use crate::admission::LinkRule;
    let rule = |name: &str, id: &[u8], ldra| LinkRule {
        name: Arc::from(name),
        interface: Arc::from(name),
        link_address: a("2001:db8:1::1"),
        interface_id: Some(id.into()),
        subscriber_prefixes: vec!["2001:db8:1::/64".parse().unwrap()],
        delegated_length: (48, 64),
        ldra,
    };
    Arc::new(Admission::new(
        vec![rule("eth1", b"eth1", true), rule("eth2", b"eth2", false)],
        [a(SRV)],
        Arc::new(OwnAddresses::new([a(RELAY_UP)])),
    ))
}

fn release_reply(xid: u32, status: Option<StatusCode>, ias: Vec<DhcpOption>) -> ClientMessage {
    let mut m = client_msg(MessageType::REPLY, xid, ias);
    if let Some(code) = status {
        m.options
            .push(DhcpOption::StatusCode(Status::new(code, "status")));
    }
    m
}

#[test]
fn a_wrapped_release_withdraws_only_on_a_link_with_an_ldra_in_front() {
    let run = |admission: Arc<Admission>, ours_id: &[u8]| {
        let mut c = Classifier::new(
            ClassifyConfig::default(),
            SnoopTrust {
                servers: [a(SRV)].into_iter().collect(),
                own: Arc::new(OwnAddresses::new([a(RELAY_UP)])),
                admission: admission.clone(),
            },
        );
        let rel = client_msg(
            MessageType::RELEASE,
            0x77,
            vec![ia_na(1, "2001:db8:1::100", 0)],
        );
        let ldra = relay(
            MessageType::RELAY_FORW,
            "::",
            "fe80::5",
            vec![DhcpOption::InterfaceId(b"port-7".to_vec())],
            Message::Client(rel),
        );
        let f = wire(relay(
            MessageType::RELAY_FORW,
            "2001:db8:1::1",
            "fe80::5",
            vec![DhcpOption::InterfaceId(ours_id.to_vec())],
            ldra,
        ));
        c.on_message(&f, &up(), ts(0));
        let ok = release_reply(0x77, Some(StatusCode::SUCCESS), vec![]);
        let got = c.on_message(&repl(ok), &down(), ts(1));
        (got, c.stats().get(ClassifyCounter::NestedRelay))
    };
    let (got, nested) = run(ldra_trust_admission(), b"eth1");
    assert!(matches!(got, Some(Learned::Withdraw(..))), "{got:?}");
    assert_eq!(nested, 0);
    let ad = ldra_trust_admission();
    let (got, nested) = run(ad.clone(), b"eth2");
    assert_eq!(
        got, None,
        "a link without an LDRA: a subscriber posing as a relay"
    );
    assert_eq!(nested, 1);
    assert_eq!(
        ad.stats().get(
            crate::admission::Origin::Snoop,
            crate::admission::Rejection::NestedRelay
        ),
        1,
        "counted by admission"
    );
    let (got, nested) = run(no_links(Arc::new(OwnAddresses::default())), b"eth1");
    assert_eq!(got, None, "no configured link: never withdrawn");
    assert_eq!(nested, 1);
}

#[test]
fn a_release_reply_withdraws_only_what_the_server_released() {
    // (what, REPLY status, IAs in the REPLY, keys withdrawn)
    let na_key = LeaseKey::Address(a("2001:db8:1::100"));
    let pd_key = LeaseKey::Prefix("2001:db8:100::/56".parse().unwrap());
    let ia_status = |ia: DhcpOption, code: StatusCode| match ia {
        DhcpOption::IaNa(mut i) => {
            i.options = Options::new();
            i.options
                .push(DhcpOption::StatusCode(Status::new(code, "x")));
            DhcpOption::IaNa(i)
        }
        DhcpOption::IaPd(mut i) => {
            i.options = Options::new();
            i.options
                .push(DhcpOption::StatusCode(Status::new(code, "x")));
            DhcpOption::IaPd(i)
        }
        other => other,
    };
    type Row = (
        &'static str,
        Option<StatusCode>,
        Vec<DhcpOption>,
        Vec<LeaseKey>,
    );
    let rows: Vec<Row> = vec![
        (
            "plain success",
            Some(StatusCode::SUCCESS),
            vec![],
            vec![na_key, pd_key],
        ),
        (
            "no status at all is success",
            None,
            vec![],
            vec![na_key, pd_key],
        ),
        (
            "NoBinding for the IA_PD: only the address goes",
            Some(StatusCode::SUCCESS),
            vec![ia_status(ia_pd(2, "::/0", 0), StatusCode::NO_BINDING)],
            vec![na_key],
        ),
        (
            "NoBinding for the IA_NA: only the prefix goes",
            None,
            vec![ia_status(ia_na(1, "::", 0), StatusCode::NO_BINDING)],
            vec![pd_key],
        ),
        (
            "an IA_NA with the IA_PD's IAID does not cover the prefix",
            None,
            vec![ia_status(ia_na(2, "::", 0), StatusCode::NO_BINDING)],
            vec![na_key, pd_key],
        ),
        (
            "per-IA Success withdraws",
            None,
            vec![ia_status(ia_pd(2, "::/0", 0), StatusCode::SUCCESS)],
            vec![na_key, pd_key],
        ),
        (
            "both NoBinding: nothing",
            None,
            vec![
                ia_status(ia_na(1, "::", 0), StatusCode::NO_BINDING),
                ia_status(ia_pd(2, "::/0", 0), StatusCode::NO_BINDING),
            ],
            vec![],
        ),
        (
            "a top-level error withdraws nothing",
            Some(StatusCode::USE_MULTICAST),
            vec![],
            vec![],
        ),
    ];
    for (what, status, ias, want) in rows {
        let mut c = trusted();
        let rel = client_msg(
            MessageType::RELEASE,
            0x42,
            vec![
                ia_na(1, "2001:db8:1::100", 0),
                ia_pd(2, "2001:db8:100::/56", 0),
            ],
        );
        c.on_message(&forw(rel), &up(), ts(0));
        let got = c.on_message(&repl(release_reply(0x42, status, ias)), &down(), ts(5));
        // Every named key the server did not give up is a doubt (release_not_done), unless
        // the whole answer was an error (then nothing was released and nothing is asked).
        let refused: Vec<LeaseKey> = if status.is_some_and(|s| s != StatusCode::SUCCESS) {
            vec![]
        } else {
            [na_key, pd_key]
                .into_iter()
                .filter(|k| !want.contains(k))
                .collect()
        };
        let doubted = |ds: &[Doubt]| -> Vec<LeaseKey> {
            for d in ds {
                assert_eq!(d.reason, DoubtReason::ReleaseNotDone, "{what}");
                assert_eq!(d.link, a("2001:db8:1::1"), "{what}: this box's link");
                assert_eq!(
                    d.claimant.as_deref(),
                    Some(&Duid::ll_ethernet(CLIENT).to_vec()[..]),
                    "{what}"
                );
            }
            ds.iter().map(|d| d.key).collect()
        };
        match got {
            Some(Learned::Doubt(ds)) => {
                assert!(want.is_empty(), "{what}: expected a withdrawal of {want:?}");
                assert_eq!(doubted(&ds), refused, "{what}: doubts");
            }
            Some(Learned::Withdraw(w, ds)) => {
                assert_eq!(doubted(&ds), refused, "{what}: doubts");
                assert_eq!(w.keys, want, "{what}");
                let iaids: Vec<u32> = want
                    .iter()
                    .map(|k| if *k == na_key { 1 } else { 2 })
                    .collect();
                assert_eq!(w.iaids, iaids, "{what}: the IAID of each key, same order");
                assert_eq!(w.link, Some(a("2001:db8:1::1")), "{what}: this box's link");
            }
            None => assert!(
                want.is_empty() && refused.is_empty(),
                "{what}: expected {want:?}, doubts {refused:?}"
            ),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn reply_to_release_or_decline_withdraws_the_named_leases() {
    for t in [MessageType::RELEASE, MessageType::DECLINE] {
        let mut c = trusted();
        let rel = client_msg(
            t,
            0x42,
            vec![
                ia_na(1, "2001:db8:1::100", 0),
                ia_pd(2, "2001:db8:100::/56", 0),
            ],
        );
        c.on_message(&forw(rel), &up(), ts(0));
        let mut ok = client_msg(MessageType::REPLY, 0x42, vec![]);
        ok.options.push(DhcpOption::StatusCode(Status::new(
            StatusCode::SUCCESS,
            "ok",
        )));
        match c.on_message(&repl(ok), &down(), ts(5)) {
            Some(Learned::Withdraw(w, _)) => {
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
    let mut c = trusted();
    c.on_message(
        &forw(client_msg(MessageType::RENEW, 1, vec![])),
        &up(),
        ts(0),
    );
    let o = bind(c.on_message(
        &repl(client_msg(
            MessageType::REPLY,
            1,
            vec![ia_na(1, "2001:db8:1::9", 0)],
        )),
        &down(),
        ts(0),
    ));
    assert_eq!(o.leases[0].valid, 0);
}

#[test]
fn non_replies_errors_and_unrelayed_messages_teach_nothing() {
    let mut c = trusted();
    let adv = client_msg(
        MessageType::ADVERTISE,
        1,
        vec![ia_na(1, "2001:db8:1::1", 60)],
    );
    assert_eq!(c.on_message(&repl(adv.clone()), &down(), ts(0)), None);
    assert_eq!(c.stats().get(ClassifyCounter::Ignored), 1);
    assert_eq!(c.on_message(&Message::Client(adv), &down(), ts(0)), None);
    assert_eq!(c.stats().get(ClassifyCounter::NotRelayed), 1);

    c.on_message(
        &forw(client_msg(MessageType::REQUEST, 2, vec![])),
        &up(),
        ts(0),
    );
    let mut fail = client_msg(MessageType::REPLY, 2, vec![ia_na(1, "2001:db8:1::2", 60)]);
    fail.options.push(DhcpOption::StatusCode(Status::new(
        StatusCode::NO_BINDING,
        "no",
    )));
    assert_eq!(c.on_message(&repl(fail), &down(), ts(0)), None);
    assert_eq!(c.stats().get(ClassifyCounter::ErrorStatus), 1);

    let mut anon = ClientMessage::new(MessageType::REPLY, 3);
    anon.options.push(ia_na(1, "2001:db8:1::3", 60));
    assert_eq!(c.on_message(&repl(anon), &down(), ts(0)), None);
    assert_eq!(c.stats().get(ClassifyCounter::MissingId), 1);

    // A REPLY with no IA at all (to INFORMATION-REQUEST or CONFIRM).
    c.on_message(
        &forw(client_msg(MessageType::REQUEST, 4, vec![])),
        &up(),
        ts(0),
    );
    let empty = client_msg(MessageType::REPLY, 4, vec![]);
    assert_eq!(c.on_message(&repl(empty), &down(), ts(0)), None);
}

#[test]
fn snooped_reply_carries_the_server_reply_sequence_number_when_configured() {
    let srsn = DhcpOption::Unknown {
        code: crate::wire::OptionCode(65001),
        data: 7u32.to_be_bytes().to_vec(),
    };
    for (code, want) in [(Some(65001), Some(7)), (None, None), (Some(65002), None)] {
        let mut c = classifier(ClassifyConfig {
            srsn_option: code,
            ..ClassifyConfig::default()
        });
        c.on_message(
            &forw(client_msg(MessageType::REQUEST, 9, vec![])),
            &up(),
            ts(0),
        );
        let reply = client_msg(
            MessageType::REPLY,
            9,
            vec![ia_na(1, "2001:db8:1::100", 3600), srsn.clone()],
        );
        let o = bind(c.on_message(&repl(reply), &down(), ts(0)));
        assert_eq!(o.srsn, want, "option code {code:?}");
    }
}

#[test]
fn a_unicast_reply_from_a_server_raises_doubts_and_binds_nothing() {
    let ad = ldra_trust_admission();
    let mut c = Classifier::new(
        ClassifyConfig::default(),
        SnoopTrust {
            servers: [a(SRV)].into_iter().collect(),
            own: Arc::new(OwnAddresses::new([a(RELAY_UP), a("2001:db8:1::1")])),
            admission: ad,
        },
    );
    let reply = || {
        Message::Client(client_msg(
            MessageType::REPLY,
            9,
            vec![
                ia_na(1, "2001:db8:1::100", 600),
                ia_pd(2, "2001:db8:100::/56", 600),
            ],
        ))
    };
    let env = |outgoing: bool, src: &str, dst: &str, sp: u16, dp: u16| Envelope {
        outgoing,
        src: a(src),
        dst: a(dst),
        src_port: sp,
        dst_port: dp,
    };
    let sub = "2001:db8:1::100";
    match c.on_message(&reply(), &env(false, SRV, sub, 547, 546), ts(3)) {
        Some(Learned::Doubt(ds)) => {
            assert_eq!(ds.len(), 2, "one doubt per lease");
            assert_eq!(ds[0].key, LeaseKey::Address(a(sub)));
            assert_eq!(
                ds[1].key,
                LeaseKey::Prefix("2001:db8:100::/56".parse().unwrap())
            );
            for d in &ds {
                assert_eq!(d.reason, DoubtReason::Unicast);
                assert_eq!(d.holder, None, "the cache task fills the holder");
                assert_eq!(
                    d.claimant.as_deref(),
                    Some(&Duid::ll_ethernet(CLIENT).to_vec()[..])
                );
                assert_eq!(d.at, ts(3));
            }
            // The address lies in both links' /64 (they share it): the first is asked about.
            assert_eq!(ds[0].link, a("2001:db8:1::1"));
            assert_eq!(ds[0].interface.as_deref(), Some("eth1"));
            // No configured link holds the prefix: asked about on ::.
            assert_eq!(ds[1].link, Ipv6Addr::UNSPECIFIED);
            assert_eq!(ds[1].interface, None);
        }
        other => panic!("expected doubts, got {other:?}"),
    }
    assert_eq!(c.stats().get(ClassifyCounter::UnicastReply), 1);
    // Not a server's unicast REPLY to a subscriber: nothing at all.
    for (what, e) in [
        (
            "from a stranger",
            env(false, "2001:db8:1::66", sub, 547, 546),
        ),
        ("leaving the box", env(true, SRV, sub, 547, 546)),
        ("to this box", env(false, SRV, "2001:db8:1::1", 547, 546)),
        (
            "to a link-local address",
            env(false, SRV, "fe80::1", 547, 546),
        ),
        ("to port 547", env(false, SRV, sub, 547, 547)),
        ("from port 546", env(false, SRV, sub, 546, 546)),
    ] {
        assert_eq!(c.on_message(&reply(), &e, ts(4)), None, "{what}");
    }
    assert_eq!(c.stats().get(ClassifyCounter::UnicastReply), 1);
    assert_eq!(c.stats().get(ClassifyCounter::NotRelayed), 6);
}

fn rapid_commit() -> DhcpOption {
    DhcpOption::Unknown {
        code: crate::wire::OptionCode::RAPID_COMMIT,
        data: Vec::new(),
    }
}

/// A reboot storm: every client solicits before it requests. SOLICITs without Rapid Commit
/// (only an ADVERTISE answers them) take no room, so they cannot push out the pending REQUESTs
/// whose REPLYs bind.
#[test]
fn a_storm_of_solicits_does_not_push_out_pending_requests() {
    let mut c = classifier(ClassifyConfig {
        pending_capacity: 4,
        ..ClassifyConfig::default()
    });
    let req = client_msg(MessageType::REQUEST, 0x77, vec![]);
    assert_eq!(c.on_message(&forw(req), &up(), ts(0)), None);
    for xid in 0..100 {
        let sol = client_msg(MessageType::SOLICIT, 0x1000 + xid, vec![]);
        assert_eq!(c.on_message(&forw(sol), &up(), ts(1)), None);
    }
    assert_eq!(c.pending_len(), 1);
    assert_eq!(c.stats().get(ClassifyCounter::PendingEvicted), 0);
    assert_eq!(c.stats().get(ClassifyCounter::RelayForw), 101);
    bind(c.on_message(&reply_na(0x77, "2001:db8:1::100"), &down(), ts(2)));
}

/// A rapid-commit SOLICIT may be answered by a REPLY, so it is remembered — until a trusted
/// server's ADVERTISE ends its exchange; an ADVERTISE that is not the server's ends nothing.
#[test]
fn a_rapid_commit_solicit_is_remembered_until_a_trusted_advertise() {
    let mut c = trusted();
    let sol = || client_msg(MessageType::SOLICIT, 0x55, vec![rapid_commit()]);
    assert_eq!(c.on_message(&forw(sol()), &up(), ts(0)), None);
    assert_eq!(c.pending_len(), 1);
    let adv = repl(client_msg(MessageType::ADVERTISE, 0x55, vec![]));
    // Leaving the box (a subscriber's forgery towards the server): not the server's word.
    assert_eq!(c.on_message(&adv, &up(), ts(1)), None);
    assert_eq!(c.pending_len(), 1);
    assert_eq!(c.on_message(&adv, &down(), ts(2)), None);
    assert_eq!(c.pending_len(), 0);
    // Answered with a REPLY instead, it binds.
    assert_eq!(c.on_message(&forw(sol()), &up(), ts(3)), None);
    bind(c.on_message(&reply_na(0x55, "2001:db8:1::101"), &down(), ts(4)));
}

/// REPLYs from one server share one `ServerId` (no allocation per REPLY, one copy in the
/// cache); a REPLY from another server — another DUID, or the same DUID from another address —
/// gets its own, never the last one's.
#[test]
fn replies_from_one_server_share_its_identity_and_another_server_gets_its_own() {
    const SRV2: &str = "2001:db8:ffff::3";
    let own = Arc::new(OwnAddresses::new([a(RELAY_UP), a("2001:db8:1::1")]));
    let mut c = Classifier::new(
        ClassifyConfig::default(),
        SnoopTrust {
            servers: [a(SRV), a(SRV2)].into_iter().collect(),
            own: own.clone(),
            admission: Arc::new(Admission::new(Vec::new(), [a(SRV), a(SRV2)], own)),
        },
    );
    let from = |src: &str| Envelope {
        src: a(src),
        ..down()
    };
    let exchange = |c: &mut Classifier, xid: u32, server: [u8; 6], src: &str| {
        let req = client_msg(MessageType::REQUEST, xid, vec![]);
        assert_eq!(c.on_message(&forw(req), &up(), ts(0)), None);
        let mut reply = ClientMessage::new(MessageType::REPLY, xid);
        reply
            .options
            .push(DhcpOption::ClientId(Duid::ll_ethernet(CLIENT)));
        reply
            .options
            .push(DhcpOption::ServerId(Duid::ll_ethernet(server)));
        reply.options.push(ia_na(1, "2001:db8:1::100", 600));
        bind(c.on_message(&repl(reply), &from(src), ts(10))).server
    };
    const OTHER: [u8; 6] = [0x02, 0, 0, 0, 0, 0xbb];
    let first = exchange(&mut c, 1, SERVER, SRV);
    let second = exchange(&mut c, 2, SERVER, SRV);
    assert!(Arc::ptr_eq(&first, &second), "one server, one identity");
    let other_duid = exchange(&mut c, 3, OTHER, SRV);
    assert_eq!(&*other_duid.duid, &Duid::ll_ethernet(OTHER).to_vec()[..]);
    assert_eq!(other_duid.address, a(SRV));
    let other_address = exchange(&mut c, 4, OTHER, SRV2);
    assert_eq!(&*other_address.duid, &Duid::ll_ethernet(OTHER).to_vec()[..]);
    assert_eq!(other_address.address, a(SRV2));
    let back = exchange(&mut c, 5, SERVER, SRV);
    assert_eq!(*back, *first, "the first server again, as it is");
}

mod pending_table {
    use super::*;
    use proptest::prelude::*;

    /// Every third key is a rapid-commit SOLICIT's (what an ADVERTISE may end).
    fn pending(k: u8, at: i64) -> Pending {
        Pending {
            client_type: if k % 3 == 0 {
                MessageType::SOLICIT
            } else {
                MessageType::REQUEST
            },
            relay: crate::cache::binding::RelayData::default(),
            named: Vec::new(),
            at: ts(at),
        }
    }

    fn key(k: u8) -> PendingKey {
        PendingKey {
            xid: u32::from(k),
            duid: Duid::ll_ethernet([2, 0, 0, 0, 0, k]),
            link: Ipv6Addr::LOCALHOST,
        }
    }

    proptest! {
        /// Against a model (a list in arrival order; a refreshed entry moves to the end): the
        /// same entries, evictions and expiries, and the order holds exactly the live entries
        /// after every operation (no stale places waiting for a sweep).
        #[test]
        fn pending_table_is_its_live_entries_in_arrival_order(
            ops in prop::collection::vec((0u8..4, 0u8..40), 1..800),
            cap in 1usize..24,
        ) {
            let mut t = PendingTable::new(cap);
            let mut model: Vec<(u8, i64)> = Vec::new();
            let mut now = 0i64;
            for (op, k) in ops {
                now += 1;
                match op {
                    0 | 1 => {
                        let evicted = t.insert(key(k), pending(k, now));
                        model.retain(|(m, _)| *m != k);
                        model.push((k, now));
                        let over = model.len().saturating_sub(cap);
                        model.drain(..over);
                        prop_assert_eq!(evicted, over as u64);
                    }
                    2 => {
                        // Found by the borrowed form a packet gives, handing back the key
                        // as it was remembered.
                        let got = t.remove(&key(k).key_ref()).map(|(p, kept)| {
                            assert_eq!(kept, Some(key(k)));
                            p.at
                        });
                        let i = model.iter().position(|(m, _)| *m == k);
                        let want = i.map(|i| ts(model.remove(i).1));
                        prop_assert_eq!(got, want);
                    }
                    _ => {
                        let ttl = i64::from(k);
                        t.expire(ts(now), ttl);
                        model.retain(|(_, at)| now - at < ttl);
                    }
                }
                prop_assert_eq!(t.len(), model.len());
                prop_assert_eq!(t.order.len(), t.entries.len());
                // The SOLICIT count follows every way an entry comes and goes.
                let solicits = model.iter().filter(|(m, _)| m % 3 == 0).count();
                prop_assert_eq!(t.solicits, solicits);
                let order: Vec<u8> = t.order.values().map(|(_, key)| key.xid as u8).collect();
                let want: Vec<u8> = model.iter().map(|(m, _)| *m).collect();
                prop_assert_eq!(order, want);
            }
        }
    }
}
