//! Prometheus metrics: what happened, as API.
//!
//! One [`Metrics`] value holds the registry and a handle to every family. Handles are cheap
//! clones around atomics (`Family`, `Counter`, `Histogram` are `Arc` inside).
//!
//! How values reach the registry: every module keeps its own counters where it counts them
//! (atomics, keyed by its own `labels!` enum) and never imports this module.
//! The daemon (`daemon::export`, the one place that does) registers each family with
//! [`Metrics::register_stats`] (counters) or [`Metrics::register_gauges`]: a closure that reads
//! the module's stats at scrape time and returns `(label set, value)` rows, the label values
//! being the module's own enums. Nothing is copied between scrapes, so nothing is stale or
//! counted twice. The exceptions are values that exist only as events (leasequery round trips,
//! server health, netlink batch latency, finished bulk queries), which the daemon's tasks
//! observe through a family handle as they happen, and the gauges the start-up steps set
//! themselves (`lqagent_routes_limit`, recovery in progress and its duration).
//!
//! Names follow the Prometheus conventions: `lqagent_` prefix, base units (`_seconds`), counters
//! exposed with `_total`. Each name is a constant here, every label set is a type with enum
//! values (or `&'static str` where another module owns the vocabulary, which keeps cardinality
//! bounded by construction). Every family is documented in `docs/metrics.md`; the test
//! `tests/loopback/metrics_http.rs` fails when one lacks HELP text or is missing there.
//!
//! [`http`] serves the registry on `GET /metrics` (default `127.0.0.1:9567`).

use std::any::TypeId;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, LabelSetEncoder, MetricEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::label::labels;

pub mod http;
pub mod process;
pub mod servers;

/// Family names as they appear after `# TYPE` (counters get `_total` on their samples).
pub mod names {
    pub const LEASEQUERIES: &str = "lqagent_leasequeries";
    pub const LEASEQUERY_RTT_SECONDS: &str = "lqagent_leasequery_rtt_seconds";
    pub const LEASEQUERY_RETRANSMISSIONS: &str = "lqagent_leasequery_retransmissions";
    pub const REPLIES_DROPPED: &str = "lqagent_replies_dropped";
    pub const BINDINGS: &str = "lqagent_bindings";
    pub const ROUTE_EVENTS: &str = "lqagent_route_events";
    pub const ROUTES: &str = "lqagent_routes";
    pub const NETLINK_BATCH_SECONDS: &str = "lqagent_netlink_batch_seconds";
    pub const SNOOPED_MESSAGES: &str = "lqagent_snooped_messages";
    pub const TRIGGER_EVENTS: &str = "lqagent_trigger_events";
    pub const RATE_LIMITED_DROPS: &str = "lqagent_rate_limited_drops";
    pub const RECOVERY_IN_PROGRESS: &str = "lqagent_recovery_in_progress";
    pub const RECOVERY_BINDINGS: &str = "lqagent_recovery_bindings";
    pub const RECOVERY_DURATION_SECONDS: &str = "lqagent_recovery_duration_seconds";
    pub const BUILD_INFO: &str = "lqagent_build_info";
    pub const METRICS_SCRAPES: &str = "lqagent_metrics_scrapes";
    pub const METRICS_CONNECTIONS_REJECTED: &str = "lqagent_metrics_connections_rejected";
    pub const METRICS_CONNECTIONS_TIMED_OUT: &str = "lqagent_metrics_connections_timed_out";
    pub const METRICS_CONNECTIONS_EVICTED: &str = "lqagent_metrics_connections_evicted";
    pub const SERVER_UP: &str = "lqagent_server_up";
    pub const SERVER_LAST_SUCCESS: &str = "lqagent_server_last_success_timestamp_seconds";
    pub const ROUTES_LIMIT: &str = "lqagent_routes_limit";
    /// Registered by the daemon (`daemon::export`) from the control socket's own stats.
    pub const CONTROL_EVENTS: &str = "lqagent_control_events";
    /// Registered by the daemon (`daemon::export`) from the modules' own stats, read at
    /// scrape time (not in [`ALL`]).
    pub const ON_DEMAND: &str = "lqagent_on_demand";
    pub const TRIGGER: &str = "lqagent_trigger";
    pub const CACHE_MERGES: &str = "lqagent_cache_merges";
    pub const SNOOP_CAPTURE: &str = "lqagent_snoop_capture";
    pub const SNOOP_CLASSIFIED: &str = "lqagent_snoop_classified";
    pub const ADMISSION_REJECTED: &str = "lqagent_admission_rejected";
    pub const BINDING_MOVES: &str = "lqagent_binding_moves";
    pub const BINDING_DOUBTS: &str = "lqagent_binding_doubts";
    pub const CAP_REFUSED: &str = "lqagent_cap_refused";
    pub const STATE_EVENTS: &str = "lqagent_state_events";
    pub const TASK_RESTARTS: &str = "lqagent_task_restarts";
    pub const STATE_DEGRADED: &str = "lqagent_state_degraded";
    pub const ON_DEMAND_STAGE_SECONDS: &str = "lqagent_on_demand_stage_seconds";

