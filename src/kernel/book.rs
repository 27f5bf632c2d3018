//! The installer's bookkeeping, without the socket: what we want in the kernel, what we believe
//! is there, and every decision on that state.
//!
//! The [`Book`] holds the desired routes, the routes of ours it believes the kernel holds, the
//! parked routes (link unknown, or its interface gone), the inherited routes (ours from before the
//! start, kept while the cache may not yet know them), the retry schedule and whether a resync is
//! owed. Each call takes an event — changes from the cache, a due retry, a link table change, a
//! dump of our routes, the outcomes of a batch — and returns the [`RouteOp`]s to run; the
//! installer ([`super::install`]) only runs them and feeds back what the kernel answered.
//!
//! Kept apart from the socket so that the rules — parking, retry deadlines, when an inherited
//! route is adopted, kept or deleted — are tested as tables without root or netlink, like
//! [`super::plan`], which it builds on. No I/O, no clock: time comes in as `Instant` arguments.
//! Counters go to the shared [`InstallerStats`] (atomics) as the decisions are taken.

use crate::label::labels;
use crate::time::{Duration, Instant};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::Ipv6Addr;
use std::sync::Arc;

use tracing::{debug, info, warn};

use super::link::{LinkMapping, LinkTable};
use super::plan::{self, ErrorAction, KernelRoute, OpKind, RouteOp, RoutePlan, Stale};
use super::stats::{InstallerStats, RouteCounter};
use super::{InstallerConfig, LinkRef, RouteChange, RouteSpec};
use crate::cache::storage::StaggeredMap;
use crate::cache::storage::hash::KeyHashBuilder;
use crate::prefix::Ipv6Prefix;

/// The book's maps, keyed by destination: hashed with the cache's seeded word hasher, not
/// SipHash. A restart from a big state file puts every route through several of them (desired,
/// wanted, installed, the expiry of each add), and SipHash of a 17-byte prefix was most of that
/// cost. The seed is random per process, as the destinations come from the network.
type Map<K, V> = HashMap<K, V, KeyHashBuilder>;
type Set<K> = HashSet<K, KeyHashBuilder>;

/// What became of one op sent to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Done,
    /// The kernel refused it with this (positive) errno.
    Refused(i32),
    /// No answer within the ack timeout.
    Unanswered,
}

/// The counters of succeeded adds, replaces and deletes, in [`Book::succeeded`]'s order.
const SUCCEEDED: [RouteCounter; 3] = [
    RouteCounter::Installed,
    RouteCounter::Replaced,
    RouteCounter::Withdrawn,
];

/// What [`Book::apply`]'s first pass notes for a destination: the route its last change wants.
#[derive(Debug, Clone, Copy)]
enum Wanted {
    /// Desired, as this route (its link resolved).
    Route(KernelRoute),
    /// Desired, but its link resolves to no interface now: planned (parked) from the desired
    /// set, which has the link to log.
    Unresolved,
    /// Not desired.
    Gone,
}

impl Wanted {
    fn of(route: Option<KernelRoute>) -> Wanted {
        route.map_or(Wanted::Unresolved, Wanted::Route)
    }
}

/// What one reconcile found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Routes of ours the dump showed.
    pub found: usize,
    pub unchanged: usize,
    pub added: usize,
    pub replaced: usize,
    pub deleted: usize,
    /// Desired routes whose link is unknown.
    pub parked: usize,
    /// Undesired routes of ours kept because inheritance is still on.
    pub inherited: usize,
}

labels! {
    /// Where one destination stands with the installer.
    pub enum RouteState {
        /// In the kernel as desired.
        Installed => "installed",
        /// Desired, but its link has no interface yet.
        Parked => "parked",
        /// Desired, not (yet) in the kernel: being retried, or only logged in dry-run mode.
        Pending => "pending",
        /// Not desired, but kept from before the start: until a source explains or withdraws
        /// it, or its kernel expiry (without one, until recovery finishes).
        Inherited => "inherited",
        /// Not desired: no route.
        None => "none",
    }
}

/// A route of ours found in the kernel that nothing desires: a binding without a client. It is
/// anchored where the kernel shows it — a release or zero lifetime for it counts only from the
/// link of its interface — and lives until the kernel's own expiry of it, which the previous
/// run set to the lease's valid lifetime (`routes.mirror_expiry`). A fixed grace would kill
/// delegated prefixes no server can confirm by leasequery (ISC answers NotConfigured for
/// prefixes) long before their lease ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Inherited {
    /// The route as the kernel last showed it (interface and next hop).
    route: KernelRoute,
    /// The kernel's expiry of the route; `None` when it has none (then inheritance ends it).
    until: Option<Instant>,
    /// A confirming leasequery was asked for it (at most once per route).
    doubted: bool,
}

impl Inherited {
    /// Whether the kernel's expiry keeps it past the end of inheritance at `now`.
    fn alive(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| u > now)
    }
}

/// A confirming leasequery to ask about an inherited route nothing explained when inheritance
/// ended: the shell turns it into a `Doubt` for the confirmer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InheritDoubt {
    /// The route's destination (the key to ask about).
    pub dst: Ipv6Prefix,
    /// The interface the kernel shows it on.
    pub interface: String,
    /// The link-address of that interface's link: a configured `[[links]]` entry on it, else a
    /// global address the interface holds.
    pub link: Ipv6Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retry {
    attempt: u32,
    due: Instant,
}

/// The part of [`InstallerConfig`] the decisions depend on.
#[derive(Debug, Clone)]
struct Rules {
    metric: u32,
    max_routes: usize,
    expiry: bool,
    retry_base: Duration,
    retry_max: Duration,
    links: Vec<LinkMapping>,
}

/// The installer's state and the rules that change it.
#[derive(Debug)]
pub(super) struct Book {
    rules: Rules,
    links: LinkTable,
    /// The two maps every snooped route goes through, so they grow a few buckets per write
    /// and one shard at a time (`StaggeredMap`): a plain map's doubling, all at once, stalled a
    /// reboot storm's REPLYs for milliseconds at 28 673 routes (`cargo bench --bench storm`).
    desired: StaggeredMap<Ipv6Prefix, RouteSpec>,
    installed: StaggeredMap<Ipv6Prefix, KernelRoute>,
    parked: Set<Ipv6Prefix>,
    /// Routes of ours found at start that nothing desires: kept until a source explains or
    /// withdraws them, or until their kernel expiry (without one, until inheritance ends).
    inherited: Map<Ipv6Prefix, Inherited>,
    /// While set, a reconcile takes undesired routes of ours as inherited instead of deleting
    /// them (recovery may not have told the cache about them yet).
    inherit_until: Option<Instant>,
    /// Confirming leasequeries owed for inherited routes, for the shell to hand on at the
    /// confirmer's pace.
    doubts: VecDeque<InheritDoubt>,
    /// Whether the deletes of the first reconcile after inheritance were counted.
    unconfirmed_logged: bool,
    /// A reconcile ran while inheriting: every route of ours the kernel held then is either
    /// desired or in `inherited`, so an empty `inherited` leaves nothing for the end of
    /// inheritance to delete (see [`Book::nothing_inherited`]).
    seen_while_inheriting: bool,
    retry: Map<Ipv6Prefix, Retry>,
    /// Upserts refused at `max_routes`, oldest first: re-admitted when a withdrawal makes room
    /// (the cache will not send them again while the binding is unchanged, so forgetting them
    /// would leave a cached subscriber without its route for the life of its lease). At most
    /// [`MAX_REFUSED`]; past it the oldest is forgotten (already counted as `dropped`).
    refused: Refused,
    resync_needed: bool,
    stats: Arc<InstallerStats>,
    /// The desired routes' deadlines in the order a plan runs them, for the one plan a large
    /// reconcile returns ([`Book::expires`]); empty otherwise.
    deadlines: Deadlines,
}

/// Desired routes' deadlines, sorted as a [`plan::RoutePlan`] orders its ops within a kind
/// (longer prefixes first, then by destination), read with a cursor.
///
/// Why: the installer asks [`Book::expires`] for each op it sends, and a restart's reconcile
/// sends a million of them in plan order — a lookup each in the million-entry desired map, a
/// cache miss or two apiece, was the largest cost of a state-file restart beyond the routes
/// themselves (about a tenth of its CPU time), and one that grows with whatever else the
/// machine's memory is doing. Taken in plan order, the sorted list is read sequentially.
///
/// [`Book::apply`] leaves one too, for a large batch of changes (a bulk recovery's): its ops
/// run in the order the changes came, so its list is in that order, read at the cursor only
/// (not sorted: no search, a miss goes to the desired map).
#[derive(Debug, Default)]
struct Deadlines {
    list: Vec<(Ipv6Prefix, Option<Instant>)>,
    /// Where the next op's destination is expected.
    cursor: usize,
    /// `list` is in plan order, so a destination not at the cursor can be searched for.
    sorted: bool,
}

/// Fewest ops a reconcile's plan must hold before the deadlines are sorted for it: below it
/// the lookups cost less than the sort.
const DEADLINES_FROM: usize = 4096;

fn plan_order(dst: &Ipv6Prefix) -> (std::cmp::Reverse<u8>, Ipv6Prefix) {
    (std::cmp::Reverse(dst.len()), *dst)
}

impl Deadlines {
    /// `dst`'s deadline, when the list holds it: at the cursor (the plan's next op), else
    /// found by a search that moves the cursor there (the next kind of op starts over).
    fn take(&mut self, dst: &Ipv6Prefix) -> Option<Option<Instant>> {
        if self.list.is_empty() {
            return None;
        }
        if let Some((d, until)) = self.list.get(self.cursor) {
            if d == dst {
                self.cursor += 1;
                return Some(*until);
            }
        }
        if !self.sorted {
            return None;
        }
        let i = self
            .list
            .binary_search_by_key(&plan_order(dst), |(d, _)| plan_order(d))
            .ok()?;
        self.cursor = i + 1;
        Some(self.list[i].1)
    }

    fn clear(&mut self) {
        self.list = Vec::new();
        self.cursor = 0;
        self.sorted = false;
    }
}

/// Fewest ops an [`Book::apply`] must return before it lists their deadlines: a single
/// snooped change needs no list.
const APPLY_DEADLINES_FROM: usize = 64;

/// Most refused upserts remembered for re-admission: bounded so a flood past `max_routes`
/// costs a fixed amount of memory (a RouteSpec is under 100 bytes: about 6 MB).
pub(super) const MAX_REFUSED: usize = 65_536;

/// Refused route specs in the order they were refused, by destination.
#[derive(Debug, Default)]
struct Refused {
    next: u64,
    order: std::collections::BTreeMap<u64, Ipv6Prefix>,
    specs: Map<Ipv6Prefix, (u64, RouteSpec)>,
}

