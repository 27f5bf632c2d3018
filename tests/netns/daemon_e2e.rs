//! `lqagent run` end to end: the built binary in the access-concentrator namespace of a real ISC
//! topology (dhcpd -6, dhcrelay -6, dhclient -6 -N -P; tests/support/src/isc.rs), with a config the
//! test writes. What the kernel holds is read with `ip -6 -j route show proto N`, never from the
//! agent's own bookkeeping.
//!
//! - `clients_bind_release_expire_and_survive_a_restart`: issue 6 scenarios (1) three clients
//!   bind → their /128 and delegated-prefix routes appear (next hop = the client's link-local
//!   address, protocol from the config); (3) a released client's routes go, and a client left
//!   to expire (short lifetimes) loses its routes at the end of the valid lifetime; (4) /metrics
//!   scraped and parsed agrees with that; sd_notify READY=1 at start; SIGHUP applies the live
//!   keys, names the restart-only ones and survives a bad file; then SIGTERM (STOPPING=1) leaves
//!   the routes and writes the state, and a restart from the state file alone (routes flushed,
//!   no client traffic) puts them back.
//! - `on_demand_lookup_fills_the_cache_from_dhcpd`: the on-demand path (an unknown source → a
//!   leasequery by address with the link's link-address → the cache) against the real dhcpd.

use std::collections::BTreeSet;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::agent::{client_routes, start_agent, start_agent_env, write_config};
use support::isc::{IscLab, Lifetimes, wait_for};
use support::netns::{NetNs, Route, proto_routes};
use support::scrape::scrape_in;

const PROTO: &str = "213";

fn routes(ns: &NetNs) -> BTreeSet<Route> {
    proto_routes(ns, PROTO)
}

fn config(lab: &IscLab) -> PathBuf {
    write_config(
        lab,
        &format!(
            "[bulk]\nenabled = false\n\n[trigger]\nenabled = false\n\n\
             [routes]\nprotocol = {PROTO}\nreconcile_interval_secs = 5\n\n\
             [log]\nlevel = \"info\"\n"
        ),
    )
}

fn show_bindings(lab: &IscLab) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lqagent"))
        .args(["show", "bindings", "--json", "--socket"])
        .arg(lab.dir().join("control.sock"))
        .output()
        .unwrap();
    assert!(out.status.success(), "show bindings: {out:?}");
    serde_json::from_slice(&out.stdout).expect("JSON bindings")
}

