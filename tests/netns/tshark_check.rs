//! Independent check of our encoder: every message type and every typed option, built with
//! `lqagent::wire`, written into a pcap and dissected by Wireshark's `tshark -V -T json`. The
//! client/server and relay messages go over IPv6/UDP (ports 546/547); the bulk leasequery ones
//! (RFC 5460) over one IPv6/TCP connection to port 547 with our 2-byte framing
//! (`wire::bulk::frame_to_vec`). Asserts: tshark marks nothing malformed and raises no expert
//! warning or error (one documented exception below), finds exactly the options we encoded, and
//! prints the values we encoded — the expected values are derived from our `Message` values by
//! [`expect_message`], option by option.
//!
//! What tshark 4.0 (Debian 12) does not know, so only the option's code and length are checked:
//! - CLIENT_LINKLAYER_ADDR (79) and the RFC 7653 time options LQ_BASE_TIME, LQ_START_TIME,
//!   LQ_END_TIME (100–102): named, but no value fields;
//! - ACTIVELEASEQUERY (22) and STARTTLS (23): no names; its bulk-leasequery dissector predates
//!   RFC 7653 and marks them malformed on TCP ("not allowed by DHCPv6 Bulk Leasequery"), so they
//!   are checked over UDP, where the message layout is the same;
//! - the relay message inside LQ_RELAY_DATA: shown as a string (hence its "Trailing stray
//!   characters" warning, the one expert warning allowed, and only on frames carrying
//!   LQ_RELAY_DATA); the same relay message is therefore also sent on its own and checked there;
//! - query types 3–5 (by relay-id, link-address, remote-id) are flagged over UDP as bulk-only,
//!   as RFC 5460 says, so they are checked on the TCP stream.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;
use std::process::Command;

use serde_json::Value;

use lqagent::pcap::link;
use lqagent::pcap::write::{PcapWriter, TCP_ACK, TCP_PSH, TCP_SYN, frame, ipv6_tcp, ipv6_udp};
use lqagent::wire::*;

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn llt() -> Duid {
    Duid::from(DuidKind::Llt {
        hw_type: 1,
        time: 849_203_358,
        link_layer: vec![2, 0, 0, 0, 3, 1],
    })
}

fn client(t: MessageType, xid: u32, opts: Vec<DhcpOption>) -> Message {
    let mut m = ClientMessage::new(t, xid);
    m.options = opts.into();
    m.into()
}

fn ia_na() -> Ia {
    let mut addr = IaAddr::new(a("2001:db8:1::1cc"), 300, 600);
    addr.options.push(DhcpOption::StatusCode(Status::new(
        StatusCode::SUCCESS,
        "assigned",
    )));
    let mut ia = Ia::new(0x0301, 150, 240);
    ia.options.push(DhcpOption::IaAddr(addr));
    ia
}

fn ia_pd() -> Ia {
    let mut ia = Ia::new(0x0302, 1800, 2880);
    ia.options.push(DhcpOption::IaPrefix(IaPrefix::new(
        "2001:db8:100::/56".parse().unwrap(),
        3600,
        INFINITE_LIFETIME,
    )));
    ia
}

fn relay_forw(inner: Message, hop: u8, link: &str, peer: &str, extra: Vec<DhcpOption>) -> Message {
    let mut r = RelayMessage::new(MessageType::RELAY_FORW, hop, a(link), a(peer));
    r.options = extra.into();
    r.options.push(DhcpOption::RelayMsg(Box::new(inner)));
    r.into()
}

