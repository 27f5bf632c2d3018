//! Kea's recorded answers (tests/data/kea/, see its README) replayed to the agent's own
//! requestors on loopback: a replay server answers each query lqagent sends with the bytes Kea
//! sent to the same query when it was recorded (only the transaction id rewritten to the new
//! one). The bulk requestor (`bulk::tcp`), the cache's conversion (`bulk::recovery::observation`)
//! and the merge (`cache::BindingStore`) then have to produce the bindings Kea's own lease file
//! (kea-leases6.csv) lists — with the last transaction time and the expiry Kea wrote down, which
//! holds only if CLT_TIME is read as elapsed seconds and the lifetimes as what remains.

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
use lqagent::time::Timestamp;
use lqagent::wire::Duid;
use support::captures::{self, KeaLease, TcpConnection};

const BULK: &str = "kea/kea-bulk.pcap";
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
        requestor_duid: Duid::parse(&hex::decode(REQUESTOR).unwrap()),
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
                BulkEvent::Binding { server, binding } => {
                    let obs = observation(server, &binding, arrival)
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
#[ignore = "needs the Kea recordings: run tests/data/kea/record.sh (tests/data/kea/README.md)"]
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
