//! The requestor's tokio shell over real UDP on loopback against the in-repo reference
//! leasequery server (tests/support/src/refserver/), fault by fault: delay, drop, duplicate, corrupt,
//! reorder, a wrong source address, any status; failover, parallel collection, CLIENT_LINK
//! follow-ups, and the `lqagent query` binary's output and exit codes.
//!
//! Every socket is on [::1] with a kernel-chosen port, so parallel tests never collide (and
//! none needs port 546). Retransmission is sped up (IRT 100 ms) to keep the suite quick.

use support::refserver;
use support::wait::wait_for_async;

use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use lqagent::cache::LeaseKey;
use lqagent::prefix::Ipv6Prefix;
use lqagent::requestor::udp::{self, RequestorHandle, UdpConfig};
use lqagent::requestor::{
    Answer, AnswerVerdict, ClientAnswer, DropReason, Policy, Query, QueryOutcome, RequestorConfig,
    RequestorCounter, RetransmitParams,
};
use lqagent::wire::StatusCode;
use refserver::{
    AddrLease, Corrupt, FaultPlan, FaultRule, Faults, HexBytes, LeaseEntry, LeaseTable,
    PrefixLease, RefServer, ServerConfig,
};

const OUR_DUID: &[u8] = &[0, 3, 0, 1, 2, 0, 0, 0, 0x51, 0x51];
const LINK1: &str = "2001:db8:1::1";
const LINK2: &str = "2001:db8:2::1";

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn duid(n: u8) -> Vec<u8> {
    vec![0, 3, 0, 1, 0x0a, 0, 0, 0, 0, n]
}

/// Client n on `link` holds 2001:db8:N::n and 2001:db8:1nn::/56.
fn entry(n: u8, link: &str) -> LeaseEntry {
    let mut e = LeaseEntry::new(duid(n), a(link));
    e.addrs.push(AddrLease {
        addr: a(&format!("{}::{n:x}", &link[..link.len() - 3])),
        preferred: 3600,
        valid: 7200,
    });
    e.prefixes.push(PrefixLease {
        prefix: format!("2001:db8:1{n:02x}::/56").parse().unwrap(),
        preferred: 1800,
        valid: 3600,
    });
    e.clt_time = 10 + u32::from(n);
    e.peer_address = Some(a(&format!("fe80::{n:x}")));
    e.interface_id = Some(HexBytes(format!("port{n}").into_bytes()));
    e
}

/// Clients 1, 2 on LINK1; client 1 also on LINK2 (so a by-client-id query on `::` gets
/// LQ_CLIENT_LINK).
fn table() -> LeaseTable {
    let mut on2 = entry(1, LINK2);
    on2.addrs[0].addr = a("2001:db8:2::1:1");
    on2.prefixes.clear();
    LeaseTable::from_entries([entry(1, LINK1), entry(2, LINK1), on2])
}

struct Server {
    srv: RefServer,
    addr: SocketAddr,
}

fn server(n: u8) -> Server {
    let cfg = ServerConfig {
        server_duid: vec![0, 3, 0, 1, 2, 0, 0, 0, 5, n],
        ..ServerConfig::default()
    };
    let srv = RefServer::new(table(), cfg);
    let alt = UdpSocket::bind("[::1]:0").unwrap();
    let addr = srv
        .serve_udp(UdpSocket::bind("[::1]:0").unwrap(), Some(alt))
        .unwrap();
    Server { srv, addr }
}

/// A socket that receives queries and never answers: a dead server.
fn dead_server() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("[::1]:0").unwrap();
    let addr = s.local_addr().unwrap();
    (s, addr)
}

fn fast() -> RetransmitParams {
    RetransmitParams {
        irt: Duration::from_millis(100),
        mrt: Duration::from_millis(400),
        mrc: 4,
        mrd: None,
    }
}

fn config(servers: &[SocketAddr], policy: Policy) -> RequestorConfig {
    RequestorConfig {
        servers: servers.to_vec(),
        policy,
        duid: OUR_DUID.into(),
        retransmit: fast(),
        global_rate: None,
        link_rate: None,
        ..RequestorConfig::default()
    }
}

async fn requestor(cfg: RequestorConfig) -> RequestorHandle {
    let (h, _task) = udp::spawn(
        cfg,
        UdpConfig {
            bind: "[::1]:0".parse().unwrap(),
            ..UdpConfig::default()
        },
        &support::tasks::supervisor(),
    )
    .await
    .unwrap();
    h
}