impl Refused {
    /// Remember `spec` (a newer spec for a destination already refused keeps its place).
    fn push(&mut self, spec: RouteSpec) {
        if let Some(e) = self.specs.get_mut(&spec.dst) {
            e.1 = spec;
            return;
        }
        if self.specs.len() >= MAX_REFUSED {
            if let Some((_, old)) = self.order.pop_first() {
                self.specs.remove(&old);
            }
        }
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, spec.dst);
        self.specs.insert(spec.dst, (seq, spec));
    }

    fn remove(&mut self, dst: &Ipv6Prefix) {
        // Every change calls this; nearly always nothing is refused, and a removal from an
        // empty map still hashes the key.
        if self.specs.is_empty() {
            return;
        }
        if let Some((seq, _)) = self.specs.remove(dst) {
            self.order.remove(&seq);
        }
    }

    /// The oldest refused spec, forgotten.
    fn pop(&mut self) -> Option<RouteSpec> {
        let (_, dst) = self.order.pop_first()?;
        self.specs.remove(&dst).map(|(_, s)| s)
    }

    fn clear(&mut self) {
        self.order.clear();
        self.specs.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.specs.len()
    }
}

impl Book {
    /// An empty book started at `now`: inheriting until `now + inherit_grace` unless that is zero.
    pub(super) fn new(now: Instant, cfg: &InstallerConfig, stats: Arc<InstallerStats>) -> Book {
        Book {
            rules: Rules {
                metric: cfg.metric,
                max_routes: cfg.max_routes,
                expiry: cfg.expiry,
                retry_base: cfg.retry_base,
                retry_max: cfg.retry_max,
                links: cfg.links.clone(),
            },
            links: LinkTable::new(),
            desired: StaggeredMap::default(),
            installed: StaggeredMap::default(),
            parked: Set::default(),
            inherited: Map::default(),
            inherit_until: (!cfg.inherit_grace.is_zero()).then(|| now + cfg.inherit_grace),
            doubts: VecDeque::new(),
            unconfirmed_logged: true,
            seen_while_inheriting: false,
            retry: Map::default(),
            refused: Refused::default(),
            resync_needed: false,
            stats,
            deadlines: Deadlines::default(),
        }
    }

    pub(super) fn stats(&self) -> &Arc<InstallerStats> {
        &self.stats
    }

    pub(super) fn links(&self) -> &LinkTable {
        &self.links
    }

    /// The link table, to feed a notification into; follow with [`Book::links_changed`].
    pub(super) fn links_mut(&mut self) -> &mut LinkTable {
        &mut self.links
    }

    /// Take a fresh link table (a re-dump); follow with [`Book::links_changed`].
    pub(super) fn set_links(&mut self, table: LinkTable) {
        self.links = table;
    }

    /// Until when undesired routes are inherited rather than deleted; `None` once that ended.
    pub(super) fn inherit_until(&self) -> Option<Instant> {
        self.inherit_until
    }

    /// True after a receive overrun lost kernel answers: run a reconcile.
    pub(super) fn resync_needed(&self) -> bool {
        self.resync_needed
    }

    /// Kernel answers were lost (receive overrun): the next reconcile must repair.
    pub(super) fn overrun(&mut self) {
        self.resync_needed = true;
    }

    /// When the earliest retry is due.
    pub(super) fn next_retry(&self) -> Option<Instant> {
        self.retry.values().map(|r| r.due).min()
    }

    /// Where `dst` stands: installed, parked, pending, inherited or not desired.
    pub(super) fn route_state(&self, dst: &Ipv6Prefix) -> RouteState {
        if !self.desired.contains_key(dst) {
            if self.inherited.contains_key(dst) {
                RouteState::Inherited
            } else {
                RouteState::None
            }
        } else if self.parked.contains(dst) {
            RouteState::Parked
        } else if self.installed.contains_key(dst) {
            RouteState::Installed
        } else {
            RouteState::Pending
        }
    }

    /// Publish the installed, parked and inherited counts as gauges.
    pub(super) fn publish_gauges(&self) {
        self.stats.set_gauges(
            self.installed.len(),
            self.parked.len(),
            self.inherited.len(),
        );
    }

    /// RTA_EXPIRES for a route at `now`, when expiry is on and the spec has a deadline. Read
    /// from the sorted deadlines of a large reconcile's plan while they last (asked in plan
    /// order, each is the next one), else from the desired map.
    pub(super) fn expires(&mut self, now: Instant, dst: &Ipv6Prefix) -> Option<u32> {
        if !self.rules.expiry {
            return None;
        }
        let until = match self.deadlines.take(dst) {
            Some(until) => until?,
            None => self.desired.get(dst)?.valid_until?,
        };
        let secs = until.saturating_duration_since(now).as_secs();
        Some(u32::try_from(secs).unwrap_or(u32::MAX).max(1))
    }

