//! Reconcile — make the kernel's routes of our protocol exactly the desired set — and the task
//! that keeps doing it: applying changes, following link notifications, retrying, and
//! reconciling at start and every [`super::InstallerConfig::reconcile_interval`].
//!
//! [`Installer::reconcile`] dumps only routes with our protocol number in our table (kernel-side
//! filtering via NETLINK_GET_STRICT_CHK, re-checked locally), diffs them against the desired set
//! with [`super::plan::plan_reconcile`], adds the missing and deletes the stale. A route of
//! another protocol is never in the dump, so it is never touched, even on the same prefix.
//!
//! Never remove what cannot yet be replaced: right after a start the cache may not know what the
//! previous run installed (the state file was empty, damaged or all expired; bulk recovery has
//! not finished). Until [`Installer::end_inheritance`] — recovery complete, or
//! [`super::InstallerConfig::inherit_grace`] over — a route of ours that nothing desires is kept
//! and counted as *inherited*: a binding without a client, anchored to the interface and next
//! hop the kernel shows. One the cache comes to explain becomes ordinary; one a source
//! withdraws, or a release from its own link, goes. When inheritance ends, a confirming
//! leasequery is asked for each still unexplained (through the doubt sink, at the confirmer's
//! pace), and each lives on until its kernel expiry; only one without an expiry is deleted then.
//! These rules are decided by the installer's bookkeeping (the pure `book` module, tested as
//! tables); this module only schedules the events that feed it.

use crate::time::Instant;

use tokio::sync::mpsc;
use tracing::{info, warn};

pub use super::book::RouteState;
use super::install::Installer;
use super::stats::RouteCounter;
use super::watch::{LinkEvent, LinkWatch};
use super::{KernelError, RouteChange, RouteSpec};

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
    SetReconcileInterval(crate::time::Duration),
    /// Recovery is complete: stop inheriting (see [`Installer::end_inheritance`]).
    EndInheritance,
}

/// One command other than a gathered `Apply`.
async fn command(
    installer: &mut Installer,
    cmd: RouteCommand,
    period: &mut crate::time::Duration,
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

fn reconcile_timer(period: crate::time::Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(crate::time::TokioInstant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Run the installer until `commands` closes: reconcile at start with the current desired set
/// (unless the installer has just done so),
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
pub(crate) async fn run_on(
    mut installer: Installer,
    commands: &mut mpsc::Receiver<RouteCommand>,
) -> Result<(), KernelError> {
    let mut watch = LinkWatch::open(installer.config().recv_buffer)?;
    // The watch is open: a re-dump now misses nothing. An installer that has just reconciled
    // (`set_desired` at start-up and after a restart) is not dumped again: the links' changes
    // since are applied by `refresh_links`, and routes changed by others in between are the
    // periodic reconcile's, as at any other time.
    installer.refresh_links().await?;
    if !installer.just_reconciled() {
        installer.reconcile().await?;
    }
    let mut period = installer.config().reconcile_interval;
    let mut tick = reconcile_timer(period);
    let mut beat = crate::notify::heartbeat_timer();
    let stats = installer.stats();
    loop {
        stats.heartbeat.beat();
        installer.flush_doubts();
        let inherit_end = installer
            .inherit_until()
            .map(crate::time::TokioInstant::from_std);
        let inherited_expiry = installer
            .next_inherited_expiry()
            .map(crate::time::TokioInstant::from_std);
        // No retry due: no timer at all (a fallback deadline a period away was a timer
        // registered and dropped again every turn, a turn per batch of routes; the periodic
        // reconcile is `tick`'s).
        let retry_at = installer
            .next_retry()
            .map(crate::time::TokioInstant::from_std);
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
            _ = sleep_until_opt(inherited_expiry) => installer.inherited_due(Instant::now()).await,
            _ = sleep_until_opt(retry_at) => installer.retry_due(Instant::now()).await,
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
async fn sleep_until_opt(at: Option<crate::time::TokioInstant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
