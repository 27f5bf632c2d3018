//! What the running agent does on signals: SIGHUP re-reads the configuration and applies what
//! can change live ([`super::reload`]); SIGTERM/SIGINT stop intake, remove the trigger's table,
//! write and sync a state snapshot and leave the routes in the kernel, within
//! [`SHUTDOWN_DEADLINE`](super::SHUTDOWN_DEADLINE).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{error, info, warn};

use super::{OnDemand, SHUTDOWN_DEADLINE, reload};
use crate::cache::BindingStore;
use crate::config::Config;
use crate::kernel::reconcile::RouteCommand;
use crate::logging::LogReload;
use crate::notify::{self, Notify};
use crate::persist::StateWriter;
use crate::requestor::udp::RequestorHandle;
use crate::trigger::Trigger;

/// What runs, for shutdown and reload.
pub(super) struct Running {
    pub(super) cfg: Config,
    pub(super) path: PathBuf,
    pub(super) log: LogReload,
    pub(super) requestor: RequestorHandle,
    pub(super) routes: mpsc::Sender<RouteCommand>,
    /// Intake: snoop, recovery, link-up, on-demand, control and metrics servers.
    pub(super) intake: JoinSet<()>,
    pub(super) stop: watch::Sender<bool>,
    pub(super) cache_task: JoinHandle<()>,
    pub(super) route_task: JoinHandle<()>,
    pub(super) store: Arc<BindingStore>,
    pub(super) writer: StateWriter,
    pub(super) on_demand: OnDemand,
    /// The unknown-source trigger (its table is removed at shutdown).
    pub(super) trigger: Option<Trigger>,
}

impl Running {
    /// SIGHUP: re-read the file; apply what can change live, name what needs a restart.
    pub(super) async fn reload(&mut self) {
        let _ = notify::notify(Notify::Reloading);
        info!(config = %self.path.display(), "SIGHUP: reloading configuration");
        let new = match Config::load(&self.path) {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "reload: configuration refused; keeping the running one");
                let _ = notify::notify(Notify::Ready);
                return;
            }
        };
        let plan = reload::plan(&self.cfg, &new);
        for change in &plan.live {
            match change {
                reload::Live::LogLevel(level) => match self.log.set_level(level) {
                    Ok(true) => info!(key = "log.level", %level, "applied"),
                    Ok(false) => info!(key = "log.level", "RUST_LOG is set and wins; unchanged"),
                    Err(e) => warn!(key = "log.level", error = %e, "not applied"),
                },
                reload::Live::Rates(g, l) => match self.requestor.set_rates(*g, *l).await {
                    Ok(()) => info!(
                        key = "limits.global_qps/per_link_qps",
                        global = ?g.map(|r| r.per_sec),
                        link = ?l.map(|r| r.per_sec),
                        "applied"
                    ),
                    Err(e) => warn!(error = %e, "rate limits not applied"),
                },
                reload::Live::ReconcileInterval(d) => {
                    let _ = self
                        .routes
                        .send(RouteCommand::SetReconcileInterval(*d))
                        .await;
                    info!(key = "routes.reconcile_interval_secs", interval = ?d, "applied");
                }
            }
        }
        for key in &plan.restart {
            warn!(key, "changed in the file; takes effect after a restart");
        }
        // Keep what runs as the base of the next comparison: applied keys are new, the rest old.
        let mut kept = self.cfg.clone();
        kept.log.level = new.log.level.clone();
        kept.limits.global_qps = new.limits.global_qps;
        kept.limits.per_link_qps = new.limits.per_link_qps;
        kept.routes.reconcile_interval = new.routes.reconcile_interval;
        self.cfg = kept;
        let _ = notify::notify(Notify::Ready);
    }

    /// Stop intake, write the state, leave the routes, all within [`SHUTDOWN_DEADLINE`].
    pub(super) async fn shutdown(self) {
        info!("shutting down: routes stay in place, writing state");
        let _ = notify::notify(Notify::Stopping);
        let Running {
            mut intake,
            stop,
            cache_task,
            route_task,
            store,
            writer,
            on_demand,
            requestor,
            routes,
            trigger,
            ..
        } = self;
        let work = async move {
            let _ = stop.send(true);
            drop(on_demand);
            intake.abort_all();
            while intake.join_next().await.is_some() {}
            // Our nftables table goes (routes stay); the next start installs it afresh.
            if let Some(t) = trigger
                && let Err(e) = t.shutdown().await
            {
                warn!(error = %e, "removing the trigger table");
            }
            // Nothing feeds the cache any more: freeze it, then write what it holds.
            cache_task.abort();
            let _ = cache_task.await;
            drop(routes);
            route_task.abort();
            let _ = route_task.await;
            drop(requestor);
            // The copy and the final write + fsync on a blocking thread, not a runtime worker.
            let n = tokio::task::spawn_blocking(move || super::write_final_state(&store, writer))
                .await
                .unwrap_or(0);
            info!(leases = n, "state written; exiting");
        };
        if tokio::time::timeout(SHUTDOWN_DEADLINE, work).await.is_err() {
            error!(deadline = ?SHUTDOWN_DEADLINE, "shutdown deadline passed; exiting anyway");
        }
    }
}