/// Messages that travel over UDP: every message type of RFC 8415 and RFC 5007, relayed twice,
/// and every typed option that goes there.
fn udp_messages() -> Vec<Message> {
    use DhcpOption as O;
    let mut v = Vec::new();
    v.push(client(
        MessageType::SOLICIT,
        0x0a0b0c,
        vec![
            O::ClientId(llt()),
            O::ElapsedTime(250),
            O::Oro(vec![OptionCode::DNS_SERVERS, OptionCode::DOMAIN_LIST]),
            O::IaNa(Ia::new(0x0301, 0, 0)),
            O::IaTa(IaTa {
                iaid: 0x0401,
                options: Options::new(),
            }),
            O::IaPd(ia_pd()),
            O::Unknown {
                code: OptionCode::RAPID_COMMIT,
                data: vec![],
            },
        ],
    ));
    v.push(client(
        MessageType::ADVERTISE,
        0x0a0b0c,
        vec![
            O::ClientId(llt()),
            O::ServerId(Duid::from(DuidKind::En {
                enterprise: 2495,
                identifier: vec![0xde, 0xad, 0xbe, 0xef],
            })),
            O::IaNa(ia_na()),
            O::StatusCode(Status::new(StatusCode::SUCCESS, "all good")),
        ],
    ));
    v.push(client(
        MessageType::REQUEST,
        0x112233,
        vec![
            O::ClientId(Duid::ll_ethernet([2, 0, 0, 0, 3, 2])),
            O::ServerId(DuidKind::Uuid([0x11; 16]).into()),
        ],
    ));
    for (i, t) in [
        MessageType::CONFIRM,
        MessageType::RENEW,
        MessageType::REBIND,
        MessageType::REPLY,
        MessageType::RELEASE,
        MessageType::DECLINE,
        MessageType::RECONFIGURE,
        MessageType::INFORMATION_REQUEST,
    ]
    .into_iter()
    .enumerate()
    {
        let mut opts = vec![O::ClientId(Duid::from(vec![0, 9, 1, 2, 3]))];
        if t == MessageType::REPLY {
            for code in 1..=6 {
                opts.push(O::StatusCode(Status::new(StatusCode(code), "status")));
            }
        }
        v.push(client(t, 0x100 + i as u32, opts));
    }
    // Two relay levels: a lightweight relay (link ::) then the access concentrator's relay.
    let ldra = relay_forw(
        client(MessageType::SOLICIT, 0x445566, vec![O::ClientId(llt())]),
        0,
        "::",
        "fe80::1",
        vec![O::InterfaceId(b"port-7".to_vec())],
    );
    v.push(relay_forw(
        ldra,
        1,
        "2001:db8:1::1",
        "fe80::2",
        vec![
            O::InterfaceId(b"sub0".to_vec()),
            O::RemoteId {
                enterprise: 3561,
                remote_id: b"circuit-9".to_vec(),
            },
            O::SubscriberId(b"subscriber-42".to_vec()),
            O::ClientLinklayerAddr {
                hw_type: 1,
                addr: vec![2, 0, 0, 0, 3, 1],
            },
            O::RelayId(Duid::ll_ethernet([2, 0, 0, 0, 2, 1])),
        ],
    ));
    let mut repl = RelayMessage::new(MessageType::RELAY_REPL, 0, a("2001:db8:1::1"), a("fe80::2"));
    repl.options.push(O::InterfaceId(b"sub0".to_vec()));
    repl.options.push(O::RelayMsg(Box::new(client(
        MessageType::REPLY,
        0x445566,
        vec![O::IaNa(ia_na()), O::IaPd(ia_pd())],
    ))));
    v.push(repl.into());

    let requestor = Duid::ll_ethernet([2, 0, 0, 0, 2, 1]);
    let mut by_addr = LqQuery::new(QueryType::BY_ADDRESS, a("::"));
    by_addr
        .options
        .push(O::IaAddr(IaAddr::new(a("2001:db8:1::1cc"), 0, 0)));
    by_addr
        .options
        .push(O::Oro(vec![OptionCode::LQ_RELAY_DATA]));
    v.push(client(
        MessageType::LEASEQUERY,
        0x8dbed1,
        vec![O::ClientId(requestor.clone()), O::LqQuery(by_addr)],
    ));
    let mut by_client = LqQuery::new(QueryType::BY_CLIENTID, a("2001:db8:1::1"));
    by_client.options.push(O::ClientId(llt()));
    v.push(client(
        MessageType::LEASEQUERY,
        0x8dbed2,
        vec![O::ClientId(requestor.clone()), O::LqQuery(by_client)],
    ));
    let cd = client_data();
    v.push(client(
        MessageType::LEASEQUERY_REPLY,
        0x8dbed1,
        vec![
            O::ServerId(llt()),
            O::ClientId(requestor.clone()),
            O::ClientData(cd),
        ],
    ));
    // tshark shows LQ_RELAY_DATA's relay message as a string: dissect it on its own too.
    v.push(saved_relay().into());
    v.push(client(
        MessageType::LEASEQUERY_REPLY,
        0x8dbed2,
        vec![
            O::ServerId(llt()),
            O::ClientId(requestor),
            O::LqClientLink(vec![a("2001:db8:1::1"), a("2001:db8:2::1")]),
        ],
    ));
    // RFC 7653 messages (see the module docs for why over UDP).
    let mut active = LqQuery::new(QueryType::BY_ADDRESS, a("::"));
    active
        .options
        .push(O::IaAddr(IaAddr::new(a("2001:db8:1::1cc"), 0, 0)));
    active.options.push(O::LqStartTime(1_795_888_000));
    v.push(client(
        MessageType::ACTIVELEASEQUERY,
        0x000105,
        vec![
            O::ClientId(Duid::ll_ethernet([2, 0, 0, 0, 2, 1])),
            O::LqQuery(active),
        ],
    ));
    v.push(client(
        MessageType::STARTTLS,
        0x000104,
        vec![O::ClientId(Duid::ll_ethernet([2, 0, 0, 0, 2, 1]))],
    ));
    v
}

