//! Issue 21, "the link is where this box heard the client", against `lqagent run` beside real
//! ISC dhcrelay and dhcpd (tests/support/src/isc.rs):
//!
//! - `a_subscriber_posing_as_an_ldra_moves_nothing`: a subscriber on link 0 wraps its own
//!   REQUEST in a RELAY-FORW (as an RFC 6221 Lightweight DHCPv6 Relay Agent would) naming link
//!   1's link-address, a next hop and link 1's Interface-Id, and sends it to dhcrelay on its own
//!   link; dhcrelay relays it and dhcpd answers from link 1. Once with a stranger's DUID (dhcpd
//!   leases it a prefix of link 1's pool), once with the neighbour's DUID and IAIDs (dhcpd
//!   renews the neighbour's own prefix, towards the attacker's next hop). Every subscriber's
//!   routes are the same after as before, nothing points at the named next hop, and the refusal
//!   is counted (`lqagent_admission_rejected_total{source="snoop",reason="nested_relay"}`).
//! - `clients_behind_a_genuine_ldra_are_routed_on_their_own_interface`: two access nodes, each a
//!   small LDRA (tests/support/src/ldra.rs) in front of one of this box's interfaces, both
//!   interfaces sharing one link-address (dhcrelay -I tells them apart by the Interface-Id it
//!   adds); a real dhclient behind each. Both links are configured `ldra = true` with their
//!   `interface_id`; each client's prefix is routed on its own interface via its own
//!   link-local address (the LDRA level's peer-address), and `lqagent show bindings` shows its
//!   access port.

use std::collections::BTreeSet;
use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lqagent::wire::{ClientMessage, DhcpOption, Duid, Ia, Message, MessageType, RelayMessage};
use support::agent::{client_routes, start_agent, write_config};
use support::isc::{IscLab, Lifetimes};
use support::netns::{NetNs, Route, proto_routes};
use support::scrape::scrape_in;

const PROTO: &str = "211";
const REJECTED: &str = "lqagent_admission_rejected_total";

fn routes(ns: &NetNs) -> BTreeSet<Route> {
    proto_routes(ns, PROTO)
}

fn nested_relay(lab: &IscLab) -> f64 {
    scrape_in(&lab.ac).value_or_zero(REJECTED, &[("source", "snoop"), ("reason", "nested_relay")])
}

/// Wait up to `timeout` for `f`; on timeout, panic naming `what` with the routes and logs.
fn wait(lab: &IscLab, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        if t0.elapsed() >= timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}\nroutes: {:?}\n{}\n{}",
                routes(&lab.ac),
                lab.log("lqagent"),
                lab.log("dhcpd")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A value in a dhclient lease file: colon hex, or a quoted string when every octet is printable.
fn colon_hex(v: &str) -> Vec<u8> {
    support::isc::lease_file_octets(v)
}

/// From a dhclient6 lease file: the IA_NA and IA_PD IAIDs and the server's DUID.
fn lease_ids(text: &str) -> (u32, u32, Vec<u8>) {
    let last = text.rsplit("lease6 {").next().expect("a lease6 block");
    let iaid = |key: &str| {
        let v = last
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {text}"));
        let b = colon_hex(v.trim().trim_end_matches('{').trim());
        u32::from_be_bytes(b.try_into().expect("4-byte IAID"))
    };
    let server = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("option dhcp6.server-id "))
        .map(|v| colon_hex(v.trim_end_matches(';')))
        .expect("server-id in the lease file");
    (iaid("ia-na "), iaid("ia-pd "), server)
}

/// A REQUEST for `client` (DUID) to `server` with an empty IA_NA and IA_PD, wrapped in a
/// RELAY-FORW whose link-address, peer-address and Interface-Id the sender chose.
fn wrapped_request(
    xid: u32,
    client: &[u8],
    server: &[u8],
    (na, pd): (u32, u32),
    link: Ipv6Addr,
    peer: Ipv6Addr,
    interface_id: &[u8],
) -> Vec<u8> {
    let mut req = ClientMessage::new(MessageType::REQUEST, xid);
    req.options.push(DhcpOption::ClientId(Duid::from(client)));
    req.options.push(DhcpOption::ServerId(Duid::from(server)));
    req.options.push(DhcpOption::ElapsedTime(0));
    req.options.push(DhcpOption::IaNa(Ia::new(na, 0, 0)));
    req.options.push(DhcpOption::IaPd(Ia::new(pd, 0, 0)));
    let mut r = RelayMessage::new(MessageType::RELAY_FORW, 0, link, peer);
    r.options
        .push(DhcpOption::InterfaceId(interface_id.to_vec()));
    r.options
        .push(DhcpOption::RelayMsg(Box::new(Message::Client(req))));
    Message::Relay(r).to_vec().expect("encode")
}

