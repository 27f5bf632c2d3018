//! The on-demand path (requestor → `cache::from_wire` → cache task) against servers that
//! answer differently, on loopback: two reference servers with disjoint bindings (split pools),
//! a dead one, and a hand-made server that puts OPTION_LQ_RELAY_DATA at the top level of its
//! LEASEQUERY-REPLY as Kea does over UDP. `lqagent_leasequeries_total` is read back from the
//! metrics registry for every outcome.
//!
//! Every socket is on [::1] with a kernel-chosen port; retransmission is sped up (IRT 100 ms).

use support::refserver;

use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use lqagent::cache::{BindingStore, LeaseKey, Source};
use lqagent::cache_task::{self, CacheTaskConfig};
use lqagent::daemon::ondemand::{Looked, Lookup, OnDemandStats, UnknownSource};
use lqagent::metrics::Metrics;
use lqagent::requestor::RequestorCounter;
use lqagent::time::AgentClock;
use lqagent::wire::{
    ClientData, ClientMessage, DhcpOption, Duid, IaAddr, IaPrefix, LqRelayData, Message,
    MessageType, RelayMessage,
};
use refserver::{AddrLease, LeaseEntry, LeaseTable, RefServer, ServerConfig};

const OUR_DUID: &[u8] = &[0, 3, 0, 1, 2, 0, 0, 0, 0x51, 0x52];
const LINK: &str = "2001:db8:1::1";

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn duid(n: u8) -> Vec<u8> {
    vec![0, 3, 0, 1, 0x0a, 0, 0, 0, 0, n]
}

/// Client n on LINK holds 2001:db8:1::n.
fn entry(n: u8) -> LeaseEntry {
    let mut e = LeaseEntry::new(duid(n), a(LINK));
    e.addrs.push(AddrLease {
        addr: a(&format!("2001:db8:1::{n:x}")),
        preferred: 3600,
        valid: 7200,
    });
    e.clt_time = 5;
    e
}

/// A reference server holding `clients`, with its own DUID.
fn server(id: u8, clients: &[u8]) -> (RefServer, SocketAddr) {
    let cfg = ServerConfig {
        server_duid: vec![0, 3, 0, 1, 2, 0, 0, 0, 6, id],
        ..ServerConfig::default()
    };
    let srv = RefServer::new(
        LeaseTable::from_entries(clients.iter().map(|n| entry(*n))),
        cfg,
    );
    let addr = srv
        .serve_udp(UdpSocket::bind("[::1]:0").unwrap(), None)
        .unwrap();
    (srv, addr)
}

struct Rig {
    lookup: Lookup,
    store: Arc<BindingStore>,
    metrics: Metrics,
}

async fn rig(servers: &[SocketAddr]) -> Rig {
    let store = Arc::new(BindingStore::default());
    let clock = AgentClock::new();
    let (cache, _changes, _t) = cache_task::spawn(
        store.clone(),
        clock,
        None,
        CacheTaskConfig::default(),
        support::tasks::admit_documentation(a(LINK), "sub0"),
        support::tasks::no_confirmer(),
        &support::tasks::supervisor(),
    );
    let metrics = Metrics::new();
    Rig {
        lookup: Lookup {
            requestor: crate::quick_requestor(servers, OUR_DUID).await,
            cache,
            clock,
            server_names: Arc::new(Default::default()),
            metrics: Some(metrics.clone()),
            relay_data: true,
        },
        store,
        metrics,
    }
}

fn unknown(source: &str) -> UnknownSource {
    UnknownSource {
        source: a(source),
        link_address: a(LINK),
        interface: Some(Arc::from("sub0")),
        seen: None,
    }
}

/// `lqagent_leasequeries_total` for `outcome` (all servers: on loopback every server is
/// `[::1]`, and the `server` label names servers by address), from the text exposition.
fn leasequeries(m: &Metrics, outcome: &str) -> u64 {
    let text = m.encode();
    text.lines()
        .filter(|l| l.starts_with("lqagent_leasequeries_total{"))
        .filter(|l| l.contains(&format!("outcome=\"{outcome}\"")))
        .filter_map(|l| l.rsplit(" ").next()?.parse::<u64>().ok())
        .sum()
}