fn first(nth: u64, f: Faults) -> FaultPlan {
    FaultPlan::default().with_rule(FaultRule::nth(1, nth, f))
}

/// The leases of a binding as the cache's one conversion reads them.
fn leased(b: &ClientAnswer) -> Vec<LeaseKey> {
    b.observed
        .leases
        .clone()
        .into_iter()
        .map(|l| l.key)
        .collect()
}

fn only_binding(o: &QueryOutcome) -> &ClientAnswer {
    let v: Vec<_> = o.bindings().collect();
    assert_eq!(v.len(), 1, "one binding expected: {o:#?}");
    v[0]
}

#[tokio::test]
async fn query_by_address_binds_with_everything_the_server_sent() {
    let s = server(1);
    let h = requestor(config(&[s.addr], Policy::Failover)).await;
    let o = h
        .query(Query::by_address(a("2001:db8:1::2")).with_relay_data(true))
        .await
        .unwrap();
    assert_eq!(o.verdict, AnswerVerdict::Bound);
    let b = only_binding(&o);
    assert_eq!(b.client_duid(), duid(2));
    assert_eq!(b.server, s.addr);
    assert_eq!(b.server_duid, s.srv.server_duid());
    assert_eq!(b.clt_time(), 12);
    let mut keys = leased(b);
    keys.sort();
    assert_eq!(
        keys,
        vec![
            LeaseKey::Address(a("2001:db8:1::2")),
            LeaseKey::Prefix("2001:db8:102::/56".parse::<Ipv6Prefix>().unwrap()),
        ]
    );
    assert!(
        b.observed
            .leases
            .clone()
            .iter()
            .all(|l| l.valid >= l.preferred && l.valid > 0)
    );
    let rd = b.relay_data().expect("relay data asked and sent");
    assert_eq!(rd.relay.peer_address, a("fe80::2"));
    assert_eq!(rd.relay.options.interface_id(), Some(&b"port2"[..]));
    // The query the server saw: type 1, link ::, from our socket.
    let q = s.srv.queries();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].query_type, 1);
    assert_eq!(q[0].peer, h.local_addr());
}

#[tokio::test]
async fn unused_address_is_no_binding_and_then_negatively_cached() {
    let s = server(1);
    let mut cfg = config(&[s.addr], Policy::Failover);
    cfg.negative_ttl = Duration::from_secs(60);
    let h = requestor(cfg).await;
    let q = Query::by_address(a("2001:db8:1::99"));
    let o = h.query(q.clone()).await.unwrap();
    assert_eq!(o.verdict, AnswerVerdict::NoBinding);
    assert_eq!(o.answers[0].answer, Answer::NoBinding);
    let again = h.query(q).await.unwrap();
    assert_eq!(again.verdict, AnswerVerdict::NoBinding);
    assert!(again.answers.is_empty(), "answered from the negative cache");
    assert_eq!(s.srv.stats().udp_queries, 1, "the server was asked once");
    assert_eq!(h.stats().get(RequestorCounter::NegativeHits), 1);
}

#[tokio::test]
async fn dropped_replies_are_retransmitted_with_the_same_xid() {
    let s = server(1);
    s.srv.set_faults(first(
        2,
        Faults {
            drop: true,
            ..Faults::default()
        },
    ));
    let h = requestor(config(&[s.addr], Policy::Failover)).await;
    let o = h
        .query(Query::by_address(a("2001:db8:1::1")))
        .await
        .unwrap();
    assert_eq!(o.verdict, AnswerVerdict::Bound);
    assert_eq!(o.answers[0].attempts, 3);
    let xids: Vec<u32> = s.srv.queries().iter().map(|q| q.xid).collect();
    assert_eq!(xids.len(), 3);
    assert!(xids.iter().all(|x| *x == xids[0]), "same xid: {xids:?}");
    // 100 ms then ~200 ms of waiting before the third transmission.
    assert!(o.answers[0].elapsed >= Duration::from_millis(250));
    assert_eq!(h.stats().get(RequestorCounter::Retransmits), 2);
}

