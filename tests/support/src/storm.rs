//! A reboot storm's traffic, shared by `benches/storm.rs` and `tests/netns/snoop_pipeline.rs`:
//! every subscriber re-binding at once, as the snooper on this box's uplink sees it.
//!
//! The lab is two namespaces: the relay box (`up0` 2001:db8:f::1, the subscriber link `sub0`
//! 2001:db8:10::1/64, a veth whose peer stays inside) and the server (`dn0` 2001:db8:f::2).
//! No real relay or server runs: each client's four relayed messages are crafted with the
//! agent's own codec — RELAY-FORW(SOLICIT), RELAY-REPL(ADVERTISE), RELAY-FORW(REQUEST),
//! RELAY-REPL(REPLY) — with this box's relay level as ISC dhcrelay writes it (hop count 0,
//! link-address of `sub0`, the client's link-local peer-address, Interface-Id `sub0`), and sent
//! over UDP sockets: the FORWs from the relay namespace (so the snooper sees them *outgoing*,
//! from this box's address), the REPLs from the server namespace (arriving, from the server),
//! both port 547 to port 547 — exactly where the trust rules (`docs/security.md`) believe them.
//! Crafted, because real dhcrelay and dhcpd answer a few thousand exchanges a second, far below
//! what the snooper must take.

use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::time::Instant;

use lqagent::wire::{
    ClientMessage, DhcpOption, Duid, Ia, IaAddr, Message, MessageType, RelayMessage,
};

use crate::netns::{NetNs, uplink};

/// This box's address on the uplink (the relay's source).
pub const RELAY: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, 1);
/// The DHCPv6 server's address.
pub const SERVER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, 2);
/// The subscriber link's interface in the relay namespace.
pub const LINK_IF: &str = "sub0";
/// The subscriber link's address: the link-address of this box's relay level.
pub const LINK_ADDRESS: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 1);
/// The link's subscriber prefix: every client's address is inside it.
pub const SUBNET: &str = "2001:db8:10::/64";
/// The server's DUID.
pub const SERVER_DUID: [u8; 6] = [2, 0, 0, 0, 0, 0xaa];

/// Client `n`'s address: 2001:db8:10::1:hi:lo (never the link's own ::1).
pub fn client_address(n: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 1, (n >> 16) as u16, n as u16)
}

/// Client `n`'s link-local address (the relay's peer-address).
pub fn client_link_local(n: u32) -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 1, (n >> 16) as u16, n as u16)
}

fn client_duid(n: u32) -> Duid {
    let b = n.to_be_bytes();
    Duid::ll_ethernet([2, 0x11, b[0], b[1], b[2], b[3]])
}

/// Client `n`'s four relayed messages, as the uplink carries them.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub solicit: Vec<u8>,
    pub advertise: Vec<u8>,
    pub request: Vec<u8>,
    pub reply: Vec<u8>,
}

/// Client `n`'s exchange: one IA_NA with [`client_address`], valid for `valid` seconds.
pub fn exchange(n: u32, valid: u32) -> Exchange {
    // Distinct transaction ids for the two client messages (24 bits).
    let (xs, xr) = (n & 0x7f_ffff, (n & 0x7f_ffff) | 0x80_0000);
    Exchange {
        solicit: relayed(n, MessageType::RELAY_FORW, MessageType::SOLICIT, xs, None),
        advertise: relayed(
            n,
            MessageType::RELAY_REPL,
            MessageType::ADVERTISE,
            xs,
            Some(valid),
        ),
        request: relayed(n, MessageType::RELAY_FORW, MessageType::REQUEST, xr, None),
        reply: relayed(
            n,
            MessageType::RELAY_REPL,
            MessageType::REPLY,
            xr,
            Some(valid),
        ),
    }
}

