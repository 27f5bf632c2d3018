//! Fail safe (issue 15), end to end: the built `lqagent run` in the access concentrator of a real
//! ISC topology (dhcpd -6, dhcrelay -6, dhclient -6 -N -P; tests/support/src/isc.rs). The kernel's
//! routes are sampled every 50 ms with `ip -6 -j route show proto N`, never read from the agent.
//!
//! - `restart_with_a_bad_state_file_loses_no_route`: three clients bound and renewing; the agent
//!   is killed with SIGKILL and its state file made (a) garbage, (b) empty, (c) all expired (every
//!   lease's lifetime in the past, as after the wall clock stepped forward); after each restart no
//!   sample misses a subscriber route. The routes are counted as inherited, each becomes ordinary
//!   when its client renews (`adopted`), and a route of ours nothing explains (planted before the
//!   last restart) is kept through the grace period, then deleted and counted `unconfirmed`.
//! - `full_state_disk_keeps_routing_and_recovers`: the state directory on a small tmpfs, full at
//!   start (the agent starts degraded) and filled again at run time; routes follow the clients,
//!   `lqagent_state_degraded` shows it, and it recovers both times when space returns.
//! - `watchdog_stops_when_the_cache_task_is_stuck`: with `WATCHDOG_USEC` set, WATCHDOG=1 comes
//!   regularly; once the cache task is stalled (test hook `LQAGENT_TEST_STALL_CACHE_SECS`) it
//!   stops, and the log names the task.
//! - `failed_route_and_capture_tasks_are_restarted_and_counted`: the route task and the capture
//!   task each fail (a panic, by the test-only hook `LQAGENT_TEST_FAULT_DIR`: the file named
//!   after the task makes its first run panic); both are restarted and counted in
//!   `lqagent_task_restarts_total{task}`, the process stays up, no sample misses a bound client's
//!   route, and a client that binds afterwards gets its routes (snooping and routing work).
//!   Then a real fault: a second snooped interface is deleted and made again; its capture
//!   socket is reopened and counted under the same label.
//! - `uplink_flap_leaves_snooping_working`: the snooped uplink goes down and up; a client that
//!   then releases and binds again is followed (its routes go, then come back), and the flap is
//!   counted.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::agent::{client_routes, start_agent, write_config};
use support::isc::{IscLab, Lifetimes, wait_for};
use support::netns::{Route, proto_routes};
use support::scrape::scrape_in;

const PROTO: &str = "215";
const GRACE_SECS: u64 = 10;

/// How the state file is damaged before a restart.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Every byte replaced by junk (a bad copy).
    Garbage,
    /// Both files cut to zero bytes.
    Empty,
    /// Every lease's preferred and valid lifetime set to 1970 (records re-checksummed).
    AllExpired,
}

