//! A flood of spoofed IPv6 sources, written fast: 40-byte packets (no next header) through a raw
//! socket with the header included (`IPPROTO_RAW`), from random sources inside a /64 whose
//! interface ids have the top bit set — never a test address or an ISC lab lease (those are
//! `::100`–`::1ff`). Runs on a thread inside the namespace; needs CAP_NET_RAW.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::{Duration, Instant};

use super::netns::NetNs;

/// Sends `n` packets from random sources in `prefix64::/64` to `dst`; returns the sending time.
pub fn spoofed_flood(ns: &NetNs, dst: Ipv6Addr, prefix64: [u16; 4], n: usize) -> Duration {
    ns.run_in(move || {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(255)))
            .expect("raw IPv6 socket (IPPROTO_RAW: header included)");
        let to = SockAddr::from(SocketAddrV6::new(dst, 0, 0, 0));
        let mut pkt = [0u8; 40];
        pkt[0] = 0x60;
        pkt[6] = 59; // no next header
        pkt[7] = 64;
        for (i, w) in prefix64.iter().enumerate() {
            pkt[8 + 2 * i..10 + 2 * i].copy_from_slice(&w.to_be_bytes());
        }
        pkt[24..40].copy_from_slice(&dst.octets());
        let t0 = Instant::now();
        let mut sent = 0;
        while sent < n {
            let iid = rand::random::<u64>() | (1 << 63);
            pkt[16..24].copy_from_slice(&iid.to_be_bytes());
            match s.send_to(&pkt, &to) {
                Ok(_) => sent += 1,
                // The device queue is full for a moment: try again.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => std::thread::yield_now(),
                Err(e) => panic!("raw send: {e}"),
            }
        }
        t0.elapsed()
    })
}
