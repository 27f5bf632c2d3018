//! Tests of the reference leasequery server (tests/support/src/refserver/): its lookups as a table, then
//! real UDP and TCP exchanges on loopback, decoded with the agent's codec, fault by fault.

use support::closed::assert_closed;
use support::refserver;
use support::wait::wait_for;

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use lqagent::prefix::Ipv6Prefix;
use lqagent::wire::bulk::{FrameConfig, FrameDecoder, frame_to_vec};
use lqagent::wire::{
    ClientMessage, DhcpOption, Duid, IaAddr, LqQuery, Message, MessageType, OptionCode, QueryType,
    StatusCode,
};
use refserver::answer::{self, Decision, Query, Transport, decide};
use refserver::{
    AddrLease, Corrupt, FaultPlan, FaultRule, Faults, HexBytes, LeaseEntry, LeaseTable,
    PrefixLease, RefServer, RemoteId, ServerConfig,
};

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

const LINK1: &str = "2001:db8:1::1";
const LINK2: &str = "2001:db8:2::1";
const RELAY: [u8; 10] = [0, 3, 0, 1, 2, 0, 0, 0, 0xaa, 1];

fn entry(n: u8, link: &str) -> LeaseEntry {
    let mut e = LeaseEntry::new(vec![0, 3, 0, 1, 0x0a, 0, 0, 0, 0, n], a(link));
    e.addrs.push(AddrLease {
        addr: a(&format!("{}::{n:x}", &link[..link.len() - 3])),
        preferred: 3600,
        valid: 7200,
    });
    e.prefixes.push(PrefixLease {
        prefix: format!("2001:db8:1{n:02x}::/56")
            .parse::<Ipv6Prefix>()
            .unwrap(),
        preferred: 1800,
        valid: 3600,
    });
    e.clt_time = 10 + u32::from(n);
    e.peer_address = Some(a(&format!("fe80::{n:x}")));
    e.interface_id = Some(HexBytes(format!("port{n}").into_bytes()));
    e.remote_id = Some(RemoteId {
        enterprise: 4491,
        id: HexBytes(vec![n, n]),
    });
    e.relay_id = Some(HexBytes(RELAY.to_vec()));
    e
}

/// Clients 1..=3 on LINK1, client 4 on LINK2, client 1 also on LINK2, client 5 with only a
/// zero-lifetime lease on LINK2.
fn table() -> LeaseTable {
    let mut on2 = entry(1, LINK2);
    on2.addrs[0].addr = a("2001:db8:2::1:1");
    on2.prefixes.clear();
    let mut dead = entry(5, LINK2);
    dead.addrs[0].valid = 0;
    dead.prefixes.clear();
    LeaseTable::from_entries([
        entry(1, LINK1),
        entry(2, LINK1),
        entry(3, LINK1),
        entry(4, LINK2),
        on2,
        dead,
    ])
}

fn duid(n: u8) -> Vec<u8> {
    vec![0, 3, 0, 1, 0x0a, 0, 0, 0, 0, n]
}

#[test]
fn table_round_trips_through_json_lines() {
    let t = table();
    let text = t.to_json_lines();
    let back = LeaseTable::parse(&format!("# comment\n\n{text}")).unwrap();
    assert_eq!(back.entries(), t.entries());
    let err = LeaseTable::parse("{\"duid\":\"zz\",\"link\":\"::\"}").unwrap_err();
    assert!(err.to_string().starts_with("line 1:"), "{err}");
}

