//! `lqagent run` (the built binary) against reference servers that behave like deployed ones
//! (tests/support/src/refserver/ profiles), as root in the recovery lab's namespaces (tests/support/src/recovery.rs):
//!
//! - Kea 3 sends one CLIENT_DATA per lease in bulk: recovery restores every route exactly as
//!   snooping would have them (prefixes via the client's link-local peer-address), and the end of
//!   a later query by link-address removes what that server no longer lists — and only that.
//! - The server reply sequence number: two instances of one server (same DUID) answer for the same
//!   client with different next hops; the one with the older sequence number answers last. With
//!   `[leasequery] srsn_option` the newer number decides the kernel's route; without it, arrival
//!   order does (the control run).
//!
//! - ISC dhcpd 4.4 answers a query by address with that lease only: a client whose /128 was
//!   cleared sends again, the on-demand query brings the /128 back, and its delegated prefix —
//!   which that answer does not mention — keeps its route.
//!
//! - Unnumbered subscriber VLANs: two `[[links]]` share one link-address and are told apart by
//!   the relay's Interface-Id. One bulk query by that link-address lists both VLANs' clients;
//!   each route goes on the interface its Interface-Id names, and a client whose Interface-Id
//!   names no configured link is refused (`unknown_link`).
//!
//! Routes are read from the kernel with `ip -j`, never from the agent's bookkeeping.

use support::recovery as recovery_support;
use support::refserver;

use std::collections::BTreeSet;
use std::net::Ipv6Addr;
use std::path::Path;
use std::time::Duration;

use recovery_support::{
    Lab, Route, expected_routes, ifname, kernel_routes, link, links_config, subscriber_prefixes,
    table,
};
use refserver::{
    FaultPlan, Faults, HexBytes, LeaseEntry, LeaseTable, PrefixLease, Profile, ServerConfig,
};
use support::isc::{Daemon, wait_for};
use support::netns::require_root;
use support::scrape::scrape_in;

/// An `lqagent.toml` for the lab: bulk recovery by link-address, no trigger, every lab link,
/// `servers` as (name, address) pairs, `extra` appended (e.g. a `[leasequery]` table).
fn agent_config(dir: &Path, lab: &Lab, servers: &[(&str, Ipv6Addr)], extra: &str) -> String {
    let mut cfg = base_config(dir, servers, extra);
    cfg.push_str(&links_config(lab.links));
    cfg
}

/// [`agent_config`] without its `[[links]]`.
fn base_config(dir: &Path, servers: &[(&str, Ipv6Addr)], extra: &str) -> String {
    let mut cfg = format!(
        "state_dir = \"{}\"\n{extra}\n[bulk]\nenabled = true\nqueries = [\"link-address\"]\n\
         attempts = 2\nconnect_timeout_secs = 1\n\n[trigger]\nenabled = false\n\n\
         [control]\nsocket = \"{}\"\n",
        dir.join("state").display(),
        dir.join("control.sock").display(),
    );
    for (name, addr) in servers {
        cfg.push_str(&format!(
            "\n[[servers]]\nname = \"{name}\"\naddress = \"{addr}\"\n"
        ));
    }
    cfg
}

/// The lab's server addresses with the names the agent gives them.
fn named<'a>(lab: &Lab, names: &[&'a str]) -> Vec<(&'a str, Ipv6Addr)> {
    names
        .iter()
        .zip(&lab.servers)
        .map(|(n, s)| match s.ip() {
            std::net::IpAddr::V6(v) => (*n, v),
            std::net::IpAddr::V4(v) => (*n, v.to_ipv6_mapped()),
        })
        .collect()
}

/// Start `lqagent run` with `cfg`, wait for READY=1 (the state loaded, the kernel reconciled,
/// the listeners up), then until bulk recovery has finished with every server
/// (`lqagent_recovery_in_progress` 0).
fn start(lab: &Lab, dir: &Path, cfg: &str, tag: &str) -> Daemon {
    let path = dir.join(format!("{tag}.toml"));
    std::fs::write(&path, cfg).unwrap();
    let notify_path = dir.join(format!("{tag}.notify"));
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let log = dir.join(format!("{tag}.log"));
    let mut agent = Daemon::spawn_env(
        &lab.agent,
        "lqagent",
        &[
            env!("CARGO_BIN_EXE_lqagent"),
            "run",
            "--config",
            &path.to_string_lossy(),
        ],
        &log,
        &[("NOTIFY_SOCKET", &notify_path.to_string_lossy())],
    );
    // Wait for READY=1 (other notifications, and interrupted reads, are skipped), at most 20 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    while got != b"READY=1" && std::time::Instant::now() < deadline && agent.running() {
        if let Ok(n) = notify.recv(&mut buf) {
            got = buf[..n].to_vec();
        }
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(agent.running(), "{text}");
    assert_eq!(got, b"READY=1", "{text}");
    wait_for("recovery to finish", Duration::from_secs(20), || {
        assert!(agent.running());
        scrape_in(&lab.agent).value("lqagent_recovery_in_progress", &[]) == Some(0.0)
    });
    agent
}

