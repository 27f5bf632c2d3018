//! The spoof guard: packets arriving on a subscriber interface with one of this box's own
//! addresses as source are dropped before anything else sees them (pure: strings out).
//!
//! Why: the snooper believes a RELAY-FORW when this box sends it — outgoing, from one of its
//! own addresses. A subscriber can put the box's address in a datagram's source; the kernel then
//! forwards it out of the uplink, where the capture sees it leave like the relay's own. One such
//! forged RELAY-FORW (a RENEW in a neighbour's name with a peer-address of the attacker's
//! choosing) makes the server renew the neighbour's prefix towards the attacker, and the snooper
//! would match the server's REPLY to it. No host on a subscriber link may use this box's
//! addresses, so the kernel drops them at ingress (the `fib saddr type local` test is the
//! kernel's own address table, always current):
//!
//! ```text
//! table ip6 lqagent_guard {
//!   chain prerouting {
//!     type filter hook prerouting priority raw - 1; policy accept;
//!     iifname { "sub0", "sub1" } ip6 saddr != fe80::/10 ip6 daddr != ff00::/8
//!         fib saddr type local counter drop
//!   }
//! }
//! ```
//!
//! Link-local sources and multicast destinations are left alone: the box's own multicast
//! (router advertisements, relay replies to ff02::…) is looped back on the interface it left by.
//! The table is separate from the trigger's, so it is there whether the trigger runs or not; it
//! stays installed when lqagent stops (it only ever drops forgeries) and is replaced at start.

use std::fmt::Write as _;

/// Table name (family `ip6`).
pub(crate) const TABLE: &str = "lqagent_guard";

/// The install script for subscriber interfaces `ifaces` (each a valid interface name, as the
/// configuration guarantees); `None` when there is none to guard.
pub(crate) fn install(ifaces: &[String]) -> Option<String> {
    let mut names: Vec<&str> = Vec::new();
    for i in ifaces {
        if !names.contains(&i.as_str()) {
            names.push(i);
        }
    }
    if names.is_empty() {
        return None;
    }
    let set = names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = String::new();
    let _ = writeln!(s, "table ip6 {TABLE} {{}}");
    let _ = writeln!(s, "delete table ip6 {TABLE}");
    let _ = writeln!(s, "table ip6 {TABLE} {{");
    let _ = writeln!(s, "  chain prerouting {{");
    let _ = writeln!(
        s,
        "    type filter hook prerouting priority raw - 1; policy accept;"
    );
    let _ = writeln!(
        s,
        "    iifname {{ {set} }} ip6 saddr != fe80::/10 ip6 daddr != ff00::/8 fib saddr type local counter drop"
    );
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "}}");
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_each_subscriber_interface_once() {
        let s = install(&["sub0".into(), "sub1".into(), "sub0".into()]).unwrap();
        assert!(
            s.contains(
                "iifname { \"sub0\", \"sub1\" } ip6 saddr != fe80::/10 ip6 daddr != ff00::/8 \
                 fib saddr type local counter drop"
            ),
            "{s}"
        );
        assert!(s.starts_with("table ip6 lqagent_guard {}\ndelete table ip6 lqagent_guard\n"));
        assert_eq!(install(&[]), None);
    }
}