/// Set the preferred and valid lifetime of every Upsert record of a state file to 1 s after the
/// epoch, keeping the framing and checksums right (format: `src/persist/codec.rs`).
fn expire_all(path: &Path) -> usize {
    let Ok(mut b) = std::fs::read(path) else {
        return 0;
    };
    let mut at = 24; // header
    let mut n = 0;
    while at + 8 <= b.len() {
        let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        let p = at + 8;
        if p + len > b.len() {
            break;
        }
        // Upsert: tag · key (1 + 16 + 1) · ia · iaid (4) · preferred i64 · valid i64 · ...
        if b[p] == 1 && len >= 40 {
            for off in [24, 32] {
                b[p + off..p + off + 8].copy_from_slice(&1000i64.to_le_bytes());
            }
            let mut h = crc32fast::Hasher::new();
            h.update(&b[at..at + 4]);
            h.update(&b[p..p + len]);
            let crc = h.finalize();
            b[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
            n += 1;
        }
        at = p + len;
    }
    std::fs::write(path, b).unwrap();
    n
}

fn damage(dir: &Path, how: Damage) {
    for f in ["bindings.snap", "bindings.journal"] {
        let path = dir.join(f);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        match how {
            Damage::Garbage => {
                let junk: Vec<u8> = (0..bytes.len().max(64))
                    .map(|i| (i as u8).wrapping_mul(151) ^ 0x5a)
                    .collect();
                std::fs::write(&path, junk).unwrap();
            }
            Damage::Empty => std::fs::write(&path, b"").unwrap(),
            Damage::AllExpired => {
                expire_all(&path);
            }
        }
    }
}

#[test]
fn restart_with_a_bad_state_file_loses_no_route() {
    let t0 = Instant::now();
    let test = "restart_with_a_bad_state_file_loses_no_route";
    // dhcpd sends T1 = 0, so dhclient renews at about half the valid lifetime (~5 s): within
    // the grace period each client renews at least once.
    let life = Lifetimes {
        valid: 12,
        preferred: 6,
    };
    let Some(mut lab) = IscLab::without_clients(test, 3, life) else {
        return;
    };
    let cfg = write_config(
        &lab,
        &format!(
            "[bulk]\nenabled = false\n\n[trigger]\nenabled = false\n\n\
             [routes]\nprotocol = {PROTO}\nreconcile_interval_secs = 2\n\
             inherit_grace_secs = {GRACE_SECS}\n\n[log]\nlevel = \"info\"\n"
        ),
    );
    let mut agent = start_agent(&lab, &cfg, "lqagent0.log");
    lab.start_clients();
    let want: BTreeSet<Route> = (0..3).flat_map(|i| client_routes(&lab, i)).collect();
    assert_eq!(want.len(), 6);
    wait_for("every client's routes", Duration::from_secs(10), || {
        proto_routes(&lab.ac, PROTO) == want
    });
    let state = lab.dir().join("state");
    // A route of ours that no binding explains: what a previous run left for a lease gone since.
    let stray = (
        "2001:db8:ff00::/56".to_string(),
        Some("fe80::99".to_string()),
        lab.clients[0].ac_interface.clone(),
    );

    let phases = [Damage::Garbage, Damage::Empty, Damage::AllExpired];
    for (n, how) in phases.into_iter().enumerate() {
        let last = n + 1 == phases.len();
        // Something to lose: the journal holds every client's binding.
        wait_for("the state journal", Duration::from_secs(5), || {
            std::fs::metadata(state.join("bindings.journal")).is_ok_and(|m| m.len() > 24)
        });
        agent.signal("KILL");
        agent.wait_exit(Duration::from_secs(5)).expect("killed");
        damage(&state, how);
        if last {
            lab.ac.exec(&[
                "ip", "-6", "route", "add", &stray.0, "via", "fe80::99", "dev", &stray.2, "proto",
                PROTO,
            ]);
        }
        assert!(proto_routes(&lab.ac, PROTO).is_superset(&want));

        // Sample the kernel every 50 ms from before the start until past the grace period.
        let stop = AtomicBool::new(false);
        let log = format!("lqagent{}.log", n + 1);
        let (samples, missed) = std::thread::scope(|s| {
            let sampler = s.spawn(|| {
                let t = Instant::now();
                let mut samples = 0usize;
                let mut missed = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let now = proto_routes(&lab.ac, PROTO);
                    samples += 1;
                    if !now.is_superset(&want) {
                        let gone: Vec<Route> = want.difference(&now).cloned().collect();
                        missed.push((t.elapsed(), gone));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                (samples, missed)
            });
            // Stops the sampler however this closure ends (a failed assertion included).
            struct StopOnDrop<'a>(&'a AtomicBool);
            impl Drop for StopOnDrop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let _stop = StopOnDrop(&stop);
            agent = start_agent(&lab, &cfg, &log);
            let started = Instant::now();
            let text = std::fs::read_to_string(lab.dir().join(&log)).unwrap();
            let inherited = if last { 7 } else { 6 };
            assert!(
                text.contains(&format!("inherited: {inherited} }}")),
                "{how:?}: the start-up reconcile kept {inherited} routes as inherited:\n{text}"
            );
            if last {
                // Kept through the grace period, then gone: no source confirmed it.
                wait_for(
                    "the unexplained route to go after the grace period",
                    Duration::from_secs(GRACE_SECS + 5),
                    || !proto_routes(&lab.ac, PROTO).contains(&stray),
                );
                assert!(
                    started.elapsed() >= Duration::from_secs(GRACE_SECS - 1),
                    "deleted after {:?}, before the grace period was over",
                    started.elapsed()
                );
            } else {
                wait_for(
                    "every inherited route adopted",
                    Duration::from_secs(GRACE_SECS + 5),
                    || {
                        let m = scrape_in(&lab.ac);
                        m.value("lqagent_routes", &[("state", "inherited")]) == Some(0.0)
                    },
                );
            }
            // And a while past the grace period, with its delete-what-is-unexplained reconcile.
            while started.elapsed() < Duration::from_secs(GRACE_SECS + 3) {
                std::thread::sleep(Duration::from_millis(100));
            }
            stop.store(true, Ordering::Relaxed);
            sampler.join().unwrap()
        });
        assert!(samples > 100, "{how:?}: only {samples} samples");
        assert!(
            missed.is_empty(),
            "{how:?}: {} of {samples} samples missed subscriber routes, first {:?}, last {:?}\n{}",
            missed.len(),
            missed.first(),
            missed.last(),
            std::fs::read_to_string(lab.dir().join(&log)).unwrap_or_default()
                + &lab.log("dhclient0")
        );
        let m = scrape_in(&lab.ac);
        let ev = |e: &str| m.value_or_zero("lqagent_route_events_total", &[("event", e)]);
        assert_eq!(ev("adopted"), 6.0, "{how:?}: every client's routes adopted");
        assert_eq!(
            ev("unconfirmed"),
            if last { 1.0 } else { 0.0 },
            "{how:?}: unexplained routes deleted after the grace period"
        );
        assert_eq!(
            m.value("lqagent_routes", &[("state", "inherited")]),
            Some(0.0)
        );
        assert_eq!(proto_routes(&lab.ac, PROTO), want, "{how:?}");
        eprintln!(
            "{how:?}: {samples} samples, none missing a route, at {:?}",
            t0.elapsed()
        );
    }
}

/// `lqagent_state_degraded` as scraped.
fn degraded(lab: &IscLab) -> Option<f64> {
    scrape_in(&lab.ac).value("lqagent_state_degraded", &[])
}

/// The state directory on a small tmpfs, full at start and filled again at run time: the agent
/// starts, routes follow the clients throughout, the degraded state shows in the metrics and the
/// log, and both times it recovers when space returns (the state file then reloads whole).
#[test]
fn full_state_disk_keeps_routing_and_recovers() {
    let test = "full_state_disk_keeps_routing_and_recovers";
    let life = Lifetimes {
        valid: 12,
        preferred: 6,
    };
    let Some(mut lab) = IscLab::without_clients(test, 2, life) else {
        return;
    };
    let state = lab.dir().join("state");
    let disk = support::tmpfs::SmallFs::mount(&state, "128k");
    disk.fill();
    let cfg = write_config(
        &lab,
        "[bulk]\nenabled = false\n\n[trigger]\nenabled = false\n\n\
         [routes]\nprotocol = 216\nreconcile_interval_secs = 5\n\n[log]\nlevel = \"info\"\n",
    );
    let mut agent = start_agent(&lab, &cfg, "lqagent-full.log");
    let log_path = lab.dir().join("lqagent-full.log");
    let log = move || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(log().contains("state persistence degraded"), "{}", log());
    assert_eq!(degraded(&lab), Some(1.0), "degraded from the start");

    lab.start_clients();
    let want: BTreeSet<Route> = (0..2).flat_map(|i| client_routes(&lab, i)).collect();
    wait_for(
        "routes with a full state disk",
        Duration::from_secs(10),
        || proto_routes(&lab.ac, "216") == want,
    );

    disk.free();
    wait_for(
        "recovery once space returns",
        Duration::from_secs(20),
        || degraded(&lab) == Some(0.0),
    );
    assert!(log().contains("state persistence recovered"), "{}", log());

    // The disk fills again at run time: once the renewals' records have used the slack of the
    // journal's last page, appends fail; routing goes on.
    disk.fill();
    wait_for("degraded at run time", Duration::from_secs(60), || {
        degraded(&lab) == Some(1.0)
    });
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(6) {
        assert_eq!(proto_routes(&lab.ac, "216"), want, "routing goes on");
        std::thread::sleep(Duration::from_millis(50));
    }
    disk.free();
    wait_for("recovery again", Duration::from_secs(30), || {
        degraded(&lab) == Some(0.0)
    });
    let m = scrape_in(&lab.ac);
    let ev = |e: &str| m.value_or_zero("lqagent_state_events_total", &[("event", e)]);
    assert_eq!(ev("degraded"), 2.0, "one transition each way, each time");
    assert_eq!(ev("recovered"), 2.0);
    assert!(ev("write_error") >= 2.0);
    assert!(agent.running());

    // What it wrote after recovering is whole: a restart loads every binding.
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(10)).expect("exit");
    let l = lqagent::persist::load(&state, lqagent::time::AgentClock::new().now()).unwrap();
    assert!(l.damaged.is_empty(), "{:?}", l.damaged);
    assert_eq!(l.leases.len(), 4, "two addresses and two prefixes");
}

