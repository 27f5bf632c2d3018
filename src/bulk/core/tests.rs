//! Scripts in virtual time: bytes in, bytes and events out.

use super::*;
use crate::wire::{IaAddr, LqRelayData, Message, Options, QueryType, RelayMessage, Status};

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn us() -> Duid {
    Duid::ll_ethernet([2, 0, 0, 0, 0, 1])
}

fn server() -> Duid {
    Duid::ll_ethernet([2, 0, 0, 0, 5, 0x47])
}

fn cfg(pipelining: bool) -> ConnConfig {
    ConnConfig {
        server: "[2001:db8:ff::2]:547".parse().unwrap(),
        requestor_duid: us(),
        pipelining,
        data_timeout: Duration::from_secs(300),
        first_xid: 100,
        srsn_option: Some(65001),
    }
}

fn client_data(n: u8, clt: bool) -> ClientData {
    let mut o = vec![
        DhcpOption::ClientId(Duid::ll_ethernet([0x0a, 0, 0, 0, 0, n])),
        DhcpOption::IaAddr(IaAddr::new(a(&format!("2001:db8:1::{n}")), 100, 200)),
    ];
    if clt {
        o.push(DhcpOption::CltTime(5));
    }
    o.push(DhcpOption::LqRelayData(Box::new(LqRelayData {
        peer_address: a("2001:db8:1::1"),
        relay: RelayMessage::new(
            MessageType::RELAY_FORW,
            0,
            a("2001:db8:1::1"),
            a(&format!("fe80::{n}")),
        ),
    })));
    ClientData {
        options: Options(o),
    }
}

fn msg(t: MessageType, xid: u32, opts: Vec<DhcpOption>) -> Vec<u8> {
    let mut m = ClientMessage::new(t, xid);
    m.options = Options(opts);
    frame_to_vec(&m.into()).unwrap()
}

fn reply(xid: u32, extra: Vec<DhcpOption>) -> Vec<u8> {
    let mut o = vec![DhcpOption::ServerId(server()), DhcpOption::ClientId(us())];
    o.extend(extra);
    msg(MessageType::LEASEQUERY_REPLY, xid, o)
}

fn data(xid: u32, n: u8) -> Vec<u8> {
    msg(
        MessageType::LEASEQUERY_DATA,
        xid,
        vec![
            DhcpOption::ClientData(client_data(n, true)),
            DhcpOption::Unknown {
                code: OptionCode(65001),
                data: vec![0, 0, 1, n],
            },
        ],
    )
}

fn done(xid: u32, status: Option<StatusCode>) -> Vec<u8> {
    let o = status
        .map(|c| vec![DhcpOption::StatusCode(Status::new(c, "x"))])
        .unwrap_or_default();
    msg(MessageType::LEASEQUERY_DONE, xid, o)
}

fn sent_queries(c: &mut BulkConnection) -> Vec<(u32, LqQuery)> {
    let bytes = c.poll_transmit().unwrap_or_default();
    let mut dec = FrameDecoder::new(FrameConfig::default());
    dec.push(&bytes).unwrap();
    let mut out = Vec::new();
    while let Some(f) = dec.next_frame().unwrap() {
        let Message::Client(m) = Message::parse(f).unwrap() else {
            panic!()
        };
        assert_eq!(m.msg_type, MessageType::LEASEQUERY);
        assert_eq!(m.options.client_id(), Some(&us()));
        out.push((m.transaction_id, m.options.lq_query().unwrap().clone()));
    }
    out
}

fn events(c: &mut BulkConnection) -> Vec<ConnEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn link_q(l: &str) -> BulkQuery {
    BulkQuery::LinkAddress(a(l))
}

