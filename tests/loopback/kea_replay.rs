//! Kea's recorded answers (tests/data/kea/, see its README) replayed to the agent's own
//! requestors on loopback: a replay server answers each query lqagent sends with the bytes Kea
//! sent to the same query when it was recorded (only the transaction id rewritten to the new
//! one). The bulk requestor (`bulk::tcp`), the cache's conversion (`bulk::recovery::observation`)
//! and the merge (`cache::BindingStore`) then have to produce the bindings Kea's own lease file
//! (kea-leases6.csv) lists — with the last transaction time and the expiry Kea wrote down, which
//! holds only if CLT_TIME is read as elapsed seconds and the lifetimes as what remains.
//! The UDP requestor (`requestor::udp`) is replayed the same way: verdicts, relay data beside
//! CLIENT_DATA, a prefix found by an address inside it, LQ_CLIENT_LINK and its follow-ups.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use lqagent::bulk::BulkConfig;
use lqagent::bulk::core::BulkQuery;
use lqagent::bulk::recovery::observation;
use lqagent::bulk::stats::BulkStats;
use lqagent::bulk::tcp::{self, BulkEvent, QueryResult, ServerQueries};
use lqagent::cache::{BindingStore, CacheConfig, LeaseKey};
use lqagent::prefix::Ipv6Prefix;
use lqagent::requestor::udp::{self, UdpConfig};
use lqagent::requestor::{
    Answer, AnswerVerdict, Query, QueryOutcome, RequestorConfig, RetransmitParams,
};
use lqagent::time::Timestamp;
use lqagent::wire::Duid;
use support::captures::{self, KeaLease, TcpConnection};

const BULK: &str = "kea/kea-bulk.pcap";
const LEASEQUERY: &str = "kea/kea-leasequery.pcap";
const LEASES: &str = "kea/kea-leases6.csv";
/// The requestor DUID the recording used (DUID-LL of the access concentrator's up0).
const REQUESTOR: &str = "00030001020000000201";

/// The xid of a client/server message.
fn xid(m: &[u8]) -> u32 {
    u32::from_be_bytes([0, m[1], m[2], m[3]])
}

fn with_xid(m: &[u8], x: u32) -> Vec<u8> {
    let mut v = m.to_vec();
    v[1..4].copy_from_slice(&x.to_be_bytes()[1..]);
    v
}

/// Query bytes after the transaction id → the server's messages for that query, in order.
type Answers = BTreeMap<Vec<u8>, Vec<Vec<u8>>>;

/// The recorded answers of every bulk connection.
fn recorded_bulk() -> (Vec<TcpConnection>, Answers) {
    let conns = captures::tcp(BULK);
    let mut answers = BTreeMap::new();
    for c in &conns {
        let server = c.server_messages();
        for q in c.client_messages() {
            let x = xid(&q);
            let mine: Vec<Vec<u8>> = server.iter().filter(|m| xid(m) == x).cloned().collect();
            answers.entry(q[4..].to_vec()).or_insert(mine);
        }
    }
    (conns, answers)
}

