//! The snooper's tokio shell: capture sockets on every configured interface feed one bounded
//! queue; one task parses each DHCPv6 message, runs the pure [`Classifier`] and hands what it
//! learnt to the cache task. Nothing here decides anything.
//!
//! The hand-over waits ([`CacheHandle::send_snooped`]): snooped inputs have their own queue in
//! the cache task, served before bulk and on-demand answers, so a full queue only slows the
//! classifier; back-pressure then fills the capture queue, the capture waits for room, and the
//! packets wait in the sockets' buffers, the one place one can be lost — the kernel counts it
//! (`lqagent_snoop_capture_total{event="kernel_drop"}`). A REPLY or RELEASE is never dropped
//! because answers filled the cache's queue.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::capture::{self, CaptureConfig, CaptureSocket, CaptureStats, Snooped};
use super::classify::{Classifier, ClassifyConfig, ClassifyStats, Envelope, Learned, SnoopTrust};
use crate::cache_task::{CacheHandle, CacheInput};
use crate::supervise::{Inbox, Lifetime, Supervisor, Task};
use crate::time::AgentClock;
use crate::wire::CheckedMessage;

/// What the running snooper exposes: counters of both halves.
#[derive(Debug, Clone, Default)]
pub struct SnoopStats {
    pub capture: Arc<CaptureStats>,
    /// The classifier's own counters (shared with it, read in place).
    pub classify: ClassifyStats,
    /// Captured payloads that did not parse as DHCPv6.
    pub unparsable: Arc<std::sync::atomic::AtomicU64>,
    /// Observations lost because the cache task had stopped for good (never for a full queue:
    /// the classifier waits for room in its own queue of the cache task).
    pub cache_closed: Arc<std::sync::atomic::AtomicU64>,
    /// Parsed messages by the type of the message inside the relay chain (a RELAY-REPL
    /// carrying a REPLY counts as `REPLY`).
    pub messages: Arc<MessageCounts>,
}

/// Counts per DHCPv6 message type (the wire's one-byte code).
#[derive(Debug)]
pub struct MessageCounts([std::sync::atomic::AtomicU64; 256]);

impl Default for MessageCounts {
    fn default() -> Self {
        MessageCounts(std::array::from_fn(|_| {
            std::sync::atomic::AtomicU64::new(0)
        }))
    }
}

impl MessageCounts {
    pub fn count(&self, t: crate::wire::MessageType) {
        self.0[usize::from(t.value())].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The count of every type seen, by its label; the types without a name are summed
    /// under [`MessageKind::Unknown`].
    pub fn seen(&self) -> Vec<(MessageKind, u64)> {
        let mut out = Vec::new();
        let mut unknown = 0;
        for (code, c) in self.0.iter().enumerate() {
            let n = c.load(std::sync::atomic::Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            match MessageKind::of(crate::wire::MessageType(code as u8)) {
                MessageKind::Unknown => unknown += n,
                named => out.push((named, n)),
            }
        }
        if unknown > 0 {
            out.push((MessageKind::Unknown, unknown));
        }
        out
    }
}

/// The `message_type` label of `lqagent_snooped_messages_total`: a type's RFC name, or
/// `unknown` for every type that has none (one series for all of them, so a flood of odd
/// codes cannot grow the exposition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A type with an RFC name (made by [`MessageKind::of`] only).
    Named(crate::wire::MessageType),
    Unknown,
}

impl MessageKind {
    pub fn of(t: crate::wire::MessageType) -> Self {
        match t.name() {
            Some(_) => MessageKind::Named(t),
            None => MessageKind::Unknown,
        }
    }

    /// The label (see `crate::label`).
    pub fn label(self) -> &'static str {
        match self {
            MessageKind::Named(t) => t.name().unwrap_or("unknown"),
            MessageKind::Unknown => "unknown",
        }
    }
}

impl prometheus_client::encoding::EncodeLabelValue for MessageKind {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        prometheus_client::encoding::EncodeLabelValue::encode(&self.label(), encoder)
    }
}

/// At most [`LogBudget::PER_SEC`] refusal log lines a second: a flood of forgeries is counted
/// in full (metrics) but cannot flood the journal.
#[derive(Debug, Default)]
struct LogBudget {
    second: Option<crate::time::Instant>,
    used: u32,
}

impl LogBudget {
    const PER_SEC: u32 = 10;

    fn allow(&mut self, at: crate::time::Instant) -> bool {
        match self.second {
            Some(s) if at.saturating_duration_since(s) < crate::time::Duration::from_secs(1) => {}
            _ => {
                self.second = Some(at);
                self.used = 0;
            }
        }
        self.used += 1;
        self.used <= Self::PER_SEC
    }
}

