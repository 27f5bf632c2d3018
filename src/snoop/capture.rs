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
//! Nothing is dropped in user space: when the classifier's bounded queue is full the capture
//! task *waits* for room (counted `queue_full`, not a loss), so back-pressure reaches the one
//! place a packet can be lost, the socket's receive buffer. The kernel counts every packet it
//! drops there (`PACKET_STATISTICS` tp_drops), and the task reads that count every 256 packets
//! and on every idle heartbeat, so a burst's losses show in `kernel_drop` within a heartbeat of
//! the burst ending — never silently. The buffer is set with `SO_RCVBUFFORCE` (root, or
//! CAP_NET_ADMIN, which the agent has for its routes) so it is not cut to `net.core.rmem_max`
//! without a word; without the capability the plain `SO_RCVBUF` (capped) is used.
//!
//! Link flaps: when the interface goes down the kernel unhooks the socket and reports ENETDOWN
//! once; it hooks it again when the interface comes back up. That error is therefore not the end
//! of the capture — it is logged, counted (`link_down`) and reading goes on. Any other receive
//! error (the interface deleted: ENODEV; a socket error) reopens the socket by name with backoff
//! (`reopened`), so an interface that is deleted and made again is snooped again.

use crate::label::labels;
use std::io;
use std::mem::size_of;
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

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
    /// Captured messages queued for the classifier; when it is full the capture waits (and
    /// the socket buffer fills).
    pub queue: usize,
    /// Kernel receive buffer per socket (`SO_RCVBUFFORCE`, else `SO_RCVBUF`), bytes: what a
    /// burst may queue while the pipeline catches up. A limit, not an allocation: memory is
    /// only held while packets wait. The default, 64 MiB (the kernel doubles it), holds well
    /// over 100 000 queued DHCPv6 packets (under 1 KiB each as the kernel accounts them): the
    /// backlog of a 50 000-client reboot storm even when the pipeline runs at a fraction of
    /// the storm's rate (`cargo bench --bench storm`). The filter lets only DHCPv6 in, so
    /// nothing else can take this room.
    pub receive_buffer: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            interfaces: Vec::new(),
            queue: 4096,
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

labels! {
    /// What the capture counts, by [`CaptureCounter::label`].
    pub enum CaptureCounter {
        /// Frames the filter let through.
        Received => "received",
        /// Dropped by the kernel: socket receive queue full (`PACKET_STATISTICS` tp_drops).
        KernelDrop => "kernel_drop",
        /// The classifier's queue was full and the capture waited for room (not a loss:
        /// back-pressure to the socket buffer, whose drops are `kernel_drop`).
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

    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        CaptureCounter::ALL
            .iter()
            .map(|c| (c.label(), self.get(*c)))
            .collect()
    }

    fn add(&self, c: CaptureCounter, n: u64) {
        self.counts[c as usize].fetch_add(n, Ordering::Relaxed);
    }
}

