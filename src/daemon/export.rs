//! Every module's own stats, exported through `metrics` at scrape time. This is the one place
//! that registers a module's stats with [`Metrics`]: modules keep plain atomic counters and a
//! `snapshot()`, and know nothing of the registry.
//!
//! A module's `(label, count)` snapshot becomes its own family with
//! [`Metrics::register_stats`] (read at each scrape). The families `metrics` defines up front
//! (`lqagent_route_events_total`, `lqagent_bindings`, …) are brought up to date by an
//! [`Metrics::on_scrape`] hook that adds each counter's growth since the last scrape and sets
//! gauges. Per-batch netlink latency and finished bulk queries are observed as they happen.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::{Arc, Mutex};

use crate::admission::Admission;
use crate::bulk::stats::{BulkStats, Counter as BulkCounter};
use crate::bulk::tcp::QueryResult;
use crate::cache::binding::DoubtStats;
use crate::cache::{BindingStore, IaType, LeaseKey};
use crate::control::ControlStats;
use crate::kernel::{InstallerStats, RouteCounter};
use crate::metrics::servers::BulkStatus;
use crate::metrics::{
    BindingLabels, BindingType, LeasequeryOutcome, MessageTypeLabels, Metrics, QueryLabels,
    ReasonLabels, RouteEvent, RouteEventLabels, RouteState, RouteStateLabels, TriggerLabels,
    TriggerOutcome, names,
};
use crate::persist::PersistStats;
use crate::requestor::{DropReason, RequestorStats};
use crate::snoop::classify::ClassifyCounter;
use crate::snoop::shell::SnoopStats;
use crate::supervise::Restarts;
use crate::trigger::{TriggerCounter, TriggerStats};

use super::ondemand::OnDemandStats;

