//! The installer: the rtnetlink shell that carries [`RouteChange`]s into the kernel.
//!
//! It owns one netlink socket (strict dump checking, enlarged receive buffer) driven by a
//! netlink-proto connection task, and the installer's view of the world: the desired routes, the
//! routes of ours it believes the kernel holds, the parked routes (link unknown) and the retry
//! schedule. Every kernel answer is awaited with [`InstallerConfig::ack_timeout`].
//!
//! Speed: ops go out in datagrams of [`InstallerConfig::batch_size`] messages, up to
//! [`InstallerConfig::max_in_flight`] datagrams unacknowledged; only the last message of each
//! datagram asks for an ack (see [`super::netlink`] for why that is safe). Per-route errors are
//! handled one by one: EEXIST → replace if a dump shows the route is ours (never someone else's),
//! ENODEV → park, anything else or no answer → retry with exponential backoff, counted.
//!
//! Not `Sync`: one task owns the installer (see [`super::reconcile::run`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use futures::stream::FuturesUnordered;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_proto::sys::{AsyncSocket, SocketAddr};
use netlink_proto::{ConnectionHandle, ReplyExpectation};
use tracing::{debug, info, warn};

use super::link::LinkTable;
use super::netlink;
use super::plan::{self, ErrorAction, KernelRoute, OpKind, RouteOp, RoutePlan};
use super::stats::{InstallerStats, RouteCounter};
use super::{InstallerConfig, KernelError, RouteChange, RouteSpec};
use crate::admission::OwnAddresses;
use crate::prefix::Ipv6Prefix;

type Unsolicited = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// What became of one op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    Refused(i32),
    Unanswered,
}

#[derive(Debug, Clone, Copy)]
struct Retry {
    attempt: u32,
    due: Instant,
}

/// Keeps the kernel's routes of our protocol equal to the desired set.
#[derive(Debug)]
pub struct Installer {
    pub(super) cfg: InstallerConfig,
    handle: ConnectionHandle<RouteNetlinkMessage>,
    unsolicited: Unsolicited,
    conn: tokio::task::JoinHandle<()>,
    pub(super) links: LinkTable,
    pub(super) desired: HashMap<Ipv6Prefix, RouteSpec>,
    pub(super) installed: HashMap<Ipv6Prefix, KernelRoute>,
    pub(super) parked: HashSet<Ipv6Prefix>,
    /// Routes of ours found at start that nothing desires, kept until [`Self::inherit_until`].
    pub(super) inherited: HashSet<Ipv6Prefix>,
    /// While set, a reconcile keeps undesired routes of ours instead of deleting them.
    pub(super) inherit_until: Option<Instant>,
    /// Whether the deletes of the first reconcile after inheritance were counted.
    pub(super) unconfirmed_logged: bool,
    retry: HashMap<Ipv6Prefix, Retry>,
    pub(super) stats: Arc<InstallerStats>,
    resync_needed: bool,
    /// Where the box's addresses are published for the snooper and admission (they follow
    /// every address dump and notification this installer sees).
    own: Option<Arc<OwnAddresses>>,
}

impl Drop for Installer {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl Installer {
    /// Open the socket and learn the interfaces. Must run inside a tokio runtime, in the network
    /// namespace whose routes it is to manage.
    pub async fn new(cfg: InstallerConfig) -> Result<Installer, KernelError> {
        Installer::with_stats(cfg, Arc::new(InstallerStats::default())).await
    }

