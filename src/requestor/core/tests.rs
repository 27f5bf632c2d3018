//! Scripts for the sans-IO requestor in virtual time (time passed in, no clock read): "t=0 query to A;
//! t≈1 s retransmit; reply; expect binding". The clock is an `Instant` we advance by hand.

use crate::time::{Duration, Instant};
use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{Event, Requestor, Submit, Transmit};
use crate::requestor::*;
use crate::wire::{
    ClientData, ClientMessage, DhcpOption, Duid, Ia, IaAddr, IaPrefix, LqRelayData, Message,
    MessageType, OptionCode, QueryType, RelayMessage, Status, StatusCode,
};

const OUR_DUID: &[u8] = &[0, 3, 0, 1, 2, 0, 0, 0, 0, 1];
const CLIENT_DUID: &[u8] = &[0, 1, 0, 1, 0x2c, 0, 0, 1, 2, 0, 0, 0, 0, 0x42];

fn server(n: u16) -> SocketAddr {
    SocketAddr::new(format!("2001:db8::{n}").parse().unwrap(), 547)
}

fn server_duid(n: u8) -> Vec<u8> {
    vec![0, 3, 0, 1, 2, 0, 0, 0, 0xaa, n]
}

fn addr(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn cfg(servers: &[SocketAddr], policy: Policy) -> RequestorConfig {
    RequestorConfig {
        servers: servers.to_vec(),
        policy,
        duid: OUR_DUID.into(),
        global_rate: None,
        link_rate: None,
        ..RequestorConfig::default()
    }
}

struct Script {
    r: Requestor,
    t0: Instant,
    now: Instant,
}

impl Script {
    fn new(cfg: RequestorConfig) -> Self {
        let t0 = Instant::now();
        Script {
            r: Requestor::new(cfg, StdRng::seed_from_u64(42), t0),
            t0,
            now: t0,
        }
    }

    fn at(&mut self, secs: f64) {
        self.now = self.t0 + Duration::from_secs_f64(secs);
        self.r.handle_timeout(self.now);
    }

    /// Run the clock to the next timer.
    fn advance_to_timer(&mut self) -> Option<Instant> {
        let t = self.r.poll_timeout()?;
        self.now = t;
        self.r.handle_timeout(t);
        Some(t)
    }

    fn submit(&mut self, q: Query) -> Submit {
        self.r.submit(self.now, q)
    }

    fn sent(&mut self) -> Vec<(Transmit, ClientMessage)> {
        std::iter::from_fn(|| self.r.poll_transmit())
            .map(|t| {
                let m = match Message::parse(&t.payload).expect("we emit valid messages") {
                    Message::Client(m) => m,
                    Message::Relay(_) => panic!("requestor sent a relay message"),
                };
                (t, m)
            })
            .collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.r.poll_event()).collect()
    }

    fn deliver(&mut self, from: SocketAddr, m: &ClientMessage) {
        let bytes = m.to_vec().unwrap();
        self.r.handle_datagram(self.now, from, &bytes);
    }
}

/// A LEASEQUERY-REPLY to `xid` from server `n`, with our CLIENTID, plus `extra` options.
fn reply(xid: u32, n: u8, extra: Vec<DhcpOption>) -> ClientMessage {
    let mut m = ClientMessage::new(MessageType::LEASEQUERY_REPLY, xid);
    m.options
        .push(DhcpOption::ServerId(Duid::from(&server_duid(n))));
    m.options.push(DhcpOption::ClientId(Duid::from(OUR_DUID)));
    m.options.0.extend(extra);
    m
}

fn status(code: StatusCode) -> DhcpOption {
    DhcpOption::StatusCode(Status::new(code, "from the script"))
}

fn client_data(a: &str, clt: Option<u32>) -> DhcpOption {
    let mut cd = ClientData::default();
    cd.options
        .push(DhcpOption::ClientId(Duid::from(CLIENT_DUID)));
    cd.options
        .push(DhcpOption::IaAddr(IaAddr::new(addr(a), 3000, 4000)));
    if let Some(t) = clt {
        cd.options.push(DhcpOption::CltTime(t));
    }
    DhcpOption::ClientData(cd)
}

fn only<T: std::fmt::Debug>(mut v: Vec<T>) -> T {
    assert_eq!(v.len(), 1, "expected exactly one: {v:?}");
    v.remove(0)
}

fn lq_query(m: &ClientMessage) -> &crate::wire::LqQuery {
    m.options.lq_query().expect("LQ_QUERY present")
}

#[test]
fn query_by_address_has_our_clientid_and_iaaddr() {
    let mut s = Script::new(cfg(&[server(1)], Policy::Failover));
    let q = Query::by_address(addr("2001:db8:1::10")).with_link(addr("2001:db8:1::1"));
    assert!(matches!(s.submit(q), Submit::Started(_)));
    let (t, m) = only(s.sent());
    assert_eq!(t.dst, server(1));
    assert_eq!(m.msg_type, MessageType::LEASEQUERY);
    assert!(m.transaction_id <= 0x00ff_ffff);
    assert_eq!(m.options.client_id().unwrap().to_vec(), OUR_DUID);
    let lq = lq_query(&m);
    assert_eq!(lq.query_type, QueryType::BY_ADDRESS);
    assert_eq!(lq.link_address, addr("2001:db8:1::1"));
    assert_eq!(
        lq.options.ia_addrs().next().unwrap().addr,
        addr("2001:db8:1::10")
    );
    assert!(lq.options.oro().is_none(), "no ORO unless relay data asked");
}

