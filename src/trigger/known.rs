//! The known-source sets, as lqagent wants them and as the kernel has them (pure).
//!
//! Fed with the cache's [`Change`] stream, [`KnownSets`] keeps per trigger interface the
//! *desired* addresses and prefixes, the *applied* elements (what our last successful `nft`
//! transaction put into the kernel), and a bounded set of dirty entries whose two sides may
//! differ. [`KnownSets::take_batch`] turns up to N dirty entries into [`SetOp`]s; when the dirty
//! set overflows, or a transaction failed and the kernel's state is no longer known, the next
//! batch is a full resync (flush and re-add) instead. So a flood of cache changes costs bounded
//! memory and a bounded number of `nft` runs, and the kernel converges on the cache.
//!
//! Interval sets refuse overlapping elements (`nft` says "interval overlaps with an existing
//! one"), so the applied prefix set holds only the *outermost* desired prefixes: a /64 inside a
//! desired /56 waits until the /56 goes. Addresses live in a separate hash set and never overlap.
//!
//! Which interface's sets a lease belongs to: the links whose link-address is the lease's link
//! address; failing that, the interface the cache names; failing that, every trigger link whose
//! subscriber prefixes hold the lease's network.

use std::collections::{BTreeSet, HashSet};
use std::net::Ipv6Addr;
use std::sync::Arc;

use super::TriggerLink;
use super::ruleset::{SetContents, SetOp, interfaces};
use crate::cache::{Change, LeaseKey, RouteView};
use crate::prefix::Ipv6Prefix;

#[derive(Debug)]
struct Sets {
    addresses: HashSet<Ipv6Addr>,
    prefixes: BTreeSet<Ipv6Prefix>,
    /// How many desired prefixes have each length: ancestor lookups skip absent lengths.
    lengths: [u32; 129],
}

impl Default for Sets {
    fn default() -> Self {
        Sets {
            addresses: HashSet::new(),
            prefixes: BTreeSet::new(),
            lengths: [0; 129],
        }
    }
}

impl Sets {
    fn has_prefix_ancestor(&self, net: &Ipv6Prefix) -> bool {
        (0..net.len()).any(|l| {
            self.lengths[usize::from(l)] > 0
                && Ipv6Prefix::new_truncating(net.addr(), l)
                    .is_ok_and(|anc| self.prefixes.contains(&anc))
        })
    }

    fn covers(&self, a: Ipv6Addr) -> bool {
        self.addresses.contains(&a)
            || (0..=128u8).any(|l| {
                self.lengths[usize::from(l)] > 0
                    && Ipv6Prefix::new_truncating(a, l).is_ok_and(|p| self.prefixes.contains(&p))
            })
    }

    /// Desired prefixes strictly inside `net`.
    fn descendants(&self, net: &Ipv6Prefix) -> Vec<Ipv6Prefix> {
        use std::ops::Bound;
        let host_bits = u128::MAX.checked_shr(u32::from(net.len())).unwrap_or(0);
        let last = Ipv6Prefix::host(Ipv6Addr::from(u128::from(net.addr()) | host_bits));
        // Ordered by (address, length): everything inside sorts after `net` and up to its last address.
        self.prefixes
            .range((Bound::Excluded(*net), Bound::Included(last)))
            .filter(|p| net.covers(p))
            .copied()
            .collect()
    }
}

/// What one call to [`KnownSets::take_batch`] asks the shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Batch {
    /// Nothing to do.
    Idle,
    /// Apply these element changes in one transaction.
    Update(Vec<SetOp>),
    /// Replace every set's contents (one entry per interface).
    Resync(Vec<SetContents>),
}

/// Desired vs applied known sources per trigger interface.
#[derive(Debug)]
pub(crate) struct KnownSets {
    links: Vec<TriggerLink>,
    ifaces: Vec<Arc<str>>,
    /// Interface index of each link.
    link_iface: Vec<usize>,
    desired: Vec<Sets>,
    applied: Vec<Sets>,
    dirty: HashSet<(usize, Ipv6Prefix)>,
    dirty_max: usize,
    resync: bool,
}

impl KnownSets {
    /// Empty sets for `links`; at most `dirty_max` dirty entries before a full resync.
    pub(crate) fn new(links: &[TriggerLink], dirty_max: usize) -> Self {
        let ifaces = interfaces(links);
        let link_iface = links
            .iter()
            .map(|l| ifaces.iter().position(|i| *i == l.interface).unwrap_or(0))
            .collect();
        KnownSets {
            links: links.to_vec(),
            desired: ifaces.iter().map(|_| Sets::default()).collect(),
            applied: ifaces.iter().map(|_| Sets::default()).collect(),
            ifaces,
            link_iface,
            dirty: HashSet::new(),
            dirty_max: dirty_max.max(1),
            resync: false,
        }
    }