    /// Changes from the cache (the last change per destination wins) → the ops they need.
    ///
    /// Two passes: the first updates the desired set and notes, per destination touched, the
    /// route its last change wants (resolved while the spec is at hand); the second plans the
    /// ops from those notes. The notes spare the second pass a lookup in the desired set per
    /// route: with 100 000 routes in one call that set is far larger than the CPU's caches, and
    /// that lookup was a cache miss per route, a sizeable part of the installer's own CPU (issue
    /// 22's routes bench).
    ///
    /// The notes carry each route's deadline too: a large batch's ops leave their deadlines in
    /// op order ([`Deadlines`]), so [`Book::expires`] reads them in turn as the installer
    /// sends the ops instead of looking each up in the desired map — at a bulk recovery's
    /// million routes a cache miss per route sent.
    pub(super) fn apply(&mut self, changes: impl IntoIterator<Item = RouteChange>) -> Vec<RouteOp> {
        // The desired set changes: a reconcile's deadlines no longer hold.
        self.deadlines.clear();
        let changes = changes.into_iter();
        let hint = changes.size_hint().0;
        type Note = (Ipv6Prefix, Wanted, Option<Instant>);
        let mut touched: Vec<Note> = Vec::with_capacity(hint);
        // Destination → its place in `touched`, so a later change for it replaces its note.
        let mut seen: Map<Ipv6Prefix, u32> =
            Map::with_capacity_and_hasher(hint, KeyHashBuilder::default());
        let mut note = |touched: &mut Vec<Note>,
                        dst: Ipv6Prefix,
                        w: Wanted,
                        until: Option<Instant>| {
            match seen.entry(dst) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    if let Some(t) = touched.get_mut(*e.get() as usize) {
                        t.1 = w;
                        t.2 = until;
                    }
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(touched.len() as u32);
                    touched.push((dst, w, until));
                }
            }
        };
        let mut freed = false;
        // Routes whose only change is the lifetime: with expiry mirrored into the kernel they
        // are replaced so RTA_EXPIRES moves with the lease (otherwise the old deadline fires).
        let mut refresh = Set::default();
        self.desired.reserve(hint.min(self.rules.max_routes));
        for change in changes {
            match change {
                RouteChange::Upsert(spec) => {
                    let dst = spec.dst;
                    let w = Wanted::of(self.resolve(&spec));
                    let until = spec.valid_until;
                    // One probe of the desired set per route: the insert hands back what was
                    // desired before; a new destination past the cap is taken out again (rare).
                    let old_until = match self.desired.insert(dst, spec) {
                        Some(old) => Some(old.valid_until),
                        None if self.desired.len() > self.rules.max_routes => {
                            let Some(spec) = self.desired.remove(&dst) else {
                                continue;
                            };
                            self.stats.add(RouteCounter::Dropped, 1);
                            warn!(
                                %dst,
                                max = self.rules.max_routes,
                                "route refused: desired set full (retried when a route is withdrawn)"
                            );
                            self.refused.push(spec);
                            continue;
                        }
                        None => None,
                    };
                    self.refused.remove(&dst);
                    // An inherited route carries the previous run's expiry: give it this lease's.
                    if self.rules.expiry
                        && (old_until.is_some_and(|o| o != until)
                            || (old_until.is_none() && self.inherited.contains_key(&dst)))
                    {
                        refresh.insert(dst);
                    }
                    note(&mut touched, dst, w, until);
                }
                RouteChange::Withdraw(dst) => {
                    // A source that knew the binding says it is gone: an inherited route goes
                    // too (the delete below, planned from `installed`).
                    self.refused.remove(&dst);
                    freed = self.desired.remove(&dst).is_some();
                    refresh.remove(&dst);
                    note(&mut touched, dst, Wanted::Gone, None);
                }
                RouteChange::WithdrawInherited { dst, link, via } => {
                    // Only a destination nothing desires is released (so `Gone` is its state).
                    if !self.release_inherited(dst, link.as_ref(), via) {
                        continue;
                    }
                    note(&mut touched, dst, Wanted::Gone, None);
                }
            }
            // Room freed by a withdrawal: the oldest refused route takes it (planned after the
            // delete that made room).
            if std::mem::take(&mut freed) {
                if let Some(spec) = self.refused.pop() {
                    let back = spec.dst;
                    if self.rules.expiry && self.inherited.contains_key(&back) {
                        refresh.insert(back);
                    }
                    let w = Wanted::of(self.resolve(&spec));
                    let until = spec.valid_until;
                    self.desired.insert(back, spec);
                    self.stats.add(RouteCounter::Readmitted, 1);
                    note(&mut touched, back, w, until);
                }
            }
        }
        drop(seen);
        let mut ops = Vec::with_capacity(touched.len());
        let list = self.rules.expiry && touched.len() >= APPLY_DEADLINES_FROM;
        let mut deadlines = Vec::with_capacity(if list { touched.len() } else { 0 });
        for (dst, w, until) in touched {
            if !self.retry.is_empty() {
                self.retry.remove(&dst);
            }
            let op = match w {
                Wanted::Route(r) => self.op_to(dst, Some(r)),
                Wanted::Gone => self.op_to(dst, None),
                // Parks it, with its link in the log line.
                Wanted::Unresolved => self.op_for(dst),
            };
            let op = match op {
                Some(op) => op,
                None if refresh.contains(&dst) => match self.installed.get(&dst) {
                    Some(r) => RouteOp::Replace(*r),
                    None => continue,
                },
                None => continue,
            };
            if list && !matches!(op, RouteOp::Delete(_)) {
                deadlines.push((op.dst(), until));
            }
            ops.push(op);
        }
        if list {
            self.deadlines.list = deadlines;
        }
        ops
    }

    /// Whether a notice that nobody holds `dst` — a snooped RELEASE/DECLINE or zero lifetime
    /// from `link` by a client at `via`, or (`None`) a server's answer — withdraws an inherited
    /// route: only one nothing desires (the cache explains the others), only from the link of
    /// the interface the kernel shows it on, and, for a route via a next hop, only from that
    /// next hop when the notice names one (anchoring: a message from another link, or from a
    /// stranger on the same link — whom the server answers a zero lifetime for a prefix it
    /// names — is not about this route).
    fn release_inherited(
        &mut self,
        dst: Ipv6Prefix,
        link: Option<&LinkRef>,
        via: Option<Ipv6Addr>,
    ) -> bool {
        if self.desired.contains_key(&dst) {
            return false;
        }
        let Some(inh) = self.inherited.get(&dst) else {
            return false;
        };
        if let Some(link) = link {
            let from = self.links.resolve(link, &self.rules.links);
            if from != Some(inh.route.oif) {
                self.stats.add(RouteCounter::InheritedOtherLink, 1);
                info!(%dst, %link, oif = inh.route.oif, "release of an inherited route from another link: kept");
                return false;
            }
        }
        if let (Some(via), Some(hop)) = (via, inh.route.gateway) {
            if via != hop {
                self.stats.add(RouteCounter::InheritedOtherNextHop, 1);
                info!(%dst, %via, next_hop = %hop, "release of an inherited route by another next hop: kept");
                return false;
            }
        }
        self.stats.add(RouteCounter::InheritedReleased, 1);
        info!(%dst, "inherited route released: withdrawn");
        true
    }

    /// The ops whose backoff has elapsed at `now`. Their due time moves out to `now +
    /// retry_max` meanwhile: success removes the entry, failure reschedules it.
    pub(super) fn retry_due(&mut self, now: Instant) -> Vec<RouteOp> {
        let due: Vec<Ipv6Prefix> = self
            .retry
            .iter()
            .filter(|(_, r)| r.due <= now)
            .map(|(d, _)| *d)
            .collect();
        let mut ops = Vec::new();
        for dst in due {
            match self.op_for(dst) {
                Some(op) => {
                    self.stats.add(RouteCounter::Retried, 1);
                    if let Some(r) = self.retry.get_mut(&dst) {
                        r.due = now + self.rules.retry_max;
                    }
                    ops.push(op);
                }
                None => {
                    self.retry.remove(&dst);
                }
            }
        }
        ops
    }

    /// The route the desired `spec` means now; `None` when its link is unknown.
    fn resolve(&self, spec: &RouteSpec) -> Option<KernelRoute> {
        let oif = self.links.resolve(&spec.link, &self.rules.links)?;
        Some(KernelRoute {
            dst: spec.dst,
            gateway: spec.via,
            oif,
            metric: self.rules.metric,
        })
    }

    /// The op that brings `dst` to its desired state, parking it when its link is unknown.
    fn op_for(&mut self, dst: Ipv6Prefix) -> Option<RouteOp> {
        let want = match self.desired.get(&dst) {
            None => None,
            Some(spec) => match self.resolve(spec) {
                Some(r) => Some(r),
                None => {
                    let link = spec.link.clone();
                    self.park(dst, &link.to_string(), "no interface for it (yet)");
                    // Whatever is installed stays (RFC 8987 S-2) until the link is known.
                    return None;
                }
            },
        };
        self.op_to(dst, want)
    }

    /// The op that brings `dst` to `want`, its desired route with the link resolved (`None`:
    /// not desired).
    fn op_to(&mut self, dst: Ipv6Prefix, want: Option<KernelRoute>) -> Option<RouteOp> {
        match want {
            None => {
                if !self.parked.is_empty() {
                    self.parked.remove(&dst);
                }
            }
            Some(_) => {
                if !self.inherited.is_empty() && self.inherited.remove(&dst).is_some() {
                    self.stats.add(RouteCounter::Adopted, 1);
                    debug!(%dst, "inherited route explained by the cache: ordinary now");
                }
                if !self.parked.is_empty() && self.parked.remove(&dst) {
                    self.stats.add(RouteCounter::Unparked, 1);
                    let link = self.desired.get(&dst).map(|s| s.link.to_string());
                    info!(%dst, link = link.as_deref().unwrap_or("?"), "parked route's link appeared: installing");
                }
            }
        }
        plan::plan_change(self.installed.get(&dst), want.as_ref())
    }

    fn park(&mut self, dst: Ipv6Prefix, link: &str, why: &str) {
        if self.parked.insert(dst) {
            self.stats.add(RouteCounter::Parked, 1);
            info!(%dst, link, why, "route parked: installed when its link appears");
        }
    }

    /// The link table changed. Routes on vanished or downed interfaces are gone from the kernel
    /// (it flushes them with the device, and on admin down): forget them and re-plan them
    /// (parking them until the link is usable again); re-plan parked routes.
    pub(super) fn links_changed(&mut self) -> Vec<RouteOp> {
        let vanished: Vec<Ipv6Prefix> = self
            .installed
            .iter()
            .filter(|(_, r)| !self.links.is_usable(r.oif))
            .map(|(d, _)| *d)
            .collect();
        for dst in &vanished {
            self.installed.remove(dst);
        }
        let candidates: Vec<Ipv6Prefix> = vanished
            .into_iter()
            .chain(self.parked.iter().copied())
            .collect();
        let mut ops = Vec::new();
        for dst in candidates {
            ops.extend(self.op_for(dst));
        }
        ops
    }

    /// At `now`, settle what the kernel answered to `ops` (one outcome each, in order): belief,
    /// counters, parking, retries. Returns the adds refused with EEXIST, for
    /// [`Book::replace_ours`] once a dump shows whose they are.
    pub(super) fn settle(
        &mut self,
        now: Instant,
        ops: &[RouteOp],
        outcomes: &[Outcome],
    ) -> Vec<KernelRoute> {
        // The plan the deadlines were sorted for has run.
        self.deadlines.clear();
        let mut exists = Vec::new();
        let mut failed = 0usize;
        // Room for the adds at once: grown route by route, a big batch rehashed the map of
        // installed routes several times over.
        let adds = ops.iter().filter(|o| o.kind() == OpKind::Add).count();
        self.installed.reserve(adds);
        // Successes per kind (see `succeeded`), counted once per batch, not once per route.
        let mut done = [0u64; 3];
        for (op, outcome) in ops.iter().zip(outcomes) {
            let errno = match *outcome {
                Outcome::Done => {
                    done[self.succeeded(op)] += 1;
                    continue;
                }
                Outcome::Refused(e) => e,
                Outcome::Unanswered => 0,
            };
            let action = if errno == 0 {
                ErrorAction::Retry
            } else {
                plan::classify(op.kind(), errno)
            };
            match action {
                ErrorAction::AlreadyDone => done[self.succeeded(op)] += 1,
                ErrorAction::ReplaceIfOurs => exists.push(*op.route()),
                ErrorAction::Park => {
                    self.installed.remove(&op.dst());
                    if let Some(spec) = self.desired.get(&op.dst()) {
                        let link = spec.link.to_string();
                        self.park(op.dst(), &link, "interface gone or down (ENODEV/ENETDOWN)");
                    }
                }
                ErrorAction::Retry => {
                    failed += 1;
                    debug!(dst = %op.dst(), op = op.kind().label(), errno, "route op failed; retrying later");
                    self.schedule_retry(now, op.dst());
                }
            }
        }
        for (n, c) in done.into_iter().zip(SUCCEEDED) {
            if n > 0 {
                self.stats.add(c, n);
            }
        }
        if failed > 0 {
            self.stats.add(RouteCounter::Failed, failed as u64);
            warn!(
                failed,
                of = ops.len(),
                "route ops failed or unanswered; retrying with backoff"
            );
        }
        exists
    }

    /// Adds refused with EEXIST: replace those whose (destination, metric) a dump shows to be
    /// `ours`; another protocol's route is left alone, counted and retried later.
    pub(super) fn replace_ours(
        &mut self,
        exists: Vec<KernelRoute>,
        ours: &HashSet<(Ipv6Prefix, u32)>,
        now: Instant,
    ) -> Vec<RouteOp> {
        let mut replace = Vec::new();
        for r in exists {
            if ours.contains(&(r.dst, r.metric)) {
                replace.push(RouteOp::Replace(r));
            } else {
                self.stats.add(RouteCounter::Conflict, 1);
                warn!(dst = %r.dst, metric = r.metric, "a route of another protocol holds this destination and metric: left alone, retrying later");
                self.schedule_retry(now, r.dst);
            }
        }
        replace
    }

    /// Believe what a succeeded op did; returns its counter's place in [`SUCCEEDED`], for the
    /// caller to count.
    fn succeeded(&mut self, op: &RouteOp) -> usize {
        let r = *op.route();
        let counter = match op.kind() {
            OpKind::Add => {
                self.installed.insert(r.dst, r);
                0
            }
            OpKind::Replace => {
                self.installed.insert(r.dst, r);
                1
            }
            OpKind::Delete => {
                if !self.inherited.is_empty() {
                    self.inherited.remove(&r.dst);
                }
                if self.installed.get(&r.dst) == Some(&r) {
                    self.installed.remove(&r.dst);
                }
                2
            }
        };
        if !self.retry.is_empty() {
            self.retry.remove(&r.dst);
        }
        counter
    }

    fn schedule_retry(&mut self, now: Instant, dst: Ipv6Prefix) {
        let e = self.retry.entry(dst).or_insert(Retry {
            attempt: 0,
            due: now,
        });
        e.due = now + crate::time::backoff(e.attempt, self.rules.retry_base, self.rules.retry_max);
        e.attempt = e.attempt.saturating_add(1);
    }

    /// Replace the whole desired set (e.g. after loading the cache); follow with a reconcile.
    pub(super) fn set_desired(&mut self, specs: impl IntoIterator<Item = RouteSpec>) {
        self.deadlines.clear();
        self.desired.clear();
        self.refused.clear();
        let specs = specs.into_iter();
        // The upper bound: a restart's specs come filtered from the loaded leases, whose lower
        // bound is 0 (and each rehash of a growing million-entry map rehashes it all).
        let (least, most) = specs.size_hint();
        self.desired
            .reserve(most.unwrap_or(least).min(self.rules.max_routes));
        for spec in specs {
            if !self.desired.contains_key(&spec.dst) && self.desired.len() >= self.rules.max_routes
            {
                self.stats.add(RouteCounter::Dropped, 1);
                self.refused.push(spec);
                continue;
            }
            self.desired.insert(spec.dst, spec);
        }
        let desired = &self.desired;
        self.parked.retain(|d| desired.contains_key(d));
    }

    /// A reconcile starts (before its dump): count it; the resync it performs is no longer owed.
    pub(super) fn reconcile_started(&mut self) {
        self.stats.add(RouteCounter::Reconcile, 1);
        self.resync_needed = false;
    }

    /// Diff the desired set against `actual` (a dump of our routes, `expiring` the kernel's
    /// expiry of those that have one) at `now`: park what cannot resolve, unpark what can, keep
    /// or delete undesired routes as inheritance says, and take the dump as the new belief.
    /// Returns the report and the ops that correct the kernel.
    ///
    /// Undesired routes: while inheriting, every one is kept as inherited; afterwards an
    /// inherited one is kept while its kernel expiry is ahead, and every other is deleted.
    pub(super) fn reconcile(
        &mut self,
        now: Instant,
        actual: &[KernelRoute],
        expiring: &HashMap<Ipv6Prefix, Instant>,
    ) -> (ReconcileReport, Vec<RouteOp>) {
        // Nothing of ours in the kernel (a start after a reboot): every desired route that
        // resolves is an add, and there is nothing to diff it against — the map of resolved
        // routes the diff reads (a million entries at a restart's size, built to be walked once)
        // is not built, the adds are planned as they are resolved.
        let fresh = actual.is_empty();
        let mut want = Map::with_capacity_and_hasher(
            if fresh { 0 } else { self.desired.len() },
            KeyHashBuilder::default(),
        );
        let mut adds = Vec::with_capacity(if fresh { self.desired.len() } else { 0 });
        let mut keep = Set::default();
        let mut unresolved = Vec::new();
        for (dst, spec) in &self.desired {
            match self.resolve(spec) {
                Some(r) if fresh => adds.push(RouteOp::Add(r)),
                Some(r) => {
                    want.insert(*dst, r);
                }
                None => {
                    keep.insert(*dst);
                    unresolved.push((*dst, spec.link.to_string()));
                }
            }
        }
        for (dst, link) in unresolved {
            self.park(dst, &link, "no interface for it (yet)");
        }
        // Desired and resolving now (what `want` holds, when it is built).
        let resolves = |d: &Ipv6Prefix| match fresh {
            true => self
                .desired
                .get(d)
                .is_some_and(|s| self.resolve(s).is_some()),
            false => want.contains_key(d),
        };
        let unparked: Vec<_> = self
            .parked
            .iter()
            .filter(|d| resolves(d))
            .copied()
            .collect();
        for d in unparked {
            self.parked.remove(&d);
            self.stats.add(RouteCounter::Unparked, 1);
        }
        let stale = if self.inherit_until.is_some() {
            self.seen_while_inheriting = true;
            Stale::Inherit
        } else {
            // Inheritance is over: inherited routes the kernel still gives time stay.
            keep.extend(
                self.inherited
                    .iter()
                    .filter(|(d, i)| i.alive(now) && !self.desired.contains_key(*d))
                    .map(|(d, _)| *d),
            );
            Stale::Delete
        };
        let rec = match fresh {
            true => plan::Reconciliation {
                plan: RoutePlan::new(adds),
                ..Default::default()
            },
            false => plan::plan_reconcile(&want, actual, &keep, stale),
        };
        // The inherited routes from now on, each as the kernel shows it (its first route).
        let candidates: Vec<Ipv6Prefix> = match stale {
            Stale::Inherit => rec.inherited.iter().map(|r| r.dst).collect(),
            Stale::Delete => actual
                .iter()
                .map(|r| r.dst)
                .filter(|d| self.inherited.contains_key(d) && keep.contains(d))
                .filter(|d| !self.desired.contains_key(d))
                .collect(),
        };
        let before = self.inherited.len();
        // Each destination's first route in the dump, found by one pass (a search of the dump
        // per candidate was quadratic in a restart that inherits a big table).
        let mut first: Map<Ipv6Prefix, &KernelRoute> = Map::default();
        if !candidates.is_empty() {
            first.reserve(actual.len());
            for r in actual {
                first.entry(r.dst).or_insert(r);
            }
        }
        let mut next = Map::with_capacity_and_hasher(candidates.len(), KeyHashBuilder::default());
        for dst in candidates {
            if next.contains_key(&dst) {
                continue;
            }
            let Some(&route) = first.get(&dst) else {
                continue;
            };
            let doubted = self.inherited.get(&dst).is_some_and(|i| i.doubted);
            next.insert(
                dst,
                Inherited {
                    route: *route,
                    until: expiring.get(&dst).copied(),
                    doubted,
                },
            );
        }
        self.inherited = next;
        if self.inherited.len() > before {
            info!(
                inherited = self.inherited.len(),
                "routes of ours that nothing explains yet: kept until a source explains them or their kernel expiry"
            );
        }
        if stale == Stale::Delete && !self.unconfirmed_logged {
            // The first reconcile after inheritance ended: what it deletes was never confirmed.
            self.unconfirmed_logged = true;
            let n = rec.plan.count(OpKind::Delete);
            self.stats.add(RouteCounter::Unconfirmed, n as u64);
        }
        // Belief = what the kernel showed (first route of ours per destination at our metric).
        self.installed.clear();
        // What the kernel will hold once the plan has run: the desired set.
        self.installed.reserve(actual.len().max(self.desired.len()));
        for r in actual {
            if r.metric == self.rules.metric {
                self.installed.get_or_insert_with(r.dst, || *r);
            }
        }
        let report = ReconcileReport {
            found: actual.len(),
            unchanged: rec.unchanged.len(),
            added: rec.plan.count(OpKind::Add),
            replaced: rec.plan.count(OpKind::Replace),
            deleted: rec.plan.count(OpKind::Delete),
            parked: self.parked.len(),
            inherited: self.inherited.len(),
        };
        self.deadlines.clear();
        if self.rules.expiry && report.added + report.replaced >= DEADLINES_FROM {
            // One sequential pass over the desired map and a sort, instead of a lookup at
            // random per op sent.
            let mut list: Vec<_> = self
                .desired
                .values()
                .map(|s| (s.dst, s.valid_until))
                .collect();
            list.sort_unstable_by_key(|(d, _)| plan_order(d));
            self.deadlines.list = list;
            self.deadlines.sorted = true;
        }
        (report, rec.plan.ops)
    }

    /// Stop inheriting: the next reconcile deletes (and counts as unconfirmed) what nothing
    /// explains by then, except inherited routes whose kernel expiry is still ahead. Every
    /// inherited route still unexplained owes a confirming leasequery (see
    /// [`Book::doubts_mut`]). Returns how many routes were inherited, or `None` when
    /// inheritance had already ended.
    /// Whether inheritance is on, a reconcile has seen the kernel's routes of ours since it
    /// began, and none of them is inherited now: ending it then deletes nothing, so the full
    /// dump and reconcile at its end can be skipped (at a 1M-route bulk recovery into an
    /// empty table that dump was pure cost). Routes of ours that appear later, not by us, are
    /// left to the periodic reconcile, as at any other time.
    pub(super) fn nothing_inherited(&self) -> bool {
        self.inherit_until.is_some() && self.seen_while_inheriting && self.inherited.is_empty()
    }

    pub(super) fn end_inheritance(&mut self) -> Option<usize> {
        let nothing = self.nothing_inherited();
        self.inherit_until.take()?;
        // With nothing inherited, no delete of a later reconcile is an unconfirmed one.
        self.unconfirmed_logged = nothing;
        let mut owed: Vec<(Ipv6Prefix, u32)> = self
            .inherited
            .iter_mut()
            .filter(|(_, i)| !i.doubted)
            .map(|(d, i)| {
                i.doubted = true;
                (*d, i.route.oif)
            })
            .collect();
        owed.sort_unstable();
        for (dst, oif) in owed {
            match self.doubt_for(dst, oif) {
                Some(d) => self.doubts.push_back(d),
                None => {
                    debug!(%dst, oif, "inherited route on an interface with no link-address: not asked about")
                }
            }
        }
        Some(self.inherited.len())
    }

    /// The confirming leasequery for inherited `dst` on interface `oif`: asked on the link of
    /// that interface (a configured link on it, else a global address it holds).
    fn doubt_for(&self, dst: Ipv6Prefix, oif: u32) -> Option<InheritDoubt> {
        let interface = self.links.name_of(oif)?.to_string();
        let link = self
            .rules
            .links
            .iter()
            .find(|m| m.interface == interface)
            .map(|m| m.link.addr())
            .or_else(|| self.links.global_address_of(oif))?;
        Some(InheritDoubt {
            dst,
            interface,
            link,
        })
    }

    /// Confirming leasequeries owed for inherited routes, oldest first: the shell takes them
    /// as the confirmer has room and puts back what it could not hand on.
    pub(super) fn doubts_mut(&mut self) -> &mut VecDeque<InheritDoubt> {
        &mut self.doubts
    }

    /// When the earliest inherited route reaches its kernel expiry.
    pub(super) fn next_inherited_expiry(&self) -> Option<Instant> {
        self.inherited.values().filter_map(|i| i.until).min()
    }

    /// Inherited routes whose kernel expiry has come at `now`: their binding ended without a
    /// source explaining it. The kernel drops such a route itself (soon after, at its next
    /// garbage collection); the delete makes that happen now and settles our belief.
    pub(super) fn inherited_due(&mut self, now: Instant) -> Vec<RouteOp> {
        let due: Vec<Ipv6Prefix> = self
            .inherited
            .iter()
            .filter(|(_, i)| i.until.is_some_and(|u| u <= now))
            .map(|(d, _)| *d)
            .collect();
        let mut ops = Vec::with_capacity(due.len());
        for dst in due {
            let Some(inh) = self.inherited.remove(&dst) else {
                continue;
            };
            self.stats.add(RouteCounter::InheritedExpired, 1);
            info!(%dst, "inherited route reached its kernel expiry unexplained: removed");
            if !self.desired.contains_key(&dst) {
                ops.push(RouteOp::Delete(
                    self.installed.get(&dst).copied().unwrap_or(inh.route),
                ));
            }
        }
        ops
    }
}

