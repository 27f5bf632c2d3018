//! Reconcile — make the kernel's routes of our protocol exactly the desired set — and the task
//! that keeps doing it: applying changes, following link notifications, retrying, and
//! reconciling at start and every [`super::InstallerConfig::reconcile_interval`].
//!
//! Reconcile dumps only routes with our protocol number in our table (kernel-side filtering via
//! NETLINK_GET_STRICT_CHK, re-checked locally), diffs them against the desired set with
//! [`super::plan::plan_reconcile`], adds the missing and deletes the stale. A route of another
//! protocol is never in the dump, so it is never touched, even on the same prefix.
//!
//! Never remove what cannot yet be replaced: right after a start the cache may not know what the
//! previous run installed (the state file was empty, damaged or all expired; bulk recovery has
//! not finished). Until [`Installer::end_inheritance`] — recovery complete, or
//! [`super::InstallerConfig::inherit_grace`] over — a route of ours that nothing desires is kept
//! and counted as *inherited*; one the cache comes to explain becomes ordinary, one a source
//! withdraws goes. When inheritance ends, a reconcile deletes what is still unexplained.

use crate::label::labels;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::install::Installer;
use super::plan::{self, OpKind, Stale};
use super::stats::RouteCounter;
use super::watch::{LinkEvent, LinkWatch};
use super::{KernelError, RouteChange, RouteSpec};

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

impl Installer {
    /// Replace the whole desired set (e.g. after loading the cache) and reconcile.
    pub async fn set_desired(
        &mut self,
        specs: impl IntoIterator<Item = RouteSpec>,
    ) -> Result<ReconcileReport, KernelError> {
        self.desired.clear();
        for spec in specs {
            if !self.desired.contains_key(&spec.dst) && self.desired.len() >= self.cfg.max_routes {
                self.stats.add(RouteCounter::Dropped, 1);
                continue;
            }
            self.desired.insert(spec.dst, spec);
        }
        let desired = &self.desired;
        self.parked.retain(|d| desired.contains_key(d));
        self.reconcile().await
    }