/// One filtered packet socket on one interface.
#[derive(Debug)]
pub struct CaptureSocket {
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
            fd,
            interface: interface.into(),
            receive_buffer,
        })
    }

    pub fn interface(&self) -> &Arc<str> {
        &self.interface
    }

    /// Receives one filtered packet into `buf`: its length and whether it was outgoing.
    ///
    /// CANCEL-SAFETY: a packet is either left in the kernel queue or returned whole.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        loop {
            // ERROR too: a socket error (ENETDOWN on a link flap) comes without a packet and
            // must wake the reader, or it would only be seen with the next packet.
            let mut guard = self.fd.ready(Interest::READABLE | Interest::ERROR).await?;
            match guard.try_io(|fd| recv_from(fd.get_ref(), buf)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives up to [`BATCH`] filtered packets into `batch` with one `recvmmsg`: how many.
    /// A storm queues thousands of packets; one syscall and one readiness check per packet was
    /// the capture's largest cost (issue 22's storm bench), so whatever is queued is taken in
    /// batches. Each slot is as large as the single-packet buffer was, so nothing is cut that
    /// was not cut before.
    ///
    /// CANCEL-SAFETY: packets are either left in the kernel queue or all returned in `batch`.
    pub async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.ready(Interest::READABLE | Interest::ERROR).await?;
            match guard.try_io(|fd| recv_many(fd.get_ref(), batch)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
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

/// Reads packets from `sock` for ever, forwarding DHCPv6 payloads into `tx`. A full queue is
/// waited for (counted `queue_full`): the packets behind it stay in the socket buffer, where
/// the kernel counts what it must drop (`kernel_drop`, read every 256 packets and when idle).
/// Ends when `tx` is closed.
pub async fn run(mut sock: CaptureSocket, tx: mpsc::Sender<Snooped>, stats: Arc<CaptureStats>) {
    let mut batch = RecvBatch::new();
    let mut since_stats = 0u32;
    let mut beat = crate::notify::heartbeat_timer();
    loop {
        stats.heartbeat.beat();
        // CANCEL-SAFETY: `recv_batch` leaves packets in the kernel queue or returns them whole.
        let received = tokio::select! {
            r = sock.recv_batch(&mut batch) => r,
            _ = beat.tick() => {
                // Idle: the drops of a burst that just ended are counted now, not with the
                // 256th packet of some later burst.
                since_stats = 0;
                take_drops(&sock, &stats);
                continue;
            }
        };
        let count = match received {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => {
                // The kernel re-hooks this socket when the interface is up again.
                stats.add(CaptureCounter::LinkDown, 1);
                tracing::warn!(interface = %sock.interface,
                    "snooped interface went down; capture resumes when it is up again");
                continue;
            }
            Err(e) => {
                tracing::error!(interface = %sock.interface, error = %e,
                    "capture socket failed; opening it again");
                if tx.is_closed() {
                    return;
                }
                sock = reopen(&sock.interface, sock.receive_buffer, &tx).await;
                stats.add(CaptureCounter::Reopened, 1);
                tracing::info!(interface = %sock.interface, "capture socket open again");
                continue;
            }
        };
        stats.add(CaptureCounter::Received, count as u64);
        since_stats += count as u32;
        if since_stats >= 256 {
            since_stats = 0;
            take_drops(&sock, &stats);
        }
        for i in 0..count {
            let Some((pkt, outgoing)) = batch.packet(i) else {
                continue;
            };
            if !forward(&sock, pkt, outgoing, &tx, &stats, &mut beat).await {
                return;
            }
        }
    }
}

/// Parses one captured packet and queues its DHCPv6 payload for the classifier, waiting for
/// room. `false`: the queue is closed (the capture ends).
async fn forward(
    sock: &CaptureSocket,
    pkt: &[u8],
    outgoing: bool,
    tx: &mpsc::Sender<Snooped>,
    stats: &CaptureStats,
    beat: &mut tokio::time::Interval,
) -> bool {
    {
        let d = match datagram::parse(pkt) {
            Ok(d) => d,
            Err(e) => {
                stats.add(CaptureCounter::Malformed, 1);
                tracing::debug!(interface = %sock.interface, reason = e.label(), "unreadable packet");
                return true;
            }
        };
        let msg = Snooped {
            interface: sock.interface.clone(),
            outgoing,
            src: d.src,
            dst: d.dst,
            src_port: d.src_port,
            dst_port: d.dst_port,
            payload: d.payload.to_vec(),
            at: Instant::now(),
        };
        let permit = match tx.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Closed(())) => return false,
            Err(mpsc::error::TrySendError::Full(())) => {
                stats.add(CaptureCounter::QueueFull, 1);
                match wait_for_room(tx, stats, beat).await {
                    Some(p) => p,
                    None => return false,
                }
            }
        };
        permit.send(msg);
        true
    }
}