/// The RELAY-FORW a server keeps for LQ_RELAY_DATA.
fn saved_relay() -> RelayMessage {
    let mut saved = RelayMessage::new(MessageType::RELAY_FORW, 0, a("2001:db8:1::1"), a("fe80::2"));
    saved
        .options
        .push(DhcpOption::InterfaceId(b"sub0".to_vec()));
    saved.options.push(DhcpOption::RemoteId {
        enterprise: 3561,
        remote_id: b"circuit-9".to_vec(),
    });
    saved
}

fn client_data() -> ClientData {
    use DhcpOption as O;
    ClientData {
        options: vec![
            O::ClientId(llt()),
            O::IaAddr(IaAddr::new(a("2001:db8:1::1cc"), 300, 600)),
            O::IaPrefix(IaPrefix::new(
                "2001:db8:100::/56".parse().unwrap(),
                3600,
                7200,
            )),
            O::CltTime(42),
            O::LqRelayData(Box::new(LqRelayData {
                peer_address: a("fe80::2"),
                relay: saved_relay(),
            })),
        ]
        .into(),
    }
}

/// Messages of bulk (RFC 5460) and active (RFC 7653) leasequery, which travel over TCP with
/// the 2-byte length framing: `true` = requestor to server.
fn tcp_messages() -> Vec<(bool, Message)> {
    use DhcpOption as O;
    let relay_id = Duid::ll_ethernet([2, 0, 0, 0, 2, 1]);
    let mut by_relay = LqQuery::new(QueryType::BY_RELAY_ID, a("::"));
    by_relay.options.push(O::RelayId(relay_id.clone()));
    let mut by_link = LqQuery::new(QueryType::BY_LINK_ADDRESS, a("2001:db8:1::1"));
    by_link
        .options
        .push(O::Oro(vec![OptionCode::LQ_RELAY_DATA]));
    let mut by_remote = LqQuery::new(QueryType::BY_REMOTE_ID, a("::"));
    by_remote.options.push(O::RemoteId {
        enterprise: 3561,
        remote_id: b"circuit-9".to_vec(),
    });
    let me = O::ClientId(relay_id);
    let server = O::ServerId(llt());
    vec![
        (
            true,
            client(
                MessageType::LEASEQUERY,
                0x000101,
                vec![me.clone(), O::LqQuery(by_relay)],
            ),
        ),
        (
            false,
            client(
                MessageType::LEASEQUERY_REPLY,
                0x000101,
                vec![server.clone(), me.clone(), O::ClientData(client_data())],
            ),
        ),
        (
            false,
            client(
                MessageType::LEASEQUERY_DATA,
                0x000101,
                vec![O::ClientData(client_data())],
            ),
        ),
        (
            false,
            client(
                MessageType::LEASEQUERY_DONE,
                0x000101,
                vec![O::StatusCode(Status::new(StatusCode::SUCCESS, "done"))],
            ),
        ),
        (
            true,
            client(
                MessageType::LEASEQUERY,
                0x000102,
                vec![me.clone(), O::LqQuery(by_link)],
            ),
        ),
        (
            false,
            client(
                MessageType::LEASEQUERY_DONE,
                0x000102,
                vec![O::StatusCode(Status::new(
                    StatusCode::QUERY_TERMINATED,
                    "shutting down",
                ))],
            ),
        ),
        (
            true,
            client(
                MessageType::LEASEQUERY,
                0x000103,
                vec![me.clone(), O::LqQuery(by_remote)],
            ),
        ),
        (
            false,
            client(
                MessageType::LEASEQUERY_REPLY,
                0x000103,
                vec![
                    server.clone(),
                    O::StatusCode(Status::new(StatusCode::NOT_ALLOWED, "no")),
                ],
            ),
        ),
        (
            false,
            client(
                MessageType::LEASEQUERY_REPLY,
                0x000105,
                vec![
                    server,
                    O::LqBaseTime(1_795_888_164),
                    O::LqStartTime(1_795_888_000),
                    O::LqEndTime(1_795_888_100),
                    O::StatusCode(Status::new(StatusCode::CATCH_UP_COMPLETE, "")),
                ],
            ),
        ),
    ]
}

