//! AF_PACKET capture of DHCPv6 on the relay's server-facing interfaces. Its raw socket calls
//! are `unsafe`, each with a `SAFETY:` note (the crate docs list every module that uses unsafe).
//!
//! Where to listen: ISC `dhcrelay -6` on this box receives client messages on the subscriber
//! side and sends them upstream as RELAY-FORW; the server answers with RELAY-REPL. Both cross the
//! **server-facing** (upstream) interface with their whole relay chain — link-address,
//! peer-address (the client's link-local address, the PD next hop), Interface-Id, Remote-Id — so
//! that is where the snooper listens. The subscriber side only shows bare client messages. We
//! never sit in the forwarding path: a packet socket gets a copy.
//!
//! The socket is `AF_PACKET`/`SOCK_DGRAM` bound to `ETH_P_ALL` on one interface: `ETH_P_ALL`,
//! because packet sockets bound to one protocol do not see outgoing frames, and the relay's
//! RELAY-FORW is outgoing. The classic-BPF program of [`super::bpf`] runs in the kernel, so only
//! UDP from port 547 to ports 546/547 is copied to user space. It is attached before the socket
//! is bound, so not one unfiltered frame is queued.
//!
//! Packets arrive in a `TPACKET_V2` receive ring (`PACKET_RX_RING`) mapped into the agent: the
//! kernel copies each packet the filter passes into the ring's next free frame, and the capture
//! reads it in place — no system call per packet or per batch while packets wait (see [`Ring`]
//! for why, and why V2). A packet longer than a frame also waits whole in the socket's receive
//! queue and is read from there.
//!
//! Each packet is handed in place to a [`Sink`] (the daemon's classifies it on this task and
//! queues what it learnt for the cache task). Nothing is dropped in user space: when the
//! sink's bounded queue is full the capture task *waits* for room (counted `queue_full`, not a loss), so back-pressure reaches the one
//! place a packet can be lost, the ring (and, for the rare packet longer than a frame, the
//! socket's receive buffer). The kernel counts every packet it drops there (`PACKET_STATISTICS`
//! tp_drops), and the task reads that count every 256 packets and on every idle heartbeat, so
//! a burst's losses show in `kernel_drop` within a heartbeat of the burst ending — never
//! silently. The receive buffer is set with `SO_RCVBUFFORCE` (root, or CAP_NET_ADMIN, which the
//! agent has for its routes) so it is not cut to `net.core.rmem_max` without a word; without
//! the capability the plain `SO_RCVBUF` (capped) is used.
//!
//! Link flaps: when the interface goes down the kernel unhooks the socket and reports ENETDOWN
//! once; it hooks it again when the interface comes back up. That error is therefore not the end
//! of the capture — it is logged, counted (`link_down`) and reading goes on. Any other receive
//! error (the interface deleted: ENODEV; a socket error) reopens the socket by name with backoff
//! (`reopened`), so an interface that is deleted and made again is snooped again.

use crate::label::labels;
use crate::time::Instant;
use std::io;
use std::mem::size_of;
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::bpf;
use super::datagram;

/// Capture settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Interfaces to snoop (the relay's server-facing ones).
    pub interfaces: Vec<String>,
    /// Bytes of the receive ring per socket: what a burst may queue while the pipeline
    /// catches up, one 2 KiB frame a packet. An allocation, held by the kernel while the
    /// socket is open (a ring is memory, where a receive buffer was only a limit). The
    /// default, 64 MiB, holds 32 768 packets: the backlog of a 50 000-client reboot storm
    /// while the pipeline keeps up with the sender (`cargo bench --bench storm`); a pipeline
    /// far slower than the storm drops (counted) what the ring cannot hold. The filter lets only
    /// DHCPv6 in, so nothing else can take this room. The socket's receive buffer
    /// (`SO_RCVBUFFORCE`, else `SO_RCVBUF`) gets the same size, as a limit: only a packet
    /// longer than a frame waits there.
    pub receive_buffer: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            interfaces: Vec::new(),
            receive_buffer: 64 << 20,
        }
    }
}

/// A DHCPv6 message copied off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snooped {
    pub interface: Arc<str>,
    /// Sent by this box (`PACKET_OUTGOING`), e.g. the relay's RELAY-FORW.
    pub outgoing: bool,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub src_port: u16,
    pub dst_port: u16,
    /// The UDP payload: one DHCPv6 message.
    pub payload: Vec<u8>,
    pub at: Instant,
}

