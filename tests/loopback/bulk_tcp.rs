//! The bulk requestor (`bulk::tcp`) against the reference server on loopback: exact binding
//! sets, resets mid-stream retried, dead servers given up on, statuses.

use support::refserver;

use std::collections::BTreeSet;
use std::net::{Ipv6Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use lqagent::bulk::BulkConfig;
use lqagent::bulk::core::BulkQuery;
use lqagent::bulk::stats::{BulkStats, Counter};
use lqagent::bulk::tcp::{self, BulkEvent, QueryResult, ServerQueries, ServerReport};
use lqagent::wire::{Duid, StatusCode};
use refserver::{
    AddrLease, FaultPlan, FaultRule, Faults, HexBytes, LeaseEntry, LeaseTable, PrefixLease,
    RefServer, ServerConfig,
};
use tokio::sync::mpsc;

const RELAY: [u8; 10] = [0, 3, 0, 1, 2, 0, 0, 0, 0xaa, 1];

fn link(i: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, i, 0, 0, 0, 0, 1)
}

/// Client `n` on link `1 + n % links`, with an address, and a /56 for odd n.
fn client(n: u32, links: u16) -> LeaseEntry {
    let l = 1 + (n % u32::from(links)) as u16;
    let mut e = LeaseEntry::new(
        [&[0u8, 2, 0, 0, 0x11, 0x8b][..], &n.to_be_bytes()].concat(),
        link(l),
    );
    e.addrs.push(AddrLease {
        addr: Ipv6Addr::new(0x2001, 0xdb8, l, 0, 0, 0, (n >> 16) as u16, n as u16),
        preferred: 3000,
        valid: 6000,
    });
    if n % 2 == 1 {
        e.prefixes.push(PrefixLease {
            prefix: lqagent::prefix::Ipv6Prefix::new(
                Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    0x8000 | (n >> 8) as u16,
                    (n as u16 & 0xff) << 8,
                    0,
                    0,
                    0,
                    0,
                ),
                56,
            )
            .unwrap(),
            preferred: 3000,
            valid: 6000,
        });
    }
    e.clt_time = 7;
    e.peer_address = Some(Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        0,
        0,
        (n >> 16) as u16,
        n as u16,
    ));
    e.relay_id = Some(HexBytes(RELAY.to_vec()));
    e
}

fn table(range: std::ops::Range<u32>, links: u16) -> LeaseTable {
    let mut t = LeaseTable::from_entries(range.map(|n| client(n, links)));
    for l in 1..=links {
        t.add_link(link(l));
    }
    t
}

fn serve(t: LeaseTable, faults: FaultPlan) -> (RefServer, SocketAddr) {
    let srv = RefServer::new(t, ServerConfig::default());
    srv.set_faults(faults);
    let addr = srv
        .serve_tcp(TcpListener::bind("[::1]:0").unwrap())
        .unwrap();
    (srv, addr)
}

fn cfg() -> BulkConfig {
    BulkConfig {
        requestor_duid: Duid::ll_ethernet([2, 0, 0, 0, 0, 1]),
        data_timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_millis(300),
        max_attempts: 3,
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(80),
        channel_capacity: 64,
        ..BulkConfig::default()
    }
}

/// (server, client DUID, address or prefix, link) for every binding received.
type Seen = BTreeSet<(SocketAddr, Vec<u8>, String, Ipv6Addr)>;

struct Outcome {
    seen: Seen,
    duplicates: usize,
    finished: Vec<(SocketAddr, QueryResult)>,
    reports: Vec<(SocketAddr, ServerReport)>,
    stats: Arc<BulkStats>,
}