/// Growth of monotonic counters since the last look, per label.
#[derive(Debug, Default)]
struct Deltas(Mutex<HashMap<&'static str, u64>>);

impl Deltas {
    /// `(label, increase)` for each `(label, current value)`.
    fn take(&self, now: Vec<(&'static str, u64)>) -> Vec<(&'static str, u64)> {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        now.into_iter()
            .filter_map(|(k, v)| {
                let prev = last.insert(k, v).unwrap_or(0);
                (v > prev).then(|| (k, v - prev))
            })
            .collect()
    }
}

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
    /// The requestor's counters as last fetched from its task.
    pub requestor: Arc<Mutex<RequestorStats>>,
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

/// `lqagent_admission_rejected_total{source,reason}`: what admission refused, and the snooped
/// messages refused for where they came from (source `snoop`, reason the classifier's label).
fn register_admission(m: &Metrics, s: &Sources) {
    let admission = s.admission.clone();
    let classify = s.snoop.as_ref().map(|sn| sn.classify.clone());
    m.register_stats2(
        names::ADMISSION_REJECTED,
        "Bindings and snooped messages refused at the trust boundary, by source and reason",
        ("source", "reason"),
        move || {
            let mut rows = admission.stats().snapshot();
            if let Some(c) = &classify {
                let c = c.lock().unwrap_or_else(|e| e.into_inner());
                for k in ClassifyCounter::ALL.iter().filter(|k| k.is_untrusted()) {
                    let n = c.get(*k);
                    if n > 0 {
                        rows.push(("snoop", k.label(), n));
                    }
                }
            }
            rows
        },
    );
    let store = s.store.clone();
    m.register_stats2(
        names::BINDING_MOVES,
        "Addresses and prefixes that moved to another client, link or next hop, by source and kind",
        ("source", "kind"),
        move || store.stats().moves(),
    );
}

/// `lqagent_task_restarts_total{task}`; `capture` also counts the sockets the capture tasks
/// reopened themselves (an interface deleted and made again).
fn register_restarts(m: &Metrics, s: &Sources) {
    let r = s.restarts.clone();
    r.counter("control");
    let cap = s.snoop.as_ref().map(|s| s.capture.clone());
    m.register_stats(
        names::TASK_RESTARTS,
        "Long-running tasks restarted after a failure, by task",
        "task",
        move || {
            let mut v = r.snapshot();
            let reopened = cap.as_ref().map_or(0, |c| {
                c.get(crate::snoop::capture::CaptureCounter::Reopened)
            });
            match v.iter_mut().find(|(t, _)| *t == "capture") {
                Some((_, n)) => *n += reopened,
                None => v.push(("capture", reopened)),
            }
            v
        },
    );
}

/// `lqagent_bulk_events_total{event}`, `lqagent_bulk_discarded_total{reason}` and the
/// `lqagent_bulk_connections` gauge.
fn register_bulk(m: &Metrics, bulk: &Arc<BulkStats>) {
    let s = bulk.clone();
    m.register_stats(
        "lqagent_bulk_events",
        "Bulk leasequery progress: connections, queries, retries, bindings, bytes",
        "event",
        move || s.snapshot(),
    );
    let s = bulk.clone();
    m.register_stats(
        "lqagent_bulk_discarded",
        "Bulk leasequery messages discarded, by reason",
        "reason",
        move || s.discard_snapshot(),
    );
    let gauge = prometheus_client::metrics::gauge::Gauge::default();
    m.register_gauge(
        "lqagent_bulk_connections",
        "Bulk leasequery TCP connections open (or being opened) now, over every recovery",
        gauge.clone(),
    );
    let s = bulk.clone();
    m.on_scrape(move || {
        gauge.set(s.open_connections() as i64);
    });
}

/// `lqagent_binding_doubts_total{reason,outcome}`: what would have changed a binding had it
/// come from its holder on its link, and what the confirming leasequery made of it.
pub fn register_doubts(m: &Metrics, doubts: &Arc<DoubtStats>) {
    let d = doubts.clone();
    m.register_stats2(
        names::BINDING_DOUBTS,
        "Doubts about a binding's owner (the ownership rule) and how the confirming leasequery settled them, by reason and outcome",
        ("reason", "outcome"),
        move || d.snapshot(),
    );
}

/// `lqagent_control_events_total{event}`.
pub fn register_control(m: &Metrics, control: &Arc<ControlStats>) {
    let me = control.clone();
    m.register_stats(
        names::CONTROL_EVENTS,
        "Control socket requests and refusals, by event",
        "event",
        move || me.snapshot(),
    );
}

/// The state writer: its events, and whether it is degraded (disk full, I/O errors).
fn register_state(m: &Metrics, state: &Arc<PersistStats>) {
    let ps = state.clone();
    m.register_stats(
        names::STATE_EVENTS,
        "State file writer events (records, snapshots, syncs, errors, degraded mode), by event",
        "event",
        move || ps.snapshot(),
    );
    let (ps, gauge) = (state.clone(), m.state_degraded.clone());
    m.on_scrape(move || {
        gauge.set(i64::from(ps.is_degraded()));
    });
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
        "event",
        move || od.snapshot(),
    );
    let store = s.store.clone();
    m.register_stats(
        names::CACHE_MERGES,
        "Leases merged into the cache, by merge verdict",
        "verdict",
        move || store.stats().verdicts(),
    );
    let store = s.store.clone();
    m.register_stats(
        names::CAP_REFUSED,
        "New bindings refused because a cache cap was reached (existing ones are kept), by cap",
        "cap",
        move || store.stats().cap_refused(),
    );
    if let Some(snoop) = &s.snoop {
        let cap = snoop.capture.clone();
        m.register_stats(
            names::SNOOP_CAPTURE,
            "Snoop capture sockets: packets received and dropped, by event",
            "event",
            move || cap.snapshot(),
        );
        let cls = snoop.classify.clone();
        m.register_stats(
            names::SNOOP_CLASSIFIED,
            "Snooped messages by what the classifier made of them",
            "event",
            move || {
                cls.lock()
                    .map(|c| c.snapshot())
                    .unwrap_or_else(|e| e.into_inner().snapshot())
            },
        );
    }
    if let Some(t) = &s.trigger {
        let t = t.clone();
        m.register_stats(
            names::TRIGGER,
            "Unknown-source trigger (nftables + NFLOG): events, drops and set updates, by event",
            "event",
            move || t.snapshot(),
        );
    }

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
        health.bulk(&server, status, std::time::SystemTime::now());
        lq.get_or_create(&QueryLabels {
            query_type,
            server,
            outcome,
        })
        .inc();
    });

    let hist = m.netlink_batch.clone();
    s.installer
        .observe_batches(move |d| hist.observe(d.as_secs_f64()));

    register_state(m, &s.state);
    register_bindings(m, &s.store, s.links.clone());
    let m2 = m.clone();
    let routes = Deltas::default();
    let snooped = Deltas::default();
    let dropped = Deltas::default();
    let recovered = Deltas::default();
    let triggered = Deltas::default();
    m.on_scrape(move || {
        let k = s.installer.snapshot();
        let events = routes.take(vec![
            ("installed", k.get(RouteCounter::Installed)),
            ("withdrawn", k.get(RouteCounter::Withdrawn)),
            ("parked", k.get(RouteCounter::Parked)),
            ("failed", k.get(RouteCounter::Failed)),
            ("adopted", k.get(RouteCounter::Adopted)),
            ("unconfirmed", k.get(RouteCounter::Unconfirmed)),
            ("inherited_expired", k.get(RouteCounter::InheritedExpired)),
            ("inherited_released", k.get(RouteCounter::InheritedReleased)),
            (
                "inherited_other_link",
                k.get(RouteCounter::InheritedOtherLink),
            ),
            (
                "inherited_other_next_hop",
                k.get(RouteCounter::InheritedOtherNextHop),
            ),
            ("dropped", k.get(RouteCounter::Dropped)),
            ("readmitted", k.get(RouteCounter::Readmitted)),
        ]);
        for (label, n) in events {
            let event = match label {
                "installed" => RouteEvent::Installed,
                "withdrawn" => RouteEvent::Withdrawn,
                "parked" => RouteEvent::Parked,
                "adopted" => RouteEvent::Adopted,
                "unconfirmed" => RouteEvent::Unconfirmed,
                "inherited_expired" => RouteEvent::InheritedExpired,
                "inherited_released" => RouteEvent::InheritedReleased,
                "inherited_other_link" => RouteEvent::InheritedOtherLink,
                "inherited_other_next_hop" => RouteEvent::InheritedOtherNextHop,
                "dropped" => RouteEvent::Dropped,
                "readmitted" => RouteEvent::Readmitted,
                _ => RouteEvent::Failed,
            };
            m2.route_events
                .get_or_create(&RouteEventLabels { event })
                .inc_by(n);
        }
        set_route_gauges(&m2, k.installed_now, k.parked_now, k.inherited_now);
        // Recovery progress while it runs (start-up and link-up queries alike).
        for (_, n) in recovered.take(vec![("bindings", s.bulk.get(BulkCounter::Bindings))]) {
            m2.recovery_bindings.inc_by(n);
        }
        if let Some(snoop) = &s.snoop {
            for (t, n) in snooped.take(snoop.messages.snapshot()) {
                m2.snooped_messages
                    .get_or_create(&MessageTypeLabels { message_type: t })
                    .inc_by(n);
            }
        }
        let req = s
            .requestor
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        let now: Vec<_> = DropReason::ALL
            .iter()
            .map(|r| (r.label(), req.dropped(*r)))
            .collect();
        for (reason, n) in dropped.take(now) {
            m2.replies_dropped
                .get_or_create(&ReasonLabels { reason })
                .inc_by(n);
        }
        if let Some(t) = &s.trigger {
            // What happened to logged packets from unknown sources: the trigger's own verdicts,
            // then the on-demand path's and the requestor's (every on-demand query comes from
            // the trigger; the requestor's dedup and negative cache only see those).
            let od = &s.on_demand;
            let load =
                |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            let now = vec![
                ("queried", req.queries),
                (
                    "deduplicated",
                    t.get(TriggerCounter::Deduped) + req.deduplicated,
                ),
                ("negative_cached", req.negative_hits),
                ("rate_limited", load(&od.refused)),
                ("outside_prefixes", t.get(TriggerCounter::Foreign)),
                ("known", t.get(TriggerCounter::Known) + load(&od.known)),
            ];
            for (label, n) in triggered.take(now) {
                let outcome = match label {
                    "queried" => TriggerOutcome::Queried,
                    "deduplicated" => TriggerOutcome::Deduplicated,
                    "negative_cached" => TriggerOutcome::NegativeCached,
                    "rate_limited" => TriggerOutcome::RateLimited,
                    "outside_prefixes" => TriggerOutcome::OutsidePrefixes,
                    _ => TriggerOutcome::Known,
                };
                m2.trigger_events
                    .get_or_create(&TriggerLabels { outcome })
                    .inc_by(n);
            }
        }
    });
}