#[test]
fn uplink_flap_leaves_snooping_working() {
    let test = "uplink_flap_leaves_snooping_working";
    let life = Lifetimes {
        valid: 60,
        preferred: 30,
    };
    let Some(mut lab) = IscLab::without_clients(test, 1, life) else {
        return;
    };
    let cfg = write_config(
        &lab,
        "[bulk]\nenabled = false\n\n[trigger]\nenabled = false\n\n\
         [routes]\nprotocol = 217\n\n[log]\nlevel = \"info\"\n",
    );
    let mut agent = start_agent(&lab, &cfg, "lqagent-flap.log");
    lab.start_clients();
    let want = client_routes(&lab, 0);
    wait_for("the client's routes", Duration::from_secs(10), || {
        proto_routes(&lab.ac, "217") == want
    });

    let up = lab.ac_upstream.clone();
    // Keep the uplink's static address over the flap, as a configured box does (the kernel's
    // default flushes it, and the lab has no network manager to put it back).
    lab.ac.exec(&[
        "sysctl",
        "-qw",
        &format!("net.ipv6.conf.{up}.keep_addr_on_down=1"),
    ]);
    lab.ac.exec(&["ip", "link", "set", &up, "down"]);
    lab.ac.exec(&["ip", "link", "set", &up, "up"]);
    wait_for("the flap to be counted", Duration::from_secs(5), || {
        scrape_in(&lab.ac).value_or_zero("lqagent_snoop_capture_total", &[("event", "link_down")])
            >= 1.0
    });
    // Let the upstream link come back to life (DAD on the relay's address) before the client
    // talks again: wait until the server answers a ping from the access concentrator.
    let server = lab.server_address.to_string();
    wait_for("the uplink to work again", Duration::from_secs(10), || {
        lab.ac
            .try_exec(&["ping", "-6", "-c", "1", "-W", "1", &server])
            .status
            .success()
    });

    // The client releases: only a snooped RELEASE/REPLY can take its routes away.
    lab.clients[0].release();
    wait_for("the released routes to go", Duration::from_secs(10), || {
        proto_routes(&lab.ac, "217").is_empty()
    });
    // And binds again: followed.
    let _ = std::fs::remove_file(lab.clients[0].lease_file());
    lab.clients[0].start_dhclient();
    wait_for("the client to bind again", Duration::from_secs(30), || {
        lab.clients[0].lease().is_some()
    });
    let again = client_routes(&lab, 0);
    wait_for("the new binding's routes", Duration::from_secs(10), || {
        proto_routes(&lab.ac, "217") == again
    });
    assert!(agent.running());
    let m = scrape_in(&lab.ac);
    assert!(
        m.value_or_zero(
            "lqagent_snooped_messages_total",
            &[("message_type", "RELEASE")]
        ) >= 1.0
    );
}