#[test]
fn clients_bind_release_expire_and_survive_a_restart() {
    let t0 = Instant::now();
    let life = Lifetimes {
        valid: 14,
        preferred: 8,
    };
    let test = "clients_bind_release_expire_and_survive_a_restart";
    let Some(mut lab) = IscLab::without_clients(test, 3, life) else {
        return;
    };
    let cfg = config(&lab);
    // systemd's side of sd_notify: a datagram socket named by NOTIFY_SOCKET.
    let notify_path = lab.dir().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let next_notice = || {
        let mut buf = [0u8; 256];
        let n = notify.recv(&mut buf).expect("an sd_notify datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut agent = start_agent_env(
        &lab,
        &cfg,
        "lqagent.log",
        &[("NOTIFY_SOCKET", &notify_path.to_string_lossy())],
    );
    assert_eq!(
        next_notice(),
        "READY=1",
        "readiness at once without bulk recovery"
    );
    let log_path = lab.dir().join("lqagent.log");
    let agent_log = move || std::fs::read_to_string(&log_path).unwrap_or_default();

    // (1) Three clients bind through the relay: their routes appear in the kernel.
    lab.start_clients();
    let want: BTreeSet<Route> = (0..3).flat_map(|i| client_routes(&lab, i)).collect();
    assert_eq!(want.len(), 6);
    wait_for("every client's routes", Duration::from_secs(10), || {
        routes(&lab.ac) == want
    });
    eprintln!("(1) 3 clients bound, 6 routes at {:?}", t0.elapsed());
    let b = show_bindings(&lab);
    assert_eq!(b.as_array().map(Vec::len), Some(6), "{b}");
    assert!(
        b.as_array()
            .unwrap()
            .iter()
            .all(|v| v["route"] == "installed" && v["source"] == "snoop"),
        "{b}"
    );

    // (3a) A client releases: its routes go, the others stay.
    let released = client_routes(&lab, 0);
    lab.clients[0].release();
    let rest: BTreeSet<Route> = want.difference(&released).cloned().collect();
    wait_for(
        "the released client's routes to go",
        Duration::from_secs(5),
        || routes(&lab.ac) == rest,
    );
    eprintln!("(3) release withdrew 2 routes at {:?}", t0.elapsed());

    // (3b) A client stops without releasing: its lease runs out (valid 14 s) and its routes go
    // — at the end of the valid lifetime of its last transaction, not at the preferred one (8 s).
    let expiring = client_routes(&lab, 1);
    let stopped = Instant::now();
    lab.clients[1].stop();
    let starts = last_starts(&std::fs::read_to_string(lab.clients[1].lease_file()).unwrap());
    let last: BTreeSet<Route> = rest.difference(&expiring).cloned().collect();
    wait_for(
        "the lapsed client's routes to go",
        Duration::from_secs(20),
        || routes(&lab.ac) == last,
    );
    let lapsed_after = stopped.elapsed();
    // dhclient's `starts` is whole seconds and the agent saw the REPLY a moment before dhclient
    // wrote it down: one second of slack, far below the 6 s between preferred and valid.
    let gone_at = unix_now();
    assert!(
        gone_at + 1 >= starts + u64::from(life.valid),
        "withdrawn at {gone_at}, before the valid lifetime of the last transaction \
         (starts {starts} + {} s)",
        life.valid
    );
    eprintln!(
        "(3) expiry withdrew 2 routes {lapsed_after:?} after the client stopped, {} s after \
         its last transaction",
        gone_at - starts
    );
    // The remaining client keeps renewing (every ~4 s): its routes stay across renewals. The
    // time passing is the check (nothing may change in it), not a wait for something.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(routes(&lab.ac), last, "renewing client keeps its routes");

    // (4) /metrics agrees with what the kernel saw.
    let m = scrape_in(&lab.ac);
    let installed = m.value_or_zero("lqagent_route_events_total", &[("event", "installed")]);
    let withdrawn = m.value_or_zero("lqagent_route_events_total", &[("event", "withdrawn")]);
    assert!(installed >= 6.0, "routes installed {installed}");
    assert!(withdrawn >= 4.0, "routes withdrawn {withdrawn}");
    assert_eq!(
        m.value("lqagent_routes", &[("state", "installed")]),
        Some(2.0)
    );
    let replies = m.value_or_zero(
        "lqagent_snooped_messages_total",
        &[("message_type", "REPLY")],
    );
    assert!(replies >= 4.0, "snooped REPLYs {replies}");
    let requests = m.value_or_zero(
        "lqagent_snooped_messages_total",
        &[("message_type", "REQUEST")],
    );
    assert!(requests >= 3.0, "snooped REQUESTs {requests}");
    assert!(
        m.value_or_zero(
            "lqagent_snooped_messages_total",
            &[("message_type", "RELEASE")]
        ) >= 1.0
    );
    assert_eq!(
        m.value("lqagent_bindings", &[("link", "link2")]),
        Some(2.0),
        "one address and one prefix on link2"
    );
    assert_eq!(m.value("lqagent_bindings", &[("link", "link0")]), Some(0.0));
    assert!(m.value_or_zero("lqagent_netlink_batch_seconds_count", &[]) >= 1.0);
    assert!(
        installed >= withdrawn + 2.0,
        "installed {installed} = withdrawn {withdrawn} + routes left 2 (+ replaces)"
    );
    eprintln!(
        "(4) metrics: installed {installed}, withdrawn {withdrawn}, REPLY {replies}, at {:?}",
        t0.elapsed()
    );

    // SIGHUP: live keys applied, restart-only keys named, a bad file changes nothing.
    let good = std::fs::read_to_string(&cfg).unwrap();
    let changed = good
        .replace("level = \"info\"", "level = \"debug\"")
        .replace("reconcile_interval_secs = 5", "reconcile_interval_secs = 7")
        .replace(&format!("protocol = {PROTO}"), "protocol = 214");
    std::fs::write(&cfg, changed).unwrap();
    agent.signal("HUP");
    assert_eq!(next_notice(), "RELOADING=1");
    assert_eq!(next_notice(), "READY=1");
    let log = agent_log();
    assert!(
        log.contains("\"log.level\"") && log.contains("applied"),
        "{log}"
    );
    assert!(log.contains("\"routes.reconcile_interval_secs\""), "{log}");
    assert!(
        log.contains("\"routes.protocol\"") && log.contains("takes effect after a restart"),
        "{log}"
    );
    std::fs::write(&cfg, "[routes]\nprotocol = \"two hundred\"\n").unwrap();
    agent.signal("HUP");
    assert_eq!(next_notice(), "RELOADING=1");
    assert_eq!(next_notice(), "READY=1");
    assert!(
        agent_log().contains("configuration refused"),
        "{}",
        agent_log()
    );
    assert!(agent.running(), "a bad file does not stop the agent");
    std::fs::write(&cfg, good).unwrap();
    assert_eq!(routes(&lab.ac), last, "reload left the routes alone");

    // SIGTERM: exit 0, routes left in place, state written.
    agent.signal("TERM");
    assert_eq!(next_notice(), "STOPPING=1");
    let st = agent
        .wait_exit(Duration::from_secs(10))
        .expect("exit within 10 s of SIGTERM");
    assert!(st.success(), "exit status {st:?}\n{}", agent_log());
    assert_eq!(routes(&lab.ac), last, "SIGTERM leaves routes in place");
    assert!(agent_log().contains("state written"), "{}", agent_log());
    let state: Vec<_> = std::fs::read_dir(lab.dir().join("state"))
        .expect("state dir")
        .collect();
    assert!(!state.is_empty(), "state files written");

    // Restart from the state file alone: routes flushed, the last client silent.
    lab.clients[2].stop();
    lab.ac.exec(&["ip", "-6", "route", "flush", "proto", PROTO]);
    assert!(routes(&lab.ac).is_empty());
    let restarted = Instant::now();
    let _agent = start_agent(&lab, &cfg, "lqagent2.log");
    wait_for(
        "routes restored from the state file",
        Duration::from_secs(2),
        || routes(&lab.ac) == last,
    );
    eprintln!(
        "restart: routes back {:?} after start, from the state file",
        restarted.elapsed()
    );
    let b = show_bindings(&lab);
    let b = b.as_array().expect("bindings");
    assert_eq!(b.len(), 2, "{b:?}");
    assert!(b.iter().all(|v| v["route"] == "installed"), "{b:?}");
    eprintln!("whole test {:?}", t0.elapsed());
}

#[test]
fn on_demand_lookup_fills_the_cache_from_dhcpd() {
    use lqagent::cache::{BindingStore, LeaseKey, Source};
    use lqagent::cache_task::{self, CacheTaskConfig};
    use lqagent::daemon::ondemand::{
        self, Looked, Lookup, OnDemandConfig, OnDemandEvent, OnDemandStats,
    };
    use lqagent::requestor::RequestorConfig;
    use lqagent::requestor::udp::{self, UdpConfig};
    use lqagent::time::AgentClock;
    use std::sync::Arc;

    let Some(lab) = IscLab::start("on_demand_lookup_fills_the_cache_from_dhcpd", 1) else {
        return;
    };
    let c = &lab.clients[0];
    let lease = c.lease().unwrap();
    let link_address = c.link_address;
    let interface = c.ac_interface.clone();
    let server = lab.server_address;
    lab.ac.run_in(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let store = Arc::new(BindingStore::default());
            let clock = AgentClock::new();
            // Admission as `lqagent run` builds it for this link: dhcpd's range is inside it.
            let admission = support::tasks::admit_documentation(link_address, &interface);
            let (cache, mut changes, _t) = cache_task::spawn(
                store.clone(),
                clock,
                None,
                CacheTaskConfig::default(),
                admission.clone(),
                support::tasks::no_confirmer(),
                &support::tasks::supervisor(),
            );
            let (requestor, _r) = udp::spawn(
                RequestorConfig {
                    servers: vec![SocketAddr::from((server, 547))],
                    duid: vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 9].into(),
                    ..RequestorConfig::default()
                },
                UdpConfig::default(),
                &support::tasks::supervisor(),
            )
            .await
            .expect("bind [::]:546 in the namespace");
            let lookup = Lookup {
                requestor,
                cache: cache.clone(),
                clock,
                server_names: Arc::new([(server, "dhcpd".to_string())].into()),
                metrics: None,
                relay_data: true,
            };
            let src = ondemand::UnknownSource {
                source: lease.address,
                link_address,
                interface: Some(Arc::from(interface.as_str())),
                seen: None,
            };
            // Directly: the lookup reports what it did.
            let stats = OnDemandStats::default();
            assert_eq!(lookup.resolve(&src, &stats).await, Looked::Bound(1));
            let ch = changes.recv().await.expect("a change for the new binding");
            assert_eq!(ch.key, LeaseKey::Address(lease.address));
            let l = store
                .get(&LeaseKey::Address(lease.address))
                .expect("cached");
            assert_eq!(l.source, Source::Leasequery);
            assert_eq!(l.client.link.address, link_address);
            assert_eq!(l.client.link.interface.as_deref(), Some(interface.as_str()));
            assert_eq!(hex::encode(&l.client.duid[..]), lease.client_duid);
            assert!(l.valid_until > clock.now(), "a live lease");
            // Known now: a second sighting asks nobody.
            assert_eq!(lookup.resolve(&src, &stats).await, Looked::Known);
            // A free address of the range nobody leased: "no binding", nothing cached.
            let free = if lease.address.segments()[7] == 0x1fe {
                0x1fd
            } else {
                0x1fe
            };
            let nobody = ondemand::UnknownSource {
                source: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, free),
                ..src.clone()
            };
            assert_eq!(lookup.resolve(&nobody, &stats).await, Looked::NoBinding);
            assert_eq!(store.len(), 1);

            // Through the task, as the trigger submits: a fresh cache fills up.
            let store2 = Arc::new(BindingStore::default());
            let (cache2, _changes2, _t2) = cache_task::spawn(
                store2.clone(),
                clock,
                None,
                CacheTaskConfig::default(),
                admission,
                support::tasks::no_confirmer(),
                &support::tasks::supervisor(),
            );
            let (od, _task) = ondemand::spawn(
                Lookup {
                    cache: cache2,
                    ..lookup
                },
                &OnDemandConfig::default(),
            );
            assert!(od.try_submit(src));
            let t = tokio::time::Instant::now();
            while !store2.knows(lease.address) {
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "on-demand task filled the cache"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let get = |e: OnDemandEvent| od.stats().get(e);
            assert_eq!(get(OnDemandEvent::Submitted), 1);
            assert_eq!(get(OnDemandEvent::Bound), 1);
            assert_eq!(get(OnDemandEvent::Observations), 1);
        });
    });
}