#[cfg(test)]
impl Book {
    fn is_parked(&self, dst: &Ipv6Prefix) -> bool {
        self.parked.contains(dst)
    }

    fn is_inherited(&self, dst: &Ipv6Prefix) -> bool {
        self.inherited.contains_key(dst)
    }

    fn installed(&self, dst: &Ipv6Prefix) -> Option<&KernelRoute> {
        self.installed.get(dst)
    }

    /// A reconcile against a dump in which no route has a kernel expiry.
    fn reconcile_plain(&mut self, actual: &[KernelRoute]) -> (ReconcileReport, Vec<RouteOp>) {
        self.reconcile(Instant::now(), actual, &HashMap::new())
    }

    fn retry_of(&self, dst: &Ipv6Prefix) -> Option<(u32, Instant)> {
        self.retry.get(dst).map(|r| (r.attempt, r.due))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::LinkRef;

    const METRIC: u32 = 1024;
    const IF_UP: u32 = 2;
    const IF_OTHER: u32 = 3;

    fn cfg() -> InstallerConfig {
        InstallerConfig {
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
            metric: METRIC,
            ..InstallerConfig::default()
        }
    }

    /// A book with interfaces `sub0` (index 2, up, 2001:db8:1::1/64) and `sub1` (index 3, up).
    fn book_with(cfg: InstallerConfig, now: Instant) -> Book {
        let mut b = Book::new(now, &cfg, Arc::new(InstallerStats::default()));
        let mut t = LinkTable::new();
        t.set_link(IF_UP, "sub0", true);
        t.set_link(IF_OTHER, "sub1", true);
        t.add_addr(IF_UP, "2001:db8:1::1".parse().unwrap(), 64);
        b.set_links(t);
        assert!(
            b.links_changed().is_empty(),
            "nothing desired, nothing to do"
        );
        b
    }

    fn book(now: Instant) -> Book {
        book_with(cfg(), now)
    }

    /// A book that mirrors lifetimes into the kernel (`routes.mirror_expiry`); as [`book_with`].
    fn expiring_book(now: Instant) -> Book {
        book_with(
            InstallerConfig {
                expiry: true,
                ..cfg()
            },
            now,
        )
    }

    /// A book that refuses new destinations past `max_routes`; interfaces as [`book_with`].
    fn capped(max_routes: usize, now: Instant) -> Book {
        book_with(
            InstallerConfig {
                max_routes,
                ..cfg()
            },
            now,
        )
    }

    fn p(s: &str) -> Ipv6Prefix {
        s.parse().unwrap()
    }

    fn on(dst: &str, ifname: &str) -> RouteSpec {
        RouteSpec::address(p(dst).addr(), LinkRef::Interface(ifname.into()))
    }

    fn kr(dst: &str, oif: u32) -> KernelRoute {
        KernelRoute {
            dst: p(dst),
            gateway: None,
            oif,
            metric: METRIC,
        }
    }

    fn count(b: &Book, c: RouteCounter) -> u64 {
        b.stats().get(c)
    }

    /// Run `ops` with every op answered `outcome`; returns what settle returned.
    fn answer(b: &mut Book, ops: &[RouteOp], outcome: Outcome, now: Instant) -> Vec<KernelRoute> {
        b.settle(now, ops, &vec![outcome; ops.len()])
    }

    #[test]
    fn changes_become_ops() {
        let now = Instant::now();
        let mut b = book(now);
        let a = kr("2001:db8::a/128", IF_UP);
        let a_moved = kr("2001:db8::a/128", IF_OTHER);
        // (changes, expected ops, what the kernel answers)
        let table: Vec<(Vec<RouteChange>, Vec<RouteOp>)> = vec![
            // New destination: add.
            (
                vec![RouteChange::Upsert(on("2001:db8::a/128", "sub0"))],
                vec![RouteOp::Add(a)],
            ),
            // Same spec again: nothing.
            (
                vec![RouteChange::Upsert(on("2001:db8::a/128", "sub0"))],
                vec![],
            ),
            // Another interface, same metric: replace.
            (
                vec![RouteChange::Upsert(on("2001:db8::a/128", "sub1"))],
                vec![RouteOp::Replace(a_moved)],
            ),
            // Last change per destination wins: upsert then withdraw is a delete.
            (
                vec![
                    RouteChange::Upsert(on("2001:db8::a/128", "sub0")),
                    RouteChange::Withdraw(p("2001:db8::a/128")),
                ],
                vec![RouteOp::Delete(a_moved)],
            ),
            // Withdrawing what is not there: nothing.
            (vec![RouteChange::Withdraw(p("2001:db8::a/128"))], vec![]),
            // Withdraw then upsert: the upsert wins, an add.
            (
                vec![
                    RouteChange::Withdraw(p("2001:db8::a/128")),
                    RouteChange::Upsert(on("2001:db8::a/128", "sub0")),
                ],
                vec![RouteOp::Add(a)],
            ),
            // Moved and moved back within one call: the kernel already has it, nothing.
            (
                vec![
                    RouteChange::Upsert(on("2001:db8::a/128", "sub1")),
                    RouteChange::Upsert(on("2001:db8::a/128", "sub0")),
                ],
                vec![],
            ),
            // Moved, then to a link with no interface: parked, the installed route stays.
            (
                vec![
                    RouteChange::Upsert(on("2001:db8::a/128", "sub1")),
                    RouteChange::Upsert(on("2001:db8::a/128", "nope")),
                ],
                vec![],
            ),
            // Back on its link: unparked, the kernel already has it.
            (
                vec![RouteChange::Upsert(on("2001:db8::a/128", "sub0"))],
                vec![],
            ),
            (
                vec![RouteChange::Withdraw(p("2001:db8::a/128"))],
                vec![RouteOp::Delete(a)],
            ),
        ];
        for (i, (changes, want)) in table.into_iter().enumerate() {
            let ops = b.apply(changes);
            assert_eq!(ops, want, "row {i}");
            answer(&mut b, &ops, Outcome::Done, now);
        }
        assert_eq!(b.route_state(&a.dst), RouteState::None);
        assert_eq!(count(&b, RouteCounter::Installed), 2);
        assert_eq!(count(&b, RouteCounter::Replaced), 1);
        assert_eq!(count(&b, RouteCounter::Withdrawn), 2);
        assert_eq!(count(&b, RouteCounter::Parked), 1);
        assert_eq!(count(&b, RouteCounter::Unparked), 1);
    }

    #[test]
    fn full_desired_set_drops_new_destinations() {
        let now = Instant::now();
        let mut b = capped(1, now);
        let ops = b.apply([
            RouteChange::Upsert(on("2001:db8::a/128", "sub0")),
            RouteChange::Upsert(on("2001:db8::b/128", "sub0")),
        ]);
        assert_eq!(ops, vec![RouteOp::Add(kr("2001:db8::a/128", IF_UP))]);
        assert_eq!(count(&b, RouteCounter::Dropped), 1);
        // An existing destination may still change.
        let ops = b.apply([RouteChange::Upsert(on("2001:db8::a/128", "sub1"))]);
        assert_eq!(ops, vec![RouteOp::Add(kr("2001:db8::a/128", IF_OTHER))]);
        assert_eq!(count(&b, RouteCounter::Dropped), 1);
        // set_desired applies the same bound.
        b.set_desired([on("2001:db8::c/128", "sub0"), on("2001:db8::d/128", "sub0")]);
        assert_eq!(count(&b, RouteCounter::Dropped), 2);
    }

    /// A route refused at `max_routes` is not lost: a withdrawal that frees room takes the
    /// oldest refused one in (its latest spec), counted as `readmitted`; one withdrawn while
    /// refused is forgotten; `set_desired` keeps its overflow the same way.
    #[test]
    fn refused_routes_are_readmitted_when_a_withdrawal_makes_room() {
        let now = Instant::now();
        let mut b = capped(2, now);
        let ops = b.apply([
            RouteChange::Upsert(on("2001:db8::a/128", "sub0")),
            RouteChange::Upsert(on("2001:db8::b/128", "sub0")),
            RouteChange::Upsert(on("2001:db8::c/128", "sub0")),
            RouteChange::Upsert(on("2001:db8::d/128", "sub0")),
            RouteChange::Upsert(on("2001:db8::e/128", "sub0")),
        ]);
        assert_eq!(ops.len(), 2);
        answer(&mut b, &ops, Outcome::Done, now);
        assert_eq!(count(&b, RouteCounter::Dropped), 3);
        assert_eq!(b.refused.len(), 3);
        // c refreshed while refused (another interface): the newer spec is the one kept.
        assert!(
            b.apply([RouteChange::Upsert(on("2001:db8::c/128", "sub1"))])
                .is_empty()
        );
        // d withdrawn while refused: forgotten, frees nothing.
        assert!(
            b.apply([RouteChange::Withdraw(p("2001:db8::d/128"))])
                .is_empty()
        );
        assert_eq!(b.refused.len(), 2);
        // a withdrawn: room for the oldest refused one, c, as last upserted.
        let ops = b.apply([RouteChange::Withdraw(p("2001:db8::a/128"))]);
        assert_eq!(
            ops,
            vec![
                RouteOp::Delete(kr("2001:db8::a/128", IF_UP)),
                RouteOp::Add(kr("2001:db8::c/128", IF_OTHER)),
            ]
        );
        answer(&mut b, &ops, Outcome::Done, now);
        assert_eq!(count(&b, RouteCounter::Readmitted), 1);
        // b withdrawn: e comes in; nothing is left refused.
        let ops = b.apply([RouteChange::Withdraw(p("2001:db8::b/128"))]);
        assert_eq!(
            ops,
            vec![
                RouteOp::Delete(kr("2001:db8::b/128", IF_UP)),
                RouteOp::Add(kr("2001:db8::e/128", IF_UP)),
            ]
        );
        assert_eq!(count(&b, RouteCounter::Readmitted), 2);
        assert_eq!(b.refused.len(), 0);
        // set_desired's overflow is kept for re-admission too.
        b.set_desired([
            on("2001:db8::1/128", "sub0"),
            on("2001:db8::2/128", "sub0"),
            on("2001:db8::3/128", "sub0"),
        ]);
        assert_eq!(b.refused.len(), 1);
        b.apply([RouteChange::Withdraw(p("2001:db8::1/128"))]);
        assert!(b.desired.contains_key(&p("2001:db8::3/128")));
        assert_eq!(count(&b, RouteCounter::Readmitted), 3);
    }

    /// The refused set is bounded: past [`MAX_REFUSED`] the oldest is forgotten.
    #[test]
    fn refused_routes_are_bounded() {
        let now = Instant::now();
        let mut b = capped(1, now);
        let n = MAX_REFUSED as u32 + 2;
        let dst = |i: u32| {
            let a = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16);
            format!("{a}/128")
        };
        b.apply((0..n).map(|i| RouteChange::Upsert(on(&dst(i), "sub0"))));
        assert_eq!(count(&b, RouteCounter::Dropped), u64::from(n - 1));
        assert_eq!(b.refused.len(), MAX_REFUSED);
        // The oldest refused (#1) was forgotten: the withdrawal of #0 readmits #2.
        b.apply([RouteChange::Withdraw(p(&dst(0)))]);
        assert!(b.desired.contains_key(&p(&dst(2))));
        assert!(!b.desired.contains_key(&p(&dst(1))));
    }