/// A one-server lab and `lqagent run` (route protocol `protocol`, logging to `log`) with a
/// notify socket it reports to and `WatchdogSec=1` (WATCHDOG=1 every 0.5 s while healthy);
/// `env` adds to the agent's environment. `None` when the lab cannot be made (not root outside CI).
fn watchdog_agent(
    test: &str,
    protocol: u8,
    log: &str,
    env: &[(&str, &str)],
) -> Option<(
    IscLab,
    std::os::unix::net::UnixDatagram,
    support::isc::Daemon,
)> {
    let life = Lifetimes {
        valid: 60,
        preferred: 30,
    };
    let lab = IscLab::without_clients(test, 1, life)?;
    let cfg = write_config(
        &lab,
        &format!(
            "[bulk]\nenabled = false\n\n[trigger]\nenabled = false\n\n\
             [routes]\nprotocol = {protocol}\n\n[log]\nlevel = \"info\"\n"
        ),
    );
    let notify_path = lab.dir().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let path = notify_path.to_string_lossy().into_owned();
    let mut all = vec![
        ("NOTIFY_SOCKET", path.as_str()),
        ("WATCHDOG_USEC", "1000000"),
    ];
    all.extend_from_slice(env);
    let agent = support::agent::start_agent_env(&lab, &cfg, log, &all);
    Some((lab, notify, agent))
}

