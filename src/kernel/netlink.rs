//! The rtnetlink messages the installer sends and reads, each named by the `ip` command it equals,
//! and the socket set-up (strict dump filtering, enlarged receive buffer).
//!
//! Acknowledgements: the kernel answers every message of a datagram in order and always reports
//! an error (`netlink_rcv_skb` acks when `err || NLM_F_ACK`), so a batch sets `NLM_F_ACK` only on
//! its last message. When that ack arrives, every error of the batch has arrived before it. An
//! error carries the sequence number of the refused request, and every request has its own
//! ([`encode_op`]), so an error names its op exactly. Skipping the per-route success ack is what
//! makes a batch cheap in the kernel (measured: see `docs/routes.md`).

use std::net::Ipv6Addr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
#[cfg(test)]
use rtnetlink::RouteMessageBuilder;

use super::plan::{KernelRoute, RouteOp};
use super::{InstallerConfig, KernelError};
use crate::prefix::Ipv6Prefix;

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const NLMSG_HDRLEN: usize = 16;
/// `struct nlmsgerr`'s type (linux/netlink.h): an error, or an ack when its code is 0.
const NLMSG_ERROR: u16 = 2;
/// `struct rtmsg` (linux/rtnetlink.h): family, lengths, tos, table, protocol, scope, type, flags.
const RTMSG_LEN: usize = 12;
/// The route attributes the installer writes (linux/rtnetlink.h `enum rtattr_type_t`).
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_TABLE: u16 = 15;
const RTA_EXPIRES: u16 = 23;
/// `rtm_flags` bit for a next hop taken as on the link (`onlink`).
const RTNH_F_ONLINK: u32 = 4;
const AF_INET6: u8 = 10;
/// `rtm_type` of an ordinary route, and `rtm_scope` universe.
const RTN_UNICAST: u8 = 1;
const RT_SCOPE_UNIVERSE: u8 = 0;
/// The table byte of `struct rtmsg` when the real table travels as RTA_TABLE (what
/// `RouteMessageBuilder` writes: the main table's number).
const RT_TABLE_MAIN_BYTE: u8 = 254;
/// The longest request [`encode_op`] writes: header, rtmsg, DST, OIF, PRIORITY, TABLE, GATEWAY,
/// EXPIRES.
pub(crate) const MAX_OP_LEN: usize = NLMSG_HDRLEN + RTMSG_LEN + 20 + 8 + 8 + 8 + 20 + 8;

/// The route message for `r` with our table, protocol and metric.
#[cfg(test)]
fn base(cfg: &InstallerConfig, r: &KernelRoute) -> RouteMessageBuilder<Ipv6Addr> {
    RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(r.dst.addr(), r.dst.len())
        .output_interface(r.oif)
        .priority(r.metric)
        .table_id(cfg.table)
        .protocol(RouteProtocol::from(cfg.protocol))
}

/// The request for one op as rtnetlink's builder makes it: what [`encode_op`]'s bytes are
/// tested against.
#[cfg(test)]
pub(crate) fn op_request(
    cfg: &InstallerConfig,
    op: &RouteOp,
    expires: Option<u32>,
    ack: bool,
) -> NetlinkMessage<RouteNetlinkMessage> {
    let r = op.route();
    let mut b = base(cfg, r);
    if let Some(gw) = r.gateway {
        b = b.gateway(gw);
        if !matches!(op, RouteOp::Delete(_)) {
            b = b.onlink();
        }
    }
    let (payload, flags) = match op {
        RouteOp::Add(_) | RouteOp::Replace(_) => {
            if let Some(s) = expires {
                b = b.expires(s);
            }
            let f = if matches!(op, RouteOp::Add(_)) {
                NLM_F_CREATE | NLM_F_EXCL
            } else {
                NLM_F_CREATE | NLM_F_REPLACE
            };
            (RouteNetlinkMessage::NewRoute(b.build()), f)
        }
        RouteOp::Delete(_) => (RouteNetlinkMessage::DelRoute(b.build()), 0),
    };
    let mut msg = NetlinkMessage::from(payload);
    msg.header.flags = NLM_F_REQUEST | flags | if ack { NLM_F_ACK } else { 0 };
    msg
}

/// Append one route attribute (`struct rtattr`, 4-byte aligned; every value here is a multiple
/// of 4 bytes long, so no padding is ever needed).
fn put_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
}

