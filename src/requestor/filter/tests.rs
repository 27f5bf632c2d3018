//! The filter run by a small interpreter of the instructions it uses, on crafted headers (the
//! kernel runs it in `requestor::udp`'s tests and in `tests/netns/daemon_trigger_e2e.rs`).

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use super::*;
use crate::bpf::interp;

/// Runs `prog` on a datagram whose IPv6 header is `net` and whose UDP header and payload are
/// `udp` (offset 0, as on a UDP socket); returns the accepted length (0 = drop).
fn run(prog: &[Insn], net: &[u8], udp: &[u8]) -> u32 {
    let pkt = interp::Packet {
        protocol: 0x86dd,
        net,
        data: udp,
    };
    interp::run(prog, &pkt)
}

fn v6(s: &str, port: u16) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(
        s.parse::<Ipv6Addr>().unwrap(),
        port,
        0,
        0,
    ))
}

/// An IPv6 header from `src` and a UDP header from `sport` to 546.
fn datagram(src: SocketAddr) -> (Vec<u8>, Vec<u8>) {
    let SocketAddr::V6(s) = src else { panic!() };
    let mut net = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    net.extend(s.ip().octets());
    net.extend(Ipv6Addr::LOCALHOST.octets());
    let mut udp = s.port().to_be_bytes().to_vec();
    udp.extend(546u16.to_be_bytes());
    udp.extend([0, 8, 0, 0]);
    (net, udp)
}

fn accepts(prog: &[Insn], from: SocketAddr) -> bool {
    let (net, udp) = datagram(from);
    run(prog, &net, &udp) != 0
}

#[test]
fn only_a_configured_source_address_and_port_pass() {
    let sources = [
        v6("2001:db8::1", 547),
        v6("2001:db8::2", 547),
        v6("fe80::9", 5470),
    ];
    let f = reply_filter(&sources).unwrap();
    for s in sources {
        assert!(accepts(&f, s), "{s} passes");
    }
    // Another port of a server, another address on the server's port, each word of the address
    // differing alone (every compare matters), a source of no block.
    assert!(!accepts(&f, v6("2001:db8::1", 40000)));
    assert!(!accepts(&f, v6("2001:db8::3", 547)));
    assert!(!accepts(&f, v6("2001:db9::1", 547)));
    assert!(!accepts(&f, v6("2001:db8:0:1::1", 547)));
    assert!(!accepts(&f, v6("2001:db8::1:0:0:1", 547)));
    assert!(!accepts(&f, v6("2001:db8::1:1", 547)));
    assert!(!accepts(&f, v6("fe80::9", 547)));
    // Truncated headers are dropped, never read past.
    let (net, udp) = datagram(sources[0]);
    assert_eq!(run(&f, &net[..20], &udp), 0);
    assert_eq!(run(&f, &net, &udp[..1]), 0);
}

#[test]
fn no_sources_drop_everything_and_too_many_give_no_filter() {
    let f = reply_filter(&[]).unwrap();
    assert!(!accepts(&f, v6("2001:db8::1", 547)));
    let many: Vec<SocketAddr> = (0..=MAX_SOURCES)
        .map(|i| v6(&format!("2001:db8::{:x}", i + 1), 547))
        .collect();
    assert!(reply_filter(&many).is_none());
    let f = reply_filter(&many[..MAX_SOURCES]).unwrap();
    assert!(f.len() <= MAX_INSNS);
    assert!(
        accepts(&f, many[MAX_SOURCES - 1]),
        "the last block is reached"
    );
}

#[test]
fn reply_sources_are_the_unicast_servers_and_the_multicast_sources() {
    let servers = [
        v6("2001:db8::1", 547),
        v6("ff02::1:2", 547),
        "192.0.2.1:547".parse().unwrap(),
    ];
    let mc = [v6("2001:db8::1", 547), v6("2001:db8::7", 547)];
    assert_eq!(
        reply_sources(&servers, &mc),
        vec![v6("2001:db8::1", 547), v6("2001:db8::7", 547)]
    );
}
