//! IPv6 + UDP headers of a captured packet (RFC 8200 §3–4, RFC 768): where the DHCPv6 payload
//! is and who sent it. Pure; every length is checked before use, nothing panics.
//!
//! ```text
//! IPv6:  version/class/flow(4) payload-length(2) next-header(1) hop-limit(1) src(16) dst(16)
//! ext:   next-header(1) hdr-ext-len(1) ... ((hdr-ext-len + 1) * 8 bytes in all)
//! UDP:   src-port(2) dst-port(2) length(2) checksum(2) payload
//! ```
//! Hop-by-hop (0), routing (43) and destination-options (60) headers are skipped, at most
//! [`MAX_EXT_HEADERS`]; fragments are refused (DHCPv6 relay traffic is not fragmented in practice).

use std::net::Ipv6Addr;

/// Most extension headers skipped before the UDP header.
pub(crate) const MAX_EXT_HEADERS: usize = 8;

/// A UDP datagram inside an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp6<'a> {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

/// Why a packet is not a UDP-in-IPv6 datagram we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    #[error("truncated {what} at byte {at}")]
    Truncated { what: &'static str, at: usize },
    #[error("IP version {0}, not 6")]
    NotIpv6(u8),
    #[error("next header {0} is not UDP")]
    NotUdp(u8),
    #[error("more than {MAX_EXT_HEADERS} extension headers")]
    TooManyHeaders,
    #[error("UDP length {len} does not fit the {room} bytes left")]
    BadUdpLength { len: usize, room: usize },
}

impl DatagramError {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            DatagramError::Truncated { .. } => "truncated",
            DatagramError::NotIpv6(_) => "not_ipv6",
            DatagramError::NotUdp(_) => "not_udp",
            DatagramError::TooManyHeaders => "too_many_headers",
            DatagramError::BadUdpLength { .. } => "bad_udp_length",
        }
    }
}

fn take<'a>(
    b: &'a [u8],
    at: usize,
    n: usize,
    what: &'static str,
) -> Result<&'a [u8], DatagramError> {
    b.get(at..at.saturating_add(n))
        .ok_or(DatagramError::Truncated { what, at })
}

fn addr(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

/// Reads the IPv6 and UDP headers of `pkt` (starting at the IPv6 header).
pub fn parse(pkt: &[u8]) -> Result<Udp6<'_>, DatagramError> {
    let h = take(pkt, 0, 40, "IPv6 header")?;
    if h[0] >> 4 != 6 {
        return Err(DatagramError::NotIpv6(h[0] >> 4));
    }
    let payload_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    // Ignore link-layer padding past the IPv6 payload.
    let end = 40usize.saturating_add(payload_len).min(pkt.len());
    let pkt = &pkt[..end];
    let (src, dst) = (addr(&h[8..24]), addr(&h[24..40]));
    let mut next = h[6];
    let mut at = 40;
    let mut skipped = 0;
    while matches!(next, 0 | 43 | 60) {
        if skipped == MAX_EXT_HEADERS {
            return Err(DatagramError::TooManyHeaders);
        }
        let e = take(pkt, at, 2, "extension header")?;
        next = e[0];
        at += (usize::from(e[1]) + 1) * 8;
        skipped += 1;
    }
    if next != 17 {
        return Err(DatagramError::NotUdp(next));
    }
    let u = take(pkt, at, 8, "UDP header")?;
    let len = usize::from(u16::from_be_bytes([u[4], u[5]]));
    let room = pkt.len() - at;
    if len < 8 || len > room {
        return Err(DatagramError::BadUdpLength { len, room });
    }
    Ok(Udp6 {
        src,
        dst,
        src_port: u16::from_be_bytes([u[0], u[1]]),
        dst_port: u16::from_be_bytes([u[2], u[3]]),
        payload: &pkt[at + 8..at + len],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(exts: &[u8], last: u8, payload: &[u8]) -> Vec<u8> {
        let ext_len = exts.len() * 8;
        let plen = u16::try_from(ext_len + 8 + payload.len()).unwrap();
        let mut p = vec![0x60, 0, 0, 0];
        p.extend(plen.to_be_bytes());
        p.push(exts.first().copied().unwrap_or(last));
        p.push(64);
        p.extend("2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend("2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        for i in 0..exts.len() {
            p.extend([
                exts.get(i + 1).copied().unwrap_or(last),
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ]);
        }
        p.extend(547u16.to_be_bytes());
        p.extend(547u16.to_be_bytes());
        p.extend(u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
        p.extend([0, 0]);
        p.extend(payload);
        p
    }

    #[test]
    fn finds_the_payload_after_extension_headers() {
        let p = packet(&[0, 60], 17, b"\x0c\x00hello");
        let d = parse(&p).unwrap();
        assert_eq!(d.src, "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(d.dst_port, 547);
        assert_eq!(d.payload, b"\x0c\x00hello");
        // Link-layer padding after the payload is ignored.
        let mut padded = p.clone();
        padded.extend([0u8; 10]);
        assert_eq!(parse(&padded).unwrap().payload, b"\x0c\x00hello");
    }

    #[test]
    fn refuses_what_it_cannot_read_without_panicking() {
        let p = packet(&[], 17, b"abc");
        for n in 0..p.len() {
            assert!(parse(&p[..n]).is_err(), "prefix {n}");
        }
        assert_eq!(parse(&packet(&[], 6, b"")), Err(DatagramError::NotUdp(6)));
        assert_eq!(
            parse(&packet(&[0; 9], 17, b"")),
            Err(DatagramError::TooManyHeaders)
        );
        let mut bad = packet(&[], 17, b"abc");
        bad[44] = 0xff;
        assert!(matches!(
            parse(&bad),
            Err(DatagramError::BadUdpLength { .. })
        ));
        let mut v4 = p;
        v4[0] = 0x45;
        assert_eq!(parse(&v4), Err(DatagramError::NotIpv6(4)));
    }
}
