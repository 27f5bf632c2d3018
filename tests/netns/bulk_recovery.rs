//! Reboot recovery end to end (issue 7), as root in namespaces: reference servers in one
//! namespace, the agent's bulk requestor → cache → route installer in another, an empty cache
//! and an empty kernel table at the start, the kernel's routes read back with `ip -j`.

use support::recovery as recovery_support;
use support::refserver;

use std::sync::Arc;
use std::time::Duration;

use lqagent::bulk::linkup;
use lqagent::bulk::stats::BulkStats;
use tokio::sync::mpsc;

use lqagent::bulk::stats::Counter;
use lqagent::cache::BindingStore;
use recovery_support::{
    Lab, bulk_config, expected_routes, ifname, kernel_routes, link, release_during_recovery,
    run_recovery, table, via_cache,
};
use refserver::{FaultPlan, FaultRule, Faults};
use support::netns::require_root;

/// How long a reference server may take to finish with connections the requestor has closed.
const SETTLE: Duration = Duration::from_secs(10);

#[test]
fn recovers_10k_bindings_from_two_overlapping_servers_exactly() {
    if !require_root("recovers_10k_bindings_from_two_overlapping_servers_exactly") {
        return;
    }
    // 10 000 distinct clients over 4 links; 2 000 of them known to both servers.
    let (ta, tb) = (table(0..6000, 4), table(4000..10_000, 4));
    let want = expected_routes([&ta, &tb]);
    let lab = Lab::new("rec10k", 4, vec![ta, tb], Vec::new());
    assert!(
        kernel_routes(&lab.agent).is_empty(),
        "empty kernel table at start"
    );
    let store = Arc::new(BindingStore::default());
    let run = run_recovery(
        &lab,
        lab.plan().startup(),
        bulk_config(),
        via_cache(store.clone()),
    );
    assert_eq!(run.report.bindings, 12_000, "both servers' data streamed");
    assert_eq!(run.report.complete_servers(), 2);
    let got = kernel_routes(&lab.agent);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "kernel routes are exactly the expected set");
    assert_eq!(store.len(), want.len());
    // Mixed: addresses on their links and delegated prefixes via the client's peer-address.
    assert!(
        got.iter()
            .any(|(d, gw, _)| d.ends_with("/128") && gw.is_none())
    );
    assert!(
        got.iter()
            .any(|(d, gw, _)| d.ends_with("/56") && gw.is_some())
    );
}

#[test]
fn reset_mid_stream_is_retried_and_exact() {
    if !require_root("reset_mid_stream_is_retried_and_exact") {
        return;
    }
    let t = table(0..3000, 3);
    let want = expected_routes([&t]);
    let reset = Faults {
        reset_after_data: Some(1000),
        ..Faults::default()
    };
    let lab = Lab::new(
        "recreset",
        3,
        vec![t],
        vec![FaultPlan::default().with_rule(FaultRule::nth(1, 1, reset))],
    );
    let store = Arc::new(BindingStore::default());
    let run = run_recovery(
        &lab,
        lab.plan().startup(),
        bulk_config(),
        via_cache(store.clone()),
    );
    assert_eq!(lab.refservers[0].stats().tcp_resets, 1);
    assert_eq!(run.stats.get(Counter::ConnectionsLost), 1);
    assert_eq!(run.report.complete_servers(), 1);
    // Up to 1001 bindings before the reset (an RST discards what the socket had not yet
    // read), then all 3000 again.
    assert!(
        (3000..=4001).contains(&run.report.bindings),
        "{}",
        run.report.bindings
    );
    assert!(kernel_routes(&lab.agent) == want, "exact after the retry");
    assert_eq!(store.len(), want.len());
}

#[test]
fn dead_server_is_given_up_while_the_others_data_is_installed() {
    if !require_root("dead_server_is_given_up_while_the_others_data_is_installed") {
        return;
    }
    let (good, dead) = (table(0..2000, 2), table(5000..6000, 2));
    let want = expected_routes([&good]);
    let silent = FaultPlan::always(Faults {
        drop: true,
        ..Faults::default()
    });
    let lab = Lab::new(
        "recdead",
        2,
        vec![good, dead],
        vec![FaultPlan::default(), silent],
    );
    let cfg = bulk_config();
    let attempts = cfg.max_attempts;
    let store = Arc::new(BindingStore::default());
    let run = run_recovery(&lab, lab.plan().startup(), cfg, via_cache(store));
    let (dead_addr, dead_report) = &run.report.servers[1];
    assert_eq!(*dead_addr, lab.servers[1]);
    assert_eq!(dead_report.gave_up, 1);
    assert_eq!(dead_report.connections, attempts);
    // The server may read the last attempt's query after the requestor gave up on it.
    let dead_stats = lab.refservers[1].stats_after_tcp(u64::from(attempts), SETTLE);
    assert_eq!(
        dead_stats.tcp_queries,
        u64::from(attempts),
        "asked once per attempt"
    );
    assert_eq!(run.stats.get(Counter::DataTimeouts), u64::from(attempts));
    assert!(run.report.servers[0].1.all_complete());
    assert!(kernel_routes(&lab.agent) == want);
}