/// One relayed message of client `n`; `lease`: the server's answer with this lifetime (the
/// client's own messages name no lease).
fn relayed(
    n: u32,
    outer: MessageType,
    inner: MessageType,
    xid: u32,
    lease: Option<u32>,
) -> Vec<u8> {
    let mut c = ClientMessage::new(inner, xid);
    c.options.push(DhcpOption::ClientId(client_duid(n)));
    let mut ia = Ia::new(n, 0, 0);
    if let Some(valid) = lease {
        c.options
            .push(DhcpOption::ServerId(Duid::ll_ethernet(SERVER_DUID)));
        ia.options.push(DhcpOption::IaAddr(IaAddr::new(
            client_address(n),
            valid / 2,
            valid,
        )));
    }
    c.options.push(DhcpOption::IaNa(ia));
    let mut r = RelayMessage::new(outer, 0, LINK_ADDRESS, client_link_local(n));
    r.options
        .push(DhcpOption::InterfaceId(LINK_IF.as_bytes().to_vec()));
    r.options
        .push(DhcpOption::RelayMsg(Box::new(Message::Client(c))));
    Message::Relay(r)
        .to_vec()
        .expect("a crafted message encodes")
}

/// The relay box and the server, linked by the uplink; the relay box has the subscriber link.
#[derive(Debug)]
pub struct Lab {
    pub relay: NetNs,
    pub server: NetNs,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        let relay = NetNs::new(tag);
        let server = NetNs::new(tag);
        uplink(&relay, &server);
        let peer = format!("{LINK_IF}p");
        relay.exec(&[
            "ip", "link", "add", LINK_IF, "type", "veth", "peer", "name", &peer,
        ]);
        relay.exec(&["ip", "link", "set", &peer, "up"]);
        relay.exec(&["ip", "link", "set", LINK_IF, "up"]);
        relay.exec(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{LINK_ADDRESS}/64"),
            "dev",
            LINK_IF,
            "nodad",
        ]);
        Lab { relay, server }
    }

    /// The two senders: the relay's port 547 socket and the server's.
    pub fn senders(&self) -> Senders {
        let relay = self.relay.run_in(|| bound(RELAY));
        let server = self.server.run_in(|| bound(SERVER));
        Senders { relay, server }
    }
}

fn bound(at: Ipv6Addr) -> UdpSocket {
    // Relay and server both speak from port 547 (RFC 8415 §7.2): the snooper checks it.
    UdpSocket::bind(SocketAddrV6::new(at, 547, 0, 0)).expect("bind port 547")
}

/// The relay's and the server's sockets (each opened inside its namespace). What they receive
/// is never read: their own buffers overflow, which the snooper's packet socket, fed before
/// UDP delivery, never notices.
#[derive(Debug)]
pub struct Senders {
    relay: UdpSocket,
    server: UdpSocket,
}

impl Senders {
    /// A RELAY-FORW leaving this box for the server.
    pub fn up(&self, payload: &[u8]) {
        self.relay
            .send_to(payload, SocketAddrV6::new(SERVER, 547, 0, 0))
            .expect("send RELAY-FORW");
    }

    /// A RELAY-REPL from the server arriving at this box.
    pub fn down(&self, payload: &[u8]) {
        self.server
            .send_to(payload, SocketAddrV6::new(RELAY, 547, 0, 0))
            .expect("send RELAY-REPL");
    }

    /// Send every exchange, `window` clients at a time (SOLICITs, ADVERTISEs, REQUESTs, then
    /// REPLYs of those clients): the server's answers lag its questions by a window, as a
    /// server busy with a storm answers. Returns when each REPLY was sent, by client.
    pub fn storm(&self, exchanges: &[Exchange], window: usize) -> Vec<Instant> {
        self.storm_phased(exchanges, window, |_| {})
    }

    /// [`Senders::storm`], calling `at` as each window's REPLYs start and once they are all
    /// sent (a diagnostic may wait there, or read the agent's CPU).
    pub fn storm_phased(
        &self,
        exchanges: &[Exchange],
        window: usize,
        mut at: impl FnMut(Phase),
    ) -> Vec<Instant> {
        let mut sent = Vec::with_capacity(exchanges.len());
        for w in exchanges.chunks(window.max(1)) {
            for e in w {
                self.up(&e.solicit);
            }
            for e in w {
                self.down(&e.advertise);
            }
            for e in w {
                self.up(&e.request);
            }
            at(Phase::Replies);
            for e in w {
                sent.push(Instant::now());
                self.down(&e.reply);
            }
            at(Phase::RepliesSent(sent.len()));
        }
        sent
    }
}

