//! Real Kea 3 traffic as test data (tests/data/kea/, recorded by tests/data/kea/record.sh against
//! kea-dhcp6 with the lease_query and lease_cmds hooks; the README there names the Kea version
//! and the configuration file, committed beside the captures). No Kea is needed to run these.
//!
//! - every recorded message — the relay's exchanges, UDP leasequeries and their replies, both
//!   directions of every bulk TCP connection — decodes with our codec and encodes back to the
//!   captured bytes;
//! - what Kea answered is asserted, query by query: these are the facts docs/interop.md states
//!   for Kea, each now shown by a capture;
//! - the reference server's `kea` profile, asked the very queries lqagent sent, answers with the
//!   same shape as Kea did (message type, options and their order, status codes, the CLT form),
//!   from a lease table made from Kea's own lease file (kea-leases6.csv).

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use lqagent::wire::pretty::Decoded;
use lqagent::wire::{ClientMessage, Message, MessageType, MessageView};
use support::captures::{self, Datagram};

pub(crate) const LEASEQUERY: &str = "kea/kea-leasequery.pcap";
pub(crate) const RELAY_SERVER: &str = "kea/kea-relay-server.pcap";
pub(crate) const BULK: &str = "kea/kea-bulk.pcap";
/// Queries by address naming a link Kea does not serve (record.sh `PART=unknown-link`).
pub(crate) const UNKNOWN_LINK: &str = "kea/kea-unknown-link.pcap";

/// The access concentrator's listed requester address, and the unlisted one beside it.
pub(crate) const REQUESTER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
pub(crate) const UNLISTED: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 3);
pub(crate) const KEA: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

fn parse(what: &str, bytes: &[u8]) -> Message {
    let m = Message::parse(bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        m.to_vec().unwrap(),
        bytes,
        "{what}: emit(parse(b)) != b (the codec promises a byte-identical round trip)"
    );
    let walked = MessageView::new_checked(bytes)
        .and_then(|v| v.walk())
        .unwrap_or_else(|e| panic!("{what}: view walk: {e}"));
    // A LEASEQUERY-DONE may be the 4-byte header alone.
    assert!(
        walked > 0 || bytes.len() == 4,
        "{what}: the view saw no options"
    );
    assert_eq!(Decoded::new(bytes).malformed, 0, "{what}: renderer");
    m
}

fn client(m: Message) -> ClientMessage {
    match m {
        Message::Client(c) => c,
        other => panic!(
            "a client/server message expected, got {:?}",
            other.msg_type()
        ),
    }
}

/// Top-level option codes in wire order.
pub(crate) fn codes(o: &lqagent::wire::Options) -> Vec<u16> {
    o.0.iter().map(|x| x.code().0).collect()
}

#[test]
fn every_recorded_kea_message_decodes_and_encodes_back_to_its_bytes() {
    let mut n = 0;
    for file in [LEASEQUERY, RELAY_SERVER, UNKNOWN_LINK] {
        for d in captures::udp(file) {
            parse(&format!("{file} #{}", d.number), &d.payload);
            n += 1;
        }
    }
    for (i, c) in captures::tcp(BULK).iter().enumerate() {
        for (dir, msgs) in [
            ("query", c.client_messages()),
            ("answer", c.server_messages()),
        ] {
            for (j, m) in msgs.iter().enumerate() {
                parse(&format!("{BULK} connection {i} {dir} {j}"), m);
                n += 1;
            }
        }
    }
    // An empty or truncated recording must not pass as "everything decoded".
    assert!(n >= 60, "only {n} messages in the Kea recordings");
}

/// One UDP leasequery exchange: the query as sent and Kea's reply, if any.
pub(crate) struct Exchange {
    pub query: Datagram,
    pub q: ClientMessage,
    pub reply: Option<(Datagram, ClientMessage)>,
}

/// The UDP exchanges in recording order, replies matched by transaction id and addresses (the
/// first unanswered query with that id takes the next reply: the hand-made queries share one).
pub(crate) fn exchanges() -> Vec<Exchange> {
    exchanges_in(LEASEQUERY)
}

