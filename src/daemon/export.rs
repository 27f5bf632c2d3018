//! Every module's own stats, exported through `metrics` at scrape time. This is the one place
//! that registers a module's stats with [`Metrics`]: modules count where they count (atomics,
//! keyed by their own `labels!` enums) and know nothing of the registry.
//!
//! Each family is one [`Metrics::register_stats`] (or [`Metrics::register_gauges`]) whose
//! closure reads the module's counters when `/metrics` is encoded and writes them as rows
//! labelled by the module's own enums: no copy kept between scrapes, no label spelled twice.
//! Per-batch netlink latency and finished bulk queries are observed as they happen.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

use crate::admission::{Admission, Origin, Rejection};
use crate::bulk::core::Discard;
use crate::bulk::stats::{BulkStats, Counter as BulkCounter};
use crate::bulk::tcp::QueryResult;
use crate::cache::binding::DoubtStats;
use crate::cache::{BindingStore, IaType, LeaseKey};
use crate::control::{ControlEvent, ControlStats};
use crate::kernel::reconcile::RouteState;
use crate::kernel::{InstallerStats, RouteCounter};
use crate::metrics::servers::BulkStatus;
use crate::metrics::{
    BindingLabels, BindingType, LeasequeryOutcome, Metrics, QueryLabels, TriggerOutcome,
    Unlabelled, names,
};
use crate::persist::{PersistStats, StateEvent};
use crate::requestor::{DropReason, RequestorCounter, RequestorStats};
use crate::snoop::capture::CaptureCounter;
use crate::snoop::classify::ClassifyCounter;
use crate::snoop::shell::SnoopStats;
use crate::supervise::{Restarts, Task};
use crate::trigger::{TriggerCounter, TriggerStats};

use super::ondemand::{OnDemandEvent, OnDemandStats};

/// What the daemon hands over to be exported.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    pub installer: Arc<InstallerStats>,
    pub store: Arc<BindingStore>,
    pub admission: Arc<Admission>,
    pub snoop: Option<SnoopStats>,
    pub bulk: Arc<BulkStats>,
    pub on_demand: Arc<OnDemandStats>,
    /// The unknown-source trigger's counters, when it runs.
    pub trigger: Option<Arc<TriggerStats>>,
    /// The requestor's counters, shared with its task.
    pub requestor: Arc<RequestorStats>,
    pub control: Arc<ControlStats>,
    /// Configured link-address → link name (`lqagent_bindings{link}`); others are `other`.
    pub links: HashMap<Ipv6Addr, String>,
    /// Server address → configured name (`lqagent_leasequeries_total{server}`).
    pub servers: HashMap<Ipv6Addr, String>,
    /// Task restarts by task label (the supervisor's).
    pub restarts: Arc<Restarts>,
    /// The state writer's events and degraded flag.
    pub state: Arc<PersistStats>,
    /// How doubts ended (the confirmer's and the doubt sink's counts).
    pub doubts: Arc<DoubtStats>,
}

/// One label: its name and the module's own value.
type Label<V> = [(&'static str, V); 1];

/// Rows of a one-label family from `(label, count)` pairs.
fn rows<V>(name: &'static str, pairs: Vec<(V, u64)>) -> Vec<(Label<V>, u64)> {
    pairs.into_iter().map(|(v, n)| ([(name, v)], n)).collect()
}

/// Two labels, each the module's own value.
type Labels2<A, B> = (Label<A>, Label<B>);

/// Rows of a two-label family from `(first, second, count)` triples.
fn rows2<A, B>(
    names: (&'static str, &'static str),
    triples: Vec<(A, B, u64)>,
) -> Vec<(Labels2<A, B>, u64)> {
    triples
        .into_iter()
        .map(|(a, b, n)| (([(names.0, a)], [(names.1, b)]), n))
        .collect()
}

/// The `reason` label of `lqagent_admission_rejected_total`: admission's own reason, or the
/// snoop classifier's for the messages it refused for where they came from (source `snoop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum RefusedFor {
    Admission(Rejection),
    Snoop(ClassifyCounter),
}

impl EncodeLabelValue for RefusedFor {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        match self {
            RefusedFor::Admission(r) => r.encode(encoder),
            RefusedFor::Snoop(c) => c.encode(encoder),
        }
    }
}