    /// Every family registered by [`super::Metrics::new`] (the rest are the daemon's, read from
    /// the modules' stats at scrape time).
    pub const ALL: &[&str] = &[
        LEASEQUERIES,
        LEASEQUERY_RTT_SECONDS,
        LEASEQUERY_RETRANSMISSIONS,
        NETLINK_BATCH_SECONDS,
        RATE_LIMITED_DROPS,
        RECOVERY_IN_PROGRESS,
        RECOVERY_DURATION_SECONDS,
        BUILD_INFO,
        METRICS_SCRAPES,
        METRICS_CONNECTIONS_REJECTED,
        METRICS_CONNECTIONS_EVICTED,
        METRICS_CONNECTIONS_TIMED_OUT,
        SERVER_UP,
        SERVER_LAST_SUCCESS,
        ROUTES_LIMIT,
        ON_DEMAND_STAGE_SECONDS,
    ];
}

/// The `query_type` label is the codec's own name for a leasequery type, not a mirror of it.
pub use crate::wire::LeasequeryType;

labels! {
    /// How one leasequery ended.
    pub enum LeasequeryOutcome {
        /// The server answered with a binding (or, for bulk, the query completed with data).
        Binding => "binding",
        /// The server answered that it has no binding (a LEASEQUERY-REPLY without CLIENT_DATA, RFC 5007).
        NoBinding => "no_binding",
        /// The server answered with another error status (NotAllowed, MalformedQuery, …).
        ServerError => "server_error",
        /// No answer after all retransmissions.
        Timeout => "timeout",
        /// The query could not be sent (socket error, connection refused).
        SendError => "send_error",
    }
}

/// Labels of [`names::LEASEQUERIES`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub query_type: LeasequeryType,
    /// The server's configured name.
    pub server: String,
    pub outcome: LeasequeryOutcome,
}

/// A label set with just the server's configured name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub server: String,
}

labels! {
    /// What kind of lease a binding is.
    pub enum BindingType {
        /// IA_NA address (a /128 route).
        Address => "address",
        /// IA_PD delegated prefix (a route via the client's link-local address).
        Prefix => "prefix",
    }
}

/// Labels of [`names::BINDINGS`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BindingLabels {
    pub r#type: BindingType,
    /// The link's configured name.
    pub link: String,
}

labels! {
    /// Which deadline closed a `/metrics` connection.
    pub enum Deadline {
        /// Nothing (or not a whole request) came in time: a silent or trickling client.
        Read => "read",
        /// The answer was not taken in time: a client that stopped reading.
        Write => "write",
    }
}

/// Labels of [`names::METRICS_CONNECTIONS_TIMED_OUT`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadlineLabels {
    pub deadline: Deadline,
}

labels! {
    /// What the trigger did with a packet from a source it saw.
    pub enum TriggerOutcome {
        /// A leasequery was started for it.
        Queried => "queried",
        /// A query for it is already in flight.
        Deduplicated => "deduplicated",
        /// A recent answer said "no binding"; not asked again yet.
        NegativeCached => "negative_cached",
        /// Dropped by a rate limit or a full pending table (see `lqagent_rate_limited_drops_total`).
        RateLimited => "rate_limited",
        /// The source is outside every subscriber prefix of its link.
        OutsidePrefixes => "outside_prefixes",
        /// Already covered by a cached binding (raced with the kernel set update).
        Known => "known",
    }
}