    /// Unknown link → parked (installed route left alone); link appears → unparked and added;
    /// link goes down → belief dropped, parked again.
    #[test]
    fn parking_follows_the_link_table() {
        let now = Instant::now();
        let mut b = book(now);
        let dst = p("2001:db8::7/128");
        assert!(
            b.apply([RouteChange::Upsert(on("2001:db8::7/128", "late0"))])
                .is_empty()
        );
        assert!(b.is_parked(&dst));
        assert_eq!(b.route_state(&dst), RouteState::Parked);
        assert_eq!(count(&b, RouteCounter::Parked), 1);
        // Parking is counted once, however often it is re-planned.
        assert!(b.links_changed().is_empty());
        assert_eq!(count(&b, RouteCounter::Parked), 1);
        b.links_mut().set_link(9, "late0", true);
        let ops = b.links_changed();
        let r = kr("2001:db8::7/128", 9);
        assert_eq!(ops, vec![RouteOp::Add(r)]);
        assert!(!b.is_parked(&dst));
        assert_eq!(count(&b, RouteCounter::Unparked), 1);
        answer(&mut b, &ops, Outcome::Done, now);
        assert_eq!(b.route_state(&dst), RouteState::Installed);
        // Admin down: the kernel flushed the route; it waits parked, nothing to send.
        b.links_mut().set_link(9, "late0", false);
        assert!(b.links_changed().is_empty());
        assert_eq!(b.installed(&dst), None);
        assert_eq!(b.route_state(&dst), RouteState::Parked);
        // ENODEV on an add parks too; a withdraw of a parked route unparks it.
        b.links_mut().set_link(9, "late0", true);
        let ops = b.links_changed();
        assert_eq!(ops, vec![RouteOp::Add(r)]);
        assert!(answer(&mut b, &ops, Outcome::Refused(19), now).is_empty());
        assert!(b.is_parked(&dst));
        assert!(b.apply([RouteChange::Withdraw(dst)]).is_empty());
        assert!(!b.is_parked(&dst));
        assert_eq!(b.route_state(&dst), RouteState::None);
    }