fn metric(lab: &Lab, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape_in(&lab.agent).value_or_zero(name, labels)
}

fn completed(lab: &Lab) -> f64 {
    metric(
        lab,
        "lqagent_bulk_events_total",
        &[("event", "queries_completed")],
    )
}

fn stop(mut agent: Daemon) {
    agent.signal("TERM");
    let st = agent.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(st.success());
}

#[test]
fn kea_one_client_data_per_lease_recovers_every_route_and_link_up_sweeps_only_that_server() {
    if !require_root("kea_one_client_data_per_lease_recovers_every_route") {
        return;
    }
    let links = 2;
    // 300 clients: n % 3 == 2 hold an address and a /56 (sent by Kea in separate DATA messages).
    let t = table(0..300, links);
    let want = expected_routes([&t]);
    let mut kea = ServerConfig::profiled(Profile::Kea, 1);
    // Kea answers only listed requesters: the agent's address.
    kea.requesters = Some(vec!["2001:db8:ff::1".parse().unwrap()]);
    // A second, ideal server holding one extra client of link 1 (its own, disjoint data).
    let mut extra = LeaseEntry::new(vec![0, 2, 0, 0, 0x11, 0x8b, 0xff, 0, 0, 1], link(1));
    extra.prefixes.push(PrefixLease {
        prefix: "2001:db8:87f0::/56".parse().unwrap(),
        preferred: 3000,
        valid: 6000,
    });
    extra.clt_time = 3;
    extra.peer_address = Some("fe80::7f".parse().unwrap());
    let mut t2 = LeaseTable::from_entries([extra]);
    for l in 1..=links {
        t2.add_link(link(l));
    }
    let mut want_all = want.clone();
    want_all.extend(expected_routes([&t2]));
    let lab = Lab::with_servers(
        "kea",
        links,
        vec![
            (t.clone(), kea),
            (t2, ServerConfig::profiled(Profile::Ideal, 2)),
        ],
        Vec::new(),
    );
    let dir = tempfile::tempdir().unwrap();
    let servers = named(&lab, &["kea", "other"]);
    let agent = start(
        &lab,
        dir.path(),
        &agent_config(dir.path(), &lab, &servers, ""),
        "kea",
    );
    wait_for(
        "both servers' link queries",
        Duration::from_secs(20),
        || completed(&lab) >= 2.0 * f64::from(links),
    );
    wait_for(
        "every recovered route, as snooping has them",
        Duration::from_secs(10),
        || kernel_routes(&lab.agent) == want_all,
    );
    let with_both = want.iter().filter(|r| r.0.ends_with("/56")).count();
    eprintln!(
        "kea profile: {} routes ({} prefixes via their link-local next hop) from {} DATA messages",
        want_all.len(),
        with_both,
        lab.refservers[0].stats().tcp_data_sent
    );
    assert!(
        lab.refservers[0].stats().tcp_data_sent as usize > t.len(),
        "one CLIENT_DATA per lease: more DATA messages than clients"
    );
    // The Kea server no longer holds client 2 (an address and a prefix on link 1) nor client 5
    // (the same on link 2): the queries when sub1 comes up again remove client 2's routes — not
    // client 5's (another link, not asked), not the other server's client on sub1.
    let gone = [2u32, 5];
    let mut t_after = LeaseTable::from_entries(
        (0..300u32)
            .filter(|n| !gone.contains(n))
            .map(|n| recovery_support::client(n, links)),
    );
    for l in 1..=links {
        t_after.add_link(link(l));
    }
    lab.refservers[0].set_table(t_after);
    let removed: BTreeSet<Route> =
        expected_routes([&LeaseTable::from_entries([recovery_support::client(
            2, links,
        )])]);
    assert_eq!(removed.len(), 2, "client 2 holds an address and a prefix");
    let mut want_after = want_all.clone();
    want_after.retain(|r| !removed.contains(r));
    let before = completed(&lab);
    lab.agent.exec(&["ip", "link", "set", &ifname(1), "down"]);
    wait_for(
        "the kernel to drop sub1's routes",
        Duration::from_secs(5),
        || kernel_routes(&lab.agent) != want_all,
    );
    lab.agent.exec(&["ip", "link", "set", &ifname(1), "up"]);
    wait_for("the link-up queries", Duration::from_secs(10), || {
        completed(&lab) >= before + 2.0
    });
    wait_for(
        "client 2's routes gone, every other route back",
        Duration::from_secs(10),
        || kernel_routes(&lab.agent) == want_after,
    );
    let swept = metric(
        &lab,
        "lqagent_cache_merges_total",
        &[("verdict", "removed_omitted")],
    );
    assert_eq!(swept, 2.0, "exactly client 2's two leases swept");
    stop(agent);
}