/// One captured DHCPv6 datagram, read in place from the receive ring: what a [`Sink`] is
/// handed. Borrowed, so a sink that classifies where the capture runs copies nothing per
/// packet; [`Packet::to_owned`] makes the [`Snooped`] copy a queue needs.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    pub interface: &'a Arc<str>,
    /// Sent by this box (`PACKET_OUTGOING`), e.g. the relay's RELAY-FORW.
    pub outgoing: bool,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub src_port: u16,
    pub dst_port: u16,
    /// The UDP payload: one DHCPv6 message (valid until the capture releases its frame).
    pub payload: &'a [u8],
    pub at: Instant,
}

impl Packet<'_> {
    /// The packet copied off the ring.
    pub fn to_owned(&self) -> Snooped {
        Snooped {
            interface: self.interface.clone(),
            outgoing: self.outgoing,
            src: self.src,
            dst: self.dst,
            src_port: self.src_port,
            dst_port: self.dst_port,
            payload: self.payload.to_vec(),
            at: self.at,
        }
    }
}

/// What [`Sink::offer`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Handed on.
    Taken,
    /// The next queue is full: the sink holds what it made of the packet until
    /// [`Sink::room`] has handed it on; the capture waits for that (back-pressure to the ring).
    Full,
    /// The consumer is gone for good: the capture ends.
    Closed,
}