/// The installer's counters that are `lqagent_route_events_total`'s events (the rest are
/// the installer's own bookkeeping, in logs and `show stats`).
const ROUTE_EVENTS: [RouteCounter; 12] = [
    RouteCounter::Installed,
    RouteCounter::Withdrawn,
    RouteCounter::Parked,
    RouteCounter::Failed,
    RouteCounter::Adopted,
    RouteCounter::Unconfirmed,
    RouteCounter::InheritedExpired,
    RouteCounter::InheritedReleased,
    RouteCounter::InheritedOtherLink,
    RouteCounter::InheritedOtherNextHop,
    RouteCounter::Dropped,
    RouteCounter::Readmitted,
];

/// `lqagent_admission_rejected_total{source,reason}`: what admission refused, and the snooped
/// messages refused for where they came from (source `snoop`, reason the classifier's label).
fn register_admission(m: &Metrics, s: &Sources) {
    let admission = s.admission.clone();
    let classify = s.snoop.as_ref().map(|sn| sn.classify.clone());
    m.register_stats(
        names::ADMISSION_REJECTED,
        "Bindings and snooped messages refused at the trust boundary, by source and reason",
        move || {
            let mut rows: Vec<_> = admission
                .stats()
                .snapshot()
                .into_iter()
                .map(|(o, r, n)| (o, RefusedFor::Admission(r), n))
                .collect();
            if let Some(c) = &classify {
                for k in ClassifyCounter::ALL.iter().filter(|k| k.is_untrusted()) {
                    let n = c.get(*k);
                    if n > 0 {
                        rows.push((Origin::Snoop, RefusedFor::Snoop(*k), n));
                    }
                }
            }
            rows2(("source", "reason"), rows)
        },
    );
    let store = s.store.clone();
    m.register_stats(
        names::BINDING_MOVES,
        "Addresses and prefixes that moved to another client, link or next hop, by source and kind",
        move || rows2(("source", "kind"), store.stats().moves()),
    );
}

/// `lqagent_task_restarts_total{task}`: every supervised task (and `control`, `capture`
/// always); `capture` also counts the sockets the capture tasks reopened themselves (an
/// interface deleted and made again).
fn register_restarts(m: &Metrics, s: &Sources) {
    let r = s.restarts.clone();
    r.supervise(Task::Control);
    let cap = s.snoop.as_ref().map(|s| s.capture.clone());
    m.register_stats(
        names::TASK_RESTARTS,
        "Long-running tasks restarted after a failure, by task",
        move || {
            let reopened = cap.as_ref().map_or(0, |c| c.get(CaptureCounter::Reopened));
            Task::ALL
                .iter()
                .filter(|t| **t == Task::Capture || r.is_supervised(**t))
                .map(|t| {
                    let own = if *t == Task::Capture { reopened } else { 0 };
                    ([("task", *t)], r.get(*t) + own)
                })
                .collect()
        },
    );
}

/// `lqagent_bulk_events_total{event}`, `lqagent_bulk_discarded_total{reason}`, the
/// `lqagent_bulk_connections` gauge and `lqagent_recovery_bindings_total`.
fn register_bulk(m: &Metrics, bulk: &Arc<BulkStats>) {
    let s = bulk.clone();
    m.register_stats(
        "lqagent_bulk_events",
        "Bulk leasequery progress: connections, queries, retries, bindings, bytes",
        move || {
            rows(
                "event",
                BulkCounter::ALL.iter().map(|c| (*c, s.get(*c))).collect(),
            )
        },
    );
    let s = bulk.clone();
    m.register_stats(
        "lqagent_bulk_discarded",
        "Bulk leasequery messages discarded, by reason",
        move || {
            rows(
                "reason",
                Discard::ALL.iter().map(|d| (*d, s.discarded(*d))).collect(),
            )
        },
    );
    let s = bulk.clone();
    m.register_gauges(
        "lqagent_bulk_connections",
        "Bulk leasequery TCP connections open (or being opened) now, over every recovery.",
        move || vec![(Unlabelled, saturating_i64(s.open_connections() as u64))],
    );
    // Recovery progress while it runs (start-up and link-up queries alike).
    let s = bulk.clone();
    m.register_stats(
        names::RECOVERY_BINDINGS,
        "Bindings learned by bulk leasequery recovery.",
        move || vec![(Unlabelled, s.get(BulkCounter::Bindings))],
    );
}