/// Where [`Senders::storm_phased`] is in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The window's SOLICITs, ADVERTISEs and REQUESTs are sent; its REPLYs come next.
    Replies,
    /// The window's REPLYs are sent: this many clients' REPLYs so far.
    RepliesSent(usize),
}

/// `at` on the `CLOCK_MONOTONIC` clock, in seconds: where a moment of the storm falls in a
/// `perf record -k CLOCK_MONOTONIC` of the agent (what it was doing when a window stalled).
pub fn monotonic_secs(at: Instant) -> f64 {
    let now = Instant::now();
    netlink::monotonic_secs() - now.saturating_duration_since(at).as_secs_f64()
}

/// What a [`RouteMonitor`] saw: when each /128 of our protocol first appeared, and how often
/// its own socket overflowed (each overflow loses notifications: their routes are then never
/// timed, and the caller says so).
#[derive(Debug, Default)]
pub struct RoutesSeen {
    pub first: RouteStamps,
    pub overflows: u64,
    /// The monitor's own slow turns: taking one read's routes (after the read returned) took
    /// longer than [`SLOW_TURN`] (routes seen so far, how long). A route announced meanwhile is
    /// stamped late by that much: a stall of the measuring thread, not of the agent.
    pub slow_turns: Vec<(usize, std::time::Duration)>,
    /// Notifications longer than the monitor's room for one: cut, so a route in one may be
    /// missing from [`RoutesSeen::first`] (the caller says so, as for an overflow).
    pub truncated: u64,
    /// Reads that returned datagrams: each one took every notification waiting then (up to a
    /// bound), so routes per read says how many each wake-up of the monitor took.
    pub reads: u64,
}

/// When each route was first seen, by destination.
pub type RouteStamps =
    std::collections::HashMap<Ipv6Addr, Instant, std::hash::BuildHasherDefault<AddrHasher>>;

/// The monitor map's hasher: a multiply-rotate over the address's words, then a 64-bit
/// finalizer (MurmurHash3's fmix64) so that addresses differing only in their last bytes still
/// spread over the table's low bits. SipHash cost the monitor's thread about 0.1 us a route; its
/// resistance to chosen keys buys nothing here, the keys being the routes the kernel announces
/// in the bench's own namespace.
#[derive(Debug, Default, Clone, Copy)]
pub struct AddrHasher(u64);