#[test]
fn decisions_follow_rfc5007_and_rfc5460() {
    let t = table();
    let q = |ty: u8, link: &str| Query::new(ty, a(link));
    let by_addr = |addr: &str, link: &str| Query {
        addr: Some(a(addr)),
        ..q(answer::QUERY_BY_ADDRESS, link)
    };
    // Address inside IA_NA, and inside a delegated prefix.
    assert_eq!(
        decide(&t, &by_addr("2001:db8:1::2", "::"), Transport::Udp),
        Decision::Bindings(vec![1])
    );
    assert_eq!(
        decide(&t, &by_addr("2001:db8:103:ff::9", "::"), Transport::Udp),
        Decision::Bindings(vec![2])
    );
    assert_eq!(
        decide(&t, &by_addr("2001:db8:9::1", "::"), Transport::Udp),
        Decision::NoBinding
    );
    // Right address, wrong (but served) link: no binding; unknown link: NotConfigured.
    assert_eq!(
        decide(&t, &by_addr("2001:db8:1::2", LINK2), Transport::Udp),
        Decision::NoBinding
    );
    assert!(matches!(
        decide(
            &t,
            &by_addr("2001:db8:1::2", "2001:db8:77::1"),
            Transport::Udp
        ),
        Decision::Status(9, _)
    ));
    // Missing IAADDR.
    assert!(matches!(
        decide(&t, &q(1, "::"), Transport::Udp),
        Decision::Status(8, _)
    ));
    // Client 1 is on two links: UDP says LQ_CLIENT_LINK, TCP sends both.
    let by_cid = |n: u8, link: &str| Query {
        client_id: Some(duid(n)),
        ..q(answer::QUERY_BY_CLIENTID, link)
    };
    assert_eq!(
        decide(&t, &by_cid(1, "::"), Transport::Udp),
        Decision::ClientLinks(vec![a(LINK1), a(LINK2)])
    );
    assert_eq!(
        decide(&t, &by_cid(1, "::"), Transport::Tcp),
        Decision::Bindings(vec![0, 4])
    );
    assert_eq!(
        decide(&t, &by_cid(1, LINK2), Transport::Udp),
        Decision::Bindings(vec![4])
    );
    // Zero valid lifetime only: no binding.
    assert_eq!(
        decide(&t, &by_cid(5, "::"), Transport::Udp),
        Decision::NoBinding
    );
    // Bulk types: NotAllowed on UDP, answered on TCP.
    let by_link = q(answer::QUERY_BY_LINK_ADDRESS, LINK1);
    assert!(matches!(
        decide(&t, &by_link, Transport::Udp),
        Decision::Status(10, _)
    ));
    assert_eq!(
        decide(&t, &by_link, Transport::Tcp),
        Decision::Bindings(vec![0, 1, 2])
    );
    let by_relay = Query {
        relay_id: Some(RELAY.to_vec()),
        ..q(answer::QUERY_BY_RELAY_ID, "::")
    };
    assert_eq!(
        decide(&t, &by_relay, Transport::Tcp),
        Decision::Bindings(vec![0, 1, 2, 3, 4])
    );
    let by_remote = Query {
        remote_id: Some(RemoteId {
            enterprise: 4491,
            id: HexBytes(vec![4, 4]),
        }),
        ..q(answer::QUERY_BY_REMOTE_ID, "::")
    };
    assert_eq!(
        decide(&t, &by_remote, Transport::Tcp),
        Decision::Bindings(vec![3])
    );
    assert!(matches!(
        decide(&t, &q(42, "::"), Transport::Tcp),
        Decision::Status(7, _)
    ));
}

#[test]
fn fault_rules_pick_by_number_type_and_transport() {
    let plan = FaultPlan::always(Faults {
        delay_ms: 5,
        ..Faults::default()
    })
    .with_rule(FaultRule::nth(
        2,
        3,
        Faults {
            drop: true,
            ..Faults::default()
        },
    ))
    .with_rule(FaultRule {
        query_type: Some(4),
        transport: Some(refserver::RuleTransport::Tcp),
        faults: Faults {
            reset_after_data: Some(7),
            ..Faults::default()
        },
        ..FaultRule::default()
    });
    assert_eq!(plan.for_query(1, 1, Transport::Udp).delay_ms, 5);
    assert!(plan.for_query(2, 1, Transport::Udp).drop);
    assert!(plan.for_query(3, 4, Transport::Tcp).drop);
    assert_eq!(
        plan.for_query(4, 4, Transport::Tcp).reset_after_data,
        Some(7)
    );
    assert_eq!(plan.for_query(4, 4, Transport::Udp).delay_ms, 5);
    let json = serde_json::to_string(&plan).unwrap();
    assert_eq!(serde_json::from_str::<FaultPlan>(&json).unwrap(), plan);
    let mut m = vec![1, 2, 3, 4];
    Corrupt::Flip { at: 1, xor: 0xff }.apply(&mut m);
    assert_eq!(m, [1, 0xfd, 3, 4]);
    Corrupt::Truncate(2).apply(&mut m);
    assert_eq!(m, [1, 0xfd]);
}

// ---- UDP on loopback ----

fn requestor_duid() -> Duid {
    Duid::ll_ethernet([0x02, 0, 0, 0, 0, 0x99])
}

fn leasequery(xid: u32, q: LqQuery) -> Vec<u8> {
    let mut m = ClientMessage::new(MessageType::LEASEQUERY, xid);
    m.options.push(DhcpOption::ClientId(requestor_duid()));
    m.options.push(DhcpOption::LqQuery(q));
    Message::from(m).to_vec().unwrap()
}

fn by_address(addr: &str, link: &str, relay_data: bool) -> LqQuery {
    let mut q = LqQuery::new(QueryType::BY_ADDRESS, a(link));
    q.options
        .push(DhcpOption::IaAddr(IaAddr::new(a(addr), 0, 0)));
    if relay_data {
        q.options
            .push(DhcpOption::Oro(vec![OptionCode::LQ_RELAY_DATA]));
    }
    q
}

struct Udp {
    srv: RefServer,
    server: SocketAddr,
    client: UdpSocket,
}

fn udp_server(config: ServerConfig, alt: bool) -> Udp {
    let srv = RefServer::new(table(), config);
    let alt = alt.then(|| UdpSocket::bind("[::1]:0").unwrap());
    let server = srv
        .serve_udp(UdpSocket::bind("[::1]:0").unwrap(), alt)
        .unwrap();
    let client = UdpSocket::bind("[::1]:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    Udp {
        srv,
        server,
        client,
    }
}

impl Udp {
    fn ask(&self, xid: u32, q: LqQuery) {
        self.client
            .send_to(&leasequery(xid, q), self.server)
            .unwrap();
    }