/// The agent's test hooks (`LQAGENT_TEST_*`) exist only in debug builds, the profile of the
/// test binary too: under `--release` the tests that need them fail here, saying why, instead
/// of waiting for a fault that cannot come.
fn require_test_hooks() {
    #[cfg(not(debug_assertions))]
    panic!(
        "this test needs the agent's test hooks, which only debug builds have (run without --release)"
    );
}

#[test]
fn watchdog_stops_when_the_cache_task_is_stuck() {
    require_test_hooks();
    let Some((lab, notify, _agent)) = watchdog_agent(
        "watchdog_stops_when_the_cache_task_is_stuck",
        218,
        "lqagent-dog.log",
        &[("LQAGENT_TEST_STALL_CACHE_SECS", "60")],
    ) else {
        return;
    };
    let ready = Instant::now();
    // Notices within a window: (READY, WATCHDOG) counts.
    let count = |window: Duration| {
        let t = Instant::now();
        let mut dogs = Vec::new();
        let mut buf = [0u8; 256];
        while t.elapsed() < window {
            if let Ok(n) = notify.recv(&mut buf) {
                if &buf[..n] == b"WATCHDOG=1" {
                    dogs.push(ready.elapsed());
                }
            }
        }
        dogs
    };
    // The stall is queued at READY: the cache task is stuck from then on. The route and
    // capture tasks keep beating, but the cache task's heartbeat does not move.
    let dogs = count(Duration::from_secs(4));
    assert!(
        dogs.iter().all(|t| *t < Duration::from_millis(1200)),
        "WATCHDOG=1 after the cache task got stuck: {dogs:?}"
    );
    let log = std::fs::read_to_string(lab.dir().join("lqagent-dog.log")).unwrap();
    assert!(
        log.contains("WATCHDOG=1 withheld") && log.contains("cache"),
        "{log}"
    );
}

#[test]
fn watchdog_is_fed_while_the_tasks_progress() {
    let Some((_lab, notify, _agent)) = watchdog_agent(
        "watchdog_is_fed_while_the_tasks_progress",
        219,
        "lqagent-dog2.log",
        &[],
    ) else {
        return;
    };
    let t = Instant::now();
    let mut dogs = 0;
    let mut buf = [0u8; 256];
    while t.elapsed() < Duration::from_secs(3) {
        if let Ok(n) = notify.recv(&mut buf) {
            dogs += usize::from(&buf[..n] == b"WATCHDOG=1");
        }
    }
    assert!(dogs >= 4, "{dogs} WATCHDOG=1 in 3 s at WatchdogSec=1");
}

/// `lqagent_task_restarts_total{task}` as scraped.
fn restarts(lab: &IscLab, task: &str) -> f64 {
    scrape_in(&lab.ac).value_or_zero("lqagent_task_restarts_total", &[("task", task)])
}

