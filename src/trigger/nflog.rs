//! NFLOG over netlink, the bytes: the config request that binds a log group, and a bounds-checked
//! reader for what the kernel sends back (pure, no socket).
//!
//! Layout (`linux/netlink.h`, `linux/netfilter/nfnetlink.h`, `nfnetlink_log.h`). Netlink headers
//! and attribute headers are in host byte order; nfnetlink payload values are big-endian.
//!
//! ```text
//! nlmsghdr   len u32 | type u16 | flags u16 | seq u32 | pid u32      (16, host order)
//! nfgenmsg   family u8 | version u8 | res_id be16 (= the log group)  (4)
//! attributes len u16 | type u16 | value, padded to 4                  (host order header)
//!   type = NFNL_SUBSYS_ULOG (4) << 8 | NFULNL_MSG_PACKET (0) or NFULNL_MSG_CONFIG (1)
//! ```
//!
//! No-panic contract: [`Messages`] and [`source_of`] read any byte string without panicking or
//! allocating; the message walker yields `Err` and stops for good at the first framing error (a
//! broken length means nothing after it can be trusted). A malformed packet message is an `Err`
//! for that message only.

use std::net::Ipv6Addr;

use super::nfnl::{NLM_F_ACK, NLM_F_REQUEST, attr, finish, push_header};

/// `NFNL_SUBSYS_ULOG`.
const SUBSYS_ULOG: u16 = 4;
const MSG_PACKET: u16 = SUBSYS_ULOG << 8;
const MSG_CONFIG: u16 = (SUBSYS_ULOG << 8) | 1;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLMSG_HDRLEN: usize = 16;
const NFGEN_HDRLEN: usize = 4;
/// Attribute type bits that are flags, not the type (`NLA_F_NESTED | NLA_F_NET_BYTEORDER`).
const NLA_TYPE_MASK: u16 = 0x3fff;

// nfulnl_attr_type
const NFULA_IFINDEX_INDEV: u16 = 4;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;

// nfulnl_attr_config
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;

/// Why bytes from the NFLOG socket were not read as a logged packet; [`NflogError::label`] is
/// the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NflogError {
    #[error("netlink message header truncated at byte {at}")]
    HeaderTruncated { at: usize },
    #[error("netlink message at byte {at} claims {len} bytes, {left} left")]
    BadMessageLength { at: usize, len: usize, left: usize },
    #[error("packet message at byte {at} is too short for its nfgenmsg header")]
    PacketTruncated { at: usize },
    #[error("attribute at byte {at} of a packet message claims {len} bytes, {left} left")]
    BadAttributeLength { at: usize, len: usize, left: usize },
    #[error("packet message has no payload attribute")]
    NoPayload,
    #[error("logged payload is {len} bytes, an IPv6 header needs 40")]
    PayloadTruncated { len: usize },
    #[error("logged payload is IP version {version}, not 6")]
    NotIpv6 { version: u8 },
}

impl NflogError {
    pub fn label(&self) -> &'static str {
        match self {
            NflogError::HeaderTruncated { .. } => "header_truncated",
            NflogError::BadMessageLength { .. } => "bad_message_length",
            NflogError::PacketTruncated { .. } => "packet_truncated",
            NflogError::BadAttributeLength { .. } => "bad_attribute_length",
            NflogError::NoPayload => "no_payload",
            NflogError::PayloadTruncated { .. } => "payload_truncated",
            NflogError::NotIpv6 { .. } => "not_ipv6",
        }
    }
}

/// What the kernel settings of one bound group are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupConfig {
    pub group: u16,
    /// Bytes of each packet copied, from the network header (40 = the IPv6 header).
    pub copy_range: u32,
    /// Flush queued messages after this many hundredths of a second.
    pub flush_timeout_cs: u32,
    /// ... or once this many are queued.
    pub queue_threshold: u32,
}