#[test]
fn query_by_client_id_with_relay_data_asks_oro_inside_lq_query() {
    let mut s = Script::new(cfg(&[server(1)], Policy::Failover));
    let q = Query::by_client_id(CLIENT_DUID.to_vec()).with_relay_data(true);
    s.submit(q);
    let (_, m) = only(s.sent());
    let lq = lq_query(&m);
    assert_eq!(lq.query_type, QueryType::BY_CLIENTID);
    assert_eq!(lq.link_address, Ipv6Addr::UNSPECIFIED);
    assert_eq!(lq.options.client_id().unwrap().to_vec(), CLIENT_DUID);
    assert_eq!(lq.options.oro().unwrap(), &vec![OptionCode::LQ_RELAY_DATA]);
    assert!(m.options.oro().is_none(), "the ORO is inside LQ_QUERY only");
}

#[test]
fn retransmits_same_xid_on_rfc_schedule_then_gives_up() {
    let mut s = Script::new(cfg(&[server(1)], Policy::Failover));
    s.submit(Query::by_address(addr("2001:db8::10")));
    let (first, m0) = only(s.sent());
    let mut times = vec![0.0];
    while let Some(t) = s.advance_to_timer() {
        for (tx, m) in s.sent() {
            assert_eq!(
                m.transaction_id, m0.transaction_id,
                "same xid on retransmit"
            );
            assert_eq!(tx.payload, first.payload, "same bytes on retransmit");
            times.push((t - s.t0).as_secs_f64());
        }
    }
    assert_eq!(times.len(), 5, "LQ_MAX_RC transmissions: {times:?}");
    // Nominal 0, 1, 3, 7, 15 s; each wait within RFC 8415 §15 bounds of the previous.
    let waits: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!((0.9..=1.1).contains(&waits[0]), "{waits:?}");
    for w in waits.windows(2) {
        assert!(
            w[1] >= (1.9 * w[0]).min(9.0) - 1e-6 && w[1] <= (2.1 * w[0]).min(11.0) + 1e-6,
            "{waits:?}"
        );
    }
    let ev = only(s.events());
    assert_eq!(ev.outcome.verdict, AnswerVerdict::NoAnswer);
    let a = only(ev.outcome.answers);
    assert_eq!(a.answer, Answer::NoAnswer);
    assert_eq!(a.attempts, 5);
    let gave_up = (s.now - s.t0).as_secs_f64();
    assert!((20.0..=31.0).contains(&gave_up), "gave up at {gave_up}");
    assert_eq!(s.r.stats().get(RequestorCounter::Retransmits), 4);
    assert_eq!(s.r.stats().get(RequestorCounter::Timeouts), 1);
    assert_eq!(s.r.pending(), 0);
}

#[test]
fn attempts_and_timeout_overrides() {
    let mut c = cfg(&[server(1)], Policy::Failover);
    c.retransmit.mrc = 3;
    c.retransmit.mrd = Some(Duration::from_secs(2));
    let mut s = Script::new(c);
    s.submit(Query::by_address(addr("2001:db8::10")));
    let mut n = s.sent().len();
    while s.advance_to_timer().is_some() {
        n += s.sent().len();
    }
    assert_eq!(n, 2, "1 s, then cut short by the 2 s limit before a third");
    assert_eq!(
        s.now - s.t0,
        Duration::from_secs(2),
        "gives up exactly at the timeout"
    );
    assert_eq!(only(s.events()).outcome.verdict, AnswerVerdict::NoAnswer);
}

#[test]
fn reply_after_retransmit_binds() {
    let mut s = Script::new(cfg(&[server(1)], Policy::Failover));
    s.submit(Query::by_address(addr("2001:db8::10")));
    let (_, m) = only(s.sent());
    s.advance_to_timer();
    assert_eq!(s.sent().len(), 1, "one retransmission");
    s.at(1.5);
    s.deliver(
        server(1),
        &reply(
            m.transaction_id,
            1,
            vec![client_data("2001:db8::10", Some(7))],
        ),
    );
    let ev = only(s.events());
    assert_eq!(ev.outcome.verdict, AnswerVerdict::Bound);
    let a = only(ev.outcome.answers.clone());
    assert_eq!(a.attempts, 2);
    assert_eq!(a.elapsed, Duration::from_millis(1500));
    assert_eq!(a.server_duid.as_deref(), Some(&server_duid(1)[..]));
    let b = only(ev.outcome.bindings().cloned().collect());
    assert_eq!(b.client_duid(), CLIENT_DUID);
    assert_eq!(b.clt_time(), 7);
    assert_eq!(b.server, server(1));
    assert_eq!(b.server_duid, server_duid(1));
    assert_eq!(b.received, s.now);
    let DhcpOption::ClientData(sent) = client_data("2001:db8::10", Some(7)) else {
        unreachable!()
    };
    assert_eq!(b.data, sent, "the wire's CLIENT_DATA, untouched");
    assert_eq!(s.r.poll_timeout(), None, "no timer left once answered");
}

