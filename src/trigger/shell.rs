//! The trigger's tokio shell: installs the table, reads NFLOG, keeps the sets in step with the
//! cache, removes the table on shutdown. Decisions live in [`super::known`], [`super::ruleset`]
//! and [`super::nflog`].
//!
//! Call [`Trigger::start`] on a thread inside the network namespace the rules belong to: the
//! NFLOG socket and the `nft` child processes take that thread's namespace.

use std::net::Ipv6Addr;
use std::sync::{Arc, Mutex, MutexGuard};

use netlink_sys::{AsyncSocket, AsyncSocketExt, TokioSocket, protocols::NETLINK_NETFILTER};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use super::known::{Batch, KnownSets};
use super::nflog::{self, GroupConfig, Item};
use super::nfset;
use super::nft::{self, NftError};
use super::ruleset::{self, RuleParams, RulesetError};
use super::{TriggerConfig, TriggerCounter, TriggerEvent, TriggerLink, TriggerStats};
use crate::cache::{Change, LeaseKey, RouteView};
use crate::supervise::{Lifetime, Supervisor, Task};
use crate::time::{Duration, Instant};

/// Why the trigger could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TriggerError {
    #[error("trigger rule set: {0}")]
    Ruleset(#[from] RulesetError),
    #[error("installing the trigger table: {0}")]
    Nft(#[from] NftError),
    #[error("NFLOG socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("binding NFLOG group {group} refused: {source}")]
    Bind { group: u16, source: std::io::Error },
    #[error("no answer binding NFLOG group {group}")]
    BindTimeout { group: u16 },
}

#[derive(Debug)]
struct Shared {
    sets: Mutex<KnownSets>,
    wake: Notify,
    stats: Arc<TriggerStats>,
    /// An `nft` run of the set-sync task is under way.
    applying: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Short critical sections only, never across an `.await`; a poisoned lock still holds
    /// consistent sets (every method leaves them whole), so it is used as is.
    fn sets(&self) -> MutexGuard<'_, KnownSets> {
        self.sets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the daemon keeps to feed the trigger and read its counters.
#[derive(Debug, Clone)]
pub struct TriggerHandle {
    shared: Arc<Shared>,
}

impl TriggerHandle {
    /// Follow one cache change (non-blocking: the set-sync task batches the `nft` work).
    pub fn on_change(&self, c: &Change) {
        let pending = {
            let mut s = self.shared.sets();
            s.on_change(c);
            s.pending()
        };
        if pending {
            self.shared.wake.notify_one();
        }
    }

    /// Follow a batch of cache changes under one lock.
    pub fn on_changes(&self, changes: &[Change]) {
        let pending = {
            let mut s = self.shared.sets();
            for c in changes {
                s.on_change(c);
            }
            s.pending()
        };
        if pending {
            self.shared.wake.notify_one();
        }
    }

    /// Whether the cache covers `source` on trigger link `link`.
    pub fn knows(&self, link: usize, source: Ipv6Addr) -> bool {
        self.shared.sets().knows(link, source)
    }

    pub fn stats(&self) -> &Arc<TriggerStats> {
        &self.shared.stats
    }

    /// Whether set changes are still waiting for, or in, an `nft` run.
    pub fn sync_pending(&self) -> bool {
        self.shared
            .applying
            .load(std::sync::atomic::Ordering::Acquire)
            || self.shared.sets().pending()
    }
}

/// The running trigger: its table is in the kernel while this lives.
#[derive(Debug)]
pub struct Trigger {
    handle: TriggerHandle,
    tasks: JoinSet<()>,
    program: String,
    installed: bool,
}

impl Trigger {
    /// Binds the NFLOG group, installs the table (replacing a stale one) with the sets filled
    /// from `initial`, and spawns the NFLOG reader and the set-sync task (both supervised with [`Trigger::start_supervised`]; a restarted set-sync resyncs the sets). Events arrive on the
    /// returned receiver.
    pub async fn start(
        cfg: TriggerConfig,
        links: Vec<TriggerLink>,
        initial: impl IntoIterator<Item = (LeaseKey, RouteView)>,
    ) -> Result<(Trigger, mpsc::Receiver<TriggerEvent>), TriggerError> {
        Self::start_with(cfg, links, initial, None).await
    }

    /// [`Trigger::start`] with the NFLOG reader under `sup` (task label `nflog`): a reader whose
    /// socket fails, or that panics, is restarted on a newly bound socket; the event queue
    /// survives the restart.
    pub async fn start_supervised(
        cfg: TriggerConfig,
        links: Vec<TriggerLink>,
        initial: impl IntoIterator<Item = (LeaseKey, RouteView)>,
        sup: &Supervisor,
    ) -> Result<(Trigger, mpsc::Receiver<TriggerEvent>), TriggerError> {
        Self::start_with(cfg, links, initial, Some(sup)).await
    }

    async fn start_with(
        cfg: TriggerConfig,
        links: Vec<TriggerLink>,
        initial: impl IntoIterator<Item = (LeaseKey, RouteView)>,
        sup: Option<&Supervisor>,
    ) -> Result<(Trigger, mpsc::Receiver<TriggerEvent>), TriggerError> {
        let params = RuleParams {
            group: cfg.nflog_group,
            enforcement: cfg.enforcement,
            rate_per_sec: cfg.log_rate_per_sec,
            burst: cfg.log_burst,
            snaplen: cfg.snaplen,
        };
        let mut sets = KnownSets::new(&links, cfg.dirty_max);
        for (k, v) in initial {
            sets.insert(&k, &v);
        }
        let contents = sets.initial();
        let script = ruleset::install(&params, &links, &contents)?;
        let sock = bind(&cfg).await?;
        // Opened here, on the caller's thread, so it is in the caller's namespace; a restarted
        // set-sync task keeps it.
        let sets_sock = Arc::new(nf_tables_socket()?);
        let timeout = Duration::from_millis(cfg.nft_timeout_ms);
        nft::run(&cfg.nft_program, &script, timeout).await?;
        let stats = Arc::new(TriggerStats::default());
        stats.add(TriggerCounter::NftRuns, 1);
        let shared = Arc::new(Shared {
            sets: Mutex::new(sets),
            wake: Notify::new(),
            stats,
            applying: std::sync::atomic::AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel(cfg.event_queue.max(1));
        let mut tasks = JoinSet::new();
        let links: Arc<[TriggerLink]> = links.into();
        match sup {
            None => {
                let (sh, c) = (shared.clone(), cfg.clone());
                tasks.spawn(async move {
                    if let Err(e) = listen(sock, sh, links, tx, c).await {
                        tracing::error!(error = %e, "NFLOG socket failed; trigger stops reading");
                    }
                });
            }
            Some(sup) => {
                let (mut first, sh, c) = (Some(sock), shared.clone(), cfg.clone());
                tasks.spawn(sup.restart(Task::Nflog, Lifetime::Forever, move |_| {
                    let (sock, sh, links, tx, c) = (
                        first.take(),
                        sh.clone(),
                        links.clone(),
                        tx.clone(),
                        c.clone(),
                    );
                    async move {
                        let sock = match sock {
                            Some(s) => s,
                            None => bind(&c).await?,
                        };
                        listen(sock, sh, links, tx, c).await?;
                        Ok::<(), TriggerError>(())
                    }
                }));
            }
        }
        match sup {
            None => {
                tasks.spawn(sync(shared.clone(), cfg.clone(), sets_sock));
            }
            Some(sup) => {
                let (sh, c) = (shared.clone(), cfg.clone());
                tasks.spawn(
                    sup.restart(Task::TriggerSync, Lifetime::Forever, move |run| {
                        let (sh, c, sock) = (sh.clone(), c.clone(), sets_sock.clone());
                        async move {
                            if run > 0 {
                                // The failed run may have taken a batch it never applied: what the
                                // kernel's sets hold is no longer known, so the next batch resyncs.
                                sh.sets().failed();
                                sh.applying
                                    .store(false, std::sync::atomic::Ordering::Release);
                                sh.wake.notify_one();
                            }
                            sync(sh, c, sock).await;
                            Ok::<(), std::convert::Infallible>(())
                        }
                    }),
                );
            }
        }
        let trigger = Trigger {
            handle: TriggerHandle { shared },
            tasks,
            program: cfg.nft_program,
            installed: true,
        };
        Ok((trigger, rx))
    }

    pub fn handle(&self) -> TriggerHandle {
        self.handle.clone()
    }

    /// Stops the tasks and removes the table.
    pub async fn shutdown(mut self) -> Result<(), NftError> {
        self.tasks.shutdown().await;
        self.installed = false;
        nft::run(&self.program, &ruleset::remove(), Duration::from_secs(10)).await
    }
}

impl Drop for Trigger {
    fn drop(&mut self) {
        self.tasks.abort_all();
        if self.installed {
            // Not shut down properly (error path, panic): still leave no rules behind.
            if let Err(e) = nft::run_blocking(&self.program, &ruleset::remove()) {
                tracing::warn!(error = %e, "removing the trigger table");
            }
        }
    }
}

/// Opens the NFLOG socket and binds the group, waiting for the kernel's ack.
async fn bind(cfg: &TriggerConfig) -> Result<TokioSocket, TriggerError> {
    let mut sock = TokioSocket::new(NETLINK_NETFILTER)?;
    sock.socket_mut().bind_auto()?;
    sock.socket_ref().set_rx_buf_sz(cfg.receive_buffer)?;
    let group = cfg.nflog_group;
    let seq = 1;
    let msg = nflog::emit_bind(
        &GroupConfig {
            group,
            copy_range: cfg.snaplen,
            flush_timeout_cs: cfg.nflog_flush_cs,
            queue_threshold: cfg.nflog_queue_threshold,
        },
        seq,
    );
    sock.send(&msg).await?;
    let mut buf = Vec::with_capacity(8192);
    let ack = async {
        loop {
            buf.clear();
            sock.recv(&mut buf).await?;
            for item in nflog::messages(&buf).flatten() {
                if let Item::Ack { seq: s, errno } = item
                    && s == seq
                {
                    return if errno == 0 {
                        Ok(())
                    } else {
                        Err(TriggerError::Bind {
                            group,
                            source: std::io::Error::from_raw_os_error(errno.saturating_neg()),
                        })
                    };
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), ack)
        .await
        .map_err(|_| TriggerError::BindTimeout { group })??;
    Ok(sock)
}

/// Reports a (link, source) at most once per window, in a fixed table: a flood of distinct
/// sources overwrites slots and never allocates.
struct Dedupe {
    slots: Vec<Option<(Ipv6Addr, usize, Instant)>>,
    window: Duration,
}

impl Dedupe {
    fn new(slots: usize, window: Duration) -> Self {
        Dedupe {
            slots: vec![None; slots.max(1)],
            window,
        }
    }

    fn fresh(&mut self, now: Instant, link: usize, src: Ipv6Addr) -> bool {
        let x = u128::from(src) ^ (link as u128).rotate_left(64);
        let h = ((x as u64) ^ ((x >> 64) as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let i = (h >> 32) as usize % self.slots.len();
        let slot = &mut self.slots[i];
        if let Some((a, l, t)) = *slot
            && a == src
            && l == link
            && now.saturating_duration_since(t) < self.window
        {
            return false;
        }
        *slot = Some((src, link, now));
        true
    }
}

async fn listen(
    sock: TokioSocket,
    shared: Arc<Shared>,
    links: Arc<[TriggerLink]>,
    tx: mpsc::Sender<TriggerEvent>,
    cfg: TriggerConfig,
) -> std::io::Result<()> {
    let stats = shared.stats.clone();
    let mut dedupe = Dedupe::new(
        cfg.dedupe_slots,
        Duration::from_millis(cfg.dedupe_window_ms),
    );
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        buf.clear();
        match sock.recv(&mut buf).await {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                stats.add(TriggerCounter::Overrun, 1);
                continue;
            }
            Err(e) => return Err(e),
        };
        let now = Instant::now();
        for item in nflog::messages(&buf) {
            let p = match item {
                Ok(Item::Packet(p)) => p,
                Ok(_) => continue,
                Err(e) => {
                    stats.add(TriggerCounter::Malformed, 1);
                    tracing::debug!(reason = e.label(), error = %e, "malformed NFLOG message");
                    continue;
                }
            };
            let source = match nflog::source_of(p.payload) {
                Ok(s) => s,
                Err(e) => {
                    stats.add(TriggerCounter::Malformed, 1);
                    tracing::debug!(reason = e.label(), error = %e, "malformed NFLOG payload");
                    continue;
                }
            };
            let link = p.prefix.and_then(ruleset::link_of_prefix);
            let Some((l, link)) = link.and_then(|l| links.get(l).map(|k| (l, k))) else {
                stats.add(TriggerCounter::Foreign, 1);
                continue;
            };
            if p.group != cfg.nflog_group
                || !link.subscriber_prefixes.iter().any(|n| n.contains(source))
            {
                stats.add(TriggerCounter::Foreign, 1);
                continue;
            }
            if shared.sets().knows(l, source) {
                stats.add(TriggerCounter::Known, 1);
                continue;
            }
            if !dedupe.fresh(now, l, source) {
                stats.add(TriggerCounter::Deduped, 1);
                continue;
            }
            let ev = TriggerEvent {
                link: l,
                link_name: link.name.clone(),
                interface: link.interface.clone(),
                link_address: link.link_address,
                source,
                at: now,
            };
            match tx.try_send(ev) {
                Ok(()) => stats.add(TriggerCounter::Events, 1),
                Err(mpsc::error::TrySendError::Full(_)) => stats.add(TriggerCounter::Dropped, 1),
                Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
            }
        }
    }
}

/// The socket set updates are written to ([`nfset`]): NETLINK_NETFILTER, no groups.
fn nf_tables_socket() -> Result<TokioSocket, TriggerError> {
    let mut sock = TokioSocket::new(NETLINK_NETFILTER)?;
    sock.socket_mut().bind_auto()?;
    Ok(sock)
}

/// Sends one set-update transaction and waits for the kernel's answer to each message: done
/// when every message is acked, failed at the first error (nf_tables then undid all of it).
/// Answers to earlier transactions (one abandoned at a timeout) are told apart by sequence
/// number and skipped.
async fn apply_update(
    sock: &TokioSocket,
    ops: &[ruleset::SetOp],
    seq: u32,
    timeout: Duration,
) -> Result<(), NftError> {
    let batch = nfset::update(ops, seq);
    let (first, end) = (seq, batch.acks.end.wrapping_add(1));
    let ours = |s: u32| s.wrapping_sub(first) < end.wrapping_sub(first);
    let mut waiting = batch.acks.end.wrapping_sub(batch.acks.start);
    let exchange = async {
        sock.send(&batch.bytes).await.map_err(NftError::Netlink)?;
        let mut buf = Vec::with_capacity(16 * 1024);
        while waiting > 0 {
            buf.clear();
            sock.recv(&mut buf).await.map_err(NftError::Netlink)?;
            for item in nflog::messages(&buf).flatten() {
                if let Item::Ack { seq: s, errno } = item
                    && ours(s)
                {
                    if errno != 0 {
                        let e = std::io::Error::from_raw_os_error(errno.saturating_neg());
                        return Err(NftError::Refused(e));
                    }
                    waiting = waiting.saturating_sub(1);
                }
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| NftError::NoAnswer(timeout))?
}

/// Applies dirty set entries in batches, one transaction at a time: an update as nf_tables
/// netlink messages written here ([`nfset`]), a full resync (rare, and possibly larger than a
/// socket buffer) as an `nft -f -` run. The first batch after a quiet spell goes at once —
/// whoever waits for a set (enforcement mode drops a new subscriber's packets until then) waits
/// for no timer; changes that arrive while a transaction is under way gather into the next one,
/// which waits `batch_interval_ms` (0 by default) after the previous. A failed transaction makes
/// the next one a full resync (after a pause).
async fn sync(shared: Arc<Shared>, cfg: TriggerConfig, sock: Arc<TokioSocket>) {
    let interval = Duration::from_millis(cfg.batch_interval_ms);
    let timeout = Duration::from_millis(cfg.nft_timeout_ms);
    let stats = shared.stats.clone();
    // Failed runs in a row: the pause after one is 0.2 s doubling to 10 s.
    let mut failures: u32 = 0;
    let mut seq: u32 = 1;
    loop {
        shared.wake.notified().await;
        let mut first = true;
        loop {
            if !first && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            first = false;
            let batch = {
                let mut sets = shared.sets();
                // Set under the lock that took the batch: `sync_pending` never sees a gap.
                shared
                    .applying
                    .store(true, std::sync::atomic::Ordering::Release);
                sets.take_batch(cfg.batch_max)
            };
            let (result, adds, removes) = match &batch {
                Batch::Idle => {
                    shared
                        .applying
                        .store(false, std::sync::atomic::Ordering::Release);
                    break;
                }
                Batch::Update(ops) => {
                    stats.add(TriggerCounter::NftRuns, 1);
                    let adds = ops.iter().filter(|o| o.add).count() as u64;
                    let r = apply_update(&sock, ops, seq, timeout).await;
                    // Begin, one message per run of ops on a set (at most one per op), end.
                    seq = seq.wrapping_add(ops.len() as u32 + 2);
                    (r, adds, ops.len() as u64 - adds)
                }
                Batch::Resync(c) => {
                    stats.add(TriggerCounter::NftRuns, 1);
                    stats.add(TriggerCounter::Resyncs, 1);
                    let n = c
                        .iter()
                        .map(|s| s.addresses.len() + s.prefixes.len())
                        .sum::<usize>();
                    let r = nft::run(&cfg.nft_program, &ruleset::resync(c), timeout).await;
                    (r, n as u64, 0)
                }
            };
            let failed = match result {
                Ok(()) => {
                    stats.add(TriggerCounter::SetAdds, adds);
                    stats.add(TriggerCounter::SetRemoves, removes);
                    failures = 0;
                    false
                }
                Err(e) => {
                    stats.add(TriggerCounter::NftErrors, 1);
                    tracing::warn!(error = %e, "updating the trigger sets failed; resyncing");
                    shared.sets().failed();
                    true
                }
            };
            // Counters first, so whoever sees the sync settled sees them too.
            shared
                .applying
                .store(false, std::sync::atomic::Ordering::Release);
            if failed {
                let pause = crate::time::backoff(
                    failures,
                    Duration::from_millis(200),
                    Duration::from_secs(10),
                );
                tokio::time::sleep(pause).await;
                failures = failures.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_passes_once_per_window_and_never_grows() {
        let mut d = Dedupe::new(64, Duration::from_secs(1));
        let t0 = Instant::now();
        let a: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        assert!(d.fresh(t0, 0, a));
        assert!(!d.fresh(t0 + Duration::from_millis(500), 0, a));
        assert!(d.fresh(t0 + Duration::from_millis(500), 1, a), "other link");
        assert!(d.fresh(t0 + Duration::from_millis(1600), 0, a));
        for n in 0..10_000u32 {
            let s = Ipv6Addr::from(u128::from(a) + u128::from(n));
            d.fresh(t0, 0, s);
        }
        assert_eq!(d.slots.len(), 64);
    }
}
