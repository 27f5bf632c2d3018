//! The snooper's tokio shell: capture sockets on every configured interface feed one bounded
//! queue; one task parses each DHCPv6 message, runs the pure [`Classifier`] and hands what it
//! learnt to the cache task. Nothing here decides anything.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::capture::{self, CaptureConfig, CaptureSocket, CaptureStats};
use super::classify::{Classifier, ClassifyConfig, ClassifyStats, Envelope, Learned, SnoopTrust};
use crate::cache::AgentClock;
use crate::cache::task::{CacheHandle, CacheInput};
use crate::wire::Message;

/// What the running snooper exposes: counters of both halves.
#[derive(Debug, Clone, Default)]
pub struct SnoopStats {
    pub capture: Arc<CaptureStats>,
    pub classify: Arc<std::sync::Mutex<ClassifyStats>>,
    /// Captured payloads that did not parse as DHCPv6, and observations the cache queue refused.
    pub unparsable: Arc<std::sync::atomic::AtomicU64>,
    pub cache_full: Arc<std::sync::atomic::AtomicU64>,
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

    /// `(type name, count)` for every type seen; unnamed types are summed as `unknown`.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut out: Vec<(&'static str, u64)> = Vec::new();
        let mut unknown = 0;
        for (code, c) in self.0.iter().enumerate() {
            let n = c.load(std::sync::atomic::Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            match crate::wire::MessageType(code as u8).name() {
                Some(name) => out.push((name, n)),
                None => unknown += n,
            }
        }
        if unknown > 0 {
            out.push(("unknown", unknown));
        }
        out
    }
}

/// At most [`LogBudget::PER_SEC`] refusal log lines a second: a flood of forgeries is counted
/// in full (metrics) but cannot flood the journal.
#[derive(Debug, Default)]
struct LogBudget {
    second: Option<std::time::Instant>,
    used: u32,
}

impl LogBudget {
    const PER_SEC: u32 = 10;

    fn allow(&mut self, at: std::time::Instant) -> bool {
        match self.second {
            Some(s) if at.saturating_duration_since(s) < std::time::Duration::from_secs(1) => {}
            _ => {
                self.second = Some(at);
                self.used = 0;
            }
        }
        self.used += 1;
        self.used <= Self::PER_SEC
    }
}

/// Opens a capture socket per interface and spawns the capture and classify tasks into `tasks`.
/// An interface that does not exist yet is waited for; any other failure to open one (no
/// CAP_NET_RAW) is returned.
pub fn spawn(
    cfg: &CaptureConfig,
    classify: ClassifyConfig,
    trust: SnoopTrust,
    clock: AgentClock,
    cache: CacheHandle,
    tasks: &mut JoinSet<()>,
) -> std::io::Result<SnoopStats> {
    let stats = SnoopStats::default();
    let (tx, mut rx) = mpsc::channel(cfg.queue.max(1));
    for ifname in &cfg.interfaces {
        match CaptureSocket::open(ifname, cfg.receive_buffer) {
            Ok(sock) => {
                tasks.spawn(capture::run(sock, tx.clone(), stats.capture.clone()));
            }
            // Not there yet: waited for (any other error, e.g. no CAP_NET_RAW, stays fatal).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tasks.spawn(capture::run_when_present(
                    ifname.clone(),
                    cfg.receive_buffer,
                    tx.clone(),
                    stats.capture.clone(),
                ));
            }
            Err(e) => return Err(e),
        }
    }
    drop(tx);
    let st = stats.clone();
    tasks.spawn(async move {
        let mut classifier = Classifier::new(classify, trust);
        let mut log_budget = LogBudget::default();
        while let Some(m) = rx.recv().await {
            let Ok(msg) = Message::parse(&m.payload) else {
                st.unparsable
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            };
            let inner = msg.innermost().map_or(msg.msg_type(), |c| c.msg_type);
            st.messages.count(inner);
            let env = Envelope {
                outgoing: m.outgoing,
                src: m.src,
                dst: m.dst,
                src_port: m.src_port,
                dst_port: m.dst_port,
            };
            let learned = classifier.on_message(&msg, &env, clock.at(m.at.into()));
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
            // Short critical section, never held across an await.
            if let Ok(mut s) = st.classify.lock() {
                *s = classifier.stats().clone();
            }
            let input = match learned {
                Some(Learned::Bind(o)) => CacheInput::Observe(o),
                Some(Learned::Withdraw(w)) => CacheInput::Withdraw(w),
                None => continue,
            };
            if cache.try_send(input).is_err() {
                st.cache_full
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    Ok(stats)
}