#[test]
fn binding_is_the_client_data_as_sent_with_its_relay_data() {
    let mut s = Script::new(cfg(&[server(1)], Policy::Failover));
    s.submit(Query::by_client_id(CLIENT_DUID.to_vec()).with_relay_data(true));
    let (_, m) = only(s.sent());
    let mut cd = ClientData::default();
    cd.options
        .push(DhcpOption::ClientId(Duid::from(CLIENT_DUID)));
    cd.options.push(DhcpOption::IaPrefix(IaPrefix::new(
        "2001:db8:100::/56".parse().unwrap(),
        100,
        200,
    )));
    let mut ia = Ia::new(77, 0, 0);
    ia.options
        .push(DhcpOption::IaAddr(IaAddr::new(addr("2001:db8::77"), 5, 6)));
    cd.options.push(DhcpOption::IaNa(ia));
    cd.options.push(DhcpOption::CltTime(0));
    let relay = RelayMessage::new(
        MessageType::RELAY_FORW,
        0,
        addr("2001:db8:1::1"),
        addr("fe80::2"),
    );
    cd.options
        .push(DhcpOption::LqRelayData(Box::new(LqRelayData {
            peer_address: addr("2001:db8:1::1"),
            relay: relay.clone(),
        })));
    s.deliver(
        server(1),
        &reply(
            m.transaction_id,
            1,
            vec![DhcpOption::ClientData(cd.clone())],
        ),
    );
    let ev = only(s.events());
    let b = only(ev.outcome.bindings().cloned().collect());
    assert_eq!(b.data, cd);
    assert_eq!(b.top_relay_data, None);
    let rd = b.relay_data().unwrap();
    assert_eq!(rd.peer_address, addr("2001:db8:1::1"));
    assert_eq!(rd.relay, relay);
    // The leases as the cache's one conversion reads them, IA-wrapped ones with their IAID.
    let leases = b.observed.leases.clone();
    assert_eq!(leases.len(), 2);
    assert!(leases.iter().any(|l| l.ia == crate::cache::IaType::Na
        && l.iaid == 77
        && l.key == crate::cache::LeaseKey::Address(addr("2001:db8::77"))
        && (l.preferred, l.valid) == (5, 6)));
    assert!(leases.iter().any(|l| l.ia == crate::cache::IaType::Pd
        && l.key == crate::cache::LeaseKey::Prefix("2001:db8:100::/56".parse().unwrap())
        && (l.preferred, l.valid) == (100, 200)));
}

#[test]
fn failover_in_order_on_silence_and_on_each_retryable_status() {
    let servers = [server(1), server(2), server(3), server(4)];
    let mut s = Script::new(cfg(&servers, Policy::Failover));
    s.submit(Query::by_address(addr("2001:db8::10")));
    let (t, m1) = only(s.sent());
    assert_eq!(t.dst, server(1));
    // Server 1 stays silent: after its attempts, server 2 is asked with a new xid.
    let mut seen = Vec::new();
    loop {
        s.advance_to_timer().unwrap();
        let out = s.sent();
        if let Some((t, m)) = out.into_iter().find(|(t, _)| t.dst != server(1)) {
            seen.push((t.dst, m));
            break;
        }
    }
    let (dst2, m2) = seen.pop().unwrap();
    assert_eq!(dst2, server(2));
    assert_ne!(
        m2.transaction_id, m1.transaction_id,
        "new exchange, new xid"
    );
    // Server 2: NotConfigured → server 3; server 3: NotAllowed → server 4.
    s.deliver(
        server(2),
        &reply(
            m2.transaction_id,
            2,
            vec![status(StatusCode::NOT_CONFIGURED)],
        ),
    );
    let (t3, m3) = only(s.sent());
    assert_eq!(t3.dst, server(3));
    s.deliver(
        server(3),
        &reply(m3.transaction_id, 3, vec![status(StatusCode::NOT_ALLOWED)]),
    );
    let (t4, m4) = only(s.sent());
    assert_eq!(t4.dst, server(4));
    s.deliver(
        server(4),
        &reply(
            m4.transaction_id,
            4,
            vec![client_data("2001:db8::10", Some(1))],
        ),
    );
    let ev = only(s.events());
    assert_eq!(ev.outcome.verdict, AnswerVerdict::Bound);
    let kinds: Vec<(SocketAddr, &Answer)> = ev
        .outcome
        .answers
        .iter()
        .map(|a| (a.server, &a.answer))
        .collect();
    assert!(matches!(kinds[0], (a, Answer::NoAnswer) if a == server(1)));
    assert!(
        matches!(kinds[1], (a, Answer::Status { code: StatusCode::NOT_CONFIGURED, .. }) if a == server(2))
    );
    assert!(
        matches!(kinds[2], (a, Answer::Status { code: StatusCode::NOT_ALLOWED, .. }) if a == server(3))
    );
    assert!(matches!(kinds[3], (a, Answer::Bound(_)) if a == server(4)));
}

/// Each status code's handling under failover with two servers: does the second get asked,
/// and what is the verdict when the second stays silent.
#[test]
fn each_status_code_handling() {
    let table: &[(StatusCode, bool, AnswerVerdict)] = &[
        // Success without CLIENT_DATA: "no binding" from this server; the next may hold it.
        (StatusCode::SUCCESS, true, AnswerVerdict::NoBinding),
        (StatusCode::UNSPEC_FAIL, false, AnswerVerdict::Error),
        (StatusCode::NO_BINDING, false, AnswerVerdict::Error),
        (StatusCode::UNKNOWN_QUERY_TYPE, true, AnswerVerdict::Error),
        (StatusCode::MALFORMED_QUERY, false, AnswerVerdict::Error),
        (StatusCode::NOT_CONFIGURED, true, AnswerVerdict::Error),
        (StatusCode::NOT_ALLOWED, true, AnswerVerdict::Error),
        (StatusCode::QUERY_TERMINATED, false, AnswerVerdict::Error),
        (StatusCode(999), false, AnswerVerdict::Error),
    ];
    for (code, next, verdict) in table {
        let mut s = Script::new(cfg(&[server(1), server(2)], Policy::Failover));
        s.submit(Query::by_address(addr("2001:db8::10")));
        let (_, m) = only(s.sent());
        s.deliver(server(1), &reply(m.transaction_id, 1, vec![status(*code)]));
        let asked: Vec<SocketAddr> = s.sent().into_iter().map(|(t, _)| t.dst).collect();
        assert_eq!(!asked.is_empty(), *next, "{code}: second server asked?");
        while s.advance_to_timer().is_some() {
            s.sent();
        }
        let ev = only(s.events());
        assert_eq!(ev.outcome.verdict, *verdict, "{code}");
        if *code != StatusCode::SUCCESS {
            assert!(matches!(
                ev.outcome.answers[0].answer,
                Answer::Status { code: c, ref message } if c == *code && message == "from the script"
            ));
        }
    }
}

