//! The installer: the rtnetlink shell that carries [`RouteChange`]s into the kernel.
//!
//! It owns two netlink sockets, both with an enlarged receive buffer: one driven by a
//! netlink-proto connection task for dumps (strict dump checking), and the route socket
//! ([`super::routesock`]) it writes route requests on and reads their answers from. It drives the pure bookkeeping (`book::Book`): every event
//! (changes, a due retry, a link notification or re-dump, a dump of our routes) goes to the
//! book, which decides the ops; the installer runs them and hands back what the kernel
//! answered. What it keeps itself is execution: batching, acks, matching errors to ops, dumps. Every kernel answer is awaited
//! with [`InstallerConfig::ack_timeout`].
//!
//! Speed: ops go out in datagrams of [`InstallerConfig::batch_size`] messages, up to
//! [`InstallerConfig::max_in_flight`] datagrams unacknowledged; only the last message of each
//! datagram asks for an ack (see [`super::netlink`] for why that is safe); each request carries
//! its own sequence number, so an error names its op. Per-route errors are
//! settled one by one by the book: EEXIST → replace if a dump shows the route is ours (never
//! someone else's), ENODEV → park, anything else or no answer → retry with exponential backoff,
//! counted.
//!
//! Reconcile — make the kernel's routes of our protocol exactly the desired set — is
//! [`Installer::reconcile`]: dump only routes with our protocol number in our table
//! (kernel-side filtering via NETLINK_GET_STRICT_CHK, re-checked locally), let the book diff
//! them against the desired set, run the result. A route of another protocol is never in the
//! dump, so it is never touched, even on the same prefix.
//!
//! Not `Sync`: one task owns the installer (see [`super::reconcile::run`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_proto::ConnectionHandle;
use netlink_proto::sys::{AsyncSocket, SocketAddr};
use tracing::{debug, info, warn};

use super::book::{Book, InheritDoubt, Outcome, ReconcileReport, RouteState};
use super::link::LinkTable;
use super::netlink;
use super::plan::{KernelRoute, RouteOp, RoutePlan};
use super::routesock::{Received, RouteSocket};
use super::stats::{InstallerStats, RouteCounter};
use super::{InstallerConfig, KernelError, RouteChange, RouteSpec};
use crate::admission::OwnAddresses;
use crate::cache::{Doubt, DoubtReason, LeaseKey};
use crate::cache_task::DoubtSink;
use crate::prefix::Ipv6Prefix;
use crate::time::{AgentClock, Instant, Timestamp};

type Unsolicited = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// Hand `owed` confirming leasequeries to `sink` as `Doubt`s stamped `at`, oldest first, while
/// the confirmer's queue has room; what it cannot take stays in `owed`, in order.
fn offer_doubts(owed: &mut VecDeque<InheritDoubt>, sink: &DoubtSink, at: Timestamp) {
    while let Some(d) = owed.pop_front() {
        let key = if d.dst.len() == 128 {
            LeaseKey::Address(d.dst.addr())
        } else {
            LeaseKey::Prefix(d.dst)
        };
        let doubt = Doubt {
            key,
            reason: DoubtReason::Inherited,
            holder: None,
            claimant: None,
            link: d.link,
            interface: Some(Arc::from(d.interface.as_str())),
            at,
        };
        if sink.offer(doubt).is_err() {
            owed.push_front(d);
            break;
        }
        debug!(dst = %d.dst, link = %d.link, "inherited route unexplained: confirming leasequery asked");
    }
}

