//! Pure route planning: what we want in the kernel vs what is there → a [`RoutePlan`] of
//! [`RouteOp`]s; plus how to react to a kernel error and how long to back off.
//!
//! Invariants: a plan never holds the same op twice, and never an add and a replace of the same
//! route (so a kernel error, which quotes the refused message, maps back to exactly one op); only routes of ours are ever in `actual` (the shell dumps with our
//! protocol number, table and family and filters again itself), so a `Delete` or `Replace` can
//! never hit another protocol's route; deletes come first, then replaces, then adds.
//! No I/O, no clock: time comes in as arguments.

use crate::label::labels;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::Ipv6Addr;

use crate::prefix::Ipv6Prefix;

/// A route as the kernel holds it (our protocol and table are implied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelRoute {
    pub dst: Ipv6Prefix,
    /// RTA_GATEWAY; `None` for a route straight onto the link.
    pub gateway: Option<Ipv6Addr>,
    /// RTA_OIF.
    pub oif: u32,
    /// RTA_PRIORITY.
    pub metric: u32,
}

/// What to do to one route (`ip -6 route add|replace|del`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteOp {
    /// Create, failing with EEXIST when a route with the same destination and metric exists.
    Add(KernelRoute),
    /// Overwrite our route with the same destination and metric.
    Replace(KernelRoute),
    /// Delete our route (matched by destination, metric, table and protocol).
    Delete(KernelRoute),
}

labels! {
    /// The kind of a [`RouteOp`], for error classification and logs.
    pub(crate) enum OpKind {
        Add => "add",
        Replace => "replace",
        Delete => "del",
    }
}

impl RouteOp {
    pub(crate) fn route(&self) -> &KernelRoute {
        match self {
            RouteOp::Add(r) | RouteOp::Replace(r) | RouteOp::Delete(r) => r,
        }
    }

    pub(crate) fn kind(&self) -> OpKind {
        match self {
            RouteOp::Add(_) => OpKind::Add,
            RouteOp::Replace(_) => OpKind::Replace,
            RouteOp::Delete(_) => OpKind::Delete,
        }
    }

    pub(crate) fn dst(&self) -> Ipv6Prefix {
        self.route().dst
    }
}

/// An ordered list of ops, none twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RoutePlan {
    pub ops: Vec<RouteOp>,
}

impl RoutePlan {
    /// A plan of `ops` in execution order (see [`RoutePlan::sort`]).
    pub(crate) fn new(ops: Vec<RouteOp>) -> RoutePlan {
        let mut p = RoutePlan { ops };
        p.sort();
        p
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.ops.len()
    }

    /// How many ops of `kind` the plan holds.
    pub(crate) fn count(&self, kind: OpKind) -> usize {
        self.ops.iter().filter(|o| o.kind() == kind).count()
    }

    /// Deletes first (they free destinations), then replaces, then adds; within each kind
    /// longer prefixes first, so a /128 precedes a prefix routed via it. The key covers every
    /// field, and ops are unique, so the order is total and the unstable sort deterministic.
    fn sort(&mut self) {
        self.ops.sort_unstable_by_key(|op| {
            let rank = match op.kind() {
                OpKind::Delete => 0,
                OpKind::Replace => 1,
                OpKind::Add => 2,
            };
            let r = op.route();
            (
                rank,
                std::cmp::Reverse(r.dst.len()),
                r.dst,
                r.metric,
                r.gateway,
                r.oif,
            )
        });
    }
}

/// The op that turns `installed` (our route in the kernel for a destination, if any) into `want`.
pub(crate) fn plan_change(
    installed: Option<&KernelRoute>,
    want: Option<&KernelRoute>,
) -> Option<RouteOp> {
    match (installed, want) {
        (None, None) => None,
        (Some(old), None) => Some(RouteOp::Delete(*old)),
        (None, Some(new)) => Some(RouteOp::Add(*new)),
        (Some(old), Some(new)) if old == new => None,
        // Same metric: replace in place. Another metric: the replace would leave the old one, so
        // add the new route; the reconcile deletes the stale one with its own metric.
        (Some(old), Some(new)) if old.metric == new.metric => Some(RouteOp::Replace(*new)),
        (Some(_), Some(new)) => Some(RouteOp::Add(*new)),
    }
}