    fn recv(&self) -> Option<(ClientMessage, SocketAddr)> {
        let mut buf = [0u8; 4096];
        let (n, from) = self.client.recv_from(&mut buf).ok()?;
        match Message::parse(&buf[..n]).unwrap() {
            Message::Client(m) => Some((m, from)),
            other => panic!("relay message from server: {other:?}"),
        }
    }
}

#[test]
fn udp_query_by_address_returns_client_data_with_relay_data() {
    let u = udp_server(ServerConfig::default(), false);
    u.ask(0x10203, by_address("2001:db8:102::1", "::", true));
    let (m, from) = u.recv().expect("reply");
    assert_eq!(from, u.server);
    assert_eq!(m.msg_type, MessageType::LEASEQUERY_REPLY);
    assert_eq!(m.transaction_id, 0x10203);
    assert_eq!(m.options.client_id(), Some(&requestor_duid()));
    assert_eq!(m.options.server_id().unwrap().to_vec(), u.srv.server_duid());
    assert_eq!(m.options.status_code(), None);
    let cd = m.options.client_data().expect("CLIENT_DATA");
    assert_eq!(cd.client_id().unwrap().to_vec(), duid(2));
    let addrs: Vec<_> = cd
        .addresses()
        .map(|x| (x.addr, x.preferred, x.valid))
        .collect();
    assert_eq!(addrs, [(a("2001:db8:1::2"), 3600, 7200)]);
    let pfx: Vec<_> = cd
        .prefixes()
        .map(|p| p.prefix().unwrap().to_string())
        .collect();
    assert_eq!(pfx, ["2001:db8:102::/56"]);
    assert_eq!(cd.clt_time(), Some(12));
    let rd = cd.relay_data().expect("LQ_RELAY_DATA asked by ORO");
    assert_eq!(rd.relay.link_address, a(LINK1));
    assert_eq!(rd.relay.peer_address, a("fe80::2"));
    assert_eq!(rd.relay.options.interface_id_bytes().unwrap(), b"port2");
    // Without ORO: no relay data.
    u.ask(7, by_address("2001:db8:1::2", "::", false));
    let (m, _) = u.recv().unwrap();
    assert!(m.options.client_data().unwrap().relay_data().is_none());
    assert_eq!(u.srv.stats().udp_queries, 2);
    assert_eq!(u.srv.queries()[0].query_type, 1);
}

#[test]
fn udp_client_link_not_configured_and_no_binding() {
    let u = udp_server(ServerConfig::default(), false);
    let mut q = LqQuery::new(QueryType::BY_CLIENTID, Ipv6Addr::UNSPECIFIED);
    q.options.push(DhcpOption::ClientId(Duid::from(&duid(1))));
    u.ask(1, q);
    let (m, _) = u.recv().unwrap();
    let links = m
        .options
        .iter()
        .find_map(|o| match o {
            DhcpOption::LqClientLink(l) => Some(l.clone()),
            _ => None,
        })
        .expect("LQ_CLIENT_LINK");
    assert_eq!(links, [a(LINK1), a(LINK2)]);
    u.ask(2, by_address("2001:db8:1::2", "2001:db8:99::1", false));
    let (m, _) = u.recv().unwrap();
    assert_eq!(m.options.status_code(), Some(StatusCode::NOT_CONFIGURED));
    u.ask(3, by_address("2001:db8:1::77", "::", false));
    let (m, _) = u.recv().unwrap();
    assert_eq!(m.options.status_code(), None);
    assert!(m.options.client_data().is_none());
    // A bulk query type over UDP.
    u.ask(4, LqQuery::new(QueryType::BY_LINK_ADDRESS, a(LINK1)));
    let (m, _) = u.recv().unwrap();
    assert_eq!(m.options.status_code(), Some(StatusCode::NOT_ALLOWED));
    // A LEASEQUERY without CLIENTID is discarded.
    let mut bare = ClientMessage::new(MessageType::LEASEQUERY, 5);
    bare.options.push(DhcpOption::LqQuery(by_address(
        "2001:db8:1::2",
        "::",
        false,
    )));
    u.client
        .send_to(&Message::from(bare).to_vec().unwrap(), u.server)
        .unwrap();
    assert!(u.recv().is_none());
    assert_eq!(u.srv.stats().udp_discarded, 1);
}