#[tokio::test]
async fn duplicates_are_counted_and_ignored() {
    let s = server(1);
    s.srv.set_faults(FaultPlan::always(Faults {
        duplicate: 3,
        ..Faults::default()
    }));
    let h = requestor(config(&[s.addr], Policy::Failover)).await;
    let o = h
        .query(Query::by_address(a("2001:db8:1::1")))
        .await
        .unwrap();
    assert_eq!(o.verdict, AnswerVerdict::Bound);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let st = h.stats().clone();
        if st.dropped(DropReason::Duplicate) == 3 {
            assert_eq!(st.get(RequestorCounter::Replies), 1);
            break;
        }
        assert!(Instant::now() < deadline, "3 duplicates counted: {st:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn corrupt_replies_are_dropped_and_the_retransmission_answered() {
    for (n, c) in [
        Corrupt::Truncate(9),
        Corrupt::Garbage(40),
        // Byte 5 is the low byte of the first option's code: SERVERID or CLIENTID goes missing.
        Corrupt::Flip { at: 5, xor: 0x40 },
    ]
    .into_iter()
    .enumerate()
    {
        let s = server(1);
        s.srv.set_faults(first(
            1,
            Faults {
                corrupt: Some(c),
                ..Faults::default()
            },
        ));
        let h = requestor(config(&[s.addr], Policy::Failover)).await;
        let o = h
            .query(Query::by_address(a("2001:db8:1::1")))
            .await
            .unwrap();
        assert_eq!(o.verdict, AnswerVerdict::Bound, "case {n}");
        assert_eq!(o.answers[0].attempts, 2, "case {n}");
        let st = h.stats().clone();
        assert_eq!(st.dropped_total(), 1, "case {n}: {st:?}");
    }
}

#[tokio::test]
async fn reordered_replies_match_their_own_queries() {
    let s = server(1);
    s.srv.set_faults(first(
        1,
        Faults {
            reorder: true,
            ..Faults::default()
        },
    ));
    let h = requestor(config(&[s.addr], Policy::Failover)).await;
    let h2 = h.clone();
    let q1 = tokio::spawn(async move { h2.query(Query::by_address(a("2001:db8:1::1"))).await });
    // The first query must reach the server (and be the reordered one) before the second.
    wait_for_async(
        "the first query at the server",
        Duration::from_secs(5),
        async || s.srv.stats().udp_queries >= 1,
    )
    .await;
    let o2 = h
        .query(Query::by_address(a("2001:db8:1::2")))
        .await
        .unwrap();
    let o1 = q1.await.unwrap().unwrap();
    assert_eq!(only_binding(&o1).client_duid(), duid(1));
    assert_eq!(only_binding(&o2).client_duid(), duid(2));
    assert_eq!(h.stats().dropped_total(), 0);
}

#[tokio::test]
async fn reply_from_a_wrong_address_is_dropped() {
    let s = server(1);
    s.srv.set_faults(first(
        1,
        Faults {
            wrong_source: true,
            ..Faults::default()
        },
    ));
    let h = requestor(config(&[s.addr], Policy::Failover)).await;
    let o = h
        .query(Query::by_address(a("2001:db8:1::1")))
        .await
        .unwrap();
    assert_eq!(o.verdict, AnswerVerdict::Bound);
    assert_eq!(only_binding(&o).server, s.addr);
    assert_eq!(o.answers[0].attempts, 2);
    // The reply from another address never reached the requestor: the socket filter (only
    // configured servers' address and port pass) left it to the kernel, which counted it.
    let st = h.stats().clone();
    assert_eq!(st.dropped(DropReason::KernelDropped), 1, "{st:?}");
    assert_eq!(st.dropped(DropReason::WrongSource), 0, "{st:?}");
}

#[tokio::test]
async fn slow_server_within_the_schedule_still_answers() {
    let s = server(1);
    s.srv.set_faults(FaultPlan::always(Faults {
        delay_ms: 150,
        ..Faults::default()
    }));
    let h = requestor(config(&[s.addr], Policy::Failover)).await;
    let o = h
        .query(Query::by_address(a("2001:db8:1::1")))
        .await
        .unwrap();
    assert_eq!(o.verdict, AnswerVerdict::Bound);
    assert!(o.answers[0].elapsed >= Duration::from_millis(150));
    // The retransmission at ~100 ms gets a second (late) answer: a counted duplicate. Wait
    // until the server has answered every query sent and the requestor has counted them.
    wait_for_async(
        "the late answers counted",
        Duration::from_secs(5),
        async || {
            let st = h.stats().clone();
            s.srv.stats().udp_answers_sent == 1 + st.get(RequestorCounter::Retransmits)
                && st.dropped(DropReason::Duplicate) + st.get(RequestorCounter::Replies)
                    == 1 + st.get(RequestorCounter::Retransmits)
        },
    )
    .await;
    let st = h.stats().clone();
    assert_eq!(st.get(RequestorCounter::Replies), 1);
    assert_eq!(
        st.dropped(DropReason::Duplicate),
        st.get(RequestorCounter::Retransmits)
    );
}

#[tokio::test]
async fn retryable_statuses_fail_over_and_malformed_query_stops() {
    for (code, fails_over) in [(9u16, true), (10, true), (7, true), (8, false), (1, false)] {
        let s1 = server(1);
        let s2 = server(2);
        s1.srv.set_faults(FaultPlan::always(Faults {
            status: Some(code),
            ..Faults::default()
        }));
        let h = requestor(config(&[s1.addr, s2.addr], Policy::Failover)).await;
        let o = h
            .query(Query::by_address(a("2001:db8:1::1")))
            .await
            .unwrap();
        assert!(
            matches!(o.answers[0].answer, Answer::Status { code: c, .. } if c == StatusCode(code)),
            "{code}: {o:?}"
        );
        if fails_over {
            assert_eq!(o.verdict, AnswerVerdict::Bound, "{code}");
            assert_eq!(only_binding(&o).server, s2.addr);
        } else {
            assert_eq!(o.verdict, AnswerVerdict::Error, "{code}");
            assert_eq!(o.answers.len(), 1);
            assert_eq!(
                s2.srv.stats().udp_queries,
                0,
                "{code}: second server not asked"
            );
        }
    }
}

#[tokio::test]
async fn dead_first_server_is_failed_over_within_the_timeout() {
    let (_dead, dead_addr) = dead_server();
    let s = server(2);
    let mut cfg = config(&[dead_addr, s.addr], Policy::Failover);
    cfg.retransmit = RetransmitParams {
        mrc: 10,
        mrd: Some(Duration::from_millis(500)),
        ..fast()
    };
    let h = requestor(cfg).await;
    let t0 = Instant::now();
    let o = h
        .query(Query::by_address(a("2001:db8:1::1")))
        .await
        .unwrap();
    let took = t0.elapsed();
    assert_eq!(o.verdict, AnswerVerdict::Bound);
    assert_eq!(o.answers[0].server, dead_addr);
    assert_eq!(o.answers[0].answer, Answer::NoAnswer);
    assert!(o.answers[0].elapsed >= Duration::from_millis(500));
    assert_eq!(only_binding(&o).server, s.addr);
    // How long the failover took is a measurement, not a check (a shared machine can be slow).
    eprintln!(
        "failover after {:?}, answered in {took:?}",
        o.answers[0].elapsed
    );
}

/// Split pools: server 1 holds client 1 only, server 2 client 2 only. "No binding" from the
/// first is an answer about that server; failover asks the second, which has it.
#[tokio::test]
async fn failover_finds_the_binding_on_the_second_of_two_disjoint_servers() {
    let s1 = server(1);
    let s2 = server(2);
    s1.srv
        .set_table(LeaseTable::from_entries([entry(1, LINK1)]));
    s2.srv
        .set_table(LeaseTable::from_entries([entry(2, LINK1)]));
    assert_ne!(s1.srv.server_duid(), s2.srv.server_duid());
    let h = requestor(config(&[s1.addr, s2.addr], Policy::Failover)).await;
    let o = h
        .query(Query::by_address(a("2001:db8:1::2")))
        .await
        .unwrap();
    assert_eq!(o.verdict, AnswerVerdict::Bound);
    assert_eq!(o.answers.len(), 2);
    assert_eq!(o.answers[0].server, s1.addr);
    assert_eq!(o.answers[0].answer, Answer::NoBinding);
    let b = only_binding(&o);
    assert_eq!(b.server, s2.addr);
    assert_eq!(b.server_duid, s2.srv.server_duid());
    assert_eq!(b.client_duid(), duid(2));
    // Client 1: the first server has it and the second is not asked.
    let o = h
        .query(Query::by_address(a("2001:db8:1::1")))
        .await
        .unwrap();
    assert_eq!(o.verdict, AnswerVerdict::Bound);
    assert_eq!(o.answers.len(), 1);
    assert_eq!(s2.srv.stats().udp_queries, 1);
}

#[tokio::test]
async fn parallel_collects_every_server() {
    let s1 = server(1);
    let s2 = server(2);
    let (_dead, dead_addr) = dead_server();
    s2.srv
        .set_table(LeaseTable::from_entries([entry(7, LINK1)]));
    let h = requestor(config(&[s1.addr, s2.addr, dead_addr], Policy::Parallel)).await;
    let o = h
        .query(Query::by_address(a("2001:db8:1::1")))
        .await
        .unwrap();
    assert_eq!(o.verdict, AnswerVerdict::Bound);
    assert_eq!(o.answers.len(), 3);
    let by = |addr: SocketAddr| {
        o.answers
            .iter()
            .find(|x| x.server == addr)
            .map(|x| x.answer.clone())
            .unwrap()
    };
    assert!(matches!(by(s1.addr), Answer::Bound(_)));
    assert_eq!(by(s2.addr), Answer::NoBinding);
    assert_eq!(by(dead_addr), Answer::NoAnswer);
}

#[tokio::test]
async fn client_link_follow_ups_combine_both_links() {
    let s = server(1);
    let h = requestor(config(&[s.addr], Policy::Failover)).await;
    let o = h.query(Query::by_client_id(duid(1))).await.unwrap();
    assert_eq!(o.verdict, AnswerVerdict::Bound);
    let Answer::ClientLinks(links) = &o.answers[0].answer else {
        panic!("first answer lists links: {o:?}")
    };
    let mut links = links.clone();
    links.sort();
    assert_eq!(links, vec![a(LINK1), a(LINK2)]);
    let mut got: Vec<(Ipv6Addr, Vec<LeaseKey>)> =
        o.bindings().map(|b| (b.link, leased(b))).collect();
    got.sort_by_key(|g| g.0);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, a(LINK1));
    assert!(got[0].1.contains(&LeaseKey::Address(a("2001:db8:1::1"))));
    assert_eq!(got[1].0, a(LINK2));
    assert_eq!(got[1].1, vec![LeaseKey::Address(a("2001:db8:2::1:1"))]);
    let seen: Vec<Ipv6Addr> = s.srv.queries().iter().map(|q| q.link).collect();
    assert_eq!(seen.len(), 3, "one query, then one per link: {seen:?}");
}

