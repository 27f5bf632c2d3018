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
    scrape_in(&lab.ac).value_or_zero(
        REJECTED,
        &[("source", "snoop"), ("reason", "nested_relay")],
    )
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

/// A colon-separated hex value in a dhclient lease file (`0:1:0:1:...` or `1e:ab:cd:ef`).
fn colon_hex(v: &str) -> Vec<u8> {
    v.split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("hex octet"))
        .collect()
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
    req.options.push(DhcpOption::ClientId(Duid::parse(client)));
    req.options.push(DhcpOption::ServerId(Duid::parse(server)));
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

/// The index of `dev` in `ns`.
fn ifindex(ns: &NetNs, dev: &str) -> u32 {
    let out = ns.exec(&["cat", &format!("/sys/class/net/{dev}/ifindex")]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("ifindex of {dev}: {text:?}"))
}

/// Send `payload` from `src`:547 in `ns` to All_DHCP_Relay_Agents_and_Servers on `dev`, as a
/// relay agent below dhcrelay would.
fn send_to_relays(ns: &NetNs, dev: &str, src: Ipv6Addr, payload: Vec<u8>) {
    let scope = ifindex(ns, dev);
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
    wait(&lab, "both clients' routes", Duration::from_secs(15), || {
        routes(&lab.ac) == want
    });
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
    wait(&lab, "the victim's release", Duration::from_secs(15), || {
        routes(&lab.ac) == keep
    });
}