labels! {
    /// A stage of the on-demand path, for [`names::ON_DEMAND_STAGE_SECONDS`].
    pub enum OnDemandStage {
        /// From the NFLOG reader's read of the packet to the start of its lookup (the event
        /// and on-demand queues).
        Queued => "queued",
        /// From the start of the lookup to its answer in hand: the requestor's queue, the
        /// server's round trip (and retransmissions), reading and decoding the answer.
        Leasequery => "leasequery",
        /// From the answer in hand to its last observation queued at the cache task.
        ToCache => "to_cache",
    }
}

/// Labels of [`names::ON_DEMAND_STAGE_SECONDS`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: OnDemandStage,
}

labels! {
    /// Which limit dropped an on-demand query.
    pub enum LimitScope {
        Global => "global",
        Link => "link",
        /// The pending-query table was full.
        PendingFull => "pending_full",
    }
}

/// Labels of [`names::RATE_LIMITED_DROPS`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub scope: LimitScope,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    rtnetlink: &'static str,
}

/// A float gauge (seconds).
pub(crate) type GaugeF64 = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The registry and a handle to every family. Clone freely: clones share the same metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Locked only to register a collector and to encode a scrape (never across `.await`).
    registry: Arc<Mutex<Registry>>,
    pub leasequeries: Family<QueryLabels, Counter>,
    pub leasequery_rtt: Family<ServerLabels, Histogram>,
    pub leasequery_retransmissions: Family<ServerLabels, Counter>,
    pub netlink_batch: Histogram,
    /// Where an unknown source's time goes before its binding reaches the cache task.
    pub on_demand_stage: Family<StageLabels, Histogram>,
    pub rate_limited_drops: Family<LimitLabels, Counter>,
    pub recovery_in_progress: Gauge,
    pub recovery_duration: GaugeF64,
    pub(crate) scrapes: Counter,
    pub(crate) connections_rejected: Counter,
    pub(crate) connections_evicted: Counter,
    pub(crate) connections_timed_out: Family<DeadlineLabels, Counter>,
    /// The most routes the installer holds (`InstallerConfig::max_routes`); set by the daemon.
    pub routes_limit: Gauge,
    /// Per-server reachability (`show servers`, `lqagent_server_up`, last success).
    pub servers: Arc<servers::ServerHealth>,
}

fn rtt_histogram() -> Histogram {
    // 1 ms .. ~16 s: a leasequery answer from a local server up to the full LQ_MAX_RT schedule.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn stage_histogram() -> Histogram {
    // 10 µs .. ~0.3 s: a stage of a path that takes well under a millisecond when all is well.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 16))
}

