//! Prometheus metrics: what happened, as API.
//!
//! One [`Metrics`] value holds the registry and a handle to every family. Handles are cheap
//! clones around atomics (`Family`, `Counter`, `Histogram` are `Arc` inside).
//!
//! How values reach the registry: every module keeps its own plain atomic stats and exposes a
//! `snapshot()` of `(label, value)` pairs; it never imports this module. The daemon
//! (`daemon::export`, the one place that does) registers each snapshot with
//! [`Metrics::register_stats`] / [`Metrics::register_stats2`], read at scrape time, or, for
//! the families defined here up front, brings them up to date in an [`Metrics::on_scrape`] hook.
//! The exceptions are values that exist only as events (leasequery round trips, server health,
//! netlink batch latency, finished bulk queries), which the daemon's tasks observe through a
//! family handle as they happen, and the gauges the start-up steps set themselves
//! (`lqagent_routes_limit`, recovery in progress and its duration).
//!
//! Names follow the Prometheus conventions: `lqagent_` prefix, base units (`_seconds`), counters
//! exposed with `_total`. Each name is a constant here, every label set is a type with enum
//! values (or `&'static str` where another module owns the vocabulary, which keeps cardinality
//! bounded by construction). Every family is documented in `docs/metrics.md`; the test
//! `tests/loopback/metrics_http.rs` fails when one lacks HELP text or is missing there.
//!
//! [`http`] serves the registry on `GET /metrics` (default `127.0.0.1:9567`).

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
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
    /// Registered by the daemon (`daemon::export`) from the modules' own stats.
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

    /// Every family registered by [`super::Metrics::new`].
    pub const ALL: &[&str] = &[
        LEASEQUERIES,
        LEASEQUERY_RTT_SECONDS,
        LEASEQUERY_RETRANSMISSIONS,
        REPLIES_DROPPED,
        BINDINGS,
        ROUTE_EVENTS,
        ROUTES,
        NETLINK_BATCH_SECONDS,
        SNOOPED_MESSAGES,
        TRIGGER_EVENTS,
        RATE_LIMITED_DROPS,
        RECOVERY_IN_PROGRESS,
        RECOVERY_BINDINGS,
        RECOVERY_DURATION_SECONDS,
        BUILD_INFO,
        METRICS_SCRAPES,
        METRICS_CONNECTIONS_REJECTED,
        METRICS_CONNECTIONS_EVICTED,
        METRICS_CONNECTIONS_TIMED_OUT,
        SERVER_UP,
        SERVER_LAST_SUCCESS,
        ROUTES_LIMIT,
        STATE_DEGRADED,
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

/// A label set with one `reason`, owned by the module that drops (e.g. `wire::Error::label()`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
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
    /// Something that happened to a kernel route.
    pub enum RouteEvent {
        Installed => "installed",
        Withdrawn => "withdrawn",
        /// Kept aside because it cannot be installed yet (interface down, next hop unknown).
        Parked => "parked",
        /// The kernel refused it.
        Failed => "failed",
        /// A route inherited from before the start that a binding came to explain.
        Adopted => "adopted",
        /// An inherited route without a kernel expiry nothing explained when inheritance
        /// ended: deleted.
        Unconfirmed => "unconfirmed",
        /// An inherited route that reached its kernel expiry unexplained: removed.
        InheritedExpired => "inherited_expired",
        /// An inherited route withdrawn by a release or zero lifetime from its own link, or by a
        /// server's answer that nobody holds it.
        InheritedReleased => "inherited_released",
        /// A release of an inherited route from another link than its own: kept.
        InheritedOtherLink => "inherited_other_link",
        /// A zero lifetime for an inherited route answered to another client than its next
        /// hop: kept.
        InheritedOtherNextHop => "inherited_other_next_hop",
        /// An upsert refused because the installer held `max_routes` routes (kept aside).
        Dropped => "dropped",
        /// A refused upsert taken in when a withdrawal made room.
        Readmitted => "readmitted",
    }
}

/// Labels of [`names::ROUTE_EVENTS`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteEventLabels {
    pub event: RouteEvent,
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

/// The installer's route state, the `state` label of [`names::ROUTES`]. The gauge exports
/// only `installed`, `parked` and `inherited` (the counts the installer publishes).
pub use crate::kernel::reconcile::RouteState;