    /// A reconcile against a kernel holding none of our routes (a start after a reboot) plans
    /// its adds without the map of resolved routes the diff reads; it must do what the diff
    /// does — the same adds in plan order, the unresolvable parked, a parked route whose
    /// interface came meanwhile unparked — as a reconcile whose dump holds one stranger of
    /// ours shows (that one takes the diff, and differs only by the stranger's delete).
    #[test]
    fn an_empty_kernels_reconcile_plans_what_the_diff_does() {
        let now = Instant::now();
        let stranger = kr("2001:db8:ff::1/128", IF_UP);
        let run = |actual: &[KernelRoute]| {
            let mut b = book(now);
            let late = p("2001:db8:2::7/128");
            assert!(
                b.apply([RouteChange::Upsert(on("2001:db8:2::7/128", "late0"))])
                    .is_empty()
            );
            assert!(b.is_parked(&late));
            // Its interface appears; no link notification has been handled yet.
            b.links_mut().set_link(9, "late0", true);
            let specs: Vec<RouteSpec> = (1..40u32)
                .map(|j| {
                    let link = if j % 5 == 0 { "gone0" } else { "sub0" };
                    on(&format!("2001:db8:1::{j:x}/128"), link)
                })
                .chain([on("2001:db8:2::7/128", "late0")])
                .collect();
            b.set_desired(specs);
            let (report, ops) = b.reconcile(now, actual, &HashMap::new());
            let mut parked: Vec<Ipv6Prefix> = b.parked.iter().copied().collect();
            parked.sort();
            let counts = (
                count(&b, RouteCounter::Parked),
                count(&b, RouteCounter::Unparked),
            );
            (report, ops, parked, counts)
        };
        let (fresh, ops, parked, counts) = run(&[]);
        let (diffed, diff_ops, diff_parked, diff_counts) = run(&[stranger]);
        assert_eq!(ops.len(), 33, "32 on sub0 and the unparked one: {ops:?}");
        assert!(ops.contains(&RouteOp::Add(kr("2001:db8:2::7/128", 9))));
        assert_eq!(RoutePlan::new(ops.clone()).ops, ops, "in plan order");
        assert_eq!(parked.len(), 7, "the gone0 ones");
        assert_eq!(counts.1, 1, "the late0 one unparked");
        let without_stranger: Vec<RouteOp> = diff_ops
            .into_iter()
            .filter(|o| *o != RouteOp::Delete(stranger))
            .collect();
        assert_eq!(ops, without_stranger);
        assert_eq!((parked, counts), (diff_parked, diff_counts));
        assert_eq!(
            ReconcileReport {
                found: 1,
                deleted: 1,
                ..fresh
            },
            diffed
        );
    }

    /// Failures retry with doubling backoff from the time of the answer; a due retry is
    /// pushed out to `retry_max` while in flight; success or a new change clears it.
    #[test]
    fn retries_back_off_and_clear() {
        let t0 = Instant::now();
        let mut b = book(t0);
        let dst = p("2001:db8::a/128");
        let add = RouteOp::Add(kr("2001:db8::a/128", IF_UP));
        let ops = b.apply([RouteChange::Upsert(on("2001:db8::a/128", "sub0"))]);
        assert_eq!(ops, vec![add]);
        // (outcome, expected attempt after it, expected delay from the answer)
        let table = [
            (Outcome::Unanswered, 1, Duration::from_millis(500)),
            (Outcome::Refused(1), 2, Duration::from_secs(1)),
            (Outcome::Refused(101), 3, Duration::from_secs(2)),
        ];
        let mut now = t0;
        for (outcome, attempt, delay) in table {
            assert!(answer(&mut b, &[add], outcome, now).is_empty());
            assert_eq!(
                b.retry_of(&dst),
                Some((attempt, now + delay)),
                "{outcome:?}"
            );
            assert_eq!(b.next_retry(), Some(now + delay));
            assert_eq!(b.route_state(&dst), RouteState::Pending);
            // Not yet due: nothing.
            assert!(
                b.retry_due(now + delay - Duration::from_millis(1))
                    .is_empty()
            );
            now += delay;
            assert_eq!(b.retry_due(now), vec![add]);
            assert_eq!(
                b.retry_of(&dst),
                Some((attempt, now + Duration::from_secs(60)))
            );
        }
        assert_eq!(count(&b, RouteCounter::Failed), 3);
        assert_eq!(count(&b, RouteCounter::Retried), 3);
        answer(&mut b, &[add], Outcome::Done, now);
        assert_eq!(b.retry_of(&dst), None);
        assert_eq!(b.next_retry(), None);
        assert_eq!(b.route_state(&dst), RouteState::Installed);
        // A failed delete is retried; a new change for the destination drops the old retry.
        let del = b.apply([RouteChange::Withdraw(dst)]);
        answer(&mut b, &del, Outcome::Refused(1), now);
        assert!(b.retry_of(&dst).is_some());
        let ops = b.apply([RouteChange::Upsert(on("2001:db8::a/128", "sub0"))]);
        assert!(ops.is_empty(), "still installed: nothing to do");
        assert_eq!(b.retry_of(&dst), None);
        // A due retry whose goal was reached meanwhile (the kernel flushed the route with its
        // link) is dropped without an op.
        let del = b.apply([RouteChange::Withdraw(dst)]);
        answer(&mut b, &del, Outcome::Unanswered, now);
        assert!(b.retry_of(&dst).is_some());
        b.links_mut().set_link(IF_UP, "sub0", false);
        assert!(b.links_changed().is_empty());
        assert!(b.retry_due(now + Duration::from_secs(3600)).is_empty());
        assert_eq!(b.retry_of(&dst), None);
        assert_eq!(b.next_retry(), None);
        // A delete the kernel says is already done (ESRCH) settles like a success.
        b.links_mut().set_link(IF_UP, "sub0", true);
        let add = b.apply([RouteChange::Upsert(on("2001:db8::a/128", "sub0"))]);
        answer(&mut b, &add, Outcome::Done, now);
        let del = b.apply([RouteChange::Withdraw(dst)]);
        answer(&mut b, &del, Outcome::Unanswered, now);
        assert!(answer(&mut b, &del, Outcome::Refused(3), now).is_empty());
        assert_eq!(b.retry_of(&dst), None);
        assert_eq!(b.installed(&dst), None);
    }

    /// EEXIST on add: replaced when a dump shows the route is ours, otherwise a conflict,
    /// left alone and retried.
    #[test]
    fn eexist_replaces_only_ours() {
        let now = Instant::now();
        let mut b = book(now);
        let ours = kr("2001:db8::a/128", IF_UP);
        let theirs = kr("2001:db8::b/128", IF_UP);
        let ops = b.apply([
            RouteChange::Upsert(on("2001:db8::a/128", "sub0")),
            RouteChange::Upsert(on("2001:db8::b/128", "sub0")),
        ]);
        let exists = answer(&mut b, &ops, Outcome::Refused(17), now);
        assert_eq!(exists.len(), 2);
        let dump: HashSet<_> = [(ours.dst, ours.metric)].into_iter().collect();
        assert_eq!(
            b.replace_ours(exists, &dump, now),
            vec![RouteOp::Replace(ours)]
        );
        assert_eq!(count(&b, RouteCounter::Conflict), 1);
        assert_eq!(
            b.retry_of(&theirs.dst),
            Some((1, now + Duration::from_millis(500)))
        );
        assert_eq!(b.retry_of(&ours.dst), None);
    }

    /// The inherited-route rules: kept while inheriting, adopted when the cache explains them,
    /// deleted when a source withdraws them, deleted and counted unconfirmed when inheritance
    /// ends; re-given the lease's expiry when adopted with expiry mirrored.
    #[test]
    fn inheritance_table() {
        let now = Instant::now();
        let grace = Duration::from_secs(30);
        let mut b = book_with(
            InstallerConfig {
                inherit_grace: grace,
                expiry: true,
                ..cfg()
            },
            now,
        );
        assert_eq!(b.inherit_until(), Some(now + grace));
        let adopted = kr("2001:db8::1/128", IF_UP);
        let withdrawn = kr("2001:db8::2/128", IF_UP);
        let unconfirmed = kr("2001:db8::3/128", IF_UP);
        let dump = [adopted, withdrawn, unconfirmed];
        b.reconcile_started();
        let (report, ops) = b.reconcile_plain(&dump);
        assert!(ops.is_empty(), "inheriting: nothing deleted");
        assert_eq!(report.found, 3);
        assert_eq!(report.inherited, 3);
        for r in &dump {
            assert!(b.is_inherited(&r.dst));
            assert_eq!(b.route_state(&r.dst), RouteState::Inherited);
        }
        // The cache explains one with the same route: adopted, and replaced to carry the
        // lease's expiry.
        let spec = on("2001:db8::1/128", "sub0").valid_until(now + Duration::from_secs(600));
        let ops = b.apply([RouteChange::Upsert(spec)]);
        assert_eq!(ops, vec![RouteOp::Replace(adopted)]);
        assert_eq!(b.expires(now, &adopted.dst), Some(600));
        answer(&mut b, &ops, Outcome::Done, now);
        assert!(!b.is_inherited(&adopted.dst));
        assert_eq!(b.route_state(&adopted.dst), RouteState::Installed);
        assert_eq!(count(&b, RouteCounter::Adopted), 1);
        // A source withdraws another: deleted now, inheritance or not.
        let ops = b.apply([RouteChange::Withdraw(withdrawn.dst)]);
        assert_eq!(ops, vec![RouteOp::Delete(withdrawn)]);
        answer(&mut b, &ops, Outcome::Done, now);
        assert!(!b.is_inherited(&withdrawn.dst));
        // Inheritance ends: the next reconcile deletes the rest, counted as unconfirmed once.
        assert_eq!(b.end_inheritance(), Some(1));
        assert_eq!(b.inherit_until(), None);
        b.reconcile_started();
        let (report, ops) = b.reconcile_plain(&[adopted, unconfirmed]);
        assert_eq!(ops, vec![RouteOp::Delete(unconfirmed)]);
        assert_eq!(report.deleted, 1);
        assert_eq!(report.inherited, 0);
        assert_eq!(count(&b, RouteCounter::Unconfirmed), 1);
        // Later reconciles delete stale routes as ordinary ones: not counted again.
        assert_eq!(b.end_inheritance(), None);
        let (_, ops) = b.reconcile_plain(&[adopted, unconfirmed]);
        assert_eq!(ops, vec![RouteOp::Delete(unconfirmed)]);
        assert_eq!(count(&b, RouteCounter::Unconfirmed), 1);
        assert_eq!(count(&b, RouteCounter::Reconcile), 2);
    }

    #[test]
    fn no_grace_means_no_inheritance() {
        let now = Instant::now();
        let mut b = book(now);
        assert_eq!(b.inherit_until(), None);
        let stale = kr("2001:db8::3/128", IF_UP);
        let (report, ops) = b.reconcile_plain(&[stale]);
        assert_eq!(ops, vec![RouteOp::Delete(stale)]);
        assert_eq!(report.inherited, 0);
        assert_eq!(b.end_inheritance(), None);
        assert_eq!(count(&b, RouteCounter::Unconfirmed), 0);
    }