/// `lqagent_binding_doubts_total{reason,outcome}`: what would have changed a binding had it
/// come from its holder on its link, and what the confirming leasequery made of it.
pub fn register_doubts(m: &Metrics, doubts: &Arc<DoubtStats>) {
    let d = doubts.clone();
    m.register_stats(
        names::BINDING_DOUBTS,
        "Doubts about a binding's owner (the ownership rule) and how the confirming leasequery settled them, by reason and outcome",
        move || rows2(("reason", "outcome"), d.snapshot()),
    );
}

/// `lqagent_control_events_total{event}`.
pub fn register_control(m: &Metrics, control: &Arc<ControlStats>) {
    let me = control.clone();
    m.register_stats(
        names::CONTROL_EVENTS,
        "Control socket requests and refusals, by event",
        move || {
            rows(
                "event",
                ControlEvent::ALL.iter().map(|e| (*e, me.get(*e))).collect(),
            )
        },
    );
}

/// The state writer: its events, and whether it is degraded (disk full, I/O errors).
fn register_state(m: &Metrics, state: &Arc<PersistStats>) {
    let ps = state.clone();
    m.register_stats(
        names::STATE_EVENTS,
        "State file writer events (records, snapshots, syncs, errors, degraded mode), by event",
        move || {
            rows(
                "event",
                StateEvent::ALL.iter().map(|e| (*e, ps.get(*e))).collect(),
            )
        },
    );
    let ps = state.clone();
    m.register_gauges(
        names::STATE_DEGRADED,
        "1 while the state file cannot be written (routing continues), else 0.",
        move || vec![(Unlabelled, i64::from(ps.is_degraded()))],
    );
}

/// `lqagent_route_events_total{event}` (each event once it has happened) and the
/// `lqagent_routes{state}` gauges, from the installer's own counters; the netlink batch
/// latency histogram, fed as batches finish.
fn register_routes(m: &Metrics, installer: &Arc<InstallerStats>) {
    let k = installer.clone();
    m.register_stats(
        names::ROUTE_EVENTS,
        "Kernel route changes: installed, withdrawn, parked, failed.",
        move || {
            rows(
                "event",
                ROUTE_EVENTS
                    .iter()
                    .map(|c| (*c, k.get(*c)))
                    .filter(|(_, n)| *n > 0)
                    .collect(),
            )
        },
    );
    let k = installer.clone();
    m.register_gauges(
        names::ROUTES,
        "Routes the agent currently owns, by state.",
        move || {
            let now = k.snapshot();
            [
                (RouteState::Installed, now.installed_now),
                (RouteState::Parked, now.parked_now),
                (RouteState::Inherited, now.inherited_now),
            ]
            .into_iter()
            .map(|(state, n)| ([("state", state)], saturating_i64(n)))
            .collect()
        },
    );
    let hist = m.netlink_batch.clone();
    installer.observe_batches(move |d| hist.observe(d.as_secs_f64()));
}

/// `lqagent_snoop_capture_total`, `lqagent_snoop_classified_total` and
/// `lqagent_snooped_messages_total`; the last is there (empty) without a snooper too.
fn register_snoop(m: &Metrics, snoop: Option<&SnoopStats>) {
    if let Some(snoop) = snoop {
        let cap = snoop.capture.clone();
        m.register_stats(
            names::SNOOP_CAPTURE,
            "Snoop capture sockets: packets received and dropped, by event",
            move || {
                rows(
                    "event",
                    CaptureCounter::ALL
                        .iter()
                        .map(|c| (*c, cap.get(*c)))
                        .collect(),
                )
            },
        );
        let cls = snoop.classify.clone();
        m.register_stats(
            names::SNOOP_CLASSIFIED,
            "Snooped messages by what the classifier made of them",
            move || {
                rows(
                    "event",
                    ClassifyCounter::ALL
                        .iter()
                        .map(|c| (*c, cls.get(*c)))
                        .collect(),
                )
            },
        );
    }
    let messages = snoop.map(|s| s.messages.clone());
    m.register_stats(
        names::SNOOPED_MESSAGES,
        "Relayed DHCPv6 messages seen by snooping, by message type.",
        move || {
            rows(
                "message_type",
                messages.as_ref().map(|c| c.seen()).unwrap_or_default(),
            )
        },
    );
}

