//! Supervision of the long-running tasks: a task that fails is logged with its cause, counted
//! in `lqagent_task_restarts_total{task}`, and started again with backoff; none dies silently.
//!
//! Why one supervisor for all: a task that ends on an error or a panic used to simply be gone
//! (snooping or route programming stopped, the process stayed up, nothing was logged). Each run
//! of a task is its own tokio task, so a panic is caught as a `JoinError` instead of taking the
//! supervisor with it; aborting the supervisor (shutdown) aborts the run it watches.
//!
//! State a task needs across restarts (its input channel above all) is owned by the start
//! closure and lent to each run — an [`Inbox`], the receiver that each run borrows (a panicking
//! run drops its loan; tokio's mutex does not poison) — so producers never see a closed channel
//! while a task restarts.
//!
//! The backoff is the pure [`Backoff`]: 1 s doubling to 60 s, back to 1 s after a run that
//! lasted [`Policy::healthy_after`] (a task failing once a day is not penalised for old faults).

use crate::label::labels;
use crate::time::Duration;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{OwnedMutexGuard, mpsc, watch};
use tokio::task::{JoinError, JoinHandle};
use tracing::{error, info};

/// When a task's normal end is the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Runs until shutdown: ending without a shutdown asked is a failure and restarts it.
    Forever,
    /// Ends when its work is done (`Ok`): not restarted then; restarted only after a failure.
    UntilDone,
}

/// A task's input queue, kept by whoever restarts the task and lent to one run at a time, so the
/// senders never see it closed while a run dies and the next one starts. Cloning shares it.
pub struct Inbox<T>(Arc<tokio::sync::Mutex<mpsc::Receiver<T>>>);

impl<T> Inbox<T> {
    pub fn new(rx: mpsc::Receiver<T>) -> Self {
        Inbox(Arc::new(tokio::sync::Mutex::new(rx)))
    }

    /// The receiver, for as long as the returned loan lives. A second run asking meanwhile
    /// waits until the first one's loan is dropped — also when that run panicked (tokio's mutex
    /// does not poison), which is what lets a restarted run take over the same queue.
    pub async fn lend(&self) -> OwnedMutexGuard<mpsc::Receiver<T>> {
        self.0.clone().lock_owned().await
    }
}

impl<T> Clone for Inbox<T> {
    fn clone(&self) -> Self {
        Inbox(self.0.clone())
    }
}

impl<T> std::fmt::Debug for Inbox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inbox")
    }
}

/// Restart pacing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// First restart delay; doubles per consecutive failure.
    pub base: Duration,
    pub max: Duration,
    /// A run at least this long resets the delay to `base`.
    pub healthy_after: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            healthy_after: Duration::from_secs(60),
        }
    }
}

/// The pure restart delay: consecutive failures double it, a healthy run resets it.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    policy: Policy,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(policy: Policy) -> Self {
        Backoff {
            policy,
            failures: 0,
        }
    }

    /// A run that lasted `ran_for` failed: how long to wait before the next one.
    pub(crate) fn after_failure(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.policy.healthy_after {
            self.failures = 0;
        }
        let d = crate::time::backoff(self.failures, self.policy.base, self.policy.max);
        self.failures = self.failures.saturating_add(1);
        d
    }
}

labels! {
    /// A supervised task: the `task` label of `lqagent_task_restarts_total` and the name of
    /// its fault file ([`Supervisor::fault`]). In label order, the order of the exposition.
    pub enum Task {
        /// Bulk leasequery recovery (at start-up and per link coming up).
        Bulk => "bulk",
        Cache => "cache",
        /// A snooper's capture socket and the classification of its packets (one task per
        /// interface).
        Capture => "capture",
        Confirm => "confirm",
        Control => "control",
        MetricsHttp => "metrics_http",
        Nflog => "nflog",
        Ondemand => "ondemand",
        Requestor => "requestor",
        RouteFeed => "route_feed",
        Routes => "routes",
        TriggerSync => "trigger_sync",
    }
}

/// Restart counters by task (`lqagent_task_restarts_total{task}`); a task is exported (at
/// zero) from the moment it is supervised.
#[derive(Debug, Default)]
pub struct Restarts {
    counts: [AtomicU64; Task::ALL.len()],
    supervised: [AtomicBool; Task::ALL.len()],
}

impl Restarts {
    /// `task` runs under supervision now: it is exported, at zero until it fails.
    pub fn supervise(&self, task: Task) {
        self.supervised[task as usize].store(true, Ordering::Relaxed);
    }