/// A TCP server on loopback that answers each query with Kea's recorded answer to it (xid
/// rewritten) and closes when the requestor does.
fn replay_server(answers: Answers) -> SocketAddr {
    let l = TcpListener::bind("[::1]:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let answers = answers.clone();
            std::thread::spawn(move || {
                loop {
                    let mut len = [0u8; 2];
                    if s.read_exact(&mut len).is_err() {
                        return;
                    }
                    let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if s.read_exact(&mut q).is_err() || q.len() < 4 {
                        return;
                    }
                    let Some(msgs) = answers.get(&q[4..]) else {
                        eprintln!("replay: a query Kea was never asked: {}", hex::encode(&q));
                        return;
                    };
                    for m in msgs {
                        let m = with_xid(m, xid(&q));
                        let mut framed = (m.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&m);
                        if s.write_all(&framed).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Run `queries` through the agent's bulk requestor against the replay; every binding goes
/// through the cache's conversion into a fresh store, stamped as arriving at `arrival`.
fn bulk_into_store(
    queries: Vec<BulkQuery>,
    arrival: Timestamp,
) -> (BindingStore, Vec<(BulkQuery, QueryResult)>) {
    let (_, answers) = recorded_bulk();
    let server = replay_server(answers);
    let cfg = Arc::new(BulkConfig {
        requestor_duid: Duid::from(&hex::decode(REQUESTOR).unwrap()),
        data_timeout: Duration::from_secs(5),
        max_attempts: 1,
        ..BulkConfig::default()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = BindingStore::new(CacheConfig::default());
    let mut results = Vec::new();
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let run = tokio::spawn(tcp::run(
            vec![ServerQueries { server, queries }],
            cfg,
            tx,
            Arc::new(BulkStats::with_max_connections(1)),
        ));
        while let Some(ev) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the bulk run ends")
        {
            match ev {
                BulkEvent::Binding { binding, .. } => {
                    let obs = observation(&binding, arrival)
                        .unwrap_or_else(|e| panic!("unusable Kea binding {binding:?}: {e:?}"));
                    store.apply(&obs);
                }
                BulkEvent::QueryFinished { query, result, .. } => results.push((query, result)),
                BulkEvent::ServerFinished { .. } => {}
            }
        }
        run.await.unwrap();
    });
    (store, results)
}

/// Kea's leases as the recording left them before the RELEASE: the first row of each lease.
fn kea_leases() -> Vec<KeaLease> {
    let mut seen = std::collections::BTreeSet::new();
    captures::kea_leases(LEASES)
        .into_iter()
        .filter(|l| seen.insert((l.address, l.prefix)))
        .collect()
}

fn key(l: &KeaLease) -> LeaseKey {
    if l.prefix {
        LeaseKey::Prefix(Ipv6Prefix::new(l.address, l.prefix_len).unwrap())
    } else {
        LeaseKey::Address(l.address)
    }
}

/// The store holds exactly `want`, each with Kea's DUID, last transaction and expiry (±2 s:
/// CLT_TIME and lifetimes are whole seconds counted at Kea's answer, the arrival is the
/// recording's second).
fn assert_store_is(store: &BindingStore, want: &[&KeaLease], link: Option<Ipv6Addr>) {
    assert_eq!(store.len(), want.len(), "bindings in the cache");
    for l in want {
        let got = store
            .get(&key(l))
            .unwrap_or_else(|| panic!("{:?} missing from the cache", key(l)));
        assert_eq!(&*got.client.duid, &l.duid[..], "{:?}: client", key(l));
        let near = |a: Timestamp, b: u64, what: &str| {
            assert!(
                (a.secs() - b as i64).abs() <= 2,
                "{:?}: {what} {} but Kea wrote {b}",
                key(l),
                a.secs()
            )
        };
        near(got.last_transaction, l.cltt(), "last transaction");
        near(got.valid_until, l.expire, "valid until");
        if let Some(link) = link {
            assert_eq!(got.client.link.address, link, "{:?}: link", key(l));
        }
    }
}

#[test]
fn kea_bulk_by_link_address_becomes_the_leases_kea_holds_on_that_link() {
    let (conns, _) = recorded_bulk();
    let arrival = Timestamp::from_secs(conns[0].started_sec as i64);
    let link1: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
    let (store, results) = bulk_into_store(vec![BulkQuery::LinkAddress(link1)], arrival);
    assert!(
        matches!(results[..], [(_, QueryResult::Complete { bindings })] if bindings > 0),
        "{results:?}"
    );
    let leases = kea_leases();
    let want: Vec<&KeaLease> = leases.iter().filter(|l| l.subnet_id == 1).collect();
    assert!(
        want.len() >= 10,
        "the recording's subnet 1 leases: {want:?}"
    );
    assert_store_is(&store, &want, Some(link1));
}

/// A UDP server on loopback answering each leasequery with Kea's recorded reply to the same
/// query (xid rewritten); queries Kea never got (or never answered) get nothing.
fn replay_udp() -> SocketAddr {
    let mut answers: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let all = captures::udp(LEASEQUERY);
    for q in all.iter().filter(|d| d.dst.port() == 547) {
        let reply = all.iter().find(|r| {
            r.src.port() == 547 && r.dst == q.src && r.payload.get(1..4) == q.payload.get(1..4)
        });
        if let Some(r) = reply {
            answers
                .entry(q.payload[4..].to_vec())
                .or_insert_with(|| r.payload.clone());
        }
    }
    let sock = std::net::UdpSocket::bind("[::1]:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if n < 4 {
                continue;
            }
            if let Some(r) = answers.get(&buf[4..n]) {
                let _ = sock.send_to(&with_xid(r, xid(&buf[..n])), from);
            }
        }
    });
    addr
}

/// Ask `q` with the agent's UDP requestor (one transmission) against the replay.
fn ask_udp(q: Query) -> QueryOutcome {
    let server = replay_udp();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut retransmit = RetransmitParams::LEASEQUERY;
        retransmit.mrc = 1;
        let cfg = RequestorConfig {
            servers: vec![server],
            duid: hex::decode(REQUESTOR).unwrap().into(),
            retransmit,
            negative_ttl: Duration::ZERO,
            global_rate: None,
            link_rate: None,
            ..RequestorConfig::default()
        };
        let udp = UdpConfig {
            bind: "[::1]:0".parse().unwrap(),
            ..UdpConfig::default()
        };
        let (handle, _task) = udp::spawn(cfg, udp, &support::tasks::supervisor())
            .await
            .unwrap();
        handle.query(q).await.unwrap()
    })
}

/// The real client's leases: the ones Kea stored with dhcrelay's relay information (an
/// Interface-Id, no RELAY_ID), before the RELEASE.
fn real_client() -> Vec<KeaLease> {
    kea_leases()
        .into_iter()
        .filter(|l| {
            l.relay_info
                .as_ref()
                .and_then(|r| r.get(0)?.get("relay-id"))
                .is_none()
                && l.relay_info.is_some()
        })
        .collect()
}

/// Kea's UDP answers through the agent's requestor: by address the one lease with relay data
/// beside CLIENT_DATA (placing it on this box's link, next hop the client's link-local
/// address); by an address inside the delegated prefix, that prefix; by client-id over every
/// link, LQ_CLIENT_LINK followed by one query per link, each answered with that link's leases.
#[test]
fn kea_udp_answers_through_the_requestor() {
    let mine = real_client();
    let na = mine.iter().find(|l| !l.prefix && l.subnet_id == 1).unwrap();
    let pd = mine.iter().find(|l| l.prefix).unwrap();
    let link1: Ipv6Addr = "2001:db8:1::1".parse().unwrap();

    let o = ask_udp(Query::by_address(na.address).with_relay_data(true));
    assert_eq!(o.verdict, AnswerVerdict::Bound, "{o:?}");
    let b = o.bindings().next().unwrap();
    assert_eq!(b.client_duid(), na.duid);
    let leases = b.observed.leases.clone();
    assert_eq!(leases.len(), 1, "only the lease asked about: {leases:?}");
    assert_eq!(leases[0].key, LeaseKey::Address(na.address));
    let rd = b
        .top_relay_data
        .as_ref()
        .expect("relay data beside CLIENT_DATA");
    let placed = rd.chain();
    assert_eq!(placed.link_address(), Some(link1));
    assert_eq!(
        placed.peer_address(),
        Some("fe80::ff:fe00:301".parse().unwrap())
    );

    let inside = Ipv6Addr::from(u128::from(pd.address) | 1);
    let o = ask_udp(Query::by_address(inside));
    assert_eq!(o.verdict, AnswerVerdict::Bound, "{o:?}");
    let leases = o.bindings().next().unwrap().observed.leases.clone();
    assert_eq!(
        leases.iter().map(|l| l.key).collect::<Vec<_>>(),
        [LeaseKey::Prefix(
            Ipv6Prefix::new(pd.address, pd.prefix_len).unwrap()
        )]
    );

    let o = ask_udp(Query::by_client_id(na.duid.clone()));
    assert_eq!(o.verdict, AnswerVerdict::Bound, "{o:?}");
    assert!(
        o.answers
            .iter()
            .any(|a| matches!(&a.answer, Answer::ClientLinks(l) if l.len() == 2)),
        "{o:?}"
    );
    let mut got: Vec<LeaseKey> = o
        .bindings()
        .flat_map(|b| b.observed.leases.clone())
        .map(|l| l.key)
        .collect();
    got.sort();
    // The real client's two leases on link 1 and the address lease6-add gave it on link 2.
    let mut want: Vec<LeaseKey> = kea_leases()
        .iter()
        .filter(|l| l.duid == na.duid)
        .map(key)
        .collect();
    want.sort();
    assert_eq!(got, want, "every lease of the client, link by link");
}
