//! The cache task: the tokio shell that owns the write path of the binding store.
//!
//! One task receives [`CacheInput`]s from two bounded queues, applies them with the synchronous
//! store calls, journals the writes (non-blocking), and sends the resulting [`Change`]s into a
//! bounded channel for the route installer. Because one task decides and sends, changes are in
//! order per lease; because it awaits room in the change channel, a slow installer slows the task,
//! the input queues fill, and producers feel back-pressure (`observe().await`) or see `Full`
//! (`try_observe`) — nothing grows without bound. Expiry runs in the same loop, woken at the
//! earliest deadline; snapshots are taken when the journal asks or on a timer.
//!
//! Snooped inputs have their own queue, always served before the other one
//! ([`CacheHandle::send_snooped`]): a RELEASE seen on the wire is first-hand news about a
//! subscriber, and must not wait behind — or be dropped because of — thousands of answers a bulk
//! recovery or the on-demand path queued (exactly during a reboot storm, when both are busiest).
//!
//! The task never waits for the disk: journal records and snapshots are handed to the writer
//! thread without blocking, and the copy a snapshot needs is taken on a blocking thread. It runs
//! under the supervisor ([`spawn`] is its one entry point): a run that died is followed by
//! another on the same store and channels.
//!
//! Readers do not go through the task: they use [`CacheHandle::store`] directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::admission::{Admission, Admitted};
use crate::cache::binding::{
    Change, Confirmation, Doubt, DoubtOutcome, DoubtReason, DoubtStats, LeaseKey, Observation,
    Sweep, Withdrawal,
};
use crate::cache::store::{Applied, BindingStore};
use crate::persist::{JournalHandle, Record};
use crate::supervise::{Inbox, Lifetime, Supervisor, Task};
use crate::time::{AgentClock, Duration};

/// What the cache task accepts.
#[derive(Debug, Clone)]
pub enum CacheInput {
    Observe(Observation),
    /// Observations taken in order, as if each came on its own (bulk recovery's answers as
    /// they arrived together): one queue message for them all, not a send and a wake-up of
    /// this task each. Snooped inputs that arrive meanwhile still go first, between them.
    ObserveBatch(Vec<Observation>),
    Withdraw(Withdrawal),
    /// The end of a bulk query (merge rule R16).
    Sweep(Sweep),
    /// A doubt raised outside the store (a unicast exchange seen by the snooper): handed on to
    /// the confirmer with the holder the cache knows.
    Doubt(Doubt),
    /// A confirming leasequery's answer that nobody holds a doubted key.
    Confirm(Confirmation),
    /// Test hook only, in debug builds only (the daemon sends it when
    /// `LQAGENT_TEST_STALL_CACHE_SECS` is set): the task stops making progress for this long, as
    /// if stuck, so the watchdog can be tested.
    #[cfg(debug_assertions)]
    #[doc(hidden)]
    Stall(Duration),
}

/// Settings of the cache task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTaskConfig {
    /// Bound of the input queue of bulk, on-demand, the confirmer and the operator.
    pub input_queue: usize,
    /// Bound of the snooped inputs' own queue (served first).
    pub snoop_queue: usize,
    /// Bound of the change stream to the route installer.
    pub change_queue: usize,
    /// Snapshot at least this often (also when the journal asks, e.g. after drops).
    pub snapshot_interval_ms: u64,
}

impl Default for CacheTaskConfig {
    fn default() -> Self {
        CacheTaskConfig {
            input_queue: 4096,
            snoop_queue: 4096,
            change_queue: 4096,
            snapshot_interval_ms: 300_000,
        }
    }
}

/// Why an input was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("cache input queue full")]
    Full,
    #[error("cache task stopped")]
    Closed,
}

/// Where doubts go (the ownership rule, `docs/security.md`): the confirmer's bounded queue.
/// Raising never waits: a doubt that finds the queue full is counted `not_asked` and dropped —
/// a doubt changes nothing by itself, so dropping one keeps what is there.
#[derive(Debug, Clone)]
pub struct DoubtSink {
    tx: mpsc::Sender<Doubt>,
    stats: Arc<DoubtStats>,
}

impl DoubtSink {
    /// A sink with room for `capacity` doubts, and the confirmer's end of it.
    pub fn new(capacity: usize) -> (DoubtSink, mpsc::Receiver<Doubt>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            DoubtSink {
                tx,
                stats: Arc::new(DoubtStats::default()),
            },
            rx,
        )
    }

    /// Hand `d` to the confirmer, or count it `not_asked` when its queue is full or gone.
    pub fn raise(&self, d: Doubt) {
        let reason = d.reason;
        if self.tx.try_send(d).is_err() {
            self.stats.count(reason, DoubtOutcome::NotAsked);
        }
    }

    /// Hand `d` to the confirmer if its queue has room, else give it back: for a raiser with
    /// many doubts at once (inherited routes when recovery ends) that keeps the rest and offers
    /// them again later, at the confirmer's pace. A closed queue counts `not_asked`.
    pub fn offer(&self, d: Doubt) -> Result<(), Doubt> {
        match self.tx.try_send(d) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(d)) => Err(d),
            Err(mpsc::error::TrySendError::Closed(d)) => {
                self.stats.count(d.reason, DoubtOutcome::NotAsked);
                Ok(())
            }
        }
    }

    pub fn stats(&self) -> &Arc<DoubtStats> {
        &self.stats
    }
}

/// Counters of the task's queues.
#[derive(Debug, Default)]
pub struct TaskStats {
    /// Inputs refused by `try_observe`/`try_withdraw` because the queue was full.
    pub inputs_dropped_full: AtomicU64,
    pub changes_sent: AtomicU64,
    /// Changes computed after the installer closed its end (nothing to send them to).
    pub changes_unsent: AtomicU64,
    /// Bumped every loop turn and while idle: the watchdog's proof of progress.
    pub heartbeat: crate::notify::Heartbeat,
}

/// What [`CacheHandle::try_send_snooped`] did.
#[derive(Debug)]
pub enum SnoopedSend {
    Queued,
    /// The queue is full: the input is handed back.
    Full(CacheInput),
    /// The cache task is gone for good: the input is lost.
    Closed,
}

/// The producers' and readers' side of the cache.
#[derive(Debug, Clone)]
pub struct CacheHandle {
    tx: mpsc::Sender<CacheInput>,
    /// The snooper's own queue, served before `tx`.
    snooped: mpsc::Sender<CacheInput>,
    store: Arc<BindingStore>,
    stats: Arc<TaskStats>,
}

impl CacheHandle {
    /// The store, for lookups (never held across `.await` by the store itself).
    pub fn store(&self) -> &Arc<BindingStore> {
        &self.store
    }

    pub fn stats(&self) -> &Arc<TaskStats> {
        &self.stats
    }

    /// Queue an input, waiting for room (back-pressure).
    /// CANCEL-SAFETY: cancel-safe; a cancelled send queued nothing.
    pub async fn send(&self, input: CacheInput) -> Result<(), SendError> {
        self.tx.send(input).await.map_err(|_| SendError::Closed)
    }

    pub async fn observe(&self, obs: Observation) -> Result<(), SendError> {
        self.send(CacheInput::Observe(obs)).await
    }