#[tokio::test]
async fn unknown_link_gets_not_configured() {
    let s = server(1);
    let h = requestor(config(&[s.addr], Policy::Failover)).await;
    let o = h
        .query(Query::by_address(a("2001:db8:1::1")).with_link(a("2001:db8:77::1")))
        .await
        .unwrap();
    assert_eq!(o.verdict, AnswerVerdict::Error);
    assert!(matches!(
        o.answers[0].answer,
        Answer::Status {
            code: StatusCode::NOT_CONFIGURED,
            ..
        }
    ));
}

#[tokio::test]
async fn concurrent_equal_queries_share_one_exchange() {
    let s = server(1);
    s.srv.set_faults(FaultPlan::always(Faults {
        delay_ms: 50,
        ..Faults::default()
    }));
    let h = requestor(config(&[s.addr], Policy::Failover)).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.query(Query::by_address(a("2001:db8:1::2"))).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().verdict, AnswerVerdict::Bound);
    }
    assert_eq!(
        s.srv.stats().udp_queries,
        1,
        "one LEASEQUERY for 20 callers"
    );
    assert_eq!(h.stats().get(RequestorCounter::Deduplicated), 19);
}

// ---- the `lqagent query` binary ----

fn lqagent(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lqagent"))
        .arg("query")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), stdout)
}