#[test]
fn reply_data_done_streams_bindings_in_order() {
    let t0 = Instant::now();
    let mut c = BulkConnection::new(cfg(false));
    c.submit(t0, QueryId::new(1), link_q("2001:db8:1::1"));
    let q = sent_queries(&mut c);
    assert_eq!(q.len(), 1);
    let (xid, lq) = &q[0];
    assert_eq!(*xid, 100);
    assert_eq!(lq.query_type, QueryType::BY_LINK_ADDRESS);
    assert_eq!(lq.link_address, a("2001:db8:1::1"));
    assert_eq!(lq.options.oro().unwrap(), &vec![OptionCode::LQ_RELAY_DATA]);
    let t1 = t0 + Duration::from_millis(5);
    let mut bytes = reply(100, vec![DhcpOption::ClientData(client_data(1, true))]);
    bytes.extend(data(100, 2));
    // Split the stream at an awkward place: frames must reassemble.
    let (x, y) = bytes.split_at(7);
    c.handle_bytes(t1, x);
    c.handle_bytes(t1, y);
    c.handle_bytes(t1, &done(100, None));
    let ev = events(&mut c);
    assert_eq!(ev.len(), 3);
    let ConnEvent::Binding(b) = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(b.query, QueryId::new(1));
    assert_eq!(b.answer.server_duid, server().to_vec());
    assert_eq!(b.answer.server, cfg(false).server);
    assert_eq!(b.answer.placed_link(), Some(a("2001:db8:1::1")));
    assert_eq!(peer_of(b), Some(a("fe80::1")));
    assert_eq!(b.answer.received, t1);
    assert_eq!(b.answer.srsn, None);
    assert!(matches!(&ev[1], ConnEvent::Binding(b)
        if b.answer.data == client_data(2, true) && b.answer.srsn == Some(258)));
    assert_eq!(
        ev[2],
        ConnEvent::Finished {
            id: QueryId::new(1),
            query: link_q("2001:db8:1::1"),
            outcome: Outcome::Complete { bindings: 2 }
        }
    );
    assert_eq!(c.outstanding(), 0);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn one_query_in_flight_unless_pipelining() {
    let t0 = Instant::now();
    let mut c = BulkConnection::new(cfg(false));
    c.submit(t0, QueryId::new(1), link_q("2001:db8:1::1"));
    c.submit(t0, QueryId::new(2), link_q("2001:db8:2::1"));
    assert_eq!(sent_queries(&mut c).len(), 1, "second waits");
    // REPLY with no client data completes query 1 and releases query 2.
    c.handle_bytes(t0, &reply(100, vec![]));
    let q = sent_queries(&mut c);
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].0, 101);
    assert_eq!(q[0].1.link_address, a("2001:db8:2::1"));
    assert_eq!(
        events(&mut c),
        [ConnEvent::Finished {
            id: QueryId::new(1),
            query: link_q("2001:db8:1::1"),
            outcome: Outcome::Complete { bindings: 0 }
        }]
    );

    let mut p = BulkConnection::new(cfg(true));
    p.submit(t0, QueryId::new(1), link_q("2001:db8:1::1"));
    p.submit(t0, QueryId::new(2), link_q("2001:db8:2::1"));
    assert_eq!(sent_queries(&mut p).len(), 2, "pipelined");
    // Interleaved answers are demultiplexed by xid.
    let mut b = reply(101, vec![DhcpOption::ClientData(client_data(7, true))]);
    b.extend(reply(
        100,
        vec![DhcpOption::ClientData(client_data(1, true))],
    ));
    b.extend(done(101, None));
    b.extend(data(100, 2));
    b.extend(done(100, None));
    p.handle_bytes(t0, &b);
    let fin: Vec<(QueryId, u64)> = events(&mut p)
        .into_iter()
        .filter_map(|e| match e {
            ConnEvent::Finished { id, outcome, .. } => Some((id, outcome.bindings())),
            _ => None,
        })
        .collect();
    assert_eq!(fin, [(QueryId::new(2), 1), (QueryId::new(1), 2)]);
}

#[test]
fn statuses_end_queries_and_classify_retry() {
    let t0 = Instant::now();
    let mut c = BulkConnection::new(cfg(false));
    c.submit(t0, QueryId::new(1), link_q("2001:db8:1::1"));
    c.handle_bytes(
        t0,
        &reply(
            100,
            vec![DhcpOption::StatusCode(Status::new(
                StatusCode::NOT_CONFIGURED,
                "no such link",
            ))],
        ),
    );
    let ev = events(&mut c);
    let ConnEvent::Finished { outcome, .. } = &ev[0] else {
        panic!()
    };
    assert!(matches!(outcome, Outcome::Status { code, message, .. }
        if *code == StatusCode::NOT_CONFIGURED && message == "no such link"));
    assert!(!outcome.retryable());
    // QueryTerminated in the DONE after some data: data stays delivered, query retryable.
    c.submit(t0, QueryId::new(2), link_q("2001:db8:1::1"));
    let mut b = reply(101, vec![DhcpOption::ClientData(client_data(1, true))]);
    b.extend(done(101, Some(StatusCode::QUERY_TERMINATED)));
    c.handle_bytes(t0, &b);
    let ev = events(&mut c);
    assert!(matches!(ev[0], ConnEvent::Binding(_)));
    let ConnEvent::Finished { outcome, .. } = &ev[1] else {
        panic!()
    };
    assert_eq!(outcome.bindings(), 1);
    assert!(outcome.retryable());
}