/// The cache is filled by the cache task: wait for it, bounded.
async fn cached(store: &BindingStore, key: &LeaseKey) -> lqagent::cache::Lease {
    for _ in 0..200 {
        if let Some(l) = store.get(key) {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{key:?} never cached");
}

#[tokio::test]
async fn failover_finds_the_binding_on_the_second_of_two_split_pool_servers() {
    // Server A holds client 1, server B client 2: disjoint bindings, distinct DUIDs.
    let (srv_a, addr_a) = server(1, &[1]);
    let (srv_b, addr_b) = server(2, &[2]);
    let r = rig(&[addr_a, addr_b]).await;
    let stats = OnDemandStats::default();

    // Client 2's address: A says no binding, B has it.
    let got = r.lookup.resolve(&unknown("2001:db8:1::2"), &stats).await;
    assert_eq!(got, Looked::Bound(1));
    let l = cached(&r.store, &LeaseKey::Address(a("2001:db8:1::2"))).await;
    assert_eq!(&l.client.duid[..], &duid(2)[..]);
    assert_eq!(&l.server.duid[..], srv_b.server_duid());
    assert_eq!(l.source, Source::Leasequery);
    assert_eq!(srv_a.stats().udp_queries, 1);
    assert_eq!(srv_b.stats().udp_queries, 1);
    assert_eq!(leasequeries(&r.metrics, "no_binding"), 1);
    assert_eq!(leasequeries(&r.metrics, "binding"), 1);

    // Client 1's address: A has it, B is never asked.
    let got = r.lookup.resolve(&unknown("2001:db8:1::1"), &stats).await;
    assert_eq!(got, Looked::Bound(1));
    assert_eq!(
        srv_b.stats().udp_queries,
        1,
        "the search ends at the binding"
    );
    assert_eq!(leasequeries(&r.metrics, "binding"), 2);

    // Nobody's address: both say no binding; negative, and cached: a repeat asks nobody.
    let got = r.lookup.resolve(&unknown("2001:db8:1::99"), &stats).await;
    assert_eq!(got, Looked::NoBinding);
    assert_eq!(
        leasequeries(&r.metrics, "no_binding"),
        3,
        "one from A before, two now"
    );
    let got = r.lookup.resolve(&unknown("2001:db8:1::99"), &stats).await;
    assert_eq!(got, Looked::NoBinding);
    assert_eq!(
        srv_a.stats().udp_queries,
        3,
        "answered from the negative cache"
    );
    assert_eq!(srv_b.stats().udp_queries, 2);
    assert_eq!(
        r.lookup
            .requestor
            .stats()
            .get(RequestorCounter::NegativeHits),
        1
    );
}

#[tokio::test]
async fn leasequeries_total_shows_timeouts_and_error_statuses() {
    // A dead first server, then one answering NotConfigured (an address outside its link).
    let dead = UdpSocket::bind("[::1]:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    let (srv, addr) = server(3, &[1]);
    srv.set_faults(refserver::FaultPlan::always(refserver::Faults {
        status: Some(9),
        ..refserver::Faults::default()
    }));
    let r = rig(&[dead_addr, addr]).await;
    let stats = OnDemandStats::default();
    let got = r.lookup.resolve(&unknown("2001:db8:1::1"), &stats).await;
    assert_eq!(got, Looked::Failed);
    assert_eq!(leasequeries(&r.metrics, "timeout"), 1);
    assert_eq!(leasequeries(&r.metrics, "server_error"), 1);
    // Errors and silence are cached too: the repeat asks nobody.
    let got = r.lookup.resolve(&unknown("2001:db8:1::1"), &stats).await;
    assert_eq!(got, Looked::Failed);
    assert_eq!(srv.stats().udp_queries, 1);
    assert_eq!(leasequeries(&r.metrics, "timeout"), 1);
    drop(dead);
}

/// A server that answers every LEASEQUERY like Kea over UDP: CLIENT_DATA with an address and a
/// /56, CLT_TIME, and OPTION_LQ_RELAY_DATA at the top level of the reply (not inside
/// CLIENT_DATA) naming the client's link-local address as the relay's peer-address.
fn kea_like_server() -> SocketAddr {
    let sock = UdpSocket::bind("[::1]:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let Ok(Message::Client(q)) = Message::parse(&buf[..n]) else {
                continue;
            };
            let mut cd = ClientData::default();
            cd.options.push(DhcpOption::ClientId(Duid::from(&duid(7))));
            cd.options.push(DhcpOption::IaAddr(IaAddr::new(
                a("2001:db8:1::7"),
                1800,
                3600,
            )));
            cd.options.push(DhcpOption::IaPrefix(IaPrefix::new(
                "2001:db8:107::/56".parse().unwrap(),
                1800,
                3600,
            )));
            cd.options.push(DhcpOption::CltTime(3));
            let relay = RelayMessage::new(MessageType::RELAY_FORW, 0, a(LINK), a("fe80::7"));
            let mut m = ClientMessage::new(MessageType::LEASEQUERY_REPLY, q.transaction_id);
            m.options.push(DhcpOption::ServerId(Duid::from(&[
                0, 3, 0, 1, 2, 0, 0, 0, 7, 7,
            ])));
            if let Some(c) = q.options.client_id() {
                m.options.push(DhcpOption::ClientId(c.clone()));
            }
            m.options.push(DhcpOption::ClientData(cd));
            m.options
                .push(DhcpOption::LqRelayData(Box::new(LqRelayData {
                    peer_address: a(LINK),
                    relay,
                })));
            let _ = sock.send_to(&m.to_vec().unwrap(), from);
        }
    });
    addr
}

#[tokio::test]
async fn top_level_relay_data_routes_the_prefix_via_the_link_local_address() {
    let addr = kea_like_server();
    let r = rig(&[addr]).await;
    let stats = OnDemandStats::default();
    let got = r.lookup.resolve(&unknown("2001:db8:1::7"), &stats).await;
    assert_eq!(got, Looked::Bound(1));
    let p = cached(
        &r.store,
        &LeaseKey::Prefix("2001:db8:107::/56".parse().unwrap()),
    )
    .await;
    // The relay's peer-address, not the client's IA_NA address 2001:db8:1::7.
    assert_eq!(p.next_hop, Some(a("fe80::7")));
    assert_eq!(p.client.link.address, a(LINK));
    assert_eq!(p.client.link.interface.as_deref(), Some("sub0"));
    assert_eq!(leasequeries(&r.metrics, "binding"), 1);
}