#[test]
fn parallel_asks_all_and_collects_every_answer() {
    let servers = [server(1), server(2), server(3)];
    let mut s = Script::new(cfg(&servers, Policy::Parallel));
    s.submit(Query::by_address(addr("2001:db8::10")));
    let out = s.sent();
    let dsts: Vec<SocketAddr> = out.iter().map(|(t, _)| t.dst).collect();
    assert_eq!(dsts, servers.to_vec(), "all at once, in order");
    let xids: std::collections::HashSet<u32> = out.iter().map(|(_, m)| m.transaction_id).collect();
    assert_eq!(xids.len(), 3, "one xid per exchange");
    s.at(0.1);
    s.deliver(
        server(2),
        &reply(out[1].1.transaction_id, 2, vec![]), // no binding
    );
    s.deliver(
        server(1),
        &reply(
            out[0].1.transaction_id,
            1,
            vec![client_data("2001:db8::10", Some(3))],
        ),
    );
    assert!(s.events().is_empty(), "server 3 has not answered yet");
    while s.advance_to_timer().is_some() {
        for (t, _) in s.sent() {
            assert_eq!(t.dst, server(3), "only the silent server is retried");
        }
    }
    let ev = only(s.events());
    assert_eq!(ev.outcome.verdict, AnswerVerdict::Bound);
    assert_eq!(ev.outcome.answers.len(), 3);
    assert_eq!(ev.outcome.answers[0].answer, Answer::NoBinding);
    assert!(matches!(ev.outcome.answers[1].answer, Answer::Bound(_)));
    assert_eq!(ev.outcome.answers[2].answer, Answer::NoAnswer);
}

#[test]
fn client_link_triggers_one_follow_up_per_link_and_combines() {
    let mut c = cfg(&[server(1), server(2)], Policy::Failover);
    c.max_client_links = 2;
    let mut s = Script::new(c);
    s.submit(Query::by_client_id(CLIENT_DUID.to_vec()));
    let (_, m) = only(s.sent());
    let links = vec![
        addr("2001:db8:a::1"),
        addr("2001:db8:b::1"),
        addr("2001:db8:c::1"),
    ];
    s.deliver(
        server(1),
        &reply(
            m.transaction_id,
            1,
            vec![DhcpOption::LqClientLink(links.clone())],
        ),
    );
    let follow = s.sent();
    assert_eq!(follow.len(), 2, "capped at max_client_links");
    assert_eq!(s.r.stats().get(RequestorCounter::ClientLinksDropped), 1);
    for (i, (t, fm)) in follow.iter().enumerate() {
        assert_eq!(
            t.dst,
            server(1),
            "follow-ups go to the server that listed the links"
        );
        let lq = lq_query(fm);
        assert_eq!(lq.link_address, links[i]);
        assert_eq!(lq.query_type, QueryType::BY_CLIENTID);
        assert_eq!(lq.options.client_id().unwrap().to_vec(), CLIENT_DUID);
    }
    s.deliver(
        server(1),
        &reply(
            follow[0].1.transaction_id,
            1,
            vec![client_data("2001:db8:a::10", Some(1))],
        ),
    );
    assert!(s.events().is_empty(), "waits for every follow-up");
    s.deliver(
        server(1),
        &reply(
            follow[1].1.transaction_id,
            1,
            vec![client_data("2001:db8:b::10", Some(2))],
        ),
    );
    let ev = only(s.events());
    assert_eq!(ev.outcome.verdict, AnswerVerdict::Bound);
    let bs: Vec<&ClientAnswer> = ev.outcome.bindings().collect();
    assert_eq!(bs.len(), 2);
    assert_eq!(bs[0].link, links[0]);
    assert_eq!(bs[1].link, links[1]);
    assert_eq!(
        ev.outcome.answers[0].answer,
        Answer::ClientLinks(links.clone())
    );
    assert!(s.sent().is_empty(), "server 2 never asked");
}