/// Issue 24: a hung monitoring script must not lock root out. With the real daemon serving two
/// bound clients, 16 control connections that say nothing and 4 that ask and never read are
/// held open (20 > the 16 slots); root's `lqagent show stats` and `lqagent clear` are both
/// answered, the clear withdraws exactly its route, the other routes stay, `/metrics` answers
/// and counts what the control server did, and the stalled peers are closed by their deadlines.
#[test]
fn stalled_control_peers_do_not_lock_root_out() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let test = "stalled_control_peers_do_not_lock_root_out";
    let life = Lifetimes {
        valid: 600,
        preferred: 300,
    };
    let Some(mut lab) = IscLab::without_clients(test, 2, life) else {
        return;
    };
    let cfg = config(&lab);
    let _agent = start_agent(&lab, &cfg, "lqagent.log");
    lab.start_clients();
    let want: BTreeSet<Route> = (0..2).flat_map(|i| client_routes(&lab, i)).collect();
    wait_for("both clients' routes", Duration::from_secs(10), || {
        routes(&lab.ac) == want
    });
    let sock = lab.dir().join("control.sock");

    let silent: Vec<UnixStream> = (0..16)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let deaf: Vec<UnixStream> = (0..4)
        .map(|_| {
            let s = UnixStream::connect(&sock).unwrap();
            s.set_nonblocking(true).unwrap();
            let req = b"{\"command\":\"show_stats\"}\n";
            let t0 = Instant::now();
            let mut quiet_since = None;
            // Ask until the buffers both ways are full (the daemon blocked writing to us).
            while t0.elapsed() < Duration::from_secs(10) {
                match (&s).write(req) {
                    Ok(_) => quiet_since = None,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        let q = *quiet_since.get_or_insert_with(Instant::now);
                        if q.elapsed() > Duration::from_millis(200) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    // Closed by the daemon (refused, or closed to make room): stalled no more.
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                        ) =>
                    {
                        break;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            s
        })
        .collect();

    let lqagent = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lqagent"))
            .args(args)
            .arg("--socket")
            .arg(&sock)
            .output()
            .unwrap()
    };
    let out = lqagent(&["show", "stats", "--json"]);
    assert!(
        out.status.success(),
        "show stats with 20 stalled peers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON stats");
    assert!(stats.to_string().contains("lqagent_routes"), "{stats}");
    let gone = lab.clients[0].lease().expect("bound").address;
    let out = lqagent(&["clear", "binding", &gone.to_string()]);
    assert!(
        out.status.success(),
        "clear with 20 stalled peers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rest: BTreeSet<Route> = want
        .iter()
        .filter(|r| r.0 != format!("{gone}/128"))
        .cloned()
        .collect();
    assert_eq!(rest.len(), 3);
    wait_for("the cleared route to go", Duration::from_secs(5), || {
        routes(&lab.ac) == rest
    });

    let control = |m: &support::scrape::Exposition, event: &str| {
        m.value_or_zero("lqagent_control_events_total", &[("event", event)])
    };
    let m = scrape_in(&lab.ac);
    assert!(control(&m, "evicted") >= 2.0, "root got in by eviction");
    // The stalled peers end at their deadlines (10 s each), counted.
    wait_for(
        "the stalled peers' deadlines",
        Duration::from_secs(40),
        || {
            let m = scrape_in(&lab.ac);
            control(&m, "read_timeout") >= 1.0 && control(&m, "write_timeout") >= 1.0
        },
    );
    assert_eq!(routes(&lab.ac), rest, "nothing else changed");
    drop((silent, deaf));
}

/// The time of a dhclient6 lease file's last transaction: the largest `starts N;` of its last
/// `lease6` block (Unix seconds).
fn last_starts(text: &str) -> u64 {
    let last = text.rsplit("lease6 {").next().expect("a lease6 block");
    last.lines()
        .filter_map(|l| l.trim().strip_prefix("starts "))
        .map(|v| v.trim_end_matches(';').parse::<u64>().expect("starts N;"))
        .max()
        .unwrap_or_else(|| panic!("no starts in {last}"))
}

/// Seconds since 1970 by this machine's clock (dhclient's `starts` is on the same clock).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}