/// One NFULNL_MSG_CONFIG request: bind `group` to this socket in copy-packet mode with the
/// given copy range, flush timeout and queue threshold, asking for an ack.
pub(crate) fn emit_bind(cfg: &GroupConfig, seq: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    // nfgenmsg: AF_UNSPEC, NFNETLINK_V0, group.
    push_header(
        &mut b,
        MSG_CONFIG,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        0,
        cfg.group,
    );
    attr(&mut b, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
    // struct nfulnl_msg_config_mode { __be32 copy_range; __u8 copy_mode; __u8 _pad; } (packed)
    let mut mode = [0u8; 6];
    mode[..4].copy_from_slice(&cfg.copy_range.to_be_bytes());
    mode[4] = NFULNL_COPY_PACKET;
    attr(&mut b, NFULA_CFG_MODE, &mode);
    attr(
        &mut b,
        NFULA_CFG_TIMEOUT,
        &cfg.flush_timeout_cs.to_be_bytes(),
    );
    attr(
        &mut b,
        NFULA_CFG_QTHRESH,
        &cfg.queue_threshold.to_be_bytes(),
    );
    finish(&mut b, 0);
    b
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One packet the kernel logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logged<'a> {
    /// The log group (nfgenmsg res_id).
    pub group: u16,
    /// The rule's log prefix, without the trailing NUL.
    pub prefix: Option<&'a [u8]>,
    /// The interface the packet came in on.
    pub in_ifindex: Option<u32>,
    /// The copied bytes, from the network header.
    pub payload: &'a [u8],
}

/// One netlink message from the NFLOG socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    Packet(Logged<'a>),
    /// An ack (`errno` 0) or error answer to our request `seq`.
    Ack {
        seq: u32,
        errno: i32,
    },
    /// Anything else (NLMSG_DONE ending a batch, NOOP, other subsystems).
    Other,
}

/// The netlink messages in one datagram.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    buf: &'a [u8],
    at: usize,
    failed: bool,
}

/// Walks the messages of one received datagram.
pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages {
        buf,
        at: 0,
        failed: false,
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Item<'a>, NflogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.buf.len() {
            return None;
        }
        let at = self.at;
        let rest = &self.buf[at..];
        let Some(hdr) = rest.get(..NLMSG_HDRLEN) else {
            self.failed = true;
            return Some(Err(NflogError::HeaderTruncated { at }));
        };
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            self.failed = true;
            return Some(Err(NflogError::BadMessageLength {
                at,
                len,
                left: rest.len(),
            }));
        }
        self.at = at + align4(len).min(rest.len());
        let ty = u16::from_ne_bytes([hdr[4], hdr[5]]);
        let body = &rest[NLMSG_HDRLEN..len];
        Some(match ty {
            MSG_PACKET => packet(body, at + NLMSG_HDRLEN).map(Item::Packet),
            NLMSG_ERROR => Ok(ack(body)),
            NLMSG_DONE | NLMSG_NOOP | NLMSG_OVERRUN => Ok(Item::Other),
            _ => Ok(Item::Other),
        })
    }
}

fn ack(body: &[u8]) -> Item<'static> {
    // struct nlmsgerr { int error; struct nlmsghdr msg; }: the request's seq is at 4 + 8.
    let errno = body
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(i32::MIN);
    let seq = body
        .get(12..16)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0);
    Item::Ack { seq, errno }
}