/// [`exchanges`] of one recording.
pub(crate) fn exchanges_in(file: &str) -> Vec<Exchange> {
    let mut out: Vec<Exchange> = Vec::new();
    for d in captures::udp(file) {
        let m = client(parse("leasequery", &d.payload));
        if m.msg_type == MessageType::LEASEQUERY {
            out.push(Exchange {
                query: d,
                q: m,
                reply: None,
            });
        } else if m.msg_type == MessageType::LEASEQUERY_REPLY {
            assert_eq!(*d.src.ip(), KEA);
            assert_eq!(d.src.port(), 547);
            let x = out
                .iter_mut()
                .find(|x| {
                    x.reply.is_none()
                        && x.q.transaction_id == m.transaction_id
                        && x.query.src == d.dst
                })
                .unwrap_or_else(|| panic!("#{}: a reply without its query", d.number));
            x.reply = Some((d, m));
        }
    }
    out
}

/// What a reply looks like, without the values that depend on when it was made (CLT_TIME,
/// lifetimes) or who asked (transaction id, requestor DUID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shape {
    pub msg_type: MessageType,
    /// Top-level option codes, in wire order.
    pub top: Vec<u16>,
    pub status: Option<(u16, String)>,
    /// Per CLIENT_DATA: its option codes in wire order and the leases it lists.
    pub client_data: Vec<(Vec<u16>, Vec<String>)>,
    pub client_links: Option<Vec<Ipv6Addr>>,
    /// Each LQ_RELAY_DATA's peer-address and its relay message's link- and peer-address.
    pub relay_data: Vec<(Ipv6Addr, Ipv6Addr, Ipv6Addr)>,
}

pub(crate) fn shape(m: &ClientMessage) -> Shape {
    let o = &m.options;
    let relay = |r: &lqagent::wire::LqRelayData| {
        (r.peer_address, r.relay.link_address, r.relay.peer_address)
    };
    let mut relay_data: Vec<_> = o.lq_relay_data().map(relay).into_iter().collect();
    let client_data = o
        .client_datas()
        .map(|cd| {
            relay_data.extend(cd.options.lq_relay_data().map(relay));
            let leases = cd
                .options
                .ia_addrs()
                .map(|a| a.addr.to_string())
                .chain(
                    cd.options
                        .ia_prefixes()
                        .map(|p| format!("{}/{}", p.prefix_addr, p.prefix_len)),
                )
                .collect();
            (codes(&cd.options), leases)
        })
        .collect();
    Shape {
        msg_type: m.msg_type,
        top: codes(o),
        status: o
            .status()
            .map(|s| (s.code.0, String::from_utf8_lossy(&s.message).into_owned())),
        client_data,
        client_links: o.lq_client_link().map(<[Ipv6Addr]>::to_vec),
        relay_data,
    }
}