/// A client on link 1 with one /56 routed via `peer`.
fn srsn_table(peer: &str) -> LeaseTable {
    let mut e = LeaseEntry::new(vec![0, 2, 0, 0, 0x11, 0x8b, 0, 0, 0, 9], link(1));
    e.prefixes.push(PrefixLease {
        prefix: "2001:db8:8790::/56".parse().unwrap(),
        preferred: 3000,
        valid: 6000,
    });
    e.clt_time = 5;
    e.peer_address = Some(peer.parse().unwrap());
    let mut t = LeaseTable::from_entries([e]);
    t.add_link(link(1));
    t
}

#[test]
fn newer_sequence_number_wins_over_a_late_older_answer_in_the_kernel() {
    if !require_root("newer_sequence_number_wins_over_a_late_older_answer_in_the_kernel") {
        return;
    }
    const CODE: u16 = 65001;
    // Two instances of ONE server (same DUID): A's counter is at 1000 (fresh), B's at 0 (stale)
    // and B answers 1.5 s late, with the same CLT_TIME — so without sequence numbers B, arriving
    // last, looks newest (merge rule R6).
    let same = |start: u32| ServerConfig {
        srsn_option: Some(CODE),
        srsn_start: start,
        ..ServerConfig::profiled(Profile::Ideal, 0)
    };
    let late = FaultPlan::always(Faults {
        delay_ms: 1500,
        ..Faults::default()
    });
    let lab = Lab::with_servers(
        "srsn",
        1,
        vec![
            (srsn_table("fe80::a"), same(1000)),
            (srsn_table("fe80::b"), same(0)),
        ],
        vec![FaultPlan::default(), late],
    );
    let servers = named(&lab, &["a", "b"]);
    let route_via = |hop: &str| -> BTreeSet<Route> {
        [(
            "2001:db8:8790::/56".to_string(),
            Some(hop.to_string()),
            ifname(1),
        )]
        .into()
    };
    let proto = lqagent::kernel::DEFAULT_PROTOCOL.to_string();
    for (srsn_on, hop) in [(true, "fe80::a"), (false, "fe80::b")] {
        let dir = tempfile::tempdir().unwrap();
        let extra = if srsn_on {
            format!("[leasequery]\nsrsn_option = {CODE}\n")
        } else {
            String::new()
        };
        let tag = if srsn_on { "srsn-on" } else { "srsn-off" };
        let agent = start(
            &lab,
            dir.path(),
            &agent_config(dir.path(), &lab, &servers, &extra),
            tag,
        );
        wait_for("both answers in", Duration::from_secs(20), || {
            completed(&lab) >= 2.0
        });
        let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(
                &format!("the route via {hop} (srsn {srsn_on})"),
                Duration::from_secs(5),
                || kernel_routes(&lab.agent) == route_via(hop),
            )
        }));
        if waited.is_err() {
            panic!(
                "route via {hop} expected (srsn {srsn_on}), kernel has {:?}; merges {:?}; log:\n{}",
                kernel_routes(&lab.agent),
                scrape_in(&lab.agent)
                    .samples
                    .iter()
                    .filter(|(n, _, _)| n.starts_with("lqagent_cache_merges"))
                    .collect::<Vec<_>>(),
                std::fs::read_to_string(dir.path().join(format!("{tag}.log"))).unwrap_or_default()
            );
        }
        let lost = metric(
            &lab,
            "lqagent_cache_merges_total",
            &[("verdict", "lost_to_newer_srsn")],
        );
        assert_eq!(lost, if srsn_on { 1.0 } else { 0.0 }, "srsn {srsn_on}");
        stop(agent);
        lab.agent
            .exec(&["ip", "-6", "route", "flush", "proto", &proto]);
    }
}