/// `lqagent_bindings{type,link}`, set before each encoding from one walk of the store (the
/// `/metrics` snapshot keeps that to once a second however many scrape). Public for the
/// scrape-storm bench, which fills a store and scrapes it the way the daemon does.
pub fn register_bindings(m: &Metrics, store: &Arc<BindingStore>, links: HashMap<Ipv6Addr, String>) {
    let (m2, store) = (m.clone(), store.clone());
    m.on_scrape(move || set_binding_gauges(&m2, &store, &links));
}

fn set_route_gauges(m: &Metrics, installed: u64, parked: u64, inherited: u64) {
    for (state, v) in [
        (RouteState::Installed, installed),
        (RouteState::Parked, parked),
        (RouteState::Inherited, inherited),
    ] {
        m.routes
            .get_or_create(&RouteStateLabels { state })
            .set(i64::try_from(v).unwrap_or(i64::MAX));
    }
}

/// `lqagent_bindings{type,link}`: one pass over the cache (O(bindings) per scrape).
fn set_binding_gauges(m: &Metrics, store: &BindingStore, links: &HashMap<Ipv6Addr, String>) {
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
    for ((t, link), n) in counts {
        m.bindings
            .get_or_create(&BindingLabels {
                r#type: t,
                link: link.to_string(),
            })
            .set(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_report_growth_once() {
        let d = Deltas::default();
        assert_eq!(d.take(vec![("a", 3), ("b", 0)]), vec![("a", 3)]);
        assert_eq!(d.take(vec![("a", 5), ("b", 1)]), vec![("a", 2), ("b", 1)]);
        assert!(d.take(vec![("a", 5), ("b", 1)]).is_empty());
    }

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
        on_demand.known.store(3, Relaxed);
        on_demand.refused.store(4, Relaxed);
        on_demand.queried.store(5, Relaxed);
        let trigger = Arc::new(TriggerStats::default());
        for (i, c) in TriggerCounter::ALL.iter().enumerate() {
            trigger.add(*c, 20 + i as u64);
        }
        let mut req = RequestorStats::default();
        req.queries = 11;
        req.deduplicated = 12;
        req.negative_hits = 13;
        for (i, r) in DropReason::ALL.iter().enumerate() {
            req.drop_n(*r, 30 + i as u64);
        }
        let control = Arc::new(ControlStats::default());
        control.requests.store(2, Relaxed);
        let restarts = Arc::new(Restarts::default());
        restarts.counter("routes").store(1, Relaxed);
        restarts.counter("requestor_stats");
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
            requestor: Arc::new(Mutex::new(req)),
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