/// The TCP reassembly the bulk tests rely on, on a capture written here: segments placed by
/// sequence number, a retransmitted segment (overlapping what came before) kept once, a UDP
/// packet and a connection whose SYN was not captured skipped, both directions framed.
#[test]
fn tcp_streams_are_put_back_together_from_a_capture() {
    use lqagent::pcap::link::ETHERNET;
    use lqagent::pcap::write::{self, PcapWriter, TCP_ACK, TCP_PSH, TCP_SYN};
    let (c, s): (Ipv6Addr, Ipv6Addr) = ("2001:db8::2".parse().unwrap(), KEA);
    let framed = |m: &[u8]| [&(m.len() as u16).to_be_bytes()[..], m].concat();
    let query = framed(&[14, 1, 2, 3, 0, 1, 0, 0]);
    let answer = [framed(&[15, 1, 2, 3]), framed(&[16, 1, 2, 3])].concat();
    let mut w = PcapWriter::new(ETHERNET);
    let mut put = |from_client: bool, seq: u32, flags: u8, payload: &[u8]| {
        let (a, b, pa, pb) = if from_client {
            (c, s, 40000, 547)
        } else {
            (s, c, 547, 40000)
        };
        let ip = write::ipv6_tcp(a, b, pa, pb, seq, 0, flags, payload).unwrap();
        w.packet(0, 0, &write::frame(ETHERNET, &ip).unwrap());
    };
    put(true, 1000, TCP_SYN, &[]);
    put(false, 5000, TCP_SYN | TCP_ACK, &[]);
    put(true, 1001, TCP_ACK | TCP_PSH, &query[..3]);
    // A resent segment: bytes 1..3 again, 3..6 new.
    put(true, 1002, TCP_ACK | TCP_PSH, &query[1..6]);
    put(true, 1007, TCP_ACK | TCP_PSH, &query[6..]);
    // A retransmission of what is already there: nothing new.
    put(true, 1001, TCP_ACK | TCP_PSH, &query[..4]);
    put(false, 5001, TCP_ACK | TCP_PSH, &answer);
    // A connection whose start was not captured.
    let ip = write::ipv6_tcp(c, s, 40001, 547, 77, 0, TCP_ACK, b"xx").unwrap();
    w.packet(0, 0, &write::frame(ETHERNET, &ip).unwrap());
    let udp = write::ipv6_udp(c, s, 546, 547, &[14, 0, 0, 1]).unwrap();
    w.packet(0, 0, &write::frame(ETHERNET, &udp).unwrap());
    let conns = captures::tcp_in("synthetic", &w.into_bytes());
    assert_eq!(conns.len(), 1, "{conns:?}");
    let k = &conns[0];
    assert!(k.accepted);
    assert_eq!(k.to_server, query);
    assert_eq!(k.client_messages(), vec![vec![14, 1, 2, 3, 0, 1, 0, 0]]);
    assert_eq!(
        k.server_messages(),
        vec![vec![15, 1, 2, 3], vec![16, 1, 2, 3]]
    );
}

/// Kea's leases as the reference server's table: one entry per client and link, the relay
/// information Kea stored as the entry's relay data, the link from it (else the subnet's
/// relay link-address as record.sh sets it up), lifetimes as configured, `clt_time` 0 (the
/// comparison leaves values out).
fn kea_table() -> support::refserver::LeaseTable {
    use support::refserver::{AddrLease, HexBytes, LeaseEntry, LeaseTable, PrefixLease, RemoteId};
    let mut seen = std::collections::BTreeSet::new();
    let mut entries: BTreeMap<(Vec<u8>, Ipv6Addr), LeaseEntry> = BTreeMap::new();
    for l in captures::kea_leases("kea/kea-leases6.csv") {
        if !seen.insert((l.address, l.prefix)) {
            continue; // the first row is the lease as the queries saw it
        }
        let relay = l.relay_info.as_ref().and_then(|r| r.get(0)).cloned();
        let addr = |k: &str| {
            relay
                .as_ref()
                .and_then(|r| r.get(k)?.as_str()?.parse::<Ipv6Addr>().ok())
        };
        let link = addr("link")
            .unwrap_or_else(|| Ipv6Addr::new(0x2001, 0xdb8, l.subnet_id as u16, 0, 0, 0, 0, 1));
        let e = entries
            .entry((l.duid.clone(), link))
            .or_insert_with(|| LeaseEntry::new(l.duid.clone(), link));
        e.peer_address = addr("peer");
        if let Some(opts) = relay.as_ref().and_then(|r| r.get("options")?.as_str()) {
            // The relay level's options, wrapped in a RELAY-FORW to read them with our codec.
            let mut forw = vec![12u8, 0];
            forw.extend_from_slice(&[0; 32]);
            forw.extend(hex::decode(opts.trim_start_matches("0x")).unwrap());
            let Message::Relay(r) = Message::parse(&forw).unwrap() else {
                unreachable!()
            };
            let o = &r.options;
            e.interface_id = o.interface_id().map(|i| HexBytes(i.to_vec()));
            e.relay_id = o.relay_id().map(|d| HexBytes(d.to_vec()));
            e.remote_id = o.remote_id().map(|(enterprise, id)| RemoteId {
                enterprise,
                id: HexBytes(id.to_vec()),
            });
        }
        if l.prefix {
            e.prefixes.push(PrefixLease {
                prefix: lqagent::prefix::Ipv6Prefix::new(l.address, l.prefix_len).unwrap(),
                preferred: l.preferred,
                valid: l.valid,
            });
        } else {
            e.addrs.push(AddrLease {
                addr: l.address,
                preferred: l.preferred,
                valid: l.valid,
            });
        }
    }
    LeaseTable::from_entries(entries.into_values())
}