const REQUESTOR: &str = "2001:db8::2";
const SERVER: &str = "2001:db8::1";

/// The capture: the UDP messages (client-side types from 546 to 547, the others back, relay
/// messages 547 to 547), then one TCP connection (handshake, then each TCP message framed in a
/// segment of its own, sequence and acknowledgement numbers kept right).
fn capture(udp: &[Message], tcp: &[(bool, Message)]) -> Vec<u8> {
    let mut w = PcapWriter::new(link::ETHERNET);
    let mut t = 1_795_888_164u32;
    let mut put = |w: &mut PcapWriter, ip: Vec<u8>| {
        w.packet(t, 0, &frame(link::ETHERNET, &ip).unwrap());
        t += 1;
    };
    for m in udp {
        let payload = m.to_vec().unwrap();
        let to_client = [
            MessageType::ADVERTISE,
            MessageType::REPLY,
            MessageType::RECONFIGURE,
            MessageType::LEASEQUERY_REPLY,
        ]
        .contains(&m.msg_type());
        let (src, dst, sport, dport) = match m.msg_type() {
            _ if m.msg_type().is_relay() => (REQUESTOR, SERVER, 547, 547),
            _ if to_client => (SERVER, REQUESTOR, 547, 546),
            _ => (REQUESTOR, SERVER, 546, 547),
        };
        put(
            &mut w,
            ipv6_udp(a(src), a(dst), sport, dport, &payload).unwrap(),
        );
    }
    let (r, s) = (a(REQUESTOR), a(SERVER));
    let (mut rseq, mut sseq) = (1000u32, 5000u32);
    put(
        &mut w,
        ipv6_tcp(r, s, 40000, 547, rseq, 0, TCP_SYN, &[]).unwrap(),
    );
    put(
        &mut w,
        ipv6_tcp(s, r, 547, 40000, sseq, rseq + 1, TCP_SYN | TCP_ACK, &[]).unwrap(),
    );
    rseq += 1;
    sseq += 1;
    put(
        &mut w,
        ipv6_tcp(r, s, 40000, 547, rseq, sseq, TCP_ACK, &[]).unwrap(),
    );
    for (up, m) in tcp {
        let framed = bulk::frame_to_vec(m).unwrap();
        let n = framed.len() as u32;
        let flags = TCP_PSH | TCP_ACK;
        if *up {
            put(
                &mut w,
                ipv6_tcp(r, s, 40000, 547, rseq, sseq, flags, &framed).unwrap(),
            );
            rseq += n;
        } else {
            put(
                &mut w,
                ipv6_tcp(s, r, 547, 40000, sseq, rseq, flags, &framed).unwrap(),
            );
            sseq += n;
        }
    }
    w.into_bytes()
}

