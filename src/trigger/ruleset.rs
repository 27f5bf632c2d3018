//! The nftables text lqagent feeds to `nft -f -` (pure: strings in, strings out).
//!
//! One table of our own, `table ip6 lqagent`, so we never touch the operator's rules and can
//! replace or remove ours atomically:
//!
//! ```text
//! table ip6 lqagent {
//!   set known_a0 { type ipv6_addr; }                  # cached addresses on interface 0 (hash)
//!   set known_p0 { type ipv6_addr; flags interval; }  # delegated prefixes on interface 0
//!   chain prerouting {
//!     type filter hook prerouting priority raw; policy accept;  # before conntrack: a spoofed
//!                                                                # flood makes no conntrack entries
//!     ip6 saddr fe80::/10 return                       # link-local: never logged or dropped
//!     ip6 daddr ff02::1:2 udp dport 547 return         # DHCPv6 to the relay: by destination,
//!     fib daddr type local udp dport 547 return        # never by port alone
//!     icmpv6 type { nd-router-solicit, ... } return     # ND (RFC 4861)
//!     iifname "eth1" ip6 saddr { <link 0 subscriber prefixes> }
//!         ip6 saddr != @known_a0 ip6 saddr != @known_p0 jump unknown_0
//!   }
//!   chain unknown_0 {
//!     limit rate 200/second burst 50 packets log prefix "lqagent:0 " group 547 snaplen 40
//!     drop                                             # enforcement mode only
//!   }
//! }
//! ```
//!
//! The log prefix carries the link's index so the reader knows the link (interface and
//! link-address) without mapping ifindexes; `snaplen 40` copies only the IPv6 header. Addresses
//! and prefixes are kept in two sets because an interval set refuses overlapping elements: the
//! prefix set only ever holds prefixes not covered by another ([`super::known`] sees to it).
//! The install script creates-then-deletes the table before defining it, in one transaction, so a
//! stale table from a crashed run is replaced and a missing one is no error.

use std::fmt::Write as _;

use super::TriggerLink;
use crate::prefix::Ipv6Prefix;

/// Table name (family `ip6`).
pub(crate) const TABLE: &str = "lqagent";

/// The prefix of the log prefix; the link index follows.
pub(crate) const LOG_PREFIX: &str = "lqagent:";

/// Why a rule set could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RulesetError {
    #[error(
        "interface name {0:?} cannot be put in an nftables rule (want 1-15 of [A-Za-z0-9._@+-])"
    )]
    InterfaceName(String),
    #[error("link {0:?} has no subscriber prefix")]
    NoPrefixes(String),
}

/// Rule parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleParams {
    pub group: u16,
    pub enforcement: bool,
    pub rate_per_sec: u32,
    pub burst: u32,
    pub snaplen: u32,
}

/// A change to one element of one interface's known sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetOp {
    pub iface: usize,
    pub add: bool,
    pub network: Ipv6Prefix,
}

/// The elements of one interface's sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetContents {
    pub addresses: Vec<Ipv6Prefix>,
    pub prefixes: Vec<Ipv6Prefix>,
}

fn valid_ifname(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._@+-".contains(&c))
}

/// Set name for a network on interface `iface`: /128s go to the hash set, the rest to the interval set.
fn set_name(iface: usize, network: &Ipv6Prefix) -> String {
    if network.len() == 128 {
        format!("known_a{iface}")
    } else {
        format!("known_p{iface}")
    }
}

fn element(network: &Ipv6Prefix) -> String {
    if network.len() == 128 {
        network.addr().to_string()
    } else {
        network.to_string()
    }
}

/// Distinct interfaces of the links, in order of first appearance: index = set suffix.
pub fn interfaces(links: &[TriggerLink]) -> Vec<std::sync::Arc<str>> {
    let mut out: Vec<std::sync::Arc<str>> = Vec::new();
    for l in links {
        if !out.iter().any(|i| **i == *l.interface) {
            out.push(l.interface.clone());
        }
    }
    out
}