    /// [`Installer::new`] counting into existing `stats` (a restarted route task keeps its
    /// metrics and heartbeat).
    pub async fn with_stats(
        cfg: InstallerConfig,
        stats: Arc<InstallerStats>,
    ) -> Result<Installer, KernelError> {
        let (mut conn, handle, unsolicited) = netlink_proto::new_connection::<RouteNetlinkMessage>(
            netlink_sys::protocols::NETLINK_ROUTE,
        )
        .map_err(KernelError::Socket)?;
        // Hand plain acks to the batch that asked: they are how a batch knows it is done.
        conn.set_forward_ack(true);
        let socket = conn.socket_mut().socket_mut();
        socket
            .set_netlink_get_strict_chk(true)
            .map_err(KernelError::Socket)?;
        netlink::set_recv_buffer(socket, cfg.recv_buffer)?;
        let conn = tokio::spawn(conn);
        let inherit_until =
            (!cfg.inherit_grace.is_zero()).then(|| Instant::now() + cfg.inherit_grace);
        let mut me = Installer {
            cfg,
            handle,
            unsolicited,
            conn,
            links: LinkTable::new(),
            desired: HashMap::new(),
            installed: HashMap::new(),
            parked: HashSet::new(),
            inherited: HashSet::new(),
            inherit_until,
            unconfirmed_logged: true,
            retry: HashMap::new(),
            stats,
            resync_needed: false,
            own: None,
        };
        me.refresh_links().await?;
        Ok(me)
    }

    /// Keep `own` equal to the box's IPv6 addresses from now on.
    pub fn publish_addresses(&mut self, own: Arc<OwnAddresses>) {
        own.replace(self.links.addresses().collect());
        self.own = Some(own);
    }

    pub fn config(&self) -> &InstallerConfig {
        &self.cfg
    }

    /// The counters, shared with the metrics module.
    pub fn stats(&self) -> Arc<InstallerStats> {
        Arc::clone(&self.stats)
    }

    pub fn desired_len(&self) -> usize {
        self.desired.len()
    }

    /// Routes of ours the installer believes are in the kernel.
    pub fn installed_len(&self) -> usize {
        self.installed.len()
    }

    pub fn is_parked(&self, dst: &Ipv6Prefix) -> bool {
        self.parked.contains(dst)
    }

    pub fn parked_len(&self) -> usize {
        self.parked.len()
    }

    /// Routes of ours kept from before the start that nothing explains (yet).
    pub fn inherited_len(&self) -> usize {
        self.inherited.len()
    }

    pub fn is_inherited(&self, dst: &Ipv6Prefix) -> bool {
        self.inherited.contains(dst)
    }

    /// Until when undesired routes are inherited rather than deleted; `None` once that ended.
    pub fn inherit_until(&self) -> Option<Instant> {
        self.inherit_until
    }

    /// True after a receive overrun lost kernel answers: run a reconcile.
    pub fn resync_needed(&self) -> bool {
        self.resync_needed
    }

    /// When the earliest retry is due.
    pub fn next_retry(&self) -> Option<Instant> {
        self.retry.values().map(|r| r.due).min()
    }

    /// Apply changes from the cache: the last change per destination wins.
    pub async fn apply(
        &mut self,
        changes: impl IntoIterator<Item = RouteChange>,
    ) -> Result<(), KernelError> {
        let changes = changes.into_iter();
        let hint = changes.size_hint().0;
        let mut touched = Vec::with_capacity(hint);
        let mut seen = HashSet::with_capacity(hint);
        // Routes whose only change is the lifetime: with expiry mirrored into the kernel they
        // are replaced so RTA_EXPIRES moves with the lease (otherwise the old deadline fires).
        let mut refresh = HashSet::new();
        self.desired.reserve(hint.min(self.cfg.max_routes));
        for change in changes {
            let dst = match change {
                RouteChange::Upsert(spec) => {
                    let dst = spec.dst;
                    let old = self.desired.get(&dst);
                    if old.is_none() && self.desired.len() >= self.cfg.max_routes {
                        self.stats.add(RouteCounter::Dropped, 1);
                        warn!(%dst, max = self.cfg.max_routes, "route dropped: desired set full");
                        continue;
                    }
                    // An inherited route carries the previous run's expiry: give it this lease's.
                    if self.cfg.expiry
                        && (old.is_some_and(|o| o.valid_until != spec.valid_until)
                            || (old.is_none() && self.inherited.contains(&dst)))
                    {
                        refresh.insert(dst);
                    }
                    self.desired.insert(dst, spec);
                    dst
                }
                RouteChange::Withdraw(dst) => {
                    // A source that knew the binding says it is gone: an inherited route goes
                    // too (the delete below, planned from `installed`).
                    self.desired.remove(&dst);
                    refresh.remove(&dst);
                    dst
                }
            };
            if seen.insert(dst) {
                touched.push(dst);
            }
        }
        let mut ops = Vec::with_capacity(touched.len());
        for dst in touched {
            if !self.retry.is_empty() {
                self.retry.remove(&dst);
            }
            match self.op_for(dst) {
                Some(op) => ops.push(op),
                None if refresh.contains(&dst) => {
                    if let Some(r) = self.installed.get(&dst) {
                        ops.push(RouteOp::Replace(*r));
                    }
                }
                None => {}
            }
        }
        self.run_ops(ops).await
    }