/// Where the capture hands each packet. The daemon's sink classifies the packet in place,
/// on the capture task (`snoop::shell`): one task and no copy per packet between the ring and
/// the cache task's queue, where a queue of copies to a classifier task cost an allocation and
/// a cross-task wake-up per packet. [`Queue`] is the plain copying queue (tests).
pub trait Sink: Send {
    /// Take `p` if there is room now, without waiting.
    fn offer(&mut self, p: Packet<'_>) -> Offer;
    /// After [`Offer::Full`]: wait until what the sink holds is handed on; `false`: the
    /// consumer is gone. CANCEL-SAFETY: cancel-safe (nothing held is lost when it is dropped).
    fn room(&mut self) -> impl Future<Output = bool> + Send + '_;
    /// Whether the consumer is gone for good (a capture waiting for its interface gives up).
    fn is_closed(&self) -> bool {
        false
    }
}

/// A [`Sink`] that queues a copy of each packet ([`Snooped`]) on a bounded channel.
#[derive(Debug)]
pub struct Queue {
    tx: mpsc::Sender<Snooped>,
    held: Option<Snooped>,
}

impl Queue {
    pub fn new(tx: mpsc::Sender<Snooped>) -> Queue {
        Queue { tx, held: None }
    }
}

impl Sink for Queue {
    fn offer(&mut self, p: Packet<'_>) -> Offer {
        match self.tx.try_send(p.to_owned()) {
            Ok(()) => Offer::Taken,
            Err(mpsc::error::TrySendError::Full(m)) => {
                self.held = Some(m);
                Offer::Full
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Closed,
        }
    }

    async fn room(&mut self) -> bool {
        if self.held.is_none() {
            return !self.tx.is_closed();
        }
        // The room first, then the packet out of `held`: a cancelled wait loses nothing.
        match self.tx.reserve().await {
            Ok(permit) => {
                if let Some(m) = self.held.take() {
                    permit.send(m);
                }
                true
            }
            Err(_) => false,
        }
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

labels! {
    /// What the capture counts, by [`CaptureCounter::label`].
    pub enum CaptureCounter {
        /// Frames the filter let through.
        Received => "received",
        /// Dropped by the kernel: socket receive queue full (`PACKET_STATISTICS` tp_drops).
        KernelDrop => "kernel_drop",
        /// The sink's queue (the daemon's: the cache task's snooped queue) was full and the
        /// capture waited for room (not a loss: back-pressure to the ring, whose drops are
        /// `kernel_drop`).
        QueueFull => "queue_full",
        /// Not a readable UDP-in-IPv6 datagram.
        Malformed => "malformed",
        /// The interface went down (ENETDOWN); capture resumes when it is up again.
        LinkDown => "link_down",
        /// The socket failed otherwise and was opened again.
        Reopened => "reopened",
    }
}

/// Shared counters of all capture sockets.
#[derive(Debug, Default)]
pub struct CaptureStats {
    counts: [AtomicU64; 6],
    /// Bumped by every capture task per packet and while idle (the watchdog's proof).
    pub heartbeat: crate::notify::Heartbeat,
}

impl CaptureStats {
    pub fn get(&self, c: CaptureCounter) -> u64 {
        self.counts[c as usize].load(Ordering::Relaxed)
    }

    /// Every counter and its count (for a test's or a log's look at all of them at once).
    pub fn snapshot(&self) -> Vec<(CaptureCounter, u64)> {
        CaptureCounter::ALL
            .iter()
            .map(|c| (*c, self.get(*c)))
            .collect()
    }

    fn add(&self, c: CaptureCounter, n: u64) {
        self.counts[c as usize].fetch_add(n, Ordering::Relaxed);
    }
}

/// One filtered packet socket on one interface.
#[derive(Debug)]
pub struct CaptureSocket {
    /// The receive ring the kernel writes packets into (unmapped before the socket closes).
    ring: Ring,
    fd: AsyncFd<OwnedFd>,
    interface: Arc<str>,
    /// SO_RCVBUF it was opened with (to open it again the same way).
    receive_buffer: usize,
}

const ETH_P_ALL: u16 = 0x0003;

impl CaptureSocket {
    /// Opens, filters and binds a packet socket on `interface` (needs CAP_NET_RAW). Must be
    /// called inside a tokio runtime.
    pub fn open(interface: &str, receive_buffer: usize) -> io::Result<CaptureSocket> {
        let index = if_index(interface)?;
        // Protocol 0: the socket receives nothing until bound, so the filter is in place first.
        // SAFETY: plain socket(2) call; the result is checked and owned at once.
        #[allow(unsafe_code)]
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        #[allow(unsafe_code)]
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        attach_filter(&fd, &bpf::dhcpv6_filter())?;
        let rcvbuf = libc::c_int::try_from(receive_buffer).unwrap_or(libc::c_int::MAX);
        // FORCE first: plain SO_RCVBUF is silently cut to net.core.rmem_max (208 KiB on many
        // hosts), far less than a storm's burst; FORCE needs CAP_NET_ADMIN.
        if setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &rcvbuf).is_err() {
            setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &rcvbuf)?;
        }
        // The ring before the bind too: no packet is queued the old way meanwhile.
        let ring = Ring::new(&fd, receive_buffer)?;
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        #[allow(unsafe_code)]
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = index;
        // SAFETY: `sll` is a valid sockaddr_ll and the length passed is its size.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is an owned, open socket; AsyncFd takes ownership and deregisters it
        // before closing it, so the registered descriptor stays valid while registered.
        #[allow(unsafe_code)]
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::ERROR) }
                .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(CaptureSocket {
            ring,
            fd,
            interface: interface.into(),
            receive_buffer,
        })
    }

    pub fn interface(&self) -> &Arc<str> {
        &self.interface
    }