/// Send `payload` from `src`:547 in `ns` to All_DHCP_Relay_Agents_and_Servers on `dev`, as a
/// relay agent below dhcrelay would.
fn send_to_relays(ns: &NetNs, dev: &str, src: Ipv6Addr, payload: Vec<u8>) {
    let scope = support::ldra::ifindex(ns, dev);
    ns.run_in(move || {
        let s = UdpSocket::bind(SocketAddrV6::new(src, 547, 0, 0)).expect("bind :547");
        let to = SocketAddrV6::new("ff02::1:2".parse().unwrap(), 547, 0, scope);
        s.send_to(&payload, to).expect("send to dhcrelay");
    });
}

fn plain_config(lab: &IscLab) -> PathBuf {
    write_config(
        lab,
        &format!(
            "[bulk]\nenabled = false\n\n[trigger]\nenabled = false\n\n\
             [routes]\nprotocol = {PROTO}\n\n[log]\nlevel = \"info\"\n"
        ),
    )
}

#[test]
fn a_subscriber_posing_as_an_ldra_moves_nothing() {
    let Some(mut lab) = IscLab::without_clients(
        "a_subscriber_posing_as_an_ldra_moves_nothing",
        2,
        Lifetimes::default(),
    ) else {
        return;
    };
    let cfg = plain_config(&lab);
    let _agent = start_agent(&lab, &cfg, "lqagent.log");
    lab.start_clients();
    let want: BTreeSet<Route> = (0..2).flat_map(|i| client_routes(&lab, i)).collect();
    wait(
        &lab,
        "both clients' routes",
        Duration::from_secs(15),
        || routes(&lab.ac) == want,
    );
    let attacker = &lab.clients[0];
    let victim = &lab.clients[1];
    let attacker_addr = attacker.lease().expect("bound").address;
    let (v_na, v_pd, server) = lease_ids(&std::fs::read_to_string(victim.lease_file()).unwrap());
    let victim_duid = hex::decode(victim.lease().unwrap().client_duid).unwrap();
    let named_hop: Ipv6Addr = "fe80::bad".parse().unwrap();
    let stranger: Vec<u8> = vec![0, 3, 0, 1, 2, 0, 0, 0, 0x0b, 0xad];
    let cases: [(&str, Vec<u8>, (u32, u32)); 2] = [
        ("a stranger's DUID", stranger, (0x5151, 0x5252)),
        ("the neighbour's DUID and IAIDs", victim_duid, (v_na, v_pd)),
    ];
    for (n, (what, duid, iaids)) in cases.into_iter().enumerate() {
        let before = nested_relay(&lab);
        let msg = wrapped_request(
            0x00a0_0000 + n as u32,
            &duid,
            &server,
            iaids,
            victim.link_address,
            named_hop,
            victim.ac_interface.as_bytes(),
        );
        send_to_relays(&attacker.ns, &attacker.interface, attacker_addr, msg);
        // dhcrelay relays it, dhcpd answers from the named link: the agent sees the REPLY and
        // refuses it as wrapped on a link without an LDRA in front.
        wait(
            &lab,
            &format!("{what}: the wrapped REPLY refused as nested_relay"),
            Duration::from_secs(15),
            || nested_relay(&lab) >= before + 1.0,
        );
        let now = routes(&lab.ac);
        assert_eq!(
            now, want,
            "{what}: every subscriber's routes as before (nothing on the named link, the neighbour's prefix not moved)"
        );
        assert!(
            now.iter().all(|r| r.1.as_deref() != Some("fe80::bad")),
            "{what}: nothing via the next hop the attacker named: {now:?}"
        );
    }
    // dhcpd did serve the named link: the stranger holds a lease of link 1's pool there (the
    // attack reached the server; only the agent refused it).
    let leases = lab.server_leases();
    assert!(
        leases.contains("\\000\\003\\000\\001\\002\\000\\000\\000\\013\\255"),
        "dhcpd leased something to the stranger:\n{leases}"
    );
    // The agent still works: the victim's own RELEASE withdraws its routes.
    let keep: BTreeSet<Route> = client_routes(&lab, 0);
    lab.clients[1].release();
    wait(
        &lab,
        "the victim's release",
        Duration::from_secs(15),
        || routes(&lab.ac) == keep,
    );
}