fn packet(body: &[u8], base: usize) -> Result<Logged<'_>, NflogError> {
    let Some(nfgen) = body.get(..NFGEN_HDRLEN) else {
        return Err(NflogError::PacketTruncated { at: base });
    };
    let group = u16::from_be_bytes([nfgen[2], nfgen[3]]);
    let mut prefix = None;
    let mut in_ifindex = None;
    let mut payload = None;
    let mut at = NFGEN_HDRLEN;
    while at < body.len() {
        let rest = &body[at..];
        let bad = |len| NflogError::BadAttributeLength {
            at: base + at,
            len,
            left: rest.len(),
        };
        let Some(h) = rest.get(..4) else {
            return Err(bad(rest.len()));
        };
        let len = usize::from(u16::from_ne_bytes([h[0], h[1]]));
        let ty = u16::from_ne_bytes([h[2], h[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > rest.len() {
            return Err(bad(len));
        }
        let value = &rest[4..len];
        match ty {
            NFULA_PAYLOAD => payload = Some(value),
            NFULA_PREFIX => {
                let end = value.iter().position(|&c| c == 0).unwrap_or(value.len());
                prefix = Some(&value[..end]);
            }
            NFULA_IFINDEX_INDEV => {
                if let Some(v) = value.get(..4) {
                    in_ifindex = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
                }
            }
            _ => {}
        }
        at += align4(len).min(rest.len());
    }
    Ok(Logged {
        group,
        prefix,
        in_ifindex,
        payload: payload.ok_or(NflogError::NoPayload)?,
    })
}

/// The source address of a logged IPv6 packet (RFC 8200 §3: bytes 8..24 of the header).
pub fn source_of(payload: &[u8]) -> Result<Ipv6Addr, NflogError> {
    let Some(h) = payload.get(..40) else {
        return Err(NflogError::PayloadTruncated { len: payload.len() });
    };
    let version = h[0] >> 4;
    if version != 6 {
        return Err(NflogError::NotIpv6 { version });
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    Ok(Ipv6Addr::from(src))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        super::attr(&mut b, ty, v);
        b
    }

    fn ipv6_header(src: Ipv6Addr) -> Vec<u8> {
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[6] = 58;
        h[7] = 64;
        h[8..24].copy_from_slice(&src.octets());
        h[24..40].copy_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets());
        h
    }

    /// A packet message as the kernel lays it out (nfulnl_build: PACKET_HDR, PREFIX, INDEV, ...).
    fn packet_msg(group: u16, prefix: &[u8], ifindex: u32, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![10u8, 0];
        body.extend_from_slice(&group.to_be_bytes());
        body.extend(attr(1, &[0x86, 0xdd, 0, 0]));
        let mut p = prefix.to_vec();
        p.push(0);
        body.extend(attr(NFULA_PREFIX, &p));
        body.extend(attr(NFULA_IFINDEX_INDEV, &ifindex.to_be_bytes()));
        body.extend(attr(NFULA_PAYLOAD, payload));
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&MSG_PACKET.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend(body);
        m
    }

    #[test]
    fn bind_request_layout() {
        let cfg = GroupConfig {
            group: 547,
            copy_range: 40,
            flush_timeout_cs: 1,
            queue_threshold: 32,
        };
        let b = emit_bind(&cfg, 7);
        assert_eq!(b.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(b[..4].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 0x0401);
        assert_eq!(u16::from_ne_bytes([b[6], b[7]]), 5);
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 7);
        assert_eq!(&b[16..20], &[0, 0, 0x02, 0x23]);
        // CMD attr: len 5, type 1, BIND, 3 pad bytes.
        assert_eq!(&b[20..28], &[5, 0, 1, 0, 1, 0, 0, 0][..]);
        // MODE attr: len 10, type 2, copy range 40 big-endian, COPY_PACKET, pad.
        assert_eq!(&b[28..40], &[10, 0, 2, 0, 0, 0, 0, 40, 2, 0, 0, 0][..]);
        assert_eq!(&b[40..48], &[8, 0, 4, 0, 0, 0, 0, 1][..]);
        assert_eq!(&b[48..56], &[8, 0, 5, 0, 0, 0, 0, 32][..]);
    }

    #[test]
    fn reads_a_packet_and_its_source() {
        let src = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x99);
        let mut buf = packet_msg(547, b"lqagent:3 ", 12, &ipv6_header(src));
        buf.extend(packet_msg(547, b"lqagent:0 ", 2, &ipv6_header(src)));
        let items: Vec<_> = messages(&buf).collect();
        assert_eq!(items.len(), 2);
        let Ok(Item::Packet(p)) = items[0] else {
            panic!("{:?}", items[0])
        };
        assert_eq!(p.group, 547);
        assert_eq!(p.prefix, Some(&b"lqagent:3 "[..]));
        assert_eq!(p.in_ifindex, Some(12));
        assert_eq!(source_of(p.payload), Ok(src));
    }

    #[test]
    fn ack_carries_errno_and_seq() {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&(-16i32).to_ne_bytes());
        let request = emit_bind(
            &GroupConfig {
                group: 1,
                copy_range: 40,
                flush_timeout_cs: 1,
                queue_threshold: 1,
            },
            42,
        );
        m.extend_from_slice(&request[..16]);
        assert_eq!(
            messages(&m).collect::<Vec<_>>(),
            vec![Ok(Item::Ack {
                seq: 42,
                errno: -16
            })]
        );
    }

    #[test]
    fn broken_lengths_are_errors_and_stop_the_walk() {
        let src = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
        let good = packet_msg(5, b"lqagent:0 ", 1, &ipv6_header(src));
        // Message length beyond the datagram.
        let mut m = good.clone();
        m[..4].copy_from_slice(&((good.len() + 4) as u32).to_ne_bytes());
        m.extend(good.clone());
        m.truncate(good.len());
        let items: Vec<_> = messages(&m).collect();
        assert!(matches!(
            items[..],
            [Err(NflogError::BadMessageLength { at: 0, .. })]
        ));
        // Length shorter than a header.
        let mut m = good.clone();
        m[..4].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(messages(&m).count(), 1);
        // A truncated header after a good message: the good one, then one error.
        let mut m = good.clone();
        m.extend_from_slice(&[1, 2, 3]);
        let items: Vec<_> = messages(&m).collect();
        assert!(items[0].is_ok());
        assert_eq!(
            items[1],
            Err(NflogError::HeaderTruncated { at: good.len() })
        );
        assert_eq!(items.len(), 2);
        // An attribute longer than its message: that message is an error, the walk goes on.
        let mut bad = good.clone();
        bad[NLMSG_HDRLEN + 4] = 0xff; // first attribute's length low byte
        bad.extend(good.clone());
        let items: Vec<_> = messages(&bad).collect();
        assert!(matches!(
            items[0],
            Err(NflogError::BadAttributeLength { .. })
        ));
        assert!(items[1].is_ok());
    }

    #[test]
    fn short_or_foreign_payloads_are_errors() {
        assert_eq!(
            source_of(&[0x60; 39]),
            Err(NflogError::PayloadTruncated { len: 39 })
        );
        let mut v4 = vec![0u8; 40];
        v4[0] = 0x45;
        assert_eq!(source_of(&v4), Err(NflogError::NotIpv6 { version: 4 }));
        let mut body = packet_msg(5, b"x", 1, &[]);
        // Drop the payload attribute (the last 4 bytes) and fix the length.
        body.truncate(body.len() - 4);
        let len = body.len() as u32;
        body[..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(
            messages(&body).collect::<Vec<_>>(),
            vec![Err(NflogError::NoPayload)]
        );
    }

    #[test]
    fn any_bytes_are_read_without_panic() {
        let src = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
        let good = packet_msg(5, b"lqagent:0 ", 1, &ipv6_header(src));
        for cut in 0..good.len() {
            for item in messages(&good[..cut]).flatten() {
                if let Item::Packet(p) = item {
                    let _ = source_of(p.payload);
                }
            }
        }
        let mut x: u32 = 1;
        for _ in 0..2000 {
            let mut b = good.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = x as usize % b.len();
                b[i] = (x >> 8) as u8;
            }
            for item in messages(&b).flatten() {
                if let Item::Packet(p) = item {
                    let _ = source_of(p.payload);
                }
            }
        }
    }
}