#[test]
fn link_up_triggers_a_by_link_query_for_that_link_only() {
    if !require_root("link_up_triggers_a_by_link_query_for_that_link_only") {
        return;
    }
    let (ta, tb) = (table(0..900, 3), table(600..1200, 3));
    let on_link2 = [&ta, &tb]
        .iter()
        .map(|t| t.entries().iter().filter(|e| e.link == link(2)).count())
        .sum::<usize>();
    let lab = Lab::new("reclinkup", 3, vec![ta, tb], Vec::new());
    let plan = lab.plan();
    let interfaces: Vec<(String, std::net::Ipv6Addr)> =
        (1..=3).map(|l| (ifname(l), link(l))).collect();
    let ns = lab.agent.name().to_string();
    let got = lab.agent.run_in(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (tx, mut rx) = mpsc::channel(256);
            let watcher = tokio::spawn(linkup::watch(
                plan,
                interfaces,
                Arc::new(bulk_config()),
                Arc::new(BulkStats::default()),
                tx,
            ));
            // No signal says the watcher has subscribed to link notifications; give it time
            // before the link goes down (a missed transition fails the test below, it does not
            // pass it).
            tokio::time::sleep(Duration::from_millis(200)).await;
            let ip = |state: &str| {
                let s = std::process::Command::new("ip")
                    .args(["-n", &ns, "link", "set", "sub2", state])
                    .status()
                    .unwrap();
                assert!(s.success());
            };
            ip("down");
            tokio::time::sleep(Duration::from_millis(200)).await;
            ip("up");
            let mut links = std::collections::BTreeSet::new();
            let mut n = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while n < on_link2 {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some((_, b))) => {
                        let b: lqagent::bulk::core::BulkBinding = b;
                        links.insert(b.answer.placed_link());
                        n += 1;
                    }
                    _ => break,
                }
            }
            // Nothing more arrives: no other link was asked for.
            let extra = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
            watcher.abort();
            (n, links, extra.is_ok())
        })
    });
    assert_eq!(got.0, on_link2, "every binding of link 2 from both servers");
    assert_eq!(got.1, std::collections::BTreeSet::from([Some(link(2))]));
    assert!(!got.2, "no bindings beyond link 2");
    for s in &lab.refservers {
        let q: Vec<_> = s.queries().iter().map(|q| (q.query_type, q.link)).collect();
        assert_eq!(q, [(4, link(2))], "one by-link query, for link 2 only");
    }
}

/// Issue 21: a RELEASE snooped during a 100 000-binding bulk recovery (through the real bulk
/// path from the reference server, the cache task and the kernel) is applied while the
/// recovery still streams, and nothing snooped is dropped: the snooper has its own queue in
/// the cache task, served before the answers that keep the other one full.
#[test]
fn a_release_snooped_during_a_100k_recovery_is_applied_while_it_runs() {
    if !require_root("a_release_snooped_during_a_100k_recovery_is_applied_while_it_runs") {
        return;
    }
    const N: u32 = 100_000;
    let links = 8;
    let t = table(0..N, links);
    let want = expected_routes([&t]);
    let lab = Lab::new("relrec", links, vec![t], Vec::new());
    // Outside the table's addresses (theirs end in hi:lo with hi ≤ 1).
    let victim: std::net::Ipv6Addr = "2001:db8:1::ffff:ffff".parse().unwrap();
    let run = release_during_recovery(
        &lab,
        lab.plan().startup(),
        bulk_config(),
        victim,
        u64::from(N) / 10,
    );
    let total = run.report.bindings;
    let at_removal = run
        .streamed_at_removal
        .expect("the snooped RELEASE was applied");
    assert!(
        at_removal < total,
        "applied while recovery still ran: {at_removal} of {total} bindings streamed \
         (release sent at {})",
        run.streamed_at_release
    );
    assert!(
        run.store
            .get(&lqagent::cache::LeaseKey::Address(victim))
            .is_none()
    );
    let got = kernel_routes(&lab.agent);
    assert!(
        !got.iter()
            .any(|(d, _, _)| d.starts_with("2001:db8:1::ffff:ffff")),
        "the released route is gone from the kernel"
    );
    assert_eq!(
        run.store.len(),
        want.len(),
        "every recovered lease in the cache"
    );
    assert!(got == want, "kernel routes are exactly the recovered set");
}