async fn run(servers: Vec<ServerQueries>, cfg: BulkConfig) -> Outcome {
    let (tx, mut rx) = mpsc::channel(cfg.channel_capacity);
    let stats = Arc::new(BulkStats::default());
    let task = tokio::spawn(tcp::run(servers, Arc::new(cfg), tx, stats.clone()));
    let mut seen = Seen::new();
    let mut duplicates = 0;
    let mut finished = Vec::new();
    let mut server_done = 0;
    while let Some(ev) = rx.recv().await {
        match ev {
            BulkEvent::Binding { server, binding } => {
                let duid = binding.answer.data.client_id().unwrap().to_vec();
                let l = binding.answer.placed_link().expect("link known");
                for a in binding.answer.data.addresses() {
                    duplicates +=
                        usize::from(!seen.insert((server, duid.clone(), a.addr.to_string(), l)));
                }
                for p in binding.answer.data.prefixes() {
                    let p = p.prefix().unwrap().to_string();
                    duplicates += usize::from(!seen.insert((server, duid.clone(), p, l)));
                }
            }
            BulkEvent::QueryFinished { server, result, .. } => finished.push((server, result)),
            BulkEvent::ServerFinished { .. } => server_done += 1,
        }
    }
    let reports = task.await.unwrap();
    assert_eq!(server_done, reports.len());
    Outcome {
        seen,
        duplicates,
        finished,
        reports,
        stats,
    }
}

fn expected(server: SocketAddr, t: &LeaseTable) -> Seen {
    let mut s = Seen::new();
    for e in t.entries() {
        for a in &e.addrs {
            s.insert((server, e.duid.0.clone(), a.addr.to_string(), e.link));
        }
        for p in &e.prefixes {
            s.insert((server, e.duid.0.clone(), p.prefix.to_string(), e.link));
        }
    }
    s
}

fn by_links(server: SocketAddr, links: u16) -> ServerQueries {
    ServerQueries {
        server,
        queries: (1..=links)
            .map(|l| BulkQuery::LinkAddress(link(l)))
            .collect(),
    }
}

fn by_relay(server: SocketAddr) -> ServerQueries {
    ServerQueries {
        server,
        queries: vec![BulkQuery::RelayId {
            relay_id: Duid::from(&RELAY),
            link: Ipv6Addr::UNSPECIFIED,
        }],
    }
}

#[tokio::test]
async fn two_servers_with_overlap_give_exact_sets() {
    let (ta, tb) = (table(0..600, 3), table(400..1000, 3));
    let (_a, aa) = serve(ta.clone(), FaultPlan::default());
    let (_b, ab) = serve(tb.clone(), FaultPlan::default());
    let out = run(vec![by_links(aa, 3), by_relay(ab)], cfg()).await;
    let mut want = expected(aa, &ta);
    want.extend(expected(ab, &tb));
    assert_eq!(out.seen, want);
    assert_eq!(out.duplicates, 0);
    assert_eq!(out.finished.len(), 4);
    assert!(
        out.finished
            .iter()
            .all(|(_, r)| matches!(r, QueryResult::Complete { .. }))
    );
    assert!(out.reports.iter().all(|(_, r)| r.all_complete()));
    assert_eq!(out.stats.get(Counter::Bindings), 1200);
    assert_eq!(out.stats.get(Counter::Retries), 0);
}

#[tokio::test]
async fn reset_mid_stream_is_retried_and_exact() {
    let t = table(0..500, 2);
    let reset = Faults {
        reset_after_data: Some(100),
        ..Faults::default()
    };
    let (srv, addr) = serve(
        t.clone(),
        FaultPlan::default().with_rule(FaultRule::nth(1, 2, reset)),
    );
    let out = run(vec![by_links(addr, 2)], cfg()).await;
    assert_eq!(out.seen, expected(addr, &t));
    assert!(
        out.duplicates > 0,
        "the retried query resent the first 101 clients"
    );
    assert_eq!(out.stats.get(Counter::ConnectionsLost), 2);
    assert_eq!(out.reports[0].1.connections, 3);
    assert!(out.reports[0].1.all_complete());
    assert_eq!(srv.stats().tcp_resets, 2);
}

