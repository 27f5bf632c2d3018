//! Golden vectors from real traffic (tests/data/, made by tests/data/capture.sh; its README says
//! how): ISC dhclient -6 ↔ dhcrelay -6 ↔ dhcpd -6 exchanges and LEASEQUERY / LEASEQUERY-REPLY
//! with dhcpd. For every captured message this asserts our decoder's reading — message types,
//! transaction ids, DUIDs, addresses, prefixes, lifetimes, relay link/peer addresses,
//! Interface-Id — and that parse → emit gives back the captured bytes exactly, that the borrowed
//! view and the renderer agree. Where ISC wrote a value down itself (dhclient's and dhcpd's lease
//! files, saved beside the captures) the expected value is read from there, not typed in here.
//!
//! Values that only the packets carry (transaction ids, the order of exchanges) were listed with
//! `tshark -r FILE` when the captures were made; they change with every re-capture.

use std::net::Ipv6Addr;
use std::path::Path;

use lqagent::pcap::{Capture, link};
use lqagent::prefix::Ipv6Prefix;
use lqagent::snoop::datagram::Udp6;
use lqagent::wire::pretty::Decoded;
use lqagent::wire::{
    ClientMessage, Duid, DuidKind, Message, MessageType, MessageView, OptionCode, QueryType,
    RelayChain, StatusCode,
};

/// One captured datagram, owned.
struct Captured {
    number: usize,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    src_port: u16,
    dst_port: u16,
    payload: Vec<u8>,
    msg: Message,
}

fn read(name: &str, want_link: u16) -> Vec<Captured> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let bytes = std::fs::read(&path).unwrap();
    let cap = Capture::parse(&bytes).unwrap();
    cap.packets()
        .map(|p| {
            let p = p.unwrap();
            assert_eq!(p.link_type, want_link, "{name} #{}", p.number);
            let u: Udp6<'_> = p.udp6().unwrap();
            let msg =
                Message::parse(u.payload).unwrap_or_else(|e| panic!("{name} #{}: {e}", p.number));
            Captured {
                number: p.number,
                src: u.src,
                dst: u.dst,
                src_port: u.src_port,
                dst_port: u.dst_port,
                payload: u.payload.to_vec(),
                msg,
            }
        })
        .collect()
}

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// What ISC itself wrote down (tests/data/isc-*.leases).
struct IscRecord {
    client_duid: Vec<u8>,
    server_duid: Vec<u8>,
    address: Ipv6Addr,
    prefix: Ipv6Prefix,
    iaid: u32,
    t1: u32,
    t2: u32,
    /// dhcpd's lifetimes for the binding.
    preferred: u32,
    valid: u32,
    /// dhclient's lifetimes after the RENEW (what the REPLY to RENEW said).
    renewed_preferred: u32,
    renewed_valid: u32,
}

fn colon_octets(s: &str) -> Vec<u8> {
    s.trim_end_matches(';')
        .split(':')
        .map(|o| u8::from_str_radix(o, 16).unwrap())
        .collect()
}

fn isc_record() -> IscRecord {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let client = std::fs::read_to_string(dir.join("isc-dhclient6.leases")).unwrap();
    let server = std::fs::read_to_string(dir.join("isc-dhcpd6.leases")).unwrap();
    let value = |text: &str, key: &str| -> String {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key:?}"))
            .trim()
            .trim_end_matches(['{', ';'])
            .trim()
            .to_string()
    };
    let n = |text: &str, key: &str| value(text, key).parse::<u32>().unwrap();
    let iaid = colon_octets(&value(&client, "ia-na "));
    IscRecord {
        client_duid: colon_octets(&value(&client, "option dhcp6.client-id ")),
        server_duid: colon_octets(&value(&client, "option dhcp6.server-id ")),
        address: value(&client, "iaaddr ").parse().unwrap(),
        prefix: value(&client, "iaprefix ").parse().unwrap(),
        iaid: u32::from_be_bytes(iaid.try_into().unwrap()),
        t1: n(&client, "renew "),
        t2: n(&client, "rebind "),
        preferred: n(&server, "preferred-life "),
        valid: n(&server, "max-life "),
        renewed_preferred: n(&client, "preferred-life "),
        renewed_valid: n(&client, "max-life "),
    }
}

