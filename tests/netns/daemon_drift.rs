//! The running daemon repairs drift (issue 23): `lqagent run` (the built binary) in the access
//! concentrator of a real ISC lab, routes damaged by hand with `ip`, and the kernel read back
//! with `ip -6 -j route show` — never the agent's bookkeeping, never a log line, never a direct
//! call of `reconcile()`.
//!
//! - `drift_is_repaired_every_reconcile_interval_and_after_a_sighup_shortens_it`: with
//!   `routes.reconcile_interval_secs = 3600` a route deleted by hand and one moved by hand to
//!   another next hop stay broken (nothing but the periodic reconcile repairs them, and it is an
//!   hour away); a SIGHUP to 2 s — the one routes key that is live-reloadable
//!   (`docs/architecture.md` "Signals"; `routes.table` and `routes.metric` take effect after a
//!   restart, so there is nothing live to move) — brings both back within that new interval,
//!   and a second round of damage is repaired again by the running timer.
//! - `a_table_other_than_main_holds_every_route_end_to_end`: `[routes] table = 1000` (above 255,
//!   so the number travels in RTA_TABLE, not the header's octet): every client's routes are in
//!   table 1000 and none in main (nor the R-5 `unreachable` aggregates, which are in 1000 too);
//!   drift there is repaired there; a release withdraws from it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::agent::{client_routes, start_agent, write_config};
use support::isc::{IscLab, Lifetimes, wait_for};
use support::netns::{NetNs, Route, proto_routes, proto_routes_in_table};

const PROTO: &str = "213";

/// Long enough that no client renews during the test: only the agent can repair a route.
const LIFE: Lifetimes = Lifetimes {
    valid: 600,
    preferred: 300,
};

fn config(lab: &IscLab, routes: &str) -> PathBuf {
    write_config(
        lab,
        &format!(
            "[bulk]\nenabled = false\n\n[trigger]\nenabled = false\n\n\
             [routes]\nprotocol = {PROTO}\n{routes}\n\n[log]\nlevel = \"info\"\n"
        ),
    )
}

/// The unicast routes of our protocol in routing table `table` of `ns`, as the kernel has them.
fn table_routes(ns: &NetNs, table: &str) -> BTreeSet<Route> {
    proto_routes_in_table(ns, table, PROTO)
}

/// Damage two routes by hand as an operator (or another tool) would: `gone`'s /128 deleted, and
/// `moved`'s prefix route replaced in place by one via a next hop nobody asked for (same
/// protocol, table and metric, so it is the agent's route with the wrong gateway). `ip` failing
/// fails the test (`route del` fails when there is no such route). With `verify` the kernel is
/// read back to show the damage — only while no reconcile can come in between (a long
/// interval): under a running 2 s timer the repair may already be done by the time of the read.
fn damage(lab: &IscLab, table: &str, gone: usize, moved: usize, verify: bool) {
    let addr = client_routes(lab, gone)
        .into_iter()
        .find(|r| r.1.is_none())
        .expect("the /128");
    lab.ac.exec(&[
        "ip", "-6", "route", "del", &addr.0, "dev", &addr.2, "table", table, "proto", PROTO,
    ]);
    let pfx = client_routes(lab, moved)
        .into_iter()
        .find(|r| r.1.is_some())
        .expect("the prefix route");
    lab.ac.exec(&[
        "ip",
        "-6",
        "route",
        "replace",
        &pfx.0,
        "via",
        "fe80::dead:beef",
        "dev",
        &pfx.2,
        "table",
        table,
        "proto",
        PROTO,
        "metric",
        "1024",
    ]);
    if !verify {
        return;
    }
    let now = table_routes(&lab.ac, table);
    assert!(!now.contains(&addr), "deleted by hand: {now:?}");
    assert!(!now.contains(&pfx), "moved by hand: {now:?}");
    assert!(
        now.contains(&(pfx.0.clone(), Some("fe80::dead:beef".into()), pfx.2.clone())),
        "the wrong next hop is in place: {now:?}"
    );
}

