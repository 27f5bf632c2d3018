//! The snooper's tokio shell: one capture task per configured interface reads its ring and,
//! on that same task, parses each DHCPv6 message in place, runs the pure [`Classifier`]
//! (one, shared by the interfaces' tasks under a lock) and hands what it learnt to the cache
//! task. Nothing here decides anything.
//!
//! Why on the capture task: a queue of copied packets to a classifier task of its own cost,
//! per packet, an allocation and a cross-task wake-up — in a reboot storm four packets per
//! exchange, the largest part of the snooper's CPU. Classified in place, a packet costs no copy
//! and the only hand-over is to the cache task.
//!
//! The hand-over waits: snooped inputs have their own queue in the cache task, served before
//! bulk and on-demand answers, so a full queue only holds the capture back — it waits for room
//! with the packet still in its ring, the one place one can be lost, and the kernel counts it
//! (`lqagent_snoop_capture_total{event="kernel_drop"}`). A REPLY or RELEASE is never dropped
//! because answers filled the cache's queue.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::capture::{self, CaptureConfig, CaptureSocket, CaptureStats, Offer, Packet, Sink};
use super::classify::{Classifier, ClassifyConfig, ClassifyStats, Envelope, Learned, SnoopTrust};
use crate::cache_task::{CacheHandle, CacheInput, SnoopedSend};
use crate::supervise::{Lifetime, Supervisor, Task};
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

/// Opens a capture socket per interface and spawns a capture task per interface into `tasks`,
/// each under `sup` (task label `capture`): a capture task that fails is restarted on a freshly
/// opened socket; the classifier's memory of exchanges under way survives the restart. An
/// interface that does not exist yet is waited for; any other failure to open one (no
/// CAP_NET_RAW) is returned.
pub fn spawn(
    cfg: &CaptureConfig,
    classify: ClassifyConfig,
    trust: SnoopTrust,
    clock: AgentClock,
    cache: CacheHandle,
    tasks: &mut JoinSet<()>,
    sup: &Supervisor,
) -> std::io::Result<SnoopStats> {
    let classifier = Classifier::new(classify, trust);
    // The snooper reads the classifier's own counters (shared atomics), never a copy.
    let stats = SnoopStats {
        classify: classifier.stats().clone(),
        ..SnoopStats::default()
    };
    let state: ClassifyState = Arc::new(std::sync::Mutex::new((classifier, LogBudget::default())));
    let mut opened = Vec::with_capacity(cfg.interfaces.len());
    for ifname in &cfg.interfaces {
        match CaptureSocket::open(ifname, cfg.receive_buffer) {
            Ok(sock) => opened.push((ifname.clone(), Some(sock))),
            // Not there yet: waited for (any other error, e.g. no CAP_NET_RAW, stays fatal).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                opened.push((ifname.clone(), None))
            }
            Err(e) => return Err(e),
        }
    }
    for (name, first) in opened {
        let rb = cfg.receive_buffer;
        let sink = Classify {
            state: state.clone(),
            st: stats.clone(),
            clock,
            cache: cache.clone(),
            held: VecDeque::new(),
        };
        let st = stats.capture.clone();
        let mut first = Some(first);
        let faults = sup.clone();
        tasks.spawn(sup.restart(Task::Capture, Lifetime::Forever, move |run| {
            let first = first.take().flatten();
            // The test hook may fail the first run only.
            let fault = (run == 0).then(|| faults.fault(Task::Capture));
            // A new run starts with nothing held: what a failed run held is lost with it, as
            // the packet it was classifying.
            let run = capture_run(name.clone(), first, fault, rb, sink.fresh(), st.clone());
            async move {
                run.await;
                Ok::<(), std::convert::Infallible>(())
            }
        }));
    }
    Ok(stats)
}

/// One capture task's run: `first` is the socket opened at start (or none: not there yet).
/// `fault`: the supervisor's test hook ([`Supervisor::fault`]); the run panics when it resolves.
async fn capture_run(
    interface: String,
    first: Option<CaptureSocket>,
    fault: Option<impl Future<Output = ()>>,
    receive_buffer: usize,
    sink: Classify,
    stats: Arc<CaptureStats>,
) {
    let sock = match first {
        Some(s) => s,
        None => match CaptureSocket::open(&interface, receive_buffer) {
            Ok(s) => s,
            Err(_) => {
                return capture::run_when_present(interface, receive_buffer, sink, stats).await;
            }
        },
    };
    if let Some(fault) = fault {
        tokio::select! {
            () = capture::run(sock, sink, stats) => {}
            () = fault => panic!("test hook: capture task on {interface} fails"),
        }
        return;
    }
    capture::run(sock, sink, stats).await;
}

