//! The on-demand path: a source address seen on a subscriber link that no cached address or
//! delegated prefix covers → an RFC 5007 leasequery by address, with that link's link-address
//! (§4.1.2.1: the server then answers for that link) → each CLIENT_DATA turned into a cache
//! observation (`cache::from_wire`) → the cache task → routes follow through the change stream.
//!
//! Whoever detects unknown sources (the trigger's NFLOG reader) calls [`OnDemand::try_submit`];
//! it never blocks: a full queue is counted and the source dropped (it will be seen again).
//! Between a flood of spoofed sources and the servers stand, in order: the known-source check
//! here, this bounded queue, the bound on queries in flight, and the requestor's own
//! deduplication, negative cache and rate limits (`requestor::limiter`). Every refusal is counted.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::cache::from_wire::{ClientDataContext, observation_from_reply};
use crate::cache::{AgentClock, Link, Source};
use crate::cache_task::CacheHandle;
use crate::metrics::servers::Exchange;
use crate::metrics::{
    LeasequeryOutcome, LeasequeryType, LimitLabels, LimitScope, Metrics, OnDemandStage,
    QueryLabels, ServerLabels, StageLabels,
};
use crate::requestor::udp::{QueryError, RequestorHandle};
use crate::requestor::{Answer, Query, RefuseReason, ServerAnswer};
use crate::supervise::Inbox;

/// A packet's source that no binding covers, and where it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSource {
    pub source: Ipv6Addr,
    /// The link-address of the subscriber link (the `[[links]]` entry's `link_address`).
    pub link_address: Ipv6Addr,
    /// The local interface it arrived on, when known.
    pub interface: Option<Arc<str>>,
    /// When the trigger read it from NFLOG, when it came from there: the start of
    /// `lqagent_on_demand_stage_seconds{stage="queued"}`.
    pub seen: Option<crate::time::Instant>,
}

impl UnknownSource {
    /// A source seen on the configured link `link`.
    pub fn on_link(link: &crate::config::LinkConfig, source: Ipv6Addr) -> Self {
        UnknownSource {
            source,
            link_address: link.link_address,
            interface: Some(Arc::from(link.interface.as_str())),
            seen: None,
        }
    }
}

/// Settings of the on-demand path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnDemandConfig {
    /// Sources waiting to be looked up; more are dropped and counted.
    pub queue: usize,
    /// Lookups in flight at once (each waits for its leasequery's outcome).
    pub max_in_flight: usize,
    /// Ask for OPTION_LQ_RELAY_DATA (the peer-address is the delegated-prefix next hop).
    pub relay_data: bool,
}

impl Default for OnDemandConfig {
    fn default() -> Self {
        OnDemandConfig {
            queue: 4096,
            max_in_flight: 4096,
            relay_data: true,
        }
    }
}

crate::label::labels! {
    /// What the on-demand path counts (`lqagent_on_demand_total{event}`).
    pub enum OnDemandEvent {
        Submitted => "submitted",
        QueueFull => "queue_full",
        /// Covered by the cache by the time it was looked at.
        Known => "known",
        InFlightFull => "in_flight_full",
        Queried => "queried",
        Bound => "bound",
        NoBinding => "no_binding",
        /// Refused by the requestor (rate limit, pending table) or its queue.
        Refused => "refused",
        /// Error status or no answer from every server.
        Failed => "failed",
        /// Observations handed to the cache.
        Observations => "observations",
        /// CLIENT_DATA that could not become an observation.
        Unusable => "unusable",
    }
}

/// The on-demand path's counters, keyed by [`OnDemandEvent`], read in place at scrape time.
#[derive(Debug, Default)]
pub struct OnDemandStats {
    counts: [AtomicU64; OnDemandEvent::ALL.len()],
}

impl OnDemandStats {
    pub fn get(&self, e: OnDemandEvent) -> u64 {
        self.counts[e as usize].load(Relaxed)
    }

    pub(crate) fn count(&self, e: OnDemandEvent) {
        self.counts[e as usize].fetch_add(1, Relaxed);
    }
}

/// The submitting side; cheap to clone.
#[derive(Debug, Clone)]
pub struct OnDemand {
    tx: mpsc::Sender<UnknownSource>,
    stats: Arc<OnDemandStats>,
}