    /// Reconcile parks unresolvable desired routes (keeping their kernel route), unparks
    /// resolvable ones, and takes the dump at our metric as the belief.
    #[test]
    fn reconcile_parks_unparks_and_believes_the_dump() {
        let now = Instant::now();
        let mut b = book(now);
        let parked_there = kr("2001:db8::9/128", 9);
        let foreign_metric = KernelRoute {
            metric: 7,
            ..kr("2001:db8::8/128", IF_UP)
        };
        b.set_desired([
            on("2001:db8::9/128", "late0"),
            on("2001:db8::a/128", "sub0"),
        ]);
        let (report, ops) = b.reconcile_plain(&[parked_there, foreign_metric]);
        assert_eq!(
            ops,
            vec![
                RouteOp::Delete(foreign_metric),
                RouteOp::Add(kr("2001:db8::a/128", IF_UP))
            ]
        );
        assert_eq!(report.parked, 1);
        assert_eq!(report.found, 2);
        assert!(b.is_parked(&parked_there.dst));
        assert_eq!(b.installed(&parked_there.dst), Some(&parked_there));
        assert_eq!(b.installed(&foreign_metric.dst), None);
        // The link appears: the next reconcile unparks and corrects the interface.
        b.links_mut().set_link(10, "late0", true);
        let (report, ops) = b.reconcile_plain(&[parked_there]);
        assert_eq!(report.parked, 0);
        assert_eq!(count(&b, RouteCounter::Unparked), 1);
        assert_eq!(
            ops,
            vec![
                RouteOp::Replace(kr("2001:db8::9/128", 10)),
                RouteOp::Add(kr("2001:db8::a/128", IF_UP))
            ]
        );
        // set_desired forgets parked routes that are no longer desired.
        b.links_mut().remove_link(10);
        b.reconcile_plain(&[]);
        assert!(b.is_parked(&parked_there.dst));
        b.set_desired([]);
        assert!(!b.is_parked(&parked_there.dst));
    }

    #[test]
    fn resync_is_owed_after_an_overrun_until_a_reconcile_starts() {
        let mut b = book(Instant::now());
        assert!(!b.resync_needed());
        b.overrun();
        assert!(b.resync_needed());
        b.reconcile_started();
        assert!(!b.resync_needed());
    }

    /// A large reconcile's deadlines are read in plan order from a sorted list: every op, in
    /// plan order or any other, gets its own spec's deadline, as the desired map gives it; a
    /// change to the desired set before the plan ran is seen.
    #[test]
    fn a_large_reconciles_deadlines_are_each_ops_own() {
        let now = Instant::now();
        let mut b = expiring_book(now);
        let n = DEADLINES_FROM as u32 + 100;
        let hop: Ipv6Addr = "fe80::1".parse().unwrap();
        let specs: Vec<RouteSpec> = (0..n)
            .map(|i| {
                // Destinations and deadlines in no order the plan's (7919 is prime: every j once),
                // /128s and /56s mixed.
                let j = i * 7919 % n;
                let until = now + Duration::from_secs(10 + u64::from(j));
                if i % 3 == 0 {
                    let pfx = Ipv6Prefix::new(
                        Ipv6Addr::new(
                            0x2001,
                            0xdb8,
                            0x8000 | (j >> 8) as u16,
                            (j as u16) << 8,
                            0,
                            0,
                            0,
                            0,
                        ),
                        56,
                    )
                    .unwrap();
                    RouteSpec::delegated(pfx, hop, LinkRef::Interface("sub0".into()))
                        .valid_until(until)
                } else {
                    on(&format!("2001:db8::{j:x}/128"), "sub0").valid_until(until)
                }
            })
            .collect();
        let want: HashMap<Ipv6Prefix, u32> = specs
            .iter()
            .map(|s| (s.dst, (s.valid_until.unwrap() - now).as_secs() as u32))
            .collect();
        b.set_desired(specs.clone());
        // Some routes in the kernel on another interface: a run of replaces before the adds.
        let actual: Vec<KernelRoute> = specs
            .iter()
            .step_by(7)
            .map(|s| KernelRoute {
                dst: s.dst,
                gateway: s.via,
                oif: IF_OTHER,
                metric: METRIC,
            })
            .collect();
        let (report, ops) = b.reconcile(now, &actual, &HashMap::new());
        assert!(report.replaced > 0 && report.added > 0, "{report:?}");
        assert!(
            !b.deadlines.list.is_empty(),
            "a large plan sorts its deadlines"
        );
        let plan = RoutePlan::new(ops);
        for op in &plan.ops {
            assert_eq!(b.expires(now, &op.dst()), Some(want[&op.dst()]), "{op:?}");
        }
        for op in plan.ops.iter().rev().step_by(13) {
            assert_eq!(b.expires(now, &op.dst()), Some(want[&op.dst()]), "{op:?}");
        }
        // A lifetime changed before the plan ran: the new one is sent.
        let moved = specs[5].clone().valid_until(now + Duration::from_secs(7));
        b.apply([RouteChange::Upsert(moved.clone())]);
        assert_eq!(b.expires(now, &moved.dst), Some(7));
        assert!(b.deadlines.list.is_empty());
    }

    /// A large batch of changes leaves its ops' deadlines in op order: each op sent gets its
    /// own route's deadline — the last one given for a destination changed twice in the
    /// batch, a refreshed lifetime's new one — read in turn or, out of turn, from the desired
    /// set; and the next change of the desired set drops the list.
    #[test]
    fn a_large_applys_deadlines_are_each_ops_own() {
        let now = Instant::now();
        let mut b = expiring_book(now);
        let at = |secs: u64| now + Duration::from_secs(secs);
        let spec =
            |j: u32, secs: u64| on(&format!("2001:db8::{j:x}/128"), "sub0").valid_until(at(secs));
        // Installed already with 50 s: the batch below only moves its lifetime (a replace).
        let refreshed = spec(0, 50);
        let ops = b.apply([RouteChange::Upsert(refreshed.clone())]);
        answer(&mut b, &ops, Outcome::Done, now);
        let mut changes: Vec<RouteChange> = (1..200u32)
            .map(|j| RouteChange::Upsert(spec(j, 1000 + u64::from(j))))
            .collect();
        // Destination 7 again, later in the batch, with another deadline: that one counts.
        changes.push(RouteChange::Upsert(spec(7, 3)));
        changes.push(RouteChange::Upsert(refreshed.clone().valid_until(at(60))));
        let want = |dst: &Ipv6Prefix| match dst.addr().segments()[7] {
            0 => 60,
            7 => 3,
            j => 1000 + u32::from(j),
        };
        let ops = b.apply(changes);
        assert_eq!(ops.len(), 200, "{ops:?}");
        assert!(
            ops.contains(&RouteOp::Replace(kr("2001:db8::/128", IF_UP))),
            "{ops:?}"
        );
        assert_eq!(
            b.deadlines.list.len(),
            200,
            "a large batch lists its deadlines"
        );
        for op in &ops {
            assert_eq!(b.expires(now, &op.dst()), Some(want(&op.dst())), "{op:?}");
        }
        for op in ops.iter().rev().step_by(7) {
            assert_eq!(b.expires(now, &op.dst()), Some(want(&op.dst())), "{op:?}");
        }
        b.apply([RouteChange::Upsert(spec(7, 9))]);
        assert!(b.deadlines.list.is_empty());
        assert_eq!(b.expires(now, &spec(7, 9).dst), Some(9));
    }

    #[test]
    fn expiry_is_mirrored_only_when_on() {
        let now = Instant::now();
        let until = now + Duration::from_millis(1500);
        let spec = |b: &mut Book| {
            b.apply([RouteChange::Upsert(
                on("2001:db8::a/128", "sub0").valid_until(until),
            )])
        };
        let mut off = book(now);
        spec(&mut off);
        assert_eq!(off.expires(now, &p("2001:db8::a/128")), None);
        let mut on_ = expiring_book(now);
        let ops = spec(&mut on_);
        answer(&mut on_, &ops, Outcome::Done, now);
        assert_eq!(on_.expires(now, &p("2001:db8::a/128")), Some(1));
        // Past the deadline: still at least one second (0 would mean "no expiry").
        assert_eq!(
            on_.expires(until + Duration::from_secs(5), &p("2001:db8::a/128")),
            Some(1)
        );
        // Only the lifetime changed: replaced so the kernel's deadline moves.
        let later = on("2001:db8::a/128", "sub0").valid_until(now + Duration::from_secs(90));
        assert_eq!(
            on_.apply([RouteChange::Upsert(later)]),
            vec![RouteOp::Replace(kr("2001:db8::a/128", IF_UP))]
        );
        assert_eq!(on_.expires(now, &p("2001:db8::a/128")), Some(90));
    }

    /// The end of inheritance needs no reconcile only when one has seen the kernel while
    /// inheriting and inherited nothing: before any reconcile, or with a route inherited, it
    /// still does.
    #[test]
    fn nothing_inherited_only_after_a_reconcile_that_inherited_nothing() {
        let now = Instant::now();
        let mut b = inheriting(now);
        assert!(
            !b.nothing_inherited(),
            "no reconcile has seen the kernel yet"
        );
        b.reconcile_plain(&[]);
        assert!(b.nothing_inherited(), "the kernel held no route of ours");
        assert_eq!(b.end_inheritance(), Some(0));
        assert!(!b.nothing_inherited(), "inheritance is over");
        // A later reconcile's deletes are ordinary ones, not unconfirmed inherited routes.
        let stale = kr("2001:db8::3/128", IF_UP);
        b.reconcile_plain(&[stale]);
        assert_eq!(count(&b, RouteCounter::Unconfirmed), 0);

        let mut b = inheriting(now);
        b.reconcile_plain(&[stale]);
        assert!(b.is_inherited(&stale.dst));
        assert!(!b.nothing_inherited(), "a route is inherited");
        assert_eq!(b.end_inheritance(), Some(1));
    }

    /// A book inheriting for 30 s from `now`, expiry mirrored; interfaces as [`book_with`].
    fn inheriting(now: Instant) -> Book {
        book_with(
            InstallerConfig {
                inherit_grace: Duration::from_secs(30),
                expiry: true,
                links: vec![LinkMapping {
                    link: p("2001:db8:1::1/128"),
                    interface: "sub0".into(),
                }],
                ..cfg()
            },
            now,
        )
    }

    fn pd(dst: &str, via: &str, oif: u32) -> KernelRoute {
        KernelRoute {
            gateway: Some(via.parse().unwrap()),
            ..kr(dst, oif)
        }
    }

    fn expiring(list: &[(&KernelRoute, Instant)]) -> HashMap<Ipv6Prefix, Instant> {
        list.iter().map(|(r, t)| (r.dst, *t)).collect()
    }

    /// An inherited destination is anchored to the route the dump shows first for it (its
    /// interface and next hop), whatever other routes of ours to it follow.
    #[test]
    fn an_inherited_destination_is_anchored_to_its_first_route_in_the_dump() {
        let t0 = Instant::now();
        let first = pd("2001:db8:100::/56", "fe80::7", IF_UP);
        let second = pd("2001:db8:100::/56", "fe80::8", IF_UP);
        let other = kr("2001:db8:1::5/128", IF_UP);
        let mut b = inheriting(t0);
        let (report, ops) = b.reconcile(t0, &[other, first, second], &HashMap::new());
        assert!(ops.is_empty());
        assert_eq!(report.inherited, 2);
        assert_eq!(b.inherited[&first.dst].route, first);
        assert_eq!(b.inherited[&other.dst].route, other);
        let mut b = inheriting(t0);
        b.reconcile(t0, &[second, first], &HashMap::new());
        assert_eq!(b.inherited[&first.dst].route, second);
    }

