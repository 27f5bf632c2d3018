//! `lqagent run`: connects the parts, in a fixed start-up order, with bounded channels only.
//!
//! ```text
//!  config → logging → /metrics + control socket → state file (expired leases dropped)
//!  → cache task ─changes─► routes::feed ─RouteCommand─► kernel::reconcile::run (installer,
//!    reconciled against the loaded cache before anything new arrives)
//!  → bulk recovery, every server in parallel (bindings → cache → routes as they arrive)
//!  → snooping (relayed REPLYs → cache, on their own queue, served first) · on-demand
//!    leasequery (unknown sources → cache) · confirmer (doubts about a binding's owner →
//!    leasequery → the answer decides, through the same requestor)
//!  → READY=1 (state loaded, kernel reconciled, listeners up); recovery runs on after it,
//!    shown by lqagent_recovery_in_progress
//!  · routes of ours no binding explains stay ("inherited") until every server answered DONE
//!    or routes.inherit_grace_secs is over; then each is asked about (a confirming leasequery)
//!    and lives until its kernel expiry (one without an expiry is deleted)
//!  → WATCHDOG=1 every WatchdogSec/2, only while the cache, route and capture tasks' heartbeats
//!    move (a stuck task gets the process restarted) · reconcile every routes.reconcile_interval_secs
//!  · link-up of a subscriber interface → bulk query for that link
//! ```
//!
//! Each step of that order is one function in [`start`], called in turn by `serve`; steps 2 to 6
//! (kernel and admission, state file, reconcile, trigger, cache task) through `restore`, the one
//! copy of them, which [`start_recovery`] (the recovery bench) runs too.
//!
//! Every long-running task runs under the [`crate::supervise`] module's supervisor: a failure (an
//! error, a panic, an early end) is logged with its cause, counted in
//! `lqagent_task_restarts_total{task}` and restarted with backoff; channels survive restarts.
//! The tasks' own modules start them so (`cache_task::spawn`, `snoop::shell::spawn`,
//! `requestor::udp::spawn`: one entry point each, the one tests use too).
//! The requestor restarts on the same socket and command channel (queries in flight end as
//! "stopped"; callers treat that as no answer).
//!
//! Expiry is driven by the cache task (woken at the earliest deadline); its `Removed` changes
//! withdraw the routes. SIGTERM/SIGINT: intake stops, a state snapshot is written and synced,
//! routes stay in the kernel (RFC 8987: forwarding survives an agent restart), exit 0 within
//! [`SHUTDOWN_DEADLINE`]. SIGHUP: the file is read again; what can change live is applied
//! ([`reload`]), what needs a restart is logged by key, and a bad file changes nothing.

pub mod confirm;
pub(crate) mod control;
pub mod export;
pub mod ondemand;
pub(crate) mod reload;
pub mod routes;
pub(crate) mod settings;
mod signals;
mod start;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use signals::Running;

use crate::cache::{BindingStore, RouteView};
use crate::config::{Config, ConfigError};
use crate::control::ControlStats;
use crate::kernel::reconcile;
use crate::kernel::{Installer, KernelError};
use crate::logging::LogReload;
use crate::notify::{self, Notify};
use crate::persist;
use crate::supervise::{Inbox, Lifetime, Supervisor, Task};
use crate::time::Duration;
use crate::trigger::{Trigger, TriggerError};

pub(crate) use ondemand::OnDemand;
pub use ondemand::UnknownSource;

/// Longest time from SIGTERM to exit.
pub(crate) const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// Bound of the cache → route task and control → route task command channel.
const ROUTE_COMMANDS: usize = 256;
/// Bound of the doubts waiting for the confirmer (more are counted `not_asked`).
const DOUBT_QUEUE: usize = 4096;

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
    Guard(crate::trigger::nft::NftError),
}

