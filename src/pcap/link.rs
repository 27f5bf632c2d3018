//! Link-layer headers of captured packets: where the IPv6 packet starts.
//!
//! ```text
//! Ethernet (1):        dst(6) src(6) [0x8100/0x88a8 tag(4)]* ethertype(2) payload
//! Linux cooked (113):  packet-type(2) arphrd(2) addr-len(2) addr(8) protocol(2) payload
//! Linux cooked v2 (276): protocol(2) reserved(2) ifindex(4) arphrd(2) packet-type(1) addr-len(1) addr(8) payload
//! raw IP (101), IPv6 (229): the IP packet
//! BSD null/loopback (0, 108): address family(4, host / network order) payload
//! ```
//! (tcpdump.org "LINKTYPE_" list.) Anything else, and a non-IPv6 protocol, is a [`LinkError`].

/// LINKTYPE numbers this module reads.
pub(crate) const NULL: u16 = 0;
pub const ETHERNET: u16 = 1;
pub const RAW: u16 = 101;
pub(crate) const LOOP: u16 = 108;
pub const LINUX_SLL: u16 = 113;
pub const IPV6: u16 = 229;
pub const LINUX_SLL2: u16 = 276;

const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q, 802.1ad and the old QinQ tag types.
const VLAN_TAGS: [u16; 3] = [0x8100, 0x88a8, 0x9100];
/// Most VLAN tags skipped.
const MAX_TAGS: usize = 2;
/// AF_INET6 on Linux, NetBSD/OpenBSD, FreeBSD, macOS.
const AF_INET6: [u32; 4] = [10, 24, 28, 30];

/// Why a packet has no IPv6 packet we can find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    #[error("link type {0} is not supported (Ethernet, Linux cooked v1/v2, raw IPv6, null)")]
    Unsupported(u16),
    #[error("truncated {0} header")]
    Truncated(&'static str),
    #[error("protocol {0:#06x} is not IPv6")]
    NotIpv6(u32),
}

fn be16(b: &[u8], at: usize, what: &'static str) -> Result<u16, LinkError> {
    match b.get(at..at + 2) {
        Some(&[x, y]) => Ok(u16::from_be_bytes([x, y])),
        _ => Err(LinkError::Truncated(what)),
    }
}

fn after<'a>(b: &'a [u8], at: usize, what: &'static str) -> Result<&'a [u8], LinkError> {
    b.get(at..).ok_or(LinkError::Truncated(what))
}

fn ipv6_after<'a>(
    b: &'a [u8],
    proto: u16,
    at: usize,
    what: &'static str,
) -> Result<&'a [u8], LinkError> {
    if proto != ETHERTYPE_IPV6 {
        return Err(LinkError::NotIpv6(u32::from(proto)));
    }
    after(b, at, what)
}

/// The IPv6 packet inside `data`, a packet of link type `link_type`.
pub(crate) fn ipv6_packet(link_type: u16, data: &[u8]) -> Result<&[u8], LinkError> {
    match link_type {
        ETHERNET => {
            let mut at = 12;
            let mut ethertype = be16(data, at, "Ethernet")?;
            let mut tags = 0;
            while VLAN_TAGS.contains(&ethertype) && tags < MAX_TAGS {
                at += 4;
                tags += 1;
                ethertype = be16(data, at, "VLAN tag")?;
            }
            ipv6_after(data, ethertype, at + 2, "Ethernet")
        }
        LINUX_SLL => ipv6_after(data, be16(data, 14, "Linux cooked")?, 16, "Linux cooked"),
        LINUX_SLL2 => {
            if data.len() < 20 {
                return Err(LinkError::Truncated("Linux cooked v2"));
            }
            ipv6_after(
                data,
                be16(data, 0, "Linux cooked v2")?,
                20,
                "Linux cooked v2",
            )
        }
        RAW | IPV6 => Ok(data),
        NULL | LOOP => {
            let Some(&[a, b, c, d]) = data.get(..4) else {
                return Err(LinkError::Truncated("null/loopback"));
            };
            let (le, be) = (
                u32::from_le_bytes([a, b, c, d]),
                u32::from_be_bytes([a, b, c, d]),
            );
            let family = if link_type == LOOP { be } else { le.min(be) };
            if !AF_INET6.contains(&family) {
                return Err(LinkError::NotIpv6(family));
            }
            after(data, 4, "null/loopback")
        }
        other => Err(LinkError::Unsupported(other)),
    }
}