    /// Packets and drops the kernel counted since the last call (`PACKET_STATISTICS` resets).
    pub fn take_kernel_stats(&self) -> io::Result<(u32, u32)> {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` is a valid tpacket_stats and `len` its size; the kernel writes at most that.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::getsockopt(
                self.fd.get_ref().as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut st).cast::<libc::c_void>(),
                &raw mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((st.tp_packets, st.tp_drops))
    }
}

/// Reads packets from `sock` for ever, handing each DHCPv6 datagram to `sink` in place. A full
/// sink is waited for (counted `queue_full`): the packets behind it stay in the ring, where the
/// kernel counts what it must drop (`kernel_drop`, read every 256 packets and when idle). Ends
/// when the sink's consumer is gone.
///
/// Readiness is cleared only when the ring is empty: while packets wait they are taken
/// without a system call, [`BATCH`] at a time.
pub async fn run<S: Sink>(mut sock: CaptureSocket, mut sink: S, stats: Arc<CaptureStats>) {
    let mut since_stats = 0u32;
    let mut beat = crate::notify::heartbeat_timer();
    // Where a packet longer than its frame is read whole (allocated on first use).
    let mut copy: Vec<u8> = Vec::new();
    loop {
        stats.heartbeat.beat();
        let ready = tokio::select! {
            r = sock.fd.ready(Interest::READABLE | Interest::ERROR) => r,
            _ = beat.tick() => {
                // Idle: the drops of a burst that just ended are counted now, not with the
                // 256th packet of some later burst.
                since_stats = 0;
                take_drops(&sock, &stats);
                continue;
            }
        };
        let failed = match ready {
            Err(e) => Some(e),
            Ok(mut guard) => {
                let mut taken = 0;
                while taken < BATCH {
                    let Some((status, frame)) = sock.ring.head() else {
                        break;
                    };
                    taken += 1;
                    let Some(p) = frame_packet(frame) else {
                        stats.add(CaptureCounter::Malformed, 1);
                        sock.ring.release();
                        continue;
                    };
                    let mut pkt = p.data;
                    if status & libc::TP_STATUS_COPY != 0 {
                        // Longer than its frame: the whole packet waits in the socket queue.
                        if copy.is_empty() {
                            copy = vec![0u8; COPY_LEN];
                        }
                        match recv_from(guard.get_ref().get_ref(), &mut copy) {
                            Ok((n, _)) => pkt = &copy[..n],
                            Err(e) => tracing::debug!(interface = %sock.interface, error = %e,
                                len = p.len, "a long packet's copy could not be read; its cut frame is used"),
                        }
                    }
                    if !forward(
                        &sock.interface,
                        pkt,
                        p.outgoing,
                        &mut sink,
                        &stats,
                        &mut beat,
                    )
                    .await
                    {
                        return;
                    }
                    sock.ring.release();
                }
                stats.add(CaptureCounter::Received, taken as u64);
                since_stats += taken as u32;
                if since_stats >= 256 {
                    since_stats = 0;
                    take_drops(&sock, &stats);
                }
                if taken == BATCH {
                    // More may wait: readiness stays set.
                    continue;
                }
                let r = guard.ready();
                if r.is_error() || r.is_read_closed() {
                    // A socket error (ENETDOWN on a link flap) comes without a packet: read it.
                    match recv_error(guard.get_ref().get_ref()) {
                        Ok(()) => {
                            guard.clear_ready();
                            None
                        }
                        Err(e) => Some(e),
                    }
                } else {
                    guard.clear_ready();
                    None
                }
            }
        };
        let Some(e) = failed else {
            continue;
        };
        if e.raw_os_error() == Some(libc::ENETDOWN) {
            // The kernel re-hooks this socket when the interface is up again.
            stats.add(CaptureCounter::LinkDown, 1);
            tracing::warn!(interface = %sock.interface,
                "snooped interface went down; capture resumes when it is up again");
            continue;
        }
        tracing::error!(interface = %sock.interface, error = %e,
            "capture socket failed; opening it again");
        if sink.is_closed() {
            return;
        }
        sock = reopen(&sock.interface, sock.receive_buffer, &sink).await;
        stats.add(CaptureCounter::Reopened, 1);
        tracing::info!(interface = %sock.interface, "capture socket open again");
    }
}

/// The pending error of a socket whose readiness says error: `Ok` when there is none (a
/// non-blocking read finds nothing). A packet in the socket queue cannot be there (every
/// packet goes to the ring; a long one's copy is read with its frame), so one read is all.
fn recv_error(fd: &OwnedFd) -> io::Result<()> {
    let mut none = [0u8; 0];
    match recv_from(fd, &mut none) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Parses one captured packet and hands its DHCPv6 payload to `sink`, waiting for room.
/// `false`: the consumer is gone (the capture ends).
async fn forward<S: Sink>(
    interface: &Arc<str>,
    pkt: &[u8],
    outgoing: bool,
    sink: &mut S,
    stats: &CaptureStats,
    beat: &mut tokio::time::Interval,
) -> bool {
    let d = match datagram::parse(pkt) {
        Ok(d) => d,
        Err(e) => {
            stats.add(CaptureCounter::Malformed, 1);
            tracing::debug!(interface = %interface, reason = e.label(), "unreadable packet");
            return true;
        }
    };
    let p = Packet {
        interface,
        outgoing,
        src: d.src,
        dst: d.dst,
        src_port: d.src_port,
        dst_port: d.dst_port,
        payload: d.payload,
        at: Instant::now(),
    };
    match sink.offer(p) {
        Offer::Taken => true,
        Offer::Closed => false,
        Offer::Full => {
            stats.add(CaptureCounter::QueueFull, 1);
            wait_for_room(sink, stats, beat).await
        }
    }
}

/// Wait for the sink to hand on what it holds, beating the heartbeat meanwhile: a capture held
/// back by a slow consumer is not stuck (the consumer's own heartbeat tells whether it is).
/// `false`: the consumer is gone.
async fn wait_for_room<S: Sink>(
    sink: &mut S,
    stats: &CaptureStats,
    beat: &mut tokio::time::Interval,
) -> bool {
    let room = sink.room();
    tokio::pin!(room);
    loop {
        tokio::select! {
            ok = &mut room => return ok,
            _ = beat.tick() => stats.heartbeat.beat(),
        }
    }
}

/// Add the kernel's drop count since the last read to `kernel_drop`.
fn take_drops(sock: &CaptureSocket, stats: &CaptureStats) {
    if let Ok((_, drops)) = sock.take_kernel_stats() {
        stats.add(CaptureCounter::KernelDrop, u64::from(drops));
    }
}

/// [`run`] on `interface` once it exists: a snoop interface missing at start (a VLAN or bond
/// created after lqagent) is waited for, not fatal.
pub(crate) async fn run_when_present<S: Sink>(
    interface: String,
    receive_buffer: usize,
    sink: S,
    stats: Arc<CaptureStats>,
) {
    tracing::warn!(
        interface,
        "snoop interface missing; capture starts when it appears"
    );
    let sock = reopen(&interface, receive_buffer, &sink).await;
    tracing::info!(interface, "snoop interface appeared; capturing");
    run(sock, sink, stats).await;
}

/// Open the capture socket on `interface` again, retrying with backoff (0.1 s doubling to 10 s)
/// until it exists; gives up only with the pipeline (the receiver is gone).
async fn reopen<S: Sink>(interface: &str, receive_buffer: usize, sink: &S) -> CaptureSocket {
    let mut attempt: u32 = 0;
    loop {
        let delay = crate::time::backoff(
            attempt,
            crate::time::Duration::from_millis(100),
            crate::time::Duration::from_secs(10),
        );
        tokio::time::sleep(delay).await;
        match CaptureSocket::open(interface, receive_buffer) {
            Ok(s) => return s,
            Err(e) => {
                tracing::debug!(interface, error = %e, "capture socket cannot be opened yet");
                if sink.is_closed() {
                    // Nobody reads anymore: wait forever rather than spin (the task is aborted
                    // at shutdown).
                    std::future::pending::<()>().await;
                }
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

fn if_index(name: &str) -> io::Result<i32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    #[allow(unsafe_code)]
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {name:?}"),
        ));
    }
    i32::try_from(i).map_err(|_| io::Error::other("interface index out of range"))
}

fn attach_filter(fd: &OwnedFd, prog: &[crate::bpf::Insn]) -> io::Result<()> {
    let mut insns: Vec<libc::sock_filter> = prog
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: u16::try_from(insns.len()).map_err(|_| io::Error::other("BPF program too long"))?,
        filter: insns.as_mut_ptr(),
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T and the length passed is its size; the kernel copies it.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast::<libc::c_void>(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn recv_from(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    #[allow(unsafe_code)]
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `buf` is valid for writes of its length; `sll`/`len` describe a valid address buffer.
    #[allow(unsafe_code)]
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast::<libc::c_void>(),
            buf.len(),
            libc::MSG_TRUNC,
            (&raw mut sll).cast::<libc::sockaddr>(),
            &raw mut len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // MSG_TRUNC returns the real length: a longer packet than `buf` is cut to `buf`.
    let n = usize::try_from(n).unwrap_or(0).min(buf.len());
    Ok((n, sll.sll_pkttype == libc::PACKET_OUTGOING))
}

/// Frames taken from the ring per readiness check: then the task goes back through the
/// runtime's readiness (and its cooperative budget), so a ring that never empties does not
/// starve the worker's other tasks.
pub const BATCH: usize = 64;

/// Bytes of one ring frame. A frame holds the `tpacket2_hdr`, the `sockaddr_ll` and the packet
/// from its IPv6 header on (at offset 80 for a `SOCK_DGRAM` socket), so up to 1 968 bytes of
/// packet: a relayed DHCPv6 message on a 1 500-byte link fits. A longer packet (jumbo frames)
/// is not cut: its frame is marked `TP_STATUS_COPY` and the whole packet waits in the socket's
/// receive queue, read from there ([`PACKET_COPY_THRESH`]).
const FRAME: usize = 2048;

/// Bytes of one ring block (the kernel allocates the ring block by block): 32 pages of 4 KiB,
/// small enough to be found contiguous on a long-running box, a multiple of every page size
/// Linux uses for a BNG (4, 16, 64 KiB) and of [`FRAME`].
const BLOCK: usize = 128 << 10;

/// `linux/if_packet.h`: the ring's header layout (`enum tpacket_versions`).
const TPACKET_V2: libc::c_int = 1;
/// `linux/if_packet.h` socket option: a packet longer than its frame is also queued whole on
/// the socket (the frame says so with `TP_STATUS_COPY`).
const PACKET_COPY_THRESH: libc::c_int = libc::PACKET_COPY_THRESH;

/// Offsets in a `TPACKET_V2` frame (`struct tpacket2_hdr`, then `struct sockaddr_ll` at
/// `TPACKET_ALIGN(sizeof(struct tpacket2_hdr))`).
const TP_LEN: usize = 4;
const TP_SNAPLEN: usize = 8;
const TP_MAC: usize = 12;
const SLL_PKTTYPE: usize = 32 + 10;

/// The largest packet the socket queue hands over whole (a `TP_STATUS_COPY` packet; a longer
/// one is cut, its real length reported through `MSG_TRUNC` and clamped).
const COPY_LEN: usize = 65_536;

/// A `TPACKET_V2` receive ring (`PACKET_RX_RING`) mapped into this process: the kernel writes
/// each packet the filter passes into the next free frame and hands the frame over by its
/// status word; the reader reads it in place and hands it back.
///
/// Why a ring and not `recvmmsg`: in a storm the copy to user space, the per-packet message
/// headers and the socket buffer's accounting and freeing were the capture's cost, about a
/// sixth of the agent's CPU per exchange (issue 22's storm bench, `perf`). With the ring the
/// kernel copies the packet once, in the context that delivers it, and reading a packet is a
/// memory read: no system call while packets are waiting. `TPACKET_V2` and not `V3`: V3 wakes
/// the reader only when a block is full or its timer (milliseconds) expires, which would add
/// up to that timer to the REPLY → route latency of a quiet box; V2 wakes it per packet.
///
/// The ring is memory the kernel holds for the socket's lifetime (not, as a receive buffer
/// is, a limit): its size is [`CaptureConfig::receive_buffer`], and it holds that many bytes
/// over [`FRAME`] packets (64 MiB: 32 768 packets). When it is full the kernel drops the
/// packet and counts it (`PACKET_STATISTICS` tp_drops, as before).
struct Ring {
    base: std::ptr::NonNull<u8>,
    /// Bytes mapped.
    len: usize,
    /// Frames in the ring.
    frames: usize,
    /// The next frame the kernel hands over (it fills them in order).
    head: usize,
}

// SAFETY: the mapping belongs to the `Ring` alone (unmapped on drop); the only shared state is
// each frame's status word, read and written atomically (Acquire/Release) per the ring's
// protocol with the kernel. `head` changes only through `&mut self`.
#[allow(unsafe_code)]
unsafe impl Send for Ring {}
// SAFETY: `&self` methods only read frames the kernel has handed over (it does not write them
// until their status is given back, which takes `&mut self`).
#[allow(unsafe_code)]
unsafe impl Sync for Ring {}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("frames", &self.frames)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// Sets up a `TPACKET_V2` ring of about `bytes` on the unbound socket `fd` and maps it.
    fn new(fd: &OwnedFd, bytes: usize) -> io::Result<Ring> {
        let (block, blocks) = ring_geometry(bytes, page_size());
        let frames = blocks * (block / FRAME);
        let version = TPACKET_V2;
        setsockopt(fd, libc::SOL_PACKET, libc::PACKET_VERSION, &version)?;
        let copy: libc::c_int = 1;
        setsockopt(fd, libc::SOL_PACKET, PACKET_COPY_THRESH, &copy)?;
        let too_big = || io::Error::other("capture ring too large");
        let req = libc::tpacket_req {
            tp_block_size: u32::try_from(block).map_err(|_| too_big())?,
            tp_block_nr: u32::try_from(blocks).map_err(|_| too_big())?,
            tp_frame_size: FRAME as u32,
            tp_frame_nr: u32::try_from(frames).map_err(|_| too_big())?,
        };
        setsockopt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
        let len = block * blocks;
        // SAFETY: a shared mapping of the socket's ring, whose size is exactly `len` (the
        // kernel refuses any other); the result is checked before use.
        #[allow(unsafe_code)]
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = std::ptr::NonNull::new(p.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Ring {
            base,
            len,
            frames,
            head: 0,
        })
    }

    /// Frame `i`'s status word.
    fn status(&self, i: usize) -> &std::sync::atomic::AtomicU32 {
        debug_assert!(i < self.frames);
        // SAFETY: frame `i` lies inside the mapping (i < frames, frames * FRAME <= len), its
        // first 4 bytes are the u32 status, aligned (FRAME and the page-aligned base are
        // multiples of 4); the kernel writes it atomically, and so is it read and written here.
        #[allow(unsafe_code)]
        unsafe {
            std::sync::atomic::AtomicU32::from_ptr(self.base.as_ptr().add(i * FRAME).cast::<u32>())
        }
    }

    /// The frame at the head with its status, if the kernel has handed it over.
    fn head(&self) -> Option<(u32, &[u8])> {
        let status = self.status(self.head).load(Ordering::Acquire);
        if status & libc::TP_STATUS_USER == 0 {
            return None;
        }
        // SAFETY: the frame lies inside the mapping; the Acquire load above saw it handed to
        // user space, so the kernel wrote it before and leaves it alone until `release`, which
        // needs `&mut self` and so ends this borrow first.
        #[allow(unsafe_code)]
        let frame =
            unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(self.head * FRAME), FRAME) };
        Some((status, frame))
    }

    /// Hands the head frame back to the kernel and moves on to the next.
    fn release(&mut self) {
        self.status(self.head)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.head = (self.head + 1) % self.frames;
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are the mapping made in `Ring::new`, unmapped once, here; no
        // borrow of it outlives `self`.
        #[allow(unsafe_code)]
        unsafe {
            libc::munmap(self.base.as_ptr().cast::<libc::c_void>(), self.len);
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|p| *p > 0).unwrap_or(4096)
}

/// Block size and count of a ring of about `bytes` (at least one page, rounded up to whole
/// blocks): [`BLOCK`]-sized blocks, or one block of whole pages when `bytes` is smaller.
fn ring_geometry(bytes: usize, page: usize) -> (usize, usize) {
    let page = page.max(FRAME);
    let bytes = bytes.max(page);
    if bytes < BLOCK.max(page) {
        (bytes.div_ceil(page) * page, 1)
    } else {
        let block = BLOCK.max(page);
        (block, bytes.div_ceil(block))
    }
}

/// A packet in a ring frame.
#[derive(Debug, PartialEq, Eq)]
struct FramePacket<'a> {
    /// What the frame holds of the packet (all of it unless it was longer than the frame).
    data: &'a [u8],
    /// The packet's real length.
    len: usize,
    /// Sent by this box (`PACKET_OUTGOING`).
    outgoing: bool,
}

/// Reads a `TPACKET_V2` frame's header: where the packet lies, how long it was, its direction.
/// The offsets come from the kernel, but are checked all the same: a frame whose packet would
/// run past its end is `None`, never an index out of range.
fn frame_packet(frame: &[u8]) -> Option<FramePacket<'_>> {
    let u32_at = |o: usize| -> Option<usize> {
        Some(u32::from_ne_bytes(frame.get(o..o + 4)?.try_into().ok()?) as usize)
    };
    let len = u32_at(TP_LEN)?;
    let snap = u32_at(TP_SNAPLEN)?;
    let mac = usize::from(u16::from_ne_bytes(
        frame.get(TP_MAC..TP_MAC + 2)?.try_into().ok()?,
    ));
    let data = frame.get(mac..mac.checked_add(snap)?)?;
    let outgoing = *frame.get(SLL_PKTTYPE)? == libc::PACKET_OUTGOING;
    Some(FramePacket {
        data,
        len,
        outgoing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as the kernel writes it: header fields, the direction, the packet at `mac`.
    fn frame(len: u32, snap: u32, mac: u16, pkttype: u8, pkt: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; FRAME];
        f[0..4].copy_from_slice(&libc::TP_STATUS_USER.to_ne_bytes());
        f[TP_LEN..TP_LEN + 4].copy_from_slice(&len.to_ne_bytes());
        f[TP_SNAPLEN..TP_SNAPLEN + 4].copy_from_slice(&snap.to_ne_bytes());
        f[TP_MAC..TP_MAC + 2].copy_from_slice(&mac.to_ne_bytes());
        f[SLL_PKTTYPE] = pkttype;
        let m = usize::from(mac);
        if let Some(d) = f.get_mut(m..m + pkt.len()) {
            d.copy_from_slice(pkt);
        }
        f
    }

    /// The header fields are read where `linux/if_packet.h` puts them (the layout libc
    /// declares), and the packet is where `tp_mac` says, `tp_snaplen` long.
    #[test]
    fn a_frame_gives_its_packet_length_and_direction() {
        assert_eq!(std::mem::offset_of!(libc::tpacket2_hdr, tp_len), TP_LEN);
        assert_eq!(
            std::mem::offset_of!(libc::tpacket2_hdr, tp_snaplen),
            TP_SNAPLEN
        );
        assert_eq!(std::mem::offset_of!(libc::tpacket2_hdr, tp_mac), TP_MAC);
        assert_eq!(
            SLL_PKTTYPE,
            size_of::<libc::tpacket2_hdr>().next_multiple_of(libc::TPACKET_ALIGNMENT)
                + std::mem::offset_of!(libc::sockaddr_ll, sll_pkttype)
        );
        let f = frame(5, 5, 80, libc::PACKET_OUTGOING, b"hello");
        assert_eq!(
            frame_packet(&f),
            Some(FramePacket {
                data: b"hello",
                len: 5,
                outgoing: true
            })
        );
        // Cut (a longer packet than the frame): what the frame holds, and the real length.
        let f = frame(9000, 3, 80, libc::PACKET_HOST, b"abc");
        assert_eq!(
            frame_packet(&f),
            Some(FramePacket {
                data: b"abc",
                len: 9000,
                outgoing: false
            })
        );
    }

    /// Offsets and lengths that would run past the frame are refused, never indexed.
    #[test]
    fn a_frame_claiming_more_than_it_holds_is_refused() {
        for (snap, mac) in [
            (FRAME as u32, 80),
            (1, u16::MAX),
            (u32::MAX, 80),
            (FRAME as u32 - 79, 80),
        ] {
            assert_eq!(
                frame_packet(&frame(1, snap, mac, 0, b"")),
                None,
                "{snap} {mac}"
            );
        }
        assert!(frame_packet(&frame(1, FRAME as u32 - 80, 80, 0, b"")).is_some());
        for cut in 0..=SLL_PKTTYPE {
            assert_eq!(frame_packet(&frame(1, 0, 16, 0, b"")[..cut]), None, "{cut}");
        }
    }

    /// The ring is whole blocks of whole frames: at least a page; the size asked for rounded
    /// up; small sizes one block of pages, large ones [`BLOCK`]-sized blocks.
    #[test]
    fn ring_geometry_is_whole_blocks_of_whole_frames() {
        for page in [4096, 16 << 10, 64 << 10] {
            for bytes in [0, 1, 4 << 10, 100_000, BLOCK, BLOCK + 1, 64 << 20] {
                let (block, n) = ring_geometry(bytes, page);
                assert_eq!(block % page, 0, "{bytes} {page}");
                assert_eq!(block % FRAME, 0, "{bytes} {page}");
                assert!(block * n >= bytes.max(page), "{bytes} {page}");
                assert!(block * n < bytes.max(page) + block, "{bytes} {page}");
                assert!(block <= BLOCK.max(page));
            }
        }
        assert_eq!(ring_geometry(4 << 10, 4096), (4096, 1));
        assert_eq!(ring_geometry(64 << 20, 4096), (BLOCK, 512));
    }
}