#[test]
fn cli_exit_codes_text_and_json() {
    let s = server(1);
    let srv = s.addr.to_string();
    let common = [
        "--server",
        &srv,
        "--bind",
        "[::1]:0",
        "--duid",
        "00030001020000005151",
    ];

    let mut args = common.to_vec();
    args.extend(["--address", "2001:db8:1::2", "--json"]);
    let (code, out) = lqagent(&args);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "bound");
    assert_eq!(v["bindings"][0]["client_duid"], hex::encode(duid(2)));
    let leases = v["bindings"][0]["leases"].as_array().unwrap();
    assert!(leases.iter().any(|l| {
        l["address"] == "2001:db8:1::2"
            && l["valid_remaining"]
                .as_u64()
                .is_some_and(|r| r > 7100 && r <= 7200)
    }));
    assert_eq!(v["answers"][0]["server"], srv);

    let mut args = common.to_vec();
    args.extend(["--address", "2001:db8:1::2"]);
    let (code, out) = lqagent(&args);
    assert_eq!(code, 0);
    assert!(out.contains(";; SERVER"), "{out}");
    assert!(out.contains("address       2001:db8:1::2"), "{out}");
    assert!(out.contains("prefix        2001:db8:102::/56"), "{out}");
    assert!(out.contains(";; VERDICT bound (exit 0)"), "{out}");

    let mut args = common.to_vec();
    args.extend(["--address", "2001:db8:1::99"]);
    assert_eq!(lqagent(&args).0, 1, "no binding");

    let mut args = common.to_vec();
    args.extend(["--address", "2001:db8:1::1", "--link", "2001:db8:77::1"]);
    let (code, out) = lqagent(&args);
    assert_eq!(code, 2, "NotConfigured is an error: {out}");
    assert!(out.contains("NotConfigured (9)"), "{out}");

    let (_dead, dead_addr) = dead_server();
    let dead = dead_addr.to_string();
    let (code, out) = lqagent(&[
        "--server",
        &dead,
        "--bind",
        "[::1]:0",
        "--address",
        "2001:db8:1::1",
        "--timeout",
        "0.3",
    ]);
    assert_eq!(code, 3, "no answer: {out}");

    let (code, _) = lqagent(&["--server", "nonsense", "--address", "2001:db8::1"]);
    assert_eq!(code, 2, "bad arguments are errors");
}