/// The result of a reconcile plan: the ops, and the routes already right (our new belief).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reconciliation {
    pub plan: RoutePlan,
    /// Desired routes the kernel already holds exactly.
    pub unchanged: HashMap<Ipv6Prefix, KernelRoute>,
    /// Routes of ours at destinations nothing desires, left in place because [`Stale::Inherit`]
    /// was asked for (with [`Stale::Delete`] they are deletes in the plan instead).
    pub inherited: Vec<KernelRoute>,
}

/// What a reconcile does with a route of ours at a destination nothing desires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stale {
    /// Delete it: the cache is the whole truth.
    Delete,
    /// Leave it and report it as inherited: after a restart the cache may not yet know what a
    /// previous run installed (empty, damaged or expired state file; recovery still running), and
    /// a route removed now could not be put back until the subscriber renews.
    Inherit,
}

/// Diff the whole desired set against a dump of our routes.
///
/// `keep` are destinations that are desired but cannot be resolved right now (link unknown): a
/// route of ours for them is left alone (RFC 8987 S-2: keep routes while the next hop is away)
/// rather than deleted. Every other route of ours not desired exactly — wrong next hop, interface,
/// metric, or a duplicate — is replaced or deleted. Deletes name the exact route (gateway and
/// interface too), so deleting a duplicate never hits its wanted sibling.
///
/// `stale` says what becomes of routes at destinations neither desired nor kept: deleted, or
/// (while the agent cannot yet know what it should hold) left in place and listed in
/// [`Reconciliation::inherited`]. Routes at a desired destination are always corrected: the
/// cache explains that destination.
pub(crate) fn plan_reconcile<S: BuildHasher, T: BuildHasher>(
    desired: &HashMap<Ipv6Prefix, KernelRoute, S>,
    actual: &[KernelRoute],
    keep: &HashSet<Ipv6Prefix, T>,
    stale: Stale,
) -> Reconciliation {
    let mut out = Reconciliation::default();
    // Group the dump by destination, keeping the kernel's order (a replace hits the first route
    // with the same metric, which is the first one the dump shows).
    let mut groups: HashMap<Ipv6Prefix, Vec<KernelRoute>> = HashMap::new();
    for r in actual {
        groups.entry(r.dst).or_default().push(*r);
    }
    for (dst, group) in &groups {
        let Some(want) = desired.get(dst) else {
            if !keep.contains(dst) {
                match stale {
                    Stale::Delete => out
                        .plan
                        .ops
                        .extend(group.iter().map(|r| RouteOp::Delete(*r))),
                    Stale::Inherit => out.inherited.extend(group.iter().copied()),
                }
            }
            continue;
        };
        let survivor = if let Some(exact) = group.iter().position(|r| r == want) {
            out.unchanged.insert(*dst, *want);
            Some(exact)
        } else if let Some(same) = group.iter().position(|r| r.metric == want.metric) {
            out.plan.ops.push(RouteOp::Replace(*want));
            Some(same)
        } else {
            out.plan.ops.push(RouteOp::Add(*want));
            None
        };
        for (i, r) in group.iter().enumerate() {
            if Some(i) != survivor && r != want {
                out.plan.ops.push(RouteOp::Delete(*r));
            }
        }
    }
    for (dst, want) in desired {
        if !groups.contains_key(dst) {
            out.plan.ops.push(RouteOp::Add(*want));
        }
    }
    out.plan.sort();
    out.inherited
        .sort_unstable_by_key(|r| (r.dst, r.metric, r.gateway, r.oif));
    out
}

/// How to react when the kernel refuses an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorAction {
    /// EEXIST on add: replace it — if a dump shows the existing route is ours.
    ReplaceIfOurs,
    /// ENODEV / ENETDOWN: the interface is gone or down; park until it is usable.
    Park,
    /// Delete of a route that is not there (ESRCH/ENOENT): the goal is reached.
    AlreadyDone,
    /// Anything else: retry later with backoff.
    Retry,
}

const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const ENETDOWN: i32 = 100;