#[test]
fn failed_route_and_capture_tasks_are_restarted_and_counted() {
    require_test_hooks();
    let test = "failed_route_and_capture_tasks_are_restarted_and_counted";
    let life = Lifetimes {
        valid: 60,
        preferred: 30,
    };
    let Some(mut lab) = IscLab::without_clients(test, 2, life) else {
        return;
    };
    let cfg = write_config(
        &lab,
        "[bulk]\nenabled = false\n\n[trigger]\nenabled = false\n\n\
         [routes]\nprotocol = 220\n\n[log]\nlevel = \"info\"\n",
    );
    // A second snooped interface, for the real fault (deleted and made again).
    let extra = [
        "ip", "link", "add", "snx0", "type", "veth", "peer", "name", "snx1",
    ];
    lab.ac.exec(&extra);
    lab.ac.exec(&["ip", "link", "set", "snx0", "up"]);
    let text = std::fs::read_to_string(&cfg).unwrap();
    let up = format!("interfaces = [\"{}\"]", lab.ac_upstream);
    assert!(text.contains(&up), "{text}");
    let two = format!("interfaces = [\"{}\", \"snx0\"]", lab.ac_upstream);
    std::fs::write(&cfg, text.replace(&up, &two)).unwrap();
    let faults = lab.dir().join("faults");
    std::fs::create_dir_all(&faults).unwrap();
    let mut agent = support::agent::start_agent_env(
        &lab,
        &cfg,
        "lqagent-restart.log",
        &[("LQAGENT_TEST_FAULT_DIR", &faults.to_string_lossy())],
    );
    assert_eq!(restarts(&lab, "routes"), 0.0);
    assert_eq!(restarts(&lab, "capture"), 0.0);
    lab.clients[0].start_dhclient();
    wait_for("client 0 to bind", Duration::from_secs(30), || {
        lab.clients[0].lease().is_some()
    });
    let want = client_routes(&lab, 0);
    wait_for("client 0's routes", Duration::from_secs(10), || {
        proto_routes(&lab.ac, "220") == want
    });

    let stop = AtomicBool::new(false);
    let (samples, missed) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let t = Instant::now();
            let (mut samples, mut missed) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let now = proto_routes(&lab.ac, "220");
                samples += 1;
                if !now.is_superset(&want) {
                    missed.push((t.elapsed(), now));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (samples, missed)
        });
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        // Both tasks fail now.
        std::fs::write(faults.join("routes"), b"").unwrap();
        std::fs::write(faults.join("capture"), b"").unwrap();
        wait_for("both restarts counted", Duration::from_secs(20), || {
            restarts(&lab, "routes") >= 1.0 && restarts(&lab, "capture") >= 1.0
        });
        assert!(agent.running(), "the process stays up");
        // A real fault: the other snooped interface is deleted and made again.
        lab.ac.exec(&["ip", "link", "del", "snx0"]);
        lab.ac.exec(&extra);
        lab.ac.exec(&["ip", "link", "set", "snx0", "up"]);
        wait_for(
            "the capture socket reopened",
            Duration::from_secs(20),
            || restarts(&lab, "capture") >= 2.0,
        );
        // After the restarts: a new binding is snooped and routed.
        lab.clients[1].start_dhclient();
        wait_for("client 1 to bind", Duration::from_secs(30), || {
            lab.clients[1].lease().is_some()
        });
        let both: BTreeSet<Route> = want.union(&client_routes(&lab, 1)).cloned().collect();
        wait_for("client 1's routes", Duration::from_secs(10), || {
            proto_routes(&lab.ac, "220") == both
        });
        drop(_stop);
        sampler.join().unwrap()
    });
    assert!(
        missed.is_empty(),
        "routes missing in {} of {samples} samples: {missed:?}",
        missed.len()
    );
    assert!(samples > 10, "{samples} samples");
    assert!(agent.running());
    assert_eq!(restarts(&lab, "routes"), 1.0, "one failure, one restart");
    assert_eq!(
        restarts(&lab, "capture"),
        2.0,
        "one panic restarted, one socket reopened"
    );
    let log = std::fs::read_to_string(lab.dir().join("lqagent-restart.log")).unwrap();
    for task in ["task=\"routes\"", "task=\"capture\""] {
        assert!(
            log.lines().any(|l| l.contains("task failed; restarting it")
                && l.contains(task)
                && l.contains("panicked")),
            "the failure of {task} is logged with its cause:\n{log}"
        );
    }
}