#[test]
fn bad_messages_are_discarded_or_close_the_connection() {
    let t0 = Instant::now();
    let mut c = BulkConnection::new(cfg(false));
    c.submit(t0, QueryId::new(1), link_q("2001:db8:1::1"));
    c.submit(t0, QueryId::new(2), link_q("2001:db8:2::1"));
    // DATA before REPLY, a REPLY for another xid, a REPLY with someone else's CLIENTID.
    c.handle_bytes(t0, &data(100, 1));
    c.handle_bytes(t0, &reply(555, vec![]));
    c.handle_bytes(
        t0,
        &msg(
            MessageType::LEASEQUERY_REPLY,
            100,
            vec![
                DhcpOption::ServerId(server()),
                DhcpOption::ClientId(server()),
            ],
        ),
    );
    // A REPLY whose CLIENT_DATA lacks CLT_TIME: the query goes on, the data is dropped.
    c.handle_bytes(
        t0,
        &reply(100, vec![DhcpOption::ClientData(client_data(1, false))]),
    );
    assert_eq!(
        events(&mut c),
        [
            ConnEvent::Discarded(Discard::UnknownXid),
            ConnEvent::Discarded(Discard::UnknownXid),
            ConnEvent::Discarded(Discard::BadIdentifiers),
            ConnEvent::Discarded(Discard::NoCltTime),
        ]
    );
    c.handle_bytes(t0, &data(100, 2));
    assert!(matches!(events(&mut c)[..], [ConnEvent::Binding(_)]));
    // DONE for an unknown xid: close; in-flight lost, queued not sent.
    c.handle_bytes(t0, &done(999, None));
    assert_eq!(
        events(&mut c),
        [
            ConnEvent::Close(CloseReason::Protocol(
                "LEASEQUERY-DONE for an unknown query"
            )),
            ConnEvent::Finished {
                id: QueryId::new(1),
                query: link_q("2001:db8:1::1"),
                outcome: Outcome::Lost { bindings: 1 }
            },
            ConnEvent::Finished {
                id: QueryId::new(2),
                query: link_q("2001:db8:2::1"),
                outcome: Outcome::NotSent
            },
        ]
    );
    assert!(c.is_closed());
    // Garbage with a valid frame length closes too.
    let mut g = BulkConnection::new(cfg(false));
    g.submit(t0, QueryId::new(1), link_q("2001:db8:1::1"));
    g.handle_bytes(t0, &[0, 3, 15, 0, 0]);
    assert!(matches!(
        events(&mut g)[0],
        ConnEvent::Close(CloseReason::Protocol(_))
    ));
    // A zero length prefix closes.
    let mut z = BulkConnection::new(cfg(false));
    z.submit(t0, QueryId::new(1), link_q("2001:db8:1::1"));
    z.handle_bytes(t0, &[0, 0]);
    assert!(z.is_closed());
}

#[test]
fn data_timeout_counts_from_last_progress() {
    let t0 = Instant::now();
    let mut c = BulkConnection::new(ConnConfig {
        data_timeout: Duration::from_secs(10),
        ..cfg(false)
    });
    c.submit(t0, QueryId::new(1), link_q("2001:db8:1::1"));
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    let t1 = t0 + Duration::from_secs(8);
    c.handle_bytes(
        t1,
        &reply(100, vec![DhcpOption::ClientData(client_data(1, true))]),
    );
    assert_eq!(c.poll_timeout(), Some(t1 + Duration::from_secs(10)));
    c.handle_timeout(t0 + Duration::from_secs(12));
    assert!(!c.is_closed(), "progress moved the deadline");
    c.handle_timeout(t1 + Duration::from_secs(10));
    let ev = events(&mut c);
    assert_eq!(ev[1], ConnEvent::Close(CloseReason::DataTimeout));
    assert!(matches!(
        &ev[2],
        ConnEvent::Finished {
            outcome: Outcome::TimedOut { bindings: 1 },
            ..
        }
    ));
}