/// The reference server's `kea` profile, asked each recorded UDP leasequery from the listed
/// requester, answers with the shape Kea's recorded reply has (message type, options and their
/// order, status code and text, what each CLIENT_DATA lists, client links, relay data).
#[test]
fn the_kea_profile_answers_udp_queries_in_the_shape_kea_did() {
    // The table is Kea's leases before the client's RELEASE: compare the queries made before it.
    let release = captures::udp(RELAY_SERVER)
        .into_iter()
        .find(|d| {
            Message::parse(&d.payload)
                .ok()
                .and_then(|m| m.innermost().map(|c| c.msg_type))
                == Some(MessageType::RELEASE)
        })
        .map_or(u64::MAX, |d| d.ts_sec);
    let compared = profile_matches_kea(exchanges(), release);
    assert!(compared >= 8, "only {compared} exchanges compared");
}

/// The Kea profile asked each exchange's query (from the listed requester, before `before`)
/// answers in the shape Kea did; returns how many were compared.
fn profile_matches_kea(exchanges: Vec<Exchange>, before: u64) -> usize {
    use support::refserver::codec::{self, ReplyBody, Shape as RefShape};
    use support::refserver::{Decision, Profile, Transport, answer::decide_as};
    let table = kea_table();
    let mut compared = 0;
    for x in exchanges {
        let Some((_, reply)) = &x.reply else { continue };
        if *x.query.src.ip() != REQUESTER || x.query.ts_sec >= before {
            continue;
        }
        let Ok(inc) = codec::parse_leasequery(&x.query.payload) else {
            panic!("#{}: not a leasequery", x.query.number)
        };
        let ref_shape = RefShape {
            query_type: inc.query.as_ref().map(|q| q.query_type).unwrap_or(0),
            ..RefShape::now(Profile::Kea, Transport::Udp)
        };
        let decision = match &inc.query {
            Ok(q) => decide_as(Profile::Kea, &table, q, Transport::Udp),
            Err(why) => Decision::Status(8, why),
        };
        let picks = decision.picks();
        let body = match (&decision, picks.first()) {
            (Decision::Status(c, m), _) => ReplyBody::Status(*c, m),
            (Decision::ClientLinks(l), _) => ReplyBody::ClientLinks(l),
            (_, Some(p)) => ReplyBody::Client(*p),
            (_, None) => ReplyBody::Empty,
        };
        let server = reply.options.server_id().unwrap().to_vec();
        let ours = codec::emit_reply_as(
            x.q.transaction_id,
            &server,
            &inc.requestor,
            &table,
            body,
            &[],
            None,
            &ref_shape,
        );
        let ours = client(parse("profile", &ours));
        assert_eq!(
            shape(&ours),
            shape(reply),
            "query #{} ({:?}): the kea profile differs from Kea",
            x.query.number,
            x.q.options.lq_query()
        );
        compared += 1;
    }
    compared
}