impl OnDemand {
    /// Queue a source for lookup without waiting; false (counted) when the queue is full or
    /// the path has stopped.
    pub fn try_submit(&self, s: UnknownSource) -> bool {
        self.stats.count(OnDemandEvent::Submitted);
        match self.tx.try_send(s) {
            Ok(()) => true,
            Err(_) => {
                self.stats.count(OnDemandEvent::QueueFull);
                false
            }
        }
    }

    pub fn stats(&self) -> &Arc<OnDemandStats> {
        &self.stats
    }
}

/// What a lookup needs.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub requestor: RequestorHandle,
    pub cache: CacheHandle,
    pub clock: AgentClock,
    /// Server address → configured name (metric label); unknown servers are labelled by address.
    pub server_names: Arc<HashMap<Ipv6Addr, String>>,
    pub metrics: Option<Metrics>,
    pub relay_data: bool,
}

/// How one lookup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Looked {
    /// The cache already covers the source.
    Known,
    /// Observations (one per CLIENT_DATA) went to the cache.
    Bound(usize),
    NoBinding,
    Refused,
    Failed,
}

impl Lookup {
    /// Look `s` up: skip it if the cache covers it, else ask and feed the cache.
    pub async fn resolve(&self, s: &UnknownSource, stats: &OnDemandStats) -> Looked {
        if self.cache.store().knows(s.source) {
            stats.count(OnDemandEvent::Known);
            return Looked::Known;
        }
        stats.count(OnDemandEvent::Queried);
        let started = crate::time::Instant::now();
        if let Some(seen) = s.seen {
            self.stage(
                OnDemandStage::Queued,
                started.saturating_duration_since(seen),
            );
        }
        let q = Query::by_address(s.source)
            .with_link(s.link_address)
            .with_relay_data(self.relay_data);
        let outcome = match self.requestor.query(q).await {
            Ok(o) => o,
            Err(e) => {
                stats.count(OnDemandEvent::Refused);
                self.count_refusal(&e);
                tracing::debug!(source = %s.source, error = %e, "on-demand leasequery not sent");
                return Looked::Refused;
            }
        };
        let answered = crate::time::Instant::now();
        self.stage(OnDemandStage::Leasequery, answered - started);
        for a in &outcome.answers {
            self.count_answer(a);
        }
        let link = Link {
            address: s.link_address,
            interface: s.interface.clone(),
        };
        let mut sent = 0;
        for b in outcome.bindings() {
            let ctx = ClientDataContext {
                source: Source::Leasequery,
                link: link.clone(),
                arrival: self.clock.at_std(b.received),
            };
            match observation_from_reply(b, &ctx) {
                Ok(mut obs) => {
                    // Admission drops an answer that does not cover what was asked (rule A6).
                    obs.query_address = Some(s.source);
                    if self.cache.observe(obs).await.is_err() {
                        break;
                    }
                    stats.count(OnDemandEvent::Observations);
                    sent += 1;
                }
                Err(e) => {
                    stats.count(OnDemandEvent::Unusable);
                    tracing::debug!(source = %s.source, reason = e.label(), "leasequery answer unusable");
                }
            }
        }
        if sent > 0 {
            self.stage(OnDemandStage::ToCache, answered.elapsed());
        }
        use crate::requestor::AnswerVerdict;
        match outcome.verdict {
            AnswerVerdict::Bound => {
                stats.count(OnDemandEvent::Bound);
                tracing::info!(source = %s.source, link = %s.link_address, observations = sent, "on-demand leasequery: bound");
                Looked::Bound(sent)
            }
            AnswerVerdict::NoBinding => {
                stats.count(OnDemandEvent::NoBinding);
                Looked::NoBinding
            }
            AnswerVerdict::Error | AnswerVerdict::NoAnswer => {
                stats.count(OnDemandEvent::Failed);
                Looked::Failed
            }
        }
    }

    fn stage(&self, stage: OnDemandStage, took: crate::time::Duration) {
        if let Some(m) = &self.metrics {
            m.on_demand_stage
                .get_or_create(&StageLabels { stage })
                .observe(took.as_secs_f64());
        }
    }

    fn server_name(&self, a: SocketAddr) -> String {
        let ip = v6(a);
        self.server_names
            .get(&ip)
            .cloned()
            .unwrap_or_else(|| ip.to_string())
    }