    /// Queue a snooped input on the snooper's own queue, which the task serves before the
    /// others, waiting for room (back-pressure to the capture, whose packets wait in its ring,
    /// whose drops it counts): never dropped for answers queued by bulk or on-demand.
    /// CANCEL-SAFETY: cancel-safe; a cancelled send queued nothing.
    pub async fn send_snooped(&self, input: CacheInput) -> Result<(), SendError> {
        self.snooped
            .send(input)
            .await
            .map_err(|_| SendError::Closed)
    }

    /// Queue a snooped input on the snooper's own queue if there is room now (the capture's
    /// fast path: no `.await`, so no task switch while the queue has room).
    pub fn try_send_snooped(&self, input: CacheInput) -> SnoopedSend {
        match self.snooped.try_send(input) {
            Ok(()) => SnoopedSend::Queued,
            Err(mpsc::error::TrySendError::Full(input)) => SnoopedSend::Full(input),
            Err(mpsc::error::TrySendError::Closed(_)) => SnoopedSend::Closed,
        }
    }

    /// Wait for room in the snooper's own queue: the permit queues one input. `None`: the
    /// cache task is gone for good.
    /// CANCEL-SAFETY: cancel-safe; a cancelled wait reserved nothing.
    pub async fn snooped_room(&self) -> Option<mpsc::Permit<'_, CacheInput>> {
        self.snooped.reserve().await.ok()
    }

    /// Queue an input without waiting; a full queue is counted.
    pub fn try_send(&self, input: CacheInput) -> Result<(), SendError> {
        self.tx.try_send(input).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.stats
                    .inputs_dropped_full
                    .fetch_add(1, Ordering::Relaxed);
                SendError::Full
            }
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }
}

/// Start the cache task under `sup` (task label `cache`): a run that fails (panics) is
/// followed by a new one on the same store and channels, so producers and the change stream
/// never see them closed; the task ends when every [`CacheHandle`] is gone. Every observation
/// passes [`Admission::admit`] before the store sees it, whoever sent it; the doubts the store
/// raises go to `doubts`. The store may already hold leases (the daemon seeds it from the state
/// file): they go on no change stream, since whoever reads the stream was given them already.
pub fn spawn(
    store: Arc<BindingStore>,
    clock: AgentClock,
    journal: Option<JournalHandle>,
    cfg: CacheTaskConfig,
    admission: Arc<Admission>,
    doubts: DoubtSink,
    sup: &Supervisor,
) -> (CacheHandle, mpsc::Receiver<Change>, JoinHandle<()>) {
    let (handle, changes, task) = start(store, clock, journal, cfg, admission, doubts);
    // Ending means every handle is gone (nothing could feed a new run): done, not a failure.
    let join = tokio::spawn(sup.restart(Task::Cache, Lifetime::UntilDone, move |_| {
        let run = task.clone().run();
        async move {
            run.await;
            Ok::<(), std::convert::Infallible>(())
        }
    }));
    (handle, changes, join)
}

/// The task and its channels, not yet running: [`spawn`] runs it (again after a failure).
fn start(
    store: Arc<BindingStore>,
    clock: AgentClock,
    journal: Option<JournalHandle>,
    cfg: CacheTaskConfig,
    admission: Arc<Admission>,
    doubts: DoubtSink,
) -> (CacheHandle, mpsc::Receiver<Change>, CacheTask) {
    let (tx, rx) = mpsc::channel(cfg.input_queue.max(1));
    let (stx, srx) = mpsc::channel(cfg.snoop_queue.max(1));
    let (ctx, crx) = mpsc::channel(cfg.change_queue.max(1));
    let stats = Arc::new(TaskStats::default());
    let handle = CacheHandle {
        tx,
        snooped: stx,
        store: store.clone(),
        stats: stats.clone(),
    };
    let task = CacheTask {
        store,
        clock,
        journal,
        inputs: Inbox::new(rx),
        snooped: Inbox::new(srx),
        changes: ctx,
        stats,
        admission,
        doubts,
        snapshot_every: Duration::from_millis(cfg.snapshot_interval_ms.max(1)),
    };
    (handle, crx, task)
}

#[derive(Clone)]
struct CacheTask {
    store: Arc<BindingStore>,
    clock: AgentClock,
    journal: Option<JournalHandle>,
    /// Lent to each run (a run that panics drops its guard; tokio's mutex does not poison).
    inputs: Inbox<CacheInput>,
    /// The snooper's queue, lent the same way; served first.
    snooped: Inbox<CacheInput>,
    changes: mpsc::Sender<Change>,
    stats: Arc<TaskStats>,
    snapshot_every: Duration,
    /// The trust boundary: what it refuses never reaches the store.
    admission: Arc<Admission>,
    /// Where the doubts the store raises go: the confirmer's queue.
    doubts: DoubtSink,
}

impl CacheTask {
    /// One run, until every [`CacheHandle`] is gone. Two runs at once take turns on the input
    /// queues (the second waits for the first to end).
    async fn run(self) {
        let mut inputs = self.inputs.lend().await;
        let mut snooped = self.snooped.lend().await;
        let mut snap = tokio::time::interval(self.snapshot_every);
        snap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        snap.tick().await; // the first tick is immediate; the files hold the start's state already
        let mut beat = crate::notify::heartbeat_timer();
        // The expiry timer, kept across turns and moved only when the earliest deadline does:
        // a fresh sleep every turn registered a timer and removed it again each time, and in
        // a burst of REPLYs taken one by one that was a turn per REPLY. `armed`: the deadline
        // it is set to (`None`: not set, or it fired).
        let expiry = tokio::time::sleep_until(crate::time::TokioInstant::now());
        tokio::pin!(expiry);
        let mut armed = None;
        loop {
            self.stats.heartbeat.beat();
            let wake = self
                .store
                .next_deadline()
                .and_then(|t| self.clock.instant_of(t));
            if wake != armed {
                if let Some(at) = wake {
                    expiry.as_mut().reset(at);
                }
                armed = wake;
            }
            tokio::select! {
                input = next_input(&mut snooped, &mut inputs) => {
                    let Some(input) = input else { break };
                    self.dispatch(input, &mut snooped).await;
                    // Then what else is queued by now, without a turn of this `select!` each
                    // (its deadline timer is registered and dropped every turn): in a burst
                    // that turn cost as much as a merge. Bounded, so the timers below are
                    // looked at between runs of queued inputs; snooped inputs still first.
                    for _ in 1..DRAIN {
                        let next = match snooped.try_recv() {
                            Ok(i) => i,
                            Err(_) => match inputs.try_recv() {
                                Ok(i) => i,
                                Err(_) => break,
                            },
                        };
                        self.stats.heartbeat.beat();
                        self.dispatch(next, &mut snooped).await;
                    }
                }
                () = &mut expiry, if armed.is_some() => {
                    armed = None;
                    let applied = self.store.expire_due(self.clock.now());
                    self.emit(applied).await;
                }
                _ = snap.tick() => self.snapshot().await,
                _ = beat.tick() => {}
            }
            if self.journal.as_ref().is_some_and(|j| j.wants_snapshot()) {
                self.snapshot().await;
            }
        }
        if let Some(j) = self.journal.clone() {
            self.snapshot().await;
            // The sync waits for the disk: on a blocking thread, never on a runtime worker.
            let _ = tokio::task::spawn_blocking(move || j.sync()).await;
        }
    }