/// Classify a kernel error (a positive errno) for an op of `kind`.
pub(crate) fn classify(kind: OpKind, errno: i32) -> ErrorAction {
    match (kind, errno.abs()) {
        (OpKind::Add, EEXIST) => ErrorAction::ReplaceIfOurs,
        (OpKind::Add | OpKind::Replace, ENODEV | ENETDOWN) => ErrorAction::Park,
        (OpKind::Delete, ESRCH | ENOENT | ENODEV) => ErrorAction::AlreadyDone,
        _ => ErrorAction::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(dst: &str, gw: Option<&str>, oif: u32, metric: u32) -> KernelRoute {
        KernelRoute {
            dst: dst.parse().unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
            oif,
            metric,
        }
    }

    #[test]
    fn change_table() {
        let a = r("2001:db8::1/128", None, 2, 1024);
        let b = r("2001:db8::1/128", None, 3, 1024);
        let c = r("2001:db8::1/128", None, 2, 100);
        assert_eq!(plan_change(None, None), None);
        assert_eq!(plan_change(None, Some(&a)), Some(RouteOp::Add(a)));
        assert_eq!(plan_change(Some(&a), None), Some(RouteOp::Delete(a)));
        assert_eq!(plan_change(Some(&a), Some(&a)), None);
        assert_eq!(plan_change(Some(&a), Some(&b)), Some(RouteOp::Replace(b)));
        assert_eq!(plan_change(Some(&a), Some(&c)), Some(RouteOp::Add(c)));
    }

    #[test]
    fn reconcile_adds_missing_deletes_stale_replaces_changed() {
        let keep_me = r("2001:db8:1::/56", Some("fe80::1"), 2, 1024);
        let changed_old = r("2001:db8:2::/56", Some("fe80::1"), 2, 1024);
        let changed_new = r("2001:db8:2::/56", Some("fe80::2"), 2, 1024);
        let stale = r("2001:db8:3::/56", Some("fe80::1"), 2, 1024);
        let missing = r("2001:db8::5/128", None, 2, 1024);
        let other_metric = r("2001:db8:1::/56", Some("fe80::1"), 2, 7);
        let desired: HashMap<_, _> = [keep_me, changed_new, missing]
            .into_iter()
            .map(|x| (x.dst, x))
            .collect();
        let actual = [keep_me, changed_old, stale, other_metric];
        let rec = plan_reconcile(&desired, &actual, &HashSet::new(), Stale::Delete);
        assert_eq!(
            rec.plan.ops,
            vec![
                RouteOp::Delete(other_metric),
                RouteOp::Delete(stale),
                RouteOp::Replace(changed_new),
                RouteOp::Add(missing),
            ]
        );
        assert_eq!(rec.unchanged.len(), 1);
        assert_eq!(rec.unchanged.get(&keep_me.dst), Some(&keep_me));
    }

    #[test]
    fn reconcile_deletes_duplicates_and_keeps_parked() {
        let want = r("2001:db8:1::/56", Some("fe80::1"), 2, 1024);
        // Two routes of ours at the same destination and metric (multipath siblings).
        let dup = r("2001:db8:1::/56", Some("fe80::9"), 2, 1024);
        let parked = r("2001:db8:9::/56", Some("fe80::1"), 4, 1024);
        let desired: HashMap<_, _> = [(want.dst, want)].into_iter().collect();
        let keep: HashSet<_> = [parked.dst].into_iter().collect();
        let rec = plan_reconcile(&desired, &[dup, want, parked], &keep, Stale::Delete);
        // The exact route stays, its sibling goes, the parked destination is left alone.
        assert_eq!(rec.plan.ops, vec![RouteOp::Delete(dup)]);
        assert_eq!(rec.unchanged.get(&want.dst), Some(&want));
        // Without an exact match the first same-metric route is replaced, the rest deleted.
        let dup2 = r("2001:db8:1::/56", Some("fe80::8"), 2, 1024);
        let rec = plan_reconcile(&desired, &[dup, dup2], &keep, Stale::Delete);
        assert_eq!(
            rec.plan.ops,
            vec![RouteOp::Delete(dup2), RouteOp::Replace(want)]
        );
        // And the kept destination goes once it is neither desired nor kept.
        let rec = plan_reconcile(&desired, &[want, parked], &HashSet::new(), Stale::Delete);
        assert_eq!(rec.plan.ops, vec![RouteOp::Delete(parked)]);
    }

    #[test]
    fn reconcile_of_empty_kernel_adds_everything_longest_first() {
        let a = r("2001:db8:1::/56", Some("2001:db8::5"), 2, 1024);
        let b = r("2001:db8::5/128", None, 2, 1024);
        let desired: HashMap<_, _> = [(a.dst, a), (b.dst, b)].into_iter().collect();
        let rec = plan_reconcile(&desired, &[], &HashSet::new(), Stale::Delete);
        assert_eq!(rec.plan.ops, vec![RouteOp::Add(b), RouteOp::Add(a)]);
        assert_eq!(rec.plan.count(OpKind::Add), 2);
        // Nothing desired, nothing there: nothing to do.
        assert!(
            plan_reconcile(&HashMap::new(), &[], &HashSet::new(), Stale::Delete)
                .plan
                .is_empty()
        );
    }

    /// What becomes of each kind of route with `Stale::Inherit`: only routes at destinations
    /// nothing desires are spared; everything the cache explains is corrected as usual.
    #[test]
    fn inherit_table() {
        let want = r("2001:db8:1::/56", Some("fe80::1"), 2, 1024);
        let wrong_hop = r("2001:db8:1::/56", Some("fe80::9"), 2, 1024);
        let unknown_a = r("2001:db8::7/128", None, 2, 1024);
        let unknown_p = r("2001:db8:7::/56", Some("fe80::7"), 3, 1024);
        let parked = r("2001:db8:9::/56", Some("fe80::1"), 4, 1024);
        let missing = r("2001:db8::5/128", None, 2, 1024);
        let desired: HashMap<_, _> = [(want.dst, want), (missing.dst, missing)]
            .into_iter()
            .collect();
        let keep: HashSet<_> = [parked.dst].into_iter().collect();
        let actual = [wrong_hop, unknown_p, unknown_a, parked];
        // (stale mode, expected ops, expected inherited)
        let table: [(Stale, Vec<RouteOp>, Vec<KernelRoute>); 2] = [
            (
                Stale::Inherit,
                vec![RouteOp::Replace(want), RouteOp::Add(missing)],
                vec![unknown_a, unknown_p],
            ),
            (
                Stale::Delete,
                vec![
                    RouteOp::Delete(unknown_a),
                    RouteOp::Delete(unknown_p),
                    RouteOp::Replace(want),
                    RouteOp::Add(missing),
                ],
                vec![],
            ),
        ];
        for (stale, ops, inherited) in table {
            let rec = plan_reconcile(&desired, &actual, &keep, stale);
            assert_eq!(rec.plan.ops, ops, "{stale:?}");
            assert_eq!(rec.inherited, inherited, "{stale:?}");
        }
        // An empty cache (corrupt or empty state file) inherits every route, deletes none.
        let rec = plan_reconcile(&HashMap::new(), &actual, &HashSet::new(), Stale::Inherit);
        assert!(rec.plan.is_empty());
        assert_eq!(rec.inherited.len(), actual.len());
    }

    #[test]
    fn error_classes() {
        assert_eq!(classify(OpKind::Add, 17), ErrorAction::ReplaceIfOurs);
        assert_eq!(classify(OpKind::Add, -17), ErrorAction::ReplaceIfOurs);
        assert_eq!(classify(OpKind::Replace, 17), ErrorAction::Retry);
        assert_eq!(classify(OpKind::Add, 19), ErrorAction::Park);
        assert_eq!(classify(OpKind::Replace, 19), ErrorAction::Park);
        assert_eq!(classify(OpKind::Add, 100), ErrorAction::Park);
        assert_eq!(classify(OpKind::Delete, 3), ErrorAction::AlreadyDone);
        assert_eq!(classify(OpKind::Add, 101), ErrorAction::Retry);
        assert_eq!(classify(OpKind::Delete, 1), ErrorAction::Retry);
    }
}