/// A subscriber forging the server's address: its "reply" arrives on the subscriber link and is
/// dropped there (IPV6_PKTINFO) before anything reads it; the same bytes from the uplink side
/// (here: loopback) reach the core and are judged there.
#[test]
fn a_reply_arriving_on_a_subscriber_link_is_dropped() {
    use support::netns::{agent_and_subscriber, require_root};
    if !require_root("a_reply_arriving_on_a_subscriber_link_is_dropped") {
        return;
    }
    let (agent, sub) = agent_and_subscriber("rqif");
    // The forger takes the server's address and a route back to the relay.
    sub.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:ff::547/128",
        "dev",
        "cpe0",
        "nodad",
    ]);
    sub.exec(&[
        "ip",
        "-6",
        "route",
        "add",
        "2001:db8:10::/64",
        "dev",
        "cpe0",
    ]);
    agent.exec(&["ip", "link", "set", "lo", "up"]);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<()>();
    let stats = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            agent.run_in(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut cfg = config(
                        &[SocketAddr::new(a("2001:db8:ff::547").into(), 547)],
                        Policy::Failover,
                    );
                    // The loopback copy's source, so the socket filter lets it reach the core.
                    cfg.multicast_sources = vec!["[::1]:547".parse().unwrap()];
                    let (h, _task) = udp::spawn(
                        cfg,
                        UdpConfig {
                            bind: "[::]:546".parse().unwrap(),
                            refuse_interfaces: vec!["sub0".into()],
                            ..UdpConfig::default()
                        },
                        &support::tasks::supervisor(),
                    )
                    .await
                    .unwrap();
                    ready_tx.send(()).unwrap();
                    tokio::task::spawn_blocking(move || sent_rx.recv().unwrap())
                        .await
                        .unwrap();
                    // The loopback copy is judged by the core (an unknown transaction id).
                    let lo = UdpSocket::bind("[::1]:547").unwrap();
                    lo.send_to(&forged(), "[::1]:546").unwrap();
                    let end = Instant::now() + Duration::from_secs(5);
                    loop {
                        let st = h.stats().clone();
                        if st.dropped(DropReason::UnknownXid) >= 1 || Instant::now() > end {
                            return st;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            })
        });
        ready_rx.recv().unwrap();
        sub.run_in(|| {
            let s = UdpSocket::bind("[2001:db8:ff::547]:547").unwrap();
            for _ in 0..3 {
                s.send_to(&forged(), "[2001:db8:10::1]:546").unwrap();
            }
        });
        sent_tx.send(()).unwrap();
        worker.join().unwrap()
    });
    assert_eq!(stats.dropped(DropReason::WrongInterface), 3, "{stats:?}");
    assert_eq!(stats.dropped(DropReason::UnknownXid), 1, "{stats:?}");
}

/// A LEASEQUERY-REPLY-shaped datagram (type 15, some transaction id, no options).
fn forged() -> Vec<u8> {
    vec![15, 0x12, 0x34, 0x56]
}