/// dhcpd for the LDRA lab: one subnet behind the shared link-address, and each CPE (by its
/// DUID-LL) a fixed address and prefix, so the two links' subscriber prefixes can be disjoint
/// (the configuration refuses overlapping ones) while sharing a link-address.
fn ldra_dhcpd_conf(cpes: &[(Vec<u8>, &str, &str)]) -> String {
    let mut c = String::from(
        "default-lease-time 600;\npreferred-lifetime 300;\nmax-lease-time 7200;\n\
         allow leasequery;\nsubnet6 2001:db8::/64 { }\n\
         subnet6 2001:db8:1::/64 {\n  range6 2001:db8:1::100 2001:db8:1::1ff;\n  \
         prefix6 2001:db8:100:: 2001:db8:1ff:: /56;\n}\n",
    );
    for (i, (duid, addr, pfx)) in cpes.iter().enumerate() {
        let id: Vec<String> = duid.iter().map(|b| format!("{b:02x}")).collect();
        c.push_str(&format!(
            "host cpe{i} {{\n  host-identifier option dhcp6.client-id {};\n  \
             fixed-address6 {addr};\n  fixed-prefix6 {pfx};\n}}\n",
            id.join(":")
        ));
    }
    c
}

/// Start `dhclient -6 -N -P -D LL` on `c0` in `ns`, files in `dir`.
fn dhclient(ns: &NetNs, dir: &std::path::Path, i: usize) -> (support::isc::Daemon, PathBuf) {
    let lease = dir.join(format!("cpe{i}.leases"));
    let p = |f: String| dir.join(f).to_string_lossy().into_owned();
    let args = [
        "dhclient",
        "-6",
        "-N",
        "-P",
        "-D",
        "LL",
        "-d",
        "-sf",
        "/bin/true",
        "-lf",
        &lease.to_string_lossy(),
        "-pf",
        &p(format!("cpe{i}.pid")),
        "c0",
    ];
    let d = support::isc::Daemon::spawn(ns, "dhclient", &args, &dir.join(format!("cpe{i}.log")));
    (d, lease)
}