#[test]
fn connection_loss_ends_in_flight_as_lost() {
    let t0 = Instant::now();
    let mut c = BulkConnection::new(cfg(false));
    c.submit(
        t0,
        QueryId::new(1),
        BulkQuery::RelayId {
            relay_id: us(),
            link: Ipv6Addr::UNSPECIFIED,
        },
    );
    let q = sent_queries(&mut c);
    assert_eq!(q[0].1.query_type, QueryType::BY_RELAY_ID);
    assert_eq!(q[0].1.options.relay_id(), Some(&us()));
    c.handle_closed();
    let ev = events(&mut c);
    assert!(matches!(
        &ev[0],
        ConnEvent::Finished {
            outcome: Outcome::Lost { bindings: 0 },
            ..
        }
    ));
    // After close, a submit comes straight back unsent.
    c.submit(t0, QueryId::new(2), link_q("2001:db8:1::1"));
    assert!(matches!(
        &events(&mut c)[0],
        ConnEvent::Finished {
            outcome: Outcome::NotSent,
            ..
        }
    ));
}

#[test]
fn binding_link_falls_back_to_query_link() {
    let t0 = Instant::now();
    let mut c = BulkConnection::new(cfg(false));
    c.submit(t0, QueryId::new(1), link_q("2001:db8:9::1"));
    let mut cd = client_data(1, true);
    cd.options
        .retain(|o| !matches!(o, DhcpOption::LqRelayData(_)));
    c.handle_bytes(t0, &reply(100, vec![DhcpOption::ClientData(cd)]));
    let ConnEvent::Binding(b) = &events(&mut c)[0] else {
        panic!()
    };
    assert_eq!(b.answer.placed_link(), Some(a("2001:db8:9::1")));
    assert_eq!(peer_of(b), None);
}

#[test]
fn binding_link_and_peer_come_from_this_boxs_relay_level_the_outermost() {
    let t0 = Instant::now();
    let mut c = BulkConnection::new(cfg(false));
    c.submit(t0, QueryId::new(1), link_q("2001:db8:9::1"));
    let mut cd = client_data(1, true);
    // Wrap the single level (link 2001:db8:1::1, peer fe80::1) in an outer relay.
    for o in cd.options.0.iter_mut() {
        if let DhcpOption::LqRelayData(rd) = o {
            let inner = rd.relay.clone();
            let mut outer = RelayMessage::new(
                MessageType::RELAY_FORW,
                1,
                a("2001:db8:9::1"),
                a("2001:db8:1::2"),
            );
            outer
                .options
                .push(DhcpOption::RelayMsg(Box::new(Message::Relay(inner))));
            rd.relay = outer;
        }
    }
    c.handle_bytes(t0, &reply(100, vec![DhcpOption::ClientData(cd)]));
    let ConnEvent::Binding(b) = &events(&mut c)[0] else {
        panic!()
    };
    // The outermost level is the one the relay nearest the server (this box) wrote; the level
    // inside it never names the link (a subscriber can write one posing as a relay).
    assert_eq!(b.answer.placed_link(), Some(a("2001:db8:9::1")));
    assert_eq!(peer_of(b), Some(a("2001:db8:1::2")));
}

/// A CLIENT_DATA for client `n` (address 2001:db8:1::n) that the server made at `base` (its
/// clock, LQ_BASE_TIME) with CLT_TIME `clt`.
fn client_data_at(n: u8, clt: u32, base: Option<u32>) -> ClientData {
    let mut cd = client_data(n, false);
    cd.options.0.push(DhcpOption::CltTime(clt));
    if let Some(b) = base {
        cd.options.0.push(DhcpOption::LqBaseTime(b));
    }
    cd
}

fn data_at(xid: u32, n: u8, base: Option<u32>) -> Vec<u8> {
    msg(
        MessageType::LEASEQUERY_DATA,
        xid,
        vec![DhcpOption::ClientData(client_data_at(n, 0, base))],
    )
}

