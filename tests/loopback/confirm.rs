//! The confirmer (`daemon::confirm`) against the reference server on loopback: doubts raised
//! through a real `DoubtSink`, asked through a real requestor, answers fed to a real cache task.
//! Every outcome is read back from the sink's `DoubtStats` (what `lqagent_binding_doubts_total`
//! exports), and the server's own query count shows what was asked.
//!
//! Every socket is on [::1] with a kernel-chosen port; retransmission is sped up (IRT 100 ms).

use support::refserver;

use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use lqagent::cache::{
    BindingStore, ClientInfo, Doubt, DoubtOutcome, DoubtReason, DoubtStats, LeaseKey, Link, Source,
};
use lqagent::cache_task::{self, CacheTaskConfig, DoubtSink};
use lqagent::daemon::confirm::{ConfirmConfig, ConfirmRunner, Confirmer};
use lqagent::daemon::ondemand::Lookup;
use lqagent::time::AgentClock;
use refserver::{LeaseEntry, LeaseTable, PrefixLease, Profile, RefServer, ServerConfig};

const OUR_DUID: &[u8] = &[0, 3, 0, 1, 2, 0, 0, 0, 0x51, 0x53];
const LINK: &str = "2001:db8:1::1";
/// Client 1's delegated prefix at the server.
const HELD: &str = "2001:db8:100::/56";
/// A prefix nobody holds at the server.
const FREE: &str = "2001:db8:300::/56";

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn pfx(s: &str) -> LeaseKey {
    LeaseKey::Prefix(s.parse().unwrap())
}

fn duid(n: u8) -> Vec<u8> {
    vec![0, 3, 0, 1, 0x0a, 0, 0, 0, 0, n]
}

fn server(profile: Profile) -> (RefServer, SocketAddr) {
    let mut e = LeaseEntry::new(duid(1), a(LINK));
    e.prefixes.push(PrefixLease {
        prefix: HELD.parse().unwrap(),
        preferred: 3600,
        valid: 7200,
    });
    e.clt_time = 5;
    let srv = RefServer::new(
        LeaseTable::from_entries([e]),
        ServerConfig::profiled(profile, 1),
    );
    let addr = srv
        .serve_udp(UdpSocket::bind("[::1]:0").unwrap(), None)
        .unwrap();
    (srv, addr)
}

struct Rig {
    sink: DoubtSink,
    stats: Arc<DoubtStats>,
    store: Arc<BindingStore>,
}

async fn rig(servers: &[SocketAddr], config: ConfirmConfig) -> Rig {
    let requestor = crate::quick_requestor(servers, OUR_DUID).await;
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
    let lookup = Lookup {
        requestor,
        cache,
        clock,
        server_names: Arc::new(Default::default()),
        metrics: None,
        relay_data: true,
    };
    let (sink, rx) = DoubtSink::new(64);
    let runner = ConfirmRunner::new(Confirmer::new(lookup, &sink, config), rx);
    tokio::spawn(runner.run());
    Rig {
        stats: sink.stats().clone(),
        sink,
        store,
    }
}

fn doubt(key: LeaseKey, reason: DoubtReason, holder: Option<u8>) -> Doubt {
    let link = Link {
        address: a(LINK),
        interface: Some("sub0".into()),
    };
    Doubt {
        key,
        reason,
        holder: holder.map(|n| {
            Arc::new(ClientInfo {
                duid: duid(n).into(),
                link: link.clone(),
                relay: None,
            })
        }),
        claimant: Some(duid(7).into()),
        link: a(LINK),
        interface: link.interface,
        at: AgentClock::new().now(),
    }
}

fn total(s: &DoubtStats) -> u64 {
    s.snapshot().iter().map(|(_, _, n)| n).sum()
}