type Fields = Vec<(String, String)>;

fn colon_hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// tshark's absolute time text for `secs` since the epoch ("Nov 28, 2026 17:49:18.000000000 UTC").
fn tshark_time(secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = lqagent::wire::pretty::utc(secs); // 2026-11-28T17:49:18Z
    let month: usize = t[5..7].parse().unwrap();
    let day: u32 = t[8..10].parse().unwrap();
    format!(
        "{} {:2}, {} {}.000000000 UTC",
        MONTHS[month - 1],
        day,
        &t[..4],
        &t[11..19]
    )
}

fn push(out: &mut Fields, k: &str, v: impl ToString) {
    out.push((format!("dhcpv6.{k}"), v.to_string()));
}

fn expect_duid(d: &Duid, out: &mut Fields) {
    let bytes = d.to_vec();
    push(out, "duid.bytes", colon_hex(&bytes));
    push(out, "duid.type", u16::from_be_bytes([bytes[0], bytes[1]]));
    match &d.kind() {
        DuidKind::Llt {
            hw_type,
            time,
            link_layer,
        } => {
            push(out, "duidllt.hwtype", hw_type);
            push(
                out,
                "duidllt.time",
                tshark_time(946_684_800 + i64::from(*time)),
            );
            push(out, "duidllt.link_layer_addr", colon_hex(link_layer));
        }
        DuidKind::En {
            enterprise,
            identifier,
        } => {
            push(out, "duiden.enterprise", enterprise);
            push(out, "duiden.identifier", colon_hex(identifier));
        }
        DuidKind::Ll {
            hw_type,
            link_layer,
        } => {
            push(out, "duidll.hwtype", hw_type);
            push(out, "duidll.link_layer_addr", colon_hex(link_layer));
        }
        DuidKind::Uuid(u) => push(out, "duiduuid.bytes", colon_hex(u)),
        DuidKind::Other(_) => {}
    }
}

/// The fields tshark should print for `o` (and everything nested in it).
fn expect_option(o: &DhcpOption, out: &mut Fields, codes: &mut BTreeSet<u16>) {
    use DhcpOption as O;
    codes.insert(o.code().0);
    push(out, "option.type", o.code().0);
    push(out, "option.length", o.buffer_len() - 4);
    match o {
        O::ClientId(d) | O::ServerId(d) | O::RelayId(d) => expect_duid(d, out),
        O::IaNa(ia) | O::IaPd(ia) => {
            push(out, "iaid", format!("{:08x}", ia.iaid));
            push(out, "iaid.t1", ia.t1);
            push(out, "iaid.t2", ia.t2);
            expect_options(&ia.options, out, codes);
        }
        O::IaTa(ia) => {
            push(out, "iata", format!("{:08x}", ia.iaid));
            expect_options(&ia.options, out, codes);
        }
        O::IaAddr(x) => {
            push(out, "iaaddr.ip", x.addr);
            push(out, "iaaddr.pref_lifetime", x.preferred);
            push(out, "iaaddr.valid_lifetime", x.valid);
            expect_options(&x.options, out, codes);
        }
        O::IaPrefix(p) => {
            push(out, "iaprefix.pref_lifetime", p.preferred);
            push(out, "iaprefix.valid_lifetime", p.valid);
            push(out, "iaprefix.pref_len", p.prefix_len);
            push(out, "iaprefix.pref_addr", p.prefix_addr);
            expect_options(&p.options, out, codes);
        }
        O::Oro(cs) => {
            for c in cs {
                push(out, "requested_option_code", c.0);
            }
        }
        // tshark shows milliseconds.
        O::ElapsedTime(h) => push(out, "elapsed_time", u32::from(*h) * 10),
        O::RelayMsg(m) => expect_message(m, false, out, codes),
        O::StatusCode(s) => {
            push(out, "status_code", s.code.0);
            if !s.message.is_empty() {
                push(out, "status_msg", s.text());
            }
        }
        O::InterfaceId(b) => push(out, "interface_id", colon_hex(b)),
        O::RemoteId {
            enterprise,
            remote_id,
        } => {
            push(out, "remoteid.enterprise", enterprise);
            push(out, "remoteid_enterprise_id", colon_hex(remote_id));
        }
        O::SubscriberId(b) => push(out, "subscriber_id", String::from_utf8_lossy(b)),
        O::LqQuery(q) => {
            push(out, "lq_query", q.query_type.0);
            push(out, "lq_query_link_address", q.link_address);
            expect_options(&q.options, out, codes);
        }
        O::ClientData(cd) => expect_options(&cd.options, out, codes),
        O::CltTime(t) => push(out, "clt_time", t),
        O::LqRelayData(d) => push(out, "lq_relay_data_peer_addr", d.peer_address),
        O::LqClientLink(links) => {
            for l in links {
                push(out, "lq_client_link", l);
            }
        }
        // Unknown to tshark beyond code and length (module docs), or unknown to us.
        _ => {}
    }
}

