//! Reboot recovery end to end (issue 7), as root in namespaces: reference servers in one
//! namespace, the agent's bulk requestor → cache → route installer in another, an empty cache
//! and an empty kernel table at the start, the kernel's routes read back with `ip -j`.

mod recovery_support;
mod refserver;
mod support;

use std::sync::Arc;

use lqagent::bulk::stats::Counter;
use lqagent::cache::BindingStore;
use recovery_support::{
    Lab, bulk_config, expected_routes, kernel_routes, run_recovery, table, via_cache,
};
use refserver::{FaultPlan, FaultRule, Faults};
use support::netns::require_root;

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
    assert_eq!(
        lab.refservers[1].stats().tcp_queries,
        u64::from(attempts),
        "asked once per attempt"
    );
    assert_eq!(run.stats.get(Counter::DataTimeouts), u64::from(attempts));
    assert!(run.report.servers[0].1.all_complete());
    assert!(kernel_routes(&lab.agent) == want);
}