/// Every validation rule: the bad reply is dropped and counted, the exchange stays live, and
/// a good reply afterwards still completes it.
#[test]
fn validation_drops_and_counts_every_bad_reply() {
    let mut s = Script::new(cfg(&[server(1)], Policy::Failover));
    s.submit(Query::by_address(addr("2001:db8::10")));
    let (_, m) = only(s.sent());
    let xid = m.transaction_id;
    let good = || reply(xid, 1, vec![client_data("2001:db8::10", Some(5))]);

    // Wrong xid.
    s.deliver(server(1), &reply(xid ^ 1, 1, vec![]));
    // Wrong source: another address, and the right address on another port.
    s.deliver(server(9), &good());
    s.deliver(SocketAddr::new(server(1).ip(), 5470), &good());
    // No SERVERID.
    let mut no_sid = good();
    no_sid
        .options
        .0
        .retain(|o| o.code() != OptionCode::SERVERID);
    s.deliver(server(1), &no_sid);
    // No CLIENTID, and a foreign one.
    let mut no_cid = good();
    no_cid
        .options
        .0
        .retain(|o| o.code() != OptionCode::CLIENTID);
    s.deliver(server(1), &no_cid);
    let mut foreign = good();
    for o in foreign.options.0.iter_mut() {
        if let DhcpOption::ClientId(d) = o {
            *d = Duid::from(&[0, 3, 0, 1, 9, 9, 9, 9, 9, 9]);
        }
    }
    s.deliver(server(1), &foreign);
    // Not a reply: a LEASEQUERY, and a REPLY (7).
    let mut lq = good();
    lq.msg_type = MessageType::LEASEQUERY;
    s.deliver(server(1), &lq);
    let mut r7 = good();
    r7.msg_type = MessageType::REPLY;
    s.deliver(server(1), &r7);
    // Garbage.
    s.r.handle_datagram(s.now, server(1), &[15, 1, 2]);
    s.r.handle_datagram(s.now, server(1), &[15, 0, 0, 1, 0, 2, 0, 200, 1]);

    let st = s.r.stats().clone();
    assert_eq!(st.dropped(DropReason::UnknownXid), 1);
    assert_eq!(st.dropped(DropReason::WrongSource), 2);
    assert_eq!(st.dropped(DropReason::NoServerId), 1);
    assert_eq!(st.dropped(DropReason::NoClientId), 1);
    assert_eq!(st.dropped(DropReason::ForeignClientId), 1);
    assert_eq!(st.dropped(DropReason::LeasequeryReceived), 1);
    assert_eq!(st.dropped(DropReason::NotReply), 1);
    assert_eq!(st.dropped(DropReason::Malformed), 2);
    assert_eq!(st.get(RequestorCounter::Replies), 0);
    assert!(s.events().is_empty(), "nothing accepted yet");

    s.deliver(server(1), &good());
    assert_eq!(only(s.events()).outcome.verdict, AnswerVerdict::Bound);
    // The same reply again (a duplicate) is recognised as such.
    s.deliver(server(1), &good());
    assert_eq!(s.r.stats().dropped(DropReason::Duplicate), 1);
    assert_eq!(s.r.stats().dropped_total(), 11);
}

#[test]
fn multicast_exchange_accepts_configured_sources_only() {
    let mcast: SocketAddr = "[ff05::1:3]:547".parse().unwrap();
    let mut c = cfg(&[mcast], Policy::Failover);
    c.multicast_sources = vec![server(1)];
    let mut s = Script::new(c);
    s.submit(Query::by_address(addr("2001:db8::10")));
    let (t, m) = only(s.sent());
    assert_eq!(t.dst, mcast);
    let r = reply(m.transaction_id, 1, vec![]);
    s.deliver(server(2), &r);
    assert_eq!(s.r.stats().dropped(DropReason::WrongSource), 1);
    s.deliver(server(1), &r);
    assert_eq!(only(s.events()).outcome.verdict, AnswerVerdict::NoBinding);
}

#[test]
fn equal_queries_in_flight_share_one_transaction() {
    let mut s = Script::new(cfg(&[server(1)], Policy::Failover));
    let q = Query::by_address(addr("2001:db8::10"));
    let Submit::Started(id) = s.submit(q.clone()) else {
        panic!("first starts")
    };
    assert_eq!(s.submit(q.clone()), Submit::Joined(id));
    assert_eq!(s.submit(q.clone()), Submit::Joined(id));
    let other_link = q.clone().with_link(addr("2001:db8:1::1"));
    assert!(matches!(s.submit(other_link), Submit::Started(i) if i != id));
    assert_eq!(s.sent().len(), 2, "one datagram per distinct query");
    assert_eq!(s.r.stats().get(RequestorCounter::Deduplicated), 2);
    assert_eq!(s.r.pending(), 2);
}

/// One step of a failover / negative-cache script in virtual time.
#[derive(Debug, Clone, Copy)]
enum Act {
    /// The clock moves to this many seconds after the start.
    At(f64),
    /// Submit the script's query; `Some(v)`: answered by the negative cache with verdict `v`.
    Ask(Option<AnswerVerdict>),
    /// Server n answers its live exchange.
    Says(u16, Said),
    /// Server n never answers: its exchange's one transmission times out.
    Silent(u16),
    /// The last step sent exactly one datagram, to server n.
    Asks(u16),
    /// The last step sent nothing.
    AsksNobody,
    /// The query ended with this verdict.
    Done(AnswerVerdict),
}

#[derive(Debug, Clone, Copy)]
enum Said {
    NoBinding,
    Bound,
    Status(StatusCode),
    /// A CLIENT_DATA without CLT_TIME.
    NoCltTime,
}