/// Byte-exact re-encoding, and the borrowed view and renderer accept it too.
fn assert_round_trip(name: &str, c: &Captured) {
    assert_eq!(
        c.msg.to_vec().unwrap(),
        c.payload,
        "{name} #{}: emit(parse(b)) != b",
        c.number
    );
    let walked = MessageView::new_checked(&c.payload)
        .and_then(|v| v.walk())
        .unwrap_or_else(|e| panic!("{name} #{}: view walk: {e}", c.number));
    assert!(walked > 0);
    assert_eq!(Decoded::new(&c.payload).malformed, 0);
}

fn client_part(m: &Message) -> &ClientMessage {
    m.innermost()
        .expect("a client/server message at the bottom")
}

/// The client's view of one exchange, as the client sent or received it.
fn check_client_message(rec: &IscRecord, m: &ClientMessage, after_renew: bool) {
    let t = m.msg_type;
    assert_eq!(
        m.options.client_id().map(Duid::to_vec),
        Some(rec.client_duid.clone()),
        "{t} CLIENTID"
    );
    // The client's DUID is DUID-LLT on its Ethernet MAC (capture.sh fixes c0's MAC).
    assert!(matches!(
        m.options.client_id().map(Duid::kind),
        Some(DuidKind::Llt { hw_type: 1, link_layer, .. }) if link_layer == [2, 0, 0, 0, 3, 1]
    ));
    let from_client = [
        MessageType::SOLICIT,
        MessageType::REQUEST,
        MessageType::RENEW,
        MessageType::RELEASE,
    ]
    .contains(&t);
    if t != MessageType::SOLICIT {
        assert_eq!(
            m.options.server_id().map(Duid::to_vec),
            Some(rec.server_duid.clone()),
            "{t} SERVERID"
        );
    }
    if from_client {
        assert!(m.options.elapsed_time().is_some(), "{t} ELAPSED_TIME");
        assert!(m.options.oro().is_some(), "{t} ORO");
    }
    let ia_na: Vec<_> = m.options.ia_nas().collect();
    let ia_pd: Vec<_> = m.options.ia_pds().collect();
    if t == MessageType::REPLY && ia_na.is_empty() {
        // The REPLY to RELEASE: status only.
        let s = m.options.status().expect("STATUS_CODE");
        assert_eq!(s.code, StatusCode::SUCCESS);
        assert_eq!(s.text(), "Release received.");
        return;
    }
    assert_eq!(
        (ia_na.len(), ia_pd.len()),
        (1, 1),
        "{t}: one IA_NA, one IA_PD"
    );
    assert_eq!(ia_na[0].iaid, rec.iaid);
    assert_eq!(ia_pd[0].iaid, rec.iaid);
    let addrs: Vec<_> = ia_na[0].options.ia_addrs().collect();
    let prefixes: Vec<_> = ia_pd[0].options.ia_prefixes().collect();
    if t == MessageType::SOLICIT {
        assert!(addrs.is_empty() && prefixes.is_empty());
        return;
    }
    assert_eq!(addrs.len(), 1);
    assert_eq!(prefixes.len(), 1);
    assert_eq!(addrs[0].addr, rec.address, "{t} IAADDR");
    assert_eq!(prefixes[0].prefix().unwrap(), rec.prefix, "{t} IAPREFIX");
    if from_client {
        return;
    }
    // ADVERTISE / REPLY: dhcpd's timers and lifetimes.
    for ia in [ia_na[0], ia_pd[0]] {
        assert_eq!((ia.t1, ia.t2), (rec.t1, rec.t2), "{t} T1/T2");
    }
    let (p, v) = if after_renew {
        (rec.renewed_preferred, rec.renewed_valid)
    } else {
        (rec.preferred, rec.valid)
    };
    assert_eq!(
        (addrs[0].preferred, addrs[0].valid),
        (p, v),
        "{t} IAADDR lifetimes"
    );
    assert_eq!(
        (prefixes[0].preferred, prefixes[0].valid),
        (p, v),
        "{t} IAPREFIX lifetimes"
    );
}

const EXCHANGE: [(MessageType, u32); 8] = [
    (MessageType::SOLICIT, 0x72471e),
    (MessageType::ADVERTISE, 0x72471e),
    (MessageType::REQUEST, 0xb0c207),
    (MessageType::REPLY, 0xb0c207),
    (MessageType::RENEW, 0xfb86a8),
    (MessageType::REPLY, 0xfb86a8),
    (MessageType::RELEASE, 0xadfc9c),
    (MessageType::REPLY, 0xadfc9c),
];

const CLIENT_LL: &str = "fe80::ff:fe00:301";