#[test]
fn udp_faults_drop_duplicate_status_corrupt_srsn() {
    let u = udp_server(
        ServerConfig {
            srsn_option: Some(65001),
            ..ServerConfig::default()
        },
        false,
    );
    let q = || by_address("2001:db8:1::1", "::", false);
    u.srv.set_faults(
        FaultPlan::default()
            .with_rule(FaultRule::nth(
                1,
                2,
                Faults {
                    drop: true,
                    ..Faults::default()
                },
            ))
            .with_rule(FaultRule::nth(
                3,
                3,
                Faults {
                    duplicate: 1,
                    ..Faults::default()
                },
            ))
            .with_rule(FaultRule::nth(
                4,
                4,
                Faults {
                    status: Some(10),
                    ..Faults::default()
                },
            ))
            .with_rule(FaultRule::nth(
                5,
                5,
                Faults {
                    corrupt: Some(Corrupt::Truncate(3)),
                    ..Faults::default()
                },
            )),
    );
    u.ask(1, q());
    assert!(u.recv().is_none(), "query 1 dropped");
    u.ask(1, q());
    assert!(u.recv().is_none(), "query 2 dropped");
    u.ask(1, q());
    let srsn = |m: &ClientMessage| {
        m.options
            .iter()
            .find_map(|o| match o {
                DhcpOption::Unknown { code, data } if code.0 == 65001 => {
                    Some(u32::from_be_bytes(data.as_slice().try_into().unwrap()))
                }
                _ => None,
            })
            .expect("srsn option")
    };
    let (m1, _) = u.recv().expect("first copy");
    let (m2, _) = u.recv().expect("duplicate");
    assert_eq!(m1, m2);
    assert_eq!(srsn(&m1), 1);
    u.ask(2, q());
    let (m, _) = u.recv().unwrap();
    assert_eq!(m.options.status_code(), Some(StatusCode::NOT_ALLOWED));
    assert_eq!(srsn(&m), 2);
    u.ask(3, q());
    let mut buf = [0u8; 512];
    let (n, _) = u.client.recv_from(&mut buf).unwrap();
    assert_eq!(n, 3, "truncated answer");
    assert!(Message::parse(&buf[..n]).is_err());
}

#[test]
fn udp_faults_reorder_wrong_source_and_delay() {
    let u = udp_server(ServerConfig::default(), true);
    u.srv.set_faults(
        FaultPlan::default()
            .with_rule(FaultRule::nth(
                1,
                1,
                Faults {
                    reorder: true,
                    ..Faults::default()
                },
            ))
            .with_rule(FaultRule::nth(
                3,
                3,
                Faults {
                    wrong_source: true,
                    ..Faults::default()
                },
            ))
            .with_rule(FaultRule::nth(
                4,
                4,
                Faults {
                    delay_ms: 150,
                    ..Faults::default()
                },
            )),
    );
    u.ask(11, by_address("2001:db8:1::1", "::", false));
    // Query 11 must be the server's first (the reordered one) before 22 is sent.
    wait_for(
        "the server to read query 11",
        Duration::from_secs(5),
        || u.srv.stats().udp_queries >= 1,
    );
    u.ask(22, by_address("2001:db8:1::2", "::", false));
    let (first, _) = u.recv().unwrap();
    let (second, _) = u.recv().unwrap();
    assert_eq!(
        (first.transaction_id, second.transaction_id),
        (22, 11),
        "answer 1 overtaken by answer 2"
    );
    u.ask(33, by_address("2001:db8:1::1", "::", false));
    let (m, from) = u.recv().unwrap();
    assert_eq!(m.transaction_id, 33);
    assert_ne!(from, u.server, "answer from the alternate socket");
    let t0 = std::time::Instant::now();
    u.ask(44, by_address("2001:db8:1::1", "::", false));
    let (m, _) = u.recv().unwrap();
    assert_eq!(m.transaction_id, 44);
    assert!(t0.elapsed() >= Duration::from_millis(150));
}

// ---- TCP on loopback ----

fn tcp_server(config: ServerConfig) -> (RefServer, SocketAddr) {
    let srv = RefServer::new(table(), config);
    let addr = srv
        .serve_tcp(std::net::TcpListener::bind("[::1]:0").unwrap())
        .unwrap();
    (srv, addr)
}

fn send_query(s: &mut TcpStream, xid: u32, q: LqQuery) {
    let mut m = ClientMessage::new(MessageType::LEASEQUERY, xid);
    m.options.push(DhcpOption::ClientId(requestor_duid()));
    m.options.push(DhcpOption::LqQuery(q));
    s.write_all(&frame_to_vec(&m.into()).unwrap()).unwrap();
}

/// Reads messages until `stop` says so, the peer closes, or an error; returns them and how
/// the stream ended.
fn read_msgs(
    s: &mut TcpStream,
    stop: impl Fn(&[ClientMessage]) -> bool,
) -> (Vec<ClientMessage>, Option<std::io::ErrorKind>) {
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut dec = FrameDecoder::new(FrameConfig::default());
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        while let Some(f) = dec.next_frame().unwrap() {
            match Message::parse(f).unwrap() {
                Message::Client(m) => out.push(m),
                r => panic!("relay message on TCP: {r:?}"),
            }
        }
        if stop(&out) {
            return (out, None);
        }
        match s.read(&mut buf) {
            Ok(0) => return (out, Some(std::io::ErrorKind::UnexpectedEof)),
            Ok(n) => dec.push(&buf[..n]).unwrap(),
            Err(e) => return (out, Some(e.kind())),
        }
    }
}

fn done(v: &[ClientMessage]) -> bool {
    v.last()
        .is_some_and(|m| m.msg_type == MessageType::LEASEQUERY_DONE)
}

fn types(v: &[ClientMessage]) -> Vec<u8> {
    v.iter().map(|m| m.msg_type.0).collect()
}

