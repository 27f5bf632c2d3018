//! Which interface a subscriber link means: the pure table the installer resolves
//! [`LinkRef`]s against, fed by link/address dumps and notifications.
//!
//! Resolution of a link-address (the relay's address on the subscriber link, RFC 8415 §9):
//! 1. a configured [`LinkMapping`] whose prefix contains it (longest prefix wins);
//! 2. else the interface holding an IPv6 address whose prefix contains it — the relay's own
//!    address on that link lies in the link's prefix; the longest prefix wins, and a tie between
//!    two interfaces (e.g. a link-local link-address) resolves to nothing rather than a guess.
//!
//! Only interfaces that are administratively up resolve: the kernel flushes a down interface's
//! IPv6 routes and refuses new ones (ENETDOWN), so routes for it wait, parked, until it is up.
//!
//! No I/O: the shell feeds [`LinkTable::set_link`] & co. from rtnetlink.

use std::collections::HashMap;
use std::net::Ipv6Addr;

use super::LinkRef;
use crate::cache::storage::hash::KeyHashBuilder;
use crate::prefix::Ipv6Prefix;

/// Config: link-addresses inside `link` leave by `interface`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkMapping {
    pub link: Ipv6Prefix,
    pub interface: String,
}

/// Interfaces by index and name, and their IPv6 addresses.
#[derive(Debug, Clone, Default)]
pub(crate) struct LinkTable {
    // The seeded word hasher: every route resolved at a restart looks its interface up here.
    by_name: HashMap<String, u32, KeyHashBuilder>,
    by_index: HashMap<u32, String, KeyHashBuilder>,
    /// Administratively up (IFF_UP).
    up: HashMap<u32, bool, KeyHashBuilder>,
    /// (ifindex, address, prefix length) as the kernel reports them.
    addrs: Vec<(u32, Ipv6Addr, u8)>,
}

impl LinkTable {
    pub(crate) fn new() -> LinkTable {
        LinkTable::default()
    }

    /// Record (or rename, or bring up/down) interface `index`; true when anything changed.
    pub(crate) fn set_link(&mut self, index: u32, name: &str, up: bool) -> bool {
        let was_up = self.up.insert(index, up);
        let old = self.by_index.insert(index, name.to_string());
        if let Some(old) = &old {
            if old != name && self.by_name.get(old) == Some(&index) {
                self.by_name.remove(old);
            }
        }
        self.by_name.insert(name.to_string(), index);
        old.as_deref() != Some(name) || was_up != Some(up)
    }

    /// Whether `index` exists and is up: routes on it can be installed.
    pub(crate) fn is_usable(&self, index: u32) -> bool {
        self.up.get(&index).copied().unwrap_or(false)
    }

    /// Forget interface `index` and its addresses.
    pub(crate) fn remove_link(&mut self, index: u32) {
        self.up.remove(&index);
        if let Some(name) = self.by_index.remove(&index) {
            if self.by_name.get(&name) == Some(&index) {
                self.by_name.remove(&name);
            }
        }
        self.addrs.retain(|(i, _, _)| *i != index);
    }

    /// Every IPv6 address on any interface (the box's own addresses).
    pub(crate) fn addresses(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.addrs.iter().map(|(_, a, _)| *a)
    }

    pub(crate) fn add_addr(&mut self, index: u32, addr: Ipv6Addr, len: u8) {
        if !self.addrs.contains(&(index, addr, len)) {
            self.addrs.push((index, addr, len.min(128)));
        }
    }

    pub(crate) fn remove_addr(&mut self, index: u32, addr: Ipv6Addr, len: u8) {
        self.addrs.retain(|e| *e != (index, addr, len));
    }