impl std::hash::Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.0 =
                (self.0.rotate_left(5) ^ u64::from_ne_bytes(w)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// A monitor turn longer than this is kept in [`RoutesSeen::slow_turns`].
pub const SLOW_TURN: std::time::Duration = std::time::Duration::from_micros(300);

/// Watches the kernel's IPv6 route notifications (`RTNLGRP_IPV6_ROUTE`) in a namespace on a
/// thread of its own, stamping each new /128 of `protocol` as it is read — so the time of a
/// route is when the kernel announced it (plus this thread's reading delay), not when a poll
/// happened to look.
#[derive(Debug)]
pub struct RouteMonitor {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: std::thread::JoinHandle<RoutesSeen>,
    tid: u32,
}

impl RouteMonitor {
    /// Start watching in `ns`; returns once the socket is subscribed (no route is missed after).
    /// `expected`: how many routes the caller will wait for. The map of routes seen is made
    /// that big (and its memory touched) before the first is read, so it never grows nor faults
    /// in pages while routes are being stamped:
    /// growing it (a rehash of every route seen so far on the monitor's thread, 5–7 ms at
    /// 28 672 routes on the bench machine) delayed every route announced meanwhile, and the
    /// storm bench took the monitor's stall for the agent's.
    pub fn start(ns: &NetNs, protocol: u8, expected: usize) -> RouteMonitor {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (st, ct) = (stop.clone(), count.clone());
        let thread = ns.spawn_in(move || {
            let fd = netlink::subscribe_ipv6_routes().expect("netlink route monitor");
            netlink::watch(&fd, protocol, expected, &st, &ct, || {
                ready_tx.send(netlink::tid()).unwrap();
            })
        });
        let tid = ready_rx.recv().expect("monitor thread started");
        RouteMonitor {
            stop,
            count,
            thread,
            tid,
        }
    }

    /// The monitor thread's id (its `/proc/self/task/<tid>/schedstat` tells how long it waited
    /// for a CPU: time the routes it stamps waited for it, not for the agent).
    pub fn tid(&self) -> u32 {
        self.tid
    }

    /// How many distinct routes it has seen so far.
    pub fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stop watching and return what was seen.
    pub fn finish(self) -> RoutesSeen {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("route monitor thread")
    }
}

/// The few raw netlink calls the monitor needs (no netlink crate in the support crate).
#[allow(unsafe_code)]
mod netlink {
    use std::net::Ipv6Addr;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Instant;

    use super::RoutesSeen;

    const RTMGRP_IPV6_ROUTE: u32 = 0x400;

    /// `CLOCK_MONOTONIC` now, in seconds: the clock `perf record -k CLOCK_MONOTONIC` stamps
    /// its samples with (and `Instant`'s on Linux).
    pub(super) fn monotonic_secs() -> f64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a live timespec; CLOCK_MONOTONIC always exists on Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    }

    /// The calling thread's id.
    pub(super) fn tid() -> u32 {
        // SAFETY: gettid(2) takes nothing and cannot fail.
        unsafe { libc::gettid() as u32 }
    }

    pub(super) fn subscribe_ipv6_routes() -> std::io::Result<OwnedFd> {
        // SAFETY: plain socket(2); the result is checked and owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // A storm announces routes faster than any reader: room for all of them.
        let size: libc::c_int = 256 << 20;
        // SAFETY: `size` is a live c_int and the length is its size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        // A read timeout, so that the stop flag is looked at while nothing comes.
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        // SAFETY: `tv` is a live timeval and the length is its size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        // SAFETY: sockaddr_nl is plain old data; all-zero is valid.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        sa.nl_groups = RTMGRP_IPV6_ROUTE;
        // SAFETY: `sa` is a valid sockaddr_nl and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sa).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(fd)
    }

    /// Datagrams one read takes at most: the notifications waiting together come in one
    /// `recvmmsg(2)` instead of a `recv(2)` each (the wake-ups are as many as before: the monitor
    /// still sleeps as soon as nothing waits). Small enough that the read's own length, by which
    /// its first routes are stamped late, stays short (tens of microseconds).
    const SLOTS: usize = 64;
    /// Room for one datagram. One /128's notification is under 200 bytes; a longer one
    /// (truncated) is counted in [`RoutesSeen::truncated`], never silently cut. Small, so the
    /// kernel's copies into a read's slots land on a few pages and cache lines.
    const SLOT: usize = 1024;

    pub(super) fn watch(
        fd: &OwnedFd,
        protocol: u8,
        expected: usize,
        stop: &AtomicBool,
        count: &AtomicUsize,
        ready: impl FnOnce(),
    ) -> RoutesSeen {
        let mut seen = RoutesSeen::default();
        prefault(&mut seen.first, expected);
        // Written (not calloc'd zero pages), so no page is first touched during the storm. Only
        // reached through `base` from here on; it lives, unmoved, to the end of this function.
        let mut buf = vec![0x55u8; SLOTS * SLOT];
        let base = buf.as_mut_ptr();
        // SAFETY (both): iovec and mmsghdr are plain old data; every iovec points at its own
        // SLOT-sized part of `buf`, which lives, unmoved, until this function returns.
        let mut iov: Vec<libc::iovec> = (0..SLOTS)
            .map(|k| libc::iovec {
                iov_base: unsafe { base.add(k * SLOT) }.cast(),
                iov_len: SLOT,
            })
            .collect();
        let mut hdrs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = v;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        // Set up before the caller is told to start: the map's and the buffer's first touch
        // is no part of the storm's time, nor of the monitor's CPU the bench reports.
        ready();
        while !stop.load(Ordering::Relaxed) {
            // Blocks (up to the socket's read timeout) for the first datagram, then takes the
            // ones already queued behind it without waiting (MSG_WAITFORONE).
            // SAFETY: `hdrs` holds SLOTS valid mmsghdrs whose buffers are live; no timeout.
            let got = unsafe {
                libc::recvmmsg(
                    fd.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    SLOTS as libc::c_uint,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            // Every datagram of this read was queued before the read returned: stamping them
            // all now is never earlier than the kernel announced any of them.
            let at = Instant::now();
            if got < 0 {
                // An overflow (ENOBUFS) lost notifications. One met after some datagrams were
                // taken is kept by the kernel for the next read, so it is counted here too.
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                    seen.overflows += 1;
                }
                continue;
            }
            for (k, h) in hdrs.iter().take(got as usize).enumerate() {
                if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    seen.truncated += 1;
                }
                let len = (h.msg_len as usize).min(SLOT);
                // SAFETY: slot `k` of `buf` (k < SLOTS), its first `len` <= SLOT bytes written
                // by the read; read through `base`, the pointer the kernel wrote through.
                let datagram = unsafe { std::slice::from_raw_parts(base.add(k * SLOT), len) };
                super::routes_in(datagram, protocol, |a| {
                    seen.first.entry(a).or_insert(at);
                });
            }
            count.store(seen.first.len(), Ordering::Relaxed);
            let took = at.elapsed();
            if took > super::SLOW_TURN {
                seen.slow_turns.push((seen.first.len(), took));
            }
            seen.reads += 1;
        }
        seen
    }

    /// Make `map` hold `expected` routes and touch all of its memory now: reserving alone
    /// leaves the table's pages unmapped until the first route lands in each, and those page
    /// faults would fall on the monitor's thread during the storm. Filled and cleared, the table
    /// keeps its (now resident) memory and its capacity.
    fn prefault(map: &mut super::RouteStamps, expected: usize) {
        map.reserve(expected);
        let now = Instant::now();
        for k in 0..expected {
            map.insert(Ipv6Addr::from(k as u128), now);
        }
        map.clear();
    }
}