#[test]
fn tcp_by_link_streams_reply_data_done() {
    let (srv, addr) = tcp_server(ServerConfig::default());
    let mut s = TcpStream::connect(addr).unwrap();
    send_query(
        &mut s,
        0x77,
        LqQuery::new(QueryType::BY_LINK_ADDRESS, a(LINK1)),
    );
    let (msgs, _) = read_msgs(&mut s, done);
    assert_eq!(types(&msgs), [15, 17, 17, 16]);
    assert!(msgs.iter().all(|m| m.transaction_id == 0x77));
    let clients: Vec<Vec<u8>> = msgs[..3]
        .iter()
        .map(|m| {
            m.options
                .client_data()
                .unwrap()
                .client_id()
                .unwrap()
                .to_vec()
        })
        .collect();
    assert_eq!(clients, [duid(1), duid(2), duid(3)]);
    assert!(msgs[0].options.server_id().is_some());
    // A second query on the same connection, by relay-id over every link: 5 bindings.
    let mut q = LqQuery::new(QueryType::BY_RELAY_ID, Ipv6Addr::UNSPECIFIED);
    q.options.push(DhcpOption::RelayId(Duid::from(&RELAY)));
    q.options
        .push(DhcpOption::Oro(vec![OptionCode::LQ_RELAY_DATA]));
    send_query(&mut s, 0x78, q);
    let (msgs, _) = read_msgs(&mut s, done);
    assert_eq!(types(&msgs), [15, 17, 17, 17, 17, 16]);
    let links: Vec<Ipv6Addr> = msgs[..5]
        .iter()
        .map(|m| {
            m.options
                .client_data()
                .unwrap()
                .relay_data()
                .unwrap()
                .relay
                .link_address
        })
        .collect();
    assert_eq!(links, [a(LINK1), a(LINK1), a(LINK1), a(LINK2), a(LINK2)]);
    // No binding: a REPLY alone.
    let mut q = LqQuery::new(QueryType::BY_REMOTE_ID, Ipv6Addr::UNSPECIFIED);
    q.options.push(DhcpOption::RemoteId {
        enterprise: 1,
        remote_id: vec![9],
    });
    send_query(&mut s, 0x79, q);
    let (msgs, _) = read_msgs(&mut s, |v| !v.is_empty());
    assert_eq!(types(&msgs), [15]);
    assert!(msgs[0].options.client_data().is_none());
    let st = srv.stats();
    assert_eq!(
        (st.tcp_queries, st.tcp_data_sent, st.tcp_done_sent),
        (3, 6, 2)
    );
}