fn stamps(c: &mut BulkConnection) -> Vec<(Instant, Instant)> {
    events(c)
        .into_iter()
        .filter_map(|e| match e {
            ConnEvent::Binding(b) => Some((b.answer.received, b.stamped)),
            _ => None,
        })
        .collect()
}

/// One clock (merge R14/R15): a binding is stamped with when the server made it (LQ_BASE_TIME
/// through the connection's one offset, the least-delayed message's), not when we read it;
/// never later than the read, never more than MAX_STAMP_LAG earlier; without a base time, the
/// read; a server clock running ahead of the offset moves it.
#[test]
fn bindings_are_stamped_by_the_servers_base_time_through_one_offset_per_connection() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut c = BulkConnection::new(cfg(false));
    c.submit(t0, QueryId::new(1), link_q("2001:db8:1::1"));
    sent_queries(&mut c);
    let cd = DhcpOption::ClientData(client_data_at(1, 0, Some(1_000_000)));
    c.handle_bytes(t0, &reply(100, vec![cd]));
    assert_eq!(
        stamps(&mut c),
        [(t0, t0)],
        "the first message sets the offset"
    );
    // Made 5 s later by the server, read 20 s later (a busy cache held the reads back).
    c.handle_bytes(t0 + s(20), &data_at(100, 2, Some(1_000_005)));
    assert_eq!(stamps(&mut c), [(t0 + s(20), t0 + s(5))]);
    // No base time: the read.
    c.handle_bytes(t0 + s(21), &data_at(100, 3, None));
    assert_eq!(stamps(&mut c), [(t0 + s(21), t0 + s(21))]);
    // A server clock stepping back an hour: no more than MAX_STAMP_LAG before the read.
    c.handle_bytes(t0 + s(22), &data_at(100, 4, Some(1_000_000 - 3600)));
    assert_eq!(stamps(&mut c), [(t0 + s(22), t0 + s(22) - MAX_STAMP_LAG)]);
    // A message that arrives sooner than the offset says (or a clock ahead): never after
    // the read, and it becomes the offset.
    c.handle_bytes(t0 + s(30), &data_at(100, 5, Some(1_000_100)));
    assert_eq!(stamps(&mut c), [(t0 + s(30), t0 + s(30))]);
    c.handle_bytes(t0 + s(40), &data_at(100, 6, Some(1_000_101)));
    assert_eq!(stamps(&mut c), [(t0 + s(40), t0 + s(31))]);
}

/// The race of issue 21: a recovery stream's LEASEQUERY-DATA that the server made before a
/// client's RELEASE, but that the cache applies after the snooped release (the stream was
/// held back), must not bring the released lease back. Stamped when read it would: its
/// CLT_TIME 0 would then make it look newer than the release.
#[test]
fn bulk_data_made_before_a_release_but_applied_after_it_does_not_undo_it() {
    use crate::cache::{BindingStore, CacheConfig, LeaseKey, MergeVerdict, Withdrawal};
    let clock = crate::time::AgentClock::new();
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut c = BulkConnection::new(cfg(false));
    c.submit(t0, QueryId::new(1), link_q("2001:db8:1::1"));
    sent_queries(&mut c);
    let cd = DhcpOption::ClientData(client_data_at(1, 0, Some(1000)));
    c.handle_bytes(t0, &reply(100, vec![cd]));
    events(&mut c);
    // Server time 1005: client 2 renews (CLT 0); the server puts it in the stream.
    // Ours t0+10: client 2 releases; the snooped reply is applied at once.
    // Ours t0+20: the stream's message is read and applied.
    c.handle_bytes(t0 + s(20), &data_at(100, 2, Some(1005)));
    let b = match events(&mut c).pop() {
        Some(ConnEvent::Binding(b)) => b,
        e => panic!("{e:?}"),
    };
    let key = LeaseKey::Address(a("2001:db8:1::2"));
    let client = Duid::ll_ethernet([0x0a, 0, 0, 0, 0, 2]);
    let run = |stamp: Instant| {
        let store = BindingStore::new(CacheConfig::default());
        let first = crate::bulk::recovery::observation(&b, clock.at_std(t0)).expect("usable");
        store.apply(&first);
        assert!(store.get(&key).is_some());
        let out = store.withdraw(&Withdrawal {
            keys: vec![key],
            client_duid: Some(client.clone()),
            link: Some(a("2001:db8:1::1")),
            iaids: Vec::new(),
            reason: crate::cache::WithdrawReason::Released,
            arrival: clock.at_std(t0 + s(10)),
        });
        assert_eq!(out.verdicts, [(key, MergeVerdict::Removed)]);
        let late = crate::bulk::recovery::observation(&b, clock.at_std(stamp)).expect("usable");
        store.apply(&late);
        store.get(&key).is_some()
    };
    assert!(!run(b.stamped), "the release was undone");
    assert!(
        run(b.answer.received),
        "stamped when read, the old answer would have won (the race this test pins)"
    );
}