/// `lqagent_replies_dropped_total{reason}` (each reason once it has happened) and
/// `lqagent_trigger_events_total{outcome}`: what happened to logged packets from unknown
/// sources, the trigger's own verdicts, then the on-demand path's and the requestor's (every
/// on-demand query comes from the trigger; the requestor's dedup and negative cache only see
/// those).
fn register_unknown_sources(m: &Metrics, s: &Sources) {
    let req = s.requestor.clone();
    m.register_stats(
        names::REPLIES_DROPPED,
        "Replies from servers dropped unprocessed, by reason.",
        move || {
            // The kernel drops at the socket with no datagram to tell the task: ask it now.
            req.count_kernel_drops();
            rows(
                "reason",
                DropReason::ALL
                    .iter()
                    .map(|r| (*r, req.dropped(*r)))
                    .filter(|(_, n)| *n > 0)
                    .collect(),
            )
        },
    );
    let (req, od, trigger) = (s.requestor.clone(), s.on_demand.clone(), s.trigger.clone());
    m.register_stats(
        names::TRIGGER_EVENTS,
        "Packets from unknown sources seen by the trigger, by what was done.",
        move || {
            let Some(t) = &trigger else {
                return Vec::new();
            };
            rows(
                "outcome",
                vec![
                    (TriggerOutcome::Queried, req.get(RequestorCounter::Queries)),
                    (
                        TriggerOutcome::Deduplicated,
                        t.get(TriggerCounter::Deduped) + req.get(RequestorCounter::Deduplicated),
                    ),
                    (
                        TriggerOutcome::NegativeCached,
                        req.get(RequestorCounter::NegativeHits),
                    ),
                    (TriggerOutcome::RateLimited, od.get(OnDemandEvent::Refused)),
                    (
                        TriggerOutcome::OutsidePrefixes,
                        t.get(TriggerCounter::Foreign),
                    ),
                    (
                        TriggerOutcome::Known,
                        t.get(TriggerCounter::Known) + od.get(OnDemandEvent::Known),
                    ),
                ]
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .collect(),
            )
        },
    );
}

