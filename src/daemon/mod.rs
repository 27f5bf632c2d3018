//! `lqagent run`: connects the parts, in a fixed start-up order, with bounded channels only.
//!
//! ```text
//!  config → logging → /metrics + control socket → state file (expired leases dropped)
//!  → cache task ─changes─► routes::feed ─RouteCommand─► kernel::reconcile::run (installer,
//!    reconciled against the loaded cache before anything new arrives)
//!  → bulk recovery, every server in parallel (bindings → cache → routes as they arrive)
//!  → snooping (relayed REPLYs → cache) · on-demand leasequery (unknown sources → cache)
//!  → READY=1 (state loaded, kernel reconciled, listeners up); recovery runs on after it,
//!    shown by lqagent_recovery_in_progress
//!  · routes of ours no binding explains stay ("inherited") until every server answered DONE
//!    or routes.inherit_grace_secs is over; then unexplained ones are deleted
//!  → WATCHDOG=1 every WatchdogSec/2, only while the cache, route and capture tasks' heartbeats
//!    move (a stuck task gets the process restarted) · reconcile every routes.reconcile_interval_secs
//!  · link-up of a subscriber interface → bulk query for that link
//! ```
//!
//! Every long-running task runs under the [`supervise`] module's supervisor: a failure (an
//! error, a panic, an early end) is logged with its cause, counted in
//! `lqagent_task_restarts_total{task}` and restarted with backoff; channels survive restarts.
//! The requestor restarts on the same socket and command channel (queries in flight end as
//! "stopped"; callers treat that as no answer).
//!
//! Expiry is driven by the cache task (woken at the earliest deadline); its `Removed` changes
//! withdraw the routes. SIGTERM/SIGINT: intake stops, a state snapshot is written and synced,
//! routes stay in the kernel (RFC 8987: forwarding survives an agent restart), exit 0 within
//! [`SHUTDOWN_DEADLINE`]. SIGHUP: the file is read again; what can change live is applied
//! ([`reload`]), what needs a restart is logged by key, and a bad file changes nothing.

pub(crate) mod control;
pub(crate) mod export;
pub mod ondemand;
pub(crate) mod reload;
pub mod routes;
pub(crate) mod setup;
mod signals;
pub(crate) mod supervise;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use signals::{Running, poll_requestor_stats};
use supervise::{Lifetime, Supervisor};

use crate::admission::{Admission, OwnAddresses};
use crate::bulk::recovery::{CacheSink, recover};
use crate::bulk::stats::BulkStats;
use crate::cache::persist::{self, PersistConfig, StateWriter};
use crate::cache::task::{self as cache_task, CacheTaskConfig};
use crate::cache::{AgentClock, BindingStore, RouteView};
use crate::config::{Config, ConfigError};
use crate::control::ControlStats;
use crate::control::server::ControlSocket;
use crate::kernel::reconcile;
use crate::kernel::{Installer, KernelError};
use crate::logging::LogReload;
use crate::metrics::Metrics;
use crate::notify::{self, Notify};
use crate::requestor::udp;
use crate::snoop::capture::CaptureConfig;
use crate::snoop::classify::{ClassifyConfig, SnoopTrust};
use crate::snoop::trigger::{Trigger, TriggerConfig, TriggerError, TriggerLink};
use crate::wire::Duid;

pub(crate) use ondemand::OnDemand;
pub use ondemand::UnknownSource;

