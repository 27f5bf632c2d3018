//! Inherited routes as bindings without a client (issue 21), end to end: the built `lqagent run`
//! in the access concentrator of a real ISC topology (dhcpd -6, dhcrelay -6, dhclient -6 -N -P;
//! tests/support/src/isc.rs), restarted with an empty state directory so that every route of the
//! last run is inherited. The kernel's routes are read with `ip -6 -j route show proto N`, never
//! from the agent; every subscriber's routes are checked before and after each step.
//!
//! - `a_release_withdraws_an_inherited_route_only_from_its_link`: client 0's lease is released
//!   from client 1's link (its lease file replayed by `dhclient -r` there): dhcpd answers, the
//!   agent sees the release come through the other link and keeps client 0's inherited routes
//!   (anchoring, counted `inherited_other_link`), although dhcpd released the lease (ISC does not
//!   check the link of a RELEASE); then client 1 releases its own lease from its
//!   own link and exactly its inherited routes go (`inherited_released`).
//! - `an_inherited_prefix_outlives_the_grace_until_its_kernel_expiry`: a client stops renewing,
//!   the agent restarts with `inherit_grace_secs = 3` and no source that could explain the
//!   client's bindings (no bulk, no trigger, and ISC answers NotConfigured to a leasequery for a
//!   prefix anyway): its routes are still there after the grace, with the expiry the last run
//!   gave them, and go at that expiry, not before; a neighbour that renews is adopted and keeps
//!   its routes throughout.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use support::agent::{client_routes, start_agent, write_config};
use support::isc::{Daemon, IscLab, Lifetimes, wait_for};
use support::netns::{NetNs, Route, proto_routes};
use support::scrape::scrape_in;

const PROTO: &str = "216";

/// The agent's configuration: no bulk recovery and no trigger (nothing but snooping can explain
/// a binding), a reconcile every 2 s, inheritance for `grace` seconds.
fn config(lab: &IscLab, grace: u64) -> std::path::PathBuf {
    write_config(
        lab,
        &format!(
            "[bulk]\nenabled = false\n\n[trigger]\nenabled = false\n\n\
             [routes]\nprotocol = {PROTO}\nreconcile_interval_secs = 2\n\
             inherit_grace_secs = {grace}\n\n[log]\nlevel = \"info\"\n"
        ),
    )
}