    /// Retry every op whose backoff has elapsed at `now`.
    pub async fn retry_due(&mut self, now: Instant) -> Result<(), KernelError> {
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
                    // Push the due time out; success removes the entry, failure reschedules.
                    if let Some(r) = self.retry.get_mut(&dst) {
                        r.due = now + self.cfg.retry_max;
                    }
                    ops.push(op);
                }
                None => {
                    self.retry.remove(&dst);
                }
            }
        }
        self.run_ops(ops).await
    }

    /// The route the desired spec for `dst` means now, `Err(())` when its link is unknown.
    pub(super) fn resolve(&self, spec: &RouteSpec) -> Option<KernelRoute> {
        let oif = self.links.resolve(&spec.link, &self.cfg.links)?;
        Some(KernelRoute {
            dst: spec.dst,
            gateway: spec.via,
            oif,
            metric: self.cfg.metric,
        })
    }

    /// The op that brings `dst` to its desired state, parking it when its link is unknown.
    fn op_for(&mut self, dst: Ipv6Prefix) -> Option<RouteOp> {
        let want = match self.desired.get(&dst) {
            None => {
                self.parked.remove(&dst);
                None
            }
            Some(spec) => match self.resolve(spec) {
                Some(r) => {
                    if !self.inherited.is_empty() && self.inherited.remove(&dst) {
                        self.stats.add(RouteCounter::Adopted, 1);
                        debug!(%dst, "inherited route explained by the cache: ordinary now");
                    }
                    if !self.parked.is_empty() && self.parked.remove(&dst) {
                        self.stats.add(RouteCounter::Unparked, 1);
                        info!(%dst, link = %spec.link, "parked route's link appeared: installing");
                    }
                    Some(r)
                }
                None => {
                    let link = spec.link.clone();
                    self.park(dst, &link.to_string(), "no interface for it (yet)");
                    // Whatever is installed stays (RFC 8987 S-2) until the link is known.
                    return None;
                }
            },
        };
        plan::plan_change(self.installed.get(&dst), want.as_ref())
    }

    pub(super) fn park(&mut self, dst: Ipv6Prefix, link: &str, why: &str) {
        if self.parked.insert(dst) {
            self.stats.add(RouteCounter::Parked, 1);
            info!(%dst, link, why, "route parked: installed when its link appears");
        }
    }

    /// Re-dump interfaces and addresses (at start, and after a notification overrun), then
    /// account for vanished interfaces and install what got unparked.
    pub async fn refresh_links(&mut self) -> Result<(), KernelError> {
        let mut table = LinkTable::new();
        let links = self
            .dump(netlink::link_dump_request(), "dumping links", |m| match m {
                RouteNetlinkMessage::NewLink(l) => netlink::link_of(&l),
                _ => None,
            })
            .await?;
        for (i, name, up) in links {
            table.set_link(i, &name, up);
        }
        let addrs = self
            .dump(
                netlink::addr_dump_request(),
                "dumping addresses",
                |m| match m {
                    RouteNetlinkMessage::NewAddress(a) => netlink::addr_of(&a),
                    _ => None,
                },
            )
            .await?;
        for (i, a, l) in addrs {
            table.add_addr(i, a, l);
        }
        self.links = table;
        self.links_changed().await
    }

    /// Feed one link/address notification (RTNLGRP_LINK, RTNLGRP_IPV6_IFADDR).
    pub async fn link_event(&mut self, msg: &RouteNetlinkMessage) -> Result<(), KernelError> {
        match msg {
            RouteNetlinkMessage::NewLink(l) => {
                let Some((i, name, up)) = netlink::link_of(l) else {
                    return Ok(());
                };
                if !self.links.set_link(i, &name, up) {
                    return Ok(());
                }
            }
            RouteNetlinkMessage::DelLink(l) => self.links.remove_link(l.header.index),
            RouteNetlinkMessage::NewAddress(a) => match netlink::addr_of(a) {
                Some((i, ad, len)) => self.links.add_addr(i, ad, len),
                None => return Ok(()),
            },
            RouteNetlinkMessage::DelAddress(a) => match netlink::addr_of(a) {
                Some((i, ad, len)) => self.links.remove_addr(i, ad, len),
                None => return Ok(()),
            },
            _ => return Ok(()),
        }
        self.links_changed().await
    }

    /// Routes on vanished or downed interfaces are gone from the kernel (it flushes them with the
    /// device, and on admin down): forget them and re-plan (parking them until the link is
    /// usable again); retry parked routes.
    async fn links_changed(&mut self) -> Result<(), KernelError> {
        if let Some(own) = &self.own {
            own.replace(self.links.addresses().collect());
        }
        let vanished: Vec<Ipv6Prefix> = self
            .installed
            .iter()
            .filter(|(_, r)| !self.links.is_usable(r.oif))
            .map(|(d, _)| *d)
            .collect();
        for dst in &vanished {
            self.installed.remove(dst);
        }
        let mut ops = Vec::new();
        let candidates: Vec<Ipv6Prefix> = vanished
            .into_iter()
            .chain(self.parked.iter().copied())
            .collect();
        for dst in candidates {
            ops.extend(self.op_for(dst));
        }
        self.run_ops(ops).await
    }

    /// Run a dump, mapping each answer; every message must come within the ack timeout.
    pub(super) async fn dump<T>(
        &mut self,
        req: NetlinkMessage<RouteNetlinkMessage>,
        what: &'static str,
        mut f: impl FnMut(RouteNetlinkMessage) -> Option<T>,
    ) -> Result<Vec<T>, KernelError> {
        let mut rx = self
            .handle
            .request(req, SocketAddr::new(0, 0))
            .map_err(|_| KernelError::ConnectionClosed(what))?;
        let mut out = Vec::new();
        loop {
            let msg = tokio::time::timeout(self.cfg.ack_timeout, rx.next())
                .await
                .map_err(|_| KernelError::Timeout {
                    what,
                    timeout: self.cfg.ack_timeout,
                })?;
            let Some(msg) = msg else { break };
            match msg.payload {
                NetlinkPayload::InnerMessage(m) => out.extend(f(m)),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(KernelError::Refused {
                            what,
                            errno: -code.get(),
                        });
                    }
                }
                NetlinkPayload::Overrun(_) => {
                    self.stats.add(RouteCounter::Overrun, 1);
                    return Err(KernelError::Refused {
                        what,
                        errno: libc::ENOBUFS,
                    });
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Dump the routes of ours (protocol, table, IPv6), kernel-filtered.
    pub async fn dump_ours(&mut self) -> Result<Vec<KernelRoute>, KernelError> {
        let cfg = self.cfg.clone();
        self.dump(
            netlink::dump_request(&cfg),
            "dumping our routes",
            |m| match m {
                RouteNetlinkMessage::NewRoute(r) => netlink::our_route(&cfg, &r),
                _ => None,
            },
        )
        .await
    }

    /// Execute ops and settle their outcomes: belief, counters, parking, retries.
    pub(super) async fn run_ops(&mut self, ops: Vec<RouteOp>) -> Result<(), KernelError> {
        let plan = RoutePlan::new(ops);
        if !plan.is_empty() {
            let exists = self.run_plan(&plan).await?;
            if !exists.is_empty() {
                self.replace_if_ours(exists).await?;
            }
        }
        self.stats.set_gauges(
            self.installed.len(),
            self.parked.len(),
            self.inherited.len(),
        );
        Ok(())
    }

    /// Execute one plan; returns the adds refused with EEXIST.
    async fn run_plan(&mut self, plan: &RoutePlan) -> Result<Vec<KernelRoute>, KernelError> {
        let outcomes = if self.cfg.dry_run {
            for op in &plan.ops {
                let dev = self.links.name_of(op.route().oif).unwrap_or("?");
                info!(
                    "dry-run: would run: {}",
                    netlink::ip_command(&self.cfg, op, dev)
                );
            }
            self.stats.add(RouteCounter::DryRun, plan.len() as u64);
            vec![Outcome::Done; plan.len()]
        } else {
            self.execute(&plan.ops).await?
        };
        let mut exists = Vec::new();
        let mut failed = 0usize;
        for (op, outcome) in plan.ops.iter().zip(outcomes) {
            let errno = match outcome {
                Outcome::Done => {
                    self.succeeded(op);
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
                ErrorAction::AlreadyDone => self.succeeded(op),
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
                    debug!(dst = %op.dst(), op = op.kind().as_str(), errno, "route op failed; retrying later");
                    self.schedule_retry(op.dst());
                }
            }
        }
        if failed > 0 {
            self.stats.add(RouteCounter::Failed, failed as u64);
            warn!(
                failed,
                of = plan.len(),
                "route ops failed or unanswered; retrying with backoff"
            );
        }
        Ok(exists)
    }

    /// EEXIST on add: replace the routes a dump shows to be ours; leave others' alone.
    async fn replace_if_ours(&mut self, exists: Vec<KernelRoute>) -> Result<(), KernelError> {
        let ours: HashSet<(Ipv6Prefix, u32)> = self
            .dump_ours()
            .await?
            .into_iter()
            .map(|r| (r.dst, r.metric))
            .collect();
        let mut replace = Vec::new();
        for r in exists {
            if ours.contains(&(r.dst, r.metric)) {
                replace.push(RouteOp::Replace(r));
            } else {
                self.stats.add(RouteCounter::Conflict, 1);
                warn!(dst = %r.dst, metric = r.metric, "a route of another protocol holds this destination and metric: left alone, retrying later");
                self.schedule_retry(r.dst);
            }
        }
        let plan = RoutePlan::new(replace);
        if !plan.is_empty() {
            // A replace never answers EEXIST, so nothing comes back here.
            self.run_plan(&plan).await?;
        }
        Ok(())
    }

    fn succeeded(&mut self, op: &RouteOp) {
        let r = *op.route();
        match op.kind() {
            OpKind::Add => {
                self.stats.add(RouteCounter::Installed, 1);
                self.installed.insert(r.dst, r);
            }
            OpKind::Replace => {
                self.stats.add(RouteCounter::Replaced, 1);
                self.installed.insert(r.dst, r);
            }
            OpKind::Delete => {
                self.stats.add(RouteCounter::Withdrawn, 1);
                self.inherited.remove(&r.dst);
                if self.installed.get(&r.dst) == Some(&r) {
                    self.installed.remove(&r.dst);
                }
            }
        }
        if !self.retry.is_empty() {
            self.retry.remove(&r.dst);
        }
    }

    fn schedule_retry(&mut self, dst: Ipv6Prefix) {
        let now = Instant::now();
        let e = self.retry.entry(dst).or_insert(Retry {
            attempt: 0,
            due: now,
        });
        e.due = now + crate::time::backoff(e.attempt, self.cfg.retry_base, self.cfg.retry_max);
        e.attempt = e.attempt.saturating_add(1);
    }

    /// RTA_EXPIRES for a route, when expiry is on and the spec has a deadline.
    fn expires(&self, dst: &Ipv6Prefix, now: Instant) -> Option<u32> {
        if !self.cfg.expiry {
            return None;
        }
        let until = self.desired.get(dst)?.valid_until?;
        let secs = until.saturating_duration_since(now).as_secs();
        Some(u32::try_from(secs).unwrap_or(u32::MAX).max(1))
    }

    /// Send ops in batches with many in flight; one outcome per op.
    async fn execute(&mut self, ops: &[RouteOp]) -> Result<Vec<Outcome>, KernelError> {
        // Errors of an earlier, timed-out batch may still sit in the queue: they are stale.
        self.drain_unsolicited(&[], &mut []);
        let mut outcomes = vec![Outcome::Unanswered; ops.len()];
        let size = self.cfg.batch_size.max(1);
        let window = self.cfg.max_in_flight.max(1);
        let timeout = self.cfg.ack_timeout;
        let now = Instant::now();
        let mut inflight = FuturesUnordered::new();
        for (b, chunk) in ops.chunks(size).enumerate() {
            let msgs: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, op)| {
                    let last = i + 1 == chunk.len();
                    let exp = match op {
                        RouteOp::Delete(_) => None,
                        _ => self.expires(&op.dst(), now),
                    };
                    let expect = if last {
                        ReplyExpectation::Expected
                    } else {
                        ReplyExpectation::NotExpected
                    };
                    (netlink::op_request(&self.cfg, op, exp, last), expect)
                })
                .collect();
            let mut rx = self
                .handle
                .request_batch_with_expectation(msgs, SocketAddr::new(0, 0))
                .map_err(|_| KernelError::ConnectionClosed("sending routes"))?;
            let sent = Instant::now();
            inflight.push(async move {
                let ack = tokio::time::timeout(timeout, rx.next()).await;
                (b, sent.elapsed(), ack)
            });
            while inflight.len() >= window {
                if let Some(done) = inflight.next().await {
                    self.batch_answered(done, size, &mut outcomes);
                }
            }
        }
        while let Some(done) = inflight.next().await {
            self.batch_answered(done, size, &mut outcomes);
        }
        self.drain_unsolicited(ops, &mut outcomes);
        Ok(outcomes)
    }

    #[allow(clippy::type_complexity)]
    fn batch_answered(
        &mut self,
        (b, latency, ack): (
            usize,
            std::time::Duration,
            Result<Option<NetlinkMessage<RouteNetlinkMessage>>, tokio::time::error::Elapsed>,
        ),
        size: usize,
        outcomes: &mut [Outcome],
    ) {
        self.stats.batch_done(latency);
        let start = b * size;
        let end = (start + size).min(outcomes.len());
        match ack {
            Err(_) => {
                self.stats.add(RouteCounter::AckTimeout, 1);
                warn!(batch = b, routes = end - start, timeout = ?self.cfg.ack_timeout, "no ack from the kernel for a route batch");
            }
            Ok(None) => warn!(batch = b, "rtnetlink connection closed before the ack"),
            Ok(Some(msg)) => {
                outcomes[start..end].fill(Outcome::Done);
                if let NetlinkPayload::Error(e) = msg.payload {
                    if let Some(code) = e.code {
                        outcomes[end - 1] = Outcome::Refused(-code.get());
                    }
                }
            }
        }
    }

    /// Move errors from the unsolicited queue onto their ops (matched by the quoted request);
    /// note overruns.
    fn drain_unsolicited(&mut self, ops: &[RouteOp], outcomes: &mut [Outcome]) {
        let mut refused = Vec::new();
        while let Ok((msg, _)) = self.unsolicited.try_recv() {
            match msg.payload {
                NetlinkPayload::Error(e) => {
                    let Some(code) = e.code else { continue };
                    match netlink::parse_refused(&e) {
                        Some(key) => refused.push((key, -code.get())),
                        None => debug!(code = code.get(), "netlink error quoting no route request"),
                    }
                }
                NetlinkPayload::Overrun(_) => {
                    self.stats.add(RouteCounter::Overrun, 1);
                    warn!("netlink receive buffer overrun: route errors may be lost; reconciling");
                    self.resync_needed = true;
                }
                _ => {}
            }
        }
        if refused.is_empty() {
            return;
        }
        // Only built when something failed: the common case stays allocation-free.
        let index: HashMap<(bool, KernelRoute), usize> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| ((op.kind() == OpKind::Delete, *op.route()), i))
            .collect();
        for (key, errno) in refused {
            match index.get(&key) {
                Some(&i) => outcomes[i] = Outcome::Refused(errno),
                None => debug!(dst = %key.1.dst, errno, "netlink error for no pending route op"),
            }
        }
    }

    pub(super) fn clear_resync(&mut self) {
        self.resync_needed = false;
    }
}