#[test]
fn client_relay_exchange() {
    let rec = isc_record();
    let caps = read("client-relay.pcap", link::ETHERNET);
    assert_eq!(caps.len(), EXCHANGE.len());
    for (i, (c, (t, xid))) in caps.iter().zip(EXCHANGE).enumerate() {
        assert_round_trip("client-relay", c);
        let Message::Client(m) = &c.msg else {
            panic!("#{}: the client side has no relay headers", c.number)
        };
        assert_eq!((m.msg_type, m.transaction_id), (t, xid), "#{}", c.number);
        if i % 2 == 0 {
            // Client → All_DHCP_Relay_Agents_and_Servers.
            assert_eq!((c.src, c.src_port), (a(CLIENT_LL), 546));
            assert_eq!((c.dst, c.dst_port), (a("ff02::1:2"), 547));
        } else {
            // dhcrelay (sub0's link-local) → client.
            assert_eq!((c.src, c.src_port), (a("fe80::ff:fe00:202"), 547));
            assert_eq!((c.dst, c.dst_port), (a(CLIENT_LL), 546));
        }
        check_client_message(&rec, m, i >= 5);
    }
}

#[test]
fn relay_server_exchange() {
    let rec = isc_record();
    let relayed = read("relay-server.pcap", link::ETHERNET);
    let direct = read("client-relay.pcap", link::ETHERNET);
    assert_eq!(relayed.len(), EXCHANGE.len());
    for (i, (c, (t, xid))) in relayed.iter().zip(EXCHANGE).enumerate() {
        assert_round_trip("relay-server", c);
        let chain: Vec<_> = RelayChain::of_message(&c.msg).levels().collect();
        assert_eq!(chain.len(), 1, "#{}: one relay level", c.number);
        let r = chain[0];
        let want = if i % 2 == 0 {
            MessageType::RELAY_FORW
        } else {
            MessageType::RELAY_REPL
        };
        assert_eq!(r.msg_type, want);
        assert_eq!(r.hop_count, 0);
        assert_eq!(
            r.link_address,
            a("2001:db8:1::1"),
            "dhcrelay's sub0 address"
        );
        assert_eq!(r.peer_address, a(CLIENT_LL));
        // dhcrelay -I puts the interface's index there in host byte order (4 bytes); seen as 1.
        assert_eq!(r.options.interface_id(), Some(&[1, 0, 0, 0][..]));
        let inner = client_part(&c.msg);
        assert_eq!((inner.msg_type, inner.transaction_id), (t, xid));
        check_client_message(&rec, inner, i >= 5);
        // The relay passes the client's message through untouched, both ways.
        let m = r.options.relay_msg().expect("RELAY_MSG");
        assert_eq!(
            m.to_vec().unwrap(),
            direct[i].payload,
            "#{} vs client side",
            c.number
        );
        if i % 2 == 0 {
            assert_eq!((c.src, c.dst), (a("2001:db8::2"), a("2001:db8::1")));
        } else {
            assert_eq!((c.src, c.dst), (a("2001:db8::1"), a("2001:db8::2")));
        }
        assert_eq!((c.src_port, c.dst_port), (547, 547));
    }
}

/// One leasequery as capture.sh asked it, and what dhcpd answered.
struct Asked {
    xid: u32,
    query_type: QueryType,
    link: &'static str,
    /// QUERY_BY_ADDRESS: the address (None: the leased one).
    address: Option<&'static str>,
    relay_data: bool,
    answer: Answer,
}