/// The classifier's memory of exchanges under way and its log budget, shared by the capture
/// tasks (one per interface) and kept across their restarts. A plain lock, held only while one
/// packet is classified (never across an `.await`); one poisoned by a panic is taken over as
/// it is — the classifier's state is a cache of exchanges, each step of which is whole.
type ClassifyState = Arc<std::sync::Mutex<(Classifier, LogBudget)>>;

/// The daemon's capture [`Sink`]: parse in place, classify, queue what was learnt on the cache
/// task's snooped queue.
struct Classify {
    state: ClassifyState,
    st: SnoopStats,
    clock: AgentClock,
    cache: CacheHandle,
    /// Inputs learnt but not yet queued (the cache's queue was full), oldest first.
    held: VecDeque<CacheInput>,
}

impl Classify {
    /// The same sink with nothing held, for a new run of the capture task.
    fn fresh(&self) -> Classify {
        Classify {
            state: self.state.clone(),
            st: self.st.clone(),
            clock: self.clock,
            cache: self.cache.clone(),
            held: VecDeque::new(),
        }
    }

    /// What the packet teaches the cache, in the order the cache must see it.
    fn classify(&mut self, p: &Packet<'_>) {
        // Checked in place: the classifier copies out only what it keeps.
        let Ok(msg) = CheckedMessage::new(p.payload) else {
            self.st
                .unparsable
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        };
        let inner = msg.innermost().map_or(msg.msg_type(), |c| c.msg_type());
        self.st.messages.count(inner);
        let env = Envelope {
            outgoing: p.outgoing,
            src: p.src,
            dst: p.dst,
            src_port: p.src_port,
            dst_port: p.dst_port,
        };
        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (classifier, log_budget) = &mut *guard;
        let learned = classifier.on_snooped(self.clock.at(p.at.into()), msg, &env);
        if let Some(why) = classifier.refusal() {
            if log_budget.allow(p.at) {
                tracing::warn!(
                    reason = why.label(),
                    interface = %p.interface,
                    direction = if p.outgoing { "out" } else { "in" },
                    src = %p.src,
                    dst = %p.dst,
                    src_port = p.src_port,
                    dst_port = p.dst_port,
                    message = ?inner,
                    "snooped message refused: not from where a relay or server speaks"
                );
            }
        }
        drop(guard);
        match learned {
            Some(Learned::Bind(o)) => self.held.push_back(CacheInput::Observe(o)),
            Some(Learned::Withdraw(w, doubts)) => {
                // What was released goes first; then the IAs the server refused, as doubts.
                self.held.push_back(CacheInput::Withdraw(w));
                self.held.extend(doubts.into_iter().map(CacheInput::Doubt));
            }
            // Snooped like the rest: through the snooper's own queue, waiting for room.
            Some(Learned::Doubt(doubts)) => {
                self.held.extend(doubts.into_iter().map(CacheInput::Doubt))
            }
            None => {}
        }
    }

    /// Queue what is held without waiting: `false` when the cache's queue is full.
    fn push_held(&mut self) -> bool {
        while let Some(input) = self.held.pop_front() {
            match self.cache.try_send_snooped(input) {
                SnoopedSend::Queued => {}
                SnoopedSend::Full(input) => {
                    self.held.push_front(input);
                    return false;
                }
                // Only a cache task stopped for good loses it (never a full queue).
                SnoopedSend::Closed => {
                    self.st
                        .cache_closed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        true
    }
}

impl Sink for Classify {
    fn offer(&mut self, p: Packet<'_>) -> Offer {
        self.classify(&p);
        if self.push_held() {
            Offer::Taken
        } else {
            Offer::Full
        }
    }

    async fn room(&mut self) -> bool {
        while !self.held.is_empty() {
            // The room first, then the input out of `held`: a cancelled wait loses nothing.
            match self.cache.snooped_room().await {
                Some(permit) => {
                    if let Some(input) = self.held.pop_front() {
                        permit.send(input);
                    }
                }
                None => {
                    let lost = self.held.len() as u64;
                    self.held.clear();
                    self.st
                        .cache_closed
                        .fetch_add(lost, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        true
    }
}