/// Run `script` against `servers` servers in failover order (negative TTL 10 s, at most 4×;
/// one transmission per exchange, so silence costs about 1 s).
fn run_script(name: &str, servers: u16, script: &[Act]) -> Requestor {
    let list: Vec<SocketAddr> = (1..=servers).map(server).collect();
    let mut c = cfg(&list, Policy::Failover);
    c.negative_ttl = Duration::from_secs(10);
    c.negative_max_factor = 4;
    c.retransmit.mrc = 1;
    let mut s = Script::new(c);
    let q = Query::by_address(addr("2001:db8::77"));
    let mut live: HashMap<SocketAddr, u32> = HashMap::new();
    let mut last: Vec<SocketAddr> = Vec::new();
    for (i, act) in script.iter().enumerate() {
        let at = format!("{name}, step {i} {act:?}");
        let mut step_sent = true;
        match *act {
            Act::At(t) => s.at(t),
            Act::Ask(cached) => {
                let got = s.submit(q.clone());
                match cached {
                    Some(v) => assert_eq!(got, Submit::Negative(v), "{at}"),
                    None => assert!(matches!(got, Submit::Started(_)), "{at}: {got:?}"),
                }
            }
            Act::Says(n, what) => {
                let xid = live
                    .remove(&server(n))
                    .unwrap_or_else(|| panic!("{at}: not asked"));
                let n8 = u8::try_from(n).unwrap();
                let extra = match what {
                    Said::NoBinding => vec![],
                    Said::Bound => vec![client_data("2001:db8::77", Some(5))],
                    Said::Status(code) => vec![status(code)],
                    Said::NoCltTime => vec![client_data("2001:db8::77", None)],
                };
                s.deliver(server(n), &reply(xid, n8, extra));
            }
            Act::Silent(n) => {
                assert!(live.contains_key(&server(n)), "{at}: not asked");
                let before = s.r.stats().get(RequestorCounter::Timeouts);
                s.advance_to_timer().expect("a timer");
                assert_eq!(
                    s.r.stats().get(RequestorCounter::Timeouts),
                    before + 1,
                    "{at}"
                );
                live.remove(&server(n));
            }
            Act::Asks(n) => {
                assert_eq!(last, vec![server(n)], "{at}");
                step_sent = false;
            }
            Act::AsksNobody => {
                assert!(last.is_empty(), "{at}: sent to {last:?}");
                step_sent = false;
            }
            Act::Done(v) => {
                let ev = only(s.events());
                assert_eq!(ev.outcome.verdict, v, "{at}");
                step_sent = false;
            }
        }
        if step_sent {
            last = s
                .sent()
                .into_iter()
                .map(|(t, m)| {
                    live.insert(t.dst, m.transaction_id);
                    t.dst
                })
                .collect();
        }
    }
    assert!(s.events().is_empty(), "{name}: unexpected events");
    s.r
}

/// Failover and negative caching, as scripts: "t=0 query; server 1 says no binding; server 2
/// is asked; ...". Every script's server list is in failover order.
#[test]
fn failover_and_negative_cache_scripts() {
    use Act::*;
    let nb = Said::NoBinding;
    let cases: &[(&str, u16, &[Act])] = &[
        (
            "no binding on the first server, the binding on the second",
            2,
            &[
                Ask(None),
                Asks(1),
                Says(1, nb),
                Asks(2),
                Says(2, Said::Bound),
                AsksNobody,
                Done(AnswerVerdict::Bound),
                // A binding found is not cached: asked again at once.
                At(0.5),
                Ask(None),
                Asks(1),
            ],
        ),
        (
            "every server says no binding: negative, cached 10 s then 20 s",
            2,
            &[
                Ask(None),
                Says(1, nb),
                Says(2, nb),
                Done(AnswerVerdict::NoBinding),
                At(9.9),
                Ask(Some(AnswerVerdict::NoBinding)),
                AsksNobody,
                At(10.0),
                Ask(None),
                Asks(1),
                Says(1, nb),
                Says(2, nb),
                Done(AnswerVerdict::NoBinding),
                At(29.9),
                Ask(Some(AnswerVerdict::NoBinding)),
                At(30.0),
                Ask(None),
            ],
        ),
        (
            "error statuses are cached per lookup",
            2,
            &[
                Ask(None),
                Says(1, Said::Status(StatusCode::NOT_CONFIGURED)),
                Asks(2),
                Says(2, Said::Status(StatusCode::NOT_ALLOWED)),
                Done(AnswerVerdict::Error),
                At(9.9),
                Ask(Some(AnswerVerdict::Error)),
                At(10.0),
                Ask(None),
            ],
        ),
        (
            "one server says no binding, the other NotConfigured: no binding",
            2,
            &[
                Ask(None),
                Says(1, Said::Status(StatusCode::NOT_CONFIGURED)),
                Says(2, nb),
                Done(AnswerVerdict::NoBinding),
                At(5.0),
                Ask(Some(AnswerVerdict::NoBinding)),
            ],
        ),
        (
            "silence is cached too",
            2,
            &[
                Ask(None),
                Silent(1),
                Asks(2),
                Silent(2),
                AsksNobody,
                Done(AnswerVerdict::NoAnswer),
                At(11.5),
                Ask(Some(AnswerVerdict::NoAnswer)),
                At(12.5),
                Ask(None),
                Asks(1),
            ],
        ),
        (
            "a CLIENT_DATA without CLT_TIME ends the exchange: the next server at once",
            2,
            &[
                Ask(None),
                Says(1, Said::NoCltTime),
                Asks(2),
                Says(2, nb),
                Done(AnswerVerdict::NoBinding),
            ],
        ),
        (
            "MalformedQuery: no other server is asked",
            2,
            &[
                Ask(None),
                Says(1, Said::Status(StatusCode::MALFORMED_QUERY)),
                AsksNobody,
                Done(AnswerVerdict::Error),
                At(9.0),
                Ask(Some(AnswerVerdict::Error)),
            ],
        ),
        (
            "backoff doubles per repeated failure up to 4x (10, 20, 40, 40 s)",
            1,
            &[
                Ask(None),
                Says(1, nb),
                Done(AnswerVerdict::NoBinding),
                At(10.0),
                Ask(None),
                Says(1, nb),
                Done(AnswerVerdict::NoBinding),
                At(30.0),
                Ask(None),
                Says(1, nb),
                Done(AnswerVerdict::NoBinding),
                At(69.9),
                Ask(Some(AnswerVerdict::NoBinding)),
                At(70.0),
                Ask(None),
                Says(1, nb),
                Done(AnswerVerdict::NoBinding),
                At(109.9),
                Ask(Some(AnswerVerdict::NoBinding)),
                At(110.0),
                Ask(None),
            ],
        ),
        (
            "a binding found resets the backoff",
            1,
            &[
                Ask(None),
                Says(1, nb),
                Done(AnswerVerdict::NoBinding),
                At(10.0),
                Ask(None),
                Says(1, Said::Bound),
                Done(AnswerVerdict::Bound),
                At(11.0),
                Ask(None),
                Says(1, nb),
                Done(AnswerVerdict::NoBinding),
                At(20.9),
                Ask(Some(AnswerVerdict::NoBinding)),
                At(21.0),
                Ask(None),
            ],
        ),
        (
            "quiet for the cap after expiry: the backoff starts afresh",
            1,
            &[
                Ask(None),
                Says(1, nb),
                Done(AnswerVerdict::NoBinding),
                At(10.0),
                Ask(None),
                Says(1, nb),
                Done(AnswerVerdict::NoBinding),
                // Cached until 30 s, strikes remembered until 30 + 40 s.
                At(70.0),
                Ask(None),
                Says(1, nb),
                Done(AnswerVerdict::NoBinding),
                At(79.9),
                Ask(Some(AnswerVerdict::NoBinding)),
                At(80.0),
                Ask(None),
            ],
        ),
    ];
    for (name, servers, script) in cases {
        run_script(name, *servers, script);
    }
}