/// The full install script: replaces any table of ours, defines sets (with `initial` contents,
/// one entry per interface) and rules.
pub fn install(
    p: &RuleParams,
    links: &[TriggerLink],
    initial: &[SetContents],
) -> Result<String, RulesetError> {
    let ifaces = interfaces(links);
    let mut s = String::new();
    let _ = writeln!(s, "table ip6 {TABLE} {{}}");
    let _ = writeln!(s, "delete table ip6 {TABLE}");
    let _ = writeln!(s, "table ip6 {TABLE} {{");
    for (i, name) in ifaces.iter().enumerate() {
        if !valid_ifname(name) {
            return Err(RulesetError::InterfaceName(name.to_string()));
        }
        let _ = writeln!(s, "  # interface {name}");
        let _ = writeln!(s, "  set known_a{i} {{ type ipv6_addr; }}");
        let _ = writeln!(s, "  set known_p{i} {{ type ipv6_addr; flags interval; }}");
    }
    let _ = writeln!(s, "  chain prerouting {{");
    let _ = writeln!(
        s,
        "    type filter hook prerouting priority raw; policy accept;"
    );
    let _ = writeln!(s, "    ip6 saddr fe80::/10 return");
    // DHCPv6 a client sends to the relay (All_DHCP_Relay_Agents_and_Servers, or this box's own
    // address) is never logged or dropped: a client without a lease must reach the relay. The
    // exemption is by destination and port together: a port alone would let an unknown source
    // send anything to anyone past enforcement, just by choosing UDP port 546 or 547.
    let _ = writeln!(s, "    ip6 daddr ff02::1:2 udp dport 547 return");
    let _ = writeln!(s, "    fib daddr type local udp dport 547 return");
    let _ = writeln!(
        s,
        "    icmpv6 type {{ nd-router-solicit, nd-router-advert, nd-neighbor-solicit, \
         nd-neighbor-advert, nd-redirect }} return"
    );
    for (l, link) in links.iter().enumerate() {
        if link.subscriber_prefixes.is_empty() {
            return Err(RulesetError::NoPrefixes(link.name.to_string()));
        }
        let i = ifaces
            .iter()
            .position(|n| *n == link.interface)
            .unwrap_or(0);
        let nets: Vec<String> = link
            .subscriber_prefixes
            .iter()
            .map(|p| p.to_string())
            .collect();
        let _ = writeln!(
            s,
            "    iifname \"{}\" ip6 saddr {{ {} }} ip6 saddr != @known_a{i} ip6 saddr != @known_p{i} jump unknown_{l}",
            link.interface,
            nets.join(", ")
        );
    }
    let _ = writeln!(s, "  }}");
    for l in 0..links.len() {
        let _ = writeln!(s, "  chain unknown_{l} {{");
        let _ = writeln!(
            s,
            "    limit rate {}/second burst {} packets log prefix \"{LOG_PREFIX}{l} \" group {} snaplen {}",
            p.rate_per_sec.max(1),
            p.burst.max(1),
            p.group,
            p.snaplen
        );
        if p.enforcement {
            let _ = writeln!(s, "    drop");
        }
        let _ = writeln!(s, "  }}");
    }
    let _ = writeln!(s, "}}");
    for (i, c) in initial.iter().enumerate().take(ifaces.len()) {
        push_elements(&mut s, "add", i, true, &c.addresses);
        push_elements(&mut s, "add", i, false, &c.prefixes);
    }
    Ok(s)
}

/// Lines per `add element` statement, so no line gets huge.
const ELEMENTS_PER_LINE: usize = 512;

fn push_elements(s: &mut String, verb: &str, iface: usize, addresses: bool, nets: &[Ipv6Prefix]) {
    let set = if addresses {
        format!("known_a{iface}")
    } else {
        format!("known_p{iface}")
    };
    for chunk in nets.chunks(ELEMENTS_PER_LINE) {
        let els: Vec<String> = chunk.iter().map(element).collect();
        let _ = writeln!(
            s,
            "{verb} element ip6 {TABLE} {set} {{ {} }}",
            els.join(", ")
        );
    }
}

/// One transaction applying `ops` (removals first, so a prefix that moves out from under a
/// removed covering prefix can be added in the same batch).
pub fn update(ops: &[SetOp]) -> String {
    let mut s = String::new();
    for pass_add in [false, true] {
        for op in ops.iter().filter(|o| o.add == pass_add) {
            let verb = if op.add { "add" } else { "delete" };
            let _ = writeln!(
                s,
                "{verb} element ip6 {TABLE} {} {{ {} }}",
                set_name(op.iface, &op.network),
                element(&op.network)
            );
        }
    }
    s
}

/// One transaction replacing every set's contents.
pub fn resync(contents: &[SetContents]) -> String {
    let mut s = String::new();
    for (i, c) in contents.iter().enumerate() {
        let _ = writeln!(s, "flush set ip6 {TABLE} known_a{i}");
        let _ = writeln!(s, "flush set ip6 {TABLE} known_p{i}");
        push_elements(&mut s, "add", i, true, &c.addresses);
        push_elements(&mut s, "add", i, false, &c.prefixes);
    }
    s
}

/// Removes our table (shutdown).
pub fn remove() -> String {
    format!("delete table ip6 {TABLE}\n")
}