/// Wait for room in the classifier's queue, beating the heartbeat meanwhile: a capture held
/// back by a slow consumer is not stuck (the consumer's own heartbeat tells whether it is).
/// `None`: the queue is closed.
async fn wait_for_room<'a>(
    tx: &'a mpsc::Sender<Snooped>,
    stats: &CaptureStats,
    beat: &mut tokio::time::Interval,
) -> Option<mpsc::Permit<'a, Snooped>> {
    let reserve = tx.reserve();
    tokio::pin!(reserve);
    loop {
        tokio::select! {
            p = &mut reserve => return p.ok(),
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
pub(crate) async fn run_when_present(
    interface: String,
    receive_buffer: usize,
    tx: mpsc::Sender<Snooped>,
    stats: Arc<CaptureStats>,
) {
    tracing::warn!(
        interface,
        "snoop interface missing; capture starts when it appears"
    );
    let sock = reopen(&interface, receive_buffer, &tx).await;
    tracing::info!(interface, "snoop interface appeared; capturing");
    run(sock, tx, stats).await;
}

/// Open the capture socket on `interface` again, retrying with backoff (0.1 s doubling to 10 s)
/// until it exists; gives up only with the pipeline (the receiver is gone).
async fn reopen(
    interface: &str,
    receive_buffer: usize,
    tx: &mpsc::Sender<Snooped>,
) -> CaptureSocket {
    let mut attempt: u32 = 0;
    loop {
        let delay = crate::time::backoff(
            attempt,
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(10),
        );
        tokio::time::sleep(delay).await;
        match CaptureSocket::open(interface, receive_buffer) {
            Ok(s) => return s,
            Err(e) => {
                tracing::debug!(interface, error = %e, "capture socket cannot be opened yet");
                if tx.is_closed() {
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

/// Packets taken by one `recvmmsg`: at most this many.
pub const BATCH: usize = 16;

/// Size of each packet slot: the largest packet a packet socket hands over whole (a longer one
/// is cut, its real length reported through `MSG_TRUNC` and clamped).
const SLOT: usize = 65_536;

/// The buffers of one [`CaptureSocket::recv_batch`]: [`BATCH`] slots of [`SLOT`] bytes (one
/// allocation, zeroed lazily by the allocator's fresh pages, so only what packets touch is
/// resident), with each packet's length and direction.
pub struct RecvBatch {
    buf: Vec<u8>,
    lens: [usize; BATCH],
    outgoing: [bool; BATCH],
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new()
    }
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        RecvBatch {
            buf: vec![0u8; BATCH * SLOT],
            lens: [0; BATCH],
            outgoing: [false; BATCH],
        }
    }

    /// Packet `i` of the last receive and whether it was outgoing (`None` past [`BATCH`]).
    pub fn packet(&self, i: usize) -> Option<(&[u8], bool)> {
        let len = *self.lens.get(i)?;
        let start = i.checked_mul(SLOT)?;
        let pkt = self.buf.get(start..start.checked_add(len.min(SLOT))?)?;
        Some((pkt, *self.outgoing.get(i)?))
    }
}

/// One `recvmmsg` of up to [`BATCH`] packets into `batch` (the socket is non-blocking: it
/// returns what is queued, or EAGAIN when nothing is).
fn recv_many(fd: &OwnedFd, batch: &mut RecvBatch) -> io::Result<usize> {
    // SAFETY: sockaddr_ll, iovec and mmsghdr are plain old data; all-zero is a valid value.
    #[allow(unsafe_code)]
    let mut addrs: [libc::sockaddr_ll; BATCH] = unsafe { std::mem::zeroed() };
    #[allow(unsafe_code)]
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    #[allow(unsafe_code)]
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (i, ((iov, hdr), addr)) in iovs
        .iter_mut()
        .zip(hdrs.iter_mut())
        .zip(addrs.iter_mut())
        .enumerate()
    {
        let slot = &mut batch.buf[i * SLOT..(i + 1) * SLOT];
        iov.iov_base = slot.as_mut_ptr().cast::<libc::c_void>();
        iov.iov_len = SLOT;
        hdr.msg_hdr.msg_name = (addr as *mut libc::sockaddr_ll).cast::<libc::c_void>();
        hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // The iovec is set below, once `iovs` is no longer borrowed mutably.
    }
    for (iov, hdr) in iovs.iter_mut().zip(hdrs.iter_mut()) {
        hdr.msg_hdr.msg_iov = iov as *mut libc::iovec;
        hdr.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every header points at its own live sockaddr_ll and iovec, each iovec at its own
    // SLOT bytes of `batch.buf`; all outlive the call, and the kernel writes at most BATCH
    // headers, each within the lengths given.
    #[allow(unsafe_code)]
    let n = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_TRUNC,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = usize::try_from(n).unwrap_or(0).min(BATCH);
    for i in 0..n {
        // MSG_TRUNC: msg_len is the real length; a longer packet than its slot is cut to it.
        batch.lens[i] = (hdrs[i].msg_len as usize).min(SLOT);
        batch.outgoing[i] = addrs[i].sll_pkttype == libc::PACKET_OUTGOING;
    }
    Ok(n)
}