    /// Inherited routes live until the kernel's expiry, not the grace: at the end of
    /// inheritance one with an expiry ahead is kept (and kept by every later reconcile) until
    /// that expiry, when it is removed and counted; one without an expiry is deleted then, as
    /// before (the fallback).
    #[test]
    fn inherited_routes_live_until_the_kernels_expiry() {
        let t0 = Instant::now();
        let mut b = inheriting(t0);
        let long = pd("2001:db8:100::/56", "fe80::7", IF_UP);
        let forever = kr("2001:db8:1::5/128", IF_UP);
        let dump = [long, forever];
        let exp = expiring(&[(&long, t0 + Duration::from_secs(3600))]);
        let (report, ops) = b.reconcile(t0, &dump, &exp);
        assert!(ops.is_empty());
        assert_eq!(report.inherited, 2);
        assert_eq!(
            b.next_inherited_expiry(),
            Some(t0 + Duration::from_secs(3600))
        );
        // The grace is over: only the route without an expiry goes.
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(b.end_inheritance(), Some(2));
        b.reconcile_started();
        let (report, ops) = b.reconcile(t1, &dump, &exp);
        assert_eq!(ops, vec![RouteOp::Delete(forever)]);
        assert_eq!(report.inherited, 1);
        assert_eq!(count(&b, RouteCounter::Unconfirmed), 1);
        answer(&mut b, &ops, Outcome::Done, t1);
        assert_eq!(b.route_state(&long.dst), RouteState::Inherited);
        // Later reconciles keep it too, and take the kernel's (moved) expiry.
        let t2 = t1 + Duration::from_secs(600);
        let exp = expiring(&[(&long, t0 + Duration::from_secs(3000))]);
        let (report, ops) = b.reconcile(t2, &[long], &exp);
        assert!(ops.is_empty(), "kept past the grace: {ops:?}");
        assert_eq!(report.inherited, 1);
        assert_eq!(
            b.next_inherited_expiry(),
            Some(t0 + Duration::from_secs(3000))
        );
        // Not yet due; then due: removed and counted.
        assert!(b.inherited_due(t0 + Duration::from_secs(2999)).is_empty());
        let ops = b.inherited_due(t0 + Duration::from_secs(3000));
        assert_eq!(ops, vec![RouteOp::Delete(long)]);
        assert_eq!(b.route_state(&long.dst), RouteState::None);
        assert_eq!(b.next_inherited_expiry(), None);
        assert_eq!(count(&b, RouteCounter::InheritedExpired), 1);
        // The kernel had dropped it already: ESRCH settles like a success.
        assert!(answer(&mut b, &ops, Outcome::Refused(3), t2).is_empty());
        // A route of ours that shows up after inheritance ended is no inherited one: deleted.
        let late = kr("2001:db8:1::6/128", IF_UP);
        let exp = expiring(&[(&late, t2 + Duration::from_secs(3600))]);
        let (_, ops) = b.reconcile(t2, &[late], &exp);
        assert_eq!(ops, vec![RouteOp::Delete(late)]);
    }

    /// An inherited route's kernel expiry is honoured while inheriting too, and an adopted one
    /// is no longer timed by it.
    #[test]
    fn expiry_during_inheritance_and_adoption() {
        let t0 = Instant::now();
        let mut b = inheriting(t0);
        let soon = kr("2001:db8:1::7/128", IF_UP);
        let adopted = kr("2001:db8:1::8/128", IF_UP);
        let exp = expiring(&[
            (&soon, t0 + Duration::from_secs(5)),
            (&adopted, t0 + Duration::from_secs(6)),
        ]);
        b.reconcile(t0, &[soon, adopted], &exp);
        // A snooped bind adopts one (the cache's Added makes it desired): replaced to carry
        // the lease's lifetime, no longer inherited.
        let spec = on("2001:db8:1::8/128", "sub0").valid_until(t0 + Duration::from_secs(900));
        let ops = b.apply([RouteChange::Upsert(spec)]);
        assert_eq!(ops, vec![RouteOp::Replace(adopted)]);
        answer(&mut b, &ops, Outcome::Done, t0);
        assert_eq!(b.route_state(&adopted.dst), RouteState::Installed);
        assert_eq!(count(&b, RouteCounter::Adopted), 1);
        assert_eq!(b.next_inherited_expiry(), Some(t0 + Duration::from_secs(5)));
        let ops = b.inherited_due(t0 + Duration::from_secs(6));
        assert_eq!(ops, vec![RouteOp::Delete(soon)], "only the unexplained one");
        answer(&mut b, &ops, Outcome::Done, t0);
        assert_eq!(b.route_state(&adopted.dst), RouteState::Installed);
        assert_eq!(b.inherit_until(), Some(t0 + Duration::from_secs(30)));
    }

    /// A release (or zero lifetime) of an inherited route withdraws it only from the link of
    /// the interface the kernel shows it on and, for a route via a next hop, only from that
    /// next hop when the notice names one; a server's answer (no link) withdraws it wherever it
    /// is; a desired route is never touched by such a notice.
    #[test]
    fn releases_of_inherited_routes_are_anchored_to_their_link() {
        let t0 = Instant::now();
        let mut b = inheriting(t0);
        let on_sub0 = pd("2001:db8:100::/56", "fe80::7", IF_UP);
        let on_sub1 = kr("2001:db8:2::9/128", IF_OTHER);
        let answered = kr("2001:db8:2::a/128", IF_OTHER);
        b.reconcile_plain(&[on_sub0, on_sub1, answered]);
        let from = |dst: &KernelRoute, link: Option<LinkRef>| RouteChange::WithdrawInherited {
            dst: dst.dst,
            link,
            via: None,
        };
        let by =
            |dst: &KernelRoute, link: Option<LinkRef>, via: &str| RouteChange::WithdrawInherited {
                dst: dst.dst,
                link,
                via: Some(via.parse().unwrap()),
            };
        let sub0_la = || Some(LinkRef::LinkAddress("2001:db8:1::1".parse().unwrap()));
        // (notice, expected ops)
        let table: Vec<(RouteChange, Vec<RouteOp>)> = vec![
            // From another link (sub1, by name): kept.
            (
                from(&on_sub0, Some(LinkRef::Interface("sub1".into()))),
                vec![],
            ),
            // From a link that resolves to nothing: kept.
            (
                from(
                    &on_sub0,
                    Some(LinkRef::LinkAddress("2001:db8:77::1".parse().unwrap())),
                ),
                vec![],
            ),
            // A zero lifetime answered to a stranger on its link (another next hop): kept.
            (by(&on_sub0, sub0_la(), "fe80::66"), vec![]),
            // From its own link (its configured link-address), by its next hop: withdrawn.
            (
                by(&on_sub0, sub0_la(), "fe80::7"),
                vec![RouteOp::Delete(on_sub0)],
            ),
            // sub1's route released on sub0: kept.
            (from(&on_sub1, sub0_la()), vec![]),
            // By interface name, from any client (an address route has no next hop to
            // compare): withdrawn.
            (
                by(
                    &on_sub1,
                    Some(LinkRef::Interface("sub1".into())),
                    "fe80::66",
                ),
                vec![RouteOp::Delete(on_sub1)],
            ),
            // A server's answer that nobody holds it: withdrawn, wherever it is.
            (from(&answered, None), vec![RouteOp::Delete(answered)]),
            // Nothing inherited there (any more): nothing.
            (from(&kr("2001:db8:1::99/128", IF_UP), None), vec![]),
        ];
        for (i, (notice, want)) in table.into_iter().enumerate() {
            let ops = b.apply([notice]);
            assert_eq!(ops, want, "row {i}");
            answer(&mut b, &ops, Outcome::Done, t0);
        }
        for r in [on_sub0, on_sub1, answered] {
            assert_eq!(b.route_state(&r.dst), RouteState::None);
        }
        assert_eq!(count(&b, RouteCounter::InheritedReleased), 3);
        assert_eq!(count(&b, RouteCounter::InheritedOtherLink), 3);
        assert_eq!(count(&b, RouteCounter::InheritedOtherNextHop), 1);
        // A desired route is the cache's: a notice does not touch it, even from its link.
        let ops = b.apply([RouteChange::Upsert(on("2001:db8:1::5/128", "sub0"))]);
        answer(&mut b, &ops, Outcome::Done, t0);
        let ops = b.apply([from(&kr("2001:db8:1::5/128", IF_UP), sub0_la())]);
        assert!(ops.is_empty());
        assert_eq!(
            b.route_state(&p("2001:db8:1::5/128")),
            RouteState::Installed
        );
        // Last change per destination wins: adopted in the same batch, the notice is void.
        let inh = kr("2001:db8:1::6/128", IF_UP);
        b.reconcile_plain(&[kr("2001:db8:1::5/128", IF_UP), inh]);
        assert!(b.is_inherited(&inh.dst));
        let ops = b.apply([
            RouteChange::Upsert(on("2001:db8:1::6/128", "sub0")),
            from(&inh, sub0_la()),
        ]);
        assert!(ops.iter().all(|o| o.kind() != OpKind::Delete), "{ops:?}");
    }

    /// When inheritance ends, each inherited route still unexplained owes one confirming
    /// leasequery, on the link-address of its interface's link (configured, else a global
    /// address the interface holds); a route on an interface without one is not asked about.
    #[test]
    fn unexplained_inherited_routes_owe_a_confirming_query() {
        let t0 = Instant::now();
        let mut b = inheriting(t0);
        b.links_mut().set_link(9, "bare0", true);
        b.links_mut()
            .add_addr(IF_OTHER, "fe80::1".parse().unwrap(), 64);
        b.links_mut()
            .add_addr(IF_OTHER, "2001:db8:2::1".parse().unwrap(), 64);
        let pfx = pd("2001:db8:100::/56", "fe80::7", IF_UP);
        let addr = kr("2001:db8:2::9/128", IF_OTHER);
        let bare = kr("2001:db8:9::9/128", 9);
        let adopted = kr("2001:db8:1::8/128", IF_UP);
        let far = t0 + Duration::from_secs(3600);
        let exp = expiring(&[(&pfx, far), (&addr, far), (&bare, far), (&adopted, far)]);
        b.reconcile(t0, &[pfx, addr, bare, adopted], &exp);
        let ops = b.apply([RouteChange::Upsert(on("2001:db8:1::8/128", "sub0"))]);
        answer(&mut b, &ops, Outcome::Done, t0);
        assert!(b.doubts_mut().is_empty(), "nothing asked while inheriting");
        assert_eq!(b.end_inheritance(), Some(3));
        let owed: Vec<InheritDoubt> = b.doubts_mut().drain(..).collect();
        assert_eq!(
            owed,
            vec![
                InheritDoubt {
                    dst: addr.dst,
                    interface: "sub1".into(),
                    link: "2001:db8:2::1".parse().unwrap(),
                },
                InheritDoubt {
                    dst: pfx.dst,
                    interface: "sub0".into(),
                    link: "2001:db8:1::1".parse().unwrap(),
                },
            ]
        );
        // Asked once: reconciles keep them, and nothing is owed again.
        let (report, ops) = b.reconcile(t0, &[pfx, addr, bare, adopted], &exp);
        assert!(ops.is_empty(), "{ops:?}");
        assert_eq!(report.inherited, 3);
        assert_eq!(b.end_inheritance(), None);
        assert!(b.doubts_mut().is_empty());
    }
}