    /// One more restart of `task`.
    pub fn count(&self, task: Task) {
        self.supervise(task);
        self.counts[task as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, task: Task) -> u64 {
        self.counts[task as usize].load(Ordering::Relaxed)
    }

    pub fn is_supervised(&self, task: Task) -> bool {
        self.supervised[task as usize].load(Ordering::Relaxed)
    }
}

/// Starts and restarts tasks; cheap to clone.
#[derive(Debug, Clone)]
pub struct Supervisor {
    restarts: Arc<Restarts>,
    stop: watch::Receiver<bool>,
    policy: Policy,
    /// The stop of a supervisor nobody stops ([`Supervisor::unstopped`]), kept so its end of
    /// the channel stays open.
    _own_stop: Option<Arc<watch::Sender<bool>>>,
    /// Test hook, debug builds only: the directory [`Supervisor::fault`] watches.
    #[cfg(debug_assertions)]
    faults: Option<Arc<std::path::Path>>,
}

/// Aborts the run it holds when dropped (the supervisor was aborted at shutdown).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A spawned task as a future that aborts the task when dropped: spawned into a `JoinSet`, the
/// set's `abort_all` (shutdown) reaches a task spawned elsewhere.
pub(crate) async fn tied(h: JoinHandle<()>) {
    let mut h = AbortOnDrop(h);
    let _ = (&mut h.0).await;
}

/// The cause of a failed run, from its join.
pub(crate) fn cause_of(e: JoinError) -> Option<String> {
    if !e.is_panic() {
        return None; // cancelled: shutdown
    }
    let p = e.into_panic();
    Some(match p.downcast_ref::<&str>() {
        Some(s) => format!("panicked: {s}"),
        None => match p.downcast_ref::<String>() {
            Some(s) => format!("panicked: {s}"),
            None => "panicked".to_string(),
        },
    })
}

impl Supervisor {
    /// `stop` turns true when shutdown is asked.
    /// In debug builds (what `cargo test` runs) the test hook's directory comes from
    /// `LQAGENT_TEST_FAULT_DIR` (see [`Supervisor::fault`]); a release build neither reads the
    /// variable nor holds its name.
    pub fn new(stop: watch::Receiver<bool>, policy: Policy) -> Self {
        Supervisor {
            restarts: Arc::new(Restarts::default()),
            stop,
            policy,
            _own_stop: None,
            #[cfg(debug_assertions)]
            faults: std::env::var_os("LQAGENT_TEST_FAULT_DIR")
                .map(|d| Arc::from(std::path::Path::new(&d))),
        }
    }

    /// A supervisor no shutdown stops: for tasks that end with the process or with their
    /// handles (`lqagent query`'s requestor, tests).
    pub fn unstopped(policy: Policy) -> Self {
        let (tx, rx) = watch::channel(false);
        let mut sup = Supervisor::new(rx, policy);
        sup._own_stop = Some(Arc::new(tx));
        sup
    }

    /// Test hook, debug builds only: [`Supervisor::fault`] watches `dir` instead of the
    /// environment's, so a test in a process shared with others fails only its own tasks.
    #[cfg(debug_assertions)]
    #[doc(hidden)]
    pub fn with_fault_dir(mut self, dir: &std::path::Path) -> Self {
        self.faults = Some(Arc::from(dir));
        self
    }

