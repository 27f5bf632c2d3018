//! The start-up steps of `lqagent run`, one function each, in the order [`super::serve`] calls
//! them (the order the daemon's module doc draws). Each step takes what it needs from the steps
//! before it and returns what later ones need, so the order is visible in `serve` and a step
//! cannot use what is not yet there. Every long-running task is spawned into [`Tasks`] under
//! the supervisor.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{error, info, warn};

use super::{
    DaemonError, Heartbeats, OnDemand, ROUTE_COMMANDS, RouteRestart, UnknownSource, confirm,
    control, export, ondemand, routes, settings, supervise_routes,
};
use crate::admission::{Admission, OwnAddresses};
use crate::bulk::recovery::{CacheSink, recover};
use crate::bulk::stats::BulkStats;
use crate::cache::binding::Doubt;
use crate::cache::{AgentClock, BindingStore, RouteView};
use crate::cache_task::{self as cache_task, CacheHandle, CacheTaskConfig, DoubtSink};
use crate::config::Config;
use crate::control::ControlStats;
use crate::control::access::Access;
use crate::control::server::ControlSocket;
use crate::kernel::reconcile::{self, RouteCommand};
use crate::kernel::{Installer, InstallerStats};
use crate::metrics::Metrics;
use crate::persist::{self, PersistConfig, StateWriter};
use crate::requestor::udp::{self, RequestorHandle};
use crate::snoop::shell::SnoopStats;
use crate::supervise::{self, Inbox, Lifetime, Supervisor, Task};
use crate::time::Duration;
use crate::trigger::{Trigger, TriggerHandle};
use crate::wire::Duid;

/// Log lines keep the target they had when these steps were written inline in `serve` (log
/// filters and searches name it).
const LOG_TARGET: &str = "lqagent::daemon";

/// The supervisor, the set of intake tasks and the stop signal every step's tasks share.
pub(super) struct Tasks {
    pub(super) sup: Supervisor,
    pub(super) intake: JoinSet<()>,
    pub(super) stop: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
}

impl Tasks {
    pub(super) fn new() -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let sup = Supervisor::new(stop.subscribe(), supervise::Policy::default());
        Tasks {
            sup,
            intake: JoinSet::new(),
            stop,
            stop_rx,
        }
    }

    /// A future that ends once shutdown is asked.
    fn stopped(
        &self,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Clone + Send + use<>
    {
        let rx = self.stop_rx.clone();
        move || {
            let mut rx = rx.clone();
            Box::pin(async move {
                let _ = rx.wait_for(|s| *s).await;
            })
        }
    }
}

/// Step 1: /metrics (served from now on) and the control socket (bound; served last).
pub(super) struct Listeners {
    pub(super) metrics: Metrics,
    control_socket: ControlSocket,
    access: Access,
}

pub(super) async fn listeners(cfg: &Config, tasks: &mut Tasks) -> Result<Listeners, DaemonError> {
    // /metrics and the control socket (each run after a failure binds again).
    let metrics = Metrics::new();
    let listener = crate::metrics::http::bind(cfg.metrics.listen).await?;
    {
        let (mut first, m, addr, stopped) = (
            Some(listener),
            metrics.clone(),
            cfg.metrics.listen,
            tasks.stopped(),
        );
        tasks.intake.spawn(
            tasks
                .sup
                .restart(Task::MetricsHttp, Lifetime::Forever, move |_| {
                    let (l, m, stopped) = (first.take(), m.clone(), stopped.clone());
                    async move {
                        let l = match l {
                            Some(l) => l,
                            None => crate::metrics::http::bind(addr).await?,
                        };
                        crate::metrics::http::serve(l, m, stopped()).await;
                        Ok::<(), crate::metrics::http::HttpError>(())
                    }
                }),
        );
    }
    if let Some(dir) = cfg.control.socket.parent() {
        // systemd's RuntimeDirectory= makes it; elsewhere (lab, tests) we do.
        let _ = std::fs::create_dir_all(dir);
    }
    let access = Access::for_this_process(cfg.show_gid()?).map_err(DaemonError::Runtime)?;
    let control_socket = ControlSocket::bind_with(&cfg.control.socket, access.clone())?;
    Ok(Listeners {
        metrics,
        control_socket,
        access,
    })
}