/// The next hop LQ_RELAY_DATA names (this box's level's peer-address), as the cache reads it.
fn peer_of(b: &BulkBinding) -> Option<Ipv6Addr> {
    b.answer
        .relay_data()
        .and_then(|rd| rd.chain().peer_address())
}

#[test]
fn a_bad_prefix_is_counted_and_the_binding_still_goes_out() {
    let t0 = Instant::now();
    let mut c = BulkConnection::new(cfg(false));
    c.submit(t0, QueryId::new(1), link_q("2001:db8:1::1"));
    sent_queries(&mut c);
    let mut cd = client_data(1, true);
    // Two IAPREFIX a hostile or broken server sent with lengths over 128.
    for len in [129, 255] {
        cd.options.push(DhcpOption::IaPrefix(crate::wire::IaPrefix {
            prefix_len: len,
            ..crate::wire::IaPrefix::new("2001:db8:300::/56".parse().unwrap(), 1, 2)
        }));
    }
    c.handle_bytes(t0, &reply(100, vec![DhcpOption::ClientData(cd.clone())]));
    let ev = events(&mut c);
    assert_eq!(ev.len(), 3, "{ev:?}");
    assert_eq!(
        ev[..2],
        [
            ConnEvent::Discarded(Discard::BadPrefix),
            ConnEvent::Discarded(Discard::BadPrefix)
        ]
    );
    assert!(matches!(&ev[2], ConnEvent::Binding(b) if b.answer.data == cd));
}

/// The reading before the checked view: the owned tree built, then read by its finders as
/// `handle_message` read it. The oracle `read_message` is held to.
fn read_owned(
    bytes: &[u8],
    requestor: &Duid,
    srsn_option: Option<u16>,
) -> Result<Received, crate::wire::Error> {
    let m = match Message::parse(bytes)? {
        Message::Client(m) => m,
        Message::Relay(_) => return Ok(Received::WrongType),
    };
    let o = &m.options;
    let status = || o.status().map(|s| (s.code, s.text().into_owned()));
    let data = || {
        o.client_data().map(|cd| ReceivedData {
            data: cd.clone(),
            base_time: o.lq_base_time(),
            srsn: srsn_option.and_then(|c| o.srsn(c)),
        })
    };
    let xid = m.transaction_id;
    Ok(match m.msg_type {
        MessageType::LEASEQUERY_REPLY => Received::Reply {
            xid,
            ours: o.client_id() == Some(requestor),
            server: o.server_id().cloned(),
            status: status(),
            data: data(),
        },
        MessageType::LEASEQUERY_DATA => Received::Data { xid, data: data() },
        MessageType::LEASEQUERY_DONE => Received::Done {
            xid,
            status: status(),
        },
        _ => Received::WrongType,
    })
}