/// Wait (bounded) until `n` doubts were settled.
async fn settled(s: &DoubtStats, n: u64) {
    for _ in 0..500 {
        if total(s) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("only {} of {n} doubts settled", total(s));
}

#[tokio::test]
async fn the_holder_named_by_the_server_is_held_and_refreshed_from_the_answer() {
    let (srv, addr) = server(Profile::Ideal);
    let r = rig(&[addr], ConfirmConfig::default()).await;
    r.sink.raise(doubt(
        pfx(HELD),
        DoubtReason::ZeroLifetimeOtherClient,
        Some(1),
    ));
    settled(&r.stats, 1).await;
    assert_eq!(
        r.stats
            .get(DoubtReason::ZeroLifetimeOtherClient, DoubtOutcome::Held),
        1
    );
    assert_eq!(srv.stats().udp_queries, 1);
    let l = r
        .store
        .get(&pfx(HELD))
        .expect("the answer went to the cache");
    assert_eq!(&l.client.duid[..], &duid(1)[..]);
    assert_eq!(l.source, Source::Leasequery);
}

#[tokio::test]
async fn another_client_named_by_the_server_is_a_move() {
    let (_srv, addr) = server(Profile::Kea);
    let r = rig(&[addr], ConfirmConfig::default()).await;
    // The cache thought client 9 held it; the server says client 1 does.
    r.sink
        .raise(doubt(pfx(HELD), DoubtReason::ReleaseOtherLink, Some(9)));
    settled(&r.stats, 1).await;
    assert_eq!(
        r.stats
            .get(DoubtReason::ReleaseOtherLink, DoubtOutcome::Moved),
        1
    );
    let l = r
        .store
        .get(&pfx(HELD))
        .expect("the answer went to the cache");
    assert_eq!(&l.client.duid[..], &duid(1)[..]);
}

#[tokio::test]
async fn no_binding_is_gone_and_a_repeat_is_answered_by_the_negative_cache() {
    let (srv, addr) = server(Profile::Ideal);
    // No memory of settled keys: the repeat reaches the requestor, whose negative cache
    // answers it without asking the server.
    let r = rig(
        &[addr],
        ConfirmConfig {
            memory: Duration::ZERO,
            ..ConfirmConfig::default()
        },
    )
    .await;
    r.sink.raise(doubt(pfx(FREE), DoubtReason::Inherited, None));
    settled(&r.stats, 1).await;
    assert_eq!(r.stats.get(DoubtReason::Inherited, DoubtOutcome::Gone), 1);
    assert!(r.store.get(&pfx(FREE)).is_none(), "nothing installed");
    r.sink.raise(doubt(pfx(FREE), DoubtReason::Inherited, None));
    settled(&r.stats, 2).await;
    assert_eq!(
        r.stats.get(DoubtReason::Inherited, DoubtOutcome::NotAsked),
        1
    );
    assert_eq!(srv.stats().udp_queries, 1, "the server was asked once");
}

/// What the servers do with the address the confirmer asks for a prefix (its first address):
/// the ideal and Kea profiles find the delegated prefix holding it; the ISC profile, like ISC
/// dhcpd 4.4, cannot say (NotConfigured), which the confirmer counts `unknown`.
#[test]
fn the_first_address_of_a_prefix_finds_it_except_at_isc() {
    use refserver::answer::{Decision, Only, Pick, QUERY_BY_ADDRESS, Query, Transport, decide_as};
    let mut e = LeaseEntry::new(duid(1), a(LINK));
    e.prefixes.push(PrefixLease {
        prefix: HELD.parse().unwrap(),
        preferred: 3600,
        valid: 7200,
    });
    let t = LeaseTable::from_entries([e]);
    let LeaseKey::Prefix(held) = pfx(HELD) else {
        unreachable!()
    };
    let mut q = Query::new(QUERY_BY_ADDRESS, a(LINK));
    q.addr = Some(lqagent::daemon::confirm::asked_address(&pfx(HELD)));
    let found = Decision::Leases(vec![Pick {
        entry: 0,
        only: Some(Only::Prefix(held)),
    }]);
    assert_eq!(decide_as(Profile::Kea, &t, &q, Transport::Udp), found);
    assert_eq!(
        decide_as(Profile::Ideal, &t, &q, Transport::Udp),
        Decision::Bindings(vec![0])
    );
    assert_eq!(
        decide_as(Profile::Isc, &t, &q, Transport::Udp),
        Decision::Status(9, "Address not in a pool")
    );
}

#[tokio::test]
async fn an_error_status_is_unknown_and_nothing_changes() {
    // The doubt names a link the server does not serve: NotConfigured (RFC 5007 §4.3.2), an
    // answer that cannot say — as ISC's for any delegated prefix.
    let (srv, addr) = server(Profile::Ideal);
    let r = rig(&[addr], ConfirmConfig::default()).await;
    let mut d = doubt(pfx(HELD), DoubtReason::ZeroLifetimeOtherClient, Some(9));
    d.link = a("2001:db8:9::1");
    r.sink.raise(d);
    settled(&r.stats, 1).await;
    assert_eq!(
        r.stats
            .get(DoubtReason::ZeroLifetimeOtherClient, DoubtOutcome::Unknown),
        1,
        "{:?}",
        r.stats
            .snapshot()
            .iter()
            .filter(|r| r.2 > 0)
            .collect::<Vec<_>>()
    );
    assert_eq!(srv.stats().udp_queries, 1);
    assert!(r.store.is_empty(), "nothing installed on doubt");
}

#[tokio::test]
async fn a_silent_server_is_no_answer() {
    // Bound but never read: every transmission goes unanswered.
    let dead = UdpSocket::bind("[::1]:0").unwrap();
    let r = rig(&[dead.local_addr().unwrap()], ConfirmConfig::default()).await;
    r.sink
        .raise(doubt(pfx(HELD), DoubtReason::Overlap, Some(1)));
    settled(&r.stats, 1).await;
    assert_eq!(r.stats.get(DoubtReason::Overlap, DoubtOutcome::NoAnswer), 1);
    assert!(r.store.is_empty());
}

#[tokio::test]
async fn a_storm_of_doubts_about_one_key_asks_once() {
    let (srv, addr) = server(Profile::Ideal);
    let r = rig(&[addr], ConfirmConfig::default()).await;
    for _ in 0..50 {
        r.sink.raise(doubt(
            pfx(HELD),
            DoubtReason::ZeroLifetimeOtherClient,
            Some(1),
        ));
    }
    settled(&r.stats, 50).await;
    let get = |o| r.stats.get(DoubtReason::ZeroLifetimeOtherClient, o);
    assert_eq!(get(DoubtOutcome::Held), 1);
    assert_eq!(get(DoubtOutcome::NotAsked), 49);
    assert_eq!(srv.stats().udp_queries, 1, "one question for the storm");
}
