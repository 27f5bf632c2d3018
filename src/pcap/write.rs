//! Building capture files: classic libpcap (little-endian, microsecond timestamps) around
//! IPv6/UDP datagrams, with a correct UDP checksum (RFC 8200 §8.1) so dissectors accept them.
//! For tests and tools that need a capture of messages we built (e.g. the tshark cross-check).

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
    p.extend(src_port.to_be_bytes());
    p.extend(dst_port.to_be_bytes());
    p.extend(udp_len.to_be_bytes());
    let sum = udp_checksum(&src, &dst, udp_len, src_port, dst_port, payload);
    p.extend(sum.to_be_bytes());
    p.extend(payload);
    Some(p)
}

/// An Ethernet frame (EtherType IPv6) around `ipv6`.
pub fn ethernet(src: [u8; 6], dst: [u8; 6], ipv6: &[u8]) -> Vec<u8> {
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

fn udp_checksum(
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
    udp_len: u16,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> u16 {
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
    add(&u32::from(udp_len).to_be_bytes());
    add(&[0, 0, 0, 17]);
    add(&src_port.to_be_bytes());
    add(&dst_port.to_be_bytes());
    add(&udp_len.to_be_bytes());
    add(payload);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // RFC 768: a computed zero is sent as all ones.
    match !(sum as u16) {
        0 => 0xffff,
        s => s,
    }
}