/// Calls `f` with the destination of every new /128 of `protocol` in one netlink datagram.
/// Only what says which route it is, is read: the message type, the `rtmsg`'s prefix length
/// and protocol, and the `RTA_DST` attribute. Every length is checked against the datagram:
/// a short or bogus one ends the walk.
pub fn routes_in(datagram: &[u8], protocol: u8, mut f: impl FnMut(Ipv6Addr)) {
    const RTM_NEWROUTE: u16 = 24;
    const RTA_DST: u16 = 1;
    let mut msgs = datagram;
    // nlmsghdr: len u32, type u16, flags u16, seq u32, pid u32; then rtmsg (12 bytes):
    // family, dst_len, src_len, tos, table, protocol, scope, type, flags u32; then
    // attributes (len u16, type u16, value), each padded to 4.
    while let Some(head) = msgs.get(..16) {
        let len = u32::from_ne_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let ty = u16::from_ne_bytes([head[4], head[5]]);
        if len < 16 {
            break;
        }
        let Some(msg) = msgs.get(..len) else {
            break;
        };
        if ty == RTM_NEWROUTE
            && let Some(rt) = msg.get(16..28)
            && rt[1] == 128
            && rt[5] == protocol
        {
            let mut attrs = msg.get(28..).unwrap_or_default();
            while let Some(ah) = attrs.get(..4) {
                let alen = u16::from_ne_bytes([ah[0], ah[1]]) as usize;
                let aty = u16::from_ne_bytes([ah[2], ah[3]]);
                if alen < 4 {
                    break;
                }
                if aty == RTA_DST
                    && let Some(v) = attrs.get(4..20)
                    && alen >= 20
                {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(v);
                    f(Ipv6Addr::from(a));
                    break;
                }
                attrs = attrs.get(alen.div_ceil(4) * 4..).unwrap_or_default();
            }
        }
        msgs = msgs.get(len.div_ceil(4) * 4..).unwrap_or_default();
    }
}