    /// One input from a queue; a batch item by item, each after the snooped inputs waiting by
    /// then: a batch never holds a snooped REPLY back behind more than one observation.
    async fn dispatch(&self, input: CacheInput, snooped: &mut mpsc::Receiver<CacheInput>) {
        match input {
            CacheInput::ObserveBatch(batch) => {
                for o in batch {
                    while let Ok(s) = snooped.try_recv() {
                        self.handle(s).await;
                    }
                    self.handle(CacheInput::Observe(o)).await;
                    self.stats.heartbeat.beat();
                }
            }
            other => self.handle(other).await,
        }
    }

    /// One input: admitted, merged, its writes journaled and its changes sent.
    async fn handle(&self, input: CacheInput) {
        // Notices for keys the store does not hold (routes inherited without a lease): after
        // the input's own changes.
        let mut unheld = Vec::new();
        let applied = match input {
            CacheInput::Observe(o) => match self.observe(o) {
                Some((applied, u)) => {
                    unheld = u;
                    applied
                }
                None => return,
            },
            CacheInput::ObserveBatch(batch) => {
                for (applied, unheld) in batch.into_iter().filter_map(|o| self.observe(o)) {
                    self.emit(applied).await;
                    for c in unheld {
                        self.emit_change(c).await;
                    }
                }
                return;
            }
            // A withdrawal only removes what the named client holds (merge R14) or is the
            // operator's own word: it claims nothing new.
            CacheInput::Withdraw(w) => {
                unheld = self.unheld_by_release(&w);
                self.store.withdraw(&w)
            }
            // A sweep only removes the answering server's own leases (merge R16).
            CacheInput::Sweep(s) => self.store.sweep(&s),
            // A doubt raised outside the store: to the confirmer, with the holder the cache
            // knows (merge R17).
            CacheInput::Doubt(d) => {
                let d = self.with_holder(d);
                // A refused release about a key nobody holds here questions nothing: no
                // leasequery for it (a client cannot make us ask).
                if d.holder.is_some() || d.reason != DoubtReason::ReleaseNotDone {
                    self.raise(d);
                }
                return;
            }
            // The server says nobody holds the key: removed if still held and not refreshed
            // since the question (merge R17); for a key the store does not hold, a notice (an
            // inherited route goes).
            CacheInput::Confirm(c) => {
                unheld = self.unheld_by_answer(&c);
                self.store.confirm(&c)
            }
            #[cfg(debug_assertions)]
            CacheInput::Stall(d) => {
                tracing::warn!(stall = ?d, "test hook: cache task stalling");
                tokio::time::sleep(d).await;
                return;
            }
        };
        self.emit(applied).await;
        for c in unheld {
            self.emit_change(c).await;
        }
    }

    /// An observation through admission into the store: what it changed, and the notices for
    /// keys it gives up that the store does not hold. `None`: admission refused it.
    fn observe(&self, o: Observation) -> Option<(Applied, Vec<Change>)> {
        let o = self.admit(o)?;
        let unheld = self.unheld_by_zero_lifetime(&o);
        Some((self.store.apply(&o), unheld))
    }

    /// Fill in a doubt's holder, link and interface from the store when the raiser did not know
    /// them (a unicast exchange about a key the cache holds).
    fn with_holder(&self, mut d: Doubt) -> Doubt {
        if d.holder.is_none() {
            if let Some(c) = self.store.with(&d.key, |l| l.client.clone()) {
                d.link = c.link.address;
                d.interface = c.link.interface.clone();
                d.holder = Some(c);
            }
        }
        d
    }

    /// Hand a doubt to the confirmer (a full queue counts it `not_asked`: a doubt changes
    /// nothing by itself).
    fn raise(&self, d: Doubt) {
        self.doubts.raise(d);
    }

    /// The admission stage: what it refuses never reaches the store.
    fn admit(&self, obs: Observation) -> Option<Observation> {
        match self.admission.admit(obs) {
            Admitted::Whole(o) | Admitted::Partial(o, _) => Some(o),
            Admitted::Refused(_) => None,
        }
    }

    /// Keys a snooped RELEASE/DECLINE names that the store does not hold, as notices for the
    /// route side: a route inherited from before the start (a binding without a client) goes
    /// when released from its own link. Only a release whose link is known counts (anchoring);
    /// an operator `clear` speaks for the cache only.
    fn unheld_by_release(&self, w: &Withdrawal) -> Vec<Change> {
        let Some(link) = w.link else {
            return Vec::new();
        };
        if w.reason != crate::cache::binding::WithdrawReason::Released {
            return Vec::new();
        }
        let duid = w.client_duid.clone().unwrap_or_default();
        w.keys
            .iter()
            .filter(|k| self.store.get(k).is_none())
            .map(|k| Change::unheld(*k, Some(notice_view(k, link, None, None, &duid, w.arrival))))
            .collect()
    }

    /// The same for a zero valid lifetime in a snooped REPLY about a key the store does not
    /// hold (the server took it back from whoever holds it, on that link).
    fn unheld_by_zero_lifetime(&self, o: &Observation) -> Vec<Change> {
        if o.source != crate::cache::binding::Source::Snoop {
            return Vec::new();
        }
        let zero = o.leases.iter().filter(|l| l.valid == 0);
        let mut out = Vec::new();
        for l in zero {
            if self.store.get(&l.key).is_none() {
                let duid = o.client_duid.clone();
                // The client the server answered: a zero lifetime for a prefix routed via
                // another client is a stranger's, not the holder's.
                let from = o.relay.as_ref().and_then(|r| r.peer_address);
                let v = notice_view(
                    &l.key,
                    o.link.address,
                    o.link.interface.clone(),
                    from,
                    &duid,
                    o.arrival,
                );
                out.push(Change::unheld(l.key, Some(v)));
            }
        }
        out
    }

    /// The same for a confirming leasequery's answer that nobody holds a key the store does not
    /// hold either (an inherited route nothing explained): the server's word, from no link.
    fn unheld_by_answer(&self, c: &Confirmation) -> Vec<Change> {
        if self.store.get(&c.key).is_some() {
            return Vec::new();
        }
        vec![Change::unheld(c.key, None)]
    }

    /// Hand the writer a copy of the store. The copy (a walk of the whole store) is taken on
    /// a blocking thread, not on a runtime worker; this task waits for it, so no record is sent
    /// between the copy and the snapshot (the writer places it in the record stream by count).
    /// The hand-over itself never waits for the disk: a stuck writer coalesces snapshots.
    async fn snapshot(&self) {
        if let Some(j) = &self.journal {
            let store = self.store.clone();
            match tokio::task::spawn_blocking(move || store.all()).await {
                Ok(all) => {
                    j.snapshot(all);
                }
                Err(e) => tracing::error!(error = %e, "taking the snapshot copy failed"),
            }
        }
    }