#[test]
fn negative_cache_hits_and_discarded_client_data_are_counted() {
    use Act::*;
    let r = run_script(
        "counts",
        2,
        &[
            Ask(None),
            Says(1, Said::NoCltTime),
            Says(2, Said::NoBinding),
            Done(AnswerVerdict::NoBinding),
            Ask(Some(AnswerVerdict::NoBinding)),
            Ask(Some(AnswerVerdict::NoBinding)),
        ],
    );
    let st = r.stats();
    assert_eq!(st.get(RequestorCounter::NegativeHits), 2);
    assert_eq!(st.dropped(DropReason::NoCltTime), 1);
    assert_eq!(st.verdicts(AnswerVerdict::NoBinding), 1);
    assert_eq!(
        st.get(RequestorCounter::Timeouts),
        0,
        "no exchange waited for a retransmission"
    );
    assert_eq!(st.get(RequestorCounter::Sent), 2, "one datagram per server");
}

#[test]
fn negative_cache_is_bounded_in_the_requestor() {
    let mut c = cfg(&[server(1)], Policy::Failover);
    c.negative_capacity = 2;
    let mut s = Script::new(c);
    for n in 1..=3u16 {
        let q = Query::by_address(addr(&format!("2001:db8::{n}")));
        s.submit(q);
        let (_, m) = only(s.sent());
        s.deliver(server(1), &reply(m.transaction_id, 1, vec![]));
        only(s.events());
    }
    assert_eq!(s.r.stats().negative_evicted(), 1, "the oldest made room");
    assert!(matches!(
        s.submit(Query::by_address(addr("2001:db8::1"))),
        Submit::Started(_)
    ));
    assert_eq!(
        s.submit(Query::by_address(addr("2001:db8::3"))),
        Submit::Negative(AnswerVerdict::NoBinding)
    );
}

#[test]
fn global_and_per_link_rate_limits() {
    let mut c = cfg(&[server(1)], Policy::Failover);
    c.global_rate = Some(Rate {
        per_sec: 10.0,
        burst: 3.0,
    });
    c.link_rate = Some(Rate {
        per_sec: 1.0,
        burst: 2.0,
    });
    let mut s = Script::new(c);
    let on = |n: u16, link: &str| {
        Query::by_address(format!("2001:db8::{n}").parse().unwrap()).with_link(addr(link))
    };
    assert!(matches!(
        s.submit(on(1, "2001:db8:a::")),
        Submit::Started(_)
    ));
    assert!(matches!(
        s.submit(on(2, "2001:db8:a::")),
        Submit::Started(_)
    ));
    assert_eq!(
        s.submit(on(3, "2001:db8:a::")),
        Submit::Refused(RefuseReason::LinkRate)
    );
    assert!(matches!(
        s.submit(on(4, "2001:db8:b::")),
        Submit::Started(_)
    ));
    assert_eq!(
        s.submit(on(5, "2001:db8:c::")),
        Submit::Refused(RefuseReason::GlobalRate)
    );
    s.at(0.1);
    assert!(matches!(
        s.submit(on(6, "2001:db8:c::")),
        Submit::Started(_)
    ));
    assert_eq!(s.r.stats().refused(RefuseReason::LinkRate), 1);
    assert_eq!(s.r.stats().refused(RefuseReason::GlobalRate), 1);
    assert_eq!(s.sent().len(), 4);
}

#[test]
fn pending_table_is_bounded() {
    let mut c = cfg(&[server(1)], Policy::Failover);
    c.max_pending = 3;
    let mut s = Script::new(c);
    for n in 1..=3u16 {
        assert!(matches!(
            s.submit(Query::by_address(format!("2001:db8::{n}").parse().unwrap())),
            Submit::Started(_)
        ));
    }
    for n in 4..=10u16 {
        assert_eq!(
            s.submit(Query::by_address(format!("2001:db8::{n}").parse().unwrap())),
            Submit::Refused(RefuseReason::PendingFull)
        );
    }
    assert_eq!(s.r.pending(), 3);
    assert_eq!(s.r.stats().refused(RefuseReason::PendingFull), 7);
    let (_, m) = s.sent().remove(0);
    s.deliver(server(1), &reply(m.transaction_id, 1, vec![]));
    assert!(matches!(
        s.submit(Query::by_address(addr("2001:db8::11"))),
        Submit::Started(_)
    ));
}