/// A bulk stream's messages with every option `read_message` reads, most of them twice (the
/// first counts): CLIENT_DATA with relay data (an LDRA level inside), an SRSN first with a
/// wrong length, two base times, statuses with non-ASCII text; and a relay message and a
/// LEASEQUERY, which read as the wrong type.
fn bulk_samples() -> Vec<Vec<u8>> {
    const SRSN: u16 = 65001;
    let with_ldra = |n: u8| {
        let mut cd = client_data(n, true);
        let mut ldra = RelayMessage::new(MessageType::RELAY_FORW, 0, a("::"), a("fe80::9"));
        ldra.options
            .push(DhcpOption::InterfaceId(b"port-3".to_vec()));
        let mut relay =
            RelayMessage::new(MessageType::RELAY_FORW, 1, a("2001:db8:1::1"), a("fe80::7"));
        relay
            .options
            .push(DhcpOption::RelayMsg(Box::new(ldra.into())));
        cd.options
            .push(DhcpOption::LqRelayData(Box::new(LqRelayData {
                peer_address: a("2001:db8:1::1"),
                relay,
            })));
        cd.options.push(DhcpOption::LqBaseTime(77));
        cd
    };
    let common = |first_cd: u8| {
        vec![
            DhcpOption::Unknown {
                code: OptionCode(SRSN),
                data: vec![0, 0, 1],
            },
            DhcpOption::ServerId(server()),
            DhcpOption::ClientId(us()),
            DhcpOption::StatusCode(Status::new(StatusCode::SUCCESS, "fine\u{e9}")),
            DhcpOption::ClientData(with_ldra(first_cd)),
            DhcpOption::LqBaseTime(1000),
            DhcpOption::Unknown {
                code: OptionCode(SRSN),
                data: vec![0, 0, 0, 7],
            },
            DhcpOption::ServerId(Duid::ll_ethernet([2, 0, 0, 0, 0, 0xff])),
            DhcpOption::ClientId(Duid::ll_ethernet([2, 0, 0, 0, 0, 0xaa])),
            DhcpOption::StatusCode(Status::new(StatusCode::NOT_CONFIGURED, "no")),
            DhcpOption::ClientData(client_data(first_cd + 1, false)),
            DhcpOption::LqBaseTime(2000),
        ]
    };
    let body = |t: MessageType, opts: Vec<DhcpOption>| {
        let mut m = ClientMessage::new(t, 0xabcdef);
        m.options = Options(opts);
        Message::from(m).to_vec().unwrap()
    };
    let mut relay = RelayMessage::new(MessageType::RELAY_REPL, 0, a("2001:db8:1::1"), a("fe80::1"));
    relay
        .options
        .push(DhcpOption::InterfaceId(b"ge-0/0/1".to_vec()));
    vec![
        body(MessageType::LEASEQUERY_REPLY, common(1)),
        body(MessageType::LEASEQUERY_DATA, common(3)),
        body(
            MessageType::LEASEQUERY_DONE,
            vec![
                DhcpOption::StatusCode(Status::new(StatusCode::QUERY_TERMINATED, "later\u{e9}")),
                DhcpOption::StatusCode(Status::new(StatusCode::SUCCESS, "")),
            ],
        ),
        body(MessageType::LEASEQUERY, common(5)),
        Message::from(relay).to_vec().unwrap(),
    ]
}

#[test]
fn the_in_place_reading_equals_the_owned_one() {
    let ours = us();
    let samples = bulk_samples();
    // The samples read as meant, so the comparisons below are over real values.
    let Ok(Received::Reply {
        ours: true,
        server: Some(s),
        status: Some((StatusCode::SUCCESS, text)),
        data: Some(d),
        ..
    }) = read_message(&samples[0], &ours, Some(65001))
    else {
        panic!("the REPLY reads");
    };
    assert_eq!((s, text.as_str()), (server(), "fine\u{e9}"));
    assert_eq!((d.base_time, d.srsn), (Some(1000), Some(7)));
    assert!(d.data.relay_data().is_some() && d.data.clt_time() == Some(5));
    assert!(matches!(
        read_message(&samples[2], &ours, None),
        Ok(Received::Done {
            status: Some((StatusCode::QUERY_TERMINATED, _)),
            ..
        })
    ));
    assert_eq!(
        read_message(&samples[4], &ours, None),
        Ok(Received::WrongType)
    );
    for msg in &samples {
        for srsn in [None, Some(65001), Some(OptionCode::STATUS_CODE.0)] {
            for who in [&ours, &server()] {
                assert_eq!(
                    read_message(msg, who, srsn),
                    read_owned(msg, who, srsn),
                    "whole"
                );
            }
            for cut in 0..msg.len() {
                let m = &msg[..cut];
                assert_eq!(
                    read_message(m, &ours, srsn),
                    read_owned(m, &ours, srsn),
                    "cut at {cut}"
                );
            }
        }
        for at in 0..msg.len() {
            for v in [0u8, 1, 2, 9, 13, 45, 0xff, msg[at] ^ 1] {
                let mut m = msg.clone();
                m[at] = v;
                let srsn = Some(65001);
                assert_eq!(
                    read_message(&m, &ours, srsn),
                    read_owned(&m, &ours, srsn),
                    "byte {at} = {v}"
                );
            }
        }
    }
}