#[tokio::test]
async fn silent_and_refused_servers_are_given_up_while_others_complete() {
    let t = table(0..200, 2);
    let (_good, good) = serve(t.clone(), FaultPlan::default());
    let silent = Faults {
        drop: true,
        ..Faults::default()
    };
    let (dead_srv, dead) = serve(t.clone(), FaultPlan::always(silent));
    let refused = {
        let l = TcpListener::bind("[::1]:0").unwrap();
        l.local_addr().unwrap()
    };
    let out = run(
        vec![by_links(good, 2), by_relay(dead), by_relay(refused)],
        cfg(),
    )
    .await;
    assert_eq!(out.seen, expected(good, &t));
    let gave_up: Vec<_> = out
        .finished
        .iter()
        .filter(|(_, r)| *r == QueryResult::GaveUp { attempts: 3 })
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(gave_up.len(), 2);
    assert!(gave_up.contains(&dead) && gave_up.contains(&refused));
    // The server may read the last attempt's query after the requestor gave up on it.
    assert_eq!(
        dead_srv
            .stats_after_tcp(3, Duration::from_secs(10))
            .tcp_queries,
        3,
        "one query per attempt"
    );
    assert_eq!(out.stats.get(Counter::DataTimeouts), 3);
    assert!(out.stats.get(Counter::ConnectFailures) >= 3);
    assert_eq!(out.stats.get(Counter::QueriesGivenUp), 2);
}

#[tokio::test]
async fn query_terminated_is_retried_other_statuses_are_final() {
    let t = table(0..50, 2);
    let term = Faults {
        terminate_after_data: Some(10),
        ..Faults::default()
    };
    let notcfg = Faults {
        status: Some(9),
        ..Faults::default()
    };
    let plan = FaultPlan::default()
        .with_rule(FaultRule::nth(1, 1, term))
        .with_rule(FaultRule {
            query_type: Some(3),
            faults: notcfg,
            ..FaultRule::default()
        });
    let (_s, addr) = serve(t.clone(), plan);
    let mut q = by_links(addr, 2);
    q.queries.push(BulkQuery::RelayId {
        relay_id: Duid::from(&RELAY),
        link: Ipv6Addr::UNSPECIFIED,
    });
    let out = run(vec![q], cfg()).await;
    assert_eq!(out.seen, expected(addr, &t));
    assert_eq!(out.stats.get(Counter::StatusRetryable), 1);
    let failed: Vec<_> = out
        .finished
        .iter()
        .filter_map(|(_, r)| match r {
            QueryResult::Failed { code, .. } => Some(*code),
            _ => None,
        })
        .collect();
    assert_eq!(failed, [StatusCode::NOT_CONFIGURED]);
}

#[tokio::test]
async fn pipelining_is_opt_in() {
    // A server that drops queries pipelined behind another in the same read: the default
    // (one in flight) gets everything; pipelining loses the second query to the data timeout
    // and gets it on the retry.
    let t = table(0..60, 3);
    let srv = RefServer::new(
        t.clone(),
        ServerConfig {
            tcp_drop_pipelined: true,
            ..ServerConfig::default()
        },
    );
    let addr = srv
        .serve_tcp(TcpListener::bind("[::1]:0").unwrap())
        .unwrap();
    let out = run(vec![by_links(addr, 3)], cfg()).await;
    assert_eq!(out.seen, expected(addr, &t));
    assert_eq!(out.stats.get(Counter::Retries), 0);
    assert_eq!(srv.stats().tcp_pipelined_dropped, 0);
    let out = run(
        vec![by_links(addr, 3)],
        BulkConfig {
            pipelining: true,
            ..cfg()
        },
    )
    .await;
    assert_eq!(out.seen, expected(addr, &t));
    assert!(srv.stats().tcp_pipelined_dropped >= 1);
    assert!(out.stats.get(Counter::Retries) >= 1);
}