/// Kill the agent, empty its state directory (as after a lost disk), start it again.
fn restart_with_empty_state(lab: &IscLab, agent: &mut Daemon, cfg: &Path, log: &str) -> Daemon {
    agent.signal("KILL");
    agent.wait_exit(Duration::from_secs(5)).expect("killed");
    let state = lab.dir().join("state");
    for e in std::fs::read_dir(&state).expect("state dir") {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    start_agent(lab, cfg, log)
}

fn events(ns: &NetNs, event: &str) -> f64 {
    scrape_in(ns).value_or_zero("lqagent_route_events_total", &[("event", event)])
}

fn inherited(ns: &NetNs) -> Option<f64> {
    scrape_in(ns).value("lqagent_routes", &[("state", "inherited")])
}

/// The kernel's remaining lifetime (seconds) of our route to `dst`, `None` without one.
fn kernel_expires(ns: &NetNs, dst: &str) -> Option<u64> {
    let out = ns.exec(&["ip", "-6", "-j", "route", "show", "proto", PROTO]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j is JSON");
    v.as_array()?
        .iter()
        .find(|r| {
            let d = r["dst"].as_str().unwrap_or_default();
            d == dst || format!("{d}/128") == dst
        })?
        .get("expires")?
        .as_u64()
}

#[test]
fn a_release_withdraws_an_inherited_route_only_from_its_link() {
    let test = "a_release_withdraws_an_inherited_route_only_from_its_link";
    // Long lifetimes: no renewal explains anything during the test.
    let Some(mut lab) = IscLab::without_clients(test, 2, Lifetimes::default()) else {
        return;
    };
    let cfg = config(&lab, 600);
    let mut agent = start_agent(&lab, &cfg, "lqagent0.log");
    lab.start_clients();
    let mine: BTreeSet<Route> = client_routes(&lab, 0);
    let theirs: BTreeSet<Route> = client_routes(&lab, 1);
    let all: BTreeSet<Route> = mine.union(&theirs).cloned().collect();
    assert_eq!(all.len(), 4);
    wait_for("every client's routes", Duration::from_secs(10), || {
        proto_routes(&lab.ac, PROTO) == all
    });
    // The clients stay bound at the server but send nothing more by themselves.
    for c in &mut lab.clients {
        c.stop();
    }

    let mut agent = restart_with_empty_state(&lab, &mut agent, &cfg, "lqagent1.log");
    wait_for("every route inherited", Duration::from_secs(10), || {
        inherited(&lab.ac) == Some(4.0)
    });
    assert_eq!(
        proto_routes(&lab.ac, PROTO),
        all,
        "restart changed no route"
    );

    // Client 0's lease released from client 1's link: its DUID, IAIDs, address and prefix,
    // replayed from a copy of its lease file by dhclient in client 1's namespace.
    let stolen = lab.dir().join("stolen.leases");
    std::fs::copy(lab.clients[0].lease_file(), &stolen).unwrap();
    let pid = lab.dir().join("stolen.pid");
    let args = support::isc::dhclient("-r", &stolen, &pid, &lab.clients[1].interface);
    let out = lab.clients[1]
        .ns
        .try_exec(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        out.status.success(),
        "dhclient -r from the other link: {out:?}"
    );
    // ISC dhcpd released it, whatever link the RELEASE came through.
    let victim = lab.clients[0].lease().expect("client 0's lease");
    wait_for("dhcpd to release it", Duration::from_secs(10), || {
        lab.log("dhcpd")
            .contains(&format!("releases prefix {}", victim.prefix))
    });
    // Both of client 0's keys were named from the wrong link: both kept.
    wait_for(
        "the release from the other link to be seen",
        Duration::from_secs(10),
        || events(&lab.ac, "inherited_other_link") >= 2.0,
    );
    assert_eq!(
        proto_routes(&lab.ac, PROTO),
        all,
        "a release from another link withdrew an inherited route"
    );
    assert_eq!(events(&lab.ac, "inherited_released"), 0.0);

    // Client 1 releases its own lease from its own link: exactly its routes go.
    lab.clients[1].release();
    wait_for(
        "client 1's inherited routes to go",
        Duration::from_secs(10),
        || proto_routes(&lab.ac, PROTO).is_disjoint(&theirs),
    );
    assert_eq!(
        proto_routes(&lab.ac, PROTO),
        mine,
        "client 0's routes stay, client 1's are gone"
    );
    // /metrics is a snapshot at most a second old: wait for it to show the withdrawals.
    wait_for(
        "both withdrawals counted as inherited releases",
        Duration::from_secs(10),
        || events(&lab.ac, "inherited_released") == 2.0 && inherited(&lab.ac) == Some(2.0),
    );
    assert!(agent.running(), "agent alive");
}

#[test]
fn an_inherited_prefix_outlives_the_grace_until_its_kernel_expiry() {
    let test = "an_inherited_prefix_outlives_the_grace_until_its_kernel_expiry";
    const GRACE_SECS: u64 = 3;
    // Long enough to outlive the grace by far; short enough to see the expiry.
    let life = Lifetimes {
        valid: 24,
        preferred: 12,
    };
    let Some(mut lab) = IscLab::without_clients(test, 2, life) else {
        return;
    };
    let cfg = config(&lab, GRACE_SECS);
    let mut agent = start_agent(&lab, &cfg, "lqagent0.log");
    lab.start_clients();
    let silent: BTreeSet<Route> = client_routes(&lab, 0);
    let renewing: BTreeSet<Route> = client_routes(&lab, 1);
    let all: BTreeSet<Route> = silent.union(&renewing).cloned().collect();
    wait_for("every client's routes", Duration::from_secs(10), || {
        proto_routes(&lab.ac, PROTO) == all
    });
    // Client 0 goes quiet (a CPE that will renew only later, or never): nothing the agent
    // sees explains its bindings again. Client 1 keeps renewing.
    lab.clients[0].stop();

    let log = "lqagent1.log";
    let mut agent = restart_with_empty_state(&lab, &mut agent, &cfg, log);
    let started = Instant::now();
    assert!(
        proto_routes(&lab.ac, PROTO).is_superset(&silent),
        "restart kept the silent client's routes"
    );
    wait_for(
        "the grace period to end",
        Duration::from_secs(GRACE_SECS + 5),
        || {
            std::fs::read_to_string(lab.dir().join(log))
                .unwrap_or_default()
                .contains("inheritance over")
        },
    );
    assert!(started.elapsed() >= Duration::from_secs(GRACE_SECS - 1));
    // The line is logged after the reconcile that ends inheritance has run its deletes.
    let now = proto_routes(&lab.ac, PROTO);
    assert!(
        now.is_superset(&silent),
        "the silent client's inherited routes were deleted at the grace: {now:?}"
    );
    assert_eq!(
        events(&lab.ac, "unconfirmed"),
        0.0,
        "nothing deleted as unconfirmed"
    );
    let prefix = silent
        .iter()
        .find(|r| r.1.is_some())
        .expect("a delegated prefix")
        .0
        .clone();
    let left = kernel_expires(&lab.ac, &prefix).expect("the inherited prefix has a kernel expiry");
    assert!(left > 0 && left <= u64::from(life.valid), "expires {left}");
    let read = Instant::now();
    let due = read + Duration::from_secs(left);
    for r in &silent {
        assert!(
            kernel_expires(&lab.ac, &r.0).is_some(),
            "{r:?} has an expiry"
        );
    }

    // Gone at the kernel's expiry, not before; the renewing neighbour keeps its routes.
    let mut gone_at = None;
    wait_for(
        "the silent client's routes to reach their expiry",
        Duration::from_secs(left + 10),
        || {
            let now = proto_routes(&lab.ac, PROTO);
            assert!(
                now.is_superset(&renewing),
                "the renewing client lost a route: {now:?}"
            );
            let gone = now.is_disjoint(&silent);
            if gone {
                gone_at = Some(Instant::now());
            }
            gone
        },
    );
    let gone_at = gone_at.unwrap();
    assert!(
        gone_at + Duration::from_secs(1) >= due,
        "removed {:?} before the kernel's expiry",
        due.saturating_duration_since(gone_at)
    );
    assert_eq!(proto_routes(&lab.ac, PROTO), renewing);
    assert_eq!(inherited(&lab.ac), Some(0.0), "nothing inherited left");
    // The renewing client's routes were adopted by its snooped renewal, not kept by chance.
    assert!(events(&lab.ac, "adopted") >= 2.0);
    assert!(events(&lab.ac, "inherited_expired") >= 1.0);
    assert!(agent.running(), "agent alive");
}
