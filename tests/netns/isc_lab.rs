//! The reusable ISC topology (tests/support/src/isc.rs) really works: two real `dhclient -6 -N -P`
//! bind through a real `dhcrelay -6` to a real `dhcpd -6`; their leases (from dhclient's own
//! lease files) are inside the configured range and prefix pool; dhcpd's lease database agrees;
//! a client's leased address reaches the server across the access concentrator; the generated
//! lqagent config validates; and everything is gone after drop.

use std::net::Ipv6Addr;
use std::time::Instant;

use lqagent::config::Config;
use lqagent::prefix::Ipv6Prefix;
use support::isc::IscLab;

#[test]
fn two_clients_bind_through_the_relay() {
    let t0 = Instant::now();
    let Some(lab) = IscLab::start("two_clients_bind_through_the_relay", 2) else {
        return;
    };
    eprintln!("lab with 2 bound clients up in {:?}", t0.elapsed());
    let server_leases = lab.server_leases();
    let mut seen = Vec::new();
    for (i, c) in lab.clients.iter().enumerate() {
        let n = i as u16 + 1;
        let lease = c.lease().expect("bound");
        let seg = lease.address.segments();
        assert_eq!(
            &seg[..3],
            &[0x2001, 0xdb8, n],
            "client {i} address {} on its link",
            lease.address
        );
        assert!(
            (0x100..=0x1ff).contains(&seg[7]) && seg[3..7] == [0, 0, 0, 0],
            "client {i} address {} inside range6 ::100-::1ff",
            lease.address
        );
        assert_eq!(lease.prefix_len, 56, "client {i} got a /56");
        let pool: Ipv6Prefix = c.pd_pool.parse().unwrap();
        let prefix: Ipv6Prefix = lease.prefix.parse().expect("prefix parses");
        assert!(
            pool.covers(&prefix),
            "client {i} prefix {prefix} inside pool {pool}"
        );
        assert!(
            !lease.client_duid.is_empty() && lease.client_duid.len() % 2 == 0,
            "duid hex"
        );
        // dhcpd's own database holds the same address and prefix.
        assert!(
            server_leases.contains(&format!("iaaddr {} {{", lease.address)),
            "dhcpd6.leases lacks {}:\n{server_leases}",
            lease.address
        );
        assert!(
            server_leases.contains(&format!("iaprefix {} {{", lease.prefix)),
            "dhcpd6.leases lacks {}",
            lease.prefix
        );
        // The exchange went through the relay with the Interface-Id option.
        assert!(c.link_local().segments()[0] == 0xfe80);
        seen.push((lease.address, prefix));
    }
    assert_ne!(seen[0], seen[1], "two clients, two leases");
    let relay_log = lab.log("dhcrelay");
    assert!(
        relay_log.contains("Relaying Reply to") || relay_log.contains("Relaying"),
        "dhcrelay relayed: {relay_log}"
    );

    // A client's leased address reaches the server through the access concentrator.
    let server: Ipv6Addr = lab.server_address;
    assert!(
        lab.clients[0].ping_from_lease(server),
        "ping across the box"
    );

    // The lab's lqagent configuration is valid.
    let config = Config::parse(&lab.lqagent_toml()).expect("lab config validates");
    assert_eq!(config.links.len(), 2);
    assert_eq!(config.links[1].interface, "sub1");

    let names: Vec<String> = std::iter::once(lab.server.name().to_string())
        .chain(std::iter::once(lab.ac.name().to_string()))
        .chain(lab.clients.iter().map(|c| c.ns.name().to_string()))
        .collect();
    let dir = lab.dir().to_path_buf();
    drop(lab);
    for n in names {
        assert!(
            !std::path::Path::new(&format!("/run/netns/{n}")).exists(),
            "{n} removed"
        );
    }
    assert!(!dir.exists(), "temp dir removed");
}