/// Register everything in `m`.
pub(crate) fn register(m: &Metrics, s: Sources) {
    register_restarts(m, &s);
    register_admission(m, &s);
    register_bulk(m, &s.bulk);
    register_control(m, &s.control);
    register_doubts(m, &s.doubts);
    let od = s.on_demand.clone();
    m.register_stats(
        names::ON_DEMAND,
        "On-demand leasequeries for unknown sources, by event",
        move || {
            rows(
                "event",
                OnDemandEvent::ALL
                    .iter()
                    .map(|e| (*e, od.get(*e)))
                    .collect(),
            )
        },
    );
    let store = s.store.clone();
    m.register_stats(
        names::CACHE_MERGES,
        "Leases merged into the cache, by merge verdict",
        move || rows("verdict", store.stats().verdicts()),
    );
    let store = s.store.clone();
    m.register_stats(
        names::CAP_REFUSED,
        "New bindings refused because a cache cap was reached (existing ones are kept), by cap",
        move || rows("cap", store.stats().cap_refused()),
    );
    register_snoop(m, s.snoop.as_ref());
    if let Some(t) = &s.trigger {
        let t = t.clone();
        m.register_stats(
            names::TRIGGER,
            "Unknown-source trigger (nftables + NFLOG): events, drops and set updates, by event",
            move || {
                rows(
                    "event",
                    TriggerCounter::ALL
                        .iter()
                        .map(|c| (*c, t.get(*c)))
                        .collect(),
                )
            },
        );
    }
    register_unknown_sources(m, &s);

    // Bulk queries, counted as they finish (on-demand ones are counted by `ondemand`).
    let (lq, servers, health) = (m.leasequeries.clone(), s.servers.clone(), m.servers.clone());
    s.bulk.observe_queries(move |server, query_type, result| {
        let outcome = match result {
            QueryResult::Complete { bindings: 0 } => LeasequeryOutcome::NoBinding,
            QueryResult::Complete { .. } => LeasequeryOutcome::Binding,
            QueryResult::Failed { .. } => LeasequeryOutcome::ServerError,
            QueryResult::GaveUp { .. } => LeasequeryOutcome::Timeout,
        };
        let ip = match server.ip() {
            std::net::IpAddr::V6(a) => a,
            std::net::IpAddr::V4(a) => a.to_ipv6_mapped(),
        };
        let server = servers.get(&ip).cloned().unwrap_or_else(|| ip.to_string());
        let status = match result {
            QueryResult::Complete { .. } => BulkStatus::Complete,
            QueryResult::Failed { .. } => BulkStatus::Failed,
            QueryResult::GaveUp { .. } => BulkStatus::GaveUp,
        };
        health.bulk(&server, status, crate::time::SystemTime::now());
        lq.get_or_create(&QueryLabels {
            query_type,
            server,
            outcome,
        })
        .inc();
    });

    register_routes(m, &s.installer);
    register_state(m, &s.state);
    register_bindings(m, &s.store, s.links.clone());
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `lqagent_bindings{type,link}`, from one walk of the store at each encoding (the
/// `/metrics` snapshot keeps that to once a second however many scrape). Public for the
/// scrape-storm bench, which fills a store and scrapes it the way the daemon does.
pub fn register_bindings(m: &Metrics, store: &Arc<BindingStore>, links: HashMap<Ipv6Addr, String>) {
    let store = store.clone();
    m.register_gauges(
        names::BINDINGS,
        "Bindings in the cache, by type (address, prefix) and link.",
        move || binding_counts(&store, &links),
    );
}

/// `lqagent_bindings{type,link}`: one pass over the cache (O(bindings) per scrape); every
/// configured link and `other` has both rows, zero or not.
fn binding_counts(
    store: &BindingStore,
    links: &HashMap<Ipv6Addr, String>,
) -> Vec<(BindingLabels, i64)> {
    let mut counts: HashMap<(BindingType, &str), i64> = HashMap::new();
    for name in links.values().map(String::as_str).chain(["other"]) {
        for t in BindingType::ALL {
            counts.insert((*t, name), 0);
        }
    }
    store.for_each(|k, l| {
        let t = match (k, l.ia) {
            (LeaseKey::Prefix(_), _) | (_, IaType::Pd) => BindingType::Prefix,
            _ => BindingType::Address,
        };
        let link = links
            .get(&l.client.link.address)
            .map_or("other", String::as_str);
        *counts.entry((t, link)).or_insert(0) += 1;
    });
    counts
        .into_iter()
        .map(|((t, link), n)| {
            let labels = BindingLabels {
                r#type: t,
                link: link.to_string(),
            };
            (labels, n)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module's stats with a distinct value in each counter, registered as the daemon
    /// does: the exposition's lqagent_* samples (family, labels, value), sorted. Pins what the
    /// export path writes, whatever way it is built.
    fn daemon_exposition() -> Vec<String> {
        use std::sync::atomic::Ordering::Relaxed;
        let installer = Arc::new(InstallerStats::default());
        for (i, c) in RouteCounter::ALL.iter().enumerate() {
            installer.add(*c, i as u64 + 1);
        }
        installer.set_gauges(7, 8, 9);
        let admission = Arc::new(Admission::new(
            Vec::new(),
            [],
            Arc::new(crate::admission::OwnAddresses::new([])),
        ));
        admission.stats().count(
            crate::admission::Origin::Bulk,
            crate::admission::Rejection::UnknownLink,
        );
        let snoop = SnoopStats::default();
        snoop.messages.count(crate::wire::MessageType(13));
        snoop.messages.count(crate::wire::MessageType(13));
        snoop.messages.count(crate::wire::MessageType(200));
        let bulk = Arc::new(BulkStats::default());
        for (i, c) in BulkCounter::ALL.iter().enumerate() {
            bulk.add(*c, 100 + i as u64);
        }
        bulk.discard(crate::bulk::core::Discard::NoCltTime);
        let on_demand = Arc::new(OnDemandStats::default());
        for (e, n) in [
            (OnDemandEvent::Known, 3),
            (OnDemandEvent::Refused, 4),
            (OnDemandEvent::Queried, 5),
        ] {
            for _ in 0..n {
                on_demand.count(e);
            }
        }
        let trigger = Arc::new(TriggerStats::default());
        for (i, c) in TriggerCounter::ALL.iter().enumerate() {
            trigger.add(*c, 20 + i as u64);
        }
        let req = RequestorStats::default();
        req.add(RequestorCounter::Queries, 11);
        req.add(RequestorCounter::Deduplicated, 12);
        req.add(RequestorCounter::NegativeHits, 13);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            req.count_drops(*r, 30 + i as u64);
        }
        let control = Arc::new(ControlStats::default());
        control.count(ControlEvent::Request);
        control.count(ControlEvent::Request);
        let restarts = Arc::new(Restarts::default());
        restarts.count(Task::Routes);
        let state = Arc::new(PersistStats::default());
        state.syncs.store(6, Relaxed);
        state.degraded.store(true, Relaxed);
        let doubts = Arc::new(DoubtStats::default());
        doubts.count(
            crate::cache::DoubtReason::Overlap,
            crate::cache::DoubtOutcome::Unknown,
        );
        let sources = Sources {
            installer,
            store: Arc::new(BindingStore::new(crate::cache::CacheConfig::default())),
            admission,
            snoop: Some(snoop),
            bulk,
            on_demand,
            trigger: Some(trigger),
            requestor: Arc::new(req),
            control,
            links: [("2001:db8::1".parse().unwrap(), "cable1".to_string())].into(),
            servers: HashMap::new(),
            restarts,
            state,
            doubts,
        };
        let m = Metrics::new();
        register(&m, sources);
        let _ = m.encode();
        let mut rows: Vec<String> = m
            .encode()
            .lines()
            .filter(|l| {
                l.starts_with("lqagent_")
                    || l.starts_with("# TYPE lqagent_")
                    || l.starts_with("# HELP lqagent_")
            })
            .filter(|l| !l.starts_with("lqagent_build_info"))
            .map(str::to_string)
            .collect();
        rows.sort();
        rows
    }

    /// Every family, HELP, label set and value of the daemon's export, as the file beside this
    /// one pins them (sorted lines): dashboards and alert rules match these byte for byte.
    #[test]
    fn the_daemon_exposition_is_pinned() {
        let rows = daemon_exposition();
        let pinned: Vec<&str> = include_str!("export/pinned_exposition.txt")
            .lines()
            .collect();
        let got: Vec<&str> = rows.iter().map(String::as_str).collect();
        let missing: Vec<_> = pinned.iter().filter(|l| !got.contains(l)).collect();
        let extra: Vec<_> = got.iter().filter(|l| !pinned.contains(l)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "missing: {missing:#?}\nextra: {extra:#?}"
        );
    }

    /// Every family the daemon exports from the modules' stats is in `docs/metrics.md` (the
    /// families `Metrics::new` makes are checked over HTTP by tests/loopback/metrics_http.rs).
    #[test]
    fn every_daemon_family_is_documented() {
        let docs = include_str!("../../docs/metrics.md");
        let families: Vec<String> = daemon_exposition()
            .iter()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_string)
            .collect();
        assert!(families.len() > 20, "{families:?}");
        for f in families {
            assert!(
                docs.contains(&format!("`{f}`")) || docs.contains(&format!("`{f}_total`")),
                "family {f} is missing from docs/metrics.md"
            );
        }
    }

    /// Every supervised task's label is named where `docs/metrics.md` describes
    /// `lqagent_task_restarts_total` (a new task is documented when it is added).
    #[test]
    fn every_task_label_is_documented() {
        let docs = include_str!("../../docs/metrics.md");
        let row = docs
            .lines()
            .find(|l| l.starts_with("| `lqagent_task_restarts_total`"))
            .expect("lqagent_task_restarts_total in docs/metrics.md");
        for t in Task::ALL {
            assert!(
                row.contains(&format!("`{}`", t.label())),
                "task `{}` is missing from docs/metrics.md's lqagent_task_restarts_total",
                t.label()
            );
        }
    }

    #[test]
    fn registered_bulk_counters_show_in_the_exposition() {
        use crate::bulk::core::Discard;
        let stats = Arc::new(BulkStats::default());
        let m = Metrics::new();
        register_bulk(&m, &stats);
        stats.add(BulkCounter::Bindings, 42);
        stats.discard(Discard::NoCltTime);
        let text = m.encode();
        assert!(
            text.contains("lqagent_bulk_events_total{event=\"bindings\"} 42"),
            "{text}"
        );
        assert!(text.contains("lqagent_bulk_discarded_total{reason=\"no_clt_time\"} 1"));
        assert!(text.contains("lqagent_bulk_events_total{event=\"connects\"} 0"));
    }
}