#[test]
fn clients_behind_a_genuine_ldra_are_routed_on_their_own_interface() {
    let Some(mut lab) = IscLab::without_clients(
        "clients_behind_a_genuine_ldra_are_routed_on_their_own_interface",
        2,
        Lifetimes::default(),
    ) else {
        return;
    };
    // This box: sub0 and sub1 share one link-address (unnumbered behind access nodes), told
    // apart by the Interface-Id dhcrelay -I adds (the interface name).
    let shared: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
    lab.stop_relay();
    lab.ac
        .exec(&["ip", "-6", "addr", "del", "2001:db8:2::1/64", "dev", "sub1"]);
    lab.ac.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:1::1/128",
        "dev",
        "sub1",
        "nodad",
    ]);
    // dhcpd with a fixed lease per CPE (DUID-LL from the MAC we give each CPE).
    lab.stop_server();
    let cpes: Vec<(Vec<u8>, &str, &str)> = (0..2u8)
        .map(|i| {
            let duid = vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 0xc0 + i];
            let (addr, pfx) = [
                ("2001:db8:1::110", "2001:db8:110::/56"),
                ("2001:db8:1::120", "2001:db8:120::/56"),
            ][usize::from(i)];
            (duid, addr, pfx)
        })
        .collect();
    let dir = lab.dir().to_path_buf();
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    std::fs::write(p("ldra-dhcpd6.conf"), ldra_dhcpd_conf(&cpes)).unwrap();
    std::fs::write(p("ldra-dhcpd6.leases"), "").unwrap();
    let _dhcpd = support::isc::spawn_dhcpd(&lab.server, &dir, "ldra-");
    let mut relay = support::isc::Daemon::spawn(
        &lab.ac,
        "dhcrelay",
        &[
            "dhcrelay",
            "-6",
            "-d",
            "-I",
            "-pf",
            &p("ldra-dhcrelay.pid"),
            "-l",
            "sub0",
            "-l",
            "sub1",
            "-u",
            "2001:db8::1%up0",
        ],
        &dir.join("dhcrelay.log"),
    );
    support::isc::wait_for("dhcrelay to bind", Duration::from_secs(10), || {
        assert!(relay.running(), "dhcrelay exited: {}", lab.log("dhcrelay"));
        lab.log("dhcrelay").contains("Sending on")
    });
    // Each of the lab's client namespaces becomes an access node running an LDRA; a CPE
    // namespace behind it runs dhclient.
    let mut cpe_ns = Vec::new();
    let mut ldras = Vec::new();
    for i in 0..2 {
        let cpe = NetNs::new(&format!("cpe{i}"));
        support::isc::quiet_dad(&cpe);
        let node = &lab.clients[i].ns;
        support::netns::veth(node, "d0", &cpe, "c0");
        cpe.exec(&[
            "ip",
            "link",
            "set",
            "dev",
            "c0",
            "address",
            &format!("02:00:00:00:00:c{i}"),
        ]);
        wait(
            &lab,
            "link-local addresses",
            Duration::from_secs(10),
            || {
                let out = cpe.exec(&[
                    "ip", "-6", "-o", "addr", "show", "dev", "c0", "scope", "link",
                ]);
                !out.stdout.is_empty()
                    && !node
                        .exec(&[
                            "ip", "-6", "-o", "addr", "show", "dev", "d0", "scope", "link",
                        ])
                        .stdout
                        .is_empty()
            },
        );
        ldras.push(support::ldra::Ldra::start(
            node,
            "d0",
            "c0",
            &format!("port-{i}"),
        ));
        cpe_ns.push(cpe);
    }
    // ISC dhcrelay 4.4 -I sends as Interface-Id a 4-byte number of the `-l` interface in host
    // byte order (here 2 for sub0, 1 for sub1), not its name.
    let config = format!(
        "state_dir = \"{state}\"\n\n[snoop]\ninterfaces = [\"up0\"]\n\n[control]\nsocket = \"{sock}\"\n\n\
         [[servers]]\nname = \"dhcpd\"\naddress = \"{server}\"\n\n\
         [[links]]\nname = \"port0\"\ninterface = \"sub0\"\nlink_address = \"{shared}\"\n\
         interface_id = \"hex:02000000\"\nldra = true\n\
         subscriber_prefixes = [\"2001:db8:1::110/124\", \"2001:db8:110::/52\"]\n\n\
         [[links]]\nname = \"port1\"\ninterface = \"sub1\"\nlink_address = \"{shared}\"\n\
         interface_id = \"hex:01000000\"\nldra = true\n\
         subscriber_prefixes = [\"2001:db8:1::120/124\", \"2001:db8:120::/52\"]\n\n\
         [bulk]\nenabled = false\n\n[trigger]\nenabled = false\n\n\
         [routes]\nprotocol = {PROTO}\n\n[log]\nlevel = \"info\"\n",
        state = dir.join("state").display(),
        sock = dir.join("control.sock").display(),
        server = lab.server_address,
    );
    let cfg = dir.join("lqagent.toml");
    std::fs::write(&cfg, config).unwrap();
    let _agent = start_agent(&lab, &cfg, "lqagent.log");
    let before = routes(&lab.ac);
    assert!(before.is_empty(), "no route before any client: {before:?}");
    let mut clients = Vec::new();
    for (i, cpe) in cpe_ns.iter().enumerate() {
        clients.push(dhclient(cpe, &dir, i));
    }
    wait(&lab, "both CPEs bound", Duration::from_secs(30), || {
        clients.iter().all(|(_, lf)| {
            support::isc::parse_lease(&std::fs::read_to_string(lf).unwrap_or_default()).is_some()
        })
    });
    let mut want = BTreeSet::new();
    for (i, ((_, lf), cpe)) in clients.iter().zip(&cpe_ns).enumerate() {
        let lease = support::isc::parse_lease(&std::fs::read_to_string(lf).unwrap()).unwrap();
        assert_eq!(
            lease.address.to_string(),
            cpes[i].1,
            "dhcpd's fixed address"
        );
        assert_eq!(lease.prefix, cpes[i].2, "dhcpd's fixed prefix");
        let sub = format!("sub{i}");
        want.insert((format!("{}/128", lease.address), None, sub.clone()));
        // The next hop is the CPE's own link-local address, as the LDRA level carries it — not
        // the access node's, which is this box's level's peer-address.
        want.insert((
            lease.prefix.clone(),
            Some(support::isc::link_local(cpe, "c0").to_string()),
            sub,
        ));
    }
    wait(
        &lab,
        "each CPE routed on its own interface via its own address",
        Duration::from_secs(15),
        || routes(&lab.ac) == want,
    );
    assert!(
        ldras
            .iter()
            .all(|l| l.relayed.load(std::sync::atomic::Ordering::Relaxed) >= 4)
    );
    assert_eq!(nested_relay(&lab), 0.0, "nothing refused on LDRA links");
    // `lqagent show bindings` shows each prefix's access port.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lqagent"))
        .args(["show", "bindings", "--json", "--socket"])
        .arg(dir.join("control.sock"))
        .output()
        .unwrap();
    assert!(out.status.success(), "show bindings: {out:?}");
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON bindings");
    let rows = shown
        .as_array()
        .or_else(|| shown["bindings"].as_array())
        .expect("a list of bindings")
        .clone();
    for (i, (_, pfx)) in cpes.iter().map(|c| (c.1, c.2)).enumerate() {
        let row = rows
            .iter()
            .find(|r| r["network"] == pfx)
            .unwrap_or_else(|| panic!("{pfx} shown: {shown}"));
        assert_eq!(row["interface"], format!("sub{i}"), "{row}");
        assert_eq!(row["access_port"], format!("port-{i}"), "{row}");
    }
    drop(clients);
    drop(ldras);
}