#[test]
fn tcp_faults_reset_terminate_and_silence() {
    let (srv, addr) = tcp_server(ServerConfig::default());
    let q = || LqQuery::new(QueryType::BY_LINK_ADDRESS, a(LINK1));
    srv.set_faults(
        FaultPlan::default()
            .with_rule(FaultRule::nth(
                1,
                1,
                Faults {
                    reset_after_data: Some(1),
                    ..Faults::default()
                },
            ))
            .with_rule(FaultRule::nth(
                2,
                2,
                Faults {
                    terminate_after_data: Some(1),
                    ..Faults::default()
                },
            ))
            .with_rule(FaultRule::nth(
                3,
                3,
                Faults {
                    drop: true,
                    ..Faults::default()
                },
            )),
    );
    let mut s = TcpStream::connect(addr).unwrap();
    send_query(&mut s, 1, q());
    let (msgs, end) = read_msgs(&mut s, done);
    assert_eq!(types(&msgs), [15, 17]);
    assert_eq!(end, Some(std::io::ErrorKind::ConnectionReset));

    let mut s = TcpStream::connect(addr).unwrap();
    send_query(&mut s, 2, q());
    let (msgs, end) = read_msgs(&mut s, |_| false);
    assert_eq!(types(&msgs), [15, 17, 16]);
    assert_eq!(
        msgs[2].options.status_code(),
        Some(StatusCode::QUERY_TERMINATED)
    );
    assert_eq!(
        end,
        Some(std::io::ErrorKind::UnexpectedEof),
        "server closes"
    );

    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    send_query(&mut s, 3, q());
    let mut b = [0u8; 16];
    let e = s.read(&mut b).unwrap_err();
    assert!(matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
    assert_eq!(srv.stats().tcp_resets, 1);
}

#[test]
fn tcp_pipelining_sequential_interleaved_and_dropped() {
    let both = |s: &mut TcpStream| {
        let mut bytes = Vec::new();
        for (xid, link) in [(1, LINK1), (2, LINK2)] {
            let mut m = ClientMessage::new(MessageType::LEASEQUERY, xid);
            m.options.push(DhcpOption::ClientId(requestor_duid()));
            m.options.push(DhcpOption::LqQuery(LqQuery::new(
                QueryType::BY_LINK_ADDRESS,
                a(link),
            )));
            bytes.extend(frame_to_vec(&m.into()).unwrap());
        }
        s.write_all(&bytes).unwrap();
    };
    let two_dones = |v: &[ClientMessage]| {
        v.iter()
            .filter(|m| m.msg_type == MessageType::LEASEQUERY_DONE)
            .count()
            == 2
    };
    // Sequential: all of query 1, then all of query 2.
    let (_srv, addr) = tcp_server(ServerConfig::default());
    let mut s = TcpStream::connect(addr).unwrap();
    both(&mut s);
    let (msgs, _) = read_msgs(&mut s, two_dones);
    let xids: Vec<u32> = msgs.iter().map(|m| m.transaction_id).collect();
    assert_eq!(xids, [1, 1, 1, 1, 2, 2, 2]);
    // Interleaved: round-robin per message.
    let (_srv, addr) = tcp_server(ServerConfig {
        tcp_interleave: true,
        ..ServerConfig::default()
    });
    let mut s = TcpStream::connect(addr).unwrap();
    both(&mut s);
    let (msgs, _) = read_msgs(&mut s, two_dones);
    let xids: Vec<u32> = msgs.iter().map(|m| m.transaction_id).collect();
    assert_eq!(xids, [1, 2, 1, 2, 1, 2, 1]);
    // Buggy server: the second query in the same read is dropped silently.
    let (srv, addr) = tcp_server(ServerConfig {
        tcp_drop_pipelined: true,
        ..ServerConfig::default()
    });
    let mut s = TcpStream::connect(addr).unwrap();
    both(&mut s);
    let (msgs, _) = read_msgs(&mut s, done);
    assert!(msgs.iter().all(|m| m.transaction_id == 1));
    wait_for(
        "the pipelined query counted",
        Duration::from_secs(5),
        || srv.stats().tcp_pipelined_dropped >= 1,
    );
    assert_eq!(srv.stats().tcp_pipelined_dropped, 1);
}

#[test]
fn stats_after_tcp_counts_queries_the_server_reads_after_the_requestor_left() {
    // A requestor that gives up closes its connection; the server reads the query still
    // waiting in the socket when it gets to it, maybe after the requestor's side has finished.
    let (srv, addr) = tcp_server(ServerConfig::default());
    srv.set_faults(FaultPlan::always(Faults {
        drop: true,
        ..Faults::default()
    }));
    for xid in 1..=8 {
        let mut s = TcpStream::connect(addr).unwrap();
        send_query(
            &mut s,
            xid,
            LqQuery::new(QueryType::BY_LINK_ADDRESS, a(LINK1)),
        );
    }
    let st = srv.stats_after_tcp(8, Duration::from_secs(10));
    assert_eq!((st.tcp_connections, st.tcp_queries), (8, 8), "{st:?}");
    assert_eq!(srv.queries().len(), 8);
}

#[test]
fn tcp_connection_limit() {
    let (srv, addr) = tcp_server(ServerConfig {
        max_tcp_conns: 1,
        ..ServerConfig::default()
    });
    let _first = TcpStream::connect(addr).unwrap();
    wait_for(
        "the first connection accepted",
        Duration::from_secs(5),
        || srv.stats().tcp_connections >= 1,
    );
    let mut second = TcpStream::connect(addr).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut b = [0u8; 4];
    assert_closed(second.read(&mut b), "second connection");
    assert_eq!(srv.stats().tcp_refused, 1);
}

#[test]
fn cli_binary_serves_a_table_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.jsonl");
    std::fs::write(&path, table().to_json_lines()).unwrap();
    let mut child = std::process::Command::new(support::bin::lqrefserver())
        .args(["--table", path.to_str().unwrap()])
        .args(["--udp", "[::1]:0", "--srsn-option", "65000"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert!(line.starts_with("lqrefserver: ready udp=[::1]:"), "{line}");
    assert!(line.trim_end().ends_with("bindings=6"), "{line}");
    let server: SocketAddr = line["lqrefserver: ready udp=".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let client = UdpSocket::bind("[::1]:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    client
        .send_to(
            &leasequery(9, by_address("2001:db8:1::3", "::", false)),
            server,
        )
        .unwrap();
    let mut buf = [0u8; 1024];
    let got = client.recv_from(&mut buf);
    let _ = child.kill();
    let _ = child.wait();
    let (n, _) = got.expect("answer from the CLI server");
    let Message::Client(m) = Message::parse(&buf[..n]).unwrap() else {
        panic!("not a client message")
    };
    let cd = m.options.client_data().expect("CLIENT_DATA");
    assert_eq!(cd.client_id().unwrap().to_vec(), duid(3));
}

#[test]
fn profiles_narrow_and_refuse_like_isc_and_kea() {
    use answer::{Only, Pick, Profile, decide_as};
    let t = table();
    let by_addr = |addr: &str| Query {
        addr: Some(a(addr)),
        ..Query::new(answer::QUERY_BY_ADDRESS, Ipv6Addr::UNSPECIFIED)
    };
    let by_cid = |n: u8, link: &str| Query {
        client_id: Some(duid(n)),
        ..Query::new(answer::QUERY_BY_CLIENTID, a(link))
    };
    let only = |entry: usize, o: Only| {
        Decision::Leases(vec![Pick {
            entry,
            only: Some(o),
        }])
    };
    let pfx2: Ipv6Prefix = "2001:db8:102::/56".parse().unwrap();
    // By address: the ideal server returns the whole client; ISC and Kea only the lease asked.
    let q = by_addr("2001:db8:1::2");
    assert_eq!(decide(&t, &q, Transport::Udp), Decision::Bindings(vec![1]));
    for p in [Profile::Isc, Profile::Kea] {
        assert_eq!(
            decide_as(p, &t, &q, Transport::Udp),
            only(1, Only::Addr(a("2001:db8:1::2"))),
            "{p:?}"
        );
    }
    // An address inside a delegated prefix: Kea finds the prefix, ISC says NotConfigured.
    let q = by_addr("2001:db8:102:ff::9");
    assert_eq!(
        decide_as(Profile::Kea, &t, &q, Transport::Udp),
        only(1, Only::Prefix(pfx2))
    );
    assert!(matches!(
        decide_as(Profile::Isc, &t, &q, Transport::Udp),
        Decision::Status(9, "Address not in a pool")
    ));
    // By client-id: ISC does not know the query type; Kea answers like the RFC.
    assert!(matches!(
        decide_as(Profile::Isc, &t, &by_cid(2, LINK1), Transport::Udp),
        Decision::Status(7, _)
    ));
    // Kea names the links by their subnet (here the /64), as recorded in tests/data/kea/.
    assert_eq!(
        decide_as(Profile::Kea, &t, &by_cid(1, "::"), Transport::Udp),
        Decision::ClientLinks(vec![a("2001:db8:1::"), a("2001:db8:2::")])
    );
    // Bulk: Kea sends one CLIENT_DATA per lease, address and prefix apart.
    let by_link = Query::new(answer::QUERY_BY_LINK_ADDRESS, a(LINK1));
    let picks = decide_as(Profile::Kea, &t, &by_link, Transport::Tcp).picks();
    assert_eq!(picks.len(), 6, "{picks:?}");
    assert!(picks.iter().all(|p| p.only.is_some()));
    assert_eq!(
        picks[..2],
        [
            Pick {
                entry: 0,
                only: Some(Only::Addr(a("2001:db8:1::1")))
            },
            Pick {
                entry: 0,
                only: Some(Only::Prefix("2001:db8:101::/56".parse().unwrap()))
            }
        ]
    );
}

#[test]
fn isc_profile_answers_port_546_with_absolute_clt_and_configured_lifetimes() {
    use refserver::Profile;
    // Our client socket sits on port 546 (as a requestor facing ISC dhcpd must).
    let srv = RefServer::new(table(), ServerConfig::profiled(Profile::Isc, 1));
    let server = srv
        .serve_udp(UdpSocket::bind("[::1]:0").unwrap(), None)
        .unwrap();
    let listener = UdpSocket::bind("[::1]:546").unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let sender = UdpSocket::bind("[::1]:0").unwrap();
    sender
        .send_to(
            &leasequery(5, by_address("2001:db8:1::2", "::", true)),
            server,
        )
        .unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = listener.recv_from(&mut buf).expect("reply on port 546");
    let Message::Client(m) = Message::parse(&buf[..n]).unwrap() else {
        panic!("not a client message")
    };
    let cd = m.options.client_data().unwrap();
    assert_eq!(cd.prefixes().count(), 0, "only the lease asked about");
    assert!(
        cd.relay_data().is_none(),
        "no relay data although the ORO asked"
    );
    let addrs: Vec<_> = cd.addresses().map(|x| (x.preferred, x.valid)).collect();
    assert_eq!(addrs, [(3600, 7200)], "configured lifetimes");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let clt = u64::from(cd.clt_time().unwrap());
    assert!(
        clt.abs_diff(now - 12) <= 5,
        "absolute Unix CLT_TIME: {clt} vs {now}"
    );
    assert_ne!(srv.server_duid(), ServerConfig::default().server_duid);
    // No bulk leasequery: the TCP listener is closed.
    let addr = srv
        .serve_tcp(std::net::TcpListener::bind("[::1]:0").unwrap())
        .unwrap();
    assert!(TcpStream::connect(addr).is_err(), "connection refused");
}

#[test]
fn kea_profile_relay_data_top_level_remaining_lifetimes_silence_and_one_lease_per_data() {
    use refserver::Profile;
    let mut cfg = ServerConfig::profiled(Profile::Kea, 2);
    cfg.requesters = Some(vec!["::1".parse().unwrap()]);
    let u = udp_server(cfg, false);
    // ORO or not, relay data comes at the top level, beside CLIENT_DATA, with a Success status.
    u.ask(9, by_address("2001:db8:102::77", "::", false));
    let (m, _) = u.recv().expect("reply");
    let cd = m.options.client_data().unwrap();
    assert!(cd.relay_data().is_none());
    assert_eq!(
        cd.addresses().count(),
        0,
        "only the prefix containing the address"
    );
    let p: Vec<_> = cd.prefixes().map(|p| (p.preferred, p.valid)).collect();
    assert_eq!(p, [(1800 - 12, 3600 - 12)], "remaining lifetimes");
    assert_eq!(cd.clt_time(), Some(12), "elapsed CLT_TIME");
    let top = m.options.iter().find_map(|o| match o {
        DhcpOption::LqRelayData(r) => Some(r.relay.peer_address),
        _ => None,
    });
    assert_eq!(top, Some(a("fe80::2")));
    assert_eq!(m.options.status_code(), Some(StatusCode::SUCCESS));
    // Bulk by link: one DATA per lease, relay data inside each CLIENT_DATA.
    let mut tcfg = ServerConfig::profiled(Profile::Kea, 2);
    tcfg.requesters = Some(vec!["::1".parse().unwrap()]);
    let (srv, addr) = tcp_server(tcfg);
    let mut s = TcpStream::connect(addr).unwrap();
    send_query(
        &mut s,
        3,
        LqQuery::new(QueryType::BY_LINK_ADDRESS, a(LINK1)),
    );
    let (msgs, _) = read_msgs(&mut s, done);
    assert_eq!(types(&msgs), [15, 17, 17, 17, 17, 17, 16]);
    for m in &msgs[..6] {
        let cd = m.options.client_data().unwrap();
        assert_eq!(cd.addresses().count() + cd.prefixes().count(), 1);
        assert!(cd.relay_data().is_some(), "relay data inside in bulk");
    }
    assert_eq!(srv.stats().tcp_data_sent, 5);
    // An unlisted requester gets silence: no reply at all.
    let mut other = ServerConfig::profiled(Profile::Kea, 2);
    other.requesters = Some(vec!["2001:db8::99".parse().unwrap()]);
    let u = udp_server(other, false);
    u.ask(10, by_address("2001:db8:1::2", "::", true));
    assert!(u.recv().is_none(), "silence, not NotAllowed");
    assert_eq!(u.srv.stats().udp_discarded, 1);
}

/// What Kea 3.0.4's lease_query hook sends over UDP, as its source builds it (see
/// docs/interop.md for what is pinned by a recording and what by reading): options in code order
/// (CLIENTID, SERVERID, STATUS_CODE, CLIENT_DATA, LQ_RELAY_DATA), a Success status with Kea's
/// text on every answer, "no active lease" included, LQ_RELAY_DATA whose peer-address is the
/// relay level's peer-address, the query's link-address ignored by address, and the bulk query
/// types refused as unknown over UDP.
#[test]
fn kea_profile_answers_in_option_code_order_with_keas_status_texts() {
    use refserver::Profile;
    let codes = |m: &ClientMessage| m.options.0.iter().map(|o| o.code().0).collect::<Vec<_>>();
    let status = |m: &ClientMessage| {
        let s = m.options.status().expect("Kea always sends a status");
        (s.code.0, String::from_utf8_lossy(&s.message).into_owned())
    };
    let u = udp_server(ServerConfig::profiled(Profile::Kea, 3), false);
    // A leased address, asked with a link-address Kea does not serve: found anyway.
    u.ask(1, by_address("2001:db8:1::2", "2001:db8:99::1", false));
    let (m, _) = u.recv().expect("reply");
    assert_eq!(codes(&m), [1, 2, 13, 45, 47]);
    assert_eq!(status(&m), (0, "active lease found".into()));
    let top = m
        .options
        .lq_relay_data()
        .expect("relay data at the top level");
    assert_eq!(
        top.peer_address,
        a("fe80::2"),
        "the relay level's peer-address"
    );
    assert_eq!(top.relay.peer_address, a("fe80::2"));
    // No binding: Success with a text, not a bare reply.
    u.ask(2, by_address("2001:db8:1::77", "::", false));
    let (m, _) = u.recv().expect("reply");
    assert_eq!(codes(&m), [1, 2, 13]);
    assert_eq!(status(&m), (0, "no active lease".into()));
    // A client on two links: LQ_CLIENT_LINK with a Success status, in code order.
    let mut q = LqQuery::new(QueryType::BY_CLIENTID, Ipv6Addr::UNSPECIFIED);
    q.options.push(DhcpOption::ClientId(Duid::from(&duid(1))));
    u.ask(3, q);
    let (m, _) = u.recv().expect("reply");
    assert_eq!(codes(&m), [1, 2, 13, 48]);
    assert_eq!(status(&m), (0, "active lease(s) found".into()));
    // A bulk query type over UDP: UnknownQueryType (RFC 5460 would say NotAllowed).
    u.ask(4, LqQuery::new(QueryType::BY_LINK_ADDRESS, a(LINK1)));
    let (m, _) = u.recv().expect("reply");
    assert_eq!(codes(&m), [1, 2, 13]);
    assert_eq!(status(&m), (7, "unknown query-type".into()));
    // By address without IAADDR: MalformedQuery with Kea's text.
    u.ask(
        5,
        LqQuery::new(QueryType::BY_ADDRESS, Ipv6Addr::UNSPECIFIED),
    );
    let (m, _) = u.recv().expect("reply");
    assert_eq!(status(&m), (8, "missing D6O_IAADDR".into()));
}

#[test]
fn srsn_start_sets_the_first_sequence_number() {
    let cfg = ServerConfig {
        srsn_option: Some(65001),
        srsn_start: 100,
        ..ServerConfig::default()
    };
    let u = udp_server(cfg, false);
    u.ask(1, by_address("2001:db8:1::2", "::", false));
    let (m, _) = u.recv().unwrap();
    assert_eq!(m.options.srsn(65001), Some(101));
}