fn netlink_histogram() -> Histogram {
    // 50 µs .. ~0.8 s per netlink batch.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every family of [`names::ALL`] registered and `build_info` set.
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Arc::new(Mutex::new(Registry::default())),
            leasequeries: Family::default(),
            leasequery_rtt: Family::new_with_constructor(rtt_histogram),
            leasequery_retransmissions: Family::default(),
            netlink_batch: netlink_histogram(),
            on_demand_stage: Family::new_with_constructor(stage_histogram),
            rate_limited_drops: Family::default(),
            recovery_in_progress: Gauge::default(),
            recovery_duration: GaugeF64::default(),
            scrapes: Counter::default(),
            connections_rejected: Counter::default(),
            connections_evicted: Counter::default(),
            connections_timed_out: Family::default(),
            routes_limit: Gauge::default(),
            servers: Arc::default(),
        };
        // Every stage from the start: an operator's panel shows zero, not nothing, before the
        // first unknown source.
        for stage in OnDemandStage::ALL {
            let _ = m
                .on_demand_stage
                .get_or_create(&StageLabels { stage: *stage });
        }
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                rtnetlink: "0.24.0",
            })
            .set(1);
        {
            let mut r = m.lock();
            use names::*;
            r.register(
                LEASEQUERIES,
                "Leasequeries sent, by query type, server and how they ended",
                m.leasequeries.clone(),
            );
            r.register(
                LEASEQUERY_RTT_SECONDS,
                "Time from a leasequery's first transmission to its answer, by server",
                m.leasequery_rtt.clone(),
            );
            r.register(
                LEASEQUERY_RETRANSMISSIONS,
                "Leasequery retransmissions after a timeout, by server",
                m.leasequery_retransmissions.clone(),
            );
            r.register(
                NETLINK_BATCH_SECONDS,
                "Time to apply one batch of route operations over rtnetlink",
                m.netlink_batch.clone(),
            );
            r.register(
                ON_DEMAND_STAGE_SECONDS,
                "Time an unknown source spends in each stage of the on-demand path",
                m.on_demand_stage.clone(),
            );
            r.register(
                RATE_LIMITED_DROPS,
                "On-demand leasequeries not sent because a limit was reached, by limit",
                m.rate_limited_drops.clone(),
            );
            r.register(
                RECOVERY_IN_PROGRESS,
                "1 while bulk leasequery recovery runs, else 0",
                m.recovery_in_progress.clone(),
            );
            r.register(
                RECOVERY_DURATION_SECONDS,
                "Duration of the last completed bulk leasequery recovery",
                m.recovery_duration.clone(),
            );
            r.register(BUILD_INFO, "Build information; always 1", build);
            r.register(
                METRICS_SCRAPES,
                "Scrapes of /metrics served",
                m.scrapes.clone(),
            );
            r.register(
                METRICS_CONNECTIONS_REJECTED,
                "Connections to the metrics listener refused because too many were open",
                m.connections_rejected.clone(),
            );
            r.register(
                METRICS_CONNECTIONS_EVICTED,
                "Connections to the metrics listener closed to make room for a new one, because every slot was open and this one had no request under way",
                m.connections_evicted.clone(),
            );
            for d in Deadline::ALL {
                let _ = m
                    .connections_timed_out
                    .get_or_create(&DeadlineLabels { deadline: *d });
            }
            r.register(
                METRICS_CONNECTIONS_TIMED_OUT,
                "Connections to the metrics listener closed because a read or a write made no progress within its deadline, by deadline",
                m.connections_timed_out.clone(),
            );
            r.register(
                SERVER_UP,
                "1 while the server's most recent exchange got a reply (or none was asked yet), 0 after one without, by server",
                m.servers.up.clone(),
            );
            r.register(
                SERVER_LAST_SUCCESS,
                "Unix time of the server's last usable answer (0: none yet), by server",
                m.servers.last_success.clone(),
            );
            r.register(
                ROUTES_LIMIT,
                "The most routes the agent installs (beyond it upserts are dropped); compare with lqagent_routes",
                m.routes_limit.clone(),
            );
            r.register_collector(Box::new(process::ProcessCollector));
        }
        m
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding this lock cannot leave the registry half-updated in a way that
        // matters for reading it, so a poisoned lock is still used.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Export a module's counters as the counter family `name`: `read` is called at each
    /// encoding (scrape, `show stats`) and returns one `(label set, count)` row per series,
    /// the label values being the module's own `labels!` enums, e.g.
    /// `[("event", RouteCounter::Installed)]`; [`Unlabelled`] for a family without labels.
    /// It runs under the registry's lock: read atomics (or walk a store), never wait.
    /// Document `name` in `docs/metrics.md`.
    pub fn register_stats<L, F>(&self, name: &'static str, help: &'static str, read: F)
    where
        L: EncodeLabelSet + 'static,
        F: Fn() -> Vec<(L, u64)> + Send + Sync + 'static,
    {
        self.register_rows(name, help, read);
    }

    /// [`register_stats`](Self::register_stats) for a gauge family: `read` returns each
    /// series' value now.
    pub fn register_gauges<L, F>(&self, name: &'static str, help: &'static str, read: F)
    where
        L: EncodeLabelSet + 'static,
        F: Fn() -> Vec<(L, i64)> + Send + Sync + 'static,
    {
        self.register_rows(name, help, read);
    }

    fn register_rows<L, V, F>(&self, name: &'static str, help: &'static str, read: F)
    where
        L: EncodeLabelSet + 'static,
        V: Sample,
        F: Fn() -> Vec<(L, V)> + Send + Sync + 'static,
    {
        self.lock().register_collector(Box::new(StatsCollector {
            name,
            help,
            read,
            rows: PhantomData,
        }));
    }

    /// The OpenMetrics text exposition of everything registered.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.lock()) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// The label set of a family without labels (`lqagent_recovery_bindings_total 5`).