/// Run the agent with the configuration at `path` until SIGTERM/SIGINT.
pub fn run(path: &Path) -> Result<(), DaemonError> {
    let cfg = Config::load(path)?;
    cfg.check_host_for_run()?;
    let log = crate::logging::init_reloadable(&settings::log_config(&cfg))?;
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

/// The start-up steps in order (each in [`start`]), READY=1, then the main loop until a signal
/// ends it.
async fn serve(cfg: Config, path: PathBuf, log: LogReload) -> Result<(), DaemonError> {
    info!(config = %path.display(), version = env!("CARGO_PKG_VERSION"), "lqagent starting");
    let mut tasks = start::Tasks::new();
    let listeners = start::listeners(&cfg, &mut tasks).await?;
    let metrics = listeners.metrics.clone();
    let Restored {
        clock,
        own,
        admission,
        writer,
        routes,
        doubts,
        doubt_rx,
        trigger,
        trigger_events,
        cache,
        cache_task,
    } = restore(&cfg, &metrics, &mut tasks, true, |_| {}).await?;
    let trigger_handle = trigger.as_ref().map(Trigger::handle);
    let lq = start::leasequery(
        &cfg,
        &cache,
        clock,
        &metrics,
        trigger_events,
        (&doubts, doubt_rx),
        &mut tasks,
    )
    .await?;
    let bulk_stats = start::recovery(
        &cfg,
        &lq.duid,
        &cache,
        clock,
        &metrics,
        &routes.commands,
        &mut tasks,
    );
    let snoop = start::snooping(&cfg, &own, &admission, clock, &cache, &mut tasks)?;

    let beats = start::heartbeats(&cache, &routes, snoop.as_ref());
    let control_stats = Arc::new(ControlStats::default());
    start::register_metrics(
        &metrics,
        export::Sources {
            installer: routes.stats.clone(),
            store: routes.store.clone(),
            admission: admission.clone(),
            snoop,
            bulk: bulk_stats,
            on_demand: lq.on_demand.stats().clone(),
            trigger: trigger_handle.map(|t| t.stats().clone()),
            requestor: lq.requestor_stats,
            control: control_stats.clone(),
            links: settings::link_names(&cfg),
            servers: settings::server_names(&cfg),
            restarts: tasks.sup.restarts().clone(),
            state: writer.handle().stats().clone(),
            doubts: doubts.stats().clone(),
        },
    );
    let responder = control::LiveResponder {
        cache: cache.clone(),
        routes: routes.commands.clone(),
        metrics: metrics.clone(),
        clock,
        links: settings::control_links(&cfg),
        started: crate::time::TokioInstant::now(),
        dry_run: cfg.routes.dry_run,
    };
    start::control(&cfg, listeners, responder, control_stats, &mut tasks);
    let stall_cache = stall_cache_hook(&cache);
    drop(cache);

    let running = Running {
        cfg,
        path,
        log,
        requestor: lq.requestor,
        routes: routes.commands,
        intake: tasks.intake,
        stop: tasks.stop,
        cache_task,
        route_task: routes.task,
        store: routes.store,
        writer,
        on_demand: lq.on_demand,
        trigger,
    };
    main_loop(running, beats, stall_cache).await
}

/// Test hook: with `LQAGENT_TEST_STALL_CACHE_SECS` set, the cache task is stalled that long after
/// READY, so the watchdog can be tested. Only debug builds (what `cargo test` runs) have it: a
/// release build neither reads the variable nor holds its name.
#[cfg(debug_assertions)]
struct StallCache(Option<(crate::cache_task::CacheHandle, Duration)>);
#[cfg(not(debug_assertions))]
struct StallCache;

#[cfg(debug_assertions)]
fn stall_cache_hook(cache: &crate::cache_task::CacheHandle) -> StallCache {
    StallCache(
        std::env::var("LQAGENT_TEST_STALL_CACHE_SECS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(|s| (cache.clone(), Duration::from_secs(s))),
    )
}
#[cfg(not(debug_assertions))]
fn stall_cache_hook(_: &crate::cache_task::CacheHandle) -> StallCache {
    StallCache
}

impl StallCache {
    fn stall(&self) {
        #[cfg(debug_assertions)]
        if let Some((c, d)) = &self.0 {
            let _ = c.try_send(crate::cache_task::CacheInput::Stall(*d));
        }
    }
}

/// The start-up steps of [`serve`] that recover the bindings of the last run, and nothing else:
/// the installer and admission, the state file (each lease admitted again) and its writer, the
/// kernel reconciled against it, the cache task with its route feed ([`restore`], the function
/// `serve` calls, without the trigger), and bulk recovery — without the parts recovery does not
/// use (listeners, trigger, requestor, snooping, control). `cargo bench --bench recovery` times
/// the daemon's recovery through it, so the bench measures the path `lqagent run` takes, not a
/// copy of it.
#[doc(hidden)]
pub async fn start_recovery(cfg: &Config) -> Result<Recovering, DaemonError> {
    let began = crate::time::Instant::now();
    let mut steps = Vec::new();
    let mut tasks = start::Tasks::new();
    let metrics = crate::metrics::Metrics::new();
    let Restored {
        clock,
        writer,
        routes,
        doubt_rx,
        cache,
        cache_task,
        ..
    } = restore(cfg, &metrics, &mut tasks, false, |step| {
        steps.push((step, began.elapsed()))
    })
    .await?;
    let duid = match &cfg.identity.client_duid {
        Some(d) => d.clone(),
        None => crate::requestor::udp::system_duid(None).map_err(DaemonError::Duid)?,
    };
    let bulk = start::recovery(
        cfg,
        &duid,
        &cache,
        clock,
        &metrics,
        &routes.commands,
        &mut tasks,
    );
    steps.push(("cache and bulk started", began.elapsed()));
    Ok(Recovering {
        steps,
        installer: routes.stats.clone(),
        journal: writer.handle().stats().clone(),
        store: routes.store.clone(),
        bulk,
        metrics,
        cache: Some(cache),
        commands: routes.commands,
        route_task: routes.task,
        cache_task,
        intake: tasks.intake,
        stop: tasks.stop,
        writer,
        _doubts: doubt_rx,
    })
}

/// What steps 2 to 6 made: the parts of the agent that hold the bindings of the last run.
struct Restored {
    clock: crate::time::AgentClock,
    own: Arc<crate::admission::OwnAddresses>,
    admission: Arc<crate::admission::Admission>,
    writer: persist::StateWriter,
    routes: start::Routes,
    /// Where doubts (the ownership rule) go, and the confirmer's end of it: made before the
    /// parts that raise them (the kernel side for inherited routes, the cache task).
    doubts: crate::cache_task::DoubtSink,
    doubt_rx: mpsc::Receiver<crate::cache::binding::Doubt>,
    trigger: Option<Trigger>,
    trigger_events: Option<mpsc::Receiver<crate::trigger::TriggerEvent>>,
    cache: crate::cache_task::CacheHandle,
    cache_task: tokio::task::JoinHandle<()>,
}

/// Steps 2 to 6, written once for [`serve`] and [`start_recovery`]: the installer and admission,
/// the state file and its writer, the kernel reconciled against it, the trigger (step 5, only
/// when `trigger`: recovery does not use it) and the cache task with its route feed. `step` is
/// told each step's name as it ends (the recovery bench times them).
async fn restore(
    cfg: &Config,
    metrics: &crate::metrics::Metrics,
    tasks: &mut start::Tasks,
    trigger: bool,
    mut step: impl FnMut(&'static str),
) -> Result<Restored, DaemonError> {
    let start::Kernel {
        clock,
        installer,
        own,
        admission,
    } = start::kernel(cfg).await?;
    step("kernel");
    let (loaded, writer) = start::state(cfg, clock, &admission)?;
    step("state");
    let (doubts, doubt_rx) = crate::cache_task::DoubtSink::new(DOUBT_QUEUE);
    let (routes, loaded) =
        start::reconcile(cfg, installer, clock, loaded, metrics, tasks, &doubts).await?;
    step("reconcile");
    let (trigger, trigger_events) = if trigger {
        start::trigger(cfg, &loaded, tasks).await?
    } else {
        (None, None)
    };
    // The store, the installer and the trigger hold the loaded leases now.
    drop(loaded);
    let (cache, cache_task) = start::cache(
        clock,
        &writer,
        &admission,
        &routes,
        start::CacheOutlets {
            trigger: trigger.as_ref().map(Trigger::handle),
            doubts: doubts.clone(),
        },
        tasks,
    );
    Ok(Restored {
        clock,
        own,
        admission,
        writer,
        routes,
        doubts,
        doubt_rx,
        trigger,
        trigger_events,
        cache,
        cache_task,
    })
}

/// A recovery started by [`start_recovery`]: what it has done so far, and its stop.
#[doc(hidden)]
pub struct Recovering {
    steps: Vec<(&'static str, crate::time::Duration)>,
    installer: Arc<crate::kernel::InstallerStats>,
    journal: Arc<persist::PersistStats>,
    store: Arc<BindingStore>,
    bulk: Arc<crate::bulk::stats::BulkStats>,
    metrics: crate::metrics::Metrics,
    cache: Option<crate::cache_task::CacheHandle>,
    commands: mpsc::Sender<reconcile::RouteCommand>,
    route_task: tokio::task::JoinHandle<()>,
    cache_task: tokio::task::JoinHandle<()>,
    intake: tokio::task::JoinSet<()>,
    stop: tokio::sync::watch::Sender<bool>,
    writer: persist::StateWriter,
    /// The confirmer's end of the doubt queue (no confirmer runs: doubts wait, then count).
    _doubts: mpsc::Receiver<crate::cache::binding::Doubt>,
}

impl Recovering {
    /// Routes of ours the installer has had acknowledged by the kernel.
    pub fn routes_installed(&self) -> u64 {
        self.installer.snapshot().installed_now
    }

    /// Each start-up step with the time from the start to its end, in order.
    pub fn steps(&self) -> &[(&'static str, crate::time::Duration)] {
        &self.steps
    }

    /// Leases in the cache.
    pub fn leases(&self) -> usize {
        self.store.len()
    }

    /// Whether bulk recovery still runs (`lqagent_recovery_in_progress`).
    pub fn bulk_in_progress(&self) -> bool {
        self.metrics.recovery_in_progress.get() != 0
    }

    pub fn bulk_stats(&self) -> &Arc<crate::bulk::stats::BulkStats> {
        &self.bulk
    }

    pub fn journal_stats(&self) -> &Arc<persist::PersistStats> {
        &self.journal
    }

    /// Stop as SIGTERM does: intake and the tasks end, the routes stay, the cache is written
    /// as a snapshot (the state file the next start loads).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.intake.abort_all();
        while self.intake.join_next().await.is_some() {}
        self.cache.take();
        self.cache_task.abort();
        let _ = self.cache_task.await;
        drop(self.commands);
        self.route_task.abort();
        let _ = self.route_task.await;
        let (store, writer) = (self.store, self.writer);
        let _ = tokio::task::spawn_blocking(move || write_final_state(&store, writer)).await;
    }
}

/// The last snapshot of the cache, written and synced, and the writer stopped (shutdown).
fn write_final_state(store: &BindingStore, writer: persist::StateWriter) -> usize {
    let leases = store.all();
    let n = leases.len();
    writer.handle().snapshot(leases);
    writer.shutdown();
    n
}

/// READY=1, then signals and the watchdog until the agent stops.
async fn main_loop(
    mut running: Running,
    beats: Heartbeats,
    stall_cache: StallCache,
) -> Result<(), DaemonError> {
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Runtime)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Runtime)?;
    let watchdog = notify::watchdog_interval();
    let dog_period = watchdog.unwrap_or(Duration::from_secs(3600));
    let mut dog =
        tokio::time::interval_at(crate::time::TokioInstant::now() + dog_period, dog_period);
    // READY=1 now: the state is loaded, the kernel reconciled against it, the listeners are
    // up. Bulk recovery runs on (lqagent_recovery_in_progress); routes nothing explains stay
    // inherited until it is complete or the grace period is over.
    info!(bindings = running.store.len(), "ready");
    if let Err(e) = notify::notify(Notify::Ready) {
        warn!(error = %e, "sd_notify READY failed");
    }
    stall_cache.stall();
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
    cache: Arc<crate::cache_task::TaskStats>,
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
    mapper: crate::kernel::RouteMapper,
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
    let commands = Inbox::new(commands);
    let again = Arc::new(again);
    // A restarted installer asks about its inherited routes where the first one did.
    let doubts = first.doubts().cloned();
    let mut first = Some(first);
    let faults = sup.clone();
    sup.restart(Task::Routes, Lifetime::UntilDone, move |run| {
        let (installer, commands, again) = (first.take(), commands.clone(), again.clone());
        let doubts = doubts.clone();
        let fault = faults.fault(Task::Routes);
        async move {
            let mut commands = commands.lend().await;
            let installer = match installer {
                Some(i) => i,
                None => {
                    let mut i = again.installer().await?;
                    if let Some((sink, clock)) = doubts {
                        i.set_doubts(sink, clock);
                    }
                    i
                }
            };
            // The test hook (inert in production) may fail the first run.
            tokio::select! {
                r = reconcile::run_on(installer, &mut commands) => r,
                () = fault, if run == 0 => panic!("test hook: route task fails"),
            }
        }
    })
}