/// Keeps the kernel's routes of our protocol equal to the desired set.
#[derive(Debug)]
pub struct Installer {
    cfg: InstallerConfig,
    /// The connection dumps go through (links, addresses, our routes).
    handle: ConnectionHandle<RouteNetlinkMessage>,
    unsolicited: Unsolicited,
    conn: tokio::task::JoinHandle<()>,
    /// Where route requests go and their answers come back (see [`super::routesock`]).
    sock: RouteSocket,
    /// The state and its rules; every op run here comes from it and its outcome goes back.
    book: Book,
    /// Where the box's addresses are published for the snooper and admission (they follow
    /// every address dump and notification this installer sees).
    own: Option<Arc<OwnAddresses>>,
    /// Where confirming leasequeries for inherited routes go, and the clock that stamps them
    /// (`None`: nobody asks; the routes live until their kernel expiry).
    doubts: Option<(DoubtSink, AgentClock)>,
    /// True from a finished reconcile until the next op runs: the kernel was just made equal
    /// to the desired set, so the route task need not dump it again at its start (after
    /// `set_desired` at start-up that second dump of every route was a third of the time a
    /// restart from the state file spent past the install itself).
    reconciled: bool,
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
        let sock = RouteSocket::open(&cfg)?;
        let book = Book::new(Instant::now(), &cfg, stats);
        let mut me = Installer {
            cfg,
            handle,
            unsolicited,
            conn,
            sock,
            book,
            own: None,
            doubts: None,
            reconciled: false,
        };
        me.refresh_links().await?;
        Ok(me)
    }

    /// Keep `own` equal to the box's IPv6 addresses from now on.
    pub fn publish_addresses(&mut self, own: Arc<OwnAddresses>) {
        own.replace(self.book.links().addresses().collect());
        self.own = Some(own);
    }

    /// Ask the confirmer (through `sink`) about every inherited route still unexplained when
    /// inheritance ends; `clock` stamps the doubts.
    pub fn set_doubts(&mut self, sink: DoubtSink, clock: AgentClock) {
        self.doubts = Some((sink, clock));
    }

    /// The doubt sink set with [`Installer::set_doubts`] (a restarted route task's installer
    /// gets the same).
    pub fn doubts(&self) -> Option<&(DoubtSink, AgentClock)> {
        self.doubts.as_ref()
    }

    /// Hand owed confirming leasequeries to the confirmer while its queue has room; the rest
    /// wait for the next call (the route task calls it every turn of its loop). Without a sink
    /// they are dropped: the routes live until their kernel expiry.
    pub fn flush_doubts(&mut self) {
        let owed = self.book.doubts_mut();
        match &self.doubts {
            Some((sink, clock)) => offer_doubts(owed, sink, clock.now()),
            None => owed.clear(),
        }
    }

    /// When the earliest inherited route reaches its kernel expiry.
    pub fn next_inherited_expiry(&self) -> Option<Instant> {
        self.book.next_inherited_expiry()
    }

    /// Remove the inherited routes whose kernel expiry has come at `now`.
    pub async fn inherited_due(&mut self, now: Instant) -> Result<(), KernelError> {
        let ops = self.book.inherited_due(now);
        self.run_ops(ops).await
    }

    pub fn config(&self) -> &InstallerConfig {
        &self.cfg
    }

    /// The counters, shared with the metrics module.
    pub fn stats(&self) -> Arc<InstallerStats> {
        Arc::clone(self.book.stats())
    }

    /// Until when undesired routes are inherited rather than deleted; `None` once that ended.
    pub fn inherit_until(&self) -> Option<Instant> {
        self.book.inherit_until()
    }

    /// True after a receive overrun lost kernel answers: run a reconcile.
    pub fn resync_needed(&self) -> bool {
        self.book.resync_needed()
    }

    /// When the earliest retry is due.
    pub fn next_retry(&self) -> Option<Instant> {
        self.book.next_retry()
    }

    /// Where `dst` stands: installed, parked, pending, inherited or not desired.
    pub fn route_state(&self, dst: &Ipv6Prefix) -> RouteState {
        self.book.route_state(dst)
    }

    /// Apply changes from the cache: the last change per destination wins.
    pub async fn apply(
        &mut self,
        changes: impl IntoIterator<Item = RouteChange>,
    ) -> Result<(), KernelError> {
        let ops = self.book.apply(changes);
        self.run_ops(ops).await
    }

    /// Retry every op whose backoff has elapsed at `now`.
    pub async fn retry_due(&mut self, now: Instant) -> Result<(), KernelError> {
        let ops = self.book.retry_due(now);
        self.run_ops(ops).await
    }

    /// Replace the whole desired set (e.g. after loading the cache) and reconcile.
    pub async fn set_desired(
        &mut self,
        specs: impl IntoIterator<Item = RouteSpec>,
    ) -> Result<ReconcileReport, KernelError> {
        self.book.set_desired(specs);
        self.reconcile().await
    }

    /// Dump our routes, diff against the desired set, add the missing and delete the stale.
    pub async fn reconcile(&mut self) -> Result<ReconcileReport, KernelError> {
        self.book.reconcile_started();
        let (actual, expiring) = self.dump_ours_expiring().await?;
        let (report, ops) = self.book.reconcile(Instant::now(), &actual, &expiring);
        if report.added + report.replaced + report.deleted > 0 {
            info!(?report, "reconcile: correcting the kernel");
        }
        self.run_ops(ops).await?;
        self.reconciled = true;
        Ok(report)
    }

    /// Whether no op has run since the last full reconcile (see the field).
    pub(crate) fn just_reconciled(&self) -> bool {
        self.reconciled
    }

    /// Stop inheriting (recovery finished, or the grace period is over) and reconcile: routes of
    /// ours that nothing explains by now are deleted, except inherited ones whose kernel expiry
    /// is still ahead (they stay until it, or until a source explains or withdraws them); a
    /// confirming leasequery is owed for each inherited one ([`Installer::flush_doubts`]).
    /// When a reconcile during inheritance found nothing to inherit, there is nothing to
    /// delete and no dump is taken (see `Book::nothing_inherited`).
    pub async fn end_inheritance(&mut self, why: &str) -> Result<ReconcileReport, KernelError> {
        let nothing = self.book.nothing_inherited();
        let Some(kept) = self.book.end_inheritance() else {
            return self.reconcile().await;
        };
        if nothing {
            info!(
                why,
                "inheritance over: nothing was inherited, no route to remove"
            );
            return Ok(ReconcileReport::default());
        }
        let report = self.reconcile().await?;
        info!(
            why,
            inherited = kept,
            deleted_unconfirmed = report.deleted,
            kept_until_expiry = report.inherited,
            "inheritance over: unexplained routes without a kernel expiry are removed, the \
             others kept until it; a confirming leasequery is asked for each"
        );
        Ok(report)
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
        self.book.set_links(table);
        self.links_changed().await
    }

    /// Feed one link/address notification (RTNLGRP_LINK, RTNLGRP_IPV6_IFADDR).
    pub async fn link_event(&mut self, msg: &RouteNetlinkMessage) -> Result<(), KernelError> {
        let links = self.book.links_mut();
        match msg {
            RouteNetlinkMessage::NewLink(l) => {
                let Some((i, name, up)) = netlink::link_of(l) else {
                    return Ok(());
                };
                if !links.set_link(i, &name, up) {
                    return Ok(());
                }
            }
            RouteNetlinkMessage::DelLink(l) => links.remove_link(l.header.index),
            RouteNetlinkMessage::NewAddress(a) => match netlink::addr_of(a) {
                Some((i, ad, len)) => links.add_addr(i, ad, len),
                None => return Ok(()),
            },
            RouteNetlinkMessage::DelAddress(a) => match netlink::addr_of(a) {
                Some((i, ad, len)) => links.remove_addr(i, ad, len),
                None => return Ok(()),
            },
            _ => return Ok(()),
        }
        self.links_changed().await
    }

    /// Publish the box's addresses and run what the book makes of the new link table.
    async fn links_changed(&mut self) -> Result<(), KernelError> {
        if let Some(own) = &self.own {
            own.replace(self.book.links().addresses().collect());
        }
        let ops = self.book.links_changed();
        self.run_ops(ops).await
    }

    /// Run a dump, mapping each answer; every message must come within the ack timeout.
    async fn dump<T>(
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
                    self.book.stats().add(RouteCounter::Overrun, 1);
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

    /// [`Installer::dump_ours`] with the kernel's expiry of each route that has one, as an
    /// instant (an inherited route lives until it).
    async fn dump_ours_expiring(
        &mut self,
    ) -> Result<(Vec<KernelRoute>, HashMap<Ipv6Prefix, Instant>), KernelError> {
        let cfg = self.cfg.clone();
        let hz = netlink::USER_HZ;
        let dumped = self
            .dump(
                netlink::dump_request(&cfg),
                "dumping our routes",
                |m| match m {
                    RouteNetlinkMessage::NewRoute(r) => netlink::our_route(&cfg, &r)
                        .map(|route| (route, netlink::expires_of(&r, hz))),
                    _ => None,
                },
            )
            .await?;
        let now = Instant::now();
        let mut expiring = HashMap::new();
        let mut routes = Vec::with_capacity(dumped.len());
        for (r, left) in dumped {
            if let Some(left) = left {
                expiring.entry(r.dst).or_insert(now + left);
            }
            routes.push(r);
        }
        Ok((routes, expiring))
    }

    /// Execute ops and hand their outcomes to the book.
    async fn run_ops(&mut self, ops: Vec<RouteOp>) -> Result<(), KernelError> {
        let plan = RoutePlan::new(ops);
        if !plan.is_empty() {
            self.reconciled = false;
            let exists = self.run_plan(&plan).await?;
            if !exists.is_empty() {
                self.replace_if_ours(exists).await?;
            }
        }
        self.book.publish_gauges();
        Ok(())
    }

    /// Execute one plan; returns the adds refused with EEXIST.
    async fn run_plan(&mut self, plan: &RoutePlan) -> Result<Vec<KernelRoute>, KernelError> {
        let outcomes = if self.cfg.dry_run {
            for op in &plan.ops {
                let dev = self.book.links().name_of(op.route().oif).unwrap_or("?");
                info!(
                    "dry-run: would run: {}",
                    netlink::ip_command(&self.cfg, op, dev)
                );
            }
            self.book
                .stats()
                .add(RouteCounter::DryRun, plan.len() as u64);
            vec![Outcome::Done; plan.len()]
        } else {
            self.execute(&plan.ops).await?
        };
        Ok(self.book.settle(Instant::now(), &plan.ops, &outcomes))
    }

    /// EEXIST on add: replace the routes a dump shows to be ours; leave others' alone.
    async fn replace_if_ours(&mut self, exists: Vec<KernelRoute>) -> Result<(), KernelError> {
        let ours: HashSet<(Ipv6Prefix, u32)> = self
            .dump_ours()
            .await?
            .into_iter()
            .map(|r| (r.dst, r.metric))
            .collect();
        let plan = RoutePlan::new(self.book.replace_ours(exists, &ours, Instant::now()));
        if !plan.is_empty() {
            // A replace never answers EEXIST, so nothing comes back here.
            self.run_plan(&plan).await?;
        }
        Ok(())
    }

    /// Send ops in batches with many in flight; one outcome per op.
    ///
    /// Op `i` goes out numbered `first + i`; only the last message of a batch asks for an ack,
    /// and the kernel answers a datagram's messages in order, so the answer numbered as a
    /// batch's last op (its ack, or its error) closes the batch: every error of the batch has
    /// been read by then. An error names its op by number; the ops of a closed batch without
    /// one are done. A batch with no closing answer within the ack timeout is counted and its
    /// unrefused ops stay unanswered (retried by the book).
    async fn execute(&mut self, ops: &[RouteOp]) -> Result<Vec<Outcome>, KernelError> {
        self.drain_unsolicited();
        let mut outcomes = vec![Outcome::Unanswered; ops.len()];
        let size = self.cfg.batch_size.max(1);
        let window = self.cfg.max_in_flight.max(1);
        let now = Instant::now();
        let first = self.sock.reserve_seq(ops.len());
        let mut batches = Batches {
            first,
            size,
            ops: ops.len(),
            closed: vec![false; ops.len().div_ceil(size)],
            inflight: VecDeque::with_capacity(window),
        };
        for (b, chunk) in ops.chunks(size).enumerate() {
            for (i, op) in chunk.iter().enumerate() {
                let exp = match op {
                    RouteOp::Delete(_) => None,
                    _ => self.book.expires(now, &op.dst()),
                };
                let seq = first.wrapping_add((b * size + i) as u32);
                self.sock
                    .push(&self.cfg, op, exp, seq, i + 1 == chunk.len());
            }
            let sent = Instant::now();
            if let Err(e) = self.sock.send() {
                // Its ops stay unanswered: the book retries them.
                warn!(batch = b, routes = chunk.len(), error = %e, "sending a route batch failed");
                batches.closed[b] = true;
                continue;
            }
            batches.inflight.push_back((b, sent));
            while batches.inflight.len() >= window {
                self.read_answers(&mut batches, &mut outcomes).await?;
            }
        }
        while !batches.inflight.is_empty() {
            self.read_answers(&mut batches, &mut outcomes).await?;
        }
        Ok(outcomes)
    }

    /// Read one datagram of answers (waiting until the oldest batch's ack timeout at the
    /// latest) and apply it to `outcomes`.
    async fn read_answers(
        &mut self,
        batches: &mut Batches,
        outcomes: &mut [Outcome],
    ) -> Result<(), KernelError> {
        let Some(&(oldest, sent)) = batches.inflight.front() else {
            return Ok(());
        };
        let timeout = self.cfg.ack_timeout;
        let deadline = crate::time::TokioInstant::from_std(sent + timeout);
        let got = self
            .sock
            .recv(deadline)
            .await
            .map_err(KernelError::Socket)?;
        match got {
            Received::TimedOut => {
                batches.inflight.pop_front();
                batches.closed[oldest] = true;
                self.book.stats().batch_done(sent.elapsed());
                self.book.stats().add(RouteCounter::AckTimeout, 1);
                let (start, end) = batches.range(oldest);
                warn!(batch = oldest, routes = end - start, timeout = ?timeout, "no ack from the kernel for a route batch");
            }
            Received::Overrun => {
                self.book.stats().add(RouteCounter::Overrun, 1);
                warn!("netlink receive buffer overrun: route errors may be lost; reconciling");
                self.book.overrun();
            }
            Received::Datagram => {
                for a in self.sock.answers() {
                    let Some(i) = batches.op_of(a.seq) else {
                        debug!(
                            seq = a.seq,
                            errno = a.errno,
                            "netlink answer for no pending route op"
                        );
                        continue;
                    };
                    if a.errno != 0 {
                        outcomes[i] = Outcome::Refused(a.errno);
                    }
                    let b = i / batches.size;
                    let (start, end) = batches.range(b);
                    if i + 1 != end || batches.closed[b] {
                        continue;
                    }
                    batches.closed[b] = true;
                    for o in &mut outcomes[start..end] {
                        if *o == Outcome::Unanswered {
                            *o = Outcome::Done;
                        }
                    }
                    if let Some(pos) = batches.inflight.iter().position(|&(x, _)| x == b) {
                        if let Some((_, sent)) = batches.inflight.remove(pos) {
                            self.book.stats().batch_done(sent.elapsed());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Note overruns of the dump connection's socket (nothing else arrives there unasked).
    fn drain_unsolicited(&mut self) {
        while let Ok((msg, _)) = self.unsolicited.try_recv() {
            match msg.payload {
                NetlinkPayload::Overrun(_) => {
                    self.book.stats().add(RouteCounter::Overrun, 1);
                    warn!("netlink receive buffer overrun: route errors may be lost; reconciling");
                    self.book.overrun();
                }
                NetlinkPayload::Error(e) => {
                    debug!(code = ?e.code, "unasked netlink error on the dump connection");
                }
                _ => {}
            }
        }
    }
}

/// The batches of one [`Installer::execute`]: which op a sequence number names, which batches
/// are closed (answered or timed out), which wait for their ack (oldest first, with when they
/// were sent).
struct Batches {
    first: u32,
    size: usize,
    ops: usize,
    closed: Vec<bool>,
    inflight: VecDeque<(usize, Instant)>,
}

impl Batches {
    /// The op numbered `seq` in this execute, if any (an answer to an earlier one is stale).
    fn op_of(&self, seq: u32) -> Option<usize> {
        let i = seq.wrapping_sub(self.first) as usize;
        (i < self.ops).then_some(i)
    }

    /// Batch `b`'s ops, as a range of indices.
    fn range(&self, b: usize) -> (usize, usize) {
        let start = b * self.size;
        (start, (start + self.size).min(self.ops))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owed(dst: &str, ifname: &str, link: &str) -> InheritDoubt {
        InheritDoubt {
            dst: dst.parse().unwrap(),
            interface: ifname.into(),
            link: link.parse().unwrap(),
        }
    }

    /// Inherited routes nothing explained become `Doubt { reason: Inherited, holder: None }`
    /// for the confirmer, keyed as the cache keys them; what its queue cannot take waits, in
    /// order, and goes when there is room.
    #[tokio::test]
    async fn owed_doubts_are_raised_at_the_confirmers_pace() {
        let (sink, mut rx) = DoubtSink::new(1);
        let at = Timestamp::from_secs(1_000);
        let mut q: VecDeque<InheritDoubt> = [
            owed("2001:db8:100::/56", "sub0", "2001:db8:1::1"),
            owed("2001:db8:2::9/128", "sub1", "2001:db8:2::1"),
        ]
        .into_iter()
        .collect();
        offer_doubts(&mut q, &sink, at);
        assert_eq!(q.len(), 1, "the queue had room for one");
        let d = rx.recv().await.unwrap();
        assert_eq!(
            d,
            Doubt {
                key: LeaseKey::Prefix("2001:db8:100::/56".parse().unwrap()),
                reason: DoubtReason::Inherited,
                holder: None,
                claimant: None,
                link: "2001:db8:1::1".parse().unwrap(),
                interface: Some(Arc::from("sub0")),
                at,
            }
        );
        offer_doubts(&mut q, &sink, at);
        assert!(q.is_empty());
        let d = rx.recv().await.unwrap();
        assert_eq!(d.key, LeaseKey::Address("2001:db8:2::9".parse().unwrap()));
        assert_eq!(d.interface.as_deref(), Some("sub1"));
        // Nothing was dropped on the way.
        let lost: u64 = crate::cache::DoubtOutcome::ALL
            .iter()
            .map(|o| sink.stats().get(DoubtReason::Inherited, *o))
            .sum();
        assert_eq!(lost, 0);
    }
}
