//! The rtnetlink messages the installer sends and reads, each named by the `ip` command it equals,
//! and the socket set-up (strict dump filtering, enlarged receive buffer).
//!
//! Acknowledgements: the kernel answers every message of a datagram in order and always reports
//! an error (`netlink_rcv_skb` acks when `err || NLM_F_ACK`), so a batch sets `NLM_F_ACK` only on
//! its last message. When that ack arrives, every error of the batch has arrived before it. An
//! error quotes the refused message in full (we never set `NETLINK_CAP_ACK`), so
//! [`parse_refused`] tells which route it was about. Skipping the per-route success ack is what
//! makes a batch cheap in the kernel (measured: see `docs/routes.md`).

use std::net::Ipv6Addr;

use netlink_packet_core::{
    ErrorMessage, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
    NetlinkMessage, Parseable,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::RouteMessageBuilder;

use super::plan::{KernelRoute, RouteOp};
use super::{InstallerConfig, KernelError};
use crate::prefix::Ipv6Prefix;

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const NLMSG_HDRLEN: usize = 16;

/// The route message for `r` with our table, protocol and metric.
fn base(cfg: &InstallerConfig, r: &KernelRoute) -> RouteMessageBuilder<Ipv6Addr> {
    RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(r.dst.addr(), r.dst.len())
        .output_interface(r.oif)
        .priority(r.metric)
        .table_id(cfg.table)
        .protocol(RouteProtocol::from(cfg.protocol))
}

/// The request for one op; `ack` asks for an acknowledgement even on success.
///
/// - add: `ip -6 route add DST [via GW onlink] dev IF proto P metric M table T [expires S]`
/// - replace: `ip -6 route replace …` (same arguments)
/// - delete: `ip -6 route del DST [via GW] dev IF proto P metric M table T`
///
/// A next hop is marked `onlink`: it is the requesting router on that very link, so the route
/// must not depend on a connected route to it (unnumbered links, RFC 8987 S-2).
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
pub(crate) fn expires_of(m: &RouteMessage, user_hz: u32) -> Option<std::time::Duration> {
    let ticks = m.attributes.iter().find_map(|a| match a {
        RouteAttribute::CacheInfo(c) => Some(c.expires as i32),
        _ => None,
    })?;
    match ticks {
        0 => None,
        t if t < 0 => Some(std::time::Duration::ZERO),
        t => Some(std::time::Duration::from_millis(
            u64::from(t.unsigned_abs()) * 1000 / u64::from(user_hz.max(1)),
        )),
    }
}

/// The kernel's USER_HZ, what RTA_CACHEINFO's times count in: 100 on every architecture Linux
/// runs a BNG on (x86, arm, arm64, ppc, s390, riscv), as in `metrics::process` (`ip route`
/// asks `sysconf(_SC_CLK_TCK)`, which is unsafe to call here and answers the same).
pub(crate) const USER_HZ: u32 = 100;

/// Which of our requests an error is about: (was it a delete, the route), parsed from the quoted
/// request. `None` when the quote is capped, truncated or not a route request.
pub(crate) fn parse_refused(e: &ErrorMessage) -> Option<(bool, KernelRoute)> {
    let q = &e.header;
    let len = u32::from_ne_bytes(q.get(0..4)?.try_into().ok()?) as usize;
    let kind = u16::from_ne_bytes(q.get(4..6)?.try_into().ok()?);
    let delete = match kind {
        RTM_NEWROUTE => false,
        RTM_DELROUTE => true,
        _ => return None,
    };
    let body = q.get(NLMSG_HDRLEN..len.min(q.len()))?;
    let m = RouteMessage::parse(body).ok()?;
    Some((delete, route_of(&m)?))
}

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

    #[test]
    fn refused_request_maps_back_to_its_route() {
        let c = cfg();
        let mut m = op_request(&c, &RouteOp::Delete(pd()), None, false);
        m.finalize();
        let mut quoted = vec![0u8; m.buffer_len()];
        m.emit(&mut quoted);
        let e = {
            let mut e = ErrorMessage::default();
            e.code = std::num::NonZeroI32::new(-3);
            e.header = quoted.clone();
            e
        };
        assert_eq!(parse_refused(&e), Some((true, pd())));
        // Truncated or foreign quotes give nothing, never a panic.
        for cut in [0, 3, 10, 16, 20, quoted.len() - 1] {
            let mut t = e.clone();
            t.header.truncate(cut);
            let _ = parse_refused(&t);
        }
        let mut t = e.clone();
        t.header[4] = 16; // RTM_NEWLINK
        assert_eq!(parse_refused(&t), None);
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
        use netlink_packet_route::route::RouteCacheInfo;
        use std::time::Duration;
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