    async fn emit(&self, applied: Applied) {
        for d in applied.doubts {
            self.raise(d);
        }
        if let Some(j) = &self.journal {
            // Before the records: the journal may grow as long as the cache is large.
            if !applied.writes.is_empty() {
                j.note_live(self.store.len() as u64);
            }
            for (k, v) in applied.writes {
                j.record(match v {
                    Some(l) => Record::Upsert(k, l),
                    None => Record::Remove(k),
                });
            }
        }
        for c in applied.changes {
            self.emit_change(c).await;
        }
    }

    async fn emit_change(&self, c: Change) {
        if self.changes.send(c).await.is_ok() {
            self.stats.changes_sent.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.changes_unsent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Inputs the cache task takes in one turn of its loop at most (the first, then those already
/// queued), before it looks at its timers (expiry, snapshot, heartbeat) again.
const DRAIN: usize = 64;

/// The next input, a snooped one first. `None` once every handle is gone (both queues close
/// together: one handle holds both senders) and the queues are drained.
/// CANCEL-SAFETY: cancel-safe (both `recv`s are): the task's `select!` may drop it for a timer.
async fn next_input(
    snooped: &mut mpsc::Receiver<CacheInput>,
    inputs: &mut mpsc::Receiver<CacheInput>,
) -> Option<CacheInput> {
    tokio::select! {
        biased;
        Some(i) = snooped.recv() => Some(i),
        i = inputs.recv() => i,
    }
}

/// Where an unheld notice came from: the link, the client's address (in `next_hop`) and DUID.
fn notice_view(
    key: &LeaseKey,
    link: std::net::Ipv6Addr,
    interface: Option<Arc<str>>,
    from: Option<std::net::Ipv6Addr>,
    duid: &crate::wire::Duid,
    at: crate::time::Timestamp,
) -> crate::cache::binding::RouteView {
    crate::cache::binding::RouteView {
        network: key.network(),
        link_address: link,
        interface,
        next_hop: from,
        client_duid: duid.clone(),
        valid_until: at,
    }
}

/// What the unit tests of the tasks that feed the cache share: an admission for their data and
/// a supervisor. The product has no permissive admission; tests build a real one whose link
/// admits what they send.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::Ipv6Addr;
    use std::sync::Arc;

    use tokio::sync::watch;

    use crate::admission::{Admission, LinkRule, OwnAddresses};
    use crate::supervise::{Policy, Supervisor};

    /// The link the tests' observations name (`2001:db8:1::1`, interface `sub0`), admitting
    /// every address and delegated prefix (/32 to /128) in `2001:db8::/32`.
    pub(crate) fn admission() -> Arc<Admission> {
        admission_of(&[(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1), "sub0")])
    }

    /// Links (link-address, interface) each admitting every address and delegated prefix
    /// (/32 to /128) in `2001:db8::/32`; no own or server address to refuse.
    pub(crate) fn admission_of(links: &[(Ipv6Addr, &str)]) -> Arc<Admission> {
        let links = links
            .iter()
            .map(|(address, interface)| LinkRule {
                name: Arc::from(*interface),
                interface: Arc::from(*interface),
                link_address: *address,
                interface_id: None,
                subscriber_prefixes: vec!["2001:db8::/32".parse().expect("a prefix")],
                delegated_length: (32, 128),
                ldra: false,
            })
            .collect();
        Arc::new(Admission::new(links, [], Arc::new(OwnAddresses::default())))
    }

    /// A supervisor restarting fast, and its stop (dropping it stops restarts).
    pub(crate) fn supervisor() -> (watch::Sender<bool>, Supervisor) {
        let (stop, rx) = watch::channel(false);
        let policy = Policy {
            base: crate::time::Duration::from_millis(1),
            ..Policy::default()
        };
        (stop, Supervisor::new(rx, policy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::binding::snooped;
    use crate::cache::{ChangeKind, IaType, ObservedLease, store::CacheConfig};
    use std::net::Ipv6Addr;
    use std::sync::atomic::AtomicUsize;

    /// The task under a supervisor, with the tests' admission, no confirmer listening.
    fn spawn_test(
        store: Arc<BindingStore>,
        clock: AgentClock,
        journal: Option<JournalHandle>,
        cfg: CacheTaskConfig,
    ) -> (CacheHandle, mpsc::Receiver<Change>, JoinHandle<()>) {
        let (_stop, sup) = testing::supervisor();
        let doubts = DoubtSink::new(1).0;
        spawn(
            store,
            clock,
            journal,
            cfg,
            testing::admission(),
            doubts,
            &sup,
        )
    }

    /// An empty store, default configuration.
    fn fresh_store() -> Arc<BindingStore> {
        Arc::new(BindingStore::new(CacheConfig::default()))
    }

    /// Both input queues `inputs` deep, the change queue `changes` deep, and no periodic
    /// snapshot within a test's time.
    fn queues(inputs: usize, changes: usize) -> CacheTaskConfig {
        CacheTaskConfig {
            input_queue: inputs,
            snoop_queue: inputs,
            change_queue: changes,
            snapshot_interval_ms: 3_600_000,
        }
    }

    /// A state writer in a temp dir whose queue holds 4 records, snapshotting after
    /// `snapshot_after` of them: small enough for a test to overflow while it is held.
    fn small_writer(
        snapshot_after: u64,
    ) -> (
        tempfile::TempDir,
        crate::persist::StateWriter,
        crate::persist::JournalHandle,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut pc = crate::persist::PersistConfig::new(dir.path());
        pc.queue = 4;
        pc.snapshot_after_records = snapshot_after;
        let writer = crate::persist::StateWriter::start(pc, Vec::new(), 0).unwrap();
        let journal = writer.handle();
        (dir, writer, journal)
    }

    fn obs(n: u16, valid: u32, clock: &AgentClock) -> Observation {
        snooped(
            vec![0, 1, n as u8],
            Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1),
            vec![ObservedLease {
                key: LeaseKey::Address(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, n)),
                ia: IaType::Na,
                iaid: 1,
                preferred: valid,
                valid,
            }],
            clock.now(),
        )
    }

    /// Issue 21, "snooping never loses a message to a queue full of answers": a bulk recovery
    /// of 100 000 bindings keeps the cache's input queue full (the route feed — the change
    /// consumer — is slow); a RELEASE snooped meanwhile is neither dropped nor queued behind
    /// those answers: it is applied next, while the recovery is still running.
    #[tokio::test]
    async fn a_release_snooped_during_a_bulk_recovery_is_applied_at_once() {
        const BULK: usize = 100_000;
        const QUEUE: usize = 4096;
        let clock = AgentClock::new();
        let store = fresh_store();
        let cfg = queues(QUEUE, 1);
        let (h, mut changes, join) = spawn_test(store.clone(), clock, None, cfg);
        // The subscriber whose release matters, bound by a snooped REPLY before recovery.
        let bound = obs(1, 3600, &clock);
        let victim = bound.leases[0].key;
        h.send_snooped(CacheInput::Observe(bound)).await.unwrap();
        assert_eq!(changes.recv().await.unwrap().key, victim);

        // Bulk recovery: 100 000 answers from a real producer that waits for room.
        let sent = Arc::new(AtomicUsize::new(0));
        let (h2, sent2) = (h.clone(), sent.clone());
        let producer = tokio::spawn(async move {
            for n in 0..BULK {
                let mut o = obs(0, 3600, &clock);
                o.client_duid = (n as u32).to_be_bytes().to_vec().into();
                o.source = crate::cache::Source::Bulk;
                o.leases[0].key = LeaseKey::Address(Ipv6Addr::from(
                    0x2001_0db8_0002_0000_0000_0000_0000_0000u128 + n as u128,
                ));
                h2.observe(o).await.unwrap();
                sent2.fetch_add(1, Ordering::SeqCst);
            }
        });
        // The slow consumer takes a few changes, then lets the queue fill up behind them.
        let mut received = 0;
        while received < 1000 {
            changes.recv().await.unwrap();
            received += 1;
        }
        while sent.load(Ordering::SeqCst) < received + QUEUE {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let queued_ahead = sent.load(Ordering::SeqCst) - received;

        // The RELEASE, by the holder, on its link: it finds room at once (polled once; a send
        // that would wait is dropped unsent, which is cancel-safe).
        let release = h.send_snooped(release_by_holder(victim, &clock));
        let taken = tokio::select! {
            biased;
            r = release => Some(r),
            () = std::future::ready(()) => None,
        };
        assert_eq!(
            taken,
            Some(Ok(())),
            "a snooped RELEASE is neither dropped (Some(Err)) nor made to wait (None) behind \
             {queued_ahead} queued answers"
        );
        let mut answers_before = 0;
        loop {
            let c = changes.recv().await.unwrap();
            if c.key == victim {
                assert_eq!(c.kind, ChangeKind::Removed);
                break;
            }
            answers_before += 1;
        }
        assert!(
            sent.load(Ordering::SeqCst) < BULK && !producer.is_finished(),
            "the release was applied while the recovery was still running"
        );
        assert!(store.get(&victim).is_none());
        // Only what the task already held (the change it was sending, the one buffered) came
        // first, not the thousands of answers queued ahead of the release.
        assert!(
            answers_before <= 2,
            "{answers_before} of the {queued_ahead} answers queued ahead were applied first"
        );

        // The recovery finishes (every answer and the removal were consumed once); nothing was
        // dropped anywhere.
        received += answers_before + 1;
        while received < BULK + 1 {
            changes.recv().await.unwrap();
            received += 1;
        }
        producer.await.unwrap();
        assert_eq!(store.len(), BULK);
        assert_eq!(h.stats().inputs_dropped_full.load(Ordering::Relaxed), 0);
        drop(h);
        join.await.unwrap();
    }

    /// The RELEASE of `victim` by its holder (`obs`'s client), on its own link.
    fn release_by_holder(victim: LeaseKey, clock: &AgentClock) -> CacheInput {
        CacheInput::Withdraw(Withdrawal {
            keys: vec![victim],
            client_duid: Some(vec![0, 1, 1].into()),
            link: Some(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1)),
            iaids: vec![1],
            reason: crate::cache::WithdrawReason::Released,
            arrival: clock.now(),
        })
    }

    /// A bulk batch is taken as its observations in order (admission per observation, each
    /// change as if it came alone), and a snooped RELEASE arriving while
    /// the batch is applied goes in before the rest of the batch, not after it.
    #[tokio::test]
    async fn a_batch_is_applied_in_order_with_snooped_inputs_served_between_its_items() {
        const N: u16 = 64;
        let clock = AgentClock::new();
        let store = fresh_store();
        let (h, mut changes, join) = spawn_test(store.clone(), clock, None, queues(8, 1));
        let bound = obs(1, 3600, &clock);
        let victim = bound.leases[0].key;
        h.send_snooped(CacheInput::Observe(bound)).await.unwrap();
        assert_eq!(changes.recv().await.unwrap().key, victim);
        let bulk = |n: u16| {
            let mut o = obs(n, 3600, &clock);
            o.source = crate::cache::Source::Bulk;
            o
        };
        let mut batch: Vec<Observation> = (100..100 + N).map(bulk).collect();
        // One the tests' admission refuses (a link it does not know): skipped, the rest go on.
        batch[5].link.address = Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 1);
        h.send(CacheInput::ObserveBatch(batch)).await.unwrap();
        // The change queue holds one: the task is inside the batch, waiting to send.
        for n in 100..103 {
            assert_eq!(
                changes.recv().await.unwrap().key,
                LeaseKey::Address(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, n))
            );
        }
        h.send_snooped(release_by_holder(victim, &clock))
            .await
            .unwrap();
        let mut rest = Vec::new();
        while rest.len() < usize::from(N) - 3 - 1 + 1 {
            rest.push(changes.recv().await.unwrap());
        }
        let at = rest
            .iter()
            .position(|c| c.key == victim && c.kind == ChangeKind::Removed)
            .expect("the release was applied");
        // Only what the task held already (the change it was sending, the one after it)
        // came before the release, not the rest of the batch.
        assert!(
            at <= 2,
            "the release came after {at} of the batch's changes"
        );
        let added: Vec<LeaseKey> = rest
            .iter()
            .filter(|c| c.kind == ChangeKind::Added)
            .map(|c| c.key)
            .collect();
        let want: Vec<LeaseKey> = (103..100 + N)
            .filter(|n| *n != 105)
            .map(|n| LeaseKey::Address(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, n)))
            .collect();
        assert_eq!(added, want, "in order, the refused one left out");
        assert_eq!(store.len(), usize::from(N) - 1);
        drop(h);
        join.await.unwrap();
    }

