//! The task that carries the cache's change stream to the route installer, through the pure
//! [`RouteMapper`] (in `kernel`, beside the plan it feeds), and the RFC 8987 R-5 unreachable
//! aggregates.

use tokio::sync::mpsc;

use crate::cache::Change;
use crate::kernel::reconcile::RouteCommand;
use crate::kernel::{RouteChange, RouteMapper, unreachable};
use crate::prefix::Ipv6Prefix;
use crate::trigger::TriggerHandle;

/// Carry the change stream into the route task: gather what is queued, map it, send one
/// `Apply` per gathering; the trigger's known-source sets follow the same changes (non-blocking:
/// it batches its own `nft` work). Ends when the cache task closes the stream or the route task
/// is gone.
pub async fn feed(
    mapper: RouteMapper,
    mut changes: mpsc::Receiver<Change>,
    routes: mpsc::Sender<RouteCommand>,
    trigger: Option<TriggerHandle>,
) {
    feed_on(mapper, &mut changes, routes, trigger).await;
}

/// [`feed`] on a borrowed change stream, so that a supervisor can run it again on the same
/// stream after a failure.
pub(crate) async fn feed_on(
    mapper: RouteMapper,
    changes: &mut mpsc::Receiver<Change>,
    routes: mpsc::Sender<RouteCommand>,
    trigger: Option<TriggerHandle>,
) {
    const GATHER: usize = 4096;
    let mut batch = Vec::with_capacity(GATHER);
    while changes.recv_many(&mut batch, GATHER).await > 0 {
        if let Some(t) = &trigger {
            t.on_changes(&batch);
        }
        let out: Vec<RouteChange> = batch
            .drain(..)
            .filter_map(|c| mapper.route_change(&c))
            .collect();
        if !out.is_empty() && routes.send(RouteCommand::Apply(out)).await.is_err() {
            return;
        }
    }
}

/// The log target these lines had before they moved here (log filters and searches name it).
const UNREACHABLE_LOG_TARGET: &str = "lqagent::daemon::setup";

/// Bring the RFC 8987 R-5 unreachable aggregates in line with the configuration (`want` from
/// [`super::settings::unreachable_aggregates`]; `None` under dry-run touches nothing). Failing
/// to is logged, not fatal: the per-lease routes do not depend on them.
pub async fn sync_unreachable(want: Option<(unreachable::Placement, Vec<Ipv6Prefix>)>) {
    let Some((at, want)) = want else {
        return;
    };
    match unreachable::sync(at, &want).await {
        Ok(r) => {
            tracing::info!(
                target: UNREACHABLE_LOG_TARGET,
                aggregates = want.len(),
                added = r.added.len(),
                removed = r.removed.len(),
                "unreachable routes for the delegated aggregates in place (RFC 8987 R-5)"
            );
            for (p, why) in &r.failed {
                tracing::error!(target: UNREACHABLE_LOG_TARGET, prefix = %p, error = %why, "unreachable aggregate route refused");
            }
        }
        Err(e) => {
            tracing::error!(target: UNREACHABLE_LOG_TARGET, error = %e, "unreachable aggregate routes not synced")
        }
    }
}