    /// The interface index of link `link`.
    pub(crate) fn iface_of_link(&self, link: usize) -> Option<usize> {
        self.link_iface.get(link).copied()
    }

    /// Interfaces whose sets hold a lease seen as `v`.
    fn ifaces_for(&self, v: &RouteView) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        let push = |out: &mut Vec<usize>, i: usize| {
            if !out.contains(&i) {
                out.push(i);
            }
        };
        for (l, link) in self.links.iter().enumerate() {
            if link.link_address == v.link_address {
                push(&mut out, self.link_iface[l]);
            }
        }
        if out.is_empty()
            && let Some(name) = &v.interface
            && let Some(i) = self.ifaces.iter().position(|n| n == name)
        {
            push(&mut out, i);
        }
        if out.is_empty() {
            for (l, link) in self.links.iter().enumerate() {
                if link
                    .subscriber_prefixes
                    .iter()
                    .any(|p| p.covers(&v.network))
                {
                    push(&mut out, self.link_iface[l]);
                }
            }
        }
        out
    }

    /// Follow one cache change.
    pub(crate) fn on_change(&mut self, c: &Change) {
        if c.kind == crate::cache::ChangeKind::Unheld {
            // A notice about a key the cache does not hold: no known source changes.
            return;
        }
        let net = c.key.network();
        let old = c
            .old
            .as_ref()
            .map(|v| self.ifaces_for(v))
            .unwrap_or_default();
        let new = c
            .new
            .as_ref()
            .map(|v| self.ifaces_for(v))
            .unwrap_or_default();
        for &i in old.iter().filter(|i| !new.contains(i)) {
            self.set_desired(i, net, false);
        }
        for &i in new.iter() {
            self.set_desired(i, net, true);
        }
    }

    /// Load a lease as present (start-up from the store).
    pub(crate) fn insert(&mut self, key: &LeaseKey, v: &RouteView) {
        let net = key.network();
        for i in self.ifaces_for(v) {
            self.set_desired(i, net, true);
        }
    }

    fn set_desired(&mut self, i: usize, net: Ipv6Prefix, present: bool) {
        let Some(d) = self.desired.get_mut(i) else {
            return;
        };
        let changed = if net.len() == 128 {
            if present {
                d.addresses.insert(net.addr())
            } else {
                d.addresses.remove(&net.addr())
            }
        } else if present {
            let new = d.prefixes.insert(net);
            if new {
                d.lengths[usize::from(net.len())] += 1;
            }
            new
        } else {
            let gone = d.prefixes.remove(&net);
            if gone {
                d.lengths[usize::from(net.len())] -= 1;
            }
            gone
        };
        if !changed || self.resync {
            return;
        }
        self.mark(i, net);
        if net.len() < 128 {
            // Prefixes inside may have become covered or uncovered.
            for p in self.desired[i].descendants(&net) {
                self.mark(i, p);
            }
        }
    }

    fn mark(&mut self, i: usize, net: Ipv6Prefix) {
        if self.resync {
            return;
        }
        if self.dirty.len() >= self.dirty_max {
            self.dirty = HashSet::new();
            self.resync = true;
            return;
        }
        self.dirty.insert((i, net));
    }

    /// Whether the kernel's state is no longer known: the next batch is a resync.
    pub(crate) fn failed(&mut self) {
        self.dirty = HashSet::new();
        self.resync = true;
    }

    /// Whether `source` on link `link` is known to the cache (the kernel set may lag behind).
    pub(crate) fn knows(&self, link: usize, source: Ipv6Addr) -> bool {
        self.iface_of_link(link)
            .and_then(|i| self.desired.get(i))
            .is_some_and(|d| d.covers(source))
    }

    /// Whether there is work for [`KnownSets::take_batch`].
    pub(crate) fn pending(&self) -> bool {
        self.resync || !self.dirty.is_empty()
    }

    fn in_kernel_wanted(&self, i: usize, net: &Ipv6Prefix) -> bool {
        let d = &self.desired[i];
        if net.len() == 128 {
            d.addresses.contains(&net.addr())
        } else {
            d.prefixes.contains(net) && !d.has_prefix_ancestor(net)
        }
    }

    fn applied_has(&self, i: usize, net: &Ipv6Prefix) -> bool {
        let a = &self.applied[i];
        if net.len() == 128 {
            a.addresses.contains(&net.addr())
        } else {
            a.prefixes.contains(net)
        }
    }

    /// The next transaction, counted as applied (call [`KnownSets::failed`] if it was not).
    pub(crate) fn take_batch(&mut self, max: usize) -> Batch {
        if self.resync {
            self.resync = false;
            self.dirty = HashSet::new();
            return Batch::Resync(self.full_contents());
        }
        let take: Vec<(usize, Ipv6Prefix)> = self.dirty.iter().take(max.max(1)).copied().collect();
        let mut ops = Vec::new();
        for (i, net) in take {
            self.dirty.remove(&(i, net));
            let want = self.in_kernel_wanted(i, &net);
            if want == self.applied_has(i, &net) {
                continue;
            }
            let a = &mut self.applied[i];
            if net.len() == 128 {
                if want {
                    a.addresses.insert(net.addr());
                } else {
                    a.addresses.remove(&net.addr());
                }
            } else if want {
                a.prefixes.insert(net);
            } else {
                a.prefixes.remove(&net);
            }
            ops.push(SetOp {
                iface: i,
                add: want,
                network: net,
            });
        }
        if ops.is_empty() {
            Batch::Idle
        } else {
            Batch::Update(ops)
        }
    }

    /// What the kernel should hold, per interface; also records it as applied.
    fn full_contents(&mut self) -> Vec<SetContents> {
        let mut out = Vec::with_capacity(self.ifaces.len());
        for i in 0..self.ifaces.len() {
            let d = &self.desired[i];
            let mut addresses: Vec<Ipv6Prefix> =
                d.addresses.iter().map(|a| Ipv6Prefix::host(*a)).collect();
            addresses.sort();
            let prefixes: Vec<Ipv6Prefix> = d
                .prefixes
                .iter()
                .filter(|p| !d.has_prefix_ancestor(p))
                .copied()
                .collect();
            self.applied[i] = Sets {
                addresses: d.addresses.clone(),
                prefixes: prefixes.iter().copied().collect(),
                lengths: [0; 129],
            };
            out.push(SetContents {
                addresses,
                prefixes,
            });
        }
        out
    }

    /// Contents for the install script: everything desired, marked applied.
    pub(crate) fn initial(&mut self) -> Vec<SetContents> {
        self.resync = false;
        self.dirty = HashSet::new();
        self.full_contents()
    }

    /// Number of desired entries over all interfaces (for tests).
    #[cfg(test)]
    pub(crate) fn desired_len(&self) -> usize {
        self.desired
            .iter()
            .map(|d| d.addresses.len() + d.prefixes.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{ChangeKind, Timestamp};

    fn link(ifname: &str, la: u16, prefix: &str) -> TriggerLink {
        TriggerLink {
            name: format!("l{la}").into(),
            interface: ifname.into(),
            link_address: Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, la),
            subscriber_prefixes: vec![prefix.parse().unwrap()],
        }
    }

    fn view(net: &str, la: u16) -> RouteView {
        RouteView {
            network: net.parse().unwrap(),
            link_address: Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, la),
            interface: None,
            next_hop: None,
            client_duid: crate::wire::Duid::from(&[0u8, 1]),
            valid_until: Timestamp::NEVER,
        }
    }

    fn key(net: &str) -> LeaseKey {
        let p: Ipv6Prefix = net.parse().unwrap();
        if p.len() == 128 {
            LeaseKey::Address(p.addr())
        } else {
            LeaseKey::Prefix(p)
        }
    }

    fn added(net: &str, la: u16) -> Change {
        Change {
            kind: ChangeKind::Added,
            key: key(net),
            old: None,
            new: Some(view(net, la)),
        }
    }

    fn removed(net: &str, la: u16) -> Change {
        Change {
            kind: ChangeKind::Removed,
            key: key(net),
            old: Some(view(net, la)),
            new: None,
        }
    }

    fn ops(b: Batch) -> Vec<(usize, bool, String)> {
        let Batch::Update(mut v) = b else {
            panic!("want an update, got {b:?}")
        };
        v.sort_by_key(|o| (o.iface, o.add, o.network));
        v.into_iter()
            .map(|o| (o.iface, o.add, o.network.to_string()))
            .collect()
    }

    fn two_links() -> KnownSets {
        KnownSets::new(
            &[
                link("eth1", 1, "2001:db8:1::/48"),
                link("eth2", 2, "2001:db8:2::/48"),
            ],
            100,
        )
    }

    #[test]
    fn adds_and_removes_follow_the_cache_per_interface() {
        let mut k = two_links();
        k.on_change(&added("2001:db8:1::5/128", 1));
        k.on_change(&added("2001:db8:2:100::/56", 2));
        assert!(k.knows(0, "2001:db8:1::5".parse().unwrap()));
        assert!(!k.knows(1, "2001:db8:1::5".parse().unwrap()), "other link");
        assert!(k.knows(1, "2001:db8:2:1ff::1".parse().unwrap()));
        assert_eq!(
            ops(k.take_batch(10)),
            vec![
                (0, true, "2001:db8:1::5/128".into()),
                (1, true, "2001:db8:2:100::/56".into())
            ]
        );
        assert_eq!(k.take_batch(10), Batch::Idle);
        // Lifetime refresh: nothing to do.
        let mut upd = added("2001:db8:1::5/128", 1);
        upd.kind = ChangeKind::Updated;
        upd.old = upd.new.clone();
        k.on_change(&upd);
        assert_eq!(k.take_batch(10), Batch::Idle);
        k.on_change(&removed("2001:db8:1::5/128", 1));
        assert_eq!(
            ops(k.take_batch(10)),
            vec![(0, false, "2001:db8:1::5/128".into())]
        );
        assert!(!k.knows(0, "2001:db8:1::5".parse().unwrap()));
    }

    #[test]
    fn add_then_remove_before_a_batch_costs_nothing() {
        let mut k = two_links();
        k.on_change(&added("2001:db8:1::5/128", 1));
        k.on_change(&removed("2001:db8:1::5/128", 1));
        assert_eq!(k.take_batch(10), Batch::Idle);
    }

    #[test]
    fn nested_prefixes_keep_only_the_outermost_in_the_kernel() {
        let mut k = two_links();
        k.on_change(&added("2001:db8:1:100::/56", 1));
        k.on_change(&added("2001:db8:1:100::/64", 1));
        assert_eq!(
            ops(k.take_batch(10)),
            vec![(0, true, "2001:db8:1:100::/56".into())]
        );
        k.on_change(&removed("2001:db8:1:100::/56", 1));
        assert_eq!(
            ops(k.take_batch(10)),
            vec![
                (0, false, "2001:db8:1:100::/56".into()),
                (0, true, "2001:db8:1:100::/64".into())
            ]
        );
        // And back: the /56 returns, the /64 leaves the kernel (still desired).
        k.on_change(&added("2001:db8:1:100::/56", 1));
        assert_eq!(
            ops(k.take_batch(10)),
            vec![
                (0, false, "2001:db8:1:100::/64".into()),
                (0, true, "2001:db8:1:100::/56".into())
            ]
        );
        assert!(k.knows(0, "2001:db8:1:100::9".parse().unwrap()));
    }

    #[test]
    fn batches_are_bounded_and_overflow_becomes_a_resync() {
        let mut k = KnownSets::new(&[link("eth1", 1, "2001:db8:1::/48")], 50);
        for n in 0..40u16 {
            k.on_change(&added(&format!("2001:db8:1::{n:x}/128"), 1));
        }
        assert_eq!(ops(k.take_batch(16)).len(), 16);
        assert_eq!(ops(k.take_batch(16)).len(), 16);
        assert_eq!(ops(k.take_batch(16)).len(), 8);
        for n in 100..200u16 {
            k.on_change(&added(&format!("2001:db8:1::{n:x}/128"), 1));
        }
        let Batch::Resync(c) = k.take_batch(16) else {
            panic!("overflow must resync")
        };
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].addresses.len(), 140);
        assert_eq!(k.take_batch(16), Batch::Idle);
        // A failed transaction also resyncs.
        k.on_change(&removed("2001:db8:1::0/128", 1));
        k.failed();
        let Batch::Resync(c) = k.take_batch(16) else {
            panic!("failure must resync")
        };
        assert_eq!(c[0].addresses.len(), 139);
    }

    #[test]
    fn interface_falls_back_to_name_then_prefix() {
        let mut k = two_links();
        let mut v = view("2001:db8:2::9/128", 77);
        v.interface = Some("eth2".into());
        k.insert(&key("2001:db8:2::9/128"), &v);
        assert!(k.knows(1, "2001:db8:2::9".parse().unwrap()));
        let v = view("2001:db8:1::9/128", 77);
        k.insert(&key("2001:db8:1::9/128"), &v);
        assert!(k.knows(0, "2001:db8:1::9".parse().unwrap()));
        let v = view("2001:db8:9::9/128", 77);
        k.insert(&key("2001:db8:9::9/128"), &v);
        assert_eq!(
            k.desired_len(),
            2,
            "a lease on no trigger link is not tracked"
        );
        let init = k.initial();
        assert_eq!(init[0].addresses.len(), 1);
        assert_eq!(init[1].addresses.len(), 1);
        assert_eq!(k.take_batch(10), Batch::Idle);
    }
}