#[test]
fn isc_answer_by_address_brings_the_address_back_and_keeps_the_prefix_route() {
    if !require_root("isc_answer_by_address_brings_the_address_back_and_keeps_the_prefix_route") {
        return;
    }
    use lqagent::cache::{
        AgentClock, BindingStore, IaType, LeaseKey, Link, Observation, ObservedLease, RelayData,
        ServerId, Source,
    };
    let addr: Ipv6Addr = "2001:db8:1::c".parse().unwrap();
    let prefix: lqagent::prefix::Ipv6Prefix = "2001:db8:c00::/56".parse().unwrap();
    let client_duid = vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 0x0c];
    let mut e = LeaseEntry::new(client_duid.clone(), link(1));
    e.addrs.push(refserver::AddrLease {
        addr,
        preferred: 3000,
        valid: 6000,
    });
    e.prefixes.push(PrefixLease {
        prefix,
        preferred: 3000,
        valid: 6000,
    });
    e.clt_time = 20;
    e.peer_address = Some("fe80::c".parse().unwrap());
    let mut t = LeaseTable::from_entries([e]);
    t.add_link(link(1));
    let isc = ServerConfig::profiled(Profile::Isc, 3);
    let isc_duid = isc.server_duid.clone();
    let lab = Lab::with_servers("isc", 1, vec![(t, isc)], Vec::new());
    let server = named(&lab, &["dhcpd"]);
    // What snooping learnt before the restart, from this server: the /128 and the /56 via the
    // client's link-local address — left in the state file.
    let dir = tempfile::tempdir().unwrap();
    let store = BindingStore::default();
    let lease = |key, ia| ObservedLease {
        key,
        ia,
        iaid: 1,
        preferred: 3000,
        valid: 6000,
    };
    store.apply(&Observation {
        client_duid: client_duid.into(),
        link: Link {
            address: link(1),
            interface: None,
        },
        relay: Some(RelayData {
            peer_address: Some("fe80::c".parse().unwrap()),
            ..RelayData::default()
        }),
        server: std::sync::Arc::new(ServerId {
            duid: isc_duid.into(),
            address: server[0].1,
        }),
        source: Source::Snoop,
        clt_time: None,
        base_time: None,
        srsn: None,
        complete: false,
        query_address: None,
        leases: vec![
            lease(LeaseKey::Address(addr), IaType::Na),
            lease(LeaseKey::Prefix(prefix), IaType::Pd),
        ],
        arrival: AgentClock::new().now(),
    });
    recovery_support::save_state(&store, &dir.path().join("state"));
    // The client's own namespace behind sub1, with the lease's address, routed via the agent.
    let client = support::netns::NetNs::new("iscc");
    lab.agent
        .exec(&["ip", "link", "set", "sub1p", "netns", client.name()]);
    client.exec(&["ip", "link", "set", "sub1p", "up"]);
    client.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:1::c/64",
        "dev",
        "sub1p",
        "nodad",
    ]);
    client.exec(&[
        "ip",
        "-6",
        "route",
        "add",
        "default",
        "via",
        "2001:db8:1::1",
    ]);
    lab.agent
        .exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    let mut cfg = format!(
        "state_dir = \"{}\"\n[bulk]\nenabled = false\n\n[control]\nsocket = \"{}\"\n\n\
         [[servers]]\nname = \"dhcpd\"\naddress = \"{}\"\n",
        dir.path().join("state").display(),
        dir.path().join("control.sock").display(),
        server[0].1,
    );
    cfg.push_str(&format!(
        "\n[[links]]\nname = \"l1\"\ninterface = \"{}\"\nlink_address = \"{}\"\n\
         subscriber_prefixes = [\"2001:db8:1::/64\", \"2001:db8:c00::/40\"]\n",
        ifname(1),
        link(1)
    ));
    let agent = start(&lab, dir.path(), &cfg, "isc");
    let both: BTreeSet<Route> = [
        ("2001:db8:1::c/128".to_string(), None, ifname(1)),
        (prefix.to_string(), Some("fe80::c".to_string()), ifname(1)),
    ]
    .into();
    wait_for("the state file's routes", Duration::from_secs(10), || {
        kernel_routes(&lab.agent) == both
    });
    // The operator clears the /128 (no tombstone: fresh data may bring it back).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lqagent"))
        .args(["clear", "binding", "2001:db8:1::c", "--socket"])
        .arg(dir.path().join("control.sock"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_for("the /128 route gone", Duration::from_secs(5), || {
        kernel_routes(&lab.agent).len() == 1
    });
    // The client sends: the trigger sees an unknown source, the agent asks dhcpd by address,
    // dhcpd answers with that address only (absolute CLT_TIME, to port 546).
    wait_for(
        "the /128 back after the client sent",
        Duration::from_secs(15),
        || {
            let _ = client.try_exec(&["ping", "-6", "-n", "-c", "1", "-W", "1", "2001:db8:ff::2"]);
            kernel_routes(&lab.agent) == both
        },
    );
    assert!(lab.refservers[0].stats().udp_queries >= 1);
    let bound = metric(&lab, "lqagent_on_demand_total", &[("event", "bound")]);
    assert!(bound >= 1.0, "on-demand bound: {bound}");
    assert_eq!(
        metric(
            &lab,
            "lqagent_cache_merges_total",
            &[("verdict", "removed_omitted")]
        ),
        0.0,
        "the prefix the answer did not mention was not removed"
    );
    // And it stays so (the answer is merged by the time the /128 route is back; look again).
    assert_eq!(kernel_routes(&lab.agent), both);
    stop(agent);
}

/// The state file's leases as snooping would have recorded them for `entry`, from `server`.
fn snooped_state(
    store: &lqagent::cache::BindingStore,
    e: &LeaseEntry,
    server_duid: &[u8],
    server: Ipv6Addr,
) {
    use lqagent::cache::{
        AgentClock, IaType, LeaseKey, Link, Observation, ObservedLease, RelayData, ServerId, Source,
    };
    let mut leases: Vec<ObservedLease> = e
        .addrs
        .iter()
        .map(|a| ObservedLease {
            key: LeaseKey::Address(a.addr),
            ia: IaType::Na,
            iaid: 1,
            preferred: a.preferred,
            valid: a.valid,
        })
        .collect();
    leases.extend(e.prefixes.iter().map(|p| ObservedLease {
        key: LeaseKey::Prefix(p.prefix),
        ia: IaType::Pd,
        iaid: 2,
        preferred: p.preferred,
        valid: p.valid,
    }));
    store.apply(&Observation {
        client_duid: e.duid.0.clone().into(),
        link: Link {
            address: e.link,
            interface: None,
        },
        relay: Some(RelayData {
            peer_address: e.peer_address,
            ..RelayData::default()
        }),
        server: std::sync::Arc::new(ServerId {
            duid: server_duid.into(),
            address: server,
        }),
        source: Source::Snoop,
        clt_time: None,
        base_time: None,
        srsn: None,
        complete: false,
        query_address: None,
        leases,
        arrival: AgentClock::new().now(),
    });
}

#[test]
fn restart_recovery_drops_state_file_leases_the_server_no_longer_lists() {
    if !require_root("restart_recovery_drops_state_file_leases_the_server_no_longer_lists") {
        return;
    }
    let t = table(0..30, 1);
    let want = expected_routes([&t]);
    let cfg = ServerConfig::profiled(Profile::Kea, 4);
    let duid = cfg.server_duid.clone();
    let lab = Lab::with_servers("stale", 1, vec![(t, cfg)], Vec::new());
    let servers = named(&lab, &["kea"]);
    // Before the restart the cache held client 1000 from this server (released while we were
    // down) and client 1001 from a server that is not asked now: both in the state file.
    let dir = tempfile::tempdir().unwrap();
    let store = lqagent::cache::BindingStore::default();
    let gone = recovery_support::client(1000, 1);
    let other = recovery_support::client(1001, 1);
    snooped_state(&store, &gone, &duid, servers[0].1);
    snooped_state(
        &store,
        &other,
        &[0, 3, 0, 1, 2, 0, 0, 0, 9, 9],
        "2001:db8:ff::99".parse().unwrap(),
    );
    for e in 0..30 {
        snooped_state(&store, &recovery_support::client(e, 1), &duid, servers[0].1);
    }
    recovery_support::save_state(&store, &dir.path().join("state"));
    let mut want_after = want.clone();
    want_after.extend(expected_routes([&LeaseTable::from_entries([other])]));
    let agent = start(
        &lab,
        dir.path(),
        &agent_config(dir.path(), &lab, &servers, ""),
        "stale",
    );
    wait_for(
        "the listed routes and the other server's, not the released client's",
        Duration::from_secs(10),
        || kernel_routes(&lab.agent) == want_after,
    );
    assert_eq!(
        metric(
            &lab,
            "lqagent_cache_merges_total",
            &[("verdict", "removed_omitted")]
        ),
        expected_routes([&LeaseTable::from_entries([gone])]).len() as f64,
        "exactly the released client's leases swept"
    );
    stop(agent);
}

#[test]
fn links_sharing_a_link_address_route_by_interface_id() {
    if !require_root("links_sharing_a_link_address_route_by_interface_id") {
        return;
    }
    // 60 clients laid out over sub1 and sub2 (each VLAN its own /64 and delegated-prefix space,
    // the Interface-Id naming the VLAN's interface) — but the relay is unnumbered on the VLANs:
    // every client's relay data carries link(1). The routes each VLAN's clients call for are
    // `expected_routes` of that layout (on sub1 or sub2).
    let vlans = 2;
    let by_vlan = table(0..60, vlans);
    let want = expected_routes([&by_vlan]);
    let on = |dev: &str| want.iter().filter(|r| r.2 == dev).count();
    assert!(on("sub1") > 0 && on("sub2") > 0, "both VLANs hold clients");
    // One more client on link(1) whose Interface-Id names a VLAN the agent does not serve; its
    // /56 lies in sub1's space, so only the Interface-Id can keep it out.
    let mut stray = recovery_support::client(1000, 1);
    stray.interface_id = Some(HexBytes(b"sub3".to_vec()));
    assert_eq!(stray.prefixes.len(), 1);
    let stray_prefix = stray.prefixes[0].prefix.to_string();
    let mut shared = LeaseTable::from_entries(
        by_vlan
            .entries()
            .iter()
            .cloned()
            .map(|mut e| {
                e.link = link(1);
                e
            })
            .chain([stray]),
    );
    shared.add_link(link(1));
    let lab = Lab::with_servers(
        "vlan",
        vlans,
        vec![(shared, ServerConfig::profiled(Profile::Ideal, 5))],
        Vec::new(),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = base_config(dir.path(), &named(&lab, &["dhcp"]), "");
    for l in 1..=vlans {
        cfg.push_str(&format!(
            "\n[[links]]\nname = \"vlan{l}\"\ninterface = \"{dev}\"\nlink_address = \"{}\"\n\
             interface_id = \"{dev}\"\nsubscriber_prefixes = {}\n",
            link(1),
            subscriber_prefixes(l),
            dev = ifname(l),
        ));
    }
    let agent = start(&lab, dir.path(), &cfg, "vlan");
    wait_for("the link-address query", Duration::from_secs(20), || {
        completed(&lab) >= 1.0
    });
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(
            "every VLAN client's routes on its VLAN",
            Duration::from_secs(10),
            || kernel_routes(&lab.agent) == want,
        )
    }));
    let got = kernel_routes(&lab.agent);
    if waited.is_err() {
        panic!(
            "kernel routes differ: missing {:?}, unexpected {:?}; log:\n{}",
            want.difference(&got).collect::<Vec<_>>(),
            got.difference(&want).collect::<Vec<_>>(),
            std::fs::read_to_string(dir.path().join("vlan.log")).unwrap_or_default()
        );
    }
    // Each client on the interface its Interface-Id names, and on no other.
    for e in by_vlan.entries() {
        let named = String::from_utf8(e.interface_id.clone().unwrap().0).unwrap();
        let mine: Vec<_> = got
            .iter()
            .filter(|r| {
                e.addrs.iter().any(|a| r.0 == format!("{}/128", a.addr))
                    || e.prefixes.iter().any(|p| r.0 == p.prefix.to_string())
            })
            .collect();
        assert_eq!(
            mine.len(),
            e.addrs.len() + e.prefixes.len(),
            "{named}: {mine:?}"
        );
        assert!(mine.iter().all(|r| r.2 == named), "{named}: {mine:?}");
    }
    assert!(
        !got.iter().any(|r| r.0 == stray_prefix),
        "the unknown VLAN's client is not routed: {got:?}"
    );
    // Both links share one link-address: one query, one answer listing all 61 clients.
    assert_eq!(
        completed(&lab),
        1.0,
        "one query for the shared link-address"
    );
    assert_eq!(lab.refservers[0].stats().tcp_queries, 1);
    assert_eq!(
        metric(
            &lab,
            "lqagent_admission_rejected_total",
            &[("source", "bulk"), ("reason", "unknown_link")]
        ),
        1.0,
        "the client of the unknown VLAN refused"
    );
    stop(agent);
}
