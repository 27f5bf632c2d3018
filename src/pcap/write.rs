//! Building capture files: classic libpcap (little-endian, microsecond timestamps) around
//! IPv6/UDP datagrams and IPv6/TCP segments, with correct checksums (RFC 8200 §8.1) so
//! dissectors accept them. For tests and tools that need a capture of messages we built (e.g.
//! the tshark cross-check, which puts bulk leasequery on a TCP stream).

use std::net::Ipv6Addr;

use super::link;

/// A classic pcap file being written in memory.
#[derive(Debug, Clone)]
pub struct PcapWriter {
    bytes: Vec<u8>,
}

impl PcapWriter {
    /// A new file of `link_type` (a LINKTYPE number, e.g. [`link::ETHERNET`]).
    pub fn new(link_type: u16) -> Self {
        let mut bytes = Vec::with_capacity(4096);
        bytes.extend(0xa1b2_c3d4u32.to_le_bytes());
        bytes.extend(2u16.to_le_bytes());
        bytes.extend(4u16.to_le_bytes());
        bytes.extend([0; 8]);
        bytes.extend(262_144u32.to_le_bytes());
        bytes.extend(u32::from(link_type).to_le_bytes());
        PcapWriter { bytes }
    }

    /// Appends one packet record (the data must be at most `super::MAX_PACKET` bytes to read back).
    pub fn packet(&mut self, ts_sec: u32, ts_usec: u32, data: &[u8]) {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.bytes.extend(ts_sec.to_le_bytes());
        self.bytes.extend(ts_usec.to_le_bytes());
        self.bytes.extend(len.to_le_bytes());
        self.bytes.extend(len.to_le_bytes());
        self.bytes.extend(data);
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// An IPv6 packet (hop limit 64) carrying one UDP datagram; `None` if the payload is too big
/// for a UDP length.
pub fn ipv6_udp(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let udp_len = u16::try_from(8 + payload.len()).ok()?;
    let mut p = Vec::with_capacity(48 + payload.len());
    p.extend([0x60, 0, 0, 0]);
    p.extend(udp_len.to_be_bytes());
    p.extend([17, 64]);
    p.extend(src.octets());
    p.extend(dst.octets());
    let mut udp = Vec::with_capacity(8 + payload.len());
    udp.extend(src_port.to_be_bytes());
    udp.extend(dst_port.to_be_bytes());
    udp.extend(udp_len.to_be_bytes());
    udp.extend([0, 0]);
    udp.extend(payload);
    // RFC 768: a computed zero is sent as all ones (zero means "no checksum").
    let sum = match checksum(&src, &dst, 17, &udp) {
        0 => 0xffff,
        s => s,
    };
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    p.extend(udp);
    Some(p)
}

/// TCP flags for [`ipv6_tcp`].
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_PSH: u8 = 0x08;

/// One TCP segment (no options, window 65535) of a stream in an IPv6 packet; `None` if too big.
#[allow(clippy::too_many_arguments)]
pub fn ipv6_tcp(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let tcp_len = u16::try_from(20 + payload.len()).ok()?;
    let mut seg = Vec::with_capacity(20 + payload.len());
    seg.extend(src_port.to_be_bytes());
    seg.extend(dst_port.to_be_bytes());
    seg.extend(seq.to_be_bytes());
    seg.extend(ack.to_be_bytes());
    seg.extend([5 << 4, flags]);
    seg.extend(u16::MAX.to_be_bytes());
    seg.extend([0, 0, 0, 0]);
    seg.extend(payload);
    let sum = checksum(&src, &dst, 6, &seg);
    seg[16..18].copy_from_slice(&sum.to_be_bytes());
    let mut p = Vec::with_capacity(40 + seg.len());
    p.extend([0x60, 0, 0, 0]);
    p.extend(tcp_len.to_be_bytes());
    p.extend([6, 64]);
    p.extend(src.octets());
    p.extend(dst.octets());
    p.extend(seg);
    Some(p)
}

/// An Ethernet frame (EtherType IPv6) around `ipv6`.
pub(crate) fn ethernet(src: [u8; 6], dst: [u8; 6], ipv6: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + ipv6.len());
    f.extend(dst);
    f.extend(src);
    f.extend(0x86ddu16.to_be_bytes());
    f.extend(ipv6);
    f
}

/// `ipv6` wrapped for `link_type` (Ethernet with fixed test MACs, Linux cooked v1/v2, raw).
pub fn frame(link_type: u16, ipv6: &[u8]) -> Option<Vec<u8>> {
    let mut f = Vec::with_capacity(20 + ipv6.len());
    match link_type {
        link::ETHERNET => return Some(ethernet([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], ipv6)),
        link::LINUX_SLL => {
            f.extend([0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
            f.extend(0x86ddu16.to_be_bytes());
        }
        link::LINUX_SLL2 => {
            f.extend(0x86ddu16.to_be_bytes());
            f.extend([0, 0, 0, 0, 0, 2, 0, 1, 4, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
        }
        link::RAW | link::IPV6 => {}
        _ => return None,
    }
    f.extend(ipv6);
    Some(f)
}

/// The Internet checksum of `upper` (checksum field zeroed) with the IPv6 pseudo-header.
fn checksum(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, upper: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let hi = u64::from(c.first().copied().unwrap_or(0));
            let lo = u64::from(c.get(1).copied().unwrap_or(0));
            sum += hi << 8 | lo;
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&u32::try_from(upper.len()).unwrap_or(u32::MAX).to_be_bytes());
    add(&[0, 0, 0, next_header]);
    add(upper);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