    /// Dump our routes, diff against the desired set, add the missing and delete the stale.
    pub async fn reconcile(&mut self) -> Result<ReconcileReport, KernelError> {
        self.stats.add(RouteCounter::Reconcile, 1);
        self.clear_resync();
        let actual = self.dump_ours().await?;
        let mut want = HashMap::new();
        let mut keep = HashSet::new();
        let mut unresolved = Vec::new();
        for (dst, spec) in &self.desired {
            match self.resolve(spec) {
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
        let unparked: Vec<_> = self
            .parked
            .iter()
            .filter(|d| want.contains_key(*d))
            .copied()
            .collect();
        for d in unparked {
            self.parked.remove(&d);
            self.stats.add(RouteCounter::Unparked, 1);
        }
        let stale = if self.inherit_until.is_some() {
            Stale::Inherit
        } else {
            Stale::Delete
        };
        let rec = plan::plan_reconcile(&want, &actual, &keep, stale);
        let before = self.inherited.len();
        self.inherited = rec.inherited.iter().map(|r| r.dst).collect();
        if self.inherited.len() > before {
            info!(
                inherited = self.inherited.len(),
                "routes of ours that nothing explains yet: kept until recovery finishes"
            );
        }
        if stale == Stale::Delete && !self.unconfirmed_logged {
            // The first reconcile after inheritance ended: what it deletes was never confirmed.
            self.unconfirmed_logged = true;
            let n = rec.plan.count(OpKind::Delete);
            self.stats.add(super::RouteCounter::Unconfirmed, n as u64);
        }
        // Belief = what the kernel showed (first route of ours per destination at our metric).
        self.installed.clear();
        for r in &actual {
            if r.metric == self.cfg.metric {
                self.installed.entry(r.dst).or_insert(*r);
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
        if report.added + report.replaced + report.deleted > 0 {
            info!(?report, "reconcile: correcting the kernel");
        }
        self.run_ops(rec.plan.ops).await?;
        Ok(report)
    }
}

impl Installer {
    /// Stop inheriting (recovery finished, or the grace period is over) and reconcile: routes of
    /// ours that nothing explains by now are deleted.
    pub async fn end_inheritance(&mut self, why: &str) -> Result<ReconcileReport, KernelError> {
        if self.inherit_until.take().is_none() {
            return self.reconcile().await;
        }
        self.unconfirmed_logged = false;
        let kept = self.inherited.len();
        let report = self.reconcile().await?;
        info!(
            why,
            inherited = kept,
            deleted_unconfirmed = report.deleted,
            "inheritance over: routes no source confirmed are removed"
        );
        Ok(report)
    }
}

/// What the daemon sends the route task.
#[derive(Debug)]
pub enum RouteCommand {
    /// Changes from the cache.
    Apply(Vec<RouteChange>),
    /// The whole desired set (after a cache load); reconciles.
    Desired(Vec<RouteSpec>),
    /// Where each destination stands (for `lqagent show bindings`).
    States(
        Vec<crate::prefix::Ipv6Prefix>,
        tokio::sync::oneshot::Sender<Vec<RouteState>>,
    ),
    /// A new period for the full reconcile (configuration reload).
    SetReconcileInterval(std::time::Duration),
    /// Recovery is complete: stop inheriting (see [`Installer::end_inheritance`]).
    EndInheritance,
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
        /// Not desired, but kept from before the start until recovery finishes.
        Inherited => "inherited",
        /// Not desired: no route.
        None => "none",
    }
}

impl Installer {
    /// Where `dst` stands: installed, parked, pending or not desired.
    pub fn route_state(&self, dst: &crate::prefix::Ipv6Prefix) -> RouteState {
        if !self.desired.contains_key(dst) {
            if self.inherited.contains(dst) {
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
}

/// One command other than a gathered `Apply`.
async fn command(
    installer: &mut Installer,
    cmd: RouteCommand,
    period: &mut std::time::Duration,
    tick: &mut tokio::time::Interval,
) -> Result<(), KernelError> {
    match cmd {
        RouteCommand::Apply(changes) => installer.apply(changes).await,
        RouteCommand::Desired(specs) => installer.set_desired(specs).await.map(|_| ()),
        RouteCommand::States(dsts, reply) => {
            let _ = reply.send(dsts.iter().map(|d| installer.route_state(d)).collect());
            Ok(())
        }
        RouteCommand::SetReconcileInterval(p) => {
            if p != *period && !p.is_zero() {
                info!(from = ?*period, to = ?p, "reconcile interval changed");
                *period = p;
                *tick = reconcile_timer(p);
            }
            Ok(())
        }
        RouteCommand::EndInheritance => installer
            .end_inheritance("recovery finished")
            .await
            .map(|_| ()),
    }
}

fn reconcile_timer(period: std::time::Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Run the installer until `commands` closes: reconcile at start with the current desired set,
/// then apply changes as they come, follow link notifications, retry failed ops at their time,
/// and reconcile periodically and after any netlink overrun.
pub async fn run(
    installer: Installer,
    mut commands: mpsc::Receiver<RouteCommand>,
) -> Result<(), KernelError> {
    run_on(installer, &mut commands).await
}

/// [`run`] on a borrowed command channel, so that a supervisor can start a new installer on
/// the same channel after this one failed (commands sent meanwhile wait in the channel).
pub async fn run_on(
    mut installer: Installer,
    commands: &mut mpsc::Receiver<RouteCommand>,
) -> Result<(), KernelError> {
    let mut watch = LinkWatch::open(installer.config().recv_buffer)?;
    // The watch is open: a re-dump now misses nothing.
    installer.refresh_links().await?;
    installer.reconcile().await?;
    let mut period = installer.config().reconcile_interval;
    let mut tick = reconcile_timer(period);
    let mut beat = crate::notify::heartbeat_timer();
    let stats = installer.stats();
    loop {
        stats.heartbeat.beat();
        let inherit_end = installer
            .inherit_until()
            .map(tokio::time::Instant::from_std);
        let retry_at = installer
            .next_retry()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + period);
        let result = tokio::select! {
            cmd = commands.recv() => match cmd {
                None => return Ok(()),
                Some(RouteCommand::Apply(mut changes)) => {
                    // Gather what is already queued so it shares batches; another command met
                    // on the way is handled right after.
                    let mut held = None;
                    while let Ok(more) = commands.try_recv() {
                        match more {
                            RouteCommand::Apply(more) => changes.extend(more),
                            other => {
                                held = Some(other);
                                break;
                            }
                        }
                    }
                    let r = installer.apply(changes).await;
                    match held {
                        Some(cmd) => r.and(command(&mut installer, cmd, &mut period, &mut tick).await),
                        None => r,
                    }
                }
                Some(cmd) => command(&mut installer, cmd, &mut period, &mut tick).await,
            },
            ev = watch.next() => match ev {
                Some(LinkEvent::Changed(m)) => installer.link_event(&m).await,
                Some(LinkEvent::Overrun) => {
                    installer.stats().add(RouteCounter::Overrun, 1);
                    warn!("link notifications overran: re-dumping links and addresses");
                    installer.refresh_links().await
                }
                None => {
                    warn!("link notification socket closed: reopening");
                    watch = LinkWatch::open(installer.config().recv_buffer)?;
                    installer.refresh_links().await
                }
            },
            _ = tick.tick() => installer.reconcile().await.map(|_| ()),
            _ = beat.tick() => Ok(()),
            _ = sleep_until_opt(inherit_end) => installer
                .end_inheritance("grace period over")
                .await
                .map(|_| ()),
            _ = tokio::time::sleep_until(retry_at) => installer.retry_due(Instant::now()).await,
        };
        if let Err(e) = result {
            warn!(error = %e, "route programming step failed; the next reconcile repairs it");
        }
        if installer.resync_needed() {
            if let Err(e) = installer.reconcile().await {
                warn!(error = %e, "reconcile after overrun failed");
            }
        }
    }
}

/// Sleep until `at`, or forever without one.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