#[tokio::test]
async fn recovery_plan_startup_then_link_up_asks_that_link_only() {
    use lqagent::bulk::recovery::{RecoveryPlan, recover};
    let (ta, tb) = (table(0..300, 3), table(200..400, 3));
    let (sa, aa) = serve(ta.clone(), FaultPlan::default());
    let (sb, ab) = serve(tb.clone(), FaultPlan::default());
    let plan = RecoveryPlan {
        servers: vec![aa, ab],
        relay_id: Some(Duid::from(&RELAY)),
        links: vec![link(1), link(2), link(3)],
        remote_ids: vec![(4491, vec![1, 2])],
    };
    let cfg = Arc::new(cfg());
    let stats = Arc::new(BulkStats::default());
    let (tx, mut rx) = mpsc::channel(16);
    let collect = tokio::spawn(async move {
        let mut seen = Seen::new();
        while let Some((server, b)) = rx.recv().await {
            let b: lqagent::bulk::core::BulkBinding = b;
            let duid = b.answer.data.client_id().unwrap().to_vec();
            for a in b.answer.data.addresses() {
                seen.insert((
                    server,
                    duid.clone(),
                    a.addr.to_string(),
                    b.answer.placed_link().unwrap(),
                ));
            }
            for p in b.answer.data.prefixes() {
                seen.insert((
                    server,
                    duid.clone(),
                    p.prefix().unwrap().to_string(),
                    b.answer.placed_link().unwrap(),
                ));
            }
        }
        seen
    });
    let report = recover(plan.startup(), cfg.clone(), stats.clone(), tx).await;
    let seen = collect.await.unwrap();
    let mut want = expected(aa, &ta);
    want.extend(expected(ab, &tb));
    assert_eq!(seen, want);
    assert_eq!(report.complete_servers(), 2);
    // relay-id (300 / 200) + the three links (300 / 200 again) per server.
    assert_eq!(report.bindings, 2 * 300 + 2 * 200);
    let kinds: Vec<(u8, Ipv6Addr)> = sa
        .queries()
        .iter()
        .map(|q| (q.query_type, q.link))
        .collect();
    assert_eq!(
        kinds,
        [
            (3, Ipv6Addr::UNSPECIFIED),
            (4, link(1)),
            (4, link(2)),
            (4, link(3)),
            (5, Ipv6Addr::UNSPECIFIED)
        ]
    );
    // Link 2 comes up: one by-link query per server, for link 2 only.
    let (tx, mut rx) = mpsc::channel(16);
    let count = tokio::spawn(async move {
        let mut links = BTreeSet::new();
        let mut n = 0;
        while let Some((_, b)) = rx.recv().await {
            let b: lqagent::bulk::core::BulkBinding = b;
            links.insert(b.answer.placed_link().unwrap());
            n += 1;
        }
        (n, links)
    });
    let report = recover(plan.link_up(link(2)), cfg, stats, tx).await;
    let (n, links) = count.await.unwrap();
    assert_eq!(links, BTreeSet::from([link(2)]));
    let on2 = |t: &LeaseTable| t.entries().iter().filter(|e| e.link == link(2)).count();
    assert_eq!(n, on2(&ta) + on2(&tb));
    assert_eq!(report.bindings, n as u64);
    for s in [&sa, &sb] {
        let q = s.queries();
        assert_eq!(q.len(), 6);
        assert_eq!((q[5].query_type, q[5].link), (4, link(2)));
    }
}

#[tokio::test]
async fn a_slow_consumer_is_not_mistaken_for_a_silent_server() {
    // Far more than one 64 KiB read, so the stream is still running when the consumer stalls.
    let t = table(0..6000, 1);
    let (srv, addr) = serve(t.clone(), FaultPlan::default());
    let cfg = BulkConfig {
        data_timeout: Duration::from_millis(150),
        channel_capacity: 2,
        ..cfg()
    };
    let (tx, mut rx) = mpsc::channel(cfg.channel_capacity);
    let stats = Arc::new(BulkStats::default());
    let task = tokio::spawn(tcp::run(
        vec![by_links(addr, 1)],
        Arc::new(cfg),
        tx,
        stats.clone(),
    ));
    let mut n = 0;
    while let Some(ev) = rx.recv().await {
        if let BulkEvent::Binding { .. } = ev {
            n += 1;
            if n % 1500 == 0 {
                // The cache is busy for longer than the data timeout.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    task.await.unwrap();
    assert_eq!(n, 6000);
    assert_eq!(stats.get(Counter::DataTimeouts), 0);
    assert_eq!(srv.stats().tcp_queries, 1);
}