    #[tokio::test]
    async fn slow_installer_back_pressures_producers_and_order_is_kept() {
        let clock = AgentClock::new();
        let store = fresh_store();
        let cfg = queues(1, 1);
        let (h, mut changes, join) = spawn_test(store, clock, None, cfg);
        let done = Arc::new(AtomicUsize::new(0));
        let (h2, d2) = (h.clone(), done.clone());
        let producer = tokio::spawn(async move {
            for n in 1..=20 {
                h2.observe(obs(n, 3600, &clock)).await.unwrap();
                d2.fetch_add(1, Ordering::SeqCst);
            }
        });
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        let sent_while_stalled = done.load(Ordering::SeqCst);
        assert!(
            sent_while_stalled < 20,
            "bounded queues must stall the producer"
        );
        assert!(h.try_send(CacheInput::Observe(obs(99, 1, &clock))).is_err());
        for n in 1..=20u16 {
            let c = changes.recv().await.unwrap();
            assert_eq!(c.kind, ChangeKind::Added);
            assert_eq!(
                c.key,
                LeaseKey::Address(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, n))
            );
        }
        producer.await.unwrap();
        assert_eq!(h.stats().inputs_dropped_full.load(Ordering::Relaxed), 1);
        drop(h);
        join.await.unwrap();
    }

    /// A cache growing from empty (a bulk recovery after a lost state file) tells its journal
    /// how many leases it holds, so the journal may grow as long as the cache before it asks
    /// for a snapshot: after 60 new leases the journal's threshold is the cache's 60, not the
    /// configured 5 or the last snapshot's size (without the cache task's count: a snapshot
    /// of the whole store at each doubling, which a million-lease recovery paid five times).
    #[tokio::test]
    async fn a_growing_cache_raises_its_journals_snapshot_threshold_to_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut pc = crate::persist::PersistConfig::new(dir.path());
        pc.queue = 1024;
        pc.snapshot_after_records = 5;
        let writer = crate::persist::StateWriter::start(pc, Vec::new(), 0).unwrap();
        let journal = writer.handle();
        let st = journal.stats().clone();
        let clock = AgentClock::new();
        let (h, mut changes, join) =
            spawn_test(fresh_store(), clock, Some(journal.clone()), queues(8, 8));
        for n in 1..=60u16 {
            h.observe(obs(n, 3600, &clock)).await.unwrap();
            assert_eq!(changes.recv().await.unwrap().kind, ChangeKind::Added);
        }
        // Each change is sent after its records: all 60 have been counted by now.
        assert_eq!(journal.snapshot_threshold(), 60, "the cache's size");
        drop(h);
        join.await.unwrap();
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
        assert_eq!(st.records_dropped.load(Ordering::Relaxed), 0);
        assert_eq!(st.records_written.load(Ordering::Relaxed), 60);
        let loaded = crate::persist::load(dir.path(), clock.now()).unwrap();
        assert_eq!(loaded.leases.len(), 60);
    }

    /// A hung disk must not freeze route programming: with the writer thread stuck, every
    /// observation still becomes a change; what the writer's queue cannot take is dropped and
    /// counted, and a snapshot covers them.
    #[tokio::test]
    async fn a_stuck_writer_does_not_stop_the_cache_task() {
        let (dir, writer, journal) = small_writer(2);
        let held = journal.hold();
        let clock = AgentClock::new();
        let store = fresh_store();
        let cfg = queues(8, 8);
        let (h, mut changes, join) = spawn_test(store, clock, Some(journal.clone()), cfg);
        for n in 1..=200u16 {
            h.observe(obs(n, 3600, &clock)).await.unwrap();
            let c = changes.recv().await.unwrap();
            assert_eq!(c.kind, ChangeKind::Added, "change {n} came through");
        }
        let st = journal.stats();
        assert!(
            st.records_dropped.load(Ordering::Relaxed) > 0,
            "the stuck writer's queue overflowed"
        );
        assert_eq!(
            st.records_written.load(Ordering::Relaxed),
            0,
            "the writer was stuck throughout"
        );
        // The disk answers again: the writer catches up, the last snapshot holds all 200.
        drop(held);
        drop(h);
        join.await.unwrap();
        assert!(st.snapshots_written.load(Ordering::Relaxed) >= 2);
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
        let loaded = crate::persist::load(dir.path(), clock.now()).unwrap();
        assert_eq!(loaded.leases.len(), 200);
    }

    /// A burst of records the writer's queue cannot take while a snapshot waits for the writer
    /// costs one more copy of the store, not one per dropped record (at 1M leases each copy is
    /// a walk of the whole store the task waits for: a bulk recovery took 77 of them): the task
    /// takes the next copy only once the writer has taken the pending one and written it. And
    /// nothing is lost: with the task still running (no shutdown snapshot), the file ends up
    /// holding every lease, so a snapshot was taken after the last dropped record.
    #[tokio::test]
    async fn a_burst_against_a_stuck_writer_costs_at_most_one_more_snapshot() {
        let (dir, writer, journal) = small_writer(1_000_000);
        let j = journal.clone();
        // The initial snapshot is written before the writer blocks.
        assert!(tokio::task::spawn_blocking(move || j.sync()).await.unwrap());
        let held = journal.hold();
        let clock = AgentClock::new();
        let store = fresh_store();
        let cfg = queues(8, 8);
        let (h, mut changes, join) = spawn_test(store, clock, Some(journal.clone()), cfg);
        for n in 1..=200u16 {
            h.observe(obs(n, 3600, &clock)).await.unwrap();
            changes.recv().await.unwrap();
        }
        let st = journal.stats().clone();
        assert!(st.records_dropped.load(Ordering::Relaxed) > 100, "a burst");
        assert_eq!(
            st.snapshots_coalesced.load(Ordering::Relaxed),
            0,
            "one copy waits for the stuck writer; the later drops do not take another"
        );
        drop(held);
        // Bounded wait for the file to hold all 200 while the task runs on.
        let mut complete = false;
        for _ in 0..300 {
            let j = journal.clone();
            assert!(tokio::task::spawn_blocking(move || j.sync()).await.unwrap());
            let loaded = crate::persist::load(dir.path(), clock.now());
            if loaded.is_ok_and(|l| l.leases.len() == 200) {
                complete = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            complete,
            "a snapshot after the last dropped record reached the file"
        );
        assert_eq!(st.snapshots_coalesced.load(Ordering::Relaxed), 0);
        assert!(
            st.snapshots_written.load(Ordering::Relaxed) <= 3,
            "the initial one, the pending one and at most one more: {}",
            st.snapshots_written.load(Ordering::Relaxed)
        );
        drop(h);
        join.await.unwrap();
        tokio::task::spawn_blocking(move || writer.shutdown())
            .await
            .unwrap();
    }

    /// A run that dies (here aborted mid-way, as a panic would end it) is replaced by a new run
    /// on the same store and channels: producers and the change stream never see them closed,
    /// and the store keeps what the first run applied.
    #[tokio::test]
    async fn a_new_run_takes_over_the_same_store_and_channels() {
        let clock = AgentClock::new();
        let store = fresh_store();
        let (h, mut changes, task) = start(
            store,
            clock,
            None,
            CacheTaskConfig::default(),
            testing::admission(),
            DoubtSink::new(1).0,
        );
        let first = tokio::spawn(task.clone().run());
        h.observe(obs(1, 3600, &clock)).await.unwrap();
        assert_eq!(changes.recv().await.unwrap().kind, ChangeKind::Added);
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        // Sent while no run is there: waits in the queue.
        h.observe(obs(2, 3600, &clock)).await.unwrap();
        let second = tokio::spawn(task.run());
        let c = changes.recv().await.unwrap();
        assert_eq!(
            (c.kind, c.key),
            (
                ChangeKind::Added,
                LeaseKey::Address(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2))
            )
        );
        assert_eq!(h.store().len(), 2, "the first run's binding is still there");
        drop(h);
        second.await.unwrap();
    }

    #[tokio::test]
    async fn expiry_emits_removal_at_the_deadline() {
        let clock = AgentClock::new();
        let store = fresh_store();
        let (h, mut changes, _join) = spawn_test(store, clock, None, CacheTaskConfig::default());
        h.observe(obs(1, 1, &clock)).await.unwrap();
        assert_eq!(changes.recv().await.unwrap().kind, ChangeKind::Added);
        let t = crate::time::TokioInstant::now();
        let c = changes.recv().await.unwrap();
        assert_eq!(c.kind, ChangeKind::Removed);
        assert!(
            t.elapsed() >= Duration::from_millis(900),
            "removed only once the lifetime ran out"
        );
        assert!(h.store().is_empty());
        assert_eq!(h.store().stats().expired(), 1);
    }

    /// The expiry timer follows the earliest deadline: armed for a long lease, it is moved
    /// earlier when a shorter one arrives (that one lapses at its own time, not the long
    /// one's), and armed again after it fired for the deadline after it.
    #[tokio::test]
    async fn expiry_follows_the_earliest_deadline_as_leases_come_and_go() {
        let clock = AgentClock::new();
        let store = fresh_store();
        let (h, mut changes, _join) = spawn_test(store, clock, None, CacheTaskConfig::default());
        h.observe(obs(1, 3600, &clock)).await.unwrap();
        assert_eq!(changes.recv().await.unwrap().kind, ChangeKind::Added);
        h.observe(obs(2, 1, &clock)).await.unwrap();
        h.observe(obs(3, 2, &clock)).await.unwrap();
        assert_eq!(changes.recv().await.unwrap().kind, ChangeKind::Added);
        assert_eq!(changes.recv().await.unwrap().kind, ChangeKind::Added);
        // Bounded: a timer left at the hour-long lease's deadline would never get here.
        let gone = tokio::time::timeout(Duration::from_secs(30), async {
            let mut gone = Vec::new();
            while gone.len() < 2 {
                let c = changes.recv().await.unwrap();
                assert_eq!(c.kind, ChangeKind::Removed);
                gone.push(c.key);
            }
            gone
        })
        .await
        .expect("the short leases lapse at their own deadlines");
        assert_eq!(
            gone,
            vec![
                obs(2, 1, &clock).leases[0].key,
                obs(3, 1, &clock).leases[0].key
            ]
        );
        assert_eq!(h.store().len(), 1, "the hour-long lease stays");
    }

    /// Admission is not optional: an observation whose link no configured link names never
    /// reaches the store or the change stream, and is counted; the next admitted one is.
    #[tokio::test]
    async fn what_admission_refuses_never_reaches_the_store() {
        let clock = AgentClock::new();
        let admission = testing::admission();
        let (_stop, sup) = testing::supervisor();
        let (h, mut changes, _join) = spawn(
            fresh_store(),
            clock,
            None,
            CacheTaskConfig::default(),
            admission.clone(),
            DoubtSink::new(1).0,
            &sup,
        );
        let mut stranger = obs(1, 3600, &clock);
        stranger.link.address = Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 1);
        h.observe(stranger).await.unwrap();
        h.observe(obs(2, 3600, &clock)).await.unwrap();
        let c = changes.recv().await.unwrap();
        assert_eq!(
            (c.kind, c.key),
            (ChangeKind::Added, obs(2, 1, &clock).leases[0].key),
            "the refused observation came first"
        );
        assert_eq!(h.store().len(), 1);
        assert_eq!(
            admission.stats().get(
                crate::admission::Origin::Snoop,
                crate::admission::Rejection::UnknownLink
            ),
            1
        );
        // Admitted bindings go on the configured link's interface.
        let l = h.store().get(&c.key).unwrap();
        assert_eq!(l.client.link.interface.as_deref(), Some("sub0"));
    }

    /// A binding refused by a cap (merge R10) never enters the change stream (so neither the
    /// kernel nor the trigger sets see it); once a release frees room the next one does.
    #[tokio::test]
    async fn a_binding_refused_by_a_cap_emits_no_change() {
        let clock = AgentClock::new();
        let mut cc = CacheConfig::default();
        cc.merge.max_bindings = 2;
        let store = Arc::new(BindingStore::new(cc));
        let (h, mut changes, _join) = spawn_test(store, clock, None, CacheTaskConfig::default());
        for n in [1, 2, 3] {
            h.observe(obs(n, 3600, &clock)).await.unwrap();
        }
        h.send(CacheInput::Withdraw(crate::cache::Withdrawal {
            link: None,
            iaids: Vec::new(),
            keys: vec![obs(1, 0, &clock).leases[0].key],
            client_duid: None,
            reason: crate::cache::WithdrawReason::Operator,
            arrival: clock.now(),
        }))
        .await
        .unwrap();
        h.observe(obs(4, 3600, &clock)).await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..4 {
            let c = changes.recv().await.unwrap();
            let LeaseKey::Address(a) = c.key else {
                panic!("{c:?}")
            };
            seen.push((c.kind, a.segments()[7]));
        }
        assert_eq!(
            seen,
            vec![
                (ChangeKind::Added, 1),
                (ChangeKind::Added, 2),
                (ChangeKind::Removed, 1),
                (ChangeKind::Added, 4)
            ],
            "the refused binding 3 emitted a change"
        );
        assert!(h.store().get(&obs(3, 1, &clock).leases[0].key).is_none());
        assert_eq!(
            h.store()
                .stats()
                .verdict(crate::cache::MergeVerdict::OverTotalCap),
            1
        );
    }

    /// Merge R17 through the task: a stranger's zero lifetime changes nothing and its doubt
    /// reaches the sink with both clients; a doubt raised outside the store gets the holder the
    /// store knows; a confirmation that nobody holds the key removes it (a change, journalled
    /// like any other).
    #[tokio::test]
    async fn doubts_reach_the_sink_with_the_holder_and_a_confirmation_removes() {
        use crate::cache::{Confirmation, DoubtReason, ServerId};
        let clock = AgentClock::new();
        let store = fresh_store();
        let (sink, mut asked) = DoubtSink::new(8);
        let (_stop, sup) = testing::supervisor();
        let (h, mut changes, _run) = spawn(
            store,
            clock,
            None,
            CacheTaskConfig::default(),
            testing::admission(),
            sink,
            &sup,
        );
        let held = obs(1, 3600, &clock);
        let key = held.leases[0].key;
        h.observe(held.clone()).await.unwrap();
        assert_eq!(changes.recv().await.unwrap().kind, ChangeKind::Added);
        // Client 2's zero lifetime for client 1's address.
        let mut stranger = obs(1, 0, &clock);
        stranger.client_duid = vec![0, 1, 99].into();
        h.observe(stranger).await.unwrap();
        let d = asked.recv().await.unwrap();
        assert_eq!(d.reason, DoubtReason::ZeroLifetimeOtherClient);
        assert_eq!(d.key, key);
        assert_eq!(d.holder.as_ref().map(|c| &c.duid[..]), Some(&[0, 1, 1][..]));
        assert_eq!(d.claimant.as_deref(), Some(&[0, 1, 99][..]));
        assert_eq!(d.link, held.link.address);
        assert!(h.store().get(&key).is_some(), "a doubt removed the binding");
        // A refused release (release_not_done) about a key nobody holds asks nothing; about a
        // held key it reaches the sink with the holder. The sink is FIFO, so the next doubt
        // out shows the first was dropped.
        let unheld = LeaseKey::Address("2001:db8:ffff::1".parse().unwrap());
        for k in [unheld, key] {
            h.send(CacheInput::Doubt(Doubt {
                key: k,
                reason: DoubtReason::ReleaseNotDone,
                holder: None,
                claimant: Some(vec![0, 1, 1].into()),
                link: std::net::Ipv6Addr::UNSPECIFIED,
                interface: None,
                at: clock.now(),
            }))
            .await
            .unwrap();
        }
        let d = asked.recv().await.unwrap();
        assert_eq!((d.reason, d.key), (DoubtReason::ReleaseNotDone, key));
        assert_eq!(d.holder.as_ref().map(|c| &c.duid[..]), Some(&[0, 1, 1][..]));
        // A doubt from outside the store (a unicast exchange) without a holder.
        h.send(CacheInput::Doubt(Doubt {
            key,
            reason: DoubtReason::Unicast,
            holder: None,
            claimant: None,
            link: std::net::Ipv6Addr::UNSPECIFIED,
            interface: None,
            at: clock.now(),
        }))
        .await
        .unwrap();
        let d = asked.recv().await.unwrap();
        assert_eq!(d.reason, DoubtReason::Unicast);
        assert_eq!(d.holder.as_ref().map(|c| &c.duid[..]), Some(&[0, 1, 1][..]));
        assert_eq!(d.link, held.link.address);
        // The server says nobody holds it (asked after the lease's last transaction).
        let asked_at = clock.now().plus_millis(1);
        h.send(CacheInput::Confirm(Confirmation {
            key,
            reason: DoubtReason::ZeroLifetimeOtherClient,
            server: Arc::new(ServerId {
                duid: vec![0, 1, 0, 1, 9].into(),
                address: std::net::Ipv6Addr::LOCALHOST,
            }),
            asked: asked_at,
            arrival: asked_at.plus_millis(1),
        }))
        .await
        .unwrap();
        // Something after it, so a confirmation that did nothing fails instead of hanging.
        let next = obs(2, 3600, &clock);
        h.observe(next.clone()).await.unwrap();
        let c = changes.recv().await.unwrap();
        assert_eq!((c.kind, c.key), (ChangeKind::Removed, key));
        assert!(h.store().get(&key).is_none());
        let c = changes.recv().await.unwrap();
        assert_eq!((c.kind, c.key), (ChangeKind::Added, next.leases[0].key));
    }

    /// Keys the cache does not hold, named by a snooped release, a snooped zero lifetime or a
    /// server's "nobody holds it", come out as `Unheld` notices after the input's own changes
    /// (the route side withdraws an inherited route with them); held keys, operator clears,
    /// releases of unknown link and answers other than snooped ones do not.
    #[tokio::test]
    async fn keys_nobody_holds_come_out_as_unheld_notices() {
        let clock = AgentClock::new();
        let store = fresh_store();
        let (h, mut changes, _join) = spawn_test(store, clock, None, CacheTaskConfig::default());
        // A missing notice fails the test instead of hanging it.
        async fn next(rx: &mut mpsc::Receiver<Change>) -> Change {
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a change or notice came")
                .expect("stream open")
        }
        let link = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
        let held = obs(1, 3600, &clock);
        let held_key = held.leases[0].key;
        h.observe(held).await.unwrap();
        assert_eq!(next(&mut changes).await.kind, ChangeKind::Added);
        let unheld_key = obs(2, 0, &clock).leases[0].key;
        let release = |keys: Vec<LeaseKey>, link: Option<Ipv6Addr>, reason| {
            CacheInput::Withdraw(crate::cache::Withdrawal {
                link,
                iaids: Vec::new(),
                keys,
                client_duid: Some(vec![0, 1, 2].into()),
                reason,
                arrival: clock.now(),
            })
        };
        use crate::cache::WithdrawReason::{Operator, Released};
        // Not a notice: an operator clear, a release of unknown link, a leasequery answer.
        h.send(release(vec![unheld_key], None, Released))
            .await
            .unwrap();
        h.send(release(vec![unheld_key], Some(link), Operator))
            .await
            .unwrap();
        let mut answer = obs(2, 0, &clock);
        answer.source = crate::cache::Source::Leasequery;
        h.observe(answer).await.unwrap();
        // A release from `link` naming one held and one unheld key: the held one is removed
        // (its holder released it), the other is a notice carrying the link.
        let mut both = release(vec![held_key, unheld_key], Some(link), Released);
        if let CacheInput::Withdraw(w) = &mut both {
            w.client_duid = Some(vec![0, 1, 1].into());
        }
        h.send(both).await.unwrap();
        let c = next(&mut changes).await;
        assert_eq!((c.kind, c.key), (ChangeKind::Removed, held_key));
        let c = next(&mut changes).await;
        assert_eq!((c.kind, c.key), (ChangeKind::Unheld, unheld_key));
        let from = c.old.expect("the link it came from");
        assert_eq!(from.link_address, link);
        assert_eq!(&*from.client_duid, &[0, 1, 1]);
        assert!(c.new.is_none());
        // A snooped zero lifetime for an unheld key, from its link, to the client at `peer`.
        let peer = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x66);
        let mut zero = obs(2, 0, &clock);
        zero.relay = Some(crate::cache::RelayData {
            peer_address: Some(peer),
            interface_id: None,
            remote_id: None,
            access: None,
        });
        h.observe(zero).await.unwrap();
        let c = next(&mut changes).await;
        assert_eq!((c.kind, c.key), (ChangeKind::Unheld, unheld_key));
        let from = c.old.unwrap();
        assert_eq!((from.link_address, from.next_hop), (link, Some(peer)));
        // A server's answer that nobody holds it: a notice from no link.
        let confirm = |key| {
            CacheInput::Confirm(Confirmation {
                key,
                reason: crate::cache::DoubtReason::Inherited,
                server: Arc::new(crate::cache::binding::ServerId {
                    duid: vec![0, 1].into(),
                    address: Ipv6Addr::LOCALHOST,
                }),
                asked: clock.now(),
                arrival: clock.now(),
            })
        };
        h.send(confirm(unheld_key)).await.unwrap();
        let c = next(&mut changes).await;
        assert_eq!(
            (c.kind, c.key, c.old),
            (ChangeKind::Unheld, unheld_key, None)
        );
        // Held again: an answer about it is no notice (the store decides about held keys).
        h.observe(obs(2, 3600, &clock)).await.unwrap();
        assert_eq!(next(&mut changes).await.kind, ChangeKind::Added);
        h.send(confirm(unheld_key)).await.unwrap();
        h.observe(obs(3, 3600, &clock)).await.unwrap();
        let c = next(&mut changes).await;
        assert_eq!(c.kind, ChangeKind::Added, "no notice before it: {c:?}");
    }

    /// `offer` hands a doubt on when there is room and gives it back when not; a closed
    /// confirmer counts it `not_asked`.
    #[tokio::test]
    async fn offer_gives_a_doubt_back_when_the_confirmer_is_full() {
        let (sink, rx) = DoubtSink::new(1);
        let d = Doubt {
            key: LeaseKey::Address(Ipv6Addr::LOCALHOST),
            reason: crate::cache::DoubtReason::Inherited,
            holder: None,
            claimant: None,
            link: Ipv6Addr::LOCALHOST,
            interface: None,
            at: crate::time::Timestamp::from_secs(1),
        };
        assert_eq!(sink.offer(d.clone()), Ok(()));
        assert_eq!(sink.offer(d.clone()), Err(d.clone()));
        drop(rx);
        assert_eq!(sink.offer(d.clone()), Ok(()));
        assert_eq!(
            sink.stats()
                .get(crate::cache::DoubtReason::Inherited, DoubtOutcome::NotAsked),
            1
        );
    }
}