/// Longest time from SIGTERM to exit.
pub(crate) const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// Bound of the cache → route task and control → route task command channel.
const ROUTE_COMMANDS: usize = 256;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("logging: {0}")]
    Log(#[from] crate::logging::LogError),
    #[error("metrics listener: {0}")]
    Metrics(#[from] crate::metrics::http::HttpError),
    #[error("{0}")]
    Control(#[from] crate::control::ControlError),
    #[error("{0}")]
    State(#[from] persist::PersistError),
    #[error("route installer: {0}")]
    Kernel(#[from] KernelError),
    #[error("leasequery socket {addr}: {source}")]
    Requestor {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("our DUID: {0}")]
    Duid(std::io::Error),
    #[error("snooping on {interfaces:?}: {source}")]
    Snoop {
        interfaces: Vec<String>,
        source: std::io::Error,
    },
    #[error("unknown-source trigger: {0}")]
    Trigger(#[from] TriggerError),
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error(
        "spoof guard (snoop.spoof_guard; set it to false where ingress filtering is done elsewhere): {0}"
    )]
    Guard(crate::snoop::trigger::nft::NftError),
}

/// Run the agent with the configuration at `path` until SIGTERM/SIGINT.
pub fn run(path: &Path) -> Result<(), DaemonError> {
    let cfg = Config::load(path)?;
    cfg.check_host_for_run()?;
    let log = crate::logging::init_reloadable(&cfg.log)?;
    if let Err(e) = cfg.check_state_dir() {
        warn!(error = %e, "the state directory cannot be written: starting with persistence degraded");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("lqagent")
        .build()
        .map_err(DaemonError::Runtime)?;
    let r = rt.block_on(serve(cfg, path.to_path_buf(), log));
    // Detached tasks (open control/metrics connections) must not hold up the exit.
    rt.shutdown_timeout(Duration::from_millis(200));
    r
}

async fn serve(cfg: Config, path: PathBuf, log: LogReload) -> Result<(), DaemonError> {
    info!(config = %path.display(), version = env!("CARGO_PKG_VERSION"), "lqagent starting");
    let (stop, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut intake = JoinSet::new();
    let sup = Supervisor::new(stop.subscribe(), supervise::Policy::default());

    // /metrics and the control socket (each run after a failure binds again).
    let metrics = Metrics::new();
    let listener = crate::metrics::http::bind(cfg.metrics.listen).await?;
    {
        let (mut first, m, addr, stopped) = (
            Some(listener),
            metrics.clone(),
            cfg.metrics.listen,
            stopped.clone(),
        );
        intake.spawn(sup.restart("metrics_http", Lifetime::Forever, move |_| {
            let (l, m, stopped) = (first.take(), m.clone(), stopped.clone());
            async move {
                let l = match l {
                    Some(l) => l,
                    None => crate::metrics::http::bind(addr).await?,
                };
                crate::metrics::http::serve(l, m, stopped()).await;
                Ok::<(), crate::metrics::http::HttpError>(())
            }
        }));
    }
    if let Some(dir) = cfg.control.socket.parent() {
        // systemd's RuntimeDirectory= makes it; elsewhere (lab, tests) we do.
        let _ = std::fs::create_dir_all(dir);
    }
    let access = crate::control::access::Access::for_this_process(cfg.show_gid()?)
        .map_err(DaemonError::Runtime)?;
    let control_socket = ControlSocket::bind_with(&cfg.control.socket, access.clone())?;

    // Routes: the installer learns the interfaces and the box's own addresses first (the
    // snooper and admission need them), then reconciles the kernel against the loaded cache.
    let clock = AgentClock::new();
    let mut installer = Installer::new(setup::installer_config(&cfg)).await?;
    let own = Arc::new(OwnAddresses::default());
    installer.publish_addresses(own.clone());
    let admission = Arc::new(Admission::from_config(&cfg, own.clone()));

    // The spoof guard, before anything is snooped: no subscriber may pass for this box.
    if cfg.snoop.spoof_guard {
        let ifaces: Vec<String> = cfg.links.iter().map(|l| l.interface.clone()).collect();
        if let Some(script) = crate::snoop::guard::install(&ifaces) {
            crate::snoop::trigger::nft::run("nft", &script, Duration::from_secs(10))
                .await
                .map_err(DaemonError::Guard)?;
            info!(interfaces = ?ifaces, "spoof guard installed (nft table ip6 lqagent_guard)");
        }
    }

    // The state file: leases as they were, expired ones dropped, and each one admitted again
    // (the configuration may have changed since it was written).
    let mut loaded = match persist::load(&cfg.state_dir, clock.now()) {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, dir = %cfg.state_dir.display(), "cannot load the state file; starting empty");
            persist::Loaded::default()
        }
    };
    let behind_ms = loaded.check_clock(clock.now(), 2_000);
    if behind_ms > 0 {
        error!(
            behind_secs = behind_ms / 1000,
            "the wall clock is earlier than the state file's last write: clock reset or not yet \
             synced? Lease lifetimes are kept relative to the write time"
        );
    }
    let before = loaded.leases.len();
    loaded
        .leases
        .retain_mut(|(k, l)| admission.admit_restored(k, l).is_ok());
    info!(
        leases = loaded.leases.len(),
        expired = loaded.expired,
        refused = before - loaded.leases.len(),
        damaged = loaded.damaged.len(),
        lost_records = loaded.lost_records,
        "state file loaded"
    );
    let writer = StateWriter::start(
        PersistConfig::new(&cfg.state_dir),
        loaded.leases.clone(),
        loaded.generation,
    )?;

    let mapper = routes::RouteMapper::new(
        cfg.links
            .iter()
            .map(|l| (l.link_address, l.interface.clone())),
        cfg.routes.mirror_expiry.then_some(clock),
    );
    let installer_stats = installer.stats();
    metrics
        .routes_limit
        .set(i64::try_from(installer.config().max_routes).unwrap_or(i64::MAX));
    let specs = loaded
        .leases
        .iter()
        .filter_map(|(k, l)| mapper.spec(k, &RouteView::of(k, l)));
    let report = installer.set_desired(specs).await?;
    info!(?report, "kernel reconciled against the loaded cache");
    setup::unreachable_aggregates(&cfg).await;
    let (route_tx, route_rx) = mpsc::channel(ROUTE_COMMANDS);
    let store = Arc::new(BindingStore::new(setup::cache_config(&cfg)));
    let route_task = tokio::spawn(supervise_routes(
        &sup,
        installer,
        route_rx,
        RouteRestart {
            cfg: setup::installer_config(&cfg),
            stats: installer_stats.clone(),
            store: store.clone(),
            mapper: mapper.clone(),
        },
    ));

    // The trigger's table, its known-source sets filled from the state file before any packet
    // is judged (in enforcement mode a known subscriber is never dropped for an empty set).
    let trigger_links = TriggerLink::from_config(&cfg);
    let (trigger, trigger_events) = if trigger_links.is_empty() {
        (None, None)
    } else {
        let initial = loaded.leases.iter().map(|(k, l)| (*k, RouteView::of(k, l)));
        let (t, rx) = Trigger::start_supervised(
            TriggerConfig::from_section(&cfg.trigger),
            trigger_links.clone(),
            initial,
            &sup,
        )
        .await?;
        info!(
            links = trigger_links.len(),
            group = cfg.trigger.nflog_group,
            enforcement = cfg.trigger.enforcement,
            "unknown-source trigger installed (nft table ip6 lqagent)"
        );
        (Some(t), Some(rx))
    };

    // The cache, its change stream feeding the route task. A restarted cache task works on
    // the same store and channels (the loaded leases go in on the first run only).
    let (cache, changes, cache_runner) = cache_task::start_admitted(
        store.clone(),
        clock,
        Some(writer.handle()),
        CacheTaskConfig::default(),
        Some(admission.clone()),
    );
    let mut restored = Some(loaded.leases);
    let cache_task = tokio::spawn(sup.restart("cache", Lifetime::Forever, move |_| {
        let run = cache_runner
            .clone()
            .run(restored.take().unwrap_or_default());
        async move {
            run.await;
            Ok::<(), std::convert::Infallible>(())
        }
    }));
    {
        let changes = Arc::new(tokio::sync::Mutex::new(changes));
        let (rt, th) = (route_tx.clone(), trigger.as_ref().map(Trigger::handle));
        intake.spawn(sup.restart("route_feed", Lifetime::Forever, move |_| {
            let (m, c, rt, th) = (mapper.clone(), changes.clone(), rt.clone(), th.clone());
            async move {
                routes::feed_on(m, &mut *c.lock_owned().await, rt, th).await;
                Ok::<(), std::convert::Infallible>(())
            }
        }));
    }

    // Leasequery: the requestor and the on-demand path.
    let duid = match &cfg.identity.client_duid {
        Some(d) => d.clone(),
        None => udp::system_duid(cfg.snoop.interfaces.first().map(String::as_str))
            .or_else(|_| udp::system_duid(None))
            .map_err(DaemonError::Duid)?,
    };
    let udp_cfg = setup::udp_config(&cfg);
    let (requestor, requestor_runner) =
        udp::spawn_restartable(setup::requestor_config(&cfg, duid.clone()), udp_cfg.clone())
            .map_err(|source| DaemonError::Requestor {
                addr: udp_cfg.bind,
                source,
            })?;
    // The socket and the command channel outlive each run, so the bulk, on-demand and control
    // paths keep their handles; a restart costs the queries in flight (they end as "stopped").
    intake.spawn(sup.restart("requestor", Lifetime::UntilDone, move |run| {
        let r = requestor_runner.clone();
        async move {
            tokio::select! {
                () = r.run() => {}
                () = supervise::test_fault("requestor"), if run == 0 => panic!("test hook: requestor task fails"),
            }
            Ok::<(), std::convert::Infallible>(())
        }
    }));
    let server_names: HashMap<std::net::Ipv6Addr, String> = cfg
        .servers
        .iter()
        .map(|s| (s.address, s.name.clone()))
        .collect();
    metrics
        .servers
        .configure(cfg.servers.iter().map(|s| (s.name.clone(), s.address)));
    let (on_demand, od_runner) = ondemand::start(
        ondemand::Lookup {
            requestor: requestor.clone(),
            cache: cache.clone(),
            clock,
            server_names: Arc::new(server_names.clone()),
            metrics: Some(metrics.clone()),
            relay_data: true,
        },
        &ondemand::OnDemandConfig::default(),
    );
    intake.spawn(sup.restart("ondemand", Lifetime::Forever, move |_| {
        let run = od_runner.clone().run();
        async move {
            run.await;
            Ok::<(), std::convert::Infallible>(())
        }
    }));
    if let Some(events) = trigger_events {
        // Unknown sources → the on-demand path; its queue is bounded and counts what it refuses.
        let (od, events) = (on_demand.clone(), Arc::new(tokio::sync::Mutex::new(events)));
        intake.spawn(sup.restart("nflog", Lifetime::Forever, move |_| {
            let (od, events) = (od.clone(), events.clone());
            async move {
                let mut events = events.lock_owned().await;
                while let Some(ev) = events.recv().await {
                    od.try_submit(UnknownSource {
                        source: ev.source,
                        link_address: ev.link_address,
                        interface: Some(ev.interface),
                    });
                }
                Ok::<(), std::convert::Infallible>(())
            }
        }));
    }
    let requestor_stats = Arc::new(Mutex::new(Default::default()));
    {
        let (r, st) = (requestor.clone(), requestor_stats.clone());
        intake.spawn(
            sup.restart("requestor_stats", Lifetime::UntilDone, move |_| {
                let run = poll_requestor_stats(r.clone(), st.clone());
                async move {
                    run.await;
                    Ok::<(), std::convert::Infallible>(())
                }
            }),
        );
    }

    // Bulk recovery (runs on after READY; lqagent_recovery_in_progress shows it) and link-up
    // queries. A recovery run that dies is started again, only while none has finished.
    let bulk_stats = Arc::new(BulkStats::default());
    let recovery = crate::bulk::settings::from_config(&cfg, Duid::parse(&duid));
    let bulk_cfg = Arc::new(recovery.bulk.clone());
    let sink = CacheSink::new(cache.clone(), clock);
    if !recovery.plan.servers.is_empty() {
        let (m, st, plan, c, s, rt) = (
            metrics.clone(),
            bulk_stats.clone(),
            recovery.plan.clone(),
            bulk_cfg.clone(),
            sink.clone(),
            route_tx.clone(),
        );
        m.recovery_in_progress.set(1);
        intake.spawn(sup.restart("bulk", Lifetime::UntilDone, move |_| {
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
                    info!(servers = report.servers.len(), elapsed = ?report.elapsed, "recovery complete");
                    let _ = rt.send(reconcile::RouteCommand::EndInheritance).await;
                } else {
                    warn!(
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
            intake.spawn(sup.restart("bulk", Lifetime::Forever, move |_| {
                crate::bulk::linkup::watch(
                    plan.clone(),
                    ifs.clone(),
                    bulk_cfg.clone(),
                    st.clone(),
                    sink.clone(),
                )
            }));
        }
    }

    // Snooping.
    let snoop = if cfg.snoop.interfaces.is_empty() {
        None
    } else {
        let capture = CaptureConfig {
            interfaces: cfg.snoop.interfaces.clone(),
            ..CaptureConfig::default()
        };
        let trust = SnoopTrust {
            servers: cfg
                .servers
                .iter()
                .map(|s| s.address)
                .chain(cfg.snoop.trusted_sources.iter().copied())
                .collect(),
            own: own.clone(),
        };
        let stats = crate::snoop::shell::spawn_supervised(
            &capture,
            ClassifyConfig {
                srsn_option: cfg.leasequery.srsn_option,
                ..ClassifyConfig::default()
            },
            trust,
            clock,
            cache.clone(),
            &mut intake,
            &sup,
        )
        .map_err(|source| DaemonError::Snoop {
            interfaces: cfg.snoop.interfaces.clone(),
            source,
        })?;
        info!(interfaces = ?cfg.snoop.interfaces, "snooping");
        Some(stats)
    };

    // Metrics of every module, and the control socket's answers.
    // Restarts by task label; `capture` also counts the sockets the capture tasks reopened
    // themselves (an interface deleted and made again).
    let r = sup.restarts().clone();
    r.counter("control");
    let cap = snoop.as_ref().map(|s| s.capture.clone());
    metrics.register_stats(
        crate::metrics::names::TASK_RESTARTS,
        "Long-running tasks restarted after a failure, by task",
        "task",
        move || {
            let mut v = r.snapshot();
            let reopened = cap.as_ref().map_or(0, |c| {
                c.get(crate::snoop::capture::CaptureCounter::Reopened)
            });
            match v.iter_mut().find(|(t, _)| *t == "capture") {
                Some((_, n)) => *n += reopened,
                None => v.push(("capture", reopened)),
            }
            v
        },
    );
    // What the watchdog watches: the cache, route and capture tasks' heartbeats.
    let beats = Heartbeats {
        cache: cache.stats().clone(),
        routes: installer_stats.clone(),
        capture: snoop.as_ref().map(|s| s.capture.clone()),
    };
    // Test hook (never set in production): stall the cache task after READY to test the watchdog.
    let stall_cache = std::env::var("LQAGENT_TEST_STALL_CACHE_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| (cache.clone(), Duration::from_secs(s)));
    let control_stats = Arc::new(ControlStats::default());
    export::register(
        &metrics,
        export::Sources {
            installer: installer_stats,
            store: store.clone(),
            admission: admission.clone(),
            snoop,
            bulk: bulk_stats,
            on_demand: on_demand.stats().clone(),
            trigger: trigger.as_ref().map(|t| t.handle().stats().clone()),
            requestor: requestor_stats,
            control: control_stats.clone(),
            links: cfg
                .links
                .iter()
                .map(|l| (l.link_address, l.name.clone()))
                .collect(),
            servers: server_names,
        },
    );
    // The state writer: its events, and whether it is degraded (disk full, I/O errors).
    let ps = writer.handle().stats().clone();
    metrics.register_stats(
        crate::metrics::names::STATE_EVENTS,
        "State file writer events (records, snapshots, syncs, errors, degraded mode), by event",
        "event",
        move || ps.snapshot(),
    );
    let (ps, gauge) = (
        writer.handle().stats().clone(),
        metrics.state_degraded.clone(),
    );
    metrics.on_scrape(move || {
        gauge.set(i64::from(ps.is_degraded()));
    });
    let responder = Arc::new(control::LiveResponder {
        cache: cache.clone(),
        routes: route_tx.clone(),
        metrics: metrics.clone(),
        clock,
        links: control::link_names(&cfg),
        started: tokio::time::Instant::now(),
        dry_run: cfg.routes.dry_run,
    });
    {
        let (mut first, path, access) = (
            Some(control_socket),
            cfg.control.socket.clone(),
            access.clone(),
        );
        intake.spawn(sup.restart("control", Lifetime::Forever, move |_| {
            let (sock, path, access) = (first.take(), path.clone(), access.clone());
            let (responder, stats, stopped) =
                (responder.clone(), control_stats.clone(), stopped.clone());
            async move {
                let sock = match sock {
                    Some(s) => s,
                    None => ControlSocket::bind_with(&path, access)?,
                };
                sock.serve(responder, stats, stopped()).await;
                Ok::<(), crate::control::ControlError>(())
            }
        }));
    }
    drop(cache);

    let mut running = Running {
        cfg,
        path,
        log,
        requestor,
        routes: route_tx,
        intake,
        stop,
        cache_task,
        route_task,
        store,
        writer,
        on_demand,
        trigger,
    };
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Runtime)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Runtime)?;
    let watchdog = notify::watchdog_interval();
    let dog_period = watchdog.unwrap_or(Duration::from_secs(3600));
    let mut dog = tokio::time::interval_at(tokio::time::Instant::now() + dog_period, dog_period);
    // READY=1 now: the state is loaded, the kernel reconciled against it, the listeners are
    // up. Bulk recovery runs on (lqagent_recovery_in_progress); routes nothing explains stay
    // inherited until it is complete or the grace period is over.
    info!(bindings = running.store.len(), "ready");
    if let Err(e) = notify::notify(Notify::Ready) {
        warn!(error = %e, "sd_notify READY failed");
    }
    if let Some((c, d)) = &stall_cache {
        let _ = c.try_send(crate::cache::task::CacheInput::Stall(*d));
    }
    let mut last_beats = beats.read();
    let mut withheld = false;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => running.reload().await,
            _ = dog.tick(), if watchdog.is_some() => {
                // WATCHDOG=1 only while every watched task made progress since the last tick:
                // a stuck one lets systemd restart the process.
                let now = beats.read();
                let stuck = notify::stalled(&Heartbeats::pairs(&last_beats, &now));
                last_beats = now;
                if stuck.is_empty() {
                    if withheld {
                        withheld = false;
                        info!("watched tasks progress again: watchdog resumed");
                    }
                    let _ = notify::notify(Notify::Watchdog);
                } else if !withheld {
                    withheld = true;
                    error!(tasks = ?stuck, "no progress: WATCHDOG=1 withheld (systemd restarts a stuck agent)");
                }
            }
        }
    }
    running.shutdown().await;
    Ok(())
}

/// The heartbeats `WATCHDOG=1` depends on.
struct Heartbeats {
    cache: Arc<crate::cache::task::TaskStats>,
    routes: Arc<crate::kernel::InstallerStats>,
    capture: Option<Arc<crate::snoop::capture::CaptureStats>>,
}

impl Heartbeats {
    /// (cache, routes, capture) beats now; capture is `None` without snooping.
    fn read(&self) -> [Option<u64>; 3] {
        [
            Some(self.cache.heartbeat.get()),
            Some(self.routes.heartbeat.get()),
            self.capture.as_ref().map(|c| c.heartbeat.get()),
        ]
    }

    fn pairs(before: &[Option<u64>; 3], now: &[Option<u64>; 3]) -> Vec<(&'static str, u64, u64)> {
        ["cache", "routes", "capture"]
            .into_iter()
            .zip(before.iter().zip(now))
            .filter_map(|(n, (b, a))| Some((n, (*b)?, (*a)?)))
            .collect()
    }
}

/// What the route task needs to start over: a fresh installer (same counters) and the desired
/// set, rebuilt from the cache.
struct RouteRestart {
    cfg: crate::kernel::InstallerConfig,
    stats: Arc<crate::kernel::InstallerStats>,
    store: Arc<BindingStore>,
    mapper: routes::RouteMapper,
}

impl RouteRestart {
    async fn installer(&self) -> Result<Installer, KernelError> {
        let mut i = Installer::with_stats(self.cfg.clone(), self.stats.clone()).await?;
        let specs: Vec<_> = self
            .store
            .all()
            .iter()
            .filter_map(|(k, l)| self.mapper.spec(k, &RouteView::of(k, l)))
            .collect();
        i.set_desired(specs).await?;
        Ok(i)
    }
}

/// The route task under the supervisor (label `routes`): the first run uses the installer that
/// reconciled at start, each later one a fresh installer whose desired set is rebuilt from the
/// cache. The command channel is lent to each run, so the feed, recovery and control never see
/// it closed; commands sent during a restart wait in it. Ends when the channel closes.
fn supervise_routes(
    sup: &Supervisor,
    first: Installer,
    commands: mpsc::Receiver<reconcile::RouteCommand>,
    again: RouteRestart,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let commands = Arc::new(tokio::sync::Mutex::new(commands));
    let again = Arc::new(again);
    let mut first = Some(first);
    sup.restart("routes", Lifetime::UntilDone, move |run| {
        let (installer, commands, again) = (first.take(), commands.clone(), again.clone());
        async move {
            let mut commands = commands.lock_owned().await;
            let installer = match installer {
                Some(i) => i,
                None => again.installer().await?,
            };
            // The test hook (inert in production) may fail the first run.
            tokio::select! {
                r = reconcile::run_on(installer, &mut commands) => r,
                () = supervise::test_fault("routes"), if run == 0 => panic!("test hook: route task fails"),
            }
        }
    })
}