#[test]
fn live_transaction_ids_are_unique_24_bit() {
    let mut c = cfg(&[server(1), server(2)], Policy::Parallel);
    c.max_pending = 5000;
    let mut s = Script::new(c);
    for n in 0..5000u32 {
        let a = Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + u128::from(n));
        s.submit(Query::by_address(a));
    }
    let xids: Vec<u32> = s.sent().iter().map(|(_, m)| m.transaction_id).collect();
    assert_eq!(xids.len(), 10_000);
    let set: std::collections::HashSet<u32> = xids.iter().copied().collect();
    assert_eq!(set.len(), 10_000, "no two live exchanges share an id");
    assert!(xids.iter().all(|x| *x <= 0x00ff_ffff));
}

#[test]
fn refused_without_servers() {
    let mut s = Script::new(cfg(&[], Policy::Failover));
    assert_eq!(
        s.submit(Query::by_address(addr("2001:db8::1"))),
        Submit::Refused(RefuseReason::NoServers)
    );
}

#[test]
fn absolute_clt_time_is_passed_on_as_sent_for_merge_rule_r13() {
    let mut s = Script::new(cfg(&[server(1)], Policy::Failover));
    s.submit(Query::by_address(addr("2001:db8::10")));
    let (_, m) = only(s.sent());
    s.at(100.0);
    // ISC dhcpd 4.4 puts the absolute time (seconds since 1970) in CLT_TIME.
    s.deliver(
        server(1),
        &reply(
            m.transaction_id,
            1,
            vec![client_data("2001:db8::10", Some(1_795_875_086))],
        ),
    );
    let ev = only(s.events());
    let b = only(ev.outcome.bindings().cloned().collect());
    assert_eq!(b.clt_time(), 1_795_875_086, "kept as sent");
}

#[test]
fn top_level_relay_data_and_base_time_are_kept_beside_client_data() {
    let mut s = Script::new(cfg(&[server(1)], Policy::Failover));
    s.submit(Query::by_address(addr("2001:db8::10")).with_relay_data(true));
    let (_, m) = only(s.sent());
    let rd = LqRelayData {
        peer_address: addr("2001:db8:1::1"),
        relay: RelayMessage::new(
            MessageType::RELAY_FORW,
            0,
            addr("2001:db8:1::1"),
            addr("fe80::10"),
        ),
    };
    // Kea over UDP: LQ_RELAY_DATA at the top level, beside CLIENT_DATA.
    s.deliver(
        server(1),
        &reply(
            m.transaction_id,
            1,
            vec![
                client_data("2001:db8::10", Some(3)),
                DhcpOption::LqRelayData(Box::new(rd.clone())),
                DhcpOption::LqBaseTime(1_000_000),
            ],
        ),
    );
    let ev = only(s.events());
    let b = only(ev.outcome.bindings().cloned().collect());
    assert_eq!(b.top_relay_data.as_ref(), Some(&rd));
    assert_eq!(
        b.relay_data(),
        Some(&rd),
        "found although not inside CLIENT_DATA"
    );
    assert_eq!(b.top_base_time, Some(1_000_000));
}

#[test]
fn server_reply_sequence_number_is_read_when_configured() {
    for (code, want) in [(Some(65001), Some(42)), (None, None), (Some(65002), None)] {
        let mut s = Script::new(RequestorConfig {
            srsn_option: code,
            ..cfg(&[server(1)], Policy::Failover)
        });
        s.submit(Query::by_address(addr("2001:db8::10")));
        let (_, m) = only(s.sent());
        s.deliver(
            server(1),
            &reply(
                m.transaction_id,
                1,
                vec![
                    client_data("2001:db8::10", Some(3)),
                    DhcpOption::Unknown {
                        code: crate::wire::OptionCode(65001),
                        data: 42u32.to_be_bytes().to_vec(),
                    },
                ],
            ),
        );
        let ev = only(s.events());
        let b = only(ev.outcome.bindings().cloned().collect());
        assert_eq!(b.srsn, want, "option code {code:?}");
    }
}

#[test]
fn a_bad_prefix_is_counted_and_the_answer_still_binds() {
    let mut s = Script::new(cfg(&[server(1)], Policy::Failover));
    s.submit(Query::by_address(addr("2001:db8::10")));
    let (_, m) = only(s.sent());
    let DhcpOption::ClientData(mut cd) = client_data("2001:db8::10", Some(3)) else {
        unreachable!()
    };
    // A /129 (a hostile or broken server) beside the good address.
    cd.options.push(DhcpOption::IaPrefix(crate::wire::IaPrefix {
        prefix_len: 129,
        ..crate::wire::IaPrefix::new("2001:db8:300::/56".parse().unwrap(), 1, 2)
    }));
    s.deliver(
        server(1),
        &reply(m.transaction_id, 1, vec![DhcpOption::ClientData(cd)]),
    );
    let ev = only(s.events());
    assert_eq!(ev.outcome.verdict, AnswerVerdict::Bound);
    let b = only(ev.outcome.bindings().cloned().collect());
    let leases = b.observed.leases.clone();
    assert_eq!(
        leases.iter().map(|l| l.key).collect::<Vec<_>>(),
        [crate::cache::LeaseKey::Address(addr("2001:db8::10"))]
    );
    assert_eq!(s.r.stats().dropped(DropReason::BadPrefix), 1);
}
