//! Which interface a leasequery reply arrived on (IPV6_PKTINFO, RFC 3542 §6.1).
//!
//! The requestor accepts a reply only from the queried server's address, but a subscriber can
//! forge that source. A reply that arrives on a subscriber-facing interface cannot be the
//! server's (servers sit upstream), so the shell refuses it. The kernel tells the arrival
//! interface with each datagram once `IPV6_RECVPKTINFO` is on; reading it needs `recvmsg`, which
//! the safe socket wrappers do not offer with control data: this module is the one place the
//! requestor uses `unsafe`, each block with its SAFETY argument.
//!
//! The same control data carries SO_RXQ_OVFL: how many datagrams the kernel dropped at this
//! socket because its receive buffer was full. Under a flood at our port replies drown there,
//! unseen by anything else we count; this makes the loss visible.

use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Ask the kernel for IPV6_PKTINFO and SO_RXQ_OVFL with every datagram on `fd`.
pub(super) fn enable(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_on(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)?;
    set_on(fd, libc::SOL_SOCKET, libc::SO_RXQ_OVFL)
}

fn set_on(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a live c_int and the length passed is its size; the kernel copies it.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const on).cast::<libc::c_void>(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The socket's running count of datagrams the kernel dropped (`SK_MEMINFO_DROPS` of
/// SO_MEMINFO; the number SO_RXQ_OVFL reports). Read when the counters are asked for: under a
/// flood the socket filter refuses, no datagram arrives to carry SO_RXQ_OVFL.
pub(super) fn drops(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SK_MEMINFO_VARS is 9 in every kernel since 4.x; room for more the kernel may add.
    let mut info = [0u32; 16];
    let mut len = size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` is a live buffer of `len` bytes; the kernel writes at most `len` bytes and
    // stores how many it wrote in `len`.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast::<libc::c_void>(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    const SK_MEMINFO_DROPS: usize = 8;
    if (len as usize) < (SK_MEMINFO_DROPS + 1) * size_of::<u32>() {
        return Err(io::Error::other("SO_MEMINFO without a drop count"));
    }
    Ok(info[SK_MEMINFO_DROPS])
}

/// One received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Received {
    pub len: usize,
    pub from: SocketAddr,
    /// Arrival interface index, when the kernel said (IPV6_PKTINFO).
    pub ifindex: Option<u32>,
    /// The socket's running count of datagrams the kernel dropped, as it was when this one was
    /// queued (SO_RXQ_OVFL; sent only once non-zero; wraps at 2^32).
    pub overflow: Option<u32>,
}

/// One datagram: its length, sender and (when the kernel said) arrival interface index and
/// the socket's drop count. Non-blocking: `WouldBlock` when nothing is queued.
pub(super) fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    // SAFETY: sockaddr_in6 is plain old data; all-zero is a valid value.
    #[allow(unsafe_code)]
    let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    // Room for one in6_pktinfo cmsg and slack for others the kernel might add.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast::<libc::c_void>(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid value.
    #[allow(unsafe_code)]
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut from).cast::<libc::c_void>();
    msg.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast::<libc::c_void>();
    msg.msg_controllen = size_of_val(&control);
    // SAFETY: every pointer in `msg` refers to a live local buffer of the length given, valid
    // for writes for the duration of the call.
    #[allow(unsafe_code)]
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let sender = SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::from(from.sin6_addr.s6_addr),
        u16::from_be(from.sin6_port),
        from.sin6_flowinfo,
        from.sin6_scope_id,
    ));
    // Read the control data as bytes, with every length checked (no CMSG_* pointer walking).
    let len = msg.msg_controllen.min(size_of_val(&control));
    let bytes: Vec<u8> = control
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .take(len)
        .collect();
    Ok(Received {
        len: n as usize,
        from: sender,
        ifindex: pktinfo_ifindex(&bytes),
        overflow: overflow_count(&bytes),
    })
}

/// The interface index of the first IPV6_PKTINFO control message in `control`.
pub(super) fn pktinfo_ifindex(control: &[u8]) -> Option<u32> {
    // struct in6_pktinfo { struct in6_addr ipi6_addr; unsigned int ipi6_ifindex; }
    let data = find_cmsg(control, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)?;
    Some(u32::from_ne_bytes(data.get(16..20)?.try_into().ok()?))
}

/// The drop count of the first SO_RXQ_OVFL control message in `control` (a u32).
pub(super) fn overflow_count(control: &[u8]) -> Option<u32> {
    let data = find_cmsg(control, libc::SOL_SOCKET, libc::SO_RXQ_OVFL)?;
    Some(u32::from_ne_bytes(data.get(..4)?.try_into().ok()?))
}

/// The data of the first control message of `level`/`kind` in `control` (the kernel's
/// cmsghdr layout: length (size_t), level (int), type (int), data, each padded to size_t).
fn find_cmsg(control: &[u8], want_level: i32, want_kind: i32) -> Option<&[u8]> {
    const WORD: usize = size_of::<usize>();
    let hdr = WORD + 8;
    let mut at = 0;
    while at + hdr <= control.len() {
        let len = usize::from_ne_bytes(control.get(at..at + WORD)?.try_into().ok()?);
        let level = i32::from_ne_bytes(control.get(at + WORD..at + WORD + 4)?.try_into().ok()?);
        let kind = i32::from_ne_bytes(control.get(at + WORD + 4..at + hdr)?.try_into().ok()?);
        if len < hdr {
            return None;
        }
        let data = control.get(at + hdr..at + len)?;
        if level == want_level && kind == want_kind {
            return Some(data);
        }
        at += len.div_ceil(WORD) * WORD;
    }
    None
}

/// The index of interface `name` now (`None` when it does not exist), in this thread's network
/// namespace (`/sys/class/net` would show the namespace sysfs was mounted in).
pub(super) fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    #[allow(unsafe_code)]
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let word = size_of::<usize>();
        let len = word + 8 + data.len();
        let mut v = len.to_ne_bytes().to_vec();
        v.extend(level.to_ne_bytes());
        v.extend(kind.to_ne_bytes());
        v.extend(data);
        v.resize(len.div_ceil(word) * word, 0);
        v
    }

    #[test]
    fn finds_the_pktinfo_among_other_control_messages_and_survives_garbage() {
        let mut info = [0u8; 20];
        info[16..].copy_from_slice(&7u32.to_ne_bytes());
        let mut c = cmsg(
            libc::IPPROTO_IPV6,
            libc::IPV6_HOPLIMIT,
            &64i32.to_ne_bytes(),
        );
        c.extend(cmsg(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &info));
        assert_eq!(pktinfo_ifindex(&c), Some(7));
        for n in 0..c.len() {
            let _ = pktinfo_ifindex(&c[..n]);
        }
        assert_eq!(pktinfo_ifindex(&[0xff; 64]), None);
        assert_eq!(pktinfo_ifindex(&[]), None);
    }

    #[test]
    fn a_real_socket_reports_the_loopback_interface() {
        let rx = std::net::UdpSocket::bind("[::1]:0").unwrap();
        enable(std::os::fd::AsFd::as_fd(&rx)).unwrap();
        let tx = std::net::UdpSocket::bind("[::1]:0").unwrap();
        tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
        rx.set_nonblocking(false).unwrap();
        let mut buf = [0u8; 16];
        let r = loop {
            match recv(std::os::fd::AsFd::as_fd(&rx), &mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                r => break r.unwrap(),
            }
        };
        assert_eq!(&buf[..r.len], b"hello");
        assert_eq!(r.from, tx.local_addr().unwrap());
        assert_eq!(r.ifindex, ifindex("lo"));
        assert_eq!(r.overflow, None, "nothing dropped yet");
    }

    #[test]
    fn a_full_receive_buffer_shows_as_a_drop_count() {
        let rx = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .unwrap();
        rx.set_recv_buffer_size(1).unwrap(); // the kernel's minimum: a few datagrams
        rx.bind(&"[::1]:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let rx: std::net::UdpSocket = rx.into();
        enable(std::os::fd::AsFd::as_fd(&rx)).unwrap();
        let tx = std::net::UdpSocket::bind("[::1]:0").unwrap();
        for _ in 0..200 {
            tx.send_to(&[0u8; 512], rx.local_addr().unwrap()).unwrap();
        }
        // The kernel stamps a datagram with the count as it was when the datagram was queued:
        // those queued before the drops carry none. Read them, then one queued after.
        let mut buf = [0u8; 1024];
        let mut before = 0;
        while recv(std::os::fd::AsFd::as_fd(&rx), &mut buf).is_ok() {
            before += 1;
        }
        assert!(before < 200, "the buffer held only a few");
        tx.send_to(b"after", rx.local_addr().unwrap()).unwrap();
        let r = recv(std::os::fd::AsFd::as_fd(&rx), &mut buf).unwrap();
        assert_eq!(&buf[..r.len], b"after");
        let dropped = r.overflow.expect("SO_RXQ_OVFL came with the datagram");
        assert!(dropped > 0 && dropped < 200, "dropped {dropped}");
        assert_eq!(
            drops(std::os::fd::AsFd::as_fd(&rx)).unwrap(),
            dropped,
            "SO_MEMINFO reads the same count"
        );
    }

    #[test]
    fn finds_the_overflow_count_and_survives_garbage() {
        let mut c = cmsg(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &[0u8; 20]);
        c.extend(cmsg(
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            &9u32.to_ne_bytes(),
        ));
        assert_eq!(overflow_count(&c), Some(9));
        for n in 0..c.len() {
            let _ = overflow_count(&c[..n]);
        }
        assert_eq!(overflow_count(&[0xff; 64]), None);
    }
}