/// Append the request for one op to `out` as one netlink message numbered `seq`; `ack` asks for
/// an acknowledgement even on success.
///
/// - add: `ip -6 route add DST [via GW onlink] dev IF proto P metric M table T [expires S]`
/// - replace: `ip -6 route replace …` (same arguments)
/// - delete: `ip -6 route del DST [via GW] dev IF proto P metric M table T`
///
/// A next hop is marked `onlink`: it is the requesting router on that very link, so the route
/// must not depend on a connected route to it (unnumbered links, RFC 8987 S-2).
///
/// The bytes are those rtnetlink's `RouteMessageBuilder` makes (a unit test holds them equal),
/// written straight into the datagram the installer sends. Why not the builder: it allocates an
/// attribute list per route, and the message was serialised again by a connection task — the
/// larger part of the installer's own CPU per route (issue 22's routes bench).
pub(crate) fn encode_op(
    out: &mut Vec<u8>,
    cfg: &InstallerConfig,
    op: &RouteOp,
    expires: Option<u32>,
    seq: u32,
    ack: bool,
) {
    let r = op.route();
    let start = out.len();
    let (kind, mut flags) = match op {
        RouteOp::Add(_) => (RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL),
        RouteOp::Replace(_) => (RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE),
        RouteOp::Delete(_) => (RTM_DELROUTE, 0),
    };
    flags |= NLM_F_REQUEST | if ack { NLM_F_ACK } else { 0 };
    // nlmsghdr: the length is filled in at the end.
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    // rtmsg
    let onlink = r.gateway.is_some() && !matches!(op, RouteOp::Delete(_));
    let table_byte = if cfg.table > 255 {
        RT_TABLE_MAIN_BYTE
    } else {
        cfg.table as u8
    };
    out.extend_from_slice(&[
        AF_INET6,
        r.dst.len(),
        0,
        0,
        table_byte,
        cfg.protocol,
        RT_SCOPE_UNIVERSE,
        RTN_UNICAST,
    ]);
    let rtm_flags = if onlink { RTNH_F_ONLINK } else { 0 };
    out.extend_from_slice(&rtm_flags.to_ne_bytes());
    put_attr(out, RTA_DST, &r.dst.addr().octets());
    put_attr(out, RTA_OIF, &r.oif.to_ne_bytes());
    put_attr(out, RTA_PRIORITY, &r.metric.to_ne_bytes());
    if cfg.table > 255 {
        put_attr(out, RTA_TABLE, &cfg.table.to_ne_bytes());
    }
    if let Some(gw) = r.gateway {
        put_attr(out, RTA_GATEWAY, &gw.octets());
    }
    if let (Some(s), false) = (expires, matches!(op, RouteOp::Delete(_))) {
        put_attr(out, RTA_EXPIRES, &s.to_ne_bytes());
    }
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// One answer of the kernel to a request of ours: the sequence number of the request it answers
/// and its errno (0: the acknowledgement of a request that succeeded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answer {
    pub seq: u32,
    pub errno: i32,
}

/// The answers (NLMSG_ERROR messages) in one received datagram, in order; other message types
/// are skipped. The walk stops at the first header that is short, claims more bytes than are
/// left or less than a header: a damaged datagram yields what came before the damage, never a
/// panic.
pub(crate) fn answers(mut buf: &[u8]) -> impl Iterator<Item = Answer> + '_ {
    std::iter::from_fn(move || {
        loop {
            let len = u32::from_ne_bytes(buf.get(0..4)?.try_into().ok()?) as usize;
            if len < NLMSG_HDRLEN || len > buf.len() {
                buf = &[];
                return None;
            }
            let kind = u16::from_ne_bytes(buf.get(4..6)?.try_into().ok()?);
            let seq = u32::from_ne_bytes(buf.get(8..12)?.try_into().ok()?);
            let code = buf
                .get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4)
                .and_then(|c| c.try_into().ok())
                .map(i32::from_ne_bytes);
            // Messages are 4-byte aligned; the last one may end without its padding.
            let next = (len + 3) & !3;
            buf = buf.get(next..).unwrap_or(&[]);
            match (kind, code) {
                (NLMSG_ERROR, Some(code)) => {
                    return Some(Answer {
                        seq,
                        errno: code.checked_neg().unwrap_or(i32::MAX),
                    });
                }
                _ => continue,
            }
        }
    })
}

/// `ip -6 route show proto P table T` as a kernel-filtered dump (needs NETLINK_GET_STRICT_CHK).
pub(crate) fn dump_request(cfg: &InstallerConfig) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet6;
    m.header.protocol = RouteProtocol::from(cfg.protocol);
    if cfg.table > 255 {
        m.header.table = RouteHeader::RT_TABLE_UNSPEC;
        m.attributes.push(RouteAttribute::Table(cfg.table));
    } else {
        m.header.table = cfg.table as u8;
    }
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::GetRoute(m));
    msg.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    msg
}

