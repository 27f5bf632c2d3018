//! A flood of spoofed IPv6 sources, written fast: 40-byte packets (no next header) through a raw
//! socket with the header included (`IPPROTO_RAW`), from random sources inside a /64 whose
//! interface ids have the top bit set — never a test address or an ISC lab lease (those are
//! `::100`–`::1ff`). Runs on a thread inside the namespace; needs CAP_NET_RAW.
//!
//! And a flood of junk UDP datagrams at one port ([`udp_flood`]): several sockets on threads
//! inside a namespace, bounded in count and time.

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

/// A running flood of junk UDP datagrams (see [`udp_flood`]): how many were handed to the
/// kernel so far, whether every sender still runs, and a way to stop it early.
pub struct UdpFlood {
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    senders: Vec<std::thread::JoinHandle<()>>,
    started: Instant,
}

impl UdpFlood {
    /// Datagrams the senders handed to the kernel so far (what the far end received may be
    /// fewer: a full queue on the way drops silently).
    pub fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether every sender is still sending (none reached its count or time bound).
    pub fn running(&self) -> bool {
        self.senders.iter().all(|h| !h.is_finished())
    }

    /// Stop the senders, wait for them, and return (datagrams sent, time from start to stop).
    pub fn stop(self) -> (u64, Duration) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = self.sent.clone();
        for h in self.senders {
            h.join().expect("flood sender panicked");
        }
        (
            sent.load(std::sync::atomic::Ordering::Relaxed),
            self.started.elapsed(),
        )
    }
}

/// Start `threads` senders inside `ns`, each with its own UDP socket connected to `dst`,
/// writing junk datagrams (8–200 random octets; the first octet random too, so some look like
/// any DHCPv6 message type) as fast as they can. It stops by itself: after `max` datagrams in
/// all or after `max_time`, whichever comes first, or at [`UdpFlood::stop`].
pub fn udp_flood(
    ns: &NetNs,
    dst: SocketAddrV6,
    threads: usize,
    max: u64,
    max_time: Duration,
) -> UdpFlood {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let senders = (0..threads)
        .map(|_| {
            let (sent, stop) = (sent.clone(), stop.clone());
            ns.spawn_in(move || {
                let s = std::net::UdpSocket::bind("[::]:0").expect("bind flood socket");
                s.connect(dst).expect("connect flood socket");
                // A few junk payloads made up front, so the loop is the send and nothing else.
                let junk: Vec<Vec<u8>> = (0..64)
                    .map(|_| {
                        let n = rand::random_range(8..=200);
                        (0..n).map(|_| rand::random::<u8>()).collect()
                    })
                    .collect();
                let mut i = 0usize;
                loop {
                    // Check the bounds every 256 datagrams: cheap, and tight enough.
                    if i % 256 == 0
                        && (stop.load(Ordering::Relaxed)
                            || started.elapsed() >= max_time
                            || sent.load(Ordering::Relaxed) >= max)
                    {
                        return;
                    }
                    match s.send(&junk[i % junk.len()]) {
                        Ok(_) => {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        // ICMP port unreachable from an earlier datagram (nothing listened for a
                        // moment), or a full queue: keep going.
                        Err(e)
                            if matches!(
                                e.raw_os_error(),
                                Some(libc::ECONNREFUSED) | Some(libc::ENOBUFS)
                            ) => {}
                        // Anything else (the namespace torn down under a failed test): stop.
                        Err(e) => {
                            eprintln!("flood sender stops: {e}");
                            return;
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect();
    UdpFlood {
        sent,
        stop,
        senders,
        started,
    }
}