/// The link index in a log prefix written by [`install`] (`"lqagent:3 "` → 3).
pub fn link_of_prefix(prefix: &[u8]) -> Option<usize> {
    let rest = prefix.strip_prefix(LOG_PREFIX.as_bytes())?;
    let digits = rest.split(|&c| c == b' ').next()?;
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn link(name: &str, ifname: &str, prefixes: &[&str]) -> TriggerLink {
        TriggerLink {
            name: name.into(),
            interface: ifname.into(),
            link_address: Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1),
            subscriber_prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    fn params(enforcement: bool) -> RuleParams {
        RuleParams {
            group: 547,
            enforcement,
            rate_per_sec: 200,
            burst: 50,
            snaplen: 40,
        }
    }

    #[test]
    fn install_script_shape() {
        let links = [
            link("a", "eth1", &["2001:db8:1::/48"]),
            link("b", "eth2", &["2001:db8:2::/48", "2001:db8:3::/48"]),
            link("c", "eth1", &["2001:db8:4::/48"]),
        ];
        let init = vec![
            SetContents {
                addresses: vec!["2001:db8:1::5".parse().unwrap()],
                prefixes: vec!["2001:db8:1:100::/56".parse().unwrap()],
            },
            SetContents::default(),
        ];
        let s = install(&params(false), &links, &init).unwrap();
        let lines: Vec<&str> = s.lines().map(str::trim).collect();
        assert_eq!(lines[0], "table ip6 lqagent {}");
        assert_eq!(lines[1], "delete table ip6 lqagent");
        assert!(lines.contains(&"set known_a1 { type ipv6_addr; }"));
        assert!(!s.contains("known_a2"), "eth1 is shared by links a and c");
        assert!(lines.contains(
            &"iifname \"eth2\" ip6 saddr { 2001:db8:2::/48, 2001:db8:3::/48 } ip6 saddr != @known_a1 ip6 saddr != @known_p1 jump unknown_1"
        ));
        assert!(lines.contains(
            &"iifname \"eth1\" ip6 saddr { 2001:db8:4::/48 } ip6 saddr != @known_a0 ip6 saddr != @known_p0 jump unknown_2"
        ));
        assert!(lines.contains(
            &"limit rate 200/second burst 50 packets log prefix \"lqagent:2 \" group 547 snaplen 40"
        ));
        assert!(!lines.contains(&"drop"));
        assert!(lines.contains(&"add element ip6 lqagent known_a0 { 2001:db8:1::5 }"));
        assert!(lines.contains(&"add element ip6 lqagent known_p0 { 2001:db8:1:100::/56 }"));
        // Exemptions come before any link rule.
        let ll = lines.iter().position(|l| l.contains("fe80::/10")).unwrap();
        let first = lines.iter().position(|l| l.starts_with("iifname")).unwrap();
        assert!(ll < first);
        let enforced = install(&params(true), &links, &[]).unwrap();
        assert_eq!(enforced.lines().filter(|l| l.trim() == "drop").count(), 3);
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in ["eth\"0", "a b", "", "0123456789abcdef", "x;y", "x}"] {
            assert_eq!(
                install(&params(false), &[link("a", bad, &["2001:db8::/32"])], &[]),
                Err(RulesetError::InterfaceName(bad.to_string()))
            );
        }
        assert!(matches!(
            install(&params(false), &[link("a", "eth0", &[])], &[]),
            Err(RulesetError::NoPrefixes(_))
        ));
        assert!(
            install(
                &params(false),
                &[link("a", "eth0.100", &["2001:db8::/32"])],
                &[]
            )
            .is_ok()
        );
    }

    #[test]
    fn update_removes_before_adding() {
        let ops = [
            SetOp {
                iface: 0,
                add: true,
                network: "2001:db8:1:100::/64".parse().unwrap(),
            },
            SetOp {
                iface: 0,
                add: false,
                network: "2001:db8:1:100::/56".parse().unwrap(),
            },
            SetOp {
                iface: 1,
                add: true,
                network: "2001:db8:2::7".parse().unwrap(),
            },
        ];
        assert_eq!(
            update(&ops),
            "delete element ip6 lqagent known_p0 { 2001:db8:1:100::/56 }\n\
             add element ip6 lqagent known_p0 { 2001:db8:1:100::/64 }\n\
             add element ip6 lqagent known_a1 { 2001:db8:2::7 }\n"
        );
    }

    #[test]
    fn resync_flushes_and_chunks() {
        let addrs: Vec<Ipv6Prefix> = (0..1000u16)
            .map(|n| Ipv6Prefix::host(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, n)))
            .collect();
        let s = resync(&[SetContents {
            addresses: addrs,
            prefixes: vec![],
        }]);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "flush set ip6 lqagent known_a0");
        assert_eq!(lines[1], "flush set ip6 lqagent known_p0");
        assert_eq!(lines.len(), 4, "1000 addresses in two statements");
        assert_eq!(s.matches("2001:db8:1::").count(), 1000);
    }

    #[test]
    fn link_index_from_log_prefix() {
        assert_eq!(link_of_prefix(b"lqagent:3 "), Some(3));
        assert_eq!(link_of_prefix(b"lqagent:4095"), Some(4095));
        assert_eq!(link_of_prefix(b"lqagent: "), None);
        assert_eq!(link_of_prefix(b"other:3 "), None);
        assert_eq!(link_of_prefix(b"lqagent:99999999 "), None);
        assert_eq!(link_of_prefix(b"lqagent:-1 "), None);
    }
}