#[derive(Debug, Clone, Copy)]
pub struct Unlabelled;

impl EncodeLabelSet for Unlabelled {
    fn encode(&self, _: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        Ok(())
    }
}

/// A row's value: a count (counter family) or a level (gauge family).
trait Sample: Copy + Send + Sync + 'static {
    const TYPE: MetricType;
    fn encode(self, to: MetricEncoder<'_>) -> Result<(), std::fmt::Error>;
}

impl Sample for u64 {
    const TYPE: MetricType = MetricType::Counter;
    fn encode(self, to: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        ConstCounter::new(self).encode(to)
    }
}

impl Sample for i64 {
    const TYPE: MetricType = MetricType::Gauge;
    fn encode(self, to: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        ConstGauge::new(self).encode(to)
    }
}

/// A family read from a module's stats at encoding time: the one way module stats are exported.
struct StatsCollector<L, V, F> {
    name: &'static str,
    help: &'static str,
    read: F,
    rows: PhantomData<fn() -> (L, V)>,
}

impl<L, V, F> std::fmt::Debug for StatsCollector<L, V, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsCollector")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<L, V, F> Collector for StatsCollector<L, V, F>
where
    L: EncodeLabelSet + 'static,
    V: Sample,
    F: Fn() -> Vec<(L, V)> + Send + Sync + 'static,
{
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let rows = (self.read)();
        let mut family = encoder.encode_descriptor(self.name, self.help, None, V::TYPE)?;
        // An empty label set would still be written as `{}`: an unlabelled family's one row
        // is written bare.
        if TypeId::of::<L>() == TypeId::of::<Unlabelled>() {
            if let Some((_, value)) = rows.into_iter().next() {
                value.encode(family)?;
            }
            return Ok(());
        }
        for (labels, value) in rows {
            value.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_shared_clones() {
        let m = Metrics::new();
        let counter = m.leasequeries.clone();
        counter
            .get_or_create(&QueryLabels {
                query_type: LeasequeryType::Address,
                server: "dhcp-a".into(),
                outcome: LeasequeryOutcome::NoBinding,
            })
            .inc_by(3);
        let text = m.encode();
        assert!(
            text.contains(
                "lqagent_leasequeries_total{query_type=\"address\",server=\"dhcp-a\",outcome=\"no_binding\"} 3"
            ),
            "{text}"
        );
        assert!(text.contains("lqagent_build_info{version=\""), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    crate::label::labels! {
        /// A test vocabulary.
        enum TestDrop {
            Truncated => "truncated",
            BadXid => "bad_xid",
        }
    }

    #[test]
    fn stats_are_read_at_scrape_time_with_the_modules_own_labels() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let m = Metrics::new();
        let truncated = Arc::new(AtomicU64::new(0));
        let t = truncated.clone();
        m.register_stats("lqagent_test_drops", "Test drops by reason", move || {
            vec![
                ([("reason", TestDrop::Truncated)], t.load(Ordering::Relaxed)),
                ([("reason", TestDrop::BadXid)], 0),
            ]
        });
        let level = Arc::new(AtomicU64::new(0));
        let l = level.clone();
        m.register_gauges("lqagent_test_level", "Test level", move || {
            vec![(Unlabelled, l.load(Ordering::Relaxed) as i64)]
        });
        truncated.store(7, Ordering::Relaxed);
        level.store(3, Ordering::Relaxed);
        let text = m.encode();
        assert!(
            text.contains("# HELP lqagent_test_drops Test drops by reason"),
            "{text}"
        );
        assert!(text.contains("# TYPE lqagent_test_drops counter"), "{text}");
        assert!(
            text.contains("lqagent_test_drops_total{reason=\"truncated\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("lqagent_test_drops_total{reason=\"bad_xid\"} 0"),
            "{text}"
        );
        assert!(text.contains("# TYPE lqagent_test_level gauge"), "{text}");
        assert!(text.contains("\nlqagent_test_level 3\n"), "{text}");
        truncated.store(9, Ordering::Relaxed);
        assert!(
            m.encode()
                .contains("lqagent_test_drops_total{reason=\"truncated\"} 9"),
            "read again at the next scrape"
        );
    }
}