#[test]
fn drift_is_repaired_every_reconcile_interval_and_after_a_sighup_shortens_it() {
    let test = "drift_is_repaired_every_reconcile_interval_and_after_a_sighup_shortens_it";
    let Some(mut lab) = IscLab::without_clients(test, 2, LIFE) else {
        return;
    };
    let cfg = config(&lab, "reconcile_interval_secs = 3600");
    let agent = start_agent(&lab, &cfg, "lqagent.log");
    lab.start_clients();
    let want: BTreeSet<Route> = (0..2).flat_map(|i| client_routes(&lab, i)).collect();
    assert_eq!(want.len(), 4);
    wait_for("both clients' routes", Duration::from_secs(10), || {
        table_routes(&lab.ac, "main") == want
    });

    // Round 1: damage under an hour-long interval. What the kernel shows now stays until
    // something repairs it; the only thing that can, within this test, is the reload below.
    damage(&lab, "main", 0, 1, true);
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        good.replace(
            "reconcile_interval_secs = 3600",
            "reconcile_interval_secs = 2",
        ),
    )
    .unwrap();
    let hup = Instant::now();
    agent.signal("HUP");
    wait_for(
        "both routes repaired after the SIGHUP to a 2 s interval",
        Duration::from_secs(15),
        || table_routes(&lab.ac, "main") == want,
    );
    eprintln!("round 1: repaired {:?} after SIGHUP", hup.elapsed());

    // Round 2: the other pair, under the running 2 s timer.
    damage(&lab, "main", 1, 0, false);
    let t = Instant::now();
    wait_for(
        "both routes repaired by the running 2 s reconcile",
        Duration::from_secs(15),
        || table_routes(&lab.ac, "main") == want,
    );
    eprintln!("round 2: repaired {:?} after the damage", t.elapsed());
    assert_eq!(proto_routes(&lab.ac, PROTO), want, "nothing else in main");
}

#[test]
fn a_table_other_than_main_holds_every_route_end_to_end() {
    let test = "a_table_other_than_main_holds_every_route_end_to_end";
    let Some(mut lab) = IscLab::without_clients(test, 2, LIFE) else {
        return;
    };
    let cfg = config(&lab, "table = 1000\nreconcile_interval_secs = 2");
    let _agent = start_agent(&lab, &cfg, "lqagent.log");
    lab.start_clients();
    let want: BTreeSet<Route> = (0..2).flat_map(|i| client_routes(&lab, i)).collect();
    assert_eq!(want.len(), 4);
    wait_for(
        "both clients' routes in table 1000",
        Duration::from_secs(10),
        || table_routes(&lab.ac, "1000") == want,
    );
    // Nothing of ours in main, of any type (the R-5 `unreachable` aggregates included).
    let main = lab
        .ac
        .exec(&["ip", "-6", "route", "show", "table", "main", "proto", PROTO]);
    assert!(
        main.stdout.is_empty(),
        "routes of ours in main: {}",
        String::from_utf8_lossy(&main.stdout)
    );
    let aggregates = lab.ac.exec(&[
        "ip",
        "-6",
        "route",
        "show",
        "table",
        "1000",
        "proto",
        PROTO,
        "type",
        "unreachable",
    ]);
    // The lab's delegated-prefix pools are wider than /64: their aggregates go to table 1000.
    let aggregates = String::from_utf8_lossy(&aggregates.stdout);
    assert_eq!(
        aggregates.lines().count(),
        2,
        "one unreachable aggregate per link's pool in table 1000: {aggregates}"
    );

    // Drift in table 1000 is repaired in table 1000.
    damage(&lab, "1000", 0, 1, false);
    wait_for("table 1000 repaired", Duration::from_secs(15), || {
        table_routes(&lab.ac, "1000") == want
    });
    assert!(table_routes(&lab.ac, "main").is_empty());

    // A release withdraws from table 1000.
    let released = client_routes(&lab, 0);
    lab.clients[0].release();
    let rest: BTreeSet<Route> = want.difference(&released).cloned().collect();
    wait_for(
        "the released client's routes to leave table 1000",
        Duration::from_secs(10),
        || table_routes(&lab.ac, "1000") == rest,
    );
    assert!(table_routes(&lab.ac, "main").is_empty());
}