/// Labels of [`names::ROUTES`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStateLabels {
    pub state: RouteState,
}

/// Labels of [`names::SNOOPED_MESSAGES`]: the DHCPv6 message type name (snoop owns it).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageTypeLabels {
    pub message_type: &'static str,
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

/// Labels of [`names::TRIGGER_EVENTS`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    pub outcome: TriggerOutcome,
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
    pub replies_dropped: Family<ReasonLabels, Counter>,
    pub bindings: Family<BindingLabels, Gauge>,
    pub route_events: Family<RouteEventLabels, Counter>,
    pub routes: Family<RouteStateLabels, Gauge>,
    pub netlink_batch: Histogram,
    /// Where an unknown source's time goes before its binding reaches the cache task.
    pub on_demand_stage: Family<StageLabels, Histogram>,
    pub snooped_messages: Family<MessageTypeLabels, Counter>,
    pub trigger_events: Family<TriggerLabels, Counter>,
    pub rate_limited_drops: Family<LimitLabels, Counter>,
    pub recovery_in_progress: Gauge,
    pub recovery_bindings: Counter,
    pub recovery_duration: GaugeF64,
    /// 1 while the state file cannot be written (`persist` degraded mode).
    pub state_degraded: Gauge,
    pub(crate) scrapes: Counter,
    pub(crate) connections_rejected: Counter,
    pub(crate) connections_evicted: Counter,
    pub(crate) connections_timed_out: Family<DeadlineLabels, Counter>,
    /// The most routes the installer holds (`InstallerConfig::max_routes`); set by the daemon.
    pub routes_limit: Gauge,
    /// Per-server reachability (`show servers`, `lqagent_server_up`, last success).
    pub servers: Arc<servers::ServerHealth>,
    /// Run before each encoding: bring push-style families up to date from modules' stats.
    refresh: Arc<Mutex<Vec<Refresh>>>,
}

