//! The classic-BPF socket filter on the requestor's socket: only datagrams from a source the
//! core would accept a reply from — a configured unicast server's address and port, or one of
//! the configured `multicast_sources` — are queued; the kernel drops everything else before it
//! takes room in the receive buffer (*pure*: the program as data; the shell attaches it).
//!
//! Why: the socket binds port 546, which anyone upstream can flood. Without the filter, junk
//! fills the receive buffer and the servers' LEASEQUERY-REPLYs drown in it (each costs a
//! retransmission, and a query whose five sends all drown fails). The core drops replies from
//! any other source anyway (`wrong_source`), so the filter moves a rule the core already has
//! into the kernel, in front of the buffer. Neither a source port per server (ISC dhcpd 4.4
//! answers to port 546 whatever port the query came from) nor a connected socket per server
//! (servers given as multicast cannot be connected, and sockets sharing port 546 need
//! SO_REUSEADDR/SO_REUSEPORT, which would let another process, a second `lqagent query` say,
//! share the port and take our replies) does that for every kind of server.
//!
//! A flood that forges a server's address and port still reaches the buffer: the filter
//! narrows who can drown replies to those who can spoof a server.
//!
//! On an `AF_INET6` UDP socket the filter sees the datagram from its UDP header (offset 0); the
//! IPv6 header is reached through the kernel's `SKF_NET_OFF` negative offsets. Per allowed
//! source, one block (jumps stay short whatever the number of sources):
//!
//! ```text
//!       ldh [0]              ; jeq #port, next, skip     UDP source port
//!       ld  [NET+8]          ; jeq #addr[0..4], next, skip
//!       ld  [NET+12]         ; jeq #addr[4..8], next, skip
//!       ld  [NET+16]         ; jeq #addr[8..12], next, skip
//!       ld  [NET+20]         ; jeq #addr[12..16], next, skip
//!       ret #-1              ; the whole datagram
//! skip: (the next source's block)
//!       ret #0               ; after the last block: drop
//! ```

use std::net::SocketAddr;

use crate::bpf::{ABS, H, Insn, K, LD, MAX_INSNS, NET_OFF, RET, W, jeq, stmt};

/// Offset of the source address in the IPv6 header.
const SRC_ADDR: i32 = 8;
/// Instructions per allowed source.
const BLOCK: usize = 11;

/// The most sources one filter can hold; with more the socket stays unfiltered (logged).
pub(crate) const MAX_SOURCES: usize = (MAX_INSNS - 1) / BLOCK;

/// The allowed sources of a requestor's replies: each unicast server, and each configured
/// source of answers to multicast queries, without duplicates. IPv4 sources are left out (the
/// requestor's socket is IPv6-only).
pub(crate) fn reply_sources(
    servers: &[SocketAddr],
    multicast_sources: &[SocketAddr],
) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for s in servers.iter().chain(multicast_sources) {
        if s.is_ipv6() && !s.ip().is_multicast() && !out.iter().any(|o| same(o, s)) {
            out.push(*s);
        }
    }
    out
}

fn same(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.ip() == b.ip() && a.port() == b.port()
}

/// The filter admitting datagrams from `sources` only (IPv6 ones; see [`reply_sources`]).
/// `None` when there are more than [`MAX_SOURCES`]. An empty list gives a program that drops
/// everything: a requestor without servers has nobody to hear from.
pub(crate) fn reply_filter(sources: &[SocketAddr]) -> Option<Vec<Insn>> {
    if sources.len() > MAX_SOURCES {
        return None;
    }
    let mut p = Vec::with_capacity(sources.len() * BLOCK + 1);
    for s in sources {
        let SocketAddr::V6(v6) = s else { continue };
        let o = v6.ip().octets();
        let word = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
        // Each `jeq`'s false branch skips to the end of this block (its `ret` included).
        let skip = |at: usize| u8::try_from(BLOCK - 1 - at).expect("short jump");
        p.push(stmt(LD | H | ABS, 0));
        p.push(jeq(u32::from(v6.port()), 0, skip(1)));
        for w in 0..4 {
            p.push(stmt(
                LD | W | ABS,
                (NET_OFF + SRC_ADDR + 4 * w as i32) as u32,
            ));
            p.push(jeq(word(4 * w), 0, skip(3 + 2 * w)));
        }
        p.push(stmt(RET | K, u32::MAX));
    }
    p.push(stmt(RET | K, 0));
    Some(p)
}

#[cfg(test)]
mod tests;