/// `ip link show` as a dump.
pub(crate) fn link_dump_request() -> NetlinkMessage<RouteNetlinkMessage> {
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::GetLink(LinkMessage::default()));
    msg.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    msg
}

/// `ip -6 addr show` as a dump.
pub(crate) fn addr_dump_request() -> NetlinkMessage<RouteNetlinkMessage> {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet6;
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::GetAddress(m));
    msg.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    msg
}

/// The route's table: the RTA_TABLE attribute (32 bits) when present, else the header's byte.
pub(super) fn table_of(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

/// The route in `m`, whatever its protocol; `None` for non-IPv6 or malformed destinations.
fn route_of(m: &RouteMessage) -> Option<KernelRoute> {
    if m.header.address_family != AddressFamily::Inet6 {
        return None;
    }
    let mut dst = Ipv6Addr::UNSPECIFIED;
    let mut route = KernelRoute {
        dst: Ipv6Prefix::host(Ipv6Addr::UNSPECIFIED),
        gateway: None,
        oif: 0,
        metric: 0,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet6(d)) => dst = *d,
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) => route.gateway = Some(*g),
            RouteAttribute::Oif(i) => route.oif = *i,
            RouteAttribute::Priority(p) => route.metric = *p,
            _ => {}
        }
    }
    route.dst = Ipv6Prefix::new_truncating(dst, m.header.destination_prefix_length).ok()?;
    Some(route)
}

/// A dumped route if it is ours (family, protocol and table): the dump is filtered by the kernel,
/// and filtered again here so an old kernel without strict checking cannot hand us others' routes.
/// Only unicast routes are the installer's: our `unreachable` aggregates (RFC 8987 R-5,
/// [`super::unreachable`]) are kept apart, so reconcile never deletes them.
pub(crate) fn our_route(cfg: &InstallerConfig, m: &RouteMessage) -> Option<KernelRoute> {
    if m.header.protocol != RouteProtocol::from(cfg.protocol)
        || table_of(m) != cfg.table
        || m.header.kind != RouteType::Unicast
    {
        return None;
    }
    route_of(m)
}

/// How long the kernel still keeps route `m`, from RTA_CACHEINFO's `rta_expires`: `None` for a
/// route without an expiry (the kernel reports 0), zero for one past its expiry that is not yet
/// collected (the kernel reports the overdue time as a negative number), else the remaining time
/// in clock ticks of `user_hz` per second (the kernel converts jiffies to USER_HZ).
pub(crate) fn expires_of(m: &RouteMessage, user_hz: u32) -> Option<crate::time::Duration> {
    let ticks = m.attributes.iter().find_map(|a| match a {
        RouteAttribute::CacheInfo(c) => Some(c.expires as i32),
        _ => None,
    })?;
    match ticks {
        0 => None,
        t if t < 0 => Some(crate::time::Duration::ZERO),
        t => Some(crate::time::Duration::from_millis(
            u64::from(t.unsigned_abs()) * 1000 / u64::from(user_hz.max(1)),
        )),
    }
}

/// The kernel's USER_HZ, what RTA_CACHEINFO's times count in: 100 on every architecture Linux
/// runs a BNG on (x86, arm, arm64, ppc, s390, riscv), as in `metrics::process` (`ip route`
/// asks `sysconf(_SC_CLK_TCK)`, which is unsafe to call here and answers the same).
pub(crate) const USER_HZ: u32 = 100;

/// Interface index, name and administrative state (IFF_UP) from a link message.
pub(crate) fn link_of(m: &LinkMessage) -> Option<(u32, String, bool)> {
    let up = m.header.flags.contains(LinkFlags::Up);
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some((m.header.index, n.clone(), up)),
        _ => None,
    })
}

/// (ifindex, address, prefix length) from an IPv6 address message.
pub(crate) fn addr_of(m: &AddressMessage) -> Option<(u32, Ipv6Addr, u8)> {
    if m.header.family != AddressFamily::Inet6 {
        return None;
    }
    let mut found = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Address(std::net::IpAddr::V6(v)) => found = Some(*v),
            AddressAttribute::Local(std::net::IpAddr::V6(v)) if found.is_none() => found = Some(*v),
            _ => {}
        }
    }
    found.map(|a| (m.header.index, a, m.header.prefix_len))
}