fn expect_options(opts: &Options, out: &mut Fields, codes: &mut BTreeSet<u16>) {
    for o in opts {
        expect_option(o, out, codes);
    }
}

/// The fields tshark should print for `m`; `bulk` for a message on the TCP stream.
fn expect_message(m: &Message, bulk: bool, out: &mut Fields, codes: &mut BTreeSet<u16>) {
    match m {
        Message::Client(c) if bulk => {
            push(out, "bulk_leasequery.size", m.buffer_len());
            push(out, "bulk_leasequery.msgtype", c.msg_type.0);
            push(out, "bulk_leasequery.trans_id", c.transaction_id);
        }
        Message::Client(c) => {
            push(out, "msgtype", c.msg_type.0);
            push(out, "xid", format!("0x{:06x}", c.transaction_id));
        }
        Message::Relay(r) => {
            push(out, "msgtype", r.msg_type.0);
            push(out, "hopcount", r.hop_count);
            push(out, "linkaddr", r.link_address);
            push(out, "peeraddr", r.peer_address);
        }
    }
    expect_options(m.options(), out, codes);
}

/// Every (field, value) in a tshark JSON layer, depth first.
fn flatten(v: &Value, out: &mut Fields) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                match x {
                    Value::String(s) => out.push((k.clone(), s.clone())),
                    Value::Array(items) => {
                        for i in items {
                            match i {
                                Value::String(s) => out.push((k.clone(), s.clone())),
                                other => flatten(other, out),
                            }
                        }
                    }
                    other => flatten(other, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        _ => {}
    }
}

fn counts(fields: &Fields) -> BTreeMap<&(String, String), usize> {
    let mut m = BTreeMap::new();
    for f in fields {
        *m.entry(f).or_insert(0) += 1;
    }
    m
}

/// Expert severities (epan/proto.h): PI_WARN and above fail the check.
const PI_WARN: u64 = 0x0060_0000;