/// Opens a capture socket per interface and spawns the capture and classify tasks into `tasks`,
/// each under `sup`: a capture task that fails is restarted on a freshly opened socket (task
/// label `capture`), the classifier on the same queue (`classifier`); the queue between them
/// survives either restart. An interface that does not exist yet is waited for; any other
/// failure to open one (no CAP_NET_RAW) is returned.
pub fn spawn(
    cfg: &CaptureConfig,
    classify: ClassifyConfig,
    trust: SnoopTrust,
    clock: AgentClock,
    cache: CacheHandle,
    tasks: &mut JoinSet<()>,
    sup: &Supervisor,
) -> std::io::Result<SnoopStats> {
    let stats = SnoopStats::default();
    let (tx, rx) = mpsc::channel(cfg.queue.max(1));
    for ifname in &cfg.interfaces {
        let first = match CaptureSocket::open(ifname, cfg.receive_buffer) {
            Ok(sock) => Some(sock),
            // Not there yet: waited for (any other error, e.g. no CAP_NET_RAW, stays fatal).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let (name, rb, tx, st) = (
            ifname.clone(),
            cfg.receive_buffer,
            tx.clone(),
            stats.capture.clone(),
        );
        let mut first = Some(first);
        let faults = sup.clone();
        tasks.spawn(sup.restart(Task::Capture, Lifetime::Forever, move |run| {
            let first = first.take().flatten();
            // The test hook may fail the first run only.
            let fault = (run == 0).then(|| faults.fault(Task::Capture));
            let run = capture_run(name.clone(), first, fault, rb, tx.clone(), st.clone());
            async move {
                run.await;
                Ok::<(), std::convert::Infallible>(())
            }
        }));
    }
    drop(tx);
    let queue = Inbox::new(rx);
    let classifier = Classifier::new(classify, trust);
    // The snooper reads the classifier's own counters (shared atomics), never a copy.
    let stats = SnoopStats {
        classify: classifier.stats().clone(),
        ..stats
    };
    let state: ClassifyState =
        Arc::new(tokio::sync::Mutex::new((classifier, LogBudget::default())));
    let st = stats.clone();
    tasks.spawn(sup.restart(Task::Classifier, Lifetime::Forever, move |_| {
        let r = classify_run(
            queue.clone(),
            state.clone(),
            st.clone(),
            clock,
            cache.clone(),
        );
        async move {
            r.await;
            Ok::<(), std::convert::Infallible>(())
        }
    }));
    Ok(stats)
}

/// One capture task's run: `first` is the socket opened at start (or none: not there yet).
/// `fault`: the supervisor's test hook ([`Supervisor::fault`]); the run panics when it resolves.
async fn capture_run(
    interface: String,
    first: Option<CaptureSocket>,
    fault: Option<impl Future<Output = ()>>,
    receive_buffer: usize,
    tx: mpsc::Sender<Snooped>,
    stats: Arc<CaptureStats>,
) {
    let sock = match first {
        Some(s) => s,
        None => match CaptureSocket::open(&interface, receive_buffer) {
            Ok(s) => s,
            Err(_) => return capture::run_when_present(interface, receive_buffer, tx, stats).await,
        },
    };
    if let Some(fault) = fault {
        tokio::select! {
            () = capture::run(sock, tx, stats) => {}
            () = fault => panic!("test hook: capture task on {interface} fails"),
        }
        return;
    }
    capture::run(sock, tx, stats).await;
}

/// What the classifier keeps across its restarts beside its queue: its memory of exchanges
/// under way and its log budget, lent to one run at a time like the queue.
type ClassifyState = Arc<tokio::sync::Mutex<(Classifier, LogBudget)>>;

/// The classifier's run: parse, classify, hand to the cache, until the capture side is gone.
async fn classify_run(
    queue: Inbox<Snooped>,
    state: ClassifyState,
    st: SnoopStats,
    clock: AgentClock,
    cache: CacheHandle,
) {
    let mut rx = queue.lend().await;
    let mut guard = state.lock_owned().await;
    let (classifier, log_budget) = &mut *guard;
    while let Some(m) = rx.recv().await {
        // Checked in place: the classifier copies out only what it keeps.
        let Ok(msg) = CheckedMessage::new(&m.payload) else {
            st.unparsable
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        };
        let inner = msg.innermost().map_or(msg.msg_type(), |c| c.msg_type());
        st.messages.count(inner);
        let env = Envelope {
            outgoing: m.outgoing,
            src: m.src,
            dst: m.dst,
            src_port: m.src_port,
            dst_port: m.dst_port,
        };
        let learned = classifier.on_snooped(clock.at(m.at.into()), msg, &env);
        if let Some(why) = classifier.refusal() {
            if log_budget.allow(m.at) {
                tracing::warn!(
                    reason = why.label(),
                    interface = %m.interface,
                    direction = if m.outgoing { "out" } else { "in" },
                    src = %m.src,
                    dst = %m.dst,
                    src_port = m.src_port,
                    dst_port = m.dst_port,
                    message = ?inner,
                    "snooped message refused: not from where a relay or server speaks"
                );
            }
        }
        let input = match learned {
            Some(Learned::Bind(o)) => CacheInput::Observe(o),
            Some(Learned::Withdraw(w, doubts)) if doubts.is_empty() => CacheInput::Withdraw(w),
            Some(Learned::Withdraw(w, doubts)) => {
                // What was released goes first; then the IAs the server refused, as doubts.
                let inputs = std::iter::once(CacheInput::Withdraw(w))
                    .chain(doubts.into_iter().map(CacheInput::Doubt));
                for input in inputs {
                    if cache.send_snooped(input).await.is_err() {
                        st.cache_closed
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                continue;
            }
            Some(Learned::Doubt(doubts)) => {
                // Snooped like the rest: through the snooper's own queue, waiting for room.
                for d in doubts {
                    if cache.send_snooped(CacheInput::Doubt(d)).await.is_err() {
                        st.cache_closed
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                continue;
            }
            None => continue,
        };
        // Waits for room (never drops for a full queue); only a stopped cache task loses it.
        if cache.send_snooped(input).await.is_err() {
            st.cache_closed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}