/// A hook run at scrape time (see [`Metrics::on_scrape`]).
struct Refresh(Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Refresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refresh")
    }
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
            replies_dropped: Family::default(),
            bindings: Family::default(),
            route_events: Family::default(),
            routes: Family::default(),
            netlink_batch: netlink_histogram(),
            on_demand_stage: Family::new_with_constructor(stage_histogram),
            snooped_messages: Family::default(),
            trigger_events: Family::default(),
            rate_limited_drops: Family::default(),
            recovery_in_progress: Gauge::default(),
            recovery_bindings: Counter::default(),
            recovery_duration: GaugeF64::default(),
            state_degraded: Gauge::default(),
            scrapes: Counter::default(),
            connections_rejected: Counter::default(),
            connections_evicted: Counter::default(),
            connections_timed_out: Family::default(),
            routes_limit: Gauge::default(),
            servers: Arc::default(),
            refresh: Arc::new(Mutex::new(Vec::new())),
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
                REPLIES_DROPPED,
                "Replies from servers dropped unprocessed, by reason",
                m.replies_dropped.clone(),
            );
            r.register(
                BINDINGS,
                "Bindings in the cache, by type (address, prefix) and link",
                m.bindings.clone(),
            );
            r.register(
                ROUTE_EVENTS,
                "Kernel route changes: installed, withdrawn, parked, failed",
                m.route_events.clone(),
            );
            r.register(
                ROUTES,
                "Routes the agent currently owns, by state",
                m.routes.clone(),
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
                SNOOPED_MESSAGES,
                "Relayed DHCPv6 messages seen by snooping, by message type",
                m.snooped_messages.clone(),
            );
            r.register(
                TRIGGER_EVENTS,
                "Packets from unknown sources seen by the trigger, by what was done",
                m.trigger_events.clone(),
            );
            r.register(
                RATE_LIMITED_DROPS,
                "On-demand leasequeries not sent because a limit was reached, by limit",
                m.rate_limited_drops.clone(),
            );
            r.register(
                STATE_DEGRADED,
                "1 while the state file cannot be written (routing continues), else 0",
                m.state_degraded.clone(),
            );
            r.register(
                RECOVERY_IN_PROGRESS,
                "1 while bulk leasequery recovery runs, else 0",
                m.recovery_in_progress.clone(),
            );
            r.register(
                RECOVERY_BINDINGS,
                "Bindings learned by bulk leasequery recovery",
                m.recovery_bindings.clone(),
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

    /// Register a gauge the daemon keeps in step with a module's own state (set it from an
    /// [`on_scrape`](Self::on_scrape) hook). Document `name` in `docs/metrics.md`.
    pub fn register_gauge(&self, name: &'static str, help: &'static str, gauge: Gauge) {
        self.lock().register(name, help, gauge);
    }

    /// Export a module's plain stats struct as a counter family `name` with one label `label`:
    /// `snapshot` is called at each scrape and returns `(label value, count)` pairs, e.g. from a
    /// drop-reason enum's `label()`. Document `name` in `docs/metrics.md`.
    pub fn register_stats<F>(
        &self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        snapshot: F,
    ) where
        F: Fn() -> Vec<(&'static str, u64)> + Send + Sync + 'static,
    {
        self.register_rows(name, help, vec![label], move || {
            snapshot().into_iter().map(|(v, n)| (vec![v], n)).collect()
        });
    }

    /// Like [`register_stats`](Self::register_stats) with two labels: `snapshot` returns
    /// `(first label value, second label value, count)`.
    pub fn register_stats2<F>(
        &self,
        name: &'static str,
        help: &'static str,
        labels: (&'static str, &'static str),
        snapshot: F,
    ) where
        F: Fn() -> Vec<(&'static str, &'static str, u64)> + Send + Sync + 'static,
    {
        self.register_rows(name, help, vec![labels.0, labels.1], move || {
            snapshot()
                .into_iter()
                .map(|(a, b, n)| (vec![a, b], n))
                .collect()
        });
    }

    fn register_rows(
        &self,
        name: &'static str,
        help: &'static str,
        labels: Vec<&'static str>,
        snapshot: impl Fn() -> Vec<Row> + Send + Sync + 'static,
    ) {
        self.lock().register_collector(Box::new(StatsCollector {
            name,
            help,
            labels,
            snapshot: Box::new(snapshot),
        }));
    }

    /// Run `f` before every encoding (each scrape and `show stats`): it brings families the
    /// daemon keeps in step with a module's own stats (deltas into counters, gauges set) up to
    /// date. Keep it short and lock-free towards the registry (it runs outside its lock).
    pub fn on_scrape(&self, f: impl Fn() + Send + Sync + 'static) {
        self.refresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Refresh(Box::new(f)));
    }

    /// The OpenMetrics text exposition of everything registered.
    pub fn encode(&self) -> String {
        for r in self
            .refresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            (r.0)();
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.lock()) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// One row of a [`StatsCollector`]: the label values, in the family's label order, and the count.
type Row = (Vec<&'static str>, u64);
type Snapshot = Box<dyn Fn() -> Vec<Row> + Send + Sync>;

/// A counter family read from a closure at scrape time (one or more labels).
struct StatsCollector {
    name: &'static str,
    help: &'static str,
    labels: Vec<&'static str>,
    snapshot: Snapshot,
}

impl std::fmt::Debug for StatsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsCollector")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let rows = (self.snapshot)();
        let mut family = encoder.encode_descriptor(
            self.name,
            self.help,
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (values, count) in rows {
            let labels: Vec<(Cow<'static, str>, Cow<'static, str>)> = self
                .labels
                .iter()
                .zip(values)
                .map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(v)))
                .collect();
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
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

    #[test]
    fn stats_structs_export_at_scrape_time() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let m = Metrics::new();
        let truncated = Arc::new(AtomicU64::new(0));
        let t = truncated.clone();
        m.register_stats(
            "lqagent_test_drops",
            "Test drops by reason",
            "reason",
            move || vec![("truncated", t.load(Ordering::Relaxed)), ("bad_xid", 0)],
        );
        truncated.store(7, Ordering::Relaxed);
        let text = m.encode();
        assert!(
            text.contains("# HELP lqagent_test_drops Test drops by reason"),
            "{text}"
        );
        assert!(
            text.contains("lqagent_test_drops_total{reason=\"truncated\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("lqagent_test_drops_total{reason=\"bad_xid\"} 0"),
            "{text}"
        );
    }
}