/// A requestor run that dies (a panic, by the supervisor's test hook) is followed by a new run
/// on the same socket and command channel: the handle the bulk, on-demand and control paths
/// hold keeps working. (The hook is debug-only: under `cargo bench`'s optimised build this
/// test is left out.)
#[cfg(debug_assertions)]
#[tokio::test]
async fn a_new_run_serves_the_same_handle_after_the_old_one_died() {
    let s = server(1);
    let faults = tempfile::tempdir().unwrap();
    let sup = lqagent::supervise::Supervisor::unstopped(lqagent::supervise::Policy {
        base: Duration::from_millis(10),
        ..Default::default()
    })
    .with_fault_dir(faults.path());
    let (h, _task) = udp::spawn(
        config(&[s.addr], Policy::Failover),
        UdpConfig {
            bind: "[::1]:0".parse().unwrap(),
            ..UdpConfig::default()
        },
        &sup,
    )
    .await
    .unwrap();
    let o = h
        .query(Query::by_address(a("2001:db8:1::2")))
        .await
        .unwrap();
    assert_eq!(o.verdict, AnswerVerdict::Bound);
    let before = h.stats().get(RequestorCounter::Sent);
    assert!(before > 0, "the first run sent the query");

    // The first run panics; the channel stays open: a query sent now waits for the next run
    // instead of failing.
    std::fs::write(faults.path().join("requestor"), b"").unwrap();
    wait_for_async(
        "the failed run restarted and counted",
        Duration::from_secs(10),
        async || sup.restarts().get(lqagent::supervise::Task::Requestor) == 1,
    )
    .await;
    let pending = tokio::spawn({
        let h = h.clone();
        async move { h.query_wait(Query::by_address(a("2001:db8:1::1"))).await }
    });
    let o = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("answered within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(o.verdict, AnswerVerdict::Bound);
    assert_eq!(only_binding(&o).client_duid(), duid(1));
    assert_eq!(
        h.stats().get(RequestorCounter::Sent),
        before + 1,
        "a fresh core counts on into the same counters"
    );
}

/// A datagram flood at the requestor's own port (junk, as fast as two senders can go) does not
/// starve its command channel: queries are still served while the flood runs. (Its turns used to prefer the socket, which a flood keeps readable for ever.) Answers
/// may drown in the flooded socket buffer — a query may end without one — but every command
/// gets its turn. The flood stops after the last command was served, or after its own bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datagram_flood_at_our_port_does_not_starve_commands() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let s = server(1);
    // The flood comes from sources the socket filter passes (listed as sources of answers to
    // multicast queries, never asked): junk from anywhere else would not reach the task at all.
    let socks: Vec<UdpSocket> = (0..2)
        .map(|_| UdpSocket::bind("[::1]:0").unwrap())
        .collect();
    let mut cfg = config(&[s.addr], Policy::Failover);
    cfg.multicast_sources = socks.iter().map(|s| s.local_addr().unwrap()).collect();
    let h = requestor(cfg).await;
    let target = h.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flooders: Vec<_> = socks
        .into_iter()
        .map(|sock| {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let junk = [0u8; 48];
                // Bounded in time: it stops by itself after 120 s.
                let end = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    for _ in 0..1000 {
                        if sock.send_to(&junk, target).is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    // Wait until the flood is on, so every command below is issued under it.
    wait_for_async("the flood to start", Duration::from_secs(10), || {
        let n = sent.load(Ordering::Relaxed);
        async move { n > 10_000 }
    })
    .await;
    for n in 1..=3u16 {
        let q = Query::by_address(a(&format!("2001:db8:1::{n}")));
        tokio::time::timeout(Duration::from_secs(30), h.query(q))
            .await
            .unwrap_or_else(|_| panic!("query {n} starved by the flood"))
            .unwrap();
    }
    let stats = h.stats().clone();
    let still_flooding = !flooders.iter().all(|f| f.is_finished());
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    assert!(
        still_flooding,
        "the flood ended before the commands did: the test proved nothing"
    );
    assert_eq!(
        stats.get(RequestorCounter::Queries),
        3,
        "every query was taken: {stats:?}"
    );
    let read = stats.dropped_total();
    eprintln!(
        "flood: {} datagrams sent, {read} read and dropped while the commands were served",
        sent.load(Ordering::Relaxed)
    );
    assert!(read > 0, "the requestor read the flood: {stats:?}");
}