    pub fn restarts(&self) -> &Arc<Restarts> {
        &self.restarts
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Run `start(run)` (run = 0, 1, …) as `task` until it ends as `lifetime` allows or shutdown
    /// is asked; each failure (an `Err`, a panic, or an early end of a [`Lifetime::Forever`]
    /// task) is logged with its cause, counted, and followed by a new run after the backoff.
    pub fn restart<F, Fut, E>(
        &self,
        task: Task,
        lifetime: Lifetime,
        mut start: F,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        F: FnMut(u32) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let me = self.clone();
        self.restarts.supervise(task);
        let task_label = task.label();
        async move {
            let mut backoff = Backoff::new(me.policy);
            let mut stop = me.stop.clone();
            let mut run = 0u32;
            loop {
                let began = crate::time::TokioInstant::now();
                let mut h = AbortOnDrop(tokio::spawn(start(run)));
                let cause = match (&mut h.0).await {
                    Ok(Ok(())) if lifetime == Lifetime::UntilDone || me.stopping() => {
                        info!(task = task_label, "task ended");
                        return;
                    }
                    Ok(Ok(())) => "ended without a shutdown asked".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => match cause_of(e) {
                        Some(c) => c,
                        None => return,
                    },
                };
                if me.stopping() {
                    return;
                }
                let delay = backoff.after_failure(began.elapsed());
                me.restarts.count(task);
                error!(task = task_label, cause, restart_in = ?delay, "task failed; restarting it");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                run = run.saturating_add(1);
            }
        }
    }
}

impl Supervisor {
    /// Test hook: resolves once the file named `task` exists in the fault directory (from
    /// `LQAGENT_TEST_FAULT_DIR` or [`Supervisor::with_fault_dir`]); without one, never. The
    /// route, capture and requestor tasks panic on it (first run only), so tests can show that
    /// a failed task is restarted and counted at a moment they choose. Only debug builds have
    /// the directory: in a release build this never resolves.
    pub(crate) fn fault(&self, task: Task) -> impl Future<Output = ()> + Send + use<> {
        #[cfg(debug_assertions)]
        let path = self.faults.as_ref().map(|d| d.join(task.label()));
        #[cfg(not(debug_assertions))]
        let _ = task;
        async move {
            #[cfg(debug_assertions)]
            if let Some(path) = path {
                let mut tick = tokio::time::interval(Duration::from_millis(50));
                while !path.exists() {
                    tick.tick().await;
                }
                return;
            }
            std::future::pending().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn fast() -> Policy {
        Policy {
            base: Duration::from_millis(1),
            max: Duration::from_millis(4),
            healthy_after: Duration::from_secs(3600),
        }
    }

    #[test]
    fn backoff_doubles_caps_and_resets_after_a_healthy_run() {
        let mut b = Backoff::new(Policy::default());
        let short = Duration::from_millis(10);
        let s = Duration::from_secs;
        let got: Vec<_> = (0..8).map(|_| b.after_failure(short)).collect();
        assert_eq!(got, [s(1), s(2), s(4), s(8), s(16), s(32), s(60), s(60)]);
        assert_eq!(b.after_failure(s(61)), s(1), "a healthy run resets it");
        assert_eq!(b.after_failure(short), s(2));
    }

    #[tokio::test]
    async fn panics_and_errors_are_restarted_and_counted_until_done() {
        let (stop_tx, stop) = watch::channel(false);
        let sup = Supervisor::new(stop, fast());
        let runs = Arc::new(AtomicU64::new(0));
        let r = runs.clone();
        sup.restart(Task::Cache, Lifetime::UntilDone, move |run| {
            r.fetch_add(1, Ordering::Relaxed);
            async move {
                match run {
                    0 => panic!("boom"),
                    1 => Err("broken"),
                    _ => Ok(()),
                }
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::Relaxed), 3);
        assert_eq!(sup.restarts().get(Task::Cache), 2);
        let supervised: Vec<Task> = Task::ALL
            .iter()
            .copied()
            .filter(|t| sup.restarts().is_supervised(*t))
            .collect();
        assert_eq!(
            supervised,
            [Task::Cache],
            "only the supervised task is exported"
        );
        drop(stop_tx);
    }

    #[tokio::test]
    async fn a_forever_task_that_ends_is_restarted_but_not_after_shutdown() {
        let (stop_tx, stop) = watch::channel(false);
        let sup = Supervisor::new(stop, fast());
        let stop_tx = Arc::new(stop_tx);
        let s = stop_tx.clone();
        sup.restart(Task::Routes, Lifetime::Forever, move |run| {
            let s = s.clone();
            async move {
                if run == 2 {
                    let _ = s.send(true);
                    return Err::<(), _>("failed while stopping");
                }
                Ok(())
            }
        })
        .await;
        assert_eq!(
            sup.restarts().get(Task::Routes),
            2,
            "two early ends restarted, the failure during shutdown not"
        );
    }

    /// The test hook fails a run only once its file exists in the supervisor's fault
    /// directory, and a supervisor without one never fails it. (The hook is debug-only, as is
    /// this test: `cargo bench` builds the unit tests with optimisations and no hook.)
    #[cfg(debug_assertions)]
    #[tokio::test]
    async fn the_fault_hook_fires_on_its_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::unstopped(fast()).with_fault_dir(dir.path());
        let fault = sup.fault(Task::Cache);
        let mut fault = std::pin::pin!(fault);
        let early = tokio::time::timeout(Duration::from_millis(200), fault.as_mut()).await;
        assert!(early.is_err(), "fired before its file existed");
        std::fs::write(dir.path().join("other"), b"").unwrap();
        let other = tokio::time::timeout(Duration::from_millis(200), fault.as_mut()).await;
        assert!(other.is_err(), "fired for another task's file");
        std::fs::write(dir.path().join("cache"), b"").unwrap();
        tokio::time::timeout(Duration::from_secs(10), fault)
            .await
            .expect("fired once its file existed");
        let quiet = Supervisor::unstopped(fast());
        if std::env::var_os("LQAGENT_TEST_FAULT_DIR").is_none() {
            let never =
                tokio::time::timeout(Duration::from_millis(200), quiet.fault(Task::Cache)).await;
            assert!(never.is_err(), "no fault directory: never fires");
        }
    }

    #[tokio::test]
    async fn the_channel_lent_to_each_run_survives_a_panic() {
        let (_stop_tx, stop) = watch::channel(false);
        let sup = Supervisor::new(stop, fast());
        let (tx, rx) = mpsc::channel::<u32>(8);
        let rx = Inbox::new(rx);
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let run = sup.restart(Task::Control, Lifetime::UntilDone, move |_| {
            let (rx, seen) = (rx.clone(), seen_tx.clone());
            async move {
                let mut rx = rx.lend().await;
                while let Some(n) = rx.recv().await {
                    assert_ne!(n, 0, "zero is poison");
                    let _ = seen.send(n);
                }
                Ok::<(), String>(())
            }
        });
        let h = tokio::spawn(run);
        for n in [1, 0, 2] {
            tx.send(n)
                .await
                .expect("the channel stays open across the panic");
        }
        drop(tx);
        h.await.unwrap();
        assert_eq!((seen.recv().await, seen.recv().await), (Some(1), Some(2)));
        assert_eq!(sup.restarts().get(Task::Control), 1);
    }
}