/// Step 2: the route installer, which learns the interfaces and the box's own addresses first
/// (the snooper and admission need them); admission; the spoof guard.
pub(super) struct Kernel {
    pub(super) clock: AgentClock,
    pub(super) installer: Installer,
    pub(super) own: Arc<OwnAddresses>,
    pub(super) admission: Arc<Admission>,
}

pub(super) async fn kernel(cfg: &Config) -> Result<Kernel, DaemonError> {
    let clock = AgentClock::new();
    let mut installer = Installer::new(settings::installer_config(cfg)).await?;
    let own = Arc::new(OwnAddresses::default());
    installer.publish_addresses(own.clone());
    let admission = Arc::new(settings::admission(cfg, own.clone()));

    // The spoof guard, before anything is snooped: no subscriber may pass for this box.
    if cfg.snoop.spoof_guard {
        let ifaces: Vec<String> = cfg.links.iter().map(|l| l.interface.clone()).collect();
        if let Some(script) = crate::snoop::guard::install(&ifaces) {
            let nft = cfg.trigger.nft_path.to_string_lossy();
            crate::trigger::nft::run(&nft, &script, Duration::from_secs(10))
                .await
                .map_err(DaemonError::Guard)?;
            info!(target: LOG_TARGET, interfaces = ?ifaces, "spoof guard installed (nft table ip6 lqagent_guard)");
        }
    }
    Ok(Kernel {
        clock,
        installer,
        own,
        admission,
    })
}

/// Step 3: the state file: leases as they were, expired ones dropped, and each one admitted
/// again (the configuration may have changed since it was written); the writer started.
pub(super) fn state(
    cfg: &Config,
    clock: AgentClock,
    admission: &Admission,
) -> Result<(persist::Loaded, StateWriter), DaemonError> {
    // One agent per state directory. A lock that cannot even be made (a read-only or full
    // disk) does not stop routing: persistence degrades instead, as for any write failure.
    let lock = match persist::DirLock::acquire(&cfg.state_dir) {
        Ok(l) => Some(l),
        Err(e @ persist::PersistError::Locked { .. }) => return Err(e.into()),
        Err(e) => {
            warn!(target: LOG_TARGET, error = %e, "cannot lock the state directory; running without its lock");
            None
        }
    };
    // A file that cannot be read is fatal, never "empty": the fresh snapshot written below
    // would destroy it.
    let mut loaded = persist::load(&cfg.state_dir, clock.now())?;
    // Leases refused at an earlier start get another chance (the configuration may be fixed);
    // the state file's own entry wins where both hold a key.
    let aside = persist::load_refused(
        &cfg.state_dir,
        clock.now(),
        &persist::FsRead,
        persist::ReadRetry::default(),
    )?;
    let aside_none = aside.is_empty();
    if !aside.is_empty() {
        let held: std::collections::HashSet<_> = loaded.leases.iter().map(|(k, _)| *k).collect();
        loaded
            .leases
            .extend(aside.into_iter().filter(|(k, _)| !held.contains(k)));
        loaded.leases.sort_by_key(|(k, _)| *k);
    }
    let behind_ms = loaded.check_clock(clock.now(), 2_000);
    if behind_ms > 0 {
        error!(
            target: LOG_TARGET,
            behind_secs = behind_ms / 1000,
            "the wall clock is earlier than the state file's last write: clock reset or not yet \
             synced? Lease lifetimes are kept relative to the write time"
        );
    }
    let mut refused = Vec::new();
    loaded.leases = std::mem::take(&mut loaded.leases)
        .into_iter()
        .filter_map(|(k, mut l)| match admission.admit_restored(&k, &mut l) {
            Ok(()) => Some((k, l)),
            Err(_) => {
                refused.push((k, l));
                None
            }
        })
        .collect();
    // Kept aside, not erased: a typo in `subscriber_prefixes` must not cost the leases for good.
    match persist::write_refused(&cfg.state_dir, &refused) {
        Ok(()) if !refused.is_empty() => {
            warn!(target: LOG_TARGET, refused = refused.len(), file = %cfg.state_dir.join(persist::REFUSED_FILE).display(), "leases of the state file refused by admission were kept aside; they are offered again at the next start")
        }
        Ok(()) => {}
        Err(e) => {
            error!(target: LOG_TARGET, error = %e, refused = refused.len(), "cannot keep the refused leases aside")
        }
    }
    info!(
        target: LOG_TARGET,
        leases = loaded.leases.len(),
        expired = loaded.expired,
        refused = refused.len(),
        damaged = loaded.damaged.len(),
        lost_records = loaded.lost_records,
        "state file loaded"
    );
    // The files already hold what was loaded (nothing refused, set aside, shifted, expired or
    // damaged): the writer goes on appending to them. Otherwise (or when the journal cannot be
    // resumed) the loaded leases are written as a fresh snapshot first.
    let unchanged = loaded.is_on_disk() && aside_none && refused.is_empty() && behind_ms == 0;
    let resumed = if unchanged {
        StateWriter::resume(
            PersistConfig::new(&cfg.state_dir),
            loaded.generation,
            loaded.leases.len() as u64,
            loaded.journal_records,
        )
        .inspect_err(|e| {
            warn!(target: LOG_TARGET, error = %e, "cannot append to the state journal; writing a fresh snapshot")
        })
        .ok()
    } else {
        None
    };
    let mut writer = match resumed {
        Some(w) => w,
        None => StateWriter::start(
            PersistConfig::new(&cfg.state_dir),
            loaded.leases.clone(),
            loaded.generation,
        )?,
    };
    if let Some(lock) = lock {
        writer.keep_lock(lock);
    }
    Ok((loaded, writer))
}