/// The `ip` command an op equals, for logs and dry-run.
pub(crate) fn ip_command(cfg: &InstallerConfig, op: &RouteOp, dev: &str) -> String {
    let r = op.route();
    let via = match (r.gateway, op) {
        (Some(g), RouteOp::Delete(_)) => format!(" via {g}"),
        (Some(g), _) => format!(" via {g} onlink"),
        (None, _) => String::new(),
    };
    format!(
        "ip -6 route {} {}{via} dev {dev} proto {} metric {} table {}",
        op.kind().label(),
        r.dst,
        cfg.protocol,
        r.metric,
        cfg.table
    )
}

/// Receive buffer: SO_RCVBUFFORCE (root may exceed `net.core.rmem_max`), else SO_RCVBUF.
pub(crate) fn set_recv_buffer(
    socket: &netlink_sys::Socket,
    bytes: usize,
) -> Result<(), KernelError> {
    use std::os::fd::AsRawFd;
    let val = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let fd = socket.as_raw_fd();
    let set = |opt| {
        #[allow(unsafe_code)]
        // SAFETY: `fd` is an open socket owned by `socket` for the whole call; the option value
        // is a c_int on the stack whose exact size is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&val as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        rc == 0
    };
    if set(libc::SO_RCVBUFFORCE) || set(libc::SO_RCVBUF) {
        Ok(())
    } else {
        Err(KernelError::Socket(std::io::Error::last_os_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, NetlinkPayload};

    fn cfg() -> InstallerConfig {
        InstallerConfig::default()
    }

    fn pd() -> KernelRoute {
        KernelRoute {
            dst: "2001:db8:100::/56".parse().unwrap(),
            gateway: Some("fe80::1".parse().unwrap()),
            oif: 7,
            metric: 1024,
        }
    }

    #[test]
    fn add_request_flags_and_round_trip() {
        let c = cfg();
        let m = op_request(&c, &RouteOp::Add(pd()), Some(300), false);
        assert_eq!(m.header.flags, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL);
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(rm)) = &m.payload else {
            panic!("not a NewRoute: {m:?}");
        };
        assert_eq!(our_route(&c, rm), Some(pd()));
        assert!(rm.attributes.contains(&RouteAttribute::Expires(300)));
        let r = op_request(&c, &RouteOp::Replace(pd()), None, true);
        assert_eq!(
            r.header.flags,
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK
        );
        // Another protocol's route is not ours even with everything else equal.
        let other = InstallerConfig {
            protocol: 4,
            ..cfg()
        };
        assert_eq!(our_route(&other, rm), None);
        // Tables over 255 travel as RTA_TABLE and are read back from it.
        let big = InstallerConfig {
            table: 1000,
            ..cfg()
        };
        let m = op_request(&big, &RouteOp::Add(pd()), None, false);
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(rm)) = &m.payload else {
            panic!();
        };
        assert_eq!(our_route(&big, rm), Some(pd()));
        assert_eq!(our_route(&c, rm), None);
    }

    fn emitted(m: &NetlinkMessage<RouteNetlinkMessage>) -> Vec<u8> {
        let mut m = m.clone();
        m.finalize();
        let mut b = vec![0u8; m.buffer_len()];
        m.emit(&mut b);
        b
    }

    /// `encode_op` writes exactly the bytes rtnetlink's builder and emitter write for the same
    /// op — every kind, with and without a next hop, expiry, ack, a table past 255 — so the
    /// kernel gets the requests it got before.
    #[test]
    fn encoded_ops_equal_the_builders_bytes() {
        let host = KernelRoute {
            dst: "2001:db8:1::9/128".parse().unwrap(),
            gateway: None,
            oif: 3,
            metric: 1024,
        };
        let big = InstallerConfig {
            table: 1000,
            protocol: 99,
            ..cfg()
        };
        let mut n = 0;
        for c in [cfg(), big] {
            for r in [host, pd()] {
                for op in [RouteOp::Add(r), RouteOp::Replace(r), RouteOp::Delete(r)] {
                    for exp in [None, Some(600)] {
                        for ack in [false, true] {
                            let seq = 0x0102_0304 + n;
                            let mut want = op_request(&c, &op, exp, ack);
                            want.header.sequence_number = seq;
                            // A prefix already in the buffer stays, the op is appended.
                            let mut out = vec![0xee; 3];
                            encode_op(&mut out, &c, &op, exp, seq, ack);
                            assert_eq!(&out[..3], &[0xee; 3]);
                            assert_eq!(out[3..], emitted(&want)[..], "{op:?} {exp:?} {ack}");
                            assert!(out.len() - 3 <= MAX_OP_LEN);
                            n += 1;
                        }
                    }
                }
            }
        }
    }

    /// The kernel's answers as it writes them (`struct nlmsgerr`: the error code, then the
    /// request's header, or all of it): each gives its sequence number and errno.
    fn answer(seq: u32, code: i32, quote: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + 4 + quote.len();
        let mut b = Vec::new();
        b.extend_from_slice(&(len as u32).to_ne_bytes());
        b.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&77u32.to_ne_bytes());
        b.extend_from_slice(&code.to_ne_bytes());
        b.extend_from_slice(quote);
        b
    }

    #[test]
    fn answers_are_read_by_sequence_number() {
        let mut req = Vec::new();
        encode_op(&mut req, &cfg(), &RouteOp::Delete(pd()), None, 41, false);
        // An ack (code 0, the header quoted) and an error quoting its request in full (with a
        // length that is not a multiple of 4: the next message starts aligned).
        let mut buf = answer(40, 0, &req[..NLMSG_HDRLEN]);
        let mut err = answer(41, -libc::ESRCH, &req);
        err.push(0);
        let pad = (4 - err.len() % 4) % 4;
        let len = err.len() as u32;
        err[0..4].copy_from_slice(&len.to_ne_bytes());
        err.extend(std::iter::repeat_n(0, pad));
        buf.extend_from_slice(&err);
        // A message of another type in between is skipped.
        let mut done = answer(9, 0, &[]);
        done[4..6].copy_from_slice(&3u16.to_ne_bytes());
        buf.extend_from_slice(&done);
        buf.extend_from_slice(&answer(42, -libc::EEXIST, &[]));
        let got: Vec<_> = answers(&buf).collect();
        assert_eq!(
            got,
            [
                Answer { seq: 40, errno: 0 },
                Answer {
                    seq: 41,
                    errno: libc::ESRCH
                },
                Answer {
                    seq: 42,
                    errno: libc::EEXIST
                },
            ]
        );
        // Hostile bytes: whatever is cut or lies about its length yields a prefix of the
        // answers, never a panic; an error without its code is no answer.
        for cut in 0..buf.len() {
            let part: Vec<_> = answers(&buf[..cut]).collect();
            assert!(got.starts_with(&part), "cut at {cut}: {part:?}");
        }
        let mut liar = buf.clone();
        liar[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(answers(&liar).count(), 0);
        liar[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(answers(&liar).count(), 0);
        assert_eq!(answers(&answer(5, 0, &[])[..NLMSG_HDRLEN]).count(), 0);
        // i32::MIN as a code cannot be negated: reported, not overflowed.
        assert_eq!(
            answers(&answer(6, i32::MIN, &[])).next(),
            Some(Answer {
                seq: 6,
                errno: i32::MAX
            })
        );
    }

    #[test]
    fn ip_commands() {
        let c = cfg();
        assert_eq!(
            ip_command(&c, &RouteOp::Add(pd()), "sub0"),
            "ip -6 route add 2001:db8:100::/56 via fe80::1 onlink dev sub0 proto 211 metric 1024 table 254"
        );
        assert_eq!(
            ip_command(&c, &RouteOp::Delete(pd()), "sub0"),
            "ip -6 route del 2001:db8:100::/56 via fe80::1 dev sub0 proto 211 metric 1024 table 254"
        );
    }

    /// RTA_CACHEINFO's `rta_expires` → the time left: 0 is "no expiry", a negative value is
    /// overdue (zero left), a positive one counts USER_HZ ticks; no cache info, no expiry.
    #[test]
    fn expiry_is_read_from_the_cache_info() {
        use crate::time::Duration;
        use netlink_packet_route::route::RouteCacheInfo;
        let with = |expires: i32| {
            let mut raw = [0u8; 32];
            raw[8..12].copy_from_slice(&expires.to_ne_bytes());
            let mut m = RouteMessage::default();
            m.attributes.push(RouteAttribute::CacheInfo(
                RouteCacheInfo::parse(&raw).unwrap(),
            ));
            m
        };
        let table = [
            (0, None),
            (-250, Some(Duration::ZERO)),
            (1, Some(Duration::from_millis(10))),
            (59_950, Some(Duration::from_millis(599_500))),
        ];
        for (ticks, want) in table {
            assert_eq!(expires_of(&with(ticks), USER_HZ), want, "{ticks}");
        }
        assert_eq!(expires_of(&RouteMessage::default(), USER_HZ), None);
    }
}