#[test]
fn tshark_reads_what_we_encode() {
    let udp = udp_messages();
    let tcp = tcp_messages();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("encoded.pcap");
    std::fs::write(&pcap, capture(&udp, &tcp)).unwrap();
    let out = Command::new("tshark")
        // A private, empty configuration: no one's preferences change the dissection.
        .env("WIRESHARK_CONFIG_DIR", dir.path())
        .env("HOME", dir.path())
        .args(["-n", "-r"])
        .arg(&pcap)
        .args(["-V", "-T", "json", "--no-duplicate-keys"])
        .output()
        .expect("tshark must be installed (Debian package tshark, in tests/run.sh PKGS)");
    assert!(out.status.success(), "tshark failed: {out:?}");
    let frames: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();

    let mut expected: Vec<(bool, &Message)> = udp.iter().map(|m| (false, m)).collect();
    expected.extend(tcp.iter().map(|(_, m)| (true, m)));
    let mut codes = BTreeSet::new();
    let mut types = BTreeSet::new();
    let mut dhcp_frames = 0;
    let mut next = expected.iter();
    for (i, f) in frames.iter().enumerate() {
        let n = i + 1;
        let layers = &f["_source"]["layers"];
        let mut all = Fields::new();
        flatten(layers, &mut all);
        let has_relay_data = all.iter().any(|(k, _)| k == "dhcpv6.lq_relay_data_msg");
        for (k, v) in &all {
            assert!(
                !k.starts_with("_ws.malformed"),
                "frame {n}: tshark says malformed: {all:?}"
            );
            if k == "_ws.expert.severity" {
                let sev: u64 = v.parse().unwrap();
                let allowed = has_relay_data
                    && all.iter().any(|(k, v)| {
                        k == "_ws.expert.message" && v == "Trailing stray characters"
                    })
                    && all
                        .iter()
                        .filter(|(k, _)| k == "_ws.expert.severity")
                        .count()
                        == 1;
                assert!(sev < PI_WARN || allowed, "frame {n}: expert {all:?}");
            }
        }
        let dhcp = layers
            .get("dhcpv6")
            .or_else(|| layers.get("dhcpv6.bulk_leasequery"));
        let Some(dhcp) = dhcp else {
            // Only the TCP handshake has no DHCPv6 in it.
            assert!(
                n > udp.len() && n <= udp.len() + 3,
                "frame {n}: no DHCPv6 layer"
            );
            continue;
        };
        dhcp_frames += 1;
        let (bulk, msg) = *next.next().expect("more DHCPv6 frames than messages");
        types.insert(msg.msg_type().0);
        for r in lqagent::wire::RelayChain::of_message(msg).levels() {
            if let Some(inner) = r.options.relay_msg() {
                types.insert(inner.msg_type().0);
            }
        }
        let mut want = Fields::new();
        expect_message(msg, bulk, &mut want, &mut codes);
        let mut got = Fields::new();
        flatten(dhcp, &mut got);
        let got_counts = counts(&got);
        for (field, n_want) in counts(&want) {
            let n_got = got_counts.get(field).copied().unwrap_or(0);
            assert!(
                n_got >= n_want,
                "frame {n} ({}): tshark printed {field:?} {n_got} times, we encoded it {n_want} times\ntshark: {got:?}",
                msg.msg_type()
            );
        }
        // Exactly the options we encoded, no more (no misframed bytes read as options).
        for key in ["dhcpv6.option.type", "dhcpv6.option.length"] {
            let pick = |f: &Fields| {
                let mut v: Vec<String> = f
                    .iter()
                    .filter(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
                    .collect();
                v.sort();
                v
            };
            assert_eq!(pick(&got), pick(&want), "frame {n}: {key}");
        }
    }
    assert_eq!(dhcp_frames, expected.len(), "every message dissected");

    // Coverage: every message type and every typed option was in the check.
    let want_types: BTreeSet<u8> = (1..=17).chain([22, 23]).collect();
    assert_eq!(types, want_types);
    for c in [
        OptionCode::CLIENTID,
        OptionCode::SERVERID,
        OptionCode::IA_NA,
        OptionCode::IA_TA,
        OptionCode::IAADDR,
        OptionCode::ORO,
        OptionCode::ELAPSED_TIME,
        OptionCode::RELAY_MSG,
        OptionCode::STATUS_CODE,
        OptionCode::INTERFACE_ID,
        OptionCode::IA_PD,
        OptionCode::IAPREFIX,
        OptionCode::REMOTE_ID,
        OptionCode::SUBSCRIBER_ID,
        OptionCode::LQ_QUERY,
        OptionCode::CLIENT_DATA,
        OptionCode::CLT_TIME,
        OptionCode::LQ_RELAY_DATA,
        OptionCode::LQ_CLIENT_LINK,
        OptionCode::RELAY_ID,
        OptionCode::CLIENT_LINKLAYER_ADDR,
        OptionCode::LQ_BASE_TIME,
        OptionCode::LQ_START_TIME,
        OptionCode::LQ_END_TIME,
    ] {
        assert!(codes.contains(&c.0), "{c} not covered");
    }
}