enum Answer {
    Binding,
    Status(StatusCode, &'static str),
    NoBinding,
}

fn asked() -> [Asked; 7] {
    use Answer::*;
    let q = |xid, query_type, link, address, relay_data, answer| Asked {
        xid,
        query_type,
        link,
        address,
        relay_data,
        answer,
    };
    [
        q(0x8dbed1, QueryType::BY_ADDRESS, "::", None, true, Binding),
        q(
            0x16cf6c,
            QueryType::BY_ADDRESS,
            "2001:db8:1::1",
            None,
            false,
            Binding,
        ),
        q(
            0x656a0b,
            QueryType::BY_CLIENTID,
            "::",
            None,
            false,
            Status(
                StatusCode::UNKNOWN_QUERY_TYPE,
                "QUERY_BY_CLIENTID not supported.",
            ),
        ),
        q(
            0xed3871,
            QueryType::BY_ADDRESS,
            "::",
            Some("2001:db8:1ff::1"),
            false,
            Status(StatusCode::NOT_CONFIGURED, "Address not in a pool."),
        ),
        q(
            0x1a944d,
            QueryType::BY_ADDRESS,
            "::",
            Some("2001:db8:1::1ff"),
            false,
            NoBinding,
        ),
        q(
            0x9ebbbb,
            QueryType::BY_ADDRESS,
            "2001:db8:99::1",
            Some("2001:db8:1::100"),
            false,
            NoBinding,
        ),
        // After the RELEASE.
        q(
            0xbbfc5f,
            QueryType::BY_ADDRESS,
            "::",
            None,
            false,
            NoBinding,
        ),
    ]
}

#[test]
fn leasequery_exchanges() {
    let rec = isc_record();
    // Our requestor's DUID: DUID-LL of up0 (MAC fixed by capture.sh).
    let requestor = Duid::ll_ethernet([2, 0, 0, 0, 2, 1]);
    let caps = read("leasequery.pcap", link::LINUX_SLL2);
    assert_eq!(caps.len(), 14);
    for (pair, want) in caps.chunks(2).zip(asked()) {
        let [q, r] = pair else { unreachable!() };
        assert_round_trip("leasequery", q);
        assert_round_trip("leasequery", r);
        // dhcpd answers to port 546 (docs/interop.md).
        assert_eq!(
            (q.src, q.src_port, q.dst, q.dst_port),
            (a("2001:db8::2"), 546, a("2001:db8::1"), 547)
        );
        assert_eq!(
            (r.src, r.src_port, r.dst, r.dst_port),
            (a("2001:db8::1"), 547, a("2001:db8::2"), 546)
        );

        let Message::Client(q) = &q.msg else {
            panic!("query is not relayed")
        };
        assert_eq!(
            (q.msg_type, q.transaction_id),
            (MessageType::LEASEQUERY, want.xid)
        );
        assert_eq!(q.options.client_id(), Some(&requestor));
        let lq = q.options.lq_query().expect("LQ_QUERY");
        assert_eq!(lq.query_type, want.query_type);
        assert_eq!(lq.link_address, a(want.link));
        if want.query_type == QueryType::BY_ADDRESS {
            let asked_for = want.address.map_or(rec.address, a);
            let addrs: Vec<_> = lq.options.ia_addrs().map(|x| x.addr).collect();
            assert_eq!(addrs, [asked_for]);
        } else {
            assert_eq!(
                lq.options.client_id().map(Duid::to_vec),
                Some(rec.client_duid.clone())
            );
        }
        assert_eq!(
            lq.options.oro().cloned(),
            want.relay_data.then(|| vec![OptionCode::LQ_RELAY_DATA])
        );

        let Message::Client(r) = &r.msg else {
            panic!("reply is not relayed")
        };
        assert_eq!(
            (r.msg_type, r.transaction_id),
            (MessageType::LEASEQUERY_REPLY, want.xid)
        );
        assert_eq!(r.options.client_id(), Some(&requestor), "CLIENTID echoed");
        assert_eq!(
            r.options.server_id().map(Duid::to_vec),
            Some(rec.server_duid.clone())
        );
        let datas: Vec<_> = r.options.client_datas().collect();
        match want.answer {
            Answer::Binding => {
                assert!(r.options.status().is_none());
                assert_eq!(datas.len(), 1);
                let cd = datas[0];
                assert_eq!(
                    cd.client_id().map(Duid::to_vec),
                    Some(rec.client_duid.clone())
                );
                let leases: Vec<_> = cd.addresses().collect();
                assert_eq!(leases.len(), 1);
                assert_eq!(leases[0].addr, rec.address);
                // dhcpd's own record of the binding (it answers from the REQUEST's lease: the
                // queries ran after the RENEW, which dhcpd records without new lifetimes).
                assert_eq!(
                    (leases[0].preferred, leases[0].valid),
                    (rec.preferred, rec.valid)
                );
                assert_eq!(
                    cd.prefixes().count(),
                    0,
                    "dhcpd 4.4 returns IA_NA leases only"
                );
                // dhcpd 4.4.3 sends an absolute time here (see tests/data/README.md).
                let clt = cd.clt_time().expect("CLT_TIME is mandatory");
                assert!(clt > 1_700_000_000, "CLT_TIME {clt}");
                assert!(cd.relay_data().is_none(), "dhcpd sends no LQ_RELAY_DATA");
            }
            Answer::Status(code, text) => {
                let s = r.options.status().expect("STATUS_CODE");
                assert_eq!((s.code, s.text().as_ref()), (code, text));
                assert!(datas.is_empty());
            }
            Answer::NoBinding => {
                assert!(r.options.status().is_none());
                assert!(datas.is_empty());
            }
        }
    }
}