/// Step 4: the kernel reconciled against the loaded cache, the unreachable aggregates, and the
/// route task started on its command channel.
pub(super) struct Routes {
    pub(super) commands: mpsc::Sender<RouteCommand>,
    pub(super) task: JoinHandle<()>,
    pub(super) store: Arc<BindingStore>,
    mapper: crate::kernel::RouteMapper,
    pub(super) stats: Arc<InstallerStats>,
}

///
/// The cache's store is seeded with the loaded leases here too, on a blocking thread while the
/// installer reconciles: the two are independent (the seeded leases go on no change stream, see
/// [`cache`]), and done one after the other the seeding held the cache back behind the whole
/// install (a restart's last step, at a million leases). `loaded` is handed back unchanged.
pub(super) async fn reconcile(
    cfg: &Config,
    mut installer: Installer,
    clock: AgentClock,
    mut loaded: persist::Loaded,
    metrics: &Metrics,
    tasks: &Tasks,
    doubts: &DoubtSink,
) -> Result<(Routes, persist::Loaded), DaemonError> {
    // Inherited routes nothing explains when inheritance ends are asked about (the ownership
    // rule): the installer raises their doubts at the confirmer's pace.
    installer.set_doubts(doubts.clone(), clock);
    let mapper = crate::kernel::RouteMapper::new(
        settings::route_links(cfg),
        cfg.routes.mirror_expiry.then_some(clock),
    );
    let stats = installer.stats();
    metrics
        .routes_limit
        .set(i64::try_from(installer.config().max_routes).unwrap_or(i64::MAX));
    // Sized for the loaded leases up front: the seeding below never grows an index.
    let store = Arc::new(BindingStore::with_capacity(
        settings::cache_config(cfg),
        loaded.leases.len(),
        loaded.clients,
    ));
    let leases = Arc::new(std::mem::take(&mut loaded.leases));
    let seeding = {
        let (store, leases) = (store.clone(), leases.clone());
        tokio::task::spawn_blocking(move || {
            // Not announced: the installer (here) and the trigger hold them already.
            store.restore_all(leases.iter().map(|(k, l)| (*k, l.clone())), clock.now());
        })
    };
    let specs = leases
        .iter()
        .filter_map(|(k, l)| mapper.spec(k, &RouteView::of(k, l)));
    let report = installer.set_desired(specs).await;
    if let Err(e) = seeding.await {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    loaded.leases = Arc::try_unwrap(leases).unwrap_or_else(|shared| (*shared).clone());
    let report = report?;
    info!(target: LOG_TARGET, ?report, "kernel reconciled against the loaded cache");
    routes::sync_unreachable(settings::unreachable_aggregates(cfg)).await;
    let (commands, route_rx) = mpsc::channel(ROUTE_COMMANDS);
    let task = tokio::spawn(supervise_routes(
        &tasks.sup,
        installer,
        route_rx,
        RouteRestart {
            cfg: settings::installer_config(cfg),
            stats: stats.clone(),
            store: store.clone(),
            mapper: mapper.clone(),
        },
    ));
    Ok((
        Routes {
            commands,
            task,
            store,
            mapper,
            stats,
        },
        loaded,
    ))
}

/// Step 5: the trigger's table, its known-source sets filled from the state file before any
/// packet is judged (in enforcement mode a known subscriber is never dropped for an empty set).
pub(super) async fn trigger(
    cfg: &Config,
    loaded: &persist::Loaded,
    tasks: &Tasks,
) -> Result<
    (
        Option<Trigger>,
        Option<mpsc::Receiver<crate::trigger::TriggerEvent>>,
    ),
    DaemonError,
> {
    let trigger_links = settings::trigger_links(cfg);
    if trigger_links.is_empty() {
        return Ok((None, None));
    }
    let initial = loaded.leases.iter().map(|(k, l)| (*k, RouteView::of(k, l)));
    let (t, rx) = Trigger::start_supervised(
        settings::trigger_config(cfg),
        trigger_links.clone(),
        initial,
        &tasks.sup,
    )
    .await?;
    info!(
        target: LOG_TARGET,
        links = trigger_links.len(),
        group = cfg.trigger.nflog_group,
        enforcement = cfg.trigger.enforcement,
        "unknown-source trigger installed (nft table ip6 lqagent)"
    );
    Ok((Some(t), Some(rx)))
}

/// Where the cache's news goes beside the route task: the trigger's known sets (the change
/// stream's batches) and the confirmer (the doubts the store raises).
pub(super) struct CacheOutlets {
    pub(super) trigger: Option<TriggerHandle>,
    pub(super) doubts: DoubtSink,
}

/// Step 6: the cache, its change stream feeding the route task. A restarted cache task works on
/// the same store and channels; the store already holds the loaded leases ([`reconcile`] seeded
/// it, step 4).
pub(super) fn cache(
    clock: AgentClock,
    writer: &StateWriter,
    admission: &Arc<Admission>,
    routes: &Routes,
    outlets: CacheOutlets,
    tasks: &mut Tasks,
) -> (CacheHandle, JoinHandle<()>) {
    let CacheOutlets { trigger, doubts } = outlets;
    // The store holds the loaded leases already, seeded without a change stream: the installer
    // (`reconcile`, step 4) and the trigger (step 5) hold them too. Doubts the store raises go
    // to the confirmer (started with the requestor, step 7).
    let (cache, changes, cache_task) = cache_task::spawn(
        routes.store.clone(),
        clock,
        Some(writer.handle()),
        CacheTaskConfig::default(),
        admission.clone(),
        doubts,
        &tasks.sup,
    );
    let changes = Inbox::new(changes);
    let (mapper, rt, th) = (routes.mapper.clone(), routes.commands.clone(), trigger);
    tasks.intake.spawn(
        tasks
            .sup
            .restart(Task::RouteFeed, Lifetime::Forever, move |_| {
                let (m, c, rt, th) = (mapper.clone(), changes.clone(), rt.clone(), th.clone());
                async move {
                    routes::feed_on(m, &mut *c.lend().await, rt, th).await;
                    Ok::<(), std::convert::Infallible>(())
                }
            }),
    );
    (cache, cache_task)
}

/// Step 7: leasequery: the requestor, the on-demand path (fed by the trigger's events) and the
/// confirmer (fed by the doubts), both asking through the one requestor.
pub(super) struct Leasequery {
    pub(super) duid: Duid,
    pub(super) requestor: RequestorHandle,
    pub(super) on_demand: OnDemand,
    /// The requestor's counters, shared with its task (read at scrape time).
    pub(super) requestor_stats: Arc<crate::requestor::RequestorStats>,
}

pub(super) async fn leasequery(
    cfg: &Config,
    cache: &CacheHandle,
    clock: AgentClock,
    metrics: &Metrics,
    trigger_events: Option<mpsc::Receiver<crate::trigger::TriggerEvent>>,
    doubts: (&DoubtSink, mpsc::Receiver<Doubt>),
    tasks: &mut Tasks,
) -> Result<Leasequery, DaemonError> {
    let duid = match &cfg.identity.client_duid {
        Some(d) => d.clone(),
        None => udp::system_duid(cfg.snoop.interfaces.first().map(String::as_str))
            .or_else(|_| udp::system_duid(None))
            .map_err(DaemonError::Duid)?,
    };
    let udp_cfg = settings::udp_config(cfg);
    // The socket and the command channel outlive each run, so the bulk, on-demand and control
    // paths keep their handles; a restart costs the queries in flight (they end as "stopped").
    let (requestor, requestor_task) = udp::spawn(
        settings::requestor_config(cfg, duid.clone()),
        udp_cfg.clone(),
        &tasks.sup,
    )
    .await
    .map_err(|source| DaemonError::Requestor {
        addr: udp_cfg.bind,
        source,
    })?;
    tasks.intake.spawn(supervise::tied(requestor_task));
    metrics
        .servers
        .configure(cfg.servers.iter().map(|s| (s.name.clone(), s.address)));
    let lookup = ondemand::Lookup {
        requestor: requestor.clone(),
        cache: cache.clone(),
        clock,
        server_names: Arc::new(settings::server_names(cfg)),
        metrics: Some(metrics.clone()),
        relay_data: true,
    };
    // The confirmer asks through the same lookup (requestor, limits, negative cache, metrics);
    // its doubt queue is lent to each run, so the sink never sees it closed.
    let confirm_runner = confirm::ConfirmRunner::new(
        confirm::Confirmer::new(lookup.clone(), doubts.0, confirm::ConfirmConfig::default()),
        doubts.1,
    );
    tasks.intake.spawn(
        tasks
            .sup
            .restart(Task::Confirm, Lifetime::Forever, move |_| {
                let run = confirm_runner.clone().run();
                async move {
                    run.await;
                    Ok::<(), std::convert::Infallible>(())
                }
            }),
    );
    let (on_demand, od_runner) = ondemand::start(lookup, &ondemand::OnDemandConfig::default());
    tasks.intake.spawn(
        tasks
            .sup
            .restart(Task::Ondemand, Lifetime::Forever, move |_| {
                let run = od_runner.clone().run();
                async move {
                    run.await;
                    Ok::<(), std::convert::Infallible>(())
                }
            }),
    );
    if let Some(events) = trigger_events {
        // Unknown sources → the on-demand path; its queue is bounded and counts what it refuses.
        let (od, events) = (on_demand.clone(), Inbox::new(events));
        tasks
            .intake
            .spawn(tasks.sup.restart(Task::Nflog, Lifetime::Forever, move |_| {
                let (od, events) = (od.clone(), events.clone());
                async move {
                    let mut events = events.lend().await;
                    while let Some(ev) = events.recv().await {
                        od.try_submit(UnknownSource {
                            source: ev.source,
                            link_address: ev.link_address,
                            interface: Some(ev.interface),
                            seen: Some(ev.at),
                        });
                    }
                    Ok::<(), std::convert::Infallible>(())
                }
            }));
    }
    let requestor_stats = requestor.stats().clone();
    Ok(Leasequery {
        duid,
        requestor,
        on_demand,
        requestor_stats,
    })
}

/// Step 8: bulk recovery (runs on after READY; lqagent_recovery_in_progress shows it) and
/// link-up queries. A recovery run that dies is started again, only while none has finished.
pub(super) fn recovery(
    cfg: &Config,
    duid: &Duid,
    cache: &CacheHandle,
    clock: AgentClock,
    metrics: &Metrics,
    route_commands: &mpsc::Sender<RouteCommand>,
    tasks: &mut Tasks,
) -> Arc<BulkStats> {
    let bulk_stats = Arc::new(BulkStats::with_max_connections(usize::from(
        cfg.bulk.max_connections,
    )));
    let recovery = settings::recovery(cfg, duid.clone());
    let bulk_cfg = Arc::new(recovery.bulk.clone());
    let sink = CacheSink::new(cache.clone(), clock);
    if recovery.plan.servers.is_empty() {
        return bulk_stats;
    }
    let (m, st, plan, c, s, rt) = (
        metrics.clone(),
        bulk_stats.clone(),
        recovery.plan.clone(),
        bulk_cfg.clone(),
        sink.clone(),
        route_commands.clone(),
    );
    m.recovery_in_progress.set(1);
    tasks
        .intake
        .spawn(tasks.sup.restart(Task::Bulk, Lifetime::UntilDone, move |_| {
            let (m, st, q, c, s, rt) = (
                m.clone(),
                st.clone(),
                plan.startup(),
                c.clone(),
                s.clone(),
                rt.clone(),
            );
            async move {
                let report = recover(q, c, st, s).await;
                m.recovery_in_progress.set(0);
                m.recovery_duration.set(report.elapsed.as_secs_f64());
                // Inherited routes go early only when every server gave its whole answer; a
                // server given up on may hold the bindings that explain them (the grace period
                // ends it).
                if report.complete_servers() == report.servers.len() {
                    info!(target: LOG_TARGET, servers = report.servers.len(), elapsed = ?report.elapsed, "recovery complete");
                    let _ = rt.send(reconcile::RouteCommand::EndInheritance).await;
                } else {
                    warn!(
                        target: LOG_TARGET,
                        complete = report.complete_servers(),
                        servers = report.servers.len(),
                        "recovery incomplete: inherited routes kept until routes.inherit_grace_secs is over"
                    );
                }
                Ok::<(), std::convert::Infallible>(())
            }
        }));
    if !recovery.interfaces.is_empty() {
        let (plan, ifs, st) = (
            recovery.plan.clone(),
            recovery.interfaces.clone(),
            bulk_stats.clone(),
        );
        tasks
            .intake
            .spawn(tasks.sup.restart(Task::Bulk, Lifetime::Forever, move |_| {
                crate::bulk::linkup::watch(
                    plan.clone(),
                    ifs.clone(),
                    bulk_cfg.clone(),
                    st.clone(),
                    sink.clone(),
                )
            }));
    }
    bulk_stats
}

/// Step 9: snooping (relayed REPLYs → cache), when `snoop.interfaces` names any.
pub(super) fn snooping(
    cfg: &Config,
    own: &Arc<OwnAddresses>,
    admission: &Arc<Admission>,
    clock: AgentClock,
    cache: &CacheHandle,
    tasks: &mut Tasks,
) -> Result<Option<SnoopStats>, DaemonError> {
    if cfg.snoop.interfaces.is_empty() {
        return Ok(None);
    }
    let stats = crate::snoop::shell::spawn(
        &settings::capture_config(cfg),
        settings::classify_config(cfg),
        settings::snoop_trust(cfg, own.clone(), admission),
        clock,
        cache.clone(),
        &mut tasks.intake,
        &tasks.sup,
    )
    .map_err(|source| DaemonError::Snoop {
        interfaces: cfg.snoop.interfaces.clone(),
        source,
    })?;
    info!(target: LOG_TARGET, interfaces = ?cfg.snoop.interfaces, "snooping");
    Ok(Some(stats))
}

/// Step 10: the metrics of every module, read at scrape time (all registered by [`export`]).
pub(super) fn register_metrics(metrics: &Metrics, sources: export::Sources) {
    export::register(metrics, sources);
}

/// What the watchdog watches: the cache, route and capture tasks' heartbeats.
pub(super) fn heartbeats(
    cache: &CacheHandle,
    routes: &Routes,
    snoop: Option<&SnoopStats>,
) -> Heartbeats {
    Heartbeats {
        cache: cache.stats().clone(),
        routes: routes.stats.clone(),
        capture: snoop.map(|s| s.capture.clone()),
    }
}

/// Step 11: the control socket's answers, served from the socket step 1 bound.
pub(super) fn control(
    cfg: &Config,
    listeners: Listeners,
    responder: control::LiveResponder,
    stats: Arc<ControlStats>,
    tasks: &mut Tasks,
) {
    let responder = Arc::new(responder);
    let (mut first, path, access, stopped) = (
        Some(listeners.control_socket),
        cfg.control.socket.clone(),
        listeners.access,
        tasks.stopped(),
    );
    tasks.intake.spawn(
        tasks
            .sup
            .restart(Task::Control, Lifetime::Forever, move |_| {
                let (sock, path, access) = (first.take(), path.clone(), access.clone());
                let (responder, stats, stopped) =
                    (responder.clone(), stats.clone(), stopped.clone());
                async move {
                    let sock = match sock {
                        Some(s) => s,
                        None => ControlSocket::bind_with(&path, access)?,
                    };
                    sock.serve(responder, stats, stopped()).await;
                    Ok::<(), crate::control::ControlError>(())
                }
            }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::{Loaded, SNAPSHOT_FILE};

    fn config(dir: &std::path::Path) -> Config {
        Config::parse(&format!(
            "state_dir = \"{}\"\n\n[[servers]]\naddress = \"2001:db8::547\"\n",
            dir.display()
        ))
        .unwrap()
    }

    fn start_and_stop(cfg: &Config) -> Loaded {
        let clock = AgentClock::new();
        let admission = settings::admission(cfg, Arc::new(OwnAddresses::default()));
        let (loaded, writer) = state(cfg, clock, &admission).unwrap();
        assert!(writer.handle().sync());
        writer.shutdown();
        loaded
    }

    /// A start on state files that hold exactly what it loads resumes them (the snapshot's
    /// generation stays, nothing is rewritten); one whose files were damaged writes a fresh
    /// snapshot.
    #[test]
    fn a_start_rewrites_the_snapshot_only_when_the_loaded_state_differs_from_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        assert_eq!(start_and_stop(&cfg).generation, 0, "nothing to load");
        let written = std::fs::read(dir.path().join(SNAPSHOT_FILE)).unwrap();
        assert_eq!(start_and_stop(&cfg).generation, 1);
        assert_eq!(start_and_stop(&cfg).generation, 1, "resumed, not rewritten");
        assert_eq!(
            std::fs::read(dir.path().join(SNAPSHOT_FILE)).unwrap(),
            written
        );
        // A journal with a damaged header is moved aside: what was loaded is no longer what
        // the files hold, and the start writes a fresh snapshot.
        let journal = dir.path().join(crate::persist::JOURNAL_FILE);
        let mut bytes = std::fs::read(&journal).unwrap();
        bytes[16] ^= 0xff; // the header's generation (and with it its checksum) spoiled
        std::fs::write(&journal, bytes).unwrap();
        let _ = start_and_stop(&cfg);
        assert_eq!(
            start_and_stop(&cfg).generation,
            2,
            "a fresh snapshot was written"
        );
    }
}