    pub(crate) fn count_answer(&self, a: &ServerAnswer) {
        let Some(m) = &self.metrics else { return };
        let outcome = match a.answer {
            Answer::Bound(_) | Answer::ClientLinks(_) => LeasequeryOutcome::Binding,
            Answer::NoBinding => LeasequeryOutcome::NoBinding,
            Answer::Status { .. } => LeasequeryOutcome::ServerError,
            Answer::NoAnswer => LeasequeryOutcome::Timeout,
        };
        let server = self.server_name(a.server);
        m.leasequeries
            .get_or_create(&QueryLabels {
                query_type: LeasequeryType::Address,
                server: server.clone(),
                outcome,
            })
            .inc();
        let exchange = match outcome {
            LeasequeryOutcome::Binding | LeasequeryOutcome::NoBinding => Exchange::Success,
            LeasequeryOutcome::ServerError => Exchange::ErrorStatus,
            LeasequeryOutcome::Timeout | LeasequeryOutcome::SendError => Exchange::NoAnswer,
        };
        m.servers
            .record(&server, exchange, a.elapsed, crate::time::SystemTime::now());
        let labels = ServerLabels { server };
        if a.answer != Answer::NoAnswer {
            m.leasequery_rtt
                .get_or_create(&labels)
                .observe(a.elapsed.as_secs_f64());
        }
        if a.attempts > 1 {
            m.leasequery_retransmissions
                .get_or_create(&labels)
                .inc_by(u64::from(a.attempts - 1));
        }
    }

    pub(crate) fn count_refusal(&self, e: &QueryError) {
        let Some(m) = &self.metrics else { return };
        let scope = match e {
            QueryError::Refused(RefuseReason::GlobalRate) => LimitScope::Global,
            QueryError::Refused(RefuseReason::LinkRate | RefuseReason::LinkTableFull) => {
                LimitScope::Link
            }
            QueryError::Refused(RefuseReason::PendingFull) | QueryError::Busy => {
                LimitScope::PendingFull
            }
            _ => return,
        };
        m.rate_limited_drops
            .get_or_create(&LimitLabels { scope })
            .inc();
    }
}

fn v6(a: SocketAddr) -> Ipv6Addr {
    match a.ip() {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

/// Start the on-demand task: sources from the returned [`OnDemand`] are looked up, up to
/// `cfg.max_in_flight` at once (more are dropped and counted). Ends when every `OnDemand` is
/// dropped and the lookups in flight are done.
pub fn spawn(lookup: Lookup, cfg: &OnDemandConfig) -> (OnDemand, JoinHandle<()>) {
    let (od, runner) = start(lookup, cfg);
    (od, tokio::spawn(runner.run()))
}

/// [`spawn`] without spawning: the [`OnDemandRunner`] can run again on the same queue after a
/// run died (the daemon's supervisor restarts it); submitters never see a closed queue.
pub fn start(lookup: Lookup, cfg: &OnDemandConfig) -> (OnDemand, OnDemandRunner) {
    let (tx, rx) = mpsc::channel::<UnknownSource>(cfg.queue.max(1));
    let stats = Arc::new(OnDemandStats::default());
    let runner = OnDemandRunner {
        rx: Inbox::new(rx),
        stats: stats.clone(),
        slots: Arc::new(Semaphore::new(cfg.max_in_flight.max(1))),
        lookup: Arc::new(lookup),
    };
    (OnDemand { tx, stats }, runner)
}

/// The on-demand task, ready to run (again).
#[derive(Clone)]
pub struct OnDemandRunner {
    rx: Inbox<UnknownSource>,
    stats: Arc<OnDemandStats>,
    slots: Arc<Semaphore>,
    lookup: Arc<Lookup>,
}

impl OnDemandRunner {
    /// Take unknown sources off the queue and resolve them, until every [`OnDemand`] is gone.
    pub async fn run(self) {
        let OnDemandRunner {
            rx,
            stats: st,
            slots,
            lookup,
        } = self;
        let mut rx = rx.lend().await;
        let mut running = tokio::task::JoinSet::new();
        while let Some(s) = rx.recv().await {
            while running.try_join_next().is_some() {}
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                st.count(OnDemandEvent::InFlightFull);
                continue;
            };
            let (lookup, st) = (lookup.clone(), st.clone());
            running.spawn(async move {
                lookup.resolve(&s, &st).await;
                drop(permit);
            });
        }
        while running.join_next().await.is_some() {}
    }
}