    pub(crate) fn index_of(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    pub(crate) fn name_of(&self, index: u32) -> Option<&str> {
        self.by_index.get(&index).map(String::as_str)
    }

    /// A global (not link-local) address interface `index` holds, the first the kernel
    /// reported: the relay's own address on that link, which is its link-address.
    pub(crate) fn global_address_of(&self, index: u32) -> Option<Ipv6Addr> {
        self.addrs
            .iter()
            .filter(|(i, a, _)| *i == index && !a.is_loopback() && !a.is_unspecified())
            .map(|(_, a, _)| *a)
            .find(|a| a.segments()[0] & 0xffc0 != 0xfe80)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_index.len()
    }

    /// The interface index `link` leaves by, if it can be told now.
    pub(crate) fn resolve(&self, link: &LinkRef, mappings: &[LinkMapping]) -> Option<u32> {
        match link {
            LinkRef::Interface(name) => self.index_of(name).filter(|i| self.is_usable(*i)),
            LinkRef::LinkAddress(a) => {
                if let Some(m) = mappings
                    .iter()
                    .filter(|m| m.link.contains(*a))
                    .max_by_key(|m| m.link.len())
                {
                    return self.index_of(&m.interface).filter(|i| self.is_usable(*i));
                }
                self.by_address(*a)
            }
        }
    }

    fn by_address(&self, a: Ipv6Addr) -> Option<u32> {
        let mut best: Option<(u8, u32)> = None;
        let mut tie = false;
        for &(index, addr, len) in &self.addrs {
            let Ok(net) = Ipv6Prefix::new_truncating(addr, len) else {
                continue;
            };
            if !net.contains(a) || !self.is_usable(index) {
                continue;
            }
            match best {
                Some((l, i)) if l > len || (l == len && i == index) => {}
                Some((l, _)) if l == len => tie = true,
                _ => {
                    best = Some((len, index));
                    tie = false;
                }
            }
        }
        if tie { None } else { best.map(|(_, i)| i) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> LinkTable {
        let mut t = LinkTable::new();
        assert!(t.set_link(2, "sub0", true));
        assert!(t.set_link(3, "sub1", true));
        assert!(!t.set_link(3, "sub1", true));
        t.add_addr(2, "2001:db8:1::1".parse().unwrap(), 64);
        t.add_addr(3, "2001:db8:2::1".parse().unwrap(), 64);
        t.add_addr(3, "2001:db8:1:0:8000::1".parse().unwrap(), 65);
        t.add_addr(2, "fe80::1".parse().unwrap(), 64);
        t.add_addr(3, "fe80::2".parse().unwrap(), 64);
        t
    }

    fn la(s: &str) -> LinkRef {
        LinkRef::LinkAddress(s.parse().unwrap())
    }

    #[test]
    fn resolves_by_name_address_and_config() {
        let t = table();
        assert_eq!(t.resolve(&LinkRef::Interface("sub1".into()), &[]), Some(3));
        assert_eq!(t.resolve(&LinkRef::Interface("nope".into()), &[]), None);
        assert_eq!(t.resolve(&la("2001:db8:1::1"), &[]), Some(2));
        assert_eq!(t.resolve(&la("2001:db8:2::99"), &[]), Some(3));
        // Longest prefix wins.
        assert_eq!(t.resolve(&la("2001:db8:1:0:8000::7"), &[]), Some(3));
        // Unknown link, and an ambiguous link-local one.
        assert_eq!(t.resolve(&la("2001:db8:9::1"), &[]), None);
        assert_eq!(t.resolve(&la("fe80::77"), &[]), None);
        // Config beats the kernel's addresses.
        let m = [LinkMapping {
            link: "2001:db8:1::/48".parse().unwrap(),
            interface: "sub1".into(),
        }];
        assert_eq!(t.resolve(&la("2001:db8:1::1"), &m), Some(3));
    }

    #[test]
    fn links_and_addresses_come_and_go() {
        let mut t = table();
        t.remove_link(2);
        assert_eq!(t.resolve(&la("2001:db8:1::1"), &[]), None);
        assert_eq!(t.index_of("sub0"), None);
        t.set_link(7, "sub0", true);
        assert_eq!(t.resolve(&LinkRef::Interface("sub0".into()), &[]), Some(7));
        t.add_addr(7, "2001:db8:1::1".parse().unwrap(), 64);
        assert_eq!(t.resolve(&la("2001:db8:1::5"), &[]), Some(7));
        t.remove_addr(7, "2001:db8:1::1".parse().unwrap(), 64);
        assert_eq!(t.resolve(&la("2001:db8:1::5"), &[]), None);
        // Down: nothing resolves to it until it is up again.
        t.add_addr(7, "2001:db8:1::1".parse().unwrap(), 64);
        assert!(t.set_link(7, "sub0", false));
        assert!(!t.is_usable(7));
        assert_eq!(t.resolve(&la("2001:db8:1::5"), &[]), None);
        assert_eq!(t.resolve(&LinkRef::Interface("sub0".into()), &[]), None);
        assert!(t.set_link(7, "sub0", true));
        assert_eq!(t.resolve(&la("2001:db8:1::5"), &[]), Some(7));
        // Rename.
        assert!(t.set_link(7, "sub9", true));
        assert_eq!(t.index_of("sub0"), None);
        assert_eq!(t.name_of(7), Some("sub9"));
        assert_eq!(t.len(), 2);
    }
}
