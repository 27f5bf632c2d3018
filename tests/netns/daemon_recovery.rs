//! `lqagent run` recovering by bulk leasequery (RFC 5460) at start, as the built binary in the
//! agent namespace of the recovery lab (tests/support/src/recovery.rs: reference servers over TCP in a
//! server namespace, veth subscriber links): the bindings stream into the cache and routes
//! into the kernel; WATCHDOG=1 comes every WatchdogSec/2; READY=1 comes once the state is loaded and the kernel
//! reconciled, and recovery runs on after it (`lqagent_recovery_in_progress`) until every server
//! finished — the live one with DONE, a refusing one given up after its attempts; the recovery
//! metrics say so; a subscriber link
//! going down and up asks the servers for that link again (link-up trigger); and
//! `lqagent clear binding` withdraws a route, `lqagent show bindings --link` lists one link.

use support::recovery as recovery_support;

use std::time::{Duration, Instant};

use recovery_support::{Lab, expected_routes, ifname, kernel_routes, links_config, table};
use support::isc::{Daemon, wait_for};
use support::netns::require_root;
use support::scrape::scrape_in;

#[test]
fn run_recovers_by_bulk_then_signals_ready() {
    if !require_root("run_recovers_by_bulk_then_signals_ready") {
        return;
    }
    let links = 2;
    let t = table(0..300, links);
    let want = expected_routes([&t]);
    let lab = Lab::new("drec", links, vec![t], Vec::new());
    // A second server that refuses every connection (address up, nothing listening).
    lab.srv.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:ff::9/64",
        "dev",
        "lqs0",
        "nodad",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = format!(
        "state_dir = \"{}\"\n\n[bulk]\nenabled = true\nqueries = [\"link-address\"]\n\
         attempts = 2\nconnect_timeout_secs = 1\n\n[trigger]\nenabled = false\n\n\
         [control]\nsocket = \"{}\"\n\n\
         [[servers]]\nname = \"ref\"\naddress = \"{}\"\n\n\
         [[servers]]\nname = \"refusing\"\naddress = \"2001:db8:ff::9\"\n",
        dir.path().join("state").display(),
        dir.path().join("control.sock").display(),
        lab.servers[0].ip(),
    );
    cfg.push_str(&links_config(links));
    let cfg_path = dir.path().join("lqagent.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let log = dir.path().join("lqagent.log");
    let started = Instant::now();
    let mut agent = Daemon::spawn_env(
        &lab.agent,
        "lqagent",
        &[
            env!("CARGO_BIN_EXE_lqagent"),
            "run",
            "--config",
            &cfg_path.to_string_lossy(),
        ],
        &log,
        &[
            ("NOTIFY_SOCKET", &notify_path.to_string_lossy()),
            // systemd's WatchdogSec=0.3s: a ping every 150 ms.
            ("WATCHDOG_USEC", "300000"),
        ],
    );
    let mut buf = [0u8; 64];
    let mut pings = 0;
    let n = loop {
        let n = notify.recv(&mut buf).expect("READY=1 within 20 s");
        if &buf[..n] != b"WATCHDOG=1" {
            break n;
        }
        pings += 1;
    };
    let ready_after = started.elapsed();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(agent.running(), "{text}");
    assert_eq!(&buf[..n], b"READY=1", "{text}");
    // Recovery runs on after READY; the metric says when it is over.
    wait_for("recovery to finish", Duration::from_secs(20), || {
        scrape_in(&lab.agent).value("lqagent_recovery_in_progress", &[]) == Some(0.0)
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("bulk recovery finished"), "{text}");
    // Watchdog pings keep coming after readiness, at half of WatchdogSec.
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(500) {
        let n = notify.recv(&mut buf).expect("watchdog pings");
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        pings += 1;
    }
    assert!(
        pings >= 4,
        "{pings} watchdog pings in {:?}",
        started.elapsed()
    );
    wait_for("every recovered route", Duration::from_secs(5), || {
        kernel_routes(&lab.agent) == want
    });
    eprintln!(
        "READY after {ready_after:?}; {} routes from {} clients",
        want.len(),
        300
    );

    let m = scrape_in(&lab.agent);
    let get = |name: &str, labels: &[(&str, &str)]| m.value(name, labels).unwrap_or(-1.0);
    assert_eq!(get("lqagent_recovery_bindings_total", &[]), 300.0);
    assert_eq!(get("lqagent_recovery_in_progress", &[]), 0.0);
    assert!(get("lqagent_recovery_duration_seconds", &[]) > 0.0);
    assert_eq!(
        get(
            "lqagent_bulk_events_total",
            &[("event", "queries_completed")]
        ),
        f64::from(links)
    );
    assert_eq!(
        get(
            "lqagent_bulk_events_total",
            &[("event", "queries_given_up")]
        ),
        f64::from(links),
        "the refusing server's queries were given up"
    );
    let lq = |server: &str, outcome: &str| {
        get(
            "lqagent_leasequeries_total",
            &[
                ("query_type", "link_address"),
                ("server", server),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(lq("ref", "binding"), f64::from(links));
    assert_eq!(lq("refusing", "timeout"), f64::from(links));
    assert_eq!(
        get("lqagent_routes", &[("state", "installed")]),
        want.len() as f64
    );
    assert_eq!(get("lqagent_bindings", &[]), want.len() as f64);

    // Link-up: sub1 down and up again → that link is asked for again (one query per server).
    let seen_before = lab.refservers[0].queries().len();
    lab.agent.exec(&["ip", "link", "set", &ifname(1), "down"]);
    wait_for(
        "the kernel to drop sub1's routes",
        Duration::from_secs(5),
        || kernel_routes(&lab.agent) != want,
    );
    lab.agent.exec(&["ip", "link", "set", &ifname(1), "up"]);
    wait_for(
        "a bulk query for the link that came up",
        Duration::from_secs(10),
        || {
            scrape_in(&lab.agent).value(
                "lqagent_bulk_events_total",
                &[("event", "queries_completed")],
            ) == Some(f64::from(links) + 1.0)
        },
    );
    // ... and the link asked about is l1's link-address, by QUERY_BY_LINK_ADDRESS (4) over
    // TCP, and no other link's: a count alone would pass if the wrong link were asked.
    let asked: Vec<_> = lab.refservers[0].queries()[seen_before..]
        .iter()
        .filter(|q| q.transport == support::refserver::Transport::Tcp)
        .map(|q| (q.query_type, q.link))
        .collect();
    assert_eq!(
        asked,
        vec![(4, recovery_support::link(1))],
        "the link-up query asks for the link that came up"
    );
    // The kernel dropped sub1's routes with the link; the reconcile/unpark path restores them.
    wait_for(
        "routes back after the link came up",
        Duration::from_secs(10),
        || kernel_routes(&lab.agent) == want,
    );
    // `lqagent clear binding` forgets a lease and withdraws its route; `show bindings --link`.
    let lqagent = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lqagent"))
            .args(args)
            .arg("--socket")
            .arg(dir.path().join("control.sock"))
            .output()
            .unwrap();
        assert!(out.status.success(), "lqagent {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let victim = want
        .iter()
        .find(|(d, gw, _)| d.ends_with("/128") && gw.is_none())
        .cloned()
        .expect("an address route");
    let addr = victim.0.trim_end_matches("/128").to_string();
    let out = lqagent(&["clear", "binding", &addr]);
    assert!(out.contains(&victim.0), "{out}");
    let mut rest = want.clone();
    rest.remove(&victim);
    wait_for(
        "the cleared binding's route to go",
        Duration::from_secs(5),
        || kernel_routes(&lab.agent) == rest,
    );
    let l1: serde_json::Value =
        serde_json::from_str(&lqagent(&["show", "bindings", "--link", "l1", "--json"])).unwrap();
    let l1 = l1.as_array().expect("bindings");
    let on_sub1 = rest.iter().filter(|r| r.2 == ifname(1)).count();
    assert_eq!(l1.len(), on_sub1, "bindings of link l1");
    assert!(
        l1.iter()
            .all(|b| b["link"] == "l1" && b["source"] == "bulk")
    );

    agent.signal("TERM");
    let st = agent.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(st.success());
}