/// Kea ignores the link-address of a query by address: asked about the client's address, and
/// about an address inside its /56, naming a link Kea does not serve (2001:db8:99::1), it
/// answers with the binding as when the client's own link is named (RFC 5007 §4.3.2 would have
/// NotConfigured). The Kea profile does the same (docs/interop.md, "Link-address of a query by
/// address").
#[test]
fn kea_ignores_the_link_address_of_a_query_by_address() {
    let unknown: Ipv6Addr = "2001:db8:99::1".parse().unwrap();
    let xs = exchanges_in(UNKNOWN_LINK);
    let mut unknown_link = 0;
    for x in &xs {
        let q = x.q.options.lq_query().expect("a query");
        let (_, reply) = x.reply.as_ref().expect("Kea answered");
        assert_eq!(reply.msg_type, MessageType::LEASEQUERY_REPLY);
        assert!(
            reply
                .options
                .status_code()
                .is_none_or(|c| c == lqagent::wire::StatusCode::SUCCESS),
            "#{}: {:?}",
            x.query.number,
            reply.options.status_code()
        );
        let data = reply
            .options
            .client_datas()
            .next()
            .expect("the binding (CLIENT_DATA)");
        assert_eq!(
            data.options.client_id().map(|d| d.to_vec()),
            Some(hex::decode("00030001020000000301").unwrap()),
            "#{}: the real client's binding",
            x.query.number
        );
        unknown_link += usize::from(q.link_address == unknown);
    }
    assert_eq!(unknown_link, 2, "two queries named the unknown link");
    assert_eq!(profile_matches_kea(xs, u64::MAX), 3);
}

/// The unlisted requester's query got no answer at all.
#[test]
fn kea_answers_an_unlisted_requester_with_silence() {
    let from_unlisted: Vec<_> = exchanges()
        .into_iter()
        .filter(|x| *x.query.src.ip() == UNLISTED)
        .collect();
    assert!(
        !from_unlisted.is_empty(),
        "the recording asked from {UNLISTED}"
    );
    assert!(from_unlisted.iter().all(|x| x.reply.is_none()));
}

/// Kea's bulk answers as recorded: REPLY, one DATA per lease (a CLIENT_DATA with exactly one
/// IAADDR or IAPREFIX and LQ_RELAY_DATA inside it), DONE; a second query pipelined on the same
/// connection gets nothing; a connection from the unlisted requester gets nothing.
#[test]
fn kea_bulk_sends_one_lease_per_data_and_ignores_a_pipelined_query() {
    let conns = captures::tcp(BULK);
    let by_link = &conns[0];
    let msgs: Vec<ClientMessage> = by_link
        .server_messages()
        .iter()
        .map(|m| client(parse("bulk", m)))
        .collect();
    let types: Vec<MessageType> = msgs.iter().map(|m| m.msg_type).collect();
    assert_eq!(types.first(), Some(&MessageType::LEASEQUERY_REPLY));
    assert_eq!(types.last(), Some(&MessageType::LEASEQUERY_DONE));
    assert!(msgs.len() >= 10, "{types:?}");
    for m in &msgs[..msgs.len() - 1] {
        let cd = m
            .options
            .client_data()
            .expect("CLIENT_DATA in REPLY and DATA");
        assert_eq!(
            cd.options.ia_addrs().count() + cd.options.ia_prefixes().count(),
            1,
            "one lease per message: {m:?}"
        );
        assert!(cd.options.lq_relay_data().is_some(), "relay data inside");
        assert!(m.options.lq_relay_data().is_none(), "not at the top level");
    }
    let pipelined = conns
        .iter()
        .find(|c| c.client_messages().len() == 2)
        .expect("the pipelined connection");
    let first = pipelined.client_messages()[0][1..4].to_vec();
    let answered: Vec<Vec<u8>> = pipelined
        .server_messages()
        .iter()
        .map(|m| m[1..4].to_vec())
        .collect();
    assert!(!answered.is_empty());
    assert!(
        answered.iter().all(|x| *x == first),
        "only the first query is answered"
    );
    let unlisted = conns
        .iter()
        .find(|c| *c.client.ip() == UNLISTED)
        .expect("the unlisted requester's connection");
    assert!(
        unlisted.to_client.is_empty(),
        "nothing to an unlisted requester"
    );
}
